"""The motivating study's three findings, measured on the given runs.

(1) With balanced data all classes are learned alike; with imbalance they are not: the spread of the
    classes' learning onsets (first epoch whose train accuracy reaches a threshold).
(2) Early on the network underfits the minority: minority vs majority train accuracy over the first
    epochs, and how many epochs later the minority classes reach the threshold (onset lag); each
    group's loss change over the first K training steps and whether the minority's rose while the
    majority's fell (the initial drop, Francazi et al. 2023); and each group's learning speed, the
    area under its classes' train accuracy curves, with the correlation of a class's area with the
    log of its training count.
(3) Later it memorises the minority without generalising: the minority's final train - test gap
    against the majority's.

Every number comes from the named analyses learning_onset, group_curves, initial_drop (at its
default K and window), learning_speed and generalisation_gap, so `imbtui query` shows the rows
behind any cell of the report. A setting run with several seeds is shown as mean ± half-width of the
95 % t-interval (n = seeds): DuckDB computes both, with the store's `ci95` macro
(imbtui/store/semantic.py), as the named queries method_comparison and ratio_sweep do.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import duckdb
import polars as pl


class Queryable(Protocol):
    def sql(self, query: str, params: dict[str, Any] | None = None) -> pl.DataFrame: ...
    def query(self, name: str, **params: Any) -> pl.DataFrame: ...
    def connection(self) -> duckdb.DuckDBPyConnection: ...


@dataclass(frozen=True)
class Row:
    """One line of the report table: a finding's heading (key None) or one measured number."""

    label: str
    key: str | None = None
    fmt: str = "{:.3f}"


YES_NO = "yes/no"  # a Row's fmt for a flag: "yes" or "no"; over seeds "k/n seeds"


def drop_params() -> tuple[int, int]:
    """K and the window of the report's initial-drop rows: the initial_drop analysis's defaults
    of `steps` and `window`."""
    from imbtui.queries import get_query

    query = get_query("initial_drop")
    steps, window = query.param("steps"), query.param("window")
    assert steps is not None and window is not None
    return int(steps.default), int(window.default)


def rows(threshold: float, early: int) -> list[Row]:
    span = "epoch 1" if early == 1 else f"epochs 1-{early}"
    first = f"first {drop_params()[0]} steps"
    return [
        Row("(1) classes learned alike?"),
        Row("onset spread, max - min (epochs)", "onset_spread", "{:.0f}"),
        Row(f"classes never at train acc >= {threshold:g}", "unlearned", "{:.0f}"),
        Row("(2) minority underfit early?"),
        Row(f"train acc majority, {span}", "early_majority"),
        Row(f"train acc minority, {span}", "early_minority"),
        Row("onset lag, minority - majority (epochs)", "onset_lag", "{:+.1f}"),
        Row(f"loss change, {first}, majority", "loss_change_majority", "{:+.3f}"),
        Row(f"loss change, {first}, minority", "loss_change_minority", "{:+.3f}"),
        Row(f"minority loss rose, {first}", "minority_loss_rose", YES_NO),
        Row("learning speed (train acc AUC), majority", "auc_majority"),
        Row("learning speed (train acc AUC), minority", "auc_minority"),
        Row("Pearson r, ln(train count) vs AUC", "auc_pearson_log_count", "{:+.3f}"),
        Row("(3) memorised, not generalised?"),
        Row("train - test gap, majority", "gap_majority", "{:+.3f}"),
        Row("train - test gap, minority", "gap_minority", "{:+.3f}"),
        Row("excess gap, minority - majority", "excess_gap", "{:+.3f}"),
    ]


# The one number per finding that `changes` follows across ratios and methods.
HEADLINES = {"onset_spread": "onset spread (epochs)", "early_gap": "early train acc gap, "
             "majority - minority", "excess_gap": "excess train - test gap of the minority"}

SETTING = ["dataset", "profile", "model", "epochs"]  # what must match for runs to be compared
# one column of the report: the runs of one setting, ratio and method, i.e. its seeds
COLUMN = SETTING + ["ratio", "method"]
# the columns of the runs view that name a run in the report (schema.RUN_COLUMNS has them all)
IDENTITY = ["run_id", "name", "status", "dataset", "profile", "ratio", "model", "loss",
            "sampler", "drw", "seed", "method"]


# ==== measuring ===================================================================================

