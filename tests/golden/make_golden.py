"""Write the golden rows: the default run, `--max-steps 300`, on the CPU, every recorded table.

    python tests/golden/make_golden.py                              # this CPU's kernel set
    ATEN_CPU_CAPABILITY=default python tests/golden/make_golden.py  # PyTorch's portable kernels

tests/trainer/test_golden.py trains the same run and compares it with these files, so a change to the
trainer that is meant to keep its behaviour (a refactor) is checked row by row. The rows are kept
per ATen CPU kernel set (tests/golden/<capability>/): 300 SGD steps carry any last-bit difference of
a float32 sum through every later step, and runs under AVX-512, AVX2 and the portable kernels end
10-60 % apart, so rows compare only under the kernels that made them. One thread, so that the
number of cores does not change how a sum is split.

The libraries under ATen choose their code by the CPU too, whatever ATen's kernel set: MKL by
vendor and model (on an AMD EPYC it runs its AVX2 code), oneDNN and NNPACK their kernels and
blocking by the CPU's ISA and caches; rows made on an Intel Xeon failed on an AMD EPYC under both
kernel sets. So the golden run pins them (`PINNED`): MKL in strict conditional numerical
reproducibility on its AVX2 code (MKL_CBWR, which MKL reads when it starts, so the run is a process
of its own: `run_pinned`), and convolutions through ATen's own im2col + GEMM, with oneDNN and
NNPACK off, so that the rows do not depend on the code these libraries pick for a CPU.
Re-make them only when a change is meant to alter what the trainer records, and say so in the
commit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

TABLES = ("steps", "epochs", "samples", "probes", "geometry", "geometry_summary")
PINNED = {"MKL_CBWR": "AVX2,STRICT"}


def capability() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def folder() -> Path:
    return HERE / capability()


def unpinned() -> dict[str, str]:
    """The settings of `PINNED` this process's environment does not have."""
    return {k: v for k, v in PINNED.items() if os.environ.get(k) != v}


def golden_run():
    """The default run's first 300 steps, recorded in memory on one thread, in this process,
    which must have started with `PINNED` in its environment: {table: frame}."""
    if unpinned():
        raise RuntimeError(f"the golden run needs {unpinned()} from its process's start "
                           "(run_pinned, or run this file as a script)")
    import polars as pl
    import torch

    from trainer.loop import TrainConfig, train
    from trainer.sink import MemorySink

    threads = torch.get_num_threads()
    mkldnn = torch.backends.mkldnn.enabled
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False
    (nnpack,) = torch.backends.nnpack.set_flags(False)
    try:
        sink = MemorySink()
        result = train(TrainConfig(ratio=100, max_steps=300, device="cpu"), sink)
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = mkldnn
        torch.backends.nnpack.set_flags(nnpack)
    assert result.status == "finished", result.message
    # object arrays (strings, floats with None for NULL) as lists, so polars infers their type
    return {t: pl.DataFrame({k: v.tolist() if v.dtype == object else v
                             for k, v in sink.table(t).items()}) for t in TABLES}


def meta() -> dict[str, str]:
    import torch

    return {"capability": capability(), "torch": torch.__version__, "pinned": PINNED}


def write_rows(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for table, frame in golden_run().items():
        frame.write_parquet(out / f"{table}.parquet", compression="zstd")
        print(f"{table}: {frame.height} rows")
    (out / "meta.json").write_text(json.dumps(meta(), indent=1) + "\n")
    print(f"wrote {out}")


def run_pinned(out: Path, timeout: float = 600) -> None:
    """The golden run in a fresh process with `PINNED` set (and this process's kernel set),
    its rows written to `out`."""
    proc = subprocess.run([sys.executable, str(Path(__file__)), "--out", str(out)],
                          env={**os.environ, **PINNED}, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"the golden run failed:\n{proc.stderr}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None,
                    help="where to write the rows (default: tests/golden/<this kernel set>)")
    args = ap.parse_args()
    if unpinned():  # MKL reads its setting when it starts: start again with it
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **PINNED})
    write_rows(args.out or folder())
