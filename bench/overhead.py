"""What recording the dynamics costs: the same training with recording on and off, in one process.

Both arms run the identical loop — same data, model, seed, batches and per-epoch evaluation passes —
and differ only in what is recorded: `off` keeps nothing (NullSink), `minimal` accumulates the per-step
per-class sums on the device, flushes them and writes every part to a real store on disk, and `full`
(where the trainer has it) adds gradient probes and per-sample records. Arms alternate over several
repeats and the median wall time of each is compared, so drift on a shared machine hits both alike.

    python bench/overhead.py                  # default configuration (MNIST-1D, ratio 100, 30 epochs)
    python bench/overhead.py --epochs 5 --repeats 1   # a quick look

Last line: overhead_ratio=<recorded/off> for the richest level the trainer offers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from imbtui.store import RunWriter  # noqa: E402
from trainer.loop import DYNAMICS, TrainConfig, train  # noqa: E402
from trainer.sink import NullSink  # noqa: E402


def levels() -> list[str]:
    """Recording levels this trainer understands, poorest first."""
    return [lvl for lvl in ("off", "minimal", "full") if lvl in DYNAMICS]


def run_once(cfg: TrainConfig, level: str, store: Path) -> float:
    cfg = TrainConfig(**{**cfg.__dict__, "dynamics": level})
    sink = NullSink() if level == "off" else RunWriter(store)
    t0 = time.perf_counter()
    result = train(cfg, sink)
    wall = time.perf_counter() - t0
    assert result.status == "finished", result.message
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=float, default=100.0)
    ap.add_argument("--epochs", type=int, default=None, help="default: the dataset's recipe (30)")
    ap.add_argument("--dataset", default="mnist1d")
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    cfg = TrainConfig(dataset=args.dataset, ratio=args.ratio, epochs=args.epochs,
                      model=args.model, device=args.device)
    arms = levels()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"device {args.device}, arms {arms}")
    run_once(TrainConfig(**{**cfg.__dict__, "max_steps": 20, "epochs": 1}), "off",
             Path(tempfile.mkdtemp()))  # warm-up: dataset cache, allocator, kernels
    times: dict[str, list[float]] = {a: [] for a in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for arm in arms if r % 2 == 0 else arms[::-1]:
                times[arm].append(run_once(cfg, arm, Path(tmp)))
                print(f"repeat {r} {arm:8s} {times[arm][-1]:7.2f} s", flush=True)
    med = {a: statistics.median(t) for a, t in times.items()}
    for a in arms:
        print(f"{a:8s} median {med[a]:7.2f} s  ratio to off {med[a] / med['off']:.3f}")
    print(f"overhead_ratio={med[arms[-1]] / med['off']:.3f}")


if __name__ == "__main__":
    main()
