"""The motivating study's three findings, measured on the given runs.

(1) With balanced data all classes are learned alike; with imbalance they are not: the spread of the
    classes' learning onsets (first epoch whose train accuracy reaches a threshold).
(2) Early on the network underfits the minority: minority vs majority train accuracy over the first
    epochs, and how many epochs later the minority classes reach the threshold (onset lag).
(3) Later it memorises the minority without generalising: the minority's final train - test gap
    against the majority's.

Every number comes from the named analyses learning_onset, group_curves and generalisation_gap, so
`imbtui query` shows the rows behind any cell of the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import polars as pl


class Queryable(Protocol):
    def sql(self, query: str, params: dict[str, Any] | None = None) -> pl.DataFrame: ...
    def query(self, name: str, **params: Any) -> pl.DataFrame: ...


@dataclass(frozen=True)
class Row:
    """One line of the report table: a finding's heading (key None) or one measured number."""

    label: str
    key: str | None = None
    fmt: str = "{:.3f}"


def rows(threshold: float, early: int) -> list[Row]:
    span = "epoch 1" if early == 1 else f"epochs 1-{early}"
    return [
        Row("(1) classes learned alike?"),
        Row("onset spread, max - min (epochs)", "onset_spread", "{:.0f}"),
        Row(f"classes never at train acc >= {threshold:g}", "unlearned", "{:.0f}"),
        Row("(2) minority underfit early?"),
        Row(f"train acc majority, {span}", "early_majority"),
        Row(f"train acc minority, {span}", "early_minority"),
        Row("onset lag, minority - majority (epochs)", "onset_lag", "{:+.1f}"),
        Row("(3) memorised, not generalised?"),
        Row("train - test gap, majority", "gap_majority", "{:+.3f}"),
        Row("train - test gap, minority", "gap_minority", "{:+.3f}"),
        Row("excess gap, minority - majority", "excess_gap", "{:+.3f}"),
    ]


# The one number per finding that `changes` follows across ratios and methods.
HEADLINES = {"onset_spread": "onset spread (epochs)", "early_gap": "early train acc gap, "
             "majority - minority", "excess_gap": "excess train - test gap of the minority"}

SETTING = ["dataset", "profile", "model", "epochs"]  # what must match for runs to be compared
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
    gaps = gap_stats(store.query("generalisation_gap", runs=runs))
    frame = (meta.join(onsets, on="run_id", how="inner")
             .join(early_acc, on="run_id", how="left")
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


def gap_stats(gap: pl.DataFrame) -> pl.DataFrame:
    """Final train - test gap of each group (its row without a class_id, a mean over its classes)
    and their difference."""
    groups = gap.filter(pl.col("class_id").is_null())
    out = groups.group_by("run_id").agg(
        gap_majority=pl.col("gap").filter(pl.col("grp") == "majority").first(),
        gap_minority=pl.col("gap").filter(pl.col("grp") == "minority").first())
    return out.with_columns(excess_gap=pl.col("gap_minority") - pl.col("gap_majority"))


# ==== how the findings move with the ratio and the method =========================================

def changes(frame: pl.DataFrame) -> list[str]:
    """One line per headline and comparison: across ratios (one method), across methods (one ratio).

    Seeds of one setting are averaged; a comparison needs at least two settings. Runs of another
    dataset, model or length are never mixed in: their numbers are not comparable.
    """
    lines = []
    for key, label in HEADLINES.items():
        lines += _by(frame, key, label, SETTING + ["method"], "ratio")
        lines += _by(frame, key, label, SETTING + ["ratio"], "method")
    return lines


def _by(frame: pl.DataFrame, key: str, label: str, fixed: list[str], varied: str) -> list[str]:
    means = frame.group_by(fixed + [varied]).agg(pl.col(key).mean()).sort(fixed + [varied])
    lines = []
    for group in means.partition_by(fixed, maintain_order=True):
        if group.height < 2:
            continue
        where = ", ".join(_word(group[c][0], c) for c in fixed)
        pairs = list(zip(group[varied], group[key]))
        if varied == "ratio":
            steps = " -> ".join(f"{_num(x, key)} at ratio {v:g}" for v, x in pairs)
        else:
            steps = ", ".join(f"{_num(x, key)} with {v}" for v, x in pairs)
        lines.append(f"{label}, by {varied} ({where}): {steps}")
    return lines


def _word(value: Any, column: str) -> str:
    if column == "ratio":
        return f"ratio {value:g}"
    return f"{value} epochs" if column == "epochs" else str(value)


def _num(x: float | None, key: str) -> str:
    if x is None:
        return "-"
    return f"{x:.1f}" if key == "onset_spread" else f"{x:+.3f}"


# ==== showing =====================================================================================

def run_label(row: dict[str, Any], i: int) -> str:
    return f"#{i}\n{row['dataset']}\nratio {row['ratio']:g}\n{row['method']}"


def table(frame: pl.DataFrame, threshold: float, early: int):
    """The findings as a rich Table: one row per number, one column per run."""
    from imbtui.console import plain_table

    t = plain_table("class imbalance: the three findings")
    t.add_column("finding", no_wrap=True)
    runs = frame.to_dicts()
    for i, run in enumerate(runs, 1):
        t.add_column(run_label(run, i), justify="right")
    for row in rows(threshold, early):
        if row.key is None:
            t.add_row(f"[bold]{row.label}[/bold]", *[""] * len(runs))
        else:
            t.add_row(f"  {row.label}", *[_cell(run.get(row.key), row.fmt) for run in runs])
    return t


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def legend(frame: pl.DataFrame, threshold: float) -> list[str]:
    lines = [f"#{i} = {r['run_id']}  {r['name']}  ({r['status']}, seed {r['seed']}, "
             f"{r['epochs']} epochs)" for i, r in enumerate(frame.to_dicts(), 1)]
    lines.append(f"onset: first epoch >= 1 with train accuracy >= {threshold:g} (a class that "
                 f"never gets there counts as last epoch + 1); a group's accuracy is the mean "
                 f"over its classes; gaps are at the last epoch.")
    return lines
