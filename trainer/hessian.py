"""Sharpness per group: the extreme eigenvalues of the Hessian of each group's training loss.

Rangwani et al. 2022 ("Escaping Saddle Points for Effective Generalization on Class-Imbalanced
Data", NeurIPS) report the Hessian spectrum of the loss of each class group and find that the
minority (tail) classes' loss ends at saddle points and sharp regions: a large top eigenvalue and
a clearly negative bottom one. `--sharpness-every N` records, after the evaluation of epoch 0 and
of every N-th epoch, for each group (majority, minority):

- the loss: L_g(w) = mean cross-entropy of the model's logits over a fixed subset of the group's
  training samples (`--sharpness-samples`, default 512 per group; the whole group when it is
  smaller). The subset is drawn once per run, from a CPU generator seeded with `--subset-seed`
  (`group_subsets`), so runs that differ only in `--seed` measure the same samples. Plain
  cross-entropy whatever the training objective, no augmentation, no mixup, float32 (no bf16
  autocast), and the model in eval mode: BatchNorm uses its running statistics, so L_g is a
  deterministic function of the weights alone (in training mode it would depend on the batch
  statistics of the subset, a different function).
- w: every parameter of the model, frozen ones too (a second stage's feature extractor), so the
  values stay comparable across stages. The model itself is not touched: the loss is evaluated
  with `torch.func.functional_call` on detached copies of its parameters.
- lambda_max and lambda_min of H = d^2 L_g / dw^2 from Hessian-vector products (Pearlmutter
  1994): g = dL/dw once with create_graph, then each product H v = d(g . v)/dw, a second
  torch.autograd.grad on the kept graph. Power iteration on H (as PyHessian, Yao et al. 2020,
  which Rangwani et al. use; `ITERS` = 20 products at most, or until the estimate changes by
  less than `TOL` = 1e-3 relative) converges to the eigenvalue of largest magnitude; a Lanczos
  run of as many products at most gives the extreme Ritz values, the smallest of which is
  lambda_min's estimate. Every value is a Rayleigh quotient of H, so lambda_max (the larger of
  the power iteration's value and the largest Ritz value) is a lower bound on the true top
  eigenvalue and lambda_min (the smaller of the two) an upper bound on the true bottom one.
  Power iteration on H - lambda_max I, the textbook way to the bottom, does not converge in 20
  products on these spectra (mostly near 0: on MNIST-1D's cnn1d after one epoch it gave -0.03
  where Lanczos converges to -10); Lanczos with 20 products came within 2-3% of the converged
  value there (`extreme_eigenvalues`).

Cost per recorded epoch: for each of the two groups, one forward and backward with create_graph
over its subset, then at most 20 + 20 Hessian-vector products (each costs about 3-6 times a
forward-backward pass over the subset on a CPU). The memory is that of a double-backward graph
over the subset, which is one batch. Measured (MNIST-1D, cnn1d, 512 samples, 2 busy CPU cores):
~25-30 s per recorded epoch, about one epoch of training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ITERS = 20   # Hessian-vector products per power iteration, at most
TOL = 1e-3   # ...or fewer, once the estimate changes by less than this (relative)
GROUPS = ("majority", "minority")

Loss = Callable[[], torch.Tensor]  # the scalar loss as a differentiable function of `params`


# ==== Hessian-vector products and power iteration =================================================

class HessianOperator:
    """v -> H v for the Hessian of loss_fn() with respect to params, H v = d(g . v)/dw with the
    gradient g computed once with create_graph (each product reuses its graph)."""

    def __init__(self, loss_fn: Loss, params: Sequence[torch.Tensor]) -> None:
        self.params = list(params)
        self.loss = loss_fn()
        self.grads = torch.autograd.grad(self.loss, self.params, create_graph=True)
        self.products = 0

    def __call__(self, v: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        self.products += 1
        hv = torch.autograd.grad(self.grads, self.params, grad_outputs=list(v),
                                 retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if h is None else h.detach() for p, h in zip(self.params, hv)]


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def _random_unit(params: Sequence[torch.Tensor], seed: int) -> list[torch.Tensor]:
    """A fixed random unit vector shaped like params (drawn on the CPU: the same on any device)."""
    gen = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for p in params]
    norm = torch.sqrt(_dot(v, v))
    return [x / norm for x in v]


def power_iteration(hvp: Callable[[Sequence[torch.Tensor]], list[torch.Tensor]],
                    params: Sequence[torch.Tensor], shift: float = 0.0, iters: int = ITERS,
                    tol: float = TOL, seed: int = 0) -> tuple[float, int]:
    """Power iteration on H - shift I, which converges to the eigenvector of its eigenvalue of
    largest magnitude; returns the Rayleigh quotient v^T H v of H itself at the last iterate
    (that eigenvalue of H, the shift added back), after `iters` products or once it changes by
    less than `tol` relative (the unshifted value's change: a large shift would otherwise hide
    it), and the products used."""
    v = _random_unit(params, seed)
    value = math.nan
    for k in range(1, iters + 1):
        hv = hvp(v)
        new = float(_dot(v, hv))  # v^T H v (|v| = 1)
        if shift:
            hv = [h - shift * x for h, x in zip(hv, v)]
        norm = float(torch.sqrt(_dot(hv, hv)))
        if not (math.isfinite(new) and math.isfinite(norm)):
            return math.nan, k
        if norm == 0.0:  # v is an eigenvector of H with eigenvalue `shift` exactly
            return new, k
        converged = k > 1 and abs(new - value) <= tol * abs(new)
        value = new
        if converged:
            break
        v = [h / norm for h in hv]
    return value, k


@dataclass(frozen=True)
class Eigen:
    lambda_max: float
    lambda_min: float
    iters: int          # Hessian-vector products of the power iteration
    iters_lanczos: int  # ... and of the Lanczos run


def lanczos(hvp: Callable[[Sequence[torch.Tensor]], list[torch.Tensor]],
            params: Sequence[torch.Tensor], steps: int = ITERS, tol: float = TOL, seed: int = 1
            ) -> tuple[float, float, int]:
    """The extreme Ritz values (smallest, largest) of H after at most `steps` Lanczos steps (one
    product each; full reorthogonalisation), stopping early once the smallest changes by less
    than `tol` relative; and the products used. Ritz values lie in [lambda_min, lambda_max]: the
    smallest is an upper bound on lambda_min, the largest a lower bound on lambda_max, each at
    least as close as power iteration's Rayleigh quotient after as many products from the same
    start (its Krylov space holds the power iterate)."""
    shapes, sizes = [p.shape for p in params], [p.numel() for p in params]

    def flat(vs: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([v.reshape(-1) for v in vs])

    q = flat(_random_unit(params, seed))
    basis: list[torch.Tensor] = []
    alpha: list[float] = []
    beta: list[float] = []
    low, high, previous = math.nan, math.nan, math.nan
    k = 0
    for k in range(1, steps + 1):
        basis.append(q)
        w = flat(hvp([c.view(s) for c, s in zip(torch.split(q, sizes), shapes)]))
        alpha.append(float(w @ q))
        if not math.isfinite(alpha[-1]):
            return math.nan, math.nan, k
        Q = torch.stack(basis)
        for _ in range(2):  # full reorthogonalisation, twice (Kahan-Parlett)
            w = w - Q.T @ (Q @ w)
        ritz = np.linalg.eigvalsh(np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1))
        low, high = float(ritz[0]), float(ritz[-1])
        b = float(torch.linalg.vector_norm(w))
        if b <= 1e-7 * max(abs(low), abs(high), 1e-30):  # an invariant subspace: exact
            break
        if k > 1 and abs(low - previous) <= tol * abs(low):
            break
        previous = low
        beta.append(b)
        q = w / b
    return low, high, k


def extreme_eigenvalues(model: torch.nn.Module, loss_fn: Loss, params: Sequence[torch.Tensor],
                        iters: int = ITERS, tol: float = TOL) -> Eigen:
    """lambda_max and lambda_min of the Hessian of loss_fn() (a function of params, which must
    require grad). Power iteration on H (`iters` products at most, `tol`) converges to the
    eigenvalue of largest magnitude; `iters` Lanczos steps at most give the extreme Ritz values.
    Every one of these is a Rayleigh quotient of H, so lambda_max = the larger of the power
    iteration's value and the largest Ritz value (both lower bounds on the true one), lambda_min
    = the smaller of it and the smallest Ritz value (both upper bounds): this holds whichever
    end dominates (at initialisation the negative one can: the power iteration then mixes the
    two ends and its value alone says little). Power iteration on H - mu I
    finds the other end too, but converges far too slowly for a budget of 20 products (its ratio
    (mu - lambda_2nd) / (mu - lambda_min) is near 1 for a spectrum crowded near 0: on MNIST-1D's
    cnn1d after one epoch it gave -0.03 where Lanczos converges to -10). The model is in eval mode
    meanwhile (BatchNorm's running statistics: the loss is a deterministic function of the
    weights), and back in its own modes after."""
    with _eval_mode(model), torch.enable_grad():
        hvp = HessianOperator(loss_fn, params)
        if not torch.isfinite(hvp.loss):
            return Eigen(math.nan, math.nan, 0, 0)
        mu, k1 = power_iteration(hvp, params, 0.0, iters, tol, seed=0)
        if not math.isfinite(mu):
            return Eigen(math.nan, math.nan, k1, 0)
        low, high, k2 = lanczos(hvp, params, iters, tol, seed=1)
        return Eigen(max(mu, high), min(mu, low), k1, k2)


def top_eigenvalue(model: torch.nn.Module, loss_fn: Loss, params: Sequence[torch.Tensor],
                   iters: int = ITERS, tol: float = TOL) -> float:
    """The largest eigenvalue of the Hessian of loss_fn() with respect to params."""
    return extreme_eigenvalues(model, loss_fn, params, iters, tol).lambda_max


def bottom_eigenvalue(model: torch.nn.Module, loss_fn: Loss, params: Sequence[torch.Tensor],
                      iters: int = ITERS, tol: float = TOL) -> float:
    """The smallest (most negative) eigenvalue of the Hessian of loss_fn()."""
    return extreme_eigenvalues(model, loss_fn, params, iters, tol).lambda_min


class _eval_mode:
    """The model in eval mode inside the block; every module's own mode restored after (a
    second stage keeps its feature extractor in eval mode while the classifier trains)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.modes: list[tuple[torch.nn.Module, bool]] = []

    def __enter__(self) -> None:
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc: Any) -> None:
        for m, training in self.modes:
            m.training = training


