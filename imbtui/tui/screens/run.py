"""The run screen: config and class counts, majority vs minority per metric, one row per class."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Header, Label

from imbtui.tui.data.curves import RunCurves, load_run
from imbtui.tui.data.metrics import CLASS_METRICS, GROUPS, METRIC, METRICS, ema, last_value, y_range
from imbtui.tui.data.session import StoreSession
from imbtui.tui.messages import RunLoaded
from imbtui.tui.widgets import ClassCountChart, ClassCurves, ClassLine, ConfigPanel, MetricRow
from imbtui.tui.widgets.curves_scroll import CurvesScroll
from imbtui.tui.widgets.metric_row import fmt_value
from imbtui.tui.widgets.runs_table import SPINNER

if TYPE_CHECKING:
    from imbtui.tui.app import ImbtuiApp

REFRESH_S = 1.0
SMOOTHING = (0.0, 0.6, 0.9)
LABEL_W, VALUE_W = MetricRow.LABEL_W, MetricRow.VALUE_W


def curve_width(screen_width: int) -> tuple[int, int]:
    """Buckets for (group curves, class curves) at this terminal width: one per drawn column."""
    usable = max(20, screen_width - 2)  # the vertical scrollbar
    group = max(4, (usable - LABEL_W - 2 * VALUE_W - 1) // 2)
    cls = max(4, usable - ClassCurves.NAME_W - ClassCurves.COUNT_W - 3 * ClassCurves.NUM_W - 2)
    return group, cls


def lens_parts(lenses: dict[str, list[dict]]) -> list[str]:
    """One short phrase per lens with rows: the loss change of each group over the first steps
    (initial_drop), each group's learning speed (learning_speed: area under its train accuracy
    curve) and the untrained network's favoured class (guessing_bias)."""
    parts = []
    drop = {r["grp"]: r for r in lenses.get("initial_drop", []) if r["change"] is not None}
    if len(drop) == 2:
        rose = " [b]minority rose[/]" if drop["minority"]["rose"] else ""
        parts.append(f"first steps' loss change: majority {drop['majority']['change']:+.2f}, "
                     f"minority {drop['minority']['change']:+.2f}{rose}")
    speed = {r["grp"]: r for r in lenses.get("learning_speed", []) if r["auc"] is not None}
    if "majority" in speed and "minority" in speed:
        rho = speed.get("all", {}).get("spearman_count")
        size = f", ρ with class size {rho:+.2f}" if rho is not None else ""
        parts.append(f"learning speed (train acc AUC): majority {speed['majority']['auc']:.2f}, "
                     f"minority {speed['minority']['auc']:.2f}{size}")
    guess = lenses.get("guessing_bias", [])
    if guess and guess[0]["top_share"] is not None:
        g = guess[0]
        parts.append(f"untrained: {g['top_share']:.0%} of predictions to class {g['top_class']}, "
                     f"{g['majority_share']:.0%} to the majority ({g['majority_class_share']:.0%} "
                     f"of the classes)")
    return parts


class RunScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "back", id="run.back"),
        Binding("e", "resolution", "step/epoch", id="run.resolution",
                tooltip="Toggle step and epoch resolution"),
        Binding("m", "smooth", "smoothing", id="run.smooth", tooltip="EMA off / 0.6 / 0.9"),
        Binding("k", "class_metric", "class metric", id="run.class_metric",
                tooltip="Which metric the per-class rows draw"),
        Binding("r", "reload", "reload", show=False, id="run.reload"),
        Binding("v", "chart", "chart", id="run.chart",
                tooltip="The metric row in focus (or first in view) as a large chart"),
    ]

    def __init__(self, run_id: str) -> None:
        super().__init__(id="run-screen")
        self.run_id = run_id
        self.resolution = "step"
        self.smoothing = 0.0
        self.class_metric = "train_acc"
        self.curves: RunCurves | None = None
        self.generation = 0
        self.widths = (0, 0)
        self.apply_ms: float | None = None  # UI-thread time of the last refresh (bench/tui.py)
        self.tick = 0
        self._session: StoreSession | None = None

    @property
    def imb(self) -> ImbtuiApp:
        return self.app  # type: ignore[return-value]

    @property
    def session(self) -> StoreSession:
        # views over this run's parts only (created on first use, dropped with the screen)
        if self._session is None:
            self._session = self.imb.session.scoped([self.run_id])
        return self._session

    def compose(self) -> ComposeResult:
        yield Header()
        with CurvesScroll(id="run-body"):
            with Horizontal(id="run-top"):
                yield ConfigPanel("loading…", id="run-config")
                yield ClassCountChart(id="run-chart")
            yield Label("", id="run-mode")
            yield Label("", id="run-posthoc")
            yield Label("", id="run-lenses")
            with Horizontal(id="run-legend"):
                yield Label("", classes="metric-label")
                yield Label("majority", classes="legend majority")
                yield Label("minority", classes="legend minority")
            for m in METRICS:
                yield MetricRow(m.key, m.label, m.help)
            yield ClassCurves(id="run-classes")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.run_id
        for row in self.query(MetricRow):
            row.display = False
        self.widths = curve_width(self.size.width or self.app.size.width)
        self.set_class(self.app.size.height >= 40, "tall")
        self.load()
        self.set_interval(REFRESH_S, self._tick)

    def on_resize(self) -> None:
        self.set_class(self.size.height >= 40, "tall")  # two-row curves when there is room
        widths = curve_width(self.size.width)
        if widths != self.widths:
            self.widths = widths
            self.load()

    # -- loading -----------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="run")
    def load(self) -> None:
        session = self.session
        generation = session.refresh()
        cur = session.cursor()
        try:
            curves = load_run(cur, self.run_id, self.widths[0], self.resolution,
                              self.class_metric, class_width=self.widths[1])
        finally:
            cur.close()
        self.post_message(RunLoaded(curves, generation))

    def _live(self) -> bool:
        return bool(self.curves and self.curves.meta.get("status") == "running")

    def _tick(self) -> None:
        if self._live() and self.is_current:
            self.tick += 1
            self.load()
            self._show_mode()

    @on(RunLoaded)
    def on_run_loaded(self, message: RunLoaded) -> None:
        t0 = time.perf_counter()
        self.curves, self.generation = message.curves, message.generation
        self.apply()
        self.apply_ms = (time.perf_counter() - t0) * 1000

    # -- showing -----------------------------------------------------------------------------------
    def apply(self) -> None:
        c = self.curves
        if c is None:
            return
        if not c.meta:
            self.query_one(ConfigPanel).update(f"[red]run {self.run_id} is not in the store[/]")
            return
        self.query_one(ConfigPanel).show_meta(c.meta)
        self.query_one(ClassCountChart).counts = tuple(
            (int(r["train_count"]), r["grp"]) for r in c.classes.iter_rows(named=True))
        for row in self.query(MetricRow):
            self._apply_metric(row, c)
        self._apply_classes(c)
        self._show_mode()
        self._show_posthoc(c)
        self._show_lenses(c)

    def _apply_metric(self, row: MetricRow, c: RunCurves) -> None:
        groups = c.groups.get(row.key)
        row.display = bool(groups)
        if not groups:
            return
        curves = [ema(groups.get(g, []), self.smoothing) for g in GROUPS]
        row.set_curves(curves[0], curves[1], y_range(row.key, curves),
                       last_value(curves[0]), last_value(curves[1]), c.stage2_at)

    def _apply_classes(self, c: RunCurves) -> None:
        curves = {k: ema(v, self.smoothing) for k, v in c.class_curves.items()}
        lines = [ClassLine(name=str(r["class_name"]), grp=r["grp"] or "majority",
                           train_count=int(r["train_count"] or 0), train_acc=r["train_acc"],
                           test_acc=r["test_acc"], gap=r["gap"],
                           curve=tuple(curves.get(int(r["class_id"]), ())))
                 for r in c.classes.iter_rows(named=True)]
        metric = METRIC[c.class_metric]
        self.query_one(ClassCurves).set_rows(lines, f"per class: {metric.label}",
                                             y_range(metric.key, list(curves.values())))

    def _show_mode(self) -> None:
        live = f" · [green]{SPINNER[self.tick % len(SPINNER)]} live[/]" if self._live() else ""
        smooth = "off" if not self.smoothing else f"{self.smoothing:g}"
        c = self.curves
        stage = (f" · [reverse] [/] stage 2: {c.stage2}" if c is not None and c.stage2 else "")
        self.query_one("#run-mode", Label).update(
            f"[b]{self.resolution}[/] resolution (e) · EMA {smooth} (m) · class rows: "
            f"{METRIC[self.class_metric].label} (k){stage}{live}")

    def _show_posthoc(self, c: RunCurves) -> None:
        """Post-hoc logit adjustment's test accuracies at the last epoch (the posthoc_adjustment
        analysis), one part per tau; hidden for a run recorded without them."""
        label = self.query_one("#run-posthoc", Label)
        label.display = bool(c.posthoc)
        parts = [f"τ={r['tau']:g}: balanced {fmt_value(r['adjusted_balanced'])} "
                 f"({r['gain_balanced']:+.3f}), minority {fmt_value(r['adjusted_minority'])} "
                 f"({r['gain_minority']:+.3f})" for r in c.posthoc
                 if r["gain_balanced"] is not None and r["gain_minority"] is not None]
        label.update("post-hoc logit adjustment, test, last epoch · " + " · ".join(parts))

    def _show_lenses(self, c: RunCurves) -> None:
        """The one-number lenses (the initial_drop, learning_speed and guessing_bias analyses):
        each part shown where the run has its rows."""
        parts = lens_parts(c.lenses)
        label = self.query_one("#run-lenses", Label)
        label.display = bool(parts)
        label.update("\n".join(parts))

    # -- actions -----------------------------------------------------------------------------------
    def action_resolution(self) -> None:
        self.resolution = "epoch" if self.resolution == "step" else "step"
        self.load()

    def action_smooth(self) -> None:
        i = SMOOTHING.index(self.smoothing) if self.smoothing in SMOOTHING else 0
        self.smoothing = SMOOTHING[(i + 1) % len(SMOOTHING)]
        self.apply()  # smoothing is drawn from the buckets already loaded: no query

    def action_class_metric(self) -> None:
        keys = [k for k in CLASS_METRICS if not self.curves or k in self.curves.groups]
        i = keys.index(self.class_metric) if self.class_metric in keys else -1
        self.class_metric = keys[(i + 1) % len(keys)]
        self.load()

    def action_reload(self) -> None:
        self.load()

    def action_chart(self) -> None:
        from imbtui.tui.screens.chart import open_chart

        open_chart(self, [self.run_id], MetricRow, self.session)
