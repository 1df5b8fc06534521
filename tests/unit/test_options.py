"""Every training option is declared once (trainer/options.py) and reaches every place that takes it:
`imbtui train`'s options, `imbtui sweep`'s options and axes, the argv a sweep hands each run and its
Slurm task, and TrainConfig, each with the one help text declared for it."""

from __future__ import annotations

import dataclasses

import pytest
import typer

from imbtui.cli import app
from trainer.config import TrainConfig
from trainer.options import AXES, LOSS_PARAMS, OPTION, OPTIONS, to_argv

# TrainConfig fields that code sets, not a flag
INTERNAL = {"loss_params", "momentum", "check_sync", "flush_steps", "flush_seconds", "extra",
            "data_hash"}  # set by resolve_config: a user dataset's content hash


def command(name: str):
    return typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]


def param_of(cmd, flag: str):
    (found,) = [p for p in cmd.params if flag in p.opts]
    return found


def test_every_config_field_is_an_option_or_internal() -> None:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    options = {o.name for o in OPTIONS} - set(LOSS_PARAMS)
    assert fields - INTERNAL == options
    for o in OPTIONS:  # the config's default is the declared one
        if o.name in fields:
            assert getattr(TrainConfig(), o.name) == o.default, o.name


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_each_option_is_on_train_and_sweep_with_its_one_help(option) -> None:
    train = param_of(command("train"), option.cli_flag)
    assert train.help == option.full_help()
    sweep = [p for p in command("sweep").params if option.cli_flag in p.opts]
    if not option.sweep:
        assert not sweep or option.name == "name"  # sweep's --name is the runs' name prefix
        return
    (sweep,) = sweep
    assert sweep.help.startswith(option.full_help())
    assert sweep.multiple == option.axis  # an axis takes several values


def test_argv_round_trip_gives_the_same_config() -> None:
    """What a sweep hands each run (and writes into a Slurm task) parses back to its config."""
    cfg = TrainConfig(ratio=37.5, dataset="mnist1d", profile="step", minority_fraction=0.3,
                      loss="focal", sampler="square-root", drw=3, loss_params={"gamma": 2.0},
                      cb_reduction="mean", epochs=4, batch_size=64, lr=0.02, weight_decay=1e-4,
                      warmup_epochs=0.5, schedule="step", milestones=(2, 3), lr_decay=0.5,
                      augment="none", channels_last=False, bf16=True, seed=7, subset_seed=2,
                      device="cpu", max_steps=9, name="x", dynamics="minimal", probe_every=5)
    argv = to_argv(cfg.option_values(), always=AXES)
    ctx = command("train").make_context("train", argv)
    from imbtui.cli import _train_config

    assert _train_config(ctx.params) == cfg


def test_sweep_axes_are_the_declared_axes() -> None:
    from imbtui.sweep import LIST_OPTIONS

    assert LIST_OPTIONS == tuple(OPTION[a].cli_flag for a in AXES)
    assert set(AXES) == {"ratio", "dataset", "loss", "sampler", "seed", "optimizer", "stage2"}


def test_trainer_modules_register_the_declared_names() -> None:
    """A loss, sampler, augmentation, model or dataset is one name in trainer/options.py and one
    implementation in its module: every declared name has one."""
    import torch

    from trainer import augment, data, losses, models, samplers
    from trainer.options import AUGMENTS, DATASETS, LOSSES, MODELS, SAMPLERS

    assert losses.LOSSES is LOSSES and samplers.SAMPLERS is SAMPLERS
    assert augment.AUGMENTS is AUGMENTS and models.MODELS is MODELS and data.DATASETS is DATASETS
    for name in LOSSES:
        losses.build_loss(name, [10, 5, 2], torch.device("cpu"))
    for name in SAMPLERS:
        samplers.class_probabilities([10, 5, 2], name)
    for name in MODELS:
        shape = (40,) if name in ("cnn1d", "mlp") else (28, 28, 1) if name == "cnn" else (32, 32, 3)
        models.build_model(name, shape, 3)
