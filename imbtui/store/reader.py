"""Reading a run store: an in-memory DuckDB connection with views over every run's parts.

Nothing here takes a lock or writes into the store, so any number of readers work beside any number of
training processes. Views are built from an explicit list of finished parts (listed at connect or
refresh time), so a part being written is never half-read, and anything damaged or unknown (a part
that is not Parquet, a run.json that does not parse, a stray file) is skipped with a warning naming it,
while the rest is served.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from imbtui.errors import UserError
from imbtui.store.layout import RUN_ID_RE, StoreError, check_run_id, runs_dir, scan_table
from imbtui.store.schema import (ADDED, RENAMED, RUN_COLUMNS, TABLES, duck_type,
                                  method_label)
from imbtui.store.semantic import create_views

STALE_AFTER_S = 60.0  # a running run whose heartbeat is older than this is shown as crashed
STALE_ENV = "IMBTUI_STALE_AFTER_S"  # override, e.g. for clocks that disagree on a shared filesystem
NEW_RUN_GRACE_S = 10.0  # a run folder this young may still be waiting for its first run.json
READ_ONLY_TYPES = {"SELECT", "EXPLAIN"}
PARQUET_MAGIC = b"PAR1"
# Columns a part must carry to be a part of its table at all (the rest may evolve across versions).
KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "classes": ("run_id", "class_id"),
    "steps": ("run_id", "step", "class_id"),
    "epochs": ("run_id", "epoch", "split", "class_id"),
    "posthoc": ("run_id", "epoch", "split", "tau", "class_id"),
    "logits": ("run_id", "epoch", "split", "class_id"),
    "probes": ("run_id", "step", "grp"),
    "conflict": ("run_id", "step", "grp_a", "grp_b", "class_a", "class_b"),
    "direction": ("run_id", "step", "grp"),
    "samples": ("run_id", "epoch", "sample_id"),
    "geometry": ("run_id", "epoch", "split", "class_id"),
    "geometry_summary": ("run_id", "epoch", "split"),
    "sharpness": ("run_id", "epoch", "grp"),
}
# What identifies one row, for finding rows stored twice: a sampler with replacement may present
# one sample twice in a step, at two batch positions (older parts have no `pos`: NULL).
UNIQUE_KEYS: dict[str, tuple[str, ...]] = {
    **KEY_COLUMNS, "samples": ("run_id", "step", "sample_id", "pos")}
_RETRIES = 8  # query attempts while parts move under the reader (compaction)
# DuckDB errors that are about the query text, never about the files under it.
_QUERY_FAULTS = ("ParserException", "BinderException", "CatalogException", "SyntaxException",
                 "ConversionException", "OutOfRangeException", "InterruptException")
# Parts are immutable once named, so a verdict holds while (path, size, mtime) do: readers that
# refresh every second (the TUI) check each part once. Value: None = good, else what is wrong.
_VERDICTS: dict[tuple[str, int, int], str | None] = {}
_COLUMNS: dict[tuple[str, int, int], frozenset[str]] = {}  # a good part's column names
_DEEP_OK: set[tuple[str, int, int]] = set()
# Small tables (all but the per-step and per-sample ones) are copied into the connection's memory,
# one part at a time and each part once (parts never change): a query over them then touches no
# file, and a refresh reads only new parts.
CACHED_TABLES = tuple(t for t in TABLES if t not in ("steps", "samples"))


class QueryError(UserError):
    """A query the store refuses or DuckDB rejects: shown as one line."""

    kind: str | None = None  # the DuckDB exception class, when DuckDB raised it


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _parse_ts(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def stale_after_s() -> float:
    try:
        value = float(os.environ.get(STALE_ENV, STALE_AFTER_S))
    except ValueError:
        return STALE_AFTER_S
    return value if math.isfinite(value) and value >= 0 else STALE_AFTER_S


def _file_key(path: Path) -> tuple[str, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return str(path), st.st_size, st.st_mtime_ns


def part_problem(path: Path, table: str) -> str | None:
    """What is wrong with a part, from its bytes and its footer (cached), or None if it is readable.

    Catches truncation, garbage (even with valid magic bytes: the footer must parse) and files of
    another table. Damage inside the data pages shows only when they are decoded: see `deep_problem`.
    """
    key = _file_key(path)
    if key is None:
        return "cannot be read"
    if key not in _VERDICTS:
        _VERDICTS[key], columns = _footer_problem(path, key[1], table)
        _COLUMNS[key] = columns
    return _VERDICTS[key]


def part_columns(path: Path) -> frozenset[str]:
    """The column names of a part that `part_problem` found good."""
    key = _file_key(path)
    return _COLUMNS.get(key, frozenset()) if key is not None else frozenset()


def _footer_problem(path: Path, size: int, table: str) -> tuple[str | None, frozenset[str]]:
    none: frozenset[str] = frozenset()
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(max(0, size - 8))
            tail = f.read(8)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})", none
    if size < 12 or head != PARQUET_MAGIC or tail[4:] != PARQUET_MAGIC:
        return "not a Parquet file (truncated or overwritten)", none
    if int.from_bytes(tail[:4], "little") > size - 12:
        return "damaged Parquet footer", none
    try:
        columns = frozenset(pl.read_parquet_schema(path))
    except BaseException as exc:  # polars panics derive from BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return "damaged Parquet footer", none
    missing = [c for c in KEY_COLUMNS.get(table, ()) if c not in columns]
    return (f"not a {table} part (no column {missing[0]})" if missing else None), columns


def deep_problem(path: Path, table: str) -> str | None:
    """`part_problem`, then decode every page: slow, so only for doctor and for query recovery."""
    if problem := part_problem(path, table):
        return problem
    key = _file_key(path)
    if key in _DEEP_OK:
        return None
    try:
        for column in sorted(part_columns(path)):  # one column at a time: bounded memory
            pl.read_parquet(path, columns=[column])
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        if key is not None:
            _VERDICTS[key] = "damaged Parquet data"
        return "damaged Parquet data"
    if key is not None:
        _DEEP_OK.add(key)
    return None


def _coerce(value: Any, dtype: pl.DataType) -> Any:
    """run.json is user-editable: a value of the wrong type becomes NULL instead of failing a read."""
    if value is None or isinstance(value, bool) and dtype != pl.Boolean():
        return None
    if dtype == pl.String():
        return value if isinstance(value, str) else None
    if dtype.is_integer():
        ok = isinstance(value, int) or isinstance(value, float) and value.is_integer()
        return int(value) if ok and abs(value) < 2**62 else None
    if dtype.is_float():
        return float(value) if isinstance(value, (int, float)) else None
    return value


class Store:
    """A run store folder. `connect()` gives a DuckDB connection with the views of DESIGN.md."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"store path {str(self.root)!r} is a file, not a folder")
        self.warnings: list[str] = []
        self._views: dict[int, tuple[list[str] | None, list[Path]]] = {}  # id(con) -> ids, files

    # -- runs ------------------------------------------------------------------------------------
    def run_ids(self) -> list[str]:
        """Run folders, in name order; anything else under runs/ is skipped with a warning."""
        top = runs_dir(self.root)
        try:
            names = sorted(os.listdir(top))
        except (FileNotFoundError, NotADirectoryError):
            return []
        ids = []
        for name in names:
            if RUN_ID_RE.match(name) and (top / name).is_dir():
                ids.append(name)
            elif not name.startswith("."):
                self._warn(f"skipping unknown entry {top / name} (not a run folder)")
        return ids

    def read_run(self, run_id: str) -> dict[str, Any] | None:
        path = runs_dir(self.root) / check_run_id(run_id) / "run.json"
        try:
            meta = json.loads(path.read_text())
        except FileNotFoundError:
            if _age_s(path.parent) > NEW_RUN_GRACE_S:
                self._warn(f"skipping run {run_id}: no run.json in {path.parent}")
            return None
        except (OSError, ValueError) as exc:
            self._warn(f"skipping run {run_id}: unreadable run.json ({exc.__class__.__name__})")
            return None
        if not isinstance(meta, dict):
            self._warn(f"skipping run {run_id}: run.json is not an object")
            return None
        if meta.get("run_id", run_id) != run_id:
            # the folder name is what parts are found by; a copied or edited run.json may disagree
            self._warn(f"run {run_id}: run.json names run {str(meta.get('run_id'))[:80]!r}; "
                       f"using the folder name")
        return {**meta, "run_id": run_id}

    def has_run(self, run_id: str) -> bool:
        return RUN_ID_RE.match(run_id) is not None and self.read_run(run_id) is not None

    def runs_frame(self, now: datetime | None = None) -> pl.DataFrame:
        """One row per readable run, with the effective status (stale `running` -> `crashed`)."""
        now = now or datetime.now(timezone.utc)
        rows = [self._run_row(m, now) for rid in self.run_ids() if (m := self.read_run(rid))]
        return pl.DataFrame(rows, schema=RUN_COLUMNS, orient="row") if rows else pl.DataFrame(
            schema=RUN_COLUMNS)

    def _run_row(self, meta: dict[str, Any], now: datetime) -> tuple[Any, ...]:
        config = meta.get("config")
        config = config if isinstance(config, dict) else {}
        status = _coerce(meta.get("status"), pl.String())
        beat = _parse_ts(meta.get("heartbeat_at"))
        effective = status
        stale = beat is None or (now - beat).total_seconds() > stale_after_s()
        if status == "running" and stale:
            effective = "crashed"
        values: dict[str, Any] = {
            **{k: config.get(k) for k in RUN_COLUMNS},
            **{k: v for k, v in meta.items() if k in RUN_COLUMNS and k != "config"},
        }
        values = {k: _coerce(v, RUN_COLUMNS[k]) for k, v in values.items()}
        values.update({
            "status": effective,
            "recorded_status": status,
            "created_at": _parse_ts(meta.get("created_at")),
            "finished_at": _parse_ts(meta.get("finished_at")),
            "heartbeat_at": beat,
            "config": json.dumps(config, sort_keys=True, default=str),
            "method": method_label(config),
        })
        if "subset_seed" not in config:  # runs made before --subset-seed drew it from --seed
            values["subset_seed"] = values.get("seed")
        return tuple(values.get(k) for k in RUN_COLUMNS)

    # -- connection ------------------------------------------------------------------------------
    def connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(":memory:")
        self.refresh(con)
        return con

    def refresh(self, con: duckdb.DuckDBPyConnection, run_ids: Iterable[str] | None = None) -> None:
        """(Re)create the views so they cover every part finished by now."""
        self.warnings = []
        _cache_footers(con)
        frame = self.runs_frame()
        chosen = list(run_ids) if run_ids is not None else None
        ids = chosen if chosen is not None else frame["run_id"].to_list()
        # A real (in-memory) table, not a registered DataFrame: cursors of `con` (one per worker
        # thread in the TUI) cannot see frames registered on their parent connection.
        con.register("_imbtui_runs_frame", frame)
        con.execute("CREATE OR REPLACE TABLE _imbtui_runs AS SELECT * FROM _imbtui_runs_frame")
        con.unregister("_imbtui_runs_frame")
        con.execute("CREATE OR REPLACE VIEW runs AS SELECT * FROM _imbtui_runs")
        for rid in ids:
            self._check_run_folder(rid)
        # The semantic layer's views bind to the tables' files when they are made: a run that
        # compacts after its table was listed (its plain parts vanish) means listing again.
        for attempt in range(_RETRIES):
            every: list[Path] = []
            older: set[str] = set()
            for table in TABLES:
                build = self._load_table if table in CACHED_TABLES else self._create_view
                files = self._relisting(con, table, ids, build)
                every += files
                older |= _older_columns(table, files)
            try:
                create_views(con)  # the semantic layer over the stored tables
                break
            except duckdb.Error:
                if attempt == _RETRIES - 1 or all(p.exists() for p in every):
                    raise
        if older:
            self._warn(f"some runs were recorded before these columns existed: "
                       f"{', '.join(sorted(older))}; they read as NULL for those runs")
        self._views[id(con)] = (chosen, every)

    def _relisting(self, con: duckdb.DuckDBPyConnection, table: str, ids: list[str],
                   build: Callable[[duckdb.DuckDBPyConnection, str, list[Path]], None],
                   attempts: int = 5) -> list[Path]:
        """List the table's parts and build its view. DuckDB opens the files there, so a run
        that compacts in between (its plain parts vanish) means listing again, not failing; a
        part DuckDB cannot read is recorded as damaged, and the listing skips it next time."""
        for attempt in range(attempts):
            files = [p for rid in ids for p in self._parts(rid, table)]
            try:
                build(con, table, files)
                return files
            except duckdb.Error:
                if attempt == attempts - 1:
                    raise
                if all(p.exists() for p in files) and not _blame_parts(con, files, table):
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _create_view(con: duckdb.DuckDBPyConnection, table: str, files: list[Path]) -> None:
        con.execute(f"CREATE OR REPLACE VIEW {table} AS {_scan_sql(table, files)}")

    @staticmethod
    def _load_table(con: duckdb.DuckDBPyConnection, table: str, files: list[Path]) -> None:
        """Bring the in-memory copy of a small table up to `files`: drop the rows of parts that
        went (compacted, quarantined), read the new ones, in one transaction."""
        cache = f"_imbtui_{table}"
        con.execute(f"CREATE TABLE IF NOT EXISTS {cache} AS {_scan_sql(table, [], True)}")
        loaded = {r[0] for r in con.sql(f"SELECT DISTINCT _part FROM {cache}").fetchall()}
        want = {str(p) for p in files}
        new = [p for p in files if str(p) not in loaded]
        con.execute("BEGIN TRANSACTION")
        try:
            if loaded - want:
                con.execute(f"DELETE FROM {cache} WHERE list_contains($gone, _part)",
                            {"gone": sorted(loaded - want)})
            if new:
                con.execute(f"INSERT INTO {cache} {_scan_sql(table, new, with_part=True)}")
            cols = ", ".join(TABLES[table])
            con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT {cols} FROM {cache}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _check_run_folder(self, run_id: str) -> None:
        folder = runs_dir(self.root) / check_run_id(run_id)
        try:
            names = os.listdir(folder)
        except OSError:
            return
        for name in sorted(names):
            if name != "run.json" and name not in TABLES and not name.startswith("."):
                self._warn(f"skipping unknown file {folder / name}")

    def _parts(self, run_id: str, table: str) -> list[Path]:
        listing = scan_table(runs_dir(self.root) / check_run_id(run_id) / table)
        for p in listing.unknown:
            self._warn(f"skipping unknown file {p}")
        good = []
        for p in listing.parts:
            problem = part_problem(p, table)
            if problem is None:
                good.append(p)
            else:
                self._warn(f"skipping damaged part {p}: {problem}")
        return good

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    # -- queries ---------------------------------------------------------------------------------
    def sql(self, query: str, params: dict[str, Any] | list[Any] | None = None,
            con: duckdb.DuckDBPyConnection | None = None) -> pl.DataFrame:
        """Run a read-only query and return a polars DataFrame.

        If DuckDB fails on the files rather than on the query (a run compacted its parts since the
        views were made, or a part is damaged inside), the views are rebuilt without the culprit
        and the query runs once more, so one bad file never costs the user their answer.
        """
        con = con or self.connect()
        for attempt in range(_RETRIES):
            try:
                return run_read_only(con, query, params)
            except QueryError as exc:
                # several runs may compact one after another while we read: retry while the
                # rebuilt views differ, a bounded number of times
                if (attempt == _RETRIES - 1 or exc.kind is None or exc.kind in _QUERY_FAULTS
                        or not self._recover(con)):
                    raise
        raise AssertionError("unreachable")

    def _recover(self, con: duckdb.DuckDBPyConnection) -> bool:
        """Rebuild the views after a file-level failure; True if they changed (worth a retry)."""
        chosen, before = self._views.get(id(con), (None, []))
        warnings = list(self.warnings)
        self.refresh(con, chosen)
        if self._views[id(con)][1] != before:
            self.warnings = warnings + [w for w in self.warnings if w not in warnings]
            return True
        bad = {p for p in before if deep_problem(p, p.parent.name) is not None}
        if not bad:
            return False
        self.refresh(con, chosen)  # the verdict cache now skips the damaged parts, with warnings
        self.warnings = warnings + [w for w in self.warnings if w not in warnings]
        return True


