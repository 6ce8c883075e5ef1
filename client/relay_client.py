"""One relay, seen from a client: a supervised WebSocket connection.

Theory of operation
-------------------
A :class:`RelayClient` owns one relay URL.  A supervisor task keeps a
WebSocket open to ``{url}/ws``: it connects, reads the relay's Challenge,
re-proves the read key of every registered subscription and re-subscribes
from the sequence number after the last one delivered, then reads frames
until the connection drops.  Then it waits (exponential backoff with jitter,
capped) and tries again, for ever, until :meth:`close`.

Requests (create, post, ack, rotate) wait up to ``request_timeout`` for the
connection and for the relay's reply; a dropped connection fails them with
:class:`RelayUnavailable` so callers can queue and retry.  Write keys are
proved once per connection per mailbox (AuthWrite), after which posts carry no
signature.  Delivered envelopes go to the ``on_deliver`` callback in relay
order; ``state`` reports ``connecting``, ``connected`` or ``down`` to
``on_state``.

Everything that leaves here is already encrypted and padded by the engine;
this module adds only relay framing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import aiohttp
from nacl.signing import SigningKey

from protocol.errors import DecodeError, RemoteError
from protocol.relay_frames import (
    MAX_SEQ,
    MODE_QUEUE,
    MODE_SHARED_LOG,
    Ack,
    AuthRead,
    AuthWrite,
    BlobTicket,
    ClientConnection,
    Create,
    Deliver,
    Error,
    Frame,
    NotAuthorized,
    Ok,
    Post,
    Posted,
    RelayError,
    RotateWrite,
    Subscribe,
    Subscribed,
    UnknownMailbox,
    decode_server_frame,
)

log = logging.getLogger(__name__)

DeliverCallback = Callable[[str, bytes, int, bytes], Awaitable[None]]
StateCallback = Callable[[str, str], None]


class RelayUnavailable(RemoteError):
    """The relay could not be reached or the connection dropped mid-request."""

    code = 60


def public_key(seed: bytes) -> bytes:
    """The Ed25519 public key of a 32-byte seed."""
    return bytes(SigningKey(seed).verify_key)


def sign(seed: bytes, message: bytes) -> bytes:
    return SigningKey(seed).sign(message).signature


@dataclass(slots=True)
class _Subscription:
    read_seed: bytes
    write_seed: bytes | None  # lets us re-create a mailbox the relay lost
    next_seq: int  # the first seq not yet delivered
    shared: bool = False  # re-created as a shared log (a group's mailbox)


def websocket_url(url: str) -> str:
    base = url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return base + "/ws"


class RelayClient:
    """A supervised connection to one relay."""

    def __init__(
        self,
        url: str,
        on_deliver: DeliverCallback,
        *,
        on_state: StateCallback | None = None,
        proxy: str | None = None,
        request_timeout: float = 20.0,
        connect_timeout: float = 10.0,
        max_backoff: float = 30.0,
        access_token: bytes = b"",
    ) -> None:
        self.url = url.rstrip("/")
        self.state = "connecting"
        self._on_deliver = on_deliver
        self._on_state = on_state
        self._proxy = proxy
        self._request_timeout = request_timeout
        self._connect_timeout = connect_timeout
        self._max_backoff = max_backoff
        self._access_token = access_token
        self._subs: dict[bytes, _Subscription] = {}
        self._written: set[bytes] = set()  # mailboxes whose write key this connection proved
        self._pending: dict[int, asyncio.Future[object]] = {}
        self._conn = ClientConnection()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._connected = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._deliveries: asyncio.Queue[Deliver] = asyncio.Queue()
        self._dispatcher: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self.failures = 0

    # -- lifecycle ---------------------------------------------------------------

    def _make_session(self) -> aiohttp.ClientSession:
        connector: aiohttp.BaseConnector | None = None
        if self._proxy:
            from aiohttp_socks import ProxyConnector

            connector = ProxyConnector.from_url(self._proxy, rdns=True)
        timeout = aiohttp.ClientTimeout(total=None, connect=self._connect_timeout)
        return aiohttp.ClientSession(connector=connector, timeout=timeout)

    def start(self) -> None:
        if self._task is None:
            self._session = self._make_session()
            self._task = asyncio.create_task(self._supervise(), name=f"relay {self.url}")
            self._dispatcher = asyncio.create_task(self._dispatch(), name="deliveries")

    async def close(self) -> None:
        self._stop.set()
        for task in (self._task, self._dispatcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        self._fail_pending("client closed")

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self._on_state is not None:
                self._on_state(self.url, state)

    async def _supervise(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                await self._run_connection()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # network errors of every kind end up here
                log.debug("relay connection ended: %s", type(exc).__name__)
            self._connected.clear()
            self._ws = None
            self._written.clear()
            self._fail_pending("connection to the relay was lost")
            if self._stop.is_set():
                return
            self.failures += 1
            self._set_state("down")
            attempt += 1
            delay = min(self._max_backoff, 0.25 * 2 ** min(attempt, 10))
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            self._set_state("connecting")

    async def _run_connection(self) -> None:
        assert self._session is not None
        async with self._session.ws_connect(
            websocket_url(self.url), heartbeat=20.0, max_msg_size=4 * 1024 * 1024
        ) as ws:
            self._ws = ws
            self._conn = ClientConnection()
            first = await asyncio.wait_for(ws.receive(), self._connect_timeout)
            if first.type != aiohttp.WSMsgType.BINARY:
                raise RelayUnavailable("no challenge from the relay")
            self._conn.receive(first.data)
            reader = asyncio.create_task(self._read(ws))
            try:
                self._connected.set()
                for mailbox_id in list(self._subs):
                    try:
                        await self._resubscribe(mailbox_id)
                    except RelayError as exc:
                        if exc.fatal:
                            raise
                        log.warning("relay refused a subscription: %s", type(exc).__name__)
                self._set_state("connected")
                await reader
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                continue
            try:
                frame = self._conn.receive(msg.data)
            except DecodeError:
                log.warning("relay sent a malformed frame; reconnecting")
                return
            if isinstance(frame, Deliver):
                sub = self._subs.get(frame.mailbox_id)
                if frame.seq >= MAX_SEQ:
                    # no successor seq would fit a Subscribe: a broken or hostile relay
                    log.warning("relay sent an out-of-range sequence number; reconnecting")
                    return
                if sub is not None and frame.seq >= sub.next_seq:
                    sub.next_seq = frame.seq + 1
                    self._deliveries.put_nowait(frame)
                continue
            req_id = getattr(frame, "req_id", 0)
            future = self._pending.pop(req_id, None)
            if future is not None and not future.done():
                future.set_result(frame)
            elif isinstance(frame, Error) and frame.to_exception().fatal:
                return

    async def _dispatch(self) -> None:
        """Hand deliveries to the engine one at a time, in relay order.

        Stops once closing even if a cancellation was lost inside the engine
        (``asyncio.wait_for`` before Python 3.12 can swallow one that races
        with its result), so :meth:`close` cannot wait for ever."""
        while not self._stop.is_set():
            frame = await self._deliveries.get()
            try:
                await self._on_deliver(self.url, frame.mailbox_id, frame.seq, frame.envelope)
            except Exception:
                log.exception("handling a delivered envelope failed")

    def _fail_pending(self, reason: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RelayUnavailable(reason))
        self._pending.clear()

    # -- requests ------------------------------------------------------------------

    async def _request(self, build: Callable[[int], Frame]) -> object:
        if self.state == "down" and not self._connected.is_set():
            # between reconnection attempts: fail fast, the caller retries later
            raise RelayUnavailable(f"relay {self.url} is down")
        try:
            await asyncio.wait_for(self._connected.wait(), self._request_timeout)
        except TimeoutError:
            raise RelayUnavailable(f"relay {self.url} is not reachable") from None
        ws = self._ws
        if ws is None:
            raise RelayUnavailable("connection to the relay was lost")
        req_id = self._conn.next_req_id()
        frame = build(req_id)
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = future
        async with self._send_lock:
            try:
                await ws.send_bytes(self._conn.send(frame))
            except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
                self._pending.pop(req_id, None)
                raise RelayUnavailable(f"sending to the relay failed: {exc}") from None
        try:
            reply = await asyncio.wait_for(future, self._request_timeout)
        except TimeoutError:
            self._pending.pop(req_id, None)
            raise RelayUnavailable(f"relay {self.url} did not answer in time") from None
        if isinstance(reply, Error):
            raise reply.to_exception()
        return reply

    async def create_mailbox(
        self,
        mailbox_id: bytes,
        read_seed: bytes,
        write_seed: bytes,
        ttl_seconds: int = 0,
        *,
        shared: bool = False,
    ) -> None:
        """Create a mailbox: a queue (an ack deletes; our inbox) or, with
        ``shared``, a shared log (acks never delete; a group's mailbox)."""
        reply = await self._request(
            lambda r: Create(
                r,
                mailbox_id,
                public_key(read_seed),
                public_key(write_seed),
                ttl_seconds,
                self._access_token,
                MODE_SHARED_LOG if shared else MODE_QUEUE,
            )
        )
        assert isinstance(reply, Ok)

    async def subscribe(
        self,
        mailbox_id: bytes,
        read_seed: bytes,
        from_seq: int = 0,
        *,
        write_seed: bytes | None = None,
        shared: bool = False,
    ) -> None:
        """Register a subscription; it is (re)established on every connection.

        With ``write_seed``, a mailbox the relay does not know (never created
        there, or lost) is created again (a shared log if ``shared``), so the
        conversation goes on."""
        self._subs[mailbox_id] = _Subscription(read_seed, write_seed, from_seq, shared)
        if self._connected.is_set():
            await self._resubscribe(mailbox_id)

    async def _resubscribe(self, mailbox_id: bytes) -> None:
        sub = self._subs[mailbox_id]

        def auth(req_id: int) -> Frame:
            payload = self._conn.auth_payload("auth-read", mailbox_id)
            return AuthRead(req_id, mailbox_id, sign(sub.read_seed, payload))

        try:
            await self._request(auth)
        except UnknownMailbox:
            if sub.write_seed is None:
                raise
            await self.create_mailbox(mailbox_id, sub.read_seed, sub.write_seed, shared=sub.shared)
            await self._request(auth)
        reply = await self._request(lambda r: Subscribe(r, mailbox_id, sub.next_seq))
        assert isinstance(reply, Subscribed)

    def subscribed(self, mailbox_id: bytes) -> bool:
        """Whether a subscription to ``mailbox_id`` is registered."""
        return mailbox_id in self._subs

    def next_seq(self, mailbox_id: bytes) -> int:
        sub = self._subs.get(mailbox_id)
        return sub.next_seq if sub else 0

    async def post(
        self, mailbox_id: bytes, write_seed: bytes, msg_id: bytes, envelope: bytes
    ) -> int:
        """Append ``envelope``; returns its relay sequence number.  Idempotent
        by ``msg_id``: a retry returns the original number.  The write key is
        proved once per connection; if the relay has since seen the key
        rotated, it is proved again (once) with ``write_seed``."""
        for attempt in (1, 2):
            if mailbox_id not in self._written:

                def auth(req_id: int) -> Frame:
                    payload = self._conn.auth_payload("auth-write", mailbox_id)
                    return AuthWrite(req_id, mailbox_id, sign(write_seed, payload))

                await self._request(auth)
                self._written.add(mailbox_id)
            try:
                reply = await self._request(lambda r: Post(r, mailbox_id, msg_id, envelope))
            except NotAuthorized:
                self._written.discard(mailbox_id)
                if attempt == 2:
                    raise
                continue
            assert isinstance(reply, Posted)
            return reply.seq
        raise AssertionError("unreachable")

    async def ack(self, mailbox_id: bytes, up_to_seq: int) -> None:
        await self._request(lambda r: Ack(r, mailbox_id, up_to_seq))

    async def rotate_write(self, mailbox_id: bytes, old_seed: bytes, new_seed: bytes) -> None:
        new_key = public_key(new_seed)

        def rotate(req_id: int) -> Frame:
            payload = self._conn.auth_payload("rotate-write", mailbox_id, new_key)
            return RotateWrite(req_id, mailbox_id, new_key, sign(old_seed, payload))

        await self._request(rotate)
        self._written.discard(mailbox_id)

    # -- blobs (HTTP) -------------------------------------------------------------------

    async def upload_blob(self, chunks: Iterable[bytes]) -> tuple[bytes, bytes]:
        """Create a blob and upload its chunks; returns (blob_id, read_token)."""
        if self._session is None:
            self._session = self._make_session()
        headers = {}
        if self._access_token:
            headers["Authorization"] = "Bearer " + self._access_token.hex()
        try:
            async with self._session.post(f"{self.url}/blob", headers=headers) as resp:
                body = await resp.read()
                if resp.status != 201:
                    raise _http_error(resp.status, body)
            ticket = BlobTicket.decode(body)
            auth = {"Authorization": "Bearer " + ticket.upload_token.hex()}
            for index, chunk in enumerate(chunks):
                url = f"{self.url}/blob/{ticket.blob_id.hex()}/{index}"
                async with self._session.put(url, data=chunk, headers=auth) as resp:
                    body = await resp.read()
                    if resp.status not in (200, 201, 204):
                        raise _http_error(resp.status, body)
        except aiohttp.ClientError as exc:
            raise RelayUnavailable(f"blob upload to {self.url} failed: {exc}") from None
        return ticket.blob_id, ticket.read_token

    async def download_chunk(self, blob_id: bytes, index: int, read_token: bytes) -> bytes:
        if self._session is None:
            self._session = self._make_session()
        url = f"{self.url}/blob/{blob_id.hex()}/{index}"
        headers = {"Authorization": "Bearer " + read_token.hex()}
        try:
            async with self._session.get(url, headers=headers) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise _http_error(resp.status, body)
                return body
        except aiohttp.ClientError as exc:
            raise RelayUnavailable(f"blob download from {self.url} failed: {exc}") from None


def _http_error(status: int, body: bytes) -> RemoteError:
    """The typed error an HTTP refusal carries (an encoded Error frame)."""
    try:
        frame = decode_server_frame(body)
    except DecodeError:
        return RelayError(f"relay answered HTTP {status}")
    if isinstance(frame, Error):
        return frame.to_exception()
    return RelayError(f"relay answered HTTP {status}")
