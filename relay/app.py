"""The aiohttp application: ``create_app(config) -> web.Application``.

Routes live under the optional secret prefix: ``{prefix}/ws`` (mailbox
frames), ``{prefix}/blob…`` (chunks over HTTP) and ``{prefix}/metrics``.
Everything else, including a plain GET on the WebSocket endpoint and any
404/405 aiohttp would raise, is answered by the decoy site (``relay/static.py``,
as nginx would).  Storage, the
expiry task and open connections are resources of ``cleanup_ctx``;
``on_shutdown`` closes every WebSocket with 1001 after finishing its
pending posts and queued frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from protocol.padding import MAX_ENVELOPE_SIZE
from protocol.relay_frames import (
    Error,
    RateLimited,
    RelayError,
    TooManyConnections,
    Unavailable,
)
from relay.blobs import BlobHandlers, error_response
from relay.config import RelayConfig
from relay.connection import Connection
from relay.forward import ForwardHandlers, peer_address
from relay.limits import ConnectionCounter, PerIpLimiter, Slots, TokenBucket
from relay.memory import SOCKETS_GAUGE, Trimmer
from relay.metrics import Metrics
from relay.static import Decoy, install, set_server_header
from relay.storage.base import Storage

log = logging.getLogger("relay")

EXPIRY_INTERVAL = 60.0
# The largest valid frame: a PostSigned with a 64 KiB envelope is 65,657 B.
# Anything bigger is closed by aiohttp with 1009 (message too big).
MAX_FRAME_SIZE = MAX_ENVELOPE_SIZE + 1024


@dataclass
class RelayContext:
    config: RelayConfig
    storage: Storage
    metrics: Metrics = field(default_factory=Metrics)
    decoy: Decoy = field(init=False)
    connect_limiter: PerIpLimiter = field(init=False)
    post_limiter: PerIpLimiter = field(init=False)  # per mailbox (capability), not address
    blob_limiter: PerIpLimiter = field(init=False)
    mailbox_limiter: PerIpLimiter = field(init=False)
    counter: ConnectionCounter = field(init=False)
    requests: Slots = field(init=False)
    uploads: Slots = field(init=False)
    connections: set[Connection] = field(default_factory=set)
    shutting_down: bool = False
    # connections holding corked frames, written out together at the end of
    # this loop iteration (one callback per iteration, not per connection)
    corked: list[Connection] = field(default_factory=list)

    def __post_init__(self) -> None:
        lim = self.config.limits
        self.decoy = Decoy(self.config.decoy_dir, self.config.server_header)
        self.connect_limiter = PerIpLimiter(lim.connect_rate, lim.connect_burst)
        self.post_limiter = PerIpLimiter(lim.mailbox_post_rate, lim.mailbox_post_burst)
        self.blob_limiter = PerIpLimiter(lim.blob_rate, lim.blob_burst)
        self.mailbox_limiter = PerIpLimiter(lim.mailbox_create_rate, lim.mailbox_create_burst)
        self.counter = ConnectionCounter(lim.max_connections, lim.max_connections_per_ip)
        self.requests = Slots(lim.max_requests, lim.max_requests_per_ip)
        self.uploads = Slots(lim.max_uploads, lim.max_uploads_per_ip, lim.max_uploads_per_blob)

    async def admit_mailbox(self, ip: str, key: bytes) -> None:
        """Charge the creation of mailbox ``key`` to ``ip``; ``RateLimited``
        past its budget (``mailbox_create_burst``, refilled at
        ``mailbox_create_rate``/s).  Re-creating an existing mailbox (clients
        do on every connection) is free: it adds nothing."""
        if await self.storage.get_mailbox(key) is not None:
            return
        if not self.mailbox_limiter.take(ip):
            self.metrics.inc("samizdat_relay_rate_limited_total")
            raise RateLimited("too many mailboxes created from this address")

    def cork(self, conn: Connection) -> None:
        """Have ``conn``'s corked frames written at the end of this iteration."""
        if not self.corked:
            asyncio.get_running_loop().call_soon(self._flush_corked)
        self.corked.append(conn)

    def _flush_corked(self) -> None:
        conns, self.corked = self.corked, []
        for conn in conns:
            conn.flush_cork()

    def client_ip(self, request: web.Request) -> str:
        if self.config.forwarded_for:
            fwd = request.headers.get("X-Forwarded-For", "")
            if fwd:
                return fwd.rsplit(",", 1)[-1].strip()
        return request.remote or "?"


