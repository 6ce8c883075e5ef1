"""Invites with their own capability, and per-contact inboxes (SPEC.md §8.5).

Theory of operation
-------------------
Each invite gets fresh mailboxes (one per relay of ours) that only it uses:
the link carries their write seeds, so whoever holds the link can post there
and nowhere else, against that mailbox's own relay quota.  The owner reads
them while the invite is *active*; an invite stops being active when it has
brought ``max_uses`` contacts (``used``), at ``expires_at_ms`` (``expired``,
also the mailboxes' relay TTL) or when the owner revokes it (``revoked``).
Then its mailboxes are deleted on the relays (``DeleteMailbox``, signed with
the read key only the owner holds), its KeyPackage is dropped and anything
still delivered from them is ignored.

A contact request that arrives through an invite opens a 1:1 conversation;
inside it each side gives the other *per-contact inboxes* (fresh mailboxes
in its ``Profile``).  Later Welcomes (group adds) from that contact go there.
So a flooded, used-up or revoked invite never touches an established
contact, and one contact cannot flood another's way in.

Migration: contacts made before per-contact inboxes hold our identity inbox
(and old links carry its write seed).  On connect, every such contact is
sent a ``Profile`` with its own inboxes; the identity inbox is still read for
messages in flight but is never handed out again, and ``revoke_invite
("legacy")`` deletes it on the relays, which kills every old link.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib

from client.core import INVITE_LIFETIME_MS, EngineError, _Mailbox, now_ms, rng
from client.inbound import Inbound, _unseal_any
from client.model import (
    NS_CURSORS,
    NS_INVITES,
    NS_KEY_PACKAGES,
    NS_SEEN,
    Contact,
    Inbox,
    InviteRecord,
)
from client.relay_client import RelayClient, RelayUnavailable
from client.suites import DEFAULT_SUITE, check_suite
from protocol.app.envelope import Envelope, EnvelopeType, Reassembler
from protocol.app.invite import (
    LINK_SECRET_LEN,
    InboxAddress,
    Invite,
    InviteBlobKeys,
    invite_blob_keys,
    is_short_invite_link,
    open_invite_blob,
    parse_invite_link,
    parse_short_invite_link,
    seal_invite_blob,
    short_invite_link,
)
from protocol.app.messages import Profile
from protocol.errors import CryptoError, DecodeError, RemoteError
from protocol.mls.crypto import get_suite
from protocol.mls.messages import MLSMessage
from protocol.mls.welcome import key_package_ref
from protocol.relay_frames import (
    BadFrame,
    BadRequest,
    BadSignature,
    NotAuthorized,
    UnknownMailbox,
)

#: The relay keeps a mailbox at most this long without being told (SPEC §7.11
#: ``max_ttl`` default); a longer invite gets the relay's default TTL and is
#: deleted by its owner at expiry.
RELAY_MAX_TTL_S = 90 * 24 * 3600
LEGACY = "legacy"
MAX_INVITE_USES = 1000
#: Envelopes an invite's mailboxes may deliver that open no contact request
#: for it (at most 64 KiB each: 2 MiB in all) before the owner revokes the
#: invite: a link holder cannot push more through the owner's client than
#: this, however fast the owner drains the mailbox (SPEC.md §8.5).
INVITE_JUNK_BUDGET = 32
#: The junk count is saved every this many items (not on each: a flood must
#: not cost a store write per envelope); a restart forgets at most this many.
JUNK_SAVE_EVERY = 8
#: How long the relay of a short link gets to deliver the stored invite, and
#: how many connections it gets to do so (a lossy relay may drop a delivery).
INVITE_FETCH_TIMEOUT = 6.0
INVITE_FETCH_ATTEMPTS = 4
_INVITE_GONE = "this invite is no longer valid (used up, revoked or expired)"
#: A finished invite whose mailboxes are gone is listed this long, then forgotten.
FORGET_AFTER_MS = 90 * 24 * 3600 * 1000


class InviteUnreachable(EngineError):
    """The relay holding a short link's invite could not be reached, or did
    not deliver it: nothing is known about the invite yet; try again later."""


class Invites(Inbound):
    """Invites with their own capability, and per-contact inboxes."""

    # -- creating and listing ------------------------------------------------------------

    async def create_invite(
        self, *, uses: int = 1, lifetime_ms: int = INVITE_LIFETIME_MS, suite: int = DEFAULT_SUITE
    ) -> tuple[InviteRecord, str]:
        """A new invite good for ``uses`` contact requests until ``lifetime_ms``
        from now: its own mailboxes, created on our relays now.  Its KeyPackage
        is of ``suite``, so the 1:1 conversation it opens is too (SPEC.md §4.1.1)."""
        check_suite(suite)
        if not 1 <= uses <= MAX_INVITE_USES:
            raise EngineError(f"an invite is good for 1 to {MAX_INVITE_USES} uses")
        if lifetime_ms < 1000:
            raise EngineError("an invite must be valid for at least one second")
        if not self.identity.relays:
            raise EngineError("no relays configured")
        created = now_ms()
        ttl_s = -(-lifetime_ms // 1000)
        boxes = [Inbox(url, rng(32), rng(32), rng(32)) for url in self.identity.relays]
        made: list[Inbox] = []
        errors: list[str] = []
        for box in boxes:
            relay = self._relay(box.relay_url)
            try:
                try:
                    await relay.create_mailbox(
                        box.mailbox_id,
                        box.read_seed,
                        box.write_seed,
                        ttl_s if ttl_s <= RELAY_MAX_TTL_S else 0,
                    )
                except BadRequest:  # a relay with a lower max_ttl: its default
                    await relay.create_mailbox(box.mailbox_id, box.read_seed, box.write_seed)
                made.append(box)
            except (RelayUnavailable, RemoteError) as exc:
                errors.append(f"{box.relay_url}: {exc}")
        if not made:
            raise EngineError("no relay could create the invite's mailbox: " + "; ".join(errors))
        kp = self._new_key_package(suite)
        parsed = MLSMessage.from_bytes(kp).key_package
        assert parsed is not None
        record = InviteRecord(
            rng(8),
            created,
            created + lifetime_ms,
            uses,
            key_package_ref(get_suite(suite), parsed),
            made,
        )
        for box in made:
            self.store.put(NS_CURSORS, b"created:" + box.mailbox_id, b"1")
        self._save_invite(record)
        invite = Invite.create(
            tuple(InboxAddress(b.relay_url, b.mailbox_id, b.write_seed) for b in made),
            self.identity.signature_priv,
            kp,
            record.expires_at_ms,
        )
        link = await self._store_invite_blob(record, invite, made, ttl_s)
        self._index_mailboxes()
        for box in made:
            await self._subscribe(self._mailboxes[box.mailbox_id])
        self._schedule_invite_expiry()
        self._emit("invites", None)
        return record, link

    async def _store_invite_blob(
        self, record: InviteRecord, invite: Invite, made: list[Inbox], ttl_s: int
    ) -> str:
        """Put the encrypted invite on a relay (the one with the shortest URL
        that takes it) and return the short link naming it (SPEC.md §8.5).
        Its mailbox lives as long as the invite and is deleted with it."""
        secret = rng(LINK_SECRET_LEN)
        keys = invite_blob_keys(secret)
        envelope = seal_invite_blob(invite, secret)
        errors: list[str] = []
        for url in sorted({b.relay_url for b in made}, key=lambda u: (len(u), u)):
            box = Inbox(url, keys.mailbox_id, keys.read_seed, rng(32))
            relay = self._relay(url)
            try:
                try:
                    ttl = ttl_s if ttl_s <= RELAY_MAX_TTL_S else 0
                    await relay.create_mailbox(box.mailbox_id, box.read_seed, box.write_seed, ttl)
                except BadRequest:
                    await relay.create_mailbox(box.mailbox_id, box.read_seed, box.write_seed)
                record.blob = [box]
                self._save_invite(record)  # from here on, retiring deletes it
                await relay.post(box.mailbox_id, box.write_seed, rng(16), envelope)
            except (RelayUnavailable, RemoteError) as exc:
                errors.append(f"{url}: {exc}")
                continue
            return short_invite_link(secret, url)
        await self._retire_unstored(record)
        raise EngineError("no relay could store the invite: " + "; ".join(errors))

    async def _retire_unstored(self, record: InviteRecord) -> None:
        record.state = "revoked"
        self._save_invite(record)
        with contextlib.suppress(RelayUnavailable, RemoteError):
            await self._retire(record)

    async def fetch_short_invite(self, link: str) -> Invite:
        """The invite a short link names (see :func:`fetch_short_invite`),
        read with this engine's relay timeouts (the CLI's fail fast)."""
        return await fetch_short_invite(link, now_ms(), self.proxy, self.relay_timeouts)

    async def invite(
        self, *, uses: int = 1, lifetime_ms: int = INVITE_LIFETIME_MS, suite: int = DEFAULT_SUITE
    ) -> str:
        """An invite link (see :meth:`create_invite`)."""
        return (await self.create_invite(uses=uses, lifetime_ms=lifetime_ms, suite=suite))[1]

    def find_invite(self, query: str) -> InviteRecord:
        """An invite by its id (hex, or a prefix of at least 4 digits)."""
        q = query.strip().lower()
        found = [r for r in self.invites() if len(q) >= 4 and r.invite_id.hex().startswith(q)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise EngineError(f"{query!r} matches several invites; give more of the id")
        raise EngineError(f"no invite {query!r} (see 'samizdat invite list')")

    async def revoke_invite(self, query: str) -> InviteRecord | None:
        """Revoke an invite: its mailboxes are deleted on the relays now (or
        on the next connection) and nothing from them is read any more.
        ``"legacy"`` deletes the identity inbox that links made by older
        versions carry; returns None then."""
        if query.strip().lower() == LEGACY:
            await self._revoke_legacy()
            return None
        record = self.find_invite(query)
        if record.current_state(now_ms()) == "active":
            record.state = "revoked"
            self._save_invite(record)
        await self._retire(record)
        self._emit("invites", None)
        return record

    async def _revoke_legacy(self) -> None:
        if not self.legacy_inbox_relays():
            raise EngineError("there is no legacy inbox to revoke: no link of yours carries it")
        await self._migrate_contacts()
        gone = list(self.identity.inboxes)
        self.identity.inboxes = []
        self.identity.inbox_private = True
        self.save_identity()
        self._index_mailboxes()
        for box in gone:
            await self._delete_owned(box)
        self._emit("invites", None)

    def legacy_inbox_relays(self) -> list[str]:
        """Relays of the identity inbox that links of older versions carry."""
        if self.identity.inbox_private:
            return []
        return [i.relay_url for i in self.identity.inboxes]

    # -- receiving --------------------------------------------------------------------------

    async def _on_deliver(self, url: str, mailbox_id: bytes, seq: int, sealed: bytes) -> None:
        mb = self._mailboxes.get(mailbox_id)
        if mb is None or not mb.invite_id:
            await super()._on_deliver(url, mailbox_id, seq, sealed)
            return
        await self._on_invite_deliver(mb, url, seq, sealed)

    async def _on_invite_deliver(self, mb: _Mailbox, url: str, seq: int, sealed: bytes) -> None:
        """An envelope from one of our invites' mailboxes: anyone holding the
        link may have posted it, so it is judged cheaply first (no engine lock,
        no store write): only a complete Welcome naming the invite's
        KeyPackage goes on to the locked path that may open a contact.
        Everything else spends the invite's junk budget (SPEC.md §8.5), so
        junk never waits for, nor holds up, a contact's messages."""
        try:
            await self._judge_invite_envelope(mb, url, seq, sealed)
        finally:
            self._ack_later(url, mb.mailbox_id, seq)  # inboxes are ours alone

    async def _judge_invite_envelope(self, mb: _Mailbox, url: str, seq: int, sealed: bytes) -> None:
        triaged = self._triage_invite_envelope(mb, sealed)
        if triaged is None:
            await self._spend_junk(mb, url, seq)
            return
        welcome, pieces = triaged
        raw = self.store.get(NS_INVITES, mb.invite_id)
        uses = InviteRecord.from_json(raw).uses if raw is not None else 0
        async with self._lock:
            try:
                digest = hashlib.sha256(bytes([EnvelopeType.WELCOME]) + welcome).digest()[:16]
                if self.store.get(NS_SEEN, digest) is None:
                    self.store.put(NS_SEEN, digest, b"")
                    await self._on_inbox_welcome(mb, welcome)
            finally:
                self.store.put(NS_CURSORS, mb.mailbox_id, str(seq + 1).encode())
        raw = self.store.get(NS_INVITES, mb.invite_id)
        if raw is None or InviteRecord.from_json(raw).uses == uses:
            await self._spend_junk(mb, url, seq)  # a replay, or not a request we take
        elif pieces > 1 and mb.invite_id in self._invite_junk:
            # its earlier fragments were counted as junk until it was complete
            junk = self._invite_junk[mb.invite_id]
            self._invite_junk[mb.invite_id] = max(0, junk - (pieces - 1))

    def _triage_invite_envelope(self, mb: _Mailbox, sealed: bytes) -> tuple[bytes, int] | None:
        """The Welcome an invite mailbox's envelope completes, and the number
        of envelopes it came in, if it opens, decodes and names the invite's
        KeyPackage (RFC 9420 §12.4.3.1: a Welcome's secrets are listed by the
        KeyPackageRef of each new member); None for anything else."""
        raw = self.store.get(NS_INVITES, mb.invite_id)
        if raw is None:
            return None
        ref = InviteRecord.from_json(raw).key_package_ref
        try:
            envelope = Envelope.from_bytes(_unseal_any(mb, sealed))
            complete = self._reassemblers.setdefault(mb.mailbox_id, Reassembler()).add(
                envelope, now_ms()
            )
        except (CryptoError, DecodeError, RemoteError):
            return None
        if complete is None or complete[0] != EnvelopeType.WELCOME:
            return None  # a fragment counts as junk until its Welcome is taken
        try:
            welcome = MLSMessage.from_bytes(complete[1]).welcome
        except DecodeError:
            return None
        if welcome is None or not any(e.new_member == ref for e in welcome.secrets):
            return None
        return complete[1], envelope.fragment.count if envelope.fragment is not None else 1

    async def _spend_junk(self, mb: _Mailbox, url: str, seq: int) -> None:
        """Count one junk envelope against its invite; past the budget the
        invite is revoked: its mailboxes are deleted on the relays, so the
        link's capability is dead and the flood stops at the relay."""
        junk = self._invite_junk.get(mb.invite_id)
        raw = self.store.get(NS_INVITES, mb.invite_id)
        if raw is None:
            return
        record = InviteRecord.from_json(raw)
        if junk is None:
            junk = record.junk  # what was saved before a restart
        junk += 1
        self._invite_junk[mb.invite_id] = junk
        over = junk >= INVITE_JUNK_BUDGET and record.current_state(now_ms()) == "active"
        if not over and junk % JUNK_SAVE_EVERY:
            return
        record.junk = max(record.junk, junk)
        if over:
            record.state = "revoked"
            record.flooded = True
        self._save_invite(record)
        self.store.put(NS_CURSORS, mb.mailbox_id, str(seq + 1).encode())
        if not over:
            return
        self._invite_junk.pop(mb.invite_id, None)
        self._index_mailboxes()  # nothing more is read from it, from now on
        self._notice(
            None,
            f"invite {record.invite_id.hex()[:8]} received {junk} items of junk that were no "
            "contact request: someone holding its link is flooding it, so it was revoked. "
            "Make a new invite for whoever still needs one.",
            True,
        )

        async def retire() -> None:
            with contextlib.suppress(RelayUnavailable, RemoteError):
                await self._retire(record)
            self._emit("invites", None)

        # in the background: the relay round trips must not hold up deliveries
        task = asyncio.get_running_loop().create_task(retire())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_inbox_welcome(self, mb: _Mailbox, welcome: bytes) -> None:
        if not mb.invite_id:
            await self._on_welcome(welcome)
            return
        raw = self.store.get(NS_INVITES, mb.invite_id)
        if raw is None:
            return
        record = InviteRecord.from_json(raw)
        if record.current_state(now_ms()) != "active":
            await self._retire(record)  # late deliveries are ignored
            return
        conv_id = await self._on_welcome(welcome, invite_ref=record.key_package_ref)
        if conv_id is None:
            return  # junk, or not a contact request: costs this invite only
        record = InviteRecord.from_json(self.store.get(NS_INVITES, mb.invite_id) or raw)
        record.uses += 1
        others = [k for k in self.members(conv_id) if k != self.identity.signature_pub]
        record.accepted.extend(others[:1])
        if record.uses >= record.max_uses and record.state == "active":
            record.state = "used"
        self._save_invite(record)
        if record.state != "active":
            await self._retire(record)
        self._emit("invites", None)

    # -- retiring ---------------------------------------------------------------------------

    async def _retire(self, record: InviteRecord) -> None:
        """Stop reading a finished invite, drop its KeyPackage and delete its
        mailboxes on the relays (retried on connect until every relay did)."""
        if record.current_state(now_ms()) == "expired" and record.state == "active":
            record.state = "expired"
        self.store.delete(NS_KEY_PACKAGES, record.key_package_ref)
        self._index_mailboxes()
        if not record.deleted:
            done = True
            for box in record.mailboxes:
                done = await self._delete_owned(box) and done
            record.deleted = done
        if record.blob and await self._delete_blob(record.blob[0]):
            record.blob = []  # a short link now names nothing
        self._save_invite(record)

    async def _delete_blob(self, box: Inbox) -> bool:
        """Delete the mailbox holding a short link's invite; True when gone
        (or when the relay predates ``DeleteMailbox``: its TTL, the invite's
        lifetime, removes it; the capabilities inside are dead already)."""
        try:
            await self._relay(box.relay_url).delete_mailbox(box.mailbox_id, box.read_seed)
        except BadFrame:
            return True
        except (RelayUnavailable, RemoteError):
            return False
        return True

    async def _delete_owned(self, box: Inbox) -> bool:
        """Kill a mailbox we own; True once its write capability is dead.

        First ``RotateWrite`` to a fresh key nobody holds: every relay has it,
        so the capability dies even on a relay that predates ``DeleteMailbox``
        (which answers that frame with a fatal ``BadFrame``).  Then
        ``DeleteMailbox`` with the read key, which only we hold: it also works
        when a link holder rotated the write key first (SPEC.md §7.7, §8.5)."""
        relay = self._relay(box.relay_url)
        revoked = False
        try:
            await relay.rotate_write(box.mailbox_id, box.write_seed, rng(32))
            revoked = True
        except UnknownMailbox:
            return True
        except (RelayUnavailable, RemoteError):
            pass  # e.g. BadSignature: someone holding the seed rotated it
        try:
            await relay.delete_mailbox(box.mailbox_id, box.read_seed)
            return True
        except (RelayUnavailable, RemoteError):
            return revoked

    async def _retire_finished_invites(self) -> None:
        now = now_ms()
        for record in self.invites():
            if record.current_state(now) == "active":
                continue
            if not record.deleted or record.blob:
                await self._retire(record)
            elif now - max(record.created_ms, record.expires_at_ms) > FORGET_AFTER_MS:
                self.store.delete(NS_INVITES, record.invite_id)  # the list stays short

    def _schedule_invite_expiry(self) -> None:
        """One timer for the next invite to expire: at expiry it is retired
        even if nobody ever uses it again."""
        if self._closing:
            return
        if self._invite_task is not None and not self._invite_task.done():
            self._invite_task.cancel()
        now = now_ms()
        pending = [r.expires_at_ms for r in self.invites() if r.current_state(now) == "active"]
        if not pending:
            return

        async def later() -> None:
            await asyncio.sleep(max(0.0, (min(pending) - now_ms()) / 1000) + 0.05)
            await self._retire_finished_invites()
            self._emit("invites", None)
            self._invite_task = None  # this task is done: do not cancel it
            self._schedule_invite_expiry()

        self._invite_task = asyncio.get_running_loop().create_task(later())
        self._tasks.add(self._invite_task)
        self._invite_task.add_done_callback(self._tasks.discard)

    # -- per-contact inboxes ---------------------------------------------------------------

    async def _contact_inboxes(self, contact: Contact) -> tuple[InboxAddress, ...]:
        """The inboxes we give ``contact`` alone, one per relay of ours:
        made (and subscribed) on first use, kept in step with our relays."""
        wanted = list(self.identity.relays)
        keep = [i for i in contact.my_inboxes if i.relay_url in wanted]
        drop = [i for i in contact.my_inboxes if i.relay_url not in wanted]
        have = {i.relay_url for i in keep}
        new = [Inbox(url, rng(32), rng(32), rng(32)) for url in wanted if url not in have]
        # every relay at once; one that is down now gets its inbox on
        # reconnect (subscribe re-creates it)
        results = await asyncio.gather(
            *(
                self._relay(box.relay_url).create_mailbox(
                    box.mailbox_id, box.read_seed, box.write_seed
                )
                for box in new
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, RemoteError):
                raise result
        if new or drop:
            # re-read: while the relays answered, a Profile may have updated
            # the record (its name); saving the stale copy would undo that
            contact = self.contact(contact.identity_key) or contact
            contact.my_inboxes = keep + new
            self._save_contact(contact)
            self._index_mailboxes()
            for box in new:
                await self._subscribe(self._mailboxes[box.mailbox_id])
            for box in drop:
                await self._delete_owned(box)
        return tuple(
            InboxAddress(i.relay_url, i.mailbox_id, i.write_seed) for i in contact.my_inboxes
        )

    async def _migrate_contacts(self) -> None:
        """Give every contact without a per-contact inbox one (a ``Profile``
        in our 1:1 conversation), so none still posts to the identity inbox."""
        for contact in self.contacts():
            if contact.my_inboxes or not contact.conversation:
                continue
            group = self.groups.get(contact.conversation)
            if group is None or not group.active:
                continue
            await self._send_profile(contact.conversation)

    async def _send_profile(self, conv_id: bytes) -> None:
        contact = next((c for c in self.contacts() if c.conversation == conv_id), None)
        conv = self.conversation(conv_id)
        inboxes: tuple[InboxAddress, ...] = ()
        if contact is not None and conv is not None and conv.kind == "direct":
            inboxes = await self._contact_inboxes(contact)
        with contextlib.suppress(EngineError):
            await self._send_app(conv_id, Profile(self.identity.name, inboxes), history=False)

    async def _after_connect_invites(self) -> None:
        """On connect: finish retiring invites and migrate old contacts."""
        try:
            await self._retire_finished_invites()
            await self._migrate_contacts()
        except (RelayUnavailable, RemoteError, EngineError):
            pass
        self._schedule_invite_expiry()


async def fetch_short_invite(
    link: str,
    now: int,
    proxy: str | None = None,
    timeouts: tuple[float, float] | None = None,
) -> Invite:
    """The invite a short link names: read from its relay over a connection
    of its own (through ``proxy`` if set), decrypted with the link's key and
    verified at ``now``.  A deleted blob means the invite is used up, revoked
    or expired.  EngineError with a message fit to show; InviteUnreachable
    when the relay cannot be reached or delivers nothing (try later).

    ``timeouts`` (connect, request seconds), as an engine's
    ``relay_timeouts``: the connection then fails at its first failed
    attempt (a relay that refuses connections fails at once), instead of
    waiting the default request timeout (20 s) for the relay to come back."""
    try:
        url, secret = parse_short_invite_link(link)
    except DecodeError as exc:
        raise EngineError(str(exc)) from None
    keys = invite_blob_keys(secret)
    envelope = b""
    for _ in range(INVITE_FETCH_ATTEMPTS):
        # a fresh connection each time: a lossy relay may drop one delivery
        envelope = await _read_invite_blob(url, keys, proxy, timeouts)
        if envelope:
            break
    if not envelope:
        raise InviteUnreachable(
            f"the invite's relay {url} did not deliver the invite; try again later"
        )
    try:
        return open_invite_blob(envelope, secret, now)
    except DecodeError as exc:
        raise EngineError(str(exc)) from None


async def _read_invite_blob(
    url: str, keys: InviteBlobKeys, proxy: str | None, timeouts: tuple[float, float] | None
) -> bytes:
    """The first envelope of the invite's mailbox, or b"" if none came in time."""
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def deliver(_url: str, mailbox_id: bytes, _seq: int, envelope: bytes) -> None:
        if mailbox_id == keys.mailbox_id and not got.done():
            got.set_result(envelope)

    if timeouts is None:
        client = RelayClient(url, deliver, proxy=proxy)
    else:
        connect, request = timeouts
        client = RelayClient(
            url,
            deliver,
            proxy=proxy,
            connect_timeout=connect,
            request_timeout=request,
            fail_fast=True,
        )
    client.start()
    try:
        try:
            await client.wait_connected()
            await client.subscribe(keys.mailbox_id, keys.read_seed, 0)
        except (UnknownMailbox, BadSignature, NotAuthorized):
            raise EngineError(_INVITE_GONE) from None
        except (RelayUnavailable, RemoteError) as exc:  # down, or refusing for now
            raise InviteUnreachable(f"the invite's relay cannot be reached: {exc}") from None
        try:
            return await asyncio.wait_for(got, INVITE_FETCH_TIMEOUT)
        except TimeoutError:
            return b""
    finally:
        await client.close()


async def read_invite_link(
    link: str,
    now: int,
    proxy: str | None = None,
    timeouts: tuple[float, float] | None = None,
) -> Invite:
    """The invite of a link in either form: a short link's stored invite
    (see :func:`fetch_short_invite`), or a long link (older versions) parsed
    and verified."""
    if is_short_invite_link(link):
        return await fetch_short_invite(link, now, proxy, timeouts)
    return parse_invite_link(link, now)
