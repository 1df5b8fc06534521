"""The writer a training process uses for its own run: run.json plus immutable Parquet parts.

Only the run's own process writes under its folder, so no lock is ever needed: readers list finished
parts and read them; a part appears whole (temp file + rename) or not at all.

With `background=True` (what `imbtui train` uses) the caller's thread only converts each part to
Arrow; one writer thread encodes and writes the parts and the progress in run.json, in the order
they came, so run.json's progress never runs ahead of the parts on disk. A killed process keeps
every part written before it, as without the thread; what it loses besides is at most the few
parts still queued (the queue holds WRITE_QUEUE items).
"""

from __future__ import annotations

import errno
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from imbtui.store.layout import (
    RANGE_RE,
    RESERVE_NAME,
    StoreError,
    atomic_write_bytes,
    atomic_write_json,
    iso,
    new_run_id,
    part_first,
    part_last,
    run_dir,
    scan_table,
    utcnow,
)
from imbtui.store.schema import ADDED, ARROW_TABLES, TABLES

TERMINAL = ("finished", "failed", "interrupted", "diverged")
# Runs with fewer parts per table are left as written: a few files cost a reader nothing.
COMPACT_MIN_PARTS = 8
# Parts are written while the trainer waits: LZ4 encodes ~25% faster than zstd for files ~10%
# larger, and compaction re-encodes a finished run's parts with zstd.
PART_CODEC = "lz4"
# Parts are encoded by pyarrow's Parquet writer: polars starts its streaming engine for every
# write_parquet, and a run writes a part of each table at every flush (bench/parts.py: a 2,000-row
# steps part 0.35 ms against 0.72 ms, a 20-row epochs part 0.18 against 0.46 ms). Compaction, one
# big file, goes through polars, whose encoder uses every core (twice pyarrow's speed on two).
# A run's writer keeps the frames it wrote, up to this many bytes, so that compaction at finish
# merges them from memory instead of reading every part back (the parts' rows, byte for byte).
FRAME_CACHE_BYTES = 64 * 1024 * 1024
# Space held back from the start of a run so that, when the disk fills up, the final run.json
# (status `failed` and why) still fits: released only to write it.
RESERVE_BYTES = 64 * 1024
# Parts and progress updates a background writer may hold before the trainer waits for it.
WRITE_QUEUE = 64


class StoreWriteError(StoreError):
    """The store cannot be written (full disk, read-only or missing folder): one line, exit 2."""


def write_error(path: Path, root: Path, exc: OSError) -> StoreWriteError:
    reason = exc.strerror or exc.__class__.__name__
    try:
        where = str(path.relative_to(root))
    except ValueError:
        where = str(path)
    return StoreWriteError(f"cannot write {where} in store {str(root)!r}: {reason}")


