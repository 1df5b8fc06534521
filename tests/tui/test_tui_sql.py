"""The SQL screen driven through the real app: completion, the statement under the cursor, result
tabs, cancel, history, export, the catalog pane, named analyses, and agreement with `imbtui sql`.

Every expected value is computed here by a DuckDB query of our own (over the views of a separate
session, or straight over the store's Parquet parts) or from the store reference's own sources,
never copied from the screen's output.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from textual.message import Message
from textual.pilot import Pilot

from imbtui.store.reference import TABLE_DOCS
from imbtui.store.semantic import VIEWS
from imbtui.tui.app import ImbtuiApp, make_app
from imbtui.tui.data.sqlhistory import history_path, load_history
from imbtui.tui.data.sqlscreen import statement_at
from imbtui.tui.messages import QueryDone, QueryFailed
from imbtui.tui.screens.sql import MAX_TABS
from imbtui.tui.screenshots import settle
from tests.conftest import imbtui
from tests.tui.conftest import cursor, drive
from tests.tui.test_tui_snapshot import write_run


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two closed-form runs (ratio 1 and 100), and a state folder of this test's own."""
    monkeypatch.setenv("IMBTUI_STATE_DIR", str(tmp_path / "state"))
    root = tmp_path / "store"
    write_run(root, "run-balanced", "balanced-ce", 1.0, "ce", "finished", 0)
    write_run(root, "run-exp100-ce", "exp100-ce", 100.0, "ce", "finished", 1)
    return root


def listing(root: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in root.rglob("*"))


async def open_sql(pilot: Pilot[None]) -> None:
    await pilot.press("f3")
    await settle(pilot)  # the catalog loads in a worker


async def run(app: ImbtuiApp, pilot: Pilot[None], key: str = "ctrl+r") -> None:
    await pilot.press(key)
    await settle(pilot)


def done(messages: list[Message]) -> list[pl.DataFrame]:
    return [m.result.frame for m in messages if isinstance(m, QueryDone)]


def columns_starting(root: Path, prefix: str, relation: str | None = None) -> list[str]:
    cur = cursor(root)
    where = f"AND table_name = '{relation}'" if relation else ""
    return [c for (c,) in cur.sql(
        f"SELECT DISTINCT column_name FROM duckdb_columns() WHERE column_name LIKE '{prefix}%' "
        f"AND NOT internal {where} ORDER BY 1").fetchall()]


# ==== completion ==================================================================================

def test_completion_of_a_partial_column_name_accepted_with_tab(store: Path) -> None:
    expected = columns_starting(store, "test_minor")
    assert len(expected) == 1  # the prefix names one column of the store

    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        await open_sql(pilot)
        await pilot.press(*"SELECT test_minor")
        box = app.screen.query_one("#sql-completions")
        assert box.shown and box.chosen.text == expected[0]
        await pilot.press("tab")
        assert app.screen.editor.text == f"SELECT {expected[0]}"
        assert not box.shown
        assert app.screen.editor.has_focus  # Tab accepted the name, it did not move focus

    drive(make_app(store), script)


def test_completion_after_an_alias_lists_that_relations_columns_and_enter_accepts(
        store: Path) -> None:
    expected = columns_starting(store, "loss_s", "steps")

    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        await open_sql(pilot)
        editor = app.screen.editor
        editor.load_text(" FROM steps s")
        editor.move_cursor((0, 0))
        await pilot.press(*"SELECT s.loss_s")
        box = app.screen.query_one("#sql-completions")
        assert [c.text for c in box.completions] == expected
        await pilot.press("enter")
        assert editor.text == f"SELECT s.{expected[0]} FROM steps s"

    drive(make_app(store), script)


def test_completion_of_keywords_and_views(store: Path) -> None:
    views = [v.name for v in VIEWS if v.name.startswith("final_")]

    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        await open_sql(pilot)
        await pilot.press(*"SELE")
        box = app.screen.query_one("#sql-completions")
        assert box.chosen.text == "SELECT"
        await pilot.press("tab", *" * FROM final_")
        assert [c.text for c in box.completions][:len(views)] == views
        await pilot.press("escape")
        assert not box.shown and app.screen.editor.text == "SELECT * FROM final_"

    drive(make_app(store), script)


