"""Private routing, client side: posting through a forwarding relay.

Theory of operation
-------------------
With a forwarder set (``samizdat relays forward URL``: one of the user's own
relays, saved in the profile), every post to *another* relay goes to the
forwarder's ``P/forward`` instead (SPEC.md §7.14), so the relay that stores
it sees the forwarder's address, not ours.  The post is a one-shot
``PostSigned`` sealed (HPKE) to the destination relay's forwarding key,
fetched from ``destination/relay-key`` (a plain GET that names no mailbox),
saved in the encrypted store, and fetched ahead (:meth:`Forwarding.prefetch`,
at random times after connecting) for every relay we may post to, so a key
fetch rarely comes just before a post; the forwarder learns the destination relay, the
size (a padding bucket) and the time, not the mailbox, the message id or
the answer.  A post to the forwarder itself goes directly: it sees our
address anyway.

If the forwarder fails (unreachable, refuses, does not forward), that is
:class:`ForwarderFailed`; the engine reports it and posts directly only if
the user allowed fallback (``--fallback``), since a direct post shows our
address to the destination: by default the post stays queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Callable, Iterable

import aiohttp
from nacl.signing import SigningKey

from client.relay_client import RelayUnavailable, proxy_setting
from protocol.errors import CryptoError, DecodeError, RemoteError
from protocol.forward import (
    RELAY_KEY_LEN,
    ForwardedPost,
    ForwardRequest,
    open_answer,
    seal_request,
)
from protocol.relay_frames import (
    BadSeal,
    Error,
    Posted,
    PostSigned,
    decode_server_frame,
    post_message,
)

_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)
_MAX_BODY = 4096  # an answer is 336 bytes, an error a few dozen
PREFETCH_JITTER = 30.0  # seconds: the most a key fetch waits after the previous one


class ForwarderFailed(RemoteError):
    """The forwarding relay did not carry the post (unreachable, refused it,
    or does not offer forwarding); the destination never saw it."""

    code = 62


def forwarder_for(forwarder: str, relay_url: str) -> str:
    """The forwarder a post to ``relay_url`` goes through ("" = directly):
    never the destination itself."""
    if not forwarder or forwarder.rstrip("/") == relay_url.rstrip("/"):
        return ""
    return forwarder


def forwarder_setting(text: str, relays: list[str]) -> str:
    """A forwarder setting as saved: "" (``off``/``none``) or one of ``relays``."""
    value = text.strip().rstrip("/")
    if value.lower() in ("", "off", "none", "direct"):
        return ""
    if value not in [r.rstrip("/") for r in relays]:
        raise ValueError(
            f"{value} is not one of your relays: forward only through a relay you use "
            "('samizdat relays add' it first)"
        )
    return value


class Forwarding:
    """HTTP requests of private routing, on their own session (through the
    proxy if one is set): no connection that reads a mailbox carries them."""

    def __init__(
        self,
        proxy: str | None = None,
        keys: dict[str, bytes] | None = None,
        on_key: Callable[[dict[str, bytes]], None] | None = None,
    ) -> None:
        """``keys``: relay keys saved earlier; ``on_key(keys)`` is called
        whenever they change, so the caller can save them."""
        self._proxy = proxy
        self._session: aiohttp.ClientSession | None = None
        self._keys: dict[str, bytes] = dict(keys or {})
        self._on_key = on_key

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector: aiohttp.BaseConnector | None = None
            if self._proxy:
                from aiohttp_socks import ProxyConnector

                url = "socks5://" + proxy_setting(self._proxy).split("://", 1)[1]
                connector = ProxyConnector.from_url(url, rdns=True)  # no local DNS
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=_TIMEOUT, trust_env=False
            )
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def prefetch(self, urls: Iterable[str], jitter: float | None = None) -> None:
        """Fetch the keys not held yet, each after its own random delay, so
        a fetch (which shows our address to that relay) is not followed at
        once by our forwarded post (which the relay would then link to it)."""
        most = PREFETCH_JITTER if jitter is None else jitter
        for url in sorted(set(urls)):
            if url in self._keys:
                continue
            await asyncio.sleep(random.uniform(0, most))
            with contextlib.suppress(RelayUnavailable):
                await self.relay_key(url)

    async def relay_key(self, url: str) -> bytes:
        """The destination relay's forwarding key (saved; fetched when missing)."""
        key = self._keys.get(url)
        if key is not None:
            return key
        try:
            async with self._client().get(f"{url}/relay-key", allow_redirects=False) as resp:
                body = await _read_capped(resp, RELAY_KEY_LEN)
                if resp.status != 200 or len(body) != RELAY_KEY_LEN:
                    raise RelayUnavailable(f"relay {url} offers no forwarding key")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RelayUnavailable(f"relay {url} is not reachable: {exc}") from None
        self._keys[url] = body
        if self._on_key is not None:
            self._on_key(dict(self._keys))
        return body

    async def post(
        self,
        forwarder: str,
        destination: str,
        mailbox_id: bytes,
        write_seed: bytes,
        msg_id: bytes,
        envelope: bytes,
    ) -> int:
        """Post through ``forwarder``; the destination's seq.  Raises the
        destination's refusal (a ``RelayError``), :class:`ForwarderFailed`,
        or ``RelayUnavailable`` when the destination's key cannot be had."""
        signature = SigningKey(write_seed).sign(post_message(mailbox_id, msg_id, envelope))
        frame = PostSigned(1, mailbox_id, msg_id, envelope, signature.signature)
        for attempt in (1, 2):
            key = await self.relay_key(destination)
            answer_key = os.urandom(16)
            sealed = seal_request(key, ForwardedPost(answer_key, frame), os.urandom)
            body = ForwardRequest(destination, sealed).encode()
            status, data = await self._send(forwarder, body)
            if status == 200:
                try:
                    answer = open_answer(answer_key, data)
                except (CryptoError, DecodeError):
                    raise ForwarderFailed(
                        f"forwarding relay {forwarder} returned an altered answer"
                    ) from None
                if isinstance(answer, Posted):
                    return answer.seq
                raise answer.to_exception()  # the destination's refusal
            refusal = _error(data)
            if isinstance(refusal, BadSeal) and attempt == 1:
                self._keys.pop(destination, None)  # the relay's key changed: fetch it again
                if self._on_key is not None:
                    self._on_key(dict(self._keys))
                continue
            why = f"{type(refusal).__name__}: {refusal}" if refusal else f"HTTP {status}"
            raise ForwarderFailed(f"forwarding relay {forwarder} did not forward ({why})")
        raise AssertionError("unreachable")

    async def _send(self, forwarder: str, body: bytes) -> tuple[int, bytes]:
        try:
            async with self._client().post(
                f"{forwarder}/forward",
                data=body,
                allow_redirects=False,
                headers={"Content-Type": "application/octet-stream"},
            ) as resp:
                return resp.status, await _read_capped(resp, _MAX_BODY)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ForwarderFailed(f"forwarding relay {forwarder} is not reachable: {exc}") from None


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    """The body, cut after ``cap`` + 1 bytes (then it is simply wrong)."""
    data = bytearray()
    async for piece in resp.content.iter_chunked(cap + 1):
        data += piece
        if len(data) > cap:
            break
    return bytes(data)


def _error(data: bytes) -> RemoteError | None:
    try:
        frame = decode_server_frame(data)
    except DecodeError:
        return None
    return frame.to_exception() if isinstance(frame, Error) else None
