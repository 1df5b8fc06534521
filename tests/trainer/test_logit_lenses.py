"""Two eval-pass lenses: per-class logit statistics (the `logits` table, the `logit_results` view,
queries/logit_stats.sql, the app's logit rows) and the untrained network's guessing bias
(queries/guessing_bias.sql, Francazi et al. 2024).

The eval pass's sums and counts against numpy on the returned model's logits (and, at epoch 0, on a
rebuilt untrained network), the view's group rows against hand-worked numbers, the guessing-bias
shares, the recorders that write the table, and a store from before it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from imbtui.queries import get_query
from imbtui.store import RunWriter, Store
from tests.tolerance import approx64, approx_sum
from trainer import loop
from trainer.config import resolve_config
from trainer.data import ClassInfo
from trainer.dynamics import LOGIT_STATS, evaluate_features
from trainer.models import build_model
from trainer.recording import RECORDERS, Subject, make_recorder
from trainer.sink import MemorySink

from tests.conftest import one_thread

CPU = torch.device("cpu")


# ==== a real run ==================================================================================

@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[loop.TrainConfig, loop.RunResult, Store]:
    """MNIST-1D at ratio 100, 20 steps of the first epoch (minimal dynamics), one thread, into a
    store: the untrained network's evaluation (epoch 0) and the trained one's (epoch 1)."""
    root = tmp_path_factory.mktemp("lenses")
    cfg = loop.TrainConfig(dataset="mnist1d", ratio=100, epochs=2, batch_size=64, max_steps=20,
                           device="cpu", dynamics="minimal")
    result = one_thread(loop.train, cfg, RunWriter(root, "real"))
    assert result.status == "finished", result.message
    return cfg, result, Store(root)


def model_logits(model: torch.nn.Module, cfg: loop.TrainConfig
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (float32 logits as float64, labels)} from the run's data and eval batches."""
    data = loop.load_data(resolve_config(cfg), CPU)
    batch = loop.eval_batch_size(CPU, data.x_train[0].numel())
    model = model.eval()
    out = {}
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        with torch.no_grad():
            z = torch.cat([model.forward_features(data.prepare(x[i:i + batch]))[1]
                           for i in range(0, len(x), batch)]).float()
        out[split] = (z.double().numpy(), y.numpy())
    return out


def stored(store: Store, epoch: int) -> dict[tuple[str, int], dict[str, Any]]:
    rows = store.sql("SELECT * FROM logits WHERE epoch = $e", {"e": epoch}).to_dicts()
    out = {(r["split"], r["class_id"]): r for r in rows}
    assert len(out) == len(rows)  # one row per split and class
    return out


