"""protocol/forward.py: the private-routing structs and their sealing
(SPEC.md §7.14): strict codecs, HPKE to the destination, one-size answers."""

from __future__ import annotations

import os

import pytest

from protocol.errors import CryptoError, DecodeError, LocalError
from protocol.forward import (
    ANSWER_SIZE,
    ForwardedPost,
    ForwardRequest,
    open_answer,
    open_request,
    relay_key_pair,
    relay_public_key,
    seal_answer,
    seal_request,
)
from protocol.relay_frames import Ack, Error, Posted, PostSigned


def _post() -> PostSigned:
    return PostSigned(9, os.urandom(32), os.urandom(16), os.urandom(256), os.urandom(64))


def test_request_round_trip_and_only_the_destination_opens_it() -> None:
    private, public = relay_key_pair(os.urandom)
    assert relay_public_key(private) == public and len(public) == 32
    inner = ForwardedPost(os.urandom(16), _post())
    sealed = seal_request(public, inner, os.urandom)
    req = ForwardRequest("https://relay.example/k3y", sealed)
    assert ForwardRequest.decode(req.encode()) == req
    assert open_request(private, sealed) == inner
    # what the forwarder holds names no mailbox, message id or signature
    for secret in (inner.post.mailbox_id, inner.post.msg_id, inner.post.signature):
        assert secret not in req.encode()
    other, _ = relay_key_pair(os.urandom)
    with pytest.raises(CryptoError):
        open_request(other, sealed)
    with pytest.raises(CryptoError):
        open_request(private, sealed[:-1] + bytes([sealed[-1] ^ 1]))


def test_deterministic_with_the_rng_passed_in() -> None:
    _, public = relay_key_pair(os.urandom)
    inner = ForwardedPost(bytes(16), _post())
    fixed = iter([b"\x01" * 32, b"\x01" * 32])
    one = seal_request(public, inner, lambda n: next(fixed)[:n])
    fixed = iter([b"\x01" * 32, b"\x01" * 32])
    assert seal_request(public, inner, lambda n: next(fixed)[:n]) == one


def test_inner_must_be_a_post_signed() -> None:
    private, public = relay_key_pair(os.urandom)

    class NotAPost(ForwardedPost):
        def encode(self) -> bytes:  # an Ack where the post goes
            frame = Ack(1, os.urandom(32), 5).encode()
            return self.answer_key + bytes([len(frame)]) + frame

    sealed = seal_request(public, NotAPost(bytes(16), _post()), os.urandom)
    with pytest.raises(DecodeError, match="PostSigned"):
        open_request(private, sealed)


def test_request_codec_is_strict() -> None:
    good = ForwardRequest("http://r.example", os.urandom(100)).encode()
    with pytest.raises(DecodeError):
        ForwardRequest.decode(good + b"\x00")  # trailing bytes
    with pytest.raises(DecodeError):
        ForwardRequest.decode(b"\x00" + good[1:])  # empty destination
    with pytest.raises(DecodeError):
        ForwardRequest.decode(ForwardRequest("http://r.example", os.urandom(40)).encode())
    with pytest.raises(DecodeError):
        ForwardRequest.decode(b"\x02\xff\xfe" + good[len("http://r.example") + 1 :])
    with pytest.raises(LocalError):
        ForwardRequest("h" * 1025, os.urandom(100)).encode()
    with pytest.raises(LocalError):
        ForwardedPost(bytes(15), _post()).encode()


def test_answers_have_one_size_and_resist_tampering() -> None:
    key = os.urandom(16)
    posted = seal_answer(key, Posted(9, 1 << 40, True))
    refused = seal_answer(key, Error(9, 104, "x" * 300))  # reason cut to 256 bytes
    assert len(posted) == len(refused) == ANSWER_SIZE + 16
    assert open_answer(key, posted) == Posted(9, 1 << 40, True)
    got = open_answer(key, refused)
    assert isinstance(got, Error) and got.code == 104 and len(got.reason) == 256
    with pytest.raises(CryptoError):
        open_answer(key, posted[:-1] + bytes([posted[-1] ^ 1]))
    with pytest.raises(CryptoError):
        open_answer(os.urandom(16), posted)
    with pytest.raises(CryptoError):
        open_answer(key, posted[:-1])
