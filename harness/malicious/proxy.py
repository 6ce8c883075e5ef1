"""The malicious relay: a fault-injecting WebSocket + HTTP proxy in front of a
real relay.

Theory of operation
-------------------
Each client WebSocket at ``{listen}/…/ws`` is paired with one WebSocket to
``{upstream}/…/ws``.  Two pumps parse every frame with
:mod:`protocol.relay_frames` (client frames one way, relay frames the other)
and pass the bytes on, except where a :class:`~harness.malicious.faults.Fault`
decides otherwise.  The proxy sees exactly what a relay sees: mailbox ids,
which connection proved which read key, sizes and timing; envelopes are
sealed per mailbox (``protocol/app/sealed.py``), so it can only drop, delay,
reorder, duplicate, replay, alter or forge them, never read them.

Sequence numbers.  The client ignores a ``Deliver`` whose seq is not above the
last one it saw, so a fault that adds frames (duplicate, replay, inject) needs
fresh numbers.  When such a fault is configured the proxy multiplies every
upstream seq by ``STRIDE`` on the way to the client (``Deliver``, ``Posted``,
``Subscribed``) and divides on the way back (``Subscribe.from_seq`` rounded up,
``Ack.up_to_seq`` rounded down); injected frames take the numbers in between.
SPEC.md §7.7 allows non-contiguous seqs, so an honest client cannot tell.
Reorder and fork keep the numbers in increasing order and permute the
envelopes instead, which is what a relay serving different orders does.

Output to each client goes through one FIFO with release times (delays keep
the order of a connection); held frames (reorder, fork) wait in per-mailbox
buffers that a timer flushes.

It also records, for the duplicate-detection scenario, the SHA-256 of every
posted envelope and every uploaded blob chunk, and every blob id issued: a
relay doing hash-based censorship would key on exactly these.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from harness.malicious.faults import (
    INJECTING,
    ConnInfo,
    Fault,
    FaultLog,
    fault_rngs,
)
from protocol.errors import DecodeError
from protocol.padding import ENVELOPE_BUCKETS, bucket_for
from protocol.relay_frames import (
    Ack,
    AuthRead,
    BlobTicket,
    Credit,
    Deliver,
    Post,
    Posted,
    PostSigned,
    Subscribe,
    Subscribed,
    decode_client_frame,
    decode_server_frame,
    encode_deliver,
)

log = logging.getLogger(__name__)

STRIDE = 1000
MAX_FRAME = 4 * 1024 * 1024
HOLD_FLUSH = 0.3  # seconds a reorder buffer waits before sending what it holds
HISTORY = 256  # envelopes remembered per mailbox for replays


@dataclass
class TrafficStats:
    """What went through, per direction, for the run report."""

    connections: int = 0
    refused: int = 0
    posts: int = 0
    delivers_in: int = 0
    delivers_out: int = 0
    blob_chunks: int = 0
    # sha256(envelope) -> {(mailbox, msg_id)}; sha256(chunk) -> {(blob, index)}
    envelope_hashes: dict[bytes, set[tuple[bytes, bytes]]] = field(
        default_factory=lambda: defaultdict(set)
    )
    chunk_hashes: dict[bytes, set[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(set)
    )
    blob_ids: list[bytes] = field(default_factory=list)
    # (t, conn, mailbox prefix, upstream seq, size) of every Deliver sent to a client
    deliveries: list[tuple[float, int, str, int, int]] = field(default_factory=list)

    def repeats(self) -> dict[str, int]:
        env = sum(1 for s in self.envelope_hashes.values() if len(s) > 1)
        chunks = sum(1 for s in self.chunk_hashes.values() if len(s) > 1)
        ids = len(self.blob_ids) - len(set(self.blob_ids))
        return {"envelopes": env, "blob_chunks": chunks, "blob_ids": ids}

    def summary(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "refused": self.refused,
            "posts": self.posts,
            "delivers_in": self.delivers_in,
            "delivers_out": self.delivers_out,
            "blob_chunks": self.blob_chunks,
            "distinct_envelopes": len(self.envelope_hashes),
            "distinct_chunks": len(self.chunk_hashes),
            "blob_ids": len(self.blob_ids),
            "repeats": self.repeats(),
        }


class _Held:
    """Deliver frames of one mailbox held back for one reader."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes]] = []  # (upstream seq, envelope)
        self.timer: asyncio.TimerHandle | None = None


