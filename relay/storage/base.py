"""The storage interface both backends implement, and the live-push hub.

Theory of operation
-------------------
* Storage never sees a client's mailbox id or message id in the clear.  A
  mailbox is stored under ``mailbox_key(id) = SHA-256(label || id)``; a
  message's de-duplication key is ``SHA-256(label || mailbox_id || msg_id)``
  truncated to 16 bytes.  A seized database therefore cannot be searched for
  a mailbox id or a client message id without already knowing them, and a
  msg_id reused across mailboxes does not link them.
* Sequence numbers are assigned by the backend, strictly increasing per
  mailbox (contiguous on SQLite, gapped on NATS where they are stream
  sequences), and never reused, even after an ack deletes messages.
* A backend calls :meth:`LiveHub.publish` exactly once per newly stored
  message, in sequence order per mailbox, on the event loop.  Subscribers
  get the same encoded ``Deliver`` frame, built once per message.
* Storage keeps as little as it can (SPEC §7.12): every expiry time is
  rounded up to a whole hour (:func:`expiry_bucket`), so a stored row tells
  the hour, not the second, a message arrived; seqs restart from the hour's
  base (:func:`next_seq`), so no row counts a mailbox's lifetime traffic;
  de-duplication entries go with the messages they cover.
* Blob chunks are streamed through spool files of :data:`BLOB_CHUNK_SIZE`
  bytes; no backend ever holds a whole blob in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from protocol.relay_frames import encode_deliver

MAILBOX_LABEL = b"samizdat-relay/v1 mailbox-key"
DEDUP_LABEL = b"samizdat-relay/v1 dedup-key"
BLOB_LABEL = b"samizdat-relay/v1 blob-key"
MAX_DB_SEQ = (1 << 63) - 1
# Bytes charged to ``total_max_bytes`` per mailbox row (SPEC.md §7.11): the
# row (two 32-byte keys, a 32-byte hash, five integers), its share of index
# and page overhead, and the relay's caches, rounded up.
MAILBOX_ROW_COST = 512


# The default granularity of every time the relay stores (SPEC §7.10,
# §7.12; ``limits.time_bucket``), and the period after which seqs restart
# from a new base: a seq is (hour index << SEQ_SHIFT) + posts earlier in
# that hour to that mailbox.
TIME_BUCKET = 3600
SEQ_SHIFT = 32


def expiry_bucket(now: int, ttl: int, bucket: int = TIME_BUCKET) -> int:
    """The stored expiry of something written at ``now`` to live ``ttl``
    seconds: ``now + ttl`` rounded *up* to a multiple of ``bucket`` (an
    hour by default), so it lives at least ``ttl`` and its row does not tell
    the second it was written."""
    return -(-(now + ttl) // bucket) * bucket


def next_seq(head: int, now: int) -> int:
    """The seq after ``head`` for a post at ``now``: strictly increasing and
    never reused (SPEC §7.7) like a counter, but restarting from the current
    hour's base ``(now // 3600) << 32``, so a seq tells how many posts the
    mailbox had in its hour, not since it was created.  A clock set back
    still gives ``head + 1``."""
    return max(head + 1, (now // TIME_BUCKET) << SEQ_SHIFT)


def mailbox_key(mailbox_id: bytes) -> bytes:
    return hashlib.sha256(MAILBOX_LABEL + mailbox_id).digest()


def dedup_key(mailbox_id: bytes, msg_id: bytes) -> bytes:
    return hashlib.sha256(DEDUP_LABEL + mailbox_id + msg_id).digest()[:16]


def blob_key(blob_id: bytes) -> bytes:
    return hashlib.sha256(BLOB_LABEL + blob_id).digest()


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    read_key: bytes
    write_key: bytes
    ttl: int
    head_seq: int
    mode: int = 0  # MODE_QUEUE or MODE_SHARED_LOG (protocol.relay_frames)


@dataclass(frozen=True, slots=True)
class BlobMeta:
    upload_hash: bytes
    read_hash: bytes
    expires: int
    chunks: int


Listener = Callable[[int, bytes], None]
"""Called with ``(seq, encoded Deliver frame)`` for each new message."""


class LiveHub:
    """Fan-out of new messages to the subscribed connections of this process."""

    def __init__(self) -> None:
        self._subs: dict[bytes, tuple[bytes, dict[int, Listener]]] = {}
        self.on_first: Callable[[bytes, bytes], None] | None = None
        self.on_last: Callable[[bytes], None] | None = None
        self.delivered = 0

    def subscribe(self, key: bytes, mailbox_id: bytes, token: int, listener: Listener) -> None:
        entry = self._subs.get(key)
        if entry is None:
            entry = (mailbox_id, {})
            self._subs[key] = entry
            if self.on_first is not None:
                self.on_first(key, mailbox_id)
        entry[1][token] = listener

    def unsubscribe(self, key: bytes, token: int) -> None:
        entry = self._subs.get(key)
        if entry is None:
            return
        entry[1].pop(token, None)
        if not entry[1]:
            del self._subs[key]
            if self.on_last is not None:
                self.on_last(key)

    def has_subscribers(self, key: bytes) -> bool:
        return key in self._subs

    def publish(self, key: bytes, seq: int, envelope: bytes) -> None:
        entry = self._subs.get(key)
        if entry is None:
            return
        frame = encode_deliver(entry[0], seq, envelope)
        for listener in tuple(entry[1].values()):
            listener(seq, frame)
        self.delivered += len(entry[1])


class Storage(ABC):
    """What the relay needs from a backend.  All methods run on the event loop.

    Errors are the relay's typed errors from :mod:`protocol.relay_frames`
    (``UnknownMailbox``, ``MailboxExists``, ``QuotaExceeded``,
    ``StorageFull``, ``Unavailable``).
    """

    hub: LiveHub
    spool_dir: Path

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def create_mailbox(
        self, key: bytes, read_key: bytes, write_key: bytes, ttl: int, now: int, mode: int = 0
    ) -> None:
        """Create, or accept an identical re-create (same keys and mode); else
        ``MailboxExists``.  ``mode`` is ``MODE_QUEUE`` or ``MODE_SHARED_LOG``."""

    @abstractmethod
    async def get_mailbox(self, key: bytes) -> MailboxInfo | None: ...

    @abstractmethod
    async def rotate_write_key(self, key: bytes, new_key: bytes) -> None: ...

    @abstractmethod
    async def delete_mailbox(self, key: bytes) -> None:
        """Remove the mailbox, its messages and its dedup entries now
        (``UnknownMailbox`` if absent); later posts are ``UnknownMailbox``."""

    @abstractmethod
    async def post(
        self, key: bytes, dkey: bytes, envelope: bytes, now: int, write_key: bytes | None = None
    ) -> tuple[int, bool]:
        """Store; returns ``(seq, duplicate)``; publishes new messages to the hub.

        With ``write_key`` set the post is refused (``NotAuthorized``) unless it
        is still the mailbox's write key: a rotation revokes proven connections.
        """

    def post_nowait(
        self, key: bytes, dkey: bytes, envelope: bytes, now: int, write_key: bytes | None = None
    ) -> asyncio.Future[tuple[int, bool]]:
        """Start :meth:`post` now (requests keep their order); its future."""
        return asyncio.ensure_future(self.post(key, dkey, envelope, now, write_key))

    @abstractmethod
    async def fetch(
        self, key: bytes, from_seq: int, limit: int, max_bytes: int | None = None
    ) -> list[tuple[int, bytes]]:
        """Up to ``limit`` stored messages with ``seq >= from_seq``, in order.

        With ``max_bytes``, the page also ends with the message that brings its
        envelope bytes to ``max_bytes`` or more (so it holds at least one
        message, and at most ``max_bytes`` plus one envelope): backfill is
        paged by bytes, not only by count (SPEC.md §7.6, "Flow control").
        """

    @abstractmethod
    async def ack(self, key: bytes, up_to_seq: int) -> None:
        """Delete messages with ``seq <= up_to_seq`` of a queue; a no-op on a
        shared log (its messages leave only by TTL or quota, SPEC.md §7.7)."""

    @abstractmethod
    async def expire(self, now: int) -> int:
        """Remove expired messages, mailboxes and blobs; returns how many."""

    @abstractmethod
    async def blob_create(
        self, blob_id: bytes, upload_hash: bytes, read_hash: bytes, expires: int
    ) -> None: ...

    @abstractmethod
    async def blob_meta(self, blob_id: bytes) -> BlobMeta | None: ...

    @abstractmethod
    async def blob_put_chunk(self, blob_id: bytes, index: int, spool: Path) -> bool:
        """Take ownership of the spool file; False if the chunk already existed."""

    @abstractmethod
    async def blob_open_chunk(self, blob_id: bytes, index: int) -> AsyncIterator[bytes] | None:
        """An async iterator over the chunk's bytes, or None if it is absent."""

    @abstractmethod
    async def blob_delete(self, blob_id: bytes) -> None: ...
