"""A line chart drawn in braille cells: labelled axes, several lines, bands, a cursor, log-y.

Each cell holds a 2 x 4 grid of dots, so a 100-column chart has 200 points across. A line is drawn
dot to dot in its colour (a dotted line leaves every other pair of dots out); a band (the seeds'
min to max) tints the background of the cells it covers; the cursor is a highlighted column.
Nothing here reads the store: the screen hands it a `Plot`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rich.color import Color
from rich.style import Style
from rich.text import Text
from textual.widget import Widget

Y_LABEL_W = 8  # the y tick labels: "1.2e-05 " fits
BRAILLE = 0x2800
# dot (column, row) of a cell -> its bit in the braille code point
DOT_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
BACKGROUND = Color.parse("#1e1e1e")
CURSOR_BG = Color.parse("#4a4a4a")


@dataclass
class PlotLine:
    x: list[float]
    y: list[float]
    colour: str
    dotted: bool = False
    lo: list[float] | None = None
    hi: list[float] | None = None


@dataclass
class Plot:
    lines: list[PlotLine] = field(default_factory=list)
    x_range: tuple[float, float] = (0.0, 1.0)
    y_range: tuple[float, float] = (0.0, 1.0)
    log_y: bool = False
    cursor_x: float | None = None
    x_label: str = ""
    y_label: str = ""


# ==== ticks and their labels ======================================================================

def nice_ticks(lo: float, hi: float, most: int) -> list[float]:
    """Round values (1, 2, 5 x 10^k apart) within [lo, hi], at most `most` of them."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo or most < 2:
        return [lo]
    raw = (hi - lo) / (most - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw - 1e-12)
    first = math.ceil(lo / step - 1e-9) * step
    n = int(math.floor((hi - first) / step + 1e-9)) + 1
    return [round(first + i * step, 12) for i in range(max(n, 0))]


def log_ticks(lo: float, hi: float, most: int) -> list[float]:
    """Ticks of a log10 axis whose ends are lo, hi (in log10 units): decades, thinned to `most`,
    or 1-2-5 steps inside a range shorter than a decade."""
    decades = list(range(math.ceil(lo - 1e-9), math.floor(hi + 1e-9) + 1))
    if len(decades) >= 2:
        every = max(1, math.ceil(len(decades) / max(1, most)))
        return [float(d) for d in decades[::every]]
    ticks = [math.log10(m * 10.0 ** k) for k in range(math.floor(lo) - 1, math.ceil(hi) + 1)
             for m in (1, 2, 5)]
    return [t for t in ticks if lo - 1e-9 <= t <= hi + 1e-9][:most] or [lo]


def tick_label(value: float) -> str:
    """Short label: 0.25, 12, 1.5k, 2M, 1e-04."""
    a = abs(value)
    if a == 0:
        return "0"
    if a >= 1e6:
        return f"{value / 1e6:.3g}M"
    if a >= 1e4:
        return f"{value / 1e3:.3g}k"
    if a >= 1:
        return f"{value:.4g}"
    if a >= 1e-3:
        return f"{value:.3g}"
    return f"{value:.0e}"


# ==== the canvas ==================================================================================

class Canvas:
    """Cells of braille dots with a colour each, and a background per cell."""

    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        self.bits = [[0] * width for _ in range(height)]
        self.fg: list[list[str | None]] = [[None] * width for _ in range(height)]
        self.bg: list[list[Color | None]] = [[None] * width for _ in range(height)]

    def dot(self, dx: int, dy: int, colour: str) -> None:
        cx, cy = dx // 2, dy // 4
        if 0 <= cx < self.w and 0 <= cy < self.h:
            self.bits[cy][cx] |= DOT_BITS[dx % 2][dy % 4]
            self.fg[cy][cx] = colour

    def segment(self, a: tuple[int, int], b: tuple[int, int], colour: str,
                dotted: bool) -> None:
        """Dots from a to b (Bresenham); `dotted` keeps two dot columns of every four."""
        (x0, y0), (x1, y1) = a, b
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x1 > x0 else -1), (1 if y1 > y0 else -1)
        err = dx + dy
        while True:
            if not dotted or x0 % 4 < 2:
                self.dot(x0, y0, colour)
            if (x0, y0) == (x1, y1):
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def shade(self, cx: int, cy0: int, cy1: int, colour: Color) -> None:
        for cy in range(max(0, min(cy0, cy1)), min(self.h, max(cy0, cy1) + 1)):
            if 0 <= cx < self.w:
                self.bg[cy][cx] = colour


def blend(colour: str, alpha: float) -> Color:
    """`colour` at `alpha` over the chart's background: a band's tint."""
    c = Color.parse(colour).get_truecolor()
    b = BACKGROUND.get_truecolor()
    return Color.from_rgb(*(round(b[i] + alpha * (c[i] - b[i])) for i in range(3)))


# ==== the widget ==================================================================================

