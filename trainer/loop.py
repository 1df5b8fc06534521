"""The training loop, top to bottom: data, model, optimiser, then epochs of one short step each.

The dataset sits on the device as whole tensors; each epoch draws a device-side permutation and
slices it into batches. What is recorded (`dynamics`: off, minimal, full) is the recorder's business
(trainer.recording): the loop calls the same recorder methods whatever it records, so the step has
no recording branches. Per-epoch evaluations of the training set (eval mode, no augmentation) and
the balanced test set follow every epoch, and epoch 0 evaluates the untrained network. Two seeds:
`subset_seed` picks which samples the long-tailed subset keeps (`training_subset`), `seed` the
initialisation, the batch order and the augmentation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from trainer import distributed
from trainer.allocator import keep_freed_memory
from trainer.augment import Augment, normalizer
from trainer.data import (ArrayDataset, ClassInfo, DataError, class_table, dataset_counts,
                          dataset_label, is_image_dataset, load_dataset, long_tailed_indices)
from trainer.dynamics import WithFeatures, evaluate_features
from trainer.losses import build_loss, classifier_scale
from trainer.models import Classifier, build_model, n_params
from trainer.recording import Diverged, Recorder, Subject, make_recorder
from trainer.hessian import make_sharpness
from trainer.conflict import whole_set_of
from trainer.samplers import Sampler
from trainer.config import (CIFAR_LT, DYNAMICS, RECIPES, SCHEDULES, TrainConfig,  # noqa: F401
                            check_config, check_stage_steps, resolve_config)
from trainer.mixup import Mixup, mixed_loss, mixed_terms
from trainer.sharpness import Stepper, make_stepper
from trainer.stages import MaxNorm, begin_stage2, no_projection, stage_lr
from trainer.sink import NullSink, Sink


# ==== configuration (trainer/config.py) ===========================================================

def check_run(cfg: TrainConfig, load: Callable[..., Any] = load_dataset) -> list[int]:
    """What train() would refuse, found without training (a sweep checks every run up front).
    Returns the long-tailed training counts."""
    cfg = resolve_config(cfg)
    check_config(cfg, is_image_dataset(cfg.dataset))
    resolve_device(cfg.device)
    ds = load(cfg.dataset, cfg.data_dir)
    counts = dataset_counts(ds, cfg.ratio, cfg.profile, cfg.minority_fraction)
    if cfg.batch_size > sum(counts):
        raise DataError(f"--batch-size {cfg.batch_size} exceeds the {sum(counts)} training samples")
    check_stage_steps(cfg, sum(counts) // cfg.batch_size)
    build_model(cfg.resolved_model(), tuple(ds.x_train.shape[1:]), ds.n_classes,
                scale=classifier_scale(cfg.loss, cfg.loss_params))
    build_loss(cfg.loss, counts, torch.device("cpu"), cfg.drw, cfg.cb_reduction,
               smoothing=cfg.smoothing, smoothing_tail=cfg.smoothing_tail, **cfg.loss_params)
    return counts


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


def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("imbtui")
    except PackageNotFoundError:
        return "unknown"


# ==== data ========================================================================================

@dataclass
class Data:
    """The run's data, on the device: the long-tailed training set and the balanced test set."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    sample_ids: torch.Tensor  # row of x_train -> row of the dataset's training arrays
    counts: list[int]
    n_classes: int
    classes: list[ClassInfo]
    groups: np.ndarray        # (C,) each class's group: "majority" or "minority"
    steps_per_epoch: int
    total_steps: int
    # a raw batch -> model input: images stay uint8 on the device and are normalised per batch
    # (after crop/flip in training); other data as is
    prepare: Callable[[torch.Tensor], torch.Tensor]