class RunWriter:
    """Writes one run. Implements the trainer's sink interface (start / write / update / finish).

    Every failure to write (full disk, read-only or vanished folder) is raised as StoreWriteError,
    one line naming the file, after removing the temporary file: earlier parts are never touched.
    With `background` a failure on the writer thread is raised by the next write() or by
    finish(), which then records the run as failed (unless it already ends as failed or
    interrupted); the parts queued after the failed one are dropped.
    """

    def __init__(self, root: Path, run_id: str | None = None, heartbeat_s: float = 5.0,
                 compact_min_parts: int = COMPACT_MIN_PARTS, fsync_parts: bool = False,
                 background: bool = False) -> None:
        self.root = Path(root)
        self.run_id = run_id or new_run_id()
        self.dir = run_dir(self.root, self.run_id)
        self.heartbeat_s = heartbeat_s
        self.compact_min_parts = compact_min_parts
        self.fsync_parts = fsync_parts
        self._meta: dict[str, Any] = {}
        self._parts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # table -> [(part number, size on disk, frame)] of the parts this writer wrote, while they
        # fit in FRAME_CACHE_BYTES; a table that outgrows it is dropped (compaction reads the parts)
        self._frames: dict[str, list[tuple[int, int, pa.Table]] | None] = {}
        self._frame_bytes = 0
        self.background = background
        self._queue: queue.Queue | None = None  # the writer thread's work, while it runs
        self._worker: threading.Thread | None = None
        self._failure: StoreWriteError | None = None  # what stopped the writer thread
        self._failure_raised = False

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, meta: Mapping[str, Any]) -> None:
        if self.dir.exists():
            raise StoreError(f"run {self.run_id!r} already exists in {str(self.root)!r}")
        try:
            self.dir.mkdir(parents=True)
        except OSError as exc:
            raise write_error(self.dir, self.root, exc) from None
        now = iso(utcnow())
        self._meta = {"run_id": self.run_id, **meta, "status": "running", "created_at": now,
                      "heartbeat_at": now, "finished_at": None}
        self._flush_meta()
        self._reserve()
        self._thread = threading.Thread(target=self._beat, name="imbtui-heartbeat", daemon=True)
        self._thread.start()
        if self.background:
            self._queue = queue.Queue(maxsize=WRITE_QUEUE)
            self._worker = threading.Thread(target=self._work, args=(self._queue,),
                                            name="imbtui-writer", daemon=True)
            self._worker.start()

    def update(self, final: bool = False, **fields: Any) -> None:
        """Merge progress fields into run.json (and refresh the heartbeat). With `background`
        the update waits behind the parts queued before it."""
        if not self._meta:  # start() never came: no run.json of ours to update or to create
            return
        if self._queue is not None and fields and not final and self._failure is None:
            self._queue.put((self._update_now, (fields,)))
            return
        self._update_now(fields, final)

    def _update_now(self, fields: Mapping[str, Any], final: bool = False) -> None:
        with self._lock:
            self._meta.update(fields)
            self._meta["heartbeat_at"] = iso(utcnow())
            self._flush_meta(use_reserve=final)

    def finish(self, status: str, message: str | None = None) -> None:
        """Record the final status, then compact the parts (a kill in between loses nothing)."""
        if status not in TERMINAL:
            raise ValueError(f"unknown final status {status!r}")
        if not self._meta:  # start() never wrote this run (refused, or interrupted before)
            return
        self._drain()
        failure = self._failure if not self._failure_raised else None
        if failure is not None and status not in ("failed", "interrupted"):
            status, message = "failed", str(failure)
        self._stop.set()
        if self._thread is not None and self._thread.ident is not None:  # started, if cut short
            self._thread.join(timeout=5)
        now = iso(utcnow())
        self.update(final=True, status=status, finished_at=now, message=message)
        _unlink(self.dir / RESERVE_NAME)
        # tables compact independently, and polars releases the GIL while it encodes
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            for table, merged in zip(TABLES, pool.map(self.compact, TABLES)):
                if merged is None:
                    self._sync(table)
        self._frames.clear()
        if failure is not None:
            self._failure_raised = True
            raise failure

    def _sync(self, table: str) -> None:
        """Make a table's parts durable: once per run, not once per part, so that the trainer
        never waits on the disk while it trains (a killed process loses nothing either way)."""
        if self.fsync_parts:
            return
        for p in scan_table(self.dir / table).parts:
            try:
                _fsync(p)
            except OSError:
                pass  # durability is best effort here; the part itself is complete
        _fsync_dir(self.dir / table)

    # -- data ------------------------------------------------------------------------------------
    def write(self, table: str, columns: Mapping[str, np.ndarray | list[Any] | str]
              ) -> Path | None:
        """Write one immutable part of `table` and return its path.

        Each column is an array or list (cast to the table's type; a value that does not fit, such
        as 1.5 for an integer column, raises ValueError) or one string for every row. A column
        added to the table later (schema.ADDED) may be left out and is stored as NULL.
        With `background` the part is converted here (bad columns raise here), queued for the
        writer thread, and None is returned.
        """
        if self._queue is None:
            keep = self._frames.get(table, []) is not None
            return self._write_part(table, arrow_part(table, {**columns, "run_id": self.run_id},
                                                      copy=keep))
        self._raise_failure()
        # a copy: the caller may reuse its arrays while the part waits in the queue
        part = arrow_part(table, {**columns, "run_id": self.run_id}, copy=True)
        self._queue.put((self._write_part, (table, part)))
        return None

    def _write_part(self, table: str, part: pa.Table) -> Path:
        keep = self._frames.get(table, []) is not None
        blob = encode_part(table, part)
        n = self._next_part(table)
        path = self.dir / table / f"part-{n:06d}.parquet"
        try:
            write_part_file(path, memoryview(blob), self.fsync_parts)
        except OSError as exc:
            raise write_error(path, self.root, exc) from None
        if keep:
            self._keep_frame(table, n, blob.size, part)
        return path

    def _keep_frame(self, table: str, n: int, size: int, frame: pa.Table) -> None:
        kept = self._frames.setdefault(table, [])  # write() checked it is not dropped
        nbytes = frame.nbytes
        if self._frame_bytes + nbytes > FRAME_CACHE_BYTES:
            self._frame_bytes -= sum(f.nbytes for _, _, f in kept)
            self._frames[table] = None
            return
        kept.append((n, size, frame))
        self._frame_bytes += nbytes

    def _kept_frames(self, table: str, parts: list[Path]) -> list[pa.Table] | None:
        """This writer's own frames of exactly `parts`, if it still holds them and every part on
        disk is still the size it wrote; None sends compaction to the files themselves."""
        kept = self._frames.get(table)
        if not kept or [n for n, _, _ in kept] != [part_first(p) for p in parts]:
            return None
        if any(RANGE_RE.match(p.name) for p in parts):
            return None
        try:
            if any(p.stat().st_size != size for p, (_, size, _) in zip(parts, kept)):
                return None
        except OSError:
            return None
        return [f for _, _, f in kept]

    def compact(self, table: str) -> Path | None:
        """Merge a table's parts into one `part-A-B.parquet`; the plain parts go only after it is
        in place, and readers prefer it to them, so no reader ever counts a row twice or misses one.

        Best effort: a failure (full disk, a damaged part) leaves the parts exactly as they were.
        """
        listing = scan_table(self.dir / table)
        if len(listing.parts) < max(2, self.compact_min_parts):
            return None
        first, last = part_first(listing.parts[0]), part_last(listing.parts[-1])
        path = self.dir / table / f"part-{first:06d}-{last:06d}.parquet"
        tmp = path.with_name(f".{path.name}.compact.tmp")
        try:
            frames = self._kept_frames(table, listing.parts)
            if frames is not None:  # merged from memory: no part is read back
                merge_frames(frames, self.run_id).write_parquet(tmp, **COMPACT_OPTIONS)
            else:  # streams part by part, so a run of any size compacts in bounded memory
                pl.scan_parquet(listing.parts).sink_parquet(tmp, **COMPACT_OPTIONS)
            _fsync(tmp)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except BaseException as exc:  # polars panics derive from BaseException
            _unlink(tmp)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            return None
        for p in listing.parts:
            _unlink(p)
        return path

    def _next_part(self, table: str) -> int:
        if table not in self._parts:
            listing = scan_table(self.dir / table)
            done = listing.parts + listing.superseded
            self._parts[table] = max((part_last(p) for p in done), default=-1) + 1
        n = self._parts[table]
        self._parts[table] = n + 1
        return n

    # -- the writer thread (background) ------------------------------------------------------------
    def _work(self, work: queue.Queue) -> None:
        """Run the queued writes in order; after a failure, keep taking (and dropping) them so
        that the trainer never blocks on a full queue."""
        while True:
            item = work.get()
            if item is None:
                return
            if self._failure is not None:
                continue
            task, args = item
            try:
                task(*args)
            except StoreWriteError as exc:
                self._failure = exc
            except BaseException as exc:  # anything else: said as a write error of the run
                self._failure = StoreWriteError(
                    f"cannot write run {self.run_id!r} in store {str(self.root)!r}: "
                    f"{exc.__class__.__name__}: {exc}")

    def _drain(self) -> None:
        """Wait for the writer thread to write everything queued, and stop it; from then on
        every call writes on the caller's thread."""
        work, worker = self._queue, self._worker
        self._queue = self._worker = None
        if work is not None and worker is not None and worker.is_alive():
            work.put(None)
            worker.join()

    def _raise_failure(self) -> None:
        if self._failure is not None and not self._failure_raised:
            self._failure_raised = True
            raise self._failure

    # -- internals -------------------------------------------------------------------------------
    def _flush_meta(self, use_reserve: bool = False) -> None:
        path = self.dir / "run.json"
        try:
            atomic_write_json(path, self._meta)
        except OSError as exc:
            reserve = self.dir / RESERVE_NAME
            if not (use_reserve and exc.errno in (errno.ENOSPC, errno.EDQUOT) and reserve.exists()):
                raise write_error(path, self.root, exc) from None
            _unlink(reserve)  # the disk is full: spend the reserve on recording how the run ended
            self._flush_meta()

    def _reserve(self) -> None:
        # real zeros, not a sparse file: the blocks must be allocated to be given back later
        try:
            with open(self.dir / RESERVE_NAME, "wb") as f:
                f.write(bytes(RESERVE_BYTES))
        except OSError:
            _unlink(self.dir / RESERVE_NAME)  # too full already: the run fails on its first part

    def _beat(self) -> None:
        # A heartbeat lets readers tell a live run from one whose process died without a word.
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.update()
            except StoreWriteError:
                pass  # a full disk shows up on the next data write, which stops the run cleanly


