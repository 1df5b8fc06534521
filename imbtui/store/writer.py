"""The writer a training process uses for its own run: run.json plus immutable Parquet parts.

Only the run's own process writes under its folder, so no lock is ever needed: readers list finished
parts and read them; a part appears whole (temp file + rename) or not at all.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from imbtui.store.layout import (
    atomic_write_bytes,
    atomic_write_json,
    iso,
    new_run_id,
    part_files,
    run_dir,
    utcnow,
)
from imbtui.store.schema import TABLES

TERMINAL = ("finished", "failed", "interrupted", "diverged")


class RunWriter:
    """Writes one run. Implements the trainer's sink interface (start / write / update / finish)."""

    def __init__(self, root: Path, run_id: str | None = None, heartbeat_s: float = 5.0) -> None:
        self.root = Path(root)
        self.run_id = run_id or new_run_id()
        self.dir = run_dir(self.root, self.run_id)
        self.heartbeat_s = heartbeat_s
        self._meta: dict[str, Any] = {}
        self._parts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, meta: Mapping[str, Any]) -> None:
        if self.dir.exists():
            raise FileExistsError(f"run {self.run_id!r} already exists in {self.root}")
        self.dir.mkdir(parents=True)
        now = iso(utcnow())
        self._meta = {"run_id": self.run_id, **meta, "status": "running", "created_at": now,
                      "heartbeat_at": now, "finished_at": None}
        self._flush_meta()
        self._thread = threading.Thread(target=self._beat, name="imbtui-heartbeat", daemon=True)
        self._thread.start()

    def update(self, **fields: Any) -> None:
        """Merge progress fields into run.json (and refresh the heartbeat)."""
        with self._lock:
            self._meta.update(fields)
            self._meta["heartbeat_at"] = iso(utcnow())
            self._flush_meta()

    def finish(self, status: str, message: str | None = None) -> None:
        if status not in TERMINAL:
            raise ValueError(f"unknown final status {status!r}")
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        now = iso(utcnow())
        self.update(status=status, finished_at=now, message=message)

    # -- data ------------------------------------------------------------------------------------
    def write(self, table: str, columns: Mapping[str, np.ndarray | list[Any]]) -> Path:
        """Write one immutable part of `table` and return its path."""
        schema = TABLES[table]
        columns = {"run_id": self.run_id, **columns}
        missing = set(schema) - set(columns)
        if missing:
            raise ValueError(f"{table}: missing columns {sorted(missing)}")
        n_rows = max((len(v) for v in columns.values() if not isinstance(v, str)), default=0)
        data = {c: ([v] * n_rows if isinstance(v := columns[c], str) else v) for c in schema}
        frame = pl.DataFrame(data, schema=schema, strict=False)
        buf = io.BytesIO()
        frame.write_parquet(buf, compression="zstd", statistics=True)
        n = self._next_part(table)
        path = self.dir / table / f"part-{n:06d}.parquet"
        atomic_write_bytes(path, buf.getvalue())
        return path

    def _next_part(self, table: str) -> int:
        if table not in self._parts:
            existing = part_files(self.dir / table)
            self._parts[table] = len(existing)
        n = self._parts[table]
        self._parts[table] = n + 1
        return n

    # -- internals -------------------------------------------------------------------------------
    def _flush_meta(self) -> None:
        atomic_write_json(self.dir / "run.json", self._meta)

    def _beat(self) -> None:
        # A heartbeat lets readers tell a live run from one whose process died without a word.
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.update()
            except OSError:
                pass  # a full disk shows up on the next data write, which stops the run cleanly

