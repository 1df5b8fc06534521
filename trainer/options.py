"""Every training option, declared once: its name, type, choices, default and help text.

`imbtui train`'s and `imbtui sweep`'s command-line options, the sweep's axes, the argv a sweep hands
each run (locally or in a Slurm array job) and `TrainConfig` (trainer/config.py) are all made from
`OPTIONS`; the choice lists here are the ones the trainer's modules register their implementations
under (losses, samplers, augmentations, models, datasets), and the recipe defaults the help texts
quote come from `RECIPES`. This module imports nothing heavy, so `imbtui --help` stays fast.

Adding an option is one `Option` here and one `TrainConfig` field; adding a loss, a sampler or a
dataset is one name in its tuple here and one implementation in its module (tests check the two
agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# ==== the choices =================================================================================

DATASETS = ("mnist1d", "cifar10", "cifar100", "mnist", "fashion-mnist")
PROFILES = ("exp", "step")
MODELS = ("cnn1d", "mlp", "resnet32", "cnn")
DEFAULT_MODEL = {"mnist1d": "cnn1d", "cifar10": "resnet32", "cifar100": "resnet32",
                 "mnist": "cnn", "fashion-mnist": "cnn"}
LOSSES = ("ce", "weighted-ce", "cb", "focal", "ldam", "balanced-softmax", "logit-adjusted")
CB_REDUCTIONS = ("weighted-mean", "mean")  # the first is the default (trainer/losses.py)
SAMPLERS = ("none", "class-balanced", "square-root")
AUGMENTS = ("none", "crop", "flip", "crop-flip")
SCHEDULES = ("cosine", "step")
OPTIMIZERS = ("sgd", "sam", "imbsam")  # trainer/sharpness.py
STAGE2 = ("none", "crt", "lws", "tau-norm", "cb-finetune")  # trainer/stages.py
DYNAMICS = ("full", "minimal", "off")  # full = everything; minimal = steps + epochs rows; off = none
DEVICES = ("auto", "cpu", "cuda")

# ==== the recipes: what every recipe option becomes when not given ================================

_SMALL = {"epochs": 30, "batch_size": 128, "lr": 0.05, "weight_decay": 5e-4, "warmup_epochs": 1.0,
          "schedule": "cosine", "milestones": (), "lr_decay": 0.1, "augment": "none",
          "stage2_epochs": 5}
# The standard long-tailed CIFAR recipe (Cao et al. 2019): 200 epochs, batch 128, SGD lr 0.1 with 5
# linear warm-up epochs, x0.01 after epoch 160 and again after 180, weight decay 2e-4, pad-4 random
# crop and horizontal flip.
# A second stage (Kang et al. 2020) trains 10 epochs.
CIFAR_LT = {"epochs": 200, "batch_size": 128, "lr": 0.1, "weight_decay": 2e-4, "warmup_epochs": 5.0,
            "schedule": "step", "milestones": (160, 180), "lr_decay": 0.01, "augment": "crop-flip",
            "stage2_epochs": 10}
RECIPES: dict[str, dict[str, Any]] = {"mnist1d": _SMALL, "mnist": _SMALL, "fashion-mnist": _SMALL,
                                      "cifar10": CIFAR_LT, "cifar100": CIFAR_LT}
LOSS_PARAMS = ("beta", "gamma", "tau")  # options that go into TrainConfig.loss_params

# Every whole-number option has a ceiling: far above any real run, well inside int32 (the store's
# epochs columns) and int64 (steps), so a typo such as --epochs 99999999999999999999 is refused by
# the parser instead of overflowing a tensor or scheduling a run that never ends.
MAX_EPOCHS = 100_000
MAX_STEPS = 10**12            # optimizer steps (--max-steps, the every-N-steps lenses)
MAX_SAMPLES = 2**24           # --batch-size, --sharpness-samples
MAX_SEED = 2**32 - 1          # numpy's and torch's seeds alike


# ==== the options =================================================================================

@dataclass(frozen=True)
class Option:
    """One training option.

    name      the TrainConfig field (or loss parameter) it sets; the flag is --name with dashes
    kind      float | int | str | bool | path | ints (comma-separated whole numbers) | floats
              (comma-separated numbers)
    default   its value when not given; None for a recipe option or an optional one
    choices   the allowed values; `strict` ones are refused by the command-line parser, the
              others by trainer.config.check_config (which names the valid ones)
    axis      a sweep axis: `imbtui sweep` takes several values and trains every combination
    sweep     offered by `imbtui sweep` at all (False: it means something else there)
    """

    name: str
    kind: str
    help: str
    default: Any = None
    choices: tuple[str, ...] | None = None
    strict: bool = False
    minimum: float | None = None
    maximum: float | None = None
    flag: str | None = None
    axis: bool = False
    sweep: bool = True
    hidden: bool = False

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def recipe(self) -> bool:
        return self.name in _SMALL

    def full_help(self) -> str:
        """The help text with the choices and, for a recipe option, each recipe's default."""
        text = self.help
        if self.choices and not self.strict:
            text += f" One of: {', '.join(self.choices)}."
        if self.recipe:
            small, cifar = _show(_SMALL[self.name]), _show(CIFAR_LT[self.name])
            text += f" Default: the dataset's recipe ({small}; CIFAR {cifar})."
        return text


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) if value else "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


