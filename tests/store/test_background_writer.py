"""RunWriter(background=True): the parts and progress a writer thread writes are those the caller's
thread would have written, in the same order, and a failure there stops the run as one would here.

Each test replays one sequence of writes and updates into a direct writer and a background one and
compares what is on disk (the direct writer is the independent reference), or watches the order
in which the thread's files appear.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

import imbtui.store.writer as writer_mod
from imbtui.store import RunWriter
from imbtui.store.schema import ARROW_TABLES
from imbtui.store.writer import StoreWriteError
from tests.robust.test_robust_writes import failing_part_writes

C = 4  # classes


def steps_part(first: int, n_steps: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The steps rows of steps first .. first+n_steps-1, C classes each, random values."""
    rows = n_steps * C
    cols: dict[str, np.ndarray] = {}
    for name, kind in ARROW_TABLES["steps"]:
        if name == "run_id":
            continue
        if name == "step":
            cols[name] = np.repeat(np.arange(first, first + n_steps), C).astype(np.int64)
        elif name == "class_id":
            cols[name] = np.tile(np.arange(C), n_steps).astype(np.int32)
        elif pa.types.is_integer(kind):
            cols[name] = rng.integers(0, 100, rows).astype(kind.to_pandas_dtype())
        else:
            cols[name] = rng.normal(size=rows)
    return cols


def replay(writer: RunWriter, parts: list[dict[str, np.ndarray]], steps_per_part: int) -> None:
    """What the trainer does: a part, then the progress it completes; the caller reuses (here:
    overwrites) its arrays right after each write."""
    writer.start({"ratio": 10.0})
    for i, cols in enumerate(parts):
        mine = {k: v.copy() for k, v in cols.items()}
        writer.write("steps", mine)
        for v in mine.values():
            v[...] = 0  # a caller's buffer, reused for the next flush
        writer.update(step_done=(i + 1) * steps_per_part, epoch_done=i)
    writer.finish("finished")


def table_rows(run: Path, table: str) -> pl.DataFrame:
    return pl.read_parquet(sorted((run / table).glob("part-*.parquet"))).sort("step", "class_id")


def meta(run: Path) -> dict:
    data = json.loads((run / "run.json").read_text())
    return {k: v for k, v in data.items() if not k.endswith("_at")}


@pytest.mark.parametrize("compact_min_parts", [2, 1000])  # compacted, and left as parts
def test_background_writes_what_the_direct_writer_writes(tmp_path: Path,
                                                         compact_min_parts: int) -> None:
    rng = np.random.default_rng(0)
    parts = [steps_part(3 * i, 3, rng) for i in range(12)]
    runs = {}
    for background in (False, True):
        root = tmp_path / str(background)
        w = RunWriter(root, run_id="r1", background=background,
                      compact_min_parts=compact_min_parts)
        replay(w, parts, 3)
        runs[background] = w.dir
    direct, queued = table_rows(runs[False], "steps"), table_rows(runs[True], "steps")
    assert queued.equals(direct)
    assert len(queued) == 12 * 3 * C and queued["loss_sum"].abs().sum() > 0  # not the zeros
    assert meta(runs[True]) == meta(runs[False])
    assert meta(runs[True])["step_done"] == 36 and meta(runs[True])["status"] == "finished"
    names = sorted(p.name for p in (runs[True] / "steps").iterdir())
    assert names == sorted(p.name for p in (runs[False] / "steps").iterdir())


def test_progress_never_runs_ahead_of_the_parts(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run.json the writer thread writes claims no step that is not in a part on disk,
    though each part takes 50 ms to write and the caller queues progress right behind it."""
    real_part, real_json = writer_mod.write_part_file, writer_mod.atomic_write_json
    seen: list[tuple[int, int]] = []  # (step_done claimed, steps on disk) at each run.json write

    def slow_part(path: Path, data, fsync: bool = False) -> None:
        time.sleep(0.05)
        real_part(path, data, fsync)

    def watched_json(path: Path, obj, *args, **kwargs) -> None:
        if "step_done" in obj:
            on_disk = sum(pl.read_parquet(p)["step"].n_unique()
                          for p in (path.parent / "steps").glob("part-*.parquet"))
            seen.append((obj["step_done"], on_disk))
        real_json(path, obj, *args, **kwargs)

    monkeypatch.setattr(writer_mod, "write_part_file", slow_part)
    monkeypatch.setattr(writer_mod, "atomic_write_json", watched_json)
    rng = np.random.default_rng(1)
    w = RunWriter(tmp_path, run_id="r1", background=True, compact_min_parts=1000)
    t0 = time.perf_counter()
    w.start({})
    for i in range(10):
        w.write("steps", steps_part(2 * i, 2, rng))
        w.update(step_done=2 * (i + 1))
    queued_in = time.perf_counter() - t0
    w.finish("finished")
    assert queued_in < 10 * 0.05  # the caller did not wait for the slow parts
    assert [claimed for claimed, _ in seen][:10] == [2 * (i + 1) for i in range(10)]
    assert all(claimed <= on_disk for claimed, on_disk in seen)


def test_a_failure_on_the_thread_fails_the_run_at_finish(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    failing_part_writes(monkeypatch, after=2)
    rng = np.random.default_rng(2)
    w = RunWriter(tmp_path, run_id="r1", background=True, compact_min_parts=1000)
    w.start({})
    for i in range(2):
        w.write("steps", steps_part(i, 1, rng))
    with pytest.raises(StoreWriteError, match="No space left on device") as info:
        for i in range(2, 6):
            w.write("steps", steps_part(i, 1, rng))
            w.update(step_done=i + 1)
        w.finish("finished")
    assert "part-000002.parquet" in str(info.value) and "\n" not in str(info.value)
    if w._meta["status"] == "running":  # raised by a write(): the trainer then says `failed`
        w.finish("failed", str(info.value))
    data = json.loads((w.dir / "run.json").read_text())
    assert data["status"] == "failed" and "No space left on device" in data["message"]
    assert sorted(p.name for p in (w.dir / "steps").iterdir()) == [
        "part-000000.parquet", "part-000001.parquet"]  # intact; nothing after the failed one
    assert not [p for p in w.dir.rglob(".*") if p.is_file()]  # no temporary file left


def test_a_failure_raised_by_a_write_is_not_raised_again(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    failing_part_writes(monkeypatch, after=0)
    rng = np.random.default_rng(3)
    w = RunWriter(tmp_path, run_id="r1", background=True)
    w.start({})
    deadline = time.monotonic() + 30
    with pytest.raises(StoreWriteError, match="part-000000.parquet"):
        while time.monotonic() < deadline:  # the next write() after the thread's failure
            w.write("steps", steps_part(0, 1, rng))
            time.sleep(0.005)
    w.finish("failed", "the trainer's message")  # the error is on its way already: no second
    data = json.loads((w.dir / "run.json").read_text())
    assert (data["status"], data["message"]) == ("failed", "the trainer's message")
    assert not (w.dir / "steps").exists() or not list((w.dir / "steps").glob("part-*"))


def test_bad_columns_are_refused_on_the_callers_thread(tmp_path: Path) -> None:
    w = RunWriter(tmp_path, run_id="r1", background=True)
    w.start({})
    cols = steps_part(0, 1, np.random.default_rng(4))
    cols["n"] = np.full(C, 1.5)  # not an integer
    with pytest.raises(ValueError, match="steps.n"):
        w.write("steps", cols)
    w.finish("finished")
    assert json.loads((w.dir / "run.json").read_text())["status"] == "finished"
