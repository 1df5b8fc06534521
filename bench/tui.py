"""How fast `imbtui browse` is on a big store: 200 runs x 20,000 steps x 10 classes.

    python bench/tui.py [--store DIR] [--runs 200] [--steps 20000]

Builds (once, then reuses) a synthetic store with RunWriter, then measures
  first_paint_s  process start -> the first frame of the runs screen with its rows (target <= 1.5 s),
                 in a fresh interpreter started the way the CLI starts;
  refresh_ms     UI-thread time of one live refresh of the run screen of a running run: the
                 RunLoaded handler plus the repaint it causes (target <= 100 ms), median of 5.
  chart_ms       from the `v` key press on the compare screen of 8 finished runs to the first
                 painted frame of the chart view of their first metric (target <= 300 ms), median
                 of 5 (`--only chart` measures this alone), and the part of it spent in the
                 worker's load_chart (DuckDB: one statement over group_buckets_runs for all 8).
Also prints the worker (DuckDB) time of that refresh. The last line is
`first_paint_s=<x> refresh_ms=<y> chart_ms=<z>`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

N_CLASSES = 10
LIVE_RUN = "bench-run-000"


# ==== the synthetic store =========================================================================

def build_store(root: Path, runs: int, steps: int) -> None:
    """`runs` runs of `steps` steps each; run 0 is left 'running' (its heartbeat is renewed)."""
    from imbtui.store import RunWriter

    marker = root / f".complete-{runs}x{steps}"
    if marker.exists():
        return
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    for i in range(runs):
        run_id = f"bench-run-{i:03d}"
        if (root / "runs" / run_id).exists():
            continue
        write_run(RunWriter(root, run_id=run_id, heartbeat_s=3600), i, steps, rng)
    marker.write_text("ok")
    print(f"built {runs} runs x {steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)


def write_run(w, i: int, steps: int, rng: np.random.Generator) -> None:  # type: ignore[no-untyped-def]
    ratio = [1, 10, 100][i % 3]
    counts = [int(4000 * ratio ** (-c / (N_CLASSES - 1))) for c in range(N_CLASSES)]
    epochs = 20
    w.start({"name": f"bench-{i:03d}-exp{ratio}", "device": "cpu", "code_version": "bench",
             "config": {"dataset": "mnist1d", "profile": "exp", "ratio": float(ratio),
                        "model": "cnn1d", "loss": "ce", "sampler": "none", "epochs": epochs,
                        "batch_size": 128, "lr": 0.05, "seed": i, "n_classes": N_CLASSES},
             "epoch_done": epochs, "step_done": steps, "total_steps": steps})
    w.write("classes", {"class_id": np.arange(N_CLASSES), "class_name": [str(c) for c in range(
        N_CLASSES)], "train_count": counts, "test_count": [500] * N_CLASSES,
        "rank": np.arange(N_CLASSES), "grp": ["majority"] * 5 + ["minority"] * 5,
        "shot": ["many"] * N_CLASSES})
    s = np.repeat(np.arange(steps), N_CLASSES)
    c = np.tile(np.arange(N_CLASSES), steps)
    share = np.array(counts) / sum(counts)
    n = rng.binomial(128, share[c])
    acc = 1 - 0.9 * np.exp(-s / steps * (12 - c))
    correct = rng.binomial(n, np.clip(acc, 0, 1))
    w.write("steps", {"step": s, "epoch": 1 + s * epochs // steps, "class_id": c, "n": n,
                      "loss_sum": n * -np.log(np.clip(acc, 1e-3, 1)), "correct": correct,
                      "p_true_sum": n * acc * 0.9, "margin_sum": n * (4 * acc - 1),
                      "pred_count": n, "grad_norm": 1 - acc, "lr": np.full(len(s), 0.05)})
    e = np.repeat(np.arange(epochs + 1), N_CLASSES)
    ce = np.tile(np.arange(N_CLASSES), epochs + 1)
    eacc = 1 - 0.9 * np.exp(-e / epochs * (12 - ce))
    for split in ("train", "test"):
        total = np.array(counts)[ce] if split == "train" else np.full(len(e), 500)
        w.write("epochs", {"epoch": e, "step": e * (steps // epochs), "split": [split] * len(e),
                           "class_id": ce, "n": total,
                           "correct": np.rint(total * eacc).astype(np.int64),
                           "loss_sum": total * 0.5, "p_true_sum": total * eacc,
                           "feature_norm": 5 + eacc, "weight_norm": eacc, "bias": 0 * eacc})
    if i == 0:
        w._stop.set()  # stays 'running'; the benchmark renews its heartbeat
    else:
        w.finish("finished")


def renew_heartbeat(root: Path) -> None:
    from imbtui.store.layout import atomic_write_json

    path = root / "runs" / LIVE_RUN / "run.json"
    meta = json.loads(path.read_text())
    meta["heartbeat_at"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    atomic_write_json(path, meta)


# ==== first paint, in a fresh process =============================================================

def child_first_paint(store: str, t_spawn: float) -> None:
    """Runs in the child: the CLI's imports, then time to the first frame showing the runs."""
    from imbtui.tui.app import make_app
    from imbtui.tui.screens.runs import RunsScreen

    app = make_app(store)
    original = RunsScreen.apply

    seen: set[str] = set()

    def apply(self: RunsScreen) -> None:
        original(self)
        if self.table.row_count and "paint" not in seen:
            seen.add("paint")
            app.call_after_refresh(lambda: report("FIRST_PAINT", self))
        filled = self.frame.height and self.frame["test_balanced"].null_count() == 0
        if filled and "filled" not in seen:
            seen.add("filled")
            app.call_after_refresh(lambda: report("FILLED", self, done=True))

    def report(what: str, screen: RunsScreen, done: bool = False) -> None:
        print(f"{what} {time.time() - t_spawn:.4f} rows={screen.table.row_count}", flush=True)
        if done:
            app.exit()

    RunsScreen.apply = apply  # type: ignore[method-assign]
    app.run(headless=True, size=(100, 32))


