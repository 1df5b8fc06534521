"""What the app reads from the store, against a second, plain-Python computation from the Parquet
parts: curves, tables, the SQL screen's helpers, and the full dynamics record."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from textual.pilot import Pilot

from imbtui.errors import UserError
from imbtui.store import QueryError, delete_run
from imbtui.tui.app import ImbtuiApp, make_app
from imbtui.tui.data import (
    StoreSession,
    check_query,
    class_curves,
    class_finals,
    export_frame,
    group_curves,
    run_query,
    runs_table,
)
from imbtui.tui.screenshots import settle
from tests.tolerance import approx64

from tests.tui.conftest import cursor, drive, expected_test_accuracy, parts, run_ids


# ==== data: a second computation from the raw parts ===============================================

def expected_step_groups(root: Path, run_id: str, width: int) -> dict[str, dict[int, float]]:
    """grp -> bucket -> accuracy, by plain Python loops over the stored step rows: each class's
    accuracy over the bucket, then the mean over the group's classes seen in the bucket."""
    steps = parts(root, run_id, "steps").to_dicts()
    grp = {r["class_id"]: r["grp"] for r in parts(root, run_id, "classes").to_dicts()}
    meta = json.loads((root / "runs" / run_id / "run.json").read_text())
    span = max(meta["total_steps"], max(r["step"] for r in steps) + 1)
    width = min(width, span)
    n: dict[tuple[int, int], int] = defaultdict(int)
    correct: dict[tuple[int, int], int] = defaultdict(int)
    for r in steps:
        b = min(r["step"] * width // span, width - 1)
        n[r["class_id"], b] += r["n"]
        correct[r["class_id"], b] += r["correct"]
    accs: dict[tuple[str, int], list[float]] = defaultdict(list)
    for (c, b), count in n.items():
        if count:
            accs[grp[c], b].append(correct[c, b] / count)
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for (g, b), values in accs.items():
        out[g][b] = sum(values) / len(values)
    return out


def test_group_accuracy_curves_match_a_python_computation(two_runs: Path) -> None:
    rid = run_ids(two_runs)["r100"]
    got = group_curves(cursor(two_runs), rid, 16, "step")["train_acc"]
    want = expected_step_groups(two_runs, rid, 16)
    for g in ("majority", "minority"):
        assert len(got[g]) == 16
        assert {b: v for b, v in enumerate(got[g]) if v is not None} == pytest.approx(want[g])


def test_prediction_share_sums_to_one(two_runs: Path) -> None:
    rid = run_ids(two_runs)["r100"]
    got = group_curves(cursor(two_runs), rid, 12, "step")["pred_share"]
    for a, b in zip(got["majority"], got["minority"]):
        if a is not None and b is not None:
            assert a + b == pytest.approx(1.0)


def test_epoch_resolution_has_one_point_per_epoch(two_runs: Path) -> None:
    rid = run_ids(two_runs)["r100"]
    epochs = parts(two_runs, rid, "epochs")
    test = epochs.filter(pl.col("split") == "test")
    grp = {r["class_id"]: r["grp"] for r in parts(two_runs, rid, "classes").to_dicts()}
    got = group_curves(cursor(two_runs), rid, 80, "epoch")["test_acc"]
    n_epochs = test["epoch"].max() + 1
    for g in ("majority", "minority"):
        assert len(got[g]) == n_epochs  # epochs 0..E, never stretched over 80 buckets
        for e in range(n_epochs):  # the mean over the group's classes of their accuracies
            rows = [r for r in test.to_dicts() if r["epoch"] == e and grp[r["class_id"]] == g]
            assert got[g][e] == approx64(sum(r["correct"] / r["n"] for r in rows) / len(rows))


def test_class_curves_and_finals(two_runs: Path) -> None:
    rid = run_ids(two_runs)["r100"]
    cur = cursor(two_runs)
    curves = class_curves(cur, rid, 10, "train_acc", "step")
    steps = parts(two_runs, rid, "steps")
    assert sorted(curves) == sorted(steps["class_id"].unique().to_list())
    finals = class_finals(cur, rid)
    counts = finals["train_count"].to_list()
    assert counts == sorted(counts, reverse=True)  # largest class first
    last = parts(two_runs, rid, "epochs").filter(pl.col("epoch") == pl.col("epoch").max())
    for r in finals.to_dicts():
        tr = last.filter((pl.col("class_id") == r["class_id"]) & (pl.col("split") == "train"))
        te = last.filter((pl.col("class_id") == r["class_id"]) & (pl.col("split") == "test"))
        assert r["train_acc"] == approx64(tr["correct"][0] / tr["n"][0])
        assert r["gap"] == pytest.approx(tr["correct"][0] / tr["n"][0] -
                                         te["correct"][0] / te["n"][0])


def test_runs_table_accuracies(two_runs: Path) -> None:
    frame = runs_table(cursor(two_runs))
    ids = run_ids(two_runs)
    assert sorted(frame["name"].to_list()) == ["r10", "r100"]
    for name, rid in ids.items():
        row = frame.filter(pl.col("run_id") == rid).row(0, named=True)
        assert (row["test_balanced"], row["test_majority"], row["test_minority"]) == \
            pytest.approx(expected_test_accuracy(two_runs, rid))


def test_cursors_see_the_runs_view(two_runs: Path) -> None:
    # the TUI queries from worker cursors: the runs view must be visible there
    assert cursor(two_runs).sql("SELECT count(*) FROM runs").fetchall() == [(2,)]


def test_refresh_notices_a_new_part(scratch_store: Path) -> None:
    session = StoreSession(scratch_store)
    g1 = session.refresh()
    assert session.refresh() == g1  # nothing changed on disk: no rebuild
    rid = run_ids(scratch_store)["r10"]
    src = sorted((scratch_store / "runs" / rid / "steps").glob("part-*.parquet"))[0]
    shutil.copy(src, src.with_name("part-000999.parquet"))
    assert session.refresh() == g1 + 1


# ==== read-only SQL, export, delete ===============================================================

@pytest.mark.parametrize("sql", [
    "DELETE FROM runs", "COPY runs TO '/tmp/x.csv'", "DROP VIEW steps",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO '/tmp/imbtui-should-not-exist.csv'",
    "ATTACH 'x.db'", "CREATE TABLE t AS SELECT 1", "SELECT 1; DELETE FROM runs",
])
def test_writing_sql_is_refused(two_runs: Path, sql: str) -> None:
    with pytest.raises(QueryError):
        check_query(cursor(two_runs), sql)
    assert not Path("/tmp/imbtui-should-not-exist.csv").exists()


def test_read_only_sql_runs(two_runs: Path) -> None:
    cur = cursor(two_runs)
    result = run_query(cur, "WITH t AS (SELECT run_id FROM runs) SELECT count(*) AS n FROM t")
    assert result.frame["n"].to_list() == [2]
    assert run_query(cur, "DESCRIBE steps").frame.height > 5
    with pytest.raises(QueryError, match=r"\$runs"):
        run_query(cur, "SELECT * FROM runs WHERE run_id IN $runs")


def test_export_round_trips_and_never_writes_into_the_store(two_runs: Path, tmp_path: Path
                                                          ) -> None:
    frame = pl.DataFrame({"a": [1, 2, 3], "b": ["x", "y", None]})
    csv = export_frame(frame, tmp_path / "out.csv", two_runs)
    assert csv.read_text().splitlines() == ["a,b", "1,x", "2,y", "3,"]
    pq = export_frame(frame, tmp_path / "out.parquet", two_runs)
    assert pl.read_parquet(pq).equals(frame)
    with pytest.raises(UserError, match="run store"):
        export_frame(frame, two_runs / "runs" / "x.csv", two_runs)
    with pytest.raises(UserError, match=r"\.csv, \.parquet or \.json"):
        export_frame(frame, tmp_path / "out.txt", two_runs)


def test_delete_run(scratch_store: Path) -> None:
    rid = run_ids(scratch_store)["r10"]
    delete_run(scratch_store, rid)
    assert not (scratch_store / "runs" / rid).exists()
    assert not list((scratch_store / "runs").glob(".deleting-*"))
    with pytest.raises(UserError):
        delete_run(scratch_store, "../escape")
    with pytest.raises(UserError):
        delete_run(scratch_store, rid)


# ==== the full dynamics record: gradient split, feature geometry, forgetting =====================
#
# Run "full": 4 classes, 0 and 1 the majority, 2 and 3 the minority; 3 epochs of 2 steps
# (epoch = 1 + step // 2). Run "minimal": the same without what only `--dynamics full` records
# (its gradient split is NaN, as the trainer stores it; no geometry, no samples).

D_GROUPS = ["majority", "majority", "minority", "minority"]
NAN = float("nan")
D_POS = [[3, 1, 1, 0], [2, 2, 0, 0], [1, 1, 1, 1], [4, 0, 2, 0], [1, 1, 1, 1], [1, 1, 1, NAN]]
D_NEG = [[1, 1, 3, 2], [2, 0, 2, 4], [1, 1, 1, 1], [0, 4, 2, 4], [1, 1, 1, 1], [1, 1, 1, NAN]]
# own-grad share = sum(pos) / sum(pos + neg) over a group's classes and a bucket's steps
# (class 3's NaN at step 5 is left out). Step buckets of width 3 are steps {0,1}, {2,3}, {4,5}:
#   majority: (3+1+2+2) / 12 = 2/3 · (1+1+4+0) / 12 = 1/2 · 4 / 8 = 1/2
#   minority: (1+0+0+0) / 12 = 1/12 · (1+1+2+0) / 12 = 1/3 · (1+1+1) / (3+3) = 1/2
# epochs 1, 2, 3 are the same buckets; class 0: 5/8, 5/6, 1/2 · class 3: 0/6, 1/6, 1/2 (step 4)
D_OWN = {"majority": [2 / 3, 1 / 2, 1 / 2], "minority": [1 / 12, 1 / 3, 1 / 2]}
D_OWN_CLASS = {0: [5 / 8, 5 / 6, 1 / 2], 3: [0.0, 1 / 6, 1 / 2]}
# geometry (train split; the test rows are there to be ignored): within_rel (the within/between
# trace ratio) per class by epoch. Epoch 0 (untrained) is left out; at epoch 3 class 2 has no value
# (absent), so the minority is class 3.
D_WREL = {0: [9, 9, 9, 9], 1: [1.0, 0.6, 2.0, 3.0], 2: [0.5, 0.3, 1.5, 2.5],
         3: [0.2, 0.2, None, 1.0]}
D_WREL_GROUP = {"majority": [None, 0.8, 0.4, 0.2], "minority": [None, 2.5, 2.0, 1.0]}
D_WCOS = {"majority": [0.0, -0.2, -0.3, -0.3], "minority": [0.0, 0.4, 0.8, 0.9]}
# samples: (sample_id, class_id, [(epoch, step, correct), ...])
D_SAMPLES = [
    (1, 0, [(1, 0, True), (2, 2, False), (3, 4, True)]),   # forgotten in epoch 2
    (2, 0, [(1, 0, True), (2, 3, True), (3, 5, True)]),    # never
    (3, 1, [(1, 1, False), (2, 2, True), (3, 4, False)]),  # forgotten in epoch 3
    (4, 2, [(1, 1, True), (2, 3, False), (3, 5, False)]),  # forgotten in epoch 2 (F -> F is not)
    # drawn twice at step 4: the wrong presentation counts first, right after a correct one
    (5, 3, [(1, 0, False), (2, 2, True), (3, 4, True), (3, 4, False)]),
    (6, 3, [(1, 1, True), (2, 3, True), (3, 5, False)]),   # forgotten in epoch 3
]
# forgetting = events / presentations with a previous one; epoch 1 has none (no previous):
#   majority: epoch 2: 1 of 3 (sample 1), epoch 3: 1 of 3 (sample 3)
#   minority: epoch 2: 1 of 3 (sample 4), epoch 3: 2 of 4 (samples 5 and 6)
D_FORGET = {"majority": [None, None, 1 / 3, 1 / 3], "minority": [None, None, 1 / 3, 1 / 2]}
D_FORGET_CLASS = {0: [None, None, 1 / 2, 0.0], 1: [None, None, 0.0, 1.0],
                  2: [None, None, 1.0, 0.0], 3: [None, None, 0.0, 2 / 3]}


def _dyn_run(root: Path, run_id: str, full: bool) -> None:
    from imbtui.store import RunWriter

    w = RunWriter(root, run_id, heartbeat_s=3600)
    w.start({"name": run_id, "config": {"dataset": "toy", "profile": "exp", "ratio": 10.0,
                                         "loss": "ce", "sampler": "none", "epochs": 3,
                                         "n_classes": 4, "batch_size": 4, "lr": 0.1},
             "total_steps": 6})
    w.write("classes", {"class_id": [0, 1, 2, 3], "class_name": [f"c{i}" for i in range(4)],
                        "train_count": [100, 50, 20, 10], "test_count": [10] * 4,
                        "rank": [0, 1, 2, 3], "grp": D_GROUPS, "shot": ["medium"] * 4})
    rows: dict[str, list[Any]] = defaultdict(list)
    for step in range(6):
        for c in range(4):
            for k, v in (("step", step), ("epoch", 1 + step // 2), ("class_id", c), ("n", 1),
                         ("correct", 1), ("loss_sum", 1.0), ("p_true_sum", 0.5),
                         ("margin_sum", 1.0), ("pred_count", 1), ("grad_norm", 1.0), ("lr", 0.1),
                         ("grad_pos", D_POS[step][c] if full else NAN),
                         ("grad_neg", D_NEG[step][c] if full else NAN)):
                rows[k].append(v)
    w.write("steps", rows)
    for e in range(4):
        for split in ("train", "test"):
            w.write("epochs", {"epoch": [e] * 4, "step": [2 * e] * 4, "split": [split] * 4,
                               "class_id": [0, 1, 2, 3], "n": [10] * 4, "correct": [5] * 4,
                               "loss_sum": [1.0] * 4, "p_true_sum": [5.0] * 4,
                               "feature_norm": [1.0] * 4, "weight_norm": [1.0] * 4,
                               "bias": [0.0] * 4})
    if full:
        _dyn_geometry(w)
        s_rows = [(sid, c, e, st, ok) for sid, c, pres in D_SAMPLES for e, st, ok in pres]
        w.write("samples", {"sample_id": [r[0] for r in s_rows], "class_id": [r[1] for r in s_rows],
                            "epoch": [r[2] for r in s_rows], "step": [r[3] for r in s_rows],
                            "correct": [r[4] for r in s_rows], "p_true": [0.5] * len(s_rows),
                            "loss": [1.0] * len(s_rows)})
    w.update(epoch_done=3, step_done=6)
    w.finish("finished")


def _dyn_geometry(w: Any) -> None:
    for e, within_rel in D_WREL.items():
        for split in ("train", "test"):
            test = split == "test"
            w.write("geometry", {"epoch": [e] * 4, "step": [2 * e] * 4, "split": [split] * 4,
                                 "class_id": [0, 1, 2, 3], "n": [10] * 4,
                                 "mean_norm": [1.0] * 4, "within_var": [1.0] * 4,
                                 "within_rel": [50.0] * 4 if test else within_rel,
                                 "cos_mean": [0.0] * 4,
                                 "cos_max": [0.0] * 4, "shift": [None] * 4,
                                 "shift_rel": [None] * 4})
            w.write("geometry_summary", {
                "epoch": [e], "step": [2 * e], "split": [split], "nc1": [1.0],
                "within_var": [1.0], "between_var": [1.0], "cos_mean": [0.0], "cos_std": [0.0],
                "norm_cv": [0.0], "majority_cos": [0.0], "minority_cos": [0.0],
                "w_cos_mean": [0.0],
                "w_majority_cos": [0.5 if test else D_WCOS["majority"][e]],
                "w_minority_cos": [0.5 if test else D_WCOS["minority"][e]]})


@pytest.fixture(scope="module")
def dyn_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dyn-store")
    _dyn_run(root, "full", full=True)
    _dyn_run(root, "minimal", full=False)
    return root


def approx_series(series: list[float | None], want: list[float | None]) -> None:
    assert len(series) == len(want)
    for got, w in zip(series, want):
        assert (got is None) == (w is None), (series, want)
        if w is not None:
            assert got == pytest.approx(w)


def test_own_gradient_share_by_hand(dyn_store: Path) -> None:
    cur = cursor(dyn_store)
    steps = group_curves(cur, "full", 3, "step")["grad_own"]
    epochs = group_curves(cur, "full", 80, "epoch")["grad_own"]
    for g in ("majority", "minority"):
        approx_series(steps[g], D_OWN[g])
        approx_series(epochs[g], [None, *D_OWN[g]])  # epoch 0 has no steps
    for c, want in D_OWN_CLASS.items():
        approx_series(class_curves(cur, "full", 3, "grad_own", "step")[c], want)
        approx_series(class_curves(cur, "full", 80, "grad_own", "epoch")[c], [None, *want])


def test_geometry_by_hand(dyn_store: Path) -> None:
    cur = cursor(dyn_store)
    got = group_curves(cur, "full", 80, "epoch")
    for g in ("majority", "minority"):
        approx_series(got["within_rel"][g], D_WREL_GROUP[g])
        approx_series(got["w_cos"][g], D_WCOS[g])
    # on the step axis (span 6, width 6) an epoch's point sits at its last step (2e, the last
    # epoch in the last bucket) and is carried to the right, like the test accuracy
    step = group_curves(cur, "full", 6, "step")["w_cos"]["minority"]
    approx_series(step, [0.0, 0.0, 0.4, 0.4, 0.8, 0.9])
    per_class = class_curves(cur, "full", 80, "within_rel", "epoch")
    approx_series(per_class[3], [None, 3.0, 2.5, 1.0])
    approx_series(per_class[2], [None, 2.0, 1.5, None])


def test_forgetting_by_hand(dyn_store: Path) -> None:
    cur = cursor(dyn_store)
    got = group_curves(cur, "full", 80, "epoch")["forgetting"]
    for g in ("majority", "minority"):
        approx_series(got[g], D_FORGET[g])
    per_class = class_curves(cur, "full", 80, "forgetting", "epoch")
    for c, want in D_FORGET_CLASS.items():
        approx_series(per_class[c], want)
    # step axis: epoch 2's presentations end at step 3 (point at 4), epoch 3's at 5 (point at 6,
    # the last bucket)
    approx_series(group_curves(cur, "full", 6, "step")["forgetting"]["minority"],
                  [None, None, None, None, 1 / 3, 1 / 2])


def test_forgetting_agrees_with_the_memorisation_query(dyn_store: Path) -> None:
    from imbtui.queries import get_query
    from imbtui.tui.data import forgetting_counts

    q = get_query("memorisation")
    rows = cursor(dyn_store).sql(q.sql, params=q.bind({"runs": ["full"]})).pl()
    events = {r["class_id"]: r["forgetting_events"] for r in rows.to_dicts()
              if r["class_id"] is not None}
    counts = forgetting_counts(cursor(dyn_store), "full")
    per_class = counts.group_by("class_id").agg(pl.col("forgets").sum())
    assert dict(per_class.iter_rows()) == events == {0: 1, 1: 1, 2: 1, 3: 2}


def test_forgetting_counts_are_kept_until_the_samples_change(dyn_store: Path,
                                                             tmp_path: Path) -> None:
    from imbtui.tui import data

    root = tmp_path / "store"
    shutil.copytree(dyn_store, root)
    session = StoreSession(root, scope=("full",))
    session.refresh()
    first = data.forgetting_counts(session.cursor(), "full")
    assert data.forgetting_counts(session.cursor(), "full") is first  # no second sort
    part = next((root / "runs" / "full" / "samples").glob("part-*.parquet"))
    extra = pl.read_parquet(part).filter(pl.col("sample_id") == 2).with_columns(
        epoch=pl.lit(4, pl.Int32), step=pl.lit(7, pl.Int64), correct=pl.lit(False))
    extra.write_parquet(part.with_name("part-000999.parquet"))
    session.refresh()
    again = data.forgetting_counts(session.cursor(), "full")
    assert again is not first
    assert again.filter(pl.col("epoch") == 4)["forgets"].to_list() == [1]  # sample 2 forgot


def test_a_minimal_run_has_none_of_the_full_record(dyn_store: Path) -> None:
    cur = cursor(dyn_store)
    for resolution in ("step", "epoch"):
        got = group_curves(cur, "minimal", 40, resolution)
        assert {"train_acc", "grad_norm"} <= set(got)
        assert not {"grad_own", "within_rel", "w_cos", "forgetting", "probe_grad"} & set(got)
        for metric in ("grad_own", "within_rel", "forgetting"):
            assert class_curves(cur, "minimal", 40, metric, resolution) == {}


def test_run_screen_shows_the_full_record_only_where_it_exists(dyn_store: Path) -> None:
    new = ("grad_own", "w_cos", "within_rel", "forgetting")

    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        from imbtui.tui.screens.run import RunScreen
        from imbtui.tui.widgets import MetricRow, SharedSparkline

        for run_id, shown in (("full", True), ("minimal", False)):
            await app.push_screen(RunScreen(run_id))
            await settle(pilot)
            screen = app.screen
            for key in new:
                row = screen.query_one(f"#metric-{key}", MetricRow)
                assert row.display is shown, (run_id, key)
            assert screen.query_one("#metric-train_acc", MetricRow).display
            if shown:
                forget = screen.query_one("#metric-forgetting", MetricRow).query(SharedSparkline)
                assert forget[0].y_range == forget[1].y_range == (0.0, 0.5)
                cos = screen.query_one("#metric-w_cos", MetricRow).query(SharedSparkline)
                assert cos[0].y_range == (-1.0, 1.0)
            seen = set()
            for _ in range(12):  # the class metric cycles over what the run has
                await pilot.press("k")
                await settle(pilot)
                seen.add(screen.class_metric)
            assert ({"grad_own", "within_rel", "forgetting"} <= seen) is shown
            assert not ({"grad_own", "within_rel", "forgetting"} & seen) or shown
            await pilot.press("escape")
            await settle(pilot)

    drive(make_app(dyn_store), script)
