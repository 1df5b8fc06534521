"""Models. Every model is `features` (input -> penultimate vector) followed by a classifier `fc`, so the
dynamics code can read the classifier rows and penultimate features of any of them the same way.

Image models take NCHW float input (the loop hands them channels_last tensors); `fc` is an
`nn.Linear`, or a `NormedLinear` (cosine classifier, no bias) for LDAM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.data import DataError


class NormedLinear(nn.Linear):
    """Cosine classifier: s * cos(x, w_c), as LDAM uses (Cao et al. 2019), without a bias.

    Cao et al. return the bare cosine and multiply by s inside the loss; returning s * cos keeps
    the logits the recorded dynamics see on the scale the optimiser sees, and argmax is unchanged.
    """

    def __init__(self, in_features: int, out_features: int, scale: float = 30.0) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.scale = scale
        # Cao et al.'s init: uniform(-1, 1) rows renormalised to unit length.
        with torch.no_grad():
            self.weight.uniform_(-1, 1).renorm_(2, 0, 1e-5).mul_(1e5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))


class Classifier(nn.Module):
    """features -> fc. `forward_features` returns both, so eval needs one pass."""

    def __init__(self, features: nn.Module, dim: int, n_classes: int, normed: bool = False) -> None:
        super().__init__()
        self.features = features
        self.fc = NormedLinear(dim, n_classes) if normed else nn.Linear(dim, n_classes)
        # learnable weight scaling (Kang et al. 2020, `--stage2 lws`): logits f_c * z_c; None until
        # that stage adds it, so every other run's forward is unchanged
        self.logit_scale: nn.Parameter | None = None

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        z = self.fc(h)
        return h, z if self.logit_scale is None else z * self.logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[1]


# ==== MNIST-1D ====================================================================================

def cnn1d(in_len: int, n_classes: int, width: int = 32, dim: int = 128,
          normed: bool = False) -> Classifier:
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
    return Classifier(features, dim, n_classes, normed)


def mlp(in_dim: int, n_classes: int, hidden: int = 256, dim: int = 128,
        normed: bool = False) -> Classifier:
    """A two-hidden-layer MLP (the MNIST-1D paper's baseline shape)."""
    features = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, hidden), nn.ReLU(),
                             nn.Linear(hidden, dim), nn.ReLU())
    return Classifier(features, dim, n_classes, normed)


# ==== images ======================================================================================

class BasicBlock(nn.Module):
    """Two 3x3 convs with a parameter-free shortcut ("option A" of He et al. 2016: subsample and
    zero-pad channels), as the ResNet-32 of the long-tailed CIFAR literature uses."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.pad = stride, c_out - c_in

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def resnet_cifar(depth: int, n_classes: int, in_channels: int = 3,
                 normed: bool = False) -> Classifier:
    """ResNet-(6n+2) for 32x32 images: 3 stages of n basic blocks at 16/32/64 channels, global
    average pooling, a 64-d feature. depth 32 -> 5 blocks per stage, ~0.46 M parameters."""
    if (depth - 2) % 6:
        raise DataError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    layers: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False),
                               nn.BatchNorm2d(16), nn.ReLU()]
    c_in = 16
    for c_out, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(n):
            layers.append(BasicBlock(c_in, c_out, stride if i == 0 else 1))
            c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    model = Classifier(nn.Sequential(*layers), 64, n_classes, normed)
    for m in model.modules():  # Kaiming-normal convs and linear layers, as Cao et al.
        if isinstance(m, nn.Conv2d) or type(m) is nn.Linear:
            nn.init.kaiming_normal_(m.weight)
    return model


def cnn(in_channels: int, n_classes: int, width: int = 32, normed: bool = False) -> Classifier:
    """A small CNN for 28x28 images (MNIST, Fashion-MNIST; ~0.1 M parameters, ~5 M multiply-adds
    per image, so a CPU trains it in minutes): a strided 5x5 conv to 14x14, a strided 3x3 conv to
    7x7, a 3x3 conv, global average pooling, a 128-d feature."""
    w = width
    features = nn.Sequential(
        nn.Conv2d(in_channels, w, 5, stride=2, padding=2, bias=False), nn.BatchNorm2d(w),
        nn.ReLU(),
        nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(),
        nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    return Classifier(features, 4 * w, n_classes, normed)


# ==== registry ====================================================================================

from trainer.options import MODELS  # noqa: E402  (the one list of names)


def build_model(name: str, input_shape: tuple[int, ...], n_classes: int,
                normed: bool = False, scale: float | None = None) -> Classifier:
    """`input_shape` is one sample's shape as stored: (L,) for 1D data, (H, W, C) for images.
    `scale` (what the loss asks for: trainer.losses.classifier_scale) gives the model a cosine
    classifier s * cos(h, w_c) with s = scale; `normed` alone, one with NormedLinear's default s."""
    model = _architecture(name, input_shape, n_classes, normed or scale is not None)
    if scale is not None:
        model.fc.scale = scale
    return model


def _architecture(name: str, input_shape: tuple[int, ...], n_classes: int,
                  normed: bool) -> Classifier:
    if name == "cnn1d":
        if len(input_shape) != 1:
            raise DataError(f"model cnn1d needs 1D inputs (mnist1d), got shape {input_shape}")
        return cnn1d(input_shape[0], n_classes, normed=normed)
    if name == "mlp":
        return mlp(_numel(input_shape), n_classes, normed=normed)
    if name in ("resnet32", "cnn"):
        if len(input_shape) != 3:
            raise DataError(f"model {name} needs image inputs (H, W, C), got shape {input_shape}; "
                            f"use cnn1d or mlp for this dataset")
        if name == "cnn":
            return cnn(input_shape[2], n_classes, normed=normed)
        return resnet_cifar(32, n_classes, input_shape[2], normed=normed)
    raise DataError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")


def _numel(shape: tuple[int, ...]) -> int:
    size = 1
    for s in shape:
        size *= s
    return size


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
