"""The chart view: one metric large, for one run or several, with axes, a cursor, log-y and PNG.

Opened with `v` from the run screen (its run) or the compare screen (the compared runs), on the
metric row that has the focus, the mouse, or else the first row in view. Seeds of one setting are
pooled into their mean with a min-max band; the x-axis is the step, the epoch or the samples seen;
the cursor reads every line's value at a point; on one run's chart `c` draws a line per class
(metrics recorded per class) instead of its two groups. The PNG is drawn by imbtui/figures.py,
the code `imbtui report --png` draws with.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Header, Label

from imbtui.tui.data.chart import (
    X_AXES,
    X_LABEL,
    ChartData,
    ChartLine,
    XAxis,
    chart_lines,
    load_chart,
    seed_siblings,
    value_at,
)
from imbtui.tui.data.metrics import CLASS_METRICS, GROUPS, METRIC, METRICS
from imbtui.tui.data.session import StoreSession
from imbtui.tui.widgets.line_chart import Y_LABEL_W, LineChart, Plot, PlotLine
from imbtui.tui.widgets.metric_row import fmt_value

if TYPE_CHECKING:
    from imbtui.tui.app import ImbtuiApp

GROUP_COLOURS = {"majority": "#5fafff", "minority": "#ffaf5f"}  # as on the run screen
# One colour per run (or pooled setting) when several are drawn; the group is then the line's
# style (majority solid, minority dotted). Stable: the i-th run of the chart keeps the i-th colour.
RUN_COLOURS = ("#5fd7d7", "#d787d7", "#87d787", "#ffd75f", "#ff8787", "#afafff", "#d7af87",
               "#bcbcbc")
# One colour per class on a chart of one run's classes, by class id (a class keeps its colour across
# metrics and axes); its group is the line's style (majority solid, minority dotted).
CLASS_COLOURS = ("#5fafff", "#ffaf5f", "#87d787", "#ff8787", "#afafff", "#d7af87", "#ff87d7",
                 "#bcbcbc", "#d7d75f", "#5fd7d7")
SHOWN_GROUPS = (GROUPS, ("majority",), ("minority",))


@dataclass
class ChartLoaded(Message):
    data: ChartData
    session: StoreSession


@dataclass
class ChartExported(Message):
    path: str


def chart_width(screen_width: int) -> int:
    """Buckets per run: one per braille dot column of the plot."""
    return max(8, (screen_width - Y_LABEL_W - 2) * 2)


class ChartScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "back", id="chart.back"),
        Binding("left", "cursor(-1)", "cursor", id="chart.left",
                tooltip="Move the cursor one point left (shift: ten)"),
        Binding("right", "cursor(1)", "cursor", show=False, id="chart.right"),
        Binding("shift+left", "cursor(-10)", show=False, id="chart.left10"),
        Binding("shift+right", "cursor(10)", show=False, id="chart.right10"),
        Binding("home", "cursor_to(0)", show=False, id="chart.home"),
        Binding("end", "cursor_to(-1)", show=False, id="chart.end"),
        Binding("l", "log", "log-y", id="chart.log", tooltip="Linear / logarithmic y-axis"),
        Binding("x", "x_axis", "x-axis", id="chart.x", tooltip="x: step / epoch / samples seen"),
        Binding("s", "seeds", "seeds", id="chart.seeds",
                tooltip="Pool the seeds of one setting (mean, min-max band) or show each run; "
                        "for one run: bring in its other seeds"),
        Binding("g", "groups", "groups", id="chart.groups",
                tooltip="Both groups / majority / minority"),
        Binding("c", "classes", "classes", id="chart.classes",
                tooltip="One run: a line per class (metrics recorded per class) / its groups"),
        Binding("up", "metric(-1)", "metric", id="chart.metric_prev",
                tooltip="The previous / next metric"),
        Binding("down", "metric(1)", show=False, id="chart.metric_next"),
        Binding("p", "export", "PNG", id="chart.export",
                tooltip="Save the chart as a PNG (the figure code of `imbtui report --png`)"),
    ]

    def __init__(self, run_ids: list[str], metric: str, metrics: list[str] | None = None,
                 session: StoreSession | None = None) -> None:
        super().__init__(id="chart-screen")
        self.base_ids = list(run_ids)
        self.metric = metric
        self.metrics = list(metrics or [m.key for m in METRICS])
        if metric not in self.metrics:
            self.metrics.insert(0, metric)
        self.x_axis: XAxis = "step"
        self.log_y = False
        self.pool = True
        self.seed_runs: list[str] | None = None  # one run's other seeds, when brought in
        self.shown = 0  # index into SHOWN_GROUPS
        self.by_class = False  # one run's classes instead of its groups
        self.data: ChartData | None = None
        self.cursor_index: int | None = None  # index into self.xs
        self.xs: list[float] = []
        self.export_dir: Path | None = None  # None: the current directory
        self.painted_at: float | None = None  # perf_counter() of the last painted load (bench)
        self._session = session
        self._width = 0

    @property
    def imb(self) -> ImbtuiApp:
        return self.app  # type: ignore[return-value]

    @property
    def chart(self) -> LineChart:
        return self.query_one(LineChart)

    @property
    def readout(self) -> Label:
        return self.query_one("#chart-readout", Label)

    @property
    def run_ids(self) -> list[str]:
        return self.seed_runs if self.seed_runs else self.base_ids

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("", id="chart-title")
        yield LineChart(id="chart")
        yield Label("", id="chart-legend")
        yield Label("", id="chart-readout")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"chart · {len(self.base_ids)} run{'s' * (len(self.base_ids) > 1)}"
        self._width = chart_width(self.app.size.width)
        self.load()

    def on_resize(self) -> None:
        width = chart_width(self.size.width)
        if width != self._width:
            self._width = width
            self.load()

    # -- loading -----------------------------------------------------------------------------------
    def _scoped(self) -> StoreSession:
        ids = self.run_ids
        if self._session is None or self._session.scope != tuple(ids):
            self._session = self.imb.session.scoped(ids)
        return self._session

    @work(thread=True, exclusive=True, exit_on_error=False, group="chart")
    def load(self) -> None:
        session = self._scoped()
        session.refresh()
        cur = session.cursor()
        try:
            data = load_chart(cur, self.run_ids, self.metric, self.x_axis, self._width, self.pool,
                              self.by_class)
        finally:
            cur.close()
        self.post_message(ChartLoaded(data, session))

    @on(ChartLoaded)
    def on_chart_loaded(self, message: ChartLoaded) -> None:
        keep = self.cursor_x if self.data is not None else None
        self.data = message.data
        self.xs = sorted({x for ln in self.data.lines for x in ln.x})
        self.cursor_index = (self._nearest(keep) if keep is not None
                             else len(self.xs) - 1 if self.xs else None)
        self.apply()
        self.call_after_refresh(self._painted)

    def _painted(self) -> None:
        self.painted_at = time.perf_counter()

    def _nearest(self, x: float) -> int | None:
        if not self.xs:
            return None
        return min(range(len(self.xs)), key=lambda i: abs(self.xs[i] - x))

    # -- showing -----------------------------------------------------------------------------------
    def drawn_lines(self) -> list[ChartLine]:
        """The lines drawn now: the loaded ones of the groups shown."""
        if self.data is None:
            return []
        groups = SHOWN_GROUPS[self.shown]
        return [ln for ln in self.data.lines if ln.grp in groups]

    def _bunches(self) -> list[tuple[str, ...]]:
        """Each run (or pooled setting) once, in order: its colour is its place here."""
        if self.data is None:
            return []
        seen: list[tuple[str, ...]] = []
        for ln in self.data.lines:
            if ln.run_ids not in seen:
                seen.append(ln.run_ids)
        return seen

    def _style(self, line: ChartLine) -> tuple[str, bool]:
        """(colour, dotted) of a line."""
        if line.class_id is not None:
            return CLASS_COLOURS[line.class_id % len(CLASS_COLOURS)], line.grp == "minority"
        bunches = self._bunches()
        if len(bunches) == 1:
            return GROUP_COLOURS[line.grp], False
        i = bunches.index(line.run_ids)
        return RUN_COLOURS[i % len(RUN_COLOURS)], line.grp == "minority"

    def apply(self) -> None:
        lines = self.drawn_lines()
        plot = Plot(x_range=self._x_range(lines), y_range=self._y_range(lines),
                    log_y=self.log_y, x_label=X_LABEL[self.x_axis],
                    y_label=f"{METRIC[self.metric].label}{' (log)' if self.log_y else ''}",
                    cursor_x=self.cursor_x)
        for ln in lines:
            colour, dotted = self._style(ln)
            plot.lines.append(PlotLine(ln.x, ln.y, colour, dotted, ln.lo, ln.hi))
        self.chart.set_plot(plot)
        self._show_title()
        self._show_legend(lines)
        self.readout.update(self.readout_text())

    @property
    def cursor_x(self) -> float | None:
        return self.xs[self.cursor_index] if self.cursor_index is not None and self.xs else None

    def _x_range(self, lines: list[ChartLine]) -> tuple[float, float]:
        xs = [x for ln in lines for x in ln.x]
        if not xs:
            return 0.0, 1.0
        lo, hi = min(xs), max(xs)
        return (lo, hi) if hi > lo else (lo, lo + 1.0)

    def _y_range(self, lines: list[ChartLine]) -> tuple[float, float]:
        values = [v for ln in lines for vs in (ln.y, ln.lo or [], ln.hi or []) for v in vs
                  if math.isfinite(v)]
        if self.log_y:
            pos = [v for v in values if v > 0]
            if not pos:
                return 0.0, 1.0
            lo, hi = math.floor(math.log10(min(pos))), math.ceil(math.log10(max(pos)))
            return float(lo), float(hi if hi > lo else lo + 1)
        scale = METRIC[self.metric].scale
        if scale == "unit":
            return 0.0, 1.0
        if scale == "sym":
            return -1.0, 1.0
        if not values:
            return 0.0, 1.0
        lo = 0.0 if scale == "zero" else min(values)
        hi = max(values)
        return (lo, hi) if hi > lo else (lo, lo + 1.0)

    def _show_title(self) -> None:
        seeds = ("each run" if not self.pool else
                 f"pooled, {len(self.run_ids)} runs" if self.seed_runs else "pooled")
        groups = "both" if self.shown == 0 else SHOWN_GROUPS[self.shown][0]
        classes = (" · per class" if self.data is not None and self.data.by_class else
                   " · not recorded per class" if self.by_class else "")
        self.query_one("#chart-title", Label).update(
            f"[b]{METRIC[self.metric].label}[/] · x: {X_LABEL[self.x_axis]} · "
            f"y: {'log' if self.log_y else 'linear'} · seeds: {seeds} · groups: {groups}"
            f"{classes}")

    def _show_legend(self, lines: list[ChartLine]) -> None:
        parts = []
        for ln in lines:
            colour, dotted = self._style(ln)
            band = " ▒ min–max" if ln.lo is not None else ""
            name = ln.label if ln.class_id is not None else f"{ln.label} {ln.grp}"
            parts.append(f"[{colour}]{'┄┄' if dotted else '━━'}[/] {name}{band}")
        if parts and lines[0].class_id is not None:
            parts.insert(0, "[dim]classes, largest first (majority ━━, minority ┄┄):[/]")
        self.query_one("#chart-legend", Label).update("  ".join(parts) or "[dim]no data for "
                                                      "this metric[/]")

    def readout_text(self) -> str:
        """Every drawn line's value at the cursor (its last point at or before it)."""
        x = self.cursor_x
        if x is None:
            return "[dim]no points[/]"
        parts = [f"[b]{X_LABEL[self.x_axis]} {x:,.0f}[/]"]
        for ln in self.drawn_lines():
            at = value_at(ln, x)
            colour, _ = self._style(ln)
            if at is None:
                text = "–"
            elif at[1] is not None:
                text = f"{fmt_value(at[0])} ({fmt_value(at[1])}–{fmt_value(at[2])})"
            else:
                text = fmt_value(at[0])
            name = (ln.label if ln.class_id is not None else
                    ln.grp if len(self._bunches()) == 1 else f"{ln.label} {ln.grp}")
            parts.append(f"[{colour}]{name}[/] {text}")
        return " · ".join(parts)

    # -- actions -----------------------------------------------------------------------------------
    def action_cursor(self, delta: int) -> None:
        if self.cursor_index is None:
            return
        self.cursor_index = min(len(self.xs) - 1, max(0, self.cursor_index + delta))
        self.apply()

    def action_cursor_to(self, index: int) -> None:
        if self.xs:
            self.cursor_index = index % len(self.xs)
            self.apply()

    def action_log(self) -> None:
        self.log_y = not self.log_y
        self.apply()

    def action_x_axis(self) -> None:
        self.x_axis = X_AXES[(X_AXES.index(self.x_axis) + 1) % len(X_AXES)]
        self.data, self.cursor_index = None, None  # new x positions: the cursor starts at the end
        self.load()

    def action_classes(self) -> None:
        if len(self.run_ids) > 1:
            self.notify("a line per class: on one run's chart", timeout=3)
            return
        if not self.by_class and self.metric not in CLASS_METRICS:
            self.notify(f"{METRIC[self.metric].label} is not recorded per class", timeout=3)
            return
        self.by_class = not self.by_class
        self.load()

    def action_groups(self) -> None:
        self.shown = (self.shown + 1) % len(SHOWN_GROUPS)
        self.apply()

    def action_seeds(self) -> None:
        if len(self.base_ids) > 1:
            self.pool = not self.pool
            if self.data is not None:  # pooling is drawn from the runs already loaded
                keep = self.cursor_x
                self.data.pool, self.data.lines = self.pool, chart_lines(self.data.runs, self.pool)
                self.xs = sorted({x for ln in self.data.lines for x in ln.x})
                self.cursor_index = self._nearest(keep) if keep is not None else None
                self.apply()
            return
        self._toggle_siblings()

    @work(thread=True, exclusive=True, exit_on_error=False, group="chart")
    def _toggle_siblings(self) -> None:
        if self.seed_runs:
            self.seed_runs = None
        else:
            cur = self.imb.session.cursor() if self._session is None else self._session.cursor()
            try:
                found = seed_siblings(cur, self.base_ids[0])
            finally:
                cur.close()
            if len(found) < 2:
                self.app.call_from_thread(self.notify, "no other seeds of this run's setting "
                                          "in the store", timeout=4)
                return
            self.seed_runs = found
            self.by_class = False  # several runs: their groups
        self.pool = True
        self.app.call_from_thread(self.load)

    def action_metric(self, delta: int) -> None:
        i = self.metrics.index(self.metric) if self.metric in self.metrics else 0
        self.metric = self.metrics[(i + delta) % len(self.metrics)]
        self.load()

    def action_export(self) -> None:
        if self.data is None:
            return
        self.export(self.export_path(), self.figure_lines())

    def export_path(self) -> Path:
        names = ([r.name for r in self.data.runs] if self.data and self.data.by_class
                 else [ln.label for ln in self.drawn_lines()])
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", names[0] if names else "chart").strip("-")
        more = f"+{len(self._bunches()) - 1}" if len(self._bunches()) > 1 else ""
        return (self.export_dir or Path.cwd()) / f"imbtui-{self.metric}-{slug}{more}.png"

    def figure_lines(self) -> list[dict[str, Any]]:
        """The drawn lines as figures.chart_figure takes them (its own colours for paper)."""
        lines = self.drawn_lines()
        if lines and lines[0].class_id is not None:  # one colour per class
            return [{"x": ln.x, "y": ln.y, "lo": None, "hi": None, "grp": ln.grp,
                     "label": f"class {ln.label} ({ln.grp})", "series": ln.class_id or 0,
                     "series_count": len(lines)} for ln in lines]
        bunches = self._bunches()
        return [{"x": ln.x, "y": ln.y, "lo": ln.lo, "hi": ln.hi, "grp": ln.grp,
                 "label": f"{ln.label} {ln.grp}", "series": bunches.index(ln.run_ids),
                 "series_count": len(bunches)} for ln in lines]

    @work(thread=True, exclusive=False, exit_on_error=False, group="chart-export")
    def export(self, path: Path, lines: list[dict[str, Any]]) -> None:
        from imbtui.figures import chart_figure

        chart_figure(lines, path, title=self._figure_title(), xlabel=X_LABEL[self.x_axis],
                     ylabel=METRIC[self.metric].label, log_y=self.log_y,
                     ylim=None if self.log_y else self._y_range(self.drawn_lines()))
        self.post_message(ChartExported(str(path)))

    def _figure_title(self) -> str:
        bunches = self._bunches()
        if self.data and self.data.by_class and self.data.runs:
            return f"{self.data.runs[0].name}, per class"
        if len(bunches) == 1 and self.data and self.data.lines:
            return self.data.lines[0].label
        return f"{len(bunches)} runs"

    @on(ChartExported)
    def on_chart_exported(self, message: ChartExported) -> None:
        self.notify(f"wrote {message.path}", title="chart", timeout=6)


