"""Thread pools in a training process.

A trainer writes small Parquet parts between steps. Polars sizes its thread pool to the machine when
it is first imported, and on a CPU those threads then fight torch's intra-op threads for the cores
at every flush: on 2 cores `bench/overhead.py` measured the recording overhead of the default run at
1.20 (minimal) and 1.28 (full) with polars' default pool, and about 1.03 / 1.09 with one polars
thread, when polars still encoded the parts. pyarrow encodes them now (it starts no threads to
write); polars is left with the compaction at the end of the run.
"""

from __future__ import annotations

import os
import sys


def single_threaded_polars() -> bool:
    """Ask for a one-thread polars pool, unless polars is already imported (then it is too late)
    or the user chose a size. Call before anything imports polars; True if it took effect."""
    if "polars" in sys.modules:
        return False
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    return os.environ["POLARS_MAX_THREADS"] == "1"
