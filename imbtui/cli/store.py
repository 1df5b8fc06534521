"""`imbtui browse`, `doctor` and `export`: the app, the store's health, and sharing runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from imbtui.cli.common import (StoreOpt, _resolve_run, _store, _warn, app)


@app.command()
def browse(store: StoreOpt = None,
           run: Annotated[Optional[str], typer.Option(
               "--run", help="Open this run (id, unique prefix or name) straight away.",
               show_default=False)] = None) -> None:
    """Browse, compare and query runs in the terminal app (live runs refresh by themselves).

    Docs: docs/app.md
    """
    from imbtui.tui.app import make_app

    if store is not None:  # a store named on purpose must exist; by default the sample runs stand in
        _store(store)
    app_ = make_app(store, open_run=None)
    if run is not None:
        app_.open_run = _resolve_run(app_.session.store, run)
    app_.run()


# ==== doctor / export =============================================================================

@app.command()
def doctor(store: StoreOpt = None,
           quarantine: Annotated[bool, typer.Option(
               "--quarantine", help="Move every fixable problem to STORE/quarantine/<time>/ "
               "(nothing is deleted; manifest.json there says what moved and why).")] = False,
           as_json: Annotated[bool, typer.Option("--json", help="Print the problems as a JSON "
                                                 "array.")] = False) -> None:
    """Check a run store: damaged parts, bad run.json files, stray files, crashed runs.

    Exits 1 while problems remain, 0 when the store is clean.

    Docs: docs/reliability.md
    """
    import json

    from imbtui.store import resolve_store
    from imbtui.store.doctor import as_records, diagnose
    from imbtui.store.doctor import quarantine as move_aside

    root = resolve_store(store)
    problems = diagnose(root)
    moved = move_aside(root, problems) if quarantine else None
    remaining = diagnose(root) if moved else problems
    if as_json:
        print(json.dumps(as_records(root, remaining), indent=1))
    else:
        _print_problems(root, problems, moved, remaining)
    if any(p.severity == "error" for p in remaining):
        raise typer.Exit(1)


def _print_problems(root: Path, found, moved: Path | None, remaining) -> None:
    from rich.markup import escape

    from imbtui.console import out

    for p in found:
        colour = "yellow" if p.severity == "info" else "red"
        out.print(f"[{colour}]{p.kind}[/{colour}]  {escape(p.relpath(root))}  {escape(p.detail)}",
                  soft_wrap=True)
    if moved is not None:
        out.print(f"moved {len(found) - len(remaining)} item(s) to {escape(str(moved))} "
                  f"(see manifest.json there)", soft_wrap=True)
    errors = [p for p in remaining if p.severity == "error"]
    fixable = [p for p in remaining if p.fixable]
    hint = " can be moved aside with [bold]imbtui doctor --quarantine[/bold]"
    if not errors and not fixable:
        summary = f"store {escape(str(root))}: no problems"
    elif not errors:
        summary = f"store {escape(str(root))}: no damage; {len(fixable)} leftover file(s){hint}"
    elif fixable and moved is None:
        summary = f"{len(errors)} problem(s); {len(fixable)}{hint}"
    else:
        summary = f"{len(errors)} problem(s) left to fix by hand"
    out.print(summary, soft_wrap=True)


@app.command()
def export(
    duckdb_file: Annotated[Path, typer.Option(
        "--duckdb", help="The DuckDB database file to write (outside the store).",
        show_default=False)],
    runs_: Annotated[Optional[list[str]], typer.Argument(
        metavar="RUN", help="Runs to export (id, unique prefix or name); default: all.",
        show_default=False)] = None,
    where: Annotated[Optional[str], typer.Option(
        help="Keep only runs matching this SQL condition on the runs view, e.g. \"ratio >= 10 "
             "AND status = 'finished'\".", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace FILE if it exists.")] = False,
    store: StoreOpt = None,
) -> None:
    """Write selected runs into one standalone DuckDB database file, for sharing or other tools.

    Docs: docs/reliability.md
    """
    from imbtui.console import out
    from imbtui.store.export import export_duckdb

    st = _store(store)
    ids = [_resolve_run(st, r) for r in runs_] if runs_ else None
    counts = export_duckdb(st, duckdb_file, ids, where=where, force=force)
    _warn(st)
    rows = ", ".join(f"{t} {n:,}" for t, n in counts.items())
    out.print(f"wrote {duckdb_file}: {rows}", soft_wrap=True)
