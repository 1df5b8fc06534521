"""Read-only SQL: any statement that would modify or destroy data, typed into `imbtui sql`, the
Python API or the terminal app's SQL screen, is refused with a clear message and leaves the store
byte for byte unchanged (several of them, run by plain DuckDB, would have written into it).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import numpy as np
import pytest

from imbtui.cli import main
from imbtui.store import QueryError, RunWriter, Store

PART = "runs/a/steps/part-000000.parquet"

# {root}: the store folder. The two COPY ... TO into a real part would overwrite recorded data.
STATEMENTS = [
    "DROP VIEW steps",
    "DROP TABLE IF EXISTS t",
    "DELETE FROM steps",
    "UPDATE steps SET n = 0",
    "INSERT INTO steps SELECT * FROM steps",
    "TRUNCATE steps",
    "ALTER VIEW steps RENAME TO s",
    "CREATE TABLE t AS SELECT 1",
    "CREATE OR REPLACE VIEW steps AS SELECT 1",
    "CREATE MACRO one() AS 1",
    "ATTACH '{root}/x.duckdb' AS x",
    "DETACH memory",
    "COPY steps TO '{root}/" + PART + "' (FORMAT parquet)",
    "COPY (SELECT 1 AS step) TO '{root}/runs/a/steps/part-000001.parquet' (FORMAT parquet)",
    "EXPORT DATABASE '{root}/dump'",
    "IMPORT DATABASE '{root}/dump'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "PRAGMA enable_profiling",
    "SET threads = 1",
    "CALL pragma_version()",
    "CHECKPOINT",
    "VACUUM",
    "BEGIN TRANSACTION",
    "USE memory",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO '{root}/" + PART + "' (FORMAT parquet)",
    "/* a comment */ explain analyse create table t as select 1",
    "EXPLAIN (FORMAT json) COPY (SELECT 1) TO '{root}/y.csv'",
    "SELECT 1; DROP VIEW runs",
    "SELECT 1; COPY (SELECT 1) TO '{root}/z.csv'",
]


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ro")
    w = RunWriter(root, run_id="a", heartbeat_s=3600)
    w.start({"name": "a"})
    k = 6
    w.write("steps", {"step": np.arange(k), "epoch": np.zeros(k, dtype=int),
                      "class_id": np.zeros(k, dtype=int), "n": np.ones(k, dtype=int),
                      "loss_sum": np.ones(k), "correct": np.ones(k, dtype=int),
                      "p_true_sum": np.ones(k), "margin_sum": np.ones(k),
                      "pred_count": np.ones(k, dtype=int), "grad_norm": np.ones(k),
                      "lr": np.ones(k)})
    w.finish("finished")
    return root


def test_plain_duckdb_would_write_into_the_store(root: Path, tmp_path: Path) -> None:
    """Why the gate matters: the same connection, without it, overwrites a recorded part."""
    con = Store(root).connect()
    target = tmp_path / "part.parquet"
    con.sql(f"EXPLAIN ANALYZE COPY (SELECT 42 AS x) TO '{target}' (FORMAT parquet)").fetchall()
    assert target.exists()


@pytest.mark.parametrize("statement", STATEMENTS)
def test_refused_by_the_store_api(root: Path, statement: str) -> None:
    before = digest(root)
    st = Store(root)
    with pytest.raises(QueryError, match="read-only") as info:
        st.sql(statement.format(root=root))
    assert "\n" not in str(info.value)
    assert digest(root) == before
    assert st.sql("SELECT count(*) FROM steps").item() == 6  # and the views still answer


@pytest.mark.parametrize("statement", STATEMENTS)
def test_refused_by_imbtui_sql(root: Path, statement: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    before = digest(root)
    assert main(["sql", statement.format(root=root), "--store", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "read-only" in err
    assert digest(root) == before


@pytest.mark.parametrize("statement", STATEMENTS)
def test_refused_by_the_sql_screen(root: Path, statement: str) -> None:
    from imbtui.tui.data import StoreSession, run_query

    before = digest(root)
    session = StoreSession(root)
    with pytest.raises(QueryError, match="read-only|EXPLAIN"):
        run_query(session.cursor(), statement.format(root=root))
    assert digest(root) == before


@pytest.mark.parametrize("query", [
    "SELECT count(*) FROM steps",
    "WITH s AS (SELECT * FROM steps) SELECT sum(n) FROM s",
    "DESCRIBE steps",
    "SUMMARIZE steps",
    "EXPLAIN SELECT * FROM steps",
    "EXPLAIN ANALYZE SELECT * FROM steps",
    "-- a comment\nFROM steps SELECT max(step)",
    "SELECT 1; SELECT 2",
])
def test_read_only_queries_still_run(root: Path, query: str) -> None:
    before = digest(root)
    assert Store(root).sql(query).height >= 1
    assert digest(root) == before


def test_a_select_cannot_smuggle_a_write(root: Path) -> None:
    """query() runs only a SELECT: a write inside it fails in DuckDB's own parser."""
    before = digest(root)
    with pytest.raises(QueryError):
        Store(root).sql(f"SELECT * FROM query('COPY (SELECT 1) TO ''{root}/q.csv''')")
    assert digest(root) == before
    with pytest.raises(duckdb.Error):  # and by itself DuckDB refuses it too
        duckdb.connect().sql(f"SELECT * FROM query('COPY (SELECT 1) TO ''{root}/q.csv''')")
