"""Input mixup (Zhang et al. 2018, *mixup: Beyond Empirical Risk Minimization*), as the reference
code does it (facebookresearch/mixup-cifar10, train.py: `mixup_data`, `mixup_criterion`): each batch
is mixed with a shuffled copy of itself,

  x~_i = lam * x_i + (1 - lam) * x_{pi(i)},   loss = lam * L(f(x~), y) + (1 - lam) * L(f(x~), y_pi)

with one lam ~ Beta(alpha, alpha) per batch and pi a uniformly random permutation of the batch.

Two differences from the reference, neither of which changes the distribution of what is trained:

- lam is drawn on the host from a numpy Generator seeded with the run's seed (the reference uses
  numpy's global state), so every torchrun rank draws the same lam and nothing waits for the device;
  the permutation comes from the caller's torch.Generator, on its device.
- lam is folded to max(lam, 1 - lam) >= 1/2, so sample i of the batch (the primary) always carries
  the larger weight. This leaves the distribution of the mixed batch unchanged: a reference draw
  (pi, lam) with lam < 1/2 makes the inputs lam * x_i + (1 - lam) * x_pi(i); re-indexed by
  j = pi(i) these are (1 - lam) * x_j + lam * x_{pi^-1(j)}, the same batch (and, the loss being a
  sum over samples, the same loss) as the draw (pi^-1, 1 - lam). So folding maps (pi, lam) to
  (pi^-1, 1 - lam) whenever lam < 1/2. A uniformly random permutation and its inverse have the same
  distribution, and Beta(a, a) is symmetric (1 - lam has lam's distribution), so the folded draw
  (permutation, max(lam, 1 - lam)) gives every mixed batch with the same probability as the
  reference's; the fold only fixes which sample of each pair is called the primary.

Recording definition: the per-class statistics and per-sample presentations of a mixed batch are
attributed to the primary label y_i (the sample carrying weight lam >= 1/2), never to y_pi(i). A
presentation of sample i is its presentation as the primary of a mixed input; its appearance as a
partner (weight 1 - lam <= 1/2) is not counted.

alpha = 0 is mixup off (the reference's lam = 1): `mix` returns the batch as it is, lam 1, and draws
nothing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from trainer.data import DataError


class Mixup:
    """Input mixup with lam ~ Beta(alpha, alpha) folded to >= 1/2, drawn from a numpy Generator
    seeded with `seed` (module docstring)."""

    def __init__(self, alpha: float, seed: int) -> None:
        if not (alpha >= 0 and math.isfinite(alpha)):
            raise DataError(f"--mixup alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        self.rng = np.random.default_rng(seed)

    def draw(self) -> float:
        """The next batch's lam: Beta(alpha, alpha) folded to max(lam, 1 - lam); 1 when off."""
        if self.alpha == 0:
            return 1.0
        lam = float(self.rng.beta(self.alpha, self.alpha))
        return max(lam, 1.0 - lam)

    def mix(self, x: torch.Tensor, y: torch.Tensor,
            gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(x_mixed, y_b, lam): x_mixed = lam * x + (1 - lam) * x[partner] in x's dtype (float
        inputs), y_b = y[partner], partner a random permutation drawn from `gen` on its device. The
        primary label is `y` itself (weight lam >= 1/2)."""
        lam = self.draw()
        if self.alpha == 0:
            return x, y, lam
        partner = torch.randperm(len(x), generator=gen, device=gen.device)
        if partner.device != x.device:
            partner = partner.to(x.device)
        return lam * x + (1.0 - lam) * x[partner], y[partner], lam

    def state_dict(self) -> dict[str, Any]:
        """The lam generator's state (to resume a run with the same lams)."""
        return {"alpha": self.alpha, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


def mixed_loss(criterion: Any, logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor,
               lam: float, epoch: int) -> torch.Tensor:
    """The reference's `mixup_criterion`: lam * L(logits, y_a) + (1 - lam) * L(logits, y_b), with
    `criterion` a trainer.losses.Objective (called with the epoch, for DRW)."""
    return lam * criterion(logits, y_a, epoch) + (1.0 - lam) * criterion(logits, y_b, epoch)


def mixed_terms(criterion: Any, logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor,
                lam: float, epoch: int) -> torch.Tensor:
    """`mixed_loss` split by sample: lam * terms(y_a) + (1 - lam) * terms(y_b), a (N,) tensor whose
    sum is mixed_loss (each sample's terms attributed to its primary, index i)."""
    return (lam * criterion.terms(logits, y_a, epoch)
            + (1.0 - lam) * criterion.terms(logits, y_b, epoch))
