"""The application layer: messages, group meta, envelopes, invites, attachments."""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.app.attachments import (
    CHUNK_PLAINTEXT_SIZE,
    CiphertextDigest,
    FileEncryptor,
    chunk_count,
    ciphertext_digest,
    decrypt_file,
    encrypt_file,
    new_file_key,
)
from protocol.app.envelope import (
    FRAGMENT_DATA_SIZE,
    MAX_MESSAGE_LEN,
    Envelope,
    EnvelopeType,
    Fragment,
    FragmentRejected,
    Reassembler,
    open_envelope,
    seal,
    split,
)
from protocol.app.group_meta import (
    GROUP_META_EXTENSION,
    ConversationKind,
    GroupMeta,
    MailboxRef,
    decode_group_meta,
    encode_group_meta,
    find_group_meta,
    meta_extension,
    new_mailbox_ref,
    ordering_mailbox,
)
from protocol.app.invite import (
    InboxAddress,
    Invite,
    ed25519_public_key,
    parse_invite_link,
    safety_number,
    safety_qr_matches,
    safety_qr_payload,
)
from protocol.app.messages import (
    AppMessage,
    Article,
    BlobRef,
    ChunkRef,
    Disappearing,
    File,
    KeyPackages,
    Profile,
    Receipt,
    ReceiptKind,
    RelayMove,
    Text,
    UnknownBody,
    new_receipts,
)
from protocol.codec import decode_exact
from protocol.errors import CryptoError, DecodeError, LocalError
from protocol.mls.tree_structs import Extension
from protocol.padding import BLOB_CHUNK_SIZE, ENVELOPE_BUCKETS, MAX_ENVELOPE_SIZE

NOW = 1_790_000_000_000
FUZZ = settings(max_examples=200, deadline=None)


def make_rng(seed: int = 1) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


RNG = make_rng()
INBOX = InboxAddress("https://relay.example/s3cret", b"\x01" * 32, b"\x02" * 32)
INBOX2 = InboxAddress("wss://other.example", b"\x03" * 32, b"\x04" * 32)
BLOB = BlobRef("https://relay.example", b"\x05" * 16, b"token")
IDENTITY_SEED = b"\x07" * 32
KEY_PACKAGE = b"\x00\x01\x00\x05" + b"fake key package" * 20


def _file(size: int = 600_000) -> File:
    n = chunk_count(size)
    chunks = tuple(
        ChunkRef((BLOB, dataclasses.replace(BLOB, relay_url="https://b"))) for _ in range(n)
    )
    return File(
        "photo.jpg", "image/jpeg", size, CHUNK_PLAINTEXT_SIZE, b"\x09" * 32, chunks, b"\x0a" * 32
    )


BODIES: dict[str, Any] = {
    "text": Text("hello, world ✓"),
    "text-reply": Text("re", reply_to=b"\x0b" * 16),
    "article": Article("Title", "# Heading\n\nbody " * 100),
    "file": _file(),
    "file-empty": _file(0),
    "receipt": Receipt(ReceiptKind.READ, (b"\x0c" * 16, b"\x0d" * 16)),
    "profile": Profile("Alice", (INBOX, INBOX2)),
    "key-packages": KeyPackages((KEY_PACKAGE, KEY_PACKAGE + b"x")),
    "disappearing": Disappearing(86_400_000),
    "relay-move": RelayMove("https://old.example", "https://new.example"),
    "unknown": UnknownBody(200, b"future body"),
}


def _message(body: Any, seq: int = 1) -> AppMessage:
    return AppMessage(b"\x0e" * 16, NOW, seq, 0, body)


META = GroupMeta(
    "Samizdat readers",
    (
        MailboxRef("https://a.example", b"\x10" * 32, b"\x11" * 32, b"\x12" * 32),
        MailboxRef("https://b.example", b"\x20" * 32, b"\x21" * 32, b"\x22" * 32),
    ),
    disappearing_ms=3_600_000,
    kind=ConversationKind.GROUP,
)