# the string columns of each table: dictionary-encoded in parts (a run_id column of one value shrinks
# to a few bytes); numbers are not (dictionary-encoding them costs more time than it saves space)
STRING_COLUMNS = {table: [c for c, t in cols if t == pa.string()]
                  for table, cols in ARROW_TABLES.items()}


def encode_part(table: str, part: pa.Table) -> pa.Buffer:
    """A part's Parquet bytes, as every part is written. store_schema=False: every column's type is
    plain Parquet, so the Arrow schema pyarrow would copy into each footer is redundant bytes."""
    out = pa.BufferOutputStream()
    pq.write_table(part, out, compression=PART_CODEC, use_dictionary=STRING_COLUMNS[table],
                   store_schema=False)
    return out.getvalue()


# zstd level 1 makes files within 1% of the default level's size for ~30% less CPU
COMPACT_OPTIONS = {"compression": "zstd", "compression_level": 1, "statistics": True}


def merge_frames(frames: list[pa.Table], run_id: str) -> pl.DataFrame:
    """One run's parts of a table, kept in memory, as one frame to compact. run_id is the same in
    every row: put back as a constant rather than converted row by row."""
    merged = pa.concat_tables(frames).drop_columns(["run_id"]).combine_chunks()
    return pl.from_arrow(merged, rechunk=False).select(pl.lit(run_id).alias("run_id"), pl.all())


