"""Envelopes: the only thing a client ever posts to a relay mailbox.

Provides :class:`Envelope` and :class:`Fragment`, :func:`split` (encode and
fragment to a size limit), :func:`seal` (split, then pad every piece to a
bucket), :func:`open_envelope` (size check, unpad, decode), and
:class:`Reassembler`, a bounded sans-I/O fragment collector.

Theory of operation
-------------------
An envelope wraps one MLSMessage: ``mls`` for PrivateMessages posted to a
conversation mailbox, ``welcome`` for a Welcome posted to a personal inbox.
A Welcome envelope carries no hint of its group: the recipient recognises
its own KeyPackage reference inside the Welcome.  The envelope framing is
not encrypted here, and neither is the PrivateMessage header inside it
(``group_id``, ``epoch``, ``content_type``); a caller that encrypts each
envelope per mailbox uses :func:`split` with its own size limit and pads
under its encryption instead of calling :func:`seal`.

Every envelope from :func:`seal` is ``pad(encoded)`` (``uint32 length ||
encoded || fill``) with random fill, so its size is one of the nine buckets 256 B ..
64 KiB and a compressing transport cannot shrink the fill away.  A payload
whose padded encoding exceeds 64 KiB is split into ``fragment`` envelopes of
:data:`FRAGMENT_DATA_SIZE` bytes each (the last one shorter), and *every*
fragment is padded to the full 64 KiB: the relay learns the fragment count
(size in 64 KiB steps) and nothing finer.

Reassembly is bounded: at most :data:`MAX_FRAGMENTS` pieces per set,
16 MiB per set, 64 MiB and 64 sets per :class:`Reassembler`, and a set
expires ``ttl_ms`` after its first fragment arrived.  Duplicate fragments
(the same index and bytes) are ignored; fragments of a set that already
completed are ignored while the set is remembered; anything inconsistent is
refused with :class:`FragmentRejected`.  A client keeps one Reassembler per
(conversation, relay): a malicious relay can then poison only its own sets,
and the same message still completes from the other relays' copies.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Self

from protocol.app import Rng, check_len, check_range, random_bytes
from protocol.codec import Reader, Writer, decode_exact, encode_varint
from protocol.errors import DecodeError, LocalError, RemoteError
from protocol.mls.tree_structs import Struct, pull_enum
from protocol.padding import MAX_ENVELOPE_SIZE, is_envelope_size, pad, unpad

FRAGMENT_ID_LEN = 16
#: Most fragments one message may be split into (16 MiB needs 257).
MAX_FRAGMENTS = 1024
#: Largest payload :func:`seal` accepts and a Reassembler rebuilds.
MAX_MESSAGE_LEN = 16 * 1024 * 1024
_PAD_HEADER = 4
#: type(1) + fragment_id(16) + index(2) + count(2) + inner_type(1) + varint(4).
_FRAGMENT_OVERHEAD = 1 + FRAGMENT_ID_LEN + 2 + 2 + 1 + 4
#: Payload bytes in every fragment but the last: 65,536 - 4 - 26 = 65,506.
FRAGMENT_DATA_SIZE = MAX_ENVELOPE_SIZE - _PAD_HEADER - _FRAGMENT_OVERHEAD


class EnvelopeType(IntEnum):
    MLS = 1
    WELCOME = 2
    FRAGMENT = 3
    #: a Welcome whose ratchet tree is a blob (SPEC §4.1.1, protocol.app.tree_welcome)
    TREE_WELCOME = 4


class FragmentRejected(RemoteError):
    """A fragment that a :class:`Reassembler` refused (not a decoding error).

    Raised for an inconsistent set (a different ``count`` or ``inner_type``,
    different bytes at an index already held: the set is dropped) and for a
    fragment that would exceed a memory bound (the fragment is not stored;
    the set, if any, is kept or dropped as ``set_dropped`` says).
    """

    code = 30

    def __init__(self, reason: str, *, set_dropped: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.set_dropped = set_dropped


@dataclass(frozen=True, slots=True)
class Fragment(Struct):
    """One piece of a payload too large for a single 64 KiB envelope."""

    fragment_id: bytes
    index: int
    count: int
    inner_type: EnvelopeType
    data: bytes

    def __post_init__(self) -> None:
        check_len(self.fragment_id, FRAGMENT_ID_LEN, "fragment_id")
        check_range(self.count, 1, MAX_FRAGMENTS, "fragment count")
        check_range(self.index, 0, self.count - 1, "fragment index")
        if self.inner_type == EnvelopeType.FRAGMENT:
            raise LocalError("a fragment cannot carry a fragment")
        check_range(len(self.data), 1, FRAGMENT_DATA_SIZE, "fragment data length")

    def encode(self, w: Writer) -> None:
        w.push_bytes(self.fragment_id)
        w.push_uint16(self.index)
        w.push_uint16(self.count)
        w.push_uint8(self.inner_type)
        w.push_opaque(self.data)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        fragment_id = r.pull_bytes(FRAGMENT_ID_LEN)
        index = r.pull_uint16()
        count = r.pull_uint16()
        if not 1 <= count <= MAX_FRAGMENTS or index >= count:
            raise DecodeError(f"fragment {index} of {count} is out of range")
        inner_type = pull_enum(r, EnvelopeType, Reader.pull_uint8)
        if inner_type == EnvelopeType.FRAGMENT:
            raise DecodeError("a fragment cannot carry a fragment")
        data = r.pull_opaque()
        if not 1 <= len(data) <= FRAGMENT_DATA_SIZE:
            raise DecodeError(f"fragment data of {len(data)} bytes")
        return cls(fragment_id, index, count, inner_type, data)


@dataclass(frozen=True, slots=True)
class Envelope(Struct):
    """``Envelope``: ``payload`` for ``mls``/``welcome``, ``fragment`` for ``fragment``."""

    type: EnvelopeType
    payload: bytes = b""
    fragment: Fragment | None = None

    def __post_init__(self) -> None:
        if self.type == EnvelopeType.FRAGMENT:
            if self.fragment is None or self.payload:
                raise LocalError("a fragment envelope carries exactly a Fragment")
        elif self.fragment is not None or not self.payload:
            raise LocalError(f"a {self.type.name.lower()} envelope carries a non-empty payload")

    def encode(self, w: Writer) -> None:
        w.push_uint8(self.type)
        if self.fragment is not None:
            self.fragment.encode(w)
        else:
            w.push_opaque(self.payload)

    @classmethod
    def decode(cls, r: Reader) -> Self:
        envelope_type = pull_enum(r, EnvelopeType, Reader.pull_uint8)
        if envelope_type == EnvelopeType.FRAGMENT:
            return cls(envelope_type, fragment=Fragment.decode(r))
        payload = r.pull_opaque()
        if not payload:
            raise DecodeError(f"empty {envelope_type.name.lower()} envelope")
        return cls(envelope_type, payload)


def split(
    envelope_type: EnvelopeType,
    payload: bytes,
    rng: Rng,
    *,
    max_size: int = MAX_ENVELOPE_SIZE - _PAD_HEADER,
) -> list[bytes]:
    """Encoded, *unpadded* Envelopes of at most ``max_size`` bytes each.

    One ``mls``/``welcome`` envelope if it fits, else ``fragment`` envelopes
    under one random fragment id (from ``rng``).  :func:`seal` pads these;
    a caller that encrypts envelopes per mailbox (``protocol.app.sealed``)
    passes its own ``max_size`` and pads inside its encryption.
    """
    if envelope_type == EnvelopeType.FRAGMENT:
        raise LocalError("an mls or welcome payload is required")
    if not payload:
        raise LocalError("cannot send an empty payload")
    if len(payload) > MAX_MESSAGE_LEN:
        raise LocalError(f"payload of {len(payload)} bytes exceeds {MAX_MESSAGE_LEN}")
    if 1 + len(encode_varint(len(payload))) + len(payload) <= max_size:
        return [Envelope(envelope_type, payload).to_bytes()]
    data_size = min(max_size - _FRAGMENT_OVERHEAD, FRAGMENT_DATA_SIZE)
    if data_size <= 0 or -(-len(payload) // data_size) > MAX_FRAGMENTS:
        raise LocalError(f"max_size {max_size} is too small to fragment this payload")
    fragment_id = random_bytes(rng, FRAGMENT_ID_LEN, "fragment_id")
    pieces = [payload[i : i + data_size] for i in range(0, len(payload), data_size)]
    return [
        Envelope(
            EnvelopeType.FRAGMENT,
            fragment=Fragment(fragment_id, index, len(pieces), envelope_type, piece),
        ).to_bytes()
        for index, piece in enumerate(pieces)
    ]


def seal(envelope_type: EnvelopeType, payload: bytes, rng: Rng) -> list[bytes]:
    """Encode ``payload`` as one or more bucket-sized envelopes, ready to post.

    ``rng`` supplies the padding fill and, when fragmenting, the fragment id.
    Every fragment is padded to the largest bucket.  Post the pieces in
    order; a receiver accepts them in any order.
    """
    pieces = split(envelope_type, payload, rng)
    if len(pieces) == 1:
        return [pad(pieces[0], rng)]
    return [pad(piece, rng, buckets=(MAX_ENVELOPE_SIZE,)) for piece in pieces]


def open_envelope(data: bytes) -> Envelope:
    """Check the bucket size, unpad and decode one envelope (DecodeError only)."""
    if not is_envelope_size(len(data)):
        raise DecodeError(f"envelope of {len(data)} bytes is not a bucket size")
    return decode_exact(unpad(data), Envelope.decode)


# ---------------------------------------------------------------- reassembly


@dataclass(slots=True)
class _PendingSet:
    count: int
    inner_type: EnvelopeType
    first_seen_ms: int
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Collects fragments into payloads, within fixed memory bounds.

    ``add(envelope, now_ms)`` returns ``(type, payload)`` for a whole envelope
    or a just-completed set, and None while a set is incomplete or for an
    ignored duplicate.  Refusals raise :class:`FragmentRejected`; the
    reassembler stays usable after one.
    """

    def __init__(
        self,
        *,
        max_sets: int = 64,
        max_set_bytes: int = MAX_MESSAGE_LEN,
        max_total_bytes: int = 64 * 1024 * 1024,
        ttl_ms: int = 60 * 60 * 1000,
        remember_completed: int = 1024,
    ) -> None:
        self.max_sets = max_sets
        self.max_set_bytes = max_set_bytes
        self.max_total_bytes = max_total_bytes
        self.ttl_ms = ttl_ms
        self.remember_completed = remember_completed
        self._sets: dict[bytes, _PendingSet] = {}
        self._completed: OrderedDict[bytes, None] = OrderedDict()
        self._total = 0

    @property
    def pending_sets(self) -> int:
        return len(self._sets)

    @property
    def pending_bytes(self) -> int:
        return self._total

    def expire(self, now_ms: int) -> int:
        """Drop sets older than ``ttl_ms``; returns how many were dropped."""
        old = [k for k, s in self._sets.items() if now_ms - s.first_seen_ms >= self.ttl_ms]
        for key in old:
            self._drop(key)
        return len(old)

    def _drop(self, key: bytes) -> None:
        pending = self._sets.pop(key, None)
        if pending is not None:
            self._total -= pending.size

    def add(self, envelope: Envelope, now_ms: int) -> tuple[EnvelopeType, bytes] | None:
        if envelope.fragment is None:
            return envelope.type, envelope.payload
        self.expire(now_ms)
        frag = envelope.fragment
        key = frag.fragment_id
        if key in self._completed:
            return None
        pending = self._sets.get(key)
        if pending is None:
            if len(self._sets) >= self.max_sets:
                raise FragmentRejected("too many fragment sets pending", set_dropped=False)
            pending = _PendingSet(frag.count, frag.inner_type, now_ms)
        elif pending.count != frag.count or pending.inner_type != frag.inner_type:
            self._drop(key)
            raise FragmentRejected("fragments disagree on count or type", set_dropped=True)
        held = pending.parts.get(frag.index)
        if held is not None:
            if held == frag.data:
                return None
            self._drop(key)
            raise FragmentRejected("two different fragments at one index", set_dropped=True)
        if pending.size + len(frag.data) > self.max_set_bytes:
            self._drop(key)
            raise FragmentRejected("fragment set exceeds the per-set limit", set_dropped=True)
        if self._total + len(frag.data) > self.max_total_bytes:
            raise FragmentRejected("reassembly memory is full", set_dropped=False)
        self._sets[key] = pending
        pending.parts[frag.index] = frag.data
        pending.size += len(frag.data)
        self._total += len(frag.data)
        if len(pending.parts) < pending.count:
            return None
        self._drop(key)
        self._completed[key] = None
        while len(self._completed) > self.remember_completed:
            self._completed.popitem(last=False)
        payload = b"".join(pending.parts[i] for i in range(pending.count))
        return pending.inner_type, payload
