"""What the loop hands StepRecorder.record besides a step's logits and labels: the classifier, the
penultimate features and dLoss/dlogits, for tests that build a step's logits by hand."""

from __future__ import annotations

import torch

DIM = 6  # feature width of the tests' classifier


def classifier(n_classes: int, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(DIM, n_classes)


def features(n: int, n_classes: int, generator: torch.Generator | None = None
             ) -> dict[str, torch.Tensor]:
    """Random features and dLoss/dlogits of n samples, as record()'s keyword arguments."""
    return {"h": torch.randn(n, DIM, generator=generator),
            "dlogits": torch.randn(n, n_classes, generator=generator)}
