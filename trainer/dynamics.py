"""Per-class learning dynamics, accumulated on the device.

Per step (`StepRecorder`): sums over the batch by true class (n, loss, correct, p_true, margin) and by
predicted class (pred_count), the gradient norm of each classifier row, and that gradient split into
the part from the class's own samples and the part from the other classes' samples
(`classifier_grad_split`). Per sample (`SampleRecorder`): each training sample's correctness, p_true
and loss at its presentation, from the training forward pass. Every K steps (`GradientProbe`): the
full-model gradient of the majority's and of the minority's share of the batch loss. Per epoch
(`evaluate_features`, `geometry_tables`): the eval passes' per-class rows (with post-hoc logit
adjustment's correct counts for each tau, and the logit statistics: own, largest other and norm
of the logits, and prediction counts) and the geometry of the penultimate features (NC1-NC3 as
Papyan et al. 2020 define them, class-mean norms and cosines, minority collapse, train-vs-test
shift).

Everything is written into device buffers (`index_add_`, masked sums), never `.item()` / `.cpu()` /
`bincount`, so a step never waits for the device; the buffers go to the host once per flush. Under
torchrun every per-class or per-group number is either a sum (reduced across ranks by adding) or a
norm of a gradient already summed across ranks; per-sample rows are gathered, never summed.

Every buffer's last axis holds named statistics (`STEP_STATS`, `PROBE_STATS`, `EVAL_SUMS`,
`SAMPLE_KEYS`, `SAMPLE_VALS`), and the code reads and writes them through `Stats` by name, never by
position: reordering or extending a tuple of names cannot silently shift another statistic's values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainer.distributed import dist_gather, dist_sum_, eval_shard, reduce_stats_, world_size
from trainer.models import NormedLinear

STEP_STATS = ("n", "loss_sum", "correct", "p_true_sum", "margin_sum", "pred_count", "grad_norm",
              "grad_pos", "grad_neg")
# Norms of gradients every rank already holds whole (DDP averaged them; `shared_mean` averaged the
# split): a reduction across ranks keeps them instead of adding them up.
SHARED_STATS = ("grad_norm", "grad_pos", "grad_neg")
_INT_STATS = {"n", "correct", "pred_count"}


class Stats:
    """The names along a buffer's last axis and where each sits, so that code says which statistic
    it means, never at which position.

    `at(*names)` is where those names are, in that order: a slice when they sit side by side in that
    order (a view: assignment and in-place adds reach the buffer, in one operation), else a list of
    positions (assignment through it still writes the buffer; `index_add_` handles both).
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"statistic named twice in {self.names}")
        self.pos = {name: i for i, name in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, name: str) -> int:
        """The position of one statistic (a plain index: `buf[..., cols["n"]]` is a view)."""
        return self.pos[name]

    def at(self, *names: str) -> slice | list[int]:
        where = [self.pos[name] for name in names]
        if where and where == list(range(where[0], where[0] + len(where))):
            return slice(where[0], where[0] + len(where))
        return where

    def of(self, arr, name: str):
        """Statistic `name` of every row of `arr` (a tensor or array; its last axis is these)."""
        return arr[..., self.pos[name]]

    def index_add_(self, flat: torch.Tensor, names: Sequence[str], index: torch.Tensor,
                   src: torch.Tensor) -> None:
        """flat[index[i], name_j] += src[i, j] for every i in order: `flat` is (rows, len(self)),
        `src` (len(index), len(names)). Each element gets the same additions in the same order
        whether the names sit side by side (one index_add_ into a view) or not (one per name)."""
        where = self.at(*names)
        if isinstance(where, slice):
            flat[:, where].index_add_(0, index, src)
        else:
            for j, p in enumerate(where):
                flat[:, p].index_add_(0, index, src[:, j])


