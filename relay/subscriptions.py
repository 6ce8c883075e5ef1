"""Subscriptions of one connection: live pushes, flow control, the backfill pump.

Theory of operation
-------------------
Deliveries are driven by the reader (SPEC.md §7.6, "Flow control"): the
connection holds a byte *credit* (``INITIAL_CREDIT``, raised by ``Credit``
frames, spent by each ``Deliver``'s encoded length) and sends a ``Deliver``
only while the credit is positive and the send queue is under half full, so
a backlog of any size never overflows the queue: it waits in the store.  A
subscription is *live* (caught up: a new message is queued the moment
storage publishes it) or *pending* (the store holds messages it has not been
sent).  One pump task serves the pending subscriptions round-robin, at most
``QUANTUM`` bytes per turn (always at least one message), fetching each turn
from the store after the last seq sent.  The relay reads no content, so
"conversation before bulk" goes by size: a mailbox whose next (else last)
frame exceeds ``BULK_FRAME`` waits in a second class, served when no small
one waits or every ``SMALL_TURNS + 1``-th turn, and a turn is bounded in
bytes, so a mailbox of 256-byte messages moves up to 256 of them in a turn
where a 64 KiB one moves one.  A live subscription that meets an
exhausted credit or a half-full queue turns pending and resumes from the
store.  Per mailbox, frames leave in seq order with no gap and no duplicate
(``last_sent`` only grows; a message published while its subscription is
pending is fetched, not buffered).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocol.relay_frames import (
    MAX_CREDIT,
    Challenge,
    Error,
    NotAuthorized,
    Ok,
    Posted,
    RelayError,
    Subscribe,
    Subscribed,
    Unavailable,
    UnknownMailbox,
    encode_deliver,
)
from relay.limits import SendQueue
from relay.storage.base import MAX_DB_SEQ, Listener, mailbox_key

if TYPE_CHECKING:
    from relay.app import RelayContext

# One pump turn of a pending subscription: at most this many messages and,
# past its first message, this many bytes (one largest frame).
BACKFILL_PAGE = 256
QUANTUM = 64 * 1024
# A pending mailbox whose next message (else its last one) is a Deliver frame
# longer than this waits in the bulk class: every fragment of an article or a
# file takes the 64 KiB bucket (SPEC §8.4), a conversation line a small one.
BULK_FRAME = 32 * 1024
SMALL_TURNS = 4
BACKFILL_RETRIES = 5


@dataclass(slots=True, eq=False)  # identity: a replaced subscription is another one
class Subscription:
    mailbox_id: bytes
    key: bytes
    last_sent: int
    # live: caught up, new messages are queued as storage publishes them;
    # else pending: the pump fetches from the store after last_sent.
    live: bool = False
    # a message was published while pending, after the pump's last fetch began
    dirty: bool = True
    queued: bool = False  # in Connection.pending_small or pending_bulk
    # its next (else last sent) frame exceeds BULK_FRAME: pending, it waits
    # in the bulk class
    bulk: bool = False


class Subscriptions:
    """The subscription half of :class:`relay.connection.Connection`."""

    # what this half assigns; the other attributes below are Connection's
    __slots__ = ("subs", "credit", "pending_small", "pending_bulk", "_small_turns")

    ctx: RelayContext
    queue: SendQueue
    read_grants: set[bytes]
    subs: dict[bytes, Subscription]
    credit: int
    pending_small: deque[Subscription]
    pending_bulk: deque[Subscription]
    _small_turns: int
    _wake: asyncio.Event
    _pumping: bool
    _half_queue: int
    closing: bool
    token: int

    if TYPE_CHECKING:  # provided by Connection

        def send(self, frame: Ok | Posted | Subscribed | Error | Challenge) -> None: ...

        def send_raw(self, data: bytes) -> None: ...

        def send_error(self, req_id: int, exc: RelayError) -> None: ...

        def _pump_stopped(self) -> bool: ...

    async def _subscribe(self, f: Subscribe) -> None:
        if f.mailbox_id not in self.read_grants:
            raise NotAuthorized("prove the read key first (AuthRead)")
        old = self.subs.get(f.mailbox_id)
        if old is not None:
            self._drop_sub(old)
        from_seq = max(1, min(f.from_seq, MAX_DB_SEQ))
        key = mailbox_key(f.mailbox_id)
        sub = Subscription(f.mailbox_id, key, from_seq - 1)
        self.subs[f.mailbox_id] = sub
        self.ctx.storage.hub.subscribe(key, f.mailbox_id, self.token, self._listener(sub))
        try:
            info = await self.ctx.storage.get_mailbox(key)
        except RelayError:
            self._drop_sub(sub)
            raise
        if info is None:
            self._drop_sub(sub)
            raise UnknownMailbox("unknown mailbox")
        self.send(Subscribed(f.req_id, info.head_seq))
        if self.subs.get(f.mailbox_id) is sub:
            self._make_pending(sub)

    def _grant(self, amount: int) -> None:
        self.credit = min(self.credit + amount, MAX_CREDIT)
        if self.credit > 0 and (self.pending_small or self.pending_bulk):
            self._wake.set()

    def _room(self) -> int:
        """Bytes of Deliver frames the relay may still queue: at most half the
        send queue, so the other half stays free for replies."""
        q = self.queue
        if len(q) * 2 >= q.max_frames or q.nbytes * 2 >= q.max_bytes:
            return 0  # SendQueue.wait_room() waits for exactly this to end
        return max(1, q.max_bytes // 2 - q.nbytes)

    def _make_pending(self, sub: Subscription) -> None:
        sub.dirty = True
        sub.live = False
        self._enqueue(sub)

    def _enqueue(self, sub: Subscription) -> None:
        if not sub.queued:
            sub.queued = True
            (self.pending_bulk if sub.bulk else self.pending_small).append(sub)
        self._wake.set()

    def _deliver(self, sub: Subscription, seq: int, frame: bytes) -> None:
        sub.last_sent = seq
        sub.bulk = len(frame) > BULK_FRAME
        self.credit -= len(frame)
        self.send_raw(frame)

    def _listener(self, sub: Subscription) -> Listener:
        values = self.ctx.metrics.values

        def on_message(seq: int, frame: bytes) -> None:
            if seq <= sub.last_sent or self.closing:
                return
            if not sub.live:
                sub.dirty = True  # the pump fetches it from the store
                return
            if self.credit <= 0 or len(frame) > (self._room() if self.queue else self._half_queue):
                # the reader is behind: resume from the store when it catches up
                sub.bulk = len(frame) > BULK_FRAME
                self._make_pending(sub)
                return
            # _deliver(), inlined: once per subscriber per message
            sub.last_sent = seq
            sub.bulk = len(frame) > BULK_FRAME
            self.credit -= len(frame)
            self.send_raw(frame)
            values["samizdat_relay_deliveries_total"] += 1

        return on_message

    async def _pump(self) -> None:
        """Serve pending subscriptions round-robin while credit and room last."""
        while self._pumping and not self.closing:
            if not (self.pending_small or self.pending_bulk) or self.credit <= 0:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._room() <= 0:
                await self.queue.wait_room()
                continue
            sub = self._next_pending()
            sub.queued = False
            if self.subs.get(sub.mailbox_id) is not sub or sub.live:
                continue
            try:
                await self._turn(sub)
            except Unavailable as exc:
                if self._pump_stopped():
                    return
                # storage stayed down through the retries: say so, try again later
                self.send_error(0, exc)
                if self.subs.get(sub.mailbox_id) is sub:
                    self._enqueue(sub)

    def _next_pending(self) -> Subscription:
        """Small before bulk (by the size of a mailbox's next, else last, frame:
        the only thing the relay can tell), yet a bulk turn at least every
        ``SMALL_TURNS + 1`` turns so a flood of small messages starves nothing."""
        if self.pending_small and (not self.pending_bulk or self._small_turns < SMALL_TURNS):
            self._small_turns = self._small_turns + 1 if self.pending_bulk else 0
            return self.pending_small.popleft()
        self._small_turns = 0
        return self.pending_bulk.popleft()

    async def _turn(self, sub: Subscription) -> None:
        """Send up to QUANTUM bytes (at least one message) of ``sub``'s backlog."""
        budget = min(QUANTUM, self.credit, self._room())
        failures = 0
        while True:
            sub.dirty = False
            try:
                rows = await self.ctx.storage.fetch(
                    sub.key, sub.last_sent + 1, BACKFILL_PAGE, budget
                )
                break
            except Unavailable:
                failures += 1  # e.g. a NATS fail-over: back off and retry
                if not self._pumping:
                    return
                if failures > BACKFILL_RETRIES:
                    raise
                await asyncio.sleep(0.1 * 2**failures)
        if self.closing or not self._pumping or self.subs.get(sub.mailbox_id) is not sub:
            return  # closing, or the subscription was dropped or replaced meanwhile
        sent = nbytes = 0
        more = False
        for seq, envelope in rows:
            nbytes += len(envelope)
            if seq <= sub.last_sent:
                continue
            frame = encode_deliver(sub.mailbox_id, seq, envelope)
            if self.credit <= 0 or (
                # an empty queue always takes a turn's first frame (send_raw)
                len(self.queue)
                and (
                    not self.queue.has_room_for(1, len(frame))
                    or (sent and len(frame) > self._room())
                )
            ):
                more = True  # live pushes or replies took it meanwhile: next turn
                sub.bulk = len(frame) > BULK_FRAME  # the size of what it sends next
                break
            self._deliver(sub, seq, frame)
            sent += 1
        self.ctx.metrics.inc("samizdat_relay_deliveries_total", sent)
        exhausted = len(rows) < BACKFILL_PAGE and nbytes < budget
        if exhausted and not more and not sub.dirty:
            sub.live = True  # caught up: live pushes from now on
        else:
            self._enqueue(sub)

    def _drop_sub(self, sub: Subscription) -> None:
        self.ctx.storage.hub.unsubscribe(sub.key, self.token)
        if self.subs.get(sub.mailbox_id) is sub:
            del self.subs[sub.mailbox_id]
        sub.live = False
