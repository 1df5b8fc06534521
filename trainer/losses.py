"""Training objectives: the imbalance mitigation methods. Each returns the scalar loss for a batch.

The recorded dynamics always use the plain per-sample cross-entropy of the model's logits
(trainer.dynamics), so curves stay comparable across methods; the objective here is only what the
optimiser sees. Each loss follows its reference implementation, or the difference is a named option.

Class weights w (weighted-ce, cb, and the DRW phase) multiply each sample's loss l_i, and the
batch is reduced as `reduction` (TrainConfig.cb_reduction, `--cb-reduction`) says:

  weighted-mean  sum_i w_{y_i} l_i / sum_i w_{y_i} (the default): PyTorch's
                 `cross_entropy(weight=...)` with reduction='mean', which is what the LDAM-DRW code
                 (kaidic/LDAM-DRW, cifar_train.py) uses for its CE, LDAM and re-weighted losses.
  mean           sum_i w_{y_i} l_i / N: Cui et al. 2019's own code (richardaecn/class-balanced-loss,
                 src/cifar_main.py: `tf.losses.softmax_cross_entropy(..., weights=w_i)`, whose
                 default reduction SUM_BY_NONZERO_WEIGHTS divides by N, as every w > 0).

Under torchrun a weighted mean's sums run over the global batch: each rank divides its own
sum_i w_i l_i by the weight sum of all ranks (trainer.distributed.mean_divisor), not by its own, so
DDP's averaged gradient is the single-process one. A plain mean (and `mean` above) stays per rank:
every rank holds the same number of samples (the loop drops the last partial batch and refuses a
batch that does not split).

  ce                plain cross-entropy
  weighted-ce       w_c proportional to 1 / n_c (inverse class frequency)
  cb                class-balanced (Cui et al. 2019): w_c proportional to (1 - b) / (1 - b^n_c)
  focal             mean_i (1 - exp(-v_i))^gamma * v_i, v_i = w_{y_i} * CE_i (Lin et al. 2017),
                    as kaidic/LDAM-DRW losses.py `FocalLoss(weight=w)`: the class weight (DRW
                    only) sits inside the focal factor and the batch reduction is always the
                    plain mean, so `reduction` does not apply to focal
  ldam              CE of s*cos - s*m_y at the true class, m_c proportional to n_c^(-1/4), largest
                    `max_margin` (Cao et al. 2019); the model's classifier is the cosine one
  balanced-softmax  CE of z_c + log n_c (Ren et al. 2020)
  logit-adjusted    CE of z_c + tau * log(n_c / N) (Menon et al. 2021)

`drw=E` (deferred re-weighting, Cao et al.): the first E epochs train unweighted (as the reference's
beta 0, whose weights are all 1); from epoch E + 1 on (epochs count from 1) the loss takes the
class-balanced weights with b = `drw_beta` (0.9999), replacing any it had, reduced as `reduction`
says (focal: as above). This is the reference's `idx = epoch // 160` with its epochs counted from 0:
`--drw 160` re-weights the last 40 of 200 epochs. Weights are normalised to sum to C.

Label smoothing (`smoothing`, `smoothing_tail`; TrainConfig's fields of those names) replaces the
one-hot target of the cross-entropy of the logits the loss sees (after LDAM's margin, after
balanced-softmax's and logit-adjusted's shift) by (1 - e_y) one-hot(y) + e_y / C, so each sample's
loss is

  l_i = (1 - e_{y_i}) * CE_i + e_{y_i} * mean_c(-log p_ic)

which the class weights, DRW and `reduction` then take as they take CE_i. The class weight is the
sample's, w_{y_i}, on both parts: PyTorch's `cross_entropy(weight=w, label_smoothing=e)` instead
weighs the smoothing part's class c by w_c, a different loss; without weights the two agree.

  smoothing_tail None   plain label smoothing (Szegedy et al. 2016): e_c = `smoothing` for every
                        class, PyTorch's `cross_entropy(..., label_smoothing=smoothing)`
  smoothing_tail given  label-aware smoothing (Zhong et al. 2021, MiSLAS), its 'linear' shape
                        (dvlab-research/MiSLAS, methods.py `LabelAwareSmoothing`):
                        e_c = tail + (head - tail) * (n_c - n_min) / (n_max - n_min), head =
                        `smoothing` at the largest class, tail = `smoothing_tail` at the smallest.
                        If every class has the same count (the reference divides 0 by 0), every
                        class is the largest and takes `smoothing`.

Smoothing 0 without a tail is the unsmoothed loss, computed as before (bit for bit). Focal has no
one-hot target to soften and refuses smoothing (as trainer.config.check_method does).

`Objective.terms(logits, y, epoch)` gives each sample's share of the batch's loss, a (N,) tensor
whose sum is `Objective(logits, y, epoch)`: l_i / N for a plain mean (focal's included),
w_{y_i} l_i / N for `mean`, w_{y_i} l_i / sum_j w_{y_j} for `weighted-mean` (the global sum under
torchrun, as above). It splits a batch's loss by sample (ImbSAM's majority and minority parts)
without host synchronisation; `__call__` does not go through it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from trainer import distributed
from trainer.data import DataError
from trainer.options import CB_REDUCTIONS, LOSSES  # the one list of names

DEFAULTS = {"beta": 0.9999, "gamma": 1.0, "tau": 1.0, "max_margin": 0.5, "scale": 30.0,
            "drw_beta": 0.9999}
# CB_REDUCTIONS: how a class-weighted loss reduces its batch (module docstring); the first is the
# default.


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


def smoothing_epsilons(counts: Sequence[int], smoothing: float,
                       smoothing_tail: float | None = None) -> np.ndarray:
    """Each class's label-smoothing epsilon: `smoothing` for all without a tail; with one, MiSLAS's
    'linear' shape, `smoothing` at the largest class to `smoothing_tail` at the smallest, linear in
    the class count (all counts equal: `smoothing` for every class)."""
    for label, eps in (("smoothing", smoothing), ("smoothing_tail", smoothing_tail)):
        if eps is not None and not 0.0 <= eps < 1.0:
            raise DataError(f"{label} must lie in [0, 1), got {eps}")
    n = np.asarray(counts, dtype=np.float64)
    if smoothing_tail is None or n.max() == n.min():
        return np.full(len(n), float(smoothing))
    return smoothing_tail + (smoothing - smoothing_tail) * (n - n.min()) / (n.max() - n.min())


def ldam_margins(counts: Sequence[int], max_margin: float = 0.5) -> np.ndarray:
    m = np.asarray(counts, dtype=np.float64) ** -0.25
    return m * (max_margin / m.max())


def log_prior(counts: Sequence[int]) -> np.ndarray:
    n = np.asarray(counts, dtype=np.float64)
    return np.log(n / n.sum())


# ==== the classifier a loss needs =================================================================
# The losses whose logits must be s * cos(h, w_c), a cosine classifier (trainer.models.NormedLinear)
# with s the loss's `scale`: LDAM's margins live on cosines (Cao et al. 2019). Every other loss
# takes the plain linear classifier.
NORMED_CLASSIFIER = {"ldam"}


def classifier_scale(name: str, params: dict[str, float]) -> float | None:
    """What classifier the loss `name` needs: the scale s of the cosine classifier s * cos(h, w_c)
    it trains (`params`' scale, else DEFAULTS'), or None for the plain linear classifier."""
    if name not in NORMED_CLASSIFIER:
        return None
    return float(params.get("scale", DEFAULTS["scale"]))


# ==== the objective ===============================================================================

def weighted_mean(per_sample: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None,
                  reduction: str = "weighted-mean") -> torch.Tensor:
    """The batch's loss: sum_i w_i l_i / sum_i w_i (`weighted-mean`) or / N (`mean`)."""
    if weight is None:
        return per_sample.mean()
    w = weight[y]
    if reduction == "mean":  # Cui et al.: / N, per rank (every rank holds N samples)
        return (w * per_sample).mean()
    # the global batch's weight sum, not this rank's: ranks' shares of it differ under DDP
    return (w * per_sample).sum() / distributed.mean_divisor(w.sum())


