"""The `imbtui` command line: one Typer app whose commands are thin wrappers over the modules.

Heavy modules (torch, the trainer, Textual) are imported inside the command that needs them, so
`imbtui --help`, `imbtui runs` and `imbtui sql` start fast. Every user error ends as one line on
stderr and exit code 2 (see `main`).
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from imbtui.cli_options import values_of, with_options
from imbtui.errors import UserError
from trainer.options import AXES, OPTION, OPTIONS

app = typer.Typer(
    name="imbtui",
    help="A terminal workbench for how class imbalance shapes what a network learns, step by step.\n\n"
         "Train on a long-tailed dataset ([bold]imbtui train --ratio 100[/bold], or a grid with "
         "[bold]imbtui sweep[/bold]), then look at what was recorded: [bold]imbtui browse[/bold] "
         "(the terminal app), [bold]imbtui runs[/bold], [bold]imbtui show RUN[/bold], "
         "[bold]imbtui report[/bold] (the study's three findings), [bold]imbtui query NAME[/bold] "
         "(named analyses) and [bold]imbtui sql \"SELECT ...\"[/bold].",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

StoreOpt = Annotated[Optional[Path], typer.Option(
    "--store", help="Run store folder. Default: $IMBTUI_STORE, else ./imbtui-runs.",
    show_default=False)]


class Fmt(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


class Profile(str, Enum):
    exp = "exp"
    step = "step"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Dynamics(str, Enum):
    full = "full"
    minimal = "minimal"
    off = "off"


class Emit(str, Enum):
    local = "local"
    slurm = "slurm"


class CbReduction(str, Enum):  # trainer.losses.CB_REDUCTIONS (not imported: --help stays fast)
    weighted_mean = "weighted-mean"
    mean = "mean"


def _store(path: Path | None, must_exist: bool = False):
    from imbtui.store import Store, resolve_store

    root = resolve_store(path)
    if must_exist and not root.exists():
        raise UserError(f"no run store at {str(root)!r} (train a run first, or pass --store)")
    return Store(root)


def _warn(store) -> None:
    from rich.markup import escape

    from imbtui.console import err

    for w in store.warnings:  # one line each, unwrapped: the paths in them get copied
        err.print(f"[yellow]warning:[/yellow] {escape(w)}", soft_wrap=True)


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
    writer = RunWriter(root, run_id=_check_run_id(run_id))
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
    """Show a long-tailed dataset's class counts, groups and test counts, without training."""
    import json

    import polars as pl

    from imbtui.console import frame_table, out
    from trainer.data import class_table, dataset_counts, load_dataset

    v = values_of(options, DATA_OPTIONS)
    dataset, ratio, profile = v["dataset"], v["ratio"], v["profile"]
    minority_fraction, data_dir = v["minority_fraction"], v["data_dir"]
    ds = load_dataset(dataset, str(data_dir) if data_dir else None)
    counts = dataset_counts(ds, ratio, profile, minority_fraction)
    classes = class_table(counts, ds.test_sizes(), ds.class_names, profile, minority_fraction)
    info = {"dataset": dataset, "profile": profile, "ratio": ratio,
            "minority_fraction": minority_fraction, "n_classes": ds.n_classes,
            "n_train": sum(counts), "n_test": sum(ds.test_sizes()), "counts": counts,
            "test_counts": ds.test_sizes(), "groups": [c.grp for c in classes],
            "shots": [c.shot for c in classes], "class_names": ds.class_names,
            "full_counts": ds.class_sizes()}
    if as_json:
        print(json.dumps(info))
        return
    frame = pl.DataFrame([vars(c) for c in classes])
    out.print(frame_table(frame, title=f"{dataset}, {profile} profile, ratio {ratio:g}"))
    for grp in ("majority", "minority"):
        members = [c for c in classes if c.grp == grp]
        out.print(f"{grp}: {len(members)} classes, {sum(c.train_count for c in members):,} "
                  f"training samples")
    out.print(f"{info['n_train']:,} training samples (of {sum(ds.class_sizes()):,}); "
              f"{info['n_test']:,} test samples, balanced")


