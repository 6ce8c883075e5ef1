"""Ground truth of a spy scenario, recorded on the client side.

The scenario runs every member's engine in this process.  Each member's
work runs in a context where :data:`MEMBER` names it (asyncio tasks copy
the context they are created in, so the engine's background tasks carry
it too), and while :func:`recording` is active every relay frame a client
encodes is noted with that name: who proved which read key (``AuthRead``)
and who posted which ``msg_id`` to which mailbox.  Frames are hooked where
they are encoded (``protocol.relay_frames.Frame.encode``), below any client
connection logic, so the truth does not depend on how the client spreads
its work over connections, which is what the audit measures.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from protocol.relay_frames import AuthRead, Frame, Post, PostSigned

MEMBER: contextvars.ContextVar[str] = contextvars.ContextVar("spy_member", default="")
T = TypeVar("T")


@dataclass
class GroundTruth:
    """What really happened, keyed by hex ids as the spy logs them."""

    # mailbox -> members who proved its read key
    readers: dict[str, set[str]] = field(default_factory=dict)
    # msg_id -> (sender, mailbox, envelope size)
    posts: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    # mailbox -> "personal" (one person's inbox) or "conversation:<id hex>"
    kinds: dict[str, str] = field(default_factory=dict)
    # members by name
    members: list[str] = field(default_factory=list)
    unattributed_frames: int = 0  # frames encoded outside any member's context

    def note(self, frame: Frame) -> None:
        who = MEMBER.get()
        if not isinstance(frame, AuthRead | Post | PostSigned):
            return
        if not who:
            self.unattributed_frames += 1
            return
        if isinstance(frame, AuthRead):
            self.readers.setdefault(frame.mailbox_id.hex(), set()).add(who)
        else:
            self.posts[frame.msg_id.hex()] = (who, frame.mailbox_id.hex(), len(frame.envelope))

    def note_mailboxes(self, member: str, engine: Any) -> None:
        """Which conversation each of ``member``'s mailboxes belongs to, from
        the engine's own mailbox index (our inboxes have no conversation)."""
        for mb in getattr(engine, "_mailboxes", {}).values():
            kind = "personal" if mb.conv_id is None else f"conversation:{mb.conv_id.hex()}"
            self.kinds.setdefault(mb.mailbox_id.hex(), kind)

    def to_json(self) -> dict[str, Any]:
        return {
            "members": self.members,
            "readers": {k: sorted(v) for k, v in sorted(self.readers.items())},
            "posts": {k: list(v) for k, v in sorted(self.posts.items())},
            "kinds": dict(sorted(self.kinds.items())),
            "unattributed_frames": self.unattributed_frames,
        }


@contextlib.contextmanager
def recording(truth: GroundTruth) -> Iterator[GroundTruth]:
    """Note every frame encoded in this process while active."""
    original = Frame.encode

    def encode(self: Frame) -> bytes:
        truth.note(self)
        return original(self)

    Frame.encode = encode  # type: ignore[method-assign]
    try:
        yield truth
    finally:
        Frame.encode = original  # type: ignore[method-assign]


async def as_member(name: str, work: Awaitable[T]) -> T:
    """Run ``work`` (a coroutine) as ``name``: in a task whose context, and so
    every task it starts, has :data:`MEMBER` set to it."""
    import asyncio

    ctx = contextvars.copy_context()
    ctx.run(MEMBER.set, name)
    return await asyncio.get_running_loop().create_task(work, context=ctx)  # type: ignore[arg-type]
