"""Mitigation losses against values worked out by hand on tiny inputs, and against the reference
implementations on random batches.

The hand-worked tests use two classes; the expected numbers are written as the closed forms they
were worked out as (e.g. CE of logits (ln 3, 0) for class 0 is ln(4/3)), never computed by
trainer.losses. The reference tests (end of file) run a verbatim copy of kaidic/LDAM-DRW's focal
loss and DRW weights, and hand-written forms of the LDAM-DRW and Cui et al. class-balanced
reductions.
"""

from __future__ import annotations

import math

import pytest
import torch

from trainer.data import DataError
from trainer.losses import (
    build_loss,
    class_balanced_weights,
    inverse_frequency_weights,
    ldam_margins,
)

CPU = torch.device("cpu")
LN2 = math.log(2.0)


def loss(name: str, counts: list[int], logits: list[list[float]], y: list[int], epoch: int = 1,
         drw: int | None = None, **params: float) -> float:
    fn = build_loss(name, counts, CPU, drw, **params)
    return float(fn(torch.tensor(logits), torch.tensor(y), epoch))


def test_ce_is_plain_cross_entropy() -> None:
    # logits (ln 3, 0): p(class 0) = 3/4
    assert loss("ce", [5, 5], [[math.log(3), 0.0]], [0]) == pytest.approx(math.log(4 / 3))
    assert loss("ce", [5, 5], [[0.0, 0.0], [math.log(3), 0.0]], [1, 0]) == pytest.approx(
        (LN2 + math.log(4 / 3)) / 2)


def test_inverse_frequency_weights_by_hand() -> None:
    # counts 3, 1: 1/n = (1/3, 1), normalised to sum 2 -> (1/2, 3/2)
    assert inverse_frequency_weights([3, 1]) == pytest.approx([0.5, 1.5])


def test_weighted_ce_is_the_weighted_mean() -> None:
    # sample A: class 0, logits (1, 0): CE = ln(1 + e^-1); sample B: class 1, logits (0, 0): ln 2
    a, b = math.log(1 + math.exp(-1)), LN2
    want = (0.5 * a + 1.5 * b) / (0.5 + 1.5)
    assert loss("weighted-ce", [3, 1], [[1.0, 0.0], [0.0, 0.0]], [0, 1]) == pytest.approx(want)


def test_class_balanced_weights_by_hand() -> None:
    # beta 1/2: (1 - b)/(1 - b^n) = (1/2)/(7/8) = 4/7 for n = 3, (1/2)/(1/2) = 1 for n = 1;
    # normalised to sum 2: 8/11 and 14/11
    assert class_balanced_weights([3, 1], 0.5) == pytest.approx([8 / 11, 14 / 11])
    # beta 0 gives equal weights; beta -> 1 approaches inverse frequency
    assert class_balanced_weights([3, 1], 0.0) == pytest.approx([1.0, 1.0])
    assert class_balanced_weights([3, 1], 0.999999) == pytest.approx([0.5, 1.5], rel=1e-4)


def test_cb_loss_uses_the_effective_number_weights() -> None:
    a, b = math.log(1 + math.exp(-1)), LN2
    want = (8 / 11 * a + 14 / 11 * b) / 2
    got = loss("cb", [3, 1], [[1.0, 0.0], [0.0, 0.0]], [0, 1], beta=0.5)
    assert got == pytest.approx(want)


def test_focal_loss_by_hand() -> None:
    # p = 3/4: (1 - p)^gamma * CE = (1/4)^2 * ln(4/3) with gamma 2; gamma 0 is plain CE
    assert loss("focal", [5, 5], [[math.log(3), 0.0]], [0], gamma=2.0) == pytest.approx(
        math.log(4 / 3) / 16)
    assert loss("focal", [5, 5], [[math.log(3), 0.0]], [0], gamma=0.0) == pytest.approx(
        math.log(4 / 3))


def test_ldam_margins_by_hand() -> None:
    # n^(-1/4) for 16 and 1 is 1/2 and 1; the largest becomes 0.5
    assert ldam_margins([16, 1], 0.5) == pytest.approx([0.25, 0.5])
    assert ldam_margins([81, 16, 1], 1.0) == pytest.approx([1 / 3, 1 / 2, 1.0])


def test_ldam_subtracts_the_scaled_margin_from_the_true_logit_only() -> None:
    # logits are s*cos with s = 2; class 0 (n = 16) has margin 0.25: true logit 0.5 - 2*0.25 = 0
    # and the other logit stays 0 -> CE = ln 2
    assert loss("ldam", [16, 1], [[0.5, 0.0]], [0], scale=2.0) == pytest.approx(LN2)
    # class 1 (n = 1) has margin 0.5: logits (0, 1) -> (0, 1 - 2*0.5) = (0, 0) -> ln 2
    assert loss("ldam", [16, 1], [[0.0, 1.0]], [1], scale=2.0) == pytest.approx(LN2)
    # the default scale is 30
    assert loss("ldam", [16, 1], [[7.5, 0.0]], [0]) == pytest.approx(LN2)