def first_paint(store: Path) -> tuple[float, float]:
    """(seconds to the first frame listing the runs, seconds until their accuracies are in)."""
    t_spawn = time.time()
    proc = subprocess.run([sys.executable, __file__, "--child", str(store), str(t_spawn)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    found = {ln.split()[0]: float(ln.split()[1]) for ln in proc.stdout.splitlines()
             if ln.startswith(("FIRST_PAINT", "FILLED"))}
    if "FIRST_PAINT" not in found:
        raise SystemExit(f"child failed:\n{proc.stdout}\n{proc.stderr}")
    return found["FIRST_PAINT"], found.get("FILLED", float("nan"))


# ==== one live refresh of the run screen ==========================================================

async def refresh_times(store: Path, n: int = 5) -> tuple[list[float], list[float]]:
    """(UI-thread ms, worker ms) of `n` live refreshes of the running run's screen."""
    from imbtui.tui import data
    from imbtui.tui.app import make_app
    from imbtui.tui.screens.run import RunScreen

    ui: list[float] = []
    worker: list[float] = []
    original_apply, original_load = RunScreen.on_run_loaded, data.load_run

    def timed_load(*args, **kwargs):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        out = original_load(*args, **kwargs)
        worker.append((time.perf_counter() - t0) * 1000)
        return out

    app = make_app(store, open_run=LIVE_RUN)

    def handler(self: RunScreen, message) -> None:  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        original_apply(self, message)
        app.call_after_refresh(lambda: ui.append((time.perf_counter() - t0) * 1000))

    import imbtui.tui.screens.run as run_mod

    run_mod.load_run = timed_load  # type: ignore[assignment]
    RunScreen.on_run_loaded = handler  # type: ignore[method-assign]
    # @on handlers are bound at class creation: route the message to the timed handler
    RunScreen._decorated_handlers = {}  # type: ignore[attr-defined]
    async with app.run_test(size=(160, 48)) as pilot:
        deadline = time.monotonic() + 120
        while len(ui) < n + 1 and time.monotonic() < deadline:  # the first load is not live
            renew_heartbeat(store)
            await pilot.pause(0.5)
    return ui[1:n + 1], worker[1:n + 1]


# ==== opening the chart view ======================================================================

async def chart_times(store: Path, n: int = 5, runs: int = 8) -> tuple[list[float], list[float]]:
    """(ms from pressing `v` on the compare screen of `runs` finished runs to the chart view's
    first painted frame, ms of that spent in the worker's load_chart) of `n` openings."""
    import imbtui.tui.screens.chart as chart_mod
    from imbtui.tui.app import make_app
    from imbtui.tui.screens.chart import ChartScreen
    from imbtui.tui.screens.compare import CompareScreen
    from imbtui.tui.screenshots import settle

    ids = [f"bench-run-{i:03d}" for i in range(1, runs + 1)]
    app = make_app(store)
    times: list[float] = []
    worker: list[float] = []
    original_load = chart_mod.load_chart

    def timed_load(*args, **kwargs):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        out = original_load(*args, **kwargs)
        worker.append((time.perf_counter() - t0) * 1000)
        return out

    chart_mod.load_chart = timed_load  # type: ignore[assignment]
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        app.push_screen(CompareScreen(ids))
        await settle(pilot)
        for _ in range(n):
            t0 = time.perf_counter()
            await pilot.press("v")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (
                    isinstance(app.screen, ChartScreen) and app.screen.painted_at):
                await asyncio.sleep(0.002)
            screen = app.screen
            assert isinstance(screen, ChartScreen) and screen.painted_at, "no chart painted"
            times.append((screen.painted_at - t0) * 1000)
            await pilot.press("escape")
            await settle(pilot)
    chart_mod.load_chart = original_load  # type: ignore[assignment]
    return times, worker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--store", type=Path, default=Path("/tmp/imbtui-bench-tui"))
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--only", choices=["all", "chart"], default="all",
                    help="chart: only the chart view's opening time")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_first_paint(args.child[0], float(args.child[1]))
        return
    build_store(args.store, args.runs, args.steps)
    if args.only == "chart":
        chart, chart_worker = asyncio.run(chart_times(args.store))
        print(_chart_line(chart, chart_worker, args), flush=True)
        print(f"chart_ms={statistics.median(chart):.0f}")
        return
    renew_heartbeat(args.store)
    runs = [first_paint(args.store) for _ in range(3)]
    paints = [p for p, _ in runs]
    print(f"first paint of the runs screen ({args.runs} runs): "
          f"{', '.join(f'{p:.2f}' for p in paints)} s (target <= 1.5 s); accuracies filled in "
          f"at {', '.join(f'{f:.2f}' for _, f in runs)} s", flush=True)
    ui, worker = asyncio.run(refresh_times(args.store))
    print(f"live refresh of the run screen ({args.steps} steps x {N_CLASSES} classes, "
          f"{args.runs} runs in the store): UI thread {', '.join(f'{u:.0f}' for u in ui)} ms "
          f"(target <= 100 ms); worker (DuckDB) {statistics.median(worker):.0f} ms median")
    chart, chart_worker = asyncio.run(chart_times(args.store))
    print(_chart_line(chart, chart_worker, args), flush=True)
    print(f"first_paint_s={statistics.median(paints):.2f} refresh_ms={statistics.median(ui):.0f} "
          f"chart_ms={statistics.median(chart):.0f}")


def _chart_line(chart: list[float], worker: list[float], args: argparse.Namespace) -> str:
    return (f"chart view of one metric over 8 runs ({args.steps} steps x {N_CLASSES} classes "
            f"each, {args.runs} runs in the store), key press to painted: "
            f"{', '.join(f'{c:.0f}' for c in chart)} ms (target <= 300 ms); worker (DuckDB) "
            f"{statistics.median(worker):.0f} ms median; load average "
            f"{' '.join(f'{a:.2f}' for a in os.getloadavg())}")


if __name__ == "__main__":
    os.environ.setdefault("IMBTUI_STORE", "")
    main()
