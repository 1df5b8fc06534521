"""The chart view's data: one metric of one or more runs, bucketed in DuckDB to the chart's width.

Each run's curve comes from the same SQL the run screen's sparklines read (data/curves.py, over the
semantic layer), for the one metric drawn, so the chart and the row it was opened from show the
same numbers; at most `width` rows per run and group reach Python, whatever the run's length.

The x-axis is the step, the epoch, or the training samples seen before the step (the running sum
of `steps.n`, also bucketed in DuckDB). Runs whose configs differ only in their seeds (`setting`)
can be pooled into one line per group: the mean over the seeds at each point and the band from
their minimum to their maximum. No Textual here: these run in thread workers, benchmarks and tests.
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
    epoch_group_sql,
    forget_group_sql,
    geometry_sql,
    logit_sql,
    probe_sql,
)
from imbtui.tui.data.metrics import GROUPS, METRIC

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


@dataclass
class ChartData:
    metric: str
    x_axis: XAxis
    width: int
    runs: list[RunSeries]
    lines: list[ChartLine] = field(default_factory=list)
    pooled: bool = False


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
# The per-step group metrics of every run come from one statement over the group_buckets macro
# (the definition the run screen's STEP_GROUP_SQL joins), run by run through a LATERAL join: on
# 8 runs x 20,000 steps a few times faster than a statement per run.

BUCKET_COLUMN = {"train_acc": "acc", "loss": "loss", "confidence": "p_true", "margin": "margin"}

# Each run's step span as data/curves.py's _STEP_SPAN_SQL takes it: its planned total steps, or
# further where the record already went past it.
SPANS_SQL = """
SELECT r.run_id, greatest(coalesce(r.total_steps, 0), coalesce(max(s.step) + 1, 0), 1) AS span
FROM runs r LEFT JOIN steps s ON s.run_id = r.run_id
WHERE list_contains($ids, r.run_id)
GROUP BY r.run_id, r.total_steps
"""

_PARAMS_CTE = """p AS (
    SELECT unnest($ids) AS run_id, unnest($spans) AS span, unnest($widths) AS width
)"""


def many_buckets_sql(column: str) -> str:
    return f"""
WITH {_PARAMS_CTE}
SELECT p.run_id, g.grp, g.bucket, g.{column} AS value
FROM p, LATERAL group_buckets(p.run_id, p.width, p.span) g
"""


MANY_SAMPLES_SQL = f"""
WITH {_PARAMS_CTE}, per_step AS (
    SELECT run_id, step, sum(n) AS n FROM steps WHERE list_contains($ids, run_id) GROUP BY ALL
), seen AS (
    SELECT run_id, step, coalesce(sum(n) OVER (PARTITION BY run_id ORDER BY step
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
    FROM per_step
)
SELECT s.run_id, least(floor(s.step * p.width / p.span), p.width - 1)::BIGINT AS bucket,
       min(s.before)::DOUBLE AS x
FROM seen s JOIN p USING (run_id) GROUP BY ALL
"""


def many_run_series(cur: duckdb.DuckDBPyConnection, run_ids: Sequence[str], metric: str,
                    x_axis: XAxis, width: int) -> dict[str, dict[str, list[Point]]]:
    """run_id -> grp -> points of a per-step group metric (BUCKET_COLUMN) on the step or
    samples axis, for every run in three statements whatever their number."""
    spans = dict(cur.sql(SPANS_SQL, params={"ids": list(run_ids)}).fetchall())
    ids = [r for r in run_ids if r in spans]
    params = {"ids": ids, "spans": [int(spans[r]) for r in ids],
              "widths": [max(1, min(width, int(spans[r]))) for r in ids]}
    shape = {r: (w, int(spans[r])) for r, w in zip(ids, params["widths"])}
    rows = cur.sql(many_buckets_sql(BUCKET_COLUMN[metric]), params=params).fetchall()
    seen: dict[tuple[str, int], float] = {}
    if x_axis == "samples":
        seen = {(r, b): x for r, b, x in cur.sql(MANY_SAMPLES_SQL, params=params).fetchall()}
    out: dict[str, dict[str, list[Point]]] = {r: {} for r in run_ids}
    for r, grp, b, v in rows:
        w, span = shape[r]
        x = seen.get((r, b)) if x_axis == "samples" else float(b) * span / w
        if grp in GROUPS and x is not None and v is not None and math.isfinite(v):
            out[r].setdefault(grp, []).append((x, float(v)))
    return {r: {g: sorted(p) for g, p in groups.items()} for r, groups in out.items()}


def load_chart(cur: duckdb.DuckDBPyConnection, run_ids: Sequence[str], metric: str,
               x_axis: XAxis, width: int, pool: bool = True) -> ChartData:
    """`metric` of each run at `width` buckets on `x_axis`, and the lines to draw (seeds of one
    setting pooled when `pool`)."""
    names = run_names(cur, run_ids)
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
