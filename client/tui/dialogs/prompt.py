"""A one-line question (accept a link, name a group, a file path...), and a
yes/no confirmation."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label


class PromptDialog(ModalScreen[str | None]):
    """Returns the text entered, or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, help_text: str, placeholder: str = "", ok: str = "OK") -> None:
        super().__init__(classes="dialog-screen")
        self.title_text, self.help_text = title, help_text
        self.placeholder, self.ok = placeholder, ok

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog prompt-dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Label(self.help_text, classes="dialog-help")
            yield Input(placeholder=self.placeholder, id="prompt-input")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(self.ok, variant="primary", id="ok")

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        value = self.query_one(Input).value.strip()
        self.dismiss(value or None)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmDialog(ModalScreen[bool]):
    """Asks a yes/no question; returns True only for an explicit yes."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "no", "No")]

    def __init__(self, title: str, question: str, yes: str = "Yes") -> None:
        super().__init__(classes="dialog-screen")
        self.title_text, self.question, self.yes = title, question, yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog prompt-dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Label(self.question, classes="dialog-help")
            with Horizontal(classes="buttons"):
                yield Button("No", id="no")
                yield Button(self.yes, variant="warning", id="yes")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()  # the safe answer is the default

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def action_no(self) -> None:
        self.dismiss(False)