def arrow_part(table: str, columns: Mapping[str, Any], copy: bool = False) -> pa.Table:
    """One part of `table` as an Arrow table of exactly the table's columns and types.

    `copy` makes the table own its memory (a numpy array of the right type is otherwise shared,
    and the caller may reuse it)."""
    spec = ARROW_TABLES[table]
    missing = {c for c, _ in spec} - set(columns) - ADDED.get(table, frozenset())
    if missing:
        raise ValueError(f"{table}: missing columns {sorted(missing)}")
    n_rows = max((len(v) for v in columns.values() if not isinstance(v, str)), default=0)
    arrays = []
    for name, kind in spec:
        value = columns.get(name)
        try:
            if value is None:
                arrays.append(pa.nulls(n_rows, kind))
            elif isinstance(value, str):
                arrays.append(pa.repeat(pa.scalar(value, kind), n_rows))
            else:
                if copy and isinstance(value, np.ndarray):
                    value = value.copy()
                arrays.append(pa.array(value, kind))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise ValueError(f"{table}.{name}: {exc}") from None
    try:
        return pa.Table.from_arrays(arrays, names=[c for c, _ in spec])
    except pa.ArrowInvalid as exc:  # columns of different lengths
        raise ValueError(f"{table}: {exc}") from None


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_part_file(path: Path, data: bytes | memoryview, fsync: bool = False) -> None:
    """A part, written whole or not at all (layout.atomic_write_bytes). Without `fsync` the part
    reaches the disk with the page cache (finish() syncs the run once): a killed process loses
    nothing by it; a machine that loses power may lose its last seconds of parts, which readers
    then skip as damaged."""
    atomic_write_bytes(path, data, fsync=fsync)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass  # cleanup only: a leftover superseded part or temp file is never read
