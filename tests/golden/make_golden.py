"""Write the golden rows: the default run, `--max-steps 300`, on the CPU, every recorded table.

    python tests/golden/make_golden.py                              # this CPU's kernel set
    ATEN_CPU_CAPABILITY=default python tests/golden/make_golden.py  # PyTorch's portable kernels

tests/trainer/test_golden.py trains the same run and compares it with these files, so a change to
the trainer that is meant to keep its behaviour (a refactor) is checked row by row. One thread, so
that the number of cores does not change how a sum is split.

Two comparisons, because training amplifies a last-bit difference. Any two CPUs differ in the
last bits from the first forward pass (ATen's kernel set; MKL, oneDNN and NNPACK pick their code
by CPU vendor, ISA and caches), and the default run amplifies that about tenfold a step once its
learning rate nears its peak: runs that agree to 1e-6 for the first 35-65 steps end 10-60 %
apart at step 300.

- On the CPU that made the rows (`meta.json`'s `cpu`), under the kernel set that made them
  (tests/golden/<capability>/), all 300 steps are compared bit for bit.
- On any CPU, the first `PORTABLE_STEPS` steps (every table's rows of steps before it: the step
  rows, the samples' rows, the untrained network's evaluation) are compared to `RTOL`, whole
  numbers exactly.

Re-make the rows only when a change is meant to alter what the trainer records, and say so in the
commit; re-make them on your own CPU before a refactor to check it bit for bit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

TABLES = ("steps", "epochs", "samples", "probes", "geometry", "geometry_summary")
PORTABLE_STEPS = 20  # measured onsets of visible divergence between CPUs: steps 39 to 66
RTOL, ATOL = 1e-5, 1e-6  # measured differences in those steps: <= 1.7e-6 relative


def capability() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def folder() -> Path:
    return HERE / capability()


def cpu() -> str:
    """This CPU: its model name and a digest of its feature flags (Linux), else the platform's
    processor string."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    first = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in info)
             if k.strip() in ("model name", "flags")}  # the first core's
    flags = " ".join(sorted(set(first.get("flags", "").split())))
    return f"{first.get('model name', '?')} [{hashlib.sha256(flags.encode()).hexdigest()[:12]}]"


def golden_run():
    """The default run's first 300 steps, recorded in memory on one thread: {table: frame}."""
    import polars as pl
    import torch

    from trainer.loop import TrainConfig, train
    from trainer.sink import MemorySink

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sink = MemorySink()
        result = train(TrainConfig(ratio=100, max_steps=300, device="cpu"), sink)
    finally:
        torch.set_num_threads(threads)
    assert result.status == "finished", result.message
    # object arrays (strings, floats with None for NULL) as lists, so polars infers their type
    return {t: pl.DataFrame({k: v.tolist() if v.dtype == object else v
                             for k, v in sink.table(t).items()}) for t in TABLES}


def meta() -> dict[str, str]:
    import torch

    return {"capability": capability(), "torch": torch.__version__, "cpu": cpu()}


def write_rows(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for table, frame in golden_run().items():
        frame.write_parquet(out / f"{table}.parquet", compression="zstd")
        print(f"{table}: {frame.height} rows")
    (out / "meta.json").write_text(json.dumps(meta(), indent=1) + "\n")
    print(f"wrote {out}")


def run_apart(out: Path, timeout: float = 600) -> None:
    """The golden run in a fresh process (nothing an earlier test set in this one carries over),
    its rows written to `out`."""
    proc = subprocess.run([sys.executable, str(Path(__file__)), "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"the golden run failed:\n{proc.stderr}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None,
                    help="where to write the rows (default: tests/golden/<this kernel set>)")
    args = ap.parse_args()
    write_rows(args.out or folder())
