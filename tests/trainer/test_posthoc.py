"""Post-hoc logit adjustment (Menon et al. 2021), evaluated beside the plain logits of every run:
the eval pass's per-class counts of argmax_c z_c - tau * log pi_c against numpy on the returned
model's logits, tau = 0 against the plain counts, the `posthoc_results` view against hand-worked
numbers, and a store from before the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from imbtui.queries import get_query
from imbtui.store import RunWriter, Store
from tests.tolerance import approx64
from trainer import loop
from trainer.config import resolve_config
from trainer.data import ClassInfo
from trainer.dynamics import (
    POSTHOC_CORRECT,
    evaluate_features,
    posthoc_hits,
    posthoc_offsets,
)
from trainer.models import build_model
from trainer.recording import RECORDERS, Subject, make_recorder
from trainer.sink import MemorySink

TAUS = (0.0, 0.5, 1.0, 2.0)
CPU = torch.device("cpu")


# ==== a real run ==================================================================================

@pytest.fixture(scope="module")
def trained() -> tuple[loop.TrainConfig, loop.RunResult, MemorySink]:
    """MNIST-1D at ratio 100, 30 steps of the first epoch (minimal dynamics), one thread: the
    untrained network's evaluation (epoch 0) and the trained one's (epoch 1)."""
    cfg = loop.TrainConfig(dataset="mnist1d", ratio=100, epochs=2, batch_size=64, max_steps=30,
                           device="cpu", dynamics="minimal", posthoc_tau=TAUS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sink = MemorySink()
        result = loop.train(cfg, sink)
    finally:
        torch.set_num_threads(threads)
    assert result.status == "finished", result.message
    return cfg, result, sink


def frame(sink: MemorySink, table: str) -> dict[tuple, dict[str, Any]]:
    """A table's rows keyed by (epoch, split, [tau,] class_id)."""
    cols = sink.table(table)
    keys = ("epoch", "split", "tau", "class_id") if "tau" in cols else ("epoch", "split",
                                                                         "class_id")
    out: dict[tuple, dict[str, Any]] = {}
    for i in range(len(cols["class_id"])):
        key = tuple(cols[k][i].item() for k in keys)
        assert key not in out, key  # one row per key
        out[key] = {k: v[i].item() for k, v in cols.items()}
    return out


def test_the_adjusted_counts_are_numpy_s_argmax_of_the_returned_model_s_logits(trained) -> None:
    cfg, result, sink = trained
    classes = sink.table("classes")
    counts = np.asarray(classes["train_count"], dtype=np.int64)
    log_prior = np.log(counts / counts.sum())  # pi_c = n_c / N of the long-tailed training set
    posthoc = frame(sink, "posthoc")
    last = max(k[0] for k in posthoc)
    assert last == result.epochs_done == 1 and len(sink.parts["posthoc"]) == last + 1
    # the same data and the same eval batches as the run's eval pass
    data = loop.load_data(resolve_config(cfg), CPU)
    batch = loop.eval_batch_size(CPU, data.x_train[0].numel())
    model = result.model.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    differs = False
    try:
        for split, x, y in (("train", data.x_train, data.y_train),
                            ("test", data.x_test, data.y_test)):
            with torch.no_grad():
                z = torch.cat([model.forward_features(data.prepare(x[i:i + batch]))[1]
                               for i in range(0, len(x), batch)]).double().numpy()
            y = y.numpy()
            for tau in TAUS:
                pred = np.argmax(z - tau * log_prior, axis=1)
                want = np.bincount(y[pred == y], minlength=len(counts))
                got = [posthoc[(last, split, tau, c)]["correct"] for c in range(len(counts))]
                assert got == want.tolist(), (split, tau)
                assert [posthoc[(last, split, tau, c)]["n"] for c in range(len(counts))] == \
                    np.bincount(y, minlength=len(counts)).tolist()
                differs |= tau > 0 and got != [posthoc[(last, split, 0.0, c)]["correct"]
                                               for c in range(len(counts))]
    finally:
        torch.set_num_threads(threads)
    assert differs  # the adjustment changed some prediction: the check above is not vacuous