# ==== a group's loss ==============================================================================

def group_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
               ) -> tuple[Loss, list[torch.Tensor]]:
    """The mean cross-entropy of the model on (x, y) as a function of detached copies of every
    parameter of the model (frozen ones too), and those copies: the model is left untouched."""
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for _, p in model.named_parameters()]

    def loss_fn() -> torch.Tensor:
        logits = torch.func.functional_call(model, dict(zip(names, params)), (x,))
        return F.cross_entropy(logits, y.long())  # float32 (autocast off: group_eigen)

    return loss_fn, params


def group_eigen(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, iters: int = ITERS,
                tol: float = TOL) -> Eigen:
    """lambda_max and lambda_min of the Hessian of the mean cross-entropy on (x, y), float32."""
    with torch.autocast(x.device.type, enabled=False):
        loss_fn, params = group_loss(model, x, y)
        return extreme_eigenvalues(model, loss_fn, params, iters, tol)


def group_subsets(y: torch.Tensor, minority: np.ndarray, n: int, seed: int
                  ) -> dict[str, torch.Tensor]:
    """{group: rows of the training tensors}: up to n of the group's samples, drawn without
    replacement by a CPU generator seeded with `seed` (the majority's draw first), in row order.
    `minority` is (C,) bool, the class is in the minority group."""
    labels = y.detach().cpu().long()
    in_minority = torch.as_tensor(np.asarray(minority, dtype=bool))[labels]
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for grp in GROUPS:
        rows = torch.nonzero(in_minority == (grp == "minority")).flatten()
        pick = rows[torch.randperm(len(rows), generator=gen)[:n]]
        out[grp] = pick.sort().values.to(y.device)
    return out


