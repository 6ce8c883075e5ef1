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

Flow control (SPEC.md §7.6): the relay sends ``Deliver`` frames only while it
holds credit from us.  Each frame's encoded length is returned in a
``Credit`` frame once the engine has *handled* it (or at once when it is
ignored), batched by :data:`CREDIT_BATCH`, so what is on the wire and in
:attr:`_deliveries` stays within ``INITIAL_CREDIT`` plus one frame however
large the relay's backlog is, and the relay never sees us as a slow consumer.
Credit belongs to one connection: frames of an earlier one return nothing.

Everything that leaves here is already encrypted and padded by the engine;
this module adds only relay framing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from nacl.signing import SigningKey

from protocol.errors import DecodeError, RemoteError
from protocol.padding import BLOB_CHUNK_SIZE
from protocol.relay_frames import (
    INITIAL_CREDIT,
    MAX_SEQ,
    MODE_QUEUE,
    MODE_SHARED_LOG,
    Ack,
    AuthRead,
    AuthWrite,
    BlobTicket,
    ClientConnection,
    Create,
    Credit,
    DeleteMailbox,
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
    Unsubscribe,
    decode_server_frame,
)

if TYPE_CHECKING:
    import aiohttp
else:  # imported at the first connection: commands that stay offline skip it
    from client.lazy import lazy_module

    aiohttp = lazy_module("aiohttp")

log = logging.getLogger(__name__)

T = TypeVar("T", bound="asyncio.Task[Any]")

# The longest each shutdown step may take (RelayClient.close).
CLOSE_TIMEOUT = 2.0

DeliverCallback = Callable[[str, bytes, int, bytes], Awaitable[None]]
StateCallback = Callable[[str, str], None]

# A blob chunk download: 256 KiB at 2 KiB/s is about 2 minutes, so a relay
# that trickles bytes cannot hold a download for longer than that.
_CHUNK_TIMEOUT = {"total": 120, "sock_read": 30}  # aiohttp.ClientTimeout's
_MAX_ERROR_BODY = 4096  # an encoded Error frame is a few dozen bytes


class RelayUnavailable(RemoteError):
    """The relay could not be reached or the connection dropped mid-request."""

    code = 60


class BlobTooLarge(RemoteError):
    """A blob download answered with more bytes than one chunk (SPEC §8.7)."""

    code = 61


def public_key(seed: bytes) -> bytes:
    """The Ed25519 public key of a 32-byte seed."""
    return bytes(SigningKey(seed).verify_key)


def sign(seed: bytes, message: bytes) -> bytes:
    return SigningKey(seed).sign(message).signature


# Return credit to the relay in steps of this many bytes (a quarter window:
# the relay never runs dry while the engine keeps up).
CREDIT_BATCH = INITIAL_CREDIT // 4


@dataclass(slots=True)
class _Subscription:
    read_seed: bytes
    write_seed: bytes | None  # lets us re-create a mailbox the relay lost
    next_seq: int  # the first seq not yet delivered
    shared: bool = False  # re-created as a shared log (a group's mailbox)


_PROXY_SCHEMES = ("socks5://", "socks5h://")
_PROXY_OFF = ("", "none", "off", "direct")


def proxy_setting(text: str) -> str:
    """A proxy setting as saved in the profile: ``""`` for none (``none``,
    ``off``), else a ``socks5://[user:pass@]host:port`` URL.

    Only SOCKS5 is accepted, and host names are always resolved by the proxy
    (``socks5h`` behaviour whichever scheme is written): with a proxy set, the
    client never asks its own resolver for a relay's name (SPEC.md §7.1)."""
    value = text.strip()
    if value.lower() in _PROXY_OFF:
        return ""
    if not value.lower().startswith(_PROXY_SCHEMES):
        raise ValueError(f"unsupported proxy {value!r}: use socks5://HOST:PORT, or 'none'")
    from python_socks import parse_proxy_url

    try:
        _, host, port, _, _ = parse_proxy_url("socks5://" + value.split("://", 1)[1])
    except ValueError as exc:
        raise ValueError(f"bad proxy URL {value!r}: {exc}") from None
    if not host or not 0 < port < 65536:
        raise ValueError(f"bad proxy URL {value!r}: a host and a port are needed")
    return value


