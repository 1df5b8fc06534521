"""The shared-axis sparkline and the small pure helpers of the app, checked against hand values."""

from __future__ import annotations

import asyncio

import pytest
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.widgets import Sparkline

from imbtui.tui.data import ema, forward_fill, last_value, y_range
from imbtui.tui.widgets import SharedSparkline, fmt_range, fmt_value, resample, sparkline_rows

MINORITY = [0.05, 0.08, 0.11, 0.14]
MAJORITY = [0.80, 0.83, 0.86, 0.89]


def test_levels_by_hand() -> None:
    # one row = 8 levels; lo draws level 1, hi level 8: level = 1 + floor(frac * 7 + 0.5)
    # 0.05 -> 1 (▁); 0.08, 0.11, 0.14 -> 2 (▂); 0.80 .. 0.89 -> 7 (▇)
    assert sparkline_rows(MINORITY, 4, 1, 0.0, 1.0) == ["▁▂▂▂"]
    assert sparkline_rows(MAJORITY, 4, 1, 0.0, 1.0) == ["▇▇▇▇"]


def test_two_rows_by_hand() -> None:
    # two rows = 16 levels: 0.5 -> 1 + floor(7.5 + 0.5) = 9 -> bottom full, top ▁; 1.0 -> 16
    assert sparkline_rows([0.0, 0.5, 1.0], 3, 2, 0.0, 1.0) == [" ▁█", "▁██"]


def test_gaps_stay_blank_and_values_clamp() -> None:
    assert sparkline_rows([None, 2.0, -1.0], 3, 1, 0.0, 1.0) == [" █▁"]


def test_resample_by_hand() -> None:
    assert resample([1.0, 3.0, 5.0, 7.0], 2) == [2.0, 6.0]           # means of pairs
    assert resample([1.0, 2.0], 4) == [1.0, 1.0, 2.0, 2.0]           # stretched
    assert resample([1.0, None, None, 4.0], 2) == [1.0, 4.0]         # gaps ignored in a mean
    assert resample([], 3) == [None, None, None]


class Curves(App[None]):
    def compose(self) -> ComposeResult:
        yield Sparkline(MINORITY, id="stock-min")
        yield Sparkline(MAJORITY, id="stock-maj")
        yield SharedSparkline(MINORITY, (0.0, 1.0), id="shared-min")
        yield SharedSparkline(MAJORITY, (0.0, 1.0), id="shared-maj")


def _text(app: App[None], selector: str) -> str:
    widget = app.query_one(selector)
    strips = widget.render_lines(Region(0, 0, widget.size.width, widget.size.height))
    return "".join(strip.text for strip in strips)


def test_shared_axis_draws_minority_and_majority_differently() -> None:
    """Textual's Sparkline scales each curve to its own min..max, so a 0.05-0.14 curve and a
    0.80-0.89 curve look the same; on the shared 0..1 axis they do not."""
    async def render() -> tuple[str, str, str, str]:
        app = Curves()
        async with app.run_test(size=(8, 6)) as pilot:
            await pilot.pause()
            return (_text(app, "#stock-min"), _text(app, "#stock-maj"),
                    _text(app, "#shared-min"), _text(app, "#shared-maj"))

    stock_min, stock_maj, shared_min, shared_maj = asyncio.run(render())
    assert stock_min == stock_maj  # the problem
    assert shared_min != shared_maj  # the fix
    assert shared_min == "▁▁▂▂▂▂▂▂" and shared_maj == "▇" * 8  # 4 points stretched to 8 columns


def test_y_range_is_fixed_for_accuracy_and_shared_otherwise() -> None:
    assert y_range("train_acc", [[0.05, 0.14], [0.8, 0.89]]) == (0.0, 1.0)
    assert y_range("loss", [[2.0, 0.5], [3.0, None]]) == (0.0, 3.0)
    assert y_range("margin", [[-1.5, 2.0], [4.0]]) == (-1.5, 4.0)
    assert y_range("probe_cos", [[0.2]]) == (-1.0, 1.0)
    assert y_range("loss", [[None]]) == (0.0, 1.0)


def test_ema_by_hand() -> None:
    # alpha 0.5: 1; 0.5*1 + 0.5*3 = 2; gap; 0.5*2 + 0.5*6 = 4
    assert ema([1.0, 3.0, None, 6.0], 0.5) == [1.0, 2.0, None, 4.0]
    assert ema([1.0, 2.0], 0.0) == [1.0, 2.0]


def test_forward_fill_stops_at_the_last_point() -> None:
    assert forward_fill([None, 1.0, None, 2.0, None]) == [None, 1.0, 1.0, 2.0, None]
    assert last_value([1.0, 2.0, None]) == 2.0


@pytest.mark.parametrize("value, text", [(0.8734, "0.873"), (12.44, "12.4"), (0.0, "0.000"),
                                         (0.00093, "9.3e-4"), (None, "–"), (1234.0, "1.2e3")])
def test_fmt_value(value: float | None, text: str) -> None:
    assert fmt_value(value) == text


def test_fmt_range() -> None:
    assert fmt_range(0.0, 1.0) == "0–1"
    assert fmt_range(-2.5, 11.84) == "−2.5–11.8"


def test_run_names_are_clipped_in_the_middle() -> None:
    from imbtui.tui.widgets.runs_table import clip_middle

    # width 15: 4 characters of the start, the ellipsis, the last 10 (worked out by hand)
    assert clip_middle("sample-mnist1d-r100-ce-s0", 15) == "samp…r100-ce-s0"
    assert clip_middle("sample-mnist1d-r10-ce-s0", 15) == "samp…-r10-ce-s0"
    assert clip_middle("exp100-ce", 15) == "exp100-ce"  # fits: unchanged
    assert clip_middle("abcdef", 1) == "a"
