"""`imbtui sweep`: ratios x seeds x losses as separate train processes writing into one store."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imbtui.sweep import child_env, expand_lists
from tests.conftest import REPO, imbtui


def runs_in(store: Path) -> list[dict]:
    if not (store / "runs").is_dir():
        return []
    return [json.loads((d / "run.json").read_text()) for d in sorted((store / "runs").iterdir())]


def test_expand_lists() -> None:
    assert expand_lists(["--ratio", "1", "10", "100", "--seed", "0", "1", "-j", "2"]) == [
        "--ratio", "1", "--ratio", "10", "--ratio", "100", "--seed", "0", "--seed", "1", "-j", "2"]
    # options that take one value are left alone, and so is everything after --
    assert expand_lists(["--epochs", "3", "--loss", "ce", "ldam", "--", "--lr", "0.1"]) == [
        "--epochs", "3", "--loss", "ce", "--loss", "ldam", "--", "--lr", "0.1"]
    assert expand_lists(["--ratio=5", "--bf16"]) == ["--ratio=5", "--bf16"]


def test_child_env_spreads_gpus_and_cpu_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    # several GPUs: one per slot, round robin
    assert [child_env(s, 4, 2)["CUDA_VISIBLE_DEVICES"] for s in range(4)] == ["0", "1", "0", "1"]
    assert "CUDA_VISIBLE_DEVICES" not in child_env(0, 4, 1)
    # CPU only: the cores are shared out, unless the user chose
    assert child_env(0, 4, 0)["OMP_NUM_THREADS"] == "2"
    assert "OMP_NUM_THREADS" not in child_env(0, 1, 0)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert child_env(0, 4, 0)["OMP_NUM_THREADS"] == "3"


def test_dry_run_lists_the_grid(tmp_path: Path) -> None:
    proc = imbtui("sweep", "--ratio", "1", "100", "--seed", "0", "1", "--loss", "ce", "ldam",
                  "--drw", "1", "--epochs", "2", "--store", str(tmp_path / "s"), "--dry-run",
                  "--lr", "0.02")
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 8
    combos = set()
    for line in lines:
        words = line.split()
        get = lambda opt: words[words.index(opt) + 1]  # noqa: E731
        combos.add((get("--ratio"), get("--seed"), get("--loss")))
        assert get("--drw") == "1" and get("--epochs") == "2" and get("--lr") == "0.02"
        assert get("--sweep").startswith("sweep-")
    assert combos == {(r, s, lo) for r in ("1", "100") for s in ("0", "1") for lo in ("ce", "ldam")}
    assert not (tmp_path / "s").exists()


def test_choice_axes_hand_each_run_their_plain_values(tmp_path: Path) -> None:
    # --optimizer and --stage2 are axes whose choices the parser checks (Enums inside Typer):
    # each run's line must carry the value itself, which `imbtui train` accepts
    proc = imbtui("sweep", "--optimizer", "sgd", "imbsam", "--stage2", "none", "crt",
                  "--epochs", "2", "--store", str(tmp_path / "s"), "--dry-run")
    lines = [line.split() for line in proc.stdout.strip().splitlines()]
    pairs = {(w[w.index("--optimizer") + 1], w[w.index("--stage2") + 1]) for w in lines}
    assert pairs == {(o, s) for o in ("sgd", "imbsam") for s in ("none", "crt")}
    names = {w[w.index("--name") + 1] for w in lines}
    assert names == {"mnist1d-r100-ce-s0", "mnist1d-r100-ce+imbsam-s0", "mnist1d-r100-ce+crt-s0",
                     "mnist1d-r100-ce+imbsam+crt-s0"}


def test_sweep_runs_in_parallel_into_one_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    proc = imbtui("sweep", "--ratio", "1", "100", "--seed", "3", "--epochs", "1", "--max-steps",
                  "4", "-j", "2", "--store", str(store), "--name", "t-")
    runs = runs_in(store)
    assert len(runs) == 2 and {r["status"] for r in runs} == {"finished"}
    assert {r["name"] for r in runs} == {"t-mnist1d-r1-ce-s3", "t-mnist1d-r100-ce-s3"}
    sweeps = {r["config"]["sweep"] for r in runs}
    assert len(sweeps) == 1 and sweeps.pop().startswith("sweep-")
    assert {r["config"]["ratio"] for r in runs} == {1.0, 100.0}
    assert all(r["step_done"] == 4 and r["config"]["seed"] == 3 for r in runs)
    # the final table names every run with its accuracies
    assert "t-mnist1d-r1-ce-s3" in proc.stdout and "t-mnist1d-r100-ce-s3" in proc.stdout
    assert "bal" in proc.stdout and "min" in proc.stdout


@pytest.mark.parametrize("args, needle", [
    (["--loss", "ce", "nope"], "unknown loss 'nope'"),
    (["--ratio", "1", "100000"], "leaves class"),
    (["--no-such-option"], "No such option: --no-such-option"),
])
def test_bad_runs_are_refused_before_any_starts(tmp_path: Path, args: list[str],
                                                needle: str) -> None:
    proc = imbtui("sweep", *args, "--store", str(tmp_path / "s"), check=False)
    assert proc.returncode == 2 and needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert runs_in(tmp_path / "s") == []


@pytest.mark.slow
def test_interrupted_sweep_keeps_finished_runs(tmp_path: Path) -> None:
    """Ctrl-C after the first run finished: it stays finished and whole; the running one records
    itself as interrupted; the rest never start."""
    store = tmp_path / "store"
    proc = subprocess.Popen(
        # batch 32: four times the steps of the default, so that the second run is still
        # training when the Ctrl-C comes (up to half a second after it is seen running)
        [sys.executable, "-m", "imbtui", "sweep", "--ratio", "100", "--seed", "0", "1", "2",
         "--epochs", "2", "--store", str(store), "-q", "--batch-size", "32"], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        states = [r["status"] for r in runs_in(store)]
        if "finished" in states and "running" in states:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    runs = {r["name"]: r for r in runs_in(store)}
    first = runs["mnist1d-r100-ce-s0"]
    assert first["status"] == "finished" and first["epoch_done"] == 2
    assert runs["mnist1d-r100-ce-s1"]["status"] == "interrupted"
    assert "mnist1d-r100-ce-s2" not in runs
    rows = json.loads(imbtui("sql", f"SELECT count(DISTINCT step) AS steps FROM steps WHERE run_id"
                                    f" = '{first['run_id']}'", "--format", "json", "--store",
                             str(store)).stdout)
    assert rows == [{"steps": first["step_done"]}]