class _Link:
    """One client WebSocket and its upstream twin."""

    def __init__(self, relay: MaliciousRelay, info: ConnInfo, ws: web.WebSocketResponse) -> None:
        self.relay = relay
        self.info = info
        self.ws = ws
        self.up: aiohttp.ClientWebSocketResponse | None = None
        self.out: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        self.last_release = 0.0
        self.last_seq: dict[bytes, int] = {}  # mailbox -> last proxy seq sent
        self.held: dict[bytes, _Held] = {}
        self.closed = False

    # -- output ---------------------------------------------------------------

    def send_now(self, data: bytes, delay: float = 0.0) -> None:
        release = max(time.monotonic() + delay, self.last_release)
        self.last_release = release
        self.out.put_nowait((release, data))

    async def writer(self) -> None:
        while True:
            item = await self.out.get()
            if item is None:
                return
            release, data = item
            wait = release - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.ws.closed:
                return
            try:
                await self.ws.send_bytes(data)
            except (ConnectionError, RuntimeError):
                return

    def deliver(self, mailbox_id: bytes, seq: int, envelope: bytes, delay: float) -> None:
        """Send one Deliver under proxy seq ``seq``."""
        self.last_seq[mailbox_id] = max(seq, self.last_seq.get(mailbox_id, 0))
        stats = self.relay.stats
        stats.delivers_out += 1
        stats.deliveries.append(
            (
                round(self.relay.log.elapsed(), 4),
                self.info.index,
                mailbox_id.hex()[:8],
                seq // self.relay.stride,
                len(envelope),
            )
        )
        self.send_now(encode_deliver(mailbox_id, seq, envelope), delay)

    def fresh_seq(self, mailbox_id: bytes) -> int | None:
        last = self.last_seq.get(mailbox_id, 0)
        if self.relay.stride == 1 or (last + 1) % self.relay.stride == 0:
            return None
        return last + 1


