"""The training loop: one flat loop, a comment per phase, tiny helpers.

The dataset sits on the device as whole tensors; each epoch draws a device-side permutation and slices
it into batches. Per-class step dynamics accumulate in a device buffer (trainer.dynamics) and reach the
sink once per flush; per-epoch evaluations of the training set (eval mode, no augmentation) and the
balanced test set follow every epoch, and epoch 0 records the untrained network. `dynamics="full"`
adds each sample's presentations and the gradient probes (written once per epoch) and the feature
geometry of every evaluation. Two seeds: `subset_seed` picks which samples the long-tailed subset keeps
(`training_subset`), `seed` the initialisation, the batch order and the augmentation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trainer import distributed
from trainer.augment import Augment, normalizer
from trainer.data import (ArrayDataset, DataError, class_table, dataset_counts, load_dataset,
                          long_tailed_indices)
from trainer.dynamics import (SHARED_STATS, STEP_STATS, GradientProbe, SampleRecorder,
                              StepRecorder, WithFeatures, classifier_grad_split, classifier_rows,
                              evaluate_features, geometry_tables)
from trainer.losses import DEFAULTS as LOSS_DEFAULTS
from trainer.losses import build_loss
from trainer.models import build_model, n_params
from trainer.samplers import Sampler
from trainer.config import (CIFAR_LT, DYNAMICS, RECIPES, SCHEDULES, TrainConfig,  # noqa: F401
                            check_config, resolve_config)
from trainer.sink import NullSink, Sink
from trainer.vision import IMAGE_DATASETS


# ==== configuration (trainer/config.py) ===========================================================

def check_run(cfg: TrainConfig, load: Callable[..., Any] = load_dataset) -> list[int]:
    """What train() would refuse, found without training (a sweep checks every run up front).
    Returns the long-tailed training counts."""
    cfg = resolve_config(cfg)
    check_config(cfg, cfg.dataset in IMAGE_DATASETS)
    resolve_device(cfg.device)
    ds = load(cfg.dataset, cfg.data_dir)
    counts = dataset_counts(ds, cfg.ratio, cfg.profile, cfg.minority_fraction)
    if cfg.batch_size > sum(counts):
        raise DataError(f"--batch-size {cfg.batch_size} exceeds the {sum(counts)} training samples")
    build_model(cfg.resolved_model(), tuple(ds.x_train.shape[1:]), ds.n_classes)
    build_loss(cfg.loss, counts, torch.device("cpu"), cfg.drw, cfg.cb_reduction,
               **cfg.loss_params)
    return counts


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
    model: Any = field(default=None, repr=False)  # the trained model (tests re-evaluate it)


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
    """Linear warm-up over `warmup_epochs`, then cosine decay to zero at the last step, or (step
    schedule) the peak times lr_decay for every milestone epoch already completed."""
    if cfg.epochs is None:
        cfg = resolve_config(cfg)
    total = cfg.epochs * steps_per_epoch
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "step":
        done = step // steps_per_epoch  # whole epochs before this step
        return cfg.lr * cfg.lr_decay ** sum(done >= m for m in cfg.milestones)
    progress = (step - warm) / max(1.0, total - warm)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@contextlib.contextmanager
def sync_guard(on: bool):
    """Make any host synchronisation inside the block an error (CUDA's sync debug mode)."""
    if not on:
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def group_accuracy(rows: dict[str, np.ndarray], groups: np.ndarray, grp: str) -> float:
    """Mean of the group's per-class accuracies: pooling samples would let a group's large classes
    outweigh its small ones on the long-tailed training set (but not on the balanced test set)."""
    mask = (groups == grp) & (rows["n"] > 0)
    return float(np.mean(rows["correct"][mask] / rows["n"][mask])) if mask.any() else float("nan")


def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("imbtui")
    except PackageNotFoundError:
        return "unknown"


# ==== training ====================================================================================

def train(cfg: TrainConfig, sink: Sink | None = None, hooks: Hooks | None = None) -> RunResult:
    """Train one run. None fields of `cfg` take the dataset's recipe (the sink records the resolved
    config). Bad input raises DataError before the sink starts; a GPU out of memory ends the run as
    failed and raises DataError too, so the CLI shows one line."""
    try:
        return _train(resolve_config(cfg), sink or NullSink(), hooks or Hooks())
    except torch.OutOfMemoryError:
        raise DataError("the GPU ran out of memory: try a smaller --batch-size") from None
    finally:
        distributed.teardown()  # leaves a torchrun process group this run joined


def _train(cfg: TrainConfig, sink: Sink, hooks: Hooks) -> RunResult:
    image = cfg.dataset in IMAGE_DATASETS
    check_config(cfg, image)
    device = distributed.setup(resolve_device(cfg.device))  # under torchrun: this rank's device
    distributed.check_batch(cfg.batch_size)
    sink = distributed.rank_sink(sink)  # one run in the store: rank 0 writes, the others don't
    torch.manual_seed(cfg.seed)

    # -- data: long-tailed training set, balanced test set, all on the device ---------------------
    ds = load_dataset(cfg.dataset, cfg.data_dir)
    counts, idx = training_subset(cfg, ds)
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
    ldam = cfg.loss == "ldam"  # LDAM's margins live on cosines: a normalised classifier
    model = build_model(model_name, tuple(ds.x_train.shape[1:]), n_classes, normed=ldam).to(device)
    if ldam:
        model.fc.scale = float(cfg.loss_params.get("scale", LOSS_DEFAULTS["scale"]))
    if image and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # the training forward returns (features, logits); DDP under torchrun: gradients averaged
    forward = distributed.wrap(WithFeatures(model), device)
    forward = torch.compile(forward) if cfg.compile else forward
    criterion = build_loss(cfg.loss, counts, device, cfg.drw, cfg.cb_reduction, **cfg.loss_params)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    sampler = Sampler(cfg.sampler, y_tr, counts, gen)
    # images stay uint8 on the device: crop/flip, then normalise, per batch (eval: normalise only)
    augment = Augment(cfg.augment)
    prepare = (normalizer(ds.meta["mean"], ds.meta["std"], device, cfg.channels_last)
               if image else None)
    autocast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if cfg.bf16
                else contextlib.nullcontext)

    # -- the run's identity --------------------------------------------------------------------
    config = {**dataclasses.asdict(cfg), "model": model_name, "n_classes": n_classes,
              "n_train": n_train, "steps_per_epoch": steps_per_epoch,
              "n_params": n_params(model), "world_size": distributed.world_size()}
    meta = {"name": cfg.name or default_name(cfg), "config": config, "device": str(device),
            "code_version": code_version(), "epoch_done": 0, "step_done": 0,
            "total_steps": total_steps}

    recording = cfg.dynamics != "off"
    full = cfg.dynamics == "full"

    def drain_extra() -> dict[str, dict[str, Any] | None]:
        return {"samples": samples.drain() if samples is not None and len(samples) else None,
                "probes": probe.drain() if probe is not None and len(probe) else None}

    def flush(extra: bool = False) -> None:
        """Step rows to the sink; with `extra` (epoch end) the per-sample and probe rows too."""
        nonlocal last_flush
        last_flush = time.monotonic()
        if len(rec):
            flush_steps()
        if extra:
            _write_rows(sink, drain_extra())

    def flush_steps() -> None:
        rec.settle()  # the buffered steps' per-sample statistics, all at once (and the samples')
        distributed.reduce_stats_(rec.buf[:len(rec)], STEP_STATS, same=SHARED_STATS)
        cols = rec.drain()
        bad = ~np.isfinite(cols["loss_sum"])
        if bad.any():  # keep every row up to and including the first bad step, then stop
            first = int(cols["step"][bad][0])
            keep = cols["step"] <= first
            sink.write("steps", {k: v[keep] for k, v in cols.items()})
            _write_rows(sink, drain_extra(), first)
            raise Diverged(first)
        sink.write("steps", cols)
        n = cols["n"].sum()
        hooks.on_flush(int(cols["step"][-1]), float(cols["loss_sum"].sum() / n) if n else 0.0)

    eval_batch = eval_batch_size(device, x_tr[0].numel())

    def evaluate_epoch(epoch: int, step: int) -> dict[str, float]:
        w, b = classifier_rows(model.fc)
        summary: dict[str, float] = {}
        feats, parts = {}, []
        for split, (x, y) in (("train", (x_tr, y_tr)), ("test", (x_te, y_te))):
            with autocast():
                rows, feats[split] = evaluate_features(model, x, y, n_classes, eval_batch,
                                                       prepare=prepare, features=full)
            parts.append({"epoch": np.full(n_classes, epoch), "step": np.full(n_classes, step),
                          "split": np.array([split] * n_classes), "class_id": np.arange(
                          n_classes), **rows, "weight_norm": w, "bias": b})
            summary[f"{split}_majority"] = group_accuracy(rows, groups, "majority")
            summary[f"{split}_minority"] = group_accuracy(rows, groups, "minority")
            summary[f"{split}_balanced"] = float(np.mean(rows["correct"] / np.maximum(
                rows["n"], 1)))
            summary[f"{split}_loss"] = float(rows["loss_sum"].sum() / max(1, rows["n"].sum()))
        if recording:  # both splits in one part: a write per epoch, not per split
            sink.write("epochs", {k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
        if full:  # geometry of both splits' features and of the classifier rows
            weight = model.fc.weight.detach().float().cpu().numpy()
            tables = geometry_tables(feats["train"], feats["test"], weight, groups == "minority",
                                     epoch, step)
            sink.write("geometry", tables[0])
            sink.write("geometry_summary", tables[1])
        return summary

    # the recorders exist before the run does, so the handlers below can always flush them
    # full: per-sample rows and gradient probes, buffered for a whole epoch and written at its
    # end (a part per epoch, not per flush: the per-sample rows are the bulk of the store)
    samples = SampleRecorder(max(1, steps_per_epoch), device) if full else None
    rec = StepRecorder(n_classes, max(1, cfg.flush_steps), device, samples=samples)
    # ranks reduce together, so they flush on step counts only
    timed = not distributed.active()
    minority = torch.as_tensor(groups == "minority", device=device)
    probe = (GradientProbe(minority, steps_per_epoch // cfg.probe_every + 1, device) if full
             else None)
    sample_ids = torch.from_numpy(idx).to(device)  # row of x_tr -> row of the dataset's arrays
    params = [p for p in model.parameters() if p.requires_grad]
    last_flush = time.monotonic()

    step, epoch = 0, 0
    status, message = "finished", None
    final: dict[str, float] = {}
    # The run exists in the store from sink.start on: whatever stops it, its setup included (a
    # Ctrl-C, or a sweep's SIGINT landing while start() still starts the heartbeat just after
    # run.json appeared), the handlers below record how it ended. start() is inside the try.
    try:
        sink.start(meta)
        if recording:
            sink.write("classes", {f: [getattr(c, f) for c in classes]
                                   for f in ("class_id", "class_name", "train_count", "test_count",
                                             "rank", "grp", "shot")})
        hooks.on_start({"run_id": sink.run_id, "device": str(device), "counts": counts,
                        "classes": classes, "total_steps": total_steps, "epochs": cfg.epochs,
                        "steps_per_epoch": steps_per_epoch})
        t0 = time.perf_counter()
        final = evaluate_epoch(0, 0)
        hooks.on_epoch(0, final)
        for epoch in range(1, cfg.epochs + 1):
            # -- one epoch of SGD over a device-side permutation --------------------------------
            model.train()
            perm = sampler.epoch()
            for i in range(steps_per_epoch):
                if step >= total_steps:
                    break
                # after the first step nothing in a step may wait for the device (checked on CUDA)
                with sync_guard(cfg.check_sync and step > 0):
                    lr = get_lr(cfg, step, steps_per_epoch)
                    for g in opt.param_groups:
                        g["lr"] = lr
                    bi = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
                    # each rank augments the whole global batch (its generator stays in step with
                    # the others' and the crops are one process's), then keeps its own share
                    xb, bi = distributed.shard(augment(x_tr[bi], gen)), distributed.shard(bi)
                    yb = y_tr[bi]
                    if prepare is not None:
                        xb = prepare(xb)
                    with autocast():
                        h, logits = forward(xb)
                    if recording:  # keeps dLoss/dlogits: the classifier gradient split, probes
                        logits.retain_grad()
                    loss = criterion(logits, yb, epoch)
                    opt.zero_grad(set_to_none=True)
                    probing = probe is not None and step % cfg.probe_every == 0
                    loss.backward(retain_graph=probing)  # a probe backpropagates once more
                    if recording:  # reads the classifier's gradient before the optimiser moves it
                        split = classifier_grad_split(model.fc, h, logits.grad, yb,
                                                      model.fc.weight.grad)
                        rec.record(step, epoch, lr, logits, yb, model.fc.weight.grad, split)
                        if samples is not None:
                            samples.record(step, epoch, sample_ids[bi], yb)
                        if probing:
                            probe.record(step, epoch, logits, yb, params)
                    opt.step()
                step += 1
                if rec.full or (timed and time.monotonic() - last_flush >= cfg.flush_seconds):
                    flush()
            flush(extra=True)
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
        _safe_flush(lambda: flush(extra=True))
        _safe_finish(sink, "interrupted", f"interrupted at step {step}", step_done=step)
        raise
    except BaseException as exc:
        _safe_finish(sink, "failed", f"{exc.__class__.__name__}: {exc}")
        raise
    sink.update(epoch_done=epoch, step_done=step)
    sink.finish(status, message)
    return RunResult(sink.run_id, status, step, epoch, time.perf_counter() - t0, final, message,
                     model)


def training_subset(cfg: TrainConfig, ds: ArrayDataset) -> tuple[list[int], np.ndarray]:
    """The profile's class counts and the indices (rows of ds's training arrays) of the long-tailed
    subset. Drawn with cfg.subset_seed alone: cfg.seed (initialisation, batch order) plays no part,
    so runs that differ only in their seed train on the same samples."""
    counts = dataset_counts(ds, cfg.ratio, cfg.profile, cfg.minority_fraction)
    return counts, long_tailed_indices(ds.y_train, counts, cfg.subset_seed)


def eval_batch_size(device: torch.device, sample_numel: int) -> int:
    """Batch size of the eval passes. Large batches keep a GPU busy. On a CPU a batch whose
    activations stay in cache is much faster: about 400k input values per batch, a power of two
    between 64 and 1024 (measured on 2 cores: MNIST-1D's cnn1d at 1024 is 2.7x faster than at
    4096; ResNet-32 on 32x32x3 images at 128 is 3.1x faster than at 1024)."""
    if device.type == "cuda":
        return 4096
    fit = max(1, (3072 * 128) // max(1, sample_numel))
    return max(64, min(1024, 1 << (fit.bit_length() - 1)))


def default_name(cfg: TrainConfig) -> str:
    """A run's name when none is given: dataset, profile and ratio, then the method label."""
    from imbtui.store.schema import method_label

    method = method_label(cfg.loss, cfg.drw, cfg.sampler, cfg.cb_reduction)
    return f"{cfg.dataset}-{cfg.profile}{cfg.ratio:g}-{method}"


def _write_rows(sink: Sink, tables: dict[str, dict[str, Any] | None],
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
