"""The run store: write through RunWriter, read back through DuckDB views."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from imbtui.store import QueryError, RunWriter, Store, StoreError, TABLES


def steps_cols(steps: list[int], n_classes: int, value: float) -> dict[str, np.ndarray]:
    k = len(steps)
    return {
        "step": np.repeat(steps, n_classes), "epoch": np.ones(k * n_classes, dtype=int),
        "class_id": np.tile(np.arange(n_classes), k), "n": np.full(k * n_classes, 4),
        "loss_sum": np.full(k * n_classes, value), "correct": np.full(k * n_classes, 2),
        "p_true_sum": np.full(k * n_classes, 1.5), "margin_sum": np.zeros(k * n_classes),
        "pred_count": np.full(k * n_classes, 4), "grad_norm": np.ones(k * n_classes),
        "lr": np.full(k * n_classes, 0.1),
    }


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def make_run(root: Path, run_id: str, parts: int = 2, n_classes: int = 3) -> RunWriter:
    w = RunWriter(root, run_id=run_id, heartbeat_s=60)
    w.start({"name": run_id, "config": {"dataset": "toy", "ratio": 10.0, "n_classes": n_classes}})
    for p in range(parts):
        w.write("steps", steps_cols([2 * p, 2 * p + 1], n_classes, value=float(p)))
    return w


def test_round_trip(tmp_path: Path) -> None:
    make_run(tmp_path, "a", parts=2).finish("finished")
    make_run(tmp_path, "b", parts=1).finish("interrupted", "stopped by user")
    st = Store(tmp_path)
    got = st.sql("SELECT run_id, count(*) AS rows, sum(n) AS n, sum(loss_sum) AS loss "
                 "FROM steps GROUP BY run_id ORDER BY run_id").to_dicts()
    # a: 2 parts x 2 steps x 3 classes; loss value p per row of part p -> 6*0 + 6*1
    assert got == [{"run_id": "a", "rows": 12, "n": 48, "loss": 6.0},
                   {"run_id": "b", "rows": 6, "n": 24, "loss": 0.0}]
    runs = st.sql("SELECT run_id, status, dataset, ratio, message FROM runs ORDER BY run_id")
    assert runs.to_dicts() == [
        {"run_id": "a", "status": "finished", "dataset": "toy", "ratio": 10.0, "message": None},
        {"run_id": "b", "status": "interrupted", "dataset": "toy", "ratio": 10.0,
         "message": "stopped by user"}]
    parts = sorted(p.name for p in (tmp_path / "runs" / "a" / "steps").iterdir())
    assert parts == ["part-000000.parquet", "part-000001.parquet"]  # no temp files left behind


def test_empty_store_has_typed_empty_views(tmp_path: Path) -> None:
    st = Store(tmp_path / "missing")
    for table, schema in TABLES.items():
        frame = st.sql(f"SELECT * FROM {table}")
        assert frame.height == 0 and frame.columns == list(schema)
    assert st.sql("SELECT count(*) AS n FROM runs").item() == 0


def test_live_run_becomes_crashed_when_heartbeat_is_stale(tmp_path: Path) -> None:
    w = make_run(tmp_path, "live", parts=1)
    st = Store(tmp_path)
    assert st.runs_frame()["status"].to_list() == ["running"]
    later = datetime.now(timezone.utc) + timedelta(seconds=120)
    frame = st.runs_frame(now=later)
    assert frame["status"].to_list() == ["crashed"]
    assert frame["recorded_status"].to_list() == ["running"]
    w.finish("finished")


def test_refresh_sees_new_parts_of_a_live_run(tmp_path: Path) -> None:
    w = make_run(tmp_path, "live", parts=1)
    st = Store(tmp_path)
    con = st.connect()
    assert con.execute("SELECT count(*) FROM steps").fetchall() == [(6,)]
    w.write("steps", steps_cols([10], 3, 0.0))
    assert con.execute("SELECT count(*) FROM steps").fetchall() == [(6,)]  # views are a snapshot...
    st.refresh(con)
    assert con.execute("SELECT count(*) FROM steps").fetchall() == [(9,)]  # ...until refreshed
    w.finish("finished")


def test_damaged_part_and_run_json_are_skipped_with_warnings(tmp_path: Path) -> None:
    make_run(tmp_path, "good", parts=2).finish("finished")
    make_run(tmp_path, "bad", parts=1).finish("finished")
    part = tmp_path / "runs" / "good" / "steps" / "part-000001.parquet"
    part.write_bytes(part.read_bytes()[:100])  # truncated
    (tmp_path / "runs" / "bad" / "run.json").write_text("{not json")
    st = Store(tmp_path)
    assert st.sql("SELECT count(*) FROM steps").item() == 6  # good's first part only
    assert any("part-000001" in w for w in st.warnings)
    assert any("bad" in w and "run.json" in w for w in st.warnings)


@pytest.mark.parametrize("query", [
    "DROP VIEW steps", "CREATE TABLE t AS SELECT 1", "DELETE FROM steps",
    "COPY (SELECT 1) TO 'x.csv'", "ATTACH 'x.duckdb'", "INSTALL httpfs", "SELECT 1; DROP VIEW runs",
])
def test_sql_is_read_only(tmp_path: Path, query: str) -> None:
    make_run(tmp_path, "a").finish("finished")
    before = tree_digest(tmp_path)
    with pytest.raises(QueryError, match="read-only"):
        Store(tmp_path).sql(query)
    assert tree_digest(tmp_path) == before


def test_query_parameters_are_bound(tmp_path: Path) -> None:
    make_run(tmp_path, "a").finish("finished")
    st = Store(tmp_path)
    assert st.sql("SELECT count(*) FROM steps WHERE class_id = $c", {"c": 1}).item() == 4
    assert st.sql("SELECT count(*) FROM steps WHERE run_id = $r", {"r": "a' OR 1=1 --"}).item() == 0


def test_store_path_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        Store(f)


def test_run_json_is_replaced_whole(tmp_path: Path) -> None:
    w = make_run(tmp_path, "a", parts=0)
    for i in range(50):
        w.update(step_done=i)
        meta = json.loads((tmp_path / "runs" / "a" / "run.json").read_text())
        assert meta["step_done"] == i
    w.finish("finished")
    assert not [p for p in (tmp_path / "runs" / "a").iterdir() if p.name.startswith(".")]


def test_views_work_from_cursors(tmp_path: Path) -> None:
    # the TUI queries from one cursor per worker thread; every view must be visible there
    make_run(tmp_path, "a").finish("finished")
    con = Store(tmp_path).connect()
    cur = con.cursor()
    assert cur.execute("SELECT count(*) FROM runs").fetchall() == [(1,)]
    assert cur.execute("SELECT count(*) FROM steps").fetchall() == [(12,)]


def test_runs_view_names_each_runs_method(tmp_path: Path) -> None:
    """One label per run, made by the store for every screen and report."""
    configs = {"plain": {"loss": "ce"}, "drw": {"loss": "ldam", "drw": 160},
               "sampled": {"loss": "ce", "sampler": "class-balanced"},
               "both": {"loss": "focal", "drw": 0, "sampler": "sqrt"},
               "no-sampler": {"loss": "ce", "sampler": "none"}, "unknown": {},
               # Cui et al.'s reduction of class-weighted losses is a variant with its own name;
               # it changes nothing for an unweighted loss
               "cb-mean": {"loss": "cb", "cb_reduction": "mean"},
               "cb-default": {"loss": "cb", "cb_reduction": "weighted-mean"},
               "ce-mean": {"loss": "ce", "cb_reduction": "mean"}}
    for run_id, config in configs.items():
        w = RunWriter(tmp_path, run_id=run_id, heartbeat_s=60)
        w.start({"name": run_id, "config": {"dataset": "toy", **config}})
        w.finish("finished")
    got = dict(Store(tmp_path).sql("SELECT run_id, method FROM runs").iter_rows())
    assert got == {"plain": "ce", "drw": "ldam-drw", "sampled": "ce+class-balanced",
                   "both": "focal-drw+sqrt", "no-sampler": "ce", "unknown": "?",
                   "cb-mean": "cb-mean", "cb-default": "cb", "ce-mean": "ce"}


def test_parts_hold_the_schema_types_whatever_the_caller_hands_over(tmp_path: Path) -> None:
    """numpy arrays of other widths, Python lists, one string for every row and a left-out added
    column all land as the table's own types, with the values unchanged."""
    w = RunWriter(tmp_path, run_id="a", heartbeat_s=60)
    w.start({"name": "a"})
    cols = steps_cols([0, 1], 2, value=0.25)
    cols["class_id"] = np.array([0, 1, 0, 1], dtype=np.int64)     # int64 into an INTEGER column
    cols["loss_sum"] = [1, 2, 3, 4]                                 # ints into a DOUBLE column
    cols["lr"] = np.full(4, 0.5, dtype=np.float32)
    path = w.write("steps", cols)
    w.write("epochs", {"epoch": [1, 1], "step": [2, 2], "split": "test", "class_id": [0, 1],
                       "n": [3, 4], "correct": [1, 2], "loss_sum": [0.5, 1.5],
                       "p_true_sum": [1.0, 2.0], "feature_norm": [None, 1.0],
                       "weight_norm": [1.0, 1.0], "bias": [0.0, 0.0]})
    w.finish("finished")
    con = Store(tmp_path).connect()
    types = dict(con.sql("SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM "
                         f"read_parquet('{path}'))").fetchall())
    want = {"VARCHAR": "String", "BIGINT": "Int64", "INTEGER": "Int32", "DOUBLE": "Float64"}
    assert {c: want[t] for c, t in types.items()} == {c: str(t) for c, t in TABLES["steps"].items()}
    assert con.sql("SELECT run_id, class_id, loss_sum, lr, grad_pos FROM steps ORDER BY step, "
                   "class_id").fetchall() == [("a", 0, 1.0, 0.5, None), ("a", 1, 2.0, 0.5, None),
                                              ("a", 0, 3.0, 0.5, None), ("a", 1, 4.0, 0.5, None)]
    assert con.sql("SELECT split, class_id, feature_norm FROM epochs ORDER BY class_id"
                   ).fetchall() == [("test", 0, None), ("test", 1, 1.0)]