class LineChart(Widget):
    """Draws a `Plot` into its whole region: title row, plot, x-axis line, x tick labels."""

    DEFAULT_CSS = """
    LineChart { height: 1fr; min-height: 8; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.plot = Plot()

    def set_plot(self, plot: Plot) -> None:
        self.plot = plot
        self.refresh()

    # -- geometry ----------------------------------------------------------------------------------
    def plot_size(self) -> tuple[int, int]:
        """(columns, rows) of the plot area at the widget's current size."""
        return max(4, self.size.width - Y_LABEL_W - 2), max(2, self.size.height - 3)

    def _y_pos(self, v: float) -> float | None:
        """A value as a fraction of the y-axis (log10 when log_y; None for v <= 0 on log)."""
        if self.plot.log_y:
            if v <= 0:
                return None
            v = math.log10(v)
        lo, hi = self.plot.y_range
        return (v - lo) / (hi - lo) if hi > lo else 0.5

    def _x_pos(self, x: float) -> float:
        lo, hi = self.plot.x_range
        return (x - lo) / (hi - lo) if hi > lo else 0.0

    # -- drawing -----------------------------------------------------------------------------------
    def render(self) -> Text:
        pw, ph = self.plot_size()
        canvas = Canvas(pw, ph)
        for line in self.plot.lines:
            if line.lo is not None and line.hi is not None:
                self._band(canvas, line)
        for line in self.plot.lines:
            self._line(canvas, line)
        cursor_col = None
        if self.plot.cursor_x is not None:
            cursor_col = round(self._x_pos(self.plot.cursor_x) * (pw * 2 - 1)) // 2
        return self._to_text(canvas, cursor_col)

    def _dot(self, canvas: Canvas, x: float, y: float) -> tuple[int, int] | None:
        fy = self._y_pos(y)
        if fy is None:
            return None
        dx = round(self._x_pos(x) * (canvas.w * 2 - 1))
        dy = round((1 - min(1.0, max(0.0, fy))) * (canvas.h * 4 - 1))
        return dx, dy

    def _line(self, canvas: Canvas, line: PlotLine) -> None:
        prev: tuple[int, int] | None = None
        for x, y in zip(line.x, line.y):
            here = self._dot(canvas, x, y)
            if here is None:
                prev = None
                continue
            if prev is None:
                canvas.dot(*here, line.colour)
            else:
                canvas.segment(prev, here, line.colour, line.dotted)
            prev = here

    def _band(self, canvas: Canvas, line: PlotLine) -> None:
        tint = blend(line.colour, 0.3)
        assert line.lo is not None and line.hi is not None
        for x, lo, hi in zip(line.x, line.lo, line.hi):
            a, b = self._dot(canvas, x, lo), self._dot(canvas, x, hi)
            if a is not None and b is not None:
                canvas.shade(a[0] // 2, a[1] // 4, b[1] // 4, tint)

    def _to_text(self, canvas: Canvas, cursor_col: int | None) -> Text:
        pw, ph = canvas.w, canvas.h
        y_ticks = self._y_ticks(ph)
        text = Text(no_wrap=True, overflow="crop")
        styles: dict[tuple[Any, Any], Style | None] = {}
        text.append(self.plot.y_label[: self.size.width] + "\n", style="bold")
        for row in range(ph):
            label = y_ticks.get(row)
            text.append((label or "").rjust(Y_LABEL_W - 1)[: Y_LABEL_W - 1] + " ", style="dim")
            text.append("┤" if label is not None else "│", style="dim")
            # cells of one style go in as one span: a 300-column row is a few spans, not 300
            run_chars: list[str] = []
            run_key: tuple[Any, Any] | None = None
            bits_row, fg_row, bg_row = canvas.bits[row], canvas.fg[row], canvas.bg[row]
            for col in range(pw):
                bits = bits_row[col]
                key = (fg_row[col], CURSOR_BG if col == cursor_col else bg_row[col])
                if key != run_key and run_chars:
                    text.append("".join(run_chars), styles.get(run_key))
                    run_chars = []
                if key not in styles:
                    styles[key] = Style(color=key[0], bgcolor=key[1]) if any(key) else None
                run_key = key
                run_chars.append(chr(BRAILLE + bits) if bits else " ")
            if run_chars:
                text.append("".join(run_chars), styles.get(run_key))
            text.append("\n")
        axis, labels = self._x_axis(pw)
        text.append(" " * (Y_LABEL_W - 1) + " └" + axis + "\n", style="dim")
        text.append(" " * (Y_LABEL_W + 1) + labels, style="dim")
        return text

    def _y_ticks(self, ph: int) -> dict[int, str]:
        """plot row -> tick label."""
        lo, hi = self.plot.y_range
        most = max(2, ph // 3 + 1)
        if self.plot.log_y:
            values = [(t, tick_label(10 ** t)) for t in log_ticks(lo, hi, most)]
        else:
            values = [(t, tick_label(t)) for t in nice_ticks(lo, hi, most)]
        out: dict[int, str] = {}
        for t, label in values:
            f = (t - lo) / (hi - lo) if hi > lo else 0.5
            row = round((1 - f) * (ph * 4 - 1)) // 4
            if 0 <= row < ph:
                out.setdefault(row, label)
        return out

    def _x_axis(self, pw: int) -> tuple[str, str]:
        """The x-axis line (with ┬ at ticks) and the tick labels under it, the axis' name last."""
        lo, hi = self.plot.x_range
        name = f" {self.plot.x_label}"
        ticks = nice_ticks(lo, hi, max(2, (pw - len(name)) // 10))
        axis = ["─"] * pw
        labels = [" "] * pw
        for t in ticks:
            col = round(self._x_pos(t) * (pw * 2 - 1)) // 2
            label = tick_label(t)
            start = min(max(0, col - len(label) // 2), pw - len(label))
            if not 0 <= col < pw or any(c != " " for c in labels[max(0, start - 1):
                                                                 start + len(label) + 1]):
                continue
            if start + len(label) > pw - len(name):
                continue
            axis[col] = "┬"
            labels[start:start + len(label)] = list(label)
        labels[pw - len(name):] = list(name)
        return "".join(axis), "".join(labels)
