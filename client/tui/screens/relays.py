"""Relay status (connected or failed, per relay) and add / remove / move."""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label

from client.tui.format import conversation_relays
from client.urls import check_relay_url
from protocol.errors import SamizdatError

STATE_LABEL = {
    "connected": "connected",
    "connecting": "connecting...",
    "down": "FAILED (failed over)",
    "idle": "idle",
}


class RelaysScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("a", "focus_url", "Add"),
        Binding("delete,x", "remove", "Remove"),
    ]

    def __init__(self, engine: Any) -> None:
        super().__init__()
        self.engine = engine

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="relays-body"):
            yield Label(
                "Your relays carry your inbox and your conversations. When one fails, "
                "conversations continue on the others; 'Move' re-homes everything from the "
                "selected relay to the URL below and tells every contact and group.",
                classes="dialog-help",
            )
            yield DataTable(id="relay-table", cursor_type="row")
            yield Input(placeholder="https://relay.example (for Add or Move)", id="relay-url")
            with Horizontal(classes="buttons"):
                yield Button("Add", id="add", variant="primary")
                yield Button("Remove selected", id="remove", variant="error")
                yield Button("Move selected to URL", id="move")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "relays"
        table = self.query_one(DataTable)
        table.add_columns("relay", "state", "yours", "conversations")
        self.refresh_table()
        self.set_interval(0.5, self.refresh_table)

    def refresh_table(self) -> None:
        table = self.query_one(DataTable)
        states = self.engine.relay_states()
        mine = set(self.engine.identity.relays)
        usage: dict[str, int] = {}
        for conv in self.engine.conversations():
            if conv.left:
                continue
            for url in conversation_relays(self.engine, conv.group_id):
                usage[url] = usage.get(url, 0) + 1
        rows = [
            (
                url,
                STATE_LABEL.get(state, state),
                "yes" if url in mine else "",
                str(usage.get(url, 0)),
            )
            for url, state in states.items()
        ]
        cursor = table.cursor_row
        table.clear()
        for row in rows:
            table.add_row(*row, key=row[0])
        if rows:
            table.move_cursor(row=min(cursor, len(rows) - 1))

    def _selected(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return str(table.get_row_at(table.cursor_row)[0])

    def _url(self) -> str | None:
        url = self.query_one("#relay-url", Input).value.strip()
        if not url:
            self.notify("type a relay URL (https://...) first", severity="warning")
            return None
        try:  # the check of `samizdat relay add`
            return check_relay_url(url)
        except ValueError as exc:
            self.notify(str(exc), severity="warning", markup=False)  # it quotes the input
            return None

    def action_focus_url(self) -> None:
        self.query_one("#relay-url", Input).focus()

    @on(Button.Pressed, "#add")
    @on(Input.Submitted)
    def _add(self) -> None:
        url = self._url()
        if url:
            self._change("add", url)

    @on(Button.Pressed, "#remove")
    def action_remove(self) -> None:
        selected = self._selected()
        if selected:
            self._change("remove", selected)

    @on(Button.Pressed, "#move")
    def _move(self) -> None:
        selected, url = self._selected(), self._url()
        if selected and url:
            self._change("move", selected, url)

    @work(group="relays", exclusive=True)
    async def _change(self, what: str, url: str, new: str = "") -> None:
        self.notify(f"{what} {url}{' -> ' + new if new else ''}...")
        try:
            if what == "add":
                await self.engine.add_relay(url)
            elif what == "remove":
                await self.engine.remove_relay(url)
            else:
                await self.engine.move_relay(url, new)
        except (SamizdatError, OSError) as exc:
            self.notify(f"could not {what} {url}: {exc}", severity="error")
            return
        self.notify(f"relays now: {', '.join(self.engine.identity.relays)}")
        self.query_one("#relay-url", Input).value = ""
        self.refresh_table()
