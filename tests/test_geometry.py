"""Feature geometry (NC1, class-mean norms and cosines, minority collapse, train-vs-test shift)
against a direct numpy computation on the collected features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.data import dataset_counts, load_dataset, long_tailed_indices
from trainer.dynamics import FeatureSums, evaluate_features, geometry_tables
from trainer.loop import TrainConfig, train
from trainer.models import cnn1d
from trainer.sink import MemorySink


def direct_geometry(h: np.ndarray, y: np.ndarray, n_classes: int) -> dict:
    """Textbook formulas, class by class, from the features themselves."""
    present = [c for c in range(n_classes) if (y == c).any()]
    means = {c: h[y == c].mean(0) for c in present}
    centre = np.mean([means[c] for c in present], axis=0)  # each class counts once
    within = {c: np.var(h[y == c], axis=0).sum() for c in present}  # tr of the class covariance
    between = np.mean([np.sum((means[c] - centre) ** 2) for c in present])
    centred = {c: means[c] - centre for c in present}

    def cosine(a, b):
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    cos = {(a, b): cosine(centred[a], centred[b]) for a in present for b in present if a != b}
    pairs = [cos[a, b] for a in present for b in present if a < b]
    return {"present": present, "means": means, "within": within, "between": between,
            "nc1": np.mean([within[c] for c in present]) / between,
            "mean_norm": {c: np.linalg.norm(centred[c]) for c in present},
            "cos_mean": {c: np.mean([cos[c, b] for b in present if b != c]) for c in present},
            "cos_max": {c: max(cos[c, b] for b in present if b != c) for c in present},
            "pairs": pairs, "cos": cos}


def group_pair_mean(cos: dict, members: list[int]) -> float:
    vals = [cos[a, b] for a in members for b in members if a < b]
    return float(np.mean(vals)) if vals else float("nan")


def sums(h: np.ndarray, y: np.ndarray, n_classes: int) -> FeatureSums:
    """Per-class sums written out with loops (the code under test uses index_add_ on tensors)."""
    n = np.array([(y == c).sum() for c in range(n_classes)])
    hs = np.array([h[y == c].sum(0) if n[c] else np.zeros(h.shape[1]) for c in range(n_classes)])
    sq = np.array([(h[y == c] ** 2).sum() for c in range(n_classes)])
    return FeatureSums(n, hs, sq)


def check_split(per_class: dict, summary: dict, split: str, ref: dict, n_classes: int,
                minority: np.ndarray, rel: float = 1e-6) -> None:
    rows = [i for i, s in enumerate(per_class["split"]) if s == split]
    (srow,) = [i for i, s in enumerate(summary["split"]) if s == split]
    for c, i in zip(range(n_classes), rows):
        if c not in ref["present"]:
            assert per_class["nc1"][i] is None and per_class["mean_norm"][i] is None
            continue
        assert per_class["within_var"][i] == pytest.approx(ref["within"][c], rel=rel)
        assert per_class["nc1"][i] == pytest.approx(ref["within"][c] / ref["between"], rel=rel)
        assert per_class["mean_norm"][i] == pytest.approx(ref["mean_norm"][c], rel=rel)
        assert per_class["cos_mean"][i] == pytest.approx(ref["cos_mean"][c], abs=rel)
        assert per_class["cos_max"][i] == pytest.approx(ref["cos_max"][c], abs=rel)
    assert summary["nc1"][srow] == pytest.approx(ref["nc1"], rel=rel)
    assert summary["between_var"][srow] == pytest.approx(ref["between"], rel=rel)
    assert summary["cos_mean"][srow] == pytest.approx(np.mean(ref["pairs"]), abs=rel)
    assert summary["cos_std"][srow] == pytest.approx(np.std(ref["pairs"]), abs=rel)
    norms = np.array(list(ref["mean_norm"].values()))
    assert summary["norm_cv"][srow] == pytest.approx(norms.std() / norms.mean(), rel=rel)
    present = set(ref["present"])
    for grp, members in (("minority", minority), ("majority", ~minority)):
        want = group_pair_mean(ref["cos"], [c for c in np.flatnonzero(members) if c in present])
        assert summary[f"{grp}_cos"][srow] == pytest.approx(want, abs=rel)


def test_geometry_tables_match_numpy_on_random_features() -> None:
    rng = np.random.default_rng(0)
    n_classes, dim = 6, 5
    minority = np.array([False, False, False, True, True, True])
    y_tr = np.repeat(np.arange(n_classes), [50, 30, 20, 9, 4, 2])
    h_tr = rng.normal(size=(len(y_tr), dim)) + rng.normal(size=(n_classes, dim))[y_tr] * 3
    y_te = np.repeat(np.arange(n_classes - 1), 7)  # class 5 absent from this "test" split
    h_te = rng.normal(size=(len(y_te), dim)) + rng.normal(size=(n_classes, dim))[y_te]
    weight = rng.normal(size=(n_classes, dim))
    per_class, summary = geometry_tables(sums(h_tr, y_tr, n_classes), sums(h_te, y_te, n_classes),
                                         weight, minority, epoch=3, step=42)
    assert per_class["epoch"] == [3] * 12 and per_class["step"] == [42] * 12
    assert summary["split"] == ["train", "test"]
    tr, te = direct_geometry(h_tr, y_tr, n_classes), direct_geometry(h_te, y_te, n_classes)
    check_split(per_class, summary, "train", tr, n_classes, minority)
    check_split(per_class, summary, "test", te, n_classes, minority)

    # train-vs-test shift of each class mean, on the test rows (NULL on the train rows)
    for c in range(n_classes):
        i = n_classes + c
        assert per_class["shift"][c] is None
        if c == 5:
            assert per_class["shift"][i] is None
            continue
        d = np.linalg.norm(te["means"][c] - tr["means"][c])
        assert per_class["shift"][i] == pytest.approx(d, rel=1e-6)
        assert per_class["shift_rel"][i] == pytest.approx(d / np.sqrt(tr["within"][c]), rel=1e-6)

    # minority collapse: mean pairwise cosine of the classifier rows, by group
    def wcos(a: int, b: int) -> float:
        return weight[a] @ weight[b] / np.linalg.norm(weight[a]) / np.linalg.norm(weight[b])

    want = {"w_minority_cos": np.mean([wcos(3, 4), wcos(3, 5), wcos(4, 5)]),
            "w_majority_cos": np.mean([wcos(0, 1), wcos(0, 2), wcos(1, 2)]),
            "w_cos_mean": np.mean([wcos(a, b) for a in range(6) for b in range(a + 1, 6)])}
    for k, v in want.items():
        assert summary[k] == [pytest.approx(v, abs=1e-9)] * 2


def test_evaluate_features_sums_are_the_features_sums() -> None:
    torch.manual_seed(0)
    model = cnn1d(40, 4).eval()
    x, y = torch.randn(70, 40), torch.tensor([0] * 40 + [1] * 20 + [3] * 10)
    rows, f = evaluate_features(model, x, y, 4, batch_size=16)
    with torch.no_grad():
        h = model.forward_features(x)[0].double().numpy()
    want = sums(h, y.numpy(), 4)
    assert f.n.tolist() == [40, 20, 0, 10] and rows["n"].tolist() == f.n.tolist()
    np.testing.assert_allclose(f.h, want.h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(f.sq, want.sq, rtol=1e-5)


def test_real_run_geometry_matches_numpy_on_the_models_features() -> None:
    sink = MemorySink()
    result = train(TrainConfig(ratio=100, epochs=1, max_steps=20, device="cpu"), sink)
    ds = load_dataset("mnist1d")
    idx = long_tailed_indices(ds.y_train, dataset_counts(ds, 100), 0)
    model = result.model.eval()
    per_class, summary = sink.table("geometry"), sink.table("geometry_summary")
    last = {k: [v for v, e in zip(per_class[k], per_class["epoch"]) if e == 1] for k in per_class}
    last_s = {k: [v for v, e in zip(summary[k], summary["epoch"]) if e == 1] for k in summary}
    minority = np.asarray(sink.table("classes")["grp"]) == "minority"
    refs = {}
    for split, x, y in (("train", ds.x_train[idx], ds.y_train[idx]),
                        ("test", ds.x_test, ds.y_test)):
        with torch.no_grad():
            h = model.forward_features(torch.from_numpy(x))[0].double().numpy()
        refs[split] = direct_geometry(h, y, 10)
        check_split(last, last_s, split, refs[split], 10, minority, rel=1e-4)
    shift = [np.linalg.norm(refs["test"]["means"][c] - refs["train"]["means"][c])
             for c in range(10)]
    assert last["shift"][10:] == pytest.approx(shift, rel=1e-4)
    w = model.fc.weight.detach().double().numpy()
    u = w / np.linalg.norm(w, axis=1, keepdims=True)
    g = u @ u.T
    want = np.mean([g[a, b] for a in range(5, 10) for b in range(a + 1, 10)])
    assert last_s["w_minority_cos"] == [pytest.approx(want, abs=1e-6)] * 2


def test_geometry_query_over_a_hand_built_store(tmp_path) -> None:
    from imbtui.queries import get_query
    from imbtui.store import RunWriter, Store

    w = RunWriter(tmp_path, "g")
    w.start({"name": "g", "config": {}})
    grp = ["majority", "majority", "minority", "minority"]
    w.write("classes", {"class_id": [0, 1, 2, 3], "class_name": list("abcd"),
                        "train_count": [40, 20, 5, 2], "test_count": [5] * 4,
                        "rank": [0, 1, 2, 3], "grp": grp, "shot": ["few"] * 4})
    nc1 = {"train": [0.1, 0.3, 0.8, 1.2], "test": [0.2, 0.4, 1.0, 2.0]}
    norm = {"train": [2.0, 3.0, 1.0, 0.5], "test": [1.8, 2.5, 0.9, 0.4]}
    shift_rel = [0.5, 0.7, 2.0, 3.0]
    w.write("geometry", {
        "epoch": [1] * 8, "step": [9] * 8, "split": ["train"] * 4 + ["test"] * 4,
        "class_id": [0, 1, 2, 3] * 2, "n": [40, 20, 5, 2, 5, 5, 5, 5],
        "mean_norm": norm["train"] + norm["test"], "within_var": [1.0] * 8,
        "nc1": nc1["train"] + nc1["test"], "cos_mean": [0.0] * 8, "cos_max": [0.0] * 8,
        "shift": [None] * 4 + [1.0] * 4, "shift_rel": [None] * 4 + shift_rel})
    w.write("geometry_summary", {
        "epoch": [1, 1], "step": [9, 9], "split": ["train", "test"], "nc1": [0.6, 0.9],
        "within_var": [1.0, 1.0], "between_var": [1.0, 1.0], "cos_mean": [0.0, 0.0],
        "cos_std": [0.1, 0.1], "norm_cv": [0.2, 0.2], "majority_cos": [-0.3, -0.2],
        "minority_cos": [0.4, 0.6], "w_cos_mean": [0.0, 0.0], "w_majority_cos": [-0.5, -0.5],
        "w_minority_cos": [0.9, 0.9]})
    w.finish("finished")
    q = get_query("geometry")
    rows = Store(tmp_path).sql(q.sql, q.bind({})).to_dicts()
    assert [(r["split"], r["grp"]) for r in rows] == [
        ("test", "majority"), ("test", "minority"), ("train", "majority"), ("train", "minority")]
    by = {(r["split"], r["grp"]): r for r in rows}
    for split, k in (("train", 0.6), ("test", 0.9)):
        for grp_name, members in (("majority", [0, 1]), ("minority", [2, 3])):
            r = by[split, grp_name]
            assert r["nc1"] == pytest.approx(np.mean([nc1[split][c] for c in members]))
            assert r["nc1_all"] == pytest.approx(k)
            assert r["mean_norm"] == pytest.approx(np.mean([norm[split][c] for c in members]))
            assert r["classifier_cos"] == pytest.approx(0.9 if grp_name == "minority" else -0.5)
    assert by["train", "minority"]["feature_cos"] == pytest.approx(0.4)
    assert by["test", "majority"]["feature_cos"] == pytest.approx(-0.2)
    assert by["test", "minority"]["shift_rel"] == pytest.approx(2.5)
    assert by["train", "minority"]["shift_rel"] is None
