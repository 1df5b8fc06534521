"""The chart view's data: one metric of one or more runs, bucketed in DuckDB to the chart's width.

Each run's curve comes from the same SQL the run screen's sparklines read (data/curves.py, over the
semantic layer), for the one metric drawn, so the chart and the row it was opened from show the
same numbers; at most `width` rows per run and group reach Python, whatever the run's length.

The x-axis is the step, the epoch, or the training samples seen before the step (the running sum
of `steps.n`, also bucketed in DuckDB). Runs whose configs differ only in their seeds (`setting`)
can be pooled into one line per group: the mean over the seeds at each point and the band from
their minimum to their maximum. One run's chart can draw a line per class instead, read as the run
screen's per-class rows are (`class_curves`). No Textual here: these run in thread workers,
benchmarks and tests.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import duckdb

from imbtui.tui.data.curves import (
    EPOCH_STEPS_SQL,
    STEP_GROUP_SQL,
    _forgetting,
    _params,
    bucket,
    class_curves,
    epoch_group_sql,
    forget_group_sql,
    geometry_sql,
    logit_sql,
    probe_sql,
    steps_span,
)
from imbtui.tui.data.metrics import CLASS_METRICS, GROUPS, METRIC

XAxis = Literal["step", "epoch", "samples"]
X_AXES: tuple[XAxis, ...] = ("step", "epoch", "samples")
X_LABEL = {"step": "step", "epoch": "epoch", "samples": "samples seen"}

# Config keys that name, place or seed a run rather than say how it was trained: two runs whose
# configs differ only in these are seeds of one setting.
NOT_SETTING = frozenset({"seed", "subset_seed", "name", "sweep", "device", "data_dir",
                         "flush_steps", "flush_seconds", "check_sync"})

Point = tuple[float, float]


@dataclass
class RunSeries:
    """One run's curve of the metric, per group: (x, value) points in x order."""

    run_id: str
    name: str
    setting: str
    groups: dict[str, list[Point]]


@dataclass
class ChartLine:
    """What the chart draws for one group of one run, or of a setting's seeds (mean and band)."""

    label: str                 # the run's name, or "<name> (n seeds)"
    grp: str
    run_ids: tuple[str, ...]
    x: list[float]
    y: list[float]
    lo: list[float] | None = None  # the band (min over the seeds), None for a single run
    hi: list[float] | None = None
    class_id: int | None = None    # a line of one class (label: its name, grp: its group)


@dataclass
class ChartData:
    metric: str
    x_axis: XAxis
    width: int
    runs: list[RunSeries]
    lines: list[ChartLine] = field(default_factory=list)
    pooled: bool = False
    by_class: bool = False  # the lines are one run's classes


# ==== where each metric is read ===================================================================

_STEP_SQL_METRICS = ("train_acc", "loss", "confidence", "margin", "grad_norm", "pred_share",
                     "grad_own")
_EVAL_TRAIN = ("weight_norm", "feature_norm")


def metric_source(metric: str, resolution: str) -> tuple[str, str | None, str]:
    """(the SQL of data/curves.py that reads `metric` at `resolution`, the eval split to keep or
    None, the column holding the value): the run screen's own statements."""
    axis = "step" if resolution == "step" else "epoch"
    if metric in _STEP_SQL_METRICS:
        if resolution == "step":
            return STEP_GROUP_SQL, None, metric
        if metric in ("train_acc", "loss", "confidence"):
            return epoch_group_sql(axis), "train", "acc" if metric == "train_acc" else metric
        return EPOCH_STEPS_SQL, None, metric
    if metric == "test_acc":
        return epoch_group_sql(axis), "test", "acc"
    if metric in _EVAL_TRAIN:
        return epoch_group_sql(axis), "train", metric
    if metric in ("logit_norm", "logit_margin"):
        return logit_sql(axis), None, metric
    if metric in ("probe_grad", "probe_cos"):
        return probe_sql(axis), None, metric
    if metric in ("within_rel", "w_cos"):
        return geometry_sql(axis), None, metric
    if metric == "forgetting":
        return forget_group_sql(axis), None, metric
    raise ValueError(f"no chart for metric {metric!r}")


# Samples seen before each bucket's first step: the running sum of the batches' sizes.
SAMPLES_SQL = f"""
WITH per_step AS (
    SELECT step, sum(n) AS n FROM steps WHERE run_id = $run GROUP BY step
), seen AS (
    SELECT step, coalesce(sum(n) OVER (ORDER BY step ROWS BETWEEN UNBOUNDED PRECEDING
                                       AND 1 PRECEDING), 0) AS before
    FROM per_step
)
SELECT {bucket("step")} AS bucket, min(before)::DOUBLE AS x FROM seen GROUP BY ALL
"""


def setting(config: str | dict[str, Any] | None) -> str:
    """A run's config without the keys that only name, place or seed it (NOT_SETTING), as JSON:
    equal for runs that are seeds of one setting."""
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError:
            config = {}
    config = config if isinstance(config, dict) else {}
    return json.dumps({k: v for k, v in config.items() if k not in NOT_SETTING},
                      sort_keys=True, default=str)


