"""`imbtui doctor`: find what a reader would skip in a run store, and move it aside on request.

Readers already skip damaged pieces with a warning; the doctor names every one of them, checks more
deeply than a reader can afford to (it decodes every page and the run id of every row), and with
`quarantine` moves each fixable piece to STORE/quarantine/<time>/ under its own relative path, with a
manifest saying why. Nothing is ever deleted: moving a file back restores it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import polars as pl

from imbtui.store.layout import (
    RESERVE_NAME,
    RUN_ID_RE,
    StoreError,
    atomic_write_json,
    iso,
    runs_dir,
    scan_table,
    utcnow,
)
from imbtui.store.reader import UNIQUE_KEYS, Store, deep_problem, stale_after_s
from imbtui.store.schema import TABLES

QUARANTINE = "quarantine"
STALE_TEMP_S = 15 * 60  # a hidden temp file untouched this long belongs to a writer that died
NEW_RUN_GRACE_S = 60.0  # a run folder younger than this may not have its run.json yet


@dataclass(frozen=True)
class Problem:
    kind: str     # damaged-part, foreign-part, bad-run-json, no-run-json, unknown-file, ...
    path: Path    # what `quarantine` would move
    detail: str
    fixable: bool = True     # quarantine can move it aside
    severity: str = "error"  # error: a reader skips or double counts something; info: harmless

    def relpath(self, root: Path) -> str:
        try:
            return str(self.path.relative_to(root))
        except ValueError:
            return str(self.path)


# ==== diagnosis ===================================================================================

def diagnose(root: Path) -> list[Problem]:
    """Every problem in the store at `root`, run by run, in path order."""
    if not root.is_dir():
        raise StoreError(f"no run store at {str(root)!r}")
    top = runs_dir(root)
    if not top.is_dir():
        return [] if not top.exists() else [Problem("unknown-file", top, "runs is not a folder")]
    runs = Store(root).runs_frame().select("run_id", "status", "step_done").rows()
    status = {rid: (st, step) for rid, st, step in runs}
    problems: list[Problem] = []
    for name in sorted(os.listdir(top)):
        path = top / name
        if name.startswith("."):
            continue
        if not (RUN_ID_RE.match(name) and path.is_dir()):
            problems.append(Problem("unknown-file", path, "not a run folder"))
            continue
        problems += _diagnose_run(root, name, *status.get(name, (None, None)))
    return problems


def _diagnose_run(root: Path, run_id: str, status: str | None,
                  step_done: int | None) -> list[Problem]:
    folder = runs_dir(root) / run_id
    meta_problem = _run_json_problem(root, run_id)
    if meta_problem is not None:
        return [meta_problem]  # the whole folder moves: its parts are invisible without run.json
    problems = []
    if status == "crashed":
        detail = (f"status running but no heartbeat for over {stale_after_s():.0f} s: its trainer "
                  f"died (progress recorded up to step {step_done})")
        problems.append(Problem("crashed-run", folder / "run.json", detail, fixable=False,
                                severity="info"))
    for name in sorted(os.listdir(folder)):
        path = folder / name
        if name in TABLES and path.is_dir():
            problems += _diagnose_table(run_id, name, path)
        elif name == RESERVE_NAME:
            if status != "running":  # a live run keeps it for its last run.json; a dead one not
                problems.append(Problem("stale-temp", path, "disk space reserve of a dead run",
                                        severity="info"))
        elif name.startswith("."):
            if _age_s(path) > STALE_TEMP_S:
                problems.append(Problem("stale-temp", path, "temporary file left by a writer "
                                        "that died", severity="info"))
        elif name != "run.json":
            problems.append(Problem("unknown-file", path, "not part of the store layout"))
    return problems


def _run_json_problem(root: Path, run_id: str) -> Problem | None:
    folder = runs_dir(root) / run_id
    path = folder / "run.json"
    if not path.exists():
        if _age_s(folder) < NEW_RUN_GRACE_S:
            return None
        return Problem("no-run-json", folder, "run folder without run.json: its data is invisible")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return Problem("bad-run-json", folder, f"run.json does not parse ({exc.__class__.__name__})")
    if not isinstance(meta, dict):
        return Problem("bad-run-json", folder, "run.json is not a JSON object")
    return None


def _diagnose_table(run_id: str, table: str, folder: Path) -> list[Problem]:
    listing = scan_table(folder)
    problems = [Problem("unknown-file", p, f"not a {table} part") for p in listing.unknown]
    problems += [Problem("superseded-part", p, "its rows are already in a compacted part")
                 for p in listing.superseded]
    problems += [Problem("stale-temp", p, "temporary file left by a writer that died",
                         severity="info") for p in listing.temps if _age_s(p) > STALE_TEMP_S]
    good = []
    for part in listing.parts:
        problem = deep_problem(part, table) or _foreign_rows(part, run_id)
        if problem is None:
            good.append(part)
        else:
            kind = "foreign-part" if problem.startswith("rows of") else "damaged-part"
            problems.append(Problem(kind, part, problem))
    problems += _duplicates(table, folder, good)
    return problems


def _foreign_rows(part: Path, run_id: str) -> str | None:
    # a part copied in from another run would count that run's rows as this one's
    ids = pl.read_parquet(part, columns=["run_id"])["run_id"].unique().to_list()
    others = [i for i in ids if i != run_id]
    return f"rows of run {others[0]!r}, not {run_id!r}" if others else None


def _duplicates(table: str, folder: Path, parts: list[Path]) -> list[Problem]:
    """Rows whose key occurs in more than one place (e.g. a part copied under a new number)."""
    if len(parts) < 2:
        return []
    keys = ", ".join(UNIQUE_KEYS.get(table, ()))
    if not keys:
        return []  # a table without a declared key cannot repeat one
    listing = ", ".join("'" + str(p).replace("'", "''") + "'" for p in parts)
    with duckdb.connect(":memory:") as con:
        extra = con.sql(f"SELECT count(*) - count(DISTINCT ({keys})) FROM read_parquet("
                        f"[{listing}], union_by_name=true)").fetchall()[0][0]
    if not extra:
        return []
    return [Problem("duplicate-rows", folder, f"{extra} {table} rows repeat a key ({keys}); "
                    f"the store double counts them", fixable=False)]


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


# ==== quarantine ==================================================================================

def quarantine(root: Path, problems: Iterable[Problem]) -> Path | None:
    """Move every fixable problem to STORE/quarantine/<time>/<its path>; returns that folder.

    A rename within the store: no byte is copied or deleted, and `manifest.json` there lists each
    move (from, to, why) so it can be undone by hand.
    """
    movable = [p for p in problems if p.fixable and p.path.exists()]
    if not movable:
        return None
    dest_root = _new_quarantine_dir(root)
    moves = []
    for p in movable:
        dest = dest_root / p.relpath(root)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p.path, dest)
        except OSError as exc:
            raise StoreError(f"cannot move {p.relpath(root)} to {dest}: {exc.strerror}") from None
        moves.append({"from": p.relpath(root), "to": str(dest.relative_to(root)),
                      "kind": p.kind, "why": p.detail})
    atomic_write_json(dest_root / "manifest.json", {"created_at": iso(utcnow()), "moves": moves})
    return dest_root


def _new_quarantine_dir(root: Path) -> Path:
    stamp = f"{utcnow():%Y%m%d-%H%M%S}"
    for i in range(1000):
        path = root / QUARANTINE / (stamp if i == 0 else f"{stamp}-{i}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise StoreError(f"cannot create {path}: {exc.strerror}") from None
    raise StoreError(f"cannot create a quarantine folder under {root / QUARANTINE}")


def as_records(root: Path, problems: Iterable[Problem]) -> list[dict[str, object]]:
    return [{**asdict(p), "path": p.relpath(root)} for p in problems]
