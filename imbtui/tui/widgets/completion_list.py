"""The SQL editor's completion dropdown: an option list drawn over the screen below the cursor."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from imbtui.tui.data.sqlcatalog import Completion

KIND_STYLE = {"column": "cyan", "table": "green", "view": "green", "macro": "green",
              "function": "magenta", "keyword": "yellow"}


class CompletionList(OptionList, can_focus=False):
    """Never focused: the editor keeps the keyboard and moves the highlight itself."""

    DEFAULT_CSS = """
    CompletionList {
        position: absolute; overlay: screen; constrain: inside inside;
        display: none; width: auto; min-width: 24; max-width: 64; height: auto; max-height: 8;
        border: none; padding: 0; background: $panel;
    }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.completions: list[Completion] = []

    def show(self, completions: list[Completion], x: int, y: int) -> None:
        """List `completions` with their top-left cell at screen cell (x, y)."""
        self.completions = completions
        self.clear_options()
        self.add_options([Option(self._label(c)) for c in completions])
        self.highlighted = 0
        self.styles.offset = (x, y)
        self.display = True

    def hide(self) -> None:
        self.display = False
        self.completions = []

    @property
    def shown(self) -> bool:
        return bool(self.display and self.completions)

    @property
    def chosen(self) -> Completion | None:
        if not self.shown or self.highlighted is None:
            return None
        return self.completions[self.highlighted]

    def move(self, step: int) -> None:
        n = len(self.completions)
        if n:
            self.highlighted = ((self.highlighted or 0) + step) % n

    @staticmethod
    def _label(c: Completion) -> Text:
        label = Text(c.text, style="bold")
        label.append(f"  {c.kind}", style=KIND_STYLE.get(c.kind, "dim"))
        if c.detail:
            detail = c.detail if len(c.detail) <= 36 else c.detail[:35] + "…"
            label.append(f" {detail}", style="dim")
        return label
