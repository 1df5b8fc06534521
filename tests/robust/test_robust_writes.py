"""A run that cannot write, that diverges or that is interrupted stops cleanly and keeps its rows.

- full disk (a real tiny tmpfs where the machine allows mounting, else an injected ENOSPC) and an
  unwritable store (a read-only bind mount; a store path below a regular file): one clear error
  line, the run stops, earlier parts stay intact and readable;
- divergence: NaN or infinite loss -> status `diverged`, a message naming the step, every step row
  up to and including that step kept and none after it;
- Ctrl-C: the run flushes what it has, is marked `interrupted`, and the process exits promptly.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import imbtui.store.writer as writer_mod
from imbtui.cli import main
from imbtui.store import RunWriter, Store
from imbtui.store.writer import StoreWriteError

REPO = Path(__file__).resolve().parents[2]
C = 10  # MNIST-1D classes


def small_cfg(**over):
    from trainer.loop import TrainConfig

    base = dict(ratio=10.0, epochs=1, max_steps=40, flush_steps=4, flush_seconds=1e9, seed=0,
                device="cpu")
    return TrainConfig(**{**base, **over})


def only_run(root: Path) -> Path:
    (run,) = [p for p in (root / "runs").iterdir() if not p.name.startswith(".")]
    return run


def meta_of(root: Path) -> dict:
    return json.loads((only_run(root) / "run.json").read_text())


def step_ids(root: Path) -> list[int]:
    """Distinct steps present, after checking every step has exactly one row per class."""
    st = Store(root)
    frame = st.sql("SELECT step, count(*) AS rows, count(DISTINCT class_id) AS classes "
                   "FROM steps GROUP BY step ORDER BY step")
    assert st.warnings == []
    assert set(frame["rows"]) <= {C} and set(frame["classes"]) <= {C}
    return frame["step"].to_list()


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob(".*") if p.is_file()]


def digest(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


# ==== full disk, unwritable store ===================================================================

def failing_part_writes(monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    """The (after+1)-th steps part hits a full disk: the real writer's temp file is created and
    removed, as when the kernel refuses the bytes."""
    real = writer_mod.write_part_file
    seen = {"steps": 0}

    def write(path: Path, data: bytes, fsync: bool = False) -> None:
        if path.parent.name == "steps":
            seen["steps"] += 1
            if seen["steps"] > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, data, fsync)

    monkeypatch.setattr(writer_mod, "write_part_file", write)


@pytest.mark.slow  # trains (a few seconds to a few tens on 2 busy cores)
@pytest.mark.parametrize("background", [False, True], ids=["direct", "writer-thread"])
def test_full_disk_stops_the_run_and_keeps_earlier_parts(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        background: bool) -> None:
    from trainer.loop import train

    failing_part_writes(monkeypatch, after=3)
    with pytest.raises(StoreWriteError, match="No space left on device") as info:
        train(small_cfg(), RunWriter(tmp_path, background=background))
    assert "part-000003.parquet" in str(info.value) and "\n" not in str(info.value)
    assert step_ids(tmp_path) == list(range(12))  # 3 parts x 4 steps, intact
    meta = meta_of(tmp_path)
    assert meta["status"] == "failed" and "No space left on device" in meta["message"]
    assert no_temp_files(tmp_path)


@pytest.mark.slow  # trains (a few seconds to a few tens on 2 busy cores)
def test_full_disk_through_the_cli_is_one_error_line(tmp_path: Path, monkeypatch:
                                                     pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    failing_part_writes(monkeypatch, after=0)
    code = main(["train", "--ratio", "10", "--epochs", "1", "--max-steps", "400", "--store",
                 str(tmp_path), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("imbtui: error: cannot write runs/")
    assert "No space left on device" in err
    assert meta_of(tmp_path)["status"] == "failed"


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[callable]:
    """mount(args, target): a real mount for this test, unmounted afterwards; skips where the
    machine does not allow mounting (not root, no CAP_SYS_ADMIN)."""
    targets: list[Path] = []

    def mount(args: list[str], target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount here: {proc.stderr.strip()}")
        targets.append(target)

    yield mount
    for target in reversed(targets):
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.mark.slow
def test_a_really_full_disk(tmp_path: Path, mounted) -> None:
    """A 1 MiB tmpfs, nearly filled: the trainer fails with one line, parts already written stay
    readable, and no temporary file is left taking space."""
    disk = tmp_path / "disk"
    mounted(["-t", "tmpfs", "-o", "size=1m", "tmpfs"], disk)
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            f.write(b"\0" * (1024 * 1024 - 160 * 1024))
        except OSError:
            pytest.skip("tmpfs smaller than asked")
    store = disk / "store"
    proc = subprocess.run([sys.executable, "-m", "imbtui", "train", "--ratio", "10", "--epochs",
                           "3", "--store", str(store), "-q"], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("imbtui: error: cannot write") and "No space left on device" in last
    steps = step_ids(store)
    assert steps == list(range(len(steps)))  # whatever was flushed is there, from step 0 on
    assert meta_of(store)["status"] == "failed"
    assert no_temp_files(store)


def test_read_only_store_refuses_with_one_line(tmp_path: Path, mounted,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    src, ro = tmp_path / "src", tmp_path / "ro"
    w = RunWriter(src, run_id="old", heartbeat_s=3600)
    w.start({"name": "old"})
    w.write("classes", {"class_id": [0], "class_name": ["a"], "train_count": [1],
                        "test_count": [1], "rank": [0], "grp": ["majority"], "shot": ["few"]})
    w.finish("finished")
    mounted(["--bind", str(src)], ro)
    proc = subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("cannot remount read-only here")
    before = digest(ro)
    code = main(["train", "--ratio", "10", "--epochs", "1", "--max-steps", "4", "--store",
                 str(ro), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Read-only file system" in err
    assert err.startswith("imbtui: error: cannot write runs/")
    assert digest(ro) == before
    assert Store(ro).sql("SELECT count(*) FROM classes").item() == 1  # still readable


def test_store_below_a_regular_file_refuses_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["train", "--ratio", "10", "--epochs", "1", "--max-steps", "4", "--store",
                 str(blocker / "store"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Not a directory" in err
    assert blocker.read_text() == "x"


# ==== divergence ====================================================================================

class PoisonAt:
    """Wraps the training loss: the returned loss is NaN at call `at` (so the weights, and from the
    next step on the logits and the recorded loss, become NaN)."""

    def __init__(self, inner, at: int) -> None:
        self.inner, self.at, self.calls = inner, at, 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __call__(self, *args, **kwargs):
        loss = self.inner(*args, **kwargs)
        self.calls += 1
        return loss * float("nan") if self.calls == self.at + 1 else loss


@pytest.mark.slow  # trains (a few seconds to a few tens on 2 busy cores)
@pytest.mark.parametrize("bad_call", [5, 8])  # mid-buffer and at a flush boundary
def test_nan_loss_stops_the_run_as_diverged_keeping_rows_up_to_the_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad_call: int) -> None:
    import trainer.loop as loop

    real = loop.build_loss
    monkeypatch.setattr(loop, "build_loss", lambda *a, **k: PoisonAt(real(*a, **k), bad_call))
    result = loop.train(small_cfg(), RunWriter(tmp_path))
    first_bad = bad_call + 1  # step bad_call's logits were finite; its update poisons the next
    assert result.status == "diverged"
    assert result.message == f"loss became NaN or infinite at step {first_bad}"
    assert step_ids(tmp_path) == list(range(first_bad + 1))  # up to the bad step, none after
    st = Store(tmp_path)
    finite = st.sql("SELECT step, bool_and(isfinite(loss_sum)) AS ok FROM steps GROUP BY step "
                    "ORDER BY step")
    assert finite["ok"].to_list() == [True] * first_bad + [False]
    meta = meta_of(tmp_path)
    assert meta["status"] == "diverged" and meta["step_done"] == first_bad + 1
    assert str(first_bad) in meta["message"]


@pytest.mark.slow  # trains (a few seconds to a few tens on 2 busy cores)
def test_divergence_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--ratio", "10", "--epochs", "1", "--lr", "1e6", "--store",
                 str(tmp_path), "-q"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    line = [x for x in captured.err.splitlines() if x.startswith("diverged:")]
    assert len(line) == 1 and "loss became NaN or infinite at step" in line[0]
    bad = int(line[0].rsplit(" ", 1)[1])
    assert step_ids(tmp_path) == list(range(bad + 1))
    meta = meta_of(tmp_path)
    assert (meta["status"], meta["step_done"]) == ("diverged", bad + 1)


# ==== Ctrl-C ========================================================================================

class InterruptOnFlush:
    """Progress hooks that press Ctrl-C at the n-th flush."""

    def __init__(self, n: int) -> None:
        self.n, self.flushes = n, 0

    def on_start(self, info) -> None: ...
    def on_epoch(self, epoch, summary) -> None: ...

    def on_flush(self, step: int, loss: float) -> None:
        self.flushes += 1
        if self.flushes == self.n:
            raise KeyboardInterrupt


@pytest.mark.slow  # trains (a few seconds to a few tens on 2 busy cores)
def test_ctrl_c_keeps_every_flushed_step_and_marks_interrupted(tmp_path: Path) -> None:
    from trainer.loop import train

    with pytest.raises(KeyboardInterrupt):
        train(small_cfg(max_steps=400), RunWriter(tmp_path), InterruptOnFlush(3))
    meta = meta_of(tmp_path)
    assert meta["status"] == "interrupted" and meta["step_done"] == 12  # 3 flushes x 4 steps
    assert meta["message"] == "interrupted at step 12"
    assert step_ids(tmp_path) == list(range(12))
    assert no_temp_files(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_to_a_training_process(tmp_path: Path, sig: signal.Signals) -> None:
    """A real Ctrl-C (SIGINT), or `kill` / a job scheduler (SIGTERM), to `imbtui train`: exit 130
    within seconds, status interrupted, all steps from 0 present once, and at most one flush
    interval short of the steps taken."""
    proc = subprocess.Popen([sys.executable, "-m", "imbtui", "train", "--ratio", "10", "--epochs",
                             "30", "--store", str(tmp_path), "-q"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob("runs/*/steps/part-*.parquet")):
            assert proc.poll() is None and time.monotonic() < deadline, "no steps were written"
            time.sleep(0.2)
        time.sleep(1.5)
        proc.send_signal(sig)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert took < 15, f"took {took:.1f} s to stop"
    assert "Traceback" not in err and "(status interrupted)" in " ".join(err.split())
    meta = meta_of(tmp_path)
    assert meta["status"] == "interrupted"
    steps = step_ids(tmp_path)
    assert steps == list(range(len(steps))) and len(steps) > 0
    # a step interrupted after its rows were taken but before it counted is kept as well
    assert len(steps) - 1 <= meta["step_done"] <= len(steps) + 200  # 200: default flush_steps


def test_a_ctrl_c_during_setup_marks_the_run_interrupted() -> None:
    """The run exists from sink.start on: an interrupt before the first step (where a sweep's
    SIGINT lands if it comes right after run.json appears) still records how the run ended."""
    from trainer.loop import Hooks, TrainConfig, train
    from trainer.sink import MemorySink

    class CtrlC(Hooks):
        def on_start(self, info: dict) -> None:
            raise KeyboardInterrupt

    sink = MemorySink()
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(ratio=10, epochs=1, max_steps=3, device="cpu"), sink, CtrlC())
    assert sink.status == "interrupted" and sink.meta["step_done"] == 0
