"""One run's curves, downsampled in DuckDB to the width they are drawn at.

Steps (or epochs) are bucketed with `floor(step * $width / $span)`, so a 20,000-step run never
reaches Python as 20,000 rows. Every accuracy, loss and confidence comes from the store's semantic
layer (imbtui/store/semantic.py): per class, the bucket's sums divided (class_buckets,
class_results); per group, the mean over the group's classes (group_buckets, group_results), the
definition every command uses. Values go in as DuckDB parameters (`$run`, `$width`, `$span`); only
the axis column (`step` or `epoch`) is written into the SQL text, by the functions below.
No Textual here: these run in thread workers, benchmarks and tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import duckdb
import polars as pl

from imbtui.queries import get_query
from imbtui.tui.data.forgetting import forgetting_counts
from imbtui.tui.data.metrics import METRICS, Series, forward_fill

Axis = Literal["step", "epoch"]


@dataclass
class RunCurves:
    """Everything the run screen draws, at one width and resolution."""

    run_id: str
    resolution: str
    width: int
    meta: dict[str, Any]
    groups: dict[str, dict[str, Series]]          # metric -> grp -> series
    classes: pl.DataFrame                         # per class: counts, rank, final accuracies
    class_curves: dict[int, Series] = field(default_factory=dict)
    class_metric: str = "train_acc"
    stage2: str | None = None      # the second stage's name (the `stages` view), None without
    stage2_at: float | None = None  # where it begins, as a fraction of the x-axis
    posthoc: list[dict[str, Any]] = field(default_factory=list)  # posthoc_adjustment's rows
    lenses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # lens_finals


# ==== SQL fragments and statements ================================================================

def bucket(column: str) -> str:
    """SQL for the bucket `column` (a step or an epoch, maybe table-qualified) falls in: one of
    `$width` equal slices of `$span`, the last one taking anything at or past the end."""
    return f"least(floor({column} * $width / $span), $width - 1)::BIGINT"


# The classifier-row gradient split (steps.grad_pos / grad_neg) summed over the rows that carry it:
# a run recorded without the split stores NaN (older parts: NULL), which would poison a sum.
GRAD_SPLIT = ("sum(s.grad_pos) FILTER (WHERE isfinite(s.grad_pos + s.grad_neg)) AS g_pos, "
              "sum(s.grad_neg) FILTER (WHERE isfinite(s.grad_pos + s.grad_neg)) AS g_neg")

STEP_GROUP_SQL = f"""
WITH per_step AS (
    SELECT s.step, c.grp, sum(s.n) AS n, sum(s.pred_count) AS pred_count,
           sqrt(sum(s.grad_norm * s.grad_norm)) AS grad, {GRAD_SPLIT}
    FROM steps s JOIN classes c ON c.run_id = s.run_id AND c.class_id = s.class_id
    WHERE s.run_id = $run AND c.run_id = $run
    GROUP BY s.step, c.grp
), b AS (
    SELECT grp, {bucket("step")} AS bucket, sum(n) AS n,
           sum(pred_count) AS pred_count, avg(grad) AS grad,
           sum(g_pos) AS g_pos, sum(g_neg) AS g_neg
    FROM per_step GROUP BY ALL
)
SELECT b.grp, b.bucket, g.acc AS train_acc, g.loss, g.p_true AS confidence, g.margin,
       b.grad AS grad_norm,
       b.pred_count / nullif(sum(b.n) OVER (PARTITION BY b.bucket), 0) AS pred_share,
       b.g_pos / nullif(b.g_pos + b.g_neg, 0) AS grad_own
FROM b LEFT JOIN group_buckets($run, $width, $span) g USING (grp, bucket)
ORDER BY b.grp, b.bucket
"""

# Per epoch (the eval passes' rows), bucketed on the epoch axis.
EPOCH_STEPS_SQL = f"""
WITH per_step AS (
    SELECT s.epoch, s.step, c.grp, sum(s.n) AS n, sum(s.pred_count) AS pred_count,
           sqrt(sum(s.grad_norm * s.grad_norm)) AS grad, sum(s.margin_sum) AS margin_sum,
           {GRAD_SPLIT}
    FROM steps s JOIN classes c ON c.run_id = s.run_id AND c.class_id = s.class_id
    WHERE s.run_id = $run AND c.run_id = $run
    GROUP BY ALL
), b AS (
    SELECT grp, {bucket("epoch")} AS bucket, sum(n) AS n,
           sum(pred_count) AS pred_count, avg(grad) AS grad, sum(margin_sum) AS margin_sum,
           sum(g_pos) AS g_pos, sum(g_neg) AS g_neg
    FROM per_step GROUP BY ALL
)
SELECT grp, bucket, grad AS grad_norm, margin_sum / nullif(n, 0) AS margin,
       pred_count / nullif(sum(n) OVER (PARTITION BY bucket), 0) AS pred_share,
       g_pos / nullif(g_pos + g_neg, 0) AS grad_own
