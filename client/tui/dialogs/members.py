"""The member list of a conversation, with add and remove."""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList
from textual.widgets.option_list import Option


class MembersDialog(ModalScreen[tuple[str, str] | None]):
    """Dismisses with ("add", names) or ("remove", name) for the screen to run."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, engine: Any, conv_id: bytes, title: str) -> None:
        super().__init__(classes="dialog-screen")
        self.engine, self.conv_id, self.title_text = engine, conv_id, title

    def compose(self) -> ComposeResult:
        me = self.engine.identity.signature_pub
        members = self.engine.members(self.conv_id)
        with Vertical(id="members-dialog", classes="dialog"):
            yield Label(f"Members of {self.title_text} ({len(members)})", classes="dialog-title")
            options = []
            for key in members:
                name = self.engine.display_name(key)
                contact = self.engine.contact(key)
                tag = " (you)" if key == me else ""
                if contact is not None and contact.verified:
                    tag = " (verified)"
                if contact is not None and contact.key_changed:
                    tag = " (KEY CHANGED)"
                options.append(Option(f"{name}{tag}", id=key.hex()))
            yield OptionList(*options, id="member-list")
            yield Input(placeholder="contact name(s) to add", id="add-input")
            with Horizontal(classes="buttons"):
                yield Button("Add", id="add", variant="primary")
                yield Button("Remove selected", id="remove", variant="error")
                yield Button("Close", id="close")

    @on(Input.Submitted)
    @on(Button.Pressed, "#add")
    def _add(self) -> None:
        names = self.query_one("#add-input", Input).value.strip()
        if names:
            self.dismiss(("add", names))

    @on(Button.Pressed, "#remove")
    def _remove(self) -> None:
        option = self.query_one(OptionList).highlighted_option
        if option is None or option.id is None:
            self.notify("select a member first", severity="warning")
            return
        if bytes.fromhex(option.id) == self.engine.identity.signature_pub:
            self.notify("use /leave to leave the conversation", severity="warning")
            return
        self.dismiss(("remove", option.id))

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss(None)