def isolated_proxy_url(proxy: str) -> str:
    """``proxy`` as a ``socks5://`` URL with a fresh random username and
    password, unless it names its own (an authenticating proxy's, kept): one
    per connection, so Tor (``IsolateSOCKSAuth``, on by default) builds each
    connection its own circuit and exit (SPEC.md §7.1)."""
    rest = proxy_setting(proxy).split("://", 1)[1]
    if "@" in rest:
        return "socks5://" + rest
    return f"socks5://{secrets.token_hex(8)}:{secrets.token_hex(8)}@{rest}"


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
        renew_after: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        fail_fast: bool = False,
        local_addr: str | None = None,
    ) -> None:
        """``renew_after`` gives each connection's lifetime in seconds (drawn
        anew per connection, with jitter): then it is closed and a new one
        opened, on a new circuit (SPEC.md §7.1).  ``rng`` draws the
        reconnection jitter (injected so tests are deterministic).  With
        ``fail_fast``, a request waiting for the connection fails as soon as
        an attempt fails (a short-lived connection: the caller retries).
        ``local_addr`` binds direct connections to that source address (the
        test harness gives each simulated user one)."""
        self.url = url.rstrip("/")
        self.state = "connecting"
        self._on_deliver = on_deliver
        self._on_state = on_state
        self._proxy = proxy
        self._request_timeout = request_timeout
        self._connect_timeout = connect_timeout
        self._max_backoff = max_backoff
        self._access_token = access_token
        self._renew_after = renew_after
        self._rng = rng or random.Random()
        self._fail_fast = fail_fast
        self._local_addr = local_addr
        self._down = asyncio.Event()  # set while the state is "down"
        self._subs: dict[bytes, _Subscription] = {}
        self._written: set[bytes] = set()  # mailboxes whose write key this connection proved
        self._pending: dict[int, asyncio.Future[object]] = {}
        self._conn = ClientConnection()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None  # blobs (HTTP)
        self._ws_session: aiohttp.ClientSession | None = None  # the current connection's
        # the newest head_seq each Subscribed reported (SPEC.md §7.5)
        self.heads: dict[bytes, int] = {}
        self.connections = 0  # connections opened so far
        self.handling = False  # the engine is handling one of our deliveries
        self._connected = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # (frame, its encoded length, the connection generation it came on)
        self._deliveries: asyncio.Queue[tuple[Deliver, int, int]] = asyncio.Queue()
        self._generation = 0
        self._credit_due = 0  # handled bytes not yet returned to the relay
        self._dispatcher: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self.failures = 0

    # -- lifecycle ---------------------------------------------------------------

    def _make_session(self) -> aiohttp.ClientSession:
        """An HTTP session: one per WebSocket connection, one for the blob
        requests of this client.  With a proxy, its connector resolves nothing
        locally: the relay's host name goes to the SOCKS5 proxy as a name
        (remote DNS), and there is no fallback to a direct connection if the
        proxy fails.  Each session gets its own random SOCKS5 username and
        password (:func:`isolated_proxy_url`), so Tor's ``IsolateSOCKSAuth``
        puts it on its own circuit (SPEC.md §7.1)."""
        connector: aiohttp.BaseConnector | None = None
        if self._proxy:
            from aiohttp_socks import ProxyConnector

            connector = ProxyConnector.from_url(isolated_proxy_url(self._proxy), rdns=True)
        elif self._local_addr:
            connector = aiohttp.TCPConnector(local_addr=(self._local_addr, 0))
        timeout = aiohttp.ClientTimeout(total=None, connect=self._connect_timeout)
        # trust_env=False: an HTTP(S)_PROXY variable never replaces the setting
        return aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False)

    @property
    def started(self) -> bool:
        """Whether :meth:`start` was called (a connection may be under way)."""
        return self._task is not None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"relay {self.url}")
            self._dispatcher = asyncio.create_task(self._dispatch(), name="deliveries")

    async def close(self) -> None:
        """Stop for good, in bounded time, whatever the tasks are doing.

        Order: stop flag, cancel the supervisor and the dispatcher and wait
        for them (bounded), close the WebSocket (bounded) and the HTTP session
        (which aborts every socket, so a read still pending ends), wait for
        the tasks again (bounded), fail what is still waiting for a reply.
        A cancellation alone is not enough: on Python 3.11 ``wait_for`` may
        swallow it when its inner future completes in the same iteration, and
        the supervisor then waits on a read that only a closed socket ends.
        """
        self._stop.set()
        tasks = [t for t in (self._task, self._dispatcher) if t is not None and not t.done()]
        pending = await cancel_and_wait(tasks, CLOSE_TIMEOUT)
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT)
        for session in (self._ws_session, self._session):
            if session is not None and not session.closed:
                await session.close()
        self._ws_session = self._session = None
        if pending:
            pending = await cancel_and_wait(pending, CLOSE_TIMEOUT)
            if pending:
                log.warning("%d relay task(s) did not stop", len(pending))
        self._fail_pending("client closed")

    def _set_state(self, state: str) -> None:
        if state == "down":
            self._down.set()
        else:
            self._down.clear()
        if state != self.state:
            self.state = state
            if self._on_state is not None:
                self._on_state(self.url, state)

    async def _supervise(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            renewed = False
            try:
                renewed = await self._run_connection()
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
            if renewed:
                # a planned renewal: a new connection (and circuit) at once,
                # the state stays "connected" for the engine meanwhile
                continue
            self.failures += 1
            self._set_state("down")
            attempt += 1
            delay = min(self._max_backoff, 0.25 * 2 ** min(attempt, 10))
            await asyncio.sleep(delay * self._rng.uniform(0.5, 1.5))
            self._set_state("connecting")

    async def _run_connection(self) -> bool:
        """One connection, until it drops (False) or is due for renewal (True)."""
        session, self._ws_session = self._ws_session, self._make_session()
        if session is not None:
            await session.close()  # the previous connection's (and circuit's)
        self.connections += 1
        # The upgrade's answer is bounded too: a relay (or a censor's middlebox)
        # that accepts the TCP connection and then says nothing is "down".
        ws = await asyncio.wait_for(
            self._ws_session.ws_connect(
                websocket_url(self.url), heartbeat=20.0, max_msg_size=4 * 1024 * 1024
            ),
            self._connect_timeout,
        )
        async with ws:
            self._ws = ws
            self._conn = ClientConnection()
            self._generation += 1
            self._credit_due = 0
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
                lifetime = self._renew_after() if self._renew_after is not None else None
                try:
                    await asyncio.wait_for(asyncio.shield(reader), lifetime)
                except TimeoutError:
                    return True  # due for renewal; the reader is cancelled below
                return False
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
                    self._deliveries.put_nowait((frame, len(msg.data), self._generation))
                else:
                    await self._return_credit(len(msg.data), self._generation)
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
            frame, size, generation = await self._deliveries.get()
            self.handling = True
            try:
                await self._on_deliver(self.url, frame.mailbox_id, frame.seq, frame.envelope)
            except Exception:
                log.exception("handling a delivered envelope failed")
            finally:
                self.handling = False
            await self._return_credit(size, generation)

    async def _return_credit(self, size: int, generation: int) -> None:
        """Give ``size`` bytes of handled Deliver frames back to the relay
        (SPEC.md §7.6), in batches; a lost connection's frames return nothing."""
        if generation != self._generation:
            return
        self._credit_due += size
        ws = self._ws
        if self._credit_due < CREDIT_BATCH or ws is None:
            return
        amount, self._credit_due = self._credit_due, 0
        async with self._send_lock:
            if generation != self._generation or ws.closed:
                return
            try:
                await ws.send_bytes(Credit(amount).encode())
            except (ConnectionError, RuntimeError, aiohttp.ClientError):
                return  # the supervisor sees the connection drop and reconnects

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
        await self.wait_connected()
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

    async def wait_connected(self) -> None:
        """Wait (up to ``request_timeout``) for the connection, or RelayUnavailable
        (at the first failed attempt with ``fail_fast``)."""
        if self._connected.is_set():
            return
        if not self._fail_fast:
            try:
                await asyncio.wait_for(self._connected.wait(), self._request_timeout)
            except TimeoutError:
                raise RelayUnavailable(f"relay {self.url} is not reachable") from None
            return
        waits = [asyncio.ensure_future(e.wait()) for e in (self._connected, self._down)]
        try:
            await asyncio.wait(
                waits, timeout=self._request_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for w in waits:
                w.cancel()
        if not self._connected.is_set():
            raise RelayUnavailable(f"relay {self.url} is not reachable")

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

    def register(
        self,
        mailbox_id: bytes,
        read_seed: bytes,
        from_seq: int = 0,
        write_seed: bytes | None = None,
        shared: bool = False,
    ) -> None:
        """Register a subscription before :meth:`start`: established on every connection."""
        self._subs[mailbox_id] = _Subscription(read_seed, write_seed, from_seq, shared)

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
        self.heads[mailbox_id] = reply.head_seq

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

    # -- mailbox ownership (invites, SPEC.md §8.5) ------------------------------------

    async def prove_write(self, mailbox_id: bytes, write_seed: bytes) -> None:
        """AuthWrite only: raises the relay's refusal (``UnknownMailbox`` for a
        deleted mailbox, ``BadSignature`` for a revoked write key)."""

        def auth(req_id: int) -> Frame:
            payload = self._conn.auth_payload("auth-write", mailbox_id)
            return AuthWrite(req_id, mailbox_id, sign(write_seed, payload))

        await self._request(auth)
        self._written.add(mailbox_id)

    async def unsubscribe(self, mailbox_id: bytes) -> None:
        """Stop reading a mailbox (and never re-create it on reconnect)."""
        if self._subs.pop(mailbox_id, None) is not None and self._connected.is_set():
            with contextlib.suppress(RelayUnavailable, RelayError):
                await self._request(lambda r: Unsubscribe(r, mailbox_id))

    async def delete_mailbox(self, mailbox_id: bytes, read_seed: bytes) -> None:
        """Delete a mailbox we own (signed with its read key); an already
        absent mailbox counts as deleted."""
        self._subs.pop(mailbox_id, None)
        self._written.discard(mailbox_id)

        def delete(req_id: int) -> Frame:
            payload = self._conn.auth_payload("delete-mailbox", mailbox_id)
            return DeleteMailbox(req_id, mailbox_id, sign(read_seed, payload))

        with contextlib.suppress(UnknownMailbox):
            await self._request(delete)

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

    async def download_chunk(
        self, blob_id: bytes, index: int, read_token: bytes, limit: int = BLOB_CHUNK_SIZE
    ) -> bytes:
        """One chunk of a blob, at most ``limit`` bytes.

        The body is streamed and the download abandoned as soon as it passes
        ``limit`` (a declared ``Content-Length`` above it is refused before
        reading): a relay, or a server a hostile sender named, cannot make
        the client hold more than one chunk (SPEC §8.7).  ``BlobTooLarge``
        then; the caller may try another copy.
        """
        if self._session is None:
            self._session = self._make_session()
        url = f"{self.url}/blob/{blob_id.hex()}/{index}"
        headers = {"Authorization": "Bearer " + read_token.hex()}
        try:
            timeout = aiohttp.ClientTimeout(**_CHUNK_TIMEOUT)
            async with self._session.get(url, headers=headers, timeout=timeout) as resp:
                cap = limit if resp.status == 200 else _MAX_ERROR_BODY
                if resp.content_length is not None and resp.content_length > cap:
                    raise BlobTooLarge(
                        f"{self.url} declared {resp.content_length} bytes for a chunk,"
                        f" more than {cap} bytes"
                    )
                body = bytearray()
                async for piece in resp.content.iter_chunked(64 * 1024):
                    body += piece
                    if len(body) > cap:
                        raise BlobTooLarge(f"{self.url} sent more than {cap} bytes for a chunk")
                if resp.status != 200:
                    raise _http_error(resp.status, bytes(body))
                return bytes(body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RelayUnavailable(f"blob download from {self.url} failed: {exc}") from None


async def cancel_and_wait(tasks: Iterable[T], timeout: float) -> list[T]:
    """Cancel ``tasks`` (again every 0.1 s) until done or ``timeout``; the rest."""
    tasks = list(tasks)
    waiting = [t for t in tasks if not t.done()]
    deadline = asyncio.get_running_loop().time() + timeout
    while waiting:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            break
        for task in waiting:
            task.cancel()
        await asyncio.wait(waiting, timeout=min(0.1, left))
        waiting = [t for t in waiting if not t.done()]
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a task's own failure is no shutdown error
    return waiting


def _http_error(status: int, body: bytes) -> RemoteError:
    """The typed error an HTTP refusal carries (an encoded Error frame)."""
    try:
        frame = decode_server_frame(body)
    except DecodeError:
        return RelayError(f"relay answered HTTP {status}")
    if isinstance(frame, Error):
        return frame.to_exception()
    return RelayError(f"relay answered HTTP {status}")
