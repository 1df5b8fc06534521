"""Live runs: while a real trainer writes, its row and its run screen update by themselves, and the
user's selection stays where it was."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.pilot import Pilot

from imbtui.tui.app import ImbtuiApp, make_app
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def start_trainer(root: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "imbtui", "train", "--ratio", "100", "--epochs",
                             "30", "--store", str(root), "-q", "--name", "live"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)


def wait_for_run(root: Path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p.parent.name for p in (root / "runs").glob("*/run.json")
                 if "live" in p.read_text()]
        if found and list((root / "runs" / found[0]).glob("steps/part-*.parquet")):
            return found[0]
        time.sleep(0.2)
    raise AssertionError("the trainer wrote no run")


def test_a_running_run_updates_while_the_trainer_writes(trained_store: Path, tmp_path: Path
                                                        ) -> None:
    root = tmp_path / "store"
    shutil.copytree(trained_store, root)  # one finished run: the user's selection sits on it
    finished = next(p.name for p in (root / "runs").iterdir())
    proc = start_trainer(root)
    try:
        live = wait_for_run(root)
        progress, curve_points = asyncio.run(watch(make_app(root), finished, live))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert len(set(progress)) >= 2, progress  # the row moved on by itself
    assert curve_points == sorted(curve_points) and curve_points[-1] > curve_points[0]


async def watch(app: ImbtuiApp, finished: str, live: str) -> tuple[list[str], list[int]]:
    progress: list[str] = []
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause(0.5)
        table = app.screen.table
        await until(pilot, lambda: live in table.keys)
        table.move_cursor(row=table.keys.index(finished))
        app.screen.query_one("#runs-filter").value = ""  # a filter that keeps both rows

        def moved() -> bool:
            cell = str(table.get_cell(live, "progress"))
            if not progress or progress[-1] != cell:
                progress.append(cell)
            return len(set(progress)) >= 2

        await until(pilot, moved)
        assert "live" in str(table.get_cell(live, "status"))
        assert table.current_key() == finished  # refreshes kept the selection
        table.move_cursor(row=table.keys.index(live))
        await pilot.press("enter")
        points: list[int] = []

        def grew() -> bool:
            curves = getattr(app.screen, "curves", None)
            if curves is not None and "train_acc" in curves.groups:
                n = sum(v is not None for v in curves.groups["train_acc"]["majority"])
                if not points or points[-1] != n:
                    points.append(n)
            return len(points) >= 3

        await until(pilot, grew)
        assert app.screen.apply_ms is not None
    return progress, points


async def until(pilot: Pilot[None], condition, timeout: float = 90) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app to update")
        await pilot.pause(0.2)
