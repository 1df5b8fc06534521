"""`imbtui train`, `imbtui data` and `imbtui sweep`: training runs and the datasets they use."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from imbtui.cli.common import (Emit, StoreOpt, UserError, _sigterm_interrupts,
                               app)
from imbtui.cli_options import values_of, with_options
from trainer.options import AXES, OPTION, OPTIONS


# ==== train =======================================================================================

def train(
    ctx: typer.Context,
    store: StoreOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    run_id: Annotated[Optional[str], typer.Option(hidden=True)] = None,
    **options: Any,
) -> None:
    """Train a classifier on a long-tailed dataset and record its per-class learning dynamics.

    --seed draws the initialisation, the batch order and the augmentation; --subset-seed (default 0)
    alone draws which samples the long-tailed subset keeps, so runs that differ only in --seed train
    on the same samples. The run's config records both, and --cb-reduction.

    Docs: docs/methods.md (torchrun: docs/scaling.md)
    """
    import contextlib

    from imbtui._threads import single_threaded_polars

    single_threaded_polars()  # before polars is imported: its pool would fight torch's threads
    from imbtui.store import RunWriter, resolve_store

    root = resolve_store(store)
    from trainer.loop import train as run_training

    from imbtui.console import TrainProgress, err, out, summary_table
    from trainer.distributed import env_rank
    from trainer.loop import Hooks as Silent

    cfg = _train_config(ctx.params)
    writer = RunWriter(root, run_id=_check_run_id(run_id), background=True)
    rank = env_rank()  # under torchrun rank 0 writes and reports; the others train their share

    _sigterm_interrupts()
    try:
        with TrainProgress(quiet=quiet) if rank == 0 else contextlib.nullcontext(Silent()) as hooks:
            result = run_training(cfg, writer, hooks)
    except UserError:
        if rank > 0:  # every rank refuses the same input: rank 0 says so, once
            raise typer.Exit(2) from None
        raise
    except KeyboardInterrupt:
        err.print(f"interrupted: run {writer.run_id} kept in {root} (status interrupted)")
        raise typer.Exit(130) from None
    if rank > 0:
        raise typer.Exit(0 if result.status == "finished" else 1)
    final, first = _closing_results(root, result.run_id)
    if final:
        out.print(summary_table(final, first))
    where = root / "runs" / result.run_id
    out.print(f"run [bold]{result.run_id}[/bold] {result.status} after {result.steps} steps, "
              f"{result.seconds:.1f} s; stored in {where}")
    if result.status != "finished":
        err.print(f"[red]{result.status}:[/red] {result.message}")
        raise typer.Exit(1)


def _train_config(params: dict):
    """The TrainConfig of parsed training options ({option name: value})."""
    from trainer.config import TrainConfig

    return TrainConfig.from_options(values_of(params, OPTIONS))


app.command()(with_options(train, OPTIONS))


def _check_run_id(run_id: str | None) -> str | None:
    from imbtui.store.layout import RUN_ID_RE

    if run_id is not None and not RUN_ID_RE.match(run_id):
        raise UserError(f"invalid run id {run_id!r}")
    return run_id


# ==== data ========================================================================================

def data(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    **options: Any,
) -> None:
    """Show a long-tailed dataset's class counts, groups and test counts, without training.

    Your own dataset (--dataset folder:PATH or npz:PATH) is read and checked as `imbtui train`
    would, and its path, content hash, sample shape and split are shown too.

    Docs: docs/methods.md, docs/datasets.md
    """
    import json

    import polars as pl

    from imbtui.console import frame_table, out
    from trainer.data import class_table, dataset_counts, default_model, load_dataset
    from trainer.userdata import normalise

    v = values_of(options, DATA_OPTIONS)
    dataset, ratio, profile = normalise(v["dataset"]), v["ratio"], v["profile"]
    minority_fraction, data_dir = v["minority_fraction"], v["data_dir"]
    ds = load_dataset(dataset, str(data_dir) if data_dir else None)
    counts = dataset_counts(ds, ratio, profile, minority_fraction)
    classes = class_table(counts, ds.test_sizes(), ds.class_names, profile, minority_fraction)
    info = {"dataset": dataset, "profile": profile, "ratio": ratio,
            "minority_fraction": minority_fraction, "n_classes": ds.n_classes,
            "n_train": sum(counts), "n_test": sum(ds.test_sizes()), "counts": counts,
            "test_counts": ds.test_sizes(), "groups": [c.grp for c in classes],
            "shots": [c.shot for c in classes], "class_names": ds.class_names,
            "full_counts": ds.class_sizes(), "sample_shape": list(ds.x_train.shape[1:]),
            "default_model": default_model(dataset),
            **{k: ds.meta[k] for k in ("path", "sha256", "split") if k in ds.meta}}
    if as_json:
        print(json.dumps(info))
        return
    frame = pl.DataFrame([vars(c) for c in classes])
    out.print(frame_table(frame, title=f"{dataset}, {profile} profile, ratio {ratio:g}"))
    for grp in ("majority", "minority"):
        members = [c for c in classes if c.grp == grp]
        out.print(f"{grp}: {len(members)} classes, {sum(c.train_count for c in members):,} "
                  f"training samples")
    test = "balanced" if len(set(info["test_counts"])) == 1 else "as given, not balanced"
    out.print(f"{info['n_train']:,} training samples (of {sum(ds.class_sizes()):,}); "
              f"{info['n_test']:,} test samples, {test}")
    if "sha256" in info:  # a user dataset: what a run's config will record
        out.print(f"samples of shape {tuple(info['sample_shape'])}, default model "
                  f"{info['default_model']}; split: {info['split']}", soft_wrap=True)
        out.print(f"path {info['path']}  sha256 {info['sha256']}", soft_wrap=True)


DATA_OPTIONS = tuple(OPTION[n] for n in ("dataset", "ratio", "profile", "minority_fraction",
                                          "data_dir"))
app.command()(with_options(data, DATA_OPTIONS))


# ==== sweep =======================================================================================

_SLURM = "Slurm (--emit slurm)"  # the help panel of the script's options
MAX_JOBS, MAX_CPUS = 1024, 100_000  # ceilings of --jobs / --gpus and --cpus-per-task


class _ListsCommand(typer.core.TyperCommand):
    """Lets `--ratio 1 10 100` give three values: click takes one value per use of an option."""

    def parse_args(self, ctx, args):
        from imbtui.sweep import expand_lists

        return super().parse_args(ctx, expand_lists(list(args)))


def _closing_results(root, run_id: str) -> tuple[dict[str, float], dict[str, float] | None]:
    """The run's final results and its epoch-1 training accuracy per group, read back from the
    store's final_results and group_results views (the numbers every other command shows)."""
    from imbtui.store import Store

    con = Store(root).connect()
    final = con.sql("SELECT * FROM final_results WHERE run_id = $run", params={"run": run_id}).pl()
    first = con.sql("SELECT grp, acc FROM group_results WHERE run_id = $run AND epoch = 1 "
                    "AND split = 'train'", params={"run": run_id}).pl()
    if final.height == 0:
        return {}, None
    names = {"all": "balanced", "majority": "majority", "minority": "minority"}
    epoch1 = {f"train_{names[g]}": a for g, a in first.iter_rows()} if first.height else None
    return final.row(0, named=True), epoch1


