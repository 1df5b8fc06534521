"""Label smoothing (plain and label-aware) in trainer.losses.Objective, and Objective.terms.

Plain smoothing is checked against PyTorch's `cross_entropy(label_smoothing=)` and a hand-written
float64 formula; label-aware smoothing against a transcription of MiSLAS's `LabelAwareSmoothing`
(below, with the reference's lines quoted), on random logits, several class counts, with class
weights, DRW and both reductions. `terms` must sum to the loss for every loss, and smoothing 0 must
leave every loss bit-identical to the unsmoothed code path (a copy of it below).

Tolerances (tests/tolerance.py): a batch loss is a (weighted) mean of N per-sample losses
l_i = lse_i - (1 - e) z_y - e mean_c z_c, each made of C-term sums whose magnitudes are at most
3 max|z| + log C; float32 computes each to within about (C + k) ulps of that and the weighted mean
adds about 2N more (numerator and weight sum); `mean` scales by up to the largest weight. Hence
`loss_tol` = rel(2N + C) * (3 max|z| + log C) * max(1, max w), an absolute bound that holds in any
summation order. A wrong epsilon (swapped head and tail, PyTorch's per-class weighting of the
smoothing part) moves the loss by orders of magnitude more: the `*_is_not_*` tests check that.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.tolerance import approx64, approx_sum, rel
from trainer.data import DataError
from trainer.losses import Objective, build_loss, smoothing_epsilons, weighted_mean
from trainer.options import LOSSES

CPU = torch.device("cpu")
CIFAR10_LT = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
CIFAR100_LT = [round(500 * 0.01 ** (i / 99)) for i in range(100)]
STEP = [400] * 5 + [4] * 5
UNSORTED = [30, 300, 3, 90]
COUNTS = {"cifar10-lt": CIFAR10_LT, "cifar100-lt": CIFAR100_LT, "step": STEP, "unsorted": UNSORTED}
SMOOTHED = tuple(n for n in LOSSES if n != "focal")  # focal refuses smoothing
SEEDS = (0, 1, 2)


def random_batch(seed: int, c: int, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * 3.0, torch.randint(0, c, (n,), generator=g)


def loss_tol(z: torch.Tensor, weights: list[float] | None = None,
             reduction: str = "weighted-mean") -> float:
    """Absolute tolerance of a float32 (weighted) mean of smoothed CEs of logits z (docstring): a
    weighted mean (sum w l / sum w) is an average of the l_i, `mean` (sum w l / N) scales them by up
    to the largest weight."""
    n, c = z.shape
    wmax = max([1.0] + list(weights or [])) if reduction == "mean" else 1.0
    return rel(2 * n + c) * (3 * float(z.abs().max()) + math.log(c)) * wmax


# ==== separately written forms of the per-class constants and adjusted logits ====================

def inverse_frequency(counts: list[int]) -> list[float]:
    raw = [1 / n for n in counts]
    return [v * len(counts) / sum(raw) for v in raw]


def effective_number(counts: list[int], beta: float) -> list[float]:
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]
    return [v * len(counts) / sum(raw) for v in raw]


def class_weights(name: str, counts: list[int], drw_on: bool) -> list[float] | None:
    """The weights the loss `name` takes: DRW's class-balanced ones (beta 0.9999) when on."""
    if drw_on:
        return effective_number(counts, 0.9999)
    return {"weighted-ce": inverse_frequency(counts),
            "cb": effective_number(counts, 0.9999)}.get(name)


