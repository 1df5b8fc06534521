"""`imbtui sweep --emit slurm`: a sweep as a Slurm array job script, one array task per run.

Each task runs one `imbtui train` into the same store folder on shared storage. The store needs no
lock (a run writes only under its own folder, each file whole or not at all), so tasks on any
number of nodes write at once, and `imbtui browse --store PATH` on a login node watches them live.
The script is plain bash: a `case` on SLURM_ARRAY_TASK_ID picks the task's arguments, so
`bash -n` checks it and a fake `imbtui` on PATH shows what each task would run. Imports nothing
heavy.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Arguments the sweep adds to every run that the script sets once for all tasks instead: the store
# and sweep id come from the script's variables, and each task makes a fresh run id, so that a
# resubmitted or requeued task starts a new run instead of failing on "run already exists".
_PER_SCRIPT = {"--store": 1, "--sweep": 1, "--run-id": 1, "-q": 0, "--quiet": 0}


@dataclass
class SlurmOptions:
    """The #SBATCH directives of the array job (None: the cluster's default)."""

    job_name: str
    partition: str | None = None
    time: str | None = None           # Slurm's time format, e.g. 02:00:00 or 1-00:00:00
    gpus: int | None = None           # per run; > 1 runs it data-parallel under torchrun
    cpus_per_task: int | None = None
    mem: str | None = None            # e.g. 16G
    max_running: int | None = None    # the array's "%N": at most N runs at once
    extra: list[str] = field(default_factory=list)  # more directives: "account=abc", "--qos=high"
    setup: str | None = None          # shell line(s) before each run: module load, venv activate


def task_args(argv: Sequence[str]) -> list[str]:
    """A run's `imbtui train` arguments without those the script sets for every task."""
    out: list[str] = []
    skip = 0
    for a in argv:
        if skip:
            skip -= 1
        elif a in _PER_SCRIPT:
            skip = _PER_SCRIPT[a]
        else:
            out.append(a)
    return out


def directives(opts: SlurmOptions, n_tasks: int) -> list[str]:
    """The #SBATCH lines: one array task per run, then what the options ask for."""
    array = f"0-{n_tasks - 1}" + (f"%{opts.max_running}" if opts.max_running else "")
    pairs = [("job-name", opts.job_name), ("array", array), ("partition", opts.partition),
             ("time", opts.time), ("cpus-per-task", opts.cpus_per_task), ("mem", opts.mem)]
    if opts.gpus:  # a data-parallel run keeps its GPUs on one node (torchrun --standalone)
        pairs += [("nodes", 1), ("gpus", opts.gpus)]
    lines = [f"#SBATCH --{k}={v}" for k, v in pairs if v is not None]
    return lines + [f"#SBATCH {e if e.startswith('-') else '--' + e}" for e in opts.extra]


def launcher(gpus: int | None) -> str:
    """One process per run; several GPUs: one process per GPU under torchrun (one node)."""
    if gpus and gpus > 1:
        return f"torchrun --standalone --nproc-per-node={gpus} -m imbtui train"
    return "imbtui train"


def render(runs: Sequence[tuple[str, Sequence[str]]], store: Path, sweep_id: str,
           opts: SlurmOptions) -> str:
    """The array job script for `runs` (name, `imbtui train` argv) writing into `store`."""
    q = shlex.quote
    cases = [f"  {i}) ARGS=({' '.join(q(a) for a in task_args(argv))}) ;;"
             for i, (_, argv) in enumerate(runs)]
    last = len(runs) - 1
    return "\n".join([
        "#!/bin/bash",
        f"# imbtui {sweep_id}: {len(runs)} runs, one Slurm array task each, one shared store.",
        "#   submit:  sbatch THIS_FILE",
        f"#   watch:   imbtui browse --store {q(str(store))}   (from a login node)",
        "#   queue:   squeue --me",
        *directives(opts, len(runs)),
        "",
        # before `set -u`: module and activate scripts often read unset variables
        *([opts.setup] if opts.setup else []),
        "set -euo pipefail",
        f"STORE={q(str(store))}",
        f"SWEEP={q(sweep_id)}",
        "",
        'case "${SLURM_ARRAY_TASK_ID:?submit this script with sbatch: one array task per run}" in',
        *cases,
        f'  *) echo "imbtui: no run for array task $SLURM_ARRAY_TASK_ID (this sweep has 0-{last})"'
        " >&2; exit 2 ;;",
        "esac",
        "",
        f'exec {launcher(opts.gpus)} "${{ARGS[@]}}" --store "$STORE" --sweep "$SWEEP" -q',
        "",
    ])