FROM b ORDER BY grp, bucket
"""


def epoch_group_sql(axis: Axis) -> str:
    """Per group and split: accuracy, loss and confidence (group_results) and the classifier and
    feature norms of the eval passes, each epoch's point placed on `axis`."""
    return f"""
WITH g AS (
    SELECT grp, split, {bucket(axis)} AS bucket,
           avg(acc) AS acc, avg(loss) AS loss, avg(p_true) AS confidence
    FROM group_results WHERE run_id = $run AND grp <> 'all'
    GROUP BY ALL
), norms AS (
    SELECT c.grp, e.split, {bucket("e." + axis)} AS bucket,
           avg(e.weight_norm) AS weight_norm,
           sum(e.feature_norm * e.n) / nullif(sum(e.n) FILTER (WHERE e.feature_norm IS NOT NULL),
                                              0) AS feature_norm
    FROM epochs e JOIN classes c ON c.run_id = e.run_id AND c.class_id = e.class_id
    WHERE e.run_id = $run AND c.run_id = $run
    GROUP BY ALL
)
SELECT * FROM g FULL JOIN norms USING (grp, split, bucket) ORDER BY ALL
"""


def logit_sql(axis: Axis) -> str:
    """Per group: the logit norm and margin of the eval pass over the training set (the
    logit_results view's group rows: means over the group's classes)."""
    return f"""
SELECT grp, {bucket(axis)} AS bucket, avg(logit_norm) AS logit_norm, avg(margin) AS logit_margin
FROM logit_results
WHERE run_id = $run AND split = 'train' AND class_id IS NULL AND grp <> 'all'
GROUP BY ALL ORDER BY ALL
"""


def probe_sql(axis: Axis) -> str:
    """Per group: the gradient probes' full-model norm and cosine to the whole batch."""
    return f"""
SELECT grp, {bucket(axis)} AS bucket, avg(grad_norm) AS probe_grad,
       avg(cos_to_batch) AS probe_cos
FROM probes WHERE run_id = $run GROUP BY ALL ORDER BY ALL
"""


def sharpness_sql(axis: Axis) -> str:
    """Per group: the largest and smallest Hessian eigenvalue of its training loss at the
    recorded epochs (the group_sharpness view, one column pair per group)."""
    return f"""
WITH g AS (
    SELECT epoch, step, unnest(['majority', 'minority']) AS grp,
           unnest([majority_lambda_max, minority_lambda_max]) AS sharpness,
           unnest([majority_lambda_min, minority_lambda_min]) AS curvature_min
    FROM group_sharpness WHERE run_id = $run
)
SELECT grp, {bucket(axis)} AS bucket, avg(sharpness) AS sharpness,
       avg(curvature_min) AS curvature_min
FROM g GROUP BY ALL ORDER BY ALL
"""


def conflict_sql(axis: Axis) -> str:
    """Per group: the mean cosine between its classes' gradients (group_conflict's within-group
    pairs) and its mini-batch gradient's cosine with its whole-set one (direction), per step."""
    return f"""
WITH c AS (
    SELECT grp_a AS grp, step, epoch, cos AS conflict, NULL::DOUBLE AS direction
    FROM group_conflict WHERE run_id = $run AND grp_a = grp_b
    UNION ALL
    SELECT grp, step, epoch, NULL, cos_to_full FROM direction WHERE run_id = $run
)
SELECT grp, {bucket(axis)} AS bucket, avg(conflict) AS conflict, avg(direction) AS direction
FROM c GROUP BY ALL ORDER BY ALL
"""


