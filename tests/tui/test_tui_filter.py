"""The runs filter: its parser and matcher on hand-made rows, then typed into the runs screen and
checked against a DuckDB query over the store; and saved views of filter + sort."""

from __future__ import annotations

import json
import time
from pathlib import Path

import duckdb
import pytest

from imbtui.store import RunWriter
from imbtui.tui.app import make_app
from imbtui.tui.data.filter import FilterError, parse_filter
from imbtui.tui.data.views import SavedView, load_views, save_view, views_path
from imbtui.tui.screenshots import settle
from tests.tui.conftest import drive

ROWS = [
    {"run_id": "20260101-a", "name": "mnist1d-r1-ce-s0", "status": "finished", "dataset": "mnist1d",
     "profile": "exp", "ratio": 1.0, "method": "ce", "model": "cnn1d", "loss": "ce", "seed": 0,
     "test_balanced": 0.99},
    {"run_id": "20260101-b", "name": "mnist1d-r10-ce-s1", "status": "running", "dataset": "mnist1d",
     "profile": "exp", "ratio": 10.0, "method": "ce", "model": "cnn1d", "loss": "ce", "seed": 1,
     "test_balanced": None},
    {"run_id": "20260101-c", "name": "cifar10-r100-ldam-drw-s0", "status": "failed",
     "dataset": "cifar10", "profile": "exp", "ratio": 100.0, "method": "ldam-drw",
     "model": "resnet32", "loss": "ldam", "seed": 0, "test_balanced": 0.71},
    {"run_id": "20260101-d", "name": "cifar10-r100-ce+cb-s2", "status": "crashed",
     "dataset": "cifar10", "profile": "step", "ratio": 100.0, "method": "ce+class-balanced",
     "model": "resnet32", "loss": "ce", "seed": 2, "test_balanced": 0.65},
]


def names(text: str) -> list[str]:
    return [r["name"] for r in parse_filter(text)(ROWS)]


# ==== parser and matcher ==========================================================================

@pytest.mark.parametrize("text, expected", [
    ("", [r["name"] for r in ROWS]),
    ("ratio>=10", ["mnist1d-r10-ce-s1", "cifar10-r100-ldam-drw-s0", "cifar10-r100-ce+cb-s2"]),
    ("ratio>10", ["cifar10-r100-ldam-drw-s0", "cifar10-r100-ce+cb-s2"]),
    ("ratio<10", ["mnist1d-r1-ce-s0"]),
    ("ratio=100", ["cifar10-r100-ldam-drw-s0", "cifar10-r100-ce+cb-s2"]),
    ("ratio:1", ["mnist1d-r1-ce-s0"]),
    ("ratio!=100", ["mnist1d-r1-ce-s0", "mnist1d-r10-ce-s1"]),
    ("method:ldam*", ["cifar10-r100-ldam-drw-s0"]),
    ("method:ce", ["mnist1d-r1-ce-s0", "mnist1d-r10-ce-s1"]),        # whole value, not a part
    ("method:ce*", ["mnist1d-r1-ce-s0", "mnist1d-r10-ce-s1", "cifar10-r100-ce+cb-s2"]),
    ("method:CE*", ["mnist1d-r1-ce-s0", "mnist1d-r10-ce-s1", "cifar10-r100-ce+cb-s2"]),
    ("status:running", ["mnist1d-r10-ce-s1"]),
    ("status:live", ["mnist1d-r10-ce-s1"]),                           # the table's word
    ("status:crash", ["cifar10-r100-ce+cb-s2"]),
    ("status!=finished", ["mnist1d-r10-ce-s1", "cifar10-r100-ldam-drw-s0", "cifar10-r100-ce+cb-s2"]),
    ("dataset:mnist1d", ["mnist1d-r1-ce-s0", "mnist1d-r10-ce-s1"]),
    ("seed:0", ["mnist1d-r1-ce-s0", "cifar10-r100-ldam-drw-s0"]),
    ("name:r10", ["mnist1d-r10-ce-s1", "cifar10-r100-ldam-drw-s0", "cifar10-r100-ce+cb-s2"]),
    ("id:-c", ["cifar10-r100-ldam-drw-s0"]),
    ("profile:step", ["cifar10-r100-ce+cb-s2"]),
    ("model:resnet*", ["cifar10-r100-ldam-drw-s0", "cifar10-r100-ce+cb-s2"]),
    ("bal>=0.7", ["mnist1d-r1-ce-s0", "cifar10-r100-ldam-drw-s0"]),   # no accuracy yet: no match
    ("cifar ldam", ["cifar10-r100-ldam-drw-s0"]),                     # free words, as before
    ("CIFAR", ["cifar10-r100-ldam-drw-s0", "cifar10-r100-ce+cb-s2"]),
    ("/r100.*s[0-2]/", ["cifar10-r100-ldam-drw-s0", "cifar10-r100-ce+cb-s2"]),
    ("/^mnist1d-r1-/", ["mnist1d-r1-ce-s0"]),
    ("/ce-s[01]$/", ["mnist1d-r1-ce-s0", "mnist1d-r10-ce-s1"]),
    ("name:/-s[12]$/", ["mnist1d-r10-ce-s1", "cifar10-r100-ce+cb-s2"]),
    ("ratio>=10 method:ldam*", ["cifar10-r100-ldam-drw-s0"]),        # terms AND together
    ("ratio>=10 method:ce* seed:2", ["cifar10-r100-ce+cb-s2"]),
    ("dataset:mnist1d status:running ratio<=10 /s1$/", ["mnist1d-r10-ce-s1"]),
    ("ratio>=1000", []),
])
def test_filter_by_hand(text: str, expected: list[str]) -> None:
    assert names(text) == expected


