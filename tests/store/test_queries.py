"""Every named analysis in queries/, run on a store built here from hand-set rows.

The expected answers are worked out by hand in the comments next to them, from the rows below; none
is computed by the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from imbtui.cli import main
from imbtui.errors import UserError
from imbtui.queries import get_query, list_queries, load_query, used_params
from imbtui.store import RunWriter, Store

from tests.tolerance import approx64

# ==== the hand-built store =======================================================================
#
# Run "a": 4 classes, ratio 10. Classes 0, 1 are the majority (train 100, 50), 2, 3 the minority
# (train 20, 10); every class has 10 test samples. Correct counts per epoch:
#
#            train (n = 100, 50, 20, 10)      test (n = 10 each)
#   epoch 0   0,  0, 20,  0                    0, 0, 10, 0     (untrained: predicts class 2)
#   epoch 1  80, 20,  4,  0                    7, 3,  1, 0
#   epoch 2 100, 45, 16, 10                    9, 8,  5, 2
#
# Runs "b".."e" only carry a final epoch (and an epoch before it, all wrong) for the sweep queries.

C = 4
TRAIN_A, TEST_N = [100, 50, 20, 10], [10, 10, 10, 10]
GRP = ["majority", "majority", "minority", "minority"]
A_TRAIN = {0: [0, 0, 20, 0], 1: [80, 20, 4, 0], 2: [100, 45, 16, 10]}
A_TEST = {0: [0, 0, 10, 0], 1: [7, 3, 1, 0], 2: [9, 8, 5, 2]}
# loss_sum and p_true_sum of run a's epoch rows, per class (epoch 1 train only; others 1.0 * n)
A_E1_TRAIN_LOSS, A_E1_TRAIN_PTRUE = [40.0, 35.0, 18.0, 12.0], [70.0, 20.0, 5.0, 1.0]

# Run a's steps: 4 steps, epochs 1, 1, 2, 2; per class (0, 1, 2, 3)
A_STEPS = [  # step, epoch, n, correct, pred_count, grad_norm
    (0, 1, [5, 3, 1, 1], [4, 1, 0, 0], [7, 3, 0, 0], [3.0, 4.0, 2.0, 1.0]),
    (1, 1, [4, 4, 2, 0], [4, 2, 1, 0], [6, 4, 0, 0], [1.0, 2.0, 2.0, 4.0]),
    (2, 2, [6, 2, 2, 0], [6, 1, 1, 0], [5, 3, 1, 1], [0.0, 0.0, 0.0, 0.0]),
    (3, 2, [5, 3, 2, 0], [5, 2, 1, 0], [4, 3, 2, 1], [2.0, 0.0, 1.0, 1.0]),
]
# class 0's loss_sum, p_true_sum and margin_sum at steps 0 and 1 (others: n * 1.0)
A_C0_LOSS, A_C0_PTRUE, A_C0_MARGIN = [2.5, 1.5], [3.0, 3.3], [5.0, 4.0]

# Run a's samples: (sample_id, class_id, [(epoch, step, correct), ...])
A_SAMPLES = [
    (1, 0, [(1, 0, False), (2, 4, True), (3, 8, True)]),
    (2, 0, [(1, 0, True), (2, 4, False), (3, 8, True)]),
    (3, 2, [(1, 1, False), (2, 5, False), (3, 9, False)]),
    (4, 2, [(1, 1, True), (2, 5, False), (3, 9, False)]),
    # drawn twice at step 8 (a sampler with replacement): wrong and right in the same step
    (5, 3, [(1, 2, False), (2, 6, True), (3, 8, True), (3, 8, False)]),
]
# Run a's probes: (step, epoch, grp, n, grad_norm, cos_to_batch)
A_PROBES = [(0, 1, "majority", 8, 2.0, 0.9), (0, 1, "minority", 2, 3.0, 0.1),
            (10, 1, "majority", 9, 4.0, 0.95), (10, 1, "minority", 1, 1.0, -0.2),
            (20, 2, "minority", 3, 5.0, 0.3)]

# Final test / train correct (of 10 each) for the sweep runs: (run, ratio, loss, seed, status,
# train counts, final train correct, final test correct)
SWEEP = [
    ("b", 10.0, "ce", 1, "finished", TRAIN_A, [100, 50, 20, 10], [10, 8, 6, 4]),
    ("c", 1.0, "ce", 0, "finished", [10] * 4, [10, 10, 10, 10], [9, 9, 9, 7]),
    ("d", 10.0, "focal", 0, "finished", TRAIN_A, [100, 50, 20, 10], [9, 7, 6, 6]),
    ("e", 10.0, "ce", 2, "failed", TRAIN_A, [0, 0, 0, 0], [0, 0, 0, 0]),
]


def _config(ratio: float, loss: str, seed: int) -> dict[str, Any]:
    return {"dataset": "toy", "profile": "exp", "ratio": ratio, "loss": loss, "sampler": "none",
            "seed": seed, "model": "mlp", "epochs": 2, "n_classes": C, "batch_size": 10,
            "lr": 0.1}


def _classes(w: RunWriter, train: list[int]) -> None:
    w.write("classes", {"class_id": list(range(C)), "class_name": [f"c{i}" for i in range(C)],
                        "train_count": train, "test_count": TEST_N, "rank": list(range(C)),
                        "grp": GRP, "shot": ["medium"] * C})


def _epoch(w: RunWriter, epoch: int, split: str, n: list[int], correct: list[int],
           loss: list[float] | None = None, p_true: list[float] | None = None) -> None:
    w.write("epochs", {"epoch": [epoch] * C, "step": [epoch * 2] * C, "split": [split] * C,
                       "class_id": list(range(C)), "n": n, "correct": correct,
                       "loss_sum": loss or [1.0 * k for k in n],
                       "p_true_sum": p_true or [0.5 * k for k in n],
                       "feature_norm": [1.0] * C, "weight_norm": [1.0] * C, "bias": [0.0] * C})


def _write_run_a(root: Path) -> None:
    w = RunWriter(root, "a")
    w.start({"name": "toy-a", "config": _config(10.0, "ce", 0)})
    _classes(w, TRAIN_A)
    for epoch in (0, 1, 2):
        first = epoch == 1
        _epoch(w, epoch, "train", TRAIN_A, A_TRAIN[epoch], A_E1_TRAIN_LOSS if first else None,
               A_E1_TRAIN_PTRUE if first else None)
        _epoch(w, epoch, "test", TEST_N, A_TEST[epoch])
    _steps_a(w)
    _samples_a(w)
    w.write("probes", {k: [p[i] for p in A_PROBES] for i, k in enumerate(
        ("step", "epoch", "grp", "n", "grad_norm", "cos_to_batch"))})
    w.finish("finished")


def _steps_a(w: RunWriter) -> None:
    cols: dict[str, list[Any]] = {k: [] for k in ("step", "epoch", "class_id", "n", "correct",
                                                  "pred_count", "grad_norm", "loss_sum",
                                                  "p_true_sum", "margin_sum", "lr")}
    for step, epoch, n, correct, preds, grads in A_STEPS:
        for c in range(C):
            early_c0 = c == 0 and step < 2
            cols["step"].append(step)
            cols["epoch"].append(epoch)
            cols["class_id"].append(c)
            cols["n"].append(n[c])
            cols["correct"].append(correct[c])
            cols["pred_count"].append(preds[c])
            cols["grad_norm"].append(grads[c])
            cols["loss_sum"].append(A_C0_LOSS[step] if early_c0 else 1.0 * n[c])
            cols["p_true_sum"].append(A_C0_PTRUE[step] if early_c0 else 1.0 * n[c])
            cols["margin_sum"].append(A_C0_MARGIN[step] if early_c0 else 1.0 * n[c])
            cols["lr"].append(0.1)
    w.write("steps", cols)


def _samples_a(w: RunWriter) -> None:
    rows = [(sid, cid, e, s, ok) for sid, cid, pres in A_SAMPLES for e, s, ok in pres]
    w.write("samples", {"sample_id": [r[0] for r in rows], "class_id": [r[1] for r in rows],
                        "epoch": [r[2] for r in rows], "step": [r[3] for r in rows],
                        "correct": [r[4] for r in rows], "p_true": [0.5] * len(rows),
                        "loss": [1.0] * len(rows)})


def _write_sweep_run(root: Path, run: str, ratio: float, loss: str, seed: int, status: str,
                     train: list[int], train_ok: list[int], test_ok: list[int]) -> None:
    w = RunWriter(root, run)
    w.start({"name": f"toy-{run}", "config": _config(ratio, loss, seed)})
    _classes(w, train)
    _epoch(w, 1, "train", train, [0] * C)
    _epoch(w, 1, "test", TEST_N, [0] * C)
    _epoch(w, 2, "train", train, train_ok)
    _epoch(w, 2, "test", TEST_N, test_ok)
    w.finish(status)


def build_store(root: Path) -> Path:
    """Runs a..e as described above, in `root`."""
    _write_run_a(root)
    for spec in SWEEP:
        _write_sweep_run(root, *spec)
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(build_store(tmp_path_factory.mktemp("hand")))


def run(store: Store, name: str, **params: Any) -> list[dict[str, Any]]:
    q = get_query(name)
    return store.sql(q.sql, q.bind(params) or None).to_dicts()


def approx(rows: list[dict[str, Any]], keys: list[str]) -> list[tuple]:
    return [tuple(approx64(r[k]) if isinstance(r[k], float) else r[k] for k in keys)
            for r in rows]


# ==== the files themselves =======================================================================

def test_every_query_declares_exactly_the_parameters_it_uses() -> None:
    queries = list_queries()
    assert {"class_curves", "group_curves", "learning_onset", "generalisation_gap",
            "gradient_share", "prediction_bias", "memorisation", "ratio_sweep",
            "method_comparison", "run_summary"} <= {q.name for q in queries}
    for q in queries:
        assert q.question.endswith((".", "?")), q.name
        assert "columns:" in q.header, q.name
        assert used_params(q.sql) == {p.name for p in q.params}, q.name


def test_run_summary_takes_no_parameters() -> None:
    # `imbtui runs` pastes its SQL into a larger query without parameters
    assert get_query("run_summary").params == ()


def test_bind_parses_strings_and_refuses_unknown_names() -> None:
    q = get_query("learning_onset")
    assert q.bind() == {"runs": [], "threshold": 0.5}
    assert q.bind({"threshold": "0.75", "runs": "a, b"}) == {"runs": ["a", "b"], "threshold": 0.75}
    with pytest.raises(UserError, match="no parameter 'thresh'"):
        q.bind({"thresh": 1})
    with pytest.raises(UserError, match="threshold: expected a number"):
        q.bind({"threshold": "high"})
    flag = get_query("ratio_sweep").param("include_unfinished")
    assert flag is not None and flag.convert("yes") is True and flag.convert("0") is False


def test_a_users_own_sql_file_loads_with_its_parameters(tmp_path: Path, store: Store) -> None:
    mine = tmp_path / "mine.sql"
    mine.write_text("-- Classes above a size.\n-- params:\n--   size  INTEGER  min  [default: 40]\n"
                    "-- columns: run_id, class_id\n"
                    "SELECT run_id, class_id FROM classes WHERE train_count > $size "
                    "ORDER BY run_id, class_id\n")
    q = load_query(str(mine))
    rows = store.sql(q.sql, q.bind({"size": "60"})).to_dicts()
    # train counts above 60: 100 in runs a, b, d, e (class 0) -- run c has 10 everywhere
    assert [(r["run_id"], r["class_id"]) for r in rows] == [("a", 0), ("b", 0), ("d", 0), ("e", 0)]


# ==== curves =====================================================================================

def test_class_curves(store: Store) -> None:
    rows = run(store, "class_curves", runs=["a"])
    assert len(rows) == 3 * 2 * C
    r = next(x for x in rows if (x["epoch"], x["split"], x["class_id"]) == (1, "train", 1))
    # class 1, epoch 1, train: 20 of 50 correct; loss 35/50; p_true 20/50
    assert (r["n"], r["correct"], r["train_count"], r["grp"]) == (50, 20, 50, "majority")
    assert (r["acc"], r["loss"], r["p_true"]) == approx64((0.4, 0.7, 0.4))
    test3 = [x["acc"] for x in rows if x["split"] == "test" and x["class_id"] == 3]
    assert test3 == approx64([0.0, 0.0, 0.2])  # ordered by epoch


def test_group_curves(store: Store) -> None:
    rows = run(store, "group_curves", runs=["a"])
    got = {(r["epoch"], r["split"], r["grp"]): r for r in rows}
    assert len(rows) == 3 * 2 * 3
    maj = got[(1, "train", "majority")]
    # (0.8 + 0.4) / 2 per class; (80 + 20) / 150 pooled
    assert (maj["n"], maj["correct"], maj["classes"]) == (150, 100, 2)
    assert (maj["acc"], maj["pooled_acc"]) == approx64((0.6, 100 / 150))
    assert maj["loss"] == approx64((40 / 100 + 35 / 50) / 2)  # the classes' mean losses, averaged
    mnr = got[(1, "train", "minority")]
    assert (mnr["acc"], mnr["pooled_acc"]) == approx64((0.1, 4 / 30))
    allc = got[(1, "train", "all")]
    assert (allc["acc"], allc["pooled_acc"]) == approx64((0.35, 104 / 180))
    # test at the end: majority 17/20, minority 7/20, all 24/40
    assert [got[(2, "test", g)]["acc"] for g in ("majority", "minority", "all")] == \
        approx64([0.85, 0.35, 0.6])


# ==== onset and gap ==============================================================================

def test_learning_onset_skips_epoch_zero(store: Store) -> None:
    rows = run(store, "learning_onset", runs=["a"])
    # train acc epoch 1: .8 .4 .2 0; epoch 2: 1 .9 .8 1. Class 2's 1.0 at epoch 0 does not count.
    assert [r["onset_epoch"] for r in rows] == [1, 2, 2, 2]
    assert [r["train_count"] for r in rows] == TRAIN_A
    assert {r["last_epoch"] for r in rows} == {2}
    assert [r["final_train_acc"] for r in rows] == approx64([1.0, 0.9, 0.8, 1.0])


def test_learning_onset_threshold_is_a_parameter(store: Store) -> None:
    rows = run(store, "learning_onset", runs=["a"], threshold=0.85)
    assert [r["onset_epoch"] for r in rows] == [2, 2, None, 2]  # class 2 tops out at 0.8
    rows = run(store, "learning_onset", runs=["a"], threshold=0.8)
    assert [r["onset_epoch"] for r in rows] == [1, 2, 2, 2]     # >= is inclusive


def test_generalisation_gap(store: Store) -> None:
    rows = run(store, "generalisation_gap", runs=["a"])
    keys = ["grp", "class_id", "train_count", "train_acc", "test_acc", "gap"]
    assert approx(rows, keys) == [
        # group rows: the mean over the group's classes
        ("majority", None, 150, 0.95, 0.85, 0.1),
        ("majority", 0, 100, 1.0, 0.9, 0.1),
        ("majority", 1, 50, 0.9, 0.8, 0.1),
        ("minority", None, 30, 0.9, 0.35, 0.55),
        ("minority", 2, 20, 0.8, 0.5, 0.3),
        ("minority", 3, 10, 1.0, 0.2, 0.8),
    ]
    assert {r["epoch"] for r in rows} == {2}


def test_runs_filter_empty_means_all(store: Store) -> None:
    every = {r["run_id"] for r in run(store, "generalisation_gap")}
    assert every == {"a", "b", "c", "d", "e"}
    some = {r["run_id"] for r in run(store, "generalisation_gap", runs=["b", "c"])}
    assert some == {"b", "c"}


# ==== steps: gradient share, prediction bias, class steps =========================================

def test_gradient_share_per_step(store: Store) -> None:
    rows = run(store, "gradient_share", runs=["a"])
    keys = ["step", "epoch", "grp", "grad_sq", "share", "sample_share"]
    assert approx(rows, keys) == [
        # step 0: 3^2 + 4^2 = 25 vs 2^2 + 1^2 = 5
        (0, 1, "majority", 25.0, 25 / 30, 150 / 180), (0, 1, "minority", 5.0, 5 / 30, 30 / 180),
        # step 1: 1 + 4 = 5 vs 4 + 16 = 20
        (1, 1, "majority", 5.0, 0.2, 150 / 180), (1, 1, "minority", 20.0, 0.8, 30 / 180),
        # step 2: no gradient at all -> no share
        (2, 2, "majority", 0.0, None, 150 / 180), (2, 2, "minority", 0.0, None, 30 / 180),
        # step 3: 4 vs 1 + 1 = 2
        (3, 2, "majority", 4.0, 4 / 6, 150 / 180), (3, 2, "minority", 2.0, 2 / 6, 30 / 180),
    ]


def test_gradient_share_in_bins(store: Store) -> None:
    rows = run(store, "gradient_share", runs=["a"], bin=2)
    # steps 0-1: 30 vs 25; steps 2-3: 4 vs 2
    assert approx(rows, ["step", "epoch", "grp", "share"]) == [
        (0, 1, "majority", 30 / 55), (0, 1, "minority", 25 / 55),
        (2, 2, "majority", 4 / 6), (2, 2, "minority", 2 / 6)]


def test_prediction_bias(store: Store) -> None:
    rows = run(store, "prediction_bias", runs=["a"])
    keys = ["epoch", "class_id", "pred_share", "true_share", "bias"]
    assert approx(rows, keys) == [
        # epoch 1: n 9 7 3 1 (of 20), predictions 13 7 0 0 (of 20)
        (1, 0, 0.65, 0.45, 0.65 / 0.45), (1, 1, 0.35, 0.35, 1.0),
        (1, 2, 0.0, 0.15, 0.0), (1, 3, 0.0, 0.05, 0.0),
        # epoch 2: n 11 5 4 0, predictions 9 6 3 2; class 3 absent -> no ratio
        (2, 0, 0.45, 0.55, 0.45 / 0.55), (2, 1, 0.3, 0.25, 1.2),
        (2, 2, 0.15, 0.2, 0.75), (2, 3, 0.1, 0.0, None),
    ]


def test_class_steps(store: Store) -> None:
    rows = run(store, "class_steps", runs=["a"], bin=2)
    got = {(r["step"], r["class_id"]): r for r in rows}
    assert len(rows) == 2 * C
    c0 = got[(0, 0)]
    # steps 0-1, class 0: n 5+4, correct 4+4, loss 2.5+1.5, p_true 3.0+3.3, margin 5+4,
    # predictions 7+6 of 20, grad rows 3 and 1
    assert (c0["n"], c0["epoch"], c0["grp"]) == (9, 1, "majority")
    assert (c0["acc"], c0["loss"], c0["p_true"], c0["margin"], c0["pred_share"],
            c0["grad_norm"]) == approx64((8 / 9, 4 / 9, 0.7, 1.0, 0.65, 2.0))
    assert got[(0, 3)]["acc"] == 0.0 and got[(2, 3)]["acc"] is None  # seen once / never


# ==== samples and probes =========================================================================

def test_memorisation(store: Store) -> None:
    rows = run(store, "memorisation", runs=["a"])
    keys = ["grp", "class_id", "samples", "presentations", "never_learned", "first_learned_epoch",
            "stable_epoch", "forgetting_events", "events_per_sample", "forgettable_share",
            "mean_forgetting_count"]
    assert approx(rows, keys) == [
        # class 0: sample 1 F T T (learned at 2, stable from 2, unforgettable); 2 T F T (1, 3,
        # forgot once)
        ("majority", None, 2, 6, 0, 1.5, 2.5, 1, 0.5, 0.5, 0.5),
        ("majority", 0, 2, 6, 0, 1.5, 2.5, 1, 0.5, 0.5, 0.5),
        # minority: class 2 (3: F F F never learned: forgettable, count = its 3 presentations;
        # 4: T F F learned at 1, forgot, ends wrong) and class 3 (5: F T then F, T at step 8:
        # wrong counts first -> forgot once, stable from 3)
        ("minority", None, 3, 10, 1, 1.5, 3.0, 2, 2 / 3, 1.0, (3 + 1 + 1) / 3),
        ("minority", 2, 2, 6, 1, 1.0, None, 1, 0.5, 1.0, (3 + 1) / 2),
        ("minority", 3, 1, 4, 0, 2.0, 3.0, 1, 1.0, 1.0, 1.0),
    ]


def test_gradient_probes(store: Store) -> None:
    rows = run(store, "gradient_probes", runs=["a"])
    assert approx(rows, ["step", "grp", "n", "grad_norm", "cos_to_batch", "norm_ratio"]) == [
        (0, "majority", 8, 2.0, 0.9, 1.0), (0, "minority", 2, 3.0, 0.1, 1.5),
        (10, "majority", 9, 4.0, 0.95, 1.0), (10, "minority", 1, 1.0, -0.2, 0.25),
        (20, "minority", 3, 5.0, 0.3, None),  # no majority probe at step 20
    ]


# ==== across runs ================================================================================
# final (epoch 2) accuracies:            test bal  test maj  test min  train min
#   a  ratio 10 ce    seed 0              0.60      0.85      0.35      0.9 (0.8, 1.0; pooled 26/30)
#   b  ratio 10 ce    seed 1              0.70      0.90      0.50      1.0
#   c  ratio 1  ce    seed 0              0.85      0.90      0.80      1.0
#   d  ratio 10 focal seed 0              0.70      0.80      0.60      1.0
#   e  ratio 10 ce    seed 2  (failed)    0.0       0.0       0.0       0.0

def test_ratio_sweep(store: Store) -> None:
    rows = run(store, "ratio_sweep")
    keys = ["method", "ratio", "seeds", "seed_list", "test_balanced", "test_majority",
            "test_minority", "train_minority", "minority_gap"]
    assert approx(rows, keys) == [
        ("ce", 1.0, 1, "0", 0.85, 0.9, 0.8, 1.0, 0.2),
        ("ce", 10.0, 2, "0,1", 0.65, 0.875, 0.425, (0.9 + 1) / 2, ((0.9 - 0.35) + 0.5) / 2),
        ("focal", 10.0, 1, "0", 0.7, 0.8, 0.6, 1.0, 0.4),
    ]
    assert rows[0]["test_balanced_ci"] is None  # one seed: no spread
    # seeds 0.6 and 0.7: sd 0.1 / sqrt(2), half-width t(0.975, df 1) * sd / sqrt(2), 12.706 from
    # the published t table (NIST/SEMATECH e-Handbook 1.3.6.7.2)
    assert rows[1]["test_balanced_ci"] == approx64(12.706 * (0.1 / 2 ** 0.5) / 2 ** 0.5)
    assert {(r["dataset"], r["profile"], r["model"], r["epochs"]) for r in rows} == {
        ("toy", "exp", "mlp", 2)}


def test_ratio_sweep_can_count_unfinished_runs(store: Store) -> None:
    rows = run(store, "ratio_sweep", include_unfinished=True, runs=["a", "b", "e"])
    (row,) = rows
    assert (row["seeds"], row["seed_list"]) == (3, "0,1,2")
    assert row["test_balanced"] == approx64((0.6 + 0.7 + 0.0) / 3)


def test_method_comparison(store: Store) -> None:
    rows = run(store, "method_comparison")
    keys = ["ratio", "method", "seeds", "test_balanced", "d_balanced", "d_majority", "d_minority"]
    assert approx(rows, keys) == [
        (1.0, "ce", 1, 0.85, 0.0, 0.0, 0.0),
        (10.0, "ce", 2, 0.65, 0.0, 0.0, 0.0),
        (10.0, "focal", 1, 0.7, 0.05, 0.8 - 0.875, 0.6 - 0.425),
    ]
    # one seed of focal: no interval for it nor for its difference, and no verdict
    assert [(r["test_balanced_ci"], r["d_balanced_ci"], r["d_balanced_within"])
            for r in (rows[0], rows[2])] == [(None, None, None)] * 2


def test_method_comparison_against_another_baseline(store: Store) -> None:
    rows = run(store, "method_comparison", baseline="focal")
    keys = ["ratio", "method", "d_balanced", "d_minority"]
    assert approx(rows, keys) == [
        (1.0, "ce", None, None),  # no focal run at ratio 1
        (10.0, "focal", 0.0, 0.0),  # the baseline comes first
        (10.0, "ce", -0.05, 0.425 - 0.6),
    ]


def test_method_comparison_keeps_deferred_reweighting_apart(tmp_path: Path) -> None:
    root = build_store(tmp_path)
    w = RunWriter(root, "f")  # run b's setting (ratio 10, ce) with DRW from epoch 1
    w.start({"name": "toy-f", "config": {**_config(10.0, "ce", 0), "drw": 1}})
    _classes(w, TRAIN_A)
    _epoch(w, 2, "train", TRAIN_A, [100, 50, 20, 10])
    _epoch(w, 2, "test", TEST_N, [10, 10, 8, 8])
    w.finish("finished")
    rows = run(Store(root), "method_comparison")
    keys = ["ratio", "method", "seeds", "test_balanced", "d_balanced", "d_majority",
            "d_minority"]
    # f alone (method ce-drw): balanced (1 + 1 + .8 + .8) / 4, majority 20/20, minority 16/20,
    # against the plain ce rows a and b (0.65, 0.875, 0.425), which stay pooled without f
    assert approx(rows, keys) == [
        (1.0, "ce", 1, 0.85, 0.0, 0.0, 0.0),
        (10.0, "ce", 2, 0.65, 0.0, 0.0, 0.0),
        (10.0, "ce-drw", 1, 0.9, 0.25, 0.125, 0.375),
        (10.0, "focal", 1, 0.7, 0.05, 0.8 - 0.875, 0.6 - 0.425),
    ]


def test_parameters_are_bound_not_pasted(store: Store) -> None:
    # pasted into SQL text, this value would make the baseline match every run
    rows = run(store, "method_comparison", baseline="ce' OR true OR '")
    assert [r["d_balanced"] for r in rows] == [None, None, None]


# ==== the command ================================================================================

def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_query_json_with_run_and_param(store: Store, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    code, out, _ = cli(capsys, "query", "learning_onset", "--run", "a", "--param",
                       "threshold=0.85", "--format", "json", "--store", str(store.root))
    assert code == 0
    assert [r["onset_epoch"] for r in json.loads(out)] == [2, 2, None, 2]


def test_cli_query_run_by_name_and_csv(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "query", "ratio_sweep", "-r", "toy-c", "-f", "csv", "--store",
                       str(store.root))
    assert code == 0
    header, line = out.strip().splitlines()
    row = dict(zip(header.split(","), line.split(",")))
    assert (row["ratio"], row["seeds"], row["seed_list"]) == ("1.0", "1", "0")
    assert float(row["test_minority"]) == approx64(0.8)


def test_cli_query_writes_parquet_and_infers_the_format(store: Store, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "gap.parquet"
    code, _, err = cli(capsys, "query", "generalisation_gap", "-r", "a", "--out", str(target),
                       "--store", str(store.root))
    assert code == 0 and "6 rows" in err
    frame = pl.read_parquet(target)
    assert frame.filter(pl.col("class_id") == 3)["gap"].to_list() == approx64([0.8])


def test_cli_query_list_and_show_sql(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "query", "--list", "--format", "json")
    listed = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and listed["learning_onset"]["params"] == "runs=[], threshold=0.5"
    assert listed["learning_onset"]["question"].startswith("Learning onset")
    code, out, _ = cli(capsys, "query", "learning_onset", "--show-sql")
    assert code == 0 and out == get_query("learning_onset").sql


@pytest.mark.parametrize("args, message", [
    (["query", "nope"], "unknown query 'nope'"),
    (["query", "learning_onset", "-p", "threshold"], "--param expects KEY=VALUE"),
    (["query", "learning_onset", "-p", "thr=1"], "has no parameter 'thr'"),
    (["query", "learning_onset", "-p", "threshold=x"], "threshold: expected a number"),
    (["query", "learning_onset", "-r", "zz"], "unknown run 'zz'"),
    (["query", "run_summary", "-r", "a"], "takes no --run"),
    (["query", "learning_onset", "-f", "parquet"], "--format parquet needs --out"),
    (["query", "learning_onset", "-o", "x.txt"], "cannot tell the format"),
    (["query"], "give an analysis name"),
])
def test_cli_query_errors_are_one_line(store: Store, capsys: pytest.CaptureFixture[str],
                                       args: list[str], message: str) -> None:
    code, out, err = cli(capsys, *args, "--store", str(store.root))
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1
