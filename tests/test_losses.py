"""Mitigation losses against values worked out by hand on tiny inputs.

Two classes throughout; the expected numbers are written as the closed forms they were worked out as
(e.g. CE of logits (ln 3, 0) for class 0 is ln(4/3)), never computed by trainer.losses.
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
