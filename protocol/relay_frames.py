"""Relay mailbox frames: the WebSocket protocol between clients and relays.

Sans-I/O: frozen dataclasses with strict TLS-PL codecs (``encode()`` /
``decode_*_frame(data)``), the typed relay errors that travel in
:class:`Error` frames, the domain-separated messages that clients sign, and
:class:`ClientConnection`, a small client-side state object.  SPEC.md §7
describes every struct in the presentation language.

Theory of operation
-------------------
One WebSocket binary message carries exactly one frame: ``uint8 type`` then
the struct, with no trailing bytes.  Client frames have types 0x01-0x7f,
relay frames 0x80-0xff; a frame decoded in the wrong direction is malformed.
Every client request carries a ``uint32 req_id`` that the relay echoes in its
one reply (``Ok``, ``Posted``, ``Subscribed`` or ``Error``); ``Deliver`` frames
are pushes and carry no request id.  ``Credit`` is the one client frame that
is not a request (no id, no reply): the reader's flow-control window.  A relay
may send ``Deliver`` frames only while the connection's credit is positive;
it starts at :data:`INITIAL_CREDIT` bytes and every ``Deliver`` spends its
encoded length, so a reader that grants credit as it processes frames is
never sent more than it can take (SPEC.md §7.6, "Flow control").
Fixed-size fields (ids, keys, nonces, signatures) are raw bytes of a fixed
length, so no length from the network sizes anything but an envelope, and an
envelope is bounded by the codec's 2^30 cap and then by the relay's own
limit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from protocol.codec import Reader, Writer, decode_exact, encode_varint, opaque
from protocol.errors import DecodeError, LocalError, RemoteError

PROTOCOL_VERSION = 2
# Flow control (SPEC.md §7.6): the Deliver bytes a relay may send on a new
# connection before the reader's first Credit, and the largest balance.
INITIAL_CREDIT = 1024 * 1024
MAX_CREDIT = (1 << 32) - 1
MAILBOX_ID_LEN = 32
KEY_LEN = 32
SIG_LEN = 64
NONCE_LEN = 32
MSG_ID_LEN = 16
MAX_REASON_LEN = 256
MAX_TOKEN_LEN = 256
MAX_SEQ = (1 << 64) - 1
MAX_REQ_ID = (1 << 32) - 1
BLOB_ID_LEN = 16
TOKEN_LEN = 32
#: Create.mode: an ack deletes (one logical reader) / acks never delete (SPEC.md §7.7)
MODE_QUEUE = 0
MODE_SHARED_LOG = 1
MAILBOX_MODES = (MODE_QUEUE, MODE_SHARED_LOG)

_LABEL_PREFIX = b"samizdat-relay/v1 "


# ---------------------------------------------------------------- errors


class RelayError(RemoteError):
    """A refusal by the relay; ``code`` is its value in :class:`Error` frames.

    ``fatal`` errors are followed by the relay closing the connection.
    """

    code = 100
    fatal = False


class BadFrame(RelayError):
    """Malformed bytes, an unknown frame type or a frame in the wrong direction."""

    code = 101
    fatal = True


class UnknownMailbox(RelayError):
    code = 102


class MailboxExists(RelayError):
    code = 103


class BadSignature(RelayError):
    code = 104


class NotAuthorized(RelayError):
    """The connection has not proved the key this operation needs."""

    code = 105


class BadSize(RelayError):
    """The envelope size is not one of the padding buckets."""

    code = 106


class TooLarge(RelayError):
    code = 107


class QuotaExceeded(RelayError):
    """The mailbox holds its maximum number of messages or bytes."""

    code = 108


class StorageFull(RelayError):
    code = 109


class RateLimited(RelayError):
    code = 110


class AccessDenied(RelayError):
    """Creating a mailbox needs the operator's access token."""

    code = 111


class TooManyMailboxes(RelayError):
    """The per-connection limit of authorized or subscribed mailboxes."""

    code = 112


