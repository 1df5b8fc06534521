"""Feature geometry (NC1-NC3 as published, the within/between trace ratio, class-mean norms and
cosines, minority collapse, train-vs-test shift) against direct numpy computations on the raw
per-sample features, written from the papers' formulas, and against known answers.

References (trainer/dynamics.py, section "feature geometry", says the same):
- NC1 = Tr(Sigma_W Sigma_B^+) / C, NC2, NC3: Papyan, Han & Donoho 2020; the reference code's
  `np.trace(Sw @ inv_Sb) / C` with `inv_Sb` from `svds(Sb, k=C-1)` (Papyan et al.'s notebook), mu_G
  the global mean of all the samples (github.com/tding1/Neural-Collapse, validate_NC.py).
- minority collapse: Fang et al. 2021 (github.com/HornHehhf/LPM, minority_collapse.py): class means
  centred on the mean of all the training features, classifier rows uncentred.

Tolerances. Everything under test is float64. A float64 sum of N terms is good to about N * 1.1e-16
relative to the sum of the terms' magnitudes; Sigma_W from sums (sum h h^T - sum_c n_c mu_c mu_c^T)
loses a further factor (||h||^2 / spread^2, the cancellation) and the pseudo-inverse one more (the
spread of Sigma_B's nonzero eigenvalues, s_max^2 / s_min^2 of M). Each test states or measures
those factors and sets its tolerance from their product, with margin.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import svds

from trainer.data import dataset_counts, load_dataset, long_tailed_indices
from trainer.dynamics import FeatureSums, evaluate_features, geometry_tables
from trainer.loop import TrainConfig, eval_batch_size, train
from trainer.models import NormedLinear, cnn1d
from trainer.sink import MemorySink

EPS = np.finfo(np.float64).eps  # 2.2e-16
REPO = Path(__file__).resolve().parents[2]
SAMPLE_RUNS = REPO / "sample_runs"


# ==== the independent implementation: from the raw features, by the papers' formulas ============

def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def direct_geometry(h: np.ndarray, y: np.ndarray, n_classes: int,
                    weight: np.ndarray | None = None) -> dict:
    """Papyan et al.'s and Fang et al.'s definitions, sample by sample and class by class."""
    present = [c for c in range(n_classes) if (y == c).any()]
    C, N = len(present), len(y)
    means = {c: h[y == c].mean(0) for c in present}
    mu_g = h.mean(0)  # the global mean of all the samples (every sample once)
    centred = {c: means[c] - mu_g for c in present}
    # Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T, one outer product per sample
    sigma_w = sum(np.outer(h[i] - means[y[i]], h[i] - means[y[i]]) for i in range(N)) / N
    sigma_b = sum(np.outer(centred[c], centred[c]) for c in present) / C
    # the reference code's pseudo-inverse: the top C-1 singular triplets of Sb (scipy svds)
    eigvec, eigval, _ = svds(sigma_b, k=C - 1)
    inv_sb = eigvec @ np.diag(eigval ** (-1)) @ eigvec.T
    nc1 = np.trace(sigma_w @ inv_sb) / C
    within = {c: np.var(h[y == c], axis=0).sum() for c in present}  # tr of the class covariance
    between = np.mean([np.sum(centred[c] ** 2) for c in present])
    cos = {(a, b): cosine(centred[a], centred[b]) for a in present for b in present if a != b}
    pairs = [cos[a, b] for a in present for b in present if a < b]
    norms = np.array([np.linalg.norm(centred[c]) for c in present])
    out = {"present": present, "means": means, "within": within, "between": between,
           "sigma_w": sigma_w, "sigma_b": sigma_b, "nc1": nc1,
           "within_rel": np.mean([within[c] for c in present]) / between,
           "mean_norm": {c: np.linalg.norm(centred[c]) for c in present},
           "cos_mean": {c: np.mean([cos[c, b] for b in present if b != c]) for c in present},
           "cos_max": {c: max(cos[c, b] for b in present if b != c) for c in present},
           "pairs": pairs, "cos": cos, "norm_cv": norms.std() / norms.mean(),
           # Papyan et al.'s max-angle measure over ordered pairs c != c' (their `coherence`)
           "nc2_angle": np.mean([abs(v + 1 / (C - 1)) for v in cos.values()])}
    if weight is not None:
        w = np.array([weight[c] for c in present], dtype=np.float64)
        m = np.array([centred[c] for c in present])
        out["nc3"] = np.linalg.norm(w / np.linalg.norm(w) - m / np.linalg.norm(m)) ** 2
    return out


def nc1_by_pinv(ref: dict, rcond: float = 1e-10) -> float:
    """The same NC1 with numpy's Moore-Penrose pseudo-inverse; rcond 1e-10 drops Sigma_B's
    round-off eigenvalues (~1e-16 of the largest) and keeps the C-1 real ones (>= 1e-6 of it
    wherever this is used)."""
    return float(np.trace(ref["sigma_w"] @ np.linalg.pinv(ref["sigma_b"], rcond=rcond,
                                                          hermitian=True)) / len(ref["present"]))


def group_pair_mean(cos: dict, members: list[int]) -> float:
    vals = [cos[a, b] for a in members for b in members if a < b]
    return float(np.mean(vals)) if vals else float("nan")


def scatter(h: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """sum_i (h_i - mu_c(i))(h_i - mu_c(i))^T, written out with a loop, in float64."""
    h = h.astype(np.float64)
    means = {c: h[y == c].mean(0) for c in range(n_classes) if (y == c).any()}
    return sum(np.outer(v - means[c], v - means[c]) for v, c in zip(h, y))


def sums(h: np.ndarray, y: np.ndarray, n_classes: int) -> FeatureSums:
    """The sums written out with loops (the code under test uses index_add_ and projects the
    scatter to the class means' span); the scatter whole, in the identity basis."""
    n = np.array([(y == c).sum() for c in range(n_classes)])
    hs = np.array([h[y == c].sum(0) if n[c] else np.zeros(h.shape[1]) for c in range(n_classes)])
    sq = np.array([(h[y == c] ** 2).sum() for c in range(n_classes)])
    return FeatureSums(n, hs, sq, np.eye(h.shape[1]), scatter(h, y, n_classes))


def conditioning(ref: dict) -> float:
    """s_max^2 / s_min^2 over Sigma_B's C-1 nonzero eigenvalues: what the pseudo-inverse amplifies
    a relative error in Sigma_W or M by."""
    ev = np.sort(np.linalg.eigvalsh(ref["sigma_b"]))[::-1][:len(ref["present"]) - 1]
    return float(ev[0] / ev[-1])


def check_split(per_class: dict, summary: dict, split: str, ref: dict, n_classes: int,
                minority: np.ndarray, rel: float) -> None:
    rows = [i for i, s in enumerate(per_class["split"]) if s == split]
    (srow,) = [i for i, s in enumerate(summary["split"]) if s == split]
    for c, i in zip(range(n_classes), rows):
        if c not in ref["present"]:
            assert per_class["within_rel"][i] is None and per_class["mean_norm"][i] is None
            continue
        assert per_class["within_var"][i] == pytest.approx(ref["within"][c], rel=rel)
        assert per_class["within_rel"][i] == pytest.approx(ref["within"][c] / ref["between"],
                                                           rel=rel)
        assert per_class["mean_norm"][i] == pytest.approx(ref["mean_norm"][c], rel=rel)
        assert per_class["cos_mean"][i] == pytest.approx(ref["cos_mean"][c], abs=rel)
        assert per_class["cos_max"][i] == pytest.approx(ref["cos_max"][c], abs=rel)
    assert summary["nc1"][srow] == pytest.approx(ref["nc1"], rel=rel)
    assert summary["within_rel"][srow] == pytest.approx(ref["within_rel"], rel=rel)
    assert summary["between_var"][srow] == pytest.approx(ref["between"], rel=rel)
    assert summary["cos_mean"][srow] == pytest.approx(np.mean(ref["pairs"]), abs=rel)
    assert summary["cos_std"][srow] == pytest.approx(np.std(ref["pairs"]), abs=rel)
    assert summary["norm_cv"][srow] == pytest.approx(ref["norm_cv"], rel=rel)
    assert summary["nc2_angle"][srow] == pytest.approx(ref["nc2_angle"], abs=rel)
    if "nc3" in ref:
        assert summary["nc3"][srow] == pytest.approx(ref["nc3"], rel=rel, abs=rel)
    present = set(ref["present"])
    for grp, members in (("minority", minority), ("majority", ~minority)):
        want = group_pair_mean(ref["cos"], [c for c in np.flatnonzero(members) if c in present])
        assert summary[f"{grp}_cos"][srow] == pytest.approx(want, abs=rel)


def split_row(summary: dict, split: str) -> dict:
    (i,) = [i for i, s in enumerate(summary["split"]) if s == split]
    return {k: v[i] for k, v in summary.items()}


# ==== against the independent implementation ====================================================

def test_geometry_tables_match_numpy_on_random_features() -> None:
    rng = np.random.default_rng(0)
    n_classes, dim = 6, 8  # dim > C - 1: Sigma_B is rank-deficient, as in any real network
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
    tr = direct_geometry(h_tr, y_tr, n_classes, weight)
    te = direct_geometry(h_te, y_te, n_classes, weight)
    # float64 sums of ~100 O(10)-sized terms: ~1e-14 relative; the cancellation (||h||^2 /
    # spread^2 < 100 here) and the pseudo-inverse's conditioning (asserted below) take it to
    # < 1e-10, so 1e-9 holds with margin and would still catch any wrong definition
    for ref in (tr, te):
        assert conditioning(ref) < 1e3
        assert ref["nc1"] == pytest.approx(nc1_by_pinv(ref), rel=1e-12)  # svds == pinv here
    check_split(per_class, summary, "train", tr, n_classes, minority, rel=1e-9)
    check_split(per_class, summary, "test", te, n_classes, minority, rel=1e-9)

    # train-vs-test shift of each class mean, on the test rows (NULL on the train rows)
    for c in range(n_classes):
        i = n_classes + c
        assert per_class["shift"][c] is None
        if c == 5:
            assert per_class["shift"][i] is None
            continue
        d = np.linalg.norm(te["means"][c] - tr["means"][c])
        assert per_class["shift"][i] == pytest.approx(d, rel=1e-12)
        assert per_class["shift_rel"][i] == pytest.approx(d / np.sqrt(tr["within"][c]), rel=1e-12)

    # minority collapse: mean pairwise cosine of the classifier rows, by group, uncentred
    def wcos(a: int, b: int) -> float:
        return cosine(weight[a], weight[b])

    want = {"w_minority_cos": np.mean([wcos(3, 4), wcos(3, 5), wcos(4, 5)]),
            "w_majority_cos": np.mean([wcos(0, 1), wcos(0, 2), wcos(1, 2)]),
            "w_cos_mean": np.mean([wcos(a, b) for a in range(6) for b in range(a + 1, 6)])}
    for k, v in want.items():
        assert summary[k] == [pytest.approx(v, abs=1e-12)] * 2


def test_the_centre_is_the_global_sample_mean_not_the_mean_of_class_means() -> None:
    """Under imbalance the two centres differ; every centred quantity uses the sample mean."""
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), [80, 40, 10, 2])
    h = rng.normal(size=(len(y), 6)) + rng.normal(size=(4, 6))[y] * 4
    _, summary = geometry_tables(sums(h, y, 4), sums(h, y, 4), np.eye(4, 6),
                                 np.array([False, False, True, True]), 1, 1)
    means = np.array([h[y == c].mean(0) for c in range(4)])
    by_sample = np.mean(np.sum((means - h.mean(0)) ** 2, axis=1))
    by_class = np.mean(np.sum((means - means.mean(0)) ** 2, axis=1))
    assert abs(by_sample - by_class) > 0.01 * by_class  # the test can tell them apart
    assert summary["between_var"][0] == pytest.approx(by_sample, rel=1e-12)


