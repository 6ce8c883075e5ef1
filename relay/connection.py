"""One client WebSocket: frame dispatch, grants, subscriptions and the writer.

Theory of operation
-------------------
State per connection (SPEC.md §7, "Connection state machine"): the relay
sends ``Challenge`` with a fresh 32-byte nonce, then serves requests until
either side closes.  A connection accumulates *grants*: ``read`` for a
mailbox after a valid ``AuthRead``, ``write`` (remembering the proven key)
after a valid ``AuthWrite``; grants never outlive the connection, and their
number is bounded by ``mailboxes_per_connection``.

Frames are handled in arrival order.  Everything except ``Post`` and
``PostSigned`` is awaited before the next frame is read, so a pipelined
``AuthWrite`` then ``Post`` sees its grant.  Posts are validated in order,
submitted to storage in order (so their seqs follow arrival order), and
answered when storage commits; at most ``MAX_INFLIGHT`` posts are pending
per connection, after which reading pauses (TCP back-pressure).

Outbound frames keep one order: a frame is written straight to the
transport only while nothing is queued, no batch is being written and the
transport buffers less than ``DIRECT_WRITE_LIMIT`` (no task switch per
frame, the common case); otherwise it joins one bounded :class:`SendQueue`
drained by one writer task.  A peer that does not read therefore costs at
most that buffer plus the queue's bounds, then is disconnected
(``SlowConsumer``) instead of growing memory.  A subscription first buffers live pushes, sends its
backfill page by page (each page waits for room in the queue), then flushes
the buffer skipping seqs already sent: no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import nacl.bindings
import nacl.exceptions
from aiohttp import WSMsgType, web

from protocol.errors import DecodeError
from protocol.padding import is_envelope_size
from protocol.relay_frames import (
    CLIENT_FRAMES,
    NONCE_LEN,
    PROTOCOL_VERSION,
    AccessDenied,
    Ack,
    AuthRead,
    AuthWrite,
    BadFrame,
    BadRequest,
    BadSignature,
    BadSize,
    Challenge,
    Create,
    Error,
    NotAuthorized,
    Ok,
    Post,
    Posted,
    PostSigned,
    RateLimited,
    RelayError,
    RotateWrite,
    ShuttingDown,
    SlowConsumer,
    Subscribe,
    Subscribed,
    TooLarge,
    TooManyMailboxes,
    Unavailable,
    UnknownMailbox,
    Unsubscribe,
    auth_message,
    decode_client_frame,
    encode_deliver,
    post_message,
)
from relay.limits import SendQueue, TokenBucket
from relay.storage.base import MAX_DB_SEQ, Listener, dedup_key, mailbox_key

if TYPE_CHECKING:
    from relay.app import RelayContext

log = logging.getLogger("relay.connection")

MAX_INFLIGHT = 256
_POSTED = struct.Struct(">BIQ?")
# Frames are written straight to the transport while its buffer holds less
# than this; beyond it they wait in the bounded SendQueue for the writer task.
DIRECT_WRITE_LIMIT = 64 * 1024
BACKFILL_PAGE = 256
BACKFILL_RETRIES = 5

# WebSocket close codes (RFC 6455 §7.4.1).
CLOSE_CODES = {
    BadFrame.code: 1002,
    SlowConsumer.code: 1008,
    ShuttingDown.code: 1001,
}


@dataclass(slots=True)
class Subscription:
    mailbox_id: bytes
    key: bytes
    last_sent: int
    buffer: list[tuple[int, bytes]] | None = field(default_factory=list)
    task: asyncio.Task[None] | None = None


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Ed25519 (libsodium); False for a bad signature or an invalid key."""
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


def valid_public_key(key: bytes) -> bool:
    try:
        return bool(nacl.bindings.crypto_core_ed25519_is_valid_point(key))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False


