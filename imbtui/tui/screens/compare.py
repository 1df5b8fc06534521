"""The compare screen: two or more runs side by side, majority and minority on shared axes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Header, Label

from imbtui.tui.data.config_diff import config_rows
from imbtui.tui.data.curves import group_curves, run_meta, steps_span, x_span
from imbtui.tui.data.metrics import GROUPS, METRICS, Series, ema, y_range
from imbtui.tui.data.session import StoreSession
from imbtui.tui.messages import CompareLoaded
from imbtui.tui.widgets import CompareRow
from imbtui.tui.widgets.config_diff import ConfigDiff
from imbtui.tui.widgets.curves_scroll import CurvesScroll
from imbtui.tui.widgets.runs_table import STATUS, method

if TYPE_CHECKING:
    from imbtui.tui.app import ImbtuiApp

REFRESH_S = 1.0
SMOOTHING = (0.0, 0.6, 0.9)


def run_heading(meta: dict[str, Any]) -> str:
    mark, _, style = STATUS.get(meta.get("status") or "", ("?", "", "dim"))
    ratio = meta.get("ratio")
    return (f"[{style}]{mark}[/] [b]{meta.get('name') or meta.get('run_id')}[/]\n"
            f"[dim]ratio {'?' if ratio is None else f'{ratio:g}'} · {method(meta)} · "
            f"{meta.get('dataset')}[/]")


class CompareScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "back", id="compare.back"),
        Binding("e", "resolution", "step/epoch", id="compare.resolution"),
        Binding("m", "smooth", "smoothing", id="compare.smooth"),
        Binding("a", "all_config", "all config", id="compare.all_config",
                tooltip="Show every config key, or only those that differ"),
        Binding("v", "chart", "chart", id="compare.chart",
                tooltip="The metric row in focus (or first in view) as a large chart"),
    ]

    def __init__(self, run_ids: list[str]) -> None:
        super().__init__(id="compare-screen")
        self.run_ids = list(run_ids)
        self.resolution = "step"
        self.smoothing = 0.0
        self.loaded: CompareLoaded | None = None
        self._session: StoreSession | None = None

    @property
    def imb(self) -> ImbtuiApp:
        return self.app  # type: ignore[return-value]

    @property
    def session(self) -> StoreSession:
        if self._session is None:
            self._session = self.imb.session.scoped(self.run_ids)
        return self._session

    def compose(self) -> ComposeResult:
        yield Header()
        with CurvesScroll(id="compare-body"):
            yield Label("", id="compare-mode")
            with Horizontal(id="compare-heads"):
                yield Label("[b #5fafff]━ majority[/]\n[b #ffaf5f]━ minority[/]",
                            classes="metric-label")
                for i, _ in enumerate(self.run_ids):
                    yield Label("", id=f"compare-head-{i}", classes="compare-head")
            yield ConfigDiff(id="compare-config")
            for m in METRICS:
                yield CompareRow(m.key, m.label, len(self.run_ids))
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"comparing {len(self.run_ids)} runs"
        for row in self.query(CompareRow):
            row.display = False
        self.load()
        self.set_interval(REFRESH_S, self._tick)

    def on_resize(self) -> None:
        self.load()

    def _width(self) -> int:
        usable = max(20, self.size.width or self.app.size.width) - 2 - CompareRow.LABEL_W
        return max(4, usable // len(self.run_ids) - 8)

    @work(thread=True, exclusive=True, exit_on_error=False, group="compare")
    def load(self) -> None:
        session = self.session
        generation = session.refresh()
        cur = session.cursor()
        try:
            width = self._width()
            # one x-axis for every run: the longest one's, so runs of different lengths line up
            # step for step (or epoch for epoch) and a shorter run's curves end early
            span = (steps_span(cur, self.run_ids) if self.resolution == "step"
                    else max(x_span(cur, r, self.resolution) for r in self.run_ids))
            groups = {r: group_curves(cur, r, width, self.resolution, span=span)
                      for r in self.run_ids}
            metas = {r: run_meta(cur, r) for r in self.run_ids}
        finally:
            cur.close()
        self.post_message(CompareLoaded(groups, metas, generation, span))

    def _tick(self) -> None:
        live = self.loaded and any(m.get("status") == "running" for m in
                                   self.loaded.metas.values())
        if live and self.is_current:
            self.load()

    @on(CompareLoaded)
    def on_compare_loaded(self, message: CompareLoaded) -> None:
        self.loaded = message
        self.apply()

    def apply(self) -> None:
        if self.loaded is None:
            return
        for i, rid in enumerate(self.run_ids):
            meta = self.loaded.metas.get(rid) or {"run_id": rid, "name": f"{rid} (gone)"}
            self.query_one(f"#compare-head-{i}", Label).update(run_heading(meta))
        for row in self.query(CompareRow):
            self._apply_row(row)
        metas = [self.loaded.metas.get(r) or {} for r in self.run_ids]
        self.config_diff.set_rows(config_rows(metas),
                                  [m.get("name") or rid for m, rid in zip(metas, self.run_ids)])
        smooth = "off" if not self.smoothing else f"{self.smoothing:g}"
        span = self.loaded.span - (self.resolution != "step")  # epochs: 0..N
        unit = "steps" if self.resolution == "step" else "epochs"
        self.query_one("#compare-mode", Label).update(
            f"[b]{self.resolution}[/] resolution (e) · EMA {smooth} (m) · x: 0–{span} {unit} "
            f"for every run · y: one range per row, shared by every curve in it")

    def _apply_row(self, row: CompareRow) -> None:
        assert self.loaded is not None
        per_run: list[list[Series]] = []
        for rid in self.run_ids:
            groups = self.loaded.groups.get(rid, {}).get(row.key, {})
            per_run.append([ema(groups.get(g, []), self.smoothing) for g in GROUPS])
        present = any(any(v is not None for v in s) for pair in per_run for s in pair)
        row.display = present
        if not present:
            return
        rng = y_range(row.key, [s for pair in per_run for s in pair])
        row.set_range(rng)
        for pair_widget, (maj, mnr) in zip(row.pairs(), per_run):
            pair_widget.update(maj, mnr, rng)

    @property
    def config_diff(self) -> ConfigDiff:
        return self.query_one(ConfigDiff)

    def action_all_config(self) -> None:
        self.config_diff.show_all = not self.config_diff.show_all

    def action_resolution(self) -> None:
        self.resolution = "epoch" if self.resolution == "step" else "step"
        self.load()

    def action_smooth(self) -> None:
        i = SMOOTHING.index(self.smoothing) if self.smoothing in SMOOTHING else 0
        self.smoothing = SMOOTHING[(i + 1) % len(SMOOTHING)]
        self.apply()

    def action_chart(self) -> None:
        from imbtui.tui.screens.chart import open_chart

        open_chart(self, self.run_ids, CompareRow, self.session)
