"""Second reader's attacks on private routing (SPEC.md §7.14), on real relays.

* SSRF through numeric host forms that ``ipaddress`` does not parse but the
  outbound connector takes as IP literals (and so never hands to the
  policy's resolver): ``2130706433``, ``0177.0.0.1``, ``127.1``, ``0``.
* IPv6 forms that carry a forbidden IPv4 address (NAT64, 6to4, Teredo,
  IPv4-compatible), which Python's ``is_global`` calls global.
* A hostile forwarder replaying a sealed request at the destination: the
  destination must not post twice, and its two answers must not tell the
  forwarder whether the post was stored (AES-GCM under one key and one
  nonce would: identical answers for a refusal, one differing byte for a
  stored post, and the GHASH key to forge answers).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from client.forwarding import ForwarderFailed, Forwarding
from harness.relay_process import RelayProcess, free_port
from protocol.errors import CryptoError, DecodeError
from protocol.forward import (
    ForwardedPost,
    ForwardRequest,
    open_answer,
    open_request,
    relay_key_pair,
    seal_answer,
    seal_request,
)
from protocol.relay_frames import BadSeal, Error, ForwardDenied, Posted, PostSigned, post_message
from relay.config import ConfigError, load_config
from relay.forward import DestinationPolicy, load_relay_key
from tests.test_private_routing import (
    FORWARDER_ADDRESS,
    _box_on,
    _code,
    _forwarder_settings,
    _raw_forward,
)

pytestmark = pytest.mark.timeout(240)


async def test_numeric_host_forms_do_not_bypass_the_ssrf_guard(tmp_path: Path) -> None:
    b = RelayProcess(tmp_path / "b", settings={"debug_log": True}).start()
    a = RelayProcess(tmp_path / "a", settings={"forwarding": True}).start()
    try:
        sealed = os.urandom(300)
        for host in ("2130706433", "0177.0.0.1", "127.1", "0x7f.1", "0", "0.0.0.0"):
            dest = f"http://{host}:{b.port}/p"
            status, body = await _raw_forward(a.url, dest, sealed)
            assert (status, _code(body)) == (403, ForwardDenied.code), (dest, status, body)
        text = b.log_path.read_text(errors="replace")
        assert "BadSeal" not in text and "/forwarded" not in text, "relay B was reached"
    finally:
        a.stop()
        b.stop()


def test_ipv6_forms_embedding_a_forbidden_ipv4_address_are_refused() -> None:
    policy = DestinationPolicy([], [])
    for text in (
        "::7f00:1",  # IPv4-compatible ::127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1 (RFC 6052)
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254 (cloud metadata)
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1 (RFC 3056)
        "2002:c0a8:1::1",  # 6to4 of 192.168.0.1
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
    ):
        assert not policy.allowed(ipaddress.ip_address(text)), text
        with pytest.raises(ForwardDenied):
            policy.check_url(f"http://[{text}]:8080/p")
    # global addresses in the same forms stay allowed
    assert policy.allowed(ipaddress.ip_address("64:ff9b::808:808"))  # NAT64 of 8.8.8.8
    assert policy.allowed(ipaddress.ip_address("2606:4700::1111"))


def test_a_public_destination_on_a_non_web_port_is_refused() -> None:
    """Cross-protocol attack: without a port rule a forwarder POSTs an
    attacker's bytes to any port of any public host (SMTP, Redis, ...)."""
    policy = DestinationPolicy([], [])
    for port in (25, 6379, 11211, 22):
        with pytest.raises(ForwardDenied, match="port"):
            policy.check_url(f"http://8.8.8.8:{port}/p")
    for url in ("https://8.8.8.8/p", "http://8.8.8.8/p", "https://relay.example:8443/p"):
        assert policy.check_url(url).path.endswith("/forwarded")
    # an address the operator allowed explicitly may use any port
    allowed = DestinationPolicy(["10.1.0.0/16"], [])
    assert allowed.check_url("http://10.1.2.3:7000/p").port == 7000
    assert DestinationPolicy([], [], [7000]).check_url("http://8.8.8.8:7000/p").port == 7000


def test_forward_ports_are_checked_by_check_config() -> None:
    with pytest.raises(ConfigError, match="forward_ports"):
        load_config(None, forwarding=True, forward_ports=[0, 70000])


def _answers_alike(one: bytes, two: bytes) -> int:
    return sum(x == y for x, y in zip(one, two, strict=False))


