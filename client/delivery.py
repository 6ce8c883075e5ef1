"""The delivery watch: silent drops made loud, on both ends.

Theory of operation
-------------------
A relay can accept a post ("stored") and never deliver it, or refuse it.
Gaps in a sender's ``sender_seq`` show drops *between* two of its
messages, but not its last ones, nor everything it posts.  Two mechanisms
close that (SPEC.md §8.11, "Delivery watch"):

* **Receivers: high-water marks.**  ``heartbeat_delay`` after a sender's
  last message (of any kind but a receipt or heartbeat) it sends a
  :class:`~protocol.app.messages.Heartbeat`: an ordinary, padded, MLS-signed
  application message whose ``sender_seq`` is its high-water mark.  A
  relay cannot tell it from a short text.  A receiver that sees a gap
  which no relay fills within ``gap_grace`` tells the user, naming the
  sender.  Bound: heartbeat_delay + gap_grace after the last dropped message,
  as long as any later message of the sender gets through.

* **Senders: receipts with a deadline.**  Each text, article or file we send
  is remembered (:class:`~client.model.Awaiting`, with the MLS ciphertext)
  until every expected member sent a ``delivered`` receipt: all other
  members up to 64, else a sample of 16 witnesses
  (:func:`~protocol.app.messages.receipt_witnesses`).  If one is missing
  after ``delivery_timeout`` the user gets a loud alert naming the members
  and what each relay did (refused, accepted but silent, unreachable), and
  the message is sent again once: unchanged MLS ciphertext in fresh
  envelopes to each missing member's own inboxes (other relays, chosen by
  the recipient), where a receiver accepts it as an application message of
  that group, and, if no one confirmed it, to every mailbox of the
  conversation too.  If the
  retry is not confirmed either, a second alert says so.

Time comes from ``self.clock`` and every period is an attribute, so tests
inject both instead of waiting minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict

from client.conversations import Conversations
from client.core import EngineError
from client.model import (
    NS_AWAIT,
    NS_INBOXES,
    Awaiting,
    ContactInbox,
    Identity,
    SenderTrack,
)
from client.store import Store
from protocol.app.envelope import EnvelopeType
from protocol.app.messages import (
    AppMessage,
    Article,
    File,
    Heartbeat,
    Receipt,
    Text,
    receipt_witnesses,
)
from protocol.errors import RemoteError
from protocol.mls.group import Group

log = logging.getLogger(__name__)

DELIVERY_TIMEOUT = 120.0  # seconds until a missing receipt is an alert (and a retry)
HEARTBEAT_DELAY = 30.0  # seconds after our last message until its high-water mark
GAP_GRACE = 10.0  # seconds another relay has to fill a gap before it is reported
WATCH_TICK = 1.0  # seconds between checks


class Delivery(Conversations):
    """The delivery watch (see the module docstring)."""

    def __init__(self, store: Store, identity: Identity, *, proxy: str | None = None) -> None:
        super().__init__(store, identity, proxy=proxy)
        self.clock: Callable[[], float] = time.time
        self.delivery_timeout = DELIVERY_TIMEOUT
        self.heartbeat_delay = HEARTBEAT_DELAY
        self.gap_grace = GAP_GRACE
        self.watch_tick = WATCH_TICK
        self._heartbeat_due: dict[bytes, float] = {}  # conversation -> clock time
        self._gaps: set[bytes] = set()  # conversations with gaps not yet reported
        self._watch_task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        await super().connect()
        if self._watch_task is None or self._watch_task.done():
            for conv in self.conversations():
                if any(SenderTrack(**raw).missing for raw in conv.senders.values()):
                    self._gaps.add(conv.group_id)
            self._watch_task = asyncio.get_running_loop().create_task(self._watch())
            self._tasks.add(self._watch_task)
            self._watch_task.add_done_callback(self._tasks.discard)

    async def _watch(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.watch_tick)
            try:
                await self._watch_once()
            except Exception:  # the watch must outlive any one bad record
                log.exception("delivery watch failed")

    async def _watch_once(self) -> None:
        now = self.clock()
        for conv_id, due in list(self._heartbeat_due.items()):
            if due <= now:
                del self._heartbeat_due[conv_id]
                group = self.groups.get(conv_id)
                if group is not None and group.active and len(group.members()) > 1:
                    with contextlib.suppress(EngineError):
                        await self._send_app(conv_id, Heartbeat(), history=False)
        for conv_id in list(self._gaps):
            self._report_gaps(conv_id, now)
        for _, raw in list(self.store.items(NS_AWAIT)):
            await self._check_delivery(Awaiting.from_json(raw), now)

    # -- sender side -------------------------------------------------------------------

    def _after_send(
        self, conv_id: bytes, group: Group, message: AppMessage, mls_message: bytes
    ) -> None:
        """Called by ``_send_app`` inside its store transaction."""
        body = message.body
        if isinstance(body, (Receipt, Heartbeat)):
            return
        self._heartbeat_due[conv_id] = self.clock() + self.heartbeat_delay
        if not isinstance(body, (Text, Article, File)):
            return
        me = self.identity.signature_pub
        others = [key for _, _, key in group.members() if key != me]
        if not others:
            return
        now = self.clock()
        record = Awaiting(
            message.message_id,
            conv_id,
            mls_message,
            now + self.delivery_timeout,
            receipt_witnesses(message.message_id, others),
            sent_at=now,
        )
        self.store.put(NS_AWAIT, message.message_id, record.to_json())

    def _note_refusal(self, message_id: bytes, relay_url: str, exc: RemoteError) -> None:
        raw = self.store.get(NS_AWAIT, message_id) if message_id else None
        if raw is None:
            return
        record = Awaiting.from_json(raw)
        record.refused[relay_url] = f"{type(exc).__name__}: {exc}"
        self.store.put(NS_AWAIT, message_id, record.to_json())

    async def _check_delivery(self, record: Awaiting, now: float) -> None:
        group = self.groups.get(record.conversation)
        status = self.status(record.message_id)
        if group is None or not group.active or status is None:
            self.store.delete(NS_AWAIT, record.message_id)
            return
        current = {key for _, _, key in group.members()}
        missing = [
            key for key in record.expected if key in current and key not in status.delivered_to
        ]
        if not missing:
            self.store.delete(NS_AWAIT, record.message_id)
            return
        if now < record.deadline:
            return
        names = ", ".join(self.display_name(key) for key in missing)
        confirmed = [key for key in record.expected if key in status.delivered_to]
        waited = _span(self.delivery_timeout * (2 if record.retried else 1))
        relays = self._relay_report(record, status.relays_stored)
        conv = self.conversation(record.conversation)
        active = [k for k in missing if conv and conv.track(k).heard_at > record.sent_at]
        idle = [k for k in missing if k not in active]
        if active:
            # they posted after our message was sent: they are online, so it
            # (or their receipt) was dropped on the way
            who = ", ".join(self.display_name(key) for key in active)
            relays = f"{who} posted since, so it or their receipt was dropped; {relays}"
        if confirmed and idle:
            # the relays delivered it to some: the others may just be offline
            others = ", ".join(self.display_name(key) for key in confirmed)
            who = ", ".join(self.display_name(key) for key in idle)
            relays = f"{others} confirmed it, so {who} may be offline; {relays}"
        if record.retried:
            self.store.delete(NS_AWAIT, record.message_id)
            self._notice(
                record.conversation,
                f"STILL NOT DELIVERED to {names} after {waited}, retry included: {relays}. "
                "If they are online, every path to them is blocked: move the "
                "conversation to another relay.",
                warning=True,
            )
            return
        record.retried = True
        record.deadline = now + self.delivery_timeout
        self.store.put(NS_AWAIT, record.message_id, record.to_json())
        self._notice(
            record.conversation,
            f"NOT DELIVERED to {names} after {waited}: {relays}. Sending it again "
            "through "
            + (
                "their own inboxes."
                if confirmed
                else "every relay of the conversation and their own inboxes."
            ),
            warning=True,
        )
        await self._redeliver(record, missing, to_group=not confirmed)

    def _relay_report(self, record: Awaiting, stored: list[str]) -> str:
        """What each relay of the conversation did with the message."""
        parts = []
        for url in self._meta(record.conversation).relay_urls:
            if url in record.refused:
                parts.append(f"relay {url} refused it ({record.refused[url]})")
            elif url in stored:
                parts.append(f"relay {url} accepted it but is silent (no receipt came back)")
            else:
                parts.append(f"relay {url} never accepted it (unreachable)")
        return "; ".join(parts)

    async def _redeliver(self, record: Awaiting, missing: list[bytes], *, to_group: bool) -> None:
        """Post the unchanged MLS message again in fresh envelopes: to the
        missing members' inboxes and, if nobody confirmed it (the group's
        relays may have dropped it outright), to every mailbox of the
        conversation.  Receivers de-duplicate by payload, and MLS rejects a
        second copy (RFC 9420 §9.2: a consumed generation's key is gone)."""
        conv_id = record.conversation
        if to_group:
            items = self._sealed_items(conv_id, record.mls_message, record.message_id)
            self._queue(items)
            await self._flush_items(items)
        inboxes = [inbox for key in missing for inbox in self._inboxes_of(key)]
        if inboxes:
            await self._post_to_inboxes(
                record.mls_message,
                inboxes,
                conv_id,
                kind=EnvelopeType.MLS,
                message_id=record.message_id,
            )

    def _inboxes_of(self, identity_key: bytes) -> list[ContactInbox]:
        contact = self.contact(identity_key)
        if contact is not None and contact.inboxes:
            return list(contact.inboxes)
        raw = self.store.get(NS_INBOXES, identity_key)
        if raw is None:
            return []
        return [
            ContactInbox(i["relay_url"], bytes.fromhex(i["mailbox_id"]), bytes.fromhex(i["seed"]))
            for i in json.loads(raw)
        ]

    def _remember_inboxes(self, identity_key: bytes, inboxes: list[ContactInbox]) -> None:
        """Keep a member's inboxes (from its Profile) for the retry path."""
        data = [
            {"relay_url": i.relay_url, "mailbox_id": i.mailbox_id.hex(), "seed": i.write_seed.hex()}
            for i in inboxes
        ]
        self.store.put(NS_INBOXES, identity_key, json.dumps(data).encode())

    # -- receiver side -----------------------------------------------------------------

    def _gap_seen(self, conv_id: bytes, track: SenderTrack, had_unreported: bool) -> None:
        """``_track`` found new missing seqs in ``track`` (not yet saved)."""
        if not had_unreported:
            track.gap_since = self.clock()
        self._gaps.add(conv_id)

    def _report_gaps(self, conv_id: bytes, now: float) -> None:
        conv = self.conversation(conv_id)
        if conv is None:
            self._gaps.discard(conv_id)
            return
        waiting = False
        reports = []
        for key_hex, raw in conv.senders.items():
            track = SenderTrack(**raw)
            fresh = [s for s in track.missing if s > track.reported]
            if not fresh:
                continue
            if now - track.gap_since < self.gap_grace:
                waiting = True
                continue
            track.reported = max(fresh)
            conv.senders[key_hex] = asdict(track)
            reports.append((bytes.fromhex(key_hex), len(fresh)))
        if not waiting:
            self._gaps.discard(conv_id)
        if not reports:
            return
        self._save_conv(conv)
        for sender, n in reports:
            self._notice(
                conv_id,
                f"{n} message{'s' if n > 1 else ''} from {self.display_name(sender)} "
                f"never arrived: a later message of theirs shows they were sent, and no "
                f"relay of this conversation delivered them within {_span(self.gap_grace)}. "
                "A relay is dropping or withholding them.",
                warning=True,
            )


def _span(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"
