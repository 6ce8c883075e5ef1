"""Relay conformance checks of private routing (SPEC.md §7.14): the relay's
forwarding key, forwarded posts (the destination role) and, when the relay
offers it, ``P/forward`` (the forwarder role).  Registered by
:mod:`harness.relay_conformance` (which this module does not import at run
time: no cycle); every check uses its own mailboxes."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from nacl.signing import SigningKey

from protocol.forward import (
    ANSWER_SIZE,
    RELAY_KEY_LEN,
    ForwardedPost,
    ForwardRequest,
    open_answer,
    seal_request,
)
from protocol.relay_frames import (
    BadRequest,
    BadSeal,
    BadSignature,
    Error,
    ForwardDenied,
    ForwardFailed,
    Posted,
    PostSigned,
    ServerFrame,
    decode_server_frame,
    post_message,
)

if TYPE_CHECKING:
    from harness.relay_conformance import Box, Suite

_SEALED_ANSWER = ANSWER_SIZE + 16


class ForwardCheckFailed(AssertionError):
    pass


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise ForwardCheckFailed(what)


def env(size: int = 256, tag: bytes = b"") -> bytes:
    return (tag + os.urandom(size))[:size]


def code(frame: ServerFrame) -> int | str:
    return frame.code if isinstance(frame, Error) else type(frame).__name__


async def _http(suite: Suite, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    async with suite.session.request(
        method, f"{suite.origin}{suite.prefix}{path}", data=body, allow_redirects=False
    ) as resp:
        return resp.status, await resp.read()


async def _relay_key(suite: Suite) -> bytes:
    status, key = await _http(suite, "GET", "/relay-key")
    expect(status == 200 and len(key) == RELAY_KEY_LEN, f"relay-key: HTTP {status}, {len(key)} B")
    return key


def _signed(box: Box, envelope: bytes, key: SigningKey | None = None) -> PostSigned:
    mid = os.urandom(16)
    sig = (key or box.write).sign(post_message(box.id, mid, envelope)).signature
    return PostSigned(7, box.id, mid, envelope, sig)


def _sealed(relay_key: bytes, post: PostSigned) -> tuple[bytes, bytes]:
    answer_key = os.urandom(16)
    return answer_key, seal_request(relay_key, ForwardedPost(answer_key, post), os.urandom)


def _refusal(body: bytes) -> int | str:
    try:
        frame: ServerFrame = decode_server_frame(body)
    except Exception:
        return f"{len(body)} B that are not an Error frame"
    return code(frame)


async def check_relay_key(suite: Suite) -> str:
    first = await _relay_key(suite)
    expect(await _relay_key(suite) == first, "the forwarding key changed between two requests")
    return f"GET P/relay-key: a {RELAY_KEY_LEN}-byte X25519 key, stable"


async def check_forwarded(suite: Suite) -> str:
    key = await _relay_key(suite)
    w, box = await suite.writer()
    r = await suite.connect()
    await r.auth_read(box)
    await r.subscribe(box)
    envelope = env(512, b"forwarded")
    answer_key, sealed = _sealed(key, _signed(box, envelope))
    status, body = await _http(suite, "POST", "/forwarded", sealed)
    expect(status == 200 and len(body) == _SEALED_ANSWER, f"forwarded post: HTTP {status}")
    answer = open_answer(answer_key, body)
    expect(isinstance(answer, Posted) and answer.req_id == 7, f"forwarded post: {code(answer)}")
    got = await r.wait_delivered(1)
    expect(got[0].envelope == envelope, "the forwarded envelope was not delivered as posted")
    # a bad signature is refused inside the sealed answer, of the same size
    answer_key, sealed = _sealed(key, _signed(box, env(), SigningKey.generate()))
    status, body = await _http(suite, "POST", "/forwarded", sealed)
    expect(status == 200 and len(body) == _SEALED_ANSWER, f"bad signature: HTTP {status}")
    refused = open_answer(answer_key, body)
    expect(
        isinstance(refused, Error) and refused.code == BadSignature.code,
        f"bad signature: {code(refused)}, want 104",
    )
    # sealed to another key, or not sealed at all
    other_key = _sealed(os.urandom(32), _signed(box, env()))[1]
    for what, data in (("garbage", os.urandom(400)), ("other key", other_key)):
        status, body = await _http(suite, "POST", "/forwarded", data)
        expect(
            status == 400 and _refusal(body) == BadSeal.code,
            f"{what}: HTTP {status} {_refusal(body)}, want 400 and 120",
        )
    await w.ws.close()
    return "sealed post stored and delivered; answers sealed, one size; BadSeal otherwise"


async def check_forward(suite: Suite) -> str:
    """The forwarder role, if offered: its absence must look like the decoy."""
    probe = ForwardRequest("http://127.0.0.1:1", os.urandom(100)).encode()
    status, body = await _http(suite, "POST", "/forward", probe)
    decoy = await _http(suite, "POST", "/forward-" + os.urandom(4).hex(), probe)
    if (status, body) == decoy:
        return "forwarding not offered: P/forward answers as the decoy site"
    expect(
        _refusal(body) in (ForwardDenied.code, ForwardFailed.code),
        f"forward to 127.0.0.1:1: HTTP {status} {_refusal(body)}, want 118 or 119",
    )
    status, body = await _http(suite, "POST", "/forward", b"\x00\x01")
    expect(_refusal(body) == BadRequest.code, f"malformed request: {_refusal(body)}, want 116")
    key = await _relay_key(suite)
    _, box = await suite.writer()
    answer_key, sealed = _sealed(key, _signed(box, env()))
    req = ForwardRequest(suite.opts.url.rstrip("/"), sealed).encode()
    status, body = await _http(suite, "POST", "/forward", req)
    if _refusal(body) == ForwardDenied.code:
        return "offered; refuses unreachable destinations and its own (non-public) address"
    expect(status == 200 and len(body) == _SEALED_ANSWER, f"forward to itself: HTTP {status}")
    answer = open_answer(answer_key, body)
    expect(isinstance(answer, Posted), f"forward to itself: {code(answer)}")
    return "offered; unreachable or denied destinations refused, a post forwarded to itself"
