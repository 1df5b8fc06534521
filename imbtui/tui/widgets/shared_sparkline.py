"""A sparkline drawn on a y-range given from outside, so compared curves share one axis.

Textual's stock `Sparkline` scales each widget to its own min and max: a minority curve at
0.05-0.14 and a majority curve at 0.80-0.89 then draw exactly alike. Here the caller passes the
range (0..1 for accuracies), every curve of a comparison gets the same one, and a gap (no data yet)
stays blank, so a live run's curve grows from left to right.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

BLOCKS = " ▁▂▃▄▅▆▇█"
Values = Sequence[float | None]


def resample(values: Values, width: int) -> list[float | None]:
    """Fit `values` to `width` columns: means of consecutive runs, or repeats when stretching."""
    n = len(values)
    if n == 0 or width <= 0:
        return [None] * max(width, 0)
    out: list[float | None] = []
    for j in range(width):
        a = j * n // width
        b = max(a + 1, (j + 1) * n // width)
        chunk = [v for v in values[a:b] if v is not None and math.isfinite(v)]
        out.append(sum(chunk) / len(chunk) if chunk else None)
    return out


def level(value: float, lo: float, hi: float, height: int) -> int:
    """Eighths of a cell filled: lo draws 1 (a visible floor), hi draws 8 * height."""
    top = 8 * height
    frac = 0.0 if hi <= lo else min(1.0, max(0.0, (value - lo) / (hi - lo)))
    return 1 + int(math.floor(frac * (top - 1) + 0.5))


def sparkline_rows(values: Values, width: int, height: int, lo: float, hi: float) -> list[str]:
    """The text of a `height`-row sparkline, top row first."""
    levels = [None if v is None else level(v, lo, hi, height) for v in resample(values, width)]
    rows = []
    for r in range(height):
        base = 8 * (height - 1 - r)  # eighths below this row
        rows.append("".join(" " if lv is None else BLOCKS[min(8, max(0, lv - base))]
                            for lv in levels))
    return rows


class SharedSparkline(Widget):
    """One curve on a fixed y-range; its height is set in CSS (one row by default)."""

    DEFAULT_CSS = """
    SharedSparkline { height: 1; width: 1fr; min-width: 4; }
    """

    data: reactive[tuple[float | None, ...]] = reactive(tuple, layout=False)
    y_range: reactive[tuple[float, float]] = reactive((0.0, 1.0))
    mark: reactive[float | None] = reactive(None)  # a column to mark (fraction of the width)

    def __init__(self, data: Values = (), y_range: tuple[float, float] = (0.0, 1.0), *,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.set_reactive(SharedSparkline.data, tuple(data))
        self.set_reactive(SharedSparkline.y_range, y_range)

    def update(self, data: Values, y_range: tuple[float, float], mark: float | None = None
               ) -> None:
        self.data = tuple(data)
        self.y_range = y_range
        self.mark = mark

    def render(self) -> Text:
        width, height = self.content_size.width, max(1, self.content_size.height)
        lo, hi = self.y_range
        text = Text("\n".join(sparkline_rows(self.data, width, height, lo, hi)), no_wrap=True)
        col = mark_column(self.mark, width)
        if col is not None:  # the column's background, so the curve stays readable through it
            for r in range(height):
                text.stylize("on grey35", r * (width + 1) + col, r * (width + 1) + col + 1)
        return text


def mark_column(mark: float | None, width: int) -> int | None:
    """The column a mark at `mark` (a fraction of the x-axis) falls in, or None."""
    if mark is None or width <= 0:
        return None
    return min(width - 1, max(0, int(mark * width)))
