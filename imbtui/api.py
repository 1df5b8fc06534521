"""The Python API: open a run store and ask it questions, answers as polars DataFrames.

    >>> import imbtui
    >>> store = imbtui.open_store("sample_runs")
    >>> store.runs()                                   # one row per run, with final accuracies
    >>> store.query("learning_onset", threshold=0.8)   # a named analysis from queries/
    >>> store.sql("SELECT * FROM epochs WHERE run_id = $run", {"run": "..."})

Every call sees the parts finished by then, so a notebook can follow a run while it trains. Nothing
here writes into the store.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import duckdb
import polars as pl

from imbtui.queries import NamedQuery, list_queries, load_query
from imbtui.store import Store, StoreError, resolve_store


class RunStore:
    """A run store opened for analysis: `.sql`, `.runs`, `.query`, `.report`."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        root = resolve_store(path)
        if not root.is_dir():
            raise StoreError(f"no run store at {str(root)!r}")
        self.store = Store(root)
        self._con: duckdb.DuckDBPyConnection | None = None

    def __repr__(self) -> str:
        return f"RunStore({str(self.store.root)!r})"

    @property
    def root(self) -> os.PathLike[str]:
        return self.store.root

    @property
    def warnings(self) -> list[str]:
        """Parts skipped at the last refresh (damaged or unreadable files)."""
        return list(self.store.warnings)

    def connection(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection with the store's views, refreshed to cover every finished part."""
        if self._con is None:
            self._con = self.store.connect()
        else:
            self.store.refresh(self._con)
        return self._con

    def sql(self, query: str, params: dict[str, Any] | Sequence[Any] | None = None
            ) -> pl.DataFrame:
        """Run read-only SQL over the store's views: the stored tables (runs, classes, steps,
        epochs, probes, samples, geometry, geometry_summary) and the semantic layer
        (class_results, group_results, final_results, sample_presentations, sample_events)."""
        return self.store.sql(query, params, con=self.connection())

    def runs(self) -> pl.DataFrame:
        """Every run (the `runs` view) with its final results (the `final_results` view)."""
        return self.sql("SELECT r.*, f.* EXCLUDE (run_id) FROM runs r "
                        "LEFT JOIN final_results f USING (run_id) ORDER BY r.created_at, r.run_id")

    def query(self, name: str, **params: Any) -> pl.DataFrame:
        """A named analysis (or a .sql file path) with its parameters bound, e.g. runs=[...]."""
        q = load_query(name)
        if isinstance(params.get("runs"), str):
            params["runs"] = [params["runs"]]
        return self.sql(q.sql, q.bind(params) or None)

    def queries(self) -> pl.DataFrame:
        """The named analyses: name, the question each answers, and its parameters."""
        return queries_frame(list_queries())

    def report(self, runs: Sequence[str] | None = None, threshold: float = 0.5,
               early: int = 2) -> pl.DataFrame:
        """The study's three findings, one row per run (see imbtui.report)."""
        from imbtui.report import findings

        return findings(self, list(runs or []), threshold=threshold, early=early)


def queries_frame(queries: list[NamedQuery]) -> pl.DataFrame:
    params = [", ".join(f"{p.name}={_show(p.default)}" for p in q.params) for q in queries]
    return pl.DataFrame({"name": [q.name for q in queries],
                         "question": [q.question for q in queries], "params": params})


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def open_store(path: str | os.PathLike[str] | None = None) -> RunStore:
    """Open a run store folder (default: $IMBTUI_STORE, else ./imbtui-runs) for analysis."""
    return RunStore(path)