# Feature geometry, from the eval pass over the training set (geometry rows carry the step the
# epoch ended at, like epochs rows, so a step axis places them where the epochs' points are).
# within_rel leaves out epoch 0: the untrained network's features have no class structure (an order
# of magnitude above the trained epochs' on the default run) and would flatten them on a shared
# axis.
def geometry_sql(axis: Axis) -> str:
    """Per group: mean within/between ratio of its classes, and its classifier rows' cosine."""
    return f"""
WITH nc AS (
    SELECT c.grp, g.epoch, g.step,
           avg(g.within_rel) FILTER (WHERE isfinite(g.within_rel)) AS within_rel
    FROM geometry g JOIN classes c ON c.run_id = g.run_id AND c.class_id = g.class_id
    WHERE g.run_id = $run AND c.run_id = $run AND g.split = 'train' AND g.epoch > 0
    GROUP BY ALL
), wc AS (
    SELECT epoch, step, unnest(['majority', 'minority']) AS grp,
           unnest([w_majority_cos, w_minority_cos]) AS w_cos
    FROM geometry_summary WHERE run_id = $run AND split = 'train'
)
SELECT grp, {bucket(axis)} AS bucket,
       avg(within_rel) AS within_rel, avg(w_cos) FILTER (WHERE isfinite(w_cos)) AS w_cos
FROM nc FULL JOIN wc USING (grp, epoch, step)
GROUP BY ALL ORDER BY ALL
"""


def class_geometry_sql(axis: Axis) -> str:
    """Per class: its within/between ratio (from epoch 1, as for the groups)."""
    return f"""
SELECT class_id, {bucket(axis)} AS bucket,
       avg(within_rel) FILTER (WHERE isfinite(within_rel)) AS within_rel
FROM geometry WHERE run_id = $run AND split = 'train' AND epoch > 0
GROUP BY ALL ORDER BY ALL
"""


FORGET_TABLE = "_imbtui_forget"  # the run's cached forgetting counts, registered for one query


def forget_group_sql(axis: Axis) -> str:
    """Per group: forgetting events over the presentations that have a previous one."""
    return f"""
SELECT c.grp, {bucket("f." + axis)} AS bucket,
       sum(f.forgets) / nullif(sum(f.eligible), 0) AS forgetting
FROM {FORGET_TABLE} f JOIN classes c ON c.class_id = f.class_id AND c.run_id = $run
GROUP BY ALL ORDER BY ALL
"""


def forget_class_sql(axis: Axis) -> str:
    """Per class: forgetting events over the presentations that have a previous one."""
    return f"""
SELECT class_id, {bucket(axis)} AS bucket,
       sum(forgets) / nullif(sum(eligible), 0) AS forgetting
FROM {FORGET_TABLE} GROUP BY ALL ORDER BY ALL
"""


CLASS_STEP_SQL = f"""
WITH b AS (
    SELECT class_id, {bucket("step")} AS bucket, sum(n) AS n,
           sum(pred_count) AS pred_count, avg(grad_norm) AS grad_norm, {GRAD_SPLIT}
    FROM steps s WHERE run_id = $run GROUP BY ALL
)
SELECT b.class_id, b.bucket, k.acc AS train_acc, k.loss, k.p_true AS confidence, b.grad_norm,
       b.pred_count / nullif(sum(b.n) OVER (PARTITION BY b.bucket), 0) AS pred_share,
       b.g_pos / nullif(b.g_pos + b.g_neg, 0) AS grad_own
FROM b LEFT JOIN class_buckets($run, $width, $span) k USING (class_id, bucket)
ORDER BY ALL
"""

CLASS_EPOCH_STEPS_SQL = f"""
WITH b AS (
    SELECT class_id, {bucket("epoch")} AS bucket, sum(n) AS n,
           sum(pred_count) AS pred_count, avg(grad_norm) AS grad_norm, {GRAD_SPLIT}
    FROM steps s WHERE run_id = $run GROUP BY ALL
)
SELECT class_id, bucket, grad_norm, pred_count / nullif(sum(n) OVER (PARTITION BY bucket), 0)
       AS pred_share, g_pos / nullif(g_pos + g_neg, 0) AS grad_own
FROM b ORDER BY ALL
"""


def class_epoch_sql(axis: Axis) -> str:
    """Per class and split: accuracy, loss and confidence (class_results), and the eval passes'
    classifier and feature norms."""
    return f"""
SELECT k.class_id, k.split, {bucket("k." + axis)} AS bucket,
       avg(k.acc) AS acc, avg(k.loss) AS loss, avg(k.p_true) AS confidence,
       avg(e.weight_norm) AS weight_norm, avg(e.feature_norm) AS feature_norm
FROM class_results k
JOIN epochs e USING (run_id, epoch, split, class_id)
WHERE k.run_id = $run GROUP BY ALL ORDER BY ALL
"""


# ==== from rows to series =========================================================================

