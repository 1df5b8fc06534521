"""What keeping freed memory in the heap (trainer/allocator.py) gains: the default run trained with
glibc's allocator as it comes and as the trainer sets it, each arm in a fresh process.

    python bench/allocator.py                       # 20 epochs, 3 repeats per arm, torch's threads
    python bench/allocator.py --epochs 5 --repeats 1 --threads 1

The two arms are the same training (MNIST-1D, ratio 100, the dataset's recipe, full dynamics into a
store in a temporary folder) in a child process; `default` sets IMBTUI_MALLOC=default, which leaves
the allocator as glibc sets it. The arms alternate (AB, BA, ...) and each arm's fastest repeat is
compared. Each line gives the child's wall, user and system seconds: the system time is the kernel
mapping and zeroing pages that glibc unmapped or trimmed. On a machine without glibc the two arms
are the same.

Last line: allocator_speedup=<default wall / kept wall>.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = """
import json, os, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from imbtui._threads import single_threaded_polars
single_threaded_polars()
import torch
if {threads}:
    torch.set_num_threads({threads})
from imbtui.store import RunWriter
from trainer.loop import TrainConfig, train
from trainer.allocator import keep_freed_memory
with tempfile.TemporaryDirectory() as tmp:
    t0, c0 = time.perf_counter(), os.times()
    r = train(TrainConfig(dataset="mnist1d", ratio=100.0, epochs={epochs}),
              RunWriter(Path(tmp), background=True))
    c1 = os.times()
    assert r.status == "finished", r.message
    print(json.dumps({{"wall": time.perf_counter() - t0, "user": c1.user - c0.user,
                      "sys": c1.system - c0.system, "kept": keep_freed_memory()}}))
"""


def run_arm(arm: str, epochs: int, threads: int) -> dict[str, float]:
    env = {**os.environ}
    env.pop("IMBTUI_MALLOC", None)
    if arm == "default":
        env["IMBTUI_MALLOC"] = "default"
    code = CHILD.format(repo=str(REPO), epochs=epochs, threads=threads)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's)")
    args = ap.parse_args()
    arms = ("default", "kept")
    runs: dict[str, list[dict[str, float]]] = {a: [] for a in arms}
    # a first child caches the dataset, so that neither arm pays for making it
    run_arm("kept", 1, args.threads)
    for r in range(args.repeats):
        for arm in (arms if r % 2 == 0 else arms[::-1]):
            got = run_arm(arm, args.epochs, args.threads)
            runs[arm].append(got)
            print(f"repeat {r} {arm:8s} wall {got['wall']:6.2f} s  user {got['user']:6.2f} s  "
                  f"sys {got['sys']:5.2f} s  (heap kept: {got['kept']})", flush=True)
    best = {a: min(x["wall"] for x in runs[a]) for a in arms}
    for a in arms:
        print(f"{a:8s} best wall {best[a]:6.2f} s, system time "
              f"{min(x['sys'] for x in runs[a]):5.2f}-{max(x['sys'] for x in runs[a]):5.2f} s")
    print(f"allocator_speedup={best['default'] / best['kept']:.3f}")


if __name__ == "__main__":
    main()