class SlowConsumer(RelayError):
    code = 113
    fatal = True


class ShuttingDown(RelayError):
    code = 114
    fatal = True


class Unavailable(RelayError):
    """The storage backend failed; retrying later may succeed."""

    code = 115


class BadRequest(RelayError):
    """Well-formed but invalid values (a TTL or a sequence out of range)."""

    code = 116


class TooManyConnections(RelayError):
    code = 117
    fatal = True


class ForwardDenied(RelayError):
    """Private routing (SPEC.md §7.14): the forwarder will not reach that
    destination (a private or loopback address, a denied host, a bad URL)."""

    code = 118


class ForwardFailed(RelayError):
    """The forwarder could not get an answer from the destination relay."""

    code = 119


class BadSeal(RelayError):
    """A forwarded request does not open with this relay's forwarding key."""

    code = 120


ERROR_CLASSES: dict[int, type[RelayError]] = {
    cls.code: cls
    for cls in (
        RelayError,
        BadFrame,
        UnknownMailbox,
        MailboxExists,
        BadSignature,
        NotAuthorized,
        BadSize,
        TooLarge,
        QuotaExceeded,
        StorageFull,
        RateLimited,
        AccessDenied,
        TooManyMailboxes,
        SlowConsumer,
        ShuttingDown,
        Unavailable,
        BadRequest,
        TooManyConnections,
        ForwardDenied,
        ForwardFailed,
        BadSeal,
    )
}


def error_class(code: int) -> type[RelayError]:
    """The error class for a wire code (the root for unknown codes)."""
    return ERROR_CLASSES.get(code, RelayError)


# ---------------------------------------------------------------- signed messages


def auth_message(purpose: str, nonce: bytes, mailbox_id: bytes, extra: bytes = b"") -> bytes:
    """What a client signs to prove a key on one connection.

    ``opaque label<V> || opaque nonce[32] || opaque mailbox_id[32] || extra``
    with label ``"samizdat-relay/v1 " + purpose`` and purpose one of
    ``auth-read``, ``auth-write``, ``rotate-write`` (extra = the new key) or
    ``delete-mailbox``.
    """
    _check_len("nonce", nonce, NONCE_LEN)
    _check_len("mailbox_id", mailbox_id, MAILBOX_ID_LEN)
    return opaque(_LABEL_PREFIX + purpose.encode()) + nonce + mailbox_id + extra


def post_message(mailbox_id: bytes, msg_id: bytes, envelope: bytes) -> bytes:
    """What a one-shot :class:`PostSigned` signs (no connection nonce)."""
    return (
        opaque(_LABEL_PREFIX + b"post")
        + _fixed("mailbox_id", mailbox_id, MAILBOX_ID_LEN)
        + _fixed("msg_id", msg_id, MSG_ID_LEN)
        + opaque(envelope)
    )


def _check_len(name: str, value: bytes, n: int) -> None:
    if len(value) != n:
        raise LocalError(f"{name} must be {n} bytes, got {len(value)}")


def _fixed(name: str, value: bytes, n: int) -> bytes:
    _check_len(name, value, n)
    return value


# ---------------------------------------------------------------- frames


@dataclass(frozen=True, slots=True)
class Frame(ABC):
    """Base of every frame; ``TYPE`` is its ``uint8`` tag on the wire."""

    TYPE: ClassVar[int] = 0

    def encode(self) -> bytes:
        w = Writer()
        w.push_uint8(self.TYPE)
        self._push(w)
        return w.getvalue()

    @abstractmethod
    def _push(self, w: Writer) -> None:
        """Append the frame's struct (after the type byte)."""

    @classmethod
    @abstractmethod
    def _pull(cls, r: Reader) -> Frame:
        """Read the frame's struct (after the type byte)."""


def _push_id(w: Writer, name: str, value: bytes, n: int) -> None:
    _check_len(name, value, n)
    w.push_bytes(value)


