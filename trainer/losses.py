"""Training objectives: the imbalance mitigation methods. Each returns the scalar loss for a batch.

The recorded dynamics always use the plain per-sample cross-entropy of the model's logits
(trainer.dynamics), so curves stay comparable across methods; the objective here is only what the
optimiser sees. With class weights w, every loss is the weighted mean sum_i w_{y_i} l_i / sum_i w_{y_i}
(PyTorch's `cross_entropy(weight=...)` convention, the one Cao et al.'s DRW uses). Under torchrun
the sums in that mean run over the global batch: each rank divides its own sum_i w_i l_i by the
weight sum of all ranks (trainer.distributed.mean_divisor), not by its own, so DDP's averaged
gradient is the single-process one. An unweighted mean stays per rank: every rank holds the same
number of samples (the loop drops the last partial batch and refuses a batch that does not split).

  ce                plain cross-entropy
  weighted-ce       w_c proportional to 1 / n_c (inverse class frequency)
  cb                class-balanced (Cui et al. 2019): w_c proportional to (1 - b) / (1 - b^n_c)
  focal             (1 - p_y)^gamma * CE (Lin et al. 2017)
  ldam              CE of s*cos - s*m_y at the true class, m_c proportional to n_c^(-1/4), largest
                    `max_margin` (Cao et al. 2019); the model's classifier is the cosine one
  balanced-softmax  CE of z_c + log n_c (Ren et al. 2020)
  logit-adjusted    CE of z_c + tau * log(n_c / N) (Menon et al. 2021)

`drw=E` (deferred re-weighting, Cao et al.): after E epochs the loss takes the class-balanced
weights with b = `drw_beta` (0.9999), replacing any it had. Weights are normalised to sum to C.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from trainer import distributed
from trainer.data import DataError

LOSSES = ("ce", "weighted-ce", "cb", "focal", "ldam", "balanced-softmax", "logit-adjusted")
DEFAULTS = {"beta": 0.9999, "gamma": 1.0, "tau": 1.0, "max_margin": 0.5, "scale": 30.0,
            "drw_beta": 0.9999}


# ==== per-class constants =========================================================================

def inverse_frequency_weights(counts: Sequence[int]) -> np.ndarray:
    w = 1.0 / np.asarray(counts, dtype=np.float64)
    return w * len(w) / w.sum()


def class_balanced_weights(counts: Sequence[int], beta: float) -> np.ndarray:
    """(1 - beta) / (1 - beta^n_c): the inverse "effective number" of samples, sum C."""
    if not 0.0 <= beta < 1.0:
        raise DataError(f"class-balanced beta must lie in [0, 1), got {beta}")
    n = np.asarray(counts, dtype=np.float64)
    w = (1.0 - beta) / (1.0 - np.power(beta, n))
    return w * len(w) / w.sum()


def ldam_margins(counts: Sequence[int], max_margin: float = 0.5) -> np.ndarray:
    m = np.asarray(counts, dtype=np.float64) ** -0.25
    return m * (max_margin / m.max())


def log_prior(counts: Sequence[int]) -> np.ndarray:
    n = np.asarray(counts, dtype=np.float64)
    return np.log(n / n.sum())


# ==== the objective ===============================================================================

def weighted_mean(per_sample: torch.Tensor, y: torch.Tensor,
                  weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return per_sample.mean()
    w = weight[y]
    # the global batch's weight sum, not this rank's: ranks' shares of it differ under DDP
    return (w * per_sample).sum() / distributed.mean_divisor(w.sum())


class Objective:
    """(logits, y, epoch) -> scalar loss. Per-class tensors are built once, on the device."""

    def __init__(self, name: str, counts: Sequence[int], device: torch.device,
                 drw: int | None = None, **params: float) -> None:
        if name not in LOSSES:
            raise DataError(f"unknown loss {name!r}: choose one of {', '.join(LOSSES)}")
        unknown = sorted(set(params) - set(DEFAULTS))
        if unknown:
            raise DataError(f"unknown loss parameter {unknown[0]!r}: known are "
                            f"{', '.join(DEFAULTS)}")
        p = {**DEFAULTS, **params}
        self.name, self.drw, self.gamma, self.scale = name, drw, p["gamma"], p["scale"]

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=torch.float32, device=device)

        self.weight = {"weighted-ce": t(inverse_frequency_weights(counts)),
                       "cb": t(class_balanced_weights(counts, p["beta"]))}.get(name)
        # `drw=0` re-weights from the first epoch on (`if drw` would read it as no DRW at all)
        self.drw_weight = (t(class_balanced_weights(counts, p["drw_beta"])) if drw is not None
                           else None)
        self.margin = t(ldam_margins(counts, p["max_margin"])) if name == "ldam" else None
        shift = {"balanced-softmax": np.log(np.asarray(counts, dtype=np.float64)),
                 "logit-adjusted": p["tau"] * log_prior(counts)}.get(name)
        self.shift = t(shift) if shift is not None else None

    def weight_at(self, epoch: int) -> torch.Tensor | None:
        if self.drw is not None and epoch > self.drw:
            return self.drw_weight
        return self.weight

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        logits = logits.float()
        weight = self.weight_at(epoch)
        if self.name == "ce" and weight is None:
            return F.cross_entropy(logits, y)
        if self.shift is not None:
            logits = logits + self.shift
        if self.margin is not None:  # logits are s*cos: subtract s*m_y from the true class only
            # (F.one_hot would check the labels' range on the host: a sync on CUDA)
            true = y[:, None] == torch.arange(logits.shape[1], device=y.device)
            logits = logits - true * (self.scale * self.margin[y])[:, None]
        ce = F.cross_entropy(logits, y, reduction="none")
        if self.name == "focal":
            ce = (1.0 - torch.exp(-ce)).pow(self.gamma) * ce
        return weighted_mean(ce, y, weight)


LossFn = Objective


def build_loss(name: str, counts: list[int], device: torch.device, drw: int | None = None,
               **params: float) -> Objective:
    return Objective(name, counts, device, drw, **params)
