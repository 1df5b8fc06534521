"""The run store under load: how fast a run's writer writes, and how fast the browse screen's
queries answer over a big store, each against a baseline measured in the same run.

Builds a synthetic store of R runs x S steps x C classes (default 200 x 20,000 x 10 = 40 million
step rows) through `RunWriter`, exactly as the trainer writes: a steps part every 200 steps, one
epochs part per epoch (train and test rows), compaction at finish. Then times the three queries the browse screen runs:

- runs:   every run with its final balanced / majority / minority accuracy (queries/run_summary.sql
          joined to the runs view, as `imbtui runs` and the runs screen do);
- curve:  one run's majority vs minority training accuracy over its steps, in 100 buckets;
- final:  one run's per-class final train and test accuracy (as `imbtui show` and the run screen).

Baselines: the writer against a bare polars `write_parquet` of the same frames (no casting to the
schema, no temp file, no fsync, no compaction), the natural way to write them; the writer encodes
its parts with pyarrow, whose fixed cost per file is lower (bench/parts.py), so it can beat the
baseline despite doing more. The queries against the same rows in one standalone DuckDB database
file (`imbtui export --duckdb`), which is what a single-file store would give.

    python bench/store.py                       # full size (a few minutes, ~4 GB of temp disk)
    python bench/store.py --runs 4 --steps 2000 # a smoke run

Last line: write_rows_per_s=<writer rows per second> query_ms=<slowest browse query, median ms>.
The write rate is over all runs; the rates of blocks of 25 consecutive runs are printed beside it
with the bare baseline's, because a shared machine's speed drifts during the minute of writing
(by up to 2x on a shared virtual machine, for both arms alike) and the ratio to bare polars is what holds.
Targets: >= 1,000,000 rows/s written; <= 150 ms per browse query.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from imbtui.store import RunWriter, Store  # noqa: E402
from imbtui.store.export import export_duckdb  # noqa: E402

FLUSH_STEPS = 200   # the trainer's default flush interval: one steps part per 200 steps
BATCH = 128         # samples per step, spread over the classes by their training counts
VARIANTS = 4        # distinct synthetic runs, reused round-robin (each is written afresh)
WIDTH = 100         # curve buckets


# ==== synthetic runs ==============================================================================

def class_counts(n_classes: int, ratio: float = 100.0, n_max: int = 5000) -> np.ndarray:
    return np.floor(n_max * ratio ** (-np.arange(n_classes) / (n_classes - 1))).astype(np.int64)


def synthetic_steps(steps: int, n_classes: int, seed: int) -> dict[str, np.ndarray]:
    """Plausible per-step per-class sums: large classes are learned early, small ones late."""
    rng = np.random.default_rng(seed)
    counts = class_counts(n_classes)
    n = rng.multinomial(BATCH, counts / counts.sum(), size=steps)            # (S, C)
    onset = np.linspace(0.05, 0.8, n_classes) * steps
    p = 0.95 / (1 + np.exp(-(np.arange(steps)[:, None] - onset) / (0.05 * steps)))
    correct = rng.binomial(n, np.clip(p, 0.0, 1.0))
    p_true = n * (0.1 + 0.85 * p)
    loss = n * -np.log(0.1 + 0.85 * p) * rng.uniform(0.9, 1.1, size=n.shape)
    pred = rng.multinomial(BATCH, counts / counts.sum(), size=steps)
    step = np.repeat(np.arange(steps), n_classes)
    return {"step": step, "epoch": (step // max(1, steps // 50) + 1).astype(np.int32),
            "class_id": np.tile(np.arange(n_classes, dtype=np.int32), steps),
            "n": n.ravel(), "loss_sum": loss.ravel(), "correct": correct.ravel(),
            "p_true_sum": p_true.ravel(), "margin_sum": rng.normal(size=n.size),
            "pred_count": pred.ravel(), "grad_norm": rng.gamma(2.0, 0.5, size=n.size),
            "lr": np.repeat(0.05 * np.cos(np.linspace(0, np.pi / 2, steps)), n_classes)}


def epoch_rows(epoch: int, step: int, split: str, n_classes: int, rng: np.random.Generator
               ) -> dict[str, np.ndarray | list[str]]:
    counts = class_counts(n_classes) if split == "train" else np.full(n_classes, 500)
    acc = np.clip(0.1 + 0.02 * epoch * np.linspace(1.0, 0.2, n_classes), 0, 1)
    return {"epoch": np.full(n_classes, epoch), "step": np.full(n_classes, step),
            "split": [split] * n_classes, "class_id": np.arange(n_classes), "n": counts,
            "correct": np.floor(counts * acc).astype(np.int64),
            "loss_sum": counts * rng.uniform(0.1, 2.0, n_classes),
            "p_true_sum": counts * acc, "feature_norm": rng.uniform(1, 5, n_classes),
            "weight_norm": rng.uniform(0.5, 2, n_classes), "bias": rng.normal(size=n_classes)}


def classes_rows(n_classes: int) -> dict[str, object]:
    counts = class_counts(n_classes)
    half = (n_classes + 1) // 2
    return {"class_id": np.arange(n_classes), "class_name": [str(i) for i in range(n_classes)],
            "train_count": counts, "test_count": np.full(n_classes, 500),
            "rank": np.arange(n_classes),
            "grp": ["majority"] * half + ["minority"] * (n_classes - half),
            "shot": ["many" if c > 100 else "few" if c < 20 else "medium" for c in counts]}


def run_writes(steps: int, n_classes: int, variant: dict[str, np.ndarray], seed: int
               ) -> Iterator[tuple[str, dict[str, object]]]:
    """The (table, columns) writes of one run, in the order the trainer makes them."""
    rng = np.random.default_rng(seed)
    per_epoch = max(1, steps // 50)
    yield "classes", classes_rows(n_classes)
    yield "epochs", both_splits(0, 0, n_classes, rng)
    for lo in range(0, steps, FLUSH_STEPS):
        hi = min(steps, lo + FLUSH_STEPS)
        yield "steps", {k: v[lo * n_classes:hi * n_classes] for k, v in variant.items()}
        if hi % per_epoch < FLUSH_STEPS or hi == steps:  # an epoch ended inside this flush
            yield "epochs", both_splits(hi // per_epoch, hi, n_classes, rng)


def both_splits(epoch: int, step: int, n_classes: int, rng: np.random.Generator
                ) -> dict[str, object]:
    """One epochs part per epoch holding the train and the test rows, as the trainer writes it."""
    a, b = (epoch_rows(epoch, step, split, n_classes, rng) for split in ("train", "test"))
    return {k: np.concatenate([a[k], b[k]]) if isinstance(a[k], np.ndarray) else a[k] + b[k]
            for k in a}


def rows_of(columns: dict[str, object]) -> int:
    return max(len(v) for v in columns.values() if not isinstance(v, str))


# ==== writing =====================================================================================

def plan(runs: int, steps: int, n_classes: int) -> list[list[tuple[str, dict[str, object]]]]:
    """Every run's writes, generated before any clock starts."""
    variants = [synthetic_steps(steps, n_classes, seed=v) for v in range(VARIANTS)]
    return [list(run_writes(steps, n_classes, variants[r % VARIANTS], r)) for r in range(runs)]