DATA_OPTIONS = tuple(OPTION[n] for n in ("dataset", "ratio", "profile", "minority_fraction",
                                          "data_dir"))
app.command()(with_options(data, DATA_OPTIONS))


# ==== sweep =======================================================================================

_SLURM = "Slurm (--emit slurm)"  # the help panel of the script's options


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
        "--jobs", "-j", min=1, help="Runs at once, each its own process (one per GPU when there "
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
        min=1, help="GPUs per run (more than 1: one node, data-parallel under torchrun).",
        show_default=False, rich_help_panel=_SLURM)] = None,
    cpus_per_task: Annotated[Optional[int], typer.Option(
        min=1, help="#SBATCH --cpus-per-task.", show_default=False, rich_help_panel=_SLURM)
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

    axes = {a: values.pop(a) or [OPTION[a].default] for a in AXES}
    prefix = prefix if not prefix or prefix.endswith(("-", "_", ".")) else f"{prefix}-"
    configs = []
    for combo in itertools.product(*axes.values()):
        cfg = TrainConfig.from_options({**values, **dict(zip(axes, combo))})
        method = method_label(cfg.loss, cfg.drw, cfg.sampler, cfg.cb_reduction)
        name = f"{prefix or ''}{cfg.dataset}-r{cfg.ratio:g}-{method}-s{cfg.seed}"
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


# ==== runs / show =================================================================================

@app.command()
def runs(store: StoreOpt = None,
         as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False) -> None:
    """List the runs in the store with their status and final accuracies."""
    from imbtui.console import frame_json, frame_table, out

    st = _store(store)
    con = st.connect()
    frame = con.sql("""
        SELECT r.run_id, r.name, r.status, r.dataset, r.profile, r.ratio, r.model, r.loss,
               r.sampler, r.drw, r.method, r.seed, r.subset_seed, r.epoch_done, r.epochs,
               r.step_done, r.total_steps,
               f.* EXCLUDE (run_id, epoch),
               r.created_at, r.finished_at, r.heartbeat_at
        FROM runs r LEFT JOIN final_results f USING (run_id)
        ORDER BY r.created_at, r.run_id""").pl()
    _warn(st)
    if as_json:
        print(frame_json(frame))
    elif frame.height == 0:
        out.print(f"no runs in {st.root} — start one with: imbtui train --ratio 100")
    else:
        out.print(frame_table(_runs_view(frame, out.width), title=f"runs in {st.root}"))


def _runs_view(frame, width: int = 80):
    """The columns that fit the terminal (ratio and method from 110 columns); --json has them
    all."""
    import polars as pl

    wide = ["ratio", "method"] if width >= 110 else []
    return frame.select(
        "run_id", "name", "status", *wide,
        (pl.col("epoch_done").cast(pl.String) + "/" + pl.col("epochs").cast(pl.String)).alias(
            "epochs"),
        pl.col("test_balanced").round(3).alias("bal"),
        pl.col("test_majority").round(3).alias("maj"),
        pl.col("test_minority").round(3).alias("min"))


def _resolve_run(st, ref: str) -> str:
    """A run id, a unique prefix of one, or a unique run name."""
    if not ref.strip():
        raise UserError("empty run id: give a run id, a unique prefix of one, or a run name")
    ids = st.run_ids()
    if ref in ids:
        return ref
    hits = [i for i in ids if i.startswith(ref)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        frame = st.runs_frame()
        named = frame.filter(frame["name"] == ref)["run_id"].to_list()
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise UserError(f"run name {ref!r} is ambiguous ({len(named)} runs); use a run id")
        raise UserError(f"unknown run {ref!r} in store {str(st.root)!r}")
    raise UserError(f"run id prefix {ref!r} matches {len(hits)} runs; give more characters")


@app.command()
def show(run: Annotated[str, typer.Argument(help="Run id (or a unique prefix, or its name).")],
         store: StoreOpt = None,
         as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object: the run, "
                                               "its config, classes and groups.")] = False
         ) -> None:
    """Show one run: its config, class counts and groups, and final per-class and group accuracy."""
    import json

    from imbtui.console import frame_json, frame_table, out

    st = _store(store, must_exist=True)
    run_id = _resolve_run(st, run)
    meta = st.read_run(run_id) or {}
    per_class, groups = _run_finals(st.connect(), run_id)
    if as_json:
        print(json.dumps({"run_id": run_id, "name": meta.get("name"),
                          "status": meta.get("status"), "device": meta.get("device"),
                          "message": meta.get("message"), "config": meta.get("config", {}),
                          "classes": json.loads(frame_json(per_class)),
                          "groups": json.loads(frame_json(groups))}, indent=1))
        _warn(st)
        return
    out.print(f"[bold]{run_id}[/bold]  {meta.get('name')}  status: {meta.get('status')}  "
              f"device: {meta.get('device')}")
    if meta.get("message"):
        out.print(f"message: {meta['message']}")
    out.print(json.dumps(meta.get("config", {}), indent=1))
    # short headers, rank left out (the rows are in rank order): nine columns in 80 characters
    out.print(frame_table(per_class, title="classes (final epoch)"))
    out.print(frame_table(groups, title="groups (final epoch; accuracy = mean over its classes)"))
    _warn(st)


