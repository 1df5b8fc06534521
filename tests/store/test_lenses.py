"""The two lenses of docs/analyses.md on a store built here from hand-set rows: the minority's
initial drop (the group_steps view and the initial_drop analysis) and the learning speed (the
class_learning_speed view and the learning_speed analysis), and the report's rows for both.

The expected numbers are worked out in this file, in plain Python (the initial drop) and numpy /
scipy (areas and correlations), from the same hand-set rows; none comes from the code under test.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from imbtui import report
from imbtui.api import RunStore, open_store
from imbtui.queries import get_query, used_params
from imbtui.store import RunWriter
from tests.conftest import imbtui
from tests.tolerance import approx64

# ==== the hand-built store =======================================================================
#
# Five classes: 0, 1 the majority, 2, 3, 4 the minority. Runs "up" (seed 0) and "up2" (seed 1) share
# one setting (ratio 10, counts 100 60 40 20 10); run "flat" is balanced (20 each).
#
# Steps 0..59. A class's mean loss at step s (loss_sum / n) is LOSS[run][c](s), and its samples in
# the batch N[c], except that class 4 is absent (n = 0) from every third step (s % 3 == 0) and the
# whole minority from step 1.

C = 5
GRP = ["majority", "majority", "minority", "minority", "minority"]
STEPS = 60
N = [6, 3, 2, 1, 1]
COUNTS = {"up": [100, 60, 40, 20, 10], "up2": [100, 60, 40, 20, 10], "flat": [20] * C}
SEED = {"up": 0, "up2": 1, "flat": 0}
RATIO = {"up": 10.0, "up2": 10.0, "flat": 1.0}

LOSS = {  # majority falling; in "up" the minority rising, in "up2" and "flat" falling
    "up": [lambda s: 3.0 - 0.04 * s, lambda s: 2.5 - 0.02 * s,
           lambda s: 2.0 + 0.01 * s, lambda s: 2.0 + 0.03 * s, lambda s: 4.0 + 0.05 * s],
    "up2": [lambda s: 3.0 - 0.03 * s, lambda s: 2.5 - 0.01 * s,
            lambda s: 2.0 - 0.01 * s, lambda s: 2.0 + 0.01 * s, lambda s: 4.0 - 0.02 * s],
    "flat": [lambda s: 2.3 - 0.01 * (c + 1) * s for c in range(C)],
}


def present(c: int, s: int) -> bool:
    return not (c == 4 and s % 3 == 0) and not (GRP[c] == "minority" and s == 1)


# Train accuracy per epoch 0..4, as correct counts of each class's train_count. Classes 3 and 4
# have the same curve (0, 0, .2, .5, .9): a tie for the Spearman ranks. Class 2's epoch 0 is 1.0
# (the untrained network predicts class 2): the area starts at epoch 0, so it counts.
TRAIN_CORRECT = {
    "up": [[0, 60, 90, 100, 100], [0, 30, 48, 57, 60], [40, 4, 20, 32, 40], [0, 0, 4, 10, 18],
           [0, 0, 2, 5, 9]],
    "up2": [[0, 70, 95, 100, 100], [0, 36, 54, 60, 60], [0, 8, 24, 36, 40], [0, 2, 8, 14, 20],
            [0, 1, 3, 6, 10]],
    "flat": [[0, 10, 16, 20, 20], [0, 12, 18, 20, 20], [0, 8, 14, 19, 20], [0, 10, 17, 20, 20],
             [0, 11, 16, 20, 20]],
}
EPOCHS = 4
TEST_N = 10


def _write_run(root: Path, run: str) -> None:
    counts = COUNTS[run]
    w = RunWriter(root, run)
    w.start({"name": f"lens-{run}", "config": {
        "dataset": "toy", "profile": "exp", "ratio": RATIO[run], "loss": "ce", "sampler": "none",
        "seed": SEED[run], "model": "mlp", "epochs": EPOCHS, "n_classes": C, "batch_size": 13,
        "lr": 0.1}})
    w.write("classes", {"class_id": list(range(C)), "class_name": [f"c{i}" for i in range(C)],
                        "train_count": counts, "test_count": [TEST_N] * C,
                        "rank": list(range(C)), "grp": GRP, "shot": ["medium"] * C})
    for epoch in range(EPOCHS + 1):
        for split, n, correct in (
                ("train", counts, [TRAIN_CORRECT[run][c][epoch] for c in range(C)]),
                ("test", [TEST_N] * C, [min(TEST_N, 2 * epoch + c % 2) for c in range(C)])):
            w.write("epochs", {"epoch": [epoch] * C, "step": [epoch * 15] * C,
                               "split": [split] * C, "class_id": list(range(C)), "n": n,
                               "correct": correct, "loss_sum": [1.0 * k for k in n],
                               "p_true_sum": [0.5 * k for k in n], "feature_norm": [1.0] * C,
                               "weight_norm": [1.0] * C, "bias": [0.0] * C})
    cols: dict[str, list[Any]] = {k: [] for k in ("step", "epoch", "class_id", "n", "correct",
                                                  "pred_count", "grad_norm", "loss_sum",
                                                  "p_true_sum", "margin_sum", "lr")}
    for s in range(STEPS):
        for c in range(C):
            n = N[c] if present(c, s) else 0
            row = {"step": s, "epoch": s // 15 + 1, "class_id": c, "n": n, "correct": n // 2,
                   "pred_count": n, "grad_norm": 1.0, "loss_sum": LOSS[run][c](s) * n,
                   "p_true_sum": 0.5 * n, "margin_sum": 0.0, "lr": 0.1}
            for k, v in row.items():
                cols[k].append(v)
    w.write("steps", cols)
    w.finish("finished")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lenses")
    for run in COUNTS:
        _write_run(root, run)
    return root


@pytest.fixture(scope="module")
def store(root: Path) -> RunStore:
    return open_store(root)


def query(store: RunStore, name: str, **params: Any) -> list[dict[str, Any]]:
    return store.query(name, **params).to_dicts()


# ==== the reference computations =================================================================

def group_loss(run: str, grp: str, s: int) -> float | None:
    """The group's loss at step s: the mean over its classes present in the batch of their mean
    loss; None when none is present."""
    losses = [LOSS[run][c](s) for c in range(C) if GRP[c] == grp and present(c, s)]
    return sum(losses) / len(losses) if losses else None


def window_mean(run: str, grp: str, steps: range) -> tuple[float, int]:
    vals = [v for s in steps if (v := group_loss(run, grp, s)) is not None]
    return sum(vals) / len(vals), len(vals)


def expected_drop(run: str, k: int, w: int) -> dict[str, dict[str, Any]]:
    out = {}
    for grp in ("majority", "minority"):
        start, n_start = window_mean(run, grp, range(0, w))
        end, n_end = window_mean(run, grp, range(k - w + 1, k + 1))
        out[grp] = {"start_loss": start, "end_loss": end, "start_steps": n_start,
                    "end_steps": n_end, "change": end - start, "rose": end - start > 0}
    return out


def train_acc(run: str) -> np.ndarray:
    """classes x epochs."""
    return np.array(TRAIN_CORRECT[run], dtype=float) / np.array(COUNTS[run], dtype=float)[:, None]


def auc(curve: np.ndarray) -> float:
    epochs = np.arange(len(curve), dtype=float)
    area = np.sum((curve[1:] + curve[:-1]) / 2 * np.diff(epochs))  # the trapezoid rule
    return float(area / (epochs[-1] - epochs[0]))


# ==== lens 1: the initial drop ===================================================================

def test_group_steps_leaves_absent_classes_out_of_the_mean(store: RunStore) -> None:
    rows = store.sql("SELECT step, grp, classes, n, loss FROM group_steps WHERE run_id = 'up' "
                     "AND step IN (0, 1, 2) ORDER BY step, grp").to_dicts()
    got = {(r["step"], r["grp"]): r for r in rows}
    # step 0: class 4 absent -> minority = mean of classes 2 and 3 only, n = 2 + 1
    assert (got[(0, "minority")]["classes"], got[(0, "minority")]["n"]) == (2, 3)
    assert got[(0, "minority")]["loss"] == approx64((2.0 + 2.0) / 2)
    # step 1: no minority class -> NULL loss, no classes
    assert (got[(1, "minority")]["classes"], got[(1, "minority")]["loss"]) == (0, None)
    # step 2: all three, a mean of class means (2.02, 2.06, 4.10), not pooled over samples
    assert got[(2, "minority")]["loss"] == approx64((2.02 + 2.06 + 4.10) / 3)
    assert got[(2, "majority")]["loss"] == approx64((2.92 + 2.46) / 2)
    assert got[(2, "majority")]["classes"] == 2


@pytest.mark.parametrize("k,w", [(6, 2), (50, 5), (59, 1)])
def test_initial_drop_matches_the_hand_computation(store: RunStore, k: int, w: int) -> None:
    for run in COUNTS:
        rows = query(store, "initial_drop", runs=[run], steps=k, window=w)
        want = expected_drop(run, k, w)
        assert [r["grp"] for r in rows] == ["majority", "minority"]
        for r in rows:
            e = want[r["grp"]]
            assert (r["start_steps"], r["end_steps"], r["rose"]) == (
                e["start_steps"], e["end_steps"], e["rose"]), (run, r["grp"])
            assert (r["start_loss"], r["end_loss"], r["change"]) == approx64(
                (e["start_loss"], e["end_loss"], e["change"])), (run, r["grp"])
            assert r["minority_minus_majority"] == approx64(
                want["minority"]["change"] - want["majority"]["change"])


def test_initial_drop_in_words(store: RunStore) -> None:
    rows = {(r["run_id"], r["grp"]): r for r in query(store, "initial_drop", steps=6, window=2)}
    # "up": minority start over step 0 only (step 1 has no minority class): (2.0 + 2.0) / 2;
    # end over steps 5, 6: step 5 all three classes (2.05, 2.15, 4.25), step 6 without class 4
    # (2.06, 2.18)
    up = rows[("up", "minority")]
    end = ((2.05 + 2.15 + 4.25) / 3 + (2.06 + 2.18) / 2) / 2
    assert (up["start_loss"], up["end_loss"]) == approx64((2.0, end))
    assert (up["start_steps"], up["end_steps"], up["rose"]) == (1, 2, True)
    # the majority falls: from the mean over steps 0, 1 of the two classes' losses to steps 5, 6
    maj = rows[("up", "majority")]
    assert maj["start_loss"] == approx64(((3.0 + 2.5) + (2.96 + 2.48)) / 4)
    assert maj["end_loss"] == approx64(((2.8 + 2.4) + (2.76 + 2.38)) / 4)
    assert maj["rose"] is False
    # "flat": every class falls
    assert not rows[("flat", "minority")]["rose"] and not rows[("flat", "majority")]["rose"]


def test_initial_drop_before_step_k_has_no_end(store: RunStore) -> None:
    rows = query(store, "initial_drop", runs=["up"], steps=STEPS, window=5)  # last step is 59
    assert [(r["end_loss"], r["end_steps"], r["change"], r["rose"]) for r in rows] == [
        (None, 0, None, None)] * 2
    assert rows[0]["start_loss"] == approx64(expected_drop("up", 10, 5)["majority"]["start_loss"])


def test_initial_drop_defaults() -> None:
    assert get_query("initial_drop").bind() == {"runs": [], "steps": 50, "window": 5}
    assert report.drop_params() == (50, 5)


@pytest.mark.parametrize("name", ["initial_drop", "learning_speed"])
def test_the_lens_queries_headers(name: str) -> None:
    q = get_query(name)
    assert q.question.endswith("?") and "columns:" in q.header
    assert used_params(q.sql) == {p.name for p in q.params}


# ==== lens 2: the learning speed =================================================================

def test_class_learning_speed_is_the_trapezoid_area(store: RunStore) -> None:
    for run in COUNTS:
        rows = store.sql("SELECT * FROM class_learning_speed WHERE run_id = $r ORDER BY class_id",
                         {"r": run}).to_dicts()
        acc = train_acc(run)
        assert [r["auc"] for r in rows] == approx64([auc(acc[c]) for c in range(C)])
        assert {(r["first_epoch"], r["last_epoch"]) for r in rows} == {(0, EPOCHS)}
        assert [r["train_count"] for r in rows] == COUNTS[run]
    # by hand for class 3 of "up": (0 + 0) / 2 + (0 + .2) / 2 + (.2 + .5) / 2 + (.5 + .9) / 2 = 1.15
    # over 4 epochs; class 2's epoch 0 (1.0) counts: (1 + .1) / 2 + (.1 + .5) / 2 + (.5 + .8) / 2
    # + (.8 + 1) / 2 = 2.4 -> 0.6
    up = store.sql("SELECT class_id, auc FROM class_learning_speed WHERE run_id = 'up' "
                   "ORDER BY class_id").to_dicts()
    assert (up[2]["auc"], up[3]["auc"], up[4]["auc"]) == approx64((0.6, 1.15 / 4, 1.15 / 4))


def test_learning_speed_rows_and_correlations(store: RunStore) -> None:
    for run in ("up", "up2"):
        rows = query(store, "learning_speed", runs=[run])
        acc, counts = train_acc(run), np.array(COUNTS[run], dtype=float)
        areas = np.array([auc(acc[c]) for c in range(C)])
        classes = [r for r in rows if r["class_id"] is not None]
        assert [(r["class_id"], r["grp"], r["train_count"], r["classes"]) for r in classes] == [
            (c, GRP[c], COUNTS[run][c], 1) for c in range(C)]
        assert [r["auc"] for r in classes] == approx64(list(areas))
        assert all(r["pearson_log_count"] is None and r["spearman_count"] is None
                   for r in classes)
        groups = {r["grp"]: r for r in rows if r["class_id"] is None}
        assert list(groups) == ["all", "majority", "minority"]  # ordered, before their classes
        for grp, members in (("all", list(range(C))), ("majority", [0, 1]),
                             ("minority", [2, 3, 4])):
            g = groups[grp]
            assert (g["classes"], g["train_count"]) == (len(members), int(counts[members].sum()))
            assert g["auc"] == approx64(float(areas[members].mean()))
            # the group's mean area is the area under its group_results train curve
            assert g["auc"] == approx64(auc(acc[members].mean(axis=0)))
            x, y = np.log(counts[members]), areas[members]
            if len(members) > 2:
                assert g["pearson_log_count"] == approx64(float(np.corrcoef(x, y)[0, 1]))
                assert g["spearman_count"] == approx64(float(stats.spearmanr(x, y).statistic))
    # "up", every class: areas .75 .6875 .6 .2875 .2875; the tie of classes 3 and 4 shares rank
    # 1.5, so the areas rank 5 4 3 1.5 1.5 against the counts' 5 4 3 2 1
    (up,) = [r for r in query(store, "learning_speed", runs=["up"]) if r["grp"] == "all"]
    assert up["spearman_count"] == approx64(
        float(np.corrcoef([5, 4, 3, 2, 1], [5, 4, 3, 1.5, 1.5])[0, 1]))


def test_learning_speed_correlation_is_null_when_sizes_are_equal(store: RunStore) -> None:
    groups = [r for r in query(store, "learning_speed", runs=["flat"]) if r["class_id"] is None]
    assert [(r["grp"], r["pearson_log_count"], r["spearman_count"]) for r in groups] == [
        ("all", None, None), ("majority", None, None), ("minority", None, None)]
    assert groups[0]["auc"] == approx64(float(np.mean([auc(a) for a in train_acc("flat")])))


# ==== the report's rows ==========================================================================

def test_report_reads_both_lenses(store: RunStore) -> None:
    got = {r["run_id"]: r for r in report.findings(store).to_dicts()}
    for run in COUNTS:
        r, drop = got[run], expected_drop(run, 50, 5)
        acc, counts = train_acc(run), np.array(COUNTS[run], dtype=float)
        areas = np.array([auc(a) for a in acc])
        assert (r["loss_change_majority"], r["loss_change_minority"]) == approx64(
            (drop["majority"]["change"], drop["minority"]["change"])), run
        assert r["minority_loss_rose"] is drop["minority"]["rose"], run
        assert r["loss_change_excess"] == approx64(
            drop["minority"]["change"] - drop["majority"]["change"])
        assert (r["auc_majority"], r["auc_minority"]) == approx64(
            (float(areas[:2].mean()), float(areas[2:].mean()))), run
        if run == "flat":
            assert (r["auc_pearson_log_count"], r["auc_spearman_count"]) == (None, None)
        else:
            assert r["auc_pearson_log_count"] == approx64(
                float(np.corrcoef(np.log(counts), areas)[0, 1]))
    assert (got["up"]["minority_loss_rose"], got["up2"]["minority_loss_rose"],
            got["flat"]["minority_loss_rose"]) == (True, False, False)


def test_report_table_shows_the_lens_rows(root: Path) -> None:
    out = imbtui("report", "--store", str(root), env={"COLUMNS": "200"}).stdout
    lines = {line.strip().split("  ")[0]: line for line in out.splitlines()
             if line.startswith("  ")}
    # columns: #1 ratio 1 (flat), #2 ratio 10 with the seeds of "up" and "up2" pooled
    # the minority's loss rose in "up", not in "up2": one seed of two
    assert lines["minority loss rose, first 50 steps"].split()[-3:] == ["no", "1/2", "seeds"]
    flat = expected_drop("flat", 50, 5)["majority"]["change"]
    assert lines["loss change, first 50 steps, majority"].split()[-5] == f"{flat:+.3f}"
    # flat: equal sizes, no correlation
    assert lines["Pearson r, ln(train count) vs AUC"].split()[-5] == "-"
    speed = lines["learning speed (train acc AUC), minority"]
    mean_up = float(np.mean([np.mean([auc(a) for a in train_acc(r)[2:]]) for r in ("up", "up2")]))
    assert f"{mean_up:.3f} ± " in speed and "(n=2)" in speed
    assert "query initial_drop" in out and "query learning_speed" in out


def test_the_group_area_is_not_pooled(store: RunStore) -> None:
    """A pooled area (samples, not classes, averaged) would let class 0 outweigh the rest."""
    (g,) = [r for r in query(store, "learning_speed", runs=["up"])
            if r["grp"] == "majority" and r["class_id"] is None]
    acc, counts = train_acc("up"), np.array(COUNTS["up"], dtype=float)
    pooled = auc((acc[:2] * counts[:2, None]).sum(axis=0) / counts[:2].sum())
    assert not math.isclose(g["auc"], pooled, rel_tol=1e-6)