def findings(store: Queryable, runs: Sequence[str] = (), threshold: float = 0.5,
             early: int = 2) -> pl.DataFrame:
    """One row per run with evaluated epochs: the run's identity and every number of the report."""
    runs = list(runs)
    meta = store.sql(f"SELECT {', '.join(IDENTITY)} FROM runs WHERE len($runs) = 0 OR "
                     f"list_contains($runs, run_id)", {"runs": runs})
    onsets = onset_stats(store.query("learning_onset", runs=runs, threshold=threshold))
    early_acc = early_stats(store.query("group_curves", runs=runs), early)
    drop = drop_stats(store.query("initial_drop", runs=runs))
    speed = speed_stats(store.query("learning_speed", runs=runs))
    gaps = gap_stats(store.query("generalisation_gap", runs=runs))
    frame = (meta.join(onsets, on="run_id", how="inner")
             .join(early_acc, on="run_id", how="left")
             .join(drop, on="run_id", how="left")
             .join(speed, on="run_id", how="left")
             .join(gaps, on="run_id", how="left"))
    order = IDENTITY + [c for c in frame.columns if c not in IDENTITY]
    return frame.select(order).sort("dataset", "profile", "loss", "sampler", "ratio", "seed",
                                     "run_id")


def onset_stats(onset: pl.DataFrame) -> pl.DataFrame:
    """Spread of onsets and minority - majority lag; a class never learned counts as last epoch + 1.

    Counting it as censored at last + 1 (rather than dropping it) keeps a run where the minority is
    never learned from looking as alike as a balanced one.
    """
    cens = onset.with_columns(onset=pl.coalesce("onset_epoch", pl.col("last_epoch") + 1))
    maj, mnr = pl.col("grp") == "majority", pl.col("grp") == "minority"
    return cens.group_by("run_id").agg(
        epochs=pl.col("last_epoch").max(),
        onset_spread=(pl.col("onset").max() - pl.col("onset").min()).cast(pl.Float64),
        unlearned=pl.col("onset_epoch").null_count().cast(pl.Int64),
        onset_majority=pl.col("onset").filter(maj).mean(),
        onset_minority=pl.col("onset").filter(mnr).mean(),
    ).with_columns(onset_lag=pl.col("onset_minority") - pl.col("onset_majority"))


def early_stats(curves: pl.DataFrame, early: int) -> pl.DataFrame:
    """Mean over epochs 1..early of each group's train accuracy (the mean over its classes).

    Class means, not pooled samples: pooled, the minority's largest class would stand for the
    whole group and hide its smallest classes.
    """
    window = curves.filter((pl.col("split") == "train") & pl.col("epoch").is_between(1, early))
    acc = window.group_by("run_id").agg(
        early_majority=pl.col("acc").filter(pl.col("grp") == "majority").mean(),
        early_minority=pl.col("acc").filter(pl.col("grp") == "minority").mean())
    return acc.with_columns(early_gap=pl.col("early_majority") - pl.col("early_minority"))


def drop_stats(drop: pl.DataFrame) -> pl.DataFrame:
    """The initial_drop analysis's rows side by side: each group's loss change over the first K
    steps, whether the minority's rose, and the minority's change minus the majority's, all as
    the query gives them (NULL for a run that has not reached step K)."""
    maj, mnr = pl.col("grp") == "majority", pl.col("grp") == "minority"
    return drop.group_by("run_id").agg(
        loss_change_majority=pl.col("change").filter(maj).first(),
        loss_change_minority=pl.col("change").filter(mnr).first(),
        minority_loss_rose=pl.col("rose").filter(mnr).first(),
        loss_change_excess=pl.col("minority_minus_majority").first())


def speed_stats(speed: pl.DataFrame) -> pl.DataFrame:
    """The learning_speed analysis's group rows side by side: each group's mean area under its
    classes' train accuracy curves, and the correlations across every class (the `all` row)."""
    groups = speed.filter(pl.col("class_id").is_null())
    return groups.group_by("run_id").agg(
        auc_majority=pl.col("auc").filter(pl.col("grp") == "majority").first(),
        auc_minority=pl.col("auc").filter(pl.col("grp") == "minority").first(),
        auc_pearson_log_count=pl.col("pearson_log_count").filter(pl.col("grp") == "all").first(),
        auc_spearman_count=pl.col("spearman_count").filter(pl.col("grp") == "all").first())


