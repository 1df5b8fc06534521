"""`imbtui browse`: the Textual app. `make_app` builds it for the CLI, the tests and the benchmark."""

from __future__ import annotations

import gc
from pathlib import Path

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from imbtui.store import resolve_store
from imbtui.tui.data.session import StoreSession
from imbtui.tui.sample import sample_store
from imbtui.tui.screens.runs import RunsScreen


def _sql_screen() -> Screen[None]:
    # The SQL screen pulls in TextArea, tree-sitter and textual-fastdatatable: only when first used.
    from imbtui.tui.screens.sql import SqlScreen

    return SqlScreen()


def _settle_collector() -> None:
    gc.freeze()
    gen0, gen1, _ = gc.get_threshold()
    gc.set_threshold(gen0, gen1, 100)


class ImbtuiApp(App[None]):
    """Runs, run, compare and SQL screens over one StoreSession."""

    CSS_PATH = "app.tcss"
    TITLE = "imbtui"
    MODES = {"runs": RunsScreen, "sql": _sql_screen}
    DEFAULT_MODE = "runs"
    BINDINGS = [
        Binding("f1", "help", "help", id="app.help", tooltip="Keys and what the curves mean"),
        Binding("question_mark", "help", "help", show=False, id="app.help2"),
        Binding("f2", "switch_mode('runs')", "runs", id="app.runs", tooltip="The runs table"),
        Binding("f3", "switch_mode('sql')", "SQL", id="app.sql", tooltip="The SQL screen"),
    ]

    def __init__(self, session: StoreSession, notice: str | None = None,
                 open_run: str | None = None) -> None:
        super().__init__()
        self.session = session
        self.notice = notice
        self.open_run = open_run
        self.sub_title = "sample runs (bundled)" if session.sample else str(session.root)

    def on_mount(self) -> None:
        # What exists once the first frame is drawn (the libraries' modules, the app's widgets)
        # lives as long as the app: left out of the collector's full passes, which otherwise scan
        # it all and pause the app ~150 ms at a time (measured while opening the chart view); and
        # full passes come 10x less often than Python's default (cycles are rare in what a frame
        # leaves behind).
        self.call_after_refresh(_settle_collector)
        if self.notice:
            self.notify(self.notice, title="embedded sample", timeout=8)
        if self.open_run:
            from imbtui.tui.screens.run import RunScreen

            self.push_screen(RunScreen(self.open_run))

    def action_help(self) -> None:
        from imbtui.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # Every worker failure ends here as one line; the app keeps running.
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            error = event.worker.error
            text = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            self.notify(f"{event.worker.group}: {text}", severity="error", timeout=6)


def make_app(store: str | Path | None = None, open_run: str | None = None,
             use_sample: bool = True) -> ImbtuiApp:
    """The app over `store` (--store, $IMBTUI_STORE, ./imbtui-runs); the bundled sample runs when
    that store has none."""
    root = resolve_store(store)
    session = StoreSession(root)
    notice = None
    if use_sample and not session.store.run_ids():
        sample = sample_store()
        if sample is not None:
            session = StoreSession(sample, sample=True)
            notice = (f"No runs in {root} yet, so this is the bundled sample store (read-only). "
                      f"Train your own: imbtui train --ratio 100")
    return ImbtuiApp(session, notice=notice, open_run=open_run)