def adjusted_logits(name: str, counts: list[int], z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The logits the cross-entropy sees, by hand: LDAM's s*m_y off the true class (s 30, largest
    margin 0.5, m_c proportional to n_c^-1/4), balanced softmax's + log n_c, logit adjustment's
    + log(n_c / N) (tau 1)."""
    n = np.asarray(counts, dtype=np.float64)
    if name == "balanced-softmax":
        return z + torch.tensor(np.log(n), dtype=torch.float32)
    if name == "logit-adjusted":
        return z + torch.tensor(np.log(n / n.sum()), dtype=torch.float32)
    if name == "ldam":
        m = n ** -0.25
        m = torch.tensor(m * 0.5 / m.max(), dtype=torch.float32)
        out = z.clone()
        rows = torch.arange(len(y))
        out[rows, y] -= 30.0 * m[y]
        return out
    return z


def smoothed_ce_float64(z: torch.Tensor, y: torch.Tensor, eps: list[float]) -> list[float]:
    """(1 - e_y) * (-log p_y) + e_y * mean_c(-log p_c) per sample, by hand, in float64."""
    out = []
    for row, label in zip(z.double().tolist(), y.tolist()):
        m = max(row)
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        nlp = [lse - v for v in row]
        e = eps[label]
        out.append((1 - e) * nlp[label] + e * sum(nlp) / len(row))
    return out


def reduce(per_sample: list[float], y: torch.Tensor, weights: list[float] | None,
           reduction: str) -> float:
    """The batch loss by hand: plain mean, sum w l / sum w, or sum w l / N."""
    if weights is None:
        return sum(per_sample) / len(per_sample)
    w = [weights[label] for label in y.tolist()]
    num = sum(a * b for a, b in zip(w, per_sample))
    return num / (sum(w) if reduction == "weighted-mean" else len(per_sample))


# ==== dvlab-research/MiSLAS, methods.py (commit 0fc381e), class LabelAwareSmoothing ==============
# Transcribed verbatim but for the `.cuda()` lines (dropped: these tests run on the CPU). The lines
# this file checks against are the 'linear' shape and `forward`:
#
#     n_1 = max(cls_num_list)
#     n_K = min(cls_num_list)
#     ...
#     elif shape == 'linear':
#         self.smooth = smooth_tail + (smooth_head - smooth_tail) * (np.array(cls_num_list) - n_K) / (n_1 - n_K)
#     ...
#     def forward(self, x, target):
#         smoothing = self.smooth[target]
#         confidence = 1. - smoothing
#         logprobs = F.log_softmax(x, dim=-1)
#         nll_loss = -logprobs.gather(dim=-1, index=target.unsqueeze(1))
#         nll_loss = nll_loss.squeeze(1)
#         smooth_loss = -logprobs.mean(dim=-1)
#         loss = confidence * nll_loss + smoothing * smooth_loss
#         return loss.mean()
class RefLabelAwareSmoothing(nn.Module):
    def __init__(self, cls_num_list, smooth_head, smooth_tail, shape='concave', power=None):
        super(RefLabelAwareSmoothing, self).__init__()  # noqa: UP008  (verbatim)

        n_1 = max(cls_num_list)
        n_K = min(cls_num_list)

        if shape == 'concave':
            self.smooth = smooth_tail + (smooth_head - smooth_tail) * np.sin((np.array(cls_num_list) - n_K) * np.pi / (2 * (n_1 - n_K)))

        elif shape == 'linear':
            self.smooth = smooth_tail + (smooth_head - smooth_tail) * (np.array(cls_num_list) - n_K) / (n_1 - n_K)

        elif shape == 'convex':
            self.smooth = smooth_head + (smooth_head - smooth_tail) * np.sin(1.5 * np.pi + (np.array(cls_num_list) - n_K) * np.pi / (2 * (n_1 - n_K)))

        elif shape == 'exp' and power is not None:
            self.smooth = smooth_tail + (smooth_head - smooth_tail) * np.power((np.array(cls_num_list) - n_K) / (n_1 - n_K), power)

        self.smooth = torch.from_numpy(self.smooth)
        self.smooth = self.smooth.float()

    def forward(self, x, target):
        smoothing = self.smooth[target]
        confidence = 1. - smoothing
        logprobs = F.log_softmax(x, dim=-1)
        nll_loss = -logprobs.gather(dim=-1, index=target.unsqueeze(1))
        nll_loss = nll_loss.squeeze(1)
        smooth_loss = -logprobs.mean(dim=-1)
        loss = confidence * nll_loss + smoothing * smooth_loss

        return loss.mean()
# --------------------------------------------------------------------------------------------------


def ref_per_sample(ref: RefLabelAwareSmoothing, z: torch.Tensor, y: torch.Tensor) -> list[float]:
    """The reference's loss of each sample alone (its mean over a batch of one)."""
    return [float(ref(z[i:i + 1], y[i:i + 1])) for i in range(len(y))]


