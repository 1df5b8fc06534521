"""One metric on the compare screen: a CurvePair per run, every curve on the same y-range."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label

from imbtui.tui.widgets.curve_pair import CurvePair
from imbtui.tui.widgets.metric_row import fmt_range


class CompareRow(Horizontal):
    """label and y-range · one CurvePair per run. The label keeps a blank cell before the first
    curve whatever its length (`prediction share` is 16 characters): padded, cut with an ellipsis."""

    LABEL_W = 18  # with its blank cell on the right
    can_focus = True  # Tab walks the rows; `v` charts the focused one

    DEFAULT_CSS = f"""
    CompareRow {{ height: auto; margin-bottom: 1; }}
    CompareRow:focus > .metric-label {{ text-style: reverse; }}
    CompareRow > .metric-label {{ width: {LABEL_W}; padding-right: 1; text-wrap: nowrap;
                                  text-overflow: ellipsis; }}
    """

    def __init__(self, key: str, label: str, n_runs: int) -> None:
        super().__init__(id=f"compare-{key}", classes="compare-row")
        self.key, self.label, self.n_runs = key, label, n_runs

    def compose(self) -> ComposeResult:
        yield Label(self.label, classes="metric-label")
        for i in range(self.n_runs):
            yield CurvePair(id=f"pair-{self.key}-{i}")

    def set_range(self, y_range: tuple[float, float]) -> None:
        self.query_one(".metric-label", Label).update(
            f"{self.label}\n[dim]{fmt_range(*y_range)}[/]")

    def pairs(self) -> list[CurvePair]:
        return list(self.query(CurvePair).results(CurvePair))
