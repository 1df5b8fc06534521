"""Snapshots of the chart view at 80x24 and 160x48, on the chart tests' store of known values
(fixed run ids and timestamps, so each snapshot is the same on every machine)."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot

from imbtui.tui.app import make_app
from imbtui.tui.screens.compare import CompareScreen
from imbtui.tui.screenshots import settle
from tests.tui.test_tui_chart import OTHER, SEEDS, write_chart_store


@pytest.fixture()
def chart_snap_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)  # the app shows the store path: keep it relative and fixed
    write_chart_store(tmp_path / "chart-store")
    return "chart-store"


class TestChartView:
    def test_chart_from_run_80x24(self, snap_compare, chart_snap_store: str
                                  ) -> None:  # type: ignore[no-untyped-def]
        async def before(pilot: Pilot[None]) -> None:
            await settle(pilot)
            await pilot.press("v")
            await settle(pilot)
            await pilot.press("left", "shift+left", "shift+left")  # the cursor at step 38
            await settle(pilot)

        app = make_app(chart_snap_store, open_run="run-s0")
        assert snap_compare(app, terminal_size=(80, 24), run_before=before)

    def test_chart_from_compare_seeds_log_160x48(self, snap_compare, chart_snap_store: str
                                                 ) -> None:  # type: ignore[no-untyped-def]
        async def before(pilot: Pilot[None]) -> None:
            await settle(pilot)
            pilot.app.push_screen(CompareScreen([*SEEDS, OTHER]))
            await settle(pilot)
            await pilot.press("v")
            await settle(pilot)
            await pilot.press("down", "down", "l")  # train loss, log-y; three seeds as a band
            await settle(pilot)

        assert snap_compare(make_app(chart_snap_store), terminal_size=(160, 48),
                            run_before=before)


class TestChartPerClass:
    def test_chart_per_class_80x24(self, snap_compare, chart_snap_store: str
                                   ) -> None:  # type: ignore[no-untyped-def]
        async def before(pilot: Pilot[None]) -> None:
            await settle(pilot)
            await pilot.press("v")
            await settle(pilot)
            await pilot.press("c")  # a line per class, largest first
            await settle(pilot)

        app = make_app(chart_snap_store, open_run="run-s0")
        assert snap_compare(app, terminal_size=(80, 24), run_before=before)

    def test_chart_per_class_loss_log_160x48(self, snap_compare, chart_snap_store: str
                                             ) -> None:  # type: ignore[no-untyped-def]
        async def before(pilot: Pilot[None]) -> None:
            await settle(pilot)
            await pilot.press("v")
            await settle(pilot)
            await pilot.press("c", "down", "down")  # per class: train loss
            await settle(pilot)
            await pilot.press("l", "left", "shift+left")  # log-y, the cursor at step 48
            await settle(pilot)

        app = make_app(chart_snap_store, open_run="run-s0")
        assert snap_compare(app, terminal_size=(160, 48), run_before=before)
