"""Batch augmentation and normalisation on the device, for uint8 images stored (N, H, W, C).

`crop_flip` is torchvision's RandomCrop(size, padding=p) (zero fill) followed by
RandomHorizontalFlip(), for a whole batch in one gather: one random offset and one coin per image,
no per-image Python, no host round trip. `normalize` turns uint8 NHWC into float NCHW in
channels_last memory order (a permute of an NHWC tensor already is channels_last), as
ToTensor + Normalize would, but after the crop, so padded pixels become -mean/std exactly as there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from trainer.options import AUGMENTS  # noqa: E402  (the one list of names; implemented below)
PAD = 4  # the standard CIFAR random crop: pad 4, crop back to 32

Prepare = Callable[[torch.Tensor], torch.Tensor]


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
              pad: int) -> torch.Tensor:
    """Crop each image of x (B, H, W, C) at offset (dy, dx) of its zero-padded copy, then mirror it
    left-right where `flip` is true. dy, dx lie in [0, 2*pad]."""
    b, h, w, _ = x.shape
    xp = F.pad(x, (0, 0, pad, pad, pad, pad)) if pad else x
    j = torch.arange(w, device=x.device)
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - j, j)           # (B, W)
    rows = dy[:, None] + torch.arange(h, device=x.device)                    # (B, H)
    bi = torch.arange(b, device=x.device)[:, None, None]
    return xp[bi, rows[:, :, None], cols[:, None, :]]                        # (B, H, W, C)


class Augment:
    """A random crop (pad 4) and/or horizontal flip drawn from the run's device generator."""

    def __init__(self, mode: str, pad: int = PAD) -> None:
        if mode not in AUGMENTS:
            raise ValueError(f"unknown augmentation {mode!r}")
        self.mode, self.pad = mode, pad

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.mode == "none":
            return x
        b, dev = x.shape[0], x.device
        pad = self.pad if "crop" in self.mode else 0
        if pad:
            dy = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=gen)
            dx = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=gen)
        else:
            dy = dx = torch.zeros(b, dtype=torch.long, device=dev)
        if "flip" in self.mode:
            flip = torch.randint(0, 2, (b,), device=dev, generator=gen).bool()
        else:
            flip = torch.zeros(b, dtype=torch.bool, device=dev)
        return crop_flip(x, dy, dx, flip, pad)


def normalizer(mean: Sequence[float], std: Sequence[float], device: torch.device,
               channels_last: bool = True) -> Prepare:
    """uint8 (B, H, W, C) -> float32 (B, C, H, W): (x / 255 - mean) / std per channel."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=device).view(1, -1, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], device=device).view(1, -1, 1, 1)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).float()  # keeps the NHWC strides: channels_last for free
        if not channels_last:
            x = x.contiguous()
        return x * scale - shift

    return prepare
