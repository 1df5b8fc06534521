"""What the terminal app reads from the store, as plain functions over a DuckDB cursor.

No Textual here: every function runs inside a thread worker (or a benchmark, or a test) and returns
plain Python / polars values that a message carries back to the UI thread. Curves are downsampled in
SQL to the width they are drawn at: steps are bucketed with `floor(step * width / span)`, so a
20,000-step run never reaches Python as 20,000 rows. Every accuracy, loss and confidence comes from
the store's semantic layer (imbtui/store/semantic.py): per class, the bucket's sums divided
(class_buckets, class_results); per group, the mean over the group's classes (group_buckets,
group_results), the definition every command uses.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from imbtui.errors import UserError
from imbtui.queries import get_query, used_params
from imbtui.store import QueryError, Store, check_read_only
from imbtui.store.layout import check_run_id, runs_dir

Series = list[float | None]
GROUPS = ("majority", "minority")
MAX_RESULT_ROWS = 1_000_000  # the SQL screen keeps at most this many rows of one result


# ==== metrics =====================================================================================

@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    scale: str  # unit: 0..1 · zero: 0..max · sym: -1..1 · free: min..max (over compared curves)
    help: str
    per_class: bool = True


METRICS: tuple[Metric, ...] = (
    Metric("train_acc", "train accuracy", "unit", "mean over the group's classes of each class's "
           "accuracy: sum(correct) / sum(n) over the bucket's training batches (step; a class "
           "absent from them is left out) or the eval pass over the training set (epoch)"),
    Metric("test_acc", "test accuracy", "unit", "mean over the group's classes of each class's "
           "accuracy on the balanced test set, per epoch"),
    Metric("loss", "train loss", "zero", "mean over the group's classes of each class's mean "
           "cross-entropy on training samples"),
    Metric("confidence", "confidence", "unit", "mean over the group's classes of each class's "
           "mean predicted probability of the true class"),
    Metric("margin", "margin", "free", "mean over the group's classes of each class's mean true "
           "logit minus the best other logit (steps only)"),
    Metric("grad_norm", "gradient norm", "zero", "norm of the gradient of the group's classifier "
           "rows (last layer), mean over the bucket's steps"),
    Metric("grad_own", "own-grad share", "unit", "how much of the group's classifier-row gradient "
           "comes from its own samples: sum(grad_pos) / sum(grad_pos + grad_neg) over the group's "
           "classes and the bucket's steps (grad_pos: the norm of the part from the class's own "
           "samples, grad_neg: from all other samples). 1 = rows only pulled toward their class, "
           "0 = only pushed away by the others'; a ratio of sums like accuracy (the accumulated "
           "pos/neg ratio of EQL v2, as pos / (pos + neg)), so a row whose gradient is tiny does "
           "not weigh as much as one that moves"),
    Metric("pred_share", "prediction share", "unit", "fraction of all predictions that go to the "
           "group's classes (balanced data: its share of classes)"),
    Metric("weight_norm", "classifier norm", "zero", "mean norm of the group's classifier rows "
           "(epochs)"),
    Metric("w_cos", "classifier cos", "sym", "mean pairwise cosine of the group's classifier rows "
           "(geometry_summary.w_majority_cos / w_minority_cos, per epoch): minority collapse "
           "(Fang et al. 2021) shows as the minority's rising toward 1", per_class=False),
    Metric("feature_norm", "feature norm", "zero", "mean penultimate-feature norm of the group's "
           "training samples (epochs)"),
    Metric("within_rel", "within/between", "zero", "each class's within-class variability of "
           "the training features relative to the between-class spread (geometry.within_rel = "
           "tr Sigma_W,c / tr Sigma_B, a trace ratio, not NC1), mean over the group's classes, "
           "per epoch from epoch 1 (the untrained network's is off the scale); falls toward 0 as "
           "the features collapse onto their class means. NC1 itself (Papyan et al. 2020, "
           "Tr(Sigma_W Sigma_B^+)/C) is one number per split, not per group: "
           "geometry_summary.nc1, `imbtui query geometry`"),
    Metric("probe_grad", "model grad norm", "zero", "full-model gradient norm of the group's loss "
           "(gradient probes)", per_class=False),
    Metric("probe_cos", "grad cosine", "sym", "cosine between the group's full-model gradient and "
           "the whole batch's (gradient probes)", per_class=False),
    Metric("forgetting", "forgetting", "zero", "per epoch, the share of the group's training "
           "presentations that are forgetting events (correct at the sample's previous "
           "presentation, wrong now: Toneva et al. 2019, as in queries/memorisation.sql), out of "
           "the presentations that have a previous one (so the first epoch has none)"),
)
METRIC = {m.key: m for m in METRICS}
CLASS_METRICS = tuple(m.key for m in METRICS if m.per_class and m.key not in ("margin",))


def y_range(metric: str, curves: list[Series]) -> tuple[float, float]:
    """The one y-range every compared curve of `metric` is drawn on."""
    scale = METRIC[metric].scale
    if scale == "unit":
        return 0.0, 1.0
    if scale == "sym":
        return -1.0, 1.0
    values = [v for c in curves for v in c if v is not None and math.isfinite(v)]
    if not values:
        return 0.0, 1.0
    hi = max(values)
    lo = 0.0 if scale == "zero" else min(values)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def ema(values: Series, alpha: float) -> Series:
    """Exponential moving average (weight `alpha` on the past); gaps stay gaps."""
    if alpha <= 0:
        return list(values)
    out: Series = []
    acc: float | None = None
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(None)
            continue
        acc = v if acc is None else alpha * acc + (1 - alpha) * v
        out.append(acc)
    return out


def forward_fill(values: Series) -> Series:
    """Carry each point to the right until the next one (per-epoch points on a step axis)."""
    last_seen = max((i for i, v in enumerate(values) if v is not None), default=-1)
    out: Series = []
    cur: float | None = None
    for i, v in enumerate(values):
        cur = v if v is not None else cur
        out.append(cur if i <= last_seen else None)
    return out


def last_value(values: Series) -> float | None:
    return next((v for v in reversed(values) if v is not None), None)


# ==== the store, shared by every worker ===========================================================

class StoreSession:
    """One in-memory DuckDB connection over the store, refreshed by workers, one cursor per query.

    DuckDB cursors share the database but not the frames `register`ed on the parent connection, so
    after each refresh the `runs` frame is copied into a real in-memory table every cursor can see.
    """

    def __init__(self, root: Path, sample: bool = False,
                 scope: tuple[str, ...] | None = None) -> None:
        self.store = Store(root)
        self.root = Path(root)
        self.sample = sample
        self.scope = scope
        self.generation = 0
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._signature: tuple[Any, ...] | None = None

    def refresh(self, force: bool = False) -> int:
        """Rebuild the views when the store changed on disk; returns the data generation."""
        with self._lock:
            sig = self._fingerprint()
            if self._con is not None and not force and sig == self._signature:
                return self.generation
            if self._con is None:
                self._con = duckdb.connect(":memory:")
            self.store.refresh(self._con, run_ids=self.scope)
            self._signature = sig
            self.generation += 1
            return self.generation

    def scoped(self, run_ids: list[str]) -> StoreSession:
        """A session whose views cover only these runs: a run screen's queries then read one
        run's parts, not every run's (on 200 runs x 20,000 steps: ~0.1 s instead of seconds)."""
        return StoreSession(self.root, self.sample, scope=tuple(run_ids))

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def cursor(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self.refresh()
        with self._lock:
            assert self._con is not None
            return self._con.cursor()

    def _fingerprint(self) -> tuple[Any, ...]:
        # mtimes of the runs folder, each run folder, run.json and table folder: a new part, a new
        # run or a heartbeat changes one of them. The minute term re-reads statuses so a run whose
        # heartbeat stopped turns 'crashed' without any file changing.
        stamps: list[Any] = [int(os_time() // 20)]
        base = runs_dir(self.root)
        entries = _scandir(base)
        if self.scope is not None:
            entries = [d for d in entries if d.name in self.scope]
        for d in entries:
            stamps.append((d.name, _mtime(Path(d.path) / "run.json"), d.stat().st_mtime_ns))
            stamps.extend(_mtime(Path(t.path)) for t in _scandir(Path(d.path)))
        return (_mtime(base), *stamps)


def os_time() -> float:
    import time

    return time.time()


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        return sorted((e for e in os.scandir(path) if e.is_dir()), key=lambda e: e.name)
    except OSError:
        return []


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def delete_run(root: Path, run_id: str) -> None:
    """Remove one run folder: renamed to a hidden name first, so readers never see half a run."""
    src = runs_dir(root) / check_run_id(run_id)
    if not src.is_dir():
        raise UserError(f"run {run_id!r} is not in the store any more")
    trash = src.with_name(f".deleting-{run_id}")
    os.replace(src, trash)
    shutil.rmtree(trash, ignore_errors=True)


# ==== the runs table ==============================================================================

def runs_table(cur: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """One row per run: identity, progress and final balanced / majority / minority test accuracy
    (the store's final_results view)."""
    return cur.sql("""
        SELECT r.run_id, r.name, r.status, r.recorded_status, r.dataset, r.profile, r.ratio,
               r.model, r.loss, r.sampler, r.drw, r.method, r.epoch_done, r.epochs, r.step_done,
               r.total_steps,
               r.created_at, r.heartbeat_at, r.message,
               f.test_balanced, f.test_majority, f.test_minority
        FROM runs r LEFT JOIN final_results f USING (run_id)
        ORDER BY r.created_at, r.run_id""").pl()


def quick_runs_table(store: Store) -> pl.DataFrame:
    """The runs table from run.json files alone (no Parquet read): the first frame shows every run
    at once, and the accuracies follow when `runs_table` has read the epochs."""
    frame = store.runs_frame()
    acc = [pl.lit(None, dtype=pl.Float64).alias(c) for c in ("test_balanced", "test_majority",
                                                             "test_minority")]
    return frame.with_columns(acc).sort("created_at", "run_id")


# ==== one run's curves ============================================================================

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


def _span(cur: duckdb.DuckDBPyConnection, run_id: str, resolution: str) -> int:
    """Length of the x-axis: the run's planned total (a live run's curve grows left to right)."""
    if resolution == "epoch":
        row = cur.sql("""SELECT greatest(coalesce(max(r.epochs), 0),
                                    coalesce((SELECT max(epoch) FROM epochs WHERE run_id = $run), 0))
                             FROM runs r WHERE r.run_id = $run""", params={"run": run_id}).fetchall()[0]
        return int(row[0] or 0) + 1  # epoch 0 is the untrained network
    row = cur.sql("""SELECT greatest(coalesce(max(r.total_steps), 0),
                                coalesce((SELECT max(step) + 1 FROM steps WHERE run_id = $run), 0))
                         FROM runs r WHERE r.run_id = $run""", params={"run": run_id}).fetchall()[0]
    return max(1, int(row[0] or 0))


def _place(rows: list[tuple[Any, ...]], width: int) -> Series:
    """(bucket, value) rows -> a width-long series with gaps where no bucket had data."""
    out: Series = [None] * width
    for b, v in rows:
        if b is not None and 0 <= b < width and v is not None and math.isfinite(v):
            out[int(b)] = float(v)
    return out


# The classifier-row gradient split (steps.grad_pos / grad_neg) summed over the rows that carry it:
# a run recorded without the split stores NaN (older parts: NULL), which would poison a sum.
_GRAD_SPLIT = ("sum(s.grad_pos) FILTER (WHERE isfinite(s.grad_pos + s.grad_neg)) AS g_pos, "
               "sum(s.grad_neg) FILTER (WHERE isfinite(s.grad_pos + s.grad_neg)) AS g_neg")

_STEP_GROUP_SQL = """
WITH per_step AS (
    SELECT s.step, c.grp, sum(s.n) AS n, sum(s.pred_count) AS pred_count,
           sqrt(sum(s.grad_norm * s.grad_norm)) AS grad, {split}
    FROM steps s JOIN classes c ON c.run_id = s.run_id AND c.class_id = s.class_id
    WHERE s.run_id = $run AND c.run_id = $run
    GROUP BY s.step, c.grp
), b AS (
    SELECT grp, least(floor(step * $width / $span), $width - 1)::BIGINT AS bucket, sum(n) AS n,
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
""".replace("{split}", _GRAD_SPLIT)

_EPOCH_GROUP_SQL = """
WITH g AS (
    SELECT grp, split, least(floor({axis} * $width / $span), $width - 1)::BIGINT AS bucket,
           avg(acc) AS acc, avg(loss) AS loss, avg(p_true) AS confidence
    FROM group_results WHERE run_id = $run AND grp <> 'all'
    GROUP BY ALL
), norms AS (
    SELECT c.grp, e.split, least(floor(e.{axis} * $width / $span), $width - 1)::BIGINT AS bucket,
           avg(e.weight_norm) AS weight_norm,
           sum(e.feature_norm * e.n) / nullif(sum(e.n) FILTER (WHERE e.feature_norm IS NOT NULL),
                                              0) AS feature_norm
    FROM epochs e JOIN classes c ON c.run_id = e.run_id AND c.class_id = e.class_id
    WHERE e.run_id = $run AND c.run_id = $run
    GROUP BY ALL
)
SELECT * FROM g FULL JOIN norms USING (grp, split, bucket) ORDER BY ALL
"""

_EPOCH_STEPS_SQL = """
WITH per_step AS (
    SELECT s.epoch, s.step, c.grp, sum(s.n) AS n, sum(s.pred_count) AS pred_count,
           sqrt(sum(s.grad_norm * s.grad_norm)) AS grad, sum(s.margin_sum) AS margin_sum,
           {split}
    FROM steps s JOIN classes c ON c.run_id = s.run_id AND c.class_id = s.class_id
    WHERE s.run_id = $run AND c.run_id = $run
    GROUP BY ALL
), b AS (
    SELECT grp, least(floor(epoch * $width / $span), $width - 1)::BIGINT AS bucket, sum(n) AS n,
           sum(pred_count) AS pred_count, avg(grad) AS grad, sum(margin_sum) AS margin_sum,
           sum(g_pos) AS g_pos, sum(g_neg) AS g_neg
    FROM per_step GROUP BY ALL
)
SELECT grp, bucket, grad AS grad_norm, margin_sum / nullif(n, 0) AS margin,
       pred_count / nullif(sum(n) OVER (PARTITION BY bucket), 0) AS pred_share,
       g_pos / nullif(g_pos + g_neg, 0) AS grad_own
FROM b ORDER BY grp, bucket
""".replace("{split}", _GRAD_SPLIT)

_PROBE_SQL = """
SELECT grp, least(floor({axis} * $width / $span), $width - 1)::BIGINT AS bucket, avg(grad_norm) AS probe_grad,
       avg(cos_to_batch) AS probe_cos
FROM probes WHERE run_id = $run GROUP BY ALL ORDER BY ALL
"""


# Feature geometry, from the eval pass over the training set (geometry rows carry the step the
# epoch ended at, like epochs rows, so a step axis places them where the epochs' points are).
# within_rel leaves out epoch 0: the untrained network's features have no class structure (an order
# of magnitude above the trained epochs' on the default run) and would flatten them on a shared axis.
_GEOMETRY_SQL = """
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
SELECT grp, least(floor({axis} * $width / $span), $width - 1)::BIGINT AS bucket,
       avg(within_rel) AS within_rel, avg(w_cos) FILTER (WHERE isfinite(w_cos)) AS w_cos
FROM nc FULL JOIN wc USING (grp, epoch, step)
GROUP BY ALL ORDER BY ALL
"""

_CLASS_GEOMETRY_SQL = """
SELECT class_id, least(floor({axis} * $width / $span), $width - 1)::BIGINT AS bucket,
       avg(within_rel) FILTER (WHERE isfinite(within_rel)) AS within_rel
FROM geometry WHERE run_id = $run AND split = 'train' AND epoch > 0
GROUP BY ALL ORDER BY ALL
"""

# Forgetting events (Toneva et al. 2019): the store's sample_presentations view marks each one (a
# sample's presentations in step order, a wrong one first within a step; an event where the
# previous one was correct and this one is wrong). The window sorts every presentation of the run (2.5 M rows:
# 0.2-0.4 s on two cores), so its per (class, epoch) counts are kept: see `forgetting_counts`.
_FORGET_COUNTS_SQL = """
SELECT class_id, epoch, max(step) + 1 AS step,
       count(*) FILTER (WHERE forgotten) AS forgets,
       count(*) FILTER (WHERE presentation > 1) AS eligible
FROM sample_presentations WHERE run_id = $run
GROUP BY class_id, epoch
"""

_FORGET_GROUP_SQL = """
SELECT c.grp, least(floor(f.{axis} * $width / $span), $width - 1)::BIGINT AS bucket,
       sum(f.forgets) / nullif(sum(f.eligible), 0) AS forgetting
FROM _imbtui_forget f JOIN classes c ON c.class_id = f.class_id AND c.run_id = $run
GROUP BY ALL ORDER BY ALL
"""

_FORGET_CLASS_SQL = """
SELECT class_id, least(floor({axis} * $width / $span), $width - 1)::BIGINT AS bucket,
       sum(forgets) / nullif(sum(eligible), 0) AS forgetting
FROM _imbtui_forget GROUP BY ALL ORDER BY ALL
"""

_FORGET_CACHE: dict[tuple[str, int], pl.DataFrame] = {}
_FORGET_CACHE_SIZE = 64
_FORGET_LOCK = threading.Lock()


def forgetting_counts(cur: duckdb.DuckDBPyConnection, run_id: str) -> pl.DataFrame:
    """Per (class_id, epoch): forgetting events, presentations that have a previous one, and the
    step the epoch's presentations end at.

    Kept per run and per listing of the `samples` view: the view names every part it reads, and
    parts never change once named, so the same listing means the same rows. A finished run is
    sorted once; a live run again only when a new part lands."""
    view = cur.sql("SELECT sql FROM duckdb_views() WHERE view_name = 'samples'").fetchall()
    key = (run_id, hash(view[0][0] if view else ""))
    with _FORGET_LOCK:
        hit = _FORGET_CACHE.get(key)
    if hit is not None:
        return hit
    frame = cur.sql(_FORGET_COUNTS_SQL, params={"run": run_id}).pl()
    with _FORGET_LOCK:
        while len(_FORGET_CACHE) >= _FORGET_CACHE_SIZE:
            _FORGET_CACHE.pop(next(iter(_FORGET_CACHE)))
        _FORGET_CACHE[key] = frame
    return frame


def _forgetting(cur: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any],
                axis: str) -> pl.DataFrame | None:
    """`sql` (the group or class form) over the run's cached counts, bucketed in DuckDB."""
    counts = forgetting_counts(cur, params["run"])
    if counts.height == 0:
        return None
    cur.register("_imbtui_forget", counts)
    try:
        sql = sql.format(axis=axis)
        return cur.sql(sql, params={k: v for k, v in params.items() if f"${k}" in sql}).pl()
    finally:
        cur.unregister("_imbtui_forget")


