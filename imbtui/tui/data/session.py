"""The app's one view of the store: a DuckDB session every worker shares, and the runs table.

`StoreSession` holds one in-memory connection whose views cover the store's runs (or a chosen few),
rebuilds them when something changed on disk, and hands each query its own cursor. `runs_table` and
`quick_runs_table` are what the runs screen lists. No Textual here: these run in thread workers.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from imbtui.store import Store
from imbtui.store.layout import runs_dir

# A run whose heartbeat stopped turns 'crashed' without any file changing: while some run of the
# session is running, it looks again at least this often even when nothing on disk moved (with none
# running, a status changes only with a file).
STATUS_RECHECK_S = 20


class StoreSession:
    """One in-memory DuckDB connection over the store, refreshed by workers, one cursor per query.

    DuckDB cursors share the database but not the frames `register`ed on the parent connection, so
    after each refresh the `runs` frame is copied into a real in-memory table every cursor can see.
    """

    def __init__(self, root: Path, sample: bool = False,
                 scope: tuple[str, ...] | None = None) -> None:
        self.store = Store(root)
        self.root = Path(root)
        self.sample = sample
        self.scope = scope
        self.generation = 0
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._signature: tuple[Any, ...] | None = None
        self._live = True  # some run was running at the last refresh (or none was made yet)

    def refresh(self, force: bool = False) -> int:
        """Rebuild the views when the store changed on disk; returns the data generation."""
        with self._lock:
            sig = self._fingerprint()
            if self._con is not None and not force and sig == self._signature:
                return self.generation
            if self._con is None:
                self._con = duckdb.connect(":memory:")
            self.store.refresh(self._con, run_ids=self.scope)
            self._live = bool(self._con.sql(
                "SELECT count(*) FROM runs WHERE status = 'running'").fetchall()[0][0])
            # taken before the rebuild, so a change made meanwhile is seen at the next look; the
            # clock kept in it only while a run is running
            self._signature = (sig[0], sig[1] if self._live else None, *sig[2:])
            self.generation += 1
            return self.generation

    def scoped(self, run_ids: list[str]) -> StoreSession:
        """A session whose views cover only these runs: a run screen's queries then read one
        run's parts, not every run's (on 200 runs x 20,000 steps: ~0.1 s instead of seconds)."""
        return StoreSession(self.root, self.sample, scope=tuple(run_ids))

    def close(self) -> None:
        """Close the connection; a later `cursor()` opens a fresh one."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor of its own for one query (cursors may run at once, in different workers)."""
        if self._con is None:
            self.refresh()
        with self._lock:
            assert self._con is not None
            return self._con.cursor()

    def _fingerprint(self) -> tuple[Any, ...]:
        # mtimes of the runs folder, each run folder, run.json and table folder: a new part, a new
        # run or a heartbeat changes one of them.
        stamps: list[Any] = [int(time.time() // STATUS_RECHECK_S) if self._live else None]
        base = runs_dir(self.root)
        entries = _scandir(base)
        if self.scope is not None:
            entries = [d for d in entries if d.name in self.scope]
        for d in entries:
            stamps.append((d.name, _mtime(Path(d.path) / "run.json"), d.stat().st_mtime_ns))
            stamps.extend(_mtime(Path(t.path)) for t in _scandir(Path(d.path)))
        return (_mtime(base), *stamps)


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    """The sub-folders of `path` by name; none when it is missing or unreadable."""
    try:
        return sorted((e for e in os.scandir(path) if e.is_dir()), key=lambda e: e.name)
    except OSError:
        return []


def _mtime(path: Path) -> int:
    """Modification time in ns; 0 for a path that vanished meanwhile (a run being deleted)."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def runs_table(cur: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """One row per run: identity, progress and final balanced / majority / minority test accuracy
    (the store's final_results view)."""
    return cur.sql("""
        SELECT r.run_id, r.name, r.status, r.recorded_status, r.dataset, r.profile, r.ratio,
               r.model, r.loss, r.sampler, r.drw, r.method, r.epoch_done, r.epochs, r.step_done,
               r.total_steps, r.seed, r.lr, r.batch_size,
               r.created_at, r.heartbeat_at, r.message,
               f.test_balanced, f.test_majority, f.test_minority
        FROM runs r LEFT JOIN final_results f USING (run_id)
        ORDER BY r.created_at, r.run_id""").pl()


def quick_runs_table(store: Store) -> pl.DataFrame:
    """The runs table from run.json files alone (no Parquet read): the first frame shows every run
    at once, and the accuracies follow when `runs_table` has read the epochs."""
    frame = store.runs_frame()
    acc = [pl.lit(None, dtype=pl.Float64).alias(c) for c in ("test_balanced", "test_majority",
                                                             "test_minority")]
    return frame.with_columns(acc).sort("created_at", "run_id")
