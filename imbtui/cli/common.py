"""What every command shares: the Typer app, the --store option, output formats, run lookup."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from imbtui.errors import UserError

app = typer.Typer(
    name="imbtui",
    help="A terminal workbench for how class imbalance shapes what a network learns, step by step.\n\n"
         "Train on a long-tailed dataset ([bold]imbtui train --ratio 100[/bold], or a grid with "
         "[bold]imbtui sweep[/bold]), then look at what was recorded: [bold]imbtui browse[/bold] "
         "(the terminal app), [bold]imbtui runs[/bold], [bold]imbtui show RUN[/bold], "
         "[bold]imbtui report[/bold] (the study's three findings), [bold]imbtui query NAME[/bold] "
         "(named analyses) and [bold]imbtui sql \"SELECT ...\"[/bold].\n\n"
         "Docs: README.md, then docs/ (methods.md, analyses.md, app.md, store.md, "
         "reliability.md, scaling.md, benchmarks.md, development.md).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

def _store_path(text: str) -> Path:
    """--store's value: an empty one would quietly mean the working folder (Path('') is '.')."""
    if not str(text).strip():
        raise typer.BadParameter("empty path: give the store's folder, or leave --store out for "
                                 "$IMBTUI_STORE, else ./imbtui-runs")
    return Path(text)


StoreOpt = Annotated[Optional[Path], typer.Option(
    "--store", help="Run store folder. Default: $IMBTUI_STORE, else ./imbtui-runs.",
    show_default=False, parser=_store_path)]


class Fmt(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"








class Emit(str, Enum):
    local = "local"
    slurm = "slurm"




def _store(path: Path | None, must_exist: bool = True):
    """The store a reading command reads: one that does not exist is an error (exit 2), never an
    empty answer that looks like a store without runs."""
    from imbtui.store import Store, resolve_store

    root = resolve_store(path)
    if must_exist and not root.exists():
        raise UserError(f"no run store at {str(root)!r} (train a run first, or pass --store)")
    return Store(root)


def _warn(store) -> None:
    from rich.markup import escape

    from imbtui.console import err

    for w in store.warnings:  # one line each, unwrapped: the paths in them get copied
        err.print(f"[yellow]warning:[/yellow] {escape(w)}", soft_wrap=True)


def _resolve_run(st, ref: str) -> str:
    """A run id, a unique prefix of one, or a unique run name."""
    if not ref.strip():
        raise UserError("empty run id: give a run id, a unique prefix of one, or a run name")
    ids = st.run_ids()
    if ref in ids:
        return ref
    hits = [i for i in ids if i.startswith(ref)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        frame = st.runs_frame()
        named = frame.filter(frame["name"] == ref)["run_id"].to_list()
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise UserError(f"run name {ref!r} is ambiguous ({len(named)} runs); use a run id")
        raise UserError(f"unknown run {ref!r} in store {str(st.root)!r}")
    raise UserError(f"run id prefix {ref!r} matches {len(hits)} runs; give more characters")


def _sigterm_interrupts() -> None:
    """`kill PID`, and job schedulers (SLURM sends SIGTERM before SIGKILL), stop a run the way
    Ctrl-C does: it flushes what it has and is marked interrupted, instead of dying unrecorded."""
    import signal
    import threading

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)