@dataclass(frozen=True, slots=True)
class Create(Frame):
    """Create a mailbox (idempotent for identical keys and mode).

    ``mode`` is :data:`MODE_QUEUE` (an ack deletes: one logical reader, an
    inbox) or :data:`MODE_SHARED_LOG` (acks never delete; messages leave by
    TTL or quota: a group's mailbox, read by members who share the read key,
    so one reader's ack must not erase what the others have not fetched).
    """

    TYPE: ClassVar[int] = 0x01
    req_id: int
    mailbox_id: bytes
    read_key: bytes
    write_key: bytes
    ttl_seconds: int = 0
    access_token: bytes = b""
    mode: int = 0

    def _push(self, w: Writer) -> None:
        w.push_uint32(self.req_id)
        _push_id(w, "mailbox_id", self.mailbox_id, MAILBOX_ID_LEN)
        _push_id(w, "read_key", self.read_key, KEY_LEN)
        _push_id(w, "write_key", self.write_key, KEY_LEN)
        w.push_uint32(self.ttl_seconds)
        if len(self.access_token) > MAX_TOKEN_LEN:
            raise LocalError("access token too long")
        w.push_opaque(self.access_token)
        if self.mode not in MAILBOX_MODES:
            raise LocalError(f"unknown mailbox mode {self.mode}")
        w.push_uint8(self.mode)

    @classmethod
    def _pull(cls, r: Reader) -> Create:
        req_id = r.pull_uint32()
        mailbox_id = r.pull_bytes(MAILBOX_ID_LEN)
        read_key = r.pull_bytes(KEY_LEN)
        write_key = r.pull_bytes(KEY_LEN)
        ttl = r.pull_uint32()
        token = r.pull_opaque()
        if len(token) > MAX_TOKEN_LEN:
            raise DecodeError("access token too long")
        mode = r.pull_uint8()
        if mode not in MAILBOX_MODES:
            raise DecodeError(f"unknown mailbox mode {mode}")
        return cls(req_id, mailbox_id, read_key, write_key, ttl, token, mode)


@dataclass(frozen=True, slots=True)
class _Auth(Frame):
    req_id: int
    mailbox_id: bytes
    signature: bytes

    def _push(self, w: Writer) -> None:
        w.push_uint32(self.req_id)
        _push_id(w, "mailbox_id", self.mailbox_id, MAILBOX_ID_LEN)
        _push_id(w, "signature", self.signature, SIG_LEN)

    @classmethod
    def _pull(cls, r: Reader) -> _Auth:
        return cls(r.pull_uint32(), r.pull_bytes(MAILBOX_ID_LEN), r.pull_bytes(SIG_LEN))


@dataclass(frozen=True, slots=True)
class AuthRead(_Auth):
    """Prove the read key: sign ``auth_message("auth-read", nonce, mailbox_id)``."""

    TYPE: ClassVar[int] = 0x02


@dataclass(frozen=True, slots=True)
class AuthWrite(_Auth):
    """Prove the write key once; later :class:`Post` frames need no signature."""

    TYPE: ClassVar[int] = 0x03


@dataclass(frozen=True, slots=True)
class Subscribe(Frame):
    """Backfill from ``from_seq`` (inclusive), then push live messages."""

    TYPE: ClassVar[int] = 0x04
    req_id: int
    mailbox_id: bytes
    from_seq: int = 0

    def _push(self, w: Writer) -> None:
        w.push_uint32(self.req_id)
        _push_id(w, "mailbox_id", self.mailbox_id, MAILBOX_ID_LEN)
        w.push_uint64(self.from_seq)

    @classmethod
    def _pull(cls, r: Reader) -> Subscribe:
        return cls(r.pull_uint32(), r.pull_bytes(MAILBOX_ID_LEN), r.pull_uint64())