# ==== known answers ==============================================================================

def test_nc1_is_zero_when_every_feature_is_its_class_mean() -> None:
    # integer features and power-of-two class sizes: every sum, mean and product is exact in
    # float64, so Sigma_W is exactly 0 and so is NC1 (and every within-class quantity)
    rng = np.random.default_rng(2)
    n_classes, dim = 5, 9
    mu = rng.integers(-8, 9, size=(n_classes, dim)).astype(np.float64)
    y = np.repeat(np.arange(n_classes), [64, 32, 16, 4, 2])
    h = mu[y]
    f = sums(h, y, n_classes)
    per_class, summary = geometry_tables(f, f, rng.normal(size=(n_classes, dim)),
                                         np.array([False, False, True, True, True]), 0, 0)
    assert summary["nc1"] == [0.0, 0.0]
    assert summary["within_rel"] == [0.0, 0.0] and summary["within_var"] == [0.0, 0.0]
    assert per_class["within_rel"] == [0.0] * 10
    assert summary["between_var"][0] > 0


def etf(n_classes: int, dim: int, radius: float, seed: int) -> np.ndarray:
    """C vectors in R^D forming a simplex ETF of norm `radius`: the centred one-hot rows, scaled,
    turned by a random orthogonal map into R^D."""
    e = np.eye(n_classes) - 1.0 / n_classes
    e *= radius / np.linalg.norm(e[0])
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
    return np.hstack([e, np.zeros((n_classes, dim - n_classes))]) @ q.T