def _invite(expires: int = NOW + 86_400_000) -> Invite:
    return Invite.create((INBOX, INBOX2), IDENTITY_SEED, KEY_PACKAGE, expires)


def _round_trip(obj: Any) -> bytes:
    data = obj.to_bytes()
    back = type(obj).from_bytes(data)
    assert back == obj
    assert back.to_bytes() == data
    return data


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", sorted(BODIES))
def test_app_message_round_trip(name: str) -> None:
    msg = _message(BODIES[name])
    data = _round_trip(msg)
    assert msg.type == BODIES[name].type
    if name != "unknown":
        _round_trip(BODIES[name])
    # Every proper prefix is malformed, and only ever a DecodeError.
    for cut in range(len(data)) if len(data) < 600 else range(0, len(data), 97):
        with pytest.raises(DecodeError):
            AppMessage.from_bytes(data[:cut])


def test_app_message_exact_bytes() -> None:
    msg = AppMessage(bytes(range(16)), 5, 1, 0, Text("hi"))
    assert msg.to_bytes() == (
        b"\x01"  # version
        + bytes(range(16))  # message_id
        + (5).to_bytes(8, "big")  # sent_at_ms
        + (1).to_bytes(8, "big")  # sender_seq
        + bytes(8)  # expires_after_ms
        + b"\x01"  # type = text
        + b"\x04"  # body<V>: 4 bytes
        + b"\x02hi"  # text<V>
        + b"\x00"  # reply_to absent
    )


def test_app_message_new_takes_id_from_rng() -> None:
    a = AppMessage.new(Text("x"), rng=make_rng(5), now_ms=NOW, sender_seq=3)
    b = AppMessage.new(Text("x"), rng=make_rng(6), now_ms=NOW, sender_seq=3)
    assert a.message_id != b.message_id and len(a.message_id) == 16
    assert a.sender_seq == 3 and a.sent_at_ms == NOW


def test_unknown_type_keeps_header() -> None:
    data = _message(UnknownBody(77, b"\x00\x01"), seq=9).to_bytes()
    msg = AppMessage.from_bytes(data)
    assert msg.sender_seq == 9 and msg.type == 77
    assert isinstance(msg.body, UnknownBody) and msg.body.data == b"\x00\x01"


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda d: b"\x02" + d[1:], id="version-2"),
        pytest.param(lambda d: d[:17] + d[17:25] + bytes(8) + d[33:], id="sender-seq-0"),
    ],
)
def test_app_message_header_rejections(mutate: Callable[[bytes], bytes]) -> None:
    with pytest.raises(DecodeError):
        AppMessage.from_bytes(mutate(_message(Text("x")).to_bytes()))


