"""Keys and /commands."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Markdown

from client.tui.commands import SLASH_COMMANDS

KEYS = """\
| key | does |
|---|---|
| Enter | send the message |
| Ctrl+J (Shift+Enter where the terminal reports it) | new line in the message |
| Up / Down on the first / last line | walk your earlier messages |
| Tab / Shift+Tab | move between the sidebar, the messages and the composer |
| Enter on a message | read an article, view or save a file or photo |
| Ctrl+L | jump to the newest message |
| Ctrl+P | command palette |
| Ctrl+N | new group |
| Ctrl+O | invite a contact |
| Ctrl+R | relays |
| Ctrl+T | light / dark theme |
| F1 | this help |
| Ctrl+Q | quit |
"""


def help_markdown() -> str:
    rows = "\n".join(f"| `{c.usage}` | {c.help} |" for c in SLASH_COMMANDS)
    return (
        "# Samizdat\n\nEnd-to-end-encrypted group chat over relays that cannot read it.\n\n"
        "## Keys\n\n" + KEYS + "\n## Commands (type them in the composer)\n\n"
        "| command | does |\n|---|---|\n" + rows + "\n\n"
        "## What the marks mean\n\n"
        "- `2/2` beside a conversation: how many of its relays are connected.\n"
        "- `[sent]`, `[on relay (n)]`, `[delivered n of m]`: where your message is.\n"
        "- `!`: a warning in that conversation (missing messages or a changed key).\n"
    )


class HelpScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,f1", "app.pop_screen", "Back")]

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="help-scroll"):
            yield Markdown(help_markdown())
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "help"
        self.query_one("#help-scroll").focus()
