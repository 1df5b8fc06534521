"""The runs screen: every run with its status, progress and final majority / minority accuracy;
a filter with qualifiers (imbtui.tui.data.filter) and saved views of filter + sort."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Label

from imbtui.store import delete_run
from imbtui.tui.data.filter import FilterError, RunFilter, parse_filter
from imbtui.tui.data.session import quick_runs_table, runs_table
from imbtui.tui.data.views import SavedView, load_views, save_view
from imbtui.tui.messages import RunDeleted, RunsLoaded
from imbtui.tui.widgets.runs_table import SORT_KEYS, RunsTable, row_cells, sort_value

if TYPE_CHECKING:
    from imbtui.tui.app import ImbtuiApp

REFRESH_S = 1.0  # trainers flush every second: this keeps a live row <= ~2 s behind


class RunsScreen(Screen[None]):
    BINDINGS = [
        Binding("enter", "open", "open", show=False, id="runs.open_any"),
        Binding("space", "mark", "mark", id="runs.mark", tooltip="Mark / unmark for comparison"),
        Binding("c", "compare", "compare", id="runs.compare", tooltip="Compare the marked runs"),
        Binding("slash", "filter", "filter", id="runs.filter", tooltip="Filter by typing"),
        Binding("s", "sort", "sort", id="runs.sort", tooltip="Sort by the next column"),
        Binding("S", "reverse", "reverse", show=False, id="runs.reverse"),
        Binding("w", "save_view", "save view", show=False, id="runs.save_view",
                tooltip="Save the filter and sort as a named view"),
        Binding("o", "views", "views", id="runs.views", tooltip="Apply a saved view"),
        Binding("d", "delete", "delete", id="runs.delete", tooltip="Delete the run (asks first)"),
        Binding("r", "reload", "reload", show=False, id="runs.reload"),
        Binding("q", "app.quit", "quit", id="runs.quit"),
    ]

    def __init__(self) -> None:
        super().__init__(id="runs-screen")
        self.frame = pl.DataFrame()
        self.marked: set[str] = set()
        self.sort_key, self.sort_desc = "started", False
        self.filter: RunFilter = parse_filter("")  # the last filter that could be read
        self.generation = 0
        self.tick = 0

    @property
    def imb(self) -> ImbtuiApp:
        return self.app  # type: ignore[return-value]

    @property
    def table(self) -> RunsTable:
        return self.query_one(RunsTable)

    @property
    def filter_input(self) -> Input:
        return self.query_one("#runs-filter", Input)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="/ filter: words · ratio>=10 · method:ldam* · status:running · "
                                "seed:0 · /regex/", id="runs-filter", compact=True)
        yield Label("", id="runs-filter-error")
        yield RunsTable(id="runs-table")
        yield Label("loading runs…", id="runs-status")
        yield Footer()

    def on_mount(self) -> None:
        self.table.focus()
        self.load_runs()
        self.set_interval(REFRESH_S, self._tick)

    # -- loading -----------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="runs")
    def load_runs(self, force: bool = False) -> None:
        session = self.imb.session
        if self.generation == 0 and not self.frame.height:
            self.post_message(RunsLoaded(quick_runs_table(session.store), 0))
        generation = session.refresh(force=force)
        if generation == self.generation and not force:
            return
        cur = session.cursor()
        try:
            frame = runs_table(cur)
        finally:
            cur.close()
        self.post_message(RunsLoaded(frame, generation))

    def _tick(self) -> None:
        self.tick += 1
        if self.is_current:
            self.load_runs()
        if self.is_current and self.frame.height and (self.frame["status"] == "running").any():
            self.apply()  # advances the live marker of running rows (only where it is seen)

    @on(RunsLoaded)
    def on_runs_loaded(self, message: RunsLoaded) -> None:
        self.generation = message.generation
        self.frame = message.frame
        self.marked &= set(self.frame["run_id"].to_list()) if self.frame.height else set()
        self.apply()

    # -- showing -----------------------------------------------------------------------------------
    def visible_rows(self) -> list[dict[str, Any]]:
        rows = self.filter(list(self.frame.iter_rows(named=True))) if self.frame.height else []
        return sorted(rows, key=lambda r: sort_value(r, self.sort_key), reverse=self.sort_desc)

    def apply(self) -> None:
        rows = self.visible_rows()
        self.table.sync([(r["run_id"], row_cells(r, r["run_id"] in self.marked, self.tick))
                         for r in rows])
        self._status(len(rows))

    def _status(self, shown: int) -> None:
        total = self.frame.height
        live = int((self.frame["status"] == "running").sum()) if total else 0
        where = "sample runs (bundled)" if self.imb.session.sample else str(self.imb.session.root)
        parts = [f"{shown} of {total} runs" if shown != total else f"{total} runs"]
        if live:
            parts.append(f"[green]{live} live[/]")
        if self.marked:
            parts.append(f"[yellow]{len(self.marked)} marked[/]")
        arrow = "↓" if self.sort_desc else "↑"
        parts.append(f"sorted by {self.sort_key} {arrow}")
        parts.append(f"[dim]{where}[/]")
        if total == 0:
            parts = [f"no runs in {where} — start one with: imbtui train --ratio 100"]
        self.query_one("#runs-status", Label).update(" · ".join(parts))

    # -- filter ------------------------------------------------------------------------------------
    @on(Input.Changed, "#runs-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        # A filter that cannot be read (yet: `ratio>` while typing) says why in one line and
        # leaves the table as the last one that could be read showed it.
        error = self.query_one("#runs-filter-error", Label)
        try:
            self.filter = parse_filter(event.value)
        except FilterError as e:
            error.update(f"[red]{e}[/]")
            self.add_class("filter-error")
            return
        self.remove_class("filter-error")
        self.apply()

    @on(Input.Submitted, "#runs-filter")
    def _filter_done(self) -> None:
        self.table.focus()

    def on_key(self, event: Any) -> None:
        if self.filter_input.has_focus and event.key in ("down", "escape"):
            if event.key == "escape":
                self.filter_input.value = ""
            self.table.focus()
            event.stop()

    def action_filter(self) -> None:
        self.filter_input.focus()

    # -- saved views -------------------------------------------------------------------------------
    def action_save_view(self) -> None:
        from imbtui.tui.screens.dialogs import PromptScreen

        def done(name: str | None) -> None:
            if not name:
                return
            view = SavedView(self.filter.text, self.sort_key, self.sort_desc)
            try:
                path = save_view(name, view)
            except OSError as e:
                self.notify(f"could not save the view: {e}", severity="error")
                return
            self.notify(f"saved view {name!r} in {path}")

        shown = self.filter.text or "(no filter)"
        self.app.push_screen(PromptScreen(f"Save the view: {shown} · sorted by {self.sort_key}",
                                          placeholder="name of the view"), done)

    def action_views(self) -> None:
        from imbtui.tui.screens.dialogs import PickScreen

        views = load_views()
        options = [(name, f"{name}  [dim]{v.filter or '(no filter)'} · sorted by {v.sort} "
                          f"{'↓' if v.desc else '↑'}[/]") for name, v in views.items()]

        def done(name: str | None) -> None:
            if name in views:
                self.apply_view(views[name])

        self.app.push_screen(PickScreen("Saved views (w saves the current one)", options,
                                        empty="no saved views yet: press w to save one"), done)

    def apply_view(self, view: SavedView) -> None:
        self.sort_key = view.sort if view.sort in SORT_KEYS else "started"
        self.sort_desc = view.desc
        self.filter_input.value = view.filter  # Input.Changed reads it and applies
        self.apply()

    # -- sort --------------------------------------------------------------------------------------
    def action_sort(self) -> None:
        i = SORT_KEYS.index(self.sort_key) if self.sort_key in SORT_KEYS else -1
        self.sort_key = SORT_KEYS[(i + 1) % len(SORT_KEYS)]
        self.apply()

    def action_reverse(self) -> None:
        self.sort_desc = not self.sort_desc
        self.apply()

    @on(DataTable.HeaderSelected)
    def _header(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        key = "started" if key == "run_id" else key
        if key not in SORT_KEYS:
            return
        self.sort_desc = not self.sort_desc if key == self.sort_key else False
        self.sort_key = key
        self.apply()

    # -- actions on runs ---------------------------------------------------------------------------
    def action_open(self) -> None:
        key = self.table.current_key()
        if key:
            from imbtui.tui.screens.run import RunScreen

            self.app.push_screen(RunScreen(key))

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_mark(self) -> None:
        key = self.table.current_key()
        if key:
            self.marked ^= {key}
            self.apply()

    def action_compare(self) -> None:
        keys = [k for k in self.table.keys if k in self.marked]
        if len(keys) < 2:
            self.notify("mark two or more runs with Space, then press c", severity="warning")
            return
        from imbtui.tui.screens.compare import CompareScreen

        self.app.push_screen(CompareScreen(keys))

    def action_reload(self) -> None:
        self.load_runs(force=True)

    def action_delete(self) -> None:
        key = self.table.current_key()
        if not key:
            return
        if self.imb.session.sample:
            self.notify("the bundled sample runs are read-only", severity="warning")
            return
        row = self.frame.filter(pl.col("run_id") == key).row(0, named=True)
        detail = f"{row['name']} · {row['status']} · its folder is removed from the store"
        if row["status"] == "running":
            detail += "\n[red]it is still running: its trainer will fail on its next write[/]"
        from imbtui.tui.screens.dialogs import ConfirmScreen

        def done(yes: bool | None) -> None:
            if yes:
                self.delete(key)

        self.app.push_screen(ConfirmScreen(f"Delete run {key}?", detail), done)

    @work(thread=True, exclusive=True, exit_on_error=False, group="delete")
    def delete(self, run_id: str) -> None:
        delete_run(self.imb.session.root, run_id)
        self.post_message(RunDeleted(run_id))

    @on(RunDeleted)
    def _deleted(self, message: RunDeleted) -> None:
        self.marked.discard(message.run_id)
        self.notify(f"deleted run {message.run_id}")
        self.load_runs(force=True)