@dataclass(frozen=True, slots=True)
class Unsubscribe(Frame):
    TYPE: ClassVar[int] = 0x05
    req_id: int
    mailbox_id: bytes

    def _push(self, w: Writer) -> None:
        w.push_uint32(self.req_id)
        _push_id(w, "mailbox_id", self.mailbox_id, MAILBOX_ID_LEN)

    @classmethod
    def _pull(cls, r: Reader) -> Unsubscribe:
        return cls(r.pull_uint32(), r.pull_bytes(MAILBOX_ID_LEN))


@dataclass(frozen=True, slots=True)
class Post(Frame):
    """Append an envelope; the connection must have proved the write key."""

    TYPE: ClassVar[int] = 0x06
    req_id: int
    mailbox_id: bytes
    msg_id: bytes
    envelope: bytes

    def _push(self, w: Writer) -> None:
        w.push_uint32(self.req_id)
        _push_id(w, "mailbox_id", self.mailbox_id, MAILBOX_ID_LEN)
        _push_id(w, "msg_id", self.msg_id, MSG_ID_LEN)
        w.push_opaque(self.envelope)

    @classmethod
    def _pull(cls, r: Reader) -> Post:
        return cls(
            r.pull_uint32(), r.pull_bytes(MAILBOX_ID_LEN), r.pull_bytes(MSG_ID_LEN), r.pull_opaque()
        )


@dataclass(frozen=True, slots=True)
class PostSigned(Frame):
    """A one-shot post signed over :func:`post_message` with the write key."""

    TYPE: ClassVar[int] = 0x07
    req_id: int
    mailbox_id: bytes
    msg_id: bytes
    envelope: bytes
    signature: bytes

    def _push(self, w: Writer) -> None:
        w.push_uint32(self.req_id)
        _push_id(w, "mailbox_id", self.mailbox_id, MAILBOX_ID_LEN)
        _push_id(w, "msg_id", self.msg_id, MSG_ID_LEN)
        w.push_opaque(self.envelope)
        _push_id(w, "signature", self.signature, SIG_LEN)

    @classmethod
    def _pull(cls, r: Reader) -> PostSigned:
        return cls(
            r.pull_uint32(),
            r.pull_bytes(MAILBOX_ID_LEN),
            r.pull_bytes(MSG_ID_LEN),
            r.pull_opaque(),
            r.pull_bytes(SIG_LEN),
        )


@dataclass(frozen=True, slots=True)
class Ack(Frame):
    """Delete every message with ``seq <= up_to_seq`` (needs the read key)."""

    TYPE: ClassVar[int] = 0x08
    req_id: int
    mailbox_id: bytes
    up_to_seq: int

    def _push(self, w: Writer) -> None:
        w.push_uint32(self.req_id)
        _push_id(w, "mailbox_id", self.mailbox_id, MAILBOX_ID_LEN)
        w.push_uint64(self.up_to_seq)

    @classmethod
    def _pull(cls, r: Reader) -> Ack:
        return cls(r.pull_uint32(), r.pull_bytes(MAILBOX_ID_LEN), r.pull_uint64())


@dataclass(frozen=True, slots=True)
class RotateWrite(Frame):
    """Replace the write key; signed by the current one over the nonce."""

    TYPE: ClassVar[int] = 0x09
    req_id: int
    mailbox_id: bytes
    new_write_key: bytes
    signature: bytes

    def _push(self, w: Writer) -> None:
        w.push_uint32(self.req_id)
        _push_id(w, "mailbox_id", self.mailbox_id, MAILBOX_ID_LEN)
        _push_id(w, "new_write_key", self.new_write_key, KEY_LEN)
        _push_id(w, "signature", self.signature, SIG_LEN)

    @classmethod
    def _pull(cls, r: Reader) -> RotateWrite:
        return cls(
            r.pull_uint32(),
            r.pull_bytes(MAILBOX_ID_LEN),
            r.pull_bytes(KEY_LEN),
            r.pull_bytes(SIG_LEN),
        )