# ==== the epsilons ================================================================================

def test_label_aware_epsilons_by_hand() -> None:
    # counts 10, 4, 1; head 0.3, tail 0: e = 0.3 * (n - 1) / (10 - 1) = 0.3, 0.1, 0
    assert smoothing_epsilons([10, 4, 1], 0.3, 0.0).tolist() == approx64([0.3, 0.1, 0.0])
    # order does not matter, only the counts; a tail above the head is allowed (as the reference):
    # 0.4 + (0.1 - 0.4) * (n - 1) / 9 = 0.1, 0.3, 0.4
    assert smoothing_epsilons([4, 1, 10], 0.3, 0.0).tolist() == approx64([0.1, 0.0, 0.3])
    assert smoothing_epsilons([10, 4, 1], 0.1, 0.4).tolist() == approx64([0.1, 0.3, 0.4])
    # plain smoothing: the same epsilon for every class
    assert smoothing_epsilons([10, 4, 1], 0.2).tolist() == [0.2, 0.2, 0.2]
    # every class equally large: each is the largest (the reference would divide 0 by 0)
    assert smoothing_epsilons([5, 5, 5], 0.3, 0.1).tolist() == [0.3, 0.3, 0.3]
    # and the objective holds them, on the device, per class
    fn = build_loss("ce", [10, 4, 1], CPU, smoothing=0.3, smoothing_tail=0.0)
    assert fn.eps.tolist() == pytest.approx([0.3, 0.1, 0.0], rel=rel(1), abs=0)


@pytest.mark.parametrize("counts", COUNTS.values(), ids=COUNTS.keys())
def test_label_aware_epsilons_are_the_references(counts: list[int]) -> None:
    ref = RefLabelAwareSmoothing(counts, 0.4, 0.1, shape="linear")
    ours = build_loss("ce", counts, CPU, smoothing=0.4, smoothing_tail=0.1).eps
    assert torch.equal(ours, ref.smooth)  # both float32 of the same float64 formula


def test_smoothed_loss_by_hand() -> None:
    # three classes, logits (ln 4, 0, 0): p = (2/3, 1/6, 1/6); -log p = (ln 1.5, ln 6, ln 6)
    z = [[math.log(4.0), 0.0, 0.0]]
    nll = {0: math.log(1.5), 1: math.log(6.0), 2: math.log(6.0)}
    mean_nlp = (math.log(1.5) + 2 * math.log(6.0)) / 3
    for label, e in ((0, 0.3), (1, 0.1), (2, 0.0)):  # counts 10, 4, 1 with head 0.3, tail 0
        want = (1 - e) * nll[label] + e * mean_nlp
        got = float(build_loss("ce", [10, 4, 1], CPU, smoothing=0.3, smoothing_tail=0.0)(
            torch.tensor(z), torch.tensor([label]), 1))
        assert got == pytest.approx(want, abs=loss_tol(torch.tensor(z))), label
    # uniform logits: every -log p_c is ln 3, so any smoothing gives ln 3
    got = float(build_loss("ce", [10, 4, 1], CPU, smoothing=0.5)(torch.zeros(2, 3),
                                                                  torch.tensor([0, 2]), 1))
    assert got == pytest.approx(math.log(3.0), abs=loss_tol(torch.zeros(2, 3)))


