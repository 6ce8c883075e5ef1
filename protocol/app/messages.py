"""Application messages: the plaintext of every MLS application message.

Provides :class:`AppMessage` (a common header plus one body) and the bodies
:class:`Text`, :class:`Article`, :class:`File` (with :class:`BlobRef` and
:class:`ChunkRef`), :class:`Receipt`, :class:`Profile`, :class:`KeyPackages`,
:class:`Disappearing`, :class:`RelayMove`, :class:`Heartbeat` and
:class:`UnknownBody`; :func:`receipt_witnesses` (who sends receipts).

Theory of operation
-------------------
The header is the same for every type and always decodes, whatever the body
type: ``message_id`` is the key for de-duplication (a message arrives once per
relay) and for receipts; ``sender_seq`` counts a sender's messages in one
conversation from 1, so a gap is a message some relay dropped; ``sent_at_ms``
is the sender's clock (for display only, never for ordering);
``expires_after_ms`` is the disappearing timer.

The body is wrapped in ``opaque body<V>`` (a refinement of the design's bare
``select``) so that a client meeting a type it does not know still reads the
header, advances its view of ``sender_seq`` without reporting a false gap,
and can send a receipt; the body is kept as :class:`UnknownBody`.  Known
bodies are decoded strictly (exact length, bounds, UTF-8).

Bounds: every message must fit the envelope reassembly limit
(:data:`MAX_APP_MESSAGE_LEN`, 16 MiB); per-field limits are in the constants
below and SPEC.md §8.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from hashlib import sha256
from typing import ClassVar, Self

from protocol.app import (
    MAX_TOKEN_LEN,
    Rng,
    check_len,
    check_range,
    pull_fixed_ids,
    pull_opaque_max,
    pull_text,
    pull_url,
    pull_vector_max,
    push_fixed,
    push_fixed_ids,
    push_opaque_max,
    push_text,
    push_url,
    push_vector_max,
    random_bytes,
)
from protocol.app.invite import InboxAddress, pull_inboxes, push_inboxes
from protocol.codec import Reader, Writer, decode_exact
from protocol.errors import DecodeError, LocalError
from protocol.mls.tree_structs import Struct
from protocol.padding import BLOB_CHUNK_SIZE

APP_VERSION = 1
MESSAGE_ID_LEN = 16
BLOB_ID_LEN = 16
FILE_KEY_LEN = 32
DIGEST_LEN = 32
UINT64_MAX = (1 << 64) - 1

#: The largest encoded AppMessage (the envelope Reassembler's per-set limit).
MAX_APP_MESSAGE_LEN = 16 * 1024 * 1024
#: A chat line; anything longer is sent as an Article.
MAX_TEXT_LEN = 64 * 1024
MAX_TITLE_LEN = 1024
#: Bounded only by MAX_APP_MESSAGE_LEN: "no practical length limit".
MAX_MARKDOWN_LEN = MAX_APP_MESSAGE_LEN
MAX_FILE_NAME_LEN = 1024
MAX_MEDIA_TYPE_LEN = 255
MAX_DISPLAY_NAME_LEN = 256
MAX_RECEIPT_IDS = 1000
#: 2^20 chunks of ~256 KiB = 256 GiB; in practice the 16 MiB message limit
#: caps a File at roughly 150,000 single-copy chunks (~37 GiB).
MAX_CHUNKS = 1 << 20
#: Copies of one chunk on different relays (fail-over for attachments).
MAX_CHUNK_COPIES = 4
MAX_KEY_PACKAGES = 64
MAX_KEY_PACKAGE_LEN = 16 * 1024


class AppMessageType(IntEnum):
    """Known values of the ``AppMessageType`` registry (an open uint8)."""

    TEXT = 1
    ARTICLE = 2
    FILE = 3
    RECEIPT = 4
    PROFILE = 5
    KEY_PACKAGES = 6
    DISAPPEARING = 7
    RELAY_MOVE = 8
    HEARTBEAT = 9


class ReceiptKind(IntEnum):
    DELIVERED = 1
    READ = 2


class Body(Struct):
    """Base of every message body; ``TYPE`` is its ``AppMessageType``."""

    __slots__ = ()
    TYPE: ClassVar[int] = 0

    @property
    def type(self) -> int:
        return self.TYPE


@dataclass(frozen=True, slots=True)
class Text(Body):
    TYPE: ClassVar[int] = AppMessageType.TEXT
    text: str
    reply_to: bytes | None = None

    def __post_init__(self) -> None:
        if self.reply_to is not None:
            check_len(self.reply_to, MESSAGE_ID_LEN, "reply_to")

    def encode(self, w: Writer) -> None:
        push_text(w, self.text, MAX_TEXT_LEN, "text")
        w.push_optional(self.reply_to, _push_message_id)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        text = pull_text(r, MAX_TEXT_LEN, "text")
        return cls(text, r.pull_optional(_pull_message_id))


@dataclass(frozen=True, slots=True)
class Article(Body):
    """A long rich-text article; ``markdown`` is CommonMark source."""

    TYPE: ClassVar[int] = AppMessageType.ARTICLE
    title: str
    markdown: str

    def encode(self, w: Writer) -> None:
        push_text(w, self.title, MAX_TITLE_LEN, "title")
        push_text(w, self.markdown, MAX_MARKDOWN_LEN, "markdown")

    @classmethod
    def decode(cls, r: Reader) -> Self:
        title = pull_text(r, MAX_TITLE_LEN, "title")
        return cls(title, pull_text(r, MAX_MARKDOWN_LEN, "markdown"))


@dataclass(frozen=True, slots=True)
class BlobRef(Struct):
    """Where one encrypted chunk is stored: a relay, a blob id and its token."""

    relay_url: str
    blob_id: bytes
    download_token: bytes

    def __post_init__(self) -> None:
        check_len(self.blob_id, BLOB_ID_LEN, "blob_id")
        check_range(len(self.download_token), 0, MAX_TOKEN_LEN, "download_token length")

    def encode(self, w: Writer) -> None:
        push_url(w, self.relay_url)
        push_fixed(w, self.blob_id, BLOB_ID_LEN, "blob_id")
        push_opaque_max(w, self.download_token, MAX_TOKEN_LEN, "download_token")

    @classmethod
    def decode(cls, r: Reader) -> Self:
        relay_url = pull_url(r)
        blob_id = r.pull_bytes(BLOB_ID_LEN)
        return cls(relay_url, blob_id, pull_opaque_max(r, MAX_TOKEN_LEN, "download_token"))


@dataclass(frozen=True, slots=True)
class ChunkRef(Struct):
    """One chunk's copies (1..4), on different relays; any copy will do."""

    copies: tuple[BlobRef, ...]

    def __post_init__(self) -> None:
        check_range(len(self.copies), 1, MAX_CHUNK_COPIES, "chunk copies")

    def encode(self, w: Writer) -> None:
        push_vector_max(w, self.copies, _push_struct, MAX_CHUNK_COPIES, "copies", min_count=1)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(pull_vector_max(r, BlobRef.decode, MAX_CHUNK_COPIES, "copies", min_count=1))


