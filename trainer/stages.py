"""Two-stage methods and weight balancing: what changes when a second stage begins.

`--stage2` adds a second stage on the first stage's frozen features; its epochs and steps continue
the first stage's count, so one run holds both stages and the store's `stages` view says where the
second begins (`runs.epochs` is the first stage's length).

    crt          classifier re-training (Kang et al. 2020, "Decoupling Representation and Classifier
                 for Long-Tailed Recognition"; facebookresearch/classifier-balancing): a freshly
                 initialised classifier trained with cross-entropy and class-balanced sampling
    lws          learnable weight scaling (Kang et al. 2020): logits f_c * z_c, only f (initially
                 1) trained, with cross-entropy and class-balanced sampling
    tau-norm     (Kang et al. 2020) each classifier row divided by its norm^tau, as weight
                 balancing's `Normalizer` (ShadeAlsha/LTR-weight-balancing, utils/regularizers.py;
                 the bias is left as it is); trains nothing: the stage is one evaluation
    cb-finetune  weight balancing's second stage (Alshammari et al. 2022, "Long-Tailed Recognition
                 via Weight Balancing"; the same repository's demo2_second-stage-training.py): the
                 classifier (rows and bias) fine-tuned with that code's class-balanced loss,
                 `CB_loss(..., "softmax", beta=0.9999)`: the binary cross-entropy between the
                 softmax and the one-hot label, every entry of sample i weighted by its class's
                 effective-number weight (normalised to sum C), averaged over the N x C entries;
                 the batches a plain shuffle

The frozen part is the feature extractor: its parameters stop training and it runs in eval mode,
so its BatchNorm statistics stop moving too and the second stage sees exactly the first stage's
features. (The reference scripts leave the network in train mode, so BatchNorm's running
statistics keep adapting to the re-sampled batches while its weights are frozen.) The second
stage trains with SGD (momentum 0.9, `--stage2-weight-decay`, default `--weight-decay`), its
learning rate `--stage2-lr` (default `--lr`) decaying on a cosine to 0 over its epochs with no
warm-up, as the references' `CosineAnnealingLR` does.

MaxNorm (`--max-norm t`; weight balancing's `MaxNorm_via_PGD`, utils/regularizers.py): after every
optimiser step of the stage that trains the classifier last (the second stage when there is one, as
in the reference, else the whole run), each classifier row whose norm exceeds the bound is scaled
back to it. The bound is the reference's per-layer threshold, set once when the stage begins:
min_c ||w_c|| + t * (max_c ||w_c|| - min_c ||w_c||) of the rows' norms then.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from trainer.losses import Objective, class_balanced_weights

CB_FINETUNE_BETA = 0.9999  # demo2_second-stage-training.py's CB_lossFunc


# ==== the classifier's constraints ================================================================

class MaxNorm:
    """Projects each classifier row back into the ball of the bound set when it is made (the
    stage's start: the reference's `setPerLayerThresh` before training)."""

    @torch.no_grad()
    def __init__(self, fc: nn.Module, threshold: float) -> None:
        self.fc, self.threshold = fc, threshold
        norms = fc.weight.norm(dim=1)  # a tensor: setting it never waits for the device
        self.bound = norms.min() + threshold * (norms.max() - norms.min())

    @torch.no_grad()
    def __call__(self) -> None:
        w = self.fc.weight
        norms = w.norm(dim=1)
        w.mul_(torch.where(norms > self.bound, self.bound / norms, torch.ones_like(norms))[:, None])


def no_projection() -> None:
    """What runs after a step without MaxNorm."""


@torch.no_grad()
def tau_normalise(fc: nn.Module, tau: float) -> None:
    """w_c <- w_c / ||w_c||^tau for every classifier row (the bias as it is)."""
    w = fc.weight
    w.div_(w.norm(dim=1, keepdim=True).pow(tau))


# ==== weight balancing's class-balanced loss ======================================================

class SoftmaxBCE:
    """`CB_loss(labels, logits, counts, C, "softmax", beta)` of the weight-balancing code: the
    binary cross-entropy between softmax(z) and the one-hot label, every entry of sample i
    weighted by w_{y_i} = (1 - beta) / (1 - beta^n_{y_i}) normalised to sum C, mean over N x C."""

    def __init__(self, counts: Sequence[int], device: torch.device,
                 beta: float = CB_FINETUNE_BETA) -> None:
        self.weight = torch.as_tensor(class_balanced_weights(counts, beta), dtype=torch.float32,
                                      device=device)

    def terms(self, logits: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        p = logits.float().softmax(dim=1)
        target = (y[:, None] == torch.arange(p.shape[1], device=y.device)).float()
        bce = torch.nn.functional.binary_cross_entropy(p, target, reduction="none")
        return (self.weight[y][:, None] * bce).sum(1) / bce.numel()

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        return self.terms(logits, y, epoch).sum()


# ==== the second stage ============================================================================

@dataclass
class Stage:
    """What the loop swaps in when the second stage begins."""

    name: str
    params: list[nn.Parameter]                      # what the stage trains
    criterion: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
    sampler: str                                    # trainer.samplers name
    trains: bool                                    # False: tau-norm, an evaluation only


def begin_stage2(name: str, model: nn.Module, counts: Sequence[int], device: torch.device,
                 tau: float = 1.0) -> Stage:
    """Freeze the feature extractor and set up the classifier for the second stage `name`."""
    for p in model.parameters():
        p.requires_grad_(False)
    fc = model.fc
    if name == "tau-norm":
        tau_normalise(fc, tau)
        return Stage(name, [], Objective("ce", counts, device), "none", trains=False)
    if name == "crt":
        fc.reset_parameters()  # a fresh classifier, initialised as nn.Linear initialises one
        params = list(fc.parameters())
    elif name == "lws":
        model.logit_scale = nn.Parameter(torch.ones(len(counts), device=device))
        params = [model.logit_scale]
    elif name == "cb-finetune":
        params = list(fc.parameters())
    else:
        raise ValueError(f"unknown second stage {name!r}")
    for p in params:
        p.requires_grad_(True)
    criterion = (SoftmaxBCE(counts, device) if name == "cb-finetune"
                 else Objective("ce", counts, device))
    sampler = "none" if name == "cb-finetune" else "class-balanced"
    return Stage(name, params, criterion, sampler, trains=True)


def stage_lr(peak: float, step: int, first_step: int, steps: int) -> float:
    """The second stage's learning rate: cosine from `peak` to 0 over its `steps`, no warm-up."""
    progress = (step - first_step) / max(1, steps)
    return peak * 0.5 * (1.0 + float(np.cos(np.pi * min(1.0, progress))))
