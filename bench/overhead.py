"""What recording the dynamics costs: the same training with recording on and off, in one process.

All arms run the identical loop -- same data, model, seed, batches and per-epoch evaluation passes --
and differ only in what is recorded: `off` keeps nothing (NullSink), `minimal` accumulates the per-step
per-class sums on the device, flushes them and writes every part to a real store on disk, and `full`
(the default of `imbtui train`) adds the classifier gradient split, each sample's presentations, a
gradient probe every `probe_every` steps (one extra backward pass) and the feature geometry of every
evaluation. Arms alternate over several repeats (ABC, CBA, ...) so that drift hits all alike, and
the figure is the median over repeats of each repeat's own ratio to `off` (`paired`): the arms of
one repeat run back to back and see the machine at one speed, so a drift that moves whole repeats
(a virtual machine's `off` arm alone can range over 50 %) cannot skew it. `--stat best` compares each
arm's fastest repeat instead (noise from a shared host only ever adds time, but one lucky repeat
decides it), `--stat median` the arms' medians; all three are printed. With 6 repeats or more the
paired ratio comes with a distribution-free 95 % confidence interval of that median (order
statistics of the repeats' ratios, `median_ci`; 9 repeats are the fewest whose interval is
narrower than the range of the ratios): a target is met when the interval's upper end is within
it. The load average is printed before and after.

Two shapes of training:
  default   MNIST-1D, ratio 100, the dataset's recipe (30 epochs, batch 128, cnn1d)
  resnet32  ResNet-32 on CIFAR-10-shaped data (random uint8 32x32x3 images written in torchvision's
            CIFAR-10 format to a temporary folder), ratio 100, batch 128, crop + flip on the device;
            --per-class 500 gives 1,236 long-tailed training images, 9 steps per epoch, so the
            default 11 epochs are 99 steps: one probe, the rate of a long run with probe_every 100

    python bench/overhead.py                                  # default configuration
    python bench/overhead.py --epochs 5 --repeats 1           # a quick look
    python bench/overhead.py --shape resnet32 --arms off full # ResNet-32 shapes (GPU: --device cuda)
    python bench/overhead.py --threads 1 --sink null          # recording without the store writes
    python bench/overhead.py --attribute --threads 1 --repeats 9  # recording's own calls, timed
    python bench/overhead.py --shape resnet32 --arms off full --device cpu --ratio 4 \
        --per-class 8 --test-per-class 2 --batch-size 4 --epochs 1 --repeats 1   # a smoke run

On a CPU shared with other work, `--threads 1` keeps torch's thread pool from spinning against the
other processes.

Last lines: overhead_ci95=<low>,<high> (6 repeats or more) and overhead_ratio=<recorded/off>, for
the richest level the trainer offers; with --attribute, direct_ratio=<wall/(wall - recording)>.
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imbtui._threads import single_threaded_polars  # noqa: E402

single_threaded_polars()  # as `imbtui train` does, before polars is imported
import numpy as np  # noqa: E402
import torch  # noqa: E402

from imbtui.store import RunWriter  # noqa: E402
from trainer import dynamics, recording  # noqa: E402
from trainer.loop import DYNAMICS, TrainConfig, train  # noqa: E402
from trainer.sink import NullSink  # noqa: E402
from trainer.vision import write_cifar  # noqa: E402


def levels() -> list[str]:
    """Recording levels this trainer understands, poorest first."""
    return [lvl for lvl in ("off", "minimal", "full") if lvl in DYNAMICS]


def run_once(cfg: TrainConfig, level: str, store: Path | None) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one run; `store` None: records go nowhere."""
    cfg = TrainConfig(**{**cfg.__dict__, "dynamics": level})
    # the store is written as `imbtui train` writes it: parts encoded on the writer's thread
    sink = (NullSink() if level == "off" or store is None
            else RunWriter(store, background=True))
    t0, c0 = time.perf_counter(), time.process_time()
    result = train(cfg, sink)
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert result.status == "finished", result.message
    return wall, cpu


# ==== --attribute: the recorder's own calls, timed inside full runs ================================

RECORDER_CALLS = ("watch", "keeps_graph", "record", "flush_if_due", "flush", "evaluated")


