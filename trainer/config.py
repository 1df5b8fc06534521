"""A training run's configuration: every option, its default or recipe default, and its checks.

`TrainConfig` holds one run's options; `RECIPES` what each dataset's None fields become
(`resolve_config`); `check_config` refuses values and combinations that cannot work, before anything
is written.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from trainer.augment import AUGMENTS
from trainer.data import DataError
from trainer.losses import CB_REDUCTIONS, LOSSES
from trainer.models import DEFAULT_MODEL
from trainer.samplers import SAMPLERS


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
    loss: str = "ce"                 # trainer.losses.LOSSES
    sampler: str = "none"            # none | class-balanced | square-root
    drw: int | None = None           # deferred re-weighting: class-balanced weights after N epochs
    loss_params: dict[str, float] = field(default_factory=dict)  # beta, gamma, tau, max_margin,
    #                                  scale, drw_beta (trainer.losses.DEFAULTS)
    cb_reduction: str = "weighted-mean"  # class-weighted losses (weighted-ce, cb, the DRW phase):
    #                                  sum w*l / sum w (LDAM-DRW's code, PyTorch's weight=) or
    #                                  "mean": sum w*l / N (Cui et al.'s code); not focal
    #                                  (trainer.losses.CB_REDUCTIONS)
    # optimisation: SGD with momentum, linear warm-up, then cosine decay to 0 or steps at
    # milestones. None takes the dataset's recipe (RECIPES).
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None          # peak learning rate
    momentum: float = 0.9
    weight_decay: float | None = None
    warmup_epochs: float | None = None
    schedule: str | None = None      # cosine | step
    milestones: tuple[int, ...] | None = None  # step: lr *= lr_decay after each of these epochs
    lr_decay: float | None = None
    augment: str | None = None       # none | crop | flip | crop-flip (pad-4 crop; images only)
    # speed: the same results on any device, only faster
    channels_last: bool = True       # image models: NHWC convolutions
    bf16: bool = False               # bfloat16 autocast for forward passes
    compile: bool = False            # torch.compile the training forward pass
    check_sync: bool = False         # CUDA: fail on any host synchronisation inside a step (tests)
    # run
    seed: int = 0                    # the initialisation, the batch order and the augmentation
    subset_seed: int = 0             # which samples the long-tailed subset keeps: fixed across
    #                                  seeds (as LDAM-DRW's rand_number=0), so a seed's spread is
    #                                  the training's alone
    device: str = "auto"             # auto | cpu | cuda
    max_steps: int | None = None     # stop after this many optimizer steps (smoke tests)
    name: str | None = None
    sweep: str | None = None         # id shared by the runs of one `imbtui sweep`
    # recording
    dynamics: str = "full"           # full: + probes, samples, geometry; minimal: steps + epochs
    #                                  rows; off: none (benchmarks)
    probe_every: int = 100           # full: a gradient probe (1 extra backward pass) every N steps
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


# The recipe per dataset: what every None field of TrainConfig becomes.
_SMALL = {"epochs": 30, "batch_size": 128, "lr": 0.05, "weight_decay": 5e-4, "warmup_epochs": 1.0,
          "schedule": "cosine", "milestones": (), "lr_decay": 0.1, "augment": "none"}
# The standard long-tailed CIFAR recipe (Cao et al. 2019): 200 epochs, batch 128, SGD lr 0.1 with 5
# linear warm-up epochs, x0.01 after epoch 160 and again after 180, weight decay 2e-4, pad-4 random
# crop and horizontal flip.
CIFAR_LT = {"epochs": 200, "batch_size": 128, "lr": 0.1, "weight_decay": 2e-4, "warmup_epochs": 5.0,
            "schedule": "step", "milestones": (160, 180), "lr_decay": 0.01, "augment": "crop-flip"}
RECIPES: dict[str, dict[str, Any]] = {"mnist1d": _SMALL, "mnist": _SMALL, "fashion-mnist": _SMALL,
                                      "cifar10": CIFAR_LT, "cifar100": CIFAR_LT}
SCHEDULES = ("cosine", "step")
DYNAMICS = ("full", "minimal", "off")  # full = everything; minimal = steps + epochs rows; off = none


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """A copy with every None recipe field taken from the dataset's recipe. A shortened run keeps
    the recipe's shape: default milestones scale with --epochs (160/200 and 180/200 of the run)."""
    recipe = RECIPES.get(cfg.dataset, _SMALL)
    values = {k: v if getattr(cfg, k) is None else getattr(cfg, k) for k, v in recipe.items()}
    if cfg.milestones is None and cfg.epochs is not None and recipe["milestones"]:
        values["milestones"] = tuple(round(m * cfg.epochs / recipe["epochs"])
                                     for m in recipe["milestones"])
    values["milestones"] = tuple(int(m) for m in values["milestones"])
    values["model"] = cfg.model or DEFAULT_MODEL.get(cfg.dataset)
    return dataclasses.replace(cfg, **values)


def check_config(cfg: TrainConfig, image: bool) -> None:
    """Values and combinations that cannot work, refused before anything is written."""
    if cfg.epochs < 1:
        raise DataError(f"--epochs must be >= 1, got {cfg.epochs}")
    if cfg.batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise DataError(f"--lr must be a positive number, got {cfg.lr}")
    if cfg.schedule not in SCHEDULES:
        raise DataError(f"unknown --schedule {cfg.schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if cfg.schedule == "cosine" and cfg.milestones:
        raise DataError("--milestones need --schedule step (the cosine schedule has none)")
    if not cfg.lr_decay > 0:
        raise DataError(f"--lr-decay must be a positive factor, got {cfg.lr_decay}")
    if cfg.loss not in LOSSES:
        raise DataError(f"unknown loss {cfg.loss!r}: choose one of {', '.join(LOSSES)}")
    if cfg.subset_seed < 0:
        raise DataError(f"--subset-seed must be >= 0, got {cfg.subset_seed}")
    if cfg.cb_reduction not in CB_REDUCTIONS:
        raise DataError(f"unknown --cb-reduction {cfg.cb_reduction!r}: choose one of "
                        f"{', '.join(CB_REDUCTIONS)}")
    if cfg.dynamics not in DYNAMICS:
        raise DataError(f"unknown --dynamics {cfg.dynamics!r}: choose one of {', '.join(DYNAMICS)}")
    if cfg.probe_every < 1:
        raise DataError(f"probe_every must be >= 1 step, got {cfg.probe_every}")
    if cfg.sampler not in SAMPLERS:
        raise DataError(f"unknown sampler {cfg.sampler!r}: choose one of {', '.join(SAMPLERS)}")
    if cfg.augment not in AUGMENTS:
        raise DataError(f"unknown --augment {cfg.augment!r}: choose one of {', '.join(AUGMENTS)}")
    if cfg.augment != "none" and not image:
        raise DataError(f"--augment {cfg.augment} needs an image dataset; {cfg.dataset} is 1D")
    if cfg.drw is not None and not 0 <= cfg.drw < cfg.epochs:
        raise DataError(f"--drw {cfg.drw} must lie in [0, --epochs {cfg.epochs}): re-weighting "
                        f"starts after that many epochs")