# ==== plain smoothing against PyTorch and the formula ==============================================

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("counts", COUNTS.values(), ids=COUNTS.keys())
@pytest.mark.parametrize("eps", [0.05, 0.1, 0.3])
def test_plain_smoothing_is_pytorchs_label_smoothing(seed: int, counts: list[int],
                                                     eps: float) -> None:
    z, y = random_batch(seed, len(counts))
    want = F.cross_entropy(z, y, label_smoothing=eps)
    got = build_loss("ce", counts, CPU, smoothing=eps)(z, y, 1)
    assert float(got) == pytest.approx(float(want), abs=loss_tol(z))
    # the margin / shift losses: PyTorch's label smoothing of their adjusted logits
    for name in ("ldam", "balanced-softmax", "logit-adjusted"):
        a = adjusted_logits(name, counts, z, y)
        want = F.cross_entropy(a, y, label_smoothing=eps)
        got = build_loss(name, counts, CPU, smoothing=eps)(z, y, 1)
        assert float(got) == pytest.approx(float(want), abs=loss_tol(a)), name


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", SMOOTHED)
@pytest.mark.parametrize("reduction", ["weighted-mean", "mean"])
@pytest.mark.parametrize("drw_on", [False, True])
def test_plain_smoothing_follows_the_formula(seed: int, name: str, reduction: str,
                                             drw_on: bool) -> None:
    """Every smoothed loss, weighted by w_{y_i} on the whole smoothed sample loss, reduced as
    `reduction` says; DRW (--drw 0 at epoch 1) replaces the weights."""
    counts = CIFAR10_LT
    z, y = random_batch(seed, len(counts))
    a = adjusted_logits(name, counts, z, y)
    weights = class_weights(name, counts, drw_on)
    want = reduce(smoothed_ce_float64(a, y, [0.2] * len(counts)), y, weights, reduction)
    fn = build_loss(name, counts, CPU, drw=0 if drw_on else None, reduction=reduction,
                    smoothing=0.2)
    assert float(fn(z, y, 1)) == pytest.approx(want, abs=loss_tol(a, weights, reduction))


def test_weighted_smoothing_is_not_pytorchs_weighted_label_smoothing() -> None:
    """PyTorch's cross_entropy(weight=w, label_smoothing=e) weighs the smoothing part's class c by
    w_c; here the whole sample's loss takes its own class's weight w_{y_i} (as CE's does). Without
    weights the two agree (above); with them they differ by far more than the tolerance."""
    z, y = random_batch(0, 10)
    w = torch.tensor(inverse_frequency(CIFAR10_LT), dtype=torch.float32)
    ours = float(build_loss("weighted-ce", CIFAR10_LT, CPU, smoothing=0.2)(z, y, 1))
    pytorch = float(F.cross_entropy(z, y, weight=w, label_smoothing=0.2))
    assert abs(ours - pytorch) > 10 * loss_tol(z)


# ==== label-aware smoothing against MiSLAS ========================================================

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("counts", COUNTS.values(), ids=COUNTS.keys())
@pytest.mark.parametrize("head,tail", [(0.4, 0.1), (0.3, 0.0), (0.1, 0.2)])
def test_label_aware_is_mislas(seed: int, counts: list[int], head: float, tail: float) -> None:
    z, y = random_batch(seed, len(counts))
    ref = RefLabelAwareSmoothing(counts, head, tail, shape="linear")
    got = build_loss("ce", counts, CPU, smoothing=head, smoothing_tail=tail)(z, y, 1)
    assert float(got) == pytest.approx(float(ref(z, y)), abs=loss_tol(z))
    # and the float64 formula with the epsilons computed by hand
    n1, nk = max(counts), min(counts)
    eps = [tail + (head - tail) * (n - nk) / (n1 - nk) for n in counts]
    want = reduce(smoothed_ce_float64(z, y, eps), y, None, "weighted-mean")
    assert float(got) == pytest.approx(want, abs=loss_tol(z))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", SMOOTHED)
@pytest.mark.parametrize("reduction", ["weighted-mean", "mean"])
@pytest.mark.parametrize("drw_on", [False, True])
def test_label_aware_is_mislas_with_every_loss_weights_and_drw(seed: int, name: str,
                                                                reduction: str,
                                                                drw_on: bool) -> None:
    """MiSLAS's per-sample loss of the loss's adjusted logits, weighted and reduced by hand."""
    counts = CIFAR10_LT
    z, y = random_batch(seed, len(counts))
    a = adjusted_logits(name, counts, z, y)
    ref = RefLabelAwareSmoothing(counts, 0.4, 0.1, shape="linear")
    weights = class_weights(name, counts, drw_on)
    want = reduce(ref_per_sample(ref, a, y), y, weights, reduction)
    fn = build_loss(name, counts, CPU, drw=0 if drw_on else None, reduction=reduction,
                    smoothing=0.4, smoothing_tail=0.1)
    assert float(fn(z, y, 1)) == pytest.approx(want, abs=loss_tol(a, weights, reduction))