def test_simplex_etf_class_means_with_isotropic_spread() -> None:
    """Balanced classes whose means are a simplex ETF (plus an offset) and whose samples are
    mu_c +- sigma sqrt(D) e_j for each axis j: Sigma_W = sigma^2 I exactly in exact arithmetic and
    Sigma_B = r^2/(C-1) P (P the projector onto the ETF's C-1 dimensions), so
    NC1 = sigma^2 (C-1)^2 / (C r^2), within_rel_c = D sigma^2 / r^2, norm_cv = 0, every cosine
    -1/(C-1), cos_std = nc2_angle = 0; a classifier W = 2.5 M gives NC3 = 0 and W = -M gives 4."""
    n_classes, dim, radius, sigma = 7, 11, 3.0, 0.5
    means = etf(n_classes, dim, radius, seed=3) + np.linspace(-2, 5, dim)  # mu_G is the offset
    steps = sigma * np.sqrt(dim) * np.vstack([np.eye(dim), -np.eye(dim)])  # 2D samples per class
    h = np.vstack([m + steps for m in means])
    y = np.repeat(np.arange(n_classes), 2 * dim)
    f = sums(h, y, n_classes)
    minority = np.arange(n_classes) >= 4
    centred = means - means.mean(0)
    per_class, summary = geometry_tables(f, f, 2.5 * centred, minority, 0, 0)
    s = split_row(summary, "train")
    # O(1)-sized float64 values through sums of ~150 terms and a 7 x 11 SVD: ~1e-14 off
    tol = 1e-12
    assert s["nc1"] == pytest.approx(sigma ** 2 * (n_classes - 1) ** 2 / (n_classes * radius ** 2),
                                     rel=tol)
    assert per_class["within_rel"][:n_classes] == pytest.approx(
        [dim * sigma ** 2 / radius ** 2] * n_classes, rel=tol)
    assert s["between_var"] == pytest.approx(radius ** 2, rel=tol)
    assert s["norm_cv"] == pytest.approx(0.0, abs=tol)
    assert s["cos_std"] == pytest.approx(0.0, abs=tol)
    assert s["nc2_angle"] == pytest.approx(0.0, abs=tol)
    want_cos = -1.0 / (n_classes - 1)
    assert s["cos_mean"] == pytest.approx(want_cos, abs=tol)
    assert per_class["cos_max"][:n_classes] == pytest.approx([want_cos] * n_classes, abs=tol)
    assert s["minority_cos"] == pytest.approx(want_cos, abs=tol)
    assert s["nc3"] == pytest.approx(0.0, abs=tol)
    _, flipped = geometry_tables(f, f, -centred, minority, 0, 0)
    assert flipped["nc3"][0] == pytest.approx(4.0, rel=tol)


