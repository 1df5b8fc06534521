"""Figures for papers: majority vs minority train and test accuracy per run, drawn with matplotlib.

Uses the object API on an Agg canvas (no pyplot): no global state, no display, safe in threads.
Every panel shares one 0-1 accuracy axis so that runs compare at a glance. A panel may stand for
several seeds: its curves are then their means and carry error bars, the 95 % t-intervals that the
report's query computed (an `acc_ci` column); nothing here computes a mean or an interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from imbtui.errors import UserError

COLORS = {"majority": "#1f5fa8", "minority": "#d4661c"}  # blue / orange: safe for colour blindness
STYLES = {"train": "-", "test": "--"}
PANEL_W, PANEL_H, MAX_COLS = 2.8, 2.3, 4  # inches; a row of four fits a two-column paper's width
MAX_BARS = 12  # error bars per curve at most: every k-th epoch on long runs


def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise UserError("figures need matplotlib: pip install matplotlib") from None
    matplotlib.rcParams.update({"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8,
                                "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7,
                                "axes.spines.top": False, "axes.spines.right": False})
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return Figure, FigureCanvasAgg


def group_curves_figure(curves: pl.DataFrame, panels: list[tuple[Any, str]], path: Path,
                        dpi: int = 300, key: str = "run_id") -> Path:
    """One panel per (value of `key`, title): accuracy vs epoch of majority and minority, train and
    test.

    A group's accuracy is the mean over its classes, as in the report.

    `curves` holds rows of the group_curves analysis (grp, split, epoch, acc and `key`); with an
    `acc_ci` column (means over seeds: report.curves_over_seeds) each non-NULL half-width is drawn
    as an error bar. The format follows the file suffix (.png, .pdf, .svg).
    """
    if not panels:
        raise UserError("no runs to draw")
    fig, axes, cols = _panel_grid(len(panels))
    for i, (ax, (value, title)) in enumerate(zip(axes.flat, panels)):
        _panel(ax, curves.filter(pl.col(key) == value), title)
        if i % cols:  # the shared y axis is labelled once per row
            ax.set_ylabel("")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if "acc_ci" in curves.columns and curves["acc_ci"].is_not_null().any():
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="0.35", marker="|", markersize=7, lw=0))
        labels.append("95 % t-interval over seeds")
    fig.legend(handles, labels, loc="outside lower center",
               ncols={1: 2, 2: 3}.get(cols, len(handles)), frameon=False)  # fits the width
    return _save(fig, path, dpi)


def _panel_grid(n: int):
    """(figure, axes grid, columns) for `n` panels: up to MAX_COLS a row, one shared y-axis per
    row, the cells past the n-th hidden."""
    Figure, Canvas = _matplotlib()
    cols = min(MAX_COLS, n)
    nrows = math.ceil(n / cols)
    fig = Figure(figsize=(PANEL_W * cols, PANEL_H * nrows + 0.35), layout="constrained")
    Canvas(fig)
    axes = fig.subplots(nrows, cols, sharey=True, squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig, axes, cols


def _save(fig, path: Path, dpi: int) -> Path:
    try:
        fig.savefig(path, dpi=dpi)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot write figure {str(path)!r}: {exc}") from None
    return path


def class_size_figure(rows: pl.DataFrame, y: str, ylabel: str, panels: list[tuple[Any, str]],
                      path: Path, key: str = "method", hue: str = "ratio",
                      censored: str | None = None, ylim: tuple[float, float] | None = None,
                      dpi: int = 150) -> Path:
    """One panel per (value of `key`, title): every class of every run as a point, its training
    count (log axis) against `y`, coloured by `hue` (the imbalance ratio). Rows whose `censored`
    column is true (a class never learned) are drawn as open markers.

    `rows` are a named analysis's per-class rows (train_count, `y`, `key`, `hue`); each seed's
    point is drawn, nothing is averaged here.
    """
    if not panels:
        raise UserError("no runs to draw")
    fig, axes, cols = _panel_grid(len(panels))
    from matplotlib import colormaps

    hues = sorted(rows[hue].unique().to_list())
    cmap = colormaps["viridis"]
    colors = {h: cmap(0.85 * i / max(1, len(hues) - 1)) for i, h in enumerate(hues)}
    for i, (ax, (value, title)) in enumerate(zip(axes.flat, panels)):
        panel = rows.filter(pl.col(key) == value)
        for h in hues:
            _class_points(ax, panel.filter(pl.col(hue) == h), y, colors[h], f"{hue} {h:g}"
                          if isinstance(h, float) else f"{hue} {h}", censored)
        ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel("training samples of the class")
        ax.set_ylabel(ylabel if i % cols == 0 else "")
        if ylim is not None:
            ax.set_ylim(*ylim)
        if rows[y].dtype.is_integer():
            ax.yaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.25, lw=0.5)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center",
               ncols=max(1, min(len(handles), 2 * cols)), frameon=False)
    return _save(fig, path, dpi)


def _class_points(ax, rows: pl.DataFrame, y: str, color: Any, label: str,
                  censored: str | None) -> None:
    never = rows[censored] if censored else pl.Series([False] * rows.height)
    seen, unseen = rows.filter(~never), rows.filter(never)
    ax.scatter(seen["train_count"].to_list(), seen[y].to_list(), s=14, color=color, alpha=0.7,
               lw=0, label=label)
    if unseen.height:
        ax.scatter(unseen["train_count"].to_list(), unseen[y].to_list(), s=16,
                   facecolors="none", edgecolors=[color], lw=0.9, label=f"{label}, not reached")


def _panel(ax, rows: pl.DataFrame, title: str) -> None:
    for grp, color in COLORS.items():
        for split, style in STYLES.items():
            line = rows.filter((pl.col("grp") == grp) & (pl.col("split") == split)).sort("epoch")
            _curve(ax, line["epoch"].to_list(), line["acc"].to_list(), color, style,
                   f"{grp} {split}")
            _error_bars(ax, line, color)
    _shade_minority_gap(ax, rows)
    ax.set_title(title)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (mean over classes)")
    ax.grid(alpha=0.25, lw=0.5)
    ax.xaxis.get_major_locator().set_params(integer=True)


def _error_bars(ax, line: pl.DataFrame, color: str) -> None:
    """The curve's 95 % t-intervals over seeds (its `acc_ci`), where it has them."""
    if "acc_ci" not in line.columns or not line["acc_ci"].is_not_null().any():
        return
    ci = [math.nan if v is None else v for v in line["acc_ci"].to_list()]
    ax.errorbar(line["epoch"].to_list(), line["acc"].to_list(), yerr=ci, fmt="none",
                ecolor=color, elinewidth=0.7, capsize=1.5, alpha=0.8,
                errorevery=max(1, math.ceil(line.height / MAX_BARS)))


