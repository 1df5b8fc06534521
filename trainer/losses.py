"""Training objectives. Each returns the scalar loss to minimise for a batch.

The recorded dynamics always use the plain per-sample cross-entropy (trainer.dynamics), so curves stay
comparable across methods; the objective here is only what the optimiser sees.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from trainer.data import DataError

LossFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]  # (logits, y, epoch) -> loss

LOSSES = ("ce",)


def build_loss(name: str, counts: list[int], device: torch.device, **params: float) -> LossFn:
    if name == "ce":
        return lambda logits, y, epoch: F.cross_entropy(logits, y)
    raise DataError(f"unknown loss {name!r}: choose one of {', '.join(LOSSES)}")
