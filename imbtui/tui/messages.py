"""Messages the thread workers post back to the UI thread (a worker never touches a widget)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl
from textual.message import Message

from imbtui.tui.data.curves import RunCurves
from imbtui.tui.data.metrics import Series
from imbtui.tui.data.sqlscreen import QueryResult


@dataclass
class RunsLoaded(Message):
    """The runs table's rows, read at store generation `generation`."""

    frame: pl.DataFrame
    generation: int


@dataclass
class RunLoaded(Message):
    """Everything the run screen draws."""

    curves: RunCurves
    generation: int


@dataclass
class CompareLoaded(Message):
    """metric -> grp -> series for each compared run, and each run's row of `runs`."""

    groups: dict[str, dict[str, dict[str, Series]]]
    metas: dict[str, dict[str, Any]]
    generation: int
    span: int = 0  # the x-axis every run is drawn on: steps, or epochs + 1


@dataclass
class QueryDone(Message):
    result: QueryResult


@dataclass
class QueryFailed(Message):
    sql: str
    error: str


@dataclass
class RunDeleted(Message):
    run_id: str


@dataclass
class ExportDone(Message):
    path: str
    rows: int