CONTEXT = web.AppKey("relay_context", RelayContext)


def make_storage(config: RelayConfig) -> Storage:
    if config.backend == "nats":
        from relay.storage.nats import NatsStorage

        return NatsStorage(
            config.nats_url,
            config.limits,
            spool_dir=config.data_dir / "spool",
            shards=config.nats_shards,
            replicas=config.nats_replicas,
        )
    from relay.storage.sqlite import SqliteStorage

    return SqliteStorage(config.data_dir, config.limits, config.sqlite_synchronous)


def create_app(config: RelayConfig, storage: Storage | None = None) -> web.Application:
    """Build the relay application; ``storage`` overrides the configured backend."""
    config.validate()
    ctx = RelayContext(config, storage if storage is not None else make_storage(config))
    app = web.Application(
        middlewares=[_request_slots(ctx), _decoy_errors(ctx)],
        client_max_size=config.limits.max_envelope_size,
    )
    app[CONTEXT] = ctx
    install(app, ctx.decoy)  # malformed requests get nginx's answers too
    app.on_response_prepare.append(set_server_header(config.server_header))
    app.cleanup_ctx.append(_storage_ctx)
    app.on_shutdown.append(_close_connections)

    p = config.prefix
    blobs = BlobHandlers(ctx)
    app.router.add_get(f"{p}/ws", _ws_handler, name="ws")
    app.router.add_post(f"{p}/blob", blobs.create, name="blob-create")
    app.router.add_put(f"{p}/blob/{{blob_id}}/{{index}}", blobs.put_chunk, name="blob-put")
    app.router.add_get(f"{p}/blob/{{blob_id}}/{{index}}", blobs.get_chunk, name="blob-get")
    app.router.add_delete(f"{p}/blob/{{blob_id}}", blobs.delete, name="blob-delete")
    if config.metrics:
        app.router.add_get(f"{p}/metrics", _metrics_handler)
    # private routing (SPEC.md §7.14): P/forward only when the operator offers it
    forward = ForwardHandlers(ctx)
    app.router.add_get(f"{p}/relay-key", forward.relay_key, name="forward-key")
    app.router.add_post(f"{p}/forwarded", forward.forwarded, name="forwarded")
    if config.forwarding:
        app.router.add_post(f"{p}/forward", forward.forward, name="forward")
        app.router.add_post(f"{p}/forward-key", forward.forward_key, name="forward-relay-key")
    app.on_startup.append(forward.start)
    app.on_cleanup.append(forward.close)
    app.router.add_route("*", "/{tail:.*}", ctx.decoy.handle)
    return app


def _request_slots(ctx: RelayContext) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Every plain HTTP request holds a slot of ``ctx.requests`` while it is
    handled (WebSockets have their own counter).  Refused: a blob request
    gets a typed ``Error`` (``RateLimited`` for its address, ``Unavailable``
    for the whole relay), anything else a bare 503 like a loaded web server."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        route = request.match_info.route.name or ""
        if route == "ws":
            return await handler(request)
        ip = ctx.client_ip(request)
        refused = ctx.requests.acquire(ip)
        if refused is not None:
            ctx.metrics.inc("samizdat_relay_requests_refused_total")
            if not route.startswith(("blob", "forward")):
                return ctx.decoy.error(request, 503)
            if refused == "ip":
                return error_response(RateLimited("too many requests from this address"))
            return error_response(Unavailable("relay busy"))
        try:
            return await handler(request)
        finally:
            ctx.requests.release(ip)

    return middleware


