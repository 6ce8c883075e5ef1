"""Read an article: its Markdown rendered full screen."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Markdown


class ArticleScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "app.pop_screen", "Back")]

    def __init__(self, title: str, author: str, markdown: str) -> None:
        super().__init__()
        self.title_text, self.author, self.markdown = title, author, markdown

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="article-scroll"):
            yield Markdown(self.markdown, id="article")
        yield Footer()

    def on_mount(self) -> None:
        self.title = self.title_text
        self.sub_title = f"an article by {self.author}"
        self.query_one("#article-scroll").focus()
