"""Many processes on one store: 8 trainers writing while another process queries in a loop, and
trainers killed with SIGKILL at random moments. Nothing errors, nothing is lost or counted twice.

Both tests start real processes (each imports torch and trains), so both are marked slow; they are
bounded by --max-steps and short flush intervals (~1-2 minutes together on 2 cores).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imbtui.cli import main
from imbtui.store import Store

REPO = Path(__file__).resolve().parents[2]
C = 10  # MNIST-1D classes

# A trainer run in its own process with a short flush interval, through the real loop and the real
# RunWriter. It appends each step to LOG as the step is taken, so the test knows how far the run
# got when it was killed.
TRAINER = r"""
import os, sys
from imbtui.store import RunWriter
from trainer import dynamics
from trainer.loop import TrainConfig, train

root, run_id, log_path, max_steps, flush_steps = sys.argv[1:6]
log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
record = dynamics.StepRecorder.record

def logged(self, step, *args, **kwargs):
    out = record(self, step, *args, **kwargs)
    os.write(log, f"{step}\n".encode())
    return out

dynamics.StepRecorder.record = logged
# epochs: far more than a kill (up to 3 s after the first step) lets a run reach; the 8-writer
# test bounds its runs by max_steps instead
cfg = TrainConfig(ratio=10.0, epochs=50, max_steps=int(max_steps), flush_steps=int(flush_steps),
                  flush_seconds=0.3, seed=len(run_id), device="cpu")
train(cfg, RunWriter(root, run_id=run_id))
"""

# Queries the store in a loop until STOP exists, the way `imbtui sql` and the TUI do (a fresh
# connection, and a long-lived one refreshed each time); writes what it saw to OUT as JSON.
READER = r"""
import json, sys, time, traceback
from pathlib import Path
from imbtui.store import Store

root, stop, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
seen = {"queries": 0, "errors": [], "warnings": [], "max_dup": 0, "shrank": [], "rows": 0}
live = Store(root)
con = live.connect()
last = 0
while not stop.exists():
    for st, c in ((Store(root), None), (live, con)):
        try:
            if c is not None:
                st.refresh(c)
            got = st.sql("SELECT count(*) AS n, count(*) - count(DISTINCT (run_id, step, class_id))"
                         " AS dup FROM steps", con=c).row(0)
            ep = st.sql("SELECT count(*) - count(DISTINCT (run_id, epoch, split, class_id)) "
                        "FROM epochs", con=c).item()
            st.sql("SELECT r.run_id, r.status, count(s.step) FROM runs r LEFT JOIN steps s "
                   "USING (run_id) GROUP BY ALL", con=c)
            seen["queries"] += 3
            seen["max_dup"] = max(seen["max_dup"], got[1], ep)
            if got[0] < last:
                seen["shrank"].append([last, got[0]])
            last = got[0]
            seen["warnings"] += st.warnings
        except Exception:
            seen["errors"].append(traceback.format_exc())
    time.sleep(0.05)  # leave the two cores mostly to the trainers
