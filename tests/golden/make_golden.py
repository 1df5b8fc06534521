"""Write the golden rows: the default run, `--max-steps 300`, on the CPU, every recorded table.

    python tests/golden/make_golden.py                              # this CPU's kernel set
    ATEN_CPU_CAPABILITY=default python tests/golden/make_golden.py  # PyTorch's portable kernels

tests/trainer/test_golden.py trains the same run and compares it with these files, so a change to the
trainer that is meant to keep its behaviour (a refactor) is checked row by row. The rows are kept
per CPU kernel set (tests/golden/<capability>/): 300 SGD steps carry any last-bit difference of a
float32 sum through every later step, and runs under AVX-512, AVX2 and the portable kernels end
10-60 % apart, so rows compare only under the kernels that made them. One thread, so that the
number of cores does not change how a sum is split. Re-make them only when a change is meant to
alter what the trainer records, and say so in the commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

TABLES = ("steps", "epochs", "samples", "probes", "geometry", "geometry_summary")


def capability() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def folder() -> Path:
    return HERE / capability()


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

    return {"capability": capability(), "torch": torch.__version__}


if __name__ == "__main__":
    out = folder()
    out.mkdir(exist_ok=True)
    for table, frame in golden_run().items():
        frame.write_parquet(out / f"{table}.parquet", compression="zstd")
        print(f"{table}: {frame.height} rows")
    (out / "meta.json").write_text(json.dumps(meta(), indent=1) + "\n")
    print(f"wrote {out}")
