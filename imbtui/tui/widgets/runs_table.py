"""The runs table: one row per run, updated in place so a live refresh keeps cursor and scroll."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
STATUS = {  # status -> (mark, word, style); words stay short for an 80-column table
    "running": ("●", "live", "bold green"),
    "finished": ("✓", "done", "green"),
    "crashed": ("✗", "crash", "bold red"),
    "failed": ("✗", "fail", "red"),
    "interrupted": ("■", "stop", "yellow"),
    "diverged": ("↯", "NaN", "magenta"),
}


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int
    right: bool = False


# The columns an 80-column terminal shows first; dataset, profile and started scroll into view.
COLUMNS: tuple[Column, ...] = (
    Column("status", "status", 8),
    Column("name", "name", 17),
    Column("ratio", "ratio", 5, right=True),
    Column("method", "method", 8),
    Column("progress", "progress", 8),
    Column("bal", "bal", 5, right=True),
    Column("maj", "maj", 5, right=True),
    Column("min", "min", 5, right=True),
    Column("dataset", "dataset", 8),
    Column("profile", "prof", 4),
    Column("started", "started", 11),
    Column("run_id", "run id", 22),
)
SORT_KEYS = ("started", "name", "status", "ratio", "method", "progress", "bal", "maj", "min",
             "dataset")


def method(row: dict[str, Any]) -> str:
    """The `runs` view's method label (ce, ldam-drw, ce+class-balanced; made by the store)."""
    return row.get("method") or "?"


def progress(row: dict[str, Any]) -> float | None:
    done, total = row.get("step_done"), row.get("total_steps")
    if total:
        return min(1.0, (done or 0) / total)
    return None


def _acc(v: Any) -> Text:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return Text("–", style="dim", justify="right")
    return Text(f"{v:.3f}"[1:] if 0 <= v < 1 else f"{v:.2f}", justify="right")


def _bar(frac: float | None) -> Text:
    if frac is None:
        return Text("–", style="dim")
    cells = frac * 3
    full = int(cells)
    part = " ▏▎▍▌▋▊▉"[int((cells - full) * 8)] if full < 3 else ""
    return Text(("█" * full + part).ljust(3) + f"{frac * 100:4.0f}%")


def clip_middle(text: str, width: int) -> str:
    """Shorten to `width` by an ellipsis in the middle, keeping more of the end: run names of a
    sweep share their start and differ at the end (…-r10-ce-s0, …-r100-ce-s0)."""
    if len(text) <= width:
        return text
    if width < 2:
        return text[:width]
    head = (width - 1) // 3
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def _started(ts: datetime | None) -> str:
    return "" if ts is None else ts.astimezone().strftime("%m-%d %H:%M")


def status_cell(status: str, tick: int = 0, marked: bool = False) -> Text:
    """`●✓ done`: the comparison mark, then the status; a spinner for a live run."""
    mark, word, style = STATUS.get(status, ("?", status or "?", "dim"))
    if status == "running":
        mark = SPINNER[tick % len(SPINNER)]  # the live marker moves while the run is alive
    text = Text("●" if marked else " ", style="bold yellow")
    text.append(f"{mark} {word}", style=style)
    return text


def row_cells(row: dict[str, Any], marked: bool, tick: int = 0) -> dict[str, Any]:
    ratio = row.get("ratio")
    return {
        "status": status_cell(row.get("status") or "", tick, marked),
        "name": row.get("name") or "",  # clipped to the column's width by RunsTable
        "ratio": Text("–" if ratio is None else f"{ratio:g}", justify="right"),
        "method": method(row),
        "progress": _bar(progress(row)),
        "bal": _acc(row.get("test_balanced")),
        "maj": _acc(row.get("test_majority")),
        "min": _acc(row.get("test_minority")),
        "dataset": row.get("dataset") or "",
        "profile": row.get("profile") or "",
        "started": _started(row.get("created_at")),
        "run_id": row.get("run_id") or "",
    }


def sort_value(row: dict[str, Any], key: str) -> Any:
    values = {"started": row.get("created_at"), "name": row.get("name"), "status":
              row.get("status"), "ratio": row.get("ratio"), "method": method(row),
              "progress": progress(row), "bal": row.get("test_balanced"),
              "maj": row.get("test_majority"), "min": row.get("test_minority"),
              "dataset": row.get("dataset")}
    v = values.get(key)
    # None sorts last whatever the direction; the run id breaks ties so the order is stable
    return (v is None, v if v is not None else 0, row.get("run_id") or "")


class RunsTable(DataTable):
    """A DataTable keyed by run id whose `sync` changes only what changed."""

    BINDINGS = [Binding("enter", "select_cursor", "open", id="runs.open",
                        tooltip="Open the run under the cursor")]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._keys: list[str] = []
        self._cells: dict[str, dict[str, Any]] = {}  # what `sync` was given (full run names)
        self.name_width = next(c.width for c in COLUMNS if c.key == "name")

    def on_mount(self) -> None:
        for col in COLUMNS:
            self.add_column(Text(col.label, justify="right") if col.right else col.label,
                            key=col.key, width=col.width)

    def on_resize(self) -> None:
        # The name column takes what the fixed columns leave, so bal / maj / min stay on screen
        # at 80 columns and long names show in full on a wide terminal.
        fixed = sum(c.width + 2 * self.cell_padding for c in COLUMNS[:8] if c.key != "name")
        width = max(10, min(32, self.size.width - fixed - 2 * self.cell_padding - 2))
        column = self.columns.get(ColumnKey("name"))
        if column is not None and column.width != width:
            column.width = width
            self.name_width = width
            for key, cells in self._cells.items():
                self.update_cell(key, "name", clip_middle(str(cells.get("name", "")), width))
            self._require_update_dimensions = True
            self._clear_caches()
            self.refresh()

    def _show(self, column: str, value: Any) -> Any:
        return clip_middle(str(value), self.name_width) if column == "name" else value

    @property
    def keys(self) -> list[str]:
        return list(self._keys)

    def current_key(self) -> str | None:
        if not self._keys or not (0 <= self.cursor_row < len(self._keys)):
            return None
        return self._keys[self.cursor_row]

    def sync(self, rows: list[tuple[str, dict[str, Any]]]) -> None:
        """Show `rows` (key, cells) in this order, keeping the cursor's run and the scroll."""
        keys = [k for k, _ in rows]
        if keys == self._keys:
            for key, cells in rows:
                old = self._cells.get(key, {})
                for col, value in cells.items():
                    if str(old.get(col)) != str(value) or _style(old.get(col)) != _style(value):
                        self.update_cell(key, col, self._show(col, value))
                self._cells[key] = cells
            return
        current, scroll_y = self.current_key(), self.scroll_y
        self.clear()
        for key, cells in rows:
            self.add_row(*(self._show(c.key, cells[c.key]) for c in COLUMNS), key=key)
        self._keys, self._cells = keys, dict(rows)
        if current in keys:
            self.move_cursor(row=keys.index(current), animate=False, scroll=False)
        self.scroll_to(y=scroll_y, animate=False, immediate=True)
        if current in keys:
            self.move_cursor(row=keys.index(current), animate=False)


def _style(v: Any) -> str:
    return str(v.style) if isinstance(v, Text) else ""
