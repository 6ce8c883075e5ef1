"""Helpers for the terminal app's tests: screen text, waiting on the app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from textual.app import App
from textual.pilot import Pilot

from client.suites import DEFAULT_SUITE


def screen_text(app: App[object]) -> str:
    """The whole screen (with dialogs) as plain text, one line per row."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(seg.text for seg in strip).rstrip() for strip in strips)


async def wait_for(
    pilot: Pilot[object], check: Callable[[], object], timeout: float = 20.0, what: str = ""
) -> None:
    """Let the app run until ``check()`` is true (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await pilot.pause(0.05)
        await asyncio.sleep(0)
    raise AssertionError(
        f"timed out waiting for {what or check}\n--- screen ---\n{screen_text(pilot.app)}"
    )


# -- a deterministic engine for snapshot tests --------------------------------------

T0 = 1_700_000_000_000  # fixed timestamps: 2023-11-14 22:13 UTC


class FakeEngine:
    """The engine's read side with fixed data: names, keys and times never
    change, so snapshots are byte-for-byte stable.  Write methods record calls."""

    def __init__(self) -> None:
        from client.model import (
            Contact,
            Conversation,
            HistoryEntry,
            Identity,
            MessageStatus,
            SenderTrack,
        )

        self.me = bytes(32)
        self.bob, self.carol = bytes([1]) * 32, bytes([2]) * 32
        self.identity = Identity(b"", self.me, "Alice", ["https://relay-a.example"], [], T0)
        self.listeners: list[object] = []
        self.notices: list[object] = []
        self.closed = False
        self.calls: list[tuple[object, ...]] = []
        self.invite_suites: list[int] = []  # the suite of each invite made
        self.direct = bytes([10]) * 16
        self.group = bytes([11]) * 16
        self._contacts = {
            self.bob: Contact(self.bob, "Bob", conversation=self.direct, verified=True),
            self.carol: Contact(self.carol, "Carol", key_changed=True),
        }
        self._convs = {
            self.direct: Conversation(self.direct, "direct", "Bob", T0, unread=2),
            self.group: Conversation(self.group, "group", "Readers", T0 + 1, disappearing_ms=0),
        }
        self._convs[self.group].set_track(self.carol, SenderTrack(5, [3, 4]))
        self._members = {
            self.direct: [self.me, self.bob],
            self.group: [self.me, self.bob, self.carol],
        }
        self._relays = {
            self.direct: ["https://relay-a.example", "https://relay-b.example"],
            self.group: ["https://relay-a.example", "https://relay-b.example"],
        }
        self.states = {"https://relay-a.example": "connected", "https://relay-b.example": "down"}
        mk = HistoryEntry
        self._history = {
            self.direct: [mk(b"d1", self.bob, "text", T0, T0, text="Hi Alice!")],
            self.group: [
                mk(b"g1", self.bob, "text", T0, T0, text="Welcome to the reading group."),
                mk(
                    b"g2",
                    self.me,
                    "text",
                    T0 + 60_000,
                    T0,
                    text="Thanks!\nGlad to be here.",
                    outgoing=True,
                ),
                mk(
                    b"g3",
                    self.carol,
                    "article",
                    T0 + 120_000,
                    T0,
                    title="On censorship",
                    text="# On censorship\n\nWords that must not be silenced.",
                ),
                mk(
                    b"g4",
                    self.bob,
                    "file",
                    T0 + 180_000,
                    T0,
                    file={
                        "name": "sunset.png",
                        "media_type": "image/png",
                        "size": 968,
                        "descriptor": "",
                    },
                ),
                mk(
                    b"g5",
                    self.me,
                    "text",
                    T0 + 240_000,
                    T0,
                    text="Queued while offline",
                    outgoing=True,
                ),
            ],
        }
        self._status = {
            b"g2": MessageStatus(b"g2", self.group, ["https://relay-a.example"], [self.bob], [], 2),
            b"g5": MessageStatus(b"g5", self.group, [], [], [], 2),
        }

    # read side
    def conversations(self):  # type: ignore[no-untyped-def]
        return sorted(self._convs.values(), key=lambda c: c.created_ms)

    def conversation(self, conv_id: bytes):  # type: ignore[no-untyped-def]
        return self._convs.get(conv_id)

    def contacts(self):  # type: ignore[no-untyped-def]
        return sorted(self._contacts.values(), key=lambda c: c.name)

    def contact(self, key: bytes):  # type: ignore[no-untyped-def]
        return self._contacts.get(key)

    def find_contact(self, query: str):  # type: ignore[no-untyped-def]
        from client.core import EngineError

        for c in self._contacts.values():
            if c.name.lower() == query.lower():
                return c
        raise EngineError(f"no contact {query!r}")

    def display_name(self, key: bytes) -> str:
        if key == self.me:
            return "Alice"
        c = self._contacts.get(key)
        return c.name if c else key.hex()[:8]

    def members(self, conv_id: bytes) -> list[bytes]:
        return list(self._members.get(conv_id, []))

    def conversation_relays(self, conv_id: bytes) -> list[str]:
        return self._relays.get(conv_id, [])

    def relay_states(self) -> dict[str, str]:
        return dict(self.states)

    def history(self, conv_id: bytes, limit: int | None = None):  # type: ignore[no-untyped-def]
        entries = self._history.get(conv_id, [])
        return entries[-limit:] if limit else list(entries)

    def status(self, message_id: bytes):  # type: ignore[no-untyped-def]
        return self._status.get(message_id)

    def missing(self, conv) -> dict[bytes, int]:  # type: ignore[no-untyped-def]
        from client.model import SenderTrack

        out = {}
        for key_hex, raw in conv.senders.items():
            track = SenderTrack(**raw)
            if track.missing:
                out[bytes.fromhex(key_hex)] = len(track.missing)
        return out

    def mark_read(self, conv_id: bytes) -> None:
        self._convs[conv_id].unread = 0

    def safety_number(self, contact) -> str:  # type: ignore[no-untyped-def]
        return " ".join(f"{i:05d}" for i in range(12345, 12345 + 12 * 1111, 1111))

    async def invite(self, *, uses: int = 1, suite: int = DEFAULT_SUITE) -> str:
        self.invite_suites.append(suite)
        return "samizdat:invite/" + "A" * 120

    def invites(self) -> list[object]:
        return []

    def verify(self, contact) -> None:  # type: ignore[no-untyped-def]
        contact.verified, contact.key_changed = True, False

    # write side: recorded only
    async def connect(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def send_text(self, conv_id: bytes, text: str) -> bytes:
        self.calls.append(("send_text", conv_id, text))
        return b"x"

    async def create_group(self, name: str, suite: int = 1):  # type: ignore[no-untyped-def]
        from client.model import Conversation

        self.calls.append(("create_group", name) if suite == 1 else ("create_group", name, suite))
        group_id = bytes([20 + len(self._convs)]) * 16
        conv = Conversation(group_id, "group", name, T0 + 10 * len(self._convs))
        self._convs[group_id] = conv
        self._members[group_id] = [self.me]
        self._relays[group_id] = ["https://relay-a.example"]
        return conv
