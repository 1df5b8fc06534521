"""What one Parquet part costs to build and encode: the run writer's way (an Arrow table of the
table's types, `pyarrow.parquet.write_table`) against the same columns through polars
(`DataFrame(..., schema=...)` and `write_parquet`), in memory, so the file system plays no part.

A training run writes a part of each table at every flush, so the fixed cost per part matters more
than the speed per row. Parts: a steps part of the bench's usual flush (200 steps x 10 classes) and
an epochs part (train and test rows of 10 classes), both from bench/store.py's synthetic run.

    python bench/parts.py

Then the compaction at finish, which the writer leaves to polars: a run's 200,000 steps rows merged
into one zstd file through polars and through pyarrow.

Last line: part_speedup=<polars time / writer time, steps part>.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import polars as pl  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from store import plan  # noqa: E402  (bench/store.py: the synthetic run)

from imbtui.store.schema import TABLES  # noqa: E402
from imbtui.store.writer import (  # noqa: E402
    COMPACT_OPTIONS,
    PART_CODEC,
    STRING_COLUMNS,
    arrow_part,
    encode_part,
    merge_frames,
)


def writer_way(table: str, cols: dict) -> bytes:
    """As RunWriter.write encodes a part."""
    return encode_part(table, arrow_part(table, {**cols, "run_id": "run-0000"}))


def polars_way(table: str, cols: dict) -> bytes:
    """The same part through polars' DataFrame and write_parquet: the baseline."""
    schema = TABLES[table]
    n = max(len(v) for v in cols.values() if not isinstance(v, str))
    data = {c: cols.get(c, [None] * n) for c in schema if c != "run_id"}
    frame = pl.DataFrame({"run_id": ["run-0000"] * n, **data}, schema=schema, strict=False)
    buf = io.BytesIO()
    frame.write_parquet(buf, compression=PART_CODEC, statistics=True)
    return buf.getvalue()


def best_us(fn, table: str, parts: list[dict], repeats: int) -> float:
    """Fastest pass over all parts, in microseconds per part (noise only ever adds time)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for cols in parts:
            fn(table, cols)
        best = min(best, time.perf_counter() - t0)
    return best / len(parts) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    run = plan(1, 20_000, 10)[0]
    speedup = {}
    for table in ("steps", "epochs"):
        parts = [cols for t, cols in run if t == table]
        # both must give the same rows, or the comparison means nothing
        mine, theirs = writer_way(table, parts[1]), polars_way(table, parts[1])
        a, b = pl.read_parquet(io.BytesIO(mine)), pl.read_parquet(io.BytesIO(theirs))
        if not a.equals(b):
            raise SystemExit(f"{table}: the two ways give different rows")
        times = {}
        for _ in range(2):  # alternate the arms: a drifting machine hits both alike
            for name, fn in (("writer", writer_way), ("polars", polars_way)):
                times[name] = min(times.get(name, float("inf")),
                                  best_us(fn, table, parts, args.repeats))
        rows = len(next(v for v in parts[0].values() if not isinstance(v, str)))
        speedup[table] = times["polars"] / times["writer"]
        print(f"{table:6s} part ({rows:,} rows, {len(parts)} parts): writer {times['writer']:6.0f} "
              f"us, polars {times['polars']:6.0f} us; sizes {len(mine):,} and {len(theirs):,} "
              f"bytes; speedup {speedup[table]:.2f}")
    compaction(run, args.repeats)
    print(f"part_speedup={speedup['steps']:.2f}")


def compaction(run: list, repeats: int) -> None:
    """A finished run's steps parts merged into one zstd file: polars' encoder (the writer's way,
    on as many threads as polars has) against pyarrow's."""
    tables = [arrow_part("steps", {**cols, "run_id": "run-0000"}) for t, cols in run
              if t == "steps"]

    def through_polars() -> None:
        merge_frames(tables, "run-0000").write_parquet(io.BytesIO(), **COMPACT_OPTIONS)

    def through_pyarrow() -> None:
        pq.write_table(pa.concat_tables(tables), pa.BufferOutputStream(), compression="zstd",
                       compression_level=1, use_dictionary=STRING_COLUMNS["steps"], store_schema=False)

    best = {"polars": float("inf"), "pyarrow": float("inf")}
    for _ in range(repeats):
        for name, fn in (("polars", through_polars), ("pyarrow", through_pyarrow)):
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    rows = sum(t.num_rows for t in tables)
    print(f"compaction of {rows:,} steps rows on {pl.thread_pool_size()} polars thread(s): polars "
          f"{best['polars'] * 1e3:.1f} ms (the writer's way), pyarrow {best['pyarrow'] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