def check_against_numpy(rows: dict, logits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    for split, (z, y) in logits.items():
        c = z.shape[1]
        own = z[np.arange(len(y)), y]
        others = z.copy()
        others[np.arange(len(y)), y] = -np.inf
        other = others.max(1)
        norm = np.sqrt((z * z).sum(1))
        pred = z.argmax(1)
        assert [rows[(split, k)]["n"] for k in range(c)] == \
            np.bincount(y, minlength=c).tolist()
        assert [rows[(split, k)]["pred_count"] for k in range(c)] == \
            np.bincount(pred, minlength=c).tolist()
        for k in range(c):
            r = rows[(split, k)]
            mine = y == k
            # float32 values summed in float64: the per-term round-off is the float32 one
            assert r["own_logit_sum"] == approx_sum(own[mine]), (split, k)
            assert r["other_logit_sum"] == approx_sum(other[mine]), (split, k)
            # a float32 norm of C logits: each term within C + 8 ulps of the float64 norm
            assert r["norm_sum"] == approx_sum(norm[mine], k=c + 8), (split, k)


def test_the_stored_sums_are_numpy_s_on_the_returned_model_s_logits(trained) -> None:
    cfg, result, store = trained
    assert store.sql("SELECT max(epoch) FROM logits").item() == result.epochs_done == 1
    logits = one_thread(model_logits, result.model, cfg)
    check_against_numpy(stored(store, 1), logits)
    # the check can tell: the classes' own logits differ from their largest other one
    assert any(r["own_logit_sum"] != r["other_logit_sum"] for r in stored(store, 1).values())


def test_epoch_zero_is_the_untrained_network_s_guessing(trained) -> None:
    """The same model rebuilt from the run's seed, untrained: the stored epoch-0 rows are its."""
    cfg, _, store = trained
    full = resolve_config(cfg)
    torch.manual_seed(full.seed)
    data = loop.load_data(full, CPU)
    model, _ = loop.make_model(full, data, CPU)
    check_against_numpy(stored(store, 0), one_thread(model_logits, model, cfg))


def test_pred_counts_add_up_to_the_split_and_epochs_is_unchanged(trained) -> None:
    _, _, store = trained
    got = store.sql("""
        SELECT l.epoch, l.split, sum(l.pred_count) AS preds, sum(l.n) AS n,
               bool_and(l.n = e.n AND l.step = e.step) AS same
        FROM logits l JOIN epochs e USING (run_id, epoch, split, class_id)
        GROUP BY ALL ORDER BY ALL""").to_dicts()
    assert len(got) == 4 and all(r["preds"] == r["n"] and r["same"] for r in got)
    cols = [r[0] for r in store.sql("DESCRIBE epochs").rows()]
    assert not {"own_logit_sum", "pred_count"} & set(cols)


def test_guessing_bias_shares_sum_to_one(trained) -> None:
    cfg, _, store = trained
    q = get_query("guessing_bias")
    rows = store.sql(q.sql, q.bind()).to_dicts()
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["source"], []).append(r)
    assert set(by) == {"train", "test", "steps"}
    for source, rs in by.items():
        assert len(rs) == 10
        assert sum(r["pred_share"] for r in rs) == pytest.approx(1.0, abs=1e-12), source
        assert sum(r["true_share"] for r in rs) == pytest.approx(1.0, abs=1e-12), source
        assert [r["share_rank"] for r in rs] == list(range(1, 11))
        top = rs[0]
        assert all(r["top_share"] == top["pred_share"] == max(x["pred_share"] for x in rs)
                   and r["top_class"] == top["class_id"] for r in rs)
        maj = sum(r["pred_count"] for r in rs if r["grp"] == "majority")
        assert rs[0]["majority_share"] == approx64(maj / sum(r["pred_count"] for r in rs))
        assert rs[0]["majority_class_share"] == 0.5
    # the steps rows are the first K steps' batches: K * batch size predictions
    assert sum(r["pred_count"] for r in by["steps"]) == 20 * cfg.batch_size
    fewer = store.sql(q.sql, q.bind({"steps": "3"})).to_dicts()
    assert sum(r["pred_count"] for r in fewer if r["source"] == "steps") == 3 * cfg.batch_size
    # epoch 0's shares are logit_results' own
    view = dict(store.sql("SELECT split || class_id, pred_share FROM logit_results "
                          "WHERE epoch = 0 AND class_id IS NOT NULL").rows())
    for r in by["train"] + by["test"]:
        assert r["pred_share"] == view[f"{r['source']}{r['class_id']}"]


def test_logit_stats_query_on_the_run(trained) -> None:
    _, _, store = trained
    q = get_query("logit_stats")
    rows = store.sql(q.sql, q.bind()).to_dicts()
    assert [(r["epoch"], r["split"], r["grp"]) for r in rows] == \
        [(1, s, g) for s in ("train", "test") for g in ("majority", "minority", "all")]
    for r in rows:
        assert r["margin"] == approx64(r["own_logit"] - r["other_logit"])
        assert r["logit_norm"] > 0


# ==== the eval pass and the recorders =============================================================

def test_the_eval_pass_sums_without_another_forward_pass() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", (8,), 3)
    calls = []
    forward = model.forward_features
    model.forward_features = lambda x: calls.append(len(x)) or forward(x)
    x, y = torch.randn(50, 8), torch.arange(50) % 3
    plain, _ = evaluate_features(model, x, y, 3, batch_size=16, features=False)
    n_plain = len(calls)
    rows, _ = evaluate_features(model, x, y, 3, batch_size=16, features=False, logit_stats=True)
    assert len(calls) == 2 * n_plain == 8
    assert LOGIT_STATS not in plain
    for key in plain:  # the existing rows are untouched by the summing
        np.testing.assert_array_equal(rows[key], plain[key])
    with torch.no_grad():
        z = forward(x)[1].double().numpy()
    stats = rows[LOGIT_STATS]
    assert stats["pred_count"].tolist() == np.bincount(z.argmax(1), minlength=3).tolist()
    assert stats["pred_count"].dtype == np.int64
    for k in range(3):
        assert stats["own_logit_sum"][k] == approx_sum(z[y.numpy() == k, k])