async def test_a_replayed_forwarded_post_posts_once_and_its_answers_tell_nothing(
    tmp_path: Path,
) -> None:
    b = RelayProcess(tmp_path / "b", settings={"debug_log": True}).start()
    try:
        mailbox_id, write = await _box_on(b)
        answers: dict[str, list[bytes]] = {}
        keys: dict[str, bytes] = {}
        async with aiohttp.ClientSession() as s:
            key_resp = await s.get(f"{b.url}/relay-key")
            relay_key = await key_resp.read()
            for case, box in (("stored", mailbox_id), ("refused", os.urandom(32))):
                msg_id, envelope = os.urandom(16), os.urandom(256)
                sig = write.sign(post_message(box, msg_id, envelope)).signature
                keys[case] = answer_key = os.urandom(16)
                post = PostSigned(1, box, msg_id, envelope, sig)
                sealed = seal_request(relay_key, ForwardedPost(answer_key, post), os.urandom)
                for _ in range(2):  # the hostile forwarder replays what it carried
                    async with s.post(f"{b.url}/forwarded", data=sealed) as r:
                        assert r.status == 200
                        answers.setdefault(case, []).append(await r.read())
        first, again = answers["stored"]
        assert isinstance(open_answer(keys["stored"], first), Posted)
        replay = open_answer(keys["stored"], again)
        # a replay is refused (sealed, so only the poster could read that)
        assert isinstance(replay, Error) and "replayed" in replay.reason
        assert all(isinstance(open_answer(keys["refused"], a), Error) for a in answers["refused"])
        async with aiohttp.ClientSession() as s, s.get(f"{b.url}/metrics") as r:
            metrics = await r.text()
        assert "samizdat_relay_posts_total 1\n" in metrics  # stored once
        # what the forwarder compares: fresh-looking bytes in both cases (a chance
        # match is 1 in 256 per byte), not 336 equal bytes or all but one
        for case in ("stored", "refused"):
            alike = _answers_alike(*answers[case])
            assert alike < 40, f"{case}: {alike} bytes equal between the two answers"
    finally:
        b.stop()


class _TaggingDestination:
    """A hostile destination relay D: it hands every key request a key of
    its own and remembers who asked, and opens each forwarded post with
    whichever key it was sealed to: the poster is whoever fetched that key."""

    def __init__(self) -> None:
        self.fetches: list[tuple[str, bytes]] = []  # (peer address, private key)
        self.linked: list[str] = []  # the fetcher's address of each opened post

    async def relay_key(self, request: web.Request) -> web.Response:
        private, public = relay_key_pair(os.urandom)
        self.fetches.append((request.remote or "?", private))
        return web.Response(body=public)

    async def forwarded(self, request: web.Request) -> web.Response:
        body = await request.read()
        for peer, private in self.fetches:
            try:
                inner = open_request(private, body)
            except (CryptoError, DecodeError):
                continue
            self.linked.append(peer)
            answer = Posted(inner.post.req_id, 1, False)
            return web.Response(body=seal_answer(inner.answer_key, answer, os.urandom))
        return web.Response(status=400, body=Error(0, BadSeal.code, "").encode())


class _SubstitutingForwarder:
    """A hostile forwarder F: it answers key requests with a key of its own,
    and tries to open what it is then asked to forward."""

    def __init__(self) -> None:
        self.private, self.public = relay_key_pair(os.urandom)
        self.opened = 0
        self.forwards = 0

    async def forward_key(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=self.public)

    async def forward(self, request: web.Request) -> web.Response:
        self.forwards += 1
        req = ForwardRequest.decode(await request.read())
        try:
            open_request(self.private, req.sealed)
            self.opened += 1
        except (CryptoError, DecodeError):
            pass
        return web.Response(status=502, body=Error(0, 119, "").encode())