def load_data(cfg: TrainConfig, device: torch.device) -> Data:
    """The long-tailed training set and the balanced test set, all on the device."""
    ds = load_dataset(cfg.dataset, cfg.data_dir)
    counts, idx = training_subset(cfg, ds)
    x_train = torch.from_numpy(ds.x_train[idx]).to(device)
    y_train = torch.from_numpy(ds.y_train[idx]).to(device)
    x_test = torch.from_numpy(ds.x_test).to(device)
    y_test = torch.from_numpy(ds.y_test).to(device)
    classes = class_table(counts, ds.test_sizes(), ds.class_names, cfg.profile,
                          cfg.minority_fraction)
    n_train = len(y_train)
    if cfg.batch_size > n_train:
        raise DataError(f"--batch-size {cfg.batch_size} exceeds the {n_train} training samples")
    steps_per_epoch = n_train // cfg.batch_size  # drop the last partial batch: equal steps
    check_stage_steps(cfg, steps_per_epoch)
    total_steps = (cfg.epochs + trained_stage2_epochs(cfg)) * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    prepare = (normalizer(ds.meta["mean"], ds.meta["std"], device, cfg.channels_last)
               if is_image_dataset(cfg.dataset) else _as_is)
    return Data(x_train, y_train, x_test, y_test, torch.from_numpy(idx).to(device), counts,
                ds.n_classes, classes, np.array([c.grp for c in classes]), steps_per_epoch,
                total_steps, prepare)


def _as_is(x: torch.Tensor) -> torch.Tensor:
    return x


def trained_stage2_epochs(cfg: TrainConfig) -> int:
    """Epochs of SGD the second stage adds (tau-norm's one evaluation trains none)."""
    return 0 if cfg.stage2 == "tau-norm" else cfg.stage2_epochs


def training_subset(cfg: TrainConfig, ds: ArrayDataset) -> tuple[list[int], np.ndarray]:
    """The profile's class counts and the indices (rows of ds's training arrays) of the long-tailed
    subset. Drawn with cfg.subset_seed alone: cfg.seed (initialisation, batch order) plays no part,
    so runs that differ only in their seed train on the same samples."""
    counts = dataset_counts(ds, cfg.ratio, cfg.profile, cfg.minority_fraction)
    return counts, long_tailed_indices(ds.y_train, counts, cfg.subset_seed)


# ==== model, objective, optimiser =================================================================

def make_model(cfg: TrainConfig, data: Data, device: torch.device
               ) -> tuple[Classifier, torch.nn.Module]:
    """The model, its classifier the one the loss asks for (trainer.losses.classifier_scale), and
    its training forward, which returns (features, logits): under torchrun wrapped in DDP
    (gradients averaged), with --compile compiled."""
    model = build_model(cfg.resolved_model(), tuple(data.x_train.shape[1:]), data.n_classes,
                        scale=classifier_scale(cfg.loss, cfg.loss_params)).to(device)
    if is_image_dataset(cfg.dataset) and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = distributed.wrap(WithFeatures(model), device)
    return model, torch.compile(forward) if cfg.compile else forward


def make_optimizer(cfg: TrainConfig, params: Any, weight_decay: float | None = None
                   ) -> torch.optim.Optimizer:
    """SGD with momentum over `params` (a module's parameters, or a list)."""
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay if weight_decay is None else weight_decay)


def max_norm(cfg: TrainConfig, model: Classifier, stage: int) -> Callable[[], None]:
    """What runs after each optimiser step of `stage` (1 or 2): MaxNorm's projection in the stage
    that trains the classifier last (trainer.stages), else nothing."""
    last = 2 if cfg.stage2 != "none" else 1
    return MaxNorm(model.fc, cfg.max_norm) if cfg.max_norm is not None and stage == last \
        else no_projection


