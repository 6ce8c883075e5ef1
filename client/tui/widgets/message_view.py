"""The message view: a paged window over a conversation's history.

Theory of operation
-------------------
A conversation may hold 10,000+ messages; mounting one widget per message
would make opening it slow and every layout pass O(n).  The view keeps the
loaded history as plain records (``entries``, oldest first: only the newest
pages the user has asked for, never the whole log unless they scroll that far)
and mounts widgets only for a *window* ``entries[lo:hi]`` of at most
``WINDOW`` messages.  Scrolling to the top mounts the previous ``PAGE``
(fetching more history from the engine when the loaded records run out) and
unmounts as many from the bottom; scrolling to the bottom does the reverse.
The first visible message stays where it was on screen (scroll anchoring).
New messages are appended only while the window reaches the newest message
(otherwise a "new messages below" hint appears).  Cost of opening a
conversation: one ``history(limit=2 * PAGE)`` call and ``<= WINDOW`` widgets,
independent of the conversation's length.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.events import Click
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Static

from client.model import HistoryEntry
from client.tui.format import (
    article_preview,
    clock,
    delivery_text,
    duration,
    human_size,
    is_image,
    photo_image,
)

# The widget class differs by terminal (textual_image picks it at import), so only
# "something that builds a widget from a photo" is promised; None: no inline photos.
InlineImage: Callable[..., Widget] | None
try:  # photos inline where the terminal supports images; imported before the app starts
    from textual_image.widget import Image as InlineImage
except Exception:  # pragma: no cover - optional rendering back-end
    InlineImage = None


class MessageItem(Vertical, can_focus=True):
    """One message: a header line, its body, and a photo once fetched."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open"),
        Binding("up", "step(-1)", "Previous", show=False),
        Binding("down", "step(1)", "Next", show=False),
    ]

    class Opened(Message):
        """The user asked to open this message (article, file or photo)."""

        def __init__(self, entry: HistoryEntry) -> None:
            super().__init__()
            self.entry = entry

    def __init__(self, entry: HistoryEntry, sender: str, status: str, now_ms: int) -> None:
        classes = "message -outgoing" if entry.outgoing else "message"
        super().__init__(classes=classes)
        self.entry = entry
        self.sender = sender
        self.status = status
        self.now_ms = now_ms
        self.body = Static(self._render_text(), classes="message-body")

    def compose(self):  # type: ignore[no-untyped-def]
        yield self.body

    def _render_text(self) -> Text:
        e = self.entry
        text = Text()
        text.append(clock(e.sent_at_ms) + " ", style="dim")
        text.append(self.sender, style="bold green" if e.outgoing else "bold cyan")
        if e.outgoing:
            text.append(f"  [{self.status}]", style="dim italic")
        if e.expires_at_ms:
            left = max(0, (e.expires_at_ms - self.now_ms) // 1000)
            text.append(f"  disappears in {duration(left)}", style="yellow")
        text.append("\n")
        if e.kind == "article":
            text.append("ARTICLE ", style="bold reverse")
            text.append(f" {e.title}", style="bold")
            first = article_preview(e.text)
            if first:
                text.append(f"\n{first[:160]}", style="italic")
            text.append("\n[Enter: read]", style="dim")
        elif e.kind == "file":
            name, size = e.file.get("name", "?"), int(e.file.get("size", 0))
            label = "PHOTO" if is_image(e) else "FILE"
            text.append(f"{label} ", style="bold reverse")
            text.append(f" {name} ({human_size(size)})")
            text.append("\n[Enter: view or save]", style="dim")
        else:
            text.append(e.text)
        return text

    def update_state(self, status: str, now_ms: int) -> None:
        if status != self.status or self.entry.expires_at_ms:
            self.status, self.now_ms = status, now_ms
            self.body.update(self._render_text())

    def show_photo(self, data: bytes) -> None:
        """Show a received photo from memory (never from a file)."""
        if InlineImage is None or self.query(".photo"):
            return
        image = photo_image(data)
        if image is not None:
            self.mount(InlineImage(image, classes="photo"))

    def on_click(self, event: Click) -> None:
        if event.chain >= 2 or self.entry.kind in ("article", "file"):
            self.post_message(self.Opened(self.entry))

    def action_open(self) -> None:
        self.post_message(self.Opened(self.entry))

    def action_step(self, step: int) -> None:
        """Up/Down: focus the previous or next message (the view pages in
        more when the focus reaches the window's edge and scrolls there)."""
        parent = self.parent
        if not isinstance(parent, MessageView):
            return
        items = parent.items
        index = items.index(self) + step
        if 0 <= index < len(items):
            items[index].focus()
        elif index < 0:
            parent.scroll_home(animate=False)
        else:
            parent.scroll_end(animate=False)


class MessageView(VerticalScroll):
    """A paged window over one conversation's history (see the module doc)."""

    PAGE = 50
    WINDOW = 150

    class PhotoWanted(Message):
        """A photo message scrolled into the window; fetch it for inline display."""

        def __init__(self, item: MessageItem) -> None:
            super().__init__()
            self.item = item

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.engine: Any = None
        self.conv_id: bytes | None = None
        self.entries: list[HistoryEntry] = []
        self.lo = self.hi = 0
        self.exhausted = False
        self._ids: set[bytes] = set()
        self._busy = False
        self._wanted = ""
        self.now_ms = 0
        self.hint = Static("", id="newer-hint")

    # -- opening and paging ---------------------------------------------------------

    async def open(self, engine: Any, conv_id: bytes, now_ms: int) -> None:
        self.engine, self.conv_id, self.now_ms = engine, conv_id, now_ms
        limit = 2 * self.PAGE
        self.entries = engine.history(conv_id, limit=limit)
        self.exhausted = len(self.entries) < limit
        self._ids = {e.message_id for e in self.entries}
        self.hi = len(self.entries)
        self.lo = max(0, self.hi - self.WINDOW)
        await self.remove_children(self.items)
        if not self.hint.is_attached:
            await self.mount(self.hint)
        self.hint.display = False
        await self._mount(self._items(self.lo, self.hi), before=self.hint)
        self.scroll_end(animate=False, immediate=True)

    def _items(self, lo: int, hi: int) -> list[MessageItem]:
        items = []
        for entry in self.entries[lo:hi]:
            status = ""
            if entry.outgoing:
                status = delivery_text(self.engine.status(entry.message_id))
            items.append(
                MessageItem(entry, self.engine.display_name(entry.sender), status, self.now_ms)
            )
        return items

    async def _mount(self, items: list[MessageItem], *, before: int | Static) -> None:
        if not items:
            return
        await self.mount_all(items, before=before)
        for item in items:
            if is_image(item.entry):
                self.post_message(self.PhotoWanted(item))

    @property
    def paging(self) -> bool:
        """True while a page is being mounted (or one is queued)."""
        return self._busy or bool(self._wanted)

    @property
    def items(self) -> list[MessageItem]:
        return list(self.query_children(MessageItem))

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if self.conv_id is None:
            return
        if new <= 0 and old > new:
            self._want("older")
        elif new >= self.max_scroll_y and old < new:
            self._want("newer")

    def _want(self, direction: str) -> None:
        """Page in ``direction`` now, or as soon as the running page is done."""
        if self._busy:
            self._wanted = direction
            return
        self._wanted = ""
        if direction == "older" and (self.lo > 0 or not self.exhausted):
            self.run_worker(self.load_older(), group="paging", exclusive=True)
        elif direction == "newer" and self.hi < len(self.entries):
            self.run_worker(self.load_newer(), group="paging", exclusive=True)

    def _fetch_more(self) -> None:
        """Load one more page of older records from the engine."""
        assert self.conv_id is not None
        limit = len(self.entries) + 2 * self.PAGE
        full = self.engine.history(self.conv_id, limit=limit)
        first = self.entries[0].message_id if self.entries else None
        cut = next((i for i, e in enumerate(full) if e.message_id == first), len(full))
        older = [e for e in full[:cut] if e.message_id not in self._ids]
        self.exhausted = len(full) < limit
        self.entries[:0] = older
        self._ids.update(e.message_id for e in older)
        self.lo += len(older)
        self.hi += len(older)

    async def load_older(self) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            if self.lo == 0 and not self.exhausted:
                self._fetch_more()
            take = min(self.PAGE, self.lo)
            if not take:
                return
            anchor = self.items[0] if self.items else None
            offset = anchor.virtual_region.y - self.scroll_y if anchor else 0
            new_lo = self.lo - take
            await self._mount(self._items(new_lo, self.lo), before=0)
            self.lo = new_lo
            await self._trim(bottom=True)
            if anchor is not None:
                self.call_after_refresh(self._restore, anchor, offset)
        finally:
            self.call_after_refresh(self._unbusy)

    async def load_newer(self) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            take = min(self.PAGE, len(self.entries) - self.hi)
            if not take:
                return
            items = self.items
            anchor = items[-1] if items else None
            offset = anchor.virtual_region.y - self.scroll_y if anchor else 0
            await self._mount(self._items(self.hi, self.hi + take), before=self.hint)
            self.hi += take
            await self._trim(bottom=False)
            if anchor is not None:
                self.call_after_refresh(self._restore, anchor, offset)
            self._update_hint()
        finally:
            self.call_after_refresh(self._unbusy)

    def _unbusy(self) -> None:
        self._busy = False
        wanted, self._wanted = self._wanted, ""
        # a request made while busy still counts if the user is still at that edge
        if wanted == "older" and self.scroll_y <= 0:
            self._want("older")
        elif wanted == "newer" and self.scroll_y >= self.max_scroll_y:
            self._want("newer")

    def _restore(self, anchor: MessageItem, offset: float) -> None:
        if anchor.is_attached:
            self.scroll_to(y=anchor.virtual_region.y - offset, animate=False, immediate=True)

    async def _trim(self, *, bottom: bool) -> None:
        extra = (self.hi - self.lo) - self.WINDOW
        if extra <= 0:
            return
        items = self.items
        if bottom:
            doomed = items[-extra:]
            self.hi -= extra
        else:
            doomed = items[:extra]
            self.lo += extra
        await self.remove_children(doomed)

    def _update_hint(self) -> None:
        newer = len(self.entries) - self.hi
        self.hint.display = newer > 0
        self.hint.update(f"{newer} newer message(s) below: Ctrl+L or click here")

    # -- live updates -----------------------------------------------------------------

    async def append_new(self, now_ms: int) -> list[HistoryEntry]:
        """Fetch messages that arrived since the last look; returns them."""
        if self.conv_id is None:
            return []
        self.now_ms = now_ms
        limit = 20
        while True:
            fresh = self.engine.history(self.conv_id, limit=limit)
            if len(fresh) < limit or any(e.message_id in self._ids for e in fresh):
                break
            limit *= 4
        new = [e for e in fresh if e.message_id not in self._ids]
        if not new:
            return []
        at_bottom = self.hi == len(self.entries)
        follow = at_bottom and (self.near_end or any(e.outgoing for e in new))
        self.entries.extend(new)
        self._ids.update(e.message_id for e in new)
        if at_bottom:
            start = self.hi
            self.hi = len(self.entries)
            await self._mount(self._items(start, self.hi), before=self.hint)
            await self._trim(bottom=False)
            if follow:
                self.scroll_end(animate=False)
        self._update_hint()
        return new

    def refresh_states(self, now_ms: int) -> None:
        """Redraw delivery states and disappearing timers of the window."""
        self.now_ms = now_ms
        expired = []
        for item in self.items:
            e = item.entry
            if e.expires_at_ms and e.expires_at_ms <= now_ms:
                expired.append(item)
                continue
            status = delivery_text(self.engine.status(e.message_id)) if e.outgoing else ""
            item.update_state(status, now_ms)
        for item in expired:
            self._ids.discard(item.entry.message_id)
            self.entries.remove(item.entry)
            self.hi -= 1
            item.remove()

    async def on_click(self, event: Click) -> None:
        if event.widget is self.hint:
            await self.jump_to_latest()

    @property
    def near_end(self) -> bool:
        return self.scroll_y >= self.max_scroll_y - 3

    def photo_ready(self, item: MessageItem, data: bytes) -> None:
        """Show a fetched photo; keep following the conversation's end."""
        follow = self.near_end and self.hi == len(self.entries)
        item.show_photo(data)
        if follow:
            self.call_after_refresh(self.scroll_end, animate=False)

    async def jump_to_latest(self) -> None:
        if self.conv_id is not None and self.hi < len(self.entries):
            await self.open(self.engine, self.conv_id, self.now_ms)
        self.scroll_end(animate=False)
