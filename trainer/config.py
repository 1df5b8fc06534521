"""A training run's configuration and its checks.

`TrainConfig` holds one run's options (declared, with their help, choices and defaults, in
trainer/options.py); `resolve_config` fills the recipe options a run left None from its dataset's
recipe; `check_config` refuses values and combinations that cannot work, before anything is
written.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from trainer.data import DataError, dataset_hash, default_model
from trainer.options import (AUGMENTS, CB_REDUCTIONS, CIFAR_LT, DEFAULT_MODEL,  # noqa: F401
                             DEVICES, DYNAMICS, LOSS_PARAMS, LOSSES, OPTIMIZERS, OPTION, OPTIONS,
                             PROFILES, RECIPES, SAMPLERS, SCHEDULES, STAGE2, _SMALL, parse_floats,
                             parse_ints)


# ==== configuration ===============================================================================

def _default(name: str) -> Any:
    """An option's default, as trainer/options.py declares it."""
    return OPTION[name].default


@dataclass
class TrainConfig:
    """One run's options. Each field that is a command-line option takes its default from
    trainer/options.py (where its help text and choices are); a recipe option left None takes the
    dataset's recipe (`resolve_config`). The rest are set by code, never by a flag."""

    # data and imbalance
    dataset: str = _default("dataset")  # a built-in name, or folder:/abs/path, npz:/abs/path
    data_dir: str | None = None
    data_hash: str | None = None     # a user dataset's SHA-256 (resolve_config; docs/datasets.md)
    profile: str = _default("profile")
    ratio: float = _default("ratio")
    minority_fraction: float = _default("minority_fraction")
    # model and method
    model: str | None = None         # None: the dataset's default
    loss: str = _default("loss")
    sampler: str = _default("sampler")
    drw: int | None = None           # deferred re-weighting: class-balanced weights after N epochs
    loss_params: dict[str, float] = field(default_factory=dict)  # beta, gamma, tau, max_margin,
    #                                  scale, drw_beta (trainer.losses.DEFAULTS)
    cb_reduction: str = _default("cb_reduction")
    smoothing: float = _default("smoothing")              # label smoothing epsilon (largest class)
    smoothing_tail: float | None = None                   # label-aware: epsilon of the smallest
    mixup: float = _default("mixup")                      # input mixup alpha; 0 = off
    max_norm: float | None = None                         # MaxNorm bound of the classifier rows
    # the second stage on frozen features: none, crt, lws, tau-norm, cb-finetune
    stage2: str = _default("stage2")
    stage2_epochs: int | None = None                      # None: the recipe's
    stage2_lr: float | None = None                        # None: lr
    stage2_weight_decay: float | None = None              # None: weight_decay
    tau_norm: float = _default("tau_norm")
    # optimisation: SGD with momentum, linear warm-up, then cosine decay to 0 or steps at
    # milestones. None takes the dataset's recipe (RECIPES).
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None          # peak learning rate
    momentum: float = 0.9
    optimizer: str = _default("optimizer")               # sgd, sam, imbsam
    rho: float = _default("rho")
    weight_decay: float | None = None
    warmup_epochs: float | None = None
    schedule: str | None = None
    milestones: tuple[int, ...] | None = None  # step: lr *= lr_decay after each of these epochs
    lr_decay: float | None = None
    augment: str | None = None
    # speed: the same results on any device, only faster
    channels_last: bool = _default("channels_last")
    bf16: bool = _default("bf16")
    compile: bool = _default("compile")
    check_sync: bool = False         # CUDA: fail on any host synchronisation inside a step (tests)
    # run
    seed: int = _default("seed")
    subset_seed: int = _default("subset_seed")
    device: str = _default("device")
    max_steps: int | None = None
    name: str | None = None
    sweep: str | None = None         # id shared by the runs of one `imbtui sweep`
    # recording
    dynamics: str = _default("dynamics")
    probe_every: int = _default("probe_every")
    conflict_every: int | None = None  # gradient conflict every N steps (trainer/conflict.py)
    posthoc_tau: tuple[float, ...] = _default("posthoc_tau")  # post-hoc logit adjustment's taus
    sharpness_every: int | None = None  # group sharpness after every N-th evaluation (hessian.py)
    sharpness_samples: int = _default("sharpness_samples")  # per group, fixed subset
    flush_steps: int = 200           # flush the step buffer at least every N steps...
    flush_seconds: float = 1.0       # ...or every S seconds, so live readers stay <= ~S s behind
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved_model(self) -> str:
        if self.model:
            return self.model
        model = default_model(self.dataset)
        if model is None:
            raise DataError(f"no default model for dataset {self.dataset!r}; pass --model")
        return model

    @classmethod
    def from_options(cls, values: dict[str, Any]) -> TrainConfig:
        """The config of parsed option values ({option name: value}, as trainer/options.py names
        them): loss parameters gather into loss_params, --milestones text becomes epochs."""
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {k: v for k, v in values.items() if k in fields}
        kwargs["loss_params"] = {k: values[k] for k in LOSS_PARAMS if values.get(k) is not None}
        if isinstance(kwargs.get("milestones"), str):
            kwargs["milestones"] = parse_ints(kwargs["milestones"], "--milestones")
        if isinstance(kwargs.get("posthoc_tau"), str):
            kwargs["posthoc_tau"] = parse_floats(kwargs["posthoc_tau"], "--posthoc-tau")
        if kwargs.get("data_dir") is not None:
            kwargs["data_dir"] = str(kwargs["data_dir"])
        if isinstance(kwargs.get("dataset"), str):  # a user dataset's path, made absolute
            from trainer.userdata import normalise

            kwargs["dataset"] = normalise(kwargs["dataset"])
        return cls(**kwargs)

    def option_values(self) -> dict[str, Any]:
        """{option name: value} of this config: what `to_argv` turns back into `imbtui train`
        arguments (a sweep's runs, a Slurm task's)."""
        values = {o.name: getattr(self, o.name) for o in OPTIONS if hasattr(self, o.name)}
        values.update(self.loss_params)
        return values


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """A copy with every None recipe field taken from the dataset's recipe (a user dataset takes
    the small one). A shortened run keeps the recipe's shape: default milestones scale with
    --epochs (160/200 and 180/200 of the run; one that falls on or after the last epoch, where it
    would never act, is left out). Milestones given by the user are checked here, where their
    origin is still known; a user dataset's content hash is recorded."""
    recipe = RECIPES.get(cfg.dataset, _SMALL)
    values = {k: v if getattr(cfg, k) is None else getattr(cfg, k) for k, v in recipe.items()}
    if cfg.milestones is None and cfg.epochs is not None and recipe["milestones"]:
        values["milestones"] = tuple(m for m in (round(m * cfg.epochs / recipe["epochs"])
                                                 for m in recipe["milestones"]) if m < cfg.epochs)
    values["milestones"] = tuple(int(m) for m in values["milestones"])
    if cfg.milestones is not None:
        check_milestones(values["milestones"], values["epochs"])
    values["model"] = cfg.model or default_model(cfg.dataset)
    values["data_hash"] = cfg.data_hash or dataset_hash(cfg.dataset)
    values["posthoc_tau"] = tuple(float(t) for t in cfg.posthoc_tau)
    values["stage2_epochs"] = planned_stage2_epochs(cfg.stage2, values["stage2_epochs"])
    return dataclasses.replace(cfg, **values)


