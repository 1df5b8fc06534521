"""Where a training run's records go. The loop and its recorder only ever call these four methods.

`imbtui.store.RunWriter` is the real sink; `NullSink` takes every write and keeps nothing (a run
trained for its model alone, a benchmark's recording without the store), so nothing above it needs
an `if logging:` branch; `MemorySink` keeps everything in memory for tests. One level up,
trainer.recording's `NullRecorder` does the same for `dynamics="off"`: the loop calls the recorder
whatever it records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np


class Sink(Protocol):
    run_id: str

    def start(self, meta: Mapping[str, Any]) -> None: ...
    def write(self, table: str, columns: Mapping[str, Any]) -> Any: ...
    def update(self, **fields: Any) -> None: ...
    def finish(self, status: str, message: str | None = None) -> None: ...


class NullSink:
    run_id = "null"

    def start(self, meta: Mapping[str, Any]) -> None: ...
    def write(self, table: str, columns: Mapping[str, Any]) -> None: ...
    def update(self, **fields: Any) -> None: ...
    def finish(self, status: str, message: str | None = None) -> None: ...


class MemorySink:
    """Collects every write; `table(name)` concatenates the parts of one table."""

    run_id = "memory"

    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}
        self.parts: dict[str, list[dict[str, np.ndarray]]] = {}
        self.status: str | None = None
        self.message: str | None = None

    def start(self, meta: Mapping[str, Any]) -> None:
        self.meta = dict(meta)
        self.status = "running"

    def write(self, table: str, columns: Mapping[str, Any]) -> None:
        # copies, as the store's writer keeps what it was given at the call: a part must not
        # change when the caller reuses its buffers
        self.parts.setdefault(table, []).append({k: np.array(v) for k, v in columns.items()})

    def update(self, **fields: Any) -> None:
        self.meta.update(fields)

    def finish(self, status: str, message: str | None = None) -> None:
        self.status, self.message = status, message

    def table(self, name: str) -> dict[str, np.ndarray]:
        parts = self.parts.get(name, [])
        if not parts:
            return {}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
