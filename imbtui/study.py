"""`imbtui study`: the motivating study in one command — a grid of runs, reused where it exists,
and its answer written into a folder.

A study is datasets x ratios x seeds x methods. A method is spelled as the store names it (the
`method` column, `schema.method_label`): a loss, `-drw` for deferred re-weighting, `-mean` for the
batch-size reduction of a class-weighted loss, then `+` parts (a sampler, `ls` / `las`, `mixup`,
`sam` / `imbsam`, `maxnorm`, a second stage). So `ce`, `ldam-drw`, `ce+class-balanced` and
`ce+mixup+crt` are methods; each becomes the `imbtui train` options that give it, with the
parameters in METHOD_PARTS unless the user gave them.

Resuming: a grid cell whose full training config (every TrainConfig field, except the run's name
and sweep id) equals a finished run's stored config (run.json's `config`, the `runs` view's config
column), both resolved by today's trainer (trainer.config.resolve_config: the dataset's recipe, the
model, the planned second-stage epochs), reuses that run; any other cell is trained, including one
whose earlier run is running, failed, interrupted or crashed.

The answer (`write_answer`) is the report (imbtui/report.py) of exactly the grid's runs, its
figures (imbtui/figures.py) and summary.md. Every number in it is a column of a view or a named
query of the store, pooled over seeds by DuckDB (report.over_seeds, the ratio_sweep query).
Imports nothing heavy at module level: rich, the store and the option declarations.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from imbtui.errors import UserError
from imbtui.sweep import Job, SweepRunner
from trainer.options import LOSSES, SAMPLERS, STAGE2

# ==== methods =====================================================================================

# Each `+` part of a method label: the options it sets, with their values when the user gives none
# (the values of the Makefile's methods-fmnist study; MaxNorm's bound is weight balancing's).
METHOD_PARTS: dict[str, dict[str, Any]] = {
    **{s: {"sampler": s} for s in SAMPLERS if s != "none"},
    "ls": {"smoothing": 0.1},
    "las": {"smoothing": 0.3, "smoothing_tail": 0.0},
    "mixup": {"mixup": 1.0},
    "sam": {"optimizer": "sam"},
    "imbsam": {"optimizer": "imbsam"},
    "maxnorm": {"max_norm": 0.1},
    **{s: {"stage2": s} for s in STAGE2 if s != "none"},
}
DRW_AT = 0.8  # `-drw` re-weights after this fraction of the epochs (LDAM-DRW: 160 of 200)
# options that only a method's part (or -drw) uses: given by the user, they fill those methods
METHOD_OPTIONS = ("drw", "smoothing", "smoothing_tail", "mixup", "max_norm")
SPELLING = ("a method is a loss (" + ", ".join(LOSSES) + ") with optional -drw and -mean, then "
            "optional +parts: " + ", ".join(METHOD_PARTS))


def method_options(label: str, given: dict[str, Any], epochs: int) -> dict[str, Any]:
    """The training options of one method label: the loss, `drw`, `cb_reduction` and each part's
    options, a part's parameters taken from `given` (the user's options) when set there."""
    head, *parts = label.strip().split("+")
    values: dict[str, Any] = {}
    if head.endswith("-mean"):
        head, values["cb_reduction"] = head[:-len("-mean")], "mean"
    if head.endswith("-drw"):
        head = head[:-len("-drw")]
        values["drw"] = given.get("drw") if given.get("drw") is not None else int(DRW_AT * epochs)
    if head not in LOSSES:
        raise UserError(f"unknown method {label!r}: {SPELLING}")
    values["loss"] = head
    for part in parts:
        if part not in METHOD_PARTS:
            raise UserError(f"unknown method {label!r} (no part {part!r}): {SPELLING}")
        for option, default in METHOD_PARTS[part].items():
            values[option] = given.get(option) if given.get(option) is not None else default
    return values


def unused_method_options(labels: Sequence[str], given: dict[str, Any]) -> list[str]:
    """The method options the user set that none of the methods uses (to refuse, not ignore)."""
    used = set()
    for label in labels:
        head, *parts = label.split("+")
        used |= {"drw"} if "-drw" in head else set()
        for part in parts:
            used |= set(METHOD_PARTS.get(part, {}))
    return [o for o in METHOD_OPTIONS if given.get(o) is not None and o not in used]


# ==== the grid and what the store already holds ===================================================

IGNORED = ("name", "sweep")  # a run's label and its sweep's: not part of what it trained
TUPLES = ("milestones", "posthoc_tau")  # TrainConfig's tuple fields (JSON gives lists)


def resolved_identity(cfg: Any) -> dict[str, Any]:
    """What a config trains, as JSON values: every TrainConfig field after resolve_config (the
    dataset's recipe, the model, the planned second-stage epochs ...), less IGNORED."""
    from trainer.config import resolve_config

    resolved = resolve_config(cfg)
    plain = json.loads(json.dumps({**dataclasses.asdict(resolved),
                                   "model": resolved.resolved_model()}, default=str))
    return {k: v for k, v in plain.items() if k not in IGNORED}


def stored_identity(config: dict[str, Any]) -> dict[str, Any] | None:
    """The identity of a stored run's config (run.json's `config`), resolved by today's trainer
    exactly as a new config is: a field the run's code version did not have takes its default,
    and what the run measured (n_train, n_params ...) is left out. None if it no longer resolves
    (a user dataset that is gone)."""
    from trainer.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    kwargs = {k: tuple(v) if k in TUPLES and isinstance(v, list) else v
              for k, v in config.items() if k in fields}
    try:
        return resolved_identity(TrainConfig(**kwargs))
    except Exception:  # noqa: BLE001  (an unreadable old config never matches)
        return None


FINISHED_RUNS_SQL = """
SELECT run_id, config FROM runs WHERE status = 'finished' ORDER BY created_at, run_id
"""


def finished_runs(store: Any) -> list[tuple[str, dict[str, Any] | None]]:
    """(run id, identity) of every finished run, oldest first (the `runs` view's effective status:
    a stale `running` run is not finished)."""
    frame = store.sql(FINISHED_RUNS_SQL)
    return [(rid, stored_identity(json.loads(cfg or "{}"))) for rid, cfg in frame.iter_rows()]


def match(configs: Sequence[Any], finished: list[tuple[str, dict[str, Any] | None]]
          ) -> list[str | None]:
    """For each config, the oldest finished run that trained exactly it, or None."""
    found: list[str | None] = []
    for cfg in configs:
        want = resolved_identity(cfg)
        found.append(next((rid for rid, have in finished if have == want), None))
    return found


# ==== training the missing runs ===================================================================

class StudyRunner(SweepRunner):
    """The sweep's runner with the study's one display: an overall bar with the time elapsed and
    an estimate of the time left (rich's, from the progress of the last 30 s), a line per run."""

    def __init__(self, jobs: list[Job], store: Path, n_parallel: int, n_gpus: int,
                 quiet: bool = False) -> None:
        super().__init__(jobs, store, n_parallel, n_gpus, quiet)
        from imbtui.console import err

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=24),
                                 TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                                 TextColumn("left"), TimeRemainingColumn(), console=err,
                                 disable=quiet)

    def _draw(self, overall: TaskID, waiting: int, running: int) -> None:
        super()._draw(overall, waiting, running)
        task = self.progress.tasks[0] if self.progress.tasks else None
        if task is not None:
            self.progress.update(overall, description=task.description.replace("sweep", "study",
                                                                                 1))


