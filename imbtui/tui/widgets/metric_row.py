"""One metric of a run: the majority and the minority curve side by side on one shared y-axis."""

from __future__ import annotations

import math

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label

from imbtui.tui.widgets.shared_sparkline import SharedSparkline, Values


VALUE_CHARS = 6  # the most characters `fmt_value` writes: a value column this wide always fits


def fmt_value(value: float | None) -> str:
    """Short number of at most VALUE_CHARS characters: 0.873, -0.178, 12.4, 9.3e-4, -9e-4."""
    if value is None or not math.isfinite(value):
        return "–"
    a = abs(value)
    if a == 0 or 1e-3 <= a < 10:
        return f"{value:.3f}"
    if 10 <= a < 1000:
        return f"{value:.1f}"
    for digits in (1, 0):  # 9.3e-4, not 9.3e-04; a negative one drops its decimal: -9e-4
        mantissa, exponent = f"{value:.{digits}e}".split("e")
        text = f"{mantissa}e{int(exponent)}"
        if len(text) <= VALUE_CHARS:
            break
    return text


def fmt_range(lo: float, hi: float) -> str:
    """`0–1`, `0–3.29`, `−2.3–11.8`: the y-axis a row's curves share."""
    def short(v: float) -> str:
        text = fmt_value(v)
        if "." in text and "e" not in text:
            text = text.rstrip("0").rstrip(".")
        return (text or "0").replace("-", "−")

    return f"{short(lo)}–{short(hi)}"


class MetricRow(Horizontal):
    """label · majority curve · value │ minority curve · value (both curves on one y-range).

    Every text cell keeps one blank cell between itself and a curve, whatever it holds: the label
    is padded on its right and cut with an ellipsis, the value column is VALUE_CHARS wide plus a
    blank on each side (`-0.178` never touches the curve before it or the separator after it).
    """

    LABEL_W = 24                 # with its blank cell on the right
    VALUE_W = VALUE_CHARS + 2    # a blank cell, the value, a blank cell
    can_focus = True             # Tab walks the rows; `v` charts the focused one

    DEFAULT_CSS = f"""
    MetricRow {{ height: auto; }}
    MetricRow:focus > .metric-label {{ text-style: reverse; }}
    MetricRow > .metric-label {{ width: {LABEL_W}; padding-right: 1; text-wrap: nowrap;
                                 text-overflow: ellipsis; }}
    MetricRow > .metric-value {{ width: {VALUE_W}; text-align: right; padding: 0 1; }}
    MetricRow > .metric-sep {{ width: 1; color: $foreground-muted; }}
    """

    def __init__(self, key: str, label: str, tooltip: str = "") -> None:
        super().__init__(id=f"metric-{key}", classes="metric-row")
        self.key = key
        self.label = label
        self.tooltip = tooltip

    def compose(self) -> ComposeResult:
        yield Label(self.label, classes="metric-label")
        yield SharedSparkline(classes="curve majority")
        yield Label("–", classes="metric-value majority")
        yield Label("│", classes="metric-sep")
        yield SharedSparkline(classes="curve minority")
        yield Label("–", classes="metric-value minority")

    def set_curves(self, majority: Values, minority: Values, y_range: tuple[float, float],
                   maj_value: float | None, min_value: float | None,
                   mark: float | None = None) -> None:
        """`mark`: where a second stage begins, as a fraction of the x-axis (a shaded column)."""
        lines = self.query(SharedSparkline)
        lines[0].update(majority, y_range, mark)
        lines[1].update(minority, y_range, mark)
        values = self.query(".metric-value").results(Label)
        for label, v in zip(values, (maj_value, min_value)):
            label.update(fmt_value(v))
        # the shared axis is part of the label: both curves of the row are drawn on it
        self.query_one(".metric-label", Label).update(
            f"{self.label} [dim]{fmt_range(*y_range)}[/]")