def test_balanced_softmax_adds_log_counts() -> None:
    # counts (1, 3): logits (ln 3, 0) become (ln 3, ln 3) -> CE = ln 2
    assert loss("balanced-softmax", [1, 3], [[math.log(3), 0.0]], [0]) == pytest.approx(LN2)


def test_logit_adjusted_adds_tau_log_prior() -> None:
    # prior (1/4, 3/4), tau 2: logits (0, 0) become (2 ln 1/4, 2 ln 3/4): p0 = (1/16)/(10/16)
    assert loss("logit-adjusted", [1, 3], [[0.0, 0.0]], [0], tau=2.0) == pytest.approx(
        math.log(10))
    # tau 1 equals balanced softmax (log prior and log counts differ by a constant)
    assert loss("logit-adjusted", [1, 3], [[0.3, -0.2]], [1]) == pytest.approx(
        loss("balanced-softmax", [1, 3], [[0.3, -0.2]], [1]))


def test_deferred_reweighting_switches_weights_after_its_epoch() -> None:
    logits, y = [[1.0, 0.0], [0.0, 0.0]], [0, 1]
    a, b = math.log(1 + math.exp(-1)), LN2
    plain, weighted = (a + b) / 2, (8 / 11 * a + 14 / 11 * b) / 2
    for epoch, want in ((1, plain), (2, plain), (3, weighted), (10, weighted)):
        got = loss("ce", [3, 1], logits, y, epoch=epoch, drw=2, drw_beta=0.5)
        assert got == pytest.approx(want), epoch
    # LDAM-DRW: the margin stays, the weights arrive after the DRW epoch
    # (sample 0: (1.5, 0) - margin 2*0.25 -> (1, 0), CE a; sample 1: (0, 1) -> (0, 0), CE ln 2)
    ldam = [loss("ldam", [16, 1], [[1.5, 0.0], [0.0, 1.0]], [0, 1], epoch=e, drw=1,
                 drw_beta=0.5, scale=2.0) for e in (1, 2)]
    w0, w1 = (1 - 0.5) / (1 - 0.5 ** 16), 1.0
    assert ldam[0] == pytest.approx((a + LN2) / 2)
    assert ldam[1] == pytest.approx((w0 * a + w1 * LN2) / (w0 + w1))


def test_deferred_reweighting_after_zero_epochs_weighs_from_the_first() -> None:
    # --drw 0 is a valid setting (re-weighting from the start), not "no DRW"
    logits, y = [[1.0, 0.0], [0.0, 0.0]], [0, 1]
    a, b = math.log(1 + math.exp(-1)), LN2
    for epoch in (1, 2):
        got = loss("ce", [3, 1], logits, y, epoch=epoch, drw=0, drw_beta=0.5)
        assert got == pytest.approx((8 / 11 * a + 14 / 11 * b) / 2), epoch
    assert loss("ce", [3, 1], logits, y, epoch=1) == pytest.approx((a + b) / 2)  # no DRW


def test_losses_have_gradients_and_no_nan() -> None:
    for name in ("ce", "weighted-ce", "cb", "focal", "ldam", "balanced-softmax",
                 "logit-adjusted"):
        z = torch.randn(8, 3, requires_grad=True)
        value = build_loss(name, [50, 5, 1], CPU, drw=0)(z, torch.tensor([0, 1, 2] * 2 + [0, 0]), 1)
        value.backward()
        assert torch.isfinite(value) and z.grad is not None and torch.isfinite(z.grad).all()


def test_bad_names_are_refused() -> None:
    with pytest.raises(DataError, match="unknown loss 'ldma'"):
        build_loss("ldma", [3, 1], CPU)
    with pytest.raises(DataError, match="unknown loss parameter 'gama'"):
        build_loss("focal", [3, 1], CPU, gama=2.0)
    with pytest.raises(DataError, match="beta must lie in"):
        build_loss("cb", [3, 1], CPU, beta=1.0)


# ==== against the reference implementations ======================================================
#
# Random logits (64 samples x 10 classes, several seeds) on the CIFAR-10-LT counts. Tolerances: the
# float32 comparisons below feed the same float32 logits and float32 weights to both sides, which
# then differ only in rounding order; a mean of 64 float32 terms summed pairwise carries at most
# about log2(64) * 2^-24 = 4e-7 relative error, so rel=1e-6 is generous, and still five orders of
# magnitude tighter than the old focal+DRW formula's error (1 % to 26 % on these logits). Against
# a float64 hand-written formula the float32 CE terms (|logits| up to ~10) carry ~1e-6 relative
# error each, so rel=1e-5 there.

