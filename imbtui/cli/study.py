"""`imbtui study`: train a grid of ratios x seeds x methods (reusing finished runs), then write
the study's answer — the report, figures and summary.md — into a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from imbtui.cli.common import StoreOpt, UserError, _sigterm_interrupts, app
from imbtui.cli_options import values_of, with_options
from imbtui.cli.training import MAX_JOBS
from trainer.options import MAX_EPOCHS, MAX_SEED, OPTION, OPTIONS

LISTS = ("--ratios", "--seeds", "--methods")
# every option of `imbtui sweep` but its axes (the study's own lists and --methods replace them);
# --dataset takes one value
STUDY_OPTIONS = (OPTION["dataset"], *(o for o in OPTIONS if o.sweep and not o.axis))


class _StudyCommand(typer.core.TyperCommand):
    """Lets `--ratios 1 10 100` give three values (click takes one value per use of an option)."""

    def parse_args(self, ctx, args):
        from imbtui.sweep import expand_lists

        return super().parse_args(ctx, expand_lists(list(args), LISTS))


def study(
    ratios: Annotated[Optional[list[float]], typer.Option(
        "--ratios", min=1.0, help="Imbalance ratios (largest / smallest class), e.g. --ratios 1 10 "
        "100. Default: 1 10 100.", show_default=False)] = None,
    seeds: Annotated[Optional[list[int]], typer.Option(
        "--seeds", min=0, max=MAX_SEED, help="Seeds of each setting, e.g. --seeds 0 1 2. Default: 0 1 2.",
        show_default=False)] = None,
    methods: Annotated[Optional[list[str]], typer.Option(
        "--methods", help="Methods, spelled as the `method` column names them: a loss (ce, "
        "weighted-ce, cb, focal, ldam, balanced-softmax, logit-adjusted), -drw for deferred "
        "re-weighting (at 80 % of the epochs unless --drw E), then +parts: class-balanced, "
        "square-root, ls, las, mixup, sam, imbsam, maxnorm, crt, lws, tau-norm, cb-finetune; e.g. "
        "--methods ce ldam-drw ce+class-balanced. Default: ce.", show_default=False)] = None,
    out_dir: Annotated[Path, typer.Option(
        "--out", help="Folder of the answer: summary.md, report.txt, findings.csv and the "
        "figures.")] = Path("imbtui-study"),
    jobs: Annotated[int, typer.Option(
        "--jobs", "-j", min=1, max=MAX_JOBS, help="Runs at once, each its own process.")] = 1,
    threshold: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Train accuracy at which a class counts as learned (onsets).")
                         ] = 0.5,
    early: Annotated[int, typer.Option(min=1, max=MAX_EPOCHS, help="How many first epochs count as early.")] = 2,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List the runs, each reused (its run id) or to train; train and write "
                          "nothing.")] = False,
    store: StoreOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    **options: Any,
) -> None:
    """Train a grid of ratios x seeds x methods, reusing finished runs; write the study's answer.

    One dataset, every ratio x seed x method. A grid cell is reused when a finished run in the
    store trained exactly its config (every training option, after the dataset's recipe; the
    run's name aside); anything else, including a run that was interrupted, failed or is still
    marked running, is trained again. Ctrl-C (or SIGTERM) keeps the finished runs: the same
    command again trains only what is missing.

    The answer, in --out: summary.md (final accuracies and the three findings, mean ± 95 % t
    half-width over the seeds, and links), report.txt (`imbtui report` of the study's runs),
    findings.csv, and the figures curves.png, initial_drop.png, onset.png, speed.png and
    gap.png. Every other `imbtui train` option applies to every run; --drw, --smoothing,
    --smoothing-tail, --mixup and --max-norm set the parameters of the methods that use them.

    Docs: docs/analyses.md (README.md, "Study")
    """
    from imbtui.console import err, out
    from imbtui.store import Store, resolve_store

    root = resolve_store(store)
    _check_out(out_dir, root)
    configs = _study_configs(values_of(options, STUDY_OPTIONS), ratios or [1.0, 10.0, 100.0],
                             seeds if seeds is not None else [0, 1, 2], methods or ["ce"])
    n_gpus = _check_grid(configs)
    from imbtui.study import finished_runs, match

    reused = match(configs, finished_runs(Store(root)) if (root / "runs").is_dir() else [])
    todo = [c for c, rid in zip(configs, reused) if rid is None]
    err.print(f"study: {len(configs)} runs, {len(configs) - len(todo)} reused from {root}, "
              f"{len(todo)} to train" + (f", {min(jobs, len(todo))} at a time" if todo else ""),
              soft_wrap=True)
    if dry_run:
        for cfg, rid in zip(configs, reused):  # plain print: one run per line, never wrapped
            print(f"{'reuse ' + rid if rid else 'train':<29} {cfg.name}")
        return
    trained = _train(todo, root, jobs, n_gpus, quiet)
    ids = [rid or trained.get(id(c)) for c, rid in zip(configs, reused)]
    _write(root, [i for i in ids if i], out_dir, configs, threshold, early)
    failed = [c.name for c, rid in zip(configs, ids) if rid is None]
    out.print(f"wrote {out_dir / 'summary.md'}")
    if failed:
        err.print(f"[red]{len(failed)} of {len(configs)} runs did not finish[/red] and are left "
                  f"out of the answer ({', '.join(failed)}); the same command trains them again",
                  soft_wrap=True)
        raise typer.Exit(1)


app.command(cls=_StudyCommand)(with_options(study, STUDY_OPTIONS,
                                           panel="Training options (every run)"))


def _check_out(out_dir: Path, root: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {str(out_dir)!r} is a file, not a folder")
    if str(out_dir).strip() == "":
        raise UserError("--out is empty: give a folder")
    if root.exists() and not root.is_dir():
        raise UserError(f"--store {str(root)!r} is a file, not a folder")


def _study_configs(values: dict[str, Any], ratios: list[float], seeds: list[int],
                   methods: list[str]) -> list:
    """One TrainConfig per method x ratio x seed (duplicates dropped), named like a sweep's runs
    (study-<dataset label>-r<ratio>-<method>-s<seed>)."""
    import dataclasses

    from imbtui.store.schema import method_label
    from imbtui.study import METHOD_OPTIONS, method_options, unused_method_options
    from trainer.config import TrainConfig, resolve_config
    from trainer.data import dataset_label

    given = {k: v for k in METHOD_OPTIONS  # the method parameters the user set
             if (v := values.pop(k, None)) is not None and v != OPTION[k].default}
    unused = unused_method_options(methods, given)
    if unused:
        raise UserError(f"{OPTION[unused[0]].cli_flag} is a parameter of a method none of "
                        f"--methods uses ({', '.join(methods)})")
    epochs = resolve_config(TrainConfig.from_options(values)).epochs
    configs, seen = [], set()
    for label in methods:
        method = method_options(label, given, epochs)
        for ratio in dict.fromkeys(ratios):
            for seed in dict.fromkeys(seeds):
                cfg = TrainConfig.from_options({**values, **method, "ratio": ratio, "seed": seed})
                name = method_label(dataclasses.asdict(cfg))
                if set(name.split("+")) != set(label.strip().split("+")):
                    raise UserError(f"method {label!r} would train as {name!r}: spell it so")
                if (name, ratio, seed) in seen:
                    continue
                seen.add((name, ratio, seed))
                configs.append(dataclasses.replace(
                    cfg, name=f"study-{dataset_label(cfg.dataset)}-r{ratio:g}-{name}-s{seed}"))
    return configs


def _check_grid(configs: list) -> int:
    """Every run checked as `imbtui train` would, before any starts (the sweep's check)."""
    from imbtui.cli.training import _check_sweep

    return _check_sweep(configs)


def _train(configs: list, root: Path, jobs: int, n_gpus: int, quiet: bool) -> dict[int, str]:
    """Train the configs as a sweep does; {id(config): run id} of those that finished."""
    import dataclasses

    from imbtui.cli.training import _sweep_jobs
    from imbtui.console import err
    from imbtui.store import Store
    from imbtui.store.layout import new_run_id
    from imbtui.study import StudyRunner

    if not configs:
        return {}
    sweep_id = f"study-{new_run_id()}"
    configs_ = [dataclasses.replace(c, sweep=sweep_id) for c in configs]
    job_list = _sweep_jobs(configs_, root)
    runner = StudyRunner(job_list, root, min(jobs, len(job_list)), n_gpus, quiet)
    _sigterm_interrupts()  # `kill PID` stops the study as Ctrl-C does: each run records itself
    try:
        runner.run()
    except KeyboardInterrupt:
        n_done = sum(j.returncode == 0 for j in job_list)
        err.print(f"interrupted: {n_done} of the {len(job_list)} runs to train finished; every "
                  f"finished run is kept in {root}, and the same command trains only what is "
                  f"missing", soft_wrap=True)
        raise typer.Exit(130) from None
    # the run's own record says whether it finished (a process may still exit non-zero after
    # recording its run as finished, e.g. while printing its closing table)
    store = Store(root)
    done = {id(c): j.run_id for c, j in zip(configs, job_list)
            if (store.read_run(j.run_id) or {}).get("status") == "finished"}
    for c, j in zip(configs, job_list):
        if id(c) not in done:
            err.print(f"[red]{j.name} failed:[/red] {j.error}", soft_wrap=True)
    return done


def _write(root: Path, ids: list[str], out_dir: Path, configs: list, threshold: float,
           early: int) -> None:
    from imbtui.console import err
    from imbtui.study import write_answer

    if not ids:
        raise UserError("no run of the study finished: nothing to report")
    cfg = configs[0]
    ratios = ", ".join(dict.fromkeys(f"{c.ratio:g}" for c in configs))
    seeds = ", ".join(dict.fromkeys(str(c.seed) for c in configs))
    title = f"Study: {cfg.dataset}, ratios {ratios}, seeds {seeds}"
    try:
        files = write_answer(root, ids, out_dir, title, threshold, early)
    except OSError as exc:
        raise UserError(f"cannot write into {str(out_dir)!r}: {exc.strerror or exc}") from None
    err.print(f"wrote {len(files)} files into {out_dir}: " + ", ".join(p.name for p in files),
              soft_wrap=True)
