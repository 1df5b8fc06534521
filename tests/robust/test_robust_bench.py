"""bench/store.py, bench/parts.py and bench/methods.py at a smoke size: each runs and ends with its
last line; the store bench also finds the browse queries giving the same answers over the store and
over the exported DuckDB file (it refuses to time them otherwise)."""

from __future__ import annotations

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