def test_drw_switches_the_weights_of_a_smoothed_loss_after_its_epoch() -> None:
    counts = CIFAR10_LT
    z, y = random_batch(0, 10)
    ref = RefLabelAwareSmoothing(counts, 0.4, 0.1, shape="linear")
    per = ref_per_sample(ref, z, y)
    fn = build_loss("ce", counts, CPU, drw=3, smoothing=0.4, smoothing_tail=0.1)
    w = effective_number(counts, 0.9999)
    for epoch, weights in ((1, None), (3, None), (4, w), (9, w)):
        want = reduce(per, y, weights, "weighted-mean")
        assert float(fn(z, y, epoch)) == pytest.approx(want, abs=loss_tol(z, w)), epoch


def test_swapped_head_and_tail_is_not_mislas() -> None:
    """The tests above can tell the head's epsilon from the tail's."""
    z, y = random_batch(0, 10)
    ref = float(RefLabelAwareSmoothing(CIFAR10_LT, 0.4, 0.1, shape="linear")(z, y))
    swapped = float(build_loss("ce", CIFAR10_LT, CPU, smoothing=0.1, smoothing_tail=0.4)(z, y, 1))
    assert abs(swapped - ref) > 10 * loss_tol(z)


# ==== smoothing off: the unsmoothed code path, bit for bit ========================================

def old_objective(fn: Objective, logits: torch.Tensor, y: torch.Tensor,
                  epoch: int) -> torch.Tensor:
    """Objective.__call__ as it was before smoothing (trainer/losses.py before this change),
    copied, on the objective's own per-class tensors."""
    from trainer.losses import focal_loss

    logits = logits.float()
    weight = fn.weight_at(epoch)
    if fn.name == "ce" and weight is None:
        return F.cross_entropy(logits, y)
    if fn.shift is not None:
        logits = logits + fn.shift
    if fn.margin is not None:
        true = y[:, None] == torch.arange(logits.shape[1], device=y.device)
        logits = logits - true * (fn.scale * fn.margin[y])[:, None]
    if fn.name == "focal":
        return focal_loss(logits, y, fn.gamma, weight)
    ce = F.cross_entropy(logits, y, reduction="none")
    return weighted_mean(ce, y, weight, fn.reduction)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("reduction", ["weighted-mean", "mean"])
@pytest.mark.parametrize("drw", [None, 0, 2])
def test_smoothing_zero_is_the_unsmoothed_loss_exactly(name: str, reduction: str,
                                                       drw: int | None) -> None:
    for seed in SEEDS:
        z, y = random_batch(seed, 10)
        plain = build_loss(name, CIFAR10_LT, CPU, drw, reduction)
        zero = build_loss(name, CIFAR10_LT, CPU, drw, reduction, smoothing=0.0,
                          smoothing_tail=None)
        assert plain.eps is None and zero.eps is None
        for epoch in (1, 3):
            old = old_objective(plain, z, y, epoch)
            assert torch.equal(plain(z, y, epoch), old), (seed, epoch)
            assert torch.equal(zero(z, y, epoch), old), (seed, epoch)


@pytest.mark.parametrize("name", SMOOTHED)
def test_smoothing_changes_the_loss(name: str) -> None:
    z, y = random_batch(0, 10)
    plain = float(build_loss(name, CIFAR10_LT, CPU)(z, y, 1))
    smoothed = float(build_loss(name, CIFAR10_LT, CPU, smoothing=0.1)(z, y, 1))
    assert abs(smoothed - plain) > 10 * loss_tol(adjusted_logits(name, CIFAR10_LT, z, y))


# ==== terms =======================================================================================

SMOOTHINGS = {"off": {}, "plain": {"smoothing": 0.2},
              "label-aware": {"smoothing": 0.4, "smoothing_tail": 0.1}}


@pytest.mark.parametrize("name,smoothing", [(n, s) for n in LOSSES for s in SMOOTHINGS
                                             if n in SMOOTHED or s == "off"])  # focal: no smoothing
