"""One row per class, largest first: its training count, its own curve, final train / test accuracy
and the train-test gap (memorisation shows as a large gap on the small classes)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from imbtui.tui.widgets.metric_row import fmt_range, fmt_value
from imbtui.tui.widgets.shared_sparkline import Values, sparkline_rows


@dataclass(frozen=True)
class ClassLine:
    name: str
    grp: str
    train_count: int
    train_acc: float | None
    test_acc: float | None
    gap: float | None
    curve: tuple[float | None, ...]


def _num(v: float | None, signed: bool = False) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


class ClassCurves(Widget):
    """All classes in one widget (a hundred classes stay one widget, not five hundred)."""

    DEFAULT_CSS = """
    ClassCurves { height: auto; width: 1fr; }
    """
    COMPONENT_CLASSES = {"class-curves--majority", "class-curves--minority",
                         "class-curves--header", "class-curves--gap"}
    NAME_W, COUNT_W, NUM_W = 10, 7, 7

    lines: reactive[tuple[ClassLine, ...]] = reactive(tuple, layout=True)
    metric_label: reactive[str] = reactive("train accuracy")
    y_range: reactive[tuple[float, float]] = reactive((0.0, 1.0))

    def set_rows(self, lines: list[ClassLine], metric_label: str,
                 y_range: tuple[float, float]) -> None:
        self.metric_label = metric_label
        self.y_range = y_range
        self.lines = tuple(lines)

    def get_content_height(self, container, viewport, width: int) -> int:  # type: ignore[override]
        return len(self.lines) + 1

    def _curve_width(self) -> int:
        return max(4, self.content_size.width - self.NAME_W - self.COUNT_W - 3 * self.NUM_W - 2)

    def render(self) -> Text:
        cw = self._curve_width()
        head = (f"{'class':<{self.NAME_W}}{'train n':>{self.COUNT_W}} "
                f"{(self.metric_label + ' ' + fmt_range(*self.y_range))[:cw]:<{cw}} "
                f"{'train':>{self.NUM_W}}{'test':>{self.NUM_W}}{'gap':>{self.NUM_W}}")
        text = Text(no_wrap=True)
        text.append(head, self.get_component_rich_style("class-curves--header"))
        for line in self.lines:
            style = self.get_component_rich_style(f"class-curves--{line.grp}")
            curve = sparkline_rows(line.curve, cw, 1, *self.y_range)[0]
            text.append("\n")
            text.append(f"{line.name[:self.NAME_W]:<{self.NAME_W}}", style)
            text.append(f"{line.train_count:>{self.COUNT_W}} ")
            text.append(curve, style)
            text.append(f" {_num(line.train_acc):>{self.NUM_W}}{_num(line.test_acc):>{self.NUM_W}}")
            gap_style = (self.get_component_rich_style("class-curves--gap")
                         if line.gap is not None and line.gap > 0.2 else "")
            text.append(f"{_num(line.gap, signed=True):>{self.NUM_W}}", gap_style)
        return text


__all__ = ["ClassCurves", "ClassLine", "Values", "fmt_value"]