# ==== the answer ==================================================================================

FIGURES = {
    "curves.png": "majority vs minority accuracy, train (solid) and test (dashed), per ratio and "
                  "method, mean over seeds with 95 % t-intervals (query group_curves)",
    "onset.png": "finding 1: each class's learning onset (first epoch at train accuracy >= "
                 "{threshold:g}) against its training count (query learning_onset)",
    "initial_drop.png": "finding 2: majority vs minority training loss per step over the first "
                        "{steps} steps, mean over seeds with 95 % t-intervals shaded (view "
                        "group_steps, as the report's loss change rows read it: query "
                        "initial_drop)",
    "speed.png": "finding 2: each class's learning speed (area under its train accuracy curve) "
                 "against its training count (query learning_speed)",
    "gap.png": "finding 3: each class's final train - test accuracy gap against its training "
               "count (query generalisation_gap)",
}


def write_answer(root: Path, run_ids: Sequence[str], out_dir: Path, title: str,
                 threshold: float = 0.5, early: int = 2) -> list[Path]:
    """The study's answer for these runs into out_dir: report.txt, findings.csv, the figures and
    summary.md; returns the files written."""
    from imbtui.api import RunStore
    from imbtui.report import findings, settings

    rs = RunStore(root)
    ids = list(run_ids)
    frame = findings(rs, ids, threshold=threshold, early=early)
    if frame.height == 0:
        raise UserError("no run of the study has an evaluated epoch")
    columns = settings(rs, frame, threshold, early)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [_write_report(columns, frame, threshold, early, out_dir / "report.txt")]
    written.append(_write_csv(frame, out_dir / "findings.csv"))
    written += _write_figures(rs, ids, columns, threshold, out_dir)
    finals = rs.query("ratio_sweep", runs=ids)
    summary = summary_markdown(title, columns, finals, threshold, early, [p.name for p in written])
    (out_dir / "summary.md").write_text(summary)
    return [*written, out_dir / "summary.md"]


