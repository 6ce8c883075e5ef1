"""Later runs: the passphrase unlocks the store; a wrong one can be retried."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Center, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Label


class UnlockScreen(Screen[None]):
    class Submitted(Message):
        """The user entered a passphrase."""

        def __init__(self, passphrase: str) -> None:
            super().__init__()
            self.passphrase = passphrase

    def __init__(self, home: str) -> None:
        super().__init__()
        self.home = home

    def compose(self) -> ComposeResult:
        yield Header()
        with Center(), Vertical(id="unlock-form", classes="form"):
            yield Label("Unlock Samizdat", classes="dialog-title")
            yield Label(f"Passphrase for {self.home}", classes="dialog-help")
            yield Input(password=True, id="passphrase")
            yield Label("", id="unlock-error", classes="error")
        yield Footer()

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        if not event.value:
            return
        event.input.disabled = True
        self.query_one("#unlock-error", Label).update("Unlocking...")
        self.post_message(self.Submitted(event.value))

    def failed(self, text: str) -> None:
        self.query_one("#unlock-error", Label).update(text)
        field = self.query_one("#passphrase", Input)
        field.disabled = False
        field.value = ""
        field.focus()