def planned_stage2_epochs(stage2: str, epochs: int | None) -> int:
    """The epochs a second stage adds to the record: its training epochs (crt, lws,
    cb-finetune), tau-norm's one evaluation, none without a second stage. The run's config keeps
    this number (runs.stage2_epochs), and the loop and the `stages` view read it there."""
    if stage2 == "none":
        return 0
    if stage2 == "tau-norm":
        return 1
    return int(epochs if epochs is not None else 0)


def check_milestones(milestones: tuple[int, ...], epochs: int) -> None:
    """The step schedule multiplies lr by --lr-decay once the epochs before a step reach a
    milestone: one that means something lies in 1..epochs-1, and each comes after the last."""
    for i, m in enumerate(milestones):
        if not 1 <= m <= epochs - 1:
            raise DataError(f"--milestones {','.join(map(str, milestones))}: {m} is outside 1.."
                            f"{epochs - 1} (lr drops after that many of the {epochs} epochs)")
        if i and m <= milestones[i - 1]:
            raise DataError(f"--milestones {','.join(map(str, milestones))} must increase strictly "
                            f"({m} follows {milestones[i - 1]})")


def check_name(name: str | None) -> None:
    """A run's name is shown in tables and one-line messages: printable text only."""
    if name is None:
        return
    if not name.strip():
        raise DataError("--name must not be empty (leave it out for the default name)")
    bad = next((ch for ch in name if not ch.isprintable()), None)
    if bad is not None:
        raise DataError(f"--name {name!r} holds the control character {bad!r}; names are shown "
                        f"in tables and must be printable text")
    if len(name) > MAX_NAME:
        raise DataError(f"--name is {len(name)} characters long; at most {MAX_NAME}")


