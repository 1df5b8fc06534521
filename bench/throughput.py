"""Training throughput: imbtui's trainer against the plain PyTorch way, measured in the same run.

Both train the same ResNet-32 with the same recipe (SGD momentum 0.9, weight decay 2e-4, lr warm-up,
batch 128, pad-4 random crop + horizontal flip, CIFAR normalisation) on the same CIFAR-shaped data:
random uint8 images written in torchvision's CIFAR-10 format to a temporary folder.

  imbtui  trainer.loop.train: dataset resident on the device as uint8, crop/flip/normalise on the
          device per batch, channels_last, per-class dynamics recorded into a real run store.
  plain   torchvision's CIFAR10 dataset + DataLoader(shuffle, drop_last) with the standard
          transforms (RandomCrop, RandomHorizontalFlip, ToTensor, Normalize), loss.item() each
          step, default memory format; measured with each --workers value, the fastest counts.

Images per second are timed over steady-state steps (after --warmup steps). The arms alternate,
--repeats times, and each arm's best rate counts (on a shared machine a slow measurement is
interference, not the method). The last line is `speedup=<imbtui / fastest plain>`. Also printed: the projected wall time of the full 200-epoch
CIFAR-10-LT recipe (ratio 100: 12,406 training images, 96 steps per epoch, and an evaluation pass
over the training and test sets after each epoch) at the measured rates.

    python bench/throughput.py                       # CPU default: ~2 minutes on 2 cores
    python bench/throughput.py --steps 300 --warmup 30 --workers 4 8 --bf16   # a GPU
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imbtui.store import RunWriter  # noqa: E402
from trainer.loop import Hooks, TrainConfig, train  # noqa: E402
from trainer.models import build_model  # noqa: E402
from trainer.vision import IMAGE_DATASETS, _torchvision_class, write_cifar  # noqa: E402

# CIFAR-10-LT at ratio 100 (Cao et al. 2019): the run the projection is for
LT_TRAIN, LT_TEST, LT_EPOCHS = 12_406, 10_000, 200


# ==== data ========================================================================================

def make_data(root: Path, per_class: int, test_per_class: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    y = np.tile(np.arange(10), per_class)
    yt = np.tile(np.arange(10), test_per_class)
    write_cifar(root, "cifar10", rng.integers(0, 256, (len(y), 32, 32, 3), dtype=np.uint8), y,
                rng.integers(0, 256, (len(yt), 32, 32, 3), dtype=np.uint8), yt,
                [f"class{i}" for i in range(10)])


# ==== imbtui ======================================================================================

class Timer(Hooks):
    """Times steady-state steps between the first and last flush, and the final evaluation."""

    def __init__(self) -> None:
        self.flushes: list[tuple[float, int]] = []
        self.epochs: list[float] = []

    def on_flush(self, step: int, loss: float) -> None:
        self.flushes.append((time.perf_counter(), step))

    def on_epoch(self, epoch: int, summary: dict[str, float]) -> None:
        self.epochs.append(time.perf_counter())


def run_imbtui(args: argparse.Namespace, data: Path, store: Path) -> tuple[float, float]:
    """(training images/s, evaluation images/s)."""
    timer = Timer()
    cfg = TrainConfig(dataset="cifar10", data_dir=str(data), ratio=1.0, batch_size=args.batch_size,
                      epochs=1, max_steps=args.warmup + args.steps, device=args.device,
                      bf16=args.bf16, compile=args.compile, dynamics=args.dynamics,
                      flush_steps=args.warmup,
                      flush_seconds=1e9, name="throughput")
    result = train(cfg, RunWriter(store, background=True), timer)
    assert result.status == "finished", result.message
    (t0, s0), (t1, s1) = timer.flushes[0], timer.flushes[-1]
    train_rate = (s1 - s0) * args.batch_size / (t1 - t0)
    n_eval = 10 * (args.per_class + args.test_per_class)
    eval_rate = n_eval / (timer.epochs[-1] - t1)  # the final pass over train and test sets
    return train_rate, eval_rate


# ==== plain PyTorch ===============================================================================

def run_plain(args: argparse.Namespace, data: Path, workers: int) -> float:
    from torch.utils.data import DataLoader
    from torchvision import transforms as T

    spec = IMAGE_DATASETS["cifar10"]
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(spec.mean, spec.std)])
    # torchvision's CIFAR10 (md5 checks of the real files skipped: the data here is synthetic)
    ds = _torchvision_class(spec)(str(data), train=True, transform=tf)
    device = torch.device(args.device)
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=True,
                        num_workers=workers, pin_memory=device.type == "cuda",
                        persistent_workers=workers > 0)
    torch.manual_seed(0)
    model = build_model("resnet32", (32, 32, 3), 10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    warm_steps = 5 * len(loader)
    step, total, running, t0 = 0, args.warmup + args.steps, 0.0, 0.0
    model.train()
    while step < total:
        for x, y in loader:
            if step == args.warmup:
                t0 = time.perf_counter()
            for g in opt.param_groups:
                g["lr"] = 0.1 * min(1.0, (step + 1) / warm_steps)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.item()  # what a user logs; it waits for the step to finish
            step += 1
            if step == total:
                break
    return args.steps * args.batch_size / (time.perf_counter() - t0)


# ==== main ========================================================================================

def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def projection(train_rate: float, eval_rate: float, batch: int) -> tuple[float, float, float]:
    steps = LT_EPOCHS * (LT_TRAIN // batch)
    t_train = steps * batch / train_rate
    t_eval = (LT_EPOCHS + 1) * (LT_TRAIN + LT_TEST) / eval_rate
    return t_train + t_eval, t_train, t_eval


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--repeats", type=int, default=2, help="measurements per arm, alternating")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--per-class", type=int, default=300, help="training images per class")
    p.add_argument("--test-per-class", type=int, default=100)
    p.add_argument("--workers", type=int, nargs="+", default=None,
                   help="DataLoader workers for the plain way (default: 0 and min(8, cores))")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", help="imbtui with bfloat16 autocast")
    p.add_argument("--compile", action="store_true", help="imbtui with torch.compile")
    p.add_argument("--dynamics", default="full", choices=["full", "minimal", "off"],
                   help="what imbtui records (default full: everything)")
    args = p.parse_args()
    workers = args.workers or sorted({0, min(8, os.cpu_count() or 1)})
    if (args.warmup + args.steps) * args.batch_size > 10 * args.per_class:
        args.per_class = -(-(args.warmup + args.steps) * args.batch_size // 10)  # one epoch

    with tempfile.TemporaryDirectory() as tmp:
        data, store = Path(tmp) / "data", Path(tmp) / "store"
        make_data(data, args.per_class, args.test_per_class)
        print(f"device: {device_name(args.device)}; torch {torch.__version__}")
        print(f"ResNet-32, batch {args.batch_size}, {10 * args.per_class} CIFAR-shaped training "
              f"images; {args.steps} timed steps after {args.warmup}")
        extra = "".join(f", {k}" for k in ("bf16", "compile") if getattr(args, k))
        imb, evr, plain = 0.0, 0.0, {w: 0.0 for w in workers}
        for _ in range(args.repeats):
            rate, ev = run_imbtui(args, data, store)
            imb, evr = max(imb, rate), max(evr, ev)
            print(f"imbtui: {rate:9.1f} img/s training (device-resident uint8, crop/flip on the "
                  f"device, channels_last{extra}, {args.dynamics} dynamics recorded); {ev:.1f} "
                  f"img/s evaluation", flush=True)
            for w in workers:
                rate = run_plain(args, data, w)
                plain[w] = max(plain[w], rate)
                print(f"plain:  {rate:9.1f} img/s training (torchvision CIFAR10 + DataLoader, "
                      f"num_workers={w}, loss.item() each step)", flush=True)
    print(f"best: imbtui {imb:.1f} img/s, plain " + ", ".join(
        f"{v:.1f} (workers={w})" for w, v in plain.items()))
    total, t_train, t_eval = projection(imb, evr, args.batch_size)
    print(f"projected CIFAR-10-LT, 200 epochs at these rates: {total:.0f} s "
          f"({t_train:.0f} s training + {t_eval:.0f} s evaluation passes)")
    print(f"speedup={imb / max(plain.values()):.2f}")


if __name__ == "__main__":
    main()