def gap_stats(gap: pl.DataFrame) -> pl.DataFrame:
    """Final train - test gap of each group (its row without a class_id, a mean over its classes)
    and their difference."""
    groups = gap.filter(pl.col("class_id").is_null())
    out = groups.group_by("run_id").agg(
        gap_majority=pl.col("gap").filter(pl.col("grp") == "majority").first(),
        gap_minority=pl.col("gap").filter(pl.col("grp") == "minority").first())
    return out.with_columns(excess_gap=pl.col("gap_minority") - pl.col("gap_majority"))


# ==== over seeds ==================================================================================

def numbers(threshold: float = 0.5, early: int = 2) -> list[str]:
    """The per-run numbers the report shows (its table's rows and the headlines of `changes`)."""
    keys = [r.key for r in rows(threshold, early) if r.key is not None]
    return keys + [k for k in HEADLINES if k not in keys]


def over_seeds(store: Queryable, frame: pl.DataFrame, by: Sequence[str], keys: Sequence[str]
               ) -> pl.DataFrame:
    """One row per value of `by` in `frame` (rows with a run_id; usually a setting's seeds), in
    order of first appearance: `seeds` (how many rows), `run_ids` (theirs, in order), and for each
    of `keys` its mean over the rows, `<key>_ci` the half-width of that mean's 95 % t-interval
    (NULL with one value) and `<key>_n` the values counted.

    The store's DuckDB computes them with its `avg` and `ci95` macro (imbtui/store/semantic.py),
    the same definitions as the named queries method_comparison and ratio_sweep, so no mean or
    interval is computed here a second time.
    """
    con = store.connection()
    name = f"report_{uuid.uuid4().hex}"  # a view of this one call's rows only
    data = frame.with_row_index("row_").with_columns(pl.col(k).cast(pl.Float64) for k in keys)
    group = ", ".join(f'"{c}"' for c in by)
    stats = "".join(f', avg("{k}") AS "{k}", ci95(stddev_samp("{k}"), count("{k}")) AS "{k}_ci"'
                    f', count("{k}") AS "{k}_n"' for k in keys)
    con.register(name, data.to_arrow())
    try:
        return con.sql(f"SELECT {group}, count(*) AS seeds, list(run_id ORDER BY row_) AS run_ids"
                       f"{stats} FROM {name} GROUP BY {group} ORDER BY min(row_)").pl()
    finally:
        con.unregister(name)


def settings(store: Queryable, frame: pl.DataFrame, threshold: float = 0.5, early: int = 2
             ) -> pl.DataFrame:
    """The report's columns: one row per setting, ratio and method (COLUMN) of `findings`'
    frame, its finished runs (seeds) pooled: every number's mean, `_ci` and `_n` (see
    `over_seeds`). A run that is not finished (running, failed, diverged ...) is a column of its
    own: its numbers are not another seed's."""
    alone = pl.when(pl.col("status") == "finished").then(pl.lit("")).otherwise(pl.col("run_id"))
    pooled = over_seeds(store, frame.with_columns(alone.alias("alone")), COLUMN + ["alone"],
                        numbers(threshold, early))
    return pooled.drop("alone")


def curves_over_seeds(store: Queryable, columns: pl.DataFrame) -> pl.DataFrame:
    """The group_curves analysis over the runs of each report column (`settings`' rows, numbered
    from 1 as `column`): per column, group, split and epoch the mean accuracy over the seeds, its
    `acc_ci` and `acc_n`, for figures with error bars."""
    which = {rid: i for i, ids in enumerate(columns["run_ids"].to_list(), 1) for rid in ids}
    curves = store.query("group_curves", runs=list(which))
    curves = curves.with_columns(column=pl.col("run_id").replace_strict(which,
                                                                        return_dtype=pl.Int64))
    return over_seeds(store, curves, ["column", "grp", "split", "epoch"], ["acc"])


# ==== how the findings move with the ratio and the method =========================================

def changes(columns: pl.DataFrame) -> list[str]:
    """One line per headline and comparison: across ratios (one method), across methods (one ratio).

    `columns` holds `settings`' rows, so a setting's seeds are pooled (mean ± 95 % t half-width
    when there are several); a comparison needs at least two settings. Runs of another dataset,
    model or length are never mixed in: their numbers are not comparable.
    """
    lines = []
    for key, label in HEADLINES.items():
        lines += _by(columns, key, label, SETTING + ["method"], "ratio")
        lines += _by(columns, key, label, SETTING + ["ratio"], "method")
    return lines