class MaliciousRelay:
    """A fault-injecting relay in front of ``upstream`` (an http(s) URL).

    ``await start()`` listens on ``host:port`` (port 0: a free one, see
    :attr:`url`); ``await stop()`` closes everything.  ``log`` holds every
    fault injected and ``stats`` the traffic.
    """

    def __init__(
        self,
        upstream: str,
        faults: list[Fault] | None = None,
        *,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = list(faults or [])
        self.seed = seed
        self.host = host
        self.port = port
        self.stride = STRIDE if any(f.kind in INJECTING for f in self.faults) else 1
        self._rngs = fault_rngs(seed, self.faults)
        self._misc_rng = random.Random(f"{seed}/proxy")
        self.log = FaultLog()
        self.stats = TrafficStats()
        self.history: dict[bytes, deque[bytes]] = defaultdict(lambda: deque(maxlen=HISTORY))
        self.links: set[_Link] = set()
        self._next_conn = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._dark_task: asyncio.Task[None] | None = None
        self.dark = False
        self.refusing = False
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> MaliciousRelay:
        self.log = FaultLog()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=10), auto_decompress=False
        )
        app = web.Application(client_max_size=MAX_FRAME)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        for fault in self.faults:
            if fault.kind == "dark":
                self._dark_task = asyncio.create_task(self._go_dark_at(fault))
        return self

    async def stop(self) -> None:
        if self._dark_task is not None:
            self._dark_task.cancel()
        for link in list(self.links):
            await self._close_link(link)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> MaliciousRelay:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def go_dark(self, mode: str = "close") -> None:
        """Stop answering (a relay that vanished or is blocked)."""
        self.dark = True
        self.log.add("dark", 0, None, detail=mode)
        for link in list(self.links):
            if mode == "close":
                self._spawn(self._close_link(link))
            else:
                link.closed = True  # blackhole: keep the socket, forward nothing

    def come_back(self) -> None:
        self.dark = False
        self.refusing = False

    async def _go_dark_at(self, fault: Fault) -> None:
        await asyncio.sleep(max(0.0, fault.after - self.log.elapsed()))
        self.go_dark(fault.mode)
        if fault.until != float("inf"):
            await asyncio.sleep(max(0.0, fault.until - self.log.elapsed()))
            self.dark = False

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- fault decisions ----------------------------------------------------------

    def _pick(
        self,
        kinds: tuple[str, ...],
        conn: ConnInfo | None,
        mailbox: bytes | None,
        size: int,
        direction: str = "deliver",
    ) -> Fault | None:
        """The first fault of ``kinds`` that fires for this frame (consumes rng)."""
        elapsed = self.log.elapsed()
        for fault, rng in zip(self.faults, self._rngs, strict=True):
            if fault.kind not in kinds or not fault.active(elapsed) or fault.exhausted():
                continue
            if fault.direction != direction:
                continue
            if not fault.matches(conn, mailbox, size):
                continue
            if fault.rate < 1.0 and rng.random() >= fault.rate:
                continue
            fault.injected += 1
            return fault
        return None

    def _rng_of(self, fault: Fault) -> random.Random:
        return self._rngs[self.faults.index(fault)]

    def _refused_now(self) -> bool:
        if self.dark or self.refusing:
            return True
        elapsed = self.log.elapsed()
        return any(f.kind == "refuse" and f.active(elapsed) for f in self.faults)

    # -- HTTP ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.dark:
            if any(f.kind == "dark" and f.mode == "blackhole" for f in self.faults):
                await asyncio.sleep(3600)
            return web.Response(status=502)
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, compress=False)
        if request.path.endswith("/ws") and ws.can_prepare(request).ok:
            if self._refused_now():
                self.stats.refused += 1
                self.log.add("refuse", 0, None, detail="websocket")
                return web.Response(status=503)
            return await self._websocket(request, ws)
        return await self._http(request)

    async def _http(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "content-type", "upgrade", "connection")
        }
        target = self.upstream + request.path_qs
        parts = request.path.rstrip("/").split("/")
        if request.method == "PUT" and len(parts) >= 3 and parts[-3] == "blob":
            self.stats.blob_chunks += 1
            self.stats.chunk_hashes[hashlib.sha256(body).digest()].add((parts[-2], parts[-1]))
        try:
            async with self._session.request(
                request.method, target, data=body or None, headers=headers
            ) as resp:
                data = await resp.read()
                out_headers = {
                    k: v for k, v in resp.headers.items() if k.lower() in ("content-type", "server")
                }
                if request.method == "POST" and parts[-1] == "blob" and resp.status == 201:
                    with contextlib.suppress(DecodeError):
                        self.stats.blob_ids.append(BlobTicket.decode(data).blob_id)
                return web.Response(status=resp.status, body=data, headers=out_headers)
        except aiohttp.ClientError:
            return web.Response(status=502)

    # -- WebSocket ------------------------------------------------------------------------

    async def _websocket(
        self, request: web.Request, ws: web.WebSocketResponse
    ) -> web.WebSocketResponse:
        assert self._session is not None
        self._next_conn += 1
        info = ConnInfo(self._next_conn, self.log.elapsed(), peer=request.remote or "")
        await ws.prepare(request)
        link = _Link(self, info, ws)
        up_url = self.upstream.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        try:
            link.up = await self._session.ws_connect(
                up_url + request.path, max_msg_size=MAX_FRAME, compress=0
            )
        except (aiohttp.ClientError, OSError):
            await ws.close(code=1011)
            return ws
        self.stats.connections += 1
        self.links.add(link)
        writer = asyncio.create_task(link.writer())
        down = asyncio.create_task(self._pump_down(link))
        try:
            await self._pump_up(link)
        finally:
            down.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await down
            link.out.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(writer, 2.0)
            await self._close_link(link)
        return ws

    async def _close_link(self, link: _Link) -> None:
        link.closed = True
        self.links.discard(link)
        for held in link.held.values():
            if held.timer is not None:
                held.timer.cancel()
        if link.up is not None and not link.up.closed:
            with contextlib.suppress(Exception):
                await link.up.close()
        if not link.ws.closed:
            with contextlib.suppress(Exception):
                await link.ws.close()

    async def _pump_up(self, link: _Link) -> None:
        """Client -> upstream."""
        assert link.up is not None
        async for msg in link.ws:
            if link.closed:
                if self.dark:
                    continue  # blackhole
                return
            if msg.type != aiohttp.WSMsgType.BINARY:
                await link.up.send_str(msg.data) if msg.type == aiohttp.WSMsgType.TEXT else None
                continue
            data = msg.data
            try:
                frame = decode_client_frame(data)
            except DecodeError:
                await link.up.send_bytes(data)
                continue
            if isinstance(frame, AuthRead):
                link.info.reads.add(frame.mailbox_id)
            elif isinstance(frame, Subscribe):
                link.info.reads.add(frame.mailbox_id)
                if self.stride > 1:
                    from_seq = -(-frame.from_seq // self.stride)
                    data = Subscribe(frame.req_id, frame.mailbox_id, from_seq).encode()
            elif isinstance(frame, Ack) and self.stride > 1:
                data = Ack(frame.req_id, frame.mailbox_id, frame.up_to_seq // self.stride).encode()
            elif isinstance(frame, (Post, PostSigned)):
                self.stats.posts += 1
                digest = hashlib.sha256(frame.envelope).digest()
                self.stats.envelope_hashes[digest].add((frame.mailbox_id, frame.msg_id))
                fault = self._pick(("drop", "tamper"), link.info, frame.mailbox_id, 0, "post")
                if fault is not None:
                    if fault.kind == "drop":
                        self.log.add("drop", link.info.index, frame.mailbox_id, 0, "fake-acked")
                        head = link.last_seq.get(frame.mailbox_id, 0) // self.stride
                        link.send_now(Posted(frame.req_id, (head + 1) * self.stride).encode())
                        continue
                    env = _flip(frame.envelope, self._rng_of(fault))
                    self.log.add("tamper", link.info.index, frame.mailbox_id, 0, "stored altered")
                    data = type(frame)(*_replace_envelope(frame, env)).encode()
            await link.up.send_bytes(data)

    async def _pump_down(self, link: _Link) -> None:
        """Upstream -> client."""
        assert link.up is not None
        async for msg in link.up:
            if link.closed:
                return
            if msg.type != aiohttp.WSMsgType.BINARY:
                continue
            data = msg.data
            try:
                frame = decode_server_frame(data)
            except DecodeError:
                link.send_now(data)
                continue
            if isinstance(frame, Deliver):
                self.stats.delivers_in += 1
                if not self._on_deliver(link, frame):
                    # The client never sees it, so never returns its credit:
                    # return it upstream ourselves, or the relay would stop
                    # sending once drops add up to a window (SPEC §7.6).
                    with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
                        await link.up.send_bytes(Credit(len(data)).encode())
                continue
            if self.stride > 1:
                if isinstance(frame, Posted):
                    data = Posted(frame.req_id, frame.seq * self.stride, frame.duplicate).encode()
                elif isinstance(frame, Subscribed):
                    data = Subscribed(frame.req_id, frame.head_seq * self.stride).encode()
            link.send_now(data)
        # upstream closed: close the client side too
        await link.ws.close()

    def _on_deliver(self, link: _Link, frame: Deliver) -> bool:
        """Forward (now or later, maybe altered) or drop; False: dropped."""
        info, mb, env, seq = link.info, frame.mailbox_id, frame.envelope, frame.seq
        size = len(env)
        drop = self._pick(("drop", "withhold"), info, mb, size)
        if drop is not None:
            self.log.add(drop.kind, info.index, mb, seq)
            self.history[mb].append(env)
            return False
        tamper = self._pick(("tamper",), info, mb, size)
        if tamper is not None:
            env = _flip(env, self._rng_of(tamper))
            self.log.add("tamper", info.index, mb, seq, "delivered altered")
        delay = 0.0
        slow = self._pick(("delay",), info, mb, size)
        if slow is not None:
            delay = slow.seconds + self._rng_of(slow).uniform(0, slow.jitter)
            self.log.add("delay", info.index, mb, seq, f"{delay:.3f}s")
        held = link.held.get(mb)
        holder = self._holder(info, mb, size)
        if held is not None or holder is not None:
            self._hold(link, mb, seq, env, delay)
        else:
            self._emit(link, mb, seq * self.stride, env, delay)
        self.history[mb].append(frame.envelope)
        return True

    def _holder(self, info: ConnInfo, mb: bytes, size: int) -> Fault | None:
        elapsed = self.log.elapsed()
        for fault in self.faults:
            if fault.kind not in ("reorder", "fork") or not fault.active(elapsed):
                continue
            if fault.exhausted() or not fault.matches(info, mb, size):
                continue
            return fault
        return None

    def _hold(self, link: _Link, mb: bytes, seq: int, env: bytes, delay: float) -> None:
        held = link.held.setdefault(mb, _Held())
        held.frames.append((seq, env))
        loop = asyncio.get_running_loop()
        fault = self._holder(link.info, mb, len(held.frames[0][1]))
        if fault is None:
            self._release(link, mb, delay, None)
            return
        if fault.kind == "reorder":
            if len(held.frames) >= fault.window:
                self._release(link, mb, delay, fault)
            elif held.timer is None:
                held.timer = loop.call_later(HOLD_FLUSH, self._release, link, mb, delay, fault)
            return
        # fork: swap the first two large envelopes held
        big = [i for i, (_, e) in enumerate(held.frames) if len(e) >= fault.min_size]
        if len(big) >= 2:
            self._release(link, mb, delay, fault)
        elif held.timer is None:
            held.timer = loop.call_later(fault.seconds, self._release, link, mb, delay, None)

    def _release(self, link: _Link, mb: bytes, delay: float, fault: Fault | None) -> None:
        held = link.held.pop(mb, None)
        if held is None or link.closed:
            return
        if held.timer is not None:
            held.timer.cancel()
        seqs = [s for s, _ in held.frames]
        envs = [e for _, e in held.frames]
        if fault is not None and fault.kind == "reorder" and len(envs) > 1:
            order = list(range(len(envs)))
            self._rng_of(fault).shuffle(order)
            if order != sorted(order):
                fault.injected += 1
                self.log.add("reorder", link.info.index, mb, seqs[0], f"order {order}")
            envs = [envs[i] for i in order]
        elif fault is not None and fault.kind == "fork":
            big = [i for i, e in enumerate(envs) if len(e) >= fault.min_size][:2]
            if len(big) == 2:
                i, j = big
                envs[i], envs[j] = envs[j], envs[i]
                fault.injected += 1
                self.log.add(
                    "fork", link.info.index, mb, seqs[i], f"swapped seq {seqs[i]}<->{seqs[j]}"
                )
        for seq, env in zip(seqs, envs, strict=True):
            self._emit(link, mb, seq * self.stride, env, delay)

    def _emit(self, link: _Link, mb: bytes, seq: int, env: bytes, delay: float) -> None:
        """Send one Deliver, then whatever injecting faults add after it."""
        link.deliver(mb, seq, env, delay)
        info, size = link.info, len(env)
        for kind in ("duplicate", "replay", "inject"):
            fault = self._pick((kind,), info, mb, size)
            if fault is None:
                continue
            fresh = link.fresh_seq(mb)
            if fresh is None:
                fault.injected -= 1
                continue
            rng = self._rng_of(fault)
            upstream_seq = seq // self.stride
            if kind == "duplicate":
                extra, detail = env, "same envelope again"
            elif kind == "replay":
                older = [e for e in self.history[mb] if e != env]
                if not older:
                    fault.injected -= 1
                    continue
                extra, detail = rng.choice(older), "older envelope again"
            else:
                bucket = bucket_for(size) if size <= ENVELOPE_BUCKETS[-1] else size
                extra, detail = rng.randbytes(bucket), "forged envelope"
            self.log.add(kind, info.index, mb, upstream_seq, f"{detail} as proxy seq {fresh}")
            link.deliver(mb, fresh, extra, delay)


def _flip(envelope: bytes, rng: random.Random) -> bytes:
    if not envelope:
        return envelope
    pos = rng.randrange(len(envelope))
    out = bytearray(envelope)
    out[pos] ^= 1 << rng.randrange(8)
    return bytes(out)


def _replace_envelope(frame: Post | PostSigned, env: bytes) -> tuple[Any, ...]:
    if isinstance(frame, Post):
        return (frame.req_id, frame.mailbox_id, frame.msg_id, env)
    return (frame.req_id, frame.mailbox_id, frame.msg_id, env, frame.signature)