def _axis(resolution: str) -> Axis:
    """The column a resolution buckets on: `step`, or `epoch` for anything else."""
    return "step" if resolution == "step" else "epoch"


# The x-axis runs to the run's planned total, or further where the record already went past it.
_EPOCH_SPAN_SQL = """
SELECT greatest(coalesce((SELECT max(last_epoch) FROM stages WHERE run_id = $run), 0),
                coalesce((SELECT max(epoch) FROM epochs WHERE run_id = $run), 0))
FROM runs r WHERE r.run_id = $run
"""
# A run's step axis: its planned total, or further where the record went past it (steps recorded
# while run.json's progress lags, a run whose plan was not written). A finished run's step_done is
# the steps it kept, so its record ends there: the Parquet parts are scanned for their last step
# only while some run is unfinished or has no total.
_STEP_PLAN_SQL = """
SELECT coalesce(max(total_steps), 0), coalesce(max(step_done), 0),
       count(*) FILTER (WHERE status = 'finished' AND total_steps IS NOT NULL
                        AND step_done IS NOT NULL)
FROM runs WHERE list_contains($ids, run_id)
"""
_STEP_RECORD_SQL = "SELECT coalesce(max(step) + 1, 0) FROM steps WHERE list_contains($ids, run_id)"


def steps_span(cur: duckdb.DuckDBPyConnection, run_ids: list[str]) -> int:
    """The step axis the runs share: the longest planned total, or further where a record went
    past it (at least 1)."""
    ids = list(run_ids)
    planned, done, closed = cur.sql(_STEP_PLAN_SQL, params={"ids": ids}).fetchall()[0]
    span = max(int(planned), int(done), 1)
    if closed < len(ids):  # a run unfinished, without a plan, or not in `runs` at all
        span = max(span, int(cur.sql(_STEP_RECORD_SQL, params={"ids": ids}).fetchall()[0][0]))
    return span


def _span(cur: duckdb.DuckDBPyConnection, run_id: str, resolution: str) -> int:
    """Length of the x-axis: the run's planned total (a live run's curve grows left to right)."""
    if resolution == "epoch":
        row = cur.sql(_EPOCH_SPAN_SQL, params={"run": run_id}).fetchall()[0]
        return int(row[0] or 0) + 1  # epoch 0 is the untrained network
    return steps_span(cur, [run_id])


def x_span(cur: duckdb.DuckDBPyConnection, run_id: str, resolution: str) -> int:
    """The run's own x-axis length at `resolution` (steps, or epochs + 1)."""
    return _span(cur, run_id, resolution)


def _params(cur: duckdb.DuckDBPyConnection, run_id: str, width: int,
            resolution: str, span: int | None = None) -> dict[str, Any]:
    """`$run`, `$span` and `$width` for one run's curves (never more buckets than points: the
    widget stretches a short series). `span` overrides the run's own axis length."""
    span = span or _span(cur, run_id, resolution)
    return {"run": run_id, "width": max(1, min(width, span)), "span": span}


def _place(rows: list[tuple[Any, ...]], width: int) -> Series:
    """(bucket, value) rows -> a width-long series with gaps where no bucket had data."""
    out: Series = [None] * width
    for b, v in rows:
        if b is not None and 0 <= b < width and v is not None and math.isfinite(v):
            out[int(b)] = float(v)
    return out


def _collect(frame: pl.DataFrame, metrics: tuple[str, ...], width: int,
             into: dict[str, dict[Any, Series]], key: str = "grp", fill: bool = False) -> None:
    """Add `frame`'s series of each of `metrics`, one per value of `key` (a group or a class id),
    to `into`; `fill` carries per-epoch points across a step axis."""
    for grp in frame[key].unique().to_list():
        part = frame.filter(pl.col(key) == grp)
        for m in metrics:
            if m not in part.columns or part[m].null_count() == part.height:
                continue
            series = _place(list(zip(part["bucket"].to_list(), part[m].to_list())), width)
            into.setdefault(m, {})[grp] = forward_fill(series) if fill else series


def _forgetting(cur: duckdb.DuckDBPyConnection, run_id: str, sql: str,
                params: dict[str, Any]) -> pl.DataFrame | None:
    """`sql` (forget_group_sql or forget_class_sql) over the run's cached counts; None if none."""
    counts = forgetting_counts(cur, run_id)
    if counts.height == 0:
        return None
    cur.register(FORGET_TABLE, counts)
    try:
        return cur.sql(sql, params=params).pl()
    finally:
        cur.unregister(FORGET_TABLE)


