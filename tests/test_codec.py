"""The strict TLS-PL codec (protocol.codec) and the garbage-in property of every
top-level MLS decoder: any bytes either parse and re-encode exactly, or raise
DecodeError, and nothing else."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.codec import (
    MAX_VARINT,
    Reader,
    Writer,
    decode_exact,
    encode_varint,
    encode_with,
    opaque,
)
from protocol.errors import DecodeError
from protocol.mls import messages as m
from protocol.mls import tree_structs as ts
from tests.conftest import VECTORS_DIR
from tests.required import missing

# --------------------------------------------------------------------------
# Varints (RFC 9420 §2.1.2)

VARINTS = [
    (0, "00"),
    (1, "01"),
    (63, "3f"),
    (64, "4040"),
    (255, "40ff"),
    (16383, "7fff"),
    (16384, "80004000"),
    (MAX_VARINT, "bfffffff"),
]


@pytest.mark.parametrize(("value", "hexed"), VARINTS)
def test_varint_boundaries_roundtrip(value: int, hexed: str) -> None:
    assert encode_varint(value).hex() == hexed
    assert decode_exact(bytes.fromhex(hexed), Reader.pull_varint) == value
    assert encode_with(lambda w: w.push_varint(value)).hex() == hexed


@pytest.mark.parametrize(
    "hexed",
    [
        "4000",  # 0 in two bytes
        "4001",
        "403f",  # 63 in two bytes
        "80000000",
        "80000001",
        "80003fff",  # 16383 in four bytes
    ],
)
def test_non_minimal_varint_rejected(hexed: str) -> None:
    with pytest.raises(DecodeError, match="minimal"):
        decode_exact(bytes.fromhex(hexed), Reader.pull_varint)


@pytest.mark.parametrize(
    "hexed", ["c0", "c000000000000000", "c000000000000040", "ffffffffffffffff"]
)
def test_eight_byte_varint_prefix_rejected(hexed: str) -> None:
    with pytest.raises(DecodeError, match="8-byte"):
        decode_exact(bytes.fromhex(hexed), Reader.pull_varint)


@pytest.mark.parametrize("hexed", ["", "40", "80", "8000", "800040"])
def test_truncated_varint_rejected(hexed: str) -> None:
    with pytest.raises(DecodeError):
        decode_exact(bytes.fromhex(hexed), Reader.pull_varint)


@pytest.mark.parametrize("value", [-1, MAX_VARINT + 1, 1 << 62])
def test_varint_out_of_range_not_encoded(value: int) -> None:
    with pytest.raises(ValueError):
        encode_varint(value)
    with pytest.raises(ValueError):
        Writer().push_varint(value)


def test_opaque_longer_than_varint_range_not_encoded() -> None:
    class Huge(bytes):
        def __len__(self) -> int:
            return MAX_VARINT + 1

    with pytest.raises(ValueError):
        Writer().push_opaque(Huge())


@given(st.integers(min_value=0, max_value=MAX_VARINT))
@settings(max_examples=200)
def test_varint_property(value: int) -> None:
    data = encode_varint(value)
    assert len(data) == (1 if value < 64 else 2 if value < 16384 else 4)
    assert decode_exact(data, Reader.pull_varint) == value


# --------------------------------------------------------------------------
# Fixed-width integers, bools, opaques, vectors, optionals


@pytest.mark.parametrize(
    ("push", "pull", "size"),
    [
        (Writer.push_uint8, Reader.pull_uint8, 1),
        (Writer.push_uint16, Reader.pull_uint16, 2),
        (Writer.push_uint32, Reader.pull_uint32, 4),
        (Writer.push_uint64, Reader.pull_uint64, 8),
    ],
)
def test_uints(
    push: Callable[[Writer, int], None], pull: Callable[[Reader], int], size: int
) -> None:
    top = (1 << (8 * size)) - 1
    for value in (0, 1, top):
        w = Writer()
        push(w, value)
        data = w.getvalue()
        assert len(data) == size
        assert decode_exact(data, pull) == value
    for bad in (-1, top + 1):
        with pytest.raises(ValueError):
            push(Writer(), bad)
    with pytest.raises(DecodeError):
        decode_exact(b"\x00" * (size - 1), pull)
    with pytest.raises(DecodeError, match="trailing"):
        decode_exact(b"\x00" * (size + 1), pull)


def test_bool() -> None:
    assert decode_exact(b"\x00", Reader.pull_bool) is False
    assert decode_exact(b"\x01", Reader.pull_bool) is True
    for bad in (b"\x02", b"\xff"):
        with pytest.raises(DecodeError):
            decode_exact(bad, Reader.pull_bool)


def test_opaque() -> None:
    assert decode_exact(b"\x03abc", Reader.pull_opaque) == b"abc"
    assert opaque(b"abc") == b"\x03abc"
    assert encode_with(lambda w: w.push_opaque(b"x" * 64))[:2] == b"\x40\x40"
    with pytest.raises(DecodeError):
        decode_exact(b"\x04abc", Reader.pull_opaque)  # overruns input
    with pytest.raises(DecodeError):
        decode_exact(b"\x80\x01\x00\x00" + b"a" * 10, Reader.pull_opaque)
    with pytest.raises(DecodeError, match="trailing"):
        decode_exact(b"\x02abc", Reader.pull_opaque)


def _pull_u16s(r: Reader) -> list[int]:
    return r.pull_vector(Reader.pull_uint16)


def test_vector() -> None:
    data = encode_with(lambda w: w.push_vector([1, 2, 0xFFFF], Writer.push_uint16))
    assert data == bytes.fromhex("0600010002ffff")
    assert decode_exact(data, _pull_u16s) == [1, 2, 0xFFFF]
    assert decode_exact(b"\x00", _pull_u16s) == []
    with pytest.raises(DecodeError):
        decode_exact(bytes.fromhex("0500010002ff"), _pull_u16s)  # partial item
    with pytest.raises(DecodeError):
        decode_exact(bytes.fromhex("0800010002ffff"), _pull_u16s)  # overruns input
    with pytest.raises(DecodeError):
        decode_exact(bytes.fromhex("3f0001"), _pull_u16s)


def _pull_opt_u8(r: Reader) -> int | None:
    return r.pull_optional(Reader.pull_uint8)


def test_optional() -> None:
    assert encode_with(lambda w: w.push_optional(None, Writer.push_uint8)) == b"\x00"
    assert encode_with(lambda w: w.push_optional(7, Writer.push_uint8)) == b"\x01\x07"
    assert decode_exact(b"\x00", _pull_opt_u8) is None
    assert decode_exact(b"\x01\x07", _pull_opt_u8) == 7
    for bad in (b"\x02\x07", b"\x02", b"\xff\x07"):
        with pytest.raises(DecodeError):
            decode_exact(bad, _pull_opt_u8)
    with pytest.raises(DecodeError):
        decode_exact(b"\x01", _pull_opt_u8)
    with pytest.raises(DecodeError, match="trailing"):
        decode_exact(b"\x00\x07", _pull_opt_u8)


def test_reader_bookkeeping() -> None:
    r = Reader(b"\x01\x02\x03")
    assert r.remaining == 3
    assert r.pull_bytes(2) == b"\x01\x02"
    assert not r.eof()
    with pytest.raises(DecodeError, match="trailing"):
        r.finish()
    with pytest.raises(DecodeError):
        r.pull_bytes(2)
    assert r.pull_uint8() == 3
    assert r.eof()
    r.finish()


# --------------------------------------------------------------------------
# Garbage into every top-level decoder (STYLE.md §5)


def _private_content(ct: m.ContentType) -> Callable[[bytes], Any]:
    return lambda data: m.PrivateMessageContent.from_bytes(data, ct)


def _auth_data(ct: m.ContentType) -> Callable[[bytes], Any]:
    return lambda data: m.FramedContentAuthData.from_bytes(data, ct)


STRUCTS: list[type[ts.Struct]] = [
    m.MLSMessage,
    m.Add,
    m.Update,
    m.Remove,
    m.PreSharedKey,
    m.ReInit,
    m.ExternalInit,
    m.GroupContextExtensions,
    m.Proposal,
    m.ProposalOrRef,
    m.Commit,
    m.GroupSecrets,
    m.GroupInfo,
    m.GroupContext,
    m.Welcome,
    m.PublicMessage,
    m.PrivateMessage,
    m.AuthenticatedContent,
    m.FramedContent,
    m.Sender,
    m.SenderData,
    m.PreSharedKeyID,
    m.PSKLabel,
    ts.KeyPackage,
    ts.LeafNode,
    ts.ParentNode,
    ts.Node,
    ts.Credential,
    ts.Capabilities,
    ts.UpdatePath,
    ts.ExternalSender,
    ts.RequiredCapabilities,
]

# name -> (decode, re-encode)
DECODERS: dict[str, tuple[Callable[[bytes], Any], Callable[[Any], bytes]]] = {
    cls.__name__: (cls.from_bytes, cls.to_bytes) for cls in STRUCTS
}
DECODERS["ratchet_tree"] = (ts.decode_ratchet_tree, ts.encode_ratchet_tree)
DECODERS["external_senders"] = (ts.decode_external_senders, ts.encode_external_senders)
for _ct in m.ContentType:
    DECODERS[f"PrivateMessageContent[{_ct.name}]"] = (
        _private_content(_ct),
        m.PrivateMessageContent.to_bytes,
    )
    DECODERS[f"FramedContentAuthData[{_ct.name}]"] = (
        _auth_data(_ct),
        m.FramedContentAuthData.to_bytes,
    )


def check_garbage(name: str, data: bytes) -> None:
    """``data`` either decodes and re-encodes exactly, or raises DecodeError."""
    decode, encode = DECODERS[name]
    try:
        value = decode(data)
    except DecodeError:
        return
    assert encode(value) == data


@pytest.mark.parametrize("name", sorted(DECODERS))
@given(data=st.binary(max_size=300))
@settings(max_examples=100, deadline=None)
def test_random_bytes_raise_only_decode_error(name: str, data: bytes) -> None:
    check_garbage(name, data)


@cache
def _vector_samples() -> list[tuple[str, bytes]]:
    """Valid encodings from the messages vectors, with the decoder for each."""
    path = VECTORS_DIR / "messages.json"
    if not path.is_file():
        return []
    fields = {
        "mls_welcome": "MLSMessage",
        "mls_group_info": "MLSMessage",
        "mls_key_package": "MLSMessage",
        "ratchet_tree": "ratchet_tree",
        "group_secrets": "GroupSecrets",
        "add_proposal": "Add",
        "update_proposal": "Update",
        "remove_proposal": "Remove",
        "pre_shared_key_proposal": "PreSharedKey",
        "re_init_proposal": "ReInit",
        "external_init_proposal": "ExternalInit",
        "group_context_extensions_proposal": "GroupContextExtensions",
        "commit": "Commit",
        "public_message_application": "MLSMessage",
        "public_message_proposal": "MLSMessage",
        "public_message_commit": "MLSMessage",
        "private_message": "MLSMessage",
    }
    cases = json.loads(path.read_text())[:20]
    return [(name, bytes.fromhex(c[f])) for c in cases for f, name in fields.items()]


def _sample(data: st.DataObject) -> tuple[str, bytes]:
    samples = _vector_samples()
    if not samples:
        missing(f"MLS test vectors not found in {VECTORS_DIR}")
    return data.draw(st.sampled_from(samples))


@given(data=st.data())
@settings(max_examples=200, deadline=None)
def test_truncated_vectors_raise_decode_error(data: st.DataObject) -> None:
    name, valid = _sample(data)
    cut = data.draw(st.integers(min_value=0, max_value=len(valid) - 1))
    with pytest.raises(DecodeError):
        DECODERS[name][0](valid[:cut])


@given(data=st.data())
@settings(max_examples=200, deadline=None)
def test_mutated_vectors_raise_only_decode_error(data: st.DataObject) -> None:
    name, valid = _sample(data)
    buf = bytearray(valid)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        pos = data.draw(st.integers(min_value=0, max_value=len(buf) - 1))
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        if op == "flip":
            buf[pos] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
        elif op == "set":
            buf[pos] = data.draw(st.integers(min_value=0, max_value=255))
        elif op == "insert":
            buf.insert(pos, data.draw(st.integers(min_value=0, max_value=255)))
        elif len(buf) > 1:
            del buf[pos]
    check_garbage(name, bytes(buf))


def test_pull_opaques_matches_pull_opaque_in_a_loop() -> None:
    """The fast path for vectors of small items (issue 12) accepts and refuses
    exactly what pull_opaque does, item by item."""
    import random

    from protocol.codec import Reader, Writer
    from protocol.errors import DecodeError

    rnd = random.Random(5)
    for _ in range(300):
        w = Writer()
        for _ in range(rnd.randint(0, 6)):
            w.push_opaque(rnd.randbytes(rnd.choice([0, 1, 63, 64, 65, 300, 20000])))
        data = bytearray(w.getvalue())
        if data and rnd.random() < 0.5:  # truncate, flip or append a byte
            i = rnd.randrange(len(data))
            choice = rnd.randrange(3)
            if choice == 0:
                del data[i:]
            elif choice == 1:
                data[i] ^= 1 << rnd.randrange(8)
            else:
                data.append(rnd.randrange(256))
        slow: list[bytes] | str
        fast: list[bytes] | str
        try:
            r = Reader(bytes(data))
            slow = []
            while not r.eof():
                slow.append(r.pull_opaque())
        except DecodeError:
            slow = "error"
        try:
            fast = Reader(bytes(data)).pull_opaques()
        except DecodeError:
            fast = "error"
        assert fast == slow, data.hex()
    nonminimal = bytes([0x40, 0x01, 0xAA])  # length 1 in a two-byte header
    with pytest.raises(DecodeError):
        Reader(nonminimal).pull_opaques()