# ==== the recorder's lens =========================================================================

@dataclass
class GroupSharpness:
    """What the recorder needs for the `sharpness` table: how often, and each group's fixed
    subset as model inputs (prepared: images normalised) and labels."""

    every: int
    subsets: Mapping[str, tuple[torch.Tensor, torch.Tensor]]  # grp -> (x, y)
    iters: int = ITERS
    tol: float = TOL

    def due(self, epoch: int) -> bool:
        """After the evaluation of epoch 0 and of every `every`-th epoch."""
        return epoch % self.every == 0

    def rows(self, model: torch.nn.Module, epoch: int, step: int) -> dict[str, Any]:
        """The `sharpness` table columns of one evaluation: a row per group with samples."""
        cols: dict[str, list] = {k: [] for k in ("epoch", "step", "grp", "n", "lambda_max",
                                                 "lambda_min", "iters", "iters_lanczos")}
        for grp, (x, y) in self.subsets.items():
            if len(y) == 0:
                continue
            e = group_eigen(model, x, y, self.iters, self.tol)
            for k, v in (("epoch", epoch), ("step", step), ("grp", grp), ("n", len(y)),
                         ("lambda_max", e.lambda_max), ("lambda_min", e.lambda_min),
                         ("iters", e.iters), ("iters_lanczos", e.iters_lanczos)):
                cols[k].append(v)
        return {k: np.asarray(v) for k, v in cols.items()}


def make_sharpness(cfg: Any, data: Any) -> GroupSharpness | None:
    """The sharpness lens of a run (None: off). `cfg` a TrainConfig, `data` trainer.loop.Data (its
    x_train, y_train, groups and prepare). Off without --sharpness-every, with --dynamics off
    (nothing is recorded) and on every torchrun rank but the first (which alone writes)."""
    from trainer import distributed

    if cfg.sharpness_every is None or cfg.dynamics == "off" or not distributed.is_main():
        return None
    subsets = {}
    for grp, rows in group_subsets(data.y_train, data.groups == "minority",
                                   cfg.sharpness_samples, cfg.subset_seed).items():
        subsets[grp] = (data.prepare(data.x_train[rows]), data.y_train[rows])
    return GroupSharpness(cfg.sharpness_every, subsets)
