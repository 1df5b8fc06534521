"""Input mixup (trainer.mixup) against the reference code and by hand.

The reference is facebookresearch/mixup-cifar10 train.py (`mixup_data`, `mixup_criterion`),
transcribed below. Our lam is folded to max(lam, 1 - lam); the tests check that a reference draw
with lam >= 1/2 gives exactly our batch, and one with lam < 1/2 gives our batch for the inverse
permutation and 1 - lam, re-indexed (the module docstring's argument), with the same loss. The lam
distribution is checked against the closed form of the folded Beta(a, a)'s mean and against a
numpy simulation, with tolerances from the sample sizes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tests.tolerance import EPS, approx_sum, rel
from trainer.data import DataError
from trainer.losses import build_loss
from trainer.mixup import Mixup, mixed_loss, mixed_terms
from trainer.options import LOSSES

CPU = torch.device("cpu")
CIFAR10_LT = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
ALPHAS = (0.1, 0.2, 1.0, 2.0, 8.0)


# ==== facebookresearch/mixup-cifar10, train.py (commit 1fe8c5e), verbatim ========================
def ref_mixup_data(x, y, alpha=1.0, use_cuda=True):
    '''Returns mixed inputs, pairs of targets, and lambda'''
    if alpha > 0:
        lam = np.random.beta(alpha, alpha)
    else:
        lam = 1

    batch_size = x.size()[0]
    if use_cuda:
        index = torch.randperm(batch_size).cuda()
    else:
        index = torch.randperm(batch_size)

    mixed_x = lam * x + (1 - lam) * x[index, :]
    y_a, y_b = y, y[index]
    return mixed_x, y_a, y_b, lam


def ref_mixup_criterion(criterion, pred, y_a, y_b, lam):
    return lam * criterion(pred, y_a) + (1 - lam) * criterion(pred, y_b)
# --------------------------------------------------------------------------------------------------


def batch(seed: int, n: int = 16, d: int = 5, c: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g)


def model_weight(d: int, c: int = 10) -> torch.Tensor:
    return torch.randn(d, c, generator=torch.Generator().manual_seed(99)) * 2.0


def logits_of(x: torch.Tensor, c: int = 10) -> torch.Tensor:
    """A fixed linear model's logits (the same on both sides of a comparison)."""
    return x @ model_weight(x.shape[1], c)


# ==== lam =========================================================================================

@pytest.mark.parametrize("alpha", ALPHAS)
def test_lam_is_the_seeded_numpy_beta_folded(alpha: float) -> None:
    """lam >= 1/2 always, and exactly max(b, 1 - b) of numpy's Generator(seed).beta sequence."""
    mixer = Mixup(alpha, seed=7)
    lams = [mixer.draw() for _ in range(2000)]
    raw = np.random.default_rng(7).beta(alpha, alpha, size=2000)
    assert min(lams) >= 0.5
    assert lams == np.maximum(raw, 1.0 - raw).tolist()


def test_same_seed_same_lams_and_mix_uses_them() -> None:
    x, y = batch(0)
    a = [Mixup(1.0, seed=3).draw() for _ in range(1)]
    m1, m2 = Mixup(1.0, seed=3), Mixup(1.0, seed=3)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(5)
    lams1 = [m1.mix(x, y, g1)[2] for _ in range(50)]
    lams2 = [m2.mix(x, y, g2)[2] for _ in range(50)]  # the permutation's generator plays no part
    assert lams1 == lams2 and lams1[0] == a[0]
    assert lams1 != [Mixup(1.0, seed=4).mix(x, y, g1)[2] for _ in range(50)]


def folded_beta_moments(a: float) -> tuple[float, float]:
    """Mean and variance of M = max(L, 1 - L), L ~ Beta(a, a), in closed form.

    E|L - 1/2| is Beta(a, a)'s mean absolute deviation, 2 a^a a^a / (B(a, a) (2a)^(2a+1)) =
    1 / (a B(a, a) 4^a); so E M = 1/2 + E|L - 1/2|, and E M^2 = 1/4 + E|L - 1/2| + Var L with
    Var L = 1 / (4 (2a + 1)). (a = 1: uniform, E M = 3/4, Var M = 1/48.)"""
    beta_aa = math.exp(2 * math.lgamma(a) - math.lgamma(2 * a))
    mad = 1.0 / (a * beta_aa * 4.0 ** a)
    mean = 0.5 + mad
    return mean, 0.25 + mad + 1.0 / (4 * (2 * a + 1)) - mean ** 2


def test_folded_moments_by_hand() -> None:
    assert folded_beta_moments(1.0) == pytest.approx((0.75, 1 / 48), rel=rel(16, "float64"))


