"""A run's majority and minority curves stacked, for the compare screen (shared y-range)."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from imbtui.tui.widgets.metric_row import VALUE_CHARS, fmt_value
from imbtui.tui.widgets.shared_sparkline import Values, sparkline_rows


class CurvePair(Widget):
    """Two rows: majority curve + value, minority curve + value, drawn on the range given; a
    blank cell between curve and value (fmt_value never writes more than VALUE_WIDTH)."""

    DEFAULT_CSS = """
    CurvePair { height: 2; width: 1fr; min-width: 12; padding-right: 1; }
    """
    COMPONENT_CLASSES = {"curve-pair--majority", "curve-pair--minority"}
    VALUE_WIDTH = VALUE_CHARS

    curves: reactive[tuple[tuple[float | None, ...], tuple[float | None, ...]]] = reactive(
        ((), ()))
    y_range: reactive[tuple[float, float]] = reactive((0.0, 1.0))

    def update(self, majority: Values, minority: Values, y_range: tuple[float, float]) -> None:
        self.curves = (tuple(majority), tuple(minority))
        self.y_range = y_range

    def render(self) -> Text:
        width = max(1, self.content_size.width - self.VALUE_WIDTH - 1)
        text = Text(no_wrap=True)
        for i, (values, part) in enumerate(zip(self.curves, ("majority", "minority"))):
            style = self.get_component_rich_style(f"curve-pair--{part}")
            line = sparkline_rows(values, width, 1, *self.y_range)[0]
            last = next((v for v in reversed(values) if v is not None), None)
            text.append(line, style)
            text.append(" " + fmt_value(last).rjust(self.VALUE_WIDTH), style)
            if i == 0:
                text.append("\n")
        return text
