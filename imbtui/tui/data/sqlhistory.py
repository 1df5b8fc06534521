"""The SQL screen's history of executed statements, kept per store in the user's state folder.

One JSON line per statement in `$IMBTUI_STATE_DIR` (else `$XDG_STATE_HOME/imbtui`, else
`~/.local/state/imbtui`) `/sql-history/<digest of the store's path>.jsonl`: never inside the store,
so keeping it cannot touch a run (and the bundled sample store may be read-only). The file is
trimmed to its last `KEEP` lines; a file that cannot be read or written costs only the history.
No Textual here.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

KEEP = 500


@dataclass
class HistoryItem:
    sql: str
    at: float
    rows: int | None
    error: str | None


def state_dir() -> Path:
    if os.environ.get("IMBTUI_STATE_DIR"):
        return Path(os.environ["IMBTUI_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "imbtui"


def history_path(store_root: Path) -> Path:
    digest = hashlib.sha1(str(Path(store_root).resolve()).encode()).hexdigest()[:16]
    return state_dir() / "sql-history" / f"{digest}.jsonl"


def load_history(store_root: Path) -> list[HistoryItem]:
    """Earlier statements on this store, oldest first; none when there is no readable file."""
    try:
        lines = history_path(store_root).read_text().splitlines()
    except OSError:
        return []
    items = []
    for line in lines[-KEEP:]:
        try:
            items.append(HistoryItem(**json.loads(line)))
        except (ValueError, TypeError):
            continue  # a line cut short by a crash: skip it
    return items


def append_history(store_root: Path, item: HistoryItem) -> None:
    """Add one statement (a worker calls this); trims the file now and then."""
    path = history_path(store_root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(asdict(item)) + "\n")
        if path.stat().st_size > 400 * KEEP:
            lines = path.read_text().splitlines()
            if len(lines) > KEEP:
                tmp = path.with_suffix(".tmp")
                tmp.write_text("\n".join(lines[-KEEP:]) + "\n")
                tmp.replace(path)
    except OSError:
        pass  # a read-only home: the history stays in this session only
