"""The compare screen's config table: the keys whose values differ between the runs (all keys on
request), one column per run."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from imbtui.tui.data.config_diff import ConfigRow


class ConfigDiff(Static):
    """Keys down, runs across; differing values in bold, the others dim (when all are shown)."""

    DEFAULT_CSS = """
    ConfigDiff { height: auto; margin-bottom: 1; }
    """

    show_all: reactive[bool] = reactive(False)

    def __init__(self, **kwargs: object) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]
        self.rows: list[ConfigRow] = []
        self.heads: list[str] = []

    def set_rows(self, rows: list[ConfigRow], heads: list[str]) -> None:
        self.rows, self.heads = rows, heads
        self._draw()

    def watch_show_all(self) -> None:
        self._draw()

    def _draw(self) -> None:
        rows = self.rows if self.show_all else [r for r in self.rows if r.differs]
        n_diff = sum(r.differs for r in self.rows)
        title = (f"config: all {len(self.rows)} keys, {n_diff} differ (a: only those)"
                 if self.show_all else f"config: the {n_diff} keys that differ (a: all "
                                       f"{len(self.rows)})")
        if not self.rows:
            self.update(Text("config: loading…", style="dim"))
            return
        table = Table(title=title, title_justify="left", title_style="bold", box=None,
                      padding=(0, 1), pad_edge=False, show_header=True, header_style="dim")
        table.add_column("key", style="dim", no_wrap=True, max_width=24)
        for head in self.heads:
            table.add_column(head, no_wrap=True, overflow="ellipsis", ratio=1)
        for row in rows:
            style = "bold" if row.differs else "dim"
            table.add_row(row.key, *(Text(v, style=style) for v in row.values))
        if not rows:
            table.add_row(Text("(the configs are the same)", style="dim"))
        self.update(table)
