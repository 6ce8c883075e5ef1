"""Verify a contact: the safety number beside its QR code, then confirm."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from client.model import Contact
from client.tui.format import qr_text, safety_rows


class VerifyDialog(ModalScreen[bool]):
    """Dismisses with True when the user confirms the numbers match."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(False)", "Cancel")]

    def __init__(self, contact: Contact, number: str, my_name: str) -> None:
        super().__init__(classes="dialog-screen")
        self.contact, self.number, self.my_name = contact, number, my_name

    def compose(self) -> ComposeResult:
        name = self.contact.name or self.contact.identity_key.hex()[:8]
        with Vertical(id="verify-dialog", classes="dialog"):
            yield Label(f"Verify {name}", classes="dialog-title")
            if self.contact.key_changed:
                yield Label(
                    f"{name.upper()}'S KEY CHANGED since you last saw it. Do not trust this "
                    "conversation until the numbers below match on both devices.",
                    classes="banner",
                )
            yield Label(
                f"Compare this number with the one on {name}'s screen, in person or on a call. "
                "It is the same on both devices; you can also scan each other's code.",
                classes="dialog-help",
            )
            with VerticalScroll(id="verify-scroll"), Horizontal(id="verify-columns"):
                with Vertical(classes="verify-col"):
                    yield Label(f"Safety number ({self.my_name} and {name})", classes="col-title")
                    yield Static("\n".join(safety_rows(self.number)), id="safety-number")
                    state = "verified" if self.contact.verified else "not verified yet"
                    yield Label(f"{name}: {state}", id="verify-state")
                with Vertical(classes="verify-col"):
                    yield Label("The same number as a code", classes="col-title")
                    yield Static(qr_text(self.number), id="safety-qr")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("They match: mark verified", variant="success", id="confirm")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")
