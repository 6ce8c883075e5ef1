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
per connection, after which reading pauses (TCP back-pressure).  The
common frame, a ``Post`` to a mailbox whose write key the connection proved,
is handled in place by :meth:`Connection._post_fast` (the same checks in the
same order, without a coroutine or a frame object); its storage key was
hashed once, when the grant was made.

Outbound frames keep one order: a frame goes straight towards the
transport only while nothing is queued, no batch is being written and the
transport buffers less than ``DIRECT_WRITE_LIMIT`` (no task switch per
frame, the common case); otherwise it joins one bounded :class:`SendQueue`
drained by one writer task.  Straight frames are *corked*: collected for the
rest of the event-loop iteration and written in one ``transport.write``, so
a storage batch that commits fifty posts of one publisher answers them in
one socket write, not fifty (the writer task flushes the cork before it
writes, so the order holds); one callback per iteration
(``RelayContext.cork``) flushes every corked connection.  A peer that does
not read therefore costs at most that buffer plus the queue's bounds, then
is disconnected (``SlowConsumer``) instead of growing memory.

Subscriptions, flow control and the backfill pump live in
:mod:`relay.subscriptions` (a base class of :class:`Connection`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import struct
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import nacl.bindings
import nacl.exceptions
from aiohttp import WSMsgType, web

from protocol.errors import DecodeError
from protocol.padding import is_envelope_size
from protocol.relay_frames import (
    CLIENT_FRAMES,
    INITIAL_CREDIT,
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
    Credit,
    DeleteMailbox,
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
    UnknownMailbox,
    Unsubscribe,
    auth_message,
    decode_client_frame,
    post_message,
    split_post,
)
from relay.limits import SendQueue, TokenBucket
from relay.storage.base import MAX_DB_SEQ, dedup_key, mailbox_key
from relay.subscriptions import Subscription, Subscriptions

if TYPE_CHECKING:
    from relay.app import RelayContext

log = logging.getLogger("relay.connection")

MAX_INFLIGHT = 256
_POSTED = struct.Struct(">BIQ?")
# RFC 6455 §5.2: FIN set, binary opcode; a server's frames are unmasked.
_WS_BINARY = 0x82
_WS_LEN1 = struct.Struct(">BB")
_WS_LEN2 = struct.Struct(">BBH")
_WS_LEN8 = struct.Struct(">BBQ")


def _ws_header(n: int) -> bytes:
    """The header of an unmasked binary frame of ``n`` bytes (RFC 6455 §5.2)."""
    if n < 126:
        header = _WS_LEN1.pack(_WS_BINARY, n)
    elif n < 65536:
        header = _WS_LEN2.pack(_WS_BINARY, 126, n)
    else:
        header = _WS_LEN8.pack(_WS_BINARY, 127, n)
    if len(_WS_HEADERS) < 4096:  # frames come in a few padded sizes
        _WS_HEADERS[n] = header
    return header


_WS_HEADERS: dict[int, bytes] = {}
# Frames are written straight to the transport while its buffer holds less
# than this; beyond it they wait in the bounded SendQueue for the writer task.
DIRECT_WRITE_LIMIT = 64 * 1024
# Frames of at most CORK_FRAME bytes are corked, up to CORK_BYTES in all, and
# written together at the end of the loop iteration; larger ones go at once.
CORK_FRAME = 16 * 1024
CORK_BYTES = 64 * 1024
# WebSocket close codes (RFC 6455 §7.4.1).
CLOSE_CODES = {
    BadFrame.code: 1002,
    SlowConsumer.code: 1008,
    ShuttingDown.code: 1001,
}


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


class Connection(Subscriptions):
    _tokens = 0
    # slots: a relay holds thousands of idle connections, and past 30
    # attributes an instance dict stops sharing its keys (+1.2 KiB each)
    __slots__ = (
        "ctx", "ws", "ip", "frames", "nonce", "queue", "read_grants", "write_grants",
        "_wake", "_pumping", "inflight", "_slot_free", "pending", "_fast_posts", "_keys",
        "close_code", "close_reason", "closing", "stopping", "_closer", "_writing",
        "_direct", "_cork", "_corked", "_half_queue", "token",
    )  # fmt: skip

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
        # flow control (SPEC.md §7.6): Deliver bytes the reader still accepts
        self.credit = INITIAL_CREDIT
        # pending subscriptions, round-robin within each class; small first
        self.pending_small: deque[Subscription] = deque()
        self.pending_bulk: deque[Subscription] = deque()
        self._small_turns = 0  # small turns in a row while bulk waits
        self._wake = asyncio.Event()
        self._pumping = True
        # posts submitted to storage and not yet answered (at most MAX_INFLIGHT)
        self.inflight = 0
        self._slot_free: asyncio.Future[None] | None = None
        self.pending: set[asyncio.Future[Any]] = set()
        # Posts skip _handle() (see _post_fast) unless a subclass overrides it
        # to watch every frame (an audit build that logs what a relay sees).
        self._fast_posts = type(self)._handle is Connection._handle
        # granted mailbox id -> (storage key, its hex for the post limiter):
        # hashed once per grant, not once per frame
        self._keys: dict[bytes, tuple[bytes, str]] = {}
        self.close_code = 1000
        self.close_reason = ""
        self.closing = False
        self.stopping = False
        self._closer: asyncio.Future[None] | None = None
        self._writing = False
        # aiohttp's frame writer, for the synchronous fast path of send_raw()
        # (no task switch per frame); None falls back to the writer task.
        writer = getattr(ws, "_writer", None)
        usable = hasattr(writer, "transport") and not getattr(writer, "compress", 1)
        self._direct = writer if usable else None
        # corked frames (headers and payloads) and their payload bytes
        self._cork: list[bytes] = []
        self._corked = 0
        # Deliver bytes the relay may queue while the send queue is empty
        # (what _room() gives then)
        self._half_queue = max(1, self.queue.max_bytes // 2)
        Connection._tokens += 1
        self.token = Connection._tokens

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        writer = asyncio.create_task(self._writer())
        pump = asyncio.create_task(self._pump())
        self.send(Challenge(PROTOCOL_VERSION, self.nonce, self.ctx.config.limits.max_envelope_size))
        try:
            await self._reader()
        finally:
            for sub in list(self.subs.values()):
                self._drop_sub(sub)
            # A storage client may turn the cancellation into an error (nats-py
            # does, at times): the flag ends the pump then, and we never wait
            # longer than the grace period.
            self._pumping = False
            self._wake.set()
            pump.cancel()
            await asyncio.wait({pump}, timeout=self.ctx.config.limits.shutdown_grace)
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
                self.flush_cork()  # corked frames before the close frame
                await self.ws.close(code=self.close_code, message=self.close_reason.encode())

    def _winding_down(self) -> bool:
        """Closing or stopping.  A call rather than an inline test because other
        tasks set these flags while we await (an inline test stays narrowed)."""
        return self.closing or self.stopping

    def _pump_stopped(self) -> bool:
        """run() has ended the pump (a call after an await, as _winding_down)."""
        return not self._pumping

    async def _reader(self) -> None:
        # ws.receive() rather than ``async for``: one coroutine layer less per
        # frame; CLOSE, CLOSING and CLOSED end the loop as the iterator would.
        receive = self.ws.receive
        binary = WSMsgType.BINARY
        while True:
            msg = await receive()
            if self._winding_down():
                break
            if msg.type is binary:
                data = msg.data
                if type(data) is not bytes:
                    data = bytes(data)
                # a granted Post is answered without a coroutine (the common
                # frame); anything else, or a Post to judge, goes the long way
                if not (self._fast_posts and self._post_fast(data)):
                    await self._handle(data)
            elif msg.type is WSMsgType.TEXT:
                self.fail(0, BadFrame("text frames are not part of the protocol"))
            else:
                break
            if self._winding_down():
                break

    async def _writer(self) -> None:
        ws = self.ws
        try:
            while True:
                batch = await self.queue.get_batch()
                if not batch:
                    break
                self._writing = True
                self.flush_cork()  # corked frames go first: one order
                for data in batch:
                    await ws.send_bytes(data)
                self._writing = False
        except (ConnectionError, RuntimeError):
            self.closing = True
            return
        if not ws.closed:
            self.flush_cork()  # corked frames before the close frame
            await ws.close(code=self.close_code, message=self.close_reason.encode())

    def send(self, frame: Ok | Posted | Subscribed | Error | Challenge) -> None:
        self.send_raw(frame.encode())

    def send_raw(self, data: bytes) -> None:
        """Cork if nothing is queued and the transport has room, else queue."""
        direct = self._direct
        queue = self.queue
        transport = direct.transport if direct is not None else None
        if transport is None or len(queue) or self._writing or queue.closed:
            if not queue.put(data):
                self.slow_consumer()
            return
        assert direct is not None
        n = len(data)
        if n > CORK_FRAME or self._corked + n > CORK_BYTES:
            self.flush_cork()  # in order, before this frame
        if transport.get_write_buffer_size() >= DIRECT_WRITE_LIMIT:
            if not queue.put(data):
                self.slow_consumer()
            return
        if n > CORK_FRAME:  # a bulk frame fills a write by itself
            try:
                direct._write_websocket_frame(data, WSMsgType.BINARY, 0)
            except (ConnectionError, RuntimeError):
                self.closing = True
            return
        cork = self._cork
        if not cork:
            self.ctx.cork(self)
        header = _WS_HEADERS.get(n)
        if header is None:
            header = _ws_header(n)
        cork.append(header)
        cork.append(data)
        self._corked += n

    def flush_cork(self) -> None:
        """Write every corked frame in one ``transport.write``."""
        if not self._cork:
            return
        parts, self._cork, self._corked = self._cork, [], 0
        direct = self._direct
        transport = direct.transport if direct is not None else None
        if direct is None or transport is None or transport.is_closing():
            self.closing = True
            return
        data = b"".join(parts)
        try:
            transport.write(data)
        except (ConnectionError, RuntimeError):
            self.closing = True
            return
        # counted as aiohttp counts its own writes, so the writer task's next
        # send_bytes() waits for the transport to drain (flow control)
        direct._output_size += len(data)

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
        if isinstance(frame, Credit):
            # Not rate limited: a Credit refused would stall the reader for good,
            # and handling one costs an addition (the balance is capped).
            self._grant(frame.amount)
            return
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
            elif isinstance(frame, DeleteMailbox):
                await self._delete_mailbox(frame)
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
        await self.ctx.admit_mailbox(self.ip, mailbox_key(f.mailbox_id))
        await self.ctx.storage.create_mailbox(
            mailbox_key(f.mailbox_id), f.read_key, f.write_key, ttl, int(time.time()), f.mode
        )
        if cfg.debug_log:
            log.debug("create mailbox %s from %s", f.mailbox_id.hex(), self.ip)
        self.send(Ok(f.req_id))

    async def _auth(self, f: AuthRead | AuthWrite) -> None:
        self._grant_room(f.mailbox_id)
        keys = self._keys.get(f.mailbox_id) or _keys_of(f.mailbox_id)
        info = await self.ctx.storage.get_mailbox(keys[0])
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
        self._keys[f.mailbox_id] = keys  # as many as grants (mailboxes_per_connection)
        if self.ctx.config.debug_log:  # what a compelled relay sees (SPEC.md §2)
            kind = "auth-read" if isinstance(f, AuthRead) else "auth-write"
            log.debug("%s of %s on connection %d", kind, f.mailbox_id.hex(), self.token)
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

    async def _delete_mailbox(self, f: DeleteMailbox) -> None:
        """Delete a mailbox for its owner: the read key signs over this
        connection's nonce, so a captured request cannot be replayed."""
        key = mailbox_key(f.mailbox_id)
        info = await self.ctx.storage.get_mailbox(key)
        if info is None:
            raise UnknownMailbox("unknown mailbox")
        msg = auth_message("delete-mailbox", self.nonce, f.mailbox_id)
        if not verify(info.read_key, f.signature, msg):
            raise BadSignature("deletion not signed by the read key")
        await self.ctx.storage.delete_mailbox(key)
        self.write_grants.pop(f.mailbox_id, None)
        if f.mailbox_id not in self.read_grants:
            self._keys.pop(f.mailbox_id, None)
        sub = self.subs.get(f.mailbox_id)
        if sub is not None:
            self._drop_sub(sub)
        self.send(Ok(f.req_id))

    def _post_fast(self, data: bytes) -> bool:
        """A ``Post`` to a mailbox this connection proved the write key of,
        with a slot free, handled in place (what :meth:`_handle` then
        :meth:`_post` do, in the same order, without their coroutines).
        False, having done nothing, for anything else."""
        if self.inflight >= MAX_INFLIGHT:
            return False
        parts = split_post(data)
        if parts is None:
            return False
        req_id, mailbox_id, msg_id, envelope = parts
        write_key = self.write_grants.get(mailbox_id)
        if write_key is None:
            return False
        keys = self._keys.get(mailbox_id) or _keys_of(mailbox_id)
        self.ctx.metrics.labelled["samizdat_relay_frames_total"]["Post"] += 1
        if not self.frames.take():
            self.send_error(req_id, RateLimited("too many frames"))
            return True
        try:
            self._submit_post(req_id, mailbox_id, msg_id, envelope, keys, write_key)
        except RelayError as exc:
            self.send_error(req_id, exc)
        return True

    async def _post(self, f: Post | PostSigned) -> None:
        self._check_envelope(f.envelope)
        keys = self._keys.get(f.mailbox_id) or _keys_of(f.mailbox_id)
        if isinstance(f, Post):
            write_key = self.write_grants.get(f.mailbox_id)
            if write_key is None:
                raise NotAuthorized("prove the write key first (AuthWrite) or use PostSigned")
        else:
            info = await self.ctx.storage.get_mailbox(keys[0])
            if info is None:
                raise UnknownMailbox("unknown mailbox")
            if not verify(
                info.write_key, f.signature, post_message(f.mailbox_id, f.msg_id, f.envelope)
            ):
                raise BadSignature("post signature does not verify")
            write_key = info.write_key
        self._limit_post(f.mailbox_id, keys[1])
        while self.inflight >= MAX_INFLIGHT:  # reading pauses: TCP back-pressure
            self._slot_free = asyncio.get_running_loop().create_future()
            await self._slot_free
        self._store_post(f.req_id, f.mailbox_id, f.msg_id, f.envelope, keys[0], write_key)

    def _check_envelope(self, envelope: bytes) -> None:
        lim = self.ctx.config.limits
        size = len(envelope)
        if size > lim.max_envelope_size:
            raise TooLarge(f"envelope exceeds {lim.max_envelope_size} bytes")
        if not is_envelope_size(size):
            raise BadSize("envelope size is not a padding bucket")

    def _limit_post(self, mailbox_id: bytes, key_hex: str) -> None:
        if not self.ctx.post_limiter.take(key_hex):
            raise RateLimited("too many posts to this mailbox")
        if self.ctx.config.debug_log:
            log.debug("post to %s on connection %d", mailbox_id.hex(), self.token)

    def _submit_post(
        self,
        req_id: int,
        mailbox_id: bytes,
        msg_id: bytes,
        envelope: bytes,
        keys: tuple[bytes, str],
        write_key: bytes,
    ) -> None:
        """Check, rate-limit and store a proven ``Post`` (a slot is free)."""
        self._check_envelope(envelope)
        self._limit_post(mailbox_id, keys[1])
        self._store_post(req_id, mailbox_id, msg_id, envelope, keys[0], write_key)

    def _store_post(
        self,
        req_id: int,
        mailbox_id: bytes,
        msg_id: bytes,
        envelope: bytes,
        key: bytes,
        write_key: bytes,
    ) -> None:
        """Hand a checked post to storage; answer ``Posted`` once it commits."""
        self.inflight += 1
        fut = self.ctx.storage.post_nowait(
            key, dedup_key(mailbox_id, msg_id), envelope, int(time.time()), write_key
        )
        self.pending.add(fut)
        size = len(envelope)

        def done(fut: asyncio.Future[tuple[int, bool]]) -> None:
            self.pending.discard(fut)
            self.inflight -= 1
            waiter = self._slot_free
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            if fut.cancelled():
                return
            exc = fut.exception()
            if exc is not None:
                err = exc if isinstance(exc, RelayError) else RelayError("internal error")
                self.send_error(req_id, err)
                return
            seq, dup = fut.result()
            values = self.ctx.metrics.values
            if dup:
                values["samizdat_relay_duplicate_posts_total"] += 1
            else:
                values["samizdat_relay_posts_total"] += 1
                values["samizdat_relay_bytes_in_total"] += size
            self.send_raw(_POSTED.pack(Posted.TYPE, req_id, seq, dup))

        fut.add_done_callback(done)

    async def _ack(self, f: Ack) -> None:
        if f.mailbox_id not in self.read_grants:
            raise NotAuthorized("prove the read key first (AuthRead)")
        await self.ctx.storage.ack(mailbox_key(f.mailbox_id), min(f.up_to_seq, MAX_DB_SEQ))
        self.send(Ok(f.req_id))


def _keys_of(mailbox_id: bytes) -> tuple[bytes, str]:
    key = mailbox_key(mailbox_id)
    return key, key.hex()


def _consteq(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