# ==== running =====================================================================================

TWO = "SELECT 1 AS a;\nSELECT name, ratio FROM runs ORDER BY name;\n"


def test_runs_the_statement_under_the_cursor_of_a_two_statement_buffer(store: Path) -> None:
    messages: list[Message] = []
    second = cursor(store).sql("SELECT name, ratio FROM runs ORDER BY name").pl()

    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        await open_sql(pilot)
        editor = app.screen.editor
        editor.load_text(TWO)
        editor.move_cursor((1, 5))
        await run(app, pilot, "ctrl+j")
        editor.move_cursor((0, 3))
        await run(app, pilot)

    drive(make_app(store), script, messages=messages)
    first_run, second_run = done(messages)
    assert first_run.equals(second)
    assert first_run.columns == ["name", "ratio"]
    assert second_run.to_dicts() == [{"a": 1}]


def test_runs_the_selection(store: Path) -> None:
    messages: list[Message] = []

    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        await open_sql(pilot)
        editor = app.screen.editor
        editor.load_text("SELECT 1 AS a, 2 AS b;")
        editor.selection = type(editor.selection)((0, 0), (0, 13))  # "SELECT 1 AS a"
        await run(app, pilot)

    drive(make_app(store), script, messages=messages)
    assert done(messages)[0].to_dicts() == [{"a": 1}]


@pytest.mark.parametrize("offset,expected", [(0, 0), (13, 0), (14, 0), (15, 1), (30, 1),
                                             (len(TWO), 1)])
def test_statement_at(offset: int, expected: int) -> None:
    statements = [s.strip() for s in TWO.split("\n") if s.strip()]
    assert statement_at(TWO, offset) == statements[expected]


def test_statement_at_ignores_semicolons_in_strings_and_comments() -> None:
    text = "SELECT 'a;b' AS s; -- not; here\n/* x; y */ SELECT 2;"
    assert statement_at(text, 3) == "SELECT 'a;b' AS s;"
    assert statement_at(text, len(text) - 3).endswith("SELECT 2;")


def test_results_go_to_tabs_capped(store: Path) -> None:
    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        await open_sql(pilot)
        for k in range(MAX_TABS + 2):
            app.screen.editor.load_text(f"SELECT {k} AS k FROM range({k + 1})")
            await run(app, pilot)
        tabs = app.screen.tabs
        assert tabs.tab_count == MAX_TABS
        assert app.screen.query_one("#sql-table").row_count == MAX_TABS + 2  # the newest shown
        oldest = tabs.query("Tab").first()
        tabs.active = oldest.id
        await settle(pilot)
        # the oldest kept is run 3 (k = 2): range(3) has 3 rows
        assert app.screen.query_one("#sql-table").row_count == 3
        assert app.screen.result.frame["k"].to_list() == [2, 2, 2]

    drive(make_app(store), script)


def test_cancel_interrupts_and_the_next_query_runs(store: Path) -> None:
    messages: list[Message] = []

    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        await open_sql(pilot)
        app.screen.editor.load_text("SELECT count(*) FROM range(1000000000000) a, range(1000) b "
                                    "WHERE a.range % 7 = b.range")
        await pilot.press("ctrl+r")
        for _ in range(200):  # wait for the worker to have its cursor
            await pilot.pause(0.05)
            if app.screen.running is not None:
                break
        await pilot.press("ctrl+g")
        await settle(pilot)
        assert "error" in str(app.screen.status.render())
        app.screen.editor.load_text("SELECT count(*) AS n FROM runs")
        await run(app, pilot)

    drive(make_app(store), script, messages=messages)
    failed = [m for m in messages if isinstance(m, QueryFailed)]
    assert failed and "interrupt" in failed[0].error.lower()
    assert done(messages)[0]["n"].to_list() == [2]


