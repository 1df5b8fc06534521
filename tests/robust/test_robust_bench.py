"""bench/store.py, bench/parts.py and bench/methods.py at a smoke size: each runs and ends with its
last line; the store bench also finds the browse queries giving the same answers over the store and
over the exported DuckDB file (it refuses to time them otherwise); and bench/overhead.py's confidence
interval of a median against a published table."""

from __future__ import annotations

import importlib.util
import random
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_store_bench_smoke(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "bench/store.py", "--runs", "3", "--steps", "600",
                           "--repeats", "2", "--dir", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert "3 runs x 600 steps x 10 classes = 18,000 step rows" in lines[0]
    m = re.fullmatch(r"write_rows_per_s=(\d+) query_ms=(\d+\.\d)", lines[-1])
    assert m and int(m[1]) > 0 and float(m[2]) > 0
    assert list(tmp_path.iterdir()) == []  # the bench cleans up after itself


def test_parts_bench_smoke() -> None:
    """bench/parts.py runs, finds both encoders giving the same rows, and ends with its line."""
    proc = subprocess.run([sys.executable, "bench/parts.py", "--repeats", "1"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("steps  part (2,000 rows, 100 parts)")
    assert re.fullmatch(r"part_speedup=\d+\.\d\d", lines[-1])


def test_methods_bench_smoke() -> None:
    """bench/methods.py trains each arm and ends with one ratio per method."""
    proc = subprocess.run([sys.executable, "bench/methods.py", "--epochs", "1", "--repeats", "1",
                           "--dynamics", "minimal", "--methods", "ce+sam", "ce+tau-norm"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"ce\+sam=\d+\.\d\d ce\+tau-norm=\d+\.\d\d",
                        proc.stdout.strip().splitlines()[-1])


# Ranks (from the bottom and the top) of the distribution-free 95 % confidence interval of a median
# of n values, as tabulated by Campbell & Gardner (BMJ 1988; 296: 1454-6, table 1); n = 5 has none.
MEDIAN_CI_RANKS = {6: (1, 6), 7: (1, 7), 8: (1, 8), 9: (2, 8), 10: (2, 9), 11: (2, 10),
                   12: (3, 10), 13: (3, 11), 14: (3, 12), 15: (4, 12), 16: (4, 13), 17: (5, 13),
                   18: (5, 14), 19: (5, 15), 20: (6, 15)}


def test_overhead_median_interval_takes_the_tabulated_ranks() -> None:
    spec = importlib.util.spec_from_file_location("bench_overhead", REPO / "bench" / "overhead.py")
    overhead = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(overhead)
    rng = random.Random(0)
    for n, (low, high) in MEDIAN_CI_RANKS.items():
        values = [float(v) for v in range(1, n + 1)]  # the k-th smallest value is k
        rng.shuffle(values)
        assert overhead.median_ci(values) == (low, high), n
    assert overhead.median_ci([1.0, 2.0, 3.0, 4.0, 5.0]) is None
