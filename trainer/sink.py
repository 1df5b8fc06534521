"""Where a training run's records go. The loop only ever calls these four methods.

`imbtui.store.RunWriter` is the real sink; `NullSink` lets the loop run with recording off (benchmarks)
without `if logging:` branches; `MemorySink` keeps everything in memory for tests.
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
        self.parts.setdefault(table, []).append({k: np.asarray(v) for k, v in columns.items()})

    def update(self, **fields: Any) -> None:
        self.meta.update(fields)

    def finish(self, status: str, message: str | None = None) -> None:
        self.status, self.message = status, message

    def table(self, name: str) -> dict[str, np.ndarray]:
        parts = self.parts.get(name, [])
        if not parts:
            return {}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
