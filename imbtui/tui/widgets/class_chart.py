"""The training-set class counts as a column chart: the long tail at a glance."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from imbtui.tui.widgets.shared_sparkline import BLOCKS


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
        col = max(1, min(4, (self.content_size.width - 8) // n))
        top = max(c for c, _ in self.counts) or 1
        text = Text(no_wrap=True)
        for r in range(height):
            base = 8 * (height - 1 - r)
            label = f"{top:>6} " if r == 0 else " " * 7
            text.append(label, self.get_component_rich_style("class-chart--axis"))
            for count, grp in self.counts:
                lv = max(1, round(count / top * 8 * height))
                glyph = BLOCKS[min(8, max(0, lv - base))]
                text.append((glyph * max(1, col - 1)) + (" " if col > 1 else ""),
                            self.get_component_rich_style(f"class-chart--{grp}"))
            text.append("\n")
        smallest = min(c for c, _ in self.counts)
        text.append(f"{smallest:>6} ", self.get_component_rich_style("class-chart--axis"))
        text.append(f"{n} classes · ×{top / max(1, smallest):.0f}",
                    self.get_component_rich_style("class-chart--axis"))
        return text
