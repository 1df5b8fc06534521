"""Where things live in a run store, and the two atomic file operations every writer uses.

STORE/runs/<run_id>/run.json               identity, config, status, heartbeat (replaced atomically)
STORE/runs/<run_id>/<table>/part-<n>.parquet  immutable segments (written as a hidden temp, renamed)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from imbtui.errors import UserError

DEFAULT_STORE = "imbtui-runs"
STORE_ENV = "IMBTUI_STORE"
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PART_RE = re.compile(r"^part-(\d{6})\.parquet$")


class StoreError(UserError):
    """A problem with the store the user pointed at: shown as one line, exit code 2."""


def resolve_store(path: str | os.PathLike[str] | None) -> Path:
    """--store PATH, else $IMBTUI_STORE, else ./imbtui-runs."""
    raw = path if path not in (None, "") else os.environ.get(STORE_ENV) or DEFAULT_STORE
    root = Path(raw).expanduser()
    if root.exists() and not root.is_dir():
        raise StoreError(f"store path {str(root)!r} is a file, not a folder")
    return root


def runs_dir(root: Path) -> Path:
    return root / "runs"


def run_dir(root: Path, run_id: str) -> Path:
    check_run_id(run_id)
    return runs_dir(root) / run_id


def check_run_id(run_id: str) -> str:
    # Run ids become folder names: refuse anything that could escape the store or confuse a glob.
    if not RUN_ID_RE.match(run_id):
        raise StoreError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-'")
    return run_id


def new_run_id(now: datetime | None = None) -> str:
    now = now or utcnow()
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def atomic_write_bytes(path: Path, data: bytes | memoryview) -> None:
    """Write to a hidden temporary file in the same folder, fsync, then rename over `path`.

    A reader sees either the old file or the new one, never a half-written one; a killed writer leaves
    at most a hidden temp file that no reader glob matches.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: Path, obj: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=False).encode())


def part_files(table_dir: Path) -> list[Path]:
    """The finished parts of one table of one run, in write order (temp files never match)."""
    try:
        names = os.listdir(table_dir)
    except FileNotFoundError:
        return []
    return [table_dir / n for n in sorted(names) if PART_RE.match(n)]