def _collect(frame: pl.DataFrame, metrics: tuple[str, ...], width: int,
             into: dict[str, dict[str, Series]], key: str = "grp",
             fill: bool = False) -> None:
    for grp in frame[key].unique().to_list():
        part = frame.filter(pl.col(key) == grp)
        for m in metrics:
            if m not in part.columns or part[m].null_count() == part.height:
                continue
            series = _place(list(zip(part["bucket"].to_list(), part[m].to_list())), width)
            into.setdefault(m, {})[grp] = forward_fill(series) if fill else series


def group_curves(cur: duckdb.DuckDBPyConnection, run_id: str, width: int,
                 resolution: str = "step") -> dict[str, dict[str, Series]]:
    """metric -> {'majority': series, 'minority': series}, each `width` buckets long."""
    span = _span(cur, run_id, resolution)
    width = max(1, min(width, span))  # never more buckets than points: the widget stretches
    params = {"run": run_id, "width": width, "span": span}
    out: dict[str, dict[str, Series]] = {}
    axis = "step" if resolution == "step" else "epoch"
    epochs = cur.sql(_EPOCH_GROUP_SQL.format(axis=axis), params=params).pl()
    if resolution == "step":
        steps = cur.sql(_STEP_GROUP_SQL, params=params).pl()
        _collect(steps, ("train_acc", "loss", "confidence", "margin", "grad_norm", "pred_share",
                         "grad_own"), width, out)
    else:
        train = epochs.filter(pl.col("split") == "train").rename({"acc": "train_acc"})
        _collect(train, ("train_acc", "loss", "confidence"), width, out)
        steps = cur.sql(_EPOCH_STEPS_SQL, params=params).pl()
        _collect(steps, ("grad_norm", "margin", "pred_share", "grad_own"), width, out)
    test = epochs.filter(pl.col("split") == "test").rename({"acc": "test_acc"})
    _collect(test, ("test_acc",), width, out, fill=resolution == "step")
    train_eval = epochs.filter(pl.col("split") == "train")
    _collect(train_eval, ("weight_norm", "feature_norm"), width, out, fill=resolution == "step")
    probes = cur.sql(_PROBE_SQL.format(axis=axis), params=params).pl()
    _collect(probes, ("probe_grad", "probe_cos"), width, out, fill=False)
    geometry = cur.sql(_GEOMETRY_SQL.format(axis=axis), params=params).pl()
    _collect(geometry, ("within_rel", "w_cos"), width, out, fill=resolution == "step")
    forgetting = _forgetting(cur, _FORGET_GROUP_SQL, params, axis)
    if forgetting is not None:
        _collect(forgetting, ("forgetting",), width, out, fill=resolution == "step")
    return {m.key: out[m.key] for m in METRICS if m.key in out}