def _cache_footers(con: duckdb.DuckDBPyConnection) -> None:
    """Let DuckDB keep the Parquet footers it has read: a query for one run over every run's parts
    otherwise parses each footer again (on 200 runs, about half the time of a curve query). Safe
    because parts never change once named (DuckDB also checks their modification time)."""
    try:
        con.execute("SET parquet_metadata_cache = true")
    except duckdb.Error:
        pass  # a DuckDB without the setting reads the footers each time: slower, still correct


def _older_columns(table: str, files: list[Path]) -> set[str]:
    """`table.column` of each column that parts written before a rename lack (schema.RENAMED: the
    parts without the marker column): they read as NULL there. Columns merely added later that a
    writer may leave out (schema.ADDED: NULL when not given) are not reported."""
    marker, moved = RENAMED.get(table, (None, {}))
    if not marker:
        return set()
    added = set(ADDED.get(table, ()))
    missing: set[str] = set()
    for p in files:
        columns = part_columns(p)
        if marker not in columns:  # read from their old names where they had one
            filled = {c for c, old in moved.items() if old is not None and old in columns}
            missing |= (added - columns - filled) | {c for c, old in moved.items() if old is None}
    return {f"{table}.{c}" for c in missing}


def _scan_sql(table: str, files: list[Path], with_part: bool = False) -> str:
    """SELECT the table's columns, cast to the schema, from `files` (with `_part`: the file).

    Parts with the same columns (all of them, unless the schema grew between versions) are read by
    one read_parquet without union_by_name, which would open every footer at each query; a column
    a part lacks (added to the schema after it was written) reads as NULL.
    """
    schema = TABLES[table]
    part = ", filename::VARCHAR AS _part" if with_part else ""
    if not files:
        nulls = ", ".join(f"CAST(NULL AS {duck_type(t)}) AS {c}" for c, t in schema.items())
        return f"SELECT {nulls}{part.replace('filename', 'NULL')} WHERE false"
    groups: dict[frozenset[str], list[Path]] = {}
    for p in files:
        groups.setdefault(part_columns(p), []).append(p)
    marker, moved = RENAMED.get(table, (None, {}))
    selects = []
    for columns, paths in groups.items():
        # a part written before a column's rename (it lacks the marker) reads it from the old name
        src = {c: moved.get(c, c) if marker and marker not in columns else c for c in schema}
        cols = ", ".join(f"CAST({src[c] if src[c] in columns else 'NULL'} AS {duck_type(t)}) AS {c}"
                         for c, t in schema.items())
        listing = ", ".join(_sql_str(str(p)) for p in paths)
        flag = ", filename=true" if with_part else ""
        selects.append(f"SELECT {cols}{part} FROM read_parquet([{listing}]{flag})")
    return " UNION ALL ".join(selects)


