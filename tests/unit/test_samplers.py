"""Samplers: class probabilities by hand, and the frequencies the device-side draw really gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.data import DataError
from trainer.loop import TrainConfig, train
from trainer.samplers import Sampler, class_probabilities
from trainer.sink import MemorySink

from tests.tolerance import approx64

COUNTS = [9, 4, 1]
Y = torch.tensor([0] * 9 + [1] * 4 + [2] * 1)


def test_class_probabilities_by_hand() -> None:
    assert class_probabilities(COUNTS, "none") == approx64([9 / 14, 4 / 14, 1 / 14])
    assert class_probabilities(COUNTS, "class-balanced") == approx64([1 / 3] * 3)
    # sqrt: 3, 2, 1 out of 6
    assert class_probabilities(COUNTS, "square-root") == approx64([3 / 6, 2 / 6, 1 / 6])
    with pytest.raises(DataError, match="unknown sampler 'balanced'"):
        class_probabilities(COUNTS, "balanced")


def draws(name: str, epochs: int, seed: int = 0) -> torch.Tensor:
    sampler = Sampler(name, Y, COUNTS, torch.Generator().manual_seed(seed))
    out = [sampler.epoch() for _ in range(epochs)]
    assert all(len(e) == len(Y) for e in out)  # an epoch has as many draws as samples
    return torch.cat(out)


def test_none_is_a_permutation_every_epoch() -> None:
    sampler = Sampler("none", Y, COUNTS, torch.Generator().manual_seed(0))
    for _ in range(3):
        assert sorted(sampler.epoch().tolist()) == list(range(len(Y)))


@pytest.mark.parametrize("name, want", [("class-balanced", [1 / 3] * 3),
                                        ("square-root", [1 / 2, 1 / 3, 1 / 6])])
def test_draws_follow_the_class_probabilities(name: str, want: list[float]) -> None:
    idx = draws(name, 20_000)  # 280,000 draws: the binomial sd of a frequency is < 0.001
    freq = np.bincount(Y[idx].numpy(), minlength=3) / len(idx)
    assert freq == pytest.approx(want, abs=0.006)
    # within a class every sample is equally likely: class 0's nine samples share its draws
    within = np.bincount(idx[Y[idx] == 0].numpy(), minlength=9)[:9]
    assert within / within.sum() == pytest.approx([1 / 9] * 9, abs=0.01)


def test_same_seed_same_draws() -> None:
    assert torch.equal(draws("square-root", 3, seed=5), draws("square-root", 3, seed=5))
    assert not torch.equal(draws("square-root", 3, seed=5), draws("square-root", 3, seed=6))


def test_class_balanced_sampler_in_the_loop_evens_out_the_batches() -> None:
    """MNIST-1D at ratio 100: with the class-balanced sampler each class fills ~1/10 of every batch,
    and the recorded steps still hold whole batches."""
    sink = MemorySink()
    train(TrainConfig(ratio=100, epochs=1, max_steps=40, sampler="class-balanced"), sink)
    steps = sink.table("steps")
    n = steps["n"].reshape(-1, 10)
    assert (n.sum(1) == 128).all()
    share = n.sum(0) / n.sum()
    assert share == pytest.approx([0.1] * 10, abs=0.02)  # 5,120 draws: sd of a share ~0.004
    assert sink.meta["config"]["sampler"] == "class-balanced"
