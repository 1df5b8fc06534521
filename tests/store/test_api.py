"""The Python API: imbtui.open_store(path) -> .sql / .runs / .query, on the hand-built store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import imbtui
from imbtui.errors import UserError
from imbtui.store import RunWriter, StoreError
from tests.store.test_queries import build_store
from tests.tolerance import approx64


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.mktemp("api"))


def test_import_imbtui_stays_light() -> None:
    # open_store is a lazy attribute: importing the package must not load DuckDB, polars or torch
    code = ("import sys, imbtui; heavy = [m for m in ('duckdb', 'polars', 'torch', 'textual') "
            "if m in sys.modules]; print(heavy); imbtui.open_store; "
            "print('duckdb' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "True"]


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        imbtui.nope  # noqa: B018


def test_runs_lists_every_run_with_final_accuracy(root: Path) -> None:
    runs = imbtui.open_store(root).runs()
    assert isinstance(runs, pl.DataFrame)
    got = {r["run_id"]: r for r in runs.to_dicts()}
    assert set(got) == {"a", "b", "c", "d", "e"}
    # run a, last epoch, test correct 9 8 5 2 of 10: balanced 0.6, minority (5 + 2) / 20
    assert (got["a"]["test_balanced"], got["a"]["test_minority"]) == approx64((0.6, 0.35))
    assert (got["d"]["loss"], got["e"]["status"], got["c"]["ratio"]) == ("focal", "failed", 1.0)


def test_sql_binds_parameters(root: Path) -> None:
    store = imbtui.open_store(root)
    frame = store.sql("SELECT class_id, correct FROM epochs WHERE run_id = $run AND epoch = $e "
                      "AND split = 'test' ORDER BY class_id", {"run": "a", "e": 1})
    assert frame["correct"].to_list() == [7, 3, 1, 0]


def test_query_runs_a_named_analysis_with_keyword_parameters(root: Path) -> None:
    store = imbtui.open_store(root)
    onset = store.query("learning_onset", runs="a", threshold=0.85)
    assert onset["onset_epoch"].to_list() == [2, 2, None, 2]  # class 2 never passes 0.85
    assert set(store.query("generalisation_gap", runs=["b", "c"])["run_id"]) == {"b", "c"}
    with pytest.raises(UserError, match="no parameter 'ratio'"):
        store.query("learning_onset", ratio=3)


def test_queries_lists_the_analyses(root: Path) -> None:
    names = imbtui.open_store(root).queries()["name"].to_list()
    assert "memorisation" in names and "ratio_sweep" in names


def test_each_call_sees_runs_written_after_opening(root: Path, tmp_path: Path) -> None:
    store = imbtui.open_store(build_store(tmp_path / "live"))
    assert store.runs().height == 5
    w = RunWriter(store.root, "late")
    w.start({"name": "late", "config": {"dataset": "toy"}})
    assert "late" in store.runs()["run_id"].to_list()
    w.finish("finished")


def test_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no run store at"):
        imbtui.open_store(tmp_path / "nowhere")


def test_default_path_comes_from_the_environment(root: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMBTUI_STORE", str(root))
    assert Path(imbtui.open_store().root) == root
