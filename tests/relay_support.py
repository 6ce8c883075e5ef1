"""Test helpers for the relay: key material and a small frame-level client."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey

from protocol.padding import pad
from protocol.relay_frames import (
    Ack,
    AuthRead,
    AuthWrite,
    ClientConnection,
    Create,
    Deliver,
    Error,
    Frame,
    Post,
    PostSigned,
    RotateWrite,
    ServerFrame,
    Subscribe,
    post_message,
)

TIMEOUT = 10.0


@dataclass
class Mailbox:
    id: bytes = field(default_factory=lambda: os.urandom(32))
    read: SigningKey = field(default_factory=SigningKey.generate)
    write: SigningKey = field(default_factory=SigningKey.generate)

    def create(self, req_id: int = 0, ttl: int = 0, token: bytes = b"") -> Create:
        return Create(
            req_id,
            self.id,
            bytes(self.read.verify_key),
            bytes(self.write.verify_key),
            ttl,
            token,
        )


def envelope(text: bytes = b"hello", size: int | None = None) -> bytes:
    """A padded envelope (``size`` forces an exact, possibly invalid, length)."""
    if size is not None:
        return (text * (size // max(len(text), 1) + 1))[:size]
    return pad(text)


class Client:
    """One WebSocket to the relay, speaking frames through ClientConnection."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.proto = ClientConnection()
        self.delivered: list[Deliver] = []
        self.errors: list[Error] = []
        self.replies: dict[int, ServerFrame] = {}

    @classmethod
    async def connect(cls, session: Any, url: str, **kw: Any) -> Client:
        ws = await session.ws_connect(url, **kw)
        c = cls(ws)
        await c.recv()
        return c

    async def recv(self, timeout: float = TIMEOUT) -> ServerFrame:
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        if msg.type.name != "BINARY":
            raise ConnectionError(f"got {msg.type.name} {msg.data!r} {msg.extra!r}")
        frame = self.proto.receive(msg.data)
        if isinstance(frame, Deliver):
            self.delivered.append(frame)
        elif isinstance(frame, Error):
            self.errors.append(frame)
        return frame

    async def send(self, frame: Frame) -> None:
        await self.ws.send_bytes(self.proto.send(frame))

    async def reply(self, req_id: int, timeout: float = TIMEOUT) -> ServerFrame:
        """Read frames until the reply to ``req_id`` (Delivers are kept)."""
        while req_id not in self.replies:
            frame = await self.recv(timeout)
            rid = getattr(frame, "req_id", None)
            if rid is not None and not isinstance(frame, Deliver):
                self.replies[rid] = frame
        return self.replies.pop(req_id)

    async def request(self, frame: Frame) -> ServerFrame:
        await self.send(frame)
        return await self.reply(frame.req_id)  # type: ignore[attr-defined]

    def rid(self) -> int:
        return self.proto.next_req_id()

    async def create(self, mb: Mailbox, **kw: Any) -> ServerFrame:
        return await self.request(mb.create(self.rid(), **kw))

    async def auth_read(self, mb: Mailbox, key: SigningKey | None = None) -> ServerFrame:
        sig = (key or mb.read).sign(self.proto.auth_payload("auth-read", mb.id)).signature
        return await self.request(AuthRead(self.rid(), mb.id, sig))

    async def auth_write(self, mb: Mailbox, key: SigningKey | None = None) -> ServerFrame:
        sig = (key or mb.write).sign(self.proto.auth_payload("auth-write", mb.id)).signature
        return await self.request(AuthWrite(self.rid(), mb.id, sig))

    async def post(self, mb: Mailbox, env: bytes, msg_id: bytes | None = None) -> ServerFrame:
        return await self.request(Post(self.rid(), mb.id, msg_id or os.urandom(16), env))

    async def post_signed(
        self, mb: Mailbox, env: bytes, msg_id: bytes | None = None, key: SigningKey | None = None
    ) -> ServerFrame:
        mid = msg_id or os.urandom(16)
        sig = (key or mb.write).sign(post_message(mb.id, mid, env)).signature
        return await self.request(PostSigned(self.rid(), mb.id, mid, env, sig))

    async def subscribe(self, mb: Mailbox, from_seq: int = 0) -> ServerFrame:
        return await self.request(Subscribe(self.rid(), mb.id, from_seq))

    async def ack(self, mb: Mailbox, seq: int) -> ServerFrame:
        return await self.request(Ack(self.rid(), mb.id, seq))

    async def rotate(self, mb: Mailbox, new: SigningKey, signer: SigningKey | None = None):  # type: ignore[no-untyped-def]
        payload = self.proto.auth_payload("rotate-write", mb.id, bytes(new.verify_key))
        sig = (signer or mb.write).sign(payload).signature
        return await self.request(RotateWrite(self.rid(), mb.id, bytes(new.verify_key), sig))

    async def wait_delivered(self, n: int, timeout: float = TIMEOUT) -> list[Deliver]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.delivered) < n:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"{len(self.delivered)} of {n} delivered")
            await self.recv(left)
        return self.delivered

    async def close(self) -> None:
        await self.ws.close()