OPTIONS: tuple[Option, ...] = (
    # data and imbalance
    Option("ratio", "float", "Imbalance ratio: largest class / smallest class (1 = balanced).",
           100.0, minimum=1.0, axis=True),
    Option("dataset", "str", "mnist1d is generated offline and cached; the others come through "
           "torchvision. Your own: folder:PATH (PATH/<class>/*.png|jpg, or PATH/train/<class> and "
           "PATH/test/<class>) or npz:PATH (x_train, y_train, x_test, y_test); see "
           "docs/datasets.md.", "mnist1d", DATASETS, axis=True),
    Option("profile", "str", "exp: n_i = n_max * R^(-i/(C-1)) (Cao et al.); step: a fraction of "
           "classes get n_max / R.", "exp", PROFILES, strict=True),
    Option("minority_fraction", "float", "step profile: fraction of classes that are small "
           "(0 < mu < 1).", 0.5),
    Option("data_dir", "path", "Folder of the torchvision datasets (downloaded there on first "
           "use). Default: $IMBTUI_DATA, else the cache's data/ folder."),
    Option("subset_seed", "int", "Seed for which samples the long-tailed subset keeps; fixed when "
           "--seed varies, so runs of different seeds train on the same samples.", 0, minimum=0,
           maximum=MAX_SEED),
    # model and method
    Option("model", "str", "Default: the dataset's (cnn1d for mnist1d, resnet32 for CIFAR, cnn "
           "for MNIST and Fashion-MNIST).", None, MODELS),
    Option("loss", "str", "Training objective.", "ce", LOSSES, axis=True),
    Option("sampler", "str", "Batch sampling: none (shuffle), class-balanced, square-root.",
           "none", SAMPLERS, axis=True),
    Option("drw", "int", "Deferred re-weighting: class-balanced weights (beta 0.9999) after this "
           "many epochs (LDAM-DRW: --loss ldam --drw 160).", minimum=0, maximum=MAX_EPOCHS),
    Option("beta", "float", "cb loss: beta of the effective number (default 0.9999)."),
    Option("gamma", "float", "focal loss: gamma (default 1)."),
    Option("tau", "float", "logit-adjusted loss: tau (default 1)."),
    Option("cb_reduction", "str", "How a class-weighted loss (weighted-ce, cb, the --drw phase) "
           "averages a batch: weighted-mean = sum w*l / sum w (PyTorch's weight=, the LDAM-DRW "
           "code); mean = sum w*l / N (Cui et al.'s class-balanced loss code). Focal always takes "
           "its reference's plain mean, the weight inside.", "weighted-mean", CB_REDUCTIONS,
           strict=True),
    Option("smoothing", "float", "Label smoothing epsilon (Szegedy et al. 2016); with "
           "--smoothing-tail, the epsilon of the largest class. 0 = off.", 0.0, minimum=0.0),
    Option("smoothing_tail", "float", "Label-aware smoothing (Zhong et al. 2021, MiSLAS): the "
           "epsilon of the smallest class; the classes between take theirs linearly in their "
           "training count, from --smoothing at the largest."),
    Option("mixup", "float", "Input mixup alpha (Zhang et al. 2018): each batch mixed with a "
           "shuffled copy of itself, lambda ~ Beta(alpha, alpha). 0 = off.", 0.0, minimum=0.0),
    Option("max_norm", "float", "Weight balancing's MaxNorm (Alshammari et al. 2022): after "
           "every step each classifier row is projected back to norm <= this.", minimum=0.0),
    Option("stage2", "str", "A second stage on the frozen features (Kang et al. 2020): crt "
           "retrains a fresh classifier with class-balanced sampling, lws learns a per-class "
           "scale of the logits likewise, tau-norm divides each classifier row by its norm^tau "
           "(no training), cb-finetune fine-tunes the classifier with the class-balanced loss "
           "(weight balancing's second stage).", "none", STAGE2, axis=True),
    Option("stage2_epochs", "int", "Epochs of the second stage (crt, lws, cb-finetune).",
           minimum=1, maximum=MAX_EPOCHS),
    Option("stage2_lr", "float", "Peak learning rate of the second stage (cosine decay to 0, no "
           "warm-up). Default: --lr."),
    Option("stage2_weight_decay", "float", "Weight decay of the second stage. Default: "
           "--weight-decay."),
    Option("tau_norm", "float", "tau-norm's tau: each classifier row divided by its norm^tau.",
           1.0, minimum=0.0),
    # optimisation: SGD with momentum 0.9, linear warm-up, then cosine decay or steps
    Option("epochs", "int", "Passes over the long-tailed training set.", minimum=1,
           maximum=MAX_EPOCHS),
    Option("batch_size", "int", "Samples per step.", minimum=1, maximum=MAX_SAMPLES),
    Option("lr", "float", "Peak learning rate of SGD with momentum 0.9."),
    Option("weight_decay", "float", "Weight decay."),
    Option("warmup_epochs", "float", "Linear warm-up length in epochs."),
    Option("optimizer", "str", "sgd; sam = sharpness-aware minimisation (Foret et al. 2021); "
           "imbsam = sharpness-aware on the minority classes' loss only (Zhou et al. 2023). "
           "Both add a second forward and backward pass per step.", "sgd", OPTIMIZERS,
           strict=True, axis=True),
    Option("rho", "float", "sam / imbsam: radius of the weight perturbation.", 0.05,
           minimum=0.0),
    Option("schedule", "str", "Learning-rate schedule after the warm-up.", None, SCHEDULES),
    Option("milestones", "ints", "step schedule: comma-separated epochs after which lr is "
           "multiplied by --lr-decay, strictly increasing, each in 1..epochs-1 (CIFAR's scale "
           "with --epochs)."),
    Option("lr_decay", "float", "step schedule: factor per milestone."),
    Option("augment", "str", "Pad-4 random crop and horizontal flip, on the device (images "
           "only).", None, AUGMENTS),
    # speed: the same results, only faster
    Option("channels_last", "bool", "Image models in channels_last memory order (faster "
           "convolutions).", True),
    Option("bf16", "bool", "bfloat16 autocast for forward passes.", False),
    Option("compile", "bool", "torch.compile the training forward pass.", False),
    # run
    Option("seed", "int", "Seed for the initialisation, the batch order and the augmentation "
           "(not the subset: --subset-seed).", 0, minimum=0, maximum=MAX_SEED, axis=True),
    Option("device", "str", "Where to train.", "auto", DEVICES, strict=True),
    Option("max_steps", "int", "Stop after N optimizer steps (smoke tests).", minimum=1,
           maximum=MAX_STEPS),
    Option("name", "str", "A name for the run (default: dataset, profile, ratio and method); "
           "printable text, no newlines or control characters.", sweep=False),
    # recording
    Option("dynamics", "str", "What to record: full = per-step and per-epoch per-class rows, "
           "feature geometry, gradient probes and every sample's presentations; minimal = "
           "per-step and per-epoch per-class rows only; off = nothing.", "full", DYNAMICS,
           strict=True),
    Option("posthoc_tau", "floats", "Post-hoc logit adjustment (Menon et al. 2021) evaluated "
           "beside the plain logits at every evaluation: test and train accuracy per class of "
           "argmax z_c - tau * log pi_c, for each of these comma-separated taus.", (1.0,)),
    Option("probe_every", "int", "full: a gradient probe (one extra backward pass) every N "
           "steps.", 100, minimum=1, maximum=MAX_STEPS),
    Option("conflict_every", "int", "full: gradient conflict (Francazi et al. 2023) at steps 0, "
           "N, 2N, ...: the cosines between every two classes' full-model gradients, and each "
           "group's mini-batch gradient against its whole-training-set gradient. Costs C extra "
           "backward passes per recorded step (C classes), plus one forward and two backward "
           "passes over the training set. Default: off.", minimum=1, maximum=MAX_STEPS),
    Option("sharpness_every", "int", "minimal, full: sharpness per group (Rangwani et al. "
           "2022) after the evaluation of epoch 0 and of every N-th epoch: the largest and "
           "smallest Hessian eigenvalue of each group's training loss, by power iteration and "
           "Lanczos (trainer/hessian.py). Costs up to 2 x 20 Hessian-vector products (each "
           "~3-6 forward-backward passes) per group over --sharpness-samples samples per "
           "recorded epoch: measured on 2 busy CPU cores, ~25-30 s per recorded epoch for "
           "MNIST-1D's cnn1d at 512 samples, about one epoch of its training. Default: off.",
           minimum=1, maximum=MAX_EPOCHS),
    Option("sharpness_samples", "int", "--sharpness-every: samples per group in the loss (a "
           "fixed subset drawn once with --subset-seed; the whole group if smaller). The cost "
           "grows linearly with it.", 512, minimum=1, maximum=MAX_SAMPLES),
    Option("sweep", "str", "Id shared by the runs of one sweep.", hidden=True, sweep=False),
)
OPTION = {o.name: o for o in OPTIONS}
AXES = tuple(o.name for o in OPTIONS if o.axis)