_CLASS_STEP_SQL = """
WITH b AS (
    SELECT class_id, least(floor(step * $width / $span), $width - 1)::BIGINT AS bucket, sum(n) AS n,
           sum(pred_count) AS pred_count, avg(grad_norm) AS grad_norm, {split}
    FROM steps s WHERE run_id = $run GROUP BY ALL
)
SELECT b.class_id, b.bucket, k.acc AS train_acc, k.loss, k.p_true AS confidence, b.grad_norm,
       b.pred_count / nullif(sum(b.n) OVER (PARTITION BY b.bucket), 0) AS pred_share,
       b.g_pos / nullif(b.g_pos + b.g_neg, 0) AS grad_own
FROM b LEFT JOIN class_buckets($run, $width, $span) k USING (class_id, bucket)
ORDER BY ALL
""".replace("{split}", _GRAD_SPLIT)

_CLASS_EPOCH_SQL = """
SELECT k.class_id, k.split, least(floor(k.{axis} * $width / $span), $width - 1)::BIGINT AS bucket,
       avg(k.acc) AS acc, avg(k.loss) AS loss, avg(k.p_true) AS confidence,
       avg(e.weight_norm) AS weight_norm, avg(e.feature_norm) AS feature_norm
FROM class_results k
JOIN epochs e USING (run_id, epoch, split, class_id)
WHERE k.run_id = $run GROUP BY ALL ORDER BY ALL
"""