class Attribution:
    """Time spent inside one run's recording: a timer around every call the loop makes into its
    recorder (the outermost call only, so flush_if_due's own flush counts once) and around the
    eval passes' feature sums (FeatureAccumulator, which only the full level runs). It leaves out
    what recording does to the training's own operations (caches, memory, the logits' retained
    gradient), so it is a lower bound of the end-to-end overhead, with a spread far smaller than
    the arms' (each repeat's noise scales the few percent measured, not the whole run)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = collections.defaultdict(float)
        self.depth = 0

    def timed(self, name: str, fn):
        def call(*args, **kwargs):
            if self.depth:
                return fn(*args, **kwargs)
            self.depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[name] += time.perf_counter() - t0
                self.depth -= 1
        return call


def attributed_run(cfg: TrainConfig, store: Path | None) -> tuple[float, Attribution]:
    """One `full` run with its recording timed (Attribution): (wall seconds, the attribution)."""
    att = Attribution()
    full = recording.RECORDERS["full"]
    timed = type("TimedFullRecorder", (full,),
                 {name: att.timed(name, getattr(full, name)) for name in RECORDER_CALLS})
    acc = dynamics.FeatureAccumulator
    plain = {name: getattr(acc, name) for name in ("add", "finish")}
    recording.RECORDERS["full"] = timed
    for name, fn in plain.items():
        setattr(acc, name, att.timed("eval features", fn))
    try:
        wall, _ = run_once(cfg, "full", store)
    finally:
        recording.RECORDERS["full"] = full
        for name, fn in plain.items():
            setattr(acc, name, fn)
    return wall, att


def attribute(cfg: TrainConfig, repeats: int, store: Path | None) -> None:
    ratios = []
    for r in range(repeats):
        wall, att = attributed_run(cfg, store)
        direct = sum(att.spent.values())
        ratios.append(wall / (wall - direct))
        parts = ", ".join(f"{name} {100 * t / wall:.2f} %" for name, t in
                          sorted(att.spent.items(), key=lambda kv: -kv[1]))
        print(f"repeat {r} full {wall:7.2f} s, recording {100 * direct / wall:.2f} % ({parts}); "
              f"load {load()}", flush=True)
    ci = median_ci(ratios)
    print(f"direct ratio (wall / (wall - recording)): median {statistics.median(ratios):.3f}, "
          f"range {min(ratios):.3f}-{max(ratios):.3f}"
          + (f", 95 % CI {ci[0]:.3f}-{ci[1]:.3f}" if ci else "") + f" over {repeats} repeats")
    print(f"direct_ratio={statistics.median(ratios):.3f}")


def cifar_shaped(root: Path, per_class: int, test_per_class: int, seed: int = 0) -> None:
    """Random images in torchvision's CIFAR-10 layout: the trainer reads them like the real set."""
    rng = np.random.default_rng(seed)
    y, yt = np.tile(np.arange(10), per_class), np.tile(np.arange(10), test_per_class)
    write_cifar(root, "cifar10", rng.integers(0, 256, (len(y), 32, 32, 3), dtype=np.uint8), y,
                rng.integers(0, 256, (len(yt), 32, 32, 3), dtype=np.uint8), yt,
                [f"class{i}" for i in range(10)])


def config(args: argparse.Namespace, data: Path) -> TrainConfig:
    if args.shape == "resnet32":
        return TrainConfig(dataset="cifar10", data_dir=str(data), ratio=args.ratio,
                           epochs=args.epochs or 11, batch_size=args.batch_size or 128,
                           model="resnet32", device=args.device, bf16=args.bf16)
    return TrainConfig(dataset=args.dataset, ratio=args.ratio, epochs=args.epochs,
                       batch_size=args.batch_size, model=args.model, device=args.device,
                       bf16=args.bf16)