def sweep(
    ctx: typer.Context,
    jobs: Annotated[int, typer.Option(
        "--jobs", "-j", min=1, max=MAX_JOBS, help="Runs at once, each its own process (one per GPU when there "
                                    "are several).")] = 1,
    name: Annotated[Optional[str], typer.Option(
        help="Prefix of the run names (--name abl gives abl-mnist1d-r100-ce-s0).",
        show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check and list the runs, train nothing.")] = False,
    store: StoreOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    emit: Annotated[Emit, typer.Option(
        help="local: train the runs here; slurm: write a Slurm array job script instead (one "
             "task per run, all into --store on shared storage).", rich_help_panel=_SLURM)
                    ] = Emit.local,
    out_file: Annotated[Optional[Path], typer.Option(
        "--out", help="The script's file (default: stdout).", show_default=False,
        rich_help_panel=_SLURM)] = None,
    partition: Annotated[Optional[str], typer.Option(
        help="#SBATCH --partition.", show_default=False, rich_help_panel=_SLURM)] = None,
    time_limit: Annotated[Optional[str], typer.Option(
        "--time", help="#SBATCH --time per run, e.g. 02:00:00.", show_default=False,
        rich_help_panel=_SLURM)] = None,
    gpus: Annotated[Optional[int], typer.Option(
        min=1, max=MAX_JOBS, help="GPUs per run (more than 1: one node, data-parallel under "
                                    "torchrun).",
        show_default=False, rich_help_panel=_SLURM)] = None,
    cpus_per_task: Annotated[Optional[int], typer.Option(
        min=1, max=MAX_CPUS, help="#SBATCH --cpus-per-task.", show_default=False,
        rich_help_panel=_SLURM)
                             ] = None,
    mem: Annotated[Optional[str], typer.Option(
        help="#SBATCH --mem, e.g. 16G.", show_default=False, rich_help_panel=_SLURM)] = None,
    sbatch: Annotated[Optional[list[str]], typer.Option(
        help="Any other directive, e.g. --sbatch account=abc (repeatable).", show_default=False,
        rich_help_panel=_SLURM)] = None,
    setup: Annotated[Optional[str], typer.Option(
        help="Shell line each task runs first, e.g. 'source ~/venv/bin/activate'.",
        show_default=False, rich_help_panel=_SLURM)] = None,
    **options: Any,
) -> None:
    """Train every combination of ratios x seeds x losses (x samplers x datasets) into one store.

    Every `imbtui train` option is an option here too and applies to every run, e.g.
    [bold]imbtui sweep --ratio 1 10 100 --seed 0 1 2 --loss ce ldam --drw 24 --epochs 30 -j 2
    --lr 0.05[/bold]. The runs share a sweep id (config key "sweep"); the table at the end has
    each run's final balanced, majority and minority test accuracy, and their means over seeds.
    The seeds vary the initialisation and batch order only: every run keeps the long-tailed subset
    of --subset-seed (default 0), so the spread over seeds is the training's alone.

    [bold]--emit slurm --store /shared/runs --out sweep.sbatch[/bold] writes the grid as a Slurm
    array job (one task per run; -j N lets at most N run at once) to submit with [bold]sbatch
    sweep.sbatch[/bold] and watch with [bold]imbtui browse --store /shared/runs[/bold].

    Docs: docs/methods.md (Slurm: docs/scaling.md)
    """
    from imbtui.console import err, frame_table, out
    from imbtui.store import resolve_store
    from imbtui.store.layout import new_run_id
    from imbtui.sweep import SweepRunner, compact_means, compact_runs, sweep_tables

    root = resolve_store(store)
    _check_emit(ctx.params)
    sweep_id = f"sweep-{new_run_id()}"
    configs = _sweep_configs(values_of(options, SWEEP_OPTIONS), name, sweep_id)
    jobs_list = _sweep_jobs(configs, root)
    n_gpus = _check_sweep(configs, any_device=emit is Emit.slurm)
    if emit is Emit.slurm:
        return _write_slurm(jobs_list, root, sweep_id, ctx.params)
    err.print(f"{sweep_id}: {len(jobs_list)} runs, {min(jobs, len(jobs_list))} at a time, into "
              f"{root}")
    if dry_run:
        for job in jobs_list:  # plain print: one command per line, never wrapped
            print(f"imbtui train {' '.join(job.argv)}")
        return
    runner = SweepRunner(jobs_list, root, min(jobs, len(jobs_list)), n_gpus, quiet)
    try:
        runner.run()
    except KeyboardInterrupt:
        err.print(f"interrupted: finished runs are kept in {root}")
        raise typer.Exit(130) from None
    per_run, means = sweep_tables(root, sweep_id)
    out.print(frame_table(compact_runs(per_run), title=f"{sweep_id}: final test accuracy"))
    if means.height and means["seeds"].max() > 1:
        out.print(frame_table(compact_means(means), title="means over seeds"))
    failed = [j for j in jobs_list if j.returncode != 0]
    for job in failed:
        err.print(f"[red]{job.name} failed:[/red] {job.error}")
    if failed:
        raise typer.Exit(1)


SWEEP_OPTIONS = tuple(o for o in OPTIONS if o.sweep)
app.command(cls=_ListsCommand)(with_options(sweep, SWEEP_OPTIONS, lists=AXES))


def _sweep_configs(values: dict[str, Any], prefix: str | None, sweep_id: str) -> list:
    """One TrainConfig per combination of the axes' values (an axis not given: its default),
    named by dataset, ratio, method and seed."""
    import dataclasses
    import itertools

    from imbtui.store.schema import method_label
    from trainer.config import TrainConfig
    from trainer.data import dataset_label

    axes = {a: values.pop(a) or [OPTION[a].default] for a in AXES}
    prefix = prefix if not prefix or prefix.endswith(("-", "_", ".")) else f"{prefix}-"
    configs = []
    for combo in itertools.product(*axes.values()):
        cfg = TrainConfig.from_options({**values, **dict(zip(axes, combo))})
        method = method_label(dataclasses.asdict(cfg))
        name = f"{prefix or ''}{dataset_label(cfg.dataset)}-r{cfg.ratio:g}-{method}-s{cfg.seed}"
        configs.append(dataclasses.replace(cfg, name=name, sweep=sweep_id))
    return configs


def _sweep_jobs(configs: list, root: Path) -> list:
    """Each config as the `imbtui train` arguments of its process (or its Slurm task)."""
    from imbtui.store.layout import new_run_id
    from imbtui.sweep import Job
    from trainer.options import to_argv

    jobs = []
    for cfg in configs:
        run_id = new_run_id()
        argv = [*to_argv(cfg.option_values(), always=AXES), "--store", str(root), "-q",
                "--run-id", run_id]
        jobs.append(Job(cfg.name, run_id, argv))
    return jobs


def _check_sweep(configs: list, any_device: bool = False) -> int:
    """Check every run as `imbtui train` would, before any starts; returns the GPU count (a typo
    fails once, in one line, instead of in every run). `any_device`: checked with --device auto,
    as a login node that writes a Slurm script has no GPU."""
    import dataclasses
    import functools

    import torch

    from trainer.data import load_dataset
    from trainer.loop import check_run

    load = functools.lru_cache(maxsize=None)(load_dataset)
    for cfg in configs:
        check_run(dataclasses.replace(cfg, device="auto") if any_device else cfg, load=load)
    return torch.cuda.device_count()


_SLURM_OPTIONS = ("out_file", "partition", "time_limit", "gpus", "cpus_per_task", "mem", "sbatch",
                  "setup")


def _check_emit(params: dict) -> None:
    """The Slurm options mean nothing to a local sweep: refuse them rather than ignore them."""
    given = [k for k in _SLURM_OPTIONS if params.get(k)]
    if given and params["emit"] is not Emit.slurm:
        flag = "--" + {"out_file": "out", "time_limit": "time"}.get(given[0], given[0]).replace(
            "_", "-")
        raise UserError(f"{flag} is an option of the Slurm script: add --emit slurm")


def _write_slurm(jobs: list, root: Path, sweep_id: str, p: dict) -> None:
    """--emit slurm: the array job script to --out (or stdout), and how to submit and watch it."""
    from imbtui.console import err
    from imbtui.slurm import SlurmOptions, render

    opts = SlurmOptions(job_name=sweep_id, partition=p["partition"], time=p["time_limit"],
                        gpus=p["gpus"], cpus_per_task=p["cpus_per_task"], mem=p["mem"],
                        max_running=p["jobs"] if p["jobs"] > 1 else None,
                        extra=list(p["sbatch"] or []), setup=p["setup"])
    script = render([(j.name, j.argv) for j in jobs], root.absolute(), sweep_id, opts)
    out_file: Path | None = p["out_file"]
    if out_file is None:
        sys.stdout.write(script)
        return
    try:
        out_file.write_text(script)
        out_file.chmod(0o755)
    except OSError as exc:
        raise UserError(f"cannot write {str(out_file)!r}: {exc.strerror or exc}") from None
    err.print(f"wrote {out_file}: {sweep_id} as array tasks 0-{len(jobs) - 1}, one per run. "
              f"Submit: sbatch {out_file} · watch: imbtui browse --store {root.absolute()}",
              soft_wrap=True)
