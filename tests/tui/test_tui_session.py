"""The app's store session rebuilds its views when a file changed, and on the clock only while a
run is running (a heartbeat that stops turns a run 'crashed' with no file changing)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from imbtui.store import RunWriter
from imbtui.tui.data import session as session_mod
from imbtui.tui.data.session import STATUS_RECHECK_S, StoreSession


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


def write_run(root: Path, run_id: str, finish: bool) -> RunWriter:
    w = RunWriter(root, run_id, heartbeat_s=3600)
    w.start({"name": run_id, "config": {"dataset": "toy", "ratio": 10.0}, "total_steps": 4})
    if finish:
        w.finish("finished")
    return w


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(session_mod, "time", c)
    return c


def test_with_no_run_running_only_a_file_change_rebuilds(tmp_path: Path, clock: Clock) -> None:
    write_run(tmp_path, "a", finish=True)
    s = StoreSession(tmp_path)
    first = s.refresh()
    clock.now += 5 * STATUS_RECHECK_S
    assert s.refresh() == first  # the clock alone: nothing to look at again
    write_run(tmp_path, "b", finish=True)
    assert s.refresh() == first + 1  # a new run is a new folder


def test_while_a_run_is_running_the_clock_rebuilds(tmp_path: Path, clock: Clock) -> None:
    w = write_run(tmp_path, "live", finish=False)
    try:
        s = StoreSession(tmp_path)
        first = s.refresh()
        assert s.refresh() == first  # nothing changed, same time window
        clock.now += STATUS_RECHECK_S
        assert s.refresh() == first + 1  # its heartbeat may have gone stale meanwhile
    finally:
        w.finish("finished")