def autocast(cfg: TrainConfig, device: torch.device
             ) -> Callable[[], contextlib.AbstractContextManager]:
    """The forward passes' precision: bfloat16 autocast with --bf16, else float32 as is."""
    if cfg.bf16:
        return functools.partial(torch.autocast, device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


@dataclass
class Training:
    """What a step and an evaluation need."""

    cfg: TrainConfig
    data: Data
    model: Classifier
    forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # -> (features, logits)
    criterion: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
    opt: torch.optim.Optimizer
    gen: torch.Generator
    augment: Augment
    autocast: Callable[[], contextlib.AbstractContextManager]
    eval_batch: int
    schedule: Callable[[int], float]  # step -> learning rate
    stepper: Stepper                  # finishes the optimiser step: SGD, SAM or ImbSAM
    mixup: Mixup | None = None
    project: Callable[[], None] = no_projection  # after each optimiser step (MaxNorm)
    frozen: bool = False  # the second stage: the feature extractor in eval mode, not training

    def train_mode(self) -> None:
        self.model.train()
        if self.frozen:
            self.model.features.eval()


# ==== evaluation ==================================================================================

def evaluate_epoch(run: Training, recorder: Recorder, epoch: int, step: int) -> dict[str, float]:
    """Eval passes over the training set (eval mode, no augmentation) and the balanced test set:
    their per-class rows (and feature sums, if the recorder wants them; and post-hoc logit
    adjustment's correct counts for each of cfg.posthoc_tau, with the prior of the training
    counts; and the logit statistics, if the recorder keeps them) go to the recorder, their
    accuracies and losses (`summarise`) to the caller."""
    from trainer.dynamics import class_log_prior

    d = run.data
    rows, features = {}, {}
    for split, x, y in (("train", d.x_train, d.y_train), ("test", d.x_test, d.y_test)):
        with run.autocast():
            rows[split], features[split] = evaluate_features(
                run.model, x, y, d.n_classes, run.eval_batch, prepare=d.prepare,
                features=recorder.features, taus=run.cfg.posthoc_tau,
                log_prior=class_log_prior(d.counts), logit_stats=recorder.logit_stats)
    summary = summarise(rows, d.groups)
    recorder.evaluated(epoch, step, rows, features)
    return summary


def summarise(rows: dict[str, dict[str, np.ndarray]], groups: np.ndarray) -> dict[str, float]:
    """Per split: majority, minority and balanced accuracy, as the store's group_results view
    defines them (the same SQL, over the rows in memory: imbtui.store.semantic), for the progress
    display and RunResult.final; and the mean loss, whose non-finite value means divergence."""
    from imbtui.store.semantic import live_group_accuracy

    summary = live_group_accuracy(rows, [str(g) for g in groups])
    for split, r in rows.items():  # the divergence check's: is the loss still finite?
        summary[f"{split}_loss"] = float(r["loss_sum"].sum() / max(1, r["n"].sum()))
    return summary


def eval_batch_size(device: torch.device, sample_numel: int) -> int:
    """Batch size of the eval passes. Large batches keep a GPU busy. On a CPU a batch whose
    activations stay in cache is much faster: about 400k input values per batch, a power of two
    between 64 and 1024 (measured on 2 cores: MNIST-1D's cnn1d at 1024 is 2.7x faster than at
    4096; ResNet-32 on 32x32x3 images at 128 is 3.1x faster than at 1024)."""
    if device.type == "cuda":
        return 4096
    fit = max(1, (3072 * 128) // max(1, sample_numel))
    return max(64, min(1024, 1 << (fit.bit_length() - 1)))


# ==== the step ====================================================================================

def train_step(run: Training, recorder: Recorder, step: int, epoch: int,
               rows: torch.Tensor) -> None:
    """One SGD step on the batch `rows` (rows of the training tensors, the whole global batch)."""
    # -- learning rate of this step: warm-up, then the schedule
    lr = run.schedule(step)
    for g in run.opt.param_groups:
        g["lr"] = lr
    # -- batch: each rank augments the whole global batch (its generator stays in step with the
    #    others' and the crops are one process's), then keeps its own share
    xb = distributed.shard(run.augment(run.data.x_train[rows], run.gen))
    rows = distributed.shard(rows)
    xb, yb = run.data.prepare(xb), run.data.y_train[rows]
    # -- mixup: the batch mixed with a shuffled copy; yb stays the primary label (weight >= 1/2),
    #    which the recorded statistics follow (trainer/mixup.py)
    xb, mix = mix_batch(run, xb, yb)
    # -- forward: penultimate features and logits (the recorder keeps dLoss/dlogits)
    with run.autocast():
        h, logits = run.forward(xb)
    recorder.watch(logits)
    # -- loss; ImbSAM needs its per-sample terms (their sum is the loss) to split it by group
    loss, terms = objective(run, logits, yb, epoch, mix)
    # -- backward (a gradient probe or ImbSAM backpropagates once more through the kept graph)
    loss.backward(retain_graph=recorder.keeps_graph(step) or run.stepper.keeps_graph)
    # -- record: reads the classifier's gradient before the optimiser moves it
    recorder.record(step, epoch, lr, h, logits, yb, rows)
    # -- step the optimiser (SAM / ImbSAM: a second pass at perturbed weights), zero the
    #    gradients, then project the classifier rows (MaxNorm)
    run.stepper.step(terms, yb, functools.partial(terms_again, run, xb, yb, epoch, mix))
    run.project()


Mix = tuple[torch.Tensor, float] | None  # mixup's partner labels and lam, or None


def mix_batch(run: Training, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, Mix]:
    if run.mixup is None:
        return xb, None
    xb, y_b, lam = run.mixup.mix(xb, yb, run.gen)
    return xb, (y_b, lam)


def objective(run: Training, logits: torch.Tensor, yb: torch.Tensor, epoch: int,
              mix: Mix) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The batch's loss and, for a stepper that splits it by group (ImbSAM), its per-sample
    terms (their sum is the loss); None otherwise, so the plain loss keeps its own kernel."""
    if run.stepper.keeps_graph:
        terms = batch_terms(run, logits, yb, epoch, mix)
        return terms.sum(), terms
    return batch_loss(run, logits, yb, epoch, mix), None


def batch_loss(run: Training, logits: torch.Tensor, yb: torch.Tensor, epoch: int,
               mix: Mix) -> torch.Tensor:
    """The objective; under mixup lam * L(y) + (1 - lam) * L(partner's y)."""
    if mix is None:
        return run.criterion(logits, yb, epoch)
    return mixed_loss(run.criterion, logits, yb, mix[0], mix[1], epoch)


def batch_terms(run: Training, logits: torch.Tensor, yb: torch.Tensor, epoch: int,
                mix: Mix) -> torch.Tensor:
    """`batch_loss` as per-sample terms (N,), whose sum it is."""
    if mix is None:
        return run.criterion.terms(logits, yb, epoch)
    return mixed_terms(run.criterion, logits, yb, mix[0], mix[1], epoch)


def terms_again(run: Training, xb: torch.Tensor, yb: torch.Tensor, epoch: int,
                mix: Mix) -> torch.Tensor:
    """The same batch's per-sample terms at the current weights (SAM's second pass)."""
    with run.autocast():
        _, logits = run.forward(xb)
    return batch_terms(run, logits, yb, epoch, mix)


# ==== training ====================================================================================

def train(cfg: TrainConfig, sink: Sink | None = None, hooks: Hooks | None = None) -> RunResult:
    """Train one run. None fields of `cfg` take the dataset's recipe (the sink records the resolved
    config). Bad input raises DataError before the sink starts; a GPU out of memory ends the run as
    failed and raises DataError too, so the CLI shows one line."""
    keep_freed_memory()  # before the first batch is allocated (trainer/allocator.py)
    try:
        with frozen_heap():
            return _train(resolve_config(cfg), sink or NullSink(), hooks or Hooks())
    except torch.OutOfMemoryError:
        raise DataError("the GPU ran out of memory: try a smaller --batch-size") from None
    finally:
        distributed.teardown()  # leaves a torchrun process group this run joined


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """The objects that exist when a run starts (imported modules: about 340,000 objects with
    torch, polars and DuckDB loaded) kept out of the cyclic garbage collector's full passes
    (`gc.freeze`) until it ends. Each full pass would otherwise walk them all, 130-270 ms on a
    2-core Xeon, a few times a minute as the loop allocates: stalls the size of a whole flush
    window. The run's own objects are collected as before; a caller that froze the heap itself
    keeps it frozen."""
    mine = gc.get_freeze_count() == 0
    if mine:
        gc.freeze()
    try:
        yield
    finally:
        if mine:
            gc.unfreeze()


def _train(cfg: TrainConfig, sink: Sink, hooks: Hooks) -> RunResult:
    check_config(cfg, is_image_dataset(cfg.dataset))
    device = distributed.setup(resolve_device(cfg.device))  # under torchrun: this rank's device
    distributed.check_batch(cfg.batch_size)
    sink = distributed.rank_sink(sink)  # one run in the store: rank 0 writes, the others don't
    torch.manual_seed(cfg.seed)

    # -- data, model, objective, optimiser, batch order -----------------------------------------
    data = load_data(cfg, device)
    model, forward = make_model(cfg, data, device)
    criterion = build_loss(cfg.loss, data.counts, device, cfg.drw, cfg.cb_reduction,
                           smoothing=cfg.smoothing, smoothing_tail=cfg.smoothing_tail,
                           **cfg.loss_params)
    opt = make_optimizer(cfg, model)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    sampler = Sampler(cfg.sampler, data.y_train, data.counts, gen)
    run = Training(cfg, data, model, forward, criterion, opt, gen, Augment(cfg.augment),
                   autocast(cfg, device), eval_batch_size(device, data.x_train[0].numel()),
                   functools.partial(get_lr, cfg, steps_per_epoch=data.steps_per_epoch),
                   make_stepper(cfg.optimizer, opt, [p for p in model.parameters()
                                                     if p.requires_grad], cfg.rho,
                                torch.as_tensor(data.groups == "minority", device=device)),
                   Mixup(cfg.mixup, cfg.seed) if cfg.mixup > 0 else None,
                   max_norm(cfg, model, stage=1))
    meta = run_meta(cfg, data, model, device)
    # the recorder exists before the run does, so the handlers below can always flush it
    recorder = make_recorder(cfg.dynamics, sink, hooks, Subject(
        model, data.groups == "minority", data.sample_ids, data.steps_per_epoch, device,
        cfg.flush_steps, cfg.flush_seconds, cfg.probe_every, cfg.posthoc_tau,
        sharpness=make_sharpness(cfg, data), conflict_every=cfg.conflict_every,
        whole_set=lambda epoch, minority: whole_set_of(run, epoch, minority)))

    at = Progress()  # the loop's step and epoch as it goes: what a Ctrl-C records
    status, message = "finished", None
    final: dict[str, float] = {}
    # The run exists in the store from sink.start on: whatever stops it, its setup included (a
    # Ctrl-C, or a sweep's SIGINT landing while start() still starts the heartbeat just after
    # run.json appeared), the handlers below record how it ended. start() is inside the try.
    try:
        sink.start(meta)
        recorder.start(data.classes)
        hooks.on_start({"run_id": sink.run_id, "device": str(device), "counts": data.counts,
                        "classes": data.classes, "total_steps": data.total_steps,
                        "epochs": cfg.epochs, "steps_per_epoch": data.steps_per_epoch})
        t0 = time.perf_counter()
        final = evaluate_epoch(run, recorder, 0, 0)
        hooks.on_epoch(0, final)
        final = train_epochs(run, recorder, sink, hooks, sampler, range(1, cfg.epochs + 1), at,
                             final)
        if cfg.stage2 != "none":  # -- the second stage, on the frozen features ---------------
            run, sampler = second_stage(run, gen, at.step)
            final = train_epochs(run, recorder, sink, hooks, sampler,
                                 range(cfg.epochs + 1, cfg.epochs + 1 + cfg.stage2_epochs), at,
                                 final)
    except Diverged as exc:
        status, message, at.step = "diverged", str(exc), exc.kept  # step_done = steps kept
    except KeyboardInterrupt:
        _safe_flush(recorder)
        _safe_finish(sink, "interrupted", f"interrupted at step {at.step}", step_done=at.step)
        raise
    except BaseException as exc:
        _safe_wait(recorder)  # no flush may write after the run's end is recorded
        _safe_finish(sink, "failed", f"{exc.__class__.__name__}: {exc}")
        raise
    sink.update(epoch_done=at.epoch, step_done=at.step)
    sink.finish(status, message)
    return RunResult(sink.run_id, status, at.step, at.epoch, time.perf_counter() - t0, final,
                     message, model)


@dataclass
class Progress:
    """Where the loop is: steps taken and the epoch under way (updated as it goes, so whatever
    stops the run reads them)."""

    step: int = 0
    epoch: int = 0


def train_epochs(run: Training, recorder: Recorder, sink: Sink, hooks: Hooks, sampler: Sampler,
                 epochs: range, at: Progress, final: dict[str, float]) -> dict[str, float]:
    """Epochs of SGD over device-side permutations, each followed by its evaluation, advancing
    `at`; returns the last evaluation's summary."""
    cfg, data = run.cfg, run.data
    for at.epoch in epochs:
        run.train_mode()
        perm = sampler.epoch()[:data.steps_per_epoch * cfg.batch_size]  # whole batches only
        for rows in perm.view(-1, cfg.batch_size)[:data.total_steps - at.step]:  # --max-steps
            # after the first step nothing in a step may wait for the device (checked on CUDA)
            with sync_guard(cfg.check_sync and at.step > 0):
                train_step(run, recorder, at.step, at.epoch, rows)
            at.step += 1
            recorder.flush_if_due()
        recorder.flush(epoch_end=True, overlap=True)  # on its own thread, during the evaluation
        # -- per-epoch evaluation: training set without augmentation, balanced test set ---------
        final = evaluate_epoch(run, recorder, at.epoch, at.step)
        if not math.isfinite(final["train_loss"]):
            raise Diverged(at.step, kept=at.step)
        sink.update(epoch_done=at.epoch, step_done=at.step)
        hooks.on_epoch(at.epoch, final)
        if at.step >= data.total_steps:
            break
    return final


def second_stage(run: Training, gen: torch.Generator, step: int) -> tuple[Training, Sampler]:
    """The run as the second stage trains it (trainer.stages): the feature extractor frozen, the
    stage's parameters, objective, optimiser (SGD: no SAM, no mixup), sampler and learning rate,
    and MaxNorm if asked.
    tau-norm trains nothing: its one epoch has no batches, only the evaluation."""
    cfg, data = run.cfg, run.data
    stage = begin_stage2(cfg.stage2, run.model, data.counts, run.data.x_train.device,
                         cfg.tau_norm)
    opt = make_optimizer(cfg, stage.params or [torch.nn.Parameter(torch.zeros(1))],
                         cfg.stage2_weight_decay)
    steps = trained_stage2_epochs(cfg) * data.steps_per_epoch
    peak = cfg.stage2_lr if cfg.stage2_lr is not None else cfg.lr
    run = dataclasses.replace(
        run, criterion=stage.criterion, opt=opt, frozen=True, mixup=None,
        stepper=make_stepper("sgd", opt, stage.params, cfg.rho, torch.zeros(0)),
        schedule=functools.partial(stage_lr, peak, first_step=step, steps=steps),
        project=max_norm(cfg, run.model, stage=2))
    sampler = Sampler(stage.sampler, data.y_train, data.counts, gen)
    return run, sampler


def run_meta(cfg: TrainConfig, data: Data, model: torch.nn.Module,
             device: torch.device) -> dict[str, Any]:
    """The run's identity, as the sink records it at its start (the full config included)."""
    config = {**dataclasses.asdict(cfg), "model": cfg.resolved_model(),
              "n_classes": data.n_classes, "n_train": len(data.y_train),
              "steps_per_epoch": data.steps_per_epoch, "n_params": n_params(model),
              "world_size": distributed.world_size()}
    return {"name": cfg.name or default_name(cfg), "config": config, "device": str(device),
            "code_version": code_version(), "epoch_done": 0, "step_done": 0,
            "total_steps": data.total_steps}


def default_name(cfg: TrainConfig) -> str:
    """A run's name when none is given: dataset, profile and ratio, then the method label."""
    from imbtui.store.schema import method_label

    method = method_label(dataclasses.asdict(cfg))
    return f"{dataset_label(cfg.dataset)}-{cfg.profile}{cfg.ratio:g}-{method}"


def _safe_flush(recorder: Recorder) -> None:
    try:
        recorder.flush(epoch_end=True)  # after waiting for one under way
    except Exception:
        pass  # the run is ending anyway; what was flushed before is intact


def _safe_wait(recorder: Recorder) -> None:
    try:
        recorder.wait()
    except Exception:
        pass  # the run has failed already: that error is the one to report


def _safe_finish(sink: Sink, status: str, message: str, **progress: Any) -> None:
    """Record how the run ended if the store still takes writes (a full disk may refuse even
    run.json): the error already on its way to the user matters more than this one."""
    try:
        if progress:
            sink.update(**progress)
        sink.finish(status, message)
    except Exception:
        pass
