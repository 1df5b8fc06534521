"""What a run records, behind one interface: the loop calls the same methods whatever it records.

    dynamics  recorder          what reaches the sink
    off       NullRecorder      nothing: every method does nothing, so the loop has no
                                `if recording:` branches (as NullSink, one level down)
    minimal   StepsRecorder     the classes table; per step and class the steps rows (the
                                classifier gradient split included); per evaluation the epochs rows,
                                the posthoc rows (post-hoc logit adjustment, each tau) and the
                                logits rows (logit statistics and prediction counts); with
                                `sharpness_every`, the sharpness rows (trainer.hessian)
    full      FullRecorder      minimal, and each sample's presentations, a gradient probe every
                                `probe_every` steps, and the feature geometry of every evaluation;
                                with `conflict_every`, the gradient conflict rows (trainer.conflict)

The loop, per step: `watch(logits)` before the backward pass, `keeps_graph(step)` for it,
`record(...)` after it (before the optimiser moves the classifier), then `flush_if_due()`; per
epoch: `flush(epoch_end=True, overlap=True)` and `evaluated(...)`. A recorder owns when its
buffers reach the sink: the step buffer when it has no room for another step or `flush_seconds`
after the last flush (under torchrun by step counts only: the ranks reduce their buffers
together, so they must decide from values they share, never from their own clocks); the
per-sample and probe rows once per epoch (a part per epoch, not per flush: the per-sample rows
are the bulk of the store). A flush that finds a non-finite loss writes the rows up to and
including the first bad step and raises `Diverged`.

In one process on a CPU, the loop's epoch-end flush (`overlap=True`) runs on a thread of its own
while the loop evaluates: the next call into the recorder (`evaluated` first) waits for it and
raises what it raised, `Diverged` included, so the store receives the same rows in the same
cases; only the flush's time leaves the training thread. `wait()` waits for it explicitly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from trainer import distributed
from trainer.conflict import ConflictRecorder, WholeSet
from trainer.data import ClassInfo
from trainer.hessian import GroupSharpness
from trainer.dynamics import (LOGIT_STATS, POSTHOC_CORRECT, GradientProbe, SampleRecorder,
                              StepRecorder, classifier_rows,
                              geometry_tables)
from trainer.sink import Sink

CLASS_FIELDS = ("class_id", "class_name", "train_count", "test_count", "rank", "grp", "shot")

Columns = dict[str, Any]  # one table's columns: {name: array or list}


class Diverged(RuntimeError):
    def __init__(self, step: int, kept: int | None = None) -> None:
        super().__init__(f"loss became NaN or infinite at step {step}")
        self.step = step
        self.kept = step + 1 if kept is None else kept  # steps whose rows the store keeps


class FlushHook(Protocol):
    def on_flush(self, step: int, loss: float) -> None: ...


@dataclass
class Subject:
    """The run a recorder watches, and how often it flushes and probes."""

    model: torch.nn.Module      # a trainer.models.Classifier: its `fc` is the classifier
    minority: np.ndarray        # (C,) bool: the class is in the minority group
    sample_ids: torch.Tensor    # row of the training tensors -> row of the dataset's arrays
    steps_per_epoch: int
    device: torch.device
    flush_steps: int = 200
    flush_seconds: float = 1.0
    probe_every: int = 100
    # post-hoc logit adjustment's taus: the order of an evaluation's rows[split][POSTHOC_CORRECT]
    posthoc_tau: tuple[float, ...] = ()
    # gradient conflict (trainer.conflict) at steps 0, N, 2N, ... (full only; None: off), and
    # (epoch, minority mask) -> the groups' whole-training-set gradients (None: no direction rows)
    conflict_every: int | None = None
    whole_set: WholeSet | None = None
    # group sharpness (trainer.hessian.make_sharpness: when, and each group's fixed subset) after
    # the evaluations it is due at (minimal and full; None: off)
    sharpness: GroupSharpness | None = None


class Recorder(Protocol):
    """The one interface of the three recorders (module docstring)."""

    features: bool  # whether the evaluation passes gather the penultimate features
    logit_stats: bool  # whether they sum the logit statistics (rows[split][LOGIT_STATS])

    def start(self, classes: Sequence[ClassInfo]) -> None:
        """Once, after the sink started: the run's classes table."""

    def watch(self, logits: torch.Tensor) -> None:
        """Before the backward pass: keep what `record` reads (dLoss/dlogits)."""

    def keeps_graph(self, step: int) -> bool:
        """Whether this step's backward pass keeps its graph (a probe backpropagates again)."""

    def record(self, step: int, epoch: int, lr: float, h: torch.Tensor, logits: torch.Tensor,
               y: torch.Tensor, rows: torch.Tensor) -> None:
        """After the backward pass, before the optimiser step: one step's batch (`rows`, its
        rows of the training tensors), features h, logits and labels y."""

    def flush_if_due(self) -> None:
        """After every step: flush when the step buffer has no room for another step or
        flush_seconds have passed since the last flush."""

    def flush(self, epoch_end: bool = False, overlap: bool = False) -> None:
        """The buffered steps to the sink; at an epoch's end the per-epoch tables too. With
        `overlap`, where the recorder can (module docstring), on a thread of its own."""

    def wait(self) -> None:
        """Wait for a flush under way on its own thread, and raise what it raised."""

    def evaluated(self, epoch: int, step: int, rows: Mapping[str, dict[str, np.ndarray]],
                  features: Mapping[str, Any]) -> None:
        """An evaluation's per-class rows and feature sums, by split (`train`, `test`); the rows
        hold POSTHOC_CORRECT, one row per tau of the Subject's posthoc_tau, when it has taus,
        and LOGIT_STATS when the passes summed them (`logit_stats`)."""