def _blame_parts(con: duckdb.DuckDBPyConnection, files: list[Path], table: str) -> bool:
    """Find the parts DuckDB cannot read (though their footer parsed) and record them as
    damaged, so the next listing skips them with a warning. True if any was found."""
    found = False
    for p in files:
        try:
            con.sql(f"SELECT count(*) FROM parquet_schema({_sql_str(str(p))})").fetchall()
        except duckdb.Error:
            if (key := _file_key(p)) is not None:
                _VERDICTS[key] = "DuckDB cannot read its footer"
                found = True
            continue
        # the small tables are read whole at refresh: a part may fail only in its pages
        if table in CACHED_TABLES and deep_problem(p, table) is not None:
            found = True
    return found


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


_LEADING_NOISE = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.S)
_EXPLAIN = re.compile(r"^EXPLAIN\s*(?:\([^)]*\)\s*)?(?:ANALY[SZ]E\b)?(.*)$", re.S | re.I)


def check_read_only(con: duckdb.DuckDBPyConnection, query: str) -> list[Any]:
    """Parse `query` and refuse anything but SELECT / EXPLAIN: the store is never written by SQL."""
    statements = _parse(con, query)
    if not statements:
        raise QueryError("empty query")
    for st in statements:
        _check_statement(con, st.type.name, st.query)
    return statements


