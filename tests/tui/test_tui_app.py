"""Pilot tests that drive the real app against stores made by the real trainer."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from textual.message import Message
from textual.pilot import Pilot

from imbtui.tui import sample as sample_mod
from imbtui.tui.app import ImbtuiApp, make_app
from imbtui.tui.data import (
    group_curves,
)
from imbtui.tui.messages import QueryDone, QueryFailed, RunLoaded, RunsLoaded
from imbtui.tui.screenshots import settle
from tests.conftest import imbtui

from tests.tui.conftest import (Script, cursor, drive, expected_test_accuracy, parts,  # noqa: F401
                                run_ids)


# ==== pilot tests: the real app ===================================================================

def cell_text(table: Any, key: str, column: str) -> str:
    return str(table.get_cell(key, column))


def test_runs_screen_lists_runs_with_their_accuracy(two_runs: Path) -> None:
    messages: list[Message] = []

    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        table = app.screen.table
        ids = run_ids(two_runs)
        assert sorted(table.keys) == sorted(ids.values())
        for rid in ids.values():
            bal, maj, mnr = expected_test_accuracy(two_runs, rid)
            assert cell_text(table, rid, "bal") == f"{bal:.3f}"[1:]
            assert cell_text(table, rid, "min") == f"{mnr:.3f}"[1:]
            assert "done" in cell_text(table, rid, "status")
            assert cell_text(table, rid, "progress").endswith("100%")

    drive(make_app(two_runs), script, messages=messages)
    loaded = [m for m in messages if isinstance(m, RunsLoaded)]
    assert loaded and loaded[0].frame.height == 2


def test_filter_sort_and_selection(two_runs: Path) -> None:
    ids = run_ids(two_runs)

    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        screen = app.screen
        await pilot.press("slash", "r", "1", "0", "0")
        await pilot.pause()
        assert screen.table.keys == [ids["r100"]]
        await pilot.press("escape")  # clears the filter, back to the table
        await pilot.pause()
        assert sorted(screen.table.keys) == sorted(ids.values())
        assert screen.table.has_focus
        # sort by name (second key of the cycle), then reverse: the cursor's run stays selected
        await pilot.press("s")
        assert screen.sort_key == "name"
        assert screen.table.keys == [ids["r10"], ids["r100"]]
        await pilot.press("down")
        assert screen.table.current_key() == ids["r100"]
        await pilot.press("S")
        assert screen.table.keys == [ids["r100"], ids["r10"]]
        assert screen.table.current_key() == ids["r100"]

    drive(make_app(two_runs), script)


def test_run_screen_shows_shared_axes_and_class_rows(two_runs: Path) -> None:
    rid = run_ids(two_runs)["r100"]
    messages: list[Message] = []

    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        from imbtui.tui.widgets import ClassCurves, MetricRow, SharedSparkline

        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        assert screen.run_id == rid
        row = screen.query_one("#metric-train_acc", MetricRow)
        maj, mnr = row.query(SharedSparkline)
        assert maj.y_range == mnr.y_range == (0.0, 1.0)
        loss = screen.query_one("#metric-loss", MetricRow).query(SharedSparkline)
        assert loss[0].y_range == loss[1].y_range  # one axis for both groups
        assert loss[0].y_range[1] == max(v for s in (loss[0].data, loss[1].data)
                                         for v in s if v is not None)  # the value itself
        classes = screen.query_one(ClassCurves)
        assert [c.train_count for c in classes.lines] == sorted(
            (c.train_count for c in classes.lines), reverse=True)
        await pilot.press("e")
        await settle(pilot)
        assert screen.curves.resolution == "epoch"
        assert len(row.query(SharedSparkline)[0].data) == 3  # epochs 0, 1, 2
        before = row.query(SharedSparkline)[0].data
        await pilot.press("m")
        assert screen.smoothing == 0.6
        assert row.query(SharedSparkline)[0].data != before
        await pilot.press("escape")
        assert type(app.screen).__name__ == "RunsScreen"

    drive(make_app(two_runs), script, messages=messages)
    assert any(isinstance(m, RunLoaded) and m.curves.run_id == rid for m in messages)


def test_compare_marked_runs_on_one_axis(two_runs: Path) -> None:
    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        from imbtui.tui.widgets import CompareRow

        await pilot.press("c")  # nothing marked yet: a warning, no screen
        assert type(app.screen).__name__ == "RunsScreen"
        await pilot.press("space", "down", "space")
        assert len(app.screen.marked) == 2
        await pilot.press("c")
        await settle(pilot)
        screen = app.screen
        assert type(screen).__name__ == "CompareScreen"
        for key in ("train_acc", "loss"):
            pairs = screen.query_one(f"#compare-{key}", CompareRow).pairs()
            assert len(pairs) == 2
            assert pairs[0].y_range == pairs[1].y_range
            assert all(any(v is not None for v in c) for p in pairs for c in p.curves)

    drive(make_app(two_runs), script)


def test_delete_asks_first(scratch_store: Path) -> None:
    ids = run_ids(scratch_store)

    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        key = app.screen.table.current_key()
        await pilot.press("d")
        assert type(app.screen).__name__ == "ConfirmScreen"
        await pilot.press("n")
        await settle(pilot)
        assert (scratch_store / "runs" / key).exists()
        await pilot.press("d", "y")
        await settle(pilot)
        assert not (scratch_store / "runs" / key).exists()
        assert key not in app.screen.table.keys and len(app.screen.table.keys) == 1

    drive(make_app(scratch_store), script)
    assert len(run_ids(scratch_store)) == len(ids) - 1


def sql_script(sql: str, then: Script | None = None) -> Script:
    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> Any:
        await pilot.press("f3")
        await pilot.pause()
        app.screen.editor.load_text(sql)
        await pilot.press("ctrl+r")
        await settle(pilot)
        return await then(app, pilot) if then else None

    return script


def test_sql_screen_runs_a_query(two_runs: Path) -> None:
    messages: list[Message] = []

    async def check(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        table = app.screen.query_one("#sql-table")
        assert table.row_count == 2
        assert "2 rows" in str(app.screen.status.render())

    drive(make_app(two_runs), sql_script("SELECT run_id, name FROM runs ORDER BY name",
                                         check), messages=messages)
    done = [m for m in messages if isinstance(m, QueryDone)]
    assert done and done[0].result.frame["name"].to_list() == ["r10", "r100"]


def test_sql_typed_on_opening_replaces_the_example(two_runs: Path) -> None:
    messages: list[Message] = []

    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        await pilot.press("f3")
        await pilot.pause()
        await pilot.press(*"SELECT 42 AS x")
        assert app.screen.editor.text == "SELECT 42 AS x"
        await pilot.press("ctrl+r")
        await settle(pilot)

    drive(make_app(two_runs), script, messages=messages)
    done = [m for m in messages if isinstance(m, QueryDone)]
    assert done and done[0].result.frame.to_dicts() == [{"x": 42}]


def test_sql_errors_show_inline_and_nothing_is_written(two_runs: Path) -> None:
    messages: list[Message] = []
    before = sorted(p.name for p in two_runs.rglob("*"))

    async def check(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        assert "error" in str(app.screen.status.render())
        app.screen.editor.load_text("SELECT * FROM no_such_table")
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert "no_such_table" in str(app.screen.status.render())
        assert app.is_running
        assert [h.error is not None for h in app.screen.history] == [True, True]

    drive(make_app(two_runs), sql_script("DELETE FROM steps", check), messages=messages)
    failed = [m for m in messages if isinstance(m, QueryFailed)]
    assert len(failed) == 2 and "read-only" in failed[0].error
    assert sorted(p.name for p in two_runs.rglob("*")) == before


def test_sql_large_result_and_export(two_runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "big.parquet"

    async def check(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        table = app.screen.query_one("#sql-table")
        assert table.row_count == 100_000
        await pilot.press("ctrl+s")
        app.screen.query_one("#prompt-input").value = str(out)
        await pilot.press("enter")
        await settle(pilot)

    drive(make_app(two_runs), sql_script("SELECT range AS i, range * 2 AS j FROM range(100000)",
                                         check))
    frame = pl.read_parquet(out)
    assert frame.height == 100_000 and frame["j"].sum() == 2 * sum(range(100_000))


def test_named_query_and_history(two_runs: Path) -> None:
    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        from imbtui.queries import get_query

        await pilot.press("f3", "ctrl+o")
        await pilot.pause()
        picker = app.screen.query_one("#pick-list")
        names = [picker.get_option_at_index(i).id for i in range(picker.option_count)]
        picker.highlighted = names.index("run_summary")
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen.editor.text == get_query("run_summary").sql
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert app.screen.query_one("#sql-table").row_count == 2
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert app.screen.query_one("#pick-list").option_count == 1

    drive(make_app(two_runs), script)


def test_help_screen(two_runs: Path) -> None:
    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        await pilot.press("f1")
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        assert type(app.screen).__name__ == "RunsScreen"

    drive(make_app(two_runs), script)


def test_empty_store_opens_the_sample(two_runs: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sample_mod, "sample_store", lambda: two_runs)
    import imbtui.tui.app as app_mod

    monkeypatch.setattr(app_mod, "sample_store", lambda: two_runs)
    app = make_app(tmp_path / "empty")
    assert app.session.sample and app.session.root == two_runs
    assert "bundled sample" in (app.notice or "")

    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        assert len(app.screen.table.keys) == 2
        assert any("sample" in str(n.message) for n in app._notifications)
        await pilot.press("d")  # the sample is read-only
        assert type(app.screen).__name__ == "RunsScreen"

    drive(app, script)
    assert len(run_ids(two_runs)) == 2


def test_sample_store_locator_finds_a_filled_folder(tmp_path: Path) -> None:
    found = sample_mod.sample_store()
    repo = Path(sample_mod.__file__).resolve().parents[2] / "sample_runs"
    filled = (repo / "runs").is_dir() and any((repo / "runs").glob("*/run.json"))
    assert (found is not None) == filled
    assert not sample_mod._has_runs(tmp_path)


def test_browse_bad_input_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    proc = imbtui("browse", "--store", str(tmp_path / "file"), check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "is a file" in proc.stderr


def test_browse_unknown_run_is_one_line(two_runs: Path) -> None:
    proc = imbtui("browse", "--store", str(two_runs), "--run", "nope", check=False)
    assert proc.returncode == 2 and "unknown run" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_nan_free_curves(two_runs: Path) -> None:
    rid = run_ids(two_runs)["r10"]
    groups = group_curves(cursor(two_runs), rid, 30, "step")
    for metric, per_group in groups.items():
        for series in per_group.values():
            assert all(v is None or math.isfinite(v) for v in series), metric


# ==== a 100-class run =============================================================================

@pytest.fixture(scope="module")
def store100(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tui.test_tui_snapshot import write_run

    root = tmp_path_factory.mktemp("store100")
    write_run(root, "run-c100", "c100", 100.0, "ce", "finished", 0, n_classes=100, full=True)
    return root


def screen_text(app: ImbtuiApp) -> str:
    """What the terminal shows now, as plain text."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_run_screen_with_100_classes(store100: Path, size: tuple[int, int]) -> None:
    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        from imbtui.tui.widgets import ClassCountChart, ClassCurves

        screen = app.screen
        assert type(screen).__name__ == "RunScreen" and screen.curves is not None
        classes = screen.query_one(ClassCurves)
        assert [c.name for c in classes.lines] == [f"c{i}" for i in range(100)]
        assert classes.size.height == 101  # a header and every class, none cut
        chart = screen.query_one(ClassCountChart)
        lines = chart.render().plain.splitlines()
        assert all(len(line) <= chart.content_size.width for line in lines)
        assert "100 classes" in lines[-1]
        body = screen.query_one("#run-body")
        assert body.max_scroll_y > 0  # more rows than the terminal: they scroll
        seen: set[str] = set()
        while True:  # page through the screen: every class row comes into view
            seen |= set(re.findall(r"\bc\d+\b", screen_text(app)))
            if body.scroll_y >= body.max_scroll_y:
                break
            body.scroll_page_down(animate=False)
            await pilot.pause()
        assert {f"c{i}" for i in range(100)} <= seen

    drive(make_app(store100, open_run="run-c100"), script, size=size)