@dataclass
class Clock:
    """Wall and CPU seconds (CPU: all threads of this process, i.e. the share of a busy machine it
    got) and rows of one arm."""

    wall: float = 0.0
    cpu: float = 0.0
    rows: int = 0
    per_run: list[tuple[float, int]] = field(default_factory=list)  # (wall, rows) of each run

    def add(self, t0: float, c0: float, run: list[tuple[str, dict[str, object]]]) -> None:
        """One run's rows and the wall and CPU time since (t0, c0)."""
        wall, rows = time.perf_counter() - t0, sum(rows_of(cols) for _, cols in run)
        self.wall += wall
        self.cpu += time.process_time() - c0
        self.rows += rows
        self.per_run.append((wall, rows))

    def rate(self) -> float:
        return self.rows / self.wall

    def block_rates(self, block: int) -> list[float]:
        """Rows per second of each `block` consecutive runs (a last, shorter block is dropped)."""
        out = []
        for i in range(0, len(self.per_run) - block + 1, block):
            chunk = self.per_run[i:i + block]
            out.append(sum(r for _, r in chunk) / sum(w for w, _ in chunk))
        return out or [self.rate()]

    def cpu_rate(self) -> float:
        return self.rows / self.cpu


def write_run(root: Path, r: int, run: list[tuple[str, dict[str, object]]], steps: int,
              n_classes: int, clock: Clock, hot: Clock) -> None:
    """One run through RunWriter, as the trainer drives it: start, parts, finish (compaction)."""
    meta = {"name": f"bench-{r}", "config": {"dataset": "synthetic", "profile": "exp",
                                              "ratio": 100.0, "n_classes": n_classes,
                                              "epochs": 50, "loss": "ce"},
            "epoch_done": 50, "step_done": steps, "total_steps": steps}
    t0, c0 = time.perf_counter(), time.process_time()
    w = RunWriter(root, run_id=f"run-{r:04d}", heartbeat_s=3600)
    w.start(meta)
    for table, cols in run:
        t1 = time.perf_counter()
        w.write(table, cols)
        if table == "steps":  # the hot path: what a training loop waits for at each flush
            hot.wall += time.perf_counter() - t1
            hot.rows += rows_of(cols)
    w.finish("finished")
    clock.add(t0, c0, run)


