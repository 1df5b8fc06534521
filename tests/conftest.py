"""Shared fixtures: real stores made by the real trainer, through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def imbtui(*args: str, check: bool = True, env: dict[str, str] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the CLI exactly as a user does (python -m imbtui), capturing output."""
    proc = subprocess.run([sys.executable, "-m", "imbtui", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"imbtui {' '.join(args)} exited {proc.returncode}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session", autouse=True)
def user_dirs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The app's SQL history and saved views go to a folder of the test session's own, never the
    user's (and, under pytest-xdist, never a folder another worker writes)."""
    root = tmp_path_factory.mktemp("user-dirs")
    os.environ["IMBTUI_STATE_DIR"] = str(root / "state")
    os.environ["IMBTUI_CONFIG_DIR"] = str(root / "config")
    return root


def one_thread(fn, *args, **kwargs):
    """fn(*args, **kwargs) with torch on one thread (a reduction summed in one fixed order)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding one `imbtui train --ratio 100 --epochs 2` run (seed 0)."""
    root = tmp_path_factory.mktemp("store")
    imbtui("train", "--ratio", "100", "--epochs", "2", "--store", str(root), "-q", "--name", "r100")
    return root


def torchrun_train(train_args: list[str], store: Path, nproc: int = 2,
                   timeout: float = 300) -> tuple[int, str]:
    """`imbtui train` under torchrun (gloo, CPU) into `store`; (return code, stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # 2 cores shared by up to 3 trainers
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "imbtui", "train", *train_args,
           "--store", str(store)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=True,
                          timeout=timeout)
    return proc.returncode, proc.stderr


# ==== the numeric tests, run a second time under PyTorch's portable CPU kernels ===================
# `make test` runs the whole suite, then these modules again with ATEN_CPU_CAPABILITY=default, which
# turns off PyTorch's AVX2/AVX-512 kernels: a result that holds only under one kernel set (a cosine
# an ulp above 1, a tolerance tuned to one CPU's summation order) fails here, not on a user's CPU.
NUMERIC = {"test_augment", "test_dynamics", "test_dynamics_full", "test_geometry", "test_losses",
           "test_golden", "test_models", "test_probes", "test_cosines_property", "test_samples",
           "test_train_e2e", "test_smoothing", "test_mixup", "test_sharpness", "test_posthoc"}


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in NUMERIC:
            item.add_marker(pytest.mark.numeric)


def pytest_report_header(config: pytest.Config) -> str:
    import torch  # the header names the kernel set the run's numbers came from

    return (f"torch {torch.__version__}, CPU kernels: {torch.backends.cpu.get_cpu_capability()}"
            f" (ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', 'unset')})")
