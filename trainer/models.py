"""Models. Every model is `features` (input -> penultimate vector) followed by a linear `fc`, so the
dynamics code can read the classifier rows and penultimate features of any of them the same way."""

from __future__ import annotations

import torch
from torch import nn

from trainer.data import DataError


class Classifier(nn.Module):
    """features -> fc. `forward_features` returns both, so eval needs one pass."""

    def __init__(self, features: nn.Module, dim: int, n_classes: int) -> None:
        super().__init__()
        self.features = features
        self.fc = nn.Linear(dim, n_classes)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return h, self.fc(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def cnn1d(in_len: int, n_classes: int, width: int = 32, dim: int = 128) -> Classifier:
    """A small 1D CNN for MNIST-1D (~0.1 M parameters): three conv blocks, then a 128-d feature."""
    features = nn.Sequential(
        nn.Unflatten(1, (1, in_len)),
        nn.Conv1d(1, width, 5, padding=2), nn.BatchNorm1d(width), nn.ReLU(),
        nn.Conv1d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm1d(2 * width), nn.ReLU(),
        nn.Conv1d(2 * width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm1d(2 * width),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * width * ((in_len + 3) // 4), dim), nn.ReLU(),
    )
    return Classifier(features, dim, n_classes)


def mlp(in_dim: int, n_classes: int, hidden: int = 256, dim: int = 128) -> Classifier:
    """A two-hidden-layer MLP (the MNIST-1D paper's baseline shape)."""
    features = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, hidden), nn.ReLU(),
                             nn.Linear(hidden, dim), nn.ReLU())
    return Classifier(features, dim, n_classes)


MODELS = ("cnn1d", "mlp")
DEFAULT_MODEL = {"mnist1d": "cnn1d"}


def build_model(name: str, input_shape: tuple[int, ...], n_classes: int) -> Classifier:
    if name == "cnn1d":
        if len(input_shape) != 1:
            raise DataError(f"model cnn1d needs 1D inputs, got shape {input_shape}")
        return cnn1d(input_shape[0], n_classes)
    if name == "mlp":
        size = 1
        for s in input_shape:
            size *= s
        return mlp(size, n_classes)
    raise DataError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