class Connection:
    _tokens = 0

    def __init__(self, ctx: RelayContext, ws: web.WebSocketResponse, ip: str, frames: TokenBucket):
        self.ctx = ctx
        self.ws = ws
        self.ip = ip
        self.frames = frames
        self.nonce = os.urandom(NONCE_LEN)
        lim = ctx.config.limits
        self.queue = SendQueue(lim.send_queue_frames, lim.send_queue_bytes)
        self.read_grants: set[bytes] = set()
        self.write_grants: dict[bytes, bytes] = {}
        self.subs: dict[bytes, Subscription] = {}
        self.inflight = asyncio.Semaphore(MAX_INFLIGHT)
        self.pending: set[asyncio.Future[Any]] = set()
        self.close_code = 1000
        self.close_reason = ""
        self.closing = False
        self.stopping = False
        self._closer: asyncio.Future[None] | None = None
        self._writing = False
        # aiohttp's frame writer, for the synchronous fast path of send_raw()
        # (no task switch per frame); None falls back to the writer task.
        writer = getattr(ws, "_writer", None)
        self._direct = writer if hasattr(writer, "_write_websocket_frame") else None
        Connection._tokens += 1
        self.token = Connection._tokens

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        writer = asyncio.create_task(self._writer())
        self.send(Challenge(PROTOCOL_VERSION, self.nonce, self.ctx.config.limits.max_envelope_size))
        try:
            await self._reader()
        finally:
            for sub in list(self.subs.values()):
                self._drop_sub(sub)
            if self.stopping and not self.closing:
                if self.pending:
                    await asyncio.wait(self.pending, timeout=self.ctx.config.limits.shutdown_grace)
                self.fail(0, ShuttingDown("relay shutting down"))
            if self._closer is None:
                self._closer = asyncio.ensure_future(self._close_after_pending())
            await self._closer
            try:
                await asyncio.wait_for(writer, self.ctx.config.limits.shutdown_grace)
            except TimeoutError:
                writer.cancel()
            if not self.ws.closed:
                await self.ws.close(code=self.close_code, message=self.close_reason.encode())

    async def _reader(self) -> None:
        async for msg in self.ws:
            if self.closing or self.stopping:
                break
            if msg.type == WSMsgType.BINARY:
                await self._handle(msg.data)
            elif msg.type == WSMsgType.TEXT:
                self.fail(0, BadFrame("text frames are not part of the protocol"))
            else:
                break
            if self.closing or self.stopping:
                break

    async def _writer(self) -> None:
        ws = self.ws
        try:
            while True:
                batch = await self.queue.get_batch()
                if not batch:
                    break
                self._writing = True
                for data in batch:
                    await ws.send_bytes(data)
                self._writing = False
        except (ConnectionError, RuntimeError):
            self.closing = True
            return
        if not ws.closed:
            await ws.close(code=self.close_code, message=self.close_reason.encode())

    def send(self, frame: Ok | Posted | Subscribed | Error | Challenge) -> None:
        self.send_raw(frame.encode())

    def send_raw(self, data: bytes) -> None:
        """Write now if nothing is queued and the transport has room, else queue."""
        direct = self._direct
        if (
            direct is not None
            and not self.queue
            and not self._writing
            and not self.queue.closed
            and direct.transport is not None
            and direct.transport.get_write_buffer_size() < DIRECT_WRITE_LIMIT
        ):
            try:
                direct._write_websocket_frame(data, WSMsgType.BINARY, 0)
            except (ConnectionError, RuntimeError):
                self.closing = True
            return
        if not self.queue.put(data):
            self.slow_consumer()

    def send_error(self, req_id: int, exc: RelayError) -> None:
        self.ctx.metrics.inc_label("samizdat_relay_errors_total", str(exc.code))
        if isinstance(exc, RateLimited):
            self.ctx.metrics.inc("samizdat_relay_rate_limited_total")
        if self.ctx.config.debug_log:
            log.debug("error %s to %s: %s", exc.code, self.ip, exc)
        self.send(Error.from_exception(req_id, exc))
        if exc.fatal:
            self.fail(req_id, exc, already_sent=True)

    def fail(self, req_id: int, exc: RelayError, already_sent: bool = False) -> None:
        """Send a fatal error (unless sent) and close once queued frames are out."""
        if self.closing:
            return
        if not already_sent:
            self.ctx.metrics.inc_label("samizdat_relay_errors_total", str(exc.code))
            data = Error.from_exception(req_id, exc).encode()
            if not self.queue.put(data):
                self.queue.abort(data)
        self.closing = True
        self.close_code = CLOSE_CODES.get(exc.code, 1008)
        self.close_reason = str(exc)[:100]
        self._closer = asyncio.ensure_future(self._close_after_pending())

    async def _close_after_pending(self) -> None:
        """Answer every post already accepted, then let the writer close."""
        if self.pending:
            await asyncio.wait(self.pending, timeout=self.ctx.config.limits.shutdown_grace)
        self.queue.close()

    def slow_consumer(self) -> None:
        if self.closing:
            return
        self.ctx.metrics.inc("samizdat_relay_slow_consumers_total")
        self.ctx.metrics.inc_label("samizdat_relay_errors_total", str(SlowConsumer.code))
        exc = SlowConsumer("send queue full")
        self.queue.abort(Error.from_exception(0, exc).encode())
        self.fail(0, exc, already_sent=True)

    async def shutdown(self) -> None:
        """Graceful shutdown: finish pending posts, say why, close with 1001."""
        self.stopping = True
        if self.pending:
            await asyncio.wait(self.pending, timeout=self.ctx.config.limits.shutdown_grace)
        self.fail(0, ShuttingDown("relay shutting down"))

    # ------------------------------------------------------------ dispatch

    async def _handle(self, data: bytes) -> None:
        try:
            frame = decode_client_frame(data)
        except DecodeError as exc:
            req_id = (
                int.from_bytes(data[1:5], "big") if data[:1] and data[0] in CLIENT_FRAMES else 0
            )
            self.send_error(req_id if len(data) >= 5 else 0, BadFrame(str(exc)))
            return
        self.ctx.metrics.inc_label("samizdat_relay_frames_total", type(frame).__name__)
        if not self.frames.take():
            self.send_error(frame.req_id, RateLimited("too many frames"))
            return
        try:
            if isinstance(frame, Post | PostSigned):
                await self._post(frame)
            elif isinstance(frame, Create):
                await self._create(frame)
            elif isinstance(frame, AuthRead | AuthWrite):
                await self._auth(frame)
            elif isinstance(frame, Subscribe):
                await self._subscribe(frame)
            elif isinstance(frame, Unsubscribe):
                sub = self.subs.get(frame.mailbox_id)
                if sub is not None:
                    self._drop_sub(sub)
                self.send(Ok(frame.req_id))
            elif isinstance(frame, Ack):
                await self._ack(frame)
            else:
                await self._rotate(frame)
        except RelayError as exc:
            self.send_error(frame.req_id, exc)

    def _grant_room(self, mailbox_id: bytes) -> None:
        known = mailbox_id in self.read_grants or mailbox_id in self.write_grants
        if not known and len(self.read_grants | self.write_grants.keys()) >= (
            self.ctx.config.limits.mailboxes_per_connection
        ):
            raise TooManyMailboxes("too many mailboxes on this connection")

    async def _create(self, f: Create) -> None:
        cfg = self.ctx.config
        token = cfg.access_token.encode()
        if token and not _consteq(f.access_token, token):
            raise AccessDenied("an access token is required to create mailboxes")
        ttl = f.ttl_seconds or cfg.limits.default_ttl
        if ttl > cfg.limits.max_ttl:
            raise BadRequest(f"ttl exceeds the relay maximum of {cfg.limits.max_ttl} s")
        if not (valid_public_key(f.read_key) and valid_public_key(f.write_key)):
            raise BadRequest("invalid Ed25519 public key")
        await self.ctx.storage.create_mailbox(
            mailbox_key(f.mailbox_id), f.read_key, f.write_key, ttl, int(time.time()), f.mode
        )
        if cfg.debug_log:
            log.debug("create mailbox %s from %s", f.mailbox_id.hex(), self.ip)
        self.send(Ok(f.req_id))

    async def _auth(self, f: AuthRead | AuthWrite) -> None:
        self._grant_room(f.mailbox_id)
        info = await self.ctx.storage.get_mailbox(mailbox_key(f.mailbox_id))
        if info is None:
            raise UnknownMailbox("unknown mailbox")
        if isinstance(f, AuthRead):
            msg = auth_message("auth-read", self.nonce, f.mailbox_id)
            if not verify(info.read_key, f.signature, msg):
                raise BadSignature("read-key signature does not verify")
            self.read_grants.add(f.mailbox_id)
        else:
            msg = auth_message("auth-write", self.nonce, f.mailbox_id)
            if not verify(info.write_key, f.signature, msg):
                raise BadSignature("write-key signature does not verify")
            self.write_grants[f.mailbox_id] = info.write_key
        self.send(Ok(f.req_id))

    async def _rotate(self, f: RotateWrite) -> None:
        key = mailbox_key(f.mailbox_id)
        info = await self.ctx.storage.get_mailbox(key)
        if info is None:
            raise UnknownMailbox("unknown mailbox")
        msg = auth_message("rotate-write", self.nonce, f.mailbox_id, f.new_write_key)
        if not verify(info.write_key, f.signature, msg):
            raise BadSignature("rotation not signed by the current write key")
        if not valid_public_key(f.new_write_key):
            raise BadRequest("invalid Ed25519 public key")
        await self.ctx.storage.rotate_write_key(key, f.new_write_key)
        if f.mailbox_id in self.write_grants:
            self.write_grants[f.mailbox_id] = f.new_write_key
        self.send(Ok(f.req_id))

    async def _post(self, f: Post | PostSigned) -> None:
        lim = self.ctx.config.limits
        size = len(f.envelope)
        if size > lim.max_envelope_size:
            raise TooLarge(f"envelope exceeds {lim.max_envelope_size} bytes")
        if not is_envelope_size(size):
            raise BadSize("envelope size is not a padding bucket")
        key = mailbox_key(f.mailbox_id)
        if isinstance(f, Post):
            write_key = self.write_grants.get(f.mailbox_id)
            if write_key is None:
                raise NotAuthorized("prove the write key first (AuthWrite) or use PostSigned")
        else:
            info = await self.ctx.storage.get_mailbox(key)
            if info is None:
                raise UnknownMailbox("unknown mailbox")
            if not verify(
                info.write_key, f.signature, post_message(f.mailbox_id, f.msg_id, f.envelope)
            ):
                raise BadSignature("post signature does not verify")
            write_key = info.write_key
        await self.inflight.acquire()
        fut = self.ctx.storage.post_nowait(
            key, dedup_key(f.mailbox_id, f.msg_id), f.envelope, int(time.time()), write_key
        )
        self.pending.add(fut)
        req_id = f.req_id

        def done(fut: asyncio.Future[tuple[int, bool]]) -> None:
            self.pending.discard(fut)
            self.inflight.release()
            if fut.cancelled():
                return
            exc = fut.exception()
            if exc is not None:
                err = exc if isinstance(exc, RelayError) else RelayError("internal error")
                self.send_error(req_id, err)
                return
            seq, dup = fut.result()
            m = self.ctx.metrics
            if dup:
                m.inc("samizdat_relay_duplicate_posts_total")
            else:
                m.inc("samizdat_relay_posts_total")
                m.inc("samizdat_relay_bytes_in_total", size)
            self.send_raw(_POSTED.pack(Posted.TYPE, req_id, seq, dup))

        fut.add_done_callback(done)

    async def _ack(self, f: Ack) -> None:
        if f.mailbox_id not in self.read_grants:
            raise NotAuthorized("prove the read key first (AuthRead)")
        await self.ctx.storage.ack(mailbox_key(f.mailbox_id), min(f.up_to_seq, MAX_DB_SEQ))
        self.send(Ok(f.req_id))

    # ------------------------------------------------------------ subscriptions

    async def _subscribe(self, f: Subscribe) -> None:
        if f.mailbox_id not in self.read_grants:
            raise NotAuthorized("prove the read key first (AuthRead)")
        old = self.subs.get(f.mailbox_id)
        if old is not None:
            self._drop_sub(old)
        from_seq = max(1, min(f.from_seq, MAX_DB_SEQ))
        key = mailbox_key(f.mailbox_id)
        sub = Subscription(f.mailbox_id, key, from_seq - 1)
        self.subs[f.mailbox_id] = sub
        self.ctx.storage.hub.subscribe(key, f.mailbox_id, self.token, self._listener(sub))
        try:
            info = await self.ctx.storage.get_mailbox(key)
        except RelayError:
            self._drop_sub(sub)
            raise
        if info is None:
            self._drop_sub(sub)
            raise UnknownMailbox("unknown mailbox")
        self.send(Subscribed(f.req_id, info.head_seq))
        sub.task = asyncio.create_task(self._backfill(sub))

    def _listener(self, sub: Subscription) -> Listener:
        metrics = self.ctx.metrics

        def on_message(seq: int, frame: bytes) -> None:
            if sub.buffer is not None:
                sub.buffer.append((seq, frame))
                if len(sub.buffer) > self.queue.max_frames:
                    self.slow_consumer()
                return
            if seq <= sub.last_sent:
                return
            sub.last_sent = seq
            self.send_raw(frame)
            metrics.values["samizdat_relay_deliveries_total"] += 1

        return on_message

    async def _backfill(self, sub: Subscription) -> None:
        storage = self.ctx.storage
        failures = 0
        try:
            while not self.closing:
                await self.queue.wait_room()
                try:
                    rows = await storage.fetch(sub.key, sub.last_sent + 1, BACKFILL_PAGE)
                except Unavailable:
                    failures += 1  # e.g. a NATS fail-over: back off and retry
                    if failures > BACKFILL_RETRIES:
                        raise
                    await asyncio.sleep(0.1 * 2**failures)
                    continue
                failures = 0
                if self.subs.get(sub.mailbox_id) is not sub:
                    return
                for seq, envelope in rows:
                    if not self.queue.put(encode_deliver(sub.mailbox_id, seq, envelope)):
                        self.slow_consumer()
                        return
                    sub.last_sent = seq
                self.ctx.metrics.inc("samizdat_relay_deliveries_total", len(rows))
                if len(rows) < BACKFILL_PAGE:
                    break
            buffered, sub.buffer = sub.buffer or [], None
            listener = self._listener(sub)
            for seq, frame in buffered:
                listener(seq, frame)
        except RelayError as exc:
            self.send_error(0, exc)

    def _drop_sub(self, sub: Subscription) -> None:
        self.ctx.storage.hub.unsubscribe(sub.key, self.token)
        if self.subs.get(sub.mailbox_id) is sub:
            del self.subs[sub.mailbox_id]
        if sub.task is not None and not sub.task.done():
            sub.task.cancel()


def _consteq(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