MAX_NAME = 200


def _choose(value: Any, choices: tuple[str, ...], label: str) -> None:
    """Refuse a value that is not one of the option's choices, naming the valid ones."""
    if value not in choices:
        raise DataError(f"unknown {label} {value!r}: choose one of {', '.join(choices)}")


def check_config(cfg: TrainConfig, image: bool) -> None:
    """Values and combinations that cannot work, refused before anything is written."""
    if cfg.epochs < 1:
        raise DataError(f"--epochs must be >= 1, got {cfg.epochs}")
    if cfg.batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    check_name(cfg.name)
    for o in OPTIONS:  # the parser's bounds, for configs made in Python too
        value = getattr(cfg, o.name, None)
        if o.kind == "int" and o.maximum is not None and value is not None and value > o.maximum:
            raise DataError(f"{o.cli_flag} {value} is above its maximum {o.maximum:,}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise DataError(f"--lr must be a positive number, got {cfg.lr}")
    _choose(cfg.schedule, SCHEDULES, "--schedule")
    if cfg.schedule == "cosine" and cfg.milestones:
        raise DataError("--milestones need --schedule step (the cosine schedule has none)")
    if not cfg.lr_decay > 0:
        raise DataError(f"--lr-decay must be a positive factor, got {cfg.lr_decay}")
    _choose(cfg.loss, LOSSES, "loss")
    if cfg.subset_seed < 0:
        raise DataError(f"--subset-seed must be >= 0, got {cfg.subset_seed}")
    _choose(cfg.cb_reduction, CB_REDUCTIONS, "--cb-reduction")
    _choose(cfg.profile, PROFILES, "--profile")
    _choose(cfg.device, DEVICES, "--device")
    _choose(cfg.dynamics, DYNAMICS, "--dynamics")
    if cfg.probe_every < 1:
        raise DataError(f"probe_every must be >= 1 step, got {cfg.probe_every}")
    if cfg.conflict_every is not None and cfg.conflict_every < 1:
        raise DataError(f"--conflict-every must be >= 1 step, got {cfg.conflict_every}")
    if cfg.conflict_every is not None and cfg.dynamics != "full":
        raise DataError(f"--conflict-every records with the full recorder: it needs --dynamics "
                        f"full, not --dynamics {cfg.dynamics}")
    if cfg.sharpness_every is not None and cfg.sharpness_every < 1:
        raise DataError(f"--sharpness-every must be >= 1 epoch, got {cfg.sharpness_every}")
    if cfg.sharpness_samples < 1:
        raise DataError(f"--sharpness-samples must be >= 1, got {cfg.sharpness_samples}")
    if cfg.sharpness_every is not None and cfg.dynamics == "off":
        raise DataError("--sharpness-every writes the sharpness table, but --dynamics off "
                        "records nothing: use --dynamics minimal or full")
    _choose(cfg.sampler, SAMPLERS, "sampler")
    _choose(cfg.augment, AUGMENTS, "--augment")
    if cfg.augment != "none" and not image:
        raise DataError(f"--augment {cfg.augment} needs an image dataset; {cfg.dataset} is 1D")
    if cfg.drw is not None and not 0 <= cfg.drw < cfg.epochs:
        raise DataError(f"--drw {cfg.drw} must lie in [0, --epochs {cfg.epochs}): re-weighting "
                        f"starts after that many epochs")
    check_method(cfg)


def check_method(cfg: TrainConfig) -> None:
    """Combinations of methods that cannot be defined, refused with one line each."""
    for flag, eps in (("--smoothing", cfg.smoothing), ("--smoothing-tail", cfg.smoothing_tail)):
        if eps is not None and not 0.0 <= eps < 1.0:
            raise DataError(f"{flag} must lie in [0, 1), got {eps}")
    if cfg.loss == "focal" and (cfg.smoothing > 0 or cfg.smoothing_tail is not None):
        raise DataError("label smoothing softens a cross-entropy's target; --loss focal has "
                        "none to soften (use ce, weighted-ce, cb, ldam, balanced-softmax or "
                        "logit-adjusted)")
    if not (cfg.mixup >= 0 and math.isfinite(cfg.mixup)):
        raise DataError(f"--mixup alpha must be >= 0, got {cfg.mixup}")
    _choose(cfg.optimizer, OPTIMIZERS, "--optimizer")
    if cfg.optimizer != "sgd" and not cfg.rho > 0:
        raise DataError(f"--rho must be > 0 for --optimizer {cfg.optimizer}, got {cfg.rho}")
    if cfg.optimizer == "imbsam" and cfg.mixup > 0:
        raise DataError("--optimizer imbsam splits each sample's loss by its class (majority or "
                        "minority); a mixed sample of --mixup has two classes, so the split is "
                        "undefined")
    if cfg.max_norm is not None:
        if not cfg.max_norm > 0:
            raise DataError(f"--max-norm must be > 0, got {cfg.max_norm}")
        if cfg.loss in NORMED_LOSSES:
            raise DataError(f"--max-norm bounds the classifier's row norms, but --loss {cfg.loss} "
                            "trains a cosine classifier whose rows are normalised")
    _choose(cfg.stage2, STAGE2, "--stage2")
    if cfg.stage2 == "tau-norm" and cfg.loss in NORMED_LOSSES:
        raise DataError(f"--stage2 tau-norm rescales the classifier's rows, but --loss {cfg.loss} "
                        "trains a cosine classifier whose rows all have norm 1")
    if cfg.stage2 in STAGE2_TRAINED:
        if cfg.stage2_epochs is not None and cfg.stage2_epochs < 1:
            raise DataError(f"--stage2-epochs must be >= 1 for --stage2 {cfg.stage2}, got "
                            f"{cfg.stage2_epochs}")
        if cfg.stage2_lr is not None and not (cfg.stage2_lr > 0 and math.isfinite(cfg.stage2_lr)):
            raise DataError(f"--stage2-lr must be a positive number, got {cfg.stage2_lr}")
    if any(not math.isfinite(t) for t in cfg.posthoc_tau):
        raise DataError(f"--posthoc-tau values must be finite numbers, got {cfg.posthoc_tau}")


NORMED_LOSSES = ("ldam",)  # their cosine classifier (trainer.losses.NORMED_CLASSIFIER)
STAGE2_TRAINED = ("crt", "lws", "cb-finetune")  # the second stages that train


def check_stage_steps(cfg: TrainConfig, steps_per_epoch: int) -> None:
    """A second stage needs the whole first stage: refuse a --max-steps that ends inside it."""
    if cfg.stage2 != "none" and cfg.max_steps is not None \
            and cfg.max_steps < steps_per_epoch * cfg.epochs:
        raise DataError(f"--max-steps {cfg.max_steps} ends the run inside its first stage "
                        f"({steps_per_epoch * cfg.epochs} steps), so --stage2 {cfg.stage2} "
                        "would have no first stage to build on")