def chunk_count(size: int, chunk_plaintext_size: int) -> int:
    """Chunks a file of ``size`` bytes takes; an empty file still has one."""
    if chunk_plaintext_size <= 0:
        raise LocalError("chunk_plaintext_size must be positive")
    return max(1, -(-size // chunk_plaintext_size))


@dataclass(frozen=True, slots=True)
class File(Body):
    """A file sent as encrypted blob chunks (see :mod:`protocol.app.attachments`).

    ``key`` is the file's fresh random key; ``ciphertext_digest`` is SHA-256
    over the encrypted chunks in order.  No plaintext hash appears anywhere.
    """

    TYPE: ClassVar[int] = AppMessageType.FILE
    name: str
    media_type: str
    size: int
    chunk_plaintext_size: int
    key: bytes
    chunks: tuple[ChunkRef, ...]
    ciphertext_digest: bytes

    def __post_init__(self) -> None:
        check_range(self.size, 0, UINT64_MAX, "size")
        check_range(self.chunk_plaintext_size, 1, BLOB_CHUNK_SIZE, "chunk_plaintext_size")
        check_len(self.key, FILE_KEY_LEN, "key")
        check_len(self.ciphertext_digest, DIGEST_LEN, "ciphertext_digest")
        if len(self.chunks) != chunk_count(self.size, self.chunk_plaintext_size):
            raise LocalError("the number of chunks does not match size / chunk_plaintext_size")
        check_range(len(self.chunks), 1, MAX_CHUNKS, "number of chunks")

    def encode(self, w: Writer) -> None:
        push_text(w, self.name, MAX_FILE_NAME_LEN, "name")
        push_text(w, self.media_type, MAX_MEDIA_TYPE_LEN, "media_type")
        w.push_uint64(self.size)
        w.push_uint32(self.chunk_plaintext_size)
        push_fixed(w, self.key, FILE_KEY_LEN, "key")
        push_vector_max(w, self.chunks, _push_struct, MAX_CHUNKS, "chunks", min_count=1)
        push_fixed(w, self.ciphertext_digest, DIGEST_LEN, "ciphertext_digest")

    @classmethod
    def decode(cls, r: Reader) -> Self:
        name = pull_text(r, MAX_FILE_NAME_LEN, "name")
        media_type = pull_text(r, MAX_MEDIA_TYPE_LEN, "media_type")
        size = r.pull_uint64()
        chunk_plaintext_size = r.pull_uint32()
        if not 1 <= chunk_plaintext_size <= BLOB_CHUNK_SIZE:
            raise DecodeError(f"chunk_plaintext_size {chunk_plaintext_size} out of range")
        key = r.pull_bytes(FILE_KEY_LEN)
        chunks = pull_vector_max(r, ChunkRef.decode, MAX_CHUNKS, "chunks", min_count=1)
        if len(chunks) != chunk_count(size, chunk_plaintext_size):
            raise DecodeError("the number of chunks does not match the file size")
        digest = r.pull_bytes(DIGEST_LEN)
        return cls(name, media_type, size, chunk_plaintext_size, key, chunks, digest)


@dataclass(frozen=True, slots=True)
class Receipt(Body):
    """End-to-end delivery or read receipts for up to 1000 message ids."""

    TYPE: ClassVar[int] = AppMessageType.RECEIPT
    kind: ReceiptKind
    message_ids: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.kind, ReceiptKind):
            raise LocalError(f"unknown receipt kind {self.kind}")
        check_range(len(self.message_ids), 1, MAX_RECEIPT_IDS, "number of receipt ids")
        for mid in self.message_ids:
            check_len(mid, MESSAGE_ID_LEN, "message id")

    def encode(self, w: Writer) -> None:
        w.push_uint8(self.kind)
        push_fixed_ids(w, self.message_ids, MESSAGE_ID_LEN, MAX_RECEIPT_IDS, "message_ids")

    @classmethod
    def decode(cls, r: Reader) -> Self:
        raw = r.pull_uint8()
        try:
            kind = ReceiptKind(raw)
        except ValueError:
            raise DecodeError(f"unknown receipt kind {raw}") from None
        ids = pull_fixed_ids(r, MESSAGE_ID_LEN, MAX_RECEIPT_IDS, "message_ids")
        if not ids:
            raise DecodeError("receipt carries no message ids")
        return cls(kind, ids)


@dataclass(frozen=True, slots=True)
class Profile(Body):
    """The sender's display name and current inboxes (sent again on a relay move)."""

    TYPE: ClassVar[int] = AppMessageType.PROFILE
    display_name: str
    inboxes: tuple[InboxAddress, ...]

    def encode(self, w: Writer) -> None:
        push_text(w, self.display_name, MAX_DISPLAY_NAME_LEN, "display_name")
        push_inboxes(w, self.inboxes)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        display_name = pull_text(r, MAX_DISPLAY_NAME_LEN, "display_name")
        return cls(display_name, pull_inboxes(r))


@dataclass(frozen=True, slots=True)
class KeyPackages(Body):
    """Encoded ``MLSMessage(KeyPackage)`` values, each an ``opaque<V>``."""

    TYPE: ClassVar[int] = AppMessageType.KEY_PACKAGES
    key_packages: tuple[bytes, ...]

    def __post_init__(self) -> None:
        check_range(len(self.key_packages), 1, MAX_KEY_PACKAGES, "number of key packages")
        for kp in self.key_packages:
            check_range(len(kp), 1, MAX_KEY_PACKAGE_LEN, "key package length")

    def encode(self, w: Writer) -> None:
        push_vector_max(
            w, self.key_packages, _push_key_package, MAX_KEY_PACKAGES, "key_packages", min_count=1
        )

    @classmethod
    def decode(cls, r: Reader) -> Self:
        kps = pull_vector_max(r, _pull_key_package, MAX_KEY_PACKAGES, "key_packages", min_count=1)
        return cls(kps)


@dataclass(frozen=True, slots=True)
class Disappearing(Body):
    """Announces the conversation's disappearing timer (0 = off).

    The authoritative value is ``GroupMeta.disappearing_ms``; this message is
    the human-visible notice that goes with the GroupContext change.
    """

    TYPE: ClassVar[int] = AppMessageType.DISAPPEARING
    timer_ms: int

    def __post_init__(self) -> None:
        check_range(self.timer_ms, 0, UINT64_MAX, "timer_ms")

    def encode(self, w: Writer) -> None:
        w.push_uint64(self.timer_ms)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls(r.pull_uint64())


@dataclass(frozen=True, slots=True)
class RelayMove(Body):
    """Informational: the sender moved from one relay to another."""

    TYPE: ClassVar[int] = AppMessageType.RELAY_MOVE
    old_relay_url: str
    new_relay_url: str

    def encode(self, w: Writer) -> None:
        push_url(w, self.old_relay_url, "old_relay_url")
        push_url(w, self.new_relay_url, "new_relay_url")

    @classmethod
    def decode(cls, r: Reader) -> Self:
        old = pull_url(r, "old_relay_url")
        return cls(old, pull_url(r, "new_relay_url"))


@dataclass(frozen=True, slots=True)
class Heartbeat(Body):
    """Carries nothing but its header: its ``sender_seq`` is the sender's
    signed high-water mark.  Sent a while after a sender's last message, it
    lets receivers see that the messages before it were dropped (a gap)
    even when they were the sender's last ones (SPEC.md §8.11)."""

    TYPE: ClassVar[int] = AppMessageType.HEARTBEAT

    def encode(self, w: Writer) -> None:
        pass

    @classmethod
    def decode(cls, r: Reader) -> Self:
        return cls()


@dataclass(frozen=True, slots=True)
class UnknownBody(Body):
    """The body of a type this client does not know, kept as raw bytes."""

    body_type: int
    data: bytes

    def __post_init__(self) -> None:
        check_range(self.body_type, 0, 255, "body type")
        if self.body_type in _BODY_CLASSES:
            raise LocalError(f"type {self.body_type} is known; use its body class")

    @property
    def type(self) -> int:
        return self.body_type

    def encode(self, w: Writer) -> None:
        w.push_bytes(self.data)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        raise LocalError("UnknownBody is built by AppMessage.decode from its type and bytes")


AnyBody = (
    Text | Article | File | Receipt | Profile | KeyPackages | Disappearing | RelayMove | Heartbeat
)
_BODY_CLASSES: dict[int, type[Body]] = {
    cls.TYPE: cls
    for cls in (
        Text,
        Article,
        File,
        Receipt,
        Profile,
        KeyPackages,
        Disappearing,
        RelayMove,
        Heartbeat,
    )
}


@dataclass(frozen=True, slots=True)
class AppMessage(Struct):
    """``AppMessage`` (SPEC.md §8.2): the header and one body."""

    message_id: bytes
    sent_at_ms: int
    sender_seq: int
    expires_after_ms: int
    body: AnyBody | UnknownBody
    version: int = APP_VERSION

    def __post_init__(self) -> None:
        if self.version != APP_VERSION:
            raise LocalError(f"unsupported AppMessage version {self.version}")
        check_len(self.message_id, MESSAGE_ID_LEN, "message_id")
        check_range(self.sent_at_ms, 0, UINT64_MAX, "sent_at_ms")
        check_range(self.sender_seq, 1, UINT64_MAX, "sender_seq")
        check_range(self.expires_after_ms, 0, UINT64_MAX, "expires_after_ms")

    @classmethod
    def new(
        cls,
        body: AnyBody,
        *,
        rng: Rng,
        now_ms: int,
        sender_seq: int,
        expires_after_ms: int = 0,
    ) -> AppMessage:
        """A message with a fresh random ``message_id`` from ``rng``."""
        message_id = random_bytes(rng, MESSAGE_ID_LEN, "message_id")
        return cls(message_id, now_ms, sender_seq, expires_after_ms, body)

    @property
    def type(self) -> int:
        return self.body.type

    def encode(self, w: Writer) -> None:
        w.push_uint8(self.version)
        push_fixed(w, self.message_id, MESSAGE_ID_LEN, "message_id")
        w.push_uint64(self.sent_at_ms)
        w.push_uint64(self.sender_seq)
        w.push_uint64(self.expires_after_ms)
        w.push_uint8(self.body.type)
        w.push_opaque(self.body.to_bytes())

    def to_bytes(self) -> bytes:
        data = Struct.to_bytes(self)
        if len(data) > MAX_APP_MESSAGE_LEN:
            raise LocalError(f"AppMessage of {len(data)} bytes exceeds {MAX_APP_MESSAGE_LEN}")
        return data

    @classmethod
    def decode(cls, r: Reader) -> Self:
        version = r.pull_uint8()
        if version != APP_VERSION:
            raise DecodeError(f"unsupported AppMessage version {version}")
        message_id = r.pull_bytes(MESSAGE_ID_LEN)
        sent_at_ms = r.pull_uint64()
        sender_seq = r.pull_uint64()
        if sender_seq == 0:
            raise DecodeError("sender_seq starts at 1")
        expires_after_ms = r.pull_uint64()
        body_type = r.pull_uint8()
        data = pull_opaque_max(r, MAX_APP_MESSAGE_LEN, "body")
        body_cls = _BODY_CLASSES.get(body_type)
        body: AnyBody | UnknownBody
        if body_cls is None:
            body = UnknownBody(body_type, data)
        else:
            body = decode_exact(data, body_cls.decode)  # type: ignore[assignment]
        return cls(message_id, sent_at_ms, sender_seq, expires_after_ms, body)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        if len(data) > MAX_APP_MESSAGE_LEN:
            raise DecodeError(f"AppMessage of {len(data)} bytes exceeds {MAX_APP_MESSAGE_LEN}")
        return decode_exact(data, cls.decode)


def new_receipts(kind: ReceiptKind, message_ids: Sequence[bytes]) -> list[Receipt]:
    """Receipts for any number of ids, split into bodies of at most 1000."""
    return [
        Receipt(kind, tuple(message_ids[i : i + MAX_RECEIPT_IDS]))
        for i in range(0, len(message_ids), MAX_RECEIPT_IDS)
    ]


#: Up to this many other members, every member sends delivered receipts.
RECEIPT_ALL_MAX = 64
#: Above it, only this many sampled members ("witnesses") do, per message.
RECEIPT_WITNESSES = 16
_WITNESS_LABEL = b"samizdat receipt witness v1"


def receipt_witnesses(message_id: bytes, recipients: Sequence[bytes]) -> list[bytes]:
    """The members (identity keys) expected to send a ``delivered`` receipt
    for ``message_id``: all ``recipients`` (the members other than the
    sender) if there are at most :data:`RECEIPT_ALL_MAX`, else the
    :data:`RECEIPT_WITNESSES` whose SHA-256(label || message_id || key)
    sorts lowest.  Sender and receivers compute the same sample from the
    message id and the member list, so receipt traffic per message stays
    bounded (O(n) per message instead of O(n^2) per burst, SPEC.md §8.11)."""
    check_len(message_id, MESSAGE_ID_LEN, "message_id")
    unique = sorted(set(recipients))
    if len(unique) <= RECEIPT_ALL_MAX:
        return unique
    ranked = sorted(unique, key=lambda key: sha256(_WITNESS_LABEL + message_id + key).digest())
    return sorted(ranked[:RECEIPT_WITNESSES])


def _push_struct(w: Writer, item: Struct) -> None:
    item.encode(w)


def _push_message_id(w: Writer, mid: bytes) -> None:
    push_fixed(w, mid, MESSAGE_ID_LEN, "message id")


def _pull_message_id(r: Reader) -> bytes:
    return r.pull_bytes(MESSAGE_ID_LEN)


def _push_key_package(w: Writer, kp: bytes) -> None:
    push_opaque_max(w, kp, MAX_KEY_PACKAGE_LEN, "key package")


def _pull_key_package(r: Reader) -> bytes:
    kp = pull_opaque_max(r, MAX_KEY_PACKAGE_LEN, "key package")
    if not kp:
        raise DecodeError("empty key package")
    return kp