def test_nc1_leaves_out_absent_classes_and_needs_two() -> None:
    rng = np.random.default_rng(4)
    y = np.repeat([0, 2, 3], [20, 10, 5])  # class 1 absent: C = 3 present classes
    h = rng.normal(size=(len(y), 5)) + rng.normal(size=(4, 5))[y] * 2
    w = rng.normal(size=(4, 5))
    _, summary = geometry_tables(sums(h, y, 4), sums(h[y == 0], y[y == 0], 4), w,
                                 np.array([False, False, True, True]), 0, 0)
    ref = direct_geometry(h, y, 4, w)
    assert ref["present"] == [0, 2, 3]
    assert summary["nc1"][0] == pytest.approx(ref["nc1"], rel=1e-9)
    assert summary["nc3"][0] == pytest.approx(ref["nc3"], rel=1e-9)
    # one class only: no between-class spread, so no NC1 / NC2 / NC3 (NULL, never a number)
    assert [summary[k][1] for k in ("nc1", "nc2_angle", "nc3", "cos_std")] == [None] * 4


def test_cosines_stay_in_range_and_nc1_non_negative_on_nearly_collapsed_data() -> None:
    """Class means along (nearly) one direction and identical classifier rows: cosines of
    (near-)parallel vectors round to an ulp past 1 unless clipped; Sigma_W from sums of h h^T
    may come out a round-off short of PSD."""
    rng = np.random.default_rng(5)
    direction = rng.normal(size=16)
    mu = np.outer([1.0, 2.0, 3.0, 5.0, 8.0], direction) + 1e-9 * rng.normal(size=(5, 16))
    y = np.repeat(np.arange(5), [40, 20, 10, 5, 3])
    h = mu[y] + 1e-12 * rng.normal(size=(len(y), 16)) + 100.0  # tiny spread, large offset
    weight = np.tile(rng.normal(size=16), (5, 1)) * 7.3
    per_class, summary = geometry_tables(sums(h, y, 5), sums(h, y, 5), weight,
                                         np.array([False, False, True, True, True]), 0, 0)
    cos_columns = ("cos_mean", "majority_cos", "minority_cos", "w_cos_mean", "w_majority_cos",
                   "w_minority_cos")
    for k in cos_columns:
        assert all(-1.0 <= v <= 1.0 for v in summary[k] if v is not None), (k, summary[k])
    for k in ("cos_mean", "cos_max"):
        assert all(-1.0 <= v <= 1.0 for v in per_class[k] if v is not None), k
    assert summary["w_cos_mean"][0] == 1.0
    assert all(v >= 0.0 for v in summary["nc1"] if v is not None)
    assert all(0.0 <= v <= 4.0 for v in summary["nc3"] if v is not None)


