"""Snapshots of the states added by the runs filter's qualifiers and compare's config table, at
80x24 and 160x48 (the store: test_tui_snapshot's fixed runs)."""

from __future__ import annotations

import pytest
from textual.pilot import Pilot

from imbtui.tui.app import make_app
from imbtui.tui.screenshots import settle
from tests.tui.test_tui_snapshot import snap_store  # noqa: F401  (the fixture)

SIZES = [(80, 24), (160, 48)]


class TestRunsFilter:
    @pytest.mark.parametrize("size", SIZES)
    def test_qualifiers(self, snap_compare, snap_store: str, size  # noqa: F811
                        ) -> None:  # type: ignore[no-untyped-def]
        async def before(pilot: Pilot[None]) -> None:
            await settle(pilot)
            await pilot.press("slash", *"ratio>=10 method:ce*", "enter")
            await settle(pilot)

        assert snap_compare(make_app(snap_store), terminal_size=size, run_before=before)

    @pytest.mark.parametrize("size", SIZES)
    def test_bad_filter(self, snap_compare, snap_store: str, size  # noqa: F811
                        ) -> None:  # type: ignore[no-untyped-def]
        async def before(pilot: Pilot[None]) -> None:
            await settle(pilot)
            pilot.app.screen.query_one("#runs-filter").cursor_blink = False  # the focus stays there
            await pilot.press("slash", *"ratio>=100x")
            await settle(pilot)

        assert snap_compare(make_app(snap_store), terminal_size=size, run_before=before)


class TestCompareConfig:
    @pytest.mark.parametrize("size", SIZES)
    def test_config_diff(self, snap_compare, snap_store: str, size  # noqa: F811
                         ) -> None:  # type: ignore[no-untyped-def]
        async def before(pilot: Pilot[None]) -> None:
            await settle(pilot)
            await pilot.press("space", "down", "down", "space", "c")  # ratio 1 vs the failed ldam
            await settle(pilot)

        assert snap_compare(make_app(snap_store), terminal_size=size, run_before=before)

    @pytest.mark.parametrize("size", SIZES)
    def test_all_config(self, snap_compare, snap_store: str, size  # noqa: F811
                        ) -> None:  # type: ignore[no-untyped-def]
        async def before(pilot: Pilot[None]) -> None:
            await settle(pilot)
            await pilot.press("space", "down", "space", "c")
            await settle(pilot)
            await pilot.press("a")
            await settle(pilot)

        assert snap_compare(make_app(snap_store), terminal_size=size, run_before=before)
