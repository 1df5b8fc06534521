"""Stores for the app's tests, made by the real trainer, and helpers that read them back."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from textual.message import Message
from textual.pilot import Pilot

from imbtui.tui.data import (
    StoreSession,
)
from imbtui.tui.app import ImbtuiApp
from imbtui.tui.screenshots import settle
from tests.conftest import imbtui



# ==== fixtures ====================================================================================

@pytest.fixture(scope="session")
def two_runs(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared ratio-100 run (named r100) plus a ratio-10 run of one epoch (named r10)."""
    root = tmp_path_factory.mktemp("tui-store")
    shutil.copytree(trained_store, root, dirs_exist_ok=True)
    imbtui("train", "--ratio", "10", "--epochs", "1", "--store", str(root), "-q", "--name", "r10")
    return root


@pytest.fixture()
def scratch_store(two_runs: Path, tmp_path: Path) -> Path:
    """A copy the test may change (delete a run)."""
    shutil.copytree(two_runs, tmp_path / "store")
    return tmp_path / "store"


def run_ids(root: Path) -> dict[str, str]:
    """name -> run id, read from run.json files."""
    out = {}
    for p in (root / "runs").glob("*/run.json"):
        meta = json.loads(p.read_text())
        out[meta["name"]] = meta["run_id"]
    return out


def parts(root: Path, run_id: str, table: str) -> pl.DataFrame:
    return pl.read_parquet(str(root / "runs" / run_id / table / "part-*.parquet"))


def cursor(root: Path) -> duckdb.DuckDBPyConnection:
    session = StoreSession(root)
    session.refresh()
    return session.cursor()


Script = Callable[[ImbtuiApp, Pilot[None]], Awaitable[Any]]


def drive(app: ImbtuiApp, script: Script, size: tuple[int, int] = (100, 32),
          messages: list[Message] | None = None) -> Any:
    seen: set[int] = set()

    def hook(message: Message) -> None:
        # a message that bubbles from screen to app is seen twice: keep it once
        if messages is not None and id(message) not in seen:
            seen.add(id(message))
            messages.append(message)

    async def main() -> Any:
        async with app.run_test(size=size, message_hook=hook) as pilot:
            await settle(pilot)
            return await script(app, pilot)

    return asyncio.run(main())


def expected_test_accuracy(root: Path, run_id: str) -> tuple[float, float, float]:
    """(balanced, majority, minority) test accuracy at the last epoch, by hand."""
    grp = {r["class_id"]: r["grp"] for r in parts(root, run_id, "classes").to_dicts()}
    ep = parts(root, run_id, "epochs")
    rows = ep.filter((pl.col("epoch") == ep["epoch"].max()) & (pl.col("split") == "test")).to_dicts()
    bal = sum(r["correct"] / r["n"] for r in rows) / len(rows)
    # a group's accuracy is the mean of its classes' accuracies
    accs = {g: [r["correct"] / r["n"] for r in rows if grp[r["class_id"]] == g]
            for g in ("majority", "minority")}
    return bal, *(sum(a) / len(a) for a in accs.values())