@pytest.mark.parametrize("text, says", [
    ("colour:red", "unknown field 'colour'"),
    ("ratio>=ten", "ratio>= wants a number, got 'ten'"),
    ("ratio>=", "ratio>= wants a number"),
    ("/(unclosed/", "bad regular expression"),
    ("/r100", "unclosed regular expression"),
    ("name>=x", "name is text"),
    ("method:", "method: wants a value"),
    ("name:/[/", "bad regular expression"),
])
def test_bad_filters_say_why_in_one_line(text: str, says: str) -> None:
    with pytest.raises(FilterError) as err:
        parse_filter(text)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_regex_may_hold_spaces_and_missing_fields_never_match() -> None:
    assert names("/r1 ?-ce-s0/") == ["mnist1d-r1-ce-s0"]
    assert parse_filter("seed:0").matches({"name": "x"}) is False
    assert parse_filter("ratio>=1").matches({"ratio": float("nan")}) is False


# ==== the runs screen =============================================================================

@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Six runs across ratios, losses, seeds and statuses (run.json only: the table's fields)."""
    monkeypatch.setenv("IMBTUI_CONFIG_DIR", str(tmp_path / "config"))
    root = tmp_path / "store"
    for ratio, loss, seed, status in [(1.0, "ce", 0, "finished"), (10.0, "ce", 0, "finished"),
                                      (10.0, "ldam", 1, "failed"), (100.0, "ce", 1, "finished"),
                                      (100.0, "ce", 2, "interrupted"), (100.0, "focal", 0, "finished")]:
        name = f"r{ratio:g}-{loss}-s{seed}"
        w = RunWriter(root, run_id=f"run-{name}", heartbeat_s=3600)
        w.start({"name": name, "config": {"dataset": "mnist1d", "profile": "exp", "ratio": ratio,
                                          "model": "cnn1d", "loss": loss, "sampler": "none",
                                          "epochs": 1, "batch_size": 64, "lr": 0.1, "seed": seed,
                                          "n_classes": 10},
                 "device": "cpu", "code_version": "0.1.0", "epoch_done": 1, "step_done": 10,
                 "total_steps": 10})
        w.finish(status, None)
        time.sleep(0.002)  # distinct created_at
    return root


def expected_ids(root: Path, where: str) -> list[str]:
    """The run ids a SQL predicate selects, read straight from the run.json files by DuckDB."""
    con = duckdb.connect()
    rows = con.sql(f"""
        SELECT run_id FROM read_json_auto('{root}/runs/*/run.json')
        WHERE {where} ORDER BY run_id""").fetchall()
    return [r[0] for r in rows]


def test_typed_filter_shows_the_runs_duckdb_selects(store: Path) -> None:
    async def script(app, pilot):  # type: ignore[no-untyped-def]
        await pilot.press("slash", *"ratio>=10 method:ce*")
        await settle(pilot)
        return sorted(app.screen.table.keys)

    shown = drive(make_app(store, use_sample=False), script)
    want = expected_ids(store, "config.ratio >= 10 AND config.loss LIKE 'ce%'")
    assert want and shown == want, (shown, want)


def test_bad_filter_says_why_and_keeps_the_table(store: Path) -> None:
    async def script(app, pilot):  # type: ignore[no-untyped-def]
        screen = app.screen
        await pilot.press("slash", *"ratio>=100")
        await settle(pilot)
        before = screen.table.keys
        await pilot.press("x")                                   # ratio>=100x
        await settle(pilot)
        typed = str(screen.query_one("#runs-filter-error").render()), screen.table.keys
        screen.filter_input.value = "ratio>=100 bogus:1"         # pasted
        await settle(pilot)
        pasted = str(screen.query_one("#runs-filter-error").render()), screen.table.keys
        return before, typed, pasted, screen.has_class("filter-error")

    before, typed, pasted, shown = drive(make_app(store, use_sample=False), script)
    assert len(before) == 3 and typed[1] == before and pasted[1] == before
    assert "ratio>= wants a number, got '100x'" in typed[0]
    assert shown and "unknown field 'bogus'" in pasted[0]


def test_saved_view_round_trip(store: Path) -> None:
    async def script(app, pilot):  # type: ignore[no-untyped-def]
        screen = app.screen
        await pilot.press("slash", *"status:finished", "enter")  # back to the table
        await pilot.press("S")                                  # sort: started, descending
        await pilot.press("w")
        await pilot.pause()
        await pilot.press(*"done", "enter")
        await pilot.pause()
        saved = screen.table.keys
        await pilot.press("slash", "ctrl+u", "escape")           # clear the filter
        await pilot.press("S")
        await settle(pilot)
        cleared = screen.table.keys
        await pilot.press("o")
        await pilot.pause()
        await pilot.press("enter")                               # the first (only) view
        await settle(pilot)
        return saved, cleared, screen.table.keys, screen.filter_input.value

    before = sorted(p.name for p in store.rglob("*"))
    saved, cleared, restored, text = drive(make_app(store, use_sample=False), script)
    assert len(saved) == 4 and len(cleared) == 6
    assert restored == saved and text == "status:finished"
    views = json.loads(views_path().read_text())["views"]
    assert views == {"done": {"filter": "status:finished", "sort": "started", "desc": True}}
    assert sorted(p.name for p in store.rglob("*")) == before  # nothing written into the store


def test_views_file(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "views.json"
    assert load_views(path) == {}
    save_view("a", SavedView("ratio>=10", "ratio", True), path)
    save_view("b", SavedView("", "started"), path)
    save_view("a", SavedView("seed:0", "name"), path)
    assert load_views(path) == {"a": SavedView("seed:0", "name"), "b": SavedView("", "started")}
    path.write_text("not json")
    assert load_views(path) == {}