def test_tau_zero_is_the_plain_argmax(trained) -> None:
    _, _, sink = trained
    epochs, posthoc = frame(sink, "epochs"), frame(sink, "posthoc")
    assert len(posthoc) == len(TAUS) * len(epochs)  # every evaluation, split, tau and class
    for (epoch, split, class_id), row in epochs.items():
        plain = posthoc[(epoch, split, 0.0, class_id)]
        assert (plain["correct"], plain["n"], plain["step"]) == \
            (row["correct"], row["n"], row["step"])


def test_the_eval_pass_counts_without_another_forward_pass() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", (8,), 3)
    calls = []
    forward = model.forward_features
    model.forward_features = lambda x: calls.append(len(x)) or forward(x)
    x, y = torch.randn(50, 8), torch.arange(50) % 3
    plain, _ = evaluate_features(model, x, y, 3, batch_size=16, features=False)
    n_plain = len(calls)
    rows, _ = evaluate_features(model, x, y, 3, batch_size=16, features=False, taus=(0.0, 1.0),
                                log_prior=np.log(np.array([0.7, 0.2, 0.1])))
    assert len(calls) == 2 * n_plain == 8
    assert POSTHOC_CORRECT not in plain
    assert rows[POSTHOC_CORRECT].shape == (2, 3)
    assert rows[POSTHOC_CORRECT][0].tolist() == rows["correct"].tolist() == \
        plain["correct"].tolist()
    for key in plain:  # the existing rows are untouched by the counting
        np.testing.assert_array_equal(rows[key], plain[key])


def test_the_recorders_that_write_epochs_write_posthoc_in_one_part() -> None:
    classes = [ClassInfo(c, f"c{c}", 10 - c, 5, c, "minority" if c == 2 else "majority", "few")
               for c in range(3)]
    written = {}
    for dynamics in RECORDERS:
        model = build_model("mlp", (8,), 3)
        sink = MemorySink()
        rec = make_recorder(dynamics, sink, loop.Hooks(), Subject(
            model, np.array([False, False, True]), torch.arange(30), 3, CPU,
            posthoc_tau=(1.0, 0.5, 1.0)))  # a tau given twice is written once
        rec.start(classes)
        x, y = torch.randn(30, 8), torch.arange(30) % 3
        rows, features = {}, {}
        for split in ("train", "test"):
            rows[split], features[split] = evaluate_features(
                model, x, y, 3, features=rec.features, taus=(1.0, 0.5, 1.0),
                log_prior=np.log(np.array([0.5, 0.3, 0.2])))
        rec.evaluated(1, 10, rows, features)
        written[dynamics] = {t: len(p) for t, p in sink.parts.items()}
        if "posthoc" in sink.parts:
            (part,) = sink.parts["posthoc"]
            assert part["tau"].tolist() == [1.0] * 3 + [0.5] * 3 + [1.0] * 3 + [0.5] * 3
            assert part["split"].tolist() == ["train"] * 6 + ["test"] * 6
            assert "posthoc_correct" not in sink.parts["epochs"][0]
    assert written["off"] == {}
    assert written["minimal"] == {"classes": 1, "epochs": 1, "posthoc": 1}
    assert written["full"] == {"classes": 1, "epochs": 1, "posthoc": 1, "geometry": 1,
                               "geometry_summary": 1}


# ==== the view, on a hand-made store ==============================================================
#
# 4 classes: 0, 1 majority, 2, 3 minority. One evaluated epoch (1) besides epoch 0.
#
#   epoch 1    n (train)        plain correct     tau 1 correct     tau 2 correct
#   train      100, 50, 20, 0   90, 40, 5, 0      80, 35, 10, 0     60, 30, 15, 0   (class 3 absent)
#   test       10, 10, 10, 10   9, 8, 2, 1        8, 7, 5, 4        6, 5, 7, 8
#
# Plain test:  acc per class .9 .8 .2 .1 -> majority .85, minority .15, all .5
# tau 1 test:  .8 .7 .5 .4 -> majority .75, minority .45, all .6
# tau 2 test:  .6 .5 .7 .8 -> majority .55, minority .75, all .65
# Plain train: .9 .8 .25 (class 3 has n = 0: left out) -> majority .85, minority .25,
#              all (.9 + .8 + .25) / 3 = .65
# tau 1 train: .8 .7 .5 -> majority .75, minority .5, all 2 / 3
# tau 2 train: .6 .6 .75 -> majority .6, minority .75, all .65