@pytest.mark.parametrize("alpha", ALPHAS)
def test_lam_distribution_is_the_folded_beta(alpha: float) -> None:
    """The mean of n lams against the closed form, within 5 standard errors (a false failure has
    probability ~6e-7; the draws are seeded, so the test is deterministic anyway); and a two-sample
    Kolmogorov-Smirnov distance to a numpy simulation of the folded Beta(a, a) below its critical
    value at significance 1e-6, c = sqrt(-ln(1e-6 / 2) / 2) * sqrt((n + m) / (n m))."""
    n, m = 20000, 200000
    mixer = Mixup(alpha, seed=11)
    lams = np.array([mixer.draw() for _ in range(n)])
    mean, var = folded_beta_moments(alpha)
    assert abs(lams.mean() - mean) < 5 * math.sqrt(var / n)
    sim = np.random.default_rng(12345).beta(alpha, alpha, size=m)
    crit = math.sqrt(-math.log(1e-6 / 2) / 2) * math.sqrt((n + m) / (n * m))
    assert ks_distance(lams, np.maximum(sim, 1 - sim)) < crit
    # the checks can fail: the unfolded Beta, and another alpha, are far outside them
    assert ks_distance(lams, sim) > 10 * crit
    other = np.random.default_rng(1).beta(2 * alpha, 2 * alpha, size=m)
    assert ks_distance(lams, np.maximum(other, 1 - other)) > 2 * crit


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """sup_t |F_a(t) - F_b(t)| of the two empirical CDFs."""
    grid = np.concatenate([a, b])
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def test_state_dict_resumes_the_lams() -> None:
    mixer = Mixup(0.4, seed=2)
    [mixer.draw() for _ in range(10)]
    state = mixer.state_dict()
    after = [mixer.draw() for _ in range(10)]
    resumed = Mixup(0.4, seed=999)
    resumed.load_state_dict(state)
    assert [resumed.draw() for _ in range(10)] == after


# ==== the mixed batch =============================================================================

def test_mixed_inputs_by_hand() -> None:
    # dyadic inputs and lam 3/4: every product and sum is exact in float32
    x = torch.tensor([[0.0, 1.0], [4.0, 2.0], [8.0, -4.0], [16.0, 0.5]])
    y = torch.tensor([3, 1, 4, 1])
    mixer = Mixup(1.0, seed=0)
    mixer.draw = lambda: 0.75  # type: ignore[method-assign]
    partner = torch.randperm(4, generator=torch.Generator().manual_seed(7)).tolist()
    xm, yb, lam = mixer.mix(x, y, torch.Generator().manual_seed(7))
    assert lam == 0.75 and sorted(partner) == [0, 1, 2, 3]
    rows = x.tolist()
    want = [[0.75 * a + 0.25 * b for a, b in zip(rows[i], rows[partner[i]])] for i in range(4)]
    assert xm.tolist() == want
    assert yb.tolist() == [y.tolist()[partner[i]] for i in range(4)]
    assert xm.dtype == x.dtype and yb.dtype == y.dtype


def test_mixed_inputs_with_a_drawn_lam() -> None:
    x, y = batch(1, n=8, d=3)
    xm, yb, lam = Mixup(0.3, seed=5).mix(x, y, torch.Generator().manual_seed(2))
    assert lam == Mixup(0.3, seed=5).draw() and lam >= 0.5
    p = torch.randperm(8, generator=torch.Generator().manual_seed(2)).tolist()
    rows = x.double().tolist()
    for i in range(8):
        for j in range(3):
            want = lam * rows[i][j] + (1 - lam) * rows[p[i]][j]
            tol = rel(2) * (abs(rows[i][j]) + abs(rows[p[i]][j]))
            assert float(xm[i, j]) == pytest.approx(want, abs=tol, rel=0)
    assert torch.equal(yb, y[p])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_mixed_inputs_keep_their_dtype(dtype: torch.dtype) -> None:
    x, y = batch(2)
    xm, _, _ = Mixup(1.0, seed=0).mix(x.to(dtype), y, torch.Generator().manual_seed(0))
    assert xm.dtype == dtype and xm.shape == x.shape


def test_alpha_zero_is_off_and_negative_is_refused() -> None:
    x, y = batch(3)
    mixer = Mixup(0.0, seed=0)
    g = torch.Generator().manual_seed(0)
    before = g.get_state()
    xm, yb, lam = mixer.mix(x, y, g)
    assert xm is x and yb is y and lam == 1.0 and torch.equal(g.get_state(), before)
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(DataError, match="--mixup alpha"):
            Mixup(bad, seed=0)


# ==== against the reference =======================================================================