def weighted_terms(per_sample: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None,
                   reduction: str = "weighted-mean") -> torch.Tensor:
    """Each sample's share of `weighted_mean(per_sample, y, weight, reduction)`: the (N,) terms
    that sum to it (l_i / N, w_i l_i / N or w_i l_i / sum_j w_j)."""
    n = per_sample.shape[0]
    if weight is None:
        return per_sample / n
    w = weight[y]
    if reduction == "mean":
        return w * per_sample / n
    return w * per_sample / distributed.mean_divisor(w.sum())


def smoothed_ce(logits: torch.Tensor, y: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy against the smoothed target (1 - e_y) one-hot(y) + e_y / C, with
    `eps` the per-class epsilons: (1 - e_y) * (-log p_y) + e_y * mean_c(-log p_c)."""
    logp = F.log_softmax(logits, dim=-1)
    nll = -logp.gather(1, y[:, None]).squeeze(1)
    e = eps[y]
    return (1.0 - e) * nll + e * -logp.mean(dim=-1)


def focal_loss(logits: torch.Tensor, y: torch.Tensor, gamma: float,
               weight: torch.Tensor | None) -> torch.Tensor:
    """kaidic/LDAM-DRW losses.py `FocalLoss(weight, gamma)`: v = CE weighted per sample (inside the
    focal factor), then mean over the batch of (1 - exp(-v))^gamma * v."""
    v = F.cross_entropy(logits, y, weight=weight, reduction="none")
    return ((1.0 - torch.exp(-v)) ** gamma * v).mean()


class Objective:
    """(logits, y, epoch) -> scalar loss; `terms` splits it by sample. Per-class tensors are built
    once, on the device. `smoothing`, `smoothing_tail`: label smoothing (module docstring)."""

    def __init__(self, name: str, counts: Sequence[int], device: torch.device,
                 drw: int | None = None, reduction: str = CB_REDUCTIONS[0], *,
                 smoothing: float = 0.0, smoothing_tail: float | None = None,
                 **params: float) -> None:
        if name not in LOSSES:
            raise DataError(f"unknown loss {name!r}: choose one of {', '.join(LOSSES)}")
        if reduction not in CB_REDUCTIONS:
            raise DataError(f"unknown --cb-reduction {reduction!r}: choose one of "
                            f"{', '.join(CB_REDUCTIONS)}")
        unknown = sorted(set(params) - set(DEFAULTS))
        if unknown:
            raise DataError(f"unknown loss parameter {unknown[0]!r}: known are "
                            f"{', '.join(DEFAULTS)}")
        p = {**DEFAULTS, **params}
        if not p["gamma"] >= 0:  # the reference asserts it: a negative gamma rewards mistakes
            raise DataError(f"focal gamma must be >= 0, got {p['gamma']}")
        self.name, self.drw, self.gamma, self.scale = name, drw, p["gamma"], p["scale"]
        self.reduction = reduction

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
        # per-class label-smoothing epsilons; None: no smoothing, the unsmoothed code path
        smooth = smoothing != 0.0 or smoothing_tail is not None
        if smooth and name == "focal":
            raise DataError("label smoothing softens a cross-entropy's target; loss focal has none "
                            "to soften")
        self.eps = t(smoothing_epsilons(counts, smoothing, smoothing_tail)) if smooth else None

    def weight_at(self, epoch: int) -> torch.Tensor | None:
        if self.drw is not None and epoch > self.drw:
            return self.drw_weight
        return self.weight

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        logits = logits.float()
        weight = self.weight_at(epoch)
        if self.name == "ce" and weight is None and self.eps is None:
            return F.cross_entropy(logits, y)
        if self.shift is not None:
            logits = logits + self.shift
        if self.margin is not None:  # logits are s*cos: subtract s*m_y from the true class only
            # (F.one_hot would check the labels' range on the host: a sync on CUDA)
            true = y[:, None] == torch.arange(logits.shape[1], device=y.device)
            logits = logits - true * (self.scale * self.margin[y])[:, None]
        if self.name == "focal":
            return focal_loss(logits, y, self.gamma, weight)
        if self.eps is not None:
            return weighted_mean(smoothed_ce(logits, y, self.eps), y, weight, self.reduction)
        ce = F.cross_entropy(logits, y, reduction="none")
        return weighted_mean(ce, y, weight, self.reduction)

    def terms(self, logits: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        """Each sample's share of `self(logits, y, epoch)`: a (N,) tensor summing to it (module
        docstring). No host synchronisation: no boolean indexing, no .item()."""
        logits = logits.float()
        weight = self.weight_at(epoch)
        if self.shift is not None:
            logits = logits + self.shift
        if self.margin is not None:
            true = y[:, None] == torch.arange(logits.shape[1], device=y.device)
            logits = logits - true * (self.scale * self.margin[y])[:, None]
        if self.name == "focal":  # focal_loss's terms: the weight inside, the plain mean
            v = F.cross_entropy(logits, y, weight=weight, reduction="none")
            return (1.0 - torch.exp(-v)) ** self.gamma * v / v.shape[0]
        per_sample = (smoothed_ce(logits, y, self.eps) if self.eps is not None
                      else F.cross_entropy(logits, y, reduction="none"))
        return weighted_terms(per_sample, y, weight, self.reduction)


LossFn = Objective


def build_loss(name: str, counts: list[int], device: torch.device, drw: int | None = None,
               reduction: str = CB_REDUCTIONS[0], *, smoothing: float = 0.0,
               smoothing_tail: float | None = None, **params: float) -> Objective:
    """The objective `name` for these class counts; `reduction` is TrainConfig.cb_reduction,
    `smoothing` and `smoothing_tail` its label smoothing (module docstring)."""
    return Objective(name, counts, device, drw, reduction, smoothing=smoothing,
                     smoothing_tail=smoothing_tail, **params)