C = 4
GRP = ["majority", "majority", "minority", "minority"]
N = {"train": [100, 50, 20, 0], "test": [10, 10, 10, 10]}
PLAIN = {"train": [90, 40, 5, 0], "test": [9, 8, 2, 1]}
ADJUSTED = {1.0: {"train": [80, 35, 10, 0], "test": [8, 7, 5, 4]},
            2.0: {"train": [60, 30, 15, 0], "test": [6, 5, 7, 8]}}
GROUP_ACC = {  # (split, tau) -> (majority, minority, all); tau None = plain
    ("test", None): (0.85, 0.15, 0.5), ("test", 1.0): (0.75, 0.45, 0.6),
    ("test", 2.0): (0.55, 0.75, 0.65),
    ("train", None): (0.85, 0.25, 0.65), ("train", 1.0): (0.75, 0.5, 2 / 3),
    ("train", 2.0): (0.6, 0.75, 0.65),
}


def write_run(root: Path, run: str, posthoc: bool) -> None:
    w = RunWriter(root, run)
    w.start({"name": f"toy-{run}", "config": {"dataset": "toy", "loss": "ce", "ratio": 10.0,
                                              "n_classes": C}})
    w.write("classes", {"class_id": list(range(C)), "class_name": [f"c{i}" for i in range(C)],
                        "train_count": [100, 50, 20, 5], "test_count": [10] * C,
                        "rank": list(range(C)), "grp": GRP, "shot": ["medium"] * C})
    for epoch in (0, 1):
        cols: dict[str, list] = {k: [] for k in ("epoch", "step", "split", "class_id", "n",
                                                 "correct", "loss_sum", "p_true_sum",
                                                 "feature_norm", "weight_norm", "bias")}
        hoc: dict[str, list] = {k: [] for k in ("epoch", "step", "split", "tau", "class_id", "n",
                                                "correct")}
        for split in ("train", "test"):
            plain = PLAIN[split] if epoch else [0] * C
            for c in range(C):
                for k, v in (("epoch", epoch), ("step", 7 * epoch), ("split", split),
                             ("class_id", c), ("n", N[split][c]), ("correct", plain[c]),
                             ("loss_sum", 1.0), ("p_true_sum", 0.5), ("feature_norm", 1.0),
                             ("weight_norm", 1.0), ("bias", 0.0)):
                    cols[k].append(v)
            for tau in (2.0, 1.0):
                adjusted = ADJUSTED[tau][split] if epoch else [0] * C
                for c in range(C):
                    for k, v in (("epoch", epoch), ("step", 7 * epoch), ("split", split),
                                 ("tau", tau), ("class_id", c), ("n", N[split][c]),
                                 ("correct", adjusted[c])):
                        hoc[k].append(v)
        w.write("epochs", cols)
        if posthoc:
            w.write("posthoc", hoc)
    w.finish("finished")


