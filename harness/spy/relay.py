"""``python -m harness.spy.relay --spy-log FILE [samizdat-relay options]``:
the real relay, logging everything its process sees.

This is what an operator compelled to log would bolt on: nothing in
``relay/`` changes and the relay has no logging mode of its own.  Before
``relay.cli.main`` runs, these hooks are installed in this process only:

* every WebSocket connection is a :class:`SpyConnection` (a subclass of the
  relay's own ``Connection``) that records its opening and closing with the
  peer's address and port, and each client frame it handles (type, mailbox
  id, msg id, envelope size and hash, whether a key proof was accepted);
* an outermost aiohttp middleware records every HTTP request (method,
  route, blob id and index, peer, status) and hands the peer address to
  the connection created while it runs;
* the storage's ``blob_put_chunk`` records the SHA-256 of every stored
  chunk, the bytes two relays could compare.
* a forwarded post (private routing, SPEC.md §7.14) is recorded as
  ``forwarded`` once the relay has opened it: the peer is the forwarding
  relay's address, and the mailbox, msg id, size and hash are what the
  destination necessarily reads.

Each record is one JSON line (``time`` is wall-clock seconds, so logs of
two relays on one machine can be compared), written line-buffered so a
relay stopped with SIGTERM or SIGKILL loses at most the line in progress.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from protocol.errors import DecodeError
from protocol.relay_frames import (
    Ack,
    AuthRead,
    AuthWrite,
    Create,
    Credit,
    DeleteMailbox,
    Post,
    PostSigned,
    RotateWrite,
    Subscribe,
    Unsubscribe,
    decode_client_frame,
)

BLOCK = 4096  # bytes: chunks are also compared block by block
# The peer ("address:port") of the request being handled, for the
# connection its WebSocket handler creates in the same task.
_PEER: contextvars.ContextVar[str] = contextvars.ContextVar("spy_peer", default="?")


class SpyLog:
    """Append-only JSON-lines log of what the relay process saw."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = path.open("a", buffering=1, encoding="utf-8")

    def write(self, event: str, **fields: Any) -> None:
        record = {"ev": event, "time": time.time(), **fields}
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")


def _peer(request: web.Request) -> str:
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(request.remote or "?")


def describe_frame(data: bytes) -> dict[str, Any]:
    """What a relay reads in one client frame (never the envelope itself:
    its size and a hash, enough to match copies)."""
    try:
        frame = decode_client_frame(data)
    except DecodeError:
        return {"type": "malformed", "size": len(data)}
    out: dict[str, Any] = {"type": type(frame).__name__}
    if isinstance(frame, Credit):
        out["amount"] = frame.amount
        return out
    if isinstance(
        frame,
        AuthRead
        | AuthWrite
        | Create
        | Subscribe
        | Unsubscribe
        | Post
        | PostSigned
        | Ack
        | DeleteMailbox
        | RotateWrite,
    ):
        out["mailbox"] = frame.mailbox_id.hex()
    if isinstance(frame, Post | PostSigned):
        out["msg_id"] = frame.msg_id.hex()
        out["size"] = len(frame.envelope)
        out["sha256"] = hashlib.sha256(frame.envelope).hexdigest()
    elif isinstance(frame, Create):
        out["mode"] = frame.mode
        out["ttl"] = frame.ttl_seconds
    elif isinstance(frame, Ack):
        out["up_to_seq"] = frame.up_to_seq
    elif isinstance(frame, Subscribe):
        out["from_seq"] = frame.from_seq
    return out


def block_hashes(data: bytes) -> list[str]:
    """Short hashes of each aligned ``BLOCK``-byte block: two relays holding
    copies that share any aligned block (not only whole chunks) match."""
    return [
        hashlib.sha256(data[i : i + BLOCK]).hexdigest()[:16] for i in range(0, len(data), BLOCK)
    ]


def install(log: SpyLog) -> None:
    """Install the hooks in this process (call before the app is built)."""
    import relay.app
    import relay.cli
    from relay.connection import Connection
    from relay.forward import ForwardHandlers

    class SpyConnection(Connection):
        """The relay's connection, recording what it handles."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.spy_peer = _PEER.get()

        async def run(self) -> None:
            log.write("open", conn=self.token, peer=self.spy_peer, ip=self.ip)
            try:
                await super().run()
            finally:
                log.write("close", conn=self.token, peer=self.spy_peer)

        async def _handle(self, data: bytes) -> None:
            seen = describe_frame(data)
            await super()._handle(data)
            mailbox = seen.get("mailbox")
            if mailbox is not None and seen["type"] in ("AuthRead", "AuthWrite"):
                grants: Any = self.read_grants if seen["type"] == "AuthRead" else self.write_grants
                seen["ok"] = bytes.fromhex(mailbox) in grants
            log.write("frame", conn=self.token, **seen)

    def middleware() -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def spy(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            peer = _peer(request)
            _PEER.set(peer)
            route = request.match_info.route.name or ""
            status = 0
            try:
                response = await handler(request)
                status = response.status
                return response
            finally:
                if route != "ws":
                    log.write(
                        "http",
                        peer=peer,
                        method=request.method,
                        route=route or "other",
                        blob=request.match_info.get("blob_id", ""),
                        index=request.match_info.get("index"),
                        status=status,
                    )

        return spy

    original_create_app = relay.app.create_app

    def create_app(config: Any, storage: Any = None) -> web.Application:
        app = original_create_app(config, storage)
        app.middlewares.insert(0, middleware())
        store = app[relay.app.CONTEXT].storage
        put_chunk = store.blob_put_chunk

        async def blob_put_chunk(blob_id: bytes, index: int, spool: Path) -> Any:
            data = spool.read_bytes()
            log.write(
                "chunk",
                peer=_PEER.get(),
                blob=blob_id.hex(),
                index=index,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                blocks=block_hashes(data),
            )
            return await put_chunk(blob_id, index, spool)

        store.blob_put_chunk = blob_put_chunk  # type: ignore[method-assign]
        return app

    original_store = ForwardHandlers._store

    async def store_forwarded(self: ForwardHandlers, f: PostSigned) -> Any:
        log.write("forwarded", peer=_PEER.get(), **describe_frame(f.encode()))
        return await original_store(self, f)

    ForwardHandlers._store = store_forwarded  # type: ignore[method-assign]
    relay.app.Connection = SpyConnection  # type: ignore[attr-defined]
    relay.cli.create_app = create_app  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--spy-log" not in args or args.index("--spy-log") + 1 >= len(args):
        print("usage: python -m harness.spy.relay --spy-log FILE [relay options]", file=sys.stderr)
        return 2
    at = args.index("--spy-log")
    path = Path(args[at + 1])
    del args[at : at + 2]
    install(SpyLog(path))
    import relay.cli

    return relay.cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
