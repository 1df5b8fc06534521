"""The SQL editor: a multi-line TextArea with SQL highlighting (tree-sitter), line numbers, a
placeholder, completion as you type, and Up / Down through the history in an empty editor.

Completion reads `catalog` (set by the screen once per store refresh) in pure Python, under a
millisecond a keystroke, so it runs on the UI thread; Tab or Enter accepts the highlighted name,
Up / Down move, Escape closes the list.
"""

from __future__ import annotations

from textual import events
from textual.widgets import TextArea

from imbtui.tui.data.sqlcatalog import Catalog, Completion, complete, word_at
from imbtui.tui.data.sqlscreen import statement_at
from imbtui.tui.widgets.completion_list import CompletionList


class QueryEditor(TextArea):
    """Tab moves focus on (to the results) unless a completion is shown, so the keyboard can reach
    everything."""

    DEFAULT_CSS = """
    QueryEditor { height: 8; }
    """

    def __init__(self, text: str = "", placeholder: str = "", **kwargs: object) -> None:
        language = "sql" if "sql" in self.available_languages_static() else None
        super().__init__(text, language=language, show_line_numbers=True, tab_behavior="focus",
                         soft_wrap=False, placeholder=placeholder, **kwargs)  # type: ignore[arg-type]
        self.catalog = Catalog()
        self.recall: list[str] = []  # earlier statements, oldest first
        self._recalled: int | None = None  # index into history while Up / Down walk it
        self._typed = False

    @staticmethod
    def available_languages_static() -> set[str]:
        # Without the tree-sitter SQL grammar the editor still works, uncoloured.
        try:
            import tree_sitter_sql  # noqa: F401
        except ImportError:
            return set()
        return {"sql"}

    @property
    def dropdown(self) -> CompletionList:
        return self.screen.query_one(CompletionList)

    @property
    def offset_of_cursor(self) -> int:
        return self.document.get_index_from_location(self.cursor_location)

    def statement_under_cursor(self) -> str:
        """The selection, else the statement the cursor is in (or just after)."""
        return self.selected_text.strip() or statement_at(self.text, self.offset_of_cursor)

    # -- keys ------------------------------------------------------------------------------------
    async def _on_key(self, event: events.Key) -> None:
        if self._completion_key(event.key) or self._history_key(event.key):
            event.stop()
            event.prevent_default()
            return
        self._typed = event.is_printable or event.key == "backspace"
        await super()._on_key(event)

    def _completion_key(self, key: str) -> bool:
        box = self.dropdown
        if not box.shown:
            return False
        if key in ("tab", "enter"):
            chosen = box.chosen
            if chosen is not None:
                self.accept(chosen)
            return True
        if key in ("up", "down"):
            box.move(-1 if key == "up" else 1)
            return True
        if key == "escape":
            box.hide()
            return True
        return False

    def _history_key(self, key: str) -> bool:
        """Up / Down in an empty editor, or on a statement they recalled unchanged, walk the
        history, newest first."""
        if key not in ("up", "down") or not self.recall:
            return False
        walking = self._recalled is not None and self.text == self.recall[self._recalled]
        if self.text and not walking:
            return False
        if self._recalled is None or not walking:
            index = len(self.recall) - 1 if key == "up" else None
        else:
            index = self._recalled + (-1 if key == "up" else 1)
            index = max(index, 0)
            if index >= len(self.recall):
                index = None
        self._recalled = index
        self.load_text("" if index is None else self.recall[index])
        self.move_cursor(self.document.end)
        return True

    # -- completion --------------------------------------------------------------------------------
    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        typed, self._typed = self._typed, False
        if not typed:
            self.dropdown.hide()
            return
        self.suggest()

    def suggest(self) -> list[Completion]:
        """Show the completions of the word before the cursor (none: hide the list)."""
        offset = self.offset_of_cursor
        start, found = complete(self.catalog, self.text, offset,
                                statement_at(self.text, offset))
        if not found:
            self.dropdown.hide()
            return found
        x, y = self.cursor_screen_offset
        self.dropdown.show(found, max(0, x - (offset - start)), y + 1)
        return found

    def accept(self, completion: Completion) -> None:
        """Put `completion` in place of the word before the cursor."""
        offset = self.offset_of_cursor
        start, _, _ = word_at(self.text, offset)
        begin = self.document.get_location_from_index(start)
        self.replace(completion.text, begin, self.cursor_location, maintain_selection_offset=False)
        self.dropdown.hide()

    def on_blur(self) -> None:
        self.dropdown.hide()

