"""Compare shows what differs between the runs' configs, and draws runs of different lengths on
one x-axis (checked against the store read independently)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

import tests.tui.test_tui_snapshot as snap
from imbtui.tui.app import make_app
from imbtui.tui.data.config_diff import MISSING, config_rows, flatten
from imbtui.tui.screenshots import settle
from imbtui.tui.widgets.config_diff import ConfigDiff
from tests.tui.conftest import drive


def test_config_rows_by_hand() -> None:
    a = {"config": json.dumps({"ratio": 100.0, "loss": "ce", "seed": 0, "loss_params": {},
                               "opt": {"lr": 0.1, "wd": 5e-4}})}
    b = {"config": {"ratio": 10.0, "loss": "ce", "seed": 0, "loss_params": {},
                    "opt": {"lr": 0.05, "wd": 5e-4}, "drw": 160}}
    rows = {r.key: r for r in config_rows([a, b])}
    assert list(rows) == ["ratio", "loss", "seed", "loss_params", "opt.lr", "opt.wd", "drw"]
    assert [k for k, r in rows.items() if r.differs] == ["ratio", "opt.lr", "drw"]
    assert rows["ratio"].values == ("100", "10")
    assert rows["drw"].values == (MISSING, "160")
    assert rows["loss_params"].values == ("{}", "{}")
    assert flatten({"a": {"b": {"c": 1}}}) == {"a.b.c": 1}
    assert config_rows([{"config": "not json"}, {}]) == []


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A 400-step ratio-100 run and a 200-step balanced one."""
    root = tmp_path / "store"
    snap.write_run(root, "run-long", "long-r100", 100.0, "ce", "finished", 0)
    monkeypatch.setattr(snap, "STEPS", 200)
    snap.write_run(root, "run-short", "short-r1", 1.0, "ce", "finished", 1)
    return root


def compare(store: Path, keys: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    async def script(app, pilot):  # type: ignore[no-untyped-def]
        table = app.screen.table
        for rid in ("run-long", "run-short"):
            table.move_cursor(row=table.keys.index(rid))
            await pilot.press("space")
        await pilot.press("c")
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        screen = app.screen
        diff = screen.query_one(ConfigDiff)
        shown = diff.rows if diff.show_all else [r for r in diff.rows if r.differs]
        return screen.run_ids, screen.loaded, [r.key for r in shown], diff.show_all

    return drive(make_app(store, use_sample=False), script, size=(120, 40))


def run_config(store: Path, run_id: str) -> dict:
    return flatten(json.loads((store / "runs" / run_id / "run.json").read_text())["config"])


def test_compare_lists_only_the_keys_that_differ_then_all(store: Path) -> None:
    long, short = run_config(store, "run-long"), run_config(store, "run-short")
    keys = list(dict.fromkeys([*long, *short]))
    differ = [k for k in keys if long.get(k, MISSING) != short.get(k, MISSING)]
    assert "ratio" in differ and "loss" not in differ

    _, _, shown, show_all = compare(store)
    assert not show_all and sorted(shown) == sorted(differ)
    _, _, shown, show_all = compare(store, ("a",))
    assert show_all and sorted(shown) == sorted(keys)


@pytest.mark.parametrize("resolution", ["step", "epoch"])
def test_runs_of_different_lengths_share_the_x_axis(store: Path, resolution: str) -> None:
    keys = ("e",) if resolution == "epoch" else ()
    run_ids, loaded, _, _ = compare(store, keys)
    assert run_ids == ["run-long", "run-short"]
    # the store, read without the app: each run's last step (epoch)
    axis = "step" if resolution == "step" else "epoch"
    table = "steps" if resolution == "step" else "epochs"
    last = {rid: pl.read_parquet(str(store / "runs" / rid / table / "*.parquet"))[axis].max()
            for rid in run_ids}
    length = {rid: last[rid] + 1 for rid in run_ids}  # steps 0..N-1, or epochs 0..N
    assert loaded.span == max(length.values())

    series = {rid: loaded.groups[rid]["train_acc"]["majority"] for rid in run_ids}
    width = len(series["run-long"])
    assert len(series["run-short"]) == width  # one x-axis: the same number of buckets
    ends = {rid: max(i for i, v in enumerate(s) if v is not None) + 1 for rid, s in series.items()}
    assert ends["run-long"] == width
    # the short run ends where its record ends on the long run's scale (one bucket of rounding)
    want = width * length["run-short"] / length["run-long"]
    assert abs(ends["run-short"] - want) <= 1, (ends, want)
    # on the step axis the short run ends halfway; on the epoch axis both ran 4 epochs
    assert (ends["run-short"] < width) == (resolution == "step")