def _write_report(columns, frame, threshold: float, early: int, path: Path) -> Path:
    """The report as `imbtui report` prints it, wide enough for every column."""
    from rich.console import Console

    from imbtui.report import changes, legend, table

    console = Console(file=io.StringIO(), width=48 + 24 * columns.height, color_system=None)
    console.print(table(columns, threshold, early))
    for line in legend(columns, frame, threshold) + changes(columns):
        console.print(line, highlight=False, soft_wrap=True)
    path.write_text(console.file.getvalue())
    return path


def _write_csv(frame, path: Path) -> Path:
    from imbtui.console import flat_for_csv

    flat_for_csv(frame).write_csv(path)
    return path


def _write_figures(rs, ids: list[str], columns, threshold: float, out_dir: Path) -> list[Path]:
    import polars as pl

    from imbtui.figures import class_size_figure, group_curves_figure
    from imbtui.report import curves_over_seeds

    panels = [(i, f"ratio {r['ratio']:g}, {r['method']}" + (f" (n={r['seeds']})"
                                                           if r["seeds"] > 1 else ""))
              for i, r in enumerate(columns.to_dicts(), 1)]
    paths = [group_curves_figure(curves_over_seeds(rs, columns), panels, out_dir / "curves.png",
                                 key="column", dpi=150)]
    paths.append(_initial_drop_figure(rs, columns, panels, out_dir / "initial_drop.png"))
    meta = rs.sql("SELECT run_id, ratio, method FROM runs WHERE list_contains($runs, run_id)",
                  {"runs": ids})
    methods = [(m, m) for m in dict.fromkeys(columns["method"].to_list())]
    onset = rs.query("learning_onset", runs=ids, threshold=threshold).join(meta, on="run_id")
    onset = onset.with_columns(never=pl.col("onset_epoch").is_null(),
                               onset=pl.coalesce("onset_epoch", pl.col("last_epoch") + 1))
    paths.append(class_size_figure(onset, "onset", "onset epoch (train acc >= "
                                   f"{threshold:g})", methods, out_dir / "onset.png",
                                   censored="never"))
    per_class = pl.col("class_id").is_not_null()
    speed = rs.query("learning_speed", runs=ids).filter(per_class).join(meta, on="run_id")
    paths.append(class_size_figure(speed, "auc", "learning speed (train acc AUC)", methods,
                                   out_dir / "speed.png", ylim=(0, 1.02)))
    gap = rs.query("generalisation_gap", runs=ids).filter(per_class).join(meta, on="run_id")
    paths.append(class_size_figure(gap, "gap", "final train - test accuracy", methods,
                                   out_dir / "gap.png"))
    return paths


