"""The rows of curves keep text and curves apart, at 80x24 and 160x48.

Defects these hold fixed: a value written straight after its curve (`▄▄▄-0.178`), a label running
into the first curve (`prediction share▅▅`), and the scrollbar thumb's eighth-block end reading as
two more curve cells after a row's last value (`0.822 ▂▂`). Each test renders the real screen (or
the row widget) and reads the text of the screen back.
"""

from __future__ import annotations

import asyncio
import html
import re
import time
from pathlib import Path

import pytest
from textual.app import App, ComposeResult

from imbtui.tui.app import ImbtuiApp, make_app
from imbtui.tui.screenshots import settle
from imbtui.tui.widgets import ClassCurves, ClassLine, CurvePair, MetricRow, fmt_value
from imbtui.tui.widgets.curves_scroll import CurvesScroll
from imbtui.tui.widgets.metric_row import VALUE_CHARS
from tests.tui.test_tui_snapshot import write_run

BLOCK = "▁▂▃▄▅▆▇█"
# a curve cell directly beside a character that is neither blank, curve nor separator
TOUCH = re.compile(f"[{BLOCK}][^\\s{BLOCK}│]|[^\\s{BLOCK}│][{BLOCK}]")
VALUE = r"(?:[-+]?\d[\d.e+-]*|–)"


def screen_lines(app: App) -> list[str]:
    """The screen's text, one string per terminal row (from Textual's own SVG screenshot)."""
    svg = app.export_screenshot()
    rows: dict[int, dict[int, str]] = {}
    pattern = (r'<text class="[^"]*" x="([\d.]+)" y="[\d.]+" textLength="[\d.]+" '
               r'clip-path="url\(#terminal-(?:\d+-)?line-(\d+)\)">([^<]*)</text>')
    for x, line, text in re.findall(pattern, svg):
        cells = rows.setdefault(int(line), {})
        for i, ch in enumerate(html.unescape(text).replace("\xa0", " ").rstrip("\n")):
            cells[round(float(x) / 12.2) + i] = ch
    return ["".join(r.get(i, " ") for i in range(max(r) + 1)).rstrip() if r else ""
            for _, r in sorted(rows.items())]


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    root = tmp_path / "store"
    write_run(root, "run-balanced", "balanced-ce", 1.0, "ce", "finished", 0)
    write_run(root, "run-exp100-ce", "exp100-ce", 100.0, "ce", "finished", 1, full=True)
    return root


def shoot(app: ImbtuiApp, size: tuple[int, int], keys: tuple[str, ...] = ()) -> list[str]:
    async def main() -> list[str]:
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            for key in keys:
                await pilot.press(key)
                await settle(pilot)
            return screen_lines(app)

    return asyncio.run(main())


def check_rows(lines: list[str], curve_rows: list[str]) -> None:
    assert curve_rows, "\n".join(lines)
    for line in curve_rows:
        assert not TOUCH.search(line), f"text touches a curve: {line!r}"
    for line in curve_rows:
        # nothing is drawn with a curve's glyphs after a row's last value (the scrollbar's thumb)
        tail = re.search(f"{VALUE}( +)([{BLOCK}]+) *$", line)
        assert tail is None, f"curve cells after the last value: {line!r}"


# ==== the screens, as a user sees them ============================================================

@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
@pytest.mark.parametrize("resolution", ["step", "epoch"])
def test_run_screen_rows(store: Path, size: tuple[int, int], resolution: str) -> None:
    keys = ("e",) if resolution == "epoch" else ()
    lines = shoot(make_app(store, open_run="run-exp100-ce"), size, keys)
    rows = [line for line in lines if "│" in line and "  " in line]  # metric rows: the separator
    check_rows(lines, rows)
    # the scroll region has a thumb at both sizes (the rows outgrow the screen)
    assert len(lines) == size[1]


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_compare_screen_rows(store: Path, size: tuple[int, int]) -> None:
    lines = shoot(make_app(store), size, ("space", "down", "space", "c"))
    rows = [line for line in lines if any(b in line for b in BLOCK)]
    check_rows(lines, rows)
    if size[1] >= 48:  # the row whose 16-character label ran into its first curve
        assert any(line.startswith(" prediction share ") for line in lines), "\n".join(lines)


# ==== the row widgets at a given width ============================================================

class RowApp(App[None]):
    def __init__(self, widget: object) -> None:
        super().__init__()
        self.widget = widget

    def compose(self) -> ComposeResult:
        yield self.widget  # type: ignore[misc]


def render(widget: object, size: tuple[int, int], setup) -> list[str]:  # type: ignore[no-untyped-def]
    app = RowApp(widget)

    async def main() -> list[str]:
        async with app.run_test(size=size) as pilot:
            setup(widget)
            await pilot.pause()
            return screen_lines(app)

    return asyncio.run(main())


@pytest.mark.parametrize("width", [60, 80, 160])
def test_metric_row_keeps_a_blank_cell_around_its_values(width: int) -> None:
    flat = [-0.178] * 40
    row = MetricRow("w_cos", "classifier cos")
    lines = render(row, (width, 1), lambda r: r.set_curves(
        [-0.1] * 40, flat, (-1.0, 1.0), -0.178, -0.00093))
    line = lines[0]
    assert not TOUCH.search(line), line
    assert "-0.178 │" in line and line.rstrip().endswith(" -9e-4"), line


def test_metric_row_long_label_is_cut_before_the_curve() -> None:
    row = MetricRow("feature_norm", "a very long metric label")
    lines = render(row, (80, 1), lambda r: r.set_curves(
        [1.0] * 20, [2.0] * 20, (-123.456, 1234.5), 1.0, 2.0))
    line = lines[0]
    assert "…" in line and not TOUCH.search(line), line
    assert line[MetricRow.LABEL_W - 1] == " ", line


@pytest.mark.parametrize("width", [12, 30, 50])
def test_curve_pair_keeps_a_blank_cell_before_its_values(width: int) -> None:
    pair = CurvePair()
    lines = render(pair, (width, 2), lambda p: p.update([-0.2] * 30, [-0.00093] * 30, (-1, 1)))
    for line in lines[:2]:
        assert not TOUCH.search(line), line


def test_class_curves_keep_their_columns_apart() -> None:
    curves = ClassCurves()
    rows = [ClassLine("a-long-class-name", "minority", 1234567, -0.5, 0.25, -0.75,
                      tuple([0.5] * 30))]
    lines = render(curves, (80, 3), lambda c: c.set_rows(rows, "per class: margin", (-1.0, 1.0)))
    assert not TOUCH.search(lines[1]), lines[1]


def test_curves_scroll_thumb_has_no_curve_glyphs() -> None:
    class Rows(App[None]):
        def compose(self) -> ComposeResult:
            with CurvesScroll():
                for i in range(30):  # a thumb of 19.2 rows: its end falls inside a cell
                    yield MetricRow(f"m{i}", f"metric {i}")

    lines = asyncio.run(_lines(Rows(), (80, 24)))
    assert not any(re.search(f"[{BLOCK}]", line) for line in lines), "\n".join(lines)


async def _lines(app: App, size: tuple[int, int]) -> list[str]:
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        return screen_lines(app)


@pytest.mark.parametrize("value", [-0.178, -0.00093, -1.2e-5, 123456.0, -98765.4, 1e-9, 0.5])
def test_fmt_value_fits_its_column(value: float) -> None:
    assert len(fmt_value(value)) <= VALUE_CHARS
