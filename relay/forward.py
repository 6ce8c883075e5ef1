"""Private routing, relay side: forwarding posts, and taking forwarded ones.

Theory of operation
-------------------
Three HTTP endpoints under the secret prefix (SPEC.md §7.14):

* ``GET P/relay-key``: this relay's forwarding key (an HPKE X25519 public
  key, 32 bytes), kept in ``data_dir/forward.key`` (mode 0600).
* ``POST P/forwarded`` (the *destination* role, always on): the body is a
  request sealed to that key.  The relay opens it, handles the
  ``PostSigned`` inside exactly as on a WebSocket, and answers ``200`` with
  the ``Posted``/``Error`` frame sealed to the client's one-time answer key,
  so the forwarder reads neither the request nor the answer.  Limited per
  sending address (a forwarder carries many users) and, once the signature
  verified, per mailbox: by capability, not by address.
* ``POST P/forward`` (the *forwarder* role, only with ``forwarding = true``;
  otherwise the decoy site answers it, as for any unknown path): the body
  names a destination relay URL and carries the sealed bytes.  The relay
  checks the destination (http/https, no credentials, no private, loopback,
  link-local or otherwise non-public address unless ``forward_allow`` lists
  it, nothing ``forward_deny`` lists: no SSRF), then posts the sealed bytes
  to ``destination/forwarded`` over its own outbound connection and returns
  the answer unchanged.  Host names are checked after resolution, by the
  resolver of the outbound connector, so a name that resolves (or
  re-resolves) to a forbidden address is never connected to.  Limits per
  client address: requests and bytes (token buckets), body size, and
  ``max_forwards`` outbound posts at once for the whole relay.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from protocol.errors import CryptoError, DecodeError
from protocol.forward import (
    AEAD_TAG,
    ANSWER_SIZE,
    ENC_LEN,
    MAX_DESTINATION_LEN,
    ForwardRequest,
    open_request,
    relay_key_pair,
    relay_public_key,
    seal_answer,
)
from protocol.padding import is_envelope_size
from protocol.relay_frames import (
    BadRequest,
    BadSeal,
    BadSignature,
    BadSize,
    Error,
    ForwardDenied,
    ForwardFailed,
    Posted,
    PostSigned,
    RateLimited,
    RelayError,
    TooLarge,
    Unavailable,
    UnknownMailbox,
    decode_server_frame,
    post_message,
)
from relay.connection import verify
from relay.limits import PerIpLimiter
from relay.storage.base import dedup_key, mailbox_key

if TYPE_CHECKING:
    from relay.app import RelayContext

log = logging.getLogger("relay.forward")

KEY_FILE = "forward.key"
# A forward request: the URL, the HPKE enc and tag, the answer key, a
# PostSigned frame (envelope + 129 B) and the length headers.
_OVERHEAD = MAX_DESTINATION_LEN + ENC_LEN + AEAD_TAG + 512
_ANSWER_LEN = ANSWER_SIZE + AEAD_TAG
_MAX_ERROR_BODY = 1024
_PATH = re.compile(r"^(/[A-Za-z0-9._-]+)*/?$")

STATUS = {
    BadRequest: 400,
    BadSeal: 400,
    ForwardDenied: 403,
    TooLarge: 413,
    RateLimited: 429,
    ForwardFailed: 502,
    Unavailable: 503,
}


def error_response(exc: RelayError, status: int | None = None) -> web.Response:
    return web.Response(
        status=status or STATUS.get(type(exc), 400),
        body=Error.from_exception(0, exc).encode(),
        content_type="application/octet-stream",
    )


def peer_address(ctx: RelayContext, request: web.Request) -> str:
    """``address:port`` of the connection that carried ``request`` (for the
    debug log only: the operator's view of who sent what)."""
    ip = ctx.client_ip(request)
    peer = request.transport.get_extra_info("peername") if request.transport else None
    port = peer[1] if isinstance(peer, tuple) and len(peer) >= 2 else "?"
    return f"{ip}:{port}"


class _Denied(OSError):
    """A destination that resolved to no address the policy allows."""


class DestinationPolicy:
    """Where a forwarder may connect: public addresses only, unless allowed."""

    def __init__(self, allow: list[str], deny: list[str]) -> None:
        self.allow = [ipaddress.ip_network(a.strip(), strict=False) for a in allow]
        self.deny: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.deny_hosts: set[str] = set()
        for entry in deny:
            try:
                self.deny.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                self.deny_hosts.add(entry.strip().lower().rstrip("."))

    def allowed(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(ip in net for net in self.deny):
            return False
        if any(ip in net for net in self.allow):
            return True
        return ip.is_global and not ip.is_multicast

    def check_url(self, text: str) -> URL:
        """The destination's ``/forwarded`` URL; ``ForwardDenied`` if not allowed."""
        try:
            url = URL(text)
        except (ValueError, TypeError):
            raise ForwardDenied("destination is not a URL") from None
        host = (url.host or "").lower().rstrip(".")
        if (
            url.scheme not in ("http", "https")
            or not host
            or url.user is not None
            or url.password is not None
            or url.query_string
            or url.fragment
            or not _PATH.match(url.path)
        ):
            raise ForwardDenied("destination must be a relay URL: http(s)://host[:port][/prefix]")
        if host in self.deny_hosts:
            raise ForwardDenied("destination denied by this relay")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None  # a name: checked once resolved (_PolicyResolver)
        if ip is not None and not self.allowed(ip):
            raise ForwardDenied("destination address not allowed")
        return url.with_path(url.path.rstrip("/") + "/forwarded")


class _PolicyResolver(AbstractResolver):
    """Resolves, then keeps only the addresses the policy allows: the
    connector connects to nothing else (DNS rebinding included)."""

    def __init__(self, policy: DestinationPolicy) -> None:
        self._policy = policy
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        kept = [r for r in results if self._policy.allowed(ipaddress.ip_address(r["host"]))]
        if not kept:
            raise _Denied(f"{host} resolves to no allowed address")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def load_relay_key(data_dir: Path) -> bytes:
    """This relay's forwarding private key, created (mode 0600) on first use."""
    path = data_dir / KEY_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True)
        private, _ = relay_key_pair(os.urandom)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_relay_key(data_dir)  # another process made it meanwhile
        with os.fdopen(fd, "wb") as fh:
            fh.write(private)
            fh.flush()
            os.fsync(fh.fileno())
        return private
    if len(data) != 32:
        raise ValueError(f"{path} is not a forwarding key (32 bytes)")
    return data


async def _read_capped(stream: aiohttp.StreamReader, cap: int) -> bytes | None:
    """The whole body, or None if it is longer than ``cap``."""
    body = bytearray()
    async for piece in stream.iter_chunked(64 * 1024):
        body += piece
        if len(body) > cap:
            return None
    return bytes(body)


class ForwardHandlers:
    def __init__(self, ctx: RelayContext) -> None:
        self.ctx = ctx
        cfg = ctx.config
        lim = cfg.limits
        self.policy = DestinationPolicy(cfg.forward_allow, cfg.forward_deny)
        self.requests = PerIpLimiter(lim.forward_rate, lim.forward_burst)
        self.bytes = PerIpLimiter(lim.forward_bytes_rate, lim.forward_bytes_burst)
        self.forwarded_ip = PerIpLimiter(lim.forwarded_ip_rate, lim.forwarded_ip_burst)
        self.per_mailbox = PerIpLimiter(lim.forwarded_rate, lim.forwarded_burst)
        self.max_body = lim.max_envelope_size + _OVERHEAD
        self.outbound = 0
        self._private: bytes | None = None
        self._session: aiohttp.ClientSession | None = None

    def _key(self) -> bytes:
        if self._private is None:
            self._private = load_relay_key(self.ctx.config.data_dir)
        return self._private

    async def start(self, app: Any = None) -> None:
        """Load (or make) the key at start-up: a damaged key file stops the
        relay with a clear message instead of failing requests later."""
        self._key()

    async def close(self, app: Any = None) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- GET P/relay-key -------------------------------------------------------------

    async def relay_key(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=relay_public_key(self._key()), content_type="application/octet-stream"
        )

    # -- POST P/forwarded: the destination ------------------------------------------------

    async def forwarded(self, request: web.Request) -> web.StreamResponse:
        ctx = self.ctx
        ip = ctx.client_ip(request)
        if not self.forwarded_ip.take(ip):
            ctx.metrics.inc("samizdat_relay_rate_limited_total")
            return error_response(RateLimited("too many forwarded posts from this address"))
        body = await _read_capped(request.content, self.max_body)
        if body is None:
            return error_response(TooLarge("forwarded request too large"))
        try:
            inner = open_request(self._key(), body)
        except (CryptoError, DecodeError):
            ctx.metrics.inc_label("samizdat_relay_errors_total", str(BadSeal.code))
            return error_response(BadSeal("request not sealed to this relay's key"))
        post = inner.post
        ctx.metrics.inc("samizdat_relay_forwarded_total")
        if ctx.config.debug_log:
            log.debug(
                "forwarded post to %s from %s", post.mailbox_id.hex(), peer_address(ctx, request)
            )
        try:
            answer: Posted | Error = await self._store(post)
        except RelayError as exc:
            ctx.metrics.inc_label("samizdat_relay_errors_total", str(exc.code))
            answer = Error.from_exception(post.req_id, exc)
        # 200 whatever the outcome: only the client can read which it was
        return web.Response(
            body=seal_answer(inner.answer_key, answer), content_type="application/octet-stream"
        )

    async def _store(self, f: PostSigned) -> Posted:
        """A ``PostSigned`` as the WebSocket takes it (SPEC.md §7.7, "Post")."""
        ctx = self.ctx
        lim = ctx.config.limits
        size = len(f.envelope)
        if size > lim.max_envelope_size:
            raise TooLarge(f"envelope exceeds {lim.max_envelope_size} bytes")
        if not is_envelope_size(size):
            raise BadSize("envelope size is not a padding bucket")
        key = mailbox_key(f.mailbox_id)
        info = await ctx.storage.get_mailbox(key)
        if info is None:
            raise UnknownMailbox("unknown mailbox")
        if not verify(
            info.write_key, f.signature, post_message(f.mailbox_id, f.msg_id, f.envelope)
        ):
            raise BadSignature("post signature does not verify")
        # limited by capability (who holds the write key), not by address:
        # every user of one forwarder arrives from its address
        if not self.per_mailbox.take(key.hex()):
            ctx.metrics.inc("samizdat_relay_rate_limited_total")
            raise RateLimited("too many forwarded posts to this mailbox")
        seq, dup = await ctx.storage.post(
            key, dedup_key(f.mailbox_id, f.msg_id), f.envelope, int(time.time()), info.write_key
        )
        if dup:
            ctx.metrics.inc("samizdat_relay_duplicate_posts_total")
        else:
            ctx.metrics.inc("samizdat_relay_posts_total")
            ctx.metrics.inc("samizdat_relay_bytes_in_total", size)
        return Posted(f.req_id, seq, dup)

    # -- POST P/forward: the forwarder ------------------------------------------------

    async def forward(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._forward(request)
        except RelayError as exc:
            self.ctx.metrics.inc_label("samizdat_relay_errors_total", str(exc.code))
            if isinstance(exc, RateLimited):
                self.ctx.metrics.inc("samizdat_relay_rate_limited_total")
            if self.ctx.config.debug_log:
                log.debug("forward refused (%s): %s", exc.code, exc)
            return error_response(exc)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        ip = self.ctx.client_ip(request)
        if not self.requests.take(ip):
            raise RateLimited("too many forward requests from this address")
        if (request.content_length or 0) > self.max_body:
            raise TooLarge("forward request too large")
        body = await _read_capped(request.content, self.max_body)
        if body is None:
            raise TooLarge("forward request too large")
        if not self.bytes.take(ip, len(body)):
            raise RateLimited("too many bytes forwarded for this address")
        try:
            req = ForwardRequest.decode(body)
        except DecodeError as exc:
            raise BadRequest(f"malformed forward request: {exc}") from None
        target = self.policy.check_url(req.destination)
        if self.outbound >= self.ctx.config.limits.max_forwards:
            raise Unavailable("forwarder busy")
        self.outbound += 1
        try:
            status, answer = await self._post(target, req.sealed)
        finally:
            self.outbound -= 1
        self.ctx.metrics.inc("samizdat_relay_forwards_total")
        if status == 200 and len(answer) == _ANSWER_LEN:
            return web.Response(body=answer, content_type="application/octet-stream")
        try:
            frame = decode_server_frame(answer)
        except DecodeError:
            frame = None
        if isinstance(frame, Error):  # the destination's own typed refusal (BadSeal...)
            return error_response(frame.to_exception(), 502)
        raise ForwardFailed(f"destination answered HTTP {status}")

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            cfg = self.ctx.config
            source = (cfg.forward_source, 0) if cfg.forward_source else None
            connector = aiohttp.TCPConnector(
                resolver=_PolicyResolver(self.policy),
                use_dns_cache=False,
                limit=cfg.limits.max_forwards,
                local_addr=source,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=cfg.limits.forward_timeout),
                trust_env=False,  # no HTTP(S)_PROXY detour
                skip_auto_headers=("User-Agent",),  # names no software
            )
        return self._session

    async def _post(self, target: URL, sealed: bytes) -> tuple[int, bytes]:
        try:
            async with self._client().post(
                target,
                data=sealed,
                allow_redirects=False,  # a redirect could point anywhere
                headers={"Content-Type": "application/octet-stream"},
            ) as resp:
                body = await _read_capped(resp.content, max(_ANSWER_LEN, _MAX_ERROR_BODY))
                if body is None:
                    raise ForwardFailed("destination answer too large")
                return resp.status, body
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, _Denied):
                raise ForwardDenied("destination address not allowed") from None
            raise ForwardFailed("destination unreachable") from None
        except (TimeoutError, aiohttp.ClientError, OSError):
            raise ForwardFailed("destination unreachable") from None
