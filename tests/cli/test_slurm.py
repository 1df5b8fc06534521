"""`imbtui sweep --emit slurm`: the array job script is valid bash, runs every run of the grid in
exactly one array task, and passes the store path through unchanged.

No Slurm here: the test runs the script itself once per SLURM_ARRAY_TASK_ID, with a fake `imbtui`
(and `torchrun`) first on PATH that records the arguments it was given. The grid the tasks cover is
compared with the product of the sweep's lists computed here, and every task's arguments are parsed
by the real `imbtui train` command.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
from pathlib import Path

import pytest
import typer

from imbtui.cli import app, main
from imbtui.slurm import SlurmOptions, directives, task_args

# Records "<program> <args...>" NUL-separated in $FAKE_OUT/<task id>.
FAKE = """#!/bin/bash
printf '%s\\0' "$(basename "$0")" "$@" > "$FAKE_OUT/$SLURM_ARRAY_TASK_ID"
"""
RATIOS, SEEDS, LOSSES = ["1", "10", "100"], ["0", "1"], ["ce", "ldam"]


@pytest.fixture(scope="module")
def fake_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bin_dir = tmp_path_factory.mktemp("bin")
    for prog in ("imbtui", "torchrun"):
        (bin_dir / prog).write_text(FAKE)
        (bin_dir / prog).chmod(0o755)
    return bin_dir


def emit(tmp_path: Path, *extra: str, store: Path | None = None) -> tuple[Path, Path]:
    """Write the script of a 3 x 2 x 2 grid; returns (script, store)."""
    store = store or tmp_path / "shared store" / "runs"  # a space: quoting must hold
    script = tmp_path / "sweep.sbatch"
    rc = main(["sweep", "--ratio", *RATIOS, "--seed", *SEEDS, "--loss", *LOSSES,
               "--epochs", "3", "--store", str(store), "--emit", "slurm", "--out", str(script),
               *extra, "--lr", "0.05"])
    assert rc == 0
    return script, store


def run_task(script: Path, fake_bin: Path, out: Path,
             task: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "FAKE_OUT": str(out)}
    env.pop("SLURM_ARRAY_TASK_ID", None)
    if task is not None:
        env["SLURM_ARRAY_TASK_ID"] = task
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                          timeout=30)


def n_tasks(script: Path) -> int:
    m = re.search(r"^#SBATCH --array=0-(\d+)(%\d+)?$", script.read_text(), re.M)
    assert m, "no #SBATCH --array line"
    return int(m[1]) + 1


def option(args: list[str], name: str) -> str:
    assert args.count(name) == 1, f"{name} given {args.count(name)} times in {args}"
    return args[args.index(name) + 1]


def test_script_is_valid_bash_and_runs_each_grid_point_once(tmp_path: Path,
                                                            fake_bin: Path) -> None:
    script, store = emit(tmp_path)
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    assert os.access(script, os.X_OK)
    n = n_tasks(script)
    assert n == len(RATIOS) * len(SEEDS) * len(LOSSES)
    out = tmp_path / "calls"
    out.mkdir()
    seen, names, sweeps = [], set(), set()
    train = typer.main.get_command(app).get_command(None, "train")
    for i in range(n):
        proc = run_task(script, fake_bin, out, str(i))
        assert proc.returncode == 0, proc.stderr
        prog, *args = (out / str(i)).read_text().split("\0")[:-1]
        assert (prog, args[0]) == ("imbtui", "train")
        args = args[1:]
        train.make_context("train", list(args))  # the real parser accepts every task's arguments
        assert option(args, "--store") == str(store)
        assert option(args, "--lr") == "0.05" and option(args, "--epochs") == "3"
        assert "--run-id" not in args  # each task starts a fresh run, so a requeue never clashes
        seen.append((option(args, "--ratio"), option(args, "--seed"), option(args, "--loss")))
        names.add(option(args, "--name"))
        sweeps.add(option(args, "--sweep"))
    assert sorted(seen) == sorted(itertools.product(RATIOS, SEEDS, LOSSES))
    assert len(names) == n and len(sweeps) == 1
    assert sweeps.pop() in script.read_text().split("#SBATCH --job-name=")[1]


def test_a_task_outside_the_array_fails_cleanly(tmp_path: Path, fake_bin: Path) -> None:
    script, _ = emit(tmp_path)
    out = tmp_path / "calls"
    out.mkdir()
    n = n_tasks(script)
    outside = run_task(script, fake_bin, out, str(n))
    assert outside.returncode == 2
    assert outside.stderr.strip() == f"imbtui: no run for array task {n} (this sweep has 0-{n - 1})"
    unset = run_task(script, fake_bin, out, None)
    assert unset.returncode != 0 and "submit this script with sbatch" in unset.stderr
    assert not list(out.iterdir())  # neither started a trainer


def test_sbatch_lines_follow_the_options(tmp_path: Path, fake_bin: Path) -> None:
    script, store = emit(tmp_path, "--partition", "gpu", "--time", "02:00:00", "--gpus", "4",
                         "--cpus-per-task", "8", "--mem", "32G", "-j", "3",
                         "--sbatch", "account=abc", "--sbatch", "--qos=high",
                         "--setup", "export MARK=set-up")
    lines = [ln for ln in script.read_text().splitlines() if ln.startswith("#SBATCH")]
    for want in ("--partition=gpu", "--time=02:00:00", "--gpus=4", "--nodes=1",
                 "--cpus-per-task=8", "--mem=32G", "--array=0-11%3", "--account=abc",
                 "--qos=high"):
        assert f"#SBATCH {want}" in lines, want
    # directives must precede the first command, or sbatch ignores them
    body = script.read_text().splitlines()
    first_cmd = next(i for i, ln in enumerate(body) if ln and not ln.startswith("#"))
    assert all(body.index(ln) < first_cmd for ln in lines)
    # four GPUs per run: the task runs data-parallel under torchrun on its node
    out = tmp_path / "calls"
    out.mkdir()
    assert run_task(script, fake_bin, out, "5").returncode == 0
    prog, *args = (out / "5").read_text().split("\0")[:-1]
    assert prog == "torchrun"
    assert args[:5] == ["--standalone", "--nproc-per-node=4", "-m", "imbtui", "train"]
    assert option(args, "--store") == str(store)


def test_script_goes_to_stdout_without_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = tmp_path / "runs"
    assert main(["sweep", "--seed", "0", "1", "--epochs", "1", "--store", str(store),
                 "--emit", "slurm"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("#!/bin/bash\n")
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    assert "#SBATCH --array=0-1\n" in text
    assert not store.exists()  # writing the script trains nothing and creates no store


def test_relative_store_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         fake_bin: Path) -> None:
    monkeypatch.chdir(tmp_path)
    script, _ = emit(tmp_path, store=Path("rel") / "runs")
    out = tmp_path / "calls"
    out.mkdir()
    assert run_task(script, fake_bin, out, "0").returncode == 0
    args = (out / "0").read_text().split("\0")[:-1]
    assert option(args, "--store") == str(tmp_path / "rel" / "runs")  # tasks may start elsewhere


@pytest.mark.parametrize("flag", [["--partition", "gpu"], ["--time", "1:00:00"], ["--gpus", "2"],
                                  ["--out", "x.sbatch"], ["--sbatch", "account=a"]])
def test_slurm_options_need_emit_slurm(flag: list[str], capsys: pytest.CaptureFixture) -> None:
    assert main(["sweep", "--dry-run", *flag]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"imbtui: error: {flag[0]} is an option of the Slurm script: add --emit slurm"]


def test_unwritable_out_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "missing" / "sweep.sbatch"
    assert main(["sweep", "--epochs", "1", "--emit", "slurm", "--out", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"imbtui: error: cannot write '{bad}'")


def test_task_args_drop_what_the_script_sets() -> None:
    argv = ["--ratio", "10", "--name", "n", "--store", "/s", "-q", "--sweep", "sw",
            "--run-id", "r1", "--seed", "0"]
    assert task_args(argv) == ["--ratio", "10", "--name", "n", "--seed", "0"]
    assert directives(SlurmOptions("j"), 1) == ["#SBATCH --job-name=j", "#SBATCH --array=0-0"]