CIFAR10_LT = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
SEEDS = (0, 1, 2, 3)


def random_batch(seed: int, n: int = 64, c: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * 3.0, torch.randint(0, c, (n,), generator=g)


# -- kaidic/LDAM-DRW, losses.py (commit 2536330f2afdaa65618323cb5a5850efccce762a), verbatim --------
def ref_focal_loss(input_values, gamma):
    """Computes the focal loss"""
    p = torch.exp(-input_values)
    loss = (1 - p) ** gamma * input_values
    return loss.mean()


class RefFocalLoss(torch.nn.Module):
    def __init__(self, weight=None, gamma=0.):
        super(RefFocalLoss, self).__init__()
        assert gamma >= 0
        self.gamma = gamma
        self.weight = weight

    def forward(self, input, target):
        return ref_focal_loss(torch.nn.functional.cross_entropy(
            input, target, reduction='none', weight=self.weight), self.gamma)


def ref_drw_weights(epoch: int, cls_num_list: list[int]) -> torch.Tensor:
    """kaidic/LDAM-DRW cifar_train.py, train_rule == 'DRW' (epoch counted from 0; .cuda dropped)."""
    import numpy as np

    idx = epoch // 160
    betas = [0, 0.9999]
    effective_num = 1.0 - np.power(betas[idx], cls_num_list)
    per_cls_weights = (1.0 - betas[idx]) / np.array(effective_num)
    per_cls_weights = per_cls_weights / np.sum(per_cls_weights) * len(cls_num_list)
    return torch.FloatTensor(per_cls_weights)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
def test_focal_follows_the_ldam_drw_reference_without_weights(seed: int, gamma: float) -> None:
    z, y = random_batch(seed)
    want = float(RefFocalLoss(gamma=gamma)(z, y))
    got = float(build_loss("focal", CIFAR10_LT, CPU, gamma=gamma)(z, y, 1))
    assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("reduction", ["weighted-mean", "mean"])
def test_focal_drw_follows_the_ldam_drw_reference(seed: int, reduction: str) -> None:
    """`--loss focal --drw 160` (the reference's gamma 1) at every phase of the reference's
    schedule: its epoch e (from 0) is our epoch e + 1. The weight sits inside the focal factor and
    the batch reduction is the plain mean, whatever --cb-reduction says."""
    z, y = random_batch(seed)
    fn = build_loss("focal", CIFAR10_LT, CPU, drw=160, reduction=reduction, gamma=1.0)
    for ref_epoch in (0, 159, 160, 199):
        want = float(RefFocalLoss(weight=ref_drw_weights(ref_epoch, CIFAR10_LT), gamma=1)(z, y))
        assert float(fn(z, y, ref_epoch + 1)) == pytest.approx(want, rel=1e-6), ref_epoch


def test_the_old_focal_drw_formula_is_not_the_reference() -> None:
    """The weight outside the focal factor and a division by sum w (what trainer.losses did before)
    is a different number: the tests above can tell the two apart."""
    for seed in SEEDS:
        z, y = random_batch(seed)
        w = ref_drw_weights(160, CIFAR10_LT)
        ce = torch.nn.functional.cross_entropy(z, y, reduction="none")
        old = float((w[y] * (1 - torch.exp(-ce)) * ce).sum() / w[y].sum())
        want = float(RefFocalLoss(weight=w, gamma=1)(z, y))
        assert abs(old / want - 1) > 1e-2


def ce_terms_float64(z: torch.Tensor, y: torch.Tensor) -> list[float]:
    """-log softmax(z_i)[y_i] by hand, in float64."""
    out = []
    for row, label in zip(z.double().tolist(), y.tolist()):
        m = max(row)
        out.append(m + math.log(sum(math.exp(v - m) for v in row)) - row[label])
    return out


def effective_number_weights(counts: list[int], beta: float) -> list[float]:
    """(1 - beta) / (1 - beta^n_c), normalised to sum C: both references' formula, by hand."""
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]
    return [v * len(counts) / sum(raw) for v in raw]


