"""Write an article: a title and a long Markdown body."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, TextArea


class ArticleEditor(ModalScreen[tuple[str, str] | None]):
    """Dismisses with (title, markdown), or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("ctrl+s", "send", "Send article"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="article-editor", classes="dialog"):
            yield Label("Write an article (Markdown)", classes="dialog-title")
            yield Input(placeholder="Title", id="article-title")
            yield TextArea(language="markdown", id="article-body")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Send (ctrl+s)", variant="primary", id="send")

    @on(Button.Pressed, "#send")
    def action_send(self) -> None:
        title = self.query_one("#article-title", Input).value.strip()
        body = self.query_one("#article-body", TextArea).text
        if not body.strip():
            self.notify("the article is empty", severity="warning")
            return
        if not title:
            first = body.strip().splitlines()[0]
            title = first.lstrip("#").strip()[:80]
        self.dismiss((title, body))

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)