# ==== opening the chart from a screen of metric rows ==============================================

def row_metric(screen: Screen[Any], row_type: type[Widget]) -> tuple[str | None, list[str]]:
    """(the metric of the row with the focus or the mouse, else the first in view; every shown
    row's metric) on `screen`, whose metric rows are `row_type` widgets with a `key`."""
    rows = [r for r in screen.query(row_type) if r.display and getattr(r, "key", None) in METRIC]
    keys = [r.key for r in rows]  # type: ignore[attr-defined]
    for widget in (screen.focused, screen.app.mouse_over):
        for node in (widget.ancestors_with_self if widget is not None else []):
            if isinstance(node, row_type) and getattr(node, "key", None) in keys:
                return node.key, keys  # type: ignore[attr-defined]
    top = screen.region.y + 3  # under the header and the first labels
    in_view = [r for r in rows if r.region.height and r.region.y >= top]
    first = in_view[0] if in_view else (rows[0] if rows else None)
    return (first.key if first is not None else None), keys  # type: ignore[attr-defined]


def open_chart(screen: Screen[Any], run_ids: list[str], row_type: type[Widget],
               session: StoreSession | None = None) -> None:
    """Push the chart of the chosen metric row of `screen` over `run_ids`."""
    metric, keys = row_metric(screen, row_type)
    if metric is None:
        screen.notify("no curves to chart yet", timeout=3)
        return
    screen.app.push_screen(ChartScreen(run_ids, metric, keys, session=session))
