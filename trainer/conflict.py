"""Gradient conflict between the classes, and the directional noise of each group's mini-batch
gradient (`--conflict-every N`, with `--dynamics full`).

Francazi et al. (2023), "A Theoretical Analysis of the Learning Dynamics under Class Imbalance"
(ICML): under imbalance the per-class gradients conflict, and the mini-batch gradient's direction is
noisy for the minority. At steps 0, N, 2N, ... the recorder (trainer.recording.FullRecorder) keeps:

(a) `conflict`: the cosine between every two classes' gradients. Class c's gradient g_c is the
    full-model gradient (every trainable parameter) of the sum of its samples' terms of the batch
    loss, split as GradientProbe splits the groups: the backward pass of dLoss/dlogits with every
    other class's rows zeroed, through the graph the step's own backward kept (BatchNorm's coupling
    of the samples included). One extra backward pass per class, C in all, whichever classes the
    batch holds: a class absent from it has exactly no gradient, its cosines are NaN (NULL in the
    store), and no step waits for the device to learn which classes are present (under mixup a
    sample's term counts for its primary label, as every recorded statistic does). With C <= 20
    classes the whole C x C matrix is stored; with more, per group pair (majority/majority,
    majority/minority, minority/minority) the mean cosine over its distinct class pairs whose
    classes are both in the batch, with the number of those pairs.
(b) `direction`: per group, the cosine between the batch's group gradient (the sum of its classes'
    g_c) and the group's gradient over the whole long-tailed training set (`whole_set_gradients`):
    1 = the mini-batch points where the whole set does; the minority's, from a few samples, is
    expected to be the noisier.

The whole-set gradient of a group is the gradient of its samples' terms of the objective over the
whole training set, taken with the model in its current mode (in training: train mode, so
BatchNorm normalises with batch statistics, as the step's own gradient does), in chunks of at most
the training batch size. The chunks are strided (chunk j holds rows j, j + m, j + 2m, ... of the
training tensors, m the number of chunks), so each holds every class in its share of the set, as a
shuffled batch does in expectation. No augmentation and no mixup: the training tensors as stored,
through the loop's `prepare`. A train-mode forward would move BatchNorm's running statistics; the
pass switches their tracking off, so the run trains, evaluates and records exactly as without the
option. Cost per recorded step: C extra backward passes for (a), and one forward and two backward
passes over the training set for (b).

Cosines are taken in float64 and clamped to [-1, 1] (trainer.dynamics.group_cosines says why); a
class's cosine with itself is 1 exactly. Under torchrun the class gradients are averaged across
ranks as DDP averages .grad, and each rank takes the whole-set pass itself (the same numbers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from trainer.distributed import dist_sum_, mean_divisor
from trainer.dynamics import GROUPS, nan_to_none, shared_mean

FULL_MATRIX_MAX = 20  # classes up to which the whole C x C matrix is stored, else group pairs
GROUP_PAIRS = (("majority", "majority"), ("majority", "minority"), ("minority", "minority"))
_GRAM_BLOCK = 1 << 24  # elements of one float64 block of the Gram matrix's product

Columns = dict[str, Any]


# ==== (a) the classes' gradients and their cosines ================================================

def class_gradients(logits: torch.Tensor, y: torch.Tensor, n_classes: int,
                    params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each class's gradient of its samples' terms of the batch loss, (C, P) float32, and each
    class's samples in the batch, (C,) float32 (under torchrun both the global batch's).

    After `loss.backward(retain_graph=True)` with `logits.retain_grad()`: row c is the backward
    pass of dLoss/dlogits with the rows of the other classes zeroed, through the kept graph (one
    per class; the graph stays, for whoever backpropagates next). A class absent from the batch
    gets an exactly zero row. `.grad` is left as it is (the optimiser's input)."""
    d = logits.grad
    rows = []
    for c in range(n_classes):
        mine = (y == c)[:, None].to(d.dtype)  # a device-side mask: no host synchronisation
        grads = torch.autograd.grad(logits, params, d * mine, retain_graph=True,
                                    allow_unused=True, materialize_grads=True)
        rows.append(torch.cat([g.reshape(-1).float() for g in grads]))
    with torch.no_grad():
        g = shared_mean(torch.stack(rows))
        counts = torch.zeros(n_classes, device=y.device).index_add_(
            0, y, torch.ones(len(y), device=y.device))
        counts = dist_sum_(counts)
        # a class absent from the (global) batch has exactly no gradient
        return g * (counts > 0)[:, None], counts