seen["rows"] = last
out.write_text(json.dumps(seen))
"""


# one thread per process: nine processes on a few cores would otherwise fight over them
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, text=True, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def spawn_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "imbtui", *args], cwd=REPO, text=True, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def check_run_rows(st: Store, run_id: str, step_done: int, epoch_done: int | None,
                   batch: int | None = None) -> None:
    """Every step row of the run exactly once: steps 0..step_done-1, C classes each."""
    steps = st.sql("SELECT count(*) AS n, count(DISTINCT (step, class_id)) AS d, "
                   "count(DISTINCT step) AS s, min(step) AS lo, max(step) AS hi "
                   "FROM steps WHERE run_id = $r", {"r": run_id}).row(0, named=True)
    assert steps == {"n": step_done * C, "d": step_done * C, "s": step_done, "lo": 0,
                     "hi": step_done - 1}, run_id
    if epoch_done is not None:  # epochs 0..epoch_done, train and test, C classes each
        n, d = st.sql("SELECT count(*), count(DISTINCT (epoch, split, class_id)) FROM epochs "
                      "WHERE run_id = $r", {"r": run_id}).row(0)
        assert n == d == (epoch_done + 1) * 2 * C, run_id
    assert st.sql("SELECT count(*) FROM classes WHERE run_id = $r", {"r": run_id}).item() == C
    # per-sample rows (full dynamics): one per presentation, each (step, batch position) once
    n, d, steps = st.sql("SELECT count(*), count(DISTINCT (step, pos)), count(DISTINCT step) "
                         "FROM samples WHERE run_id = $r", {"r": run_id}).row(0)
    assert n == d, run_id
    if batch is not None and n:
        assert (n, steps) == (step_done * batch, step_done), run_id


@pytest.mark.slow
def test_eight_writers_and_a_reader_lose_nothing(tmp_path: Path) -> None:
    store, stop, seen_path = tmp_path / "store", tmp_path / "stop", tmp_path / "seen.json"
    store.mkdir()
    reader = spawn(READER, str(store), str(stop), str(seen_path))
    trainers = [spawn(TRAINER, str(store), f"w{i}", str(tmp_path / f"w{i}.log"), "40", "4")
                for i in range(4)]
    trainers += [spawn_cli("train", "--ratio", "10", "--epochs", "1", "--max-steps", "40",
                           "--seed", str(i), "--name", f"cli{i}", "--store", str(store), "-q")
                 for i in range(4)]
    try:
        results = [p.communicate(timeout=420) for p in trainers]
    finally:
        stop.touch()
        for p in trainers:
            p.kill()
    reader.communicate(timeout=120)
    for p, (_, err) in zip(trainers, results):
        assert p.returncode == 0 and "Traceback" not in err, err

    seen = json.loads(seen_path.read_text())
    assert seen["errors"] == [] and seen["warnings"] == []
    assert seen["queries"] >= 30, "the reader hardly ran beside the writers"
    assert seen["max_dup"] == 0, "a reader saw a row twice"
    assert seen["shrank"] == [], "rows disappeared from a reader's view"

    st = Store(store)
    runs = st.sql("SELECT run_id, status, step_done, epoch_done FROM runs").rows()
    assert len(runs) == 8 and {r[1] for r in runs} == {"finished"}
    for run_id, _, step_done, epoch_done in runs:
        assert step_done == 40
        check_run_rows(st, run_id, step_done, epoch_done, batch=128)
    assert seen["rows"] <= 8 * 40 * C
    # the small-flush runs (>= 10 step parts each) compacted them while the reader was reading
    for i in range(4):
        (name,) = [p.name for p in (store / "runs" / f"w{i}" / "steps").iterdir()]
        assert name.startswith("part-000000-") and name != "part-000000-000000.parquet"


@pytest.mark.slow
def test_killed_trainers_keep_their_rows_and_show_as_crashed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    store.mkdir()
    # random kill moments; a failure names its seed, and IMBTUI_KILL_SEED=<seed> replays it
    seed = int(os.environ.get("IMBTUI_KILL_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    flush = 10
    taken: dict[str, int] = {}
    for i in range(4):
        run_id, log = f"k{i}", tmp_path / f"k{i}.log"
        proc = spawn(TRAINER, str(store), run_id, str(log), "100000", str(flush))
        # a random moment: while starting up (round 0), or a random time after the first step
        if i == 0:
            time.sleep(rng.uniform(0.0, 1.5))
        else:
            deadline = time.monotonic() + 240
            while not (log.exists() and log.read_text()):
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.05)
            time.sleep(rng.uniform(0.2, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        lines = log.read_text().split("\n")[:-1] if log.exists() else []
        taken[run_id] = int(lines[-1]) + 1 if lines else 0

    monkeypatch.setenv("IMBTUI_STALE_AFTER_S", "1")
    time.sleep(1.5)
    st = Store(store)
    frame = st.runs_frame()
    assert st.warnings == []  # a killed writer leaves no damaged part, only hidden temp files
    statuses = dict(zip(frame["run_id"], frame["status"]))
    for run_id, n_taken in taken.items():
        if run_id not in statuses:  # killed before it wrote its run.json
            assert n_taken == 0
            continue
        assert statuses[run_id] == "crashed", f"seed {seed}"
        kept = st.sql("SELECT count(DISTINCT step) FROM steps WHERE run_id = $r",
                      {"r": run_id}).item()
        check_run_rows(st, run_id, kept, None)  # steps 0..kept-1, each class exactly once
        assert kept >= n_taken - flush, f"seed {seed}, {run_id}: lost more than one flush"
    assert sum(taken.values()) > 0

    # every command still reads the store, and shows the dead runs as crashed
    args = ["--store", str(store)]
    assert main(["runs", "--json", *args]) == 0
    listed = {r["run_id"]: r["status"] for r in json.loads(capsys.readouterr().out)}
    assert listed == {k: "crashed" for k in statuses}
    assert main(["sql", "SELECT DISTINCT status FROM runs", "--format", "csv", *args]) == 0
    assert capsys.readouterr().out.split() == ["status", "crashed"]
    for run_id in statuses:
        assert main(["show", run_id, *args]) == 0
    assert main(["doctor", *args]) == 0  # crashed runs are reported, not errors
    assert "crashed-run" in capsys.readouterr().out
    assert main(["query", "run_summary", "--format", "csv", *args]) == 0
    assert main(["export", "--duckdb", str(tmp_path / "all.duckdb"), *args]) == 0
    capsys.readouterr()
    from imbtui.tui.data import StoreSession, runs_table  # what `imbtui browse` lists

    session = StoreSession(store)
    session.refresh(force=True)
    browse = runs_table(session.cursor())
    assert dict(zip(browse["run_id"], browse["status"])) == {k: "crashed" for k in statuses}
