"""Where things live in a run store, how a table folder is read, and the two atomic file
operations every writer uses.

STORE/runs/<run_id>/run.json               identity, config, status, heartbeat (replaced atomically)
STORE/runs/<run_id>/<table>/part-<n>.parquet  immutable segments (written as a hidden temp, renamed)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from imbtui.errors import UserError

DEFAULT_STORE = "imbtui-runs"
STORE_ENV = "IMBTUI_STORE"
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PART_RE = re.compile(r"^part-(\d{6})\.parquet$")
# A live run's spare space for its last run.json when the disk fills up (see writer.RESERVE_BYTES).
RESERVE_NAME = ".reserve"
# A compacted part `part-A-B.parquet` holds exactly the rows of parts A..B; readers prefer it to them.
RANGE_RE = re.compile(r"^part-(\d{6})-(\d{6})\.parquet$")


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


def atomic_write_bytes(path: Path, data: bytes | memoryview, fsync: bool = True) -> None:
    """Write to a hidden temporary file in the same folder, then rename over `path` (creating the
    folder on the first write into it).

    A reader sees either the old file or the new one, never a half-written one; a killed writer leaves
    at most a hidden temp file that no reader glob matches. `fsync=False` leaves the bytes to the page
    cache: a killed process loses nothing by it, a machine that loses power may.
    """
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
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


# ==== reading a table folder: the rules every reader and the writer share ====================

@dataclass
class TableListing:
    """What one `<run>/<table>/` folder holds, sorted out the way every reader must read it."""

    parts: list[Path] = field(default_factory=list)       # what to read: each row exactly once
    superseded: list[Path] = field(default_factory=list)  # plain parts already in a compacted part
    temps: list[Path] = field(default_factory=list)       # hidden files: writes in progress (or dead)
    unknown: list[Path] = field(default_factory=list)     # anything else: never read


def scan_table(table_dir: Path) -> TableListing:
    """Sort a table folder into parts to read, superseded parts, temp files and unknown files.

    One directory listing decides everything, so a reader never counts a row twice: a plain part is
    read only if no compacted range covers it (the writer renames the compacted part into place
    before it deletes the plain ones).
    """
    out = TableListing()
    try:
        names = sorted(os.listdir(table_dir))
    except (FileNotFoundError, NotADirectoryError):
        return out
    plain: list[tuple[int, Path]] = []
    ranges: list[tuple[int, int, Path]] = []
    for name in names:
        if m := PART_RE.match(name):
            plain.append((int(m[1]), table_dir / name))
        elif (m := RANGE_RE.match(name)) and int(m[1]) <= int(m[2]):
            ranges.append((int(m[1]), int(m[2]), table_dir / name))
        elif name.startswith("."):
            out.temps.append(table_dir / name)
        else:
            out.unknown.append(table_dir / name)
    # a range inside a wider one (a second compaction that died before cleaning up) is superseded too
    ranges.sort(key=lambda r: (r[0], -r[1]))
    kept: list[tuple[int, int, Path]] = []
    for a, b, path in ranges:
        if any(ka <= a and b <= kb for ka, kb, _ in kept):
            out.superseded.append(path)
        else:
            kept.append((a, b, path))
    for n, path in plain:
        covered = any(a <= n <= b for a, b, _ in kept)
        (out.superseded if covered else out.parts).append(path)
    out.parts = sorted(out.parts + [p for _, _, p in kept], key=part_first)
    return out


def part_first(path: Path) -> int:
    """The first part number a part file holds (-1 for any other name)."""
    m = PART_RE.match(path.name) or RANGE_RE.match(path.name)
    return int(m[1]) if m else -1


def part_last(path: Path) -> int:
    """The last part number a part file holds."""
    m = RANGE_RE.match(path.name)
    return int(m[2]) if m else part_first(path)