@torch.no_grad()
def cosine_matrix(g: torch.Tensor) -> torch.Tensor:
    """(C, C) float64 cosines between the rows of `g` (C, P): the Gram matrix in float64 (in
    blocks of columns, so that a large model needs no float64 copy of the whole of `g`), divided
    by the norms, clamped to [-1, 1]; NaN where a row is zero; 1 exactly on the diagonal; exactly
    symmetric (the upper triangle mirrored: a matrix product may round (a, b) and (b, a) apart)."""
    c, p = g.shape
    gram = torch.zeros(c, c, dtype=torch.float64, device=g.device)
    step = max(1, _GRAM_BLOCK // max(1, c))
    for j in range(0, p, step):
        block = g[:, j:j + step].double()
        gram += block @ block.T
    gram = gram.triu() + gram.triu(1).T
    norms = gram.diagonal().clamp_min(0).sqrt()
    cos = (gram / (norms[:, None] * norms[None, :])).clamp(-1.0, 1.0)  # 0 / 0 = NaN: absent
    eye = torch.eye(c, dtype=torch.bool, device=g.device)
    return torch.where(eye & (norms > 0)[:, None], torch.ones_like(cos), cos)


@torch.no_grad()
def row_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of each row of `a` with the same row of `b`, in float64, clamped to [-1, 1] (NaN
    where either row is zero)."""
    a, b = a.double(), b.double()
    return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).clamp(-1.0, 1.0)


def group_pair_means(cos: np.ndarray, minority: np.ndarray) -> list[tuple[str, str, float, int]]:
    """Per group pair (GROUP_PAIRS), the mean of the defined cosines over its distinct class
    pairs (a < b within a group; every majority class with every minority class between them)
    and how many pairs that is: (grp_a, grp_b, mean or NaN, pairs)."""
    minority = np.asarray(minority, dtype=bool)
    member = {"majority": ~minority, "minority": minority}
    upper = np.triu(np.ones(cos.shape, dtype=bool), 1)
    out = []
    for ga, gb in GROUP_PAIRS:
        pair = np.outer(member[ga], member[gb])
        pair = (pair & upper) if ga == gb else (pair | pair.T) & upper
        vals = cos[pair]
        vals = vals[np.isfinite(vals)]
        out.append((ga, gb, float(vals.mean()) if len(vals) else float("nan"), len(vals)))
    return out


# ==== (b) the whole training set's group gradients ================================================

def chunk_normaliser(criterion: Any, y: torch.Tensor, epoch: int) -> torch.Tensor:
    """What the objective's per-sample terms of a chunk are divided by (trainer.losses.
    weighted_terms): the class-weight sum of the chunk for a class-weighted loss averaged as
    `weighted-mean`, else the chunk's size (a constant factor of it, such as SoftmaxBCE's C, only
    scales the whole gradient). Multiplying a chunk's terms by it gives terms that add up over the
    chunks to the objective of the whole set, up to one constant factor."""
    weight = criterion.weight_at(epoch) if hasattr(criterion, "weight_at") else None
    if (weight is not None and getattr(criterion, "name", None) != "focal"
            and getattr(criterion, "reduction", None) == "weighted-mean"):
        return mean_divisor(weight[y].sum()).double()
    return torch.full((), float(len(y)), dtype=torch.float64, device=y.device)  # no host copy


@contextlib.contextmanager
def running_stats_frozen(model: torch.nn.Module):
    """BatchNorm layers that track running statistics stop tracking them for the block: in train
    mode they still normalise with the batch's statistics but leave the running ones (and the
    retained graph that saved them) untouched; in eval mode they use the running ones as
    always."""
    layers = [m for m in model.modules()
              if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in layers:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in layers:
            m.track_running_stats = True


def whole_set_gradients(model: torch.nn.Module, params: Sequence[torch.Tensor], x: torch.Tensor,
                        y: torch.Tensor, minority: torch.Tensor, criterion: Any, epoch: int,
                        batch: int, prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
                        autocast: Callable[[], contextlib.AbstractContextManager]
                        = contextlib.nullcontext) -> torch.Tensor:
    """(2, P) float64: the majority's and the minority's gradient (GROUPS order) of their samples'
    terms of `criterion` over all of (x, y), in strided chunks of at most `batch` rows, `model` in
    its current mode, its BatchNorm running statistics untouched (module docstring). Scaled as the
    gradient of the objective over the whole set (the chunks' normalisers summed). `.grad` is left
    as it is."""
    n = len(y)
    m = -(-n // batch)  # chunks
    member = minority.to(device=y.device, dtype=torch.bool)
    total = torch.zeros(len(GROUPS), sum(p.numel() for p in params), dtype=torch.float64,
                        device=y.device)
    norm = torch.zeros((), dtype=torch.float64, device=y.device)
    with running_stats_frozen(model):
        for j in range(m):
            xb, yb = x[j::m], y[j::m]
            if prepare is not None:
                xb = prepare(xb)
            with autocast():
                logits = model(xb)
            scale = chunk_normaliser(criterion, yb, epoch)
            terms = criterion.terms(logits, yb, epoch) * scale.float()
            minor = member[yb]
            for i, mask in enumerate((~minor, minor)):
                grads = torch.autograd.grad((terms * mask).sum(), params, retain_graph=i == 0,
                                            allow_unused=True, materialize_grads=True)
                total[i] += torch.cat([g.reshape(-1) for g in grads]).double()
            norm += scale
    return total / norm


def whole_set_of(run: Any, epoch: int, minority: torch.Tensor) -> torch.Tensor:
    """`whole_set_gradients` of a loop.Training `run` at `epoch`: its model's trainable
    parameters, its training tensors and `prepare`, its objective and autocast, chunks of its batch
    size. What the loop hands the recorder as Subject.whole_set, through a lambda that reads the
    loop's current `run` (the second stage replaces it, with its own objective)."""
    d = run.data
    params = [p for p in run.model.parameters() if p.requires_grad]
    return whole_set_gradients(run.model, params, d.x_train, d.y_train, minority, run.criterion,
                               epoch, run.cfg.batch_size, d.prepare, run.autocast)


# ==== the recorder's part =========================================================================

WholeSet = Callable[[int, torch.Tensor], torch.Tensor]  # (epoch, minority mask) -> (2, P)


class ConflictRecorder:
    """Every `every` steps, (a) the class-gradient cosines and (b) each group's batch-vs-whole-set
    cosine (when `whole_set` is given), buffered on the device until `drain` (once per epoch)."""

    def __init__(self, minority: np.ndarray, every: int, device: torch.device,
                 whole_set: WholeSet | None = None) -> None:
        self.minority = np.asarray(minority, dtype=bool)
        self.n_classes = len(self.minority)
        self.every, self.whole_set = every, whole_set
        self.mask = torch.as_tensor(self.minority, device=device)  # (C,) the class is minority
        self.member = torch.stack([~self.mask, self.mask]).float()  # (2, C) in GROUPS order
        self.steps: list[int] = []
        self.epochs: list[int] = []
        self.cos: list[torch.Tensor] = []        # (C, C) float64 per recorded step
        self.direction: list[torch.Tensor] = []  # (2,) float64 per recorded step
        self.counts: list[torch.Tensor] = []     # (2,) the groups' samples in the batch

    def __len__(self) -> int:
        return len(self.steps)

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def record(self, step: int, epoch: int, logits: torch.Tensor, y: torch.Tensor,
               params: list[torch.Tensor]) -> None:
        """After the step's backward pass kept its graph, before the optimiser step."""
        g, counts = class_gradients(logits, y, self.n_classes, params)
        self.cos.append(cosine_matrix(g))
        if self.whole_set is not None:
            full = self.whole_set(epoch, self.mask)
            with torch.no_grad():
                self.direction.append(row_cosines(self.member @ g, full))
                self.counts.append(self.member @ counts)
        self.steps.append(step)
        self.epochs.append(epoch)

    def drain(self) -> dict[str, Columns | None]:
        """The `conflict` and `direction` tables' columns (None: nothing buffered); empties the
        buffers."""
        if not self.steps:
            return {"conflict": None, "direction": None}
        cos = torch.stack(self.cos).cpu().numpy()
        grp = np.where(self.minority, "minority", "majority")
        c, k = self.n_classes, len(self.steps)
        if c <= FULL_MATRIX_MAX:  # the whole matrix: a row per ordered class pair
            flat = cos.reshape(-1)
            conflict: Columns = {
                "step": np.repeat(np.asarray(self.steps, dtype=np.int64), c * c),
                "epoch": np.repeat(np.asarray(self.epochs, dtype=np.int32), c * c),
                "class_a": np.tile(np.repeat(np.arange(c, dtype=np.int32), c), k),
                "class_b": np.tile(np.arange(c, dtype=np.int32), c * k),
                "grp_a": list(np.tile(np.repeat(grp, c), k)),
                "grp_b": list(np.tile(grp, c * k)),
                "pairs": np.isfinite(flat).astype(np.int64),
                "cos": nan_to_none(flat)}
        else:  # per group pair, the mean over its class pairs
            rows = [(s, e, *means) for s, e, m in zip(self.steps, self.epochs, cos)
                    for means in group_pair_means(m, self.minority)]
            conflict = {
                "step": np.asarray([r[0] for r in rows], dtype=np.int64),
                "epoch": np.asarray([r[1] for r in rows], dtype=np.int32),
                "class_a": [None] * len(rows), "class_b": [None] * len(rows),
                "grp_a": [r[2] for r in rows], "grp_b": [r[3] for r in rows],
                "pairs": np.asarray([r[5] for r in rows], dtype=np.int64),
                "cos": nan_to_none(np.asarray([r[4] for r in rows], dtype=np.float64))}
        direction = None
        if self.direction:
            d = torch.stack(self.direction).cpu().numpy().reshape(-1)
            n = torch.stack(self.counts).cpu().numpy().reshape(-1)
            direction = {
                "step": np.repeat(np.asarray(self.steps, dtype=np.int64), len(GROUPS)),
                "epoch": np.repeat(np.asarray(self.epochs, dtype=np.int32), len(GROUPS)),
                "grp": list(GROUPS) * k,
                "n": np.rint(n).astype(np.int64),
                "cos_to_full": nan_to_none(d)}
        self.steps, self.epochs, self.cos, self.direction, self.counts = [], [], [], [], []
        return {"conflict": conflict, "direction": direction}