def write_bare(folder: Path, r: int, run: list[tuple[str, dict[str, object]]],
               clock: Clock) -> None:
    """Baseline: the same frames through polars.write_parquet, nothing else."""
    folder.mkdir(parents=True)
    t0, c0 = time.perf_counter(), time.process_time()
    for i, (table, cols) in enumerate(run):
        pl.DataFrame({"run_id": [f"run-{r:04d}"] * rows_of(cols), **cols}).write_parquet(
            folder / f"{table}-{i:06d}.parquet")
    clock.add(t0, c0, run)


def write_both(work: Path, writes: list[list[tuple[str, dict[str, object]]]], steps: int,
               n_classes: int) -> tuple[Clock, Clock, Clock]:
    """The writer and the baseline, alternating run by run (and which goes first), so that a
    busy machine or the kernel's write-back hits both alike."""
    ours, bare, hot = Clock(), Clock(), Clock()
    for r, run in enumerate(writes):
        arms = [lambda: write_run(work / "store", r, run, steps, n_classes, ours, hot),
                lambda: write_bare(work / "bare" / f"run-{r:04d}", r, run, bare)]
        for arm in arms if r % 2 == 0 else arms[::-1]:
            arm()
    # removed only now: deleting files makes the kernel work for a while after (journal commits,
    # discard), and that work would land on the writer's next run rather than on the baseline
    shutil.rmtree(work / "bare")
    return ours, bare, hot


# ==== the browse screen's queries ===================================================================

# The browse screen's three reads, through the store's semantic layer as the app makes them (the
# exported file carries the same views, so both sides run the same SQL).
RUNS_SQL = """
SELECT r.run_id, r.name, r.status, r.dataset, r.ratio, r.epoch_done, r.epochs,
       f.test_balanced, f.test_majority, f.test_minority
FROM runs r LEFT JOIN final_results f USING (run_id)
ORDER BY r.created_at, r.run_id
"""

CURVE_SQL = f"""
SELECT grp, bucket, acc AS train_acc FROM group_buckets($run, {WIDTH}, $span) ORDER BY ALL
"""

FINAL_SQL = """
WITH last AS (SELECT max(epoch) AS epoch FROM epochs WHERE run_id = $run)
SELECT class_id, train_count, grp,
       max(acc) FILTER (WHERE split = 'train') AS train_acc,
       max(acc) FILTER (WHERE split = 'test') AS test_acc
FROM class_results
WHERE run_id = $run AND epoch = (SELECT epoch FROM last)
GROUP BY ALL ORDER BY class_id
"""


def browse_queries(steps: int) -> dict[str, Callable[[duckdb.DuckDBPyConnection, str], object]]:
    return {
        "runs": lambda con, run: con.sql(RUNS_SQL).fetchall(),
        "curve": lambda con, run: con.sql(CURVE_SQL, params={"run": run, "span": steps}
                                          ).fetchall(),
        "final": lambda con, run: con.sql(FINAL_SQL, params={"run": run}).fetchall(),
    }


def time_queries(con: duckdb.DuckDBPyConnection, run_ids: list[str], steps: int,
                 repeats: int) -> dict[str, float]:
    """Median milliseconds per query, each repeat on a different run (after one warm-up)."""
    out = {}
    for name, query in browse_queries(steps).items():
        query(con, run_ids[0])
        times = []
        for i in range(repeats):
            run = run_ids[(i * 7919) % len(run_ids)]
            t0 = time.perf_counter()
            query(con, run)
            times.append((time.perf_counter() - t0) * 1e3)
        out[name] = statistics.median(times)
    return out


