"""One store folder written from many "machines" at once, as a shared filesystem on a cluster is.

Each trainer runs in its own working directory with its own HOME and TMPDIR, and, where this test
may call `unshare` (as root), in its own network and hostname namespaces: nothing but the store folder
is shared, no socket, no lock, no local path. A reader in yet another namespace queries the store
while they write, as `imbtui browse` on a login node does. Afterwards every row of every run is
there exactly once, with the counts worked out here from the dataset's published size, and two
runs of one configuration on two machines are identical.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from imbtui.store import Store
from trainer.data import cache_dir

REPO = Path(__file__).resolve().parents[2]
C, BATCH, EPOCHS, MAX_STEPS = 10, 128, 1, 60
# MNIST-1D: 4,000 training samples per class; the exp profile at ratio 100 keeps
# floor(4000 * 100^(-i/9)) of class i (Cao et al. 2019), and an epoch is floor(n / batch) steps.
N_TRAIN = sum(math.floor(4000 * 100 ** (-i / (C - 1))) for i in range(C))
STEPS = min(MAX_STEPS, EPOCHS * (N_TRAIN // BATCH))
WRITERS = 3  # node0..node2, seeds 0, 1, 0: one configuration trained on two "machines"

# `imbtui train` through the real CLI, started only once every machine has imported torch, so
# the runs really are written at the same time (imports take longer than these short runs).
WRITER = r"""
import sys, time
from pathlib import Path
import torch._dynamo, trainer.loop, imbtui.store, imbtui.console  # SGD imports dynamo: ~2 s
from imbtui.cli import main

ready, go = Path(sys.argv[1]), Path(sys.argv[2])
ready.touch()
while not go.exists():
    time.sleep(0.01)
sys.exit(main(sys.argv[3:]))
"""

READER = r"""
import json, sys, time, traceback
from pathlib import Path
from imbtui.store import Store

root, stop, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
seen = {"queries": 0, "errors": [], "warnings": [], "dup": 0, "shrank": 0}
st, last = Store(root), 0
con = st.connect()
while not stop.exists():
    try:
        st.refresh(con)
        n, dup = st.sql("SELECT count(*), count(*) - count(DISTINCT (run_id, step, class_id)) "
                        "FROM steps", con=con).row(0)
        seen["queries"] += 1
        seen["dup"] = max(seen["dup"], dup)
        seen["shrank"] += n < last
        last = n
        seen["warnings"] += st.warnings
    except Exception:
        seen["errors"].append(traceback.format_exc())
    time.sleep(0.1)