def test_the_recorders_that_write_epochs_write_logits_in_one_part() -> None:
    classes = [ClassInfo(c, f"c{c}", 10 - c, 5, c, "minority" if c == 2 else "majority", "few")
               for c in range(3)]
    written = {}
    for dynamics in RECORDERS:
        model = build_model("mlp", (8,), 3)
        sink = MemorySink()
        rec = make_recorder(dynamics, sink, loop.Hooks(), Subject(
            model, np.array([False, False, True]), torch.arange(30), 3, CPU))
        rec.start(classes)
        x, y = torch.randn(30, 8), torch.arange(30) % 3
        rows, features = {}, {}
        for split in ("train", "test"):
            rows[split], features[split] = evaluate_features(
                model, x, y, 3, features=rec.features, logit_stats=rec.logit_stats)
        rec.evaluated(1, 10, rows, features)
        written[dynamics] = {t: len(p) for t, p in sink.parts.items()}
        if "logits" in sink.parts:
            (part,) = sink.parts["logits"]
            assert part["split"].tolist() == ["train"] * 3 + ["test"] * 3
            assert part["pred_count"].sum() == 60 and part["n"].tolist() == [10] * 6
            assert "logit_stats" not in sink.parts["epochs"][0]
    assert written["off"] == {}
    assert written["minimal"] == {"classes": 1, "epochs": 1, "logits": 1}
    assert written["full"] == {"classes": 1, "epochs": 1, "logits": 1, "geometry": 1,
                               "geometry_summary": 1}


# ==== the view, on a hand-made store ==============================================================
#
# 4 classes: 0, 1 majority, 2, 3 minority. Epoch 1:
#
#   train  n 100, 50, 10, 0 (class 3 absent; 2 samples are still predicted as it)
#          own mean 3, 2, .5    other mean 1, 1.5, 2    norm mean 5, 4, 3    pred 108, 30, 20, 2
#          majority: own 2.5, other 1.25, margin 1.25, norm 4.5, share 138 / 160
#          minority (class 2 only): own .5, other 2, margin -1.5, norm 3, share 22 / 160
#          all: own 11/6, other 1.5, margin 1/3, norm 4, share 1
#   test   n 10 each; own 4, 3, 1, -1; other 1, 1, 2, 2; norm 6, 5, 4, 3; pred 16, 12, 8, 4
#          majority: own 3.5, other 1, margin 2.5, norm 5.5, share .7
#          minority: own 0, other 2, margin -2, norm 3.5, share .3
#          all: own 1.75, other 1.5, margin .25, norm 4.5, share 1
# Epoch 0 (the guessing): every sample predicted as class 2; steps 0-2 predict as below.

C = 4
GRP = ["majority", "majority", "minority", "minority"]
N = {"train": [100, 50, 10, 0], "test": [10, 10, 10, 10]}
OWN = {"train": [3.0, 2.0, 0.5, None], "test": [4.0, 3.0, 1.0, -1.0]}
OTHER = {"train": [1.0, 1.5, 2.0, None], "test": [1.0, 1.0, 2.0, 2.0]}
NORM = {"train": [5.0, 4.0, 3.0, None], "test": [6.0, 5.0, 4.0, 3.0]}
PRED = {"train": [108, 30, 20, 2], "test": [16, 12, 8, 4]}
GROUP = {  # (split, grp) -> (classes, own, other, margin, norm, share)
    ("train", "majority"): (2, 2.5, 1.25, 1.25, 4.5, 138 / 160),
    ("train", "minority"): (1, 0.5, 2.0, -1.5, 3.0, 22 / 160),
    ("train", "all"): (3, 11 / 6, 1.5, 1 / 3, 4.0, 1.0),
    ("test", "majority"): (2, 3.5, 1.0, 2.5, 5.5, 0.7),
    ("test", "minority"): (2, 0.0, 2.0, -2.0, 3.5, 0.3),
    ("test", "all"): (4, 1.75, 1.5, 0.25, 4.5, 1.0),
}
STEP_N = [[40, 20, 3, 1], [40, 20, 4, 0], [30, 30, 2, 2]]  # per step, per class
STEP_PRED = [[0, 0, 64, 0], [10, 0, 54, 0], [64, 0, 0, 0]]