# ==== what the screens call =======================================================================

def group_curves(cur: duckdb.DuckDBPyConnection, run_id: str, width: int,
                 resolution: str = "step", span: int | None = None
                 ) -> dict[str, dict[str, Series]]:
    """metric -> {'majority': series, 'minority': series}, each `width` buckets long.

    `span`: the x-axis to draw on, in steps (or epochs + 1); by default the run's own. The compare
    screen passes the longest compared run's, so every run is drawn on one scale and a shorter
    run's curves end where its record ends (blank after it)."""
    params = _params(cur, run_id, width, resolution, span)
    width, axis, by_step = params["width"], _axis(resolution), resolution == "step"
    out: dict[str, dict[Any, Series]] = {}
    epochs = cur.sql(epoch_group_sql(axis), params=params).pl()
    if by_step:
        steps = cur.sql(STEP_GROUP_SQL, params=params).pl()
        _collect(steps, ("train_acc", "loss", "confidence", "margin", "grad_norm", "pred_share",
                         "grad_own"), width, out)
    else:
        train = epochs.filter(pl.col("split") == "train").rename({"acc": "train_acc"})
        _collect(train, ("train_acc", "loss", "confidence"), width, out)
        steps = cur.sql(EPOCH_STEPS_SQL, params=params).pl()
        _collect(steps, ("grad_norm", "margin", "pred_share", "grad_own"), width, out)
    test = epochs.filter(pl.col("split") == "test").rename({"acc": "test_acc"})
    _collect(test, ("test_acc",), width, out, fill=by_step)
    train_eval = epochs.filter(pl.col("split") == "train")
    _collect(train_eval, ("weight_norm", "feature_norm"), width, out, fill=by_step)
    logits = cur.sql(logit_sql(axis), params=params).pl()
    _collect(logits, ("logit_norm", "logit_margin"), width, out, fill=by_step)
    probes = cur.sql(probe_sql(axis), params=params).pl()
    _collect(probes, ("probe_grad", "probe_cos"), width, out, fill=False)
    sharpness = cur.sql(sharpness_sql(axis), params=params).pl()
    _collect(sharpness, ("sharpness", "curvature_min"), width, out, fill=by_step)
    conflict = cur.sql(conflict_sql(axis), params=params).pl()
    _collect(conflict, ("conflict", "direction"), width, out, fill=False)
    geometry = cur.sql(geometry_sql(axis), params=params).pl()
    _collect(geometry, ("within_rel", "w_cos"), width, out, fill=by_step)
    forgetting = _forgetting(cur, run_id, forget_group_sql(axis), params)
    if forgetting is not None:
        _collect(forgetting, ("forgetting",), width, out, fill=by_step)
    return {m.key: out[m.key] for m in METRICS if m.key in out}


# Per-class metrics that exist only per epoch (the eval passes), at either resolution.
_EPOCH_ONLY = ("test_acc", "weight_norm", "feature_norm")
# Per-class metrics read from the eval pass over the training set at epoch resolution.
_EVAL_AT_EPOCH = ("train_acc", "loss", "confidence")


def _class_frame(cur: duckdb.DuckDBPyConnection, metric: str, resolution: str,
                 params: dict[str, Any]) -> pl.DataFrame | None:
    """Per class and bucket, a column named `metric` (None: the run recorded nothing for it)."""
    axis = _axis(resolution)
    if metric == "within_rel":
        return cur.sql(class_geometry_sql(axis), params=params).pl()
    if metric == "forgetting":
        return _forgetting(cur, params["run"], forget_class_sql(axis),
                           {"width": params["width"], "span": params["span"]})
    if metric in _EPOCH_ONLY or (resolution == "epoch" and metric in _EVAL_AT_EPOCH):
        frame = cur.sql(class_epoch_sql(axis), params=params).pl()
        split = "test" if metric == "test_acc" else "train"
        return frame.filter(pl.col("split") == split).rename(
            {"acc": metric} if metric.endswith("_acc") else {})
    sql = CLASS_STEP_SQL if resolution == "step" else CLASS_EPOCH_STEPS_SQL
    return cur.sql(sql, params=params).pl()


