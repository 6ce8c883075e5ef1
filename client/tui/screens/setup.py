"""First run: create an identity (name, passphrase twice, relays)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Center, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label

from client.urls import check_relay_url


class SetupScreen(Screen[None]):
    """Posts :class:`SetupScreen.Completed`; the app creates the engine."""

    class Completed(Message):
        """The form is valid."""

        def __init__(self, name: str, passphrase: str, relays: list[str]) -> None:
            super().__init__()
            self.name, self.passphrase, self.relays = name, passphrase, relays

    def __init__(self, default_relays: str = "") -> None:
        super().__init__()
        self.default_relays = default_relays

    def compose(self) -> ComposeResult:
        yield Header()
        with Center(), Vertical(id="setup-form", classes="form"):
            yield Label("Welcome to Samizdat", classes="dialog-title")
            yield Label(
                "Your identity is a key pair made on this device: no phone number, no "
                "account. Your name is sent only inside encrypted messages.",
                classes="dialog-help",
            )
            yield Label("Your name")
            yield Input(placeholder="e.g. Alice", id="name")
            yield Label("Passphrase (encrypts everything stored on this device)")
            yield Input(password=True, id="pass1")
            yield Label("Passphrase again")
            yield Input(password=True, id="pass2")
            yield Label("Relays (URLs, separated by spaces; two or three is best)")
            yield Input(self.default_relays, placeholder="https://relay.example", id="relays")
            # plain text: errors quote what was typed ("[" is not markup here)
            yield Label("", id="setup-error", classes="error", markup=False)
            yield Button("Create my identity", variant="primary", id="create")
        yield Footer()

    def error(self, text: str) -> None:
        self.query_one("#setup-error", Label).update(text)

    @on(Input.Submitted)
    def _next(self, event: Input.Submitted) -> None:
        order = ["name", "pass1", "pass2", "relays"]
        index = order.index(event.input.id or "name")
        if index < len(order) - 1:
            self.query_one(f"#{order[index + 1]}", Input).focus()
        else:
            self._create()

    @on(Button.Pressed, "#create")
    def _create(self) -> None:
        name = self.query_one("#name", Input).value.strip()
        p1 = self.query_one("#pass1", Input).value
        p2 = self.query_one("#pass2", Input).value
        relays = self.query_one("#relays", Input).value.replace(",", " ").split()
        if not name:
            self.error("Please choose a name.")
        elif not p1:
            self.error("An empty passphrase is not allowed.")
        elif p1 != p2:
            self.error("The passphrases do not match.")
            self.query_one("#pass2", Input).value = ""
            self.query_one("#pass2", Input).focus()
        elif not relays:
            self.error("At least one relay URL is needed.")
        else:
            try:  # the check of `samizdat init --relay`: a scheme and a host at least
                relays = [check_relay_url(r) for r in relays]
            except ValueError as exc:
                self.error(str(exc))
                self.query_one("#relays", Input).focus()
                return
            self.error("Creating your keys...")
            self.query_one("#create", Button).disabled = True
            self.post_message(self.Completed(name, p1, relays))

    def failed(self, text: str) -> None:
        self.error(text)
        self.query_one("#create", Button).disabled = False
