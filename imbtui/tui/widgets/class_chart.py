"""The training-set class counts as a column chart: the long tail at a glance."""

from __future__ import annotations

import math

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from imbtui.tui.widgets.shared_sparkline import BLOCKS

AXIS_W = 7  # "  1000 " left of the columns


def bars(counts: tuple[tuple[int, str], ...], width: int) -> tuple[list[tuple[int, str]], int]:
    """(count, grp) per drawn column, and the cells per column, to fit `width` cells.

    Up to 4 cells per class while they fit; with more classes than cells (CIFAR-100 on an
    80-column terminal) consecutive classes by rank share a column, drawn at the largest count
    among them, in the colour most of them have, so every class is still on the chart."""
    n = len(counts)
    if n <= width:
        return list(counts), max(1, min(4, width // n))
    per = math.ceil(n / width)
    out = []
    for i in range(0, n, per):
        chunk = counts[i:i + per]
        minority = sum(g == "minority" for _, g in chunk)
        out.append((max(c for c, _ in chunk),
                    "minority" if 2 * minority > len(chunk) else "majority"))
    return out, 1


class ClassCountChart(Widget):
    """One column per class, largest first; majority and minority classes in their two colours."""

    DEFAULT_CSS = """
    ClassCountChart { height: 6; width: 1fr; }
    """
    COMPONENT_CLASSES = {"class-chart--majority", "class-chart--minority", "class-chart--axis"}

    counts: reactive[tuple[tuple[int, str], ...]] = reactive(tuple)  # (count, grp) by rank

    def render(self) -> Text:
        if not self.counts:
            return Text("no class table yet", style="dim")
        height = max(1, self.content_size.height - 1)
        n = len(self.counts)
        columns, col = bars(self.counts, max(1, self.content_size.width - AXIS_W - 1))
        top = max(c for c, _ in self.counts) or 1
        text = Text(no_wrap=True)
        for r in range(height):
            base = 8 * (height - 1 - r)
            label = f"{top:>6} " if r == 0 else " " * AXIS_W
            text.append(label, self.get_component_rich_style("class-chart--axis"))
            for count, grp in columns:
                lv = max(1, round(count / top * 8 * height))
                glyph = BLOCKS[min(8, max(0, lv - base))]
                text.append((glyph * max(1, col - 1)) + (" " if col > 1 else ""),
                            self.get_component_rich_style(f"class-chart--{grp}"))
            text.append("\n")
        smallest = min(c for c, _ in self.counts)
        caption = f"{n} classes · ×{top / max(1, smallest):.0f}"
        per = f" · {math.ceil(n / len(columns))} per column"
        if len(columns) < n and len(caption + per) <= self.content_size.width - AXIS_W:
            caption += per
        text.append(f"{smallest:>6} ", self.get_component_rich_style("class-chart--axis"))
        text.append(caption, self.get_component_rich_style("class-chart--axis"))
        return text