_CLASS_EPOCH_STEPS_SQL = """
WITH b AS (
    SELECT class_id, least(floor(epoch * $width / $span), $width - 1)::BIGINT AS bucket, sum(n) AS n,
           sum(pred_count) AS pred_count, avg(grad_norm) AS grad_norm, {split}
    FROM steps s WHERE run_id = $run GROUP BY ALL
)
SELECT class_id, bucket, grad_norm, pred_count / nullif(sum(n) OVER (PARTITION BY bucket), 0)
       AS pred_share, g_pos / nullif(g_pos + g_neg, 0) AS grad_own
FROM b ORDER BY ALL
""".replace("{split}", _GRAD_SPLIT)


def class_curves(cur: duckdb.DuckDBPyConnection, run_id: str, width: int, metric: str,
                 resolution: str = "step") -> dict[int, Series]:
    """class_id -> one series of `metric` for that class alone."""
    span = _span(cur, run_id, resolution)
    width = max(1, min(width, span))
    params = {"run": run_id, "width": width, "span": span}
    axis = "step" if resolution == "step" else "epoch"
    out: dict[str, dict[int, Series]] = {}
    epoch_metric = metric in ("test_acc", "weight_norm", "feature_norm") or (
        resolution == "epoch" and metric in ("train_acc", "loss", "confidence"))
    fill = resolution == "step"  # per-epoch points carried across a step axis
    if metric in ("within_rel", "forgetting"):
        frame = (cur.sql(_CLASS_GEOMETRY_SQL.format(axis=axis), params=params).pl()
                 if metric == "within_rel" else _forgetting(cur, _FORGET_CLASS_SQL, params, axis))
        if frame is not None:
            _collect(frame, (metric,), width, out, key="class_id",  # type: ignore[arg-type]
                     fill=fill)
    elif epoch_metric:
        frame = cur.sql(_CLASS_EPOCH_SQL.format(axis=axis), params=params).pl()
        split = "test" if metric == "test_acc" else "train"
        frame = frame.filter(pl.col("split") == split).rename({"acc": metric} if metric.endswith(
            "_acc") else {})
        _collect(frame, (metric,), width, out, key="class_id",  # type: ignore[arg-type]
                 fill=fill)
    else:
        sql = _CLASS_STEP_SQL if resolution == "step" else _CLASS_EPOCH_STEPS_SQL
        frame = cur.sql(sql, params=params).pl()
        _collect(frame, (metric,), width, out, key="class_id")  # type: ignore[arg-type]
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
    rows = cur.sql("SELECT * FROM runs WHERE run_id = $run", params={"run": run_id}).pl()
    return rows.row(0, named=True) if rows.height else {}