def parse_ints(text: str, flag: str) -> tuple[int, ...]:
    """'160,180' -> (160, 180)."""
    from trainer.data import DataError

    try:
        return tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise DataError(f"{flag} takes whole numbers separated by commas, got {text!r}") from None


def parse_floats(text: str, flag: str) -> tuple[float, ...]:
    """'0.5,1,2' -> (0.5, 1.0, 2.0)."""
    from trainer.data import DataError

    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise DataError(f"{flag} takes numbers separated by commas, got {text!r}") from None


def to_argv(values: dict[str, Any], always: tuple[str, ...] = ()) -> list[str]:
    """The `imbtui train` arguments that give these option values: None and defaults left out,
    except for the options named in `always` (a sweep's axes, so each run's line says them)."""
    argv: list[str] = []
    for o in OPTIONS:
        v = values.get(o.name)
        if v is None or (v == o.default and o.name not in always):
            continue
        if o.kind == "bool":
            argv.append(o.cli_flag if v else "--no-" + o.cli_flag[2:])
        elif o.kind == "ints":
            argv += [o.cli_flag, ",".join(str(int(m)) for m in v)]
        elif o.kind == "floats":
            if tuple(v) == o.default and o.name not in always:
                continue
            argv += [o.cli_flag, ",".join(f"{float(m):g}" for m in v)]
        else:
            argv += [o.cli_flag, f"{v:g}" if isinstance(v, float) else str(v)]
    return argv