def median_ci(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free confidence interval of the median of `values` (independent draws):
    the order statistics x_(j) and x_(n+1-j), with j the largest rank at which
    2 P(Binomial(n, 1/2) <= j - 1) <= 1 - level. Needs no assumption on the noise's shape (a
    shared host's is skewed); None when n is too small for any such interval (n < 6 at 95 %)."""
    x, n = sorted(values), len(values)
    tail = 0.0  # P(B <= j - 1)
    j = 0
    while j < n // 2:
        nxt = tail + math.comb(n, j) / 2**n  # P(B <= j)
        if 2 * nxt > 1 - level:
            break
        tail, j = nxt, j + 1
    return None if j == 0 else (x[j - 1], x[n - j])


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=("default", "resnet32"), default="default")
    ap.add_argument("--ratio", type=float, default=100.0)
    ap.add_argument("--epochs", type=int, default=None,
                    help="default: the dataset's recipe (30); resnet32: 11")
    ap.add_argument("--dataset", default="mnist1d")
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="default: the dataset's recipe (128); resnet32: 128")
    ap.add_argument("--per-class", type=int, default=500, help="resnet32: images per class")
    ap.add_argument("--test-per-class", type=int, default=100, help="resnet32: test images")
    ap.add_argument("--arms", nargs="+", default=None, help="levels to compare (default: all)")
    ap.add_argument("--sink", choices=("store", "null"), default="store",
                    help="null: the recording arms hand their rows to a NullSink, so the ratio is "
                         "the cost on the device alone, without writing the store")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--stat", choices=("best", "median", "paired"), default="paired",
                    help="what the last line compares: the median over repeats of each repeat's "
                         "own ratio to off (default), each arm's fastest repeat, or its median")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's). On a machine shared with other "
                         "work, 1 thread and the CPU-time ratio are the steadier measure")
    ap.add_argument("--attribute", action="store_true",
                    help="time the recording's own calls inside `--repeats` full runs instead of "
                         "comparing arms (Attribution): a lower bound of the overhead, with a "
                         "small spread; last line direct_ratio=")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    arms = args.arms or levels()
    if "off" not in arms or any(a not in DYNAMICS for a in arms):
        ap.error(f"--arms must include off and name levels of {DYNAMICS}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        if args.shape == "resnet32":
            cifar_shaped(data, args.per_class, args.test_per_class)
        cfg = config(args, data)
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}"
              f", shape {args.shape}, arms {arms}, sink {args.sink}, load average {load()}")
        for arm in arms:  # warm-up of every arm: dataset cache, allocator, kernels, and what
            # a process does once at its first write (pyarrow's first conversion imports numpy.ma)
            run_once(TrainConfig(**{**cfg.__dict__, "max_steps": 5, "epochs": 1}), arm,
                     Path(tmp) / "warm" if args.sink == "store" else None)
        if args.attribute:
            attribute(cfg, args.repeats, Path(tmp) / "store" if args.sink == "store" else None)
            return
        times: dict[str, list[float]] = {a: [] for a in arms}
        cpus: dict[str, list[float]] = {a: [] for a in arms}
        for r in range(args.repeats):
            for arm in arms if r % 2 == 0 else arms[::-1]:
                wall, cpu = run_once(cfg, arm, Path(tmp) / "store" if args.sink == "store"
                                     else None)
                times[arm].append(wall)
                cpus[arm].append(cpu)
                print(f"repeat {r} {arm:8s} {wall:7.2f} s  (CPU {cpu:7.2f} s, load {load()})",
                      flush=True)
    # Noise from a shared host only ever adds time, so each arm's fastest repeat estimates its own
    # cost (timeit's rule); medians are printed beside it.
    best = {a: min(t) for a, t in times.items()}
    med = {a: statistics.median(t) for a, t in times.items()}
    cpu_med = {a: statistics.median(t) for a, t in cpus.items()}
    # Each repeat runs every arm back to back, so a repeat's own ratio to `off` sees the machine at
    # one speed: the median of those ratios resists a drift that moves whole repeats.
    ratios = {a: [t / o for t, o in zip(times[a], times["off"])] for a in arms}
    paired = {a: statistics.median(r) for a, r in ratios.items()}
    for a in arms:
        ci = median_ci(ratios[a])
        print(f"{a:8s} best {best[a]:7.2f} s  ratio to off {best[a] / best['off']:.3f}   "
              f"median {med[a]:7.2f} s  ratio {med[a] / med['off']:.3f}   "
              f"paired ratio {paired[a]:.3f} (95 % CI "
              + (f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "needs 6 repeats")
              + f")   CPU median ratio {cpu_med[a] / cpu_med['off']:.3f}")
    print(f"load average after: {load()}")
    ci = median_ci(ratios[arms[-1]])
    if ci is not None:  # the paired ratio's interval: a target is met when its upper end is
        # within it, and a drifting host shows as a wide interval rather than a lucky figure
        print(f"overhead_ci95={ci[0]:.3f},{ci[1]:.3f}")
    if args.stat == "paired":
        ratio = paired[arms[-1]]
    else:
        stat = best if args.stat == "best" else med
        ratio = stat[arms[-1]] / stat["off"]
    print(f"overhead_ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