@pytest.mark.parametrize("seed", range(12))
def test_a_reference_draw_is_our_draw_folded(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference's (index, lam) from its global RNGs. lam >= 1/2: our mix with that lam and
    permutation is the reference's batch, exactly. lam < 1/2: our mix with 1 - lam and the inverse
    permutation is the reference's batch re-indexed by j = index[i], with the same loss."""
    x, y = batch(seed)
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        torch.manual_seed(seed)
        ref_x, ref_a, ref_b, ref_lam = ref_mixup_data(x, y, 1.0, use_cuda=False)
        torch.manual_seed(seed)
        index = torch.randperm(len(x))
    finally:
        np.random.set_state(state)
    assert torch.equal(ref_b, y[index])
    folded = ref_lam < 0.5
    perm = torch.argsort(index) if folded else index
    mixer = Mixup(1.0, seed=0)
    mixer.draw = lambda: float(1 - ref_lam if folded else ref_lam)  # type: ignore[method-assign]
    monkeypatch.setattr(torch, "randperm", lambda n, generator=None, device=None: perm.clone())
    xm, yb, lam = mixer.mix(x, y, torch.Generator())
    assert lam >= 0.5
    fn = build_loss("ce", CIFAR10_LT, CPU)
    ref_loss = float(ref_mixup_criterion(nn.CrossEntropyLoss(), logits_of(ref_x), ref_a, ref_b,
                                         ref_lam))
    ours = float(mixed_loss(fn, logits_of(xm), y, yb, lam, 1))
    if not folded:
        assert torch.equal(xm, ref_x) and torch.equal(yb, ref_b)
        assert ours == pytest.approx(ref_loss, rel=rel(len(x) + 10), abs=0)
        return
    # re-indexed: our row index[i] is the reference's row i, primary label y[index[i]] = ref_b[i]
    tol = rel(2) * (x.abs() + x[index].abs())
    assert torch.all((xm[index] - ref_x).abs() <= tol)
    assert torch.equal(y[index], ref_b) and torch.equal(yb[index], ref_a)
    # the loss, a mean over samples, is the same up to the inputs' rounding: rows that differ by
    # at most tol give logits that differ by at most dz = max_c sum_d |W_dc| tol_d (plus the
    # matmul's own rounding, rel(fan-in) of sum_d |x_d W_dc|), a CE moves by at most 2 dz, and the
    # two means of N CEs round within rel(N + C) of the loss
    w = model_weight(x.shape[1]).abs()
    dz = float((tol @ w).max() + rel(x.shape[1]) * ((x.abs() + x[index].abs()) @ w).max())
    assert ours == pytest.approx(ref_loss, rel=0, abs=2 * 2 * dz + rel(len(x) + 10) * ref_loss)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("drw", [None, 2])
def test_mixed_loss_is_the_references_mixup_criterion(name: str, drw: int | None) -> None:
    """mixed_loss(criterion, ...) = the reference's mixup_criterion with our objective as its
    criterion at that epoch (the same computation: exactly equal), for every loss, and with
    smoothing; before and after DRW."""
    x, y = batch(4)
    xm, yb, lam = Mixup(1.0, seed=1).mix(x, y, torch.Generator().manual_seed(1))
    z = logits_of(xm)
    kws = [{}] if name == "focal" else [{}, {"smoothing": 0.1, "smoothing_tail": 0.0}]
    for kw in kws:
        fn = build_loss(name, CIFAR10_LT, CPU, drw, **kw)
        for epoch in (1, 3):
            want = ref_mixup_criterion(lambda p, t, fn=fn, e=epoch: fn(p, t, e), z, y, yb, lam)
            assert torch.equal(mixed_loss(fn, z, y, yb, lam, epoch), want), (kw, epoch)
            terms = mixed_terms(fn, z, y, yb, lam, epoch)
            assert terms.shape == (len(y),)
            assert float(want) == approx_sum(terms.tolist()), (kw, epoch)


def test_mixed_ce_is_the_reference_with_its_own_criterion() -> None:
    """With the reference's own criterion, nn.CrossEntropyLoss(): both compute the mean CE of the
    same float32 logits, to within the rounding of N-term means."""
    x, y = batch(5)
    xm, yb, lam = Mixup(0.4, seed=2).mix(x, y, torch.Generator().manual_seed(3))
    z = logits_of(xm)
    want = float(ref_mixup_criterion(nn.CrossEntropyLoss(), z, y, yb, lam))
    got = float(mixed_loss(build_loss("ce", CIFAR10_LT, CPU), z, y, yb, lam, 1))
    assert got == pytest.approx(want, rel=rel(len(y) + 10), abs=EPS["float32"])
    # and lam matters: swapping the two label sets changes the loss (unless lam is 1/2)
    swapped = float(mixed_loss(build_loss("ce", CIFAR10_LT, CPU), z, yb, y, lam, 1))
    assert abs(swapped - want) > 10 * rel(len(y) + 10) * want


def test_some_reference_draws_were_folded() -> None:
    """The seeds above include both cases (the reference's lam on either side of 1/2)."""
    lams = []
    state = np.random.get_state()
    try:
        for seed in range(12):
            np.random.seed(seed)
            lams.append(np.random.beta(1.0, 1.0))
    finally:
        np.random.set_state(state)
    assert min(lams) < 0.5 < max(lams)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mix_on_cuda_draws_the_permutation_on_the_device_without_syncing() -> None:
    dev = torch.device("cuda")
    x, y = batch(6)
    x, y = x.to(dev), y.to(dev)
    g = torch.Generator(device=dev).manual_seed(0)
    mixer = Mixup(1.0, seed=0)
    fn = build_loss("cb", CIFAR10_LT, dev)
    w = model_weight(x.shape[1]).to(dev)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        xm, yb, lam = mixer.mix(x, y, g)
        mixed_terms(fn, xm @ w, y, yb, lam, 1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert xm.device.type == "cuda" and yb.device.type == "cuda"
