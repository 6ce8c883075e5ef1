"""Our invite link and its QR code."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static, TextArea

from client.tui.format import qr_text


class InviteDialog(ModalScreen[None]):
    """Shows the link (selectable, to copy) and a QR code to scan."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss", "Close")]

    def __init__(self, link: str, uses: int = 1) -> None:
        super().__init__(classes="dialog-screen")
        self.link = link
        self.uses = uses

    def compose(self) -> ComposeResult:
        with Vertical(id="invite-dialog", classes="dialog"):
            yield Label("Your invite", classes="dialog-title")
            yield Label(
                "Give this link to someone you want to talk to (or let them scan the code). "
                "They paste it with /accept. It works "
                + ("for one person" if self.uses == 1 else f"for {self.uses} people")
                + " within 30 days. /invite list shows your invites, /invite revoke ID "
                "cancels one.",
                classes="dialog-help",
            )
            yield TextArea(self.link, read_only=True, soft_wrap=True, id="invite-link")
            with VerticalScroll(id="invite-qr-box"):
                yield Static(qr_text(self.link), id="invite-qr")
            with Horizontal(classes="buttons"):
                yield Button("Copy link", id="copy")
                yield Button("Close", variant="primary", id="close")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "copy":
            self.app.copy_to_clipboard(self.link)
            self.notify("invite link copied to the clipboard")
        else:
            self.dismiss(None)