@pytest.mark.parametrize("seed", SEEDS)
def test_cb_weighted_mean_is_the_ldam_drw_reweight_loss(seed: int) -> None:
    """--cb-reduction weighted-mean (the default): kaidic/LDAM-DRW cifar_train.py, train_rule
    'Reweight' (beta 0.9999), `nn.CrossEntropyLoss(weight=per_cls_weights)`: PyTorch's mean
    reduction with weights is sum_i w_{y_i} l_i / sum_i w_{y_i}."""
    z, y = random_batch(seed)
    w = effective_number_weights(CIFAR10_LT, 0.9999)
    wi = [w[label] for label in y.tolist()]
    want = sum(a * b for a, b in zip(wi, ce_terms_float64(z, y))) / sum(wi)
    got = float(build_loss("cb", CIFAR10_LT, CPU, beta=0.9999)(z, y, 1))
    assert got == pytest.approx(want, rel=1e-5)
    assert float(build_loss("cb", CIFAR10_LT, CPU, reduction="weighted-mean")(z, y, 1)) == got
    # and the reference's own call on the same float32 weights
    ref = torch.nn.CrossEntropyLoss(weight=torch.FloatTensor(class_balanced_weights(CIFAR10_LT,
                                                                                    0.9999)))
    assert got == pytest.approx(float(ref(z, y)), rel=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_cb_mean_is_cui_et_al_softmax_loss(seed: int) -> None:
    """--cb-reduction mean: richardaecn/class-balanced-loss src/cifar_main.py (loss_type 'softmax'):
    `tf.losses.softmax_cross_entropy(one_hot_labels, logits, weights=w_{y_i})`, whose default
    reduction SUM_BY_NONZERO_WEIGHTS is sum_i w_i l_i / #{i : w_i != 0}, then reduce_mean of that
    scalar. Every class-balanced weight is positive, so the divisor is N."""
    z, y = random_batch(seed)
    w = effective_number_weights(CIFAR10_LT, 0.9999)
    wi = [w[label] for label in y.tolist()]
    want = sum(a * b for a, b in zip(wi, ce_terms_float64(z, y))) / sum(v != 0 for v in wi)
    got = float(build_loss("cb", CIFAR10_LT, CPU, reduction="mean", beta=0.9999)(z, y, 1))
    assert got == pytest.approx(want, rel=1e-5)
    # the two reductions differ by the batch's mean weight, sum_i w_i / N (not 1 here)
    ratio = got / float(build_loss("cb", CIFAR10_LT, CPU)(z, y, 1))
    assert ratio == pytest.approx(sum(wi) / len(wi), rel=1e-6) and abs(ratio - 1) > 1e-3


def test_cb_reduction_by_hand() -> None:
    # the two-sample example above: CE a (class 0, weight 8/11) and ln 2 (class 1, weight 14/11)
    a, b = math.log(1 + math.exp(-1)), LN2
    logits, y = [[1.0, 0.0], [0.0, 0.0]], [0, 1]
    # weights sum to C = 2 = N here, so use three samples to tell / sum w from / N apart
    logits3, y3 = logits + [[1.0, 0.0]], y + [0]
    w0, w1 = 8 / 11, 14 / 11
    assert loss("cb", [3, 1], logits3, y3, beta=0.5) == pytest.approx(
        (2 * w0 * a + w1 * b) / (2 * w0 + w1))
    assert loss("cb", [3, 1], logits3, y3, beta=0.5, reduction="mean") == pytest.approx(
        (2 * w0 * a + w1 * b) / 3)


def test_cb_reduction_applies_to_every_class_weighted_loss_and_the_drw_phase() -> None:
    logits, y = [[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]], [0, 1, 0]
    a, b = math.log(1 + math.exp(-1)), LN2
    # weighted-ce: counts 3, 1 -> weights 1/2, 3/2
    assert loss("weighted-ce", [3, 1], logits, y, reduction="mean") == pytest.approx(
        (2 * 0.5 * a + 1.5 * b) / 3)
    # the DRW phase of ce: unweighted before, class-balanced (beta 1/2: 8/11, 14/11) after, / N
    for epoch, want in ((2, (2 * a + b) / 3), (3, (2 * 8 / 11 * a + 14 / 11 * b) / 3)):
        got = loss("ce", [3, 1], logits, y, epoch=epoch, drw=2, drw_beta=0.5, reduction="mean")
        assert got == pytest.approx(want), epoch


def test_cb_reduction_names_match_the_cli() -> None:
    from imbtui.cli_options import choice_enum
    from trainer.loop import TrainConfig
    from trainer.losses import CB_REDUCTIONS
    from trainer.options import OPTION

    assert tuple(m.value for m in choice_enum(OPTION["cb_reduction"])) == CB_REDUCTIONS
    assert TrainConfig().cb_reduction == CB_REDUCTIONS[0] == "weighted-mean"


def test_bad_reduction_and_gamma_are_refused() -> None:
    with pytest.raises(DataError, match="unknown --cb-reduction 'sum'"):
        build_loss("cb", [3, 1], CPU, reduction="sum")
    with pytest.raises(DataError, match="gamma must be >= 0"):
        build_loss("focal", [3, 1], CPU, gamma=-1.0)