def class_curves(cur: duckdb.DuckDBPyConnection, run_id: str, width: int, metric: str,
                 resolution: str = "step") -> dict[int, Series]:
    """class_id -> one series of `metric` for that class alone."""
    params = _params(cur, run_id, width, resolution)
    frame = _class_frame(cur, metric, resolution, params)
    # Per-epoch points are carried across a step axis; per-step ones already fill it.
    per_epoch = metric in ("within_rel", "forgetting", *_EPOCH_ONLY)
    out: dict[str, dict[Any, Series]] = {}
    if frame is not None:
        _collect(frame, (metric,), params["width"], out, key="class_id",
                 fill=resolution == "step" and per_epoch)
    return {int(k): v for k, v in out.get(metric, {}).items()}


def class_finals(cur: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Per class, largest first: counts, group, and final-epoch train / test accuracy and gap (the
    generalisation_gap analysis, over the class_results view)."""
    gap = get_query("generalisation_gap")
    return cur.sql(f"""
        WITH g AS ({gap.sql}
        )
        SELECT c.class_id, c.class_name, c.train_count, c.test_count, c.rank, c.grp, c.shot,
               g.train_acc, g.test_acc, g.gap
        FROM classes c LEFT JOIN g ON g.class_id = c.class_id
        WHERE c.run_id = $run
        ORDER BY c.rank, c.class_id""", params={"run": run_id, "runs": [run_id]}).pl()


def run_meta(cur: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any]:
    """The run's row of the `runs` view as a dict ({} when the run is not in the store)."""
    rows = cur.sql("SELECT * FROM runs WHERE run_id = $run", params={"run": run_id}).pl()
    return rows.row(0, named=True) if rows.height else {}


def second_stage(cur: duckdb.DuckDBPyConnection, run_id: str, resolution: str
                 ) -> tuple[str | None, float | None]:
    """The run's second stage (the `stages` view) and where it begins on the x-axis, as a
    fraction of it: its first step over the step span, or its first epoch over the epoch span
    (epoch 0 is the axis' first point); (None, None) for a one-stage run."""
    row = cur.sql("SELECT name, first_step, first_epoch FROM stages WHERE run_id = $run "
                  "AND stage = 2", params={"run": run_id}).fetchall()
    if not row:
        return None, None
    name, first_step, first_epoch = row[0]
    span = _span(cur, run_id, resolution)
    at = (first_step if resolution == "step" else first_epoch) / max(1, span)
    return name, min(1.0, max(0.0, float(at)))


def posthoc_finals(cur: duckdb.DuckDBPyConnection, run_id: str) -> list[dict[str, Any]]:
    """Post-hoc logit adjustment at the run's last evaluated epoch, one row per tau: the
    posthoc_adjustment analysis's rows (plain and adjusted test accuracies, and the gains)."""
    query = get_query("posthoc_adjustment")
    return cur.sql(query.sql, params=query.bind({"runs": [run_id]})).pl().to_dicts()


# The one-number lenses the run screen names under its curves: each named analysis's rows for the
# run (initial_drop: both groups; learning_speed: the group rows; guessing_bias: the untrained
# network's eval pass over the training set, one row as its summary columns are per source).
LENS_QUERIES = {
    "initial_drop": "SELECT grp, change, rose, end_loss FROM q ORDER BY grp",
    "learning_speed": "SELECT grp, auc, spearman_count FROM q WHERE class_id IS NULL ORDER BY grp",
    "guessing_bias": "SELECT top_class, top_share, majority_share, majority_class_share FROM q "
                     "WHERE source = 'train' LIMIT 1",
}


def lens_finals(cur: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """Analysis name -> its rows for the run (LENS_QUERIES), empty where it has none."""
    out = {}
    for name, pick in LENS_QUERIES.items():
        query = get_query(name)
        out[name] = cur.sql(f"WITH q AS ({query.sql}\n) {pick}",
                            params=query.bind({"runs": [run_id]})).pl().to_dicts()
    return out


def load_run(cur: duckdb.DuckDBPyConnection, run_id: str, width: int, resolution: str = "step",
             class_metric: str = "train_acc", class_width: int | None = None) -> RunCurves:
    """Everything the run screen needs, in one worker call."""
    stage2, stage2_at = second_stage(cur, run_id, resolution)
    return RunCurves(run_id=run_id, resolution=resolution, width=width,
                     meta=run_meta(cur, run_id),
                     groups=group_curves(cur, run_id, width, resolution),
                     classes=class_finals(cur, run_id),
                     class_curves=class_curves(cur, run_id, class_width or width, class_metric,
                                               resolution),
                     class_metric=class_metric, stage2=stage2, stage2_at=stage2_at,
                     posthoc=posthoc_finals(cur, run_id), lenses=lens_finals(cur, run_id))
