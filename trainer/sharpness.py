"""The optimiser step: plain SGD, SAM, or ImbSAM, as `--optimizer` sgd / sam / imbsam.

- **SAM** (Foret et al. 2021, "Sharpness-Aware Minimization for Efficiently Improving
  Generalization", ICLR): the gradient is taken at the worst point of a rho-ball around w, to first
  order w + e with e = rho * g / ||g|| (g the batch gradient at w, ||.|| the global 2-norm over all
  trainable parameters); the base optimiser (SGD with momentum and weight decay) then steps from w
  with the gradient at w + e. Reference: github.com/davda54/sam, `sam.py` (`SAM.first_step`,
  `SAM.second_step`, `adaptive=False`): scale = rho / (||g|| + 1e-12), p += p.grad * scale, zero
  the gradients, second forward and backward, p -= e_w, base_optimizer.step().
- **ImbSAM** (Zhou et al. 2023, "ImbSAM: A Closer Look at Sharpness-Aware Minimization in
  Class-Imbalanced Recognition", ICCV): the batch loss, a sum of per-sample terms, splits into the
  head's (samples of the head classes) and the tail's (samples of the tail classes: here the run's
  minority group); only the tail's share gets the sharpness-aware gradient:
  grad = g_H(w) + g_T(w + e_T), e_T = rho * g_T(w) / (||g_T(w)|| + 1e-16).
  Reference: github.com/cool-xuan/Imbalanced_SAM, `utils/trainval.py` (`forbackward`, optim_mode
  'imbsam': head_loss = loss[~tail_mask].sum() / N backward with retain_graph -> `first_step` keeps
  the head gradient; tail_loss = loss[tail_mask].sum() / N backward -> `second_step` perturbs by
  e_T; a second forward, tail loss backward -> `third_step` p -= e_T, p.grad += head gradient,
  optimizer.step()) and `imbsam.py` (class `ImbSAM`; its norm epsilon 1e-16).

The loop's contract: a stepper's `step(first_terms, y, terms_at)` runs after the first forward,
the first backward of `first_terms.sum()` (the full batch gradient at w is in `.grad`, DDP-averaged
under torchrun) and the recorder; it finishes the optimiser step and leaves the gradients None.
`first_terms` are the (N,) per-sample terms of the batch loss (their sum is the loss), `terms_at()`
runs the forward pass and the terms again at the current weights. `keeps_graph` says whether the
first backward must retain its graph (ImbSAM backpropagates the tail's share through it once more).

Differences from the references (none changes the update in exact arithmetic):
- ImbSAM's head and tail gradients at w come from one backward of the whole loss (the loop's, whose
  gradient the recorder reads) plus one `torch.autograd.grad` of the tail's share through the kept
  graph: g_T(w) directly, g_H(w) = g(w) - g_T(w), where the reference runs two backward passes (head,
  then tail). Same count of backward passes (three per step), same gradients up to rounding.
- The tail mask is a float multiplier on the per-sample terms rather than boolean indexing
  (`loss[tail_mask]`, `logits[tail_mask]`), so no step syncs the host on CUDA. The second forward
  runs on the whole batch as in the reference (`model(images)`), then masks. A batch with no tail
  sample gets g_T = 0, e_T = 0 (0 * rho / 1e-16) and so the plain SGD step on the head loss, as the
  reference does.
- Under torchrun the reference has no DDP path. Here SAM's e is computed from the DDP-averaged
  gradient (every rank perturbs alike: SAM over the global batch, not davda54's per-rank
  "m-sharpness" under `no_sync`), and the second backward goes through DDP as usual. ImbSAM's
  `torch.autograd.grad` does not pass DDP's gradient all-reduce (DDP reduces in the hooks of the
  parameters' gradient accumulation, which `autograd.grad` does not run), so this module averages
  g_T over the ranks itself (one all_reduce of the flattened g_T); g_H = g - g_T is then the same
  on every rank, and the third backward goes through DDP.

Nothing in a step syncs the host on CUDA (no `.item()`, no boolean indexing, no Python branch on
tensor values): the norms, scales and masks stay on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from trainer import distributed
from trainer.options import OPTIMIZERS

SAM_EPS = 1e-12     # davda54/sam, sam.py first_step: rho / (grad_norm + 1e-12)
IMBSAM_EPS = 1e-16  # cool-xuan/Imbalanced_SAM, imbsam.py ImbSAM.second_step: norm(...) + 1.e-16

TermsAt = Callable[[], torch.Tensor]


class Stepper(Protocol):
    keeps_graph: bool

    def step(self, first_terms: torch.Tensor, y: torch.Tensor, terms_at: TermsAt) -> None:
        """Finish the optimiser step after the first backward (see the module docstring)."""


def make_stepper(name: str, opt: torch.optim.Optimizer, params: Sequence[torch.Tensor],
                 rho: float, minority: torch.Tensor) -> Stepper:
    """The stepper of `--optimizer name`: `params` the trainable parameters (those `opt` steps),
    `rho` the perturbation radius, `minority` the (C,) bool tensor of the minority classes on the
    device (ImbSAM's tail)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")
    if name == "sgd":
        return SGDStep(opt)
    if not rho > 0:
        raise ValueError(f"rho must be > 0 for {name}, got {rho}")
    if name == "sam":
        return SAMStep(opt, params, rho)
    return ImbSAMStep(opt, params, rho, minority)


def _global_norm(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """||g|| over all parameters, as both references take it: the norm of the per-tensor norms."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(grads))))


class SGDStep:
    """The base optimiser's step as it is."""

    keeps_graph = False

    def __init__(self, opt: torch.optim.Optimizer) -> None:
        self.opt = opt

    def step(self, first_terms: torch.Tensor, y: torch.Tensor, terms_at: TermsAt) -> None:
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


class SAMStep:
    """SAM (Foret et al. 2021) as davda54/sam's first_step / second_step, adaptive off."""

    keeps_graph = False

    def __init__(self, opt: torch.optim.Optimizer, params: Sequence[torch.Tensor],
                 rho: float) -> None:
        self.opt, self.params, self.rho = opt, list(params), float(rho)

    def step(self, first_terms: torch.Tensor, y: torch.Tensor, terms_at: TermsAt) -> None:
        # first_step: e_w = p.grad * rho / (||g|| + 1e-12); p += e_w (params without a gradient
        # are skipped, as the reference's `if p.grad is None: continue`)
        with torch.no_grad():
            ps = [p for p in self.params if p.grad is not None]
            grads = [p.grad for p in ps]
            scale = self.rho / (_global_norm(grads) + SAM_EPS)
            e_w = torch._foreach_mul(grads, scale)
            torch._foreach_add_(ps, e_w)
        self.opt.zero_grad(set_to_none=True)
        # the gradient at w + e
        terms_at().sum().backward()
        # second_step: back to w, then the base optimiser's step with the gradient at w + e
        with torch.no_grad():
            torch._foreach_sub_(ps, e_w)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


class ImbSAMStep:
    """ImbSAM (Zhou et al. 2023) as cool-xuan/Imbalanced_SAM's forbackward / ImbSAM steps."""

    keeps_graph = True

    def __init__(self, opt: torch.optim.Optimizer, params: Sequence[torch.Tensor], rho: float,
                 minority: torch.Tensor) -> None:
        self.opt, self.params, self.rho = opt, list(params), float(rho)
        self.minority = minority.to(dtype=torch.bool)

    def step(self, first_terms: torch.Tensor, y: torch.Tensor, terms_at: TermsAt) -> None:
        ps = self.params
        tail = self.minority[y].to(first_terms.dtype)  # (N,) 1 for a tail (minority) sample
        # the tail's share of the loss at w, backpropagated through the first pass's kept graph
        # (a batch without a tail sample: the zero gradient, as the reference's empty-mask sum)
        g_t = list(torch.autograd.grad((first_terms * tail).sum(), ps, allow_unused=True,
                                       materialize_grads=True))
        with torch.no_grad():
            g_t = _shared_mean(g_t)  # autograd.grad is not DDP-reduced: average over the ranks
            g = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ps]
            g_h = torch._foreach_sub(g, g_t)  # the head's gradient at w (reference: first_step)
            # second_step: e_T = rho * g_T / (||g_T|| + 1e-16); p += e_T
            scale = self.rho / (_global_norm(g_t) + IMBSAM_EPS)
            e_t = torch._foreach_mul(g_t, scale)
            torch._foreach_add_(ps, e_t)
            del g, g_t
        self.opt.zero_grad(set_to_none=True)
        # the tail's share at w + e_T (second forward over the whole batch, the head's rows masked)
        (terms_at() * tail).sum().backward()
        # third_step: back to w, add the head's gradient at w, the base optimiser's step
        with torch.no_grad():
            torch._foreach_sub_(ps, e_t)
            for p, gh in zip(ps, g_h):
                if p.grad is None:  # not reached by the tail's graph: the head's gradient alone
                    p.grad = gh
                else:
                    p.grad.add_(gh)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def _shared_mean(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """The mean over the ranks of per-rank gradients (what DDP does to .grad): one all_reduce of
    the flattened tensors; the tensors themselves in one process."""
    w = distributed.world_size()
    if w == 1:
        return grads
    flat = distributed.dist_sum_(torch.cat([g.reshape(-1) for g in grads])).div_(w)
    return [f.view_as(g) for f, g in zip(flat.split([g.numel() for g in grads]), grads)]
