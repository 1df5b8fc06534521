"""What a run costs on disk, measured on real runs of the real trainer, and what a 200-epoch
CIFAR-100-LT run would therefore cost.

Two runs with `--dynamics full`, each compacted at finish exactly as `imbtui train` leaves it:

- the default run (`imbtui train --ratio 100`: MNIST-1D, 10 classes), for its given number of
  epochs (default 30, the recipe's);
- a CIFAR-100-LT-shaped run: ratio 100 over 100 classes of 500 images (10,847 training images, the
  published count), ResNet-32, batch 128, for `--cifar-epochs` epochs (default 2). The images are
  random bytes written in torchvision's own CIFAR-100 format (no download here); the rows stored
  per step, class, sample and epoch do not depend on what the images show, only how well the
  float columns compress does, a little.

For each table: its bytes on disk, its rows, bytes per row. Then bytes per step per class (`steps`),
per sample-epoch (`samples`), per epoch (the per-epoch tables), and the projection to the standard
recipe's 200 epochs: steps and samples grow with the number of steps, the per-epoch tables with the
number of epochs.

    python bench/storage.py                         # both runs (about 3 minutes on 2 CPU cores)
    python bench/storage.py --skip-cifar            # the default run only

Last line: projected_cifar100_200_epochs_mb=<MB>.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imbtui._threads import single_threaded_polars  # noqa: E402

single_threaded_polars()
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from imbtui.store import RunWriter  # noqa: E402
from imbtui.store.schema import TABLES  # noqa: E402
from trainer.loop import TrainConfig, train  # noqa: E402
from trainer.vision import write_cifar  # noqa: E402

PER_STEP = ("steps", "samples", "probes")  # grow with the steps; the rest with the epochs


def table_sizes(run_dir: Path) -> dict[str, tuple[int, int]]:
    """(bytes, rows) per table of one run."""
    out = {}
    for table in TABLES:
        files = sorted((run_dir / table).glob("part-*.parquet"))
        size = sum(f.stat().st_size for f in files)
        rows = sum(pl.scan_parquet(f).select(pl.len()).collect().item() for f in files)
        out[table] = (size, rows)
    return out


def measure(label: str, cfg: TrainConfig, store: Path) -> dict[str, float]:
    result = train(cfg, RunWriter(store, background=True))
    run_dir = store / "runs" / result.run_id
    sizes = table_sizes(run_dir)
    steps, epochs = result.steps, result.epochs_done
    n_classes = sizes["classes"][1]
    total = sum(b for b, _ in sizes.values()) + (run_dir / "run.json").stat().st_size
    print(f"\n{label}: {steps} steps, {epochs} epochs, {n_classes} classes, "
          f"{total / 1e6:.2f} MB on disk")
    print(f"  {'table':18s} {'bytes':>12s} {'rows':>10s} {'bytes/row':>10s}")
    for table, (b, r) in sizes.items():
        print(f"  {table:18s} {b:12,d} {r:10,d} {b / max(r, 1):10.2f}")
    per_step = sum(sizes[t][0] for t in PER_STEP) / steps
    per_epoch = sum(b for t, (b, _) in sizes.items() if t not in PER_STEP) / (epochs + 1)
    out = {
        "bytes_per_step_class": sizes["steps"][0] / max(sizes["steps"][1], 1),
        "bytes_per_sample_epoch": sizes["samples"][0] / max(sizes["samples"][1], 1),
        "per_step": per_step, "per_epoch": per_epoch, "total": total,
        "steps_per_epoch": steps / epochs,
    }
    print(f"  steps: {out['bytes_per_step_class']:.2f} bytes per step per class; samples: "
          f"{out['bytes_per_sample_epoch']:.2f} bytes per sample-epoch; "
          f"{per_step / 1e3:.2f} kB per step and {per_epoch / 1e3:.1f} kB per epoch in all")
    return out


def cifar100_lt_shaped(root: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    y, yt = np.tile(np.arange(100), 500), np.tile(np.arange(100), 100)
    write_cifar(root, "cifar100", rng.integers(0, 256, (len(y), 32, 32, 3), dtype=np.uint8), y,
                rng.integers(0, 256, (len(yt), 32, 32, 3), dtype=np.uint8), yt,
                [f"class{i}" for i in range(100)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=30, help="epochs of the default run")
    ap.add_argument("--cifar-epochs", type=int, default=2, help="epochs of the CIFAR-100 run")
    ap.add_argument("--skip-cifar", action="store_true")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        measure("default run (MNIST-1D, ratio 100)",
                TrainConfig(ratio=100.0, epochs=args.epochs, device=args.device),
                Path(tmp) / "store")
        if args.skip_cifar:
            return
        cifar100_lt_shaped(Path(tmp) / "data")
        got = measure("CIFAR-100-LT-shaped run (ratio 100, ResNet-32)",
                      TrainConfig(dataset="cifar100", data_dir=str(Path(tmp) / "data"),
                                  ratio=100.0, epochs=args.cifar_epochs, model="resnet32",
                                  device=args.device),
                      Path(tmp) / "store")
    steps_200 = got["steps_per_epoch"] * 200
    projected = got["per_step"] * steps_200 + got["per_epoch"] * 201
    print(f"\nprojected 200-epoch CIFAR-100-LT run: {steps_200:,.0f} steps -> "
          f"{projected / 1e6:.0f} MB ({got['per_step'] * steps_200 / 1e6:.0f} MB per-step and "
          f"per-sample rows, {got['per_epoch'] * 201 / 1e6:.1f} MB per-epoch rows)")
    print(f"projected_cifar100_200_epochs_mb={projected / 1e6:.0f}")


if __name__ == "__main__":
    main()