INITIAL_STEPS_SQL = """
SELECT run_id, grp, step, loss FROM group_steps
WHERE list_contains($runs, run_id) AND step <= $steps
"""


def _initial_drop_figure(rs, columns, panels: list, path: Path) -> Path:
    """Each report column's group loss per step over the initial_drop analysis's K steps, its
    seeds pooled by DuckDB (report.over_seeds)."""
    import polars as pl

    from imbtui.figures import group_steps_figure
    from imbtui.report import drop_params, over_seeds

    which = {rid: i for i, ids in enumerate(columns["run_ids"].to_list(), 1) for rid in ids}
    steps = rs.sql(INITIAL_STEPS_SQL, {"runs": list(which), "steps": drop_params()[0]})
    steps = steps.with_columns(column=pl.col("run_id").replace_strict(which,
                                                                      return_dtype=pl.Int64))
    return group_steps_figure(over_seeds(rs, steps, ["column", "grp", "step"], ["loss"]), panels,
                              path)


# ==== summary.md ==================================================================================

def summary_markdown(title: str, columns, finals, threshold: float, early: int,
                     files: list[str]) -> str:
    """The study's answer in a page: final accuracies, the three findings, links to the rest."""
    from imbtui.report import drop_params

    lines = [f"# {title}", "",
             ("Each number is a run's, or over several seeds their mean ± the half-width of its "
              "95 % t-interval (n = seeds), as DuckDB computes them from the store's views "
              "(final_results, the named queries; `imbtui report` shows the same)."), "",
             "## Final test accuracy", "", *final_table(finals), "",
             "## The three findings", "", *findings_table(columns, threshold, early), "",
             *_changes(columns), "## Figures", ""]
    for name in files:
        if name in FIGURES:
            text = FIGURES[name].format(threshold=threshold, steps=drop_params()[0])
            lines += [f"- [{name}]({name}): {text}", "",
                      f"  ![{name}]({name})", ""]
    lines += ["## Files", "",
              ("- [report.txt](report.txt): the report with its legend (which runs each column "
               "pools)"),
              "- [findings.csv](findings.csv): every number of the report, one row per run", ""]
    return "\n".join(lines)


FINAL_COLUMNS = {"test_balanced": "balanced", "test_majority": "majority",
                 "test_minority": "minority", "minority_gap": "minority train - test"}


def final_table(finals) -> list[str]:
    """The ratio_sweep query's rows as a Markdown table."""
    head = ["ratio", "method", "seeds", *FINAL_COLUMNS.values()]
    rows = [_md_row(head), _md_row(["---:", "---", "---:"] + ["---:"] * len(FINAL_COLUMNS))]
    for r in finals.sort("method", "ratio").to_dicts():
        cells = [_pm(r[c], r.get(f"{c}_ci"), r["seeds"]) for c in FINAL_COLUMNS]
        rows.append(_md_row([f"{r['ratio']:g}", r["method"], str(r["seeds"]), *cells]))
    return rows


def findings_table(columns, threshold: float, early: int) -> list[str]:
    """The report's rows (report.rows, its cells as report._cell writes them) in Markdown."""
    from imbtui.report import _cell, rows

    cols = columns.to_dicts()
    head = ["finding", *(f"ratio {c['ratio']:g}, {c['method']}" for c in cols)]
    out = [_md_row(head), _md_row(["---"] + ["---:"] * len(cols))]
    for row in rows(threshold, early):
        if row.key is None:
            out.append(_md_row([f"**{row.label}**"] + [""] * len(cols)))
        else:
            out.append(_md_row([row.label, *(_cell(c, row.key, row.fmt) for c in cols)]))
    return out


def _changes(columns) -> list[str]:
    from imbtui.report import changes

    lines = changes(columns)
    return [*(f"- {line}" for line in lines), ""] if lines else []


def _pm(value: float | None, ci: float | None, n: int) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if ci is None else f"{value:.3f} ± {ci:.3f}"


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