def _shade_minority_gap(ax, rows: pl.DataFrame) -> None:
    """Shade the minority's train - test gap: memorisation without generalisation, at a glance."""
    mnr = rows.filter(pl.col("grp") == "minority")
    acc = pl.col("acc")
    wide = (mnr.filter(pl.col("split") == "train").select("epoch", train=acc)
            .join(mnr.filter(pl.col("split") == "test").select("epoch", test=acc), on="epoch")
            .sort("epoch"))
    if wide.height:
        ax.fill_between(wide["epoch"].to_list(), wide["train"].to_list(), wide["test"].to_list(),
                        color=COLORS["minority"], alpha=0.12, lw=0)


def _curve(ax, x: Sequence[float], y: Sequence[float], color: Any, style: str, label: str,
           lo: Sequence[float] | None = None, hi: Sequence[float] | None = None) -> None:
    """One curve, as every figure here draws it; with `lo` and `hi`, a band under it (the
    seeds' spread)."""
    ax.plot(list(x), list(y), style, color=color, lw=1.3, label=label)
    if lo is not None and hi is not None:
        ax.fill_between(list(x), list(lo), list(hi), color=color, alpha=0.18, lw=0)


# ==== the browse app's chart view =================================================================

CHART_W, CHART_H = 6.4, 3.6  # inches: one wide panel


def chart_figure(lines: Sequence[dict[str, Any]], path: Path, *, title: str, xlabel: str,
                 ylabel: str, log_y: bool = False, ylim: tuple[float, float] | None = None,
                 dpi: int = 150) -> Path:
    """The app's chart view as a figure: one panel, a curve per line (`x`, `y`, `grp`, `label`,
    and `lo` / `hi` for a band over seeds). One series (a run or a setting's seeds) draws its
    majority and minority in the report's colours; several draw one colour per series (its
    `series` index of `series_count`), majority solid and minority dashed. `CHART_W` x `CHART_H`
    inches at `dpi`; the format follows the file suffix."""
    if not lines:
        raise UserError("no curves to draw")
    Figure, Canvas = _matplotlib()
    from matplotlib import colormaps

    fig = Figure(figsize=(CHART_W, CHART_H), layout="constrained")
    Canvas(fig)
    ax = fig.subplots()
    palette = colormaps["tab10"]
    for ln in lines:
        one = ln.get("series_count", 1) <= 1
        color = COLORS[ln["grp"]] if one else palette(ln.get("series", 0) % 10)
        style = "-" if one or ln["grp"] == "majority" else "--"
        _curve(ax, ln["x"], ln["y"], color, style, ln["label"], ln.get("lo"), ln.get("hi"))
    if log_y:
        ax.set_yscale("log")
    elif ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.25, lw=0.5)
    ax.legend(frameon=False, ncols=2 if len(lines) > 4 else 1)
    return _save(fig, path, dpi)


def group_steps_figure(steps: pl.DataFrame, panels: list[tuple[Any, str]], path: Path,
                       key: str = "column", dpi: int = 150) -> Path:
    """One panel per (value of `key`, title): majority and minority training loss per step over
    the first steps (the group_steps view: the mean over the group's classes in the batch), the
    lens of the minority's initial drop. With a `loss_ci` column (means over seeds:
    report.over_seeds) its 95 % t-interval is shaded."""
    if not panels:
        raise UserError("no runs to draw")
    fig, axes, cols = _panel_grid(len(panels))
    for i, (ax, (value, title)) in enumerate(zip(axes.flat, panels)):
        rows = steps.filter(pl.col(key) == value)
        for grp, color in COLORS.items():
            line = rows.filter((pl.col("grp") == grp) & pl.col("loss").is_not_null()).sort("step")
            ax.plot(line["step"].to_list(), line["loss"].to_list(), color=color, lw=1.3,
                    label=f"{grp} training loss")
            if "loss_ci" in line.columns and line["loss_ci"].is_not_null().any():
                lo = (line["loss"] - line["loss_ci"].fill_null(0)).to_list()
                hi = (line["loss"] + line["loss_ci"].fill_null(0)).to_list()
                ax.fill_between(line["step"].to_list(), lo, hi, color=color, alpha=0.15, lw=0)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel("loss (mean over classes)" if i % cols == 0 else "")
        ax.grid(alpha=0.25, lw=0.5)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, frameon=False)
    return _save(fig, path, dpi)