def _run_finals(con, run_id: str):
    """Per class and per group: counts and final train / test accuracy and gap, from the
    generalisation_gap analysis (the class_results and group_results views)."""
    from imbtui.queries import get_query

    gap = get_query("generalisation_gap")
    con.register("final_gap", con.sql(gap.sql, params=gap.bind({"runs": [run_id]})).pl())
    per_class = con.sql("""
        SELECT g.class_id AS "class", c.class_name AS "name", c.train_count AS "train n",
               c.test_count AS "test n", c.grp AS "group", c.shot,
               g.train_acc AS "train acc", g.test_acc AS "test acc", g.gap
        FROM final_gap g JOIN classes c ON c.run_id = g.run_id AND c.class_id = g.class_id
        ORDER BY c.class_id""").pl()
    groups = con.sql("""
        SELECT g.grp AS "group", count(c.class_id) AS classes, g.train_count AS "train n",
               g.train_acc AS "train acc", g.test_acc AS "test acc", g.gap
        FROM final_gap g JOIN classes c ON c.run_id = g.run_id AND c.grp = g.grp
        WHERE g.class_id IS NULL
        GROUP BY ALL ORDER BY g.grp""").pl()
    con.unregister("final_gap")
    return per_class, groups


# ==== sql =========================================================================================

@app.command()
def sql(query: Annotated[str, typer.Argument(help="A read-only SQL query over the views runs, "
                                             "classes, steps, epochs.")],
        fmt: Annotated[Fmt, typer.Option("--format", "-f", help="Output format (json: an array of "
                                         "objects).")] = Fmt.table,
        store: StoreOpt = None) -> None:
    """Run read-only SQL over the run store (DuckDB dialect)."""
    from imbtui.console import print_frame

    st = _store(store)
    frame = st.sql(query)
    _warn(st)
    print_frame(frame, fmt.value)


# ==== query / report ==============================================================================

