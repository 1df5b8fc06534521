"""The training loop: one flat loop, a comment per phase, tiny helpers.

The dataset sits on the device as whole tensors; each epoch draws a device-side permutation and slices
it into batches. Per-class step dynamics accumulate in a device buffer (trainer.dynamics) and reach the
sink once per flush; per-epoch evaluations of the training set (eval mode, no augmentation) and the
balanced test set follow every epoch, and epoch 0 records the untrained network.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trainer.data import DataError, class_table, load_dataset, long_tailed_indices, profile_counts
from trainer.dynamics import StepRecorder, classifier_rows, evaluate
from trainer.losses import build_loss
from trainer.models import DEFAULT_MODEL, build_model, n_params
from trainer.sink import NullSink, Sink


# ==== configuration ===============================================================================

@dataclass
class TrainConfig:
    # data and imbalance
    dataset: str = "mnist1d"
    data_dir: str | None = None
    profile: str = "exp"             # exp | step
    ratio: float = 100.0             # largest class / smallest class
    minority_fraction: float = 0.5   # step profile only: fraction of classes that are small
    # model and method
    model: str | None = None         # None: the dataset's default
    loss: str = "ce"
    sampler: str = "none"
    # optimisation (SGD with momentum; linear warm-up, then cosine decay to 0)
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.05                 # peak learning rate
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    # run
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda
    max_steps: int | None = None     # stop after this many optimizer steps (smoke tests)
    name: str | None = None
    # recording
    dynamics: str = "minimal"        # minimal: steps + epochs rows; off: none (benchmarks)
    flush_steps: int = 200           # flush the step buffer at least every N steps...
    flush_seconds: float = 1.0       # ...or every S seconds, so live readers stay <= ~S s behind
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved_model(self) -> str:
        if self.model:
            return self.model
        try:
            return DEFAULT_MODEL[self.dataset]
        except KeyError:
            raise DataError(f"no default model for dataset {self.dataset!r}; pass --model") from None


class Diverged(RuntimeError):
    def __init__(self, step: int, kept: int | None = None) -> None:
        super().__init__(f"loss became NaN or infinite at step {step}")
        self.step = step
        self.kept = step + 1 if kept is None else kept  # steps whose rows the store keeps


class Hooks:
    """Progress callbacks (the CLI draws a rich progress bar from them). All optional."""

    def on_start(self, info: dict[str, Any]) -> None: ...
    def on_flush(self, step: int, loss: float) -> None: ...
    def on_epoch(self, epoch: int, summary: dict[str, float]) -> None: ...


@dataclass
class RunResult:
    run_id: str
    status: str
    steps: int
    epochs_done: int
    seconds: float
    final: dict[str, float]
    message: str | None = None


# ==== helpers =====================================================================================

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda was asked for, but no CUDA GPU is available here")
    if name not in ("cpu", "cuda"):
        raise DataError(f"unknown device {name!r}: choose auto, cpu or cuda")
    return torch.device(name)


def get_lr(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up over `warmup_epochs`, then cosine decay to zero at the last step."""
    total = cfg.epochs * steps_per_epoch
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return cfg.lr * (step + 1) / warm
    progress = (step - warm) / max(1.0, total - warm)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def group_accuracy(rows: dict[str, np.ndarray], groups: np.ndarray, grp: str) -> float:
    mask = groups == grp
    n = rows["n"][mask].sum()
    return float(rows["correct"][mask].sum() / n) if n else float("nan")


def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("imbtui")
    except PackageNotFoundError:
        return "unknown"


# ==== training ====================================================================================

