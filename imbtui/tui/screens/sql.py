"""The SQL screen: an editor with completion, a catalog of the store, results in tabs, named
analyses, history, export and cancel.

Queries run in a thread worker on their own cursor of the app's read-only session and end by
posting QueryDone / QueryFailed; the catalog loads in a worker too, once per store refresh. The UI
thread never waits on DuckDB, and Ctrl+G interrupts the cursor of the query in flight.
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
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, Tab, Tabs

from imbtui.errors import UserError
from imbtui.queries import NamedQuery, get_query, list_queries
from imbtui.tui.data.sqlcatalog import Catalog, load_catalog
from imbtui.tui.data.sqlhistory import HistoryItem, append_history, load_history
from imbtui.tui.data.sqlscreen import MAX_RESULT_ROWS, QueryResult, export_frame, run_query
from imbtui.tui.messages import ExportDone, QueryDone, QueryFailed
from imbtui.tui.widgets.catalog_pane import CatalogPane
from imbtui.tui.widgets.completion_list import CompletionList
from imbtui.tui.widgets.query_editor import QueryEditor
from imbtui.tui.widgets.results_table import ResultsTable

if TYPE_CHECKING:
    from imbtui.tui.app import ImbtuiApp

__all__ = ["HistoryItem", "SqlScreen", "CatalogLoaded", "HistoryLoaded", "MAX_TABS"]

PLACEHOLDER = """\
-- Read-only SQL over the run store (DuckDB): runs, classes, steps, epochs, samples, …
-- and the semantic layer's views: class_results, group_results, final_results, …
-- Ctrl+B catalog · Ctrl+O named analyses · Ctrl+R runs the statement at the cursor
-- e.g.  SELECT r.name, f.test_majority, f.test_minority
--       FROM final_results f JOIN runs r USING (run_id) ORDER BY r.ratio;"""

MAX_TABS = 8  # results kept as tabs; the oldest goes when a ninth arrives


@dataclass
class CatalogLoaded(Message):
    catalog: Catalog
    generation: int


@dataclass
class HistoryLoaded(Message):
    items: list[HistoryItem]


class SqlScreen(Screen[None]):
    DEFAULT_CSS = """
    #sql-main { height: 1fr; }
    #sql-work { width: 1fr; }
    #sql-tabs { height: 2; }
    """
    BINDINGS = [
        Binding("ctrl+r,ctrl+enter,ctrl+j,f5", "run_query", "run", id="sql.run",
                tooltip="Run the selection, or the statement at the cursor", priority=True),
        Binding("ctrl+g", "cancel_query", "cancel", id="sql.cancel",
                tooltip="Interrupt the running query"),
        Binding("ctrl+b", "toggle_catalog", "catalog", id="sql.catalog",
                tooltip="Show or hide the views, their columns and what each means"),
        Binding("ctrl+o", "named", "named", id="sql.named",
                tooltip="Insert a named analysis (queries/)"),
        Binding("ctrl+t", "history", "history", id="sql.history", tooltip="This session's queries"),
        Binding("ctrl+s", "export", "export", id="sql.export",
                tooltip="Export the result to CSV, Parquet or JSON"),
    ]

    def __init__(self) -> None:
        super().__init__(id="sql-screen")
        self.history: list[HistoryItem] = []  # this session's statements
        self.past: list[HistoryItem] = []  # earlier sessions' (from the state folder)
        self.results: dict[str, QueryResult] = {}  # tab id -> result, oldest first
        self.result: QueryResult | None = None  # the one shown
        self.catalog = Catalog()
        self.catalog_generation = -1
        self.running: duckdb.DuckDBPyConnection | None = None
        self.started = 0.0
        self.runs = 0
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

    @property
    def tabs(self) -> Tabs:
        return self.query_one("#sql-tabs", Tabs)

    @property
    def catalog_pane(self) -> CatalogPane:
        return self.query_one(CatalogPane)

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="sql-main"):
            with Vertical(id="sql-work"):
                yield QueryEditor(placeholder=PLACEHOLDER, id="sql-editor")
                yield Label("[dim]Ctrl+R runs the statement at the cursor[/]", id="sql-status")
                yield Tabs(id="sql-tabs")
                yield Vertical(id="sql-results")
            pane = CatalogPane(id="sql-catalog")
            pane.display = False
            yield pane
        yield CompletionList(id="sql-completions")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "SQL"
        self.editor.focus()
        self.load_catalog()
        self.load_past()

    # -- catalog and history from disk -------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="catalog")
    def load_catalog(self) -> None:
        session = self.imb.session
        generation = session.refresh()
        cur = session.cursor()
        try:
            catalog = load_catalog(cur)
        finally:
            cur.close()
        self.post_message(CatalogLoaded(catalog, generation))

    @on(CatalogLoaded)
    def _catalog_loaded(self, message: CatalogLoaded) -> None:
        self.catalog, self.catalog_generation = message.catalog, message.generation
        self.editor.catalog = message.catalog
        self.catalog_pane.show(message.catalog)

    @work(thread=True, exclusive=True, exit_on_error=False, group="sql-history")
    def load_past(self) -> None:
        self.post_message(HistoryLoaded(load_history(self.imb.session.root)))

    @on(HistoryLoaded)
    def _past_loaded(self, message: HistoryLoaded) -> None:
        self.past = message.items
        self._feed_editor_history()

    def _feed_editor_history(self) -> None:
        texts: list[str] = []
        for item in [*self.past, *self.history]:
            if not texts or texts[-1] != item.sql:
                texts.append(item.sql)
        self.editor.recall = texts

    def action_toggle_catalog(self) -> None:
        pane = self.catalog_pane
        pane.display = not pane.display
        if pane.display:
            pane.tree.focus()
        else:
            self.editor.focus()

    @on(CatalogPane.Insert)
    def _insert_name(self, message: CatalogPane.Insert) -> None:
        self.editor.insert(message.name)
        self.editor.focus()

    # -- running -----------------------------------------------------------------------------------
    def action_run_query(self) -> None:
        text = self.editor.statement_under_cursor()
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
        message: Message
        try:
            result = run_query(cur, text, params)
            message = QueryDone(result)
            item = HistoryItem(text, time.time(), result.frame.height, None)
        except (UserError, duckdb.Error) as exc:  # an interrupt, or anything the parser let through
            error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            message = QueryFailed(text, error)
            item = HistoryItem(text, time.time(), None, error)
        finally:
            self.running = None
            cur.close()
        append_history(session.root, item)
        self.post_message(message)
        if session.generation != self.catalog_generation:
            self.app.call_from_thread(self.load_catalog)

    def action_cancel_query(self) -> None:
        cur = self.running
        if cur is None:
            self.notify("no query is running")
            return
        cur.interrupt()

    @on(QueryDone)
    async def _done(self, message: QueryDone) -> None:
        r = message.result
        self.history.append(HistoryItem(r.sql, time.time(), r.frame.height, None))
        self._feed_editor_history()
        self.runs += 1
        tab_id = f"result-{self.runs}"
        self.results[tab_id] = r
        tabs = self.tabs
        while len(self.results) > MAX_TABS:
            oldest = next(iter(self.results))
            del self.results[oldest]
            await tabs.remove_tab(oldest)
        await tabs.add_tab(Tab(f"#{self.runs} {rows(r.frame.height)}", id=tab_id))
        tabs.active = tab_id
        await self.show_result(tab_id)
        more = f" (first {MAX_RESULT_ROWS:,} kept)" if r.truncated else ""
        self.status.update(f"[green]{rows(r.frame.height)}[/]{more} × {r.frame.width} columns "
                           f"in {r.seconds * 1000:.0f} ms · Ctrl+S exports")

    async def show_result(self, tab_id: str) -> None:
        """Draw the result of tab `tab_id` in the one results table."""
        r = self.results.get(tab_id)
        if r is None or r is self.result:
            return
        self.result = r
        box = self.query_one("#sql-results", Vertical)
        await box.remove_children()
        await box.mount(ResultsTable(r.frame, r.shown, id="sql-table"))

    @on(Tabs.TabActivated, "#sql-tabs")
    async def _tab(self, event: Tabs.TabActivated) -> None:
        r = self.results.get(event.tab.id or "") if event.tab is not None else None
        if r is not None and r is not self.result:  # a tab the user picked, not a new result
            await self.show_result(event.tab.id or "")
            first = " ".join(r.sql.split())
            self.status.update(f"{escape(event.tab.label_text)} · {escape(first[:100])}")

    @on(QueryFailed)
    def _failed(self, message: QueryFailed) -> None:
        self.history.append(HistoryItem(message.sql, time.time(), None, message.error))
        self._feed_editor_history()
        self.status.update(f"[b red]error:[/] {escape(message.error)}")

    # -- named analyses and history ----------------------------------------------------------------
    def action_named(self) -> None:
        from imbtui.tui.screens.dialogs import PickScreen

        options = [(q.name, f"[b]{q.name}[/]  [dim]{escape(q.question)}[/]")
                   for q in list_queries()]

        def chosen(name: str | None) -> None:
            if name:
                self.named = get_query(name)
                self.insert_statement(self.named.sql)
                takes = ", ".join(f"${p.name} = {p.default!r}" for p in self.named.params)
                self.status.update(f"inserted named analysis [b]{name}[/]"
                                   f"{escape(' with ' + takes) if takes else ''} · Ctrl+R runs it")

        self.app.push_screen(PickScreen("Named analyses (queries/)", options,
                                        "no named queries found"), chosen)

    def insert_statement(self, sql: str) -> None:
        """Put `sql` in an empty editor, or after what it holds as a statement of its own, with the
        cursor at its start (so the run key runs it)."""
        editor = self.editor
        body = sql.rstrip()
        if not editor.text.strip():
            editor.load_text(sql)
            editor.move_cursor((0, 0))
        else:
            text = editor.text.rstrip()
            sep = "\n\n" if text.endswith(";") else ";\n\n"
            editor.replace(sep + body + "\n", editor.document.get_location_from_index(len(text)),
                           editor.document.end, maintain_selection_offset=False)
            editor.move_cursor(editor.document.get_location_from_index(len(text) + len(sep)))
            editor.scroll_cursor_visible()
        editor.focus()

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

        self.app.push_screen(PickScreen("History (this session; ↑↓ in an empty editor: all)",
                                        options, "no queries run yet"), chosen)

    # -- export ------------------------------------------------------------------------------------
    def action_export(self) -> None:
        if self.result is None:
            self.notify("run a query first", severity="warning")
            return
        from imbtui.tui.screens.dialogs import PromptScreen

        def chosen(path: str | None) -> None:
            if path:
                self.export(path)

        self.app.push_screen(PromptScreen("Export the shown result to (.csv, .parquet or .json)",
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


def rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)