def write_run(root: Path, run: str, logits: bool) -> None:
    w = RunWriter(root, run)
    w.start({"name": f"toy-{run}", "config": {"dataset": "toy", "loss": "ce", "ratio": 10.0,
                                              "n_classes": C}})
    w.write("classes", {"class_id": list(range(C)), "class_name": [f"c{i}" for i in range(C)],
                        "train_count": [100, 50, 10, 5], "test_count": [10] * C,
                        "rank": list(range(C)), "grp": GRP, "shot": ["medium"] * C})
    w.write("steps", {"step": [s for s in range(3) for _ in range(C)], "epoch": [1] * 3 * C,
                      "class_id": list(range(C)) * 3, "n": sum(STEP_N, []),
                      "loss_sum": [1.0] * 3 * C, "correct": [0] * 3 * C,
                      "p_true_sum": [0.1] * 3 * C, "margin_sum": [0.0] * 3 * C,
                      "pred_count": sum(STEP_PRED, []), "grad_norm": [1.0] * 3 * C,
                      "lr": [0.1] * 3 * C})
    for epoch in (0, 1):
        ep: dict[str, list] = {k: [] for k in ("epoch", "step", "split", "class_id", "n",
                                               "correct", "loss_sum", "p_true_sum",
                                               "feature_norm", "weight_norm", "bias")}
        lg: dict[str, list] = {k: [] for k in ("epoch", "step", "split", "class_id", "n",
                                               "own_logit_sum", "other_logit_sum", "norm_sum",
                                               "pred_count")}
        for split in ("train", "test"):
            total = sum(N[split])
            for c in range(C):
                n = N[split][c]
                for k, v in (("epoch", epoch), ("step", 7 * epoch), ("split", split),
                             ("class_id", c), ("n", n), ("correct", n // 2), ("loss_sum", 1.0),
                             ("p_true_sum", 0.5), ("feature_norm", 1.0), ("weight_norm", 1.0),
                             ("bias", 0.0)):
                    ep[k].append(v)
                sums = ((OWN[split][c] or 0.0) * n, (OTHER[split][c] or 0.0) * n,
                        (NORM[split][c] or 0.0) * n) if epoch else (0.0, 0.0, 0.0)
                pred = PRED[split][c] if epoch else (total if c == 2 else 0)
                for k, v in (("epoch", epoch), ("step", 7 * epoch), ("split", split),
                             ("class_id", c), ("n", n), ("own_logit_sum", sums[0]),
                             ("other_logit_sum", sums[1]), ("norm_sum", sums[2]),
                             ("pred_count", pred)):
                    lg[k].append(v)
        w.write("epochs", ep)
        if logits:
            w.write("logits", lg)
    w.finish("finished")


@pytest.fixture(scope="module")
def hand(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("logits")
    write_run(root, "new", logits=True)
    return Store(root)


def test_the_view_s_group_values_are_means_over_its_classes(hand: Store) -> None:
    rows = hand.sql("SELECT * FROM logit_results WHERE epoch = 1").to_dicts()
    assert len(rows) == 2 * (C + 3)
    for r in rows:
        split = r["split"]
        if r["class_id"] is None:
            classes, own, other, margin, norm, share = GROUP[(split, r["grp"])]
            assert r["classes"] == classes, r
            assert r["own_logit"] == approx64(own), r
            assert r["other_logit"] == approx64(other), r
            assert r["margin"] == approx64(margin), r
            assert r["logit_norm"] == approx64(norm), r
            assert r["pred_share"] == approx64(share), r
            members = [c for c in range(C) if r["grp"] in ("all", GRP[c])]
            assert r["n"] == sum(N[split][c] for c in members)
            assert r["pred_count"] == sum(PRED[split][c] for c in members)
        else:
            c = r["class_id"]
            assert r["grp"] == GRP[c] and r["classes"] is None
            assert r["n"] == N[split][c] and r["pred_count"] == PRED[split][c]
            assert r["pred_share"] == approx64(PRED[split][c] / sum(N[split]))
            if N[split][c] == 0:
                assert r["own_logit"] is None and r["margin"] is None
                continue
            assert r["own_logit"] == approx64(OWN[split][c])
            assert r["other_logit"] == approx64(OTHER[split][c])
            assert r["margin"] == approx64(OWN[split][c] - OTHER[split][c])
            assert r["logit_norm"] == approx64(NORM[split][c])


def test_the_group_means_are_group_results_definition(hand: Store) -> None:
    """The same classes count as in group_results (n > 0), with the same group names."""
    got = hand.sql("""
        SELECT l.classes, g.classes FROM logit_results l
        JOIN group_results g USING (run_id, epoch, split, grp)
        WHERE l.class_id IS NULL""").rows()
    assert len(got) == 2 * 2 * 3 and all(a == b for a, b in got)


def test_the_named_queries_by_hand(hand: Store) -> None:
    q = get_query("logit_stats")
    rows = hand.sql(q.sql, q.bind({"runs": "new"})).to_dicts()
    assert len(rows) == 6 and {r["epoch"] for r in rows} == {1}
    for r in rows:
        classes, own, other, margin, norm, share = GROUP[(r["split"], r["grp"])]
        assert (r["classes"], r["own_logit"], r["margin"], r["logit_norm"]) == \
            (classes, approx64(own), approx64(margin), approx64(norm))
    q = get_query("guessing_bias")
    rows = hand.sql(q.sql, q.bind({"steps": 2})).to_dicts()
    for source in ("train", "test"):
        rs = [r for r in rows if r["source"] == source]
        assert [r["class_id"] for r in rs][0] == 2 and rs[0]["share_rank"] == 1
        assert rs[0]["top_share"] == 1.0 and rs[0]["majority_share"] == 0.0
        assert rs[0]["majority_class_share"] == 0.5
        assert rs[0]["majority_true_share"] == approx64(
            sum(N[source][:2]) / sum(N[source]))
    steps = {r["class_id"]: r for r in rows if r["source"] == "steps"}
    # steps 0 and 1 only: 128 predictions, 10 on class 0 and 118 on class 2
    assert {c: r["pred_count"] for c, r in steps.items()} == {0: 10, 1: 0, 2: 118, 3: 0}
    assert steps[2]["share_rank"] == 1 and steps[2]["top_share"] == approx64(118 / 128)
    assert steps[0]["majority_share"] == approx64(10 / 128)
    assert steps[0]["majority_true_share"] == approx64(120 / 128)
    assert steps[0]["n"] == 80 and steps[3]["n"] == 1


def test_the_app_draws_the_view_s_group_rows(hand: Store) -> None:
    from imbtui.tui.data.curves import group_curves
    from imbtui.tui.data.metrics import CLASS_METRICS, METRIC

    assert METRIC["logit_norm"].label == "logit norm"
    assert METRIC["logit_margin"].label == "logit margin"
    assert not {"logit_norm", "logit_margin"} & set(CLASS_METRICS)
    cur = hand.connect().cursor()
    got = group_curves(cur, "new", 80, "epoch")
    for grp in ("majority", "minority"):
        assert got["logit_norm"][grp][1] == approx64(GROUP[("train", grp)][4])
        assert got["logit_margin"][grp][1] == approx64(GROUP[("train", grp)][3])
        assert got["logit_norm"][grp][0] == 0.0  # epoch 0's hand rows hold zero sums


# ==== a store from before the table ===============================================================

def test_a_store_from_before_the_table_opens_with_an_empty_view(tmp_path: Path) -> None:
    write_run(tmp_path, "old", logits=False)
    store = Store(tmp_path)
    con = store.connect()
    assert not (tmp_path / "runs" / "old" / "logits").exists()
    assert store.warnings == []
    assert con.execute("SELECT count(*) FROM class_results").fetchall()[0][0] == 2 * 2 * C
    assert con.execute("SELECT count(*) FROM logits").fetchall()[0][0] == 0
    assert con.execute("SELECT count(*) FROM logit_results").fetchall()[0][0] == 0
    q = get_query("logit_stats")
    assert store.sql(q.sql, q.bind(), con=con).height == 0
    q = get_query("guessing_bias")  # only the steps rows: the old run has its steps table
    assert set(store.sql(q.sql, q.bind(), con=con)["source"].to_list()) == {"steps"}
    types = {r[0]: r[1] for r in con.sql("DESCRIBE logits").fetchall()}
    assert types == {"run_id": "VARCHAR", "epoch": "INTEGER", "step": "BIGINT",
                     "split": "VARCHAR", "class_id": "INTEGER", "n": "BIGINT",
                     "own_logit_sum": "DOUBLE", "other_logit_sum": "DOUBLE",
                     "norm_sum": "DOUBLE", "pred_count": "BIGINT"}
    from imbtui.tui.data.curves import group_curves

    got = group_curves(con.cursor(), "old", 40, "epoch")
    assert "train_acc" in got and not {"logit_norm", "logit_margin"} & set(got)