def _parse(con: duckdb.DuckDBPyConnection, query: str) -> list[Any]:
    try:
        return con.extract_statements(query)
    except duckdb.Error as exc:
        raise QueryError(first_line(exc)) from None


def _check_statement(con: duckdb.DuckDBPyConnection, kind: str, text: str) -> None:
    if kind not in READ_ONLY_TYPES:
        raise QueryError(f"only read-only queries are allowed (SELECT, WITH, DESCRIBE, "
                         f"EXPLAIN); got a {kind} statement")
    if kind == "EXPLAIN":
        # EXPLAIN ANALYZE runs what it explains: EXPLAIN ANALYZE COPY ... TO writes a file
        m = _EXPLAIN.match(_LEADING_NOISE.sub("", text, count=1))
        inner = _parse(con, m[1]) if m else []
        if len(inner) != 1 or inner[0].type.name != "SELECT":
            raise QueryError("only read-only queries are allowed: EXPLAIN works on a SELECT only")


def run_read_only(con: duckdb.DuckDBPyConnection, query: str,
                  params: dict[str, Any] | list[Any] | None = None) -> pl.DataFrame:
    statements = check_read_only(con, query)
    try:
        for st in statements[:-1]:
            con.execute(st.query).fetchall()
        rel = con.sql(statements[-1].query, params=params or None)
        return rel.pl() if rel is not None else pl.DataFrame()
    except duckdb.Error as exc:
        err = QueryError(first_line(exc))
        err.kind = exc.__class__.__name__
        raise err from None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__