class OutFmt(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


@app.command()
def query(
    name: Annotated[Optional[str], typer.Argument(
        help="A named analysis (see --list) or the path of your own .sql file.",
        show_default=False)] = None,
    run: Annotated[Optional[list[str]], typer.Option(
        "--run", "-r", help="Only this run (id, unique prefix or name); repeatable. Default: all.",
        show_default=False)] = None,
    param: Annotated[Optional[list[str]], typer.Option(
        "--param", "-p", help="KEY=VALUE, bound as the query parameter $KEY; repeatable.",
        show_default=False)] = None,
    fmt: Annotated[Optional[OutFmt], typer.Option(
        "--format", "-f", help="Output format. Default: table, or what --out's suffix says.",
        show_default=False)] = None,
    out_file: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Write the result to FILE (csv, json or parquet).",
        show_default=False)] = None,
    list_all: Annotated[bool, typer.Option(
        "--list", help="List the named analyses with the question each answers.")] = False,
    show_sql: Annotated[bool, typer.Option(
        "--show-sql", help="Print the analysis's SQL (to copy and change) and exit.")] = False,
    store: StoreOpt = None,
) -> None:
    """Run a named analysis from queries/ (imbtui query --list shows them)."""
    from imbtui.queries import list_queries, load_query

    if list_all:
        from imbtui.api import queries_frame

        _emit(queries_frame(list_queries()), fmt, out_file, title="named analyses")
        return
    if name is None:
        raise UserError("give an analysis name; imbtui query --list shows them")
    q = load_query(name)
    if show_sql:
        sys.stdout.write(q.sql if q.sql.endswith("\n") else q.sql + "\n")
        return
    given = _query_params(param or [])
    st = _store(store)
    if run:
        if q.param("runs") is None:
            raise UserError(f"analysis {q.name!r} covers every run and takes no --run")
        if "runs" in given:
            raise UserError("give runs with --run or with --param runs=..., not both")
        given["runs"] = [_resolve_run(st, r) for r in run]
    if out_file is not None:
        _outside_store(out_file, st.root)
    frame = st.sql(q.sql, q.bind(given) or None)
    _warn(st)
    _emit(frame, fmt, out_file, title=q.name)


def _outside_store(path: Path, root: Path) -> None:
    """Readers never write into the store: a result file there would sit among the runs."""
    target, base = path.expanduser().resolve(), root.expanduser().resolve()
    if target == base or base in target.parents:
        raise UserError(f"{str(path)!r} is inside the run store {str(root)!r}; write results "
                        f"elsewhere")


def _query_params(items: list[str]) -> dict[str, str]:
    given: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UserError(f"--param expects KEY=VALUE, got {item!r}")
        if key in given:
            raise UserError(f"--param {key} given twice")
        given[key] = value
    return given


_SUFFIX_FMT = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}


def _emit(frame, fmt: OutFmt | None, out_file: Path | None, title: str | None = None) -> None:
    """Print a result (table, csv, json) or write it to --out (csv, json, parquet)."""
    from imbtui.console import err, print_frame

    kind = fmt.value if fmt else (_SUFFIX_FMT.get(out_file.suffix.lower()) if out_file else "table")
    if kind is None:
        raise UserError(f"cannot tell the format of {str(out_file)!r} from its suffix; pass "
                        f"--format csv, json or parquet")
    if out_file is None:
        if kind == "parquet":
            raise UserError("--format parquet needs --out FILE")
        print_frame(_flat(frame) if kind == "csv" else frame, kind, title)
        return
    if kind == "table":
        raise UserError("--out writes csv, json or parquet: pass --format or a .csv, .json or "
                        ".parquet file name")
    _write_frame(frame, kind, out_file)
    err.print(f"wrote {frame.height} rows to {out_file}")


def _write_frame(frame, kind: str, path: Path) -> None:
    from imbtui.console import frame_json

    try:
        if kind == "parquet":
            frame.write_parquet(path)
        elif kind == "csv":
            _flat(frame).write_csv(path)
        else:
            path.write_text(frame_json(frame) + "\n")
    except OSError as exc:
        raise UserError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None


def _flat(frame):
    """CSV has no lists or structs: write such cells as JSON text."""
    import json

    import polars as pl

    nested = [c for c, t in frame.schema.items() if isinstance(t, (pl.List, pl.Array, pl.Struct))]
    return frame.with_columns(pl.Series(c, [None if v is None else json.dumps(v, default=str)
                                            for v in frame[c].to_list()], dtype=pl.String)
                              for c in nested)


