"""A vertical scroll area for rows of curves, whose scrollbar is drawn in whole cells.

Textual draws the ends of a scrollbar's thumb with the eighth-block glyphs `▁▂▃▄▅▆▇`, the same
glyphs a sparkline is drawn with. Beside a row of curves the thumb's end then reads as two more
curve cells after the row's last value (`0.822 ▂▂`), in any capture of the screen and on a terminal
whose thumb colour is close to the curves'. Here the thumb covers whole cells only: it moves a cell
at a time, and nothing outside a curve is ever drawn with a curve's glyphs.
"""

from __future__ import annotations

from typing import ClassVar

from textual.containers import VerticalScroll
from textual.scrollbar import ScrollBarRender


class WholeCellScrollBarRender(ScrollBarRender):
    """A scrollbar whose thumb ends on cell boundaries (no partial-cell glyphs)."""

    VERTICAL_BARS: ClassVar[list[str]] = [" "] * 8


class CurvesScroll(VerticalScroll):
    """VerticalScroll for the run and compare screens' rows of curves."""

    def on_mount(self) -> None:
        self.vertical_scrollbar.renderer = WholeCellScrollBarRender
