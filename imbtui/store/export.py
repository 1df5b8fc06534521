"""`imbtui export --duckdb FILE`: selected runs as one standalone DuckDB database file.

For sharing a result, or for any DuckDB client (the duckdb CLI, R, a notebook): the file holds real
tables named like the store's tables (runs, classes, steps, epochs, probes, samples, geometry,
geometry_summary), the semantic layer's views and macros over them (final_results, group_results,
...: the same definitions as in the store, imbtui/store/semantic.py) and `export_info`, and needs
neither imbtui nor the store. The store is only read; the file is built under a temporary
name beside FILE and renamed into place, so a killed export leaves no half-written database.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import duckdb

from imbtui.store.layout import StoreError, iso, utcnow
from imbtui.store.reader import KEY_COLUMNS, QueryError, Store, _sql_str, first_line, run_read_only
from imbtui.store.schema import TABLES
from imbtui.store.semantic import create_views


def select_runs(store: Store, con: duckdb.DuckDBPyConnection, run_ids: Sequence[str] | None,
                where: str | None) -> list[str]:
    """The run ids to export: the given ones (default: all), narrowed by a SQL condition on `runs`."""
    ids = list(run_ids) if run_ids else store.runs_frame()["run_id"].to_list()
    if where:
        # the condition is user SQL: it runs through the same read-only gate as `imbtui sql`
        keep = set(run_read_only(con, f"SELECT run_id FROM runs WHERE ({where})")["run_id"])
        ids = [i for i in ids if i in keep]
    return ids


def check_destination(dest: Path, store_root: Path, force: bool) -> None:
    """Refuse a FILE that would write into the store, replace data unasked, or has no folder."""
    target = dest.resolve()
    root = store_root.resolve()
    if target == root or root in target.parents:
        raise StoreError(f"{str(dest)!r} is inside the run store {str(store_root)!r}; export "
                         f"writes outside it")
    if target.is_dir():
        raise StoreError(f"{str(dest)!r} is a folder; give a file name such as runs.duckdb")
    if target.exists() and not force:
        raise StoreError(f"{str(dest)!r} exists; pass --force to replace it")
    if not target.parent.is_dir():
        raise StoreError(f"folder {str(target.parent)!r} does not exist")


def export_duckdb(store: Store, dest: Path, run_ids: Sequence[str] | None = None,
                  where: str | None = None, force: bool = False) -> dict[str, int]:
    """Write the selected runs into the DuckDB file `dest`; returns rows written per table."""
    check_destination(dest, store.root, force)
    con = store.connect()
    ids = select_runs(store, con, run_ids, where)
    if not ids:
        raise StoreError("no runs to export (check the run ids and --where)")
    store.refresh(con, ids)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        counts = _fill(con, tmp, ids, store.root)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except duckdb.Error as exc:
        raise QueryError(f"export failed: {first_line(exc)}") from None
    except OSError as exc:
        raise StoreError(f"cannot write {str(dest)!r}: {exc.strerror}") from None
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return counts


def _fill(con: duckdb.DuckDBPyConnection, tmp: Path, ids: list[str], root: Path) -> dict[str, int]:
    tmp.unlink(missing_ok=True)
    con.execute(f"ATTACH {_sql_str(str(tmp))} AS export_db")
    try:
        id_list = "[" + ", ".join(_sql_str(i) for i in ids) + "]"
        con.execute(f"CREATE TABLE export_db.runs AS SELECT * FROM runs "
                    f"WHERE list_contains({id_list}, run_id) ORDER BY created_at, run_id")
        counts = {"runs": len(ids)}
        for table in TABLES:
            # sorted by key: zone maps then let a query for one run skip the rest of the file
            order = ", ".join(KEY_COLUMNS.get(table, ("run_id",)))
            con.execute(f"CREATE TABLE export_db.{table} AS SELECT * FROM {table} ORDER BY {order}")
            counts[table] = con.sql(f"SELECT count(*) FROM export_db.{table}").fetchall()[0][0]
        con.execute("CREATE TABLE export_db.export_info AS SELECT * FROM (VALUES "
                    f"('source_store', {_sql_str(str(root.resolve()))}), "
                    f"('exported_at', {_sql_str(iso(utcnow()) or '')}), "
                    f"('runs', {_sql_str(str(len(ids)))})) AS t(key, value)")
    finally:
        con.execute("DETACH export_db")
    with duckdb.connect(str(tmp)) as out:  # the semantic layer, over the file's own tables
        create_views(out)
    return counts