def test_body_bounds() -> None:
    with pytest.raises(LocalError):
        Receipt(ReceiptKind.DELIVERED, (b"\x00" * 16,) * 1001)
    with pytest.raises(LocalError):
        Receipt(ReceiptKind.DELIVERED, ())
    with pytest.raises(LocalError):
        Text("x" * 70_000).to_bytes()
    with pytest.raises(LocalError):  # chunk list does not match the size
        dataclasses.replace(_file(), size=1)
    ids = [bytes([i % 256, i // 256]) * 8 for i in range(2500)]
    receipts = new_receipts(ReceiptKind.READ, ids)
    assert [len(r.message_ids) for r in receipts] == [1000, 1000, 500]
    # A decoded receipt with a ragged id vector or too many ids is refused.
    with pytest.raises(DecodeError):
        Receipt.from_bytes(b"\x01\x05" + b"\x00" * 5)
    over = b"\x00" * 16 * 1001
    with pytest.raises(DecodeError):
        Receipt.from_bytes(b"\x01" + bytes([0x80, 0x00, len(over) >> 8, len(over) & 0xFF]) + over)
    # Invalid UTF-8 in a string field.
    with pytest.raises(DecodeError):
        Text.from_bytes(b"\x02\xff\xfe\x00")


@FUZZ
@given(st.binary(max_size=300))
def test_app_message_garbage_only_decode_error(data: bytes) -> None:
    for decode in (
        AppMessage.from_bytes,
        *(type(b).from_bytes for b in BODIES.values() if not isinstance(b, UnknownBody)),
    ):
        with contextlib.suppress(DecodeError):
            decode(data)


@FUZZ
@given(st.data())
def test_app_message_mutations_only_decode_error(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(BODIES)))
    encoded = bytearray(_message(BODIES[name]).to_bytes())
    pos = data.draw(st.integers(0, len(encoded) - 1))
    encoded[pos] = data.draw(st.integers(0, 255))
    try:
        msg = AppMessage.from_bytes(bytes(encoded))
    except DecodeError:
        return
    assert AppMessage.from_bytes(msg.to_bytes()) == msg


# ---------------------------------------------------------------- group meta


def test_group_meta_round_trip_and_extension() -> None:
    data = _round_trip(META)
    assert encode_group_meta(META) == data and decode_group_meta(data) == META
    ext = meta_extension(META)
    assert ext.extension_type == GROUP_META_EXTENSION == 0xF5A1
    other = Extension(3, b"\x00\x00\x00")
    assert find_group_meta((other, ext)) == META
    assert find_group_meta((other,)) is None
    with pytest.raises(DecodeError):
        find_group_meta((ext, ext))
    with pytest.raises(DecodeError):
        find_group_meta((Extension(GROUP_META_EXTENSION, b"junk"),))


def test_group_meta_rules() -> None:
    ref = new_mailbox_ref("https://c.example", make_rng(3))
    assert len(ref.mailbox_id) == len(ref.read_seed) == len(ref.write_seed) == 32
    assert ref.read_key() == ed25519_public_key(ref.read_seed) != ref.write_key()
    with pytest.raises(LocalError):
        GroupMeta("x", ())
    with pytest.raises(LocalError):
        GroupMeta("x", (ref, dataclasses.replace(ref, mailbox_id=b"\x00" * 32)))
    dup = META.to_bytes().replace(b"https://b.example", b"https://a.example")
    with pytest.raises(DecodeError):
        decode_group_meta(dup)


def test_ordering_relay_fail_over_is_deterministic() -> None:
    up = {"https://a.example": False, "https://b.example": True}
    first = ordering_mailbox(META, lambda url: up[url])
    assert first is not None and first.relay_url == "https://b.example"
    up["https://a.example"] = True
    back = ordering_mailbox(META, lambda url: up[url])
    assert back is not None and back.relay_url == "https://a.example"
    assert ordering_mailbox(META, lambda url: False) is None


@FUZZ
@given(st.binary(max_size=400))
def test_group_meta_garbage_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_group_meta(data)


# ---------------------------------------------------------------- envelopes


@FUZZ
@given(st.integers(1, 300_000), st.sampled_from([EnvelopeType.MLS, EnvelopeType.WELCOME]))
def test_sealed_sizes_are_buckets(size: int, kind: EnvelopeType) -> None:
    payload = bytes([size % 251]) * size
    pieces = seal(kind, payload, RNG)
    assert all(len(p) in ENVELOPE_BUCKETS for p in pieces)
    if len(pieces) > 1:
        assert all(len(p) == MAX_ENVELOPE_SIZE for p in pieces)
    r = Reassembler()
    out = [r.add(open_envelope(p), NOW) for p in pieces]
    assert out[:-1] == [None] * (len(pieces) - 1)
    assert out[-1] == (kind, payload)


def test_seal_boundaries() -> None:
    # 4 (pad header) + 1 (type) + 4 (varint) + 65,527 = 65,536: the largest single envelope.
    assert len(seal(EnvelopeType.MLS, b"x" * 65_527, RNG)) == 1
    assert len(seal(EnvelopeType.MLS, b"x" * 65_528, RNG)) == 2
    assert len(seal(EnvelopeType.MLS, b"x" * 100, RNG)[0]) == 256
    with pytest.raises(LocalError):
        seal(EnvelopeType.MLS, b"", RNG)
    with pytest.raises(LocalError):
        seal(EnvelopeType.FRAGMENT, b"x", RNG)
    with pytest.raises(LocalError):
        seal(EnvelopeType.MLS, bytes(MAX_MESSAGE_LEN + 1), RNG)


def test_envelope_round_trip() -> None:
    _round_trip(Envelope(EnvelopeType.MLS, b"mls message"))
    _round_trip(Envelope(EnvelopeType.WELCOME, b"welcome"))
    frag = Fragment(b"\x01" * 16, 2, 5, EnvelopeType.MLS, b"piece")
    assert _round_trip(Envelope(EnvelopeType.FRAGMENT, fragment=frag)) == (
        b"\x03" + b"\x01" * 16 + b"\x00\x02\x00\x05\x01\x05piece"
    )
    # Random fill: the same payload sealed twice differs, opens the same.
    a, b = seal(EnvelopeType.MLS, b"same", RNG)[0], seal(EnvelopeType.MLS, b"same", RNG)[0]
    assert a != b and open_envelope(a) == open_envelope(b)


def test_open_envelope_rejects_bad_sizes_and_nesting() -> None:
    good = seal(EnvelopeType.MLS, b"m", RNG)[0]
    with pytest.raises(DecodeError):
        open_envelope(good + b"\x00")
    nested = b"\x03" + b"\x01" * 16 + b"\x00\x00\x00\x02\x03\x01x"
    with pytest.raises(DecodeError):
        decode_exact(nested, Envelope.decode)
    bad_index = b"\x03" + b"\x01" * 16 + b"\x00\x02\x00\x02\x01\x01x"
    with pytest.raises(DecodeError):
        decode_exact(bad_index, Envelope.decode)


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([256, 512]))
def test_open_envelope_garbage_only_decode_error(data: bytes, size: int) -> None:
    with contextlib.suppress(DecodeError):
        open_envelope(data.ljust(size, b"\x00")[:size])
    with contextlib.suppress(DecodeError):
        decode_exact(data, Envelope.decode)


def _article_pieces(size: int = 200_000, seed: int = 9) -> tuple[bytes, list[Envelope]]:
    rnd = random.Random(seed)
    words = [
        rnd.choice(["samizdat", "relay", "word", "тираж", "\n\n## h\n"]) for _ in range(size // 5)
    ]
    msg = AppMessage.new(
        Article("Long read", " ".join(words)), rng=make_rng(seed), now_ms=NOW, sender_seq=1
    )
    data = msg.to_bytes()
    assert len(data) > 200_000
    return data, [open_envelope(p) for p in seal(EnvelopeType.MLS, data, make_rng(seed))]


@FUZZ
@given(st.randoms(use_true_random=False), st.integers(0, 3))
def test_article_reassembles_in_any_order_with_duplicates(rnd: random.Random, dups: int) -> None:
    data, pieces = ARTICLE
    assert len(pieces) == -(-len(data) // FRAGMENT_DATA_SIZE) > 1 and all(
        p.fragment is not None for p in pieces
    )
    stream = pieces + [rnd.choice(pieces) for _ in range(dups)]
    rnd.shuffle(stream)
    r = Reassembler()
    results = [res for p in stream if (res := r.add(p, NOW)) is not None]
    assert results == [(EnvelopeType.MLS, data)]
    assert r.pending_sets == 0 and r.pending_bytes == 0
    article = AppMessage.from_bytes(results[0][1])
    assert isinstance(article.body, Article) and article.body.title == "Long read"


ARTICLE = _article_pieces()


def test_replayed_set_is_ignored_after_completion() -> None:
    data, pieces = ARTICLE
    r = Reassembler()
    assert [r.add(p, NOW) for p in pieces][-1] == (EnvelopeType.MLS, data)
    assert all(r.add(p, NOW) is None for p in pieces)
    assert r.pending_sets == 0


def _frag(
    fid: int, index: int, count: int, data: bytes = b"d", kind: EnvelopeType = EnvelopeType.MLS
) -> Envelope:
    return Envelope(
        EnvelopeType.FRAGMENT, fragment=Fragment(bytes([fid]) * 16, index, count, kind, data)
    )


def test_reassembler_inconsistent_sets_are_dropped() -> None:
    r = Reassembler()
    assert r.add(_frag(1, 0, 3), NOW) is None
    with pytest.raises(FragmentRejected) as exc:
        r.add(_frag(1, 1, 4), NOW)
    assert exc.value.set_dropped and r.pending_sets == 0
    assert not isinstance(exc.value, DecodeError)
    r.add(_frag(2, 0, 2, b"a"), NOW)
    assert r.add(_frag(2, 0, 2, b"a"), NOW) is None  # exact duplicate: ignored
    with pytest.raises(FragmentRejected):
        r.add(_frag(2, 0, 2, b"b"), NOW)
    assert r.pending_sets == 0
    r.add(_frag(3, 0, 2), NOW)
    with pytest.raises(FragmentRejected):
        r.add(_frag(3, 1, 2, kind=EnvelopeType.WELCOME), NOW)
    # Still usable afterwards.
    r.add(_frag(4, 1, 2, b"b"), NOW)
    assert r.add(_frag(4, 0, 2, b"a"), NOW) == (EnvelopeType.MLS, b"ab")


def test_reassembler_memory_bounds() -> None:
    r = Reassembler(max_sets=2, max_set_bytes=10, max_total_bytes=15)
    r.add(_frag(1, 0, 3, b"12345"), NOW)
    r.add(_frag(2, 0, 3, b"12345"), NOW)
    with pytest.raises(FragmentRejected) as exc:
        r.add(_frag(3, 0, 3, b"1"), NOW)  # a third concurrent set
    assert not exc.value.set_dropped and r.pending_sets == 2
    r.add(_frag(1, 1, 3, b"12345"), NOW)  # set 1 at its 10-byte limit
    with pytest.raises(FragmentRejected) as exc:
        r.add(_frag(1, 2, 3, b"1"), NOW)
    assert exc.value.set_dropped and r.pending_bytes == 5
    r.add(_frag(2, 1, 3, b"12345"), NOW)
    r.add(_frag(5, 0, 2, b"12345"), NOW)  # 15 bytes held in total
    with pytest.raises(FragmentRejected) as exc:
        r.add(_frag(5, 1, 2, b"1"), NOW)
    assert not exc.value.set_dropped and r.pending_bytes == 15


def test_reassembler_expiry() -> None:
    r = Reassembler(ttl_ms=1000)
    r.add(_frag(1, 0, 2), NOW)
    assert r.pending_sets == 1
    assert r.add(_frag(2, 0, 2), NOW + 999) is None
    assert r.expire(NOW + 1000) == 1 and r.pending_sets == 1
    assert r.add(_frag(2, 1, 2, b"e"), NOW + 1500) == (EnvelopeType.MLS, b"de")


def test_reassembler_total_memory_stays_bounded_under_flood() -> None:
    r = Reassembler(max_sets=8, max_total_bytes=8 * FRAGMENT_DATA_SIZE)
    rnd = random.Random(4)
    refused = 0
    for i in range(200):
        env = _frag(i % 256, rnd.randrange(1024), 1024, bytes(FRAGMENT_DATA_SIZE))
        try:
            r.add(env, NOW + i)
        except FragmentRejected:
            refused += 1
        assert r.pending_bytes <= 8 * FRAGMENT_DATA_SIZE and r.pending_sets <= 8
    assert refused > 0


# ---------------------------------------------------------------- invites


def test_invite_link_round_trip() -> None:
    invite = _invite()
    _round_trip(invite)
    link = invite.to_link()
    assert link.startswith("samizdat:invite/") and "=" not in link
    assert parse_invite_link(link, NOW) == invite
    alt = "  \n" + link.replace("samizdat:invite/", "samizdat://invite/") + "\n "
    assert parse_invite_link(alt, NOW) == invite
    assert invite.identity_key == ed25519_public_key(IDENTITY_SEED)
    assert invite.inboxes[0].write_key() == ed25519_public_key(INBOX.write_seed)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("https://example.com/", "not a Samizdat invite link"),
        ("samizdat:invite/", "not a Samizdat invite link"),
        ("samizdat:invite/AAAA*", "not a Samizdat invite link"),
        ("samizdat:invite/A", "not a Samizdat invite link"),
        ("samizdat:invite/AAAA", "damaged"),
    ],
)
def test_invite_link_rejections(text: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        parse_invite_link(text, NOW)


def test_invite_tampered_and_expired() -> None:
    invite = _invite()
    swapped = dataclasses.replace(invite, inboxes=(INBOX2,))
    with pytest.raises(DecodeError, match="invite signature does not verify"):
        parse_invite_link(swapped.to_link(), NOW)
    raw = bytearray(invite.to_bytes())
    raw[10] ^= 0x01  # inside the first inbox's relay URL
    tampered = Invite.from_bytes(bytes(raw))
    with pytest.raises(DecodeError, match="invite signature does not verify"):
        parse_invite_link(tampered.to_link(), NOW)
    with pytest.raises(DecodeError, match="invite expired"):
        parse_invite_link(invite.to_link(), invite.expires_at_ms)
    # The non-canonical base64 spelling of the same bytes is refused.
    link = _invite(NOW + 1).to_link()
    last = link[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(link.split("/", 1)[1]) % 4 == 3  # the last character has 2 unused bits
    bumped = link[:-1] + alphabet[alphabet.index(last) ^ 1]
    with pytest.raises(DecodeError, match="non-canonical"):
        parse_invite_link(bumped, NOW)


@FUZZ
@given(st.data())
def test_invite_link_mutations_only_decode_error(data: st.DataObject) -> None:
    link = list(LINK)
    pos = data.draw(st.integers(len("samizdat:invite/"), len(link) - 1))
    link[pos] = data.draw(st.sampled_from("AZaz09-_=+/ é"))
    text = "".join(link)
    try:
        parse_invite_link(text, NOW)
    except DecodeError:
        return
    assert text == LINK


LINK = _invite().to_link()


@FUZZ
@given(st.binary(max_size=400))
def test_invite_garbage_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        Invite.from_bytes(data)


# ---------------------------------------------------------------- safety numbers


def test_safety_number() -> None:
    a, b, c = (ed25519_public_key(bytes([i]) * 32) for i in (1, 2, 3))
    number = safety_number(a, b)
    assert number == safety_number(b, a)
    groups = number.split(" ")
    assert len(groups) == 12 and all(len(g) == 5 and g.isdigit() for g in groups)
    assert len(number.replace(" ", "")) == 60
    assert safety_number(a, c) != number and safety_number(c, b) != number
    # Each half belongs to one key: a changed key changes exactly one half.
    halves_ab = {number[:35], number[36:]}
    halves_cb = {safety_number(c, b)[:35], safety_number(c, b)[36:]}
    assert len(halves_ab & halves_cb) == 1
    qr = safety_qr_payload(a, b)
    assert qr == safety_qr_payload(b, a) and len(qr) == 65
    assert safety_qr_matches(qr, b, a)
    assert not safety_qr_matches(safety_qr_payload(a, c), a, b)
    with pytest.raises(DecodeError):
        safety_qr_matches(b"\x02" + qr[1:], a, b)
    with pytest.raises(DecodeError):
        safety_qr_matches(qr[:-1], a, b)


# ---------------------------------------------------------------- attachments


PHOTO = random.Random(11).randbytes(600_000)


def test_same_file_twice_is_unrelated() -> None:
    one = encrypt_file(PHOTO, make_rng(1))
    two = encrypt_file(PHOTO, make_rng(2))
    assert one.key != two.key
    assert len(one.chunks) == len(two.chunks) == chunk_count(len(PHOTO)) == 3
    assert all(len(c) == BLOB_CHUNK_SIZE for c in one.chunks + two.chunks)
    assert not set(one.chunks) & set(two.chunks)
    assert one.ciphertext_digest != two.ciphertext_digest
    assert decrypt_file(one.key, one.chunks, len(PHOTO), one.ciphertext_digest) == PHOTO
    assert decrypt_file(two.key, two.chunks, len(PHOTO), two.ciphertext_digest) == PHOTO


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK_PLAINTEXT_SIZE - 1, CHUNK_PLAINTEXT_SIZE, CHUNK_PLAINTEXT_SIZE + 1]
)
def test_chunk_boundaries(size: int) -> None:
    data = bytes([7]) * size
    enc = encrypt_file(data, make_rng(size))
    assert len(enc.chunks) == max(1, -(-size // CHUNK_PLAINTEXT_SIZE))
    assert all(len(c) == BLOB_CHUNK_SIZE for c in enc.chunks)
    assert decrypt_file(enc.key, enc.chunks, size, enc.ciphertext_digest) == data


def test_chunk_reorder_truncate_extend_tamper_detected() -> None:
    enc = encrypt_file(PHOTO, make_rng(3))
    c0, c1, c2 = enc.chunks
    dec = FileEncryptor(enc.key)
    with pytest.raises(CryptoError):  # reordered
        dec.decrypt_chunk(0, c1, False)
    with pytest.raises(CryptoError):  # truncated: chunk 1 presented as the last
        dec.decrypt_chunk(1, c1, True)
    with pytest.raises(CryptoError):  # extended: the last chunk presented as a middle one
        dec.decrypt_chunk(2, c2, False)
    flipped = bytearray(c0)
    flipped[1000] ^= 1
    with pytest.raises(CryptoError):
        dec.decrypt_chunk(0, bytes(flipped), False)
    with pytest.raises(CryptoError):
        dec.decrypt_chunk(0, c0[:-1], False)
    with pytest.raises(CryptoError):
        FileEncryptor(new_file_key(make_rng(8))).decrypt_chunk(0, c0, False)
    # Whole-file helper: wrong order, count or digest.
    with pytest.raises(CryptoError):
        decrypt_file(enc.key, [c1, c0, c2], len(PHOTO), ciphertext_digest([c1, c0, c2]))
    with pytest.raises(CryptoError):
        decrypt_file(enc.key, [c0, c1], len(PHOTO), enc.ciphertext_digest)
    with pytest.raises(CryptoError):
        decrypt_file(enc.key, [c0, c1, c2], len(PHOTO), bytes(32))
    assert dec.decrypt_chunk(1, c1, False) == PHOTO[CHUNK_PLAINTEXT_SIZE : 2 * CHUNK_PLAINTEXT_SIZE]


def test_encryptor_refuses_nonce_reuse_and_bad_chunks() -> None:
    enc = FileEncryptor(new_file_key(make_rng(4)))
    enc.encrypt_chunk(0, bytes(CHUNK_PLAINTEXT_SIZE), False)
    with pytest.raises(LocalError):
        enc.encrypt_chunk(0, b"other", True)
    with pytest.raises(LocalError):
        enc.encrypt_chunk(1, b"short", False)
    with pytest.raises(LocalError):
        enc.encrypt_chunk(2, bytes(CHUNK_PLAINTEXT_SIZE + 1), True)
    digest = CiphertextDigest()
    with pytest.raises(LocalError):
        digest.update(b"not a chunk")


# ---------------------------------------------------------------- end to end over MLS


def test_invite_welcome_and_article_over_mls() -> None:
    """An invite's KeyPackage, a sealed Welcome, GroupMeta agreement, a fragmented article."""
    from protocol.mls.crypto import get_suite
    from protocol.mls.group import Group
    from protocol.mls.key_package import SigningIdentity, create_key_package

    suite = get_suite(1)
    alice_rng, bob_rng = make_rng(21), make_rng(22)
    now_s = NOW // 1000
    bob_id = SigningIdentity.generate(suite, b"bob", bob_rng)
    bundle = create_key_package(suite, bob_id, now_s, bob_rng)
    inbox = InboxAddress("https://relay.example", bob_rng(32), bob_rng(32))
    link = Invite.create(
        (inbox,), bob_id.signature_priv, bundle.key_package_bytes(), NOW + 1
    ).to_link()

    invite = parse_invite_link(link, NOW)
    assert invite.identity_key == bob_id.signature_pub
    alice_id = SigningIdentity.generate(suite, b"alice", alice_rng)
    meta = GroupMeta(
        "", (new_mailbox_ref("https://relay.example", alice_rng),), kind=ConversationKind.DIRECT
    )
    alice = Group.create(
        1, alice_rng(32), alice_id, alice_rng, now_s, extensions=(meta_extension(meta),)
    )
    result = alice.commit(alice_rng, now_s, add=[invite.key_package])
    alice.merge_pending_commit()
    assert result.welcome is not None
    inbox_reassembler = Reassembler()
    got = None
    for piece in seal(EnvelopeType.WELCOME, result.welcome, alice_rng):
        got = inbox_reassembler.add(open_envelope(piece), NOW) or got
    assert got is not None and got[0] == EnvelopeType.WELCOME
    bob = Group.join(got[1], bundle)
    assert find_group_meta(bob.extensions) == find_group_meta(alice.extensions) == meta

    article = AppMessage.new(Article("t", "x" * 150_000), rng=alice_rng, now_ms=NOW, sender_seq=1)
    wire = seal(EnvelopeType.MLS, alice.encrypt(article.to_bytes(), alice_rng), alice_rng)
    assert len(wire) > 1 and all(len(w) == MAX_ENVELOPE_SIZE for w in wire)
    mailbox = Reassembler()
    done = [res for w in reversed(wire) if (res := mailbox.add(open_envelope(w), NOW))]
    assert len(done) == 1
    events = bob.process(done[0][1])
    received = [e for e in events if hasattr(e, "data")]
    assert AppMessage.from_bytes(received[0].data) == article


@pytest.mark.parametrize(
    "size",
    [
        65_527,
        65_528,
        2 * FRAGMENT_DATA_SIZE,
        2 * FRAGMENT_DATA_SIZE + 1,
        MAX_MESSAGE_LEN,
    ],
)
def test_fragment_boundaries(size: int) -> None:
    payload = random.Random(size).randbytes(size)
    pieces = seal(EnvelopeType.MLS, payload, RNG)
    expected = 1 if size <= 65_527 else -(-size // FRAGMENT_DATA_SIZE)
    assert len(pieces) == expected
    r = Reassembler()
    results = [res for p in reversed(pieces) if (res := r.add(open_envelope(p), NOW))]
    assert results == [(EnvelopeType.MLS, payload)]


@FUZZ
@given(st.text(max_size=200))
def test_invite_link_text_only_decode_error(text: str) -> None:
    for candidate in (text, "samizdat:invite/" + text, "samizdat://invite/" + text):
        with contextlib.suppress(DecodeError):
            parse_invite_link(candidate, NOW)


@pytest.mark.parametrize("max_size", [65_492, 20_000])
def test_split_for_per_mailbox_encryption(max_size: int) -> None:
    """Unpadded pieces under a caller's limit, e.g. to be sealed per mailbox."""
    payload = random.Random(max_size).randbytes(150_000)
    pieces = split(EnvelopeType.MLS, payload, RNG, max_size=max_size)
    assert len(pieces) > 1 and all(len(p) <= max_size for p in pieces)
    r = Reassembler()
    results = [res for p in pieces if (res := r.add(Envelope.from_bytes(p), NOW))]
    assert results == [(EnvelopeType.MLS, payload)]
    assert split(EnvelopeType.WELCOME, b"w", RNG, max_size=max_size) == [b"\x02\x01w"]
    with pytest.raises(LocalError):
        split(EnvelopeType.MLS, payload, RNG, max_size=26)
    with pytest.raises(LocalError):  # would need more than 1024 fragments
        split(EnvelopeType.MLS, bytes(MAX_MESSAGE_LEN), RNG, max_size=10_000)
