"""What each method costs: the default run (MNIST-1D, ratio 100, full dynamics) trained with each
method, against plain cross-entropy measured in the same process.

    python bench/methods.py [--epochs 5] [--repeats 2] [--methods ce+sam ce+mixup ...]

The arms alternate within each repeat and each arm's fastest repeat counts (noise only adds time).
A second stage is timed over both stages, so its ratio includes the epochs it adds
(`--stage2-epochs`, 5 in the small recipe). The last line is `name=ratio ...` for every method.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer.loop import TrainConfig, train  # noqa: E402

ARMS: dict[str, dict] = {
    "ce": {},
    "ce+ls": {"smoothing": 0.1},
    "ce+las": {"smoothing": 0.3, "smoothing_tail": 0.0},
    "ce+mixup": {"mixup": 1.0},
    "ce+sam": {"optimizer": "sam"},
    "ce+imbsam": {"optimizer": "imbsam"},
    "ce+maxnorm": {"max_norm": 0.1, "weight_decay": 5e-3},
    "ce+crt": {"stage2": "crt"},
    "ce+lws": {"stage2": "lws"},
    "ce+tau-norm": {"stage2": "tau-norm"},
    "ce+maxnorm+cb-finetune": {"stage2": "cb-finetune", "max_norm": 0.1},
}


def seconds(epochs: int, dynamics: str, **method) -> float:
    t0 = time.perf_counter()
    result = train(TrainConfig(epochs=epochs, dynamics=dynamics, device="cpu", **method))
    if result.status != "finished":
        raise SystemExit(f"{method}: {result.status} ({result.message})")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dynamics", default="full", choices=("full", "minimal", "off"))
    ap.add_argument("--methods", nargs="+", default=list(ARMS)[1:], choices=list(ARMS)[1:])
    args = ap.parse_args()
    arms = ["ce", *args.methods]
    best = {a: float("inf") for a in arms}
    seconds(1, args.dynamics)  # warm-up: the dataset cache, the kernels
    for r in range(args.repeats):
        order = arms if r % 2 == 0 else arms[::-1]
        for arm in order:
            t = seconds(args.epochs, args.dynamics, **ARMS[arm])
            best[arm] = min(best[arm], t)
            print(f"repeat {r} {arm:<24} {t:6.2f} s", flush=True)
    print(f"{args.epochs} epochs, dynamics {args.dynamics}, best of {args.repeats}:")
    for arm in arms:
        print(f"  {arm:<24} {best[arm]:6.2f} s  ratio to ce {best[arm] / best['ce']:.2f}")
    print(" ".join(f"{a}={best[a] / best['ce']:.2f}" for a in args.methods))


if __name__ == "__main__":
    main()
