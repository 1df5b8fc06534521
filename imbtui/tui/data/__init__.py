"""What the terminal app reads from the store, as plain functions over a DuckDB cursor.

No Textual here: every function runs inside a thread worker (or a benchmark, or a test) and returns
plain Python / polars values that a message carries back to the UI thread. One module per job:

- `metrics`: the metric registry (`Metric`, `METRICS`) and the y-range / smoothing helpers;
- `session`: `StoreSession` (the shared connection and its refresh) and the runs table;
- `curves`: one run's group and class curves and final per-class results, with their SQL;
- `forgetting`: the per-run cache of forgetting-event counts the curves bucket;
- `sqlscreen`: the SQL screen's read-only statements, result limit and export.

Writes are the store's (`imbtui.store.delete_run`); nothing here changes the store. The names below
are re-exported so `from imbtui.tui.data import X` keeps working.
"""

from imbtui.tui.data.curves import (
    RunCurves,
    class_curves,
    class_finals,
    group_curves,
    load_run,
    run_meta,
)
from imbtui.tui.data.forgetting import forgetting_counts
from imbtui.tui.data.metrics import (
    CLASS_METRICS,
    GROUPS,
    METRIC,
    METRICS,
    Metric,
    Series,
    ema,
    forward_fill,
    last_value,
    y_range,
)
from imbtui.tui.data.session import StoreSession, quick_runs_table, runs_table
from imbtui.tui.data.sqlscreen import (
    MAX_RESULT_ROWS,
    QueryResult,
    check_query,
    export_frame,
    run_query,
)

__all__ = [
    "CLASS_METRICS",
    "GROUPS",
    "MAX_RESULT_ROWS",
    "METRIC",
    "METRICS",
    "Metric",
    "QueryResult",
    "RunCurves",
    "Series",
    "StoreSession",
    "check_query",
    "class_curves",
    "class_finals",
    "ema",
    "export_frame",
    "forgetting_counts",
    "forward_fill",
    "group_curves",
    "last_value",
    "load_run",
    "quick_runs_table",
    "run_meta",
    "run_query",
    "runs_table",
    "y_range",
]
