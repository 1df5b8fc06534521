"""Forgetting events per (class, epoch), counted once per run and kept.

The store's sample_presentations view marks each forgetting event (Toneva et al. 2019: a sample
correct at its previous presentation and wrong now; presentations in step order, a wrong one first
within a step). Counting them sorts every presentation of the run (2.5 M rows: 0.2-0.4 s on two
cores), so the counts are kept here and the curves module buckets them in DuckDB at any width.
"""

from __future__ import annotations

import threading

import duckdb
import polars as pl

COUNTS_SQL = """
SELECT class_id, epoch, max(step) + 1 AS step,
       count(*) FILTER (WHERE forgotten) AS forgets,
       count(*) FILTER (WHERE presentation > 1) AS eligible
FROM sample_presentations WHERE run_id = $run
GROUP BY class_id, epoch
"""

_CACHE: dict[tuple[str, int], pl.DataFrame] = {}
_CACHE_SIZE = 64  # runs (x listings) kept; the oldest goes first
_LOCK = threading.Lock()


def forgetting_counts(cur: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Per (class_id, epoch): forgetting events, presentations that have a previous one, and the
    step the epoch's presentations end at.

    Kept per run and per listing of the `samples` view: the view names every part it reads, and
    parts never change once named, so the same listing means the same rows. A finished run is
    sorted once; a live run again only when a new part lands."""
    view = cur.sql("SELECT sql FROM duckdb_views() WHERE view_name = 'samples'").fetchall()
    key = (run_id, hash(view[0][0] if view else ""))
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    frame = cur.sql(COUNTS_SQL, params={"run": run_id}).pl()
    with _LOCK:
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = frame
    return frame