def load_run(cur: duckdb.DuckDBPyConnection, run_id: str, width: int, resolution: str = "step",
             class_metric: str = "train_acc", class_width: int | None = None) -> RunCurves:
    """Everything the run screen needs, in one worker call."""
    return RunCurves(run_id=run_id, resolution=resolution, width=width,
                     meta=run_meta(cur, run_id),
                     groups=group_curves(cur, run_id, width, resolution),
                     classes=class_finals(cur, run_id),
                     class_curves=class_curves(cur, run_id, class_width or width, class_metric,
                                               resolution),
                     class_metric=class_metric)


# ==== the SQL screen ==============================================================================

_EXPLAIN_RE = re.compile(r"^\s*EXPLAIN\b(\s+ANALY[SZ]E\b)?(\s*\([^)]*\))?", re.IGNORECASE)


def check_query(cur: duckdb.DuckDBPyConnection, text: str) -> list[Any]:
    """The store's read-only check, plus the statement under an EXPLAIN: `EXPLAIN ANALYZE COPY ...
    TO 'file'` parses as an EXPLAIN yet executes the COPY, which could overwrite a stored part."""
    statements = check_read_only(cur, text)
    for st in statements:
        if st.type.name == "EXPLAIN":
            inner = _EXPLAIN_RE.sub("", st.query, count=1)
            if not inner.strip():
                raise QueryError("EXPLAIN of what? add a SELECT")
            check_query(cur, inner)
    return statements