# ==== off =========================================================================================

class NullRecorder:
    """`dynamics="off"`: records nothing, so the loop runs without recording branches."""

    features = False
    logit_stats = False

    def __init__(self, sink: Sink, hooks: FlushHook, run: Subject) -> None:
        pass

    def start(self, classes: Sequence[ClassInfo]) -> None:
        pass

    def watch(self, logits: torch.Tensor) -> None:
        pass

    def keeps_graph(self, step: int) -> bool:
        return False

    def record(self, step: int, epoch: int, lr: float, h: torch.Tensor, logits: torch.Tensor,
               y: torch.Tensor, rows: torch.Tensor) -> None:
        pass

    def flush_if_due(self) -> None:
        pass

    def flush(self, epoch_end: bool = False, overlap: bool = False) -> None:
        pass

    def wait(self) -> None:
        pass

    def evaluated(self, epoch: int, step: int, rows: Mapping[str, dict[str, np.ndarray]],
                  features: Mapping[str, Any]) -> None:
        pass


# ==== minimal =====================================================================================

class StepsRecorder:
    """`dynamics="minimal"`: the classes, steps and epochs tables (and posthoc, logits)."""

    features = False
    logit_stats = True

    def __init__(self, sink: Sink, hooks: FlushHook, run: Subject,
                 samples: SampleRecorder | None = None) -> None:
        self.sink, self.hooks, self.fc, self.net = sink, hooks, run.model.fc, run.model
        self.flush_steps, self.flush_seconds = run.flush_steps, run.flush_seconds
        self.posthoc_tau = tuple(run.posthoc_tau)
        self.timed = not distributed.active()  # ranks flush together: on step counts only
        # an overlapped flush (one process, CPU: torchrun's ranks reduce together, and a GPU
        # already runs the flush's arithmetic asynchronously) and what it raised
        self.can_overlap = self.timed and run.device.type == "cpu"
        self.pending: Overlapped | None = None
        # `samples` (FullRecorder's) rides along: the step buffer fills in its values as it
        # settles the same steps (`_drain_steps`)
        self.samples = samples
        self.buffer = StepRecorder(len(run.minority), max(1, run.flush_steps), run.device,
                                   self.fc, samples=samples)
        self.last_flush = time.monotonic()
        self.sharpness = run.sharpness

    def start(self, classes: Sequence[ClassInfo]) -> None:
        self.sink.write("classes", {f: [getattr(c, f) for c in classes] for f in CLASS_FIELDS})

    def watch(self, logits: torch.Tensor) -> None:
        logits.retain_grad()  # dLoss/dlogits: the classifier gradient split, the probes

    def keeps_graph(self, step: int) -> bool:
        return False

    def record(self, step: int, epoch: int, lr: float, h: torch.Tensor, logits: torch.Tensor,
               y: torch.Tensor, rows: torch.Tensor) -> None:
        if self.pending is not None:
            self.wait()
        dlogits = logits.grad
        scale = getattr(self.net, "logit_scale", None)
        if scale is not None:  # lws: logits f_c z_c, so dLoss/dz_c = f_c dLoss/dlogit_c
            dlogits = dlogits * scale.detach()
        # the classifier gradient split (classifier_grad_split), settled at the flush for all
        # the buffered steps at once; frozen rows (lws, no .grad): the gradient they would get
        self.buffer.record(step, epoch, lr, logits, y, self.fc.weight.grad, h, dlogits)

    def flush_if_due(self) -> None:
        if self.buffer.full or (self.timed
                                and time.monotonic() - self.last_flush >= self.flush_seconds):
            self.flush()

    def flush(self, epoch_end: bool = False, overlap: bool = False) -> None:
        self.wait()
        self.last_flush = time.monotonic()
        if overlap and self.can_overlap:
            self.pending = Overlapped(self._flush_now, epoch_end)
        else:
            self._flush_now(epoch_end)

    def wait(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def _flush_now(self, epoch_end: bool) -> None:
        steps = self._drain_steps()
        if steps is not None:
            self._write_steps(steps)
        if epoch_end:
            write_rows(self.sink, self._drain_epoch_tables())

    def evaluated(self, epoch: int, step: int, rows: Mapping[str, dict[str, np.ndarray]],
                  features: Mapping[str, Any]) -> None:
        self.wait()  # the epoch's own flush first: a diverged one ends the run before its rows
        # both splits in one part: a write per epoch, not per split
        self.sink.write("epochs", epoch_rows(epoch, step, rows, self.fc))
        if self.posthoc_tau:  # post-hoc logit adjustment's counts, both splits in one part too
            self.sink.write("posthoc", posthoc_rows(epoch, step, rows, self.posthoc_tau))
        if rows and all(LOGIT_STATS in r for r in rows.values()):  # logit statistics: one part
            self.sink.write("logits", logit_rows(epoch, step, rows))
        if self.sharpness is not None and self.sharpness.due(epoch):  # Hessian eigenvalues
            self.sink.write("sharpness", self.sharpness.rows(self.net, epoch, step))

    def _drain_steps(self) -> Columns | None:
        """The buffered steps' rows, summed across ranks (None: none buffered). The one place the
        step buffer settles, so the settle-then-fill order cannot be broken: settling computes the
        per-sample statistics of the buffered steps, sums them per step and class, and hands the
        SampleRecorder that rides along its values for those same steps (StepRecorder.settle
        calls SampleRecorder.fill); only then may the sums be reduced and the samples drained."""
        if not len(self.buffer):
            return None
        self.buffer.settle()
        self.buffer.reduce_()  # across torchrun ranks, by the buffer's own column names
        return self.buffer.drain()

    def _write_steps(self, cols: Columns) -> None:
        bad = ~np.isfinite(cols["loss_sum"])
        if bad.any():  # keep every row up to and including the first bad step, then stop
            first = int(cols["step"][bad][0])
            write_rows(self.sink, {"steps": cols, **self._drain_epoch_tables()}, first)
            raise Diverged(first)
        self.sink.write("steps", cols)
        n = cols["n"].sum()
        self.hooks.on_flush(int(cols["step"][-1]), float(cols["loss_sum"].sum() / n) if n else 0.0)

    def _drain_epoch_tables(self) -> dict[str, Columns | None]:
        """The tables written once per epoch, drained after `_drain_steps` (none here)."""
        return {}


# ==== full ========================================================================================

class FullRecorder(StepsRecorder):
    """`dynamics="full"`: minimal, and each sample's presentations and the gradient probes
    (buffered for a whole epoch, written at its end), and the geometry of every evaluation."""

    features = True

    samples: SampleRecorder

    def __init__(self, sink: Sink, hooks: FlushHook, run: Subject) -> None:
        super().__init__(sink, hooks, run, SampleRecorder(run.device, run.sample_ids))
        self.minority = run.minority
        self.probe_every = run.probe_every
        self.probe = GradientProbe(torch.as_tensor(run.minority, device=run.device),
                                   run.steps_per_epoch // run.probe_every + 1, run.device)
        self.model = run.model
        self.conflict = (ConflictRecorder(run.minority, run.conflict_every, run.device,
                                          run.whole_set) if run.conflict_every else None)

    @property
    def params(self) -> list[torch.Tensor]:
        """What the step trains now (a second stage trains only the classifier's part)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def keeps_graph(self, step: int) -> bool:
        return step % self.probe_every == 0 or self._conflict_due(step)

    def _conflict_due(self, step: int) -> bool:
        return self.conflict is not None and self.conflict.due(step)

    def record(self, step: int, epoch: int, lr: float, h: torch.Tensor, logits: torch.Tensor,
               y: torch.Tensor, rows: torch.Tensor) -> None:
        super().record(step, epoch, lr, h, logits, y, rows)
        self.samples.record(step, epoch, rows)
        if step % self.probe_every == 0:
            self.probe.record(step, epoch, logits, y, self.params)
        if self._conflict_due(step):
            self.conflict.record(step, epoch, logits, y, self.params)

    def evaluated(self, epoch: int, step: int, rows: Mapping[str, dict[str, np.ndarray]],
                  features: Mapping[str, Any]) -> None:
        super().evaluated(epoch, step, rows, features)
        # geometry of both splits' features and of the classifier rows
        weight = self.fc.weight.detach().float().cpu().numpy()
        per_class, summary = geometry_tables(features["train"], features["test"], weight,
                                             self.minority, epoch, step)
        self.sink.write("geometry", per_class)
        self.sink.write("geometry_summary", summary)

    def _drain_epoch_tables(self) -> dict[str, Columns | None]:
        return {"samples": self.samples.drain() if len(self.samples) else None,
                "probes": self.probe.drain() if len(self.probe) else None,
                **(self.conflict.drain() if self.conflict is not None else {})}


class Overlapped:
    """`fn(*args)` on a thread of its own; `result()` waits for it and raises what it raised."""

    def __init__(self, fn, *args: Any) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn, args), name="imbtui-flush",
                                       daemon=True)
        self.thread.start()

    def _run(self, fn, args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # handed to the thread that waits
            self.error = exc

    def result(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


RECORDERS: dict[str, type[NullRecorder | StepsRecorder]] = {
    "off": NullRecorder, "minimal": StepsRecorder, "full": FullRecorder}


def make_recorder(dynamics: str, sink: Sink, hooks: FlushHook, run: Subject) -> Recorder:
    """The recorder of a `dynamics` level (trainer.options.DYNAMICS)."""
    return RECORDERS[dynamics](sink, hooks, run)


# ==== rows ========================================================================================

def epoch_rows(epoch: int, step: int, rows: Mapping[str, dict[str, np.ndarray]],
               fc: torch.nn.Module) -> Columns:
    """The `epochs` table columns of one evaluation: each split's per-class rows, with the
    classifier's row norms and biases."""
    w, b = classifier_rows(fc)
    parts = []
    for split, r in rows.items():
        c = len(r["n"])
        own = {k: v for k, v in r.items()
               if k not in (POSTHOC_CORRECT, LOGIT_STATS)}  # the posthoc and logits tables'
        parts.append({"epoch": np.full(c, epoch), "step": np.full(c, step),
                      "split": np.array([split] * c), "class_id": np.arange(c), **own,
                      "weight_norm": w, "bias": b})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def posthoc_rows(epoch: int, step: int, rows: Mapping[str, dict[str, np.ndarray]],
                 taus: Sequence[float]) -> Columns:
    """The `posthoc` table columns of one evaluation: per split, tau and class, the class's
    samples (n) and how many of them post-hoc logit adjustment with that tau classifies correctly
    (rows[split][POSTHOC_CORRECT]: one row per tau, in the order of `taus`). A tau given twice is
    written once."""
    taus = [float(t) for t in taus]
    first = [i for i, t in enumerate(taus) if taus.index(t) == i]
    parts = []
    for split, r in rows.items():
        hits = np.asarray(r[POSTHOC_CORRECT])
        c = len(r["n"])
        if hits.shape != (len(taus), c):
            raise ValueError(f"{split}: post-hoc counts of shape {hits.shape} for {len(taus)} "
                             f"taus and {c} classes")
        for i in first:
            parts.append({"epoch": np.full(c, epoch), "step": np.full(c, step),
                          "split": np.array([split] * c), "tau": np.full(c, taus[i]),
                          "class_id": np.arange(c), "n": r["n"], "correct": hits[i]})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def logit_rows(epoch: int, step: int, rows: Mapping[str, dict[str, np.ndarray]]) -> Columns:
    """The `logits` table columns of one evaluation: per split and class, the class's samples
    (n) and rows[split][LOGIT_STATS]'s sums (own logit, largest other logit, logit norm) and
    prediction count."""
    parts = []
    for split, r in rows.items():
        stats = r[LOGIT_STATS]
        c = len(r["n"])
        parts.append({"epoch": np.full(c, epoch), "step": np.full(c, step),
                      "split": np.array([split] * c), "class_id": np.arange(c), "n": r["n"],
                      **{k: np.asarray(stats[k]) for k in ("own_logit_sum", "other_logit_sum",
                                                           "norm_sum", "pred_count")}})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def write_rows(sink: Sink, tables: Mapping[str, Columns | None],
               last_step: int | None = None) -> None:
    """Write each table's columns (None: nothing buffered), only the rows of steps <= last_step
    when given (a flush that found the loss diverged)."""
    for table, cols in tables.items():
        if cols is None:
            continue
        if last_step is not None:
            keep = np.asarray(cols["step"]) <= last_step
            cols = {k: v[keep] if isinstance(v, np.ndarray) else [x for x, ok in zip(v, keep) if ok]
                    for k, v in cols.items()}
        sink.write(table, cols)