@pytest.mark.parametrize("column, value, problem", [
    ("class_id", np.array([0.5, 1, 2, 0, 1, 2]), "steps.class_id"),   # 0.5 is no class id
    ("epoch", np.full(6, 2**40), "steps.epoch"),                      # too wide for INTEGER
    ("n", np.arange(5), "steps"),                                     # 5 rows beside 6
])
def test_a_column_that_does_not_fit_is_refused_and_nothing_written(
        tmp_path: Path, column: str, value: np.ndarray, problem: str) -> None:
    w = RunWriter(tmp_path, run_id="a", heartbeat_s=60)
    w.start({"name": "a"})
    cols = steps_cols([0, 1], 3, value=0.0)
    cols[column] = value
    with pytest.raises(ValueError, match=problem):
        w.write("steps", cols)
    w.write("steps", steps_cols([0, 1], 3, value=0.0))  # the writer goes on as before
    w.finish("finished")
    assert Store(tmp_path).sql("SELECT count(*) AS n FROM steps").item() == 6
    assert [p.name for p in (tmp_path / "runs" / "a" / "steps").iterdir()] == ["part-000000.parquet"]


def test_the_writers_run_id_is_in_every_row(tmp_path: Path) -> None:
    w = make_run(tmp_path, "a", parts=0)
    w.write("steps", {**steps_cols([0], 2, 0.0), "run_id": "someone-else"})
    w.finish("finished")
    assert Store(tmp_path).sql("SELECT DISTINCT run_id FROM steps").item() == "a"
