"""One relay, seen from a client: isolated sessions (SPEC.md §7.1 "Connection roles").

Theory of operation
-------------------
A :class:`RelaySessions` stands for one relay URL and offers the engine the
API a single :class:`~client.relay_client.RelayClient` used to (subscribe,
post, ack, create...), but no connection it opens serves two mailboxes or
both reads and writes, so what a relay holds in memory (which connection
proved which key) links nothing (SPEC.md §2):

* **Readers.**  Each subscribed mailbox is read over its own connection,
  which proves that mailbox's read key and nothing else.  At most
  ``max_readers`` such connections are held open ("hot"): the first
  mailboxes subscribed, then by recent activity: a cold mailbox is
  promoted when we post to it, when the user opens its conversation
  (:meth:`RelaySessions.promote`) or when a poll of a conversation's
  mailbox finds new messages; the hot mailbox idle longest (by deliveries
  and posts, an inbox first) is displaced, unless promoted less than
  ``min_hot`` ago, and its reader closes after a jittered ``demote_delay``
  drawn apart from the promoted reader's open (no close-and-open pair for
  the relay to link).  Every other mailbox is "cold": it is
  *polled* every ``poll_interval`` (drawn with jitter per poll) by a
  short-lived connection that subscribes from the next unhandled seq, takes
  what is there (up to the ``head_seq`` its ``Subscribed`` reported, or
  until quiet) and closes.  At most ``max_polls`` polls run at once.  Hot
  connections are renewed (closed and opened again) after a jittered
  lifetime, each start is delayed by a jittered ``open_delay``.
* **Writers.**  Posts, mailbox creation, write-key proofs and rotations go
  over a *post* connection of the destination mailbox alone, which never
  proves a read key; it closes after a jittered idle ``post_linger``.  At
  most ``max_posters`` are open; an idle one is closed to make room.
* **Deletion** goes over a one-off connection of its own; **acks** go over
  the mailbox's reader (a cold mailbox's ack waits for its next poll);
  **blobs** use a fresh HTTP session per upload or chunk download.
* **Proxy.**  Every connection (and HTTP session) gets its own random SOCKS5
  username and password (:func:`~client.relay_client.isolated_proxy_url`),
  so Tor's ``IsolateSOCKSAuth`` gives each its own circuit.

``state`` is "connected" while any connection of the relay is, "down" when
every open one is down.  The jitter is drawn from an injected
``random.Random`` and the poll schedule reads an injected clock, so tests
are deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from client.relay_client import (
    CLOSE_TIMEOUT,
    DeliverCallback,
    RelayClient,
    RelayUnavailable,
    StateCallback,
    cancel_and_wait,
)
from protocol.errors import RemoteError
from protocol.padding import BLOB_CHUNK_SIZE

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """Bounds and jitter of a relay's sessions; ranges are (low, high) seconds."""

    # hot read connections per relay: a conversation beyond them is polled
    # every few minutes, so there are enough for a busy user's conversations,
    # inboxes and invites (about 33 KiB each on the client, 26 on the relay)
    max_readers: int = 64
    max_polls: int = 4  # concurrent polls of cold mailboxes per relay
    max_posters: int = 8  # post connections per relay
    poll_interval: tuple[float, float] = (60.0, 180.0)
    first_poll: tuple[float, float] = (0.5, 20.0)  # a cold mailbox's first poll
    poll_quiet: float = 2.0  # a poll ends this long after its last delivery
    poll_timeout: float = 30.0
    # a mailbox promoted to hot (activity while cold) is not displaced for
    # this long: two active cold conversations do not swap readers per poll
    min_hot: float = 600.0
    # a displaced reader closes after this, drawn independently of the
    # promoted reader's open_delay: the relay sees no close-and-open pair
    demote_delay: tuple[float, float] = (1.0, 20.0)
    open_delay: tuple[float, float] = (0.0, 0.25)  # before a reader connects
    renew_after: tuple[float, float] = (900.0, 2700.0)  # a hot reader's lifetime
    post_linger: tuple[float, float] = (1.0, 5.0)  # an idle post connection's
    down_linger: float = 300.0  # a post connection that cannot connect, at most
    connect_timeout: float = 10.0  # a connection attempt, TCP to the relay's challenge
    request_timeout: float = 20.0  # a request's answer
    # readers too fail a waiting request at the first failed attempt (the
    # CLI: a command queues and returns rather than wait for a relay that is down)
    fail_fast_readers: bool = False

    def draw(self, rng: random.Random, span: tuple[float, float]) -> float:
        return rng.uniform(*span)