@dataclass(frozen=True, slots=True)
class DeleteMailbox(_Auth):
    """Delete a mailbox and everything in it; signed by its *read* key
    (``auth_message("delete-mailbox", nonce, mailbox_id)``): the reader owns a
    mailbox, writers only hold a capability to post (SPEC.md §7.7).  Type 0x10."""

    TYPE: ClassVar[int] = 0x10


@dataclass(frozen=True, slots=True)
class Credit(Frame):
    """Allow ``amount`` more bytes of ``Deliver`` frames; not a request: no reply.

    A reader returns the encoded length of each ``Deliver`` it has processed,
    so what the relay may have in flight stays bounded by the reader's window.
    """

    TYPE: ClassVar[int] = 0x0A
    amount: int

    def _push(self, w: Writer) -> None:
        w.push_uint32(self.amount)

    @classmethod
    def _pull(cls, r: Reader) -> Credit:
        return cls(r.pull_uint32())


@dataclass(frozen=True, slots=True)
class Challenge(Frame):
    """The relay's first frame on every connection."""

    TYPE: ClassVar[int] = 0x80
    version: int
    nonce: bytes
    max_envelope_size: int

    def _push(self, w: Writer) -> None:
        w.push_uint16(self.version)
        _push_id(w, "nonce", self.nonce, NONCE_LEN)
        w.push_uint32(self.max_envelope_size)

    @classmethod
    def _pull(cls, r: Reader) -> Challenge:
        return cls(r.pull_uint16(), r.pull_bytes(NONCE_LEN), r.pull_uint32())


@dataclass(frozen=True, slots=True)
class Ok(Frame):
    TYPE: ClassVar[int] = 0x81
    req_id: int

    def _push(self, w: Writer) -> None:
        w.push_uint32(self.req_id)

    @classmethod
    def _pull(cls, r: Reader) -> Ok:
        return cls(r.pull_uint32())


@dataclass(frozen=True, slots=True)
class Posted(Frame):
    """``duplicate`` is true when ``msg_id`` was already stored as ``seq``."""

    TYPE: ClassVar[int] = 0x82
    req_id: int
    seq: int
    duplicate: bool = False

    def _push(self, w: Writer) -> None:
        w.push_uint32(self.req_id)
        w.push_uint64(self.seq)
        w.push_bool(self.duplicate)

    @classmethod
    def _pull(cls, r: Reader) -> Posted:
        return cls(r.pull_uint32(), r.pull_uint64(), r.pull_bool())


@dataclass(frozen=True, slots=True)
class Subscribed(Frame):
    """Sent before any backfill; ``head_seq`` is the last assigned seq (0: none)."""

    TYPE: ClassVar[int] = 0x83
    req_id: int
    head_seq: int

    def _push(self, w: Writer) -> None:
        w.push_uint32(self.req_id)
        w.push_uint64(self.head_seq)

    @classmethod
    def _pull(cls, r: Reader) -> Subscribed:
        return cls(r.pull_uint32(), r.pull_uint64())


@dataclass(frozen=True, slots=True)
class Deliver(Frame):
    """One stored message pushed to a subscribed connection."""

    TYPE: ClassVar[int] = 0x84
    mailbox_id: bytes
    seq: int
    envelope: bytes

    def _push(self, w: Writer) -> None:
        _push_id(w, "mailbox_id", self.mailbox_id, MAILBOX_ID_LEN)
        w.push_uint64(self.seq)
        w.push_opaque(self.envelope)

    @classmethod
    def _pull(cls, r: Reader) -> Deliver:
        return cls(r.pull_bytes(MAILBOX_ID_LEN), r.pull_uint64(), r.pull_opaque())