@pytest.fixture(scope="module")
def hand(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("posthoc")
    write_run(root, "new", posthoc=True)
    return Store(root)


def test_the_view_s_group_accuracy_is_the_mean_of_its_classes(hand: Store) -> None:
    rows = hand.sql("SELECT * FROM posthoc_results WHERE epoch = 1").to_dicts()
    assert len(rows) == 2 * 2 * (C + 3)  # splits x taus x (classes + majority, minority, all)
    names = ("majority", "minority", "all")
    for r in rows:
        if r["class_id"] is None:
            want = GROUP_ACC[(r["split"], r["tau"])][names.index(r["grp"])]
            plain = GROUP_ACC[(r["split"], None)][names.index(r["grp"])]
            assert r["adjusted_acc"] == approx64(want), r
            assert r["plain_acc"] == approx64(plain), r
            assert r["gain"] == approx64(want - plain), r
            members = [c for c in range(C) if r["grp"] in ("all", GRP[c])]
            assert r["n"] == sum(N[r["split"]][c] for c in members)
            assert r["correct"] == sum(ADJUSTED[r["tau"]][r["split"]][c] for c in members)
            assert r["classes"] == sum(N[r["split"]][c] > 0 for c in members)
        else:
            c, split = r["class_id"], r["split"]
            assert r["grp"] == GRP[c] and r["classes"] is None
            assert r["n"] == N[split][c] and r["correct"] == ADJUSTED[r["tau"]][split][c]
            if N[split][c] == 0:
                assert r["adjusted_acc"] is None and r["plain_acc"] is None
            else:
                assert r["adjusted_acc"] == approx64(ADJUSTED[r["tau"]][split][c] / N[split][c])
                assert r["plain_acc"] == approx64(PLAIN[split][c] / N[split][c])


def test_the_plain_side_is_group_results(hand: Store) -> None:
    got = hand.sql("""
        SELECT p.plain_acc, g.acc FROM posthoc_results p
        JOIN group_results g USING (run_id, epoch, split, grp)
        WHERE p.class_id IS NULL""").rows()
    assert len(got) == 2 * 2 * 2 * 3 and all(a == b for a, b in got)


def test_the_named_query(hand: Store) -> None:
    q = get_query("posthoc_adjustment")
    rows = hand.sql(q.sql, q.bind({"taus": "2"})).to_dicts()
    assert [(r["run_id"], r["epoch"], r["tau"]) for r in rows] == [("new", 1, 2.0)]
    (r,) = rows
    for g, i in (("majority", 0), ("minority", 1), ("balanced", 2)):
        assert r[f"test_{g}"] == approx64(GROUP_ACC[("test", None)][i])
        assert r[f"adjusted_{g}"] == approx64(GROUP_ACC[("test", 2.0)][i])
        assert r[f"gain_{g}"] == approx64(GROUP_ACC[("test", 2.0)][i] - GROUP_ACC[("test", None)][i])
    every = hand.sql(q.sql, q.bind({"runs": ["new"]})).to_dicts()
    assert [r["tau"] for r in every] == [1.0, 2.0]
    final = hand.sql("SELECT test_balanced FROM final_results").item()
    assert every[0]["test_balanced"] == final


def test_a_store_from_before_the_table_opens_with_an_empty_view(tmp_path: Path) -> None:
    write_run(tmp_path, "old", posthoc=False)
    store = Store(tmp_path)
    con = store.connect()
    assert not (tmp_path / "runs" / "old" / "posthoc").exists()
    assert store.warnings == []
    assert con.execute("SELECT count(*) FROM class_results").fetchall()[0][0] == 2 * 2 * C
    assert con.execute("SELECT count(*) FROM posthoc").fetchall()[0][0] == 0
    assert con.execute("SELECT count(*) FROM posthoc_results").fetchall()[0][0] == 0
    q = get_query("posthoc_adjustment")
    assert store.sql(q.sql, q.bind(), con=con).height == 0
    types = {r[0]: r[1] for r in con.sql("DESCRIBE posthoc").fetchall()}
    assert types == {"run_id": "VARCHAR", "epoch": "INTEGER", "step": "BIGINT",
                     "split": "VARCHAR", "tau": "DOUBLE", "class_id": "INTEGER",
                     "n": "BIGINT", "correct": "BIGINT"}


def test_the_adjustment_on_hand_logits() -> None:
    """argmax_c z_c - tau log pi_c on two samples: tau 1 moves the first, whose two top logits
    are 0.5 apart, to the rarer class (log .8 - log .15 = 1.67 > 0.5); tau 0 is the plain argmax."""
    z = torch.tensor([[2.0, 1.5, 0.0], [0.1, 0.0, 3.0]])
    y = torch.tensor([1, 2])
    offsets = posthoc_offsets((0.0, 1.0), np.log(np.array([0.8, 0.15, 0.05])))
    assert posthoc_hits(z, y, torch.as_tensor(offsets)).tolist() == [[0.0, 1.0], [1.0, 1.0]]
    with pytest.raises(ValueError, match="log prior"):
        posthoc_offsets((1.0,), None)
