"""bench/gpu.py, the GPU acceptance script: its `--dry` run on the CPU prints every figure with a
number (so the script cannot rot before a GPU runs it), a part that fails or hangs costs only its
own figures, and the GPU run fits its 8 minutes."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
# every figure the script promises, in print order (its docstring says what each means)
FIGURES = ("gpu_tests_passed", "gpu_tests_failed", "gpu_tests_skipped",
           "throughput_imbtui_img_s", "throughput_plain_img_s", "throughput_speedup",
           "overhead_ratio", "ddp_over_plain", "cifar10lt_epoch_s",
           "projected_cifar10lt_200_epochs_s", "parts_failed", "total_s")


def load_gpu_bench():
    """bench/gpu.py as a module (bench/ is no package); its import costs no torch."""
    if "bench_gpu" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "bench" / "gpu.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_gpu"] = module  # dataclasses look their module up by name
        spec.loader.exec_module(module)
    return sys.modules["bench_gpu"]


@pytest.mark.slow  # five subprocesses that import torch and train ResNet-32 a few steps on the CPU
def test_dry_run_prints_every_figure_with_a_number() -> None:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "bench/gpu.py", "--dry"], cwd=REPO, check=False,
                          capture_output=True, text=True, timeout=900)
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert re.fullmatch(r"gpu=none \(dry run on the CPU\) torch=\S+ cuda=\S+", lines[0]), lines[0]
    values = dict(ln.split("=", 1) for ln in lines[1:] if "=" in ln and not ln.startswith("#"))
    for key in FIGURES:
        assert key in values, f"{key} missing from\n{proc.stdout}"
        assert re.fullmatch(NUMBER, values[key]), f"{key}={values[key]}"
    order = [ln.split("=", 1)[0] for ln in lines[1:] if ln.split("=", 1)[0] in FIGURES]
    assert order == list(FIGURES)
    assert values["parts_failed"] == "0" and values["gpu_tests_failed"] == "0"
    assert int(values["gpu_tests_skipped"]) > 0 and values["gpu_tests_passed"] == "0"
    assert values["ddp_backend"] == "gloo"
    assert float(values["projected_cifar10lt_200_epochs_s"]) > 200 * float(
        values["cifar10lt_epoch_s"]) * 0.999
    assert float(values["total_s"]) <= took


# ==== the runner, with stand-in parts (no torch: fast) ============================================

def part(gpu, name: str, code: str, timeout: float = 60.0):
    return gpu.Part(name, [sys.executable, "-c", code], timeout, (f"{name}_x",),
                    gpu.grab({f"{name}_x": rf"^x={gpu.NUMBER}$"}))


@pytest.mark.parametrize("jobs", [1, 3])
def test_a_failing_or_hanging_part_costs_only_its_own_figures(
        capsys: pytest.CaptureFixture[str], jobs: int) -> None:
    gpu = load_gpu_bench()
    # the hanging part starts a grandchild that would outlive a plain kill of its parent
    hang = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(60)']); time.sleep(60)")
    todo = [part(gpu, "first", "print('x=1.5')"),
            part(gpu, "crash", "print('x=2'); raise SystemExit(3)"),
            part(gpu, "hang", hang, timeout=2.0),
            part(gpu, "mute", "print('nothing')"),
            part(gpu, "last", "print('noise'); print('x=4e-3')")]
    t0 = time.monotonic()
    failed = gpu.run_all(todo, budget=60, jobs=jobs)
    assert time.monotonic() - t0 < 30
    out, err = capsys.readouterr()
    assert failed == 3
    figures = [ln for ln in out.splitlines() if not ln.startswith("#")]
    assert [ln.split("=")[0] for ln in figures] == [  # the parts' order, whatever ends first
        "first_x", "crash_x", "hang_x", "mute_x", "last_x", "parts_failed", "total_s"]
    got = dict(ln.split("=", 1) for ln in figures)
    assert got["first_x"] == "1.5" and got["last_x"] == "4e-3"
    # a part that exits non-zero is failed even if it printed its figure
    assert got["crash_x"] == "2" and got["hang_x"] == "nan" and got["mute_x"] == "nan"
    assert got["parts_failed"] == "3"
    assert "exit status 3" in err and "timed out after 2 s" in err and "no mute_x" in err


def test_the_budget_bounds_the_whole_run(capsys: pytest.CaptureFixture[str]) -> None:
    gpu = load_gpu_bench()
    todo = [part(gpu, "slow", "import time; time.sleep(30)"), part(gpu, "next", "print('x=1')")]
    t0 = time.monotonic()
    assert gpu.run_all(todo, budget=1.5) == 2
    assert time.monotonic() - t0 < 10
    assert "no time left" in capsys.readouterr().err


def test_parsers_read_the_benches_own_lines() -> None:
    gpu = load_gpu_bench()
    assert gpu.pytest_counts("....\n3 passed, 1 skipped, 22 deselected in 9.10s\n") == {
        "gpu_tests_passed": "3", "gpu_tests_failed": "0", "gpu_tests_skipped": "1"}
    assert gpu.pytest_counts("= 1 failed, 2 passed, 1 error in 30.2s =") == {
        "gpu_tests_passed": "2", "gpu_tests_failed": "2", "gpu_tests_skipped": "0"}
    assert gpu.pytest_counts("ImportError while loading conftest") == {}
    out = ("imbtui:  2000.0 img/s\n"
           "best: imbtui 20515.3 img/s, plain 7120.4 (workers=4), 9120.0 (workers=8)\n"
           "projected CIFAR-10-LT, 200 epochs at these rates: 300 s\nspeedup=2.25\n")
    assert gpu.throughput_figures(out) == {"throughput_speedup": "2.25",
                                           "throughput_imbtui_img_s": "20515.3",
                                           "throughput_plain_img_s": "9120.0"}
    ddp = ("plain:   100 samples/s\nddp (world 1):     98 samples/s  (backend: {})\n"
           "ddp_over_plain=0.980\n")
    assert gpu.ddp_figures("nccl")(ddp.format("nccl")) == {"ddp_over_plain": "0.980",
                                                          "ddp_backend": "nccl"}
    assert "ddp_backend" not in gpu.ddp_figures("nccl")(ddp.format("gloo"))  # so: failed


def test_the_gpu_run_fits_eight_minutes_and_runs_on_cuda() -> None:
    gpu = load_gpu_bench()
    todo = gpu.parts(dry=False)
    assert [p.name for p in todo] == ["gpu_tests", "throughput", "overhead", "ddp", "epoch"]
    assert sum(p.timeout for p in todo) <= 470 < 8 * 60
    for p in todo[1:]:
        assert p.cmd[p.cmd.index("--device") + 1] == "cuda", p.name
        assert p.env is None  # the GPU stays visible
    assert "--nproc" in todo[3].cmd and todo[3].cmd[todo[3].cmd.index("--nproc") + 1] == "1"
    files = todo[0].cmd[todo[0].cmd.index("-rfEs") + 1:]
    assert "tests/unit/test_augment.py" in files and "tests/trainer/test_ddp.py" in files
    assert [p.env for p in gpu.parts(dry=True)] == [{"CUDA_VISIBLE_DEVICES": ""}] * 5
