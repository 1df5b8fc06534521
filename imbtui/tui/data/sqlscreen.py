"""What the SQL screen runs: a read-only statement over the store, and the export of its result.

`run_query` checks the text (read-only, and the statement under an EXPLAIN too), binds the named
parameters it uses, and keeps at most `MAX_RESULT_ROWS` rows; `export_frame` writes a result to CSV
or Parquet anywhere but inside the run store. No Textual here: these run in thread workers.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from imbtui.errors import UserError
from imbtui.queries import used_params
from imbtui.store import QueryError, check_read_only

MAX_RESULT_ROWS = 1_000_000  # the SQL screen keeps at most this many rows of one result

_EXPLAIN_RE = re.compile(r"^\s*EXPLAIN\b(\s+ANALY[SZ]E\b)?(\s*\([^)]*\))?", re.IGNORECASE)


def check_query(cur: duckdb.DuckDBPyConnection, text: str) -> list[Any]:
    """The store's read-only check, plus the statement under an EXPLAIN: `EXPLAIN ANALYZE COPY ...
    TO 'file'` parses as an EXPLAIN yet executes the COPY, which could overwrite a stored part."""
    statements = check_read_only(cur, text)
    for st in statements:
        if st.type.name == "EXPLAIN":
            inner = _EXPLAIN_RE.sub("", st.query, count=1)
            if not inner.strip():
                raise QueryError("EXPLAIN of what? add a SELECT")
            check_query(cur, inner)
    return statements


@dataclass
class QueryResult:
    """One statement's result as the SQL screen shows it."""

    sql: str
    frame: pl.DataFrame
    seconds: float
    truncated: bool  # the statement returned more than MAX_RESULT_ROWS rows


def bind(sql: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The values of the `$name`s `sql` uses (DuckDB refuses unused ones); a missing one is an
    error that says which."""
    used = used_params(sql)
    missing = sorted(used - set(params or {}))
    if missing:
        raise QueryError(f"no value for parameter ${missing[0]} (write a literal in its place)")
    return {k: v for k, v in (params or {}).items() if k in used}


def run_query(cur: duckdb.DuckDBPyConnection, text: str,
              params: dict[str, Any] | None = None) -> QueryResult:
    """Run a read-only query; keeps at most MAX_RESULT_ROWS rows. `params` binds `$name`s."""
    t0 = time.perf_counter()
    last = check_query(cur, text)[-1].query
    bound = bind(last, params)
    try:
        rel = cur.sql(last, params=bound or None)
        frame = rel.limit(MAX_RESULT_ROWS + 1).pl() if rel is not None else pl.DataFrame()
    except duckdb.Error as exc:
        raise QueryError(str(exc).strip().splitlines()[0] if str(exc).strip() else
                         exc.__class__.__name__) from None
    truncated = frame.height > MAX_RESULT_ROWS
    return QueryResult(text, frame.head(MAX_RESULT_ROWS), time.perf_counter() - t0, truncated)


def export_frame(frame: pl.DataFrame, path: Path, store_root: Path) -> Path:
    """Write a result as CSV or Parquet (by suffix); never inside the run store."""
    path = path.expanduser().resolve()
    root = store_root.resolve()
    if path == root or root in path.parents:
        raise UserError(f"refusing to write into the run store ({root})")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise UserError(f"export to .csv or .parquet, not {suffix or 'a file without suffix'!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    return path