@pytest.mark.parametrize("reduction", ["weighted-mean", "mean"])
@pytest.mark.parametrize("drw", [None, 0, 2])
def test_terms_sum_to_the_loss(name: str, smoothing: str, reduction: str,
                               drw: int | None) -> None:
    """terms(...).sum() is __call__ for every loss, before and after DRW, both reductions: the
    float32 loss against the exact sum of the float32 terms, to the tolerance of summing them."""
    fn = build_loss(name, CIFAR10_LT, CPU, drw, reduction, **SMOOTHINGS[smoothing])
    for seed in SEEDS:
        z, y = random_batch(seed, 10)
        for epoch in (1, 3):
            terms = fn.terms(z, y, epoch)
            assert terms.shape == (len(y),) and terms.dtype == torch.float32
            assert float(fn(z, y, epoch)) == approx_sum(terms.tolist()), (seed, epoch)


def test_terms_are_each_samples_share() -> None:
    """Each term by hand: w_i l_i / sum w (weighted-mean), w_i l_i / N (mean), l_i / N."""
    counts = CIFAR10_LT
    z, y = random_batch(1, 10)
    per = smoothed_ce_float64(z, y, [0.2] * 10)
    w = [inverse_frequency(counts)[label] for label in y.tolist()]
    for reduction, divisor in (("weighted-mean", sum(w)), ("mean", len(y))):
        terms = build_loss("weighted-ce", counts, CPU, reduction=reduction,
                           smoothing=0.2).terms(z, y, 1).tolist()
        want = [wi * li / divisor for wi, li in zip(w, per)]
        for got, exp in zip(terms, want):
            assert got == pytest.approx(exp, abs=loss_tol(z, w, reduction))
    terms = build_loss("ce", counts, CPU).terms(z, y, 1).tolist()
    for got, li in zip(terms, smoothed_ce_float64(z, y, [0.0] * 10)):
        assert got == pytest.approx(li / len(y), abs=loss_tol(z))


def test_terms_have_the_losss_gradient() -> None:
    """The SAM / ImbSAM step backpropagates a sum of terms: its gradient is the loss's."""
    z, y = random_batch(2, 10)
    for name in LOSSES:
        fn = build_loss(name, CIFAR10_LT, CPU, drw=0)
        a = z.clone().requires_grad_(True)
        fn(a, y, 1).backward()
        b = z.clone().requires_grad_(True)
        fn.terms(b, y, 1).sum().backward()
        # each entry is a few-ulp function of one sample's C logits, scaled by w_i / sum_j w_j
        # (whose sum adds N ulps); measured against the largest entry
        tol = rel(len(y) + 10) * 4 * float(a.grad.abs().max())
        assert torch.allclose(a.grad, b.grad, rtol=0, atol=tol), name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="host syncs are a CUDA matter")
def test_terms_do_not_sync_the_host_on_cuda() -> None:
    dev = torch.device("cuda")
    z, y = random_batch(0, 10)
    z, y = z.to(dev), y.to(dev)
    for name in LOSSES:
        for kw in ({}, {"smoothing": 0.2}, {"smoothing": 0.4, "smoothing_tail": 0.1}):
            if name == "focal" and kw:
                continue
            for reduction in ("weighted-mean", "mean"):
                fn = build_loss(name, CIFAR10_LT, dev, drw=0, reduction=reduction, **kw)
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("error")
                try:
                    fn.terms(z, y, 1)
                    fn(z, y, 1)
                finally:
                    torch.cuda.set_sync_debug_mode("default")


# ==== refusals ====================================================================================

def test_focal_refuses_smoothing() -> None:
    for kw in ({"smoothing": 0.1}, {"smoothing_tail": 0.1}, {"smoothing": 0.0,
                                                             "smoothing_tail": 0.0}):
        with pytest.raises(DataError, match="focal has none"):
            build_loss("focal", [3, 1], CPU, **kw)
    build_loss("focal", [3, 1], CPU, smoothing=0.0)  # smoothing 0, no tail: off, accepted


def test_bad_epsilons_are_refused() -> None:
    for kw, flag in (({"smoothing": 1.0}, "smoothing"), ({"smoothing": -0.1}, "smoothing"),
                     ({"smoothing": 0.1, "smoothing_tail": 1.5}, "smoothing_tail")):
        with pytest.raises(DataError, match=f"{flag} must lie in"):
            build_loss("ce", [3, 1], CPU, **kw)