@app.command()
def report(
    runs: Annotated[Optional[list[str]], typer.Argument(
        help="Runs (ids, unique prefixes or names). Default: every run in the store.",
        show_default=False)] = None,
    threshold: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Train accuracy at which a class counts as learned (onsets).")
                         ] = 0.5,
    early: Annotated[int, typer.Option(min=1, help="How many first epochs count as early.")] = 2,
    fmt: Annotated[Fmt, typer.Option(
        "--format", "-f", help="table, or csv / json: one row per run with every number.")
                   ] = Fmt.table,
    png: Annotated[Optional[Path], typer.Option(
        "--png", help="Also write a figure of majority vs minority train and test accuracy per "
        "run (.png; .pdf and .svg work too).", show_default=False)] = None,
    store: StoreOpt = None,
) -> None:
    """The study's three findings, with numbers, for the given runs (and how they move)."""
    from imbtui.api import RunStore
    from imbtui.console import out, print_frame
    from imbtui.report import changes, findings, legend, table

    rs = RunStore(_store(store, must_exist=True).root)
    ids = [_resolve_run(rs.store, r) for r in runs or []]
    frame = findings(rs, ids, threshold=threshold, early=early)
    _warn(rs.store)
    _missing_runs(ids, frame)
    if frame.height == 0:
        raise UserError(f"no run in {str(rs.store.root)!r} has an evaluated epoch yet")
    if fmt is Fmt.table:
        out.print(table(frame, threshold, early))
        for line in legend(frame, threshold) + changes(frame):
            out.print(line, highlight=False)
    else:
        print_frame(frame, fmt.value)
    if png is not None:
        _report_figure(rs, frame, png)


def _missing_runs(ids: list[str], frame) -> None:
    from imbtui.console import err

    for rid in sorted(set(ids) - set(frame["run_id"].to_list())):
        err.print(f"[yellow]warning:[/yellow] run {rid} has no evaluated epoch yet; left out")


def _report_figure(rs, frame, path: Path) -> None:
    from imbtui.console import err
    from imbtui.figures import group_curves_figure

    curves = rs.query("group_curves", runs=frame["run_id"].to_list())
    panels = [(r["run_id"], f"#{i} {r['dataset']}, ratio {r['ratio']:g}, {r['method']}")
              for i, r in enumerate(frame.to_dicts(), 1)]
    group_curves_figure(curves, panels, path)
    err.print(f"wrote figure {path}")


# ==== browse ======================================================================================

@app.command()
def browse(store: StoreOpt = None,
           run: Annotated[Optional[str], typer.Option(
               "--run", help="Open this run (id, unique prefix or name) straight away.",
               show_default=False)] = None) -> None:
    """Browse, compare and query runs in the terminal app (live runs refresh by themselves)."""
    from imbtui.tui.app import make_app

    app_ = make_app(store, open_run=None)
    if run is not None:
        app_.open_run = _resolve_run(app_.session.store, run)
    app_.run()


def _sigterm_interrupts() -> None:
    """`kill PID`, and job schedulers (SLURM sends SIGTERM before SIGKILL), stop a run the way
    Ctrl-C does: it flushes what it has and is marked interrupted, instead of dying unrecorded."""
    import signal
    import threading

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


# ==== doctor / export =============================================================================

@app.command()
def doctor(store: StoreOpt = None,
           quarantine: Annotated[bool, typer.Option(
               "--quarantine", help="Move every fixable problem to STORE/quarantine/<time>/ "
               "(nothing is deleted; manifest.json there says what moved and why).")] = False,
           as_json: Annotated[bool, typer.Option("--json", help="Print the problems as a JSON "
                                                 "array.")] = False) -> None:
    """Check a run store: damaged parts, bad run.json files, stray files, crashed runs.

    Exits 1 while problems remain, 0 when the store is clean.
    """
    import json

    from imbtui.store import resolve_store
    from imbtui.store.doctor import as_records, diagnose
    from imbtui.store.doctor import quarantine as move_aside

    root = resolve_store(store)
    problems = diagnose(root)
    moved = move_aside(root, problems) if quarantine else None
    remaining = diagnose(root) if moved else problems
    if as_json:
        print(json.dumps(as_records(root, remaining), indent=1))
    else:
        _print_problems(root, problems, moved, remaining)
    if any(p.severity == "error" for p in remaining):
        raise typer.Exit(1)


