"""Snapshots of the SQL screen's states at 80x24 and 160x48: the placeholder of an empty editor,
the completion list, the catalog pane, results in tabs, and the export dialog.

The store is the closed-form one of test_tui_snapshot.py (fixed run ids and times).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from imbtui.tui.app import make_app
from imbtui.tui.screenshots import settle
from tests.tui.test_tui_snapshot import snap_store  # noqa: F401  (the fixture)

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]

Before = Callable[[Pilot[None]], Awaitable[None]]


@pytest.fixture(autouse=True)
def own_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No history from elsewhere (Up in an empty editor would recall it)."""
    monkeypatch.setenv("IMBTUI_STATE_DIR", str(tmp_path / "state"))


async def open_sql(pilot: Pilot[None]) -> None:
    await settle(pilot)
    await pilot.press("f3")
    await settle(pilot)
    pilot.app.screen.editor.cursor_blink = False


def steady_status(pilot: Pilot[None]) -> None:
    # a query's wall time differs from run to run
    status = pilot.app.screen.status
    status.update(re.sub(r"in \d+ ms", "in N ms", str(status.render())))


async def placeholder(pilot: Pilot[None]) -> None:
    await open_sql(pilot)


async def completion(pilot: Pilot[None]) -> None:
    await open_sql(pilot)
    await pilot.press(*"SELECT name, test_m")
    await pilot.pause()


async def catalog(pilot: Pilot[None]) -> None:
    await open_sql(pilot)
    await pilot.press("ctrl+b")
    await pilot.pause()
    pane = pilot.app.screen.catalog_pane
    final = next(n for n in pane.tree.root.children if n.data.name == "final_results")
    final.expand()
    await pilot.pause()
    pane.tree.move_cursor(final.children[3])
    await pilot.pause()


async def tabs(pilot: Pilot[None]) -> None:
    await open_sql(pilot)
    editor = pilot.app.screen.editor
    editor.load_text("SELECT name, ratio, loss, status FROM runs ORDER BY name;\n"
                     "SELECT r.name, f.test_majority, f.test_minority\n"
                     "FROM final_results f JOIN runs r USING (run_id) ORDER BY r.name;\n")
    for row in (0, 1):
        editor.move_cursor((row, 0))
        await pilot.press("ctrl+r")
        await settle(pilot)
    steady_status(pilot)
    await pilot.pause()


async def export_dialog(pilot: Pilot[None]) -> None:
    await tabs(pilot)
    await pilot.press("ctrl+s")
    await pilot.pause()


class TestSqlScreenStates:
    @pytest.mark.parametrize("size", SIZES)
    @pytest.mark.parametrize("before", [placeholder, completion, catalog, tabs, export_dialog],
                             ids=lambda f: f.__name__)
    def test_state(self, snap_compare, snap_store: str, before: Before,  # noqa: F811
                   size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
        assert snap_compare(make_app(snap_store), terminal_size=size, run_before=before)
