"""Relay frames and padding: exact-byte round trips, strictness, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.codec import decode_exact
from protocol.errors import DecodeError, LocalError
from protocol.padding import (
    BLOB_CHUNK_SIZE,
    BUCKETS,
    ENVELOPE_BUCKETS,
    bucket_for,
    is_bucket_size,
    is_envelope_size,
    pad,
    unpad,
)
from protocol.relay_frames import (
    CLIENT_FRAMES,
    ERROR_CLASSES,
    PROTOCOL_VERSION,
    SERVER_FRAMES,
    Ack,
    AuthRead,
    AuthWrite,
    BadFrame,
    BlobTicket,
    Challenge,
    ClientConnection,
    Create,
    Credit,
    DeleteMailbox,
    Deliver,
    Error,
    Ok,
    Post,
    Posted,
    PostSigned,
    RelayError,
    RotateWrite,
    Subscribe,
    Subscribed,
    Unsubscribe,
    auth_message,
    decode_client_frame,
    decode_server_frame,
    encode_deliver,
    error_class,
    post_message,
)

M = bytes(range(32))
K = b"\x11" * 32
S = b"\x22" * 64
I16 = b"\x33" * 16

CLIENT_CASES = [
    (
        Create(7, M, K, K, 3600, b"tok"),
        "01" + "00000007" + M.hex() + K.hex() * 2 + "00000e10" + "03746f6b" + "00",
    ),
    (
        Create(7, M, K, K, 0, b"", 1),  # a shared log (SPEC.md §7.7)
        "01" + "00000007" + M.hex() + K.hex() * 2 + "00000000" + "00" + "01",
    ),
    (AuthRead(1, M, S), "02" + "00000001" + M.hex() + S.hex()),
    (AuthWrite(2, M, S), "03" + "00000002" + M.hex() + S.hex()),
    (Subscribe(3, M, 5), "04" + "00000003" + M.hex() + "0000000000000005"),
    (Unsubscribe(4, M), "05" + "00000004" + M.hex()),
    (Post(5, M, I16, b"ab"), "06" + "00000005" + M.hex() + I16.hex() + "026162"),
    (PostSigned(6, M, I16, b"", S), "07" + "00000006" + M.hex() + I16.hex() + "00" + S.hex()),
    (Ack(8, M, 2**64 - 1), "08" + "00000008" + M.hex() + "ff" * 8),
    (RotateWrite(9, M, K, S), "09" + "00000009" + M.hex() + K.hex() + S.hex()),
    (DeleteMailbox(10, M, S), "10" + "0000000a" + M.hex() + S.hex()),
    (Credit(2**32 - 1), "0a" + "ffffffff"),
]
SERVER_CASES = [
    (Challenge(2, M, 65536), "80" + "0002" + M.hex() + "00010000"),
    (Ok(1), "81" + "00000001"),
    (Posted(2, 3, True), "82" + "00000002" + "0000000000000003" + "01"),
    (Subscribed(4, 0), "83" + "00000004" + "00" * 8),
    (Deliver(M, 9, b"xyz"), "84" + M.hex() + "0000000000000009" + "0378797a"),
    (Error(5, 108, "quota"), "8f" + "00000005" + "006c" + "0571756f7461"),
]


@pytest.mark.parametrize(("frame", "hexbytes"), CLIENT_CASES, ids=lambda v: type(v).__name__)
def test_client_frames_exact_bytes(frame: object, hexbytes: str) -> None:
    data = frame.encode()  # type: ignore[attr-defined]
    assert data.hex() == hexbytes
    assert decode_client_frame(data) == frame
    with pytest.raises(DecodeError):
        decode_server_frame(data)
    with pytest.raises(DecodeError):
        decode_client_frame(data + b"\x00")
    with pytest.raises(DecodeError):
        decode_client_frame(data[:-1])


@pytest.mark.parametrize(("frame", "hexbytes"), SERVER_CASES, ids=lambda v: type(v).__name__)
def test_server_frames_exact_bytes(frame: object, hexbytes: str) -> None:
    data = frame.encode()  # type: ignore[attr-defined]
    assert data.hex() == hexbytes
    assert decode_server_frame(data) == frame
    with pytest.raises(DecodeError):
        decode_client_frame(data)
    with pytest.raises(DecodeError):
        decode_server_frame(data + b"\x00")


def test_registries_cover_all_frames() -> None:
    assert set(CLIENT_FRAMES) == {type(f).TYPE for f, _ in CLIENT_CASES}
    assert set(SERVER_FRAMES) == {type(f).TYPE for f, _ in SERVER_CASES}
    assert all(t < 0x80 for t in CLIENT_FRAMES) and all(t >= 0x80 for t in SERVER_FRAMES)


def test_encode_deliver_matches_dataclass() -> None:
    assert encode_deliver(M, 9, b"xyz") == Deliver(M, 9, b"xyz").encode()


def test_strictness() -> None:
    with pytest.raises(DecodeError):
        decode_client_frame(b"")
    with pytest.raises(DecodeError):
        decode_client_frame(b"\x7f")
    # a non-minimal varint length for the envelope
    bad = bytes.fromhex("06" + "00000005" + M.hex() + I16.hex() + "4002") + b"ab"
    with pytest.raises(DecodeError):
        decode_client_frame(bad)
    # bool other than 0/1
    with pytest.raises(DecodeError):
        decode_server_frame(bytes.fromhex("82" + "00000002" + "00" * 8 + "02"))
    # non-UTF-8 and oversized error reasons
    with pytest.raises(DecodeError):
        decode_server_frame(bytes.fromhex("8f" + "00000001" + "0065" + "01ff"))
    long = "8f" + "00000001" + "0065" + "4101" + "61" * 257
    with pytest.raises(DecodeError):
        decode_server_frame(bytes.fromhex(long))
    with pytest.raises(DecodeError):
        decode_client_frame(
            bytes.fromhex("01" + "00000001" + M.hex() + K.hex() * 2 + "00000000" + "4101")
            + b"t" * 257
        )


def test_encode_rejects_bad_lengths() -> None:
    with pytest.raises(LocalError):
        AuthRead(1, b"short", S).encode()
    with pytest.raises(LocalError):
        Create(1, M, K, K, 0, b"t" * 257).encode()
    with pytest.raises(ValueError):
        Ok(2**32).encode()
    with pytest.raises(ValueError):
        Ack(1, M, -1).encode()


def test_error_reason_truncated_to_valid_utf8() -> None:
    frame = Error(1, 101, "é" * 200)
    decoded = decode_server_frame(frame.encode())
    assert isinstance(decoded, Error)
    assert len(decoded.reason.encode()) <= 256 and decoded.reason == "é" * 128


def test_error_classes() -> None:
    assert error_class(101) is BadFrame and BadFrame.fatal
    assert error_class(9999) is RelayError
    codes = [c.code for c in ERROR_CLASSES.values()]
    assert len(codes) == len(set(codes))
    exc = Error(3, 104, "nope").to_exception()
    assert exc.code == 104 and str(exc) == "nope"
    assert Error.from_exception(3, exc) == Error(3, 104, "nope")


def test_signed_messages_are_domain_separated() -> None:
    n = b"\x01" * 32
    read = auth_message("auth-read", n, M)
    write = auth_message("auth-write", n, M)
    assert read != write and read.startswith(b"\x1bsamizdat-relay/v1 auth-read")
    assert auth_message("rotate-write", n, M, K).endswith(K)
    assert post_message(M, I16, b"e") == b"\x16samizdat-relay/v1 post" + M + I16 + b"\x01e"
    with pytest.raises(LocalError):
        auth_message("auth-read", b"short", M)


def test_blob_ticket_roundtrip() -> None:
    t = BlobTicket(I16, K, K, BLOB_CHUNK_SIZE, 12345)
    assert len(t.encode()) == 16 + 32 + 32 + 4 + 8
    assert BlobTicket.decode(t.encode()) == t
    with pytest.raises(DecodeError):
        BlobTicket.decode(t.encode() + b"\x00")


def test_client_connection_state() -> None:
    c = ClientConnection()
    with pytest.raises(LocalError):
        c.auth_payload("auth-read", M)
    with pytest.raises(DecodeError):
        c.receive(Ok(1).encode())
    with pytest.raises(DecodeError):
        ClientConnection().receive(Challenge(PROTOCOL_VERSION + 1, M, 1).encode())
    with pytest.raises(DecodeError):  # version 1 relays have no flow control (SPEC §7.6)
        ClientConnection().receive(Challenge(1, M, 1).encode())
    c.receive(Challenge(PROTOCOL_VERSION, M, 65536).encode())
    assert c.auth_payload("auth-read", M) == auth_message("auth-read", M, M)
    with pytest.raises(DecodeError):
        c.receive(Challenge(PROTOCOL_VERSION, M, 65536).encode())
    rid = c.next_req_id()
    c.send(Ack(rid, M, 1))
    assert rid in c.pending
    assert c.receive(Ok(rid).encode()) == Ok(rid)
    assert rid not in c.pending
    c._next_req_id = 2**32 - 1
    assert c.next_req_id() == 2**32 - 1 and c.next_req_id() == 1


@given(st.binary(max_size=300))
def test_random_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    for decode in (decode_client_frame, decode_server_frame):
        try:
            frame = decode(data)
        except DecodeError:
            continue
        assert frame.encode() == data  # strict: one encoding per value


# ------------------------------------------------------------------ padding


def test_bucket_set() -> None:
    assert ENVELOPE_BUCKETS == (256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
    assert BUCKETS[-1] == BLOB_CHUNK_SIZE == 262144
    assert all(is_bucket_size(b) for b in BUCKETS)
    assert not is_bucket_size(255) and not is_envelope_size(BLOB_CHUNK_SIZE)
    assert bucket_for(0) == 256 and bucket_for(257) == 512 and bucket_for(65536) == 65536
    with pytest.raises(LocalError):
        bucket_for(65537)
    with pytest.raises(LocalError):
        bucket_for(-1)


@given(st.binary(max_size=70_000), st.integers(0, 64))
def test_pad_unpad(data: bytes, overhead: int) -> None:
    if len(data) + 4 + overhead > 65536:
        with pytest.raises(LocalError):
            pad(data, overhead=overhead)
        return
    padded = pad(data, overhead=overhead)
    assert is_envelope_size(len(padded) + overhead)
    assert unpad(padded) == data


def test_pad_fill_from_rng() -> None:
    padded = pad(b"abc", lambda n: b"\xaa" * n)
    assert len(padded) == 256 and padded.endswith(b"\xaa" * 249) and unpad(padded) == b"abc"
    assert pad(b"abc")[7:] == bytes(249)
    with pytest.raises(LocalError):
        pad(b"abc", lambda n: b"")
    with pytest.raises(LocalError):
        pad(b"abc", overhead=-1)
    with pytest.raises(DecodeError):
        unpad(b"\x00\x00")
    with pytest.raises(DecodeError):
        unpad(b"\x00\x00\x01\x00" + b"x")


@given(st.binary(max_size=70), st.binary(max_size=20_000))
def test_post_fast_path_agrees_with_the_general_decoder(junk: bytes, env: bytes) -> None:
    from protocol.relay_frames import _decode_post_fast

    frame = Post(7, M, I16, env).encode()
    assert _decode_post_fast(frame) == Post(7, M, I16, env) == decode_client_frame(frame)
    for data in (frame[:-1], frame + b"\x00", b"\x06" + junk, frame[:54] + junk):
        fast = _decode_post_fast(data)
        try:
            general = decode_exact(data[1:], Post._pull)
        except DecodeError:
            general = None
        assert fast is None or fast == general


def test_post_fast_path_rejects_non_minimal_varint() -> None:
    from protocol.relay_frames import _decode_post_fast

    bad = b"\x06" + b"\x00\x00\x00\x01" + M + I16 + b"\x40\x02ab"
    assert _decode_post_fast(bad) is None
    with pytest.raises(DecodeError):
        decode_client_frame(bad)