def train(cfg: TrainConfig, sink: Sink | None = None, hooks: Hooks | None = None) -> RunResult:
    sink = sink or NullSink()
    hooks = hooks or Hooks()
    if cfg.epochs < 1:
        raise DataError(f"--epochs must be >= 1, got {cfg.epochs}")
    if cfg.batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise DataError(f"--lr must be a positive number, got {cfg.lr}")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)

    # -- data: long-tailed training set, balanced test set, all on the device ---------------------
    ds = load_dataset(cfg.dataset, cfg.data_dir)
    counts = profile_counts(max(ds.class_sizes()), ds.n_classes, cfg.ratio, cfg.profile,
                            cfg.minority_fraction)
    idx = long_tailed_indices(ds.y_train, counts, cfg.seed)
    x_tr = torch.from_numpy(ds.x_train[idx]).to(device)
    y_tr = torch.from_numpy(ds.y_train[idx]).to(device)
    x_te = torch.from_numpy(ds.x_test).to(device)
    y_te = torch.from_numpy(ds.y_test).to(device)
    classes = class_table(counts, ds.test_sizes(), ds.class_names, cfg.profile,
                          cfg.minority_fraction)
    groups = np.array([c.grp for c in classes])
    n_train, n_classes = len(y_tr), ds.n_classes
    if cfg.batch_size > n_train:
        raise DataError(f"--batch-size {cfg.batch_size} exceeds the {n_train} training samples")
    steps_per_epoch = n_train // cfg.batch_size  # drop the last partial batch: equal-sized steps
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)

    # -- model, objective, optimiser -----------------------------------------------------------
    model_name = cfg.resolved_model()
    model = build_model(model_name, tuple(ds.x_train.shape[1:]), n_classes).to(device)
    criterion = build_loss(cfg.loss, counts, device, **cfg.extra)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)

    # -- the run's identity --------------------------------------------------------------------
    config = {**dataclasses.asdict(cfg), "model": model_name, "n_classes": n_classes,
              "n_train": n_train, "steps_per_epoch": steps_per_epoch,
              "n_params": n_params(model)}
    sink.start({"name": cfg.name or f"{cfg.dataset}-{cfg.profile}{cfg.ratio:g}-{cfg.loss}",
                "config": config, "device": str(device), "code_version": code_version(),
                "epoch_done": 0, "step_done": 0, "total_steps": total_steps})
    recording = cfg.dynamics != "off"
    if recording:
        sink.write("classes", {f: [getattr(c, f) for c in classes]
                               for f in ("class_id", "class_name", "train_count", "test_count",
                                         "rank", "grp", "shot")})
    hooks.on_start({"run_id": sink.run_id, "device": str(device), "counts": counts,
                    "classes": classes, "total_steps": total_steps, "epochs": cfg.epochs,
                    "steps_per_epoch": steps_per_epoch})

    rec = StepRecorder(n_classes, max(1, cfg.flush_steps), device)
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        last_flush = time.monotonic()
        if not len(rec):
            return
        cols = rec.drain()
        bad = ~np.isfinite(cols["loss_sum"])
        if bad.any():  # keep every row up to and including the first bad step, then stop
            first = int(cols["step"][bad][0])
            keep = cols["step"] <= first
            sink.write("steps", {k: v[keep] for k, v in cols.items()})
            raise Diverged(first)
        sink.write("steps", cols)
        n = cols["n"].sum()
        hooks.on_flush(int(cols["step"][-1]), float(cols["loss_sum"].sum() / n) if n else 0.0)

    def evaluate_epoch(epoch: int, step: int) -> dict[str, float]:
        w, b = classifier_rows(model.fc)
        summary: dict[str, float] = {}
        for split, (x, y) in (("train", (x_tr, y_tr)), ("test", (x_te, y_te))):
            rows = evaluate(model, x, y, n_classes)
            if recording:
                sink.write("epochs", {"epoch": np.full(n_classes, epoch), "step": np.full(
                    n_classes, step), "split": [split] * n_classes, "class_id": np.arange(
                    n_classes), **rows, "weight_norm": w, "bias": b})
            summary[f"{split}_majority"] = group_accuracy(rows, groups, "majority")
            summary[f"{split}_minority"] = group_accuracy(rows, groups, "minority")
            summary[f"{split}_balanced"] = float(np.mean(rows["correct"] / np.maximum(
                rows["n"], 1)))
            summary[f"{split}_loss"] = float(rows["loss_sum"].sum() / max(1, rows["n"].sum()))
        return summary

    t0 = time.perf_counter()
    step, epoch = 0, 0
    status, message = "finished", None
    final: dict[str, float] = {}
    try:
        final = evaluate_epoch(0, 0)
        hooks.on_epoch(0, final)
        for epoch in range(1, cfg.epochs + 1):
            # -- one epoch of SGD over a device-side permutation --------------------------------
            model.train()
            perm = torch.randperm(n_train, device=device, generator=gen)
            for i in range(steps_per_epoch):
                if step >= total_steps:
                    break
                lr = get_lr(cfg, step, steps_per_epoch)
                for g in opt.param_groups:
                    g["lr"] = lr
                bi = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
                xb, yb = x_tr[bi], y_tr[bi]
                logits = model(xb)
                loss = criterion(logits, yb, epoch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if recording:  # reads the classifier's gradient before the optimiser moves it
                    rec.record(step, epoch, lr, logits, yb, model.fc.weight.grad)
                opt.step()
                step += 1
                if rec.full or time.monotonic() - last_flush >= cfg.flush_seconds:
                    flush()
            flush()
            # -- per-epoch evaluation: training set without augmentation, balanced test set -------
            final = evaluate_epoch(epoch, step)
            if not math.isfinite(final["train_loss"]):
                raise Diverged(step, kept=step)
            sink.update(epoch_done=epoch, step_done=step)
            hooks.on_epoch(epoch, final)
            if step >= total_steps:
                break
    except Diverged as exc:
        status, message, step = "diverged", str(exc), exc.kept  # step_done = steps kept
    except KeyboardInterrupt:
        _safe_flush(flush)
        _safe_finish(sink, "interrupted", f"interrupted at step {step}", step_done=step)
        raise
    except BaseException as exc:
        _safe_finish(sink, "failed", f"{exc.__class__.__name__}: {exc}")
        raise
    sink.update(epoch_done=epoch, step_done=step)
    sink.finish(status, message)
    return RunResult(sink.run_id, status, step, epoch, time.perf_counter() - t0, final, message)


def _safe_flush(flush) -> None:
    try:
        flush()
    except Exception:
        pass  # the run is ending anyway; what was flushed before is intact


def _safe_finish(sink: Sink, status: str, message: str, **progress: Any) -> None:
    """Record how the run ended if the store still takes writes (a full disk may refuse even
    run.json): the error already on its way to the user matters more than this one."""
    try:
        if progress:
            sink.update(**progress)
        sink.finish(status, message)
    except Exception:
        pass