async def _serve(routes: list[tuple[str, str, object]]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/p"


async def test_a_destination_tagging_its_key_per_fetcher_learns_no_poster(
    tmp_path: Path,
) -> None:
    """D gives every fetching address its own key: fetched only directly, the
    key names the poster of every post sealed to it.  The client fetches it
    through the forwarder and directly, sees two keys and seals nothing."""
    hostile = _TaggingDestination()
    runner, d_url = await _serve(
        [("GET", "/p/relay-key", hostile.relay_key), ("POST", "/p/forwarded", hostile.forwarded)]
    )
    a = RelayProcess(tmp_path / "a", settings=_forwarder_settings()).start()  # type: ignore[arg-type]
    fwd = Forwarding()
    try:
        await fwd.prefetch([d_url], jitter=0, via=a.url)
        with pytest.raises(ForwarderFailed, match="differs"):
            await fwd.post(a.url, d_url, os.urandom(32), bytes(32), os.urandom(16), bytes(256))
        assert {peer for peer, _ in hostile.fetches} >= {FORWARDER_ADDRESS}
        assert hostile.linked == [], f"D named the poster: {hostile.linked}"
    finally:
        await fwd.close()
        a.stop()
        await runner.cleanup()


async def test_a_forwarder_substituting_the_destination_key_opens_nothing(
    tmp_path: Path,
) -> None:
    """F answers the key request with its own key: the client compares it
    with the key D gives directly and never seals a post to F's key."""
    b = RelayProcess(tmp_path / "b").start()
    hostile = _SubstitutingForwarder()
    runner, f_url = await _serve(
        [("POST", "/p/forward-key", hostile.forward_key), ("POST", "/p/forward", hostile.forward)]
    )
    fwd = Forwarding()
    try:
        mailbox_id, write = await _box_on(b)
        for _ in range(2):
            with pytest.raises(ForwarderFailed):
                await fwd.post(f_url, b.url, mailbox_id, bytes(write), os.urandom(16), bytes(256))
        assert hostile.opened == 0, "the forwarder opened a post sealed to its own key"
    finally:
        await fwd.close()
        await runner.cleanup()
        b.stop()


def test_a_forwarding_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    """The key opens every forwarded post (mailbox ids, message ids): a key
    file other local users can read (restored from a backup, copied to a
    NATS node with the wrong mode) is refused, as ssh refuses such keys."""
    data = tmp_path / "data"
    key = load_relay_key(data)
    path = data / "forward.key"
    for mode in (0o644, 0o640, 0o604):
        path.chmod(mode)
        with pytest.raises(ValueError, match="chmod 600"):
            load_relay_key(data)
    path.chmod(0o600)
    assert load_relay_key(data) == key


async def test_replaying_one_sealed_post_does_not_exhaust_the_mailbox_limit(
    tmp_path: Path,
) -> None:
    """The forwarded-post limit is per mailbox, across every forwarder: a
    forwarder (or anyone on its path to D) that replays one post it carried
    must not spend that mailbox's budget and so block its other posters."""
    b = RelayProcess(tmp_path / "b", limits={"forwarded_rate": 0.01, "forwarded_burst": 3}).start()
    try:
        mailbox_id, write = await _box_on(b)
        async with aiohttp.ClientSession() as s:
            relay_key = await (await s.get(f"{b.url}/relay-key")).read()

            async def sealed_post() -> tuple[bytes, bytes]:
                msg_id, envelope = os.urandom(16), os.urandom(256)
                sig = write.sign(post_message(mailbox_id, msg_id, envelope)).signature
                post = PostSigned(1, mailbox_id, msg_id, envelope, sig)
                key = os.urandom(16)
                return key, seal_request(relay_key, ForwardedPost(key, post), os.urandom)

            key, captured = await sealed_post()
            for _ in range(6):
                async with s.post(f"{b.url}/forwarded", data=captured) as r:
                    assert r.status in (200, 400)
            key, fresh = await sealed_post()
            async with s.post(f"{b.url}/forwarded", data=fresh) as r:
                answer = open_answer(key, await r.read())
        assert isinstance(answer, Posted), answer
    finally:
        b.stop()


async def test_a_destination_redirect_is_not_followed(tmp_path: Path) -> None:
    """D answers the forwarder with a redirect to another address (here one
    the forwarder may reach): the forwarder must not follow it, for the
    post nor for the key, or the guard's check of D's URL means nothing."""
    hits: list[str] = []

    async def record(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=bytes(32))

    inner, inner_url = await _serve(
        [("GET", "/p/{tail:.*}", record), ("POST", "/p/{tail:.*}", record)]
    )

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"{inner_url}/secret")

    outer, outer_url = await _serve(
        [("GET", "/p/relay-key", redirect), ("POST", "/p/forwarded", redirect)]
    )
    a = RelayProcess(tmp_path / "a", settings=_forwarder_settings()).start()  # type: ignore[arg-type]
    try:
        status, _ = await _raw_forward(a.url, outer_url, os.urandom(300))
        assert status == 502
        key_url = f"{a.url}/forward-key"
        async with aiohttp.ClientSession() as s, s.post(key_url, data=outer_url.encode()) as r:
            assert r.status == 502
        assert hits == []
    finally:
        a.stop()
        await outer.cleanup()
        await inner.cleanup()
