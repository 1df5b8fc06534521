"""Training throughput under torchrun (DDP) next to the plain single-process loop, dynamics recorded.

Both arms run the same configuration through trainer.loop.train into a real store (recording on):
`plain` in this process's child, `ddp` under `python -m torch.distributed.run --nproc_per_node=K`
(NCCL on GPUs, gloo on the CPU). Each arm times its second epoch only, from the end of epoch 1's
evaluation to the flush that ends epoch 2 (the flush copies the step buffer to the host, so the
device has finished by then): start-up, process-group set-up and evaluation are left out. Arms
alternate over the repeats and the medians are compared.

    python bench/ddp.py                          # world size 1: what DDP itself costs
    python bench/ddp.py --nproc 2 --device cpu   # two gloo ranks on the CPU

Last line: ddp_over_plain=<ddp samples/s / plain samples/s>.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def arm(args: argparse.Namespace) -> None:
    """One timed training run (in a child process; under torchrun, one per rank)."""
    from imbtui.store import RunWriter
    from trainer import distributed
    from trainer.loop import Hooks, TrainConfig, train

    class Clock(Hooks):
        def __init__(self) -> None:
            self.t0 = self.t1 = 0.0
            self.backend: str | None = None

        def on_start(self, info: dict) -> None:
            self.backend = distributed.backend()  # while the run's process group exists

        def on_epoch(self, epoch: int, summary: dict[str, float]) -> None:
            if epoch == 1:
                self.t0 = time.perf_counter()

        def on_flush(self, step: int, loss: float) -> None:
            self.t1 = time.perf_counter()

    cfg = TrainConfig(dataset=args.dataset, ratio=args.ratio, model=args.model, epochs=2,
                      batch_size=args.batch_size, device=args.device, flush_steps=10**6)
    clock = Clock()
    result = train(cfg, RunWriter(Path(args.store), background=True), clock)
    if distributed.env_rank() == 0:
        samples = (result.steps - result.steps // 2) * args.batch_size  # epoch 2's steps
        Path(args.result).write_text(json.dumps({
            "samples_per_s": samples / (clock.t1 - clock.t0), "steps": result.steps,
            "status": result.status, "backend": clock.backend}))


def launch(args: argparse.Namespace, ddp: bool, tmp: Path, k: int) -> dict:
    out = tmp / f"{'ddp' if ddp else 'plain'}-{k}.json"
    common = [str(Path(__file__).resolve()), "--arm", "--store", str(tmp / "store"),
              "--result", str(out), "--dataset", args.dataset, "--ratio", str(args.ratio),
              "--batch-size", str(args.batch_size), "--device", args.device]
    common += ["--model", args.model] if args.model else []
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={args.nproc}", *common] if ddp else [sys.executable, *common])
    # torchrun gives each rank one thread unless told otherwise: the plain arm gets the same
    env = {"OMP_NUM_THREADS": "1", **os.environ}
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist1d")
    ap.add_argument("--ratio", type=float, default=1.0, help="1: the most steps per epoch")
    ap.add_argument("--model", default=None)
    ap.add_argument("--batch-size", type=int, default=128, help="the global batch")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--nproc", type=int, default=1, help="DDP processes (world size)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--arm", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.arm:
        return arm(args)
    rates: dict[str, list[float]] = {"plain": [], "ddp": []}
    backend = None
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):  # alternate, so drift hits both arms alike
            rates["plain"].append(launch(args, False, Path(tmp), k)["samples_per_s"])
            got = launch(args, True, Path(tmp), k)
            rates["ddp"].append(got["samples_per_s"])
            backend = got.get("backend")
    plain, ddp = statistics.median(rates["plain"]), statistics.median(rates["ddp"])
    print(f"{args.dataset} ratio {args.ratio:g}, model {args.model or 'default'}, global batch "
          f"{args.batch_size}, device {args.device}, {args.repeats} repeats (median)")
    print(f"plain:            {plain:12.0f} samples/s")
    print(f"ddp (world {args.nproc}):    {ddp:12.0f} samples/s  (backend: {backend})")
    print(f"ddp_over_plain={ddp / plain:.3f}")


if __name__ == "__main__":
    main()
