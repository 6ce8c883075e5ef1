"""The new-group dialog: a name, and whether the group is post-quantum."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Checkbox, Input, Label

from client.suites import DEFAULT_SUITE, PQ_DEFAULT_SUITE
from client.tui.dialogs.prompt import PromptDialog

PQ_LABEL = "Post-quantum encryption (ML-KEM-768 + X25519)"
PQ_HELP = (
    "Protects against recordings being decrypted by a future quantum computer; "
    "messages to add members are ~10x larger, and every member needs a recent client."
)


class NewGroupDialog(PromptDialog):
    """Returns the group's name (None when cancelled); :attr:`suite` is the
    cipher suite chosen (SPEC.md §4.1.1), read once the dialog is dismissed."""

    def __init__(self) -> None:
        super().__init__("New group", "A name for the group (its members see it).", "Name")
        self.suite = DEFAULT_SUITE

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog prompt-dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Label(self.help_text, classes="dialog-help")
            yield Input(placeholder=self.placeholder, id="prompt-input")
            yield Checkbox(PQ_LABEL, False, id="pq")
            yield Label(PQ_HELP, classes="dialog-help")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(self.ok, variant="primary", id="ok")

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self.suite = PQ_DEFAULT_SUITE if event.value else DEFAULT_SUITE
