"""Reading a run store: an in-memory DuckDB connection with views over every run's parts.

Nothing here takes a lock or writes into the store, so any number of readers work beside any number of
training processes. Views are built from an explicit list of finished parts (listed at connect or
refresh time), so a part being written is never half-read and a damaged part is skipped with a warning.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from imbtui.errors import UserError
from imbtui.store.layout import RUN_ID_RE, StoreError, check_run_id, part_files, runs_dir
from imbtui.store.schema import RUN_COLUMNS, TABLES, duck_type

STALE_AFTER_S = 60.0  # a running run whose heartbeat is older than this is shown as crashed
READ_ONLY_TYPES = {"SELECT", "EXPLAIN"}
PARQUET_MAGIC = b"PAR1"


class QueryError(UserError):
    """A query the store refuses or DuckDB rejects: shown as one line."""


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _parse_ts(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        ts = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def _looks_like_parquet(path: Path) -> bool:
    # A truncated part (a writer killed mid-rename cannot produce one, but a copy or a full disk can)
    # lacks the footer magic; checking 8 bytes is far cheaper than letting DuckDB fail the whole view.
    try:
        size = path.stat().st_size
        if size < 12:
            return False
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(size - 4)
            return head == PARQUET_MAGIC and f.read(4) == PARQUET_MAGIC
    except OSError:
        return False


class Store:
    """A run store folder. `connect()` gives a DuckDB connection with the views of DESIGN.md."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"store path {str(self.root)!r} is a file, not a folder")
        self.warnings: list[str] = []

    # -- runs ------------------------------------------------------------------------------------
    def run_ids(self) -> list[str]:
        try:
            names = sorted(os.listdir(runs_dir(self.root)))
        except FileNotFoundError:
            return []
        return [n for n in names if RUN_ID_RE.match(n) and (runs_dir(self.root) / n).is_dir()]

    def read_run(self, run_id: str) -> dict[str, Any] | None:
        path = runs_dir(self.root) / check_run_id(run_id) / "run.json"
        try:
            meta = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._warn(f"skipping run {run_id}: unreadable run.json ({exc.__class__.__name__})")
            return None
        if not isinstance(meta, dict):
            self._warn(f"skipping run {run_id}: run.json is not an object")
            return None
        return meta

    def has_run(self, run_id: str) -> bool:
        return RUN_ID_RE.match(run_id) is not None and self.read_run(run_id) is not None

    def runs_frame(self, now: datetime | None = None) -> pl.DataFrame:
        """One row per readable run, with the effective status (stale `running` -> `crashed`)."""
        now = now or datetime.now(timezone.utc)
        rows = [self._run_row(m, now) for rid in self.run_ids() if (m := self.read_run(rid))]
        return pl.DataFrame(rows, schema=RUN_COLUMNS, orient="row") if rows else pl.DataFrame(
            schema=RUN_COLUMNS)

    def _run_row(self, meta: dict[str, Any], now: datetime) -> tuple[Any, ...]:
        config = meta.get("config") or {}
        status = meta.get("status")
        beat = _parse_ts(meta.get("heartbeat_at"))
        effective = status
        if status == "running" and (beat is None or (now - beat).total_seconds() > STALE_AFTER_S):
            effective = "crashed"
        values: dict[str, Any] = {
            **{k: config.get(k) for k in RUN_COLUMNS},
            **{k: v for k, v in meta.items() if k in RUN_COLUMNS and k != "config"},
            "status": effective,
            "recorded_status": status,
            "created_at": _parse_ts(meta.get("created_at")),
            "finished_at": _parse_ts(meta.get("finished_at")),
            "heartbeat_at": beat,
            "config": json.dumps(config, sort_keys=True),
        }
        return tuple(values.get(k) for k in RUN_COLUMNS)

    # -- connection ------------------------------------------------------------------------------
    def connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(":memory:")
        self.refresh(con)
        return con

    def refresh(self, con: duckdb.DuckDBPyConnection, run_ids: Iterable[str] | None = None) -> None:
        """(Re)create the views so they cover every part finished by now."""
        self.warnings = []
        frame = self.runs_frame()
        ids = list(run_ids) if run_ids is not None else frame["run_id"].to_list()
        con.register("_imbtui_runs", frame)
        con.execute("CREATE OR REPLACE VIEW runs AS SELECT * FROM _imbtui_runs")
        for table, schema in TABLES.items():
            files = [p for rid in ids for p in self._parts(rid, table)]
            con.execute(f"CREATE OR REPLACE VIEW {table} AS {self._select(table, schema, files)}")

    def _parts(self, run_id: str, table: str) -> list[Path]:
        good = []
        for p in part_files(runs_dir(self.root) / run_id / table):
            if _looks_like_parquet(p):
                good.append(p)
            else:
                self._warn(f"skipping damaged part {p}")
        return good

    @staticmethod
    def _select(table: str, schema: dict[str, pl.DataType], files: list[Path]) -> str:
        cols = ", ".join(f"CAST({c} AS {duck_type(t)}) AS {c}" for c, t in schema.items())
        if not files:
            nulls = ", ".join(f"CAST(NULL AS {duck_type(t)}) AS {c}" for c, t in schema.items())
            return f"SELECT {nulls} WHERE false"
        listing = ", ".join(_sql_str(str(p)) for p in files)
        return f"SELECT {cols} FROM read_parquet([{listing}], union_by_name=true)"

    def _warn(self, message: str) -> None:
        self.warnings.append(message)

    # -- queries ---------------------------------------------------------------------------------
    def sql(self, query: str, params: dict[str, Any] | list[Any] | None = None,
            con: duckdb.DuckDBPyConnection | None = None) -> pl.DataFrame:
        """Run a read-only query and return a polars DataFrame."""
        con = con or self.connect()
        return run_read_only(con, query, params)


def check_read_only(con: duckdb.DuckDBPyConnection, query: str) -> list[Any]:
    """Parse `query` and refuse anything but SELECT / EXPLAIN: the store is never written by SQL."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise QueryError(first_line(exc)) from None
    if not statements:
        raise QueryError("empty query")
    for st in statements:
        kind = st.type.name
        if kind not in READ_ONLY_TYPES:
            raise QueryError(f"only read-only queries are allowed (SELECT, WITH, DESCRIBE, "
                             f"EXPLAIN); got a {kind} statement")
    return statements


def run_read_only(con: duckdb.DuckDBPyConnection, query: str,
                  params: dict[str, Any] | list[Any] | None = None) -> pl.DataFrame:
    statements = check_read_only(con, query)
    try:
        for st in statements[:-1]:
            con.execute(st.query).fetchall()
        rel = con.sql(statements[-1].query, params=params or None)
        return rel.pl() if rel is not None else pl.DataFrame()
    except duckdb.Error as exc:
        raise QueryError(first_line(exc)) from None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__