def _print_problems(root: Path, found, moved: Path | None, remaining) -> None:
    from rich.markup import escape

    from imbtui.console import out

    for p in found:
        colour = "yellow" if p.severity == "info" else "red"
        out.print(f"[{colour}]{p.kind}[/{colour}]  {escape(p.relpath(root))}  {escape(p.detail)}",
                  soft_wrap=True)
    if moved is not None:
        out.print(f"moved {len(found) - len(remaining)} item(s) to {escape(str(moved))} "
                  f"(see manifest.json there)", soft_wrap=True)
    errors = [p for p in remaining if p.severity == "error"]
    fixable = [p for p in remaining if p.fixable]
    hint = " can be moved aside with [bold]imbtui doctor --quarantine[/bold]"
    if not errors and not fixable:
        summary = f"store {escape(str(root))}: no problems"
    elif not errors:
        summary = f"store {escape(str(root))}: no damage; {len(fixable)} leftover file(s){hint}"
    elif fixable and moved is None:
        summary = f"{len(errors)} problem(s); {len(fixable)}{hint}"
    else:
        summary = f"{len(errors)} problem(s) left to fix by hand"
    out.print(summary, soft_wrap=True)


@app.command()
def export(
    duckdb_file: Annotated[Path, typer.Option(
        "--duckdb", help="The DuckDB database file to write (outside the store).",
        show_default=False)],
    runs_: Annotated[Optional[list[str]], typer.Argument(
        metavar="RUN", help="Runs to export (id, unique prefix or name); default: all.",
        show_default=False)] = None,
    where: Annotated[Optional[str], typer.Option(
        help="Keep only runs matching this SQL condition on the runs view, e.g. \"ratio >= 10 "
             "AND status = 'finished'\".", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace FILE if it exists.")] = False,
    store: StoreOpt = None,
) -> None:
    """Write selected runs into one standalone DuckDB database file, for sharing or other tools."""
    from imbtui.console import out
    from imbtui.store.export import export_duckdb

    st = _store(store, must_exist=True)
    ids = [_resolve_run(st, r) for r in runs_] if runs_ else None
    counts = export_duckdb(st, duckdb_file, ids, where=where, force=force)
    _warn(st)
    rows = ", ".join(f"{t} {n:,}" for t, n in counts.items())
    out.print(f"wrote {duckdb_file}: {rows}", soft_wrap=True)


# ==== entry point =================================================================================

def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one line on stderr and exit code 2, never a traceback."""
    command = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else argv
    try:
        rv = command.main(args=args, prog_name="imbtui", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("imbtui: aborted", file=sys.stderr)
        return 130
    except typer.TyperException as exc:  # Typer's usage errors: bad options, values, commands
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":
            print(exc.format_message(), file=sys.stderr)
            return 2
        where = f" (see: imbtui {ctx.info_name} --help)" if ctx is not None and ctx.parent else ""
        print(f"imbtui: error: {exc.format_message()}{where}", file=sys.stderr)
        return exc.exit_code
    except UserError as exc:
        print(f"imbtui: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imbtui: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return rv if isinstance(rv, int) else 0


def run() -> None:
    if "LOCAL_RANK" in os.environ:  # perhaps a torchrun worker (asking imports torch)
        from trainer.distributed import launched, leave

        if launched():  # exit without the interpreter's shutdown (why: distributed.leave)
            leave(_main_printing_tracebacks())
    sys.exit(main())


def _main_printing_tracebacks() -> int:
    """main's exit code; an unexpected error prints its traceback, as Python would, and gives 1."""
    try:
        return main()
    except BaseException:
        import traceback

        traceback.print_exc()
        return 1
