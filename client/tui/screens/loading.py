"""A progress log while something slow prepares (the demo's setup)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Center, Vertical
from textual.screen import Screen
from textual.widgets import Header, Label, LoadingIndicator, Static


class LoadingScreen(Screen[None]):
    def __init__(self, title: str) -> None:
        super().__init__()
        self.title_text = title
        self.lines: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with Center(), Vertical(id="loading-box", classes="form"):
            yield Label(self.title_text, classes="dialog-title")
            yield LoadingIndicator()
            yield Static("", id="loading-log")

    def step(self, text: str) -> None:
        self.lines.append(text)
        if self.is_mounted:
            self.query_one("#loading-log", Static).update("\n".join(self.lines[-12:]))