@torch.no_grad()
def per_sample_stats(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Cross-entropy, correctness, p(true class) and margin (true logit - best other) per sample."""
    logits = logits.detach().float()
    logp = logits.log_softmax(1)
    logp_true = logp.gather(1, y[:, None]).squeeze(1)
    z_true = logits.gather(1, y[:, None]).squeeze(1)
    best_other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    pred = logits.argmax(1)
    return -logp_true, (pred == y), logp_true.exp(), z_true - best_other, pred


def shared_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a per-rank gradient (what DDP does to .grad); `t` itself alone."""
    if world_size() == 1:
        return t
    return dist_sum_(t).div_(world_size())


def nan_to_none(values: np.ndarray) -> list[float | None]:
    """NaN (a cosine of a zero vector, a class absent from a split) as SQL NULL, not NaN: DuckDB's
    aggregates skip NULLs but NaN poisons them."""
    return [None if not math.isfinite(v) else float(v) for v in np.asarray(values, np.float64)]


# ==== per step, per class =========================================================================

@torch.no_grad()
def classifier_grad_split(fc: torch.nn.Module, h: torch.Tensor, dlogits: torch.Tensor,
                          y: torch.Tensor, total: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch loss's gradient w.r.t. each classifier row, split by the samples it comes from.

    With d = dLoss/dlogits and h the penultimate features, a linear classifier has
    dW_c = sum_i d_ic h_i; `pos` is the sum over the class's own samples (y_i = c), `neg` over all
    others, and pos + neg = dW. LDAM's cosine classifier (s * cos(h, w_c)) has
    dW_c = s / ||w_c|| (I - u_c u_c^T) sum_i d_ic h_i / ||h_i|| with u_c = w_c / ||w_c||: still a
    sum of per-sample terms, so the same split holds. `total` is dW when the caller has it (the
    classifier's .grad after backward): then neg = total - pos, one matmul fewer. Under torchrun
    both parts are the global batch's, as DDP's .grad is. Returns two (C, D) tensors.
    One step of `grad_split_steps`, which StepRecorder runs on every buffered step at once.
    """
    phi = h.detach().float()
    weights = fc.weight.detach().float()[None] if isinstance(fc, NormedLinear) else None
    pos, whole = grad_split_steps(fc, phi, dlogits.detach().float(), y,
                                  torch.zeros_like(y), 1, weights,
                                  total.float()[None] if total is not None else None)
    return pos[0], whole[0] - pos[0]


@torch.no_grad()
def grad_split_steps(fc: torch.nn.Module, phi: torch.Tensor, d: torch.Tensor, y: torch.Tensor,
                     slot: torch.Tensor, steps: int, weights: torch.Tensor | None = None,
                     whole: torch.Tensor | None = None, missing: Sequence[int] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """`classifier_grad_split` of `steps` steps at once: rows phi (features, float32), d
    (dLoss/dlogits) and y of every step, `slot` the step (0..steps-1) of each row; `weights`
    (steps, C, D) the rows of a cosine classifier at each step; `whole` (steps, C, D) each step's
    dW where the caller has it (the classifier's .grad), else computed from the rows, for every
    step or only for the steps in `missing` (written into the given `whole` in place). Returns
    (pos, whole), each (steps, C, D)."""
    c = d.shape[1]
    normed = isinstance(fc, NormedLinear)
    if normed:
        phi = F.normalize(phi, dim=1)
        w_norm = weights.norm(dim=2, keepdim=True).clamp_min(1e-12)  # F.normalize's eps
        u = weights / w_norm

    def row_grad(g: torch.Tensor, at: slice | list[int] = slice(None)) -> torch.Tensor:
        """(k, C, D) sums of d_ic phi_i -> each step's dW_c (`at`: which steps)."""
        if not normed:
            return g
        return fc.scale / w_norm[at] * (g - u[at] * (u[at] * g).sum(2, keepdim=True))

    # each sample adds d_i,y_i phi_i to its own step's and class's row: one index_add, not a
    # one-hot matmul
    own = torch.zeros(steps * c, phi.shape[1], device=phi.device, dtype=phi.dtype)
    own.index_add_(0, slot * c + y, phi * d.gather(1, y[:, None]))
    pos = shared_mean(row_grad(own.view(steps, c, -1)))
    if whole is None:
        whole, missing = torch.empty_like(pos), list(range(steps))
    if missing:  # sum_i d_ic phi_i of each of these steps
        sums = torch.stack([d[slot == k].T @ phi[slot == k] for k in missing])
        whole[missing] = shared_mean(row_grad(sums, missing))
    return pos, whole


class StepRecorder:
    """A (capacity, C, len(STEP_STATS)) device buffer of per-step per-class sums.

    Its last axis holds `stats` (by default `STEP_STATS`, any order of the same names), addressed
    through `self.stats` by name; a cross-rank reduction of `buf` names them with `self.stats.names`
    (`reduce_`).

    A step keeps its own logits, labels, penultimate features, dLoss/dlogits and classifier
    gradient (references, no copies: the next step makes new tensors, and the optimiser step
    replaces the gradient, as `zero_grad(set_to_none=True)` leaves it to the next backward pass),
    and copies only a cosine classifier's rows, which the optimiser step changes in place.
    `settle` (at the flush) computes the per-sample statistics and their per-class sums, and the
    gradient split (`grad_split_steps`), for all the kept steps at once. On a small model a step
    is a few milliseconds, and each tiny tensor operation inside it starts with cold caches after
    the backward pass, so a dozen of them per step would cost several percent; over a whole flush
    window they cost a few operations in all. A kept tensor changed in place before the settle
    is an error, not a silently wrong statistic (`settle` checks their version counters).
    """

    # bounds on the kept rows (logits, dLoss/dlogits and features: bytes as float32) and on the
    # kept classifier gradients and weights, so that many classes or wide features flush sooner
    LOGIT_BYTES = 64 * 2**20
    GRAD_BYTES = 64 * 2**20

    def __init__(self, n_classes: int, capacity: int, device: torch.device, fc: torch.nn.Module,
                 samples: SampleRecorder | None = None, stats: Sequence[str] | None = None
                 ) -> None:
        self.stats = Stats(STEP_STATS if stats is None else stats)
        if set(self.stats.names) != set(STEP_STATS):
            raise ValueError(f"stats {self.stats.names} are not an order of {STEP_STATS}")
        self.n_classes = n_classes
        self.fc = fc
        self.samples = samples  # gets each settled step's per-sample values, in order
        self.capacity = capacity
        self.device = device
        self.buf = torch.zeros(capacity, n_classes, len(self.stats), device=device)
        self.steps: list[int] = []
        self.epochs: list[int] = []
        self.lrs: list[float] = []
        # the steps not yet settled: (logits, y, h, dlogits, classifier gradient or None) of
        # each, and their version counters (None's: -1)
        self.kept: list[tuple[torch.Tensor | None, ...]] = []
        self.versions: list[tuple[int, ...]] = []
        self.rows = 0          # rows kept
        self.batch = 0         # rows of the largest step so far
        self.max_rows = 0      # LOGIT_BYTES in rows, set at the first record
        self.settled = 0       # step slots settled (the first kept step's slot)
        self.grad_steps = 0                          # GRAD_BYTES in steps, set at the first record
        self.weights: torch.Tensor | None = None     # (steps, C, D) a cosine classifier's rows

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def full(self) -> bool:
        """Time to flush: every step slot used, no room for another batch of rows, or no room
        for another step's classifier gradient."""
        return (len(self.steps) >= self.capacity
                or (self.max_rows > 0 and self.rows + self.batch > self.max_rows)
                or (self.grad_steps > 0 and len(self.steps) >= self.grad_steps))

    def record(self, step: int, epoch: int, lr: float, logits: torch.Tensor, y: torch.Tensor,
               fc_grad: torch.Tensor | None, h: torch.Tensor, dlogits: torch.Tensor) -> None:
        """Add one step: its logits, labels, penultimate features `h`, dLoss/dlogits and the
        classifier's gradient are kept for settle(). `fc_grad` None (rows that do not train):
        settle() computes the gradient they would receive. Runs once a step, so it only keeps
        references (detached: no graph) and their version counters."""
        if not self.max_rows:
            self._size(h.shape[1])
        logits, h, dlogits = logits.detach(), h.detach(), dlogits.detach()
        self.kept.append((logits, y, h, dlogits, fc_grad))
        self.versions.append((logits._version, y._version, h._version, dlogits._version,
                              -1 if fc_grad is None else fc_grad._version))
        self.rows += len(y)
        self.batch = max(self.batch, len(y))
        if self.weights is not None:  # a cosine classifier's rows at this step slot
            self.weights[len(self.steps)] = self.fc.weight.detach()
        self.steps.append(step)
        self.epochs.append(epoch)
        self.lrs.append(lr)

    def _size(self, dim: int) -> None:
        """At the first record: the bounds LOGIT_BYTES and GRAD_BYTES set for features of `dim`
        values, and a cosine classifier's weight buffer."""
        self.max_rows = max(1, self.LOGIT_BYTES // (4 * (2 * self.n_classes + dim)))
        w = self.fc.weight
        normed = isinstance(self.fc, NormedLinear)
        per_step = 4 * w.numel() * (2 if normed else 1)
        # within GRAD_BYTES: at least one step, at most the capacity
        self.grad_steps = max(1, min(self.capacity, self.GRAD_BYTES // per_step))
        if normed:
            self.weights = torch.empty(self.grad_steps, *w.shape, device=self.device)

    @torch.no_grad()
    def settle(self) -> None:
        """Per-sample statistics of the kept steps, summed per step and class into the buffer,
        and their gradient split; the rows' (loss, correct, p_true) go to the SampleRecorder, if
        any, in the order they were recorded. Whoever settles (the loop at a flush, `drain`), the
        samples get their values."""
        if not self.kept:
            return
        k0, k1 = self.settled, len(self.steps)
        if any(t is not None and t._version != v
               for kept, versions in zip(self.kept, self.versions)
               for t, v in zip(kept, versions)):
            raise RuntimeError("a recorded step's logits, labels, features, dLoss/dlogits or "
                               "classifier gradient were changed in place before the recorder "
                               "settled them")
        *per_row, grads = zip(*self.kept)
        logits, y, h, dl = (torch.cat(parts) for parts in per_row)
        missing = [k for k, g in enumerate(grads) if g is None]
        whole = None
        if len(missing) < len(grads):  # each step's .grad; the missing ones are filled in
            blank = torch.zeros_like(next(g for g in grads if g is not None))
            whole = torch.stack([blank if g is None else g for g in grads]).float()
        # each row's step slot, made on the host (torch.repeat_interleave with a tensor of
        # counts takes milliseconds here on a CPU)
        slot = torch.as_tensor(np.repeat(np.arange(k0, k1), [len(kept[1]) for kept in self.kept]),
                               device=self.device)
        loss, correct, p_true, margin, pred = per_sample_stats(logits.float(), y)
        flat = self.buf.view(-1, len(self.stats))  # row slot * C + class of buf
        ones = torch.ones_like(loss)
        by_true = {"n": ones, "loss_sum": loss, "correct": correct.float(), "p_true_sum": p_true,
                   "margin_sum": margin}
        self.stats.index_add_(flat, tuple(by_true), slot * self.n_classes + y,
                             torch.stack(list(by_true.values()), 1))
        self.stats.of(flat, "pred_count").index_add_(0, slot * self.n_classes + pred, ones)
        # the gradient split of the kept steps, all at once; its norms go into the buffer
        pos, whole = grad_split_steps(
            self.fc, h.float(), dl.float(), y, slot - k0, k1 - k0,
            self.weights[k0:k1] if self.weights is not None else None, whole, missing)
        for name, g in (("grad_norm", whole), ("grad_pos", pos), ("grad_neg", whole - pos)):
            self.buf[k0:k1, :, self.stats[name]] = g.norm(dim=2)  # each row's, over D
        self.kept, self.versions, self.rows, self.settled = [], [], 0, k1
        if self.samples is not None:
            self.samples.fill(y, loss, correct, p_true)

    def reduce_(self) -> None:
        """Under torchrun, the buffered steps' sums added up across ranks (the shared gradient
        norms kept as they are), by this buffer's own names; a no-op in one process."""
        reduce_stats_(self.buf[:len(self)], self.stats.names, same=SHARED_STATS)

    def drain(self) -> dict[str, np.ndarray]:
        """Host copy of the buffered steps as `steps` table columns (in `STEP_STATS` order);
        empties the buffer."""
        self.settle()
        k, c = len(self.steps), self.n_classes
        arr = self.buf[:k].cpu().numpy().astype(np.float64)
        self.buf[:k].zero_()
        cols: dict[str, np.ndarray] = {
            "step": np.repeat(np.asarray(self.steps, dtype=np.int64), c),
            "epoch": np.repeat(np.asarray(self.epochs, dtype=np.int32), c),
            "class_id": np.tile(np.arange(c, dtype=np.int32), k),
        }
        for name in STEP_STATS:
            v = self.stats.of(arr, name).reshape(-1)
            cols[name] = np.rint(v).astype(np.int64) if name in _INT_STATS else v
        cols["lr"] = np.repeat(np.asarray(self.lrs, dtype=np.float64), c)
        self.steps, self.epochs, self.lrs = [], [], []
        self.settled = 0
        return cols


# ==== per sample ==================================================================================

SAMPLE_KEYS = Stats(("sample_id", "class_id"))        # the long columns of a drained part
SAMPLE_VALS = Stats(("correct", "p_true", "loss"))    # the float ones


class SampleRecorder:
    """Each training sample at each presentation: its id (index into the dataset's original
    training arrays, stable across epochs), class, position in the batch and (correct, p_true,
    loss) from the training forward pass. A step keeps its batch's rows (a reference); `ids`
    (row of the training tensors -> sample id; None: the row is the id) maps them at the drain.
    The classes and values come with `fill`, from the StepRecorder that settles the same steps.
    Every step of an epoch has the same batch size."""

    def __init__(self, device: torch.device, ids: torch.Tensor | None = None) -> None:
        self.device, self.ids = device, ids
        self.rows: list[torch.Tensor] = []  # per step: the batch's rows of the training tensors
        self.ys: list[torch.Tensor] = []    # per settle: the classes of its steps' rows
        self.vals: list[torch.Tensor] = []  # per settle: (rows, len(SAMPLE_VALS)) of its steps
        self.steps: list[int] = []
        self.epochs: list[int] = []
        self.batch = 0                      # rows per step
        self.filled = 0                     # steps whose values have come (`fill`)

    def __len__(self) -> int:
        return len(self.steps)

    def record(self, step: int, epoch: int, rows: torch.Tensor) -> None:
        """Which samples the step presented; their classes and (correct, p_true, loss) come with
        `fill`."""
        if self.batch and len(rows) != self.batch:
            raise ValueError(f"a step of {len(rows)} samples after steps of {self.batch}: the "
                             "samples table needs one batch size")
        self.batch = len(rows)
        self.rows.append(rows)
        self.steps.append(step)
        self.epochs.append(epoch)

    @torch.no_grad()
    def fill(self, y: torch.Tensor, loss: torch.Tensor, correct: torch.Tensor,
             p_true: torch.Tensor) -> None:
        """The classes and values of the steps recorded since the last fill, row by row in order
        (the StepRecorder that holds this recorder calls it when it settles those same steps)."""
        self.ys.append(y)
        terms = {"correct": correct.float(), "p_true": p_true, "loss": loss}
        self.vals.append(torch.stack([terms[name] for name in SAMPLE_VALS.names], 1))
        self.filled += len(loss) // self.batch

    def drain(self) -> dict[str, np.ndarray]:
        """`samples` table columns of every rank's buffered rows (gathered); empties the buffer."""
        k = len(self.steps)
        if self.filled != k:
            raise RuntimeError(f"{k - self.filled} steps of samples drained before their values")
        b, w = self.batch, world_size()
        rows = torch.cat(self.rows)
        ids = rows if self.ids is None else self.ids[rows]
        parts = {"sample_id": ids, "class_id": torch.cat(self.ys)}
        keys = dist_gather(torch.stack([parts[name] for name in SAMPLE_KEYS.names], 1))
        keys = keys.cpu().numpy()
        vals = dist_gather(torch.cat(self.vals)).cpu().numpy().astype(np.float64)
        # gathered rank by rank; rank r holds positions r*b .. r*b+b-1 of each global batch
        cols = {
            "epoch": np.tile(np.repeat(np.asarray(self.epochs, dtype=np.int32), b), w),
            "step": np.tile(np.repeat(np.asarray(self.steps, dtype=np.int64), b), w),
            "pos": (np.repeat(np.arange(w, dtype=np.int32) * b, k * b)
                    + np.tile(np.arange(b, dtype=np.int32), k * w)),
            "sample_id": SAMPLE_KEYS.of(keys, "sample_id"),
            "class_id": SAMPLE_KEYS.of(keys, "class_id").astype(np.int32),
            "correct": SAMPLE_VALS.of(vals, "correct") > 0.5,
            "p_true": SAMPLE_VALS.of(vals, "p_true"), "loss": SAMPLE_VALS.of(vals, "loss"),
        }
        self.rows, self.ys, self.vals, self.steps, self.epochs = [], [], [], [], []
        self.filled = 0
        return cols


# ==== gradient probes =============================================================================

PROBE_STATS = ("n", "grad_norm", "cos_to_batch", "cos_other")
# what every rank already holds whole (norms and cosines of DDP-averaged gradients): kept, not added
PROBE_SHARED = ("grad_norm", "cos_to_batch", "cos_other")
GROUPS = ("majority", "minority")


@torch.no_grad()
def group_cosines(g: torch.Tensor, whole: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each group's gradient's cosine with the whole batch's, and the two groups' with each other.

    `g` is (2, P): the majority's and the minority's gradients; `whole` (P,) the batch's. The dot
    products and norms are taken in float64 (a float32 dot product of P terms is good only to
    about P * 1.2e-7 relative, and which CPU or GPU kernel sums it changes the last bits), then
    clamped to [-1, 1], since even float64 round-off can put the cosine of (near-)parallel vectors
    an ulp past 1. NaN (a zero gradient: a group absent from the batch) stays NaN. Clamped in
    float64, a cosine stays in [-1, 1] when stored as float32 (rounding is monotone, ±1 exact).
    """
    g, whole = g.double(), whole.double()
    norms = g.norm(dim=1)
    cos_batch = (g @ whole / (norms * whole.norm())).clamp(-1.0, 1.0)
    cos_other = ((g[0] @ g[1]) / (norms[0] * norms[1])).clamp(-1.0, 1.0)
    return cos_batch, cos_other.expand(2)


class GradientProbe:
    """Every K steps: the full-model gradient of each group's share of the batch loss.

    A group's share is its samples' terms of the objective (for a mean over the batch: the sum over
    the group's samples divided by the batch size), so the two shares add up to the batch loss and
    their gradients to the batch gradient. The gradient of a share is the backward pass of
    dLoss/dlogits with the other group's rows zeroed, through the graph the step's own backward
    kept: exactly the gradient of the masked loss (BatchNorm's coupling of the samples included).
    One extra backward pass gives the majority's; the minority's is the step's own gradient minus
    it, since backpropagation is linear in dLoss/dlogits. Recorded: the group's sample count, the
    gradient's norm, its cosine with the whole-batch gradient and with the other group's gradient.
    """

    def __init__(self, minority: torch.Tensor, capacity: int, device: torch.device,
                 stats: Sequence[str] | None = None) -> None:
        self.stats = Stats(PROBE_STATS if stats is None else stats)  # the buffer's last axis
        if set(self.stats.names) != set(PROBE_STATS):
            raise ValueError(f"stats {self.stats.names} are not an order of {PROBE_STATS}")
        self.minority = minority.to(device=device, dtype=torch.bool)  # (C,) class is minority
        self.capacity = capacity
        self.buf = torch.zeros(capacity, len(GROUPS), len(self.stats), device=device)
        self.steps: list[int] = []
        self.epochs: list[int] = []

    def __len__(self) -> int:
        return len(self.steps)

    def record(self, step: int, epoch: int, logits: torch.Tensor, y: torch.Tensor,
               params: list[torch.Tensor]) -> None:
        """After `loss.backward(retain_graph=True)` with `logits.retain_grad()`, before the
        optimiser step: the parameters' .grad is the whole batch's gradient (DDP-averaged)."""
        d = logits.grad
        minor = self.minority[y]
        # one extra backward: the majority's share; the minority's is the whole gradient minus it
        # (backpropagation is linear in dLoss/dlogits and the two masks partition the rows)
        grads = torch.autograd.grad(logits, params, d * (~minor)[:, None].to(d.dtype),
                                    retain_graph=True,  # the stepper may backpropagate again
                                    allow_unused=True, materialize_grads=True)
        with torch.no_grad():
            g_maj = shared_mean(torch.cat([g.reshape(-1).float() for g in grads]))
            whole = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p))
                               .reshape(-1).float() for p in params])
            # a group absent from the (global) batch has exactly no gradient, not a rounding residue
            present = dist_sum_(minor.sum().float().reshape(1)) > 0
            share = {"majority": g_maj, "minority": (whole - g_maj) * present}
            count = {"majority": (~minor).sum(), "minority": minor.sum()}
            g = torch.stack([share[grp] for grp in GROUPS])  # (2, P), all ranks'
            norms = g.norm(dim=1)
            cos_batch, cos_other = group_cosines(g, whole)
            row = self.buf[len(self.steps)]  # (groups, stats)
            values = {"n": torch.stack([count[grp] for grp in GROUPS]).float(),
                      "grad_norm": norms, "cos_to_batch": cos_batch, "cos_other": cos_other}
            for name in PROBE_STATS:
                self.stats.of(row, name)[:] = values[name]
        self.steps.append(step)
        self.epochs.append(epoch)

    def drain(self) -> dict[str, object]:
        """`probes` table columns (a majority and a minority row per probe); empties the buffer."""
        k = len(self.steps)
        reduce_stats_(self.buf[:k], self.stats.names, same=PROBE_SHARED)
        arr = self.buf[:k].cpu().numpy().astype(np.float64).reshape(k * len(GROUPS), -1)
        self.buf[:k].zero_()
        cols: dict[str, object] = {
            "step": np.repeat(np.asarray(self.steps, dtype=np.int64), len(GROUPS)),
            "epoch": np.repeat(np.asarray(self.epochs, dtype=np.int32), len(GROUPS)),
            "grp": list(GROUPS) * k,
            "n": np.rint(self.stats.of(arr, "n")).astype(np.int64),
        }
        for name in PROBE_STATS:
            if name != "n":
                cols[name] = nan_to_none(self.stats.of(arr, name))
        self.steps, self.epochs = [], []
        return cols


class WithFeatures(torch.nn.Module):
    """The training forward returning (penultimate features, logits), as a module's `forward`, so
    that DDP and torch.compile, which wrap `forward`, wrap the pass the recording reads."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_features(x)


# ==== per epoch ===================================================================================

@dataclass
class FeatureSums:
    """Sums of the penultimate features over an eval pass: per class, counts n (C,), sums of h
    (C, D) and of ||h||^2 (C,); and the within-class scatter sum_i r_i r_i^T (r_i = h_i -
    mu_c(i)) in the span of the class means, where NC1 reads it (`within_scatter`): `basis`
    (D, k) orthonormal columns spanning the present classes' means, `within` (k, k) the scatter
    in that basis. All float64, summed across ranks."""

    n: np.ndarray
    h: np.ndarray
    sq: np.ndarray
    basis: np.ndarray
    within: np.ndarray


# The per-class sums of an eval pass, all float64 (C, len(EVAL_SUMS)): sample count, correct count,
# sums of the loss, of p(true class), of ||h|| (feature_norm = its mean) and of ||h||^2 (in float64)
EVAL_SUMS = Stats(("n", "correct", "loss_sum", "p_true_sum", "norm_sum", "sq_norm_sum"))


# Post-hoc logit adjustment (Menon et al. 2021, "Long-tail learning via logit adjustment", ICLR;
# reference code google-research/google-research, logit_adjustment/main.py): after training with
# any loss, predict argmax_c z_c - tau * log pi_c, pi_c = n_c / N the class's share of the training
# set. An eval pass counts, per class and for each tau, the samples whose adjusted prediction is
# their label: the rows' `POSTHOC_CORRECT`, a (taus, C) array in the order of the taus given.
# The adjusted logits are z (widened exactly to float64) minus the float64 products tau * log pi_c
# (`posthoc_offsets`, made on the host once per pass), so that numpy reproduces every prediction
# bit for bit; tau = 0 subtracts zero and predicts exactly as the plain argmax (ties: first index).
# The reference subtracts log(pi^tau + 1e-12) in float32; with every n_c >= 1 that is tau log pi_c
# but for the epsilon and the rounding.
POSTHOC_CORRECT = "posthoc_correct"


def class_log_prior(counts: Sequence[int]) -> np.ndarray:
    """log pi_c = log(n_c / N) of the training counts, float64 (C,)."""
    n = np.asarray(counts, dtype=np.float64)
    return np.log(n / n.sum())


def posthoc_offsets(taus: Sequence[float], log_prior: np.ndarray | None) -> np.ndarray:
    """(len(taus), C) float64: tau * log pi_c, what post-hoc adjustment subtracts from the logits."""
    if log_prior is None:
        raise ValueError("post-hoc adjustment needs the class log prior (class_log_prior)")
    return np.outer(np.asarray(taus, dtype=np.float64), np.asarray(log_prior, dtype=np.float64))


@torch.no_grad()
def posthoc_hits(logits: torch.Tensor, y: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """(B, taus) float64: 1 where argmax_c (z_c - offsets[t, c]) is the label, else 0."""
    z = logits.detach().double()
    return ((z[:, None, :] - offsets[None]).argmax(2) == y[:, None]).double()


# Logit statistics (the `logits` table; Wei et al. 2022, "Mitigating Neural Network Overconfidence
# with Logit Normalization", on logit norms; class-wise logits as Kini et al. 2021 analyse them).
# An eval pass sums, per true class y, over the class's samples: the own logit z_y, the largest
# other logit max_{c != y} z_c and the logit vector's norm ||z||_2 (float32 values of the float32
# logits, as per_sample_stats takes them, widened exactly and summed in float64); and per class c
# the samples of the split predicted as c (argmax z, ties to the first index: the `correct` count's
# prediction), whatever their label. The rows' `LOGIT_STATS` is {name: (C,) array} of these names;
# at epoch 0 pred_count is the untrained network's guessing (Francazi et al. 2024).
LOGIT_SUMS = Stats(("own_logit_sum", "other_logit_sum", "norm_sum", "pred_count"))
LOGIT_STATS = "logit_stats"


@torch.no_grad()
def logit_terms(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per sample (B,): own logit z_y, largest other logit, ||z||_2 (float32, as per_sample_stats
    computes its margin)."""
    z = logits.detach().float()
    return {"own_logit_sum": z.gather(1, y[:, None]).squeeze(1),
            "other_logit_sum": z.scatter(1, y[:, None], float("-inf")).amax(1),
            "norm_sum": z.norm(dim=1)}


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int,
             batch_size: int = 4096, prepare=None, taus: Sequence[float] = (),
             log_prior: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-class n, correct, loss_sum, p_true_sum and mean penultimate feature norm, in eval mode
    (and, given taus, the post-hoc adjusted correct counts: `evaluate_features`)."""
    return evaluate_features(model, x, y, n_classes, batch_size, prepare, features=False,
                             taus=taus, log_prior=log_prior)[0]


@torch.no_grad()
def evaluate_features(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int,
                      batch_size: int = 4096, prepare=None, features: bool = True,
                      taus: Sequence[float] = (), log_prior: np.ndarray | None = None,
                      logit_stats: bool = False
                      ) -> tuple[dict[str, np.ndarray], FeatureSums | None]:
    """`evaluate`'s rows and, with `features`, the per-class feature sums the geometry needs.

    `prepare` maps a raw batch to model input (normalisation for image datasets, no augmentation).
    Under torchrun each rank evaluates its own slice of x and the per-class sums are added up
    across ranks on the device, so every rank returns the whole set's rows. With `taus` (and
    `log_prior`, `class_log_prior` of the training counts) the rows also hold `POSTHOC_CORRECT`:
    per tau and class, the samples that post-hoc logit adjustment classifies correctly, counted
    on the device from the same logits (without taus the rows have no such key). With
    `logit_stats` the rows also hold `LOGIT_STATS`: the logit statistics' per-class sums and
    prediction counts (`LOGIT_SUMS`), from the same logits too.
    """
    x, y = eval_shard(x, y)
    was_training = model.training
    model.eval()
    dev = x.device
    acc = torch.zeros(n_classes, len(EVAL_SUMS), device=dev, dtype=torch.float64)
    offsets = torch.as_tensor(posthoc_offsets(taus, log_prior), device=dev) if len(taus) else None
    hits = (torch.zeros(n_classes, len(taus), device=dev, dtype=torch.float64)
            if offsets is not None else None)
    lsum = (torch.zeros(n_classes, len(LOGIT_SUMS), device=dev, dtype=torch.float64)
            if logit_stats else None)
    feats = FeatureAccumulator(n_classes, model.fc.in_features, dev) if features else None
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        if prepare is not None:
            xb = prepare(xb)
        h, logits = model.forward_features(xb)
        h = h.float()
        hd = h.double()  # float32 products are exact in float64; its sums round at 1.1e-16
        loss, correct, p_true, _, pred = per_sample_stats(logits, yb)
        # ||h||^2 in float64: within_var = sq/n - ||mu_c||^2 cancels, and a float32 sum of D
        # squares (D * 6e-8 relative) would leave little of a small class spread. The others
        # are float32 values, widened exactly.
        terms = {"n": torch.ones_like(loss), "correct": correct.float(), "loss_sum": loss,
                 "p_true_sum": p_true, "norm_sum": h.norm(dim=1), "sq_norm_sum": (hd * hd).sum(1)}
        acc.index_add_(0, yb, torch.stack([terms[k].double() for k in EVAL_SUMS.names], 1))
        if hits is not None:
            hits.index_add_(0, yb, posthoc_hits(logits, yb, offsets))
        if lsum is not None:  # by true class; pred_count by predicted class
            lt = logit_terms(logits, yb)
            LOGIT_SUMS.index_add_(lsum, tuple(lt), yb,
                                  torch.stack([v.double() for v in lt.values()], 1))
            LOGIT_SUMS.of(lsum, "pred_count").index_add_(
                0, pred, torch.ones_like(loss, dtype=torch.float64))
        if feats is not None:
            feats.add(hd, yb)
    model.train(was_training)
    a = dist_sum_(acc).cpu().numpy()
    rows = eval_rows(a, hits, lsum)
    if feats is None:
        return rows, None
    return rows, feats.finish(rows["n"], EVAL_SUMS.of(a, "sq_norm_sum"))


class FeatureAccumulator:
    """The feature sums of one eval pass (FeatureSums), gathered batch by batch (`add`) and
    completed once the pass is done (`finish`): the within-class scatter needs the class means."""

    def __init__(self, n_classes: int, dim: int, device: torch.device) -> None:
        self.hsum = torch.zeros(n_classes, dim, device=device, dtype=torch.float64)
        self.kept: list[tuple[torch.Tensor, torch.Tensor]] = []  # each batch's (hd, y)

    def add(self, hd: torch.Tensor, y: torch.Tensor) -> None:
        """A batch's features in float64 (kept for the scatter) and labels."""
        self.hsum.index_add_(0, y, hd)
        self.kept.append((hd, y))

    def finish(self, n: np.ndarray, sq: np.ndarray) -> FeatureSums:
        """The pass's FeatureSums, given its per-class counts and sums of ||h||^2 (summed across
        ranks); sums this rank's class sums across ranks too."""
        hsum = dist_sum_(self.hsum)
        basis, within = within_scatter(self.kept, hsum, torch.as_tensor(n, device=hsum.device))
        self.kept = []
        return FeatureSums(n, hsum.cpu().numpy(), sq, basis.cpu().numpy(), within.cpu().numpy())


@torch.no_grad()
def within_scatter(kept: Sequence[tuple[torch.Tensor, torch.Tensor]], hsum: torch.Tensor,
                   n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The within-class scatter sum_i r_i r_i^T (r_i = h_i - mu_c(i)) of an eval pass's kept
    features `kept` ((h, y) per batch, h float64; `hsum`, `n` the whole split's per-class sums and
    counts), in the span of the present classes' means, which holds the directions NC1 weighs it
    by (those of Sigma_B^+): (basis Q (D, k) with orthonormal columns spanning the means, k <= C,
    and Q^T (sum_i r_i r_i^T) Q (k, k)), float64, the scatter summed across ranks. Each residual
    is taken in the k columns, Q^T r_i = Q^T h_i - Q^T mu_c(i), in float64 (the features are
    float32 values: the difference is exact to 1e-16 of their size), and no sum of squares
    cancels against the means' size: B (D k + k^2) multiply-adds a batch instead of the B D^2 of
    the whole (D, D) scatter (k = 10 against D = 128 on the default run)."""
    present = n > 0
    mean = hsum / n.clamp_min(1)[:, None].to(hsum.dtype)
    if present.any():
        basis = torch.linalg.qr(mean[present].T).Q  # reduced: (D, min(D, classes present))
    else:
        basis = torch.zeros(hsum.shape[1], 0, dtype=hsum.dtype, device=hsum.device)
    within = torch.zeros(basis.shape[1], basis.shape[1], dtype=hsum.dtype, device=hsum.device)
    projected_mean = mean @ basis
    for h, y in kept:
        r = (h.to(basis.dtype) @ basis).sub_(projected_mean[y])
        within.addmm_(r.T, r)
    return basis, dist_sum_(within)


def eval_rows(a: np.ndarray, hits: torch.Tensor | None, lsum: torch.Tensor | None
              ) -> dict[str, Any]:
    """An eval pass's per-class rows from its summed (C, len(EVAL_SUMS)) array `a`, with the
    post-hoc counts (`hits`) and the logit statistics (`lsum`) when it gathered them (these two
    are summed across ranks here)."""
    def col(name: str) -> np.ndarray:
        return EVAL_SUMS.of(a, name)

    n = np.rint(col("n")).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        feat = np.where(n > 0, col("norm_sum") / np.maximum(n, 1), np.nan)
    rows: dict[str, Any] = {"n": n, "correct": np.rint(col("correct")).astype(np.int64),
                            "loss_sum": col("loss_sum"), "p_true_sum": col("p_true_sum"),
                            "feature_norm": feat}
    if hits is not None:
        rows[POSTHOC_CORRECT] = np.rint(dist_sum_(hits).cpu().numpy().T).astype(np.int64)
    if lsum is not None:
        ls = dist_sum_(lsum).cpu().numpy()
        rows[LOGIT_STATS] = {
            name: (np.rint(LOGIT_SUMS.of(ls, name)).astype(np.int64) if name == "pred_count"
                   else LOGIT_SUMS.of(ls, name).copy()) for name in LOGIT_SUMS.names}
    return rows


def classifier_rows(fc: torch.nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    """(||w_c||, b_c) per class."""
    with torch.no_grad():
        w = fc.weight.detach().float().norm(dim=1).cpu().numpy().astype(np.float64)
        b = (fc.bias.detach().float().cpu().numpy().astype(np.float64) if fc.bias is not None
             else np.zeros(fc.out_features))
    return w, b


# ==== feature geometry ============================================================================
# One centring for every centred quantity below: the split's global sample mean
#   mu_G = (1/N) sum_i h_i   (each sample counts once: under imbalance the large classes weigh most)
# as Papyan, Han & Donoho 2020 define it (mu_G = Ave_{i,c} h_{i,c}), as Zhu et al. 2021's reference
# code computes it (github.com/tding1/Neural-Collapse, validate_NC.py: compute_info sums every
# feature and divides by N), and as Fang et al. 2021's minority-collapse code centres the class
# means (github.com/HornHehhf/LPM, minority_collapse.py: get_features subtracts np.mean of all the
# training features). Papyan et al.'s companion notebook takes the mean of the class means instead,
# which is the same on the balanced data it ran on, not under imbalance. Stores written before
# this definition (their geometry_summary has no nc3) centred on the mean of the class means.
# With class means mu_c, centred means m_c = mu_c - mu_G (the rows of M, (C, D)), C the classes
# present in the split (absent ones are left out of everything; their rows are NULL), N its samples:
#   Sigma_W = (1/N) sum_i (h_i - mu_c(i))(h_i - mu_c(i))^T, kept as Q^T Sigma_W Q with Q (D, k)
#     orthonormal columns spanning the present classes' means (FeatureSums.basis and .within,
#     `within_scatter`): NC1 below weighs Sigma_W only along the centred means' singular vectors
#     v_k, which lie in that span, so v_k^T Sigma_W v_k = (Q^T v_k)^T (Q^T Sigma_W Q) (Q^T v_k)
#   Sigma_B = (1/C) sum_c m_c m_c^T = M^T M / C
#   nc1 = Tr(Sigma_W Sigma_B^+) / C: NC1 (Papyan et al. 2020), as the reference code computes it
#     (np.trace(Sw @ inv_Sb) / C). Sigma_B^+ is the pseudo-inverse of rank C-1: the centred means
#     span at most C-1 directions (sum_c n_c m_c = 0), and the reference inverts only the top C-1
#     singular values of Sigma_B (scipy svds(Sb, k=C-1)); the round-off in the others would blow up
#     a full inverse. Here from the SVD M = U S V^T (no squaring of M's condition number): with
#     v_k, s_k the top min(C-1, D) right singular vectors and values of M,
#     Sigma_B^+ = C sum_k v_k v_k^T / s_k^2, so nc1 = sum_k v_k^T Sigma_W v_k / s_k^2. A singular
#     value zero to round-off (class means that coincide) is left out, as the Moore-Penrose
#     pseudo-inverse leaves it out.
#   NC2, equinorm: norm_cv = std_c ||m_c|| / mean_c ||m_c|| (population std, as Fang et al.'s
#     np.std; Papyan et al.'s notebook uses torch.std, which divides by C-1: sqrt(C/(C-1)) larger).
#   NC2, equiangularity: cos_std = std over the pairs c < c' of cos(m_c, m_c'), and Papyan et al.'s
#     max-angle measure nc2_angle = mean_{c != c'} |cos(m_c, m_c') + 1/(C-1)| (their notebook's
#     `coherence`, Fang et al.'s "avg cosine to -1/(C-1)"): 0 for a simplex ETF.
#   nc3 = || W / ||W||_F - M / ||M||_F ||_F^2: NC3 self-duality (Papyan et al.'s notebook's
#     W_M_dist), W the classifier's (C, D) weight matrix as stored, rows of absent classes left out.
#     For LDAM's cosine classifier (trainer.models.NormedLinear) that is its raw weight, as is: the
#     logits use its rows normalised, so its row norms do not matter to the model.
# The variant that needs only per-class sums (the `nc1` of stores written before NC1 was defined as
# above): a trace ratio, not NC1, so it has a name of its own. On the default MNIST-1D run at ratio
# 100 NC1 is 3x (train) to 5x (test) the trace ratio after a few epochs, 20-40x after the first.
#   within_var_c = tr Sigma_W,c = mean_i ||h_i - mu_c||^2 over the class's samples
#   between_var  = tr Sigma_B   = mean_c ||m_c||^2
#   within_rel_c = within_var_c / between_var;  within_rel = mean_c within_rel_c
# Minority collapse (Fang et al. 2021): majority_cos / minority_cos, the mean pairwise cosine of the
# group's centred class means m_c, and w_majority_cos / w_minority_cos, that of the group's
# classifier rows w_c, uncentred as in their code (analyze_collapse on the raw weights): the
# minority's approaches 1 as its rows merge. Train-vs-test shift of each class mean (Ye et al.
# 2020): ||mu_c(test) - mu_c(train)||, and that over the class's train spread sqrt(within_var_c).
# Every cosine comes from `pairwise_cosines` (float64, clipped to [-1, 1]); all of it in float64.

@dataclass
class ClassGeometry:
    n: np.ndarray
    mean: np.ndarray        # (C, D) class means, NaN rows for absent classes
    within: np.ndarray      # (C,) tr Sigma_W,c
    centred: np.ndarray     # (C, D) mu_c - mu_G, mu_G the split's global sample mean
    sigma_w: np.ndarray     # (k, k) Q^T Sigma_W Q, over every sample of the split
    basis: np.ndarray       # (D, k) Q: orthonormal columns spanning the present class means
    present: np.ndarray     # (C,) bool

    @classmethod
    def of(cls, f: FeatureSums) -> ClassGeometry:
        present = f.n > 0
        n = np.asarray(f.n, dtype=np.float64)
        h = np.asarray(f.h, dtype=np.float64)
        total = n[present].sum()
        hp = h[present]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = h / n[:, None]
            within = np.maximum(f.sq / n - (mean * mean).sum(1), 0.0)  # round-off below 0
            mu_g = hp.sum(0) / total
            sigma_w = np.asarray(f.within, dtype=np.float64) / total
        sigma_w = (sigma_w + sigma_w.T) / 2  # r^T r summed in blocks is symmetric to round-off
        return cls(f.n, mean, np.where(present, within, np.nan), mean - mu_g, sigma_w,
                   np.asarray(f.basis, dtype=np.float64), present)


def pairwise_cosines(v: np.ndarray) -> np.ndarray:
    """(K, K) cosines between the rows of v: in float64, then clipped to [-1, 1], since round-off
    can put the cosine of (near-)parallel rows an ulp past 1. A zero row's cosines are NaN (NULL
    in the store). Every feature- and classifier-row cosine of the geometry tables comes from here,
    and their means over pairs stay in [-1, 1] (a rounded sum of k values in [-1, 1] stays in
    [-k, k])."""
    v = np.asarray(v, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = v / np.linalg.norm(v, axis=1, keepdims=True)
    return np.clip(u @ u.T, -1.0, 1.0)


def mean_pair_cos(cos: np.ndarray, members: np.ndarray) -> float:
    """Mean cosine over distinct pairs of the `members` rows (NaN with fewer than two)."""
    idx = np.flatnonzero(members)
    if len(idx) < 2:
        return float("nan")
    sub = cos[np.ix_(idx, idx)]
    return float(sub[np.triu_indices(len(idx), 1)].mean())


def nc1_papyan(sigma_w: np.ndarray, m: np.ndarray, basis: np.ndarray) -> float:
    """Tr(Sigma_W Sigma_B^+) / C with Sigma_B = M^T M / C, M the (C, D) centred class means, and
    Sigma_B^+ of rank C-1 (see the section's head). `sigma_w` is Q^T Sigma_W Q for the
    orthonormal columns `basis` Q, which span the class means (the identity: Sigma_W itself).
    NaN with fewer than two classes or no spread between their means; never below 0 (a sum of
    outer products may be a round-off short of PSD)."""
    c, d = m.shape
    if c < 2 or not (np.isfinite(sigma_w).all() and np.isfinite(m).all()):
        return float("nan")
    _, s, vt = np.linalg.svd(m, full_matrices=False)
    s, vt = s[:min(c - 1, d)], vt[:min(c - 1, d)]
    keep = s > s[0] * max(c, d) * np.finfo(np.float64).eps  # np.linalg.matrix_rank's cut
    if not keep.any():
        return float("nan")
    s, vt = s[keep], vt[keep]
    vt = vt @ basis  # v_k in the basis's coordinates: v_k lies in its span
    along = np.einsum("kd,de,ke->k", vt, sigma_w, vt)  # v_k^T Sigma_W v_k
    return max(0.0, float(along @ (1.0 / (s * s))))


def self_duality(w: np.ndarray, m: np.ndarray) -> float:
    """NC3: ||W/||W||_F - M/||M||_F||_F^2, in [0, 4]; NaN if either is zero."""
    nw, nm = np.linalg.norm(w), np.linalg.norm(m)
    if not (nw > 0 and nm > 0):
        return float("nan")
    return float(np.sum((w / nw - m / nm) ** 2))


def split_geometry(g: ClassGeometry, minority: np.ndarray, weight: np.ndarray
                   ) -> tuple[dict, dict]:
    """Per-class and summary geometry of one split; `weight` is the (C, D) classifier matrix."""
    p = g.present
    k = int(p.sum())
    norms = np.linalg.norm(g.centred, axis=1)
    between = float(np.mean(norms[p] ** 2)) if p.any() else float("nan")
    cos = pairwise_cosines(g.centred)
    off = cos.copy()
    np.fill_diagonal(off, np.nan)
    off[~p, :], off[:, ~p] = np.nan, np.nan
    valid = ~np.isnan(off)
    others = valid.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        within_rel = g.within / between
        cos_mean = np.where(others > 0, np.where(valid, off, 0.0).sum(1) / others, np.nan)
        cos_max = np.where(others > 0, np.where(valid, off, -np.inf).max(1), np.nan)
        pairs = cos[np.ix_(p, p)][np.triu_indices(k, 1)]
        summary = {
            "nc1": nc1_papyan(g.sigma_w, g.centred[p], g.basis),
            "within_rel": float(np.mean(g.within[p]) / between) if p.any() else float("nan"),
            "within_var": float(np.mean(g.within[p])) if p.any() else float("nan"),
            "between_var": between,
            "cos_mean": float(pairs.mean()) if len(pairs) else float("nan"),
            "cos_std": float(pairs.std()) if len(pairs) else float("nan"),
            "norm_cv": float(norms[p].std() / norms[p].mean()) if p.any() else float("nan"),
            "nc2_angle": (float(np.mean(np.abs(pairs + 1.0 / (k - 1)))) if len(pairs)
                          else float("nan")),
            "nc3": self_duality(weight[p], g.centred[p]),
            "majority_cos": mean_pair_cos(cos, p & ~minority),
            "minority_cos": mean_pair_cos(cos, p & minority),
        }
    per_class = {"n": g.n, "mean_norm": np.where(p, norms, np.nan), "within_var": g.within,
                 "within_rel": within_rel, "cos_mean": np.where(p, cos_mean, np.nan),
                 "cos_max": np.where(p, cos_max, np.nan)}
    return per_class, summary


def geometry_tables(train: FeatureSums, test: FeatureSums, weight: np.ndarray,
                    minority: np.ndarray, epoch: int, step: int) -> tuple[dict, dict]:
    """The `geometry` (epoch, split, class) and `geometry_summary` (epoch, split) table columns.
    `weight` is the classifier's (C, D) weight matrix (`fc.weight`, a NormedLinear's as is)."""
    minority = np.asarray(minority, dtype=bool)
    weight = np.asarray(weight, dtype=np.float64)
    g = {"train": ClassGeometry.of(train), "test": ClassGeometry.of(test)}
    wcos = pairwise_cosines(weight)
    every = np.ones(len(minority), dtype=bool)
    classifier = {"w_cos_mean": mean_pair_cos(wcos, every),
                  "w_majority_cos": mean_pair_cos(wcos, ~minority),
                  "w_minority_cos": mean_pair_cos(wcos, minority)}
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.linalg.norm(g["test"].mean - g["train"].mean, axis=1)
        shift_rel = shift / np.sqrt(g["train"].within)
    per_class: dict[str, list] = {}
    summary: dict[str, list] = {}
    c = len(minority)
    for split in ("train", "test"):
        rows, summ = split_geometry(g[split], minority, weight)
        none = np.full(c, np.nan)
        rows["shift"] = shift if split == "test" else none
        rows["shift_rel"] = shift_rel if split == "test" else none
        head = {"epoch": [epoch] * c, "step": [step] * c, "split": [split] * c,
                "class_id": list(range(c))}
        for k, v in {**head, **rows}.items():
            per_class.setdefault(k, []).extend(
                v if k in head else (v.tolist() if k == "n" else nan_to_none(v)))
        for k, v in {"epoch": epoch, "step": step, "split": split, **summ, **classifier}.items():
            summary.setdefault(k, []).append(None if isinstance(v, float) and not math.isfinite(v)
                                             else v)
    return per_class, summary