def _decoy_errors(ctx: RelayContext) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        refused = ctx.decoy.refuse(request)  # version, target, Host: before any route
        if refused is not None:
            return refused
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status in (404, 405):
                return await ctx.decoy.handle(request)
            raise

    return middleware


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CONTEXT]
    await ctx.storage.start()
    expiry = asyncio.create_task(_expiry_loop(ctx))
    # memory freed by a burst of connections goes back to the system (relay/memory.py)
    trimmer = asyncio.create_task(Trimmer(lambda: ctx.metrics.values[SOCKETS_GAUGE]).run())
    if ctx.config.debug_log:
        log.warning("debug log ON: client addresses and mailbox ids will be logged")
    cfg = ctx.config
    if cfg.metrics and not cfg.metrics_token and not cfg.metrics_open:
        log.warning(
            "listening beyond loopback: /metrics is refused until metrics_token is set "
            "(or metrics_public = true)"
        )
    if not cfg.access_token and not cfg.blobs_open:
        log.warning(
            "listening beyond loopback: blob creation is refused until access_token is set "
            "(or blobs_public = true)"
        )
    yield
    for task in (expiry, trimmer):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await ctx.storage.close()


async def _expiry_loop(ctx: RelayContext) -> None:
    while True:
        await asyncio.sleep(EXPIRY_INTERVAL)
        try:
            n = await ctx.storage.expire(int(time.time()))
            ctx.metrics.inc("samizdat_relay_expired_total", n)
        except Exception:
            log.exception("expiry pass failed")


async def _close_connections(app: web.Application) -> None:
    ctx = app[CONTEXT]
    ctx.shutting_down = True
    conns = list(ctx.connections)
    if conns:
        await asyncio.gather(*(c.shutdown() for c in conns), return_exceptions=True)
        deadline = time.monotonic() + ctx.config.limits.shutdown_grace
        while ctx.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)


async def _ws_handler(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    lim = ctx.config.limits
    ws = web.WebSocketResponse(
        heartbeat=lim.heartbeat,
        max_msg_size=MAX_FRAME_SIZE,
        compress=False,
    )
    if not ws.can_prepare(request).ok:
        return await ctx.decoy.handle(request)
    ip = ctx.client_ip(request)
    await ws.prepare(request)
    refusal: RelayError | None = None
    if ctx.shutting_down:
        refusal, code = TooManyConnections("relay shutting down"), 1001
    elif not ctx.connect_limiter.take(ip):
        refusal, code = RateLimited("too many new connections"), 1013
    elif not ctx.counter.acquire(ip):
        refusal, code = TooManyConnections("too many connections"), 1013
    if refusal is not None:
        ctx.metrics.inc_label("samizdat_relay_errors_total", str(refusal.code))
        await ws.send_bytes(Error.from_exception(0, refusal).encode())
        await ws.close(code=code, message=str(refusal).encode())
        return ws
    # each connection its own frame budget: users behind one address do not share one
    conn = Connection(ctx, ws, ip, TokenBucket(lim.frame_rate, lim.frame_burst))
    ctx.connections.add(conn)
    ctx.metrics.inc("samizdat_relay_connections")
    ctx.metrics.inc("samizdat_relay_connections_total")
    if ctx.config.debug_log:
        log.debug("connection from %s (connection %d)", peer_address(ctx, request), conn.token)
    try:
        await conn.run()
    finally:
        ctx.connections.discard(conn)
        ctx.counter.release(ip)
        ctx.metrics.dec("samizdat_relay_connections")
    return ws


async def _metrics_handler(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    token = ctx.config.metrics_token
    if not token and not ctx.config.metrics_open:
        return await ctx.decoy.handle(request)  # beyond loopback, a token is required (SPEC §7.12)
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return await ctx.decoy.handle(request)
    return web.Response(text=ctx.metrics.render(), content_type="text/plain")
