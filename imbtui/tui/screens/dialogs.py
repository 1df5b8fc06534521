"""Small modal screens: yes/no confirmation, a path prompt, and a pick-one list."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList
from textual.widgets.option_list import Option


class ConfirmScreen(ModalScreen[bool]):
    """Asks a yes/no question; dismisses with True only on an explicit yes."""

    BINDINGS = [Binding("y", "answer(True)", "yes", id="confirm.yes"),
                Binding("n,escape", "answer(False)", "no", id="confirm.no")]

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__(classes="dialog")
        self.question, self.detail = question, detail

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.question, classes="dialog-title")
            if self.detail:
                yield Label(self.detail, classes="dialog-detail")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Delete (y)", variant="error", id="yes")
                yield Button("Keep (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class PromptScreen(ModalScreen[str | None]):
    """One line of input (a file path); Enter accepts, Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "cancel", id="prompt.cancel")]

    def __init__(self, title: str, value: str = "", placeholder: str = "") -> None:
        super().__init__(classes="dialog")
        self.title_text, self.value, self.placeholder = title, value, placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.title_text, classes="dialog-title")
            yield Input(self.value, placeholder=self.placeholder, id="prompt-input")
            yield Label("[dim]enter: ok · escape: cancel[/]")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class PickScreen(ModalScreen[str | None]):
    """Choose one of several (id, label) options."""

    BINDINGS = [Binding("escape", "cancel", "cancel", id="pick.cancel")]

    def __init__(self, title: str, options: list[tuple[str, str]], empty: str = "nothing here"
                 ) -> None:
        super().__init__(classes="dialog")
        self.title_text, self.options, self.empty = title, options, empty

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box pick-box"):
            yield Label(self.title_text, classes="dialog-title")
            if self.options:
                yield OptionList(*(Option(label, id=key) for key, label in self.options),
                                 id="pick-list")
            else:
                yield Label(f"[dim]{self.empty}[/]")
            yield Label("[dim]enter: choose · escape: cancel[/]")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