def _by(columns: pl.DataFrame, key: str, label: str, fixed: list[str], varied: str
        ) -> list[str]:
    lines = []
    for group in columns.sort(fixed + [varied]).partition_by(fixed, maintain_order=True):
        if group.height < 2:
            continue
        where = ", ".join(_word(group[c][0], c) for c in fixed)
        fmt = "{:.1f}" if key == "onset_spread" else "{:+.3f}"
        pairs = [(r[varied], _cell(r, key, fmt)) for r in group.to_dicts()]
        if varied == "ratio":
            steps = " -> ".join(f"{x} at ratio {v:g}" for v, x in pairs)
        else:
            steps = ", ".join(f"{x} with {v}" for v, x in pairs)
        lines.append(f"{label}, by {varied} ({where}): {steps}")
    return lines


def _word(value: Any, column: str) -> str:
    if column == "ratio":
        return f"ratio {value:g}"
    return f"{value} epochs" if column == "epochs" else str(value)


# ==== showing =====================================================================================

def run_label(row: dict[str, Any], i: int) -> str:
    return f"#{i}\n{row['dataset']}\nratio {row['ratio']:g}\n{row['method']}"


def table(columns: pl.DataFrame, threshold: float, early: int):
    """The findings as a rich Table: one row per number, one column per setting (`settings`' rows):
    a run's number, or over several seeds their mean ± 95 % t half-width (n=seeds)."""
    from imbtui.console import plain_table

    t = plain_table("class imbalance: the three findings")
    t.add_column("finding", no_wrap=True)
    cols = columns.to_dicts()
    for i, col in enumerate(cols, 1):
        t.add_column(run_label(col, i), justify="right")
    for row in rows(threshold, early):
        if row.key is None:
            t.add_row(f"[bold]{row.label}[/bold]", *[""] * len(cols))
        else:
            t.add_row(f"  {row.label}", *[_cell(col, row.key, row.fmt) for col in cols])
    return t


def _cell(col: dict[str, Any], key: str, fmt: str) -> str:
    """One number of a column: the value, or "mean ± half-width (n=k)" over k >= 2 seeds (a
    count, "{:.0f}", gets one decimal there: its mean need not be whole). A flag (YES_NO) reads
    "yes" or "no", and over several seeds "k/n seeds": its mean over the seeds times n."""
    value, ci, n = col.get(key), col.get(f"{key}_ci"), col.get(f"{key}_n")
    if value is None:
        return "-"
    if fmt == YES_NO:
        if n is not None and n > 1:
            return f"{round(value * n)}/{n} seeds"
        return "yes" if value else "no"
    if ci is None:
        return fmt.format(value)
    fmt = fmt.replace(".0f", ".1f")
    return f"{fmt.format(value)} ± {fmt.replace('+', '').format(ci)} (n={n})"


def legend(columns: pl.DataFrame, frame: pl.DataFrame, threshold: float) -> list[str]:
    """Which runs each column holds (every run id in full), and what the numbers mean."""
    runs = {r["run_id"]: r for r in frame.to_dicts()}

    def run_line(r: dict[str, Any]) -> str:
        return (f"{r['run_id']}  {r['name']}  ({r['status']}, seed {r['seed']}, "
                f"{r['epochs']} epochs)")

    lines = []
    for i, col in enumerate(columns.to_dicts(), 1):
        ids = col["run_ids"]
        if len(ids) == 1:
            lines.append(f"#{i} = {run_line(runs[ids[0]])}")
        else:
            lines.append(f"#{i} = {len(ids)} seeds:")
            lines += [f"     {run_line(runs[rid])}" for rid in ids]
    lines.append(f"onset: first epoch >= 1 with train accuracy >= {threshold:g} (a class that "
                 f"never gets there counts as last epoch + 1); a group's accuracy is the mean "
                 f"over its classes; gaps are at the last epoch.")
    k, w = drop_params()
    lines.append(f"loss change: a group's training loss per step (the mean over its classes in "
                 f"the batch) over steps {k - w + 1}-{k} minus over steps 0-{w - 1} (query "
                 f"initial_drop); learning speed: the area under a class's train accuracy curve "
                 f"over the epochs, divided by the epochs, its group's mean (query "
                 f"learning_speed); r across every class.")
    if (columns["seeds"] > 1).any():
        lines.append("a ± b (n=k): the mean over k seeds ± the half-width of its 95 % "
                     "t-interval, t975(k - 1) * sd / sqrt(k) (the ci95 macro, docs/store.md).")
    return lines
