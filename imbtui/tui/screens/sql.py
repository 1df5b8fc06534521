"""The SQL screen: an editor, named queries, a fast results table, export, and session history.

Queries run in a thread worker on their own cursor and end by posting QueryDone / QueryFailed; the
UI thread never waits on DuckDB, and Ctrl+G interrupts the cursor of the query in flight.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Label

from imbtui.errors import UserError
from imbtui.queries import NamedQuery, get_query, list_queries
from imbtui.tui.data.sqlscreen import MAX_RESULT_ROWS, QueryResult, export_frame, run_query
from imbtui.tui.messages import ExportDone, QueryDone, QueryFailed
from imbtui.tui.widgets.query_editor import QueryEditor
from imbtui.tui.widgets.results_table import ResultsTable

if TYPE_CHECKING:
    from imbtui.tui.app import ImbtuiApp

WELCOME = """\
-- Read-only SQL over the run store (DuckDB). Stored: runs, classes, steps, epochs, probes, samples,
-- geometry; defined: class_results, group_results, final_results, sample_events (docs/store.md).
-- Ctrl+R runs · Ctrl+O named queries · Ctrl+T history · Ctrl+S export · F1 help
-- Each run's final test accuracy of the majority and the minority (mean over their classes):
SELECT r.name, r.ratio, f.test_majority, f.test_minority, f.gap_minority
FROM final_results f
JOIN runs r USING (run_id)
ORDER BY r.ratio, r.name;
"""


@dataclass
class HistoryItem:
    sql: str
    at: float
    rows: int | None
    error: str | None


class SqlScreen(Screen[None]):
    BINDINGS = [
        Binding("ctrl+r,ctrl+enter,ctrl+j,f5", "run_query", "run", id="sql.run",
                tooltip="Run the query in the editor", priority=True),
        Binding("ctrl+g", "cancel_query", "cancel", id="sql.cancel",
                tooltip="Interrupt the running query"),
        Binding("ctrl+o", "named", "named", id="sql.named", tooltip="Pick a named query"),
        Binding("ctrl+t", "history", "history", id="sql.history", tooltip="This session's queries"),
        Binding("ctrl+s", "export", "export", id="sql.export", tooltip="Export to CSV or Parquet"),
    ]

    def __init__(self) -> None:
        super().__init__(id="sql-screen")
        self.history: list[HistoryItem] = []
        self.result: QueryResult | None = None
        self.running: duckdb.DuckDBPyConnection | None = None
        self.started = 0.0
        self.named: NamedQuery | None = None  # its parameter defaults bind the `$name`s

    @property
    def imb(self) -> ImbtuiApp:
        return self.app  # type: ignore[return-value]

    @property
    def editor(self) -> QueryEditor:
        return self.query_one(QueryEditor)

    @property
    def status(self) -> Label:
        return self.query_one("#sql-status", Label)

    def compose(self) -> ComposeResult:
        yield Header()
        yield QueryEditor(WELCOME, id="sql-editor")
        yield Label("[dim]Ctrl+R to run[/]", id="sql-status")
        yield Vertical(id="sql-results")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "SQL"
        self.editor.focus()
        self.editor.select_all()  # Ctrl+R runs the example; typing replaces it

    # -- running -----------------------------------------------------------------------------------
    def action_run_query(self) -> None:
        text = self.editor.selected_text.strip() or self.editor.text.strip()
        if not text:
            self.status.update("[yellow]nothing to run[/]")
            return
        self.started = time.monotonic()
        self.status.update("[b]running…[/] (Ctrl+G cancels)")
        params = self.named.bind() if self.named is not None else None
        self.execute(text, params)

    @work(thread=True, exclusive=True, exit_on_error=False, group="sql")
    def execute(self, text: str, params: dict[str, Any] | None = None) -> None:
        session = self.imb.session
        session.refresh()
        cur = session.cursor()
        self.running = cur
        try:
            result = run_query(cur, text, params)
        except UserError as exc:
            self.post_message(QueryFailed(text, str(exc)))
            return
        except duckdb.Error as exc:  # an interrupt, or anything the parser let through
            self.post_message(QueryFailed(text, str(exc).strip().splitlines()[0]))
            return
        finally:
            self.running = None
            cur.close()
        self.post_message(QueryDone(result))

    def action_cancel_query(self) -> None:
        cur = self.running
        if cur is None:
            self.notify("no query is running")
            return
        cur.interrupt()

    @on(QueryDone)
    def _done(self, message: QueryDone) -> None:
        r = message.result
        self.result = r
        self.history.append(HistoryItem(r.sql, time.time(), r.frame.height, None))
        box = self.query_one("#sql-results", Vertical)
        box.remove_children()
        box.mount(ResultsTable(r.frame, id="sql-table"))
        more = f" (first {MAX_RESULT_ROWS:,} kept)" if r.truncated else ""
        self.status.update(f"[green]{r.frame.height:,} rows[/]{more} × {r.frame.width} columns "
                           f"in {r.seconds * 1000:.0f} ms · Ctrl+S exports")

    @on(QueryFailed)
    def _failed(self, message: QueryFailed) -> None:
        self.history.append(HistoryItem(message.sql, time.time(), None, message.error))
        self.status.update(f"[b red]error:[/] {escape(message.error)}")

    # -- named queries and history ------------------------------------------------------------------
    def action_named(self) -> None:
        from imbtui.tui.screens.dialogs import PickScreen

        options = [(q.name, f"[b]{q.name}[/]  [dim]{escape(q.question)}[/]")
                   for q in list_queries()]

        def chosen(name: str | None) -> None:
            if name:
                self.named = get_query(name)
                self.editor.load_text(self.named.sql)
                takes = ", ".join(f"${p.name} = {p.default!r}" for p in self.named.params)
                self.status.update(f"loaded named query [b]{name}[/]"
                                   f"{escape(' with ' + takes) if takes else ''} · Ctrl+R runs it")
                self.editor.focus()

        self.app.push_screen(PickScreen("Named queries (queries/)", options,
                                        "no named queries found"), chosen)

    def action_history(self) -> None:
        from imbtui.tui.screens.dialogs import PickScreen

        options = []
        for i, h in reversed(list(enumerate(self.history))):
            when = time.strftime("%H:%M:%S", time.localtime(h.at))
            outcome = "[red]error[/]" if h.error else f"{h.rows:,} rows"
            first = " ".join(h.sql.split())[:70]
            options.append((str(i), f"{when} {outcome}  {escape(first)}"))

        def chosen(key: str | None) -> None:
            if key is not None:
                self.editor.load_text(self.history[int(key)].sql)
                self.editor.focus()

        self.app.push_screen(PickScreen("History (this session)", options,
                                        "no queries run yet"), chosen)

    # -- export ------------------------------------------------------------------------------------
    def action_export(self) -> None:
        if self.result is None:
            self.notify("run a query first", severity="warning")
            return
        from imbtui.tui.screens.dialogs import PromptScreen

        def chosen(path: str | None) -> None:
            if path:
                self.export(path)

        self.app.push_screen(PromptScreen("Export results to (.csv or .parquet)",
                                          "results.csv"), chosen)

    @work(thread=True, exclusive=True, exit_on_error=False, group="export")
    def export(self, path: str) -> None:
        assert self.result is not None
        frame = self.result.frame
        try:
            written = export_frame(frame, Path(path), self.imb.session.root)
        except (UserError, OSError) as exc:
            self.app.call_from_thread(self.notify, f"export failed: {exc}", severity="error")
            return
        self.post_message(ExportDone(str(written), frame.height))

    @on(ExportDone)
    def _exported(self, message: ExportDone) -> None:
        self.notify(f"wrote {message.rows:,} rows to {message.path}")
        self.status.update(f"exported {message.rows:,} rows to {escape(message.path)}")


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)
