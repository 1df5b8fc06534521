"""The run store: a folder of run.json files and immutable Parquet parts, queried through DuckDB.

No Textual and no torch here: the trainer writes through `RunWriter`, everything else reads through
`Store`; whole runs are removed through `delete_run`.
"""

from imbtui.store.admin import delete_run
from imbtui.store.layout import StoreError, new_run_id, resolve_store
from imbtui.store.reader import QueryError, Store, check_read_only, run_read_only
from imbtui.store.schema import RUN_COLUMNS, TABLES
from imbtui.store.writer import TERMINAL, RunWriter

__all__ = [
    "QueryError",
    "RUN_COLUMNS",
    "RunWriter",
    "Store",
    "StoreError",
    "TABLES",
    "TERMINAL",
    "check_read_only",
    "delete_run",
    "new_run_id",
    "resolve_store",
    "run_read_only",
]