@dataclass
class QueryResult:
    sql: str
    frame: pl.DataFrame
    seconds: float
    truncated: bool


def run_query(cur: duckdb.DuckDBPyConnection, text: str,
              params: dict[str, Any] | None = None) -> QueryResult:
    """Run a read-only query; keeps at most MAX_RESULT_ROWS rows. `params` binds `$name`s."""
    import time

    t0 = time.perf_counter()
    statements = check_query(cur, text)
    last = statements[-1].query
    missing = sorted(used_params(last) - set(params or {}))
    if missing:
        raise QueryError(f"no value for parameter ${missing[0]} (write a literal in its place)")
    bound = {k: v for k, v in (params or {}).items() if k in used_params(last)}
    try:
        rel = cur.sql(last, params=bound or None)
        frame = rel.limit(MAX_RESULT_ROWS + 1).pl() if rel is not None else pl.DataFrame()
    except duckdb.Error as exc:
        raise QueryError(str(exc).strip().splitlines()[0] if str(exc).strip() else
                         exc.__class__.__name__) from None
    truncated = frame.height > MAX_RESULT_ROWS
    return QueryResult(text, frame.head(MAX_RESULT_ROWS), time.perf_counter() - t0, truncated)


def export_frame(frame: pl.DataFrame, path: Path, store_root: Path) -> Path:
    """Write a result as CSV or Parquet (by suffix); never inside the run store."""
    path = path.expanduser().resolve()
    root = store_root.resolve()
    if path == root or root in path.parents:
        raise UserError(f"refusing to write into the run store ({root})")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise UserError(f"export to .csv or .parquet, not {suffix or 'a file without suffix'!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    return path
