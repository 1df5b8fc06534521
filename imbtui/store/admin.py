"""Changes to whole runs in the store, for the app and the CLI: today, deleting one.

The trainer writes a run's parts through `RunWriter`; anything that removes or moves a run folder
lives here, so the store owns every write. No Textual and no torch here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from imbtui.store.layout import StoreError, check_run_id, runs_dir


def delete_run(root: Path, run_id: str) -> None:
    """Remove one run folder: renamed to a hidden name first, so readers never see half a run.

    Refuses an id that is not a plain run id (it could name a path outside the store) and a run
    that is not (or no longer) in the store."""
    src = runs_dir(root) / check_run_id(run_id)
    if not src.is_dir():
        raise StoreError(f"run {run_id!r} is not in the store any more")
    trash = src.with_name(f".deleting-{run_id}")
    os.replace(src, trash)
    shutil.rmtree(trash, ignore_errors=True)