def check_answers(store_con: duckdb.DuckDBPyConnection, file_con: duckdb.DuckDBPyConnection,
                  run: str, steps: int) -> None:
    """Both sides must give the same answers, or the comparison means nothing."""
    for name, query in browse_queries(steps).items():
        a, b = query(store_con, run), query(file_con, run)
        if len(a) != len(b) or not all(map(same_row, a, b)):
            raise SystemExit(f"query {name!r} answers differ between the store and the file")


def same_row(a: tuple, b: tuple) -> bool:
    """Equal, floats to the round-off of a mean over a few classes in another order (a float64
    average of k values is good to about k * 2.2e-16 relative; the views average at most a few
    hundred classes)."""
    return len(a) == len(b) and all(
        math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-12) if isinstance(x, float) and
        isinstance(y, float) else x == y for x, y in zip(a, b))


# ==== main ============================================================================================

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=15, help="timed repeats per query")
    ap.add_argument("--block", type=int, default=25,
                    help="runs per block for the spread of the write rate")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp folder)")
    args = ap.parse_args()
    if args.runs < 1 or args.steps < FLUSH_STEPS or args.classes < 2 or args.block < 1:
        ap.error(f"need --runs >= 1, --steps >= {FLUSH_STEPS}, --classes >= 2, --block >= 1")
    work = Path(tempfile.mkdtemp(prefix="imbtui-bench-", dir=args.dir))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> None:
    writes = plan(args.runs, args.steps, args.classes)
    step_rows = args.runs * args.steps * args.classes
    print(f"store: {args.runs} runs x {args.steps:,} steps x {args.classes} classes = "
          f"{step_rows:,} step rows, in {work}", flush=True)

    ours, bare, hot = write_both(work, writes, args.steps, args.classes)
    blocks = sorted(ours.block_rates(args.block))
    bare_blocks = sorted(bare.block_rates(args.block))
    write_rps = ours.rate()
    print(f"write: RunWriter {write_rps:,.0f} rows/s over all runs ({ours.rows:,} rows in "
          f"{ours.wall:.1f} s, compaction included); bare polars write_parquet "
          f"{bare.rate():,.0f} rows/s; ratio {write_rps / bare.rate():.2f}", flush=True)
    print(f"write, in blocks of {args.block} runs: median {statistics.median(blocks):,.0f} "
          f"rows/s (fastest "
          f"{blocks[-1]:,.0f}, slowest {blocks[0]:,.0f}); bare polars median "
          f"{statistics.median(bare_blocks):,.0f} (the machine's speed drifts; both arms drift "
          f"together)", flush=True)
    print(f"write, steps parts alone (what a training loop waits for at each flush): "
          f"{hot.rate():,.0f} rows/s")
    print(f"write CPU: RunWriter {ours.cpu_rate():,.0f} rows per CPU-second, bare polars "
          f"{bare.cpu_rate():,.0f} (wall / CPU: {ours.wall / ours.cpu:.2f} and "
          f"{bare.wall / bare.cpu:.2f}; above 1: waiting for the disk or a busy machine)",
          flush=True)
    del writes

    store = Store(work / "store")
    t0 = time.perf_counter()
    con = store.connect()
    refresh_ms = (time.perf_counter() - t0) * 1e3
    n_parts = sum(1 for _ in (work / "store").rglob("*.parquet"))
    print(f"views: {n_parts:,} parts listed, checked and viewed in {refresh_ms:.0f} ms")

    t0 = time.perf_counter()
    export_duckdb(store, work / "one.duckdb")
    print(f"baseline: the same rows exported to one DuckDB file in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    file_con = duckdb.connect(str(work / "one.duckdb"), read_only=True)
    run_ids = store.run_ids()
    check_answers(con, file_con, run_ids[len(run_ids) // 2], args.steps)

    ours = time_queries(con, run_ids, args.steps, args.repeats)
    base = time_queries(file_con, run_ids, args.steps, args.repeats)
    for name in ours:
        print(f"query {name:5s}: {ours[name]:7.1f} ms median (one DuckDB file: {base[name]:6.1f} "
              f"ms; ratio {ours[name] / base[name]:.1f})")
    slowest = max(ours.values())
    print(f"targets: write >= 1,000,000 rows/s: {'met' if write_rps >= 1e6 else 'MISSED'}; "
          f"each browse query <= 150 ms: {'met' if slowest <= 150 else 'MISSED'}")
    print(f"write_rows_per_s={write_rps:.0f} query_ms={slowest:.1f}")


if __name__ == "__main__":
    main()