@dataclass(slots=True)
class _Sub:
    read_seed: bytes
    write_seed: bytes | None
    next_seq: int  # the first seq not yet handled
    shared: bool
    due: float = 0.0  # cold: the clock time of the next poll
    fetched: bool = False  # read up to its head at least once (a poll or a hot reader)
    last_delivery: float = 0.0
    pending_ack: int = 0  # cold: an ack for the next poll to send
    failed_at: float = float("-inf")  # when its last poll found the relay unreachable
    hot_until: float = float("-inf")  # promoted: not displaced before this clock time
    # read up to a recent head (by a poll, or a reader live until displaced):
    # what the next poll finds arrived since, a sign of an active conversation
    current: bool = False


@dataclass(slots=True)
class _Poster:
    client: RelayClient
    last_used: float
    in_use: int = 0
    reaper: asyncio.Task[None] | None = field(default=None)


class RelaySessions:
    """Every connection of a client to one relay (see the module docstring)."""

    def __init__(
        self,
        url: str,
        on_deliver: DeliverCallback,
        *,
        on_state: StateCallback | None = None,
        proxy: str | None = None,
        policy: SessionPolicy | None = None,
        rng: random.Random | None = None,
        clock: Clock = time.monotonic,
        local_addr: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.state = "connecting"
        self.policy = policy or SessionPolicy()
        self._on_deliver = on_deliver
        self._on_state = on_state
        self._proxy = proxy
        self._local_addr = local_addr
        self._rng = rng or random.SystemRandom()
        self._clock = clock
        self._subs: dict[bytes, _Sub] = {}
        self._hot: OrderedDict[bytes, RelayClient] = OrderedDict()  # least recently active first
        self._polling: dict[bytes, RelayClient] = {}
        # displaced readers, still open until their jittered demote_delay ends
        self._lingering: dict[bytes, RelayClient] = {}
        self._posters: dict[bytes, _Poster] = {}
        self._poster_freed = asyncio.Event()
        self._poll_wake = asyncio.Event()
        self._settled = asyncio.Event()  # set while the state is connected or down
        self._poller: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._retiring: set[RelayClient] = set()  # taken out of use, being closed
        self._closed = False
        self._failures = 0  # of connections already closed
        self.opened = 0  # connections opened so far (a figure for benchmarks)

    # -- figures -----------------------------------------------------------------

    @property
    def failures(self) -> int:
        """Connection failures so far, over every connection of this relay."""
        return self._failures + sum(c.failures for c in self._children())

    def open_connections(self) -> int:
        return len(self._hot) + len(self._polling) + len(self._posters)

    def _children(self) -> list[RelayClient]:
        return [
            *self._hot.values(),
            *self._polling.values(),
            *(p.client for p in self._posters.values()),
        ]

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        if self._poller is None and not self._closed:
            self._poller = asyncio.get_running_loop().create_task(self._poll_loop())

    async def close(self) -> None:
        """Close every connection, then stop the tasks (each step bounded)."""
        self._closed = True
        children = [*self._children(), *self._retiring]
        reapers = [p.reaper for p in self._posters.values() if p.reaper is not None]
        self._hot.clear()
        self._lingering.clear()
        self._polling.clear()
        self._posters.clear()
        await asyncio.gather(*(c.close() for c in children), return_exceptions=True)
        tasks = [t for t in (self._poller, *self._tasks, *reapers) if t is not None]
        await cancel_and_wait(tasks, CLOSE_TIMEOUT)

    def _new_client(self, *, reader: bool) -> RelayClient:
        if self._closed:
            raise RelayUnavailable("the client is shutting down")
        policy = self.policy
        self.opened += 1
        return RelayClient(
            self.url,
            self._deliver,
            on_state=self._child_state,
            proxy=self._proxy,
            renew_after=(lambda: policy.draw(self._rng, policy.renew_after)) if reader else None,
            rng=self._rng,
            fail_fast=policy.fail_fast_readers or not reader,
            connect_timeout=policy.connect_timeout,
            request_timeout=policy.request_timeout,
            local_addr=self._local_addr,
        )

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _retire_soon(self, client: RelayClient) -> None:
        self._retiring.add(client)
        self._spawn(self._retire(client), "retire")

    async def _retire(self, client: RelayClient) -> None:
        """Close ``client`` once the engine has handled the delivery in hand
        (bounded): closing cancels its dispatcher, and a handler must not be
        cut off half-way.  Deliveries still queued are fetched again later
        (``next_seq`` only counts handled ones)."""
        self._retiring.add(client)
        deadline = self._clock() + CLOSE_TIMEOUT * 10
        while client.handling and self._clock() < deadline and not self._closed:
            await asyncio.sleep(0.02)
        await client.close()  # if cancelled meanwhile, close() closes it again
        if client in self._retiring:
            self._retiring.discard(client)
            self._failures += client.failures
        self._child_state(self.url, "")

    # -- state ----------------------------------------------------------------------

    def _child_state(self, _url: str, _state: str) -> None:
        states = [c.state for c in self._children()]
        if "connected" in states:
            state = "connected"
        elif states and all(s == "down" for s in states):
            state = "down"
        elif states:
            state = "connecting"
        else:
            return  # nothing open: the last state stands
        if state == "connecting":
            self._settled.clear()
        else:
            self._settled.set()
        if state != self.state:
            self.state = state
            if self._on_state is not None:
                self._on_state(self.url, state)

    async def wait_connected(self) -> None:
        """Return once a connection to this relay is up or every open one has
        failed an attempt (a refused connection fails at once), at most
        ``request_timeout``; at once with nothing open.  For a command that
        reports the relay's state (``samizdat init``) or posts and ends."""
        if not self._children():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), self.policy.request_timeout)

    # -- reading --------------------------------------------------------------------

    async def _deliver(self, url: str, mailbox_id: bytes, seq: int, envelope: bytes) -> None:
        """Hand one delivery to the engine, once: a mailbox may briefly have
        two readers (a demoted one finishing while its poll starts), and both
        deliver in seq order from a handled seq, so a seq below ``next_seq``
        was handled already."""
        sub = self._subs.get(mailbox_id)
        if sub is not None:
            if seq < sub.next_seq:
                return
            sub.next_seq = seq + 1
            sub.last_delivery = self._clock()
        try:
            await self._on_deliver(url, mailbox_id, seq, envelope)
        finally:
            self._touch(mailbox_id)

    def _touch(self, mailbox_id: bytes) -> None:
        """A delivery keeps a hot mailbox hot.  (A cold one is promoted by
        its poll instead, see :meth:`_poll`: what one poll finds counts once,
        not per message.)"""
        if mailbox_id in self._hot:
            self._hot.move_to_end(mailbox_id)

    def promote(self, mailbox_id: bytes) -> bool:
        """Read ``mailbox_id`` live: the user opened its conversation (a
        reply is likely).  True if it is hot now (see :meth:`_promote`)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return mailbox_id in self._hot  # no loop: nothing to read with
        return self._promote(mailbox_id)

    def _promote(self, mailbox_id: bytes, *, force: bool = False) -> bool:
        """Read ``mailbox_id`` over a held connection; if all ``max_readers``
        are taken, displace the hot mailbox idle longest, an inbox before a
        conversation, never one promoted less than ``min_hot`` ago (unless
        ``force``, a conversation just subscribed), and never a conversation
        for an inbox.  False if it stays cold (polled; a later poll that
        finds activity tries again)."""
        if self._closed or mailbox_id not in self._subs:
            return False
        if mailbox_id in self._hot:
            self._hot.move_to_end(mailbox_id)
            return True
        sub = self._subs[mailbox_id]
        if len(self._hot) >= self.policy.max_readers:
            victim = self._victim(sub.shared, force)
            if victim is None:
                return False
            self._demote(victim)
        if not force:  # activity, not a subscription (at start-up, every one)
            sub.hot_until = self._clock() + self.policy.min_hot
        lingering = self._lingering.pop(mailbox_id, None)
        if lingering is not None:
            # displaced a moment ago and still open: held again, no new connection
            self._retiring.discard(lingering)
            self._hot[mailbox_id] = lingering
        else:
            self._open_reader(mailbox_id)
        return True

    def _victim(self, for_conversation: bool, force: bool) -> bytes | None:
        """The hot mailbox to displace (``_hot`` is least recently active first)."""
        now = self._clock()

        def inbox(m: bytes) -> bool:
            return m not in self._subs or not self._subs[m].shared

        free = [m for m in self._hot if m not in self._subs or self._subs[m].hot_until <= now]
        # an inbox (invites, KeyPackages, introductions) waits for a poll
        # more easily than a conversation
        order = [m for m in free if inbox(m)]
        if for_conversation:
            order += [m for m in free if not inbox(m)]
            if force:
                order += [m for m in self._hot if inbox(m)] + list(self._hot)
        return order[0] if order else None

    def _demote(self, mailbox_id: bytes) -> None:
        """Poll ``mailbox_id`` from now on.  Its reader closes after a
        jittered ``demote_delay``, drawn apart from the promoted reader's
        ``open_delay``, so the relay does not see one reader close as
        another opens (which would link the two mailboxes); its polls start
        after that."""
        client = self._hot.pop(mailbox_id)
        sub = self._subs.get(mailbox_id)
        if not client.started:
            # displaced within its open_delay (subscriptions at start-up):
            # the relay never saw it
            self._retire_soon(client)
            self._schedule(mailbox_id, self.policy.first_poll)
            return
        if sub is not None and client.state == "connected":
            sub.current = True  # read live until now
        delay = self.policy.draw(self._rng, self.policy.demote_delay)
        self._lingering[mailbox_id] = client
        self._retiring.add(client)  # closed by close() meanwhile
        if sub is not None:
            sub.due = self._clock() + delay + self.policy.draw(self._rng, self.policy.first_poll)
            self._poll_wake.set()

        async def later() -> None:
            await asyncio.sleep(delay)
            if self._lingering.get(mailbox_id) is client:
                del self._lingering[mailbox_id]
                await self._retire(client)

        self._spawn(later(), "demote")

    def _open_reader(self, mailbox_id: bytes) -> None:
        sub = self._subs[mailbox_id]
        client = self._new_client(reader=True)
        client.register(mailbox_id, sub.read_seed, sub.next_seq, sub.write_seed, sub.shared)
        self._hot[mailbox_id] = client
        delay = self.policy.draw(self._rng, self.policy.open_delay)

        async def start() -> None:
            await asyncio.sleep(delay)
            if self._hot.get(mailbox_id) is client:
                client.start()
                await self._send_pending_ack(mailbox_id, client)

        self._spawn(start(), "open reader")

    def _schedule(self, mailbox_id: bytes, span: tuple[float, float]) -> None:
        sub = self._subs.get(mailbox_id)
        if sub is not None:
            sub.due = self._clock() + self.policy.draw(self._rng, span)
            self._poll_wake.set()

    async def subscribe(
        self,
        mailbox_id: bytes,
        read_seed: bytes,
        from_seq: int = 0,
        *,
        write_seed: bytes | None = None,
        shared: bool = False,
    ) -> None:
        """Register a mailbox to read: over a held connection while fewer
        than ``max_readers`` are, else polled.  Returns at once; a mailbox the
        relay lost is created again (with ``write_seed``) by its reader."""
        old = self._subs.get(mailbox_id)
        self._subs[mailbox_id] = _Sub(read_seed, write_seed, max(from_seq, 0), shared)
        if old is not None:
            self._close_reader(mailbox_id)
        self.start()
        if len(self._hot) < self.policy.max_readers:
            self._open_reader(mailbox_id)
        # a conversation's mailbox (a new group, or one moved after a
        # removal, SPEC.md §8.3) is read live; a poll every few minutes
        # would hold its messages and commits back
        elif not (shared and self._promote(mailbox_id, force=True)):
            self._schedule(mailbox_id, self.policy.first_poll)

    def subscribed(self, mailbox_id: bytes) -> bool:
        return mailbox_id in self._subs

    def next_seq(self, mailbox_id: bytes) -> int:
        sub = self._subs.get(mailbox_id)
        return sub.next_seq if sub else 0

    def is_hot(self, mailbox_id: bytes) -> bool:
        return mailbox_id in self._hot

    def _close_reader(self, mailbox_id: bytes) -> None:
        """Close the mailbox's reader in the background: the caller may be
        that reader's own delivery handler (e.g. deleting a used invite)."""
        for held in (self._hot, self._polling, self._lingering):
            client = held.pop(mailbox_id, None)
            if client is not None:
                self._retire_soon(client)

    async def unsubscribe(self, mailbox_id: bytes) -> None:
        """Stop reading a mailbox: its connection closes."""
        self._subs.pop(mailbox_id, None)
        self._close_reader(mailbox_id)

    async def ack(self, mailbox_id: bytes, up_to_seq: int) -> None:
        """Ack over the mailbox's own reader; a cold mailbox's waits for its poll."""
        client = self._hot.get(mailbox_id) or self._polling.get(mailbox_id)
        if client is not None and client.state == "connected":
            try:
                await client.ack(mailbox_id, up_to_seq)
                return
            except RelayUnavailable:
                pass  # closed meanwhile (its poll ended): the next reader sends it
        sub = self._subs.get(mailbox_id)
        if sub is None:
            raise RelayUnavailable("not reading that mailbox")
        sub.pending_ack = max(sub.pending_ack, up_to_seq)

    async def _send_pending_ack(self, mailbox_id: bytes, client: RelayClient) -> None:
        """Send an ack that waited for this mailbox's reader, once the reader
        has proved the read key (its state turns "connected" after that)."""
        sub = self._subs.get(mailbox_id)
        if sub is None or not sub.pending_ack:
            return
        for _ in range(400):  # at most 20 s
            if client.state == "connected" or client.state == "down":
                break
            await asyncio.sleep(0.05)
        up_to, sub.pending_ack = sub.pending_ack, 0
        try:
            await client.ack(mailbox_id, up_to)
        except (RelayUnavailable, RemoteError):
            sub.pending_ack = max(sub.pending_ack, up_to)

    async def _poll_loop(self) -> None:
        """Poll cold mailboxes as they fall due, at most ``max_polls`` at once."""
        running = self._tasks
        while not self._closed:
            now = self._clock()
            cold = [
                (sub.due, m)
                for m, sub in self._subs.items()
                if m not in self._hot and m not in self._polling and m not in self._lingering
            ]
            cold.sort()
            for due, mailbox_id in cold:
                if due > now or len(self._polling) >= self.policy.max_polls:
                    break
                self._polling[mailbox_id] = self._new_client(reader=True)
                self._spawn(self._poll(mailbox_id), "poll")
            waits = [due - now for due, m in cold if m not in self._polling]
            timeout = max(0.05, min(waits, default=60.0))
            self._poll_wake.clear()
            waker = asyncio.ensure_future(self._poll_wake.wait())
            try:
                await asyncio.wait(
                    [*(t for t in running if not t.done()), waker],
                    timeout=timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                waker.cancel()

    async def _poll(self, mailbox_id: bytes) -> None:
        """One poll: a connection that reads ``mailbox_id`` up to its head,
        then closes.  A conversation's mailbox in which it found messages
        that arrived since the last time it was read up to its head (not a
        backlog from before start-up) is active: it is promoted to hot."""
        client = self._polling[mailbox_id]
        sub = self._subs.get(mailbox_id)
        active = False
        try:
            if sub is None:
                return
            was_current, first = sub.current, sub.next_seq
            sub.current = False
            client.register(mailbox_id, sub.read_seed, sub.next_seq, sub.write_seed, sub.shared)
            client.start()
            await client.wait_connected()
            await self._send_pending_ack(mailbox_id, client)
            deadline = self._clock() + self.policy.poll_timeout
            last, quiet_since = sub.next_seq, self._clock()
            caught_up = False
            while self._clock() < deadline and client.state != "down":
                head = client.heads.get(mailbox_id)
                if head is not None and (head == 0 or sub.next_seq > head):
                    caught_up = True
                    break
                if sub.next_seq != last:
                    last, quiet_since = sub.next_seq, self._clock()
                elif self._clock() - quiet_since > self.policy.poll_quiet:
                    caught_up = True  # nothing more came (e.g. the head message expired)
                    break
                await asyncio.sleep(0.05)
            await self._send_pending_ack(mailbox_id, client)
            sub.fetched = True
            sub.current = caught_up
            active = was_current and sub.next_seq > first and sub.shared
        except RelayUnavailable:
            if sub is not None:
                sub.failed_at = self._clock()  # polled again later
        except RemoteError as exc:
            log.warning("relay refused a poll: %s", type(exc).__name__)
        finally:
            if self._polling.get(mailbox_id) is client:
                del self._polling[mailbox_id]
            await self._retire(client)
            # after the poll's connection closed: the relay sees this
            # mailbox's connections one after the other, as for any poll
            promoted = active and self._promote(mailbox_id)
            if not promoted and mailbox_id in self._subs and not self._closed:
                self._schedule(mailbox_id, self.policy.poll_interval)

    def _readers(self) -> dict[bytes, RelayClient]:
        """The live readers: hot ones, and displaced ones not yet closed."""
        return {**self._lingering, **self._hot}

    async def catch_up(self, timeout: float) -> bool:
        """Read every subscribed mailbox up to its head once, within
        ``timeout`` seconds (a one-shot ``sync``): cold mailboxes are polled
        now rather than when due.  True if every one was."""
        now = self._clock()
        for sub in self._subs.values():
            sub.due = min(sub.due, now)
        self._poll_wake.set()
        deadline = now + timeout
        seen: dict[bytes, float] = {}  # when each hot reader's head was first known
        # a relay that is down ends the wait: every mailbox has been tried
        # once (a poll refused, a reader's attempt failed) and the caller
        # reports it rather than wait out the timeout (SPEC.md §8.12).  A
        # reader opened meanwhile (a mailbox subscribed or promoted while
        # this runs) counts all its failures: it had none before
        failures = {c: c.failures for c in self._readers().values()}
        while self._clock() < deadline and not self._closed:
            readers = self._readers()
            tried = {m for m, c in readers.items() if c.failures > failures.get(c, 0)}
            tried.update(m for m, sub in self._subs.items() if sub.failed_at >= now)
            for mailbox_id, sub in self._subs.items():
                # subscribed or displaced meanwhile: polled now, not when due
                in_hand = sub.fetched or mailbox_id in tried or mailbox_id in readers
                if not in_hand and mailbox_id not in self._polling and sub.due > self._clock():
                    sub.due = self._clock()
                    self._poll_wake.set()
            for mailbox_id, client in readers.items():
                hot = self._subs.get(mailbox_id)
                head = client.heads.get(mailbox_id)
                if hot is None or hot.fetched or head is None or client.state != "connected":
                    continue
                since = max(hot.last_delivery, seen.setdefault(mailbox_id, self._clock()))
                quiet = self._clock() - since > self.policy.poll_quiet
                if head == 0 or hot.next_seq > head or quiet:
                    hot.fetched = True
            if all(sub.fetched for sub in self._subs.values()):
                return True
            if all(sub.fetched or m in tried for m, sub in self._subs.items()):
                return False
            await asyncio.sleep(0.05)
        return False

    # -- writing --------------------------------------------------------------------

    async def _poster(self, mailbox_id: bytes) -> _Poster:
        """The post connection of ``mailbox_id`` (opened on demand)."""
        while True:
            poster = self._posters.get(mailbox_id)
            if poster is not None:
                return poster
            if len(self._posters) < self.policy.max_posters:
                break
            idle = [(p.last_used, m) for m, p in self._posters.items() if not p.in_use]
            if idle:
                await self._close_poster(min(idle)[1])
                continue
            self._poster_freed.clear()
            await self._poster_freed.wait()
        client = self._new_client(reader=False)
        poster = _Poster(client, self._clock())
        self._posters[mailbox_id] = poster
        client.start()
        poster.reaper = asyncio.get_running_loop().create_task(self._reap(mailbox_id, poster))
        return poster

    async def _reap(self, mailbox_id: bytes, poster: _Poster) -> None:
        """Close an idle post connection after its jittered linger (or, if it
        never connects, after ``down_linger``: meanwhile it keeps retrying, so
        its reconnection tells the engine to flush the outbox)."""
        linger = self.policy.draw(self._rng, self.policy.post_linger)
        while self._posters.get(mailbox_id) is poster:
            idle = self._clock() - poster.last_used
            limit = linger if poster.client.state == "connected" else self.policy.down_linger
            if not poster.in_use and idle >= limit:
                self._spawn(self._close_poster(mailbox_id), "close poster")
                return
            await asyncio.sleep(max(0.05, min(limit - idle, 1.0)))

    async def _close_poster(self, mailbox_id: bytes) -> None:
        poster = self._posters.pop(mailbox_id, None)
        if poster is None:
            return
        self._poster_freed.set()
        if poster.reaper is not None and poster.reaper is not asyncio.current_task():
            poster.reaper.cancel()
        await self._retire(poster.client)

    async def _write(self, mailbox_id: bytes) -> _Poster:
        poster = await self._poster(mailbox_id)
        poster.in_use += 1
        return poster

    def _done(self, poster: _Poster) -> None:
        poster.in_use -= 1
        poster.last_used = self._clock()

    async def post(
        self, mailbox_id: bytes, write_seed: bytes, msg_id: bytes, envelope: bytes
    ) -> int:
        """Post over the mailbox's post connection (no read key proved there)."""
        poster = await self._write(mailbox_id)
        try:
            seq = await poster.client.post(mailbox_id, write_seed, msg_id, envelope)
        finally:
            self._done(poster)
        if mailbox_id in self._subs and mailbox_id not in self._hot:
            self._promote(mailbox_id)  # a reply is likely: read it over a held connection
        elif mailbox_id in self._hot:
            self._hot.move_to_end(mailbox_id)
        return seq

    async def create_mailbox(
        self,
        mailbox_id: bytes,
        read_seed: bytes,
        write_seed: bytes,
        ttl_seconds: int = 0,
        *,
        shared: bool = False,
    ) -> None:
        poster = await self._write(mailbox_id)
        try:
            await poster.client.create_mailbox(
                mailbox_id, read_seed, write_seed, ttl_seconds, shared=shared
            )
        finally:
            self._done(poster)

    async def prove_write(self, mailbox_id: bytes, write_seed: bytes) -> None:
        poster = await self._write(mailbox_id)
        try:
            await poster.client.prove_write(mailbox_id, write_seed)
        finally:
            self._done(poster)

    async def rotate_write(self, mailbox_id: bytes, old_seed: bytes, new_seed: bytes) -> None:
        poster = await self._write(mailbox_id)
        try:
            await poster.client.rotate_write(mailbox_id, old_seed, new_seed)
        finally:
            self._done(poster)

    async def delete_mailbox(self, mailbox_id: bytes, read_seed: bytes) -> None:
        """Delete a mailbox we own, over a one-off connection."""
        await self.unsubscribe(mailbox_id)
        await self._close_poster(mailbox_id)
        client = self._new_client(reader=False)
        client.start()
        try:
            await client.delete_mailbox(mailbox_id, read_seed)
        finally:
            await self._retire(client)

    # -- blobs ------------------------------------------------------------------------

    async def upload_blob(self, chunks: Iterable[bytes]) -> tuple[bytes, bytes]:
        """Upload one blob over an HTTP session of its own."""
        client = self._new_client(reader=False)
        try:
            return await client.upload_blob(chunks)
        finally:
            await client.close()

    async def download_chunk(
        self, blob_id: bytes, index: int, read_token: bytes, limit: int = BLOB_CHUNK_SIZE
    ) -> bytes:
        """Download one chunk over an HTTP session of its own."""
        client = self._new_client(reader=False)
        try:
            return await client.download_chunk(blob_id, index, read_token, limit)
        finally:
            await client.close()
