"""The client engine: identity, contacts, conversations and delivery over
several relays.  Every front end (CLI, terminal app, harness) drives this.

Theory of operation
-------------------
State lives in the encrypted :class:`~client.store.Store`; the engine keeps
only caches of it.  Each conversation is an MLS group whose GroupContext
carries a :class:`~protocol.app.group_meta.GroupMeta` (name, kind and the
mailboxes on 1-8 relays).  Each relay is one supervised
:class:`~client.relay_client.RelayClient`.

Sending: an AppMessage is MLS-encrypted once, cut into envelopes, and each
envelope is sealed for each mailbox of the conversation (the seal key comes
from that mailbox's write seed, the relay never has it) and written to the
outbox in the store *before* anything is posted.  An outbox item is deleted
when its relay acknowledges the post; until then it is retried on every
(re)connection, so a failed send loses nothing, across restarts too.

Receiving: a delivered envelope is unsealed with the mailbox's key, de-duplicated
by the hash of its plaintext (the same message arrives from every relay),
reassembled if fragmented and handed to the group.  Handshake messages are
processed only from the conversation's ordering relay, the first relay in the
GroupMeta list that is reachable; those from other relays are held until
that relay becomes the orderer (deterministic fail-over, so members never
fork on relay disagreement).  Application messages are accepted from any
relay.

Our own commits are posted to every mailbox and merged when they come back
from the ordering relay; if a competing commit wins, the engine redoes the
operation once on the new epoch.

Delivery watch (:mod:`client.delivery`): heartbeats carry each sender's
high-water mark so receivers report dropped tails; a message without its
receipts after two minutes raises an alert naming members and relays and is
sent again, also through the recipients' own inboxes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
import urllib.parse
from pathlib import Path

from client.core import (
    INVITE_LIFETIME_MS,
    KEY_PACKAGE_STOCK,
    MAX_CONVERSATION_RELAYS,
    SUITE,
    EngineError,
    Notice,
    _unique,
    now_ms,
    rng,
)
from client.forwarding import forwarder_setting
from client.invites import Invites, InviteUnreachable, read_invite_link
from client.model import (
    NS_CONFIG,
    Contact,
    ContactInbox,
    Conversation,
    HistoryEntry,
    Identity,
    Inbox,
    history_ns,
)
from client.relay_client import RelayUnavailable, proxy_setting
from client.store import Store
from client.suites import CLIENT_SUITES
from client.urls import check_relay_url
from protocol.app.group_meta import (
    ConversationKind,
)
from protocol.app.invite import Invite, parse_short_invite_link, safety_number
from protocol.app.messages import KeyPackages
from protocol.errors import RemoteError
from protocol.mls.crypto import get_suite
from protocol.mls.key_package import validate_key_package
from protocol.mls.messages import MLSMessage
from protocol.relay_frames import BadSignature, NotAuthorized, UnknownMailbox

__all__ = ["AcceptQueued", "Engine", "EngineError", "Notice"]


def _proxy_setting(text: str) -> str:
    try:
        return proxy_setting(text)
    except ValueError as exc:
        raise EngineError(str(exc)) from None


# seconds a sync may take to read every mailbox once (polled ones included)
SYNC_CATCH_UP = 30.0
#: Store namespace of invite links accepted while their relay could not be
#: reached: SHA-256(link) -> {"link", "queued_ms"} (JSON, encrypted as every
#: record).  ``sync`` (and, in a long-running client, a timer) accepts them.
NS_ACCEPTS = "queued-accepts"
#: First retry of queued accepts in a long-running client; doubles to 10 min.
ACCEPT_RETRY = 30.0
#: At most this many links are kept, each at most MAX_KEPT_LINK characters
#: (a short link is ~70 plus its relay URL), for at most KEEP_ACCEPT_MS (the
#: default lifetime of an invite): every kept link costs each sync a read.
MAX_QUEUED_ACCEPTS = 16
MAX_KEPT_LINK = 2048
KEEP_ACCEPT_MS = INVITE_LIFETIME_MS


class AcceptQueued(EngineError):
    """:meth:`Engine.accept` could not read the invite now (its relay is
    unreachable): the link is kept in the store and accepted later by
    :meth:`Engine.accept_queued` (``sync``, or a timer once connected).
    ``reason`` says why the invite could not be read."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; the link is kept and accepted once its relay answers")
        self.reason = reason