def test_nothing_written_by_sql_on_the_screen(store: Path, tmp_path: Path) -> None:
    messages: list[Message] = []
    before = listing(store)
    target = store / "runs" / "run-balanced" / "run.json"

    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        await open_sql(pilot)
        for sql in (f"COPY runs TO '{target}' (FORMAT json)", "DROP VIEW runs",
                    f"EXPLAIN ANALYZE COPY runs TO '{tmp_path / 'x.csv'}'"):
            app.screen.editor.load_text(sql)
            await run(app, pilot)

    drive(make_app(store), script, messages=messages)
    assert len([m for m in messages if isinstance(m, QueryFailed)]) == 3
    assert listing(store) == before and not (tmp_path / "x.csv").exists()


# ==== history =====================================================================================

def test_history_persists_per_store_and_up_down_walk_it(store: Path) -> None:
    before = listing(store)
    sqls = ["SELECT 1 AS one", "SELECT name FROM runs", "SELECT nope FROM nowhere"]

    async def first(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        await open_sql(pilot)
        for sql in sqls:
            app.screen.editor.load_text(sql)
            await run(app, pilot)

    drive(make_app(store), first)
    kept = load_history(store)
    assert [h.sql for h in kept] == sqls
    assert [h.rows for h in kept] == [1, 2, None] and kept[2].error
    assert store.resolve() not in history_path(store).parents
    assert listing(store) == before  # nothing of the history inside the store

    async def second(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        await open_sql(pilot)
        editor = app.screen.editor
        assert editor.text == ""
        await pilot.press("up")
        assert editor.text == sqls[2]
        await pilot.press("up", "up")
        assert editor.text == sqls[0]
        await pilot.press("down")
        assert editor.text == sqls[1]
        await pilot.press("down", "down")
        assert editor.text == ""

    drive(make_app(store), second)


# ==== export ======================================================================================

EXPORTED = ("SELECT class_id, sum(loss_sum) / sum(n) AS loss, sum(n) AS n FROM steps "
            "WHERE run_id = 'run-exp100-ce' GROUP BY class_id ORDER BY class_id")


@pytest.mark.parametrize("suffix", ["csv", "parquet", "json"])
def test_export_reads_back_as_an_independent_query(store: Path, tmp_path: Path,
                                                   suffix: str) -> None:
    out = tmp_path / "out" / f"loss.{suffix}"
    parts = str(store / "runs" / "run-exp100-ce" / "steps" / "part-*.parquet")
    expected = duckdb.sql(f"SELECT class_id, sum(loss_sum) / sum(n) AS loss, sum(n) AS n "
                          f"FROM read_parquet('{parts}') GROUP BY class_id ORDER BY class_id").pl()

    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        await open_sql(pilot)
        app.screen.editor.load_text(EXPORTED)
        await run(app, pilot)
        await pilot.press("ctrl+s")
        await pilot.pause()
        app.screen.query_one("#prompt-input").value = str(out)
        await pilot.press("enter")
        await settle(pilot)

    drive(make_app(store), script)
    if suffix == "csv":
        back = pl.read_csv(out)
    elif suffix == "parquet":
        back = pl.read_parquet(out)
    else:
        back = pl.DataFrame(json.loads(out.read_text()))
    assert back["class_id"].to_list() == expected["class_id"].to_list()
    assert [int(v) for v in back["n"]] == [int(v) for v in expected["n"]]
    assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(back["loss"], expected["loss"]))


def test_export_refuses_the_store(store: Path) -> None:
    before = listing(store)

    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        await open_sql(pilot)
        app.screen.editor.load_text("SELECT * FROM runs")
        await run(app, pilot)
        await pilot.press("ctrl+s")
        await pilot.pause()
        app.screen.query_one("#prompt-input").value = str(store / "runs" / "x.csv")
        await pilot.press("enter")
        await settle(pilot)

    drive(make_app(store), script)
    assert listing(store) == before


# ==== catalog pane ================================================================================

def test_catalog_pane_lists_columns_types_and_definitions(store: Path) -> None:
    described = {v.name: v for v in VIEWS}["final_results"].columns
    types = cursor(store).sql("DESCRIBE final_results").fetchall()
    steps_doc = TABLE_DOCS["steps"][1]

    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        await open_sql(pilot)
        await pilot.press("ctrl+b")
        await pilot.pause()
        pane = app.screen.catalog_pane
        assert pane.display and pane.tree.has_focus
        nodes = {n.data.name: n for n in pane.tree.root.children}
        relations = {r for (r,) in cursor(store).sql(
            "SELECT table_name FROM duckdb_tables() UNION SELECT view_name FROM duckdb_views() "
            "WHERE NOT internal").fetchall() if not r.startswith("_")}
        assert relations <= set(nodes)
        final = nodes["final_results"]
        leaves = [(str(c.label), c.data) for c in final.children]
        assert [d.name for _, d in leaves] == [name for name, *_ in types]
        for (label, data), (name, dtype, *_) in zip(leaves, types):
            assert label == f"{name} {dtype}"
            assert described[name] in data.detail
        # the highlighted node's full definition shows below the tree
        final.expand()
        await pilot.pause()
        pane.tree.move_cursor(final.children[2])
        await pilot.pause()
        column = final.children[2].data.name
        assert described[column] in str(pane.detail.render())
        steps = nodes["steps"]
        assert all(steps_doc[c.data.name] in c.data.detail for c in steps.children)
        # Enter on a column puts its name at the editor's cursor
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen.editor.text == column
        await pilot.press("ctrl+b")
        assert not pane.display and app.screen.editor.has_focus

    drive(make_app(store), script)


# ==== named analyses and the placeholder =========================================================

def test_named_analysis_is_inserted_as_its_own_statement(store: Path) -> None:
    from imbtui.queries import get_query

    sql = get_query("run_summary").sql
    messages: list[Message] = []

    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        await open_sql(pilot)
        editor = app.screen.editor
        editor.load_text("SELECT 1 AS a")
        await pilot.press("ctrl+o")
        await pilot.pause()
        picker = app.screen.query_one("#pick-list")
        names = [picker.get_option_at_index(i).id for i in range(picker.option_count)]
        picker.highlighted = names.index("run_summary")
        await pilot.press("enter")
        await pilot.pause()
        assert editor.text.startswith("SELECT 1 AS a;\n\n")
        assert editor.statement_under_cursor() == sql.strip()
        await run(app, pilot)

    drive(make_app(store), script, messages=messages)
    expected = cursor(store).sql(sql, params=get_query("run_summary").bind({}) or None).pl()
    assert done(messages)[0].equals(expected)


def test_example_is_a_placeholder_not_text(store: Path) -> None:
    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        await open_sql(pilot)
        editor = app.screen.editor
        assert editor.text == "" and "SELECT" in str(editor.placeholder)
        await pilot.press(*"SELECT 7 AS x")
        await pilot.press("escape")  # closes a completion list, if one opened
        assert editor.text == "SELECT 7 AS x"

    drive(make_app(store), script)


# ==== the screen and `imbtui sql` agree ===========================================================

AGREE = ("SELECT r.name, r.ratio, f.test_majority, f.test_minority, f.test_minority / 7 AS tiny "
         "FROM final_results f JOIN runs r USING (run_id) ORDER BY r.name")


def test_screen_and_cli_agree_on_rows_columns_and_float_text(store: Path) -> None:
    messages: list[Message] = []
    shown: list[pl.DataFrame] = []

    async def script(app: ImbtuiApp, pilot: Pilot[None]) -> None:
        await open_sql(pilot)
        app.screen.editor.load_text(AGREE)
        await run(app, pilot)
        shown.append(app.screen.query_one("#sql-table").shown)

    drive(make_app(store), script, messages=messages)
    frame = done(messages)[0]
    as_json: list[dict[str, Any]] = json.loads(
        imbtui("sql", AGREE, "--format", "json", "--store", str(store)).stdout)
    assert frame.columns == list(as_json[0])
    assert frame.to_dicts() == as_json
    table = imbtui("sql", AGREE, "--store", str(store), env={"COLUMNS": "200"}).stdout
    cli_rows = [line.split() for line in table.splitlines()[2:] if line.strip()]
    screen_rows = [[str(v).strip() for v in row] for row in shown[0].iter_rows()]
    assert screen_rows == cli_rows