def run_series(cur: duckdb.DuckDBPyConnection, run_id: str, metric: str, x_axis: XAxis,
               width: int) -> dict[str, list[Point]]:
    """grp -> the run's (x, value) points of `metric`, at most `width` per group."""
    resolution = "epoch" if x_axis == "epoch" else "step"
    params = _params(cur, run_id, width, resolution)
    sql, split, column = metric_source(metric, resolution)
    if metric == "forgetting":
        frame = _forgetting(cur, run_id, sql, params)
        if frame is None:
            return {}
    else:
        frame = cur.sql(sql, params=params).pl()
    if split is not None:
        frame = frame.filter(frame["split"] == split)
    if column not in frame.columns:
        return {}
    xs = _bucket_x(cur, params, x_axis)
    out: dict[str, list[Point]] = {}
    for grp, b, v in zip(frame["grp"].to_list(), frame["bucket"].to_list(),
                         frame[column].to_list()):
        x = xs(b)
        if grp in GROUPS and x is not None and v is not None and math.isfinite(v):
            out.setdefault(grp, []).append((x, float(v)))
    return {g: sorted(p) for g, p in out.items()}


def _bucket_x(cur: duckdb.DuckDBPyConnection, params: dict[str, Any], x_axis: XAxis):
    """bucket -> its x: the first step (epoch) it covers, or the samples seen before that step."""
    width, span = params["width"], params["span"]
    if x_axis != "samples":
        return lambda b: None if b is None else float(b) * span / width
    seen = dict(cur.sql(SAMPLES_SQL, params=params).fetchall())
    return lambda b: seen.get(b)


def run_names(cur: duckdb.DuckDBPyConnection, run_ids: Sequence[str]
              ) -> dict[str, tuple[str, str]]:
    """run_id -> (name, setting) from the `runs` view (run.json files, no Parquet)."""
    rows = cur.sql("SELECT run_id, name, config FROM runs WHERE list_contains($ids, run_id)",
                   params={"ids": list(run_ids)}).fetchall()
    return {r: (n or r, setting(c)) for r, n, c in rows}


def seed_siblings(cur: duckdb.DuckDBPyConnection, run_id: str) -> list[str]:
    """Every run of the store whose config differs from `run_id`'s only in seed (itself first)."""
    rows = cur.sql("SELECT run_id, config FROM runs ORDER BY created_at, run_id").fetchall()
    mine = next((setting(c) for r, c in rows if r == run_id), None)
    others = [r for r, c in rows if r != run_id and setting(c) == mine]
    return [run_id, *others]


# ==== several runs in one statement ===============================================================
# The per-step group metrics of every charted run come from one statement over the store's
# group_buckets_runs macro (the definition the run screen's group_buckets reads, for a list of
# runs): one scan of `steps` for all of them. Every run is cut at the same steps, `width` buckets
# over the longest run's span, so the runs' points fall on one x-axis and a shorter run's line
# ends where its record ends.

BUCKET_COLUMN = {"train_acc": "acc", "loss": "loss", "confidence": "p_true", "margin": "margin"}

def many_buckets_sql(column: str) -> str:
    return f"""
SELECT run_id, grp, bucket, {column} AS value FROM group_buckets_runs($ids, $width, $span)
"""


MANY_SAMPLES_SQL = f"""
WITH per_step AS (
    SELECT run_id, step, sum(n) AS n FROM steps WHERE list_contains($ids, run_id) GROUP BY ALL
), seen AS (
    SELECT run_id, step, coalesce(sum(n) OVER (PARTITION BY run_id ORDER BY step
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
    FROM per_step
)
SELECT run_id, {bucket("step")} AS bucket, min(before)::DOUBLE AS x FROM seen GROUP BY ALL
"""


def many_run_series(cur: duckdb.DuckDBPyConnection, run_ids: Sequence[str], metric: str,
                    x_axis: XAxis, width: int) -> dict[str, dict[str, list[Point]]]:
    """run_id -> grp -> points of a per-step group metric (BUCKET_COLUMN) on the step or
    samples axis, for every run in two statements (three on samples) whatever their number."""
    ids = list(run_ids)
    span = steps_span(cur, ids)
    params = {"ids": ids, "width": max(1, min(width, span)), "span": span}
    rows = cur.sql(many_buckets_sql(BUCKET_COLUMN[metric]), params=params).fetchall()
    seen: dict[tuple[str, int], float] = {}
    if x_axis == "samples":
        seen = {(r, b): x for r, b, x in cur.sql(MANY_SAMPLES_SQL, params=params).fetchall()}
    step_of = span / params["width"]
    out: dict[str, dict[str, list[Point]]] = {r: {} for r in run_ids}
    for r, grp, b, v in rows:
        x = seen.get((r, b)) if x_axis == "samples" else float(b) * step_of
        if grp in GROUPS and x is not None and v is not None and math.isfinite(v):
            out[r].setdefault(grp, []).append((x, float(v)))
    return {r: {g: sorted(p) for g, p in groups.items()} for r, groups in out.items()}