@dataclass(frozen=True, slots=True)
class Error(Frame):
    """A typed refusal; ``req_id`` is 0 when no request caused it."""

    TYPE: ClassVar[int] = 0x8F
    req_id: int
    code: int
    reason: str = ""

    def _push(self, w: Writer) -> None:
        w.push_uint32(self.req_id)
        w.push_uint16(self.code)
        raw = self.reason.encode("utf-8")[:MAX_REASON_LEN]
        w.push_opaque(raw.decode("utf-8", "ignore").encode("utf-8"))

    @classmethod
    def _pull(cls, r: Reader) -> Error:
        req_id = r.pull_uint32()
        code = r.pull_uint16()
        raw = r.pull_opaque()
        if len(raw) > MAX_REASON_LEN:
            raise DecodeError("error reason too long")
        try:
            reason = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError("error reason is not UTF-8") from exc
        return cls(req_id, code, reason)

    @classmethod
    def from_exception(cls, req_id: int, exc: RelayError) -> Error:
        return cls(req_id, exc.code, str(exc))

    def to_exception(self) -> RelayError:
        return error_class(self.code)(self.reason)


@dataclass(frozen=True, slots=True)
class BlobTicket:
    """The body of a ``201`` answer to ``POST {prefix}/blob`` (not a frame).

    ``upload_token`` authorizes ``PUT``/``DELETE``; ``read_token`` authorizes
    ``GET``.  Both travel as ``Authorization: Bearer <hex>``.
    """

    blob_id: bytes
    upload_token: bytes
    read_token: bytes
    chunk_size: int
    expires_at: int

    def encode(self) -> bytes:
        w = Writer()
        _push_id(w, "blob_id", self.blob_id, BLOB_ID_LEN)
        _push_id(w, "upload_token", self.upload_token, TOKEN_LEN)
        _push_id(w, "read_token", self.read_token, TOKEN_LEN)
        w.push_uint32(self.chunk_size)
        w.push_uint64(self.expires_at)
        return w.getvalue()

    @classmethod
    def pull(cls, r: Reader) -> BlobTicket:
        return cls(
            r.pull_bytes(BLOB_ID_LEN),
            r.pull_bytes(TOKEN_LEN),
            r.pull_bytes(TOKEN_LEN),
            r.pull_uint32(),
            r.pull_uint64(),
        )

    @classmethod
    def decode(cls, data: bytes) -> BlobTicket:
        return decode_exact(data, cls.pull)


ClientFrame = (
    Create
    | AuthRead
    | AuthWrite
    | Subscribe
    | Unsubscribe
    | Post
    | PostSigned
    | Ack
    | RotateWrite
    | DeleteMailbox
    | Credit
)
ServerFrame = Challenge | Ok | Posted | Subscribed | Deliver | Error

CLIENT_FRAMES: dict[int, type[Frame]] = {
    c.TYPE: c
    for c in (
        Create,
        AuthRead,
        AuthWrite,
        Subscribe,
        Unsubscribe,
        Post,
        PostSigned,
        Ack,
        RotateWrite,
        DeleteMailbox,
        Credit,
    )
}
SERVER_FRAMES: dict[int, type[Frame]] = {
    c.TYPE: c for c in (Challenge, Ok, Posted, Subscribed, Deliver, Error)
}

F = TypeVar("F", bound=Frame)


def _decode(data: bytes, registry: dict[int, type[Frame]], direction: str) -> Frame:
    if not data:
        raise DecodeError("empty frame")
    cls = registry.get(data[0])
    if cls is None:
        raise DecodeError(f"unknown {direction} frame type 0x{data[0]:02x}")
    return decode_exact(data[1:], cls._pull)


_POST_HEAD = 1 + 4 + MAILBOX_ID_LEN + MSG_ID_LEN