out.write_text(json.dumps(seen))
"""


def can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--net", "--uts", "true"], capture_output=True)
    return probe.returncode == 0


def own_ns() -> str:
    return os.readlink("/proc/self/ns/net")


def machine(tmp_path: Path, name: str, argv: list[str], isolate: bool) -> subprocess.Popen[str]:
    """Start `argv` as if on another machine: its own folder, HOME, TMPDIR (and namespaces)."""
    home = tmp_path / name
    (home / "tmp").mkdir(parents=True)
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(home / "tmp"), "OMP_NUM_THREADS": "1",
           "IMBTUI_CACHE": str(cache_dir())}  # the dataset cache is shared too, as on a cluster
    env.pop("IMBTUI_STORE", None)
    ident = 'readlink /proc/self/ns/net > netns; hostname > host; exec "$@"'
    shell = ["sh", "-c", ident, "sh", *argv]
    cmd = (["unshare", "--net", "--uts", "sh", "-c", f'hostname {name} && exec "$@"', "sh", *shell]
           if isolate else shell)
    return subprocess.Popen(cmd, cwd=home, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def writer_argv(store: Path, k: int, barrier: Path) -> list[str]:
    return [sys.executable, "-c", WRITER, str(barrier / f"node{k}"), str(barrier / "go"),
            "train", "--ratio", "100", "--epochs", str(EPOCHS),
            "--max-steps", str(MAX_STEPS), "--batch-size", str(BATCH), "--seed", str(k % 2),
            "--model", "mlp",
            "--device", "cpu", "--name", f"node{k}", "--store", str(store), "-q"]


@pytest.mark.slow
def test_many_machines_write_one_store(tmp_path: Path) -> None:
    isolate = can_unshare()  # else (not root): separate folders, HOMEs and TMPDIRs only
    store, stop = tmp_path / "shared" / "imbtui-runs", tmp_path / "stop"
    barrier = tmp_path / "barrier"
    for d in (store, barrier):
        d.mkdir(parents=True)
    reader = machine(tmp_path, "login", [sys.executable, "-c", READER, str(store), str(stop),
                                         str(tmp_path / "seen.json")], isolate)
    writers = [machine(tmp_path, f"node{k}", writer_argv(store, k, barrier), isolate)
               for k in range(WRITERS)]
    try:
        release(barrier, writers)
        results = [w.communicate(timeout=300) for w in writers]
    finally:
        stop.touch()
        for w in writers:
            w.kill()
    reader.communicate(timeout=60)
    for w, (_, err) in zip(writers, results):
        assert w.returncode == 0, err

    _check_machines(tmp_path, isolate)
    _check_reader(json.loads((tmp_path / "seen.json").read_text()))
    _check_rows(Store(store))


def release(barrier: Path, writers: list[subprocess.Popen[str]]) -> None:
    """Let the writers start training together, once all of them are ready."""
    deadline = time.monotonic() + 180
    while len(list(barrier.iterdir())) < WRITERS:
        assert time.monotonic() < deadline, "the writers never got ready"
        assert all(w.poll() is None for w in writers), "a writer ended before training"
        time.sleep(0.05)
    (barrier / "go").touch()


def _check_machines(tmp_path: Path, isolate: bool) -> None:
    nodes = ["login"] + [f"node{k}" for k in range(WRITERS)]
    netns = {(tmp_path / n / "netns").read_text().strip() for n in nodes}
    hosts = [(tmp_path / n / "host").read_text().strip() for n in nodes]
    if isolate:  # a namespace per machine, none of them ours; each its own host name
        assert len(netns) == len(nodes) and own_ns() not in netns
        assert hosts == nodes
    for n in nodes:  # a machine's folder holds only what the test put there: the store is shared
        assert sorted(p.name for p in (tmp_path / n).iterdir()) == ["host", "netns", "tmp"]


def _check_reader(seen: dict) -> None:
    assert seen["errors"] == [] and seen["warnings"] == []
    assert seen["queries"] >= 1 and seen["dup"] == 0 and seen["shrank"] == 0


def _check_rows(st: Store) -> None:
    con = st.connect()
    runs = con.sql("SELECT run_id, name, status, seed, step_done, created_at, finished_at "
                   "FROM runs ORDER BY name").pl()
    assert runs["name"].to_list() == [f"node{k}" for k in range(WRITERS)]
    assert runs["status"].to_list() == ["finished"] * WRITERS
    assert runs["run_id"].n_unique() == WRITERS
    assert runs["step_done"].to_list() == [STEPS] * WRITERS
    # the machines wrote at the same time: every run was open while every other one was
    assert runs["created_at"].max() < runs["finished_at"].min()
    for run_id in runs["run_id"]:
        steps = con.sql("SELECT step, class_id, n FROM steps WHERE run_id = $r", params={
            "r": run_id}).pl()
        assert steps.height == STEPS * C  # every step's C rows...
        assert steps.select(pl.struct("step", "class_id").n_unique()).item() == STEPS * C  # once
        assert sorted(steps["step"].unique()) == list(range(STEPS))
        per_step = steps.group_by("step").agg(pl.col("n").sum())["n"]
        assert per_step.to_list() == [BATCH] * STEPS
        n_ep = con.sql("SELECT count(DISTINCT (epoch, split, class_id)), count(*) FROM epochs "
                       "WHERE run_id = $r", params={"r": run_id}).fetchall()[0]
        assert n_ep == ((EPOCHS + 1) * 2 * C,) * 2
    # the same configuration on two machines records the same numbers
    rows = {name: con.sql("SELECT s.step, s.class_id, s.n, s.loss_sum, s.margin_sum, s.grad_norm "
                          "FROM steps s JOIN runs r USING (run_id) WHERE r.name = $n "
                          "ORDER BY step, class_id", params={"n": name}).pl()
            for name in runs["name"]}
    assert rows["node0"].equals(rows["node2"])
    assert not rows["node0"].equals(rows["node1"])
    assert st.warnings == []
