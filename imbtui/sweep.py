"""`imbtui sweep`: a grid of training runs, each its own `python -m imbtui train` process.

Separate processes writing to one store need no coordination (each run owns its folder), and a
killed sweep leaves every finished run intact. The parent only launches, watches run.json for
progress, and prints the sweep's table at the end. Imports nothing heavy: rich and the store only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from imbtui.store import Store

from trainer.options import AXES, OPTION  # noqa: E402  (declarations only: nothing heavy)

LIST_OPTIONS = tuple(OPTION[a].cli_flag for a in AXES)  # the sweep's axes take several values
POLL_S = 0.5


def expand_lists(args: list[str], options: tuple[str, ...] = LIST_OPTIONS) -> list[str]:
    """`--ratio 1 10 100` -> `--ratio 1 --ratio 10 --ratio 100`: click takes one value per use."""
    out: list[str] = []
    current: str | None = None
    for i, a in enumerate(args):
        if a == "--":
            return out + args[i:]
        if a.startswith("-"):
            current = a if a in options else None
            out.append(a)
        elif current is not None and out[-1] != current:
            out += [current, a]
        else:
            out.append(a)
    return out


@dataclass
class Job:
    name: str
    run_id: str
    argv: list[str]                  # the `imbtui train` arguments
    slot: int = -1                   # which of the --jobs slots runs it (GPU slot % n_gpus)
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    returncode: int | None = None
    task: TaskID | None = None
    fraction: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def error(self) -> str:
        """The last line the run wrote to stderr (the one-line error of a failed train)."""
        try:
            lines = [ln for ln in self.log.read_text().splitlines() if ln.strip()] if self.log else []
        except OSError:
            lines = []
        return lines[-1] if lines else f"exit code {self.returncode}"


def child_env(slot: int, n_jobs: int, n_gpus: int) -> dict[str, str]:
    """One GPU per slot when there are several; on the CPU, the cores shared out among jobs."""
    env = dict(os.environ)
    if n_gpus > 1:
        env["CUDA_VISIBLE_DEVICES"] = str(slot % n_gpus)
    elif n_gpus == 0 and n_jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n_jobs))
    return env


class SweepRunner:
    """Runs jobs N at a time and draws one overall bar plus a bar per running run."""

    def __init__(self, jobs: list[Job], store: Path, n_parallel: int, n_gpus: int,
                 quiet: bool = False) -> None:
        self.jobs, self.store, self.n_parallel, self.n_gpus = jobs, Store(store), n_parallel, n_gpus
        self.logs = Path(tempfile.mkdtemp(prefix="imbtui-sweep-"))
        from imbtui.console import err

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=24),
                                 TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                                 console=err, disable=quiet)

    def run(self) -> None:
        pending, active = deque(self.jobs), []
        with self.progress:
            overall = self.progress.add_task("sweep", total=len(self.jobs))
            try:
                while pending or active:
                    while pending and len(active) < self.n_parallel:
                        active.append(self._start(pending.popleft(), active))
                    time.sleep(POLL_S)
                    active = [j for j in active if not self._poll(j)]
                    self._draw(overall, len(pending), len(active))
            except KeyboardInterrupt:
                self._stop(active)
                raise

    def _start(self, job: Job, active: list[Job]) -> Job:
        used = {j.slot for j in active}
        job.slot = next(s for s in range(self.n_parallel) if s not in used)
        job.log = self.logs / f"{job.run_id}.err"
        with open(job.log, "wb") as log:
            job.proc = subprocess.Popen(
                [sys.executable, "-m", "imbtui", "train", *job.argv],
                stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL,
                env=child_env(job.slot, self.n_parallel, self.n_gpus))
        job.task = self.progress.add_task(f"  {job.name}", total=1.0)
        return job

    def _poll(self, job: Job) -> bool:
        """Refresh the job's progress; True once its process has ended."""
        job.meta = self.store.read_run(job.run_id) or job.meta
        done, total = job.meta.get("step_done") or 0, job.meta.get("total_steps") or 0
        job.fraction = min(1.0, done / total) if total else 0.0
        job.returncode = job.proc.poll() if job.proc else None
        if job.returncode is None:
            self.progress.update(job.task, completed=job.fraction)
            return False
        job.fraction = 1.0
        self.progress.remove_task(job.task)
        return True

    def _draw(self, overall: TaskID, waiting: int, running: int) -> None:
        ended = [j for j in self.jobs if j.returncode is not None]
        failed = sum(j.returncode != 0 for j in ended)
        self.progress.update(overall, completed=sum(j.fraction for j in self.jobs),
                             description=f"sweep: {len(ended) - failed} done · {running} running "
                                         f"· {failed} failed · {waiting} waiting")

    def _stop(self, active: list[Job]) -> None:
        """Ctrl-C: each running run records itself as interrupted; finished runs are untouched."""
        for job in active:
            if job.proc and job.proc.poll() is None:
                job.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 15
        for job in active:
            if job.proc is None:
                continue
            try:
                job.returncode = job.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                job.proc.kill()
                job.returncode = job.proc.wait()


# the final accuracies are the store's final_results view (imbtui/store/semantic.py)
SUMMARY_SQL = """
SELECT r.name, r.run_id, r.status, r.dataset, r.ratio, r.method, r.seed,
       r.epoch_done AS epochs, f.test_balanced, f.test_majority, f.test_minority
FROM runs r LEFT JOIN final_results f USING (run_id)
WHERE json_extract_string(r.config, '$.sweep') = $sweep
ORDER BY r.dataset, r.method, r.ratio, r.seed, r.name
"""

MEAN_SQL = """
SELECT dataset, method, ratio, count(*) AS seeds,
       avg(test_balanced) AS balanced, stddev_samp(test_balanced) AS balanced_sd,
       avg(test_majority) AS majority, avg(test_minority) AS minority,
       stddev_samp(test_minority) AS minority_sd
FROM ({runs}) WHERE status = 'finished'
GROUP BY ALL ORDER BY dataset, method, ratio
"""


def sweep_tables(store: Path, sweep_id: str):
    """Per-run final accuracies of one sweep, and their means over seeds (polars frames)."""
    st = Store(store)
    con = st.connect()
    runs_sql = SUMMARY_SQL
    per_run = con.sql(runs_sql, params={"sweep": sweep_id}).pl()
    means = con.sql(MEAN_SQL.format(runs=runs_sql), params={"sweep": sweep_id}).pl()
    return per_run, means


def compact_runs(per_run):
    """The per-run table in 80 columns: the name says dataset, ratio, loss and seed."""
    import polars as pl

    return per_run.select("name", "status", "epochs",
                          *(pl.col(f"test_{g}").round(3).alias(g[:3] if g != "balanced" else "bal")
                            for g in ("balanced", "majority", "minority")))


def compact_means(means):
    """Means over seeds as mean±sd strings."""
    import polars as pl

    def pm(mean: str, sd: str) -> pl.Expr:
        return pl.format("{}±{}", pl.col(mean).round(3), pl.col(sd).fill_null(0).round(3))

    return means.select("dataset", "method", "ratio", "seeds",
                        pm("balanced", "balanced_sd").alias("bal"),
                        pl.col("majority").round(3).alias("maj"),
                        pm("minority", "minority_sd").alias("min"))