def split_post(data: bytes) -> tuple[int, bytes, bytes, bytes] | None:
    """The common ``Post`` by slicing, as ``(req_id, mailbox_id, msg_id,
    envelope)`` without building the frame (the relay's hot path); None means
    "use the general decoder" (another type, or a form it must judge).

    Accepts exactly what :meth:`Post._pull` accepts: the varint length must be
    minimal (RFC 9420 §2.1.2) and the envelope must end the frame.
    """
    size = len(data)
    if size < _POST_HEAD + 1 or data[0] != Post.TYPE:
        return None
    first = data[_POST_HEAD]
    prefix = first >> 6
    if prefix == 0:
        n, start = first, _POST_HEAD + 1
    elif prefix == 1 and size >= _POST_HEAD + 2:
        n, start = ((first & 0x3F) << 8) | data[_POST_HEAD + 1], _POST_HEAD + 2
        if n < 64:
            return None
    else:
        return None
    if size - start != n:
        return None
    return (
        int.from_bytes(data[1:5], "big"),
        data[5 : 5 + MAILBOX_ID_LEN],
        data[5 + MAILBOX_ID_LEN : _POST_HEAD],
        data[start:],
    )


def _decode_post_fast(data: bytes) -> Post | None:
    """:func:`split_post` as a :class:`Post`."""
    parts = split_post(data)
    return None if parts is None else Post(*parts)


def decode_client_frame(data: bytes) -> ClientFrame:
    """Decode a frame sent by a client; raises :class:`DecodeError`."""
    if data[:1] == b"\x06":
        fast = _decode_post_fast(bytes(data))
        if fast is not None:
            return fast
    frame = _decode(data, CLIENT_FRAMES, "client")
    assert isinstance(frame, ClientFrame)
    return frame


def decode_server_frame(data: bytes) -> ServerFrame:
    """Decode a frame sent by a relay; raises :class:`DecodeError`."""
    frame = _decode(data, SERVER_FRAMES, "relay")
    assert isinstance(frame, ServerFrame)
    return frame


def encode_frame(frame: Frame) -> bytes:
    return frame.encode()


def encode_deliver(mailbox_id: bytes, seq: int, envelope: bytes) -> bytes:
    """:class:`Deliver` bytes without building the dataclass (hot path)."""
    _check_len("mailbox_id", mailbox_id, MAILBOX_ID_LEN)
    return b"".join(
        (b"\x84", mailbox_id, seq.to_bytes(8, "big"), encode_varint(len(envelope)), envelope)
    )


# ---------------------------------------------------------------- client state


class ClientConnection:
    """Client-side protocol state for one relay connection (no I/O).

    Feed every received binary message to :meth:`receive`; it returns the
    decoded frame and tracks the challenge nonce and outstanding requests.
    Build signatures over :meth:`auth_payload` with the caller's keys.
    """

    def __init__(self) -> None:
        self.challenge: Challenge | None = None
        self._next_req_id = 1
        self.pending: dict[int, Frame] = {}

    def next_req_id(self) -> int:
        req_id = self._next_req_id
        self._next_req_id = req_id + 1 if req_id < MAX_REQ_ID else 1
        return req_id

    def send(self, frame: F) -> bytes:
        """Record ``frame`` as outstanding (if it has a req_id) and encode it."""
        req_id = getattr(frame, "req_id", None)
        if isinstance(req_id, int):
            self.pending[req_id] = frame
        return frame.encode()

    def auth_payload(self, purpose: str, mailbox_id: bytes, extra: bytes = b"") -> bytes:
        if self.challenge is None:
            raise LocalError("no challenge received yet")
        return auth_message(purpose, self.challenge.nonce, mailbox_id, extra)

    def receive(self, data: bytes) -> ServerFrame:
        frame = decode_server_frame(data)
        if isinstance(frame, Challenge):
            if self.challenge is not None:
                raise DecodeError("second challenge on one connection")
            if frame.version != PROTOCOL_VERSION:
                raise DecodeError(f"unsupported relay protocol version {frame.version}")
            self.challenge = frame
        elif self.challenge is None:
            raise DecodeError(f"{type(frame).__name__} before the challenge")
        req_id = getattr(frame, "req_id", 0)
        if isinstance(req_id, int) and req_id:
            self.pending.pop(req_id, None)
        return frame