# ==== one run's classes ===========================================================================
# A line per class, read by data/curves.py's class_curves: the run screen's per-class rows, over
# the store's class_buckets (steps) and class_results (epochs).

CLASSES_SQL = """
SELECT class_id, coalesce(class_name, class_id::VARCHAR), grp FROM classes
WHERE run_id = $run ORDER BY rank, class_id
"""


def class_series(cur: duckdb.DuckDBPyConnection, run_id: str, metric: str, x_axis: XAxis,
                 width: int) -> list[tuple[int, str, str, list[Point]]]:
    """(class_id, class name, its group, its (x, value) points) of each class of the run,
    largest class first; empty when `metric` has no per-class curve (CLASS_METRICS)."""
    if metric not in CLASS_METRICS:
        return []
    resolution = "epoch" if x_axis == "epoch" else "step"
    params = _params(cur, run_id, width, resolution)
    curves = class_curves(cur, run_id, width, metric, resolution)
    xs = _bucket_x(cur, params, x_axis)
    out = []
    for class_id, name, grp in cur.sql(CLASSES_SQL, params={"run": run_id}).fetchall():
        pts = [(x, float(v)) for b, v in enumerate(curves.get(int(class_id), []))
               if v is not None and (x := xs(b)) is not None]
        out.append((int(class_id), str(name), str(grp), pts))
    return out


def class_lines(run: RunSeries, classes: list[tuple[int, str, str, list[Point]]]
                ) -> list[ChartLine]:
    return [ChartLine(name, grp, (run.run_id,), [p[0] for p in pts], [p[1] for p in pts],
                      class_id=class_id) for class_id, name, grp, pts in classes if pts]


def load_chart(cur: duckdb.DuckDBPyConnection, run_ids: Sequence[str], metric: str,
               x_axis: XAxis, width: int, pool: bool = True, by_class: bool = False
               ) -> ChartData:
    """`metric` of each run at `width` buckets on `x_axis`, and the lines to draw (seeds of one
    setting pooled when `pool`; with `by_class`, one run's classes instead of its groups, when
    the metric has per-class curves)."""
    names = run_names(cur, run_ids)
    if by_class and len(run_ids) == 1 and metric in CLASS_METRICS:
        run = RunSeries(run_ids[0], *names.get(run_ids[0], (run_ids[0], run_ids[0])), {})
        lines = class_lines(run, class_series(cur, run.run_id, metric, x_axis, width))
        return ChartData(metric, x_axis, width, [run], lines, pool, by_class=True)
    if metric in BUCKET_COLUMN and x_axis != "epoch":
        series = many_run_series(cur, run_ids, metric, x_axis, width)
    else:
        series = {r: run_series(cur, r, metric, x_axis, width) for r in run_ids}
    runs = [RunSeries(r, *names.get(r, (r, r)), series.get(r, {})) for r in run_ids]
    return ChartData(metric, x_axis, width, runs, chart_lines(runs, pool), pool)


# ==== lines: one per run and group, or per setting and group ======================================

def chart_lines(runs: list[RunSeries], pool: bool) -> list[ChartLine]:
    """The lines to draw, in run order; with `pool`, the runs of one setting become one line per
    group (mean over the seeds, band from their min to their max)."""
    bunches: dict[str, list[RunSeries]] = {}
    for r in runs:
        bunches.setdefault(r.setting if pool else r.run_id, []).append(r)
    lines = []
    for bunch in bunches.values():
        for grp in GROUPS:
            if len(bunch) == 1:
                pts = bunch[0].groups.get(grp, [])
                lines.append(ChartLine(bunch[0].name, grp, (bunch[0].run_id,),
                                       [p[0] for p in pts], [p[1] for p in pts]))
            else:
                lines.append(pooled_line(bunch, grp))
    return [ln for ln in lines if ln.x]


def pooled_line(bunch: list[RunSeries], grp: str) -> ChartLine:
    """The seeds' mean at each x where any of them has a point, and their min and max there."""
    at: dict[float, list[float]] = {}
    for r in bunch:
        for x, v in r.groups.get(grp, []):
            at.setdefault(x, []).append(v)
    xs = sorted(at)
    return ChartLine(f"{bunch[0].name} ({len(bunch)} seeds)", grp,
                     tuple(r.run_id for r in bunch), xs,
                     [sum(at[x]) / len(at[x]) for x in xs],
                     [min(at[x]) for x in xs], [max(at[x]) for x in xs])


def value_at(line: ChartLine, x: float) -> tuple[float, float | None, float | None] | None:
    """The line's last point at or before `x`: (mean, band low, band high); None before its
    first point."""
    i = _last_at_or_before(line.x, x)
    if i is None:
        return None
    return (line.y[i], line.lo[i] if line.lo else None, line.hi[i] if line.hi else None)


def _last_at_or_before(xs: list[float], x: float) -> int | None:
    import bisect

    i = bisect.bisect_right(xs, x + 1e-9) - 1
    return i if i >= 0 else None


def metric_label(metric: str) -> str:
    return METRIC[metric].label