# ==== the sums the trainer takes on the device ===================================================

def test_evaluate_features_sums_are_the_features_sums() -> None:
    torch.manual_seed(0)
    model = cnn1d(40, 4).eval()
    x, y = torch.randn(70, 40), torch.tensor([0] * 40 + [1] * 20 + [3] * 10)
    rows, f = evaluate_features(model, x, y, 4, batch_size=16)
    with torch.no_grad():  # the same batches of 16, so the float32 features are the same ones
        h = torch.cat([model.forward_features(x[i:i + 16])[0] for i in range(0, 70, 16)])
    want = sums(h.double().numpy(), y.numpy(), 4)
    assert f.n.tolist() == [40, 20, 0, 10] and rows["n"].tolist() == f.n.tolist()
    # float64 sums of <= 70 exact float32 products, in another order: <= 70 * 1.1e-16 relative
    # to the terms' magnitudes (features are >= 0 after ReLU, so no cancellation)
    np.testing.assert_allclose(f.h, want.h, rtol=1e-13, atol=0)
    np.testing.assert_allclose(f.sq, want.sq, rtol=1e-13)
    # the scatter's basis: 3 orthonormal columns (classes present) spanning their means
    q = f.basis
    assert q.dtype == np.float64 and q.shape == (model.fc.in_features, 3)
    np.testing.assert_allclose(q.T @ q, np.eye(3), atol=1e-14)
    means = want.h[[0, 1, 3]] / f.n[[0, 1, 3], None]
    np.testing.assert_allclose(means @ q @ q.T, means, rtol=0, atol=1e-13 * np.abs(means).max())
    # and the scatter in it, against the loop's whole (D, D) scatter projected there
    ref = q.T @ want.within @ q
    assert f.within.shape == (3, 3)
    np.testing.assert_allclose(f.within, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


# ==== end to end: a short real run ==============================================================

@pytest.mark.parametrize("loss", ["ce", "ldam"])
def test_real_run_geometry_matches_numpy_on_the_models_features(loss: str) -> None:
    sink = MemorySink()
    result = train(TrainConfig(ratio=100, epochs=1, max_steps=20, device="cpu", loss=loss), sink)
    ds = load_dataset("mnist1d")
    idx = long_tailed_indices(ds.y_train, dataset_counts(ds, 100), 0)
    model = result.model.eval()
    assert isinstance(model.fc, NormedLinear) == (loss == "ldam")
    per_class, summary = sink.table("geometry"), sink.table("geometry_summary")
    last = {k: [v for v, e in zip(per_class[k], per_class["epoch"]) if e == 1] for k in per_class}
    last_s = {k: [v for v, e in zip(summary[k], summary["epoch"]) if e == 1] for k in summary}
    minority = np.asarray(sink.table("classes")["grp"]) == "minority"
    weight = model.fc.weight.detach().double().numpy()  # as is, for LDAM's NormedLinear too
    batch = eval_batch_size(torch.device("cpu"), ds.x_train[0].size)
    refs = {}
    for split, x, y in (("train", ds.x_train[idx], ds.y_train[idx]),
                        ("test", ds.x_test, ds.y_test)):
        xt = torch.from_numpy(x)
        with torch.no_grad():  # the loop's eval batches: the very float32 features it summed
            h = torch.cat([model.forward_features(xt[i:i + batch])[0]
                           for i in range(0, len(xt), batch)]).double().numpy()
        ref = refs[split] = direct_geometry(h, y, 10, weight)
        assert ref["nc1"] == pytest.approx(nc1_by_pinv(ref), rel=1e-9)
        # The trainer's float64 sums of N ~ 1e4 terms are good to N * eps ~ 2e-12 relative. To
        # first order, NC1 = sum_k v_k^T Sigma_W v_k / s_k^2 then errs by that times the
        # cancellation in Sigma_W = (sum h h^T - sum n mu mu^T) / N (||mu_G||^2 + tr Sigma_W over
        # tr Sigma_W), plus twice the relative error of the smallest singular value s_min of M:
        # N * eps * ||mu_c|| / s_min = N * eps * sqrt(cond) * ||mu_c|| / s_max. Measured here:
        # cancellation ~5.5, cond 1e4-1e5, so ~1e-9; x10 margin. (Seen: ~5e-14.)
        spread = np.trace(ref["sigma_w"])
        cancel = (np.sum(h.mean(0) ** 2) + spread) / spread
        m = np.array([ref["means"][c] for c in ref["present"]])
        s_max = np.linalg.svd(m - h.mean(0), compute_uv=False)[0]
        size = np.linalg.norm(m, axis=1).max() / s_max
        rel = 10 * len(y) * EPS * (cancel + 2 * np.sqrt(conditioning(ref)) * size)
        assert rel < 1e-6, (split, cancel, conditioning(ref), size)  # still a tight check
        check_split(last, last_s, split, ref, 10, minority, rel=rel)
    shift = [np.linalg.norm(refs["test"]["means"][c] - refs["train"]["means"][c])
             for c in range(10)]
    assert last["shift"][10:] == pytest.approx(shift, rel=1e-10)
    u = weight / np.linalg.norm(weight, axis=1, keepdims=True)
    g = u @ u.T
    want = np.mean([g[a, b] for a in range(5, 10) for b in range(a + 1, 10)])
    assert last_s["w_minority_cos"] == [pytest.approx(want, abs=1e-12)] * 2
    # the published NC1 and the old trace ratio are different numbers (NC1 is far larger)
    assert all(n > 5 * r for n, r in zip(last_s["nc1"], last_s["within_rel"]))


# ==== the store: queries over new and old runs ==================================================

def test_geometry_query_over_a_hand_built_store(tmp_path) -> None:
    from imbtui.queries import get_query
    from imbtui.store import RunWriter, Store

    w = RunWriter(tmp_path, "g")
    w.start({"name": "g", "config": {}})
    grp = ["majority", "majority", "minority", "minority"]
    w.write("classes", {"class_id": [0, 1, 2, 3], "class_name": list("abcd"),
                        "train_count": [40, 20, 5, 2], "test_count": [5] * 4,
                        "rank": [0, 1, 2, 3], "grp": grp, "shot": ["few"] * 4})
    rel = {"train": [0.1, 0.3, 0.8, 1.2], "test": [0.2, 0.4, 1.0, 2.0]}
    norm = {"train": [2.0, 3.0, 1.0, 0.5], "test": [1.8, 2.5, 0.9, 0.4]}
    shift_rel = [0.5, 0.7, 2.0, 3.0]
    w.write("geometry", {
        "epoch": [1] * 8, "step": [9] * 8, "split": ["train"] * 4 + ["test"] * 4,
        "class_id": [0, 1, 2, 3] * 2, "n": [40, 20, 5, 2, 5, 5, 5, 5],
        "mean_norm": norm["train"] + norm["test"], "within_var": [1.0] * 8,
        "within_rel": rel["train"] + rel["test"], "cos_mean": [0.0] * 8, "cos_max": [0.0] * 8,
        "shift": [None] * 4 + [1.0] * 4, "shift_rel": [None] * 4 + shift_rel})
    w.write("geometry_summary", {
        "epoch": [1, 1], "step": [9, 9], "split": ["train", "test"], "nc1": [7.5, 11.0],
        "within_rel": [0.6, 0.9], "within_var": [1.0, 1.0], "between_var": [1.0, 1.0],
        "cos_mean": [0.0, 0.0], "cos_std": [0.1, 0.1], "norm_cv": [0.2, 0.2],
        "nc2_angle": [0.3, 0.4], "nc3": [1.1, 1.2], "majority_cos": [-0.3, -0.2],
        "minority_cos": [0.4, 0.6], "w_cos_mean": [0.0, 0.0], "w_majority_cos": [-0.5, -0.5],
        "w_minority_cos": [0.9, 0.9]})
    w.finish("finished")
    q = get_query("geometry")
    rows = Store(tmp_path).sql(q.sql, q.bind({})).to_dicts()
    assert [(r["split"], r["grp"]) for r in rows] == [
        ("test", "majority"), ("test", "minority"), ("train", "majority"), ("train", "minority")]
    by = {(r["split"], r["grp"]): r for r in rows}
    split_values = {"train": (0.6, 7.5, 0.3, 1.1), "test": (0.9, 11.0, 0.4, 1.2)}
    for split, (k, nc1, angle, nc3) in split_values.items():
        for grp_name, members in (("majority", [0, 1]), ("minority", [2, 3])):
            r = by[split, grp_name]
            assert r["within_rel"] == pytest.approx(np.mean([rel[split][c] for c in members]))
            assert r["within_rel_all"] == pytest.approx(k)
            assert (r["nc1"], r["nc2_angle"], r["nc3"]) == pytest.approx((nc1, angle, nc3))
            assert r["mean_norm"] == pytest.approx(np.mean([norm[split][c] for c in members]))
            assert r["classifier_cos"] == pytest.approx(0.9 if grp_name == "minority" else -0.5)
    assert by["train", "minority"]["feature_cos"] == pytest.approx(0.4)
    assert by["test", "majority"]["feature_cos"] == pytest.approx(-0.2)
    assert by["test", "minority"]["shift_rel"] == pytest.approx(2.5)
    assert by["train", "minority"]["shift_rel"] is None


@pytest.fixture(scope="module")
def old_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the bundled sample store with its geometry parts rewritten the way the trainer
    wrote them before NC1 meant Papyan et al.'s: the trace ratio stored as `nc1` (per class and in
    the summary), no within_rel / nc2_angle / nc3 columns."""
    import polars as pl

    root = tmp_path_factory.mktemp("old") / "store"
    shutil.copytree(SAMPLE_RUNS, root)
    for part in root.glob("runs/*/geometry*/*.parquet"):
        frame = pl.read_parquet(part)
        if part.parent.name == "geometry_summary":
            frame = frame.drop("nc1", "nc2_angle", "nc3")
        frame.rename({"within_rel": "nc1"}).write_parquet(part)
    return root


def test_an_old_store_opens_and_its_geometry_queries_run(old_store: Path) -> None:
    from imbtui.queries import get_query
    from imbtui.store import Store
    from imbtui.tui.data import StoreSession, class_curves, group_curves

    store = Store(old_store)
    q = get_query("geometry")
    rows = store.sql(q.sql, q.bind({})).to_dicts()
    assert rows and all(r["nc2_angle"] is None and r["nc3"] is None for r in rows)
    summary = store.sql("SELECT * FROM geometry_summary").to_dicts()
    assert summary and all(r["nc2_angle"] is None and r["nc3"] is None for r in summary)
    assert len(store.warnings) == 1  # one line says which columns read as NULL, and why
    assert all(c in store.warnings[0] for c in ("geometry_summary.nc1", "nc2_angle", "nc3"))
    assert "within_rel" not in store.warnings[0]  # read from the old nc1, not NULL
    session = StoreSession(old_store)
    session.refresh()
    run_id = rows[0]["run_id"]
    group_curves(session.cursor(), run_id, 40, "epoch")  # the app's queries run
    class_curves(session.cursor(), run_id, 40, "within_rel", "epoch")


def test_an_old_stores_trace_ratio_reads_as_within_rel_and_its_nc1_as_null(
        old_store: Path) -> None:
    import polars as pl

    from imbtui.store import Store

    run = sorted((old_store / "runs").iterdir())[0]
    old_summary = pl.read_parquet(run / "geometry_summary" / "*.parquet")
    old_class = pl.read_parquet(run / "geometry" / "*.parquet")
    assert "nc1" in old_summary.columns and "nc3" not in old_summary.columns
    store = Store(old_store)
    got = store.sql("SELECT epoch, split, nc1, within_rel FROM geometry_summary WHERE run_id = $r "
                    "ORDER BY epoch, split", {"r": run.name})
    want = old_summary.sort("epoch", "split")
    assert got["nc1"].null_count() == got.height  # the old number is not NC1
    assert got["within_rel"].to_list() == want["nc1"].to_list()
    per_class = store.sql("SELECT within_rel FROM geometry WHERE run_id = $r "
                          "ORDER BY epoch, split, class_id", {"r": run.name})
    assert per_class["within_rel"].to_list() == old_class.sort(
        "epoch", "split", "class_id")["nc1"].to_list()


def test_renamed_columns_are_added_columns_of_the_schema() -> None:
    from imbtui.store.schema import ADDED, RENAMED, TABLES

    assert "nc1" not in TABLES["geometry"]
    assert {"nc1", "within_rel", "nc2_angle", "nc3"} <= set(TABLES["geometry_summary"])
    for table, (marker, moved) in RENAMED.items():
        assert marker in ADDED[table] and set(moved) <= set(TABLES[table])
    json.dumps(RENAMED)  # plain data the reader can apply
