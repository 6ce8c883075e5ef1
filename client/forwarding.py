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
fetch rarely comes just before a post.  With a forwarder, each key is
fetched twice, at independent random times: through the forwarder
(``P/forward-key``, the destination sees the forwarder's address) and
directly, and used only if both agree.  Directly alone, a destination could
give each fetching address a key of its own and name the poster of every
post sealed to it; through the forwarder alone, the forwarder could hand us
its own key and open the post.  The forwarder learns the destination relay,
the size (a padding bucket) and the time, not the mailbox, the message id
or the answer.  A post to the forwarder itself goes directly: it sees our
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
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    import aiohttp
else:  # imported at the first forwarded post (see client/lazy.py)
    from client.lazy import lazy_module

    aiohttp = lazy_module("aiohttp")

_TIMEOUT = {"total": 30, "connect": 10}  # aiohttp.ClientTimeout's
_MAX_BODY = 4096  # an answer is 348 bytes, an error a few dozen
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
                connector=connector, timeout=aiohttp.ClientTimeout(**_TIMEOUT), trust_env=False
            )
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def prefetch(
        self, urls: Iterable[str], jitter: float | None = None, via: str = ""
    ) -> None:
        """Fetch the keys not held yet (through ``via``, the forwarder),
        each after its own random delay, so that a fetch is not followed at
        once by our forwarded post."""
        most = PREFETCH_JITTER if jitter is None else jitter
        for url in sorted(set(urls)):
            if url in self._keys:
                continue
            await asyncio.sleep(random.uniform(0, most))
            with contextlib.suppress(RelayUnavailable, ForwarderFailed):
                await self.relay_key(url, via, pause=most)

    async def relay_key(self, url: str, via: str = "", pause: float = 0.0) -> bytes:
        """The destination relay's forwarding key (saved; fetched when
        missing).  With a forwarder ``via`` (SPEC.md §7.14) it is fetched
        through it and directly, up to ``pause`` seconds apart at random,
        and taken only if both agree (else :class:`ForwarderFailed`)."""
        key = self._keys.get(url)
        if key is not None:
            return key
        if via:
            through = await self._key_via(via, url)
            await asyncio.sleep(random.uniform(0, pause))
            body = await self._key_direct(url)
            if through != body:
                raise ForwarderFailed(
                    f"the forwarding key of {url} differs through {via} and directly: one "
                    "of the two relays is hostile (substituting its key, or giving each "
                    "fetcher its own to recognise its posts); nothing was sealed to either"
                )
        else:
            body = await self._key_direct(url)
        self._keys[url] = body
        if self._on_key is not None:
            self._on_key(dict(self._keys))
        return body

    async def _key_direct(self, url: str) -> bytes:
        try:
            async with self._client().get(f"{url}/relay-key", allow_redirects=False) as resp:
                body = await _read_capped(resp, RELAY_KEY_LEN)
                if resp.status != 200 or len(body) != RELAY_KEY_LEN:
                    raise RelayUnavailable(f"relay {url} offers no forwarding key")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RelayUnavailable(f"relay {url} is not reachable: {exc}") from None
        return body

    async def _key_via(self, via: str, url: str) -> bytes:
        status, body = await self._send(via, url.encode("utf-8"), "forward-key")
        if status != 200 or len(body) != RELAY_KEY_LEN:
            refusal = _error(body)
            why = f"{type(refusal).__name__}: {refusal}" if refusal else f"HTTP {status}"
            raise ForwarderFailed(f"forwarding relay {via} did not fetch the key of {url} ({why})")
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
        destination's refusal (a ``RelayError``) or :class:`ForwarderFailed`
        (also when the forwarder cannot fetch the destination's key)."""
        signature = SigningKey(write_seed).sign(post_message(mailbox_id, msg_id, envelope))
        frame = PostSigned(1, mailbox_id, msg_id, envelope, signature.signature)
        for attempt in (1, 2):
            key = await self.relay_key(destination, forwarder)
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

    async def _send(
        self, forwarder: str, body: bytes, endpoint: str = "forward"
    ) -> tuple[int, bytes]:
        try:
            async with self._client().post(
                f"{forwarder}/{endpoint}",
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