def _reachable_url(url: str) -> bool:
    """Whether a short link's relay URL could ever be connected to: a relay
    URL (client.urls) whose host is a DNS name or an IP address."""
    try:
        check_relay_url(url)
    except ValueError:
        return False
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    return not parts.netloc.endswith(":") and re.fullmatch(r"[A-Za-z0-9.:-]+", host) is not None


def _accept_key(link: str) -> bytes:
    return hashlib.sha256(link.encode()).digest()


class Engine(Invites):
    """One user's client.  Use :meth:`open` or :meth:`create`, then
    :meth:`connect`; call :meth:`close` when done."""

    @classmethod
    def create(
        cls,
        home: Path,
        passphrase: bytes,
        name: str,
        relays: list[str],
        *,
        proxy: str | None = None,
        fast_kdf: bool = False,
    ) -> Engine:
        if not relays:
            raise EngineError("at least one relay is needed (--relay URL)")
        store = Store.create(home, passphrase, fast_kdf=fast_kdf)
        priv, pub = SUITE.signature_key_pair(rng)
        inboxes = [Inbox(url.rstrip("/"), rng(32), rng(32), rng(32)) for url in _unique(relays)]
        identity = Identity(priv, pub, name, _unique(relays), inboxes, now_ms(), True)
        try:
            identity.proxy = _proxy_setting(proxy or "")
        except EngineError:
            store.close()
            raise
        store.put(NS_CONFIG, b"identity", identity.to_json())
        engine = cls(store, identity, proxy=identity.proxy or None)
        engine._prepare_expiry()
        return engine

    @classmethod
    def open(cls, home: Path, passphrase: bytes, *, proxy: str | None = None) -> Engine:
        """Open the store.  ``proxy`` (``--proxy``), if given, replaces the
        saved proxy setting (``"none"`` clears it); if not, the saved one is
        used, so a command that omits ``--proxy`` still goes through it."""
        return cls.from_store(Store.open(home, passphrase), home, proxy=proxy)

    @classmethod
    def from_store(cls, store: Store, home: Path, *, proxy: str | None = None) -> Engine:
        """:meth:`open` of a store already opened (the CLI opens it while
        the engine's modules load); the engine owns it from here."""
        raw = store.get(NS_CONFIG, b"identity")
        if raw is None:
            store.close()
            raise EngineError(f"{home} holds no Samizdat identity")
        identity = Identity.from_json(raw)
        if proxy is not None:
            try:
                identity.proxy = _proxy_setting(proxy)
            except EngineError:
                store.close()
                raise
            store.put(NS_CONFIG, b"identity", identity.to_json())
        engine = cls(store, identity, proxy=identity.proxy or None)
        engine._load()
        engine._prepare_expiry()  # what expired while we were closed goes now
        return engine

    def set_proxy(self, proxy: str) -> str:
        """Save the proxy setting (``"none"``/``"off"``: no proxy); returns it.
        It applies to every connection opened from now on; call it before
        :meth:`connect` (the CLI does), as open connections are not moved."""
        self.identity.proxy = _proxy_setting(proxy)
        self.save_identity()
        self.proxy = self.identity.proxy or None
        return self.identity.proxy

    def set_forwarder(self, setting: str, fallback: bool | None = None) -> str:
        """Save the forwarding relay (one of our relays, or ``off``) and, if
        given, whether a post may go directly when it fails; returns it."""
        try:
            self.identity.forwarder = forwarder_setting(setting, self.identity.relays)
        except ValueError as exc:
            raise EngineError(str(exc)) from None
        if fallback is not None:
            self.identity.forward_fallback = fallback
        self.save_identity()
        return self.identity.forwarder

    # -- invites and contacts ---------------------------------------------------------

    async def connect(self) -> None:
        await super().connect()
        task = asyncio.get_running_loop().create_task(self._after_connect_invites())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self.store.items(NS_ACCEPTS):
            self._schedule_accept_retry()

    async def reach(self, urls: list[str]) -> None:
        """Connect to ``urls`` only, subscribing to no mailbox, and post what
        the outbox holds for them: all a command that only writes needs
        (``samizdat send``), instead of :meth:`connect`'s every relay and
        mailbox.  Returns once each relay is connected or has failed its
        first attempt (a refused connection fails at once)."""
        self._index_mailboxes()  # the outbox's write seeds come from here
        urls = _unique(urls)
        clients = [self._relay(url) for url in urls]
        await asyncio.gather(*(c.wait_connected() for c in clients), return_exceptions=True)
        for url in urls:  # queued envelopes first: a relay keeps our order
            await self.flush_outbox(url)

    async def accept(self, link: str) -> Conversation:
        """Accept an invite: a 1:1 conversation (an MLS group of two).

        The invite of a short link lives on its relay; if that relay cannot
        be reached (with the CLI's timeouts: at once when it refuses
        connections), nothing is known about the invite yet, so nothing can
        be built: the link is kept in the store and :class:`AcceptQueued`
        raised; :meth:`accept_queued` finishes it later."""
        link = link.strip()
        try:
            invite = await read_invite_link(link, now_ms(), self.proxy, self.relay_timeouts)
        except InviteUnreachable as exc:
            self._queue_accept(link, str(exc))
            raise AcceptQueued(str(exc)) from None
        conv = await self._accept_invite(invite)
        self.store.delete(NS_ACCEPTS, _accept_key(link))
        return conv

    def _queue_accept(self, link: str, reason: str) -> None:
        key = _accept_key(link)
        if self.store.get(NS_ACCEPTS, key) is None:
            # each kept link costs every sync a read: a bounded number, of
            # bounded size (a censor may hand over many links, or huge ones)
            if len(link) > MAX_KEPT_LINK:
                raise EngineError(f"{reason}; the link is too long to be kept ({len(link)} chars)")
            url, _ = parse_short_invite_link(link)  # read above: well formed
            if not _reachable_url(url):  # would never answer: kept for nothing
                raise EngineError(f"{reason}; the link is not kept: {url!r} is not a relay URL")
            if len(self.store.items(NS_ACCEPTS)) >= MAX_QUEUED_ACCEPTS:
                raise EngineError(
                    f"{reason}; the link is not kept: {MAX_QUEUED_ACCEPTS} accepted links "
                    "already wait for their relays (run 'samizdat sync' later)"
                )
            record = {"link": link, "queued_ms": now_ms()}
            self.store.put(NS_ACCEPTS, key, json.dumps(record).encode())
        self._schedule_accept_retry()

    def queued_accepts(self) -> list[str]:
        """Links :meth:`accept` kept because their relay could not be reached."""
        records = [json.loads(v) for _, v in self.store.items(NS_ACCEPTS)]
        return [r["link"] for r in sorted(records, key=lambda r: r["queued_ms"])]

    async def accept_queued(self) -> list[str]:
        """Accept each queued link whose invite can be read now; one line per
        link settled (accepted, or dropped and why: used up, revoked, expired,
        already a contact), also kept as a notice and in :attr:`accept_log`.
        A link whose relay still cannot be reached stays queued."""
        settled: list[str] = []
        async with self._accept_lock:
            now = now_ms()
            kept = []
            for key, raw in self.store.items(NS_ACCEPTS):
                record = json.loads(raw)
                if now - record["queued_ms"] > KEEP_ACCEPT_MS:  # not forever: sync exits 3
                    self.store.delete(NS_ACCEPTS, key)
                    text = (
                        "a queued invite link was given up: its relay has not "
                        f"delivered the invite in {KEEP_ACCEPT_MS // 86_400_000} days"
                    )
                    self._notice(None, text, True)
                    settled.append(text)
                else:
                    kept.append((key, record["link"]))
            # every link's relay at once: one that answers but never delivers
            # costs each sync one read's time, not one per link
            reads = await asyncio.gather(
                *(read_invite_link(link, now, self.proxy, self.relay_timeouts) for _, link in kept),
                return_exceptions=True,
            )
            for (key, _), read in zip(kept, reads, strict=True):
                if isinstance(read, BaseException) and not isinstance(read, Exception):
                    raise read  # cancelled
                try:
                    if isinstance(read, Exception):
                        raise read
                    conv = await self._accept_invite(read)
                except InviteUnreachable:  # its relay is still down: kept
                    continue
                except RelayUnavailable:  # a relay of ours (e.g. closing): kept
                    continue
                except (EngineError, RemoteError) as exc:
                    # RemoteError: the invite itself is bad (its KeyPackage
                    # does not decode, RFC 9420 §10); kept, a crafted link
                    # would be fetched again by every later sync, forever
                    text, warning = f"a queued invite link could not be accepted: {exc}", True
                else:
                    text = (
                        "queued invite accepted: contact request sent; "
                        f"conversation {conv.group_id.hex()[:8]}"
                    )
                    warning = False
                self.store.delete(NS_ACCEPTS, key)
                self._notice(None, text, warning)
                settled.append(text)
        self.accept_log.extend(settled)
        return settled

    def _schedule_accept_retry(self) -> None:
        """In a client that stays connected (the app), retry queued accepts
        now and then (30 s, doubling to 10 min) until none is left."""
        if self._closing or (self._accept_task is not None and not self._accept_task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return

        async def retry() -> None:
            delay = ACCEPT_RETRY
            while not self._closing and self.queued_accepts():
                await asyncio.sleep(delay)
                with contextlib.suppress(RemoteError):  # e.g. closing: they stay queued
                    await self.accept_queued()
                delay = min(delay * 2, 600.0)

        self._accept_task = loop.create_task(retry())
        self._tasks.add(self._accept_task)
        self._accept_task.add_done_callback(self._tasks.discard)

    def pending_introductions(self) -> dict[str, int]:
        """Who may be a contact soon without a name to find them by yet:
        links queued by :meth:`accept`, contacts whose introduction (their
        name) has not arrived, and open invites of ours someone may have
        accepted meanwhile.  ``sync`` brings each in."""
        now = now_ms()
        return {
            "queued_accepts": len(self.store.items(NS_ACCEPTS)),
            "unnamed_contacts": sum(1 for c in self.contacts() if not c.name),
            "open_invites": sum(1 for r in self.invites() if r.current_state(now) == "active"),
        }

    async def _accept_invite(self, invite: Invite) -> Conversation:
        """Accept an invite already read and verified (see :meth:`accept`),
        one at a time: the app's retry of a kept link and the user accepting
        it again must not both pass the "already a contact" check below."""
        async with self._accepting:
            return await self._accept_invite_now(invite)

    async def _accept_invite_now(self, invite: Invite) -> Conversation:
        if invite.identity_key == self.identity.signature_pub:
            raise EngineError("this is your own invite link")
        existing = self.contact(invite.identity_key)
        if existing is not None and existing.conversation:
            conv = self.conversation(existing.conversation)
            if conv is not None and not conv.left:
                raise EngineError(f"{existing.name or 'this contact'} is already a contact")
        kp = MLSMessage.from_bytes(invite.key_package).key_package
        if kp is None or kp.leaf_node.signature_key != invite.identity_key:
            raise EngineError("the invite's KeyPackage does not belong to its signer")
        # the 1:1 conversation takes the suite the inviter chose (SPEC.md §4.1.1)
        if kp.cipher_suite not in CLIENT_SUITES:
            raise EngineError(
                f"the invite asks for cipher suite {kp.cipher_suite:#06x}, which this client "
                "does not offer; ask for an invite in another suite"
            )
        # RFC 9420 §10.1 before anything is built: a KeyPackage the Add below
        # would refuse must not leave a contact and an empty conversation
        validate_key_package(get_suite(kp.cipher_suite), kp, int(time.time()))
        await self._check_invite_open(invite)
        contact = existing or Contact(invite.identity_key)
        contact.inboxes = [
            ContactInbox(i.relay_url, i.mailbox_id, i.write_seed) for i in invite.inboxes
        ]
        self._save_contact(contact)
        relays = _unique(self.identity.relays + [i.relay_url for i in invite.inboxes])
        conv = await self._create_conversation(
            "", ConversationKind.DIRECT, relays[:MAX_CONVERSATION_RELAYS], kp.cipher_suite
        )
        contact.conversation = conv.group_id
        self._save_contact(contact)
        # the Welcome, our profile and KeyPackages: posted concurrently, each
        # at its own jittered time, awaited together
        async with self._posting_together():
            await self._add_members(conv.group_id, [(invite.key_package, contact.inboxes)])
            await self._introduce(conv.group_id)
        return conv

    async def _check_invite_open(self, invite: Invite) -> None:
        """Prove the invite's write capability to its relays: if every relay
        that answers refuses it, the inviter has deleted the invite's mailboxes
        (used up, revoked or expired: SPEC.md §8.5).  Unreachable relays say
        nothing, and the request is then queued as before."""
        # every relay at once: each proof is a connection of its own
        results = await asyncio.gather(
            *(
                self._relay(inbox.relay_url).prove_write(inbox.mailbox_id, inbox.write_seed)
                for inbox in invite.inboxes
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, RemoteError):
                raise result
        answered = sum(1 for r in results if not isinstance(r, BaseException))
        refused = sum(
            1 for r in results if isinstance(r, (UnknownMailbox, BadSignature, NotAuthorized))
        )
        if refused and not answered:
            raise EngineError("this invite is no longer valid (used up, revoked or expired)")

    async def _introduce(self, conv_id: bytes) -> None:
        """Tell the conversation our name (and, in a 1:1 conversation, the
        inboxes we give this contact alone), and give KeyPackages."""
        await self._send_profile(conv_id)
        conv = self.conversation(conv_id)
        if conv is not None and conv.kind == "direct":
            # a stock of every suite we offer, so the contact can add us to a
            # group of any of them (SPEC.md §4.1.1)
            kps = tuple(
                self._new_key_package(suite)
                for suite in CLIENT_SUITES
                for _ in range(KEY_PACKAGE_STOCK)
            )
            await self._send_app(conv_id, KeyPackages(kps), history=False)

    def conversation_relays(self, conv_id: bytes) -> list[str]:
        """The conversation's relays, ordering relay first (GroupMeta order)."""
        return list(self._meta(conv_id).relay_urls)

    def safety_number(self, contact: Contact) -> str:
        return safety_number(self.identity.signature_pub, contact.identity_key)

    def verify(self, contact: Contact) -> None:
        contact.verified = True
        contact.verified_key = contact.identity_key
        contact.key_changed = False
        self._save_contact(contact)

    # -- history ---------------------------------------------------------------------------

    def history(self, conv_id: bytes, limit: int | None = None) -> list[HistoryEntry]:
        """Messages, oldest first.  Everything due to disappear (in every
        conversation, attachments included) is deleted first."""
        self.expire_due()
        entries = []
        for _, raw in self.store.read_log(history_ns(conv_id), newest_first=True, limit=limit):
            entries.append(HistoryEntry.from_json(raw))
        entries.reverse()
        return entries

    def mark_read(self, conv_id: bytes) -> None:
        # the user opened it: its mailboxes are read live, a reply is likely
        # (cold ones are promoted, SPEC.md §7.1 "Promotion and displacement")
        for mb in [m for m in self._mailboxes.values() if m.conv_id == conv_id]:
            if not mb.retired and mb.relay_url in self.relays:
                self.relays[mb.relay_url].promote(mb.mailbox_id)
        conv = self.conversation(conv_id)
        if conv is not None and conv.unread:
            conv.unread = 0
            self._save_conv(conv)

    # -- sync ----------------------------------------------------------------------------------

    async def sync(self, wait: float = 2.0) -> int:
        """Connect, exchange pending messages for ``wait`` seconds, flush.
        Returns the number of envelopes still queued."""
        await self.connect()
        deadline = time.monotonic() + wait
        # links accepted while their relay was down, alongside reading mail:
        # a kept link whose relay never delivers must not hold that up
        accepting = asyncio.get_running_loop().create_task(self.accept_queued())
        try:
            # every mailbox once, even those read by polls (SPEC.md §7.1), bounded
            await asyncio.gather(
                *(r.catch_up(SYNC_CATCH_UP) for r in list(self.relays.values())),
                return_exceptions=True,
            )
        except BaseException:  # cancelled: so is the accepting
            accepting.cancel()
            raise
        await accepting
        while time.monotonic() < deadline:
            await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        await self._drain_held()
        await self._flush_receipts()
        await self._top_up_key_packages()
        return await self.flush_outbox()

    async def _top_up_key_packages(self) -> None:
        for contact in self.contacts():
            if not contact.conversation or contact.conversation not in self.groups:
                continue
            wanted = {
                suite: KEY_PACKAGE_STOCK - contact.published(suite)
                for suite in CLIENT_SUITES
                if contact.published(suite) < KEY_PACKAGE_STOCK
            }
            if not wanted:
                continue
            kps = tuple(
                self._new_key_package(suite) for suite, n in wanted.items() for _ in range(n)
            )
            try:
                await self._send_app(contact.conversation, KeyPackages(kps), history=False)
            except EngineError:
                continue
            contact = self.contact(contact.identity_key) or contact
            for suite, n in wanted.items():
                contact.set_published(suite, contact.published(suite) + n)
            self._save_contact(contact)

    # -- backup --------------------------------------------------------------------------------

    def export_backup(self, path: Path, passphrase: bytes) -> None:
        """An encrypted backup of the store, without any message that is
        due to disappear (swept first, attachments included)."""
        self.expire_due()
        self.store.export_backup(path, passphrase)
