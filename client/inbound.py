"""Receiving: unsealing, de-duplication, ordering, MLS processing, app messages."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable

from client.core import (
    KEY_PACKAGE_STOCK,
    EngineError,
    _history_entry,
    _kp_signed_by,
    _Mailbox,
    now_ms,
    payload_is_own,
)
from client.delivery import Delivery
from client.model import (
    NS_CURSORS,
    NS_GROUPS,
    NS_KEY_PACKAGES,
    NS_PEOPLE,
    NS_SEEN,
    NS_STATUS,
    Contact,
    ContactInbox,
    Conversation,
    MessageStatus,
    SenderTrack,
)
from client.relay_client import RelayUnavailable
from client.suites import keep_per_suite
from client.tree_welcome import fetch_tree
from protocol.app.envelope import Envelope, EnvelopeType, Reassembler
from protocol.app.group_meta import (
    ConversationKind,
    find_group_meta,
)
from protocol.app.messages import (
    AppMessage,
    Article,
    Disappearing,
    File,
    KeyPackages,
    Profile,
    Receipt,
    ReceiptKind,
    RelayMove,
    Text,
    new_receipts,
    receipt_witnesses,
)
from protocol.app.policy import SamizdatPolicy
from protocol.app.sealed import unseal
from protocol.app.tree_welcome import TreeWelcome
from protocol.errors import CryptoError, DecodeError, LocalError, RemoteError, SamizdatError
from protocol.mls.crypto import get_suite
from protocol.mls.errors import ReplayedMessage, WrongEpoch
from protocol.mls.events import (
    ApplicationMessageReceived,
    EpochAdvanced,
    GroupEvent,
    MemberAdded,
    MemberRemoved,
    PendingCommitDiscarded,
    ProposalReceived,
    RemovedFromGroup,
)
from protocol.mls.group import Group
from protocol.mls.messages import MLSMessage, PrivateMessage, PublicMessage, Remove
from protocol.mls.welcome import key_package_ref


class Inbound(Delivery):
    """Receiving: unsealing, de-duplication, ordering, MLS processing, app messages."""

    # -- receiving ----------------------------------------------------------------------

    async def _on_deliver(self, url: str, mailbox_id: bytes, seq: int, sealed: bytes) -> None:
        async with self._lock:
            try:
                await self._receive(url, mailbox_id, seq, sealed)
            finally:
                self.store.put(NS_CURSORS, mailbox_id, str(seq + 1).encode())
        mb = self._mailboxes.get(mailbox_id)
        if mb is not None and mb.conv_id is None:
            self._ack_later(url, mailbox_id, seq)  # inboxes are ours alone

    def _ack_later(self, url: str, mailbox_id: bytes, seq: int) -> None:
        """Acknowledge inbox messages in the background, one Ack per burst:
        a flood of an invite's mailbox must not cost a round trip per message
        ahead of the next delivery (SPEC.md §8.5)."""
        key = (url, mailbox_id)
        self._acks[key] = max(seq, self._acks.get(key, 0))
        if self._ack_task is not None and not self._ack_task.done():
            return

        async def run() -> None:
            while self._acks:
                (url_, mailbox_id_), up_to = self._acks.popitem()
                with contextlib.suppress(RelayUnavailable, RemoteError):
                    await self._relay(url_).ack(mailbox_id_, up_to)

        self._ack_task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(self._ack_task)
        self._ack_task.add_done_callback(self._tasks.discard)

    async def _receive(self, url: str, mailbox_id: bytes, seq: int, sealed: bytes) -> None:
        mb = self._mailboxes.get(mailbox_id)
        if mb is None:
            return
        try:
            piece = _unseal_any(mb, sealed)
            envelope = Envelope.from_bytes(piece)
        except (CryptoError, DecodeError) as exc:
            self._notice(
                mb.conv_id,
                f"relay {url} delivered a message that does not open (tampered or forged): {exc}",
                True,
            )
            return
        reassembler = self._reassemblers.setdefault(mailbox_id, Reassembler())
        try:
            complete = reassembler.add(envelope, now_ms())
        except RemoteError as exc:
            self._notice(mb.conv_id, f"a fragmented message was dropped: {exc}", True)
            return
        if complete is None:
            return
        # The same message arrives from every relay: handle the first complete
        # copy that is processed (a handshake held for the ordering relay is
        # not "seen" yet, so the orderer's copy still counts).
        kind, payload = complete
        digest = hashlib.sha256(bytes([kind]) + payload).digest()[:16]
        if self.store.get(NS_SEEN, digest) is not None:
            return
        if kind == EnvelopeType.WELCOME:
            self.store.put(NS_SEEN, digest, b"")
            if mb.conv_id is None:
                await self._on_inbox_welcome(mb, payload)
            return
        if kind == EnvelopeType.TREE_WELCOME:
            self.store.put(NS_SEEN, digest, b"")
            # a group add from a contact (an invite's 1:1 Welcome is always whole)
            if mb.conv_id is None and not mb.invite_id:
                await self._on_tree_welcome(payload)
            return
        if mb.conv_id is None:
            await self._on_inbox_mls(url, seq, payload, digest)
            return
        await self._on_mls(mb.conv_id, url, seq, payload, digest)

    async def _on_inbox_mls(self, url: str, seq: int, payload: bytes, digest: bytes) -> None:
        """A member re-sent an application message of one of our groups to
        our inbox because the group's relays did not deliver it (delivery
        retry, SPEC.md §8.11).  Only application messages are taken this
        way: handshakes are ordered by the group's ordering relay alone.
        The MLS layer authenticates it as usual (RFC 9420 §6.3)."""
        try:
            pm = MLSMessage.from_bytes(payload).private_message
        except DecodeError:
            return
        if pm is None or pm.content_type != 1:  # RFC 9420 §6.3.1: content_type is in clear
            return
        group = self.groups.get(pm.group_id)
        if group is None or not group.active:
            return
        await self._on_mls(pm.group_id, url, seq, payload, digest)

    async def _on_tree_welcome(self, payload: bytes) -> None:
        """A Welcome whose ratchet tree is a blob (:mod:`client.tree_welcome`)."""
        try:
            body = TreeWelcome.from_bytes(payload)
        except (DecodeError, LocalError) as exc:
            self._notice(None, f"an invitation could not be opened: {exc}", True)
            return
        await self._on_welcome(body.welcome, tree=body)

    async def _on_welcome(
        self,
        welcome: bytes,
        *,
        invite_ref: bytes | None = None,
        tree: TreeWelcome | None = None,
    ) -> bytes | None:
        """Join the group a Welcome opens; returns its id, or None if ignored.

        With ``invite_ref`` (a Welcome from an invite's mailbox) only a
        Welcome for that invite's KeyPackage into a 1:1 group of two with a
        new peer is taken, and the KeyPackage is kept: a multi-use invite's
        KeyPackage is a "last resort" one (RFC 9420 §16.8, SPEC.md §8.5).
        Nothing is stored before every check passed, and a Welcome never
        replaces a group we hold or held (RFC 9420 §12.4.3.1)."""
        try:
            msg = MLSMessage.from_bytes(welcome)
        except DecodeError as exc:
            if invite_ref is None:  # an invite's mailbox takes junk silently (flooding)
                self._notice(None, f"an invitation could not be opened: {exc}", True)
            return None
        if msg.welcome is None:
            return None
        bundle = None
        for entry in msg.welcome.secrets:
            if invite_ref is not None and entry.new_member != invite_ref:
                continue
            bundle = self._bundle_for(entry.new_member)
            if bundle is not None:
                break
        if bundle is None:
            return None  # not for any KeyPackage of ours (or already used)
        try:
            ratchet_tree = None
            if tree is not None:
                # only from relays we use or know as a contact's (SPEC §4.1.1)
                trusted = list(self.identity.relays) + [
                    i.relay_url for c in self.contacts() for i in c.inboxes
                ]
                ratchet_tree = await fetch_tree(tree, bundle, trusted, self._relay)
            # RFC 9420 §12.4.3.1: a tree given apart is checked against the
            # GroupContext's tree hash and the GroupInfo signature in join
            group = Group.join(msg.welcome, bundle, ratchet_tree=ratchet_tree)
        except SamizdatError as exc:
            if invite_ref is None:
                self._notice(None, f"an invitation could not be opened: {exc}", True)
            return None
        if invite_ref is None:
            # the Welcome opened with this KeyPackage: it is used, adopted or
            # not (RFC 9420 §16.8: a KeyPackage is for one Welcome)
            self.store.delete(
                NS_KEY_PACKAGES,
                key_package_ref(get_suite(bundle.key_package.cipher_suite), bundle.key_package),
            )
        meta = find_group_meta(group.extensions)
        if meta is None:
            self._notice(None, "ignored an invitation to a conversation without relays", True)
            return None
        conv_id = group.group_id
        if self._known_group_id(conv_id):
            # RFC 9420 §12.4.3.1: the group_id of a Welcome must be new to us.
            # Adopting it would replace a group we hold (or held) with
            # whatever tree and epoch the sender chose: anyone who ever was
            # a member knows the id.  A real re-invite is a new group.
            if invite_ref is None:
                known = self.conversation(conv_id)
                name = (known.name if known else "") or conv_id.hex()[:8]
                self._notice(
                    None,
                    f"refused an invitation that reuses the id of the conversation {name!r} "
                    "(forged, or a re-invite into the same group: ask for a new conversation)",
                    True,
                )
            return None
        others = [key for _, _, key in group.members() if key != self.identity.signature_pub]
        if invite_ref is not None:
            known_contact = self.contact(others[0]) if len(others) == 1 else None
            if (
                meta.kind != ConversationKind.DIRECT
                or len(others) != 1
                or (known_contact is not None and known_contact.conversation in self.groups)
            ):
                return None  # an invite opens a 1:1 conversation with someone new
        kind = "direct" if meta.kind == ConversationKind.DIRECT else "group"
        again = any(c.left and c.name == meta.name for c in self.conversations() if meta.name)
        conv = Conversation(conv_id, kind, meta.name, now_ms())
        conv.disappearing_ms = meta.disappearing_ms
        with self.store.transaction():
            self._hold_group(conv_id, group)
            self._save_conv(conv)
            self._save_group(conv_id)
        if kind == "direct" and len(others) == 1:
            contact = self.contact(others[0]) or Contact(others[0])
            contact.conversation = conv_id
            used = group.suite.suite_id
            contact.set_published(used, max(0, contact.published(used) - 1))
            self._save_contact(contact)
            self._notice(conv_id, "new contact accepted your invite")
        elif again:
            self._notice(
                conv_id,
                f"you were added to {meta.name} again: this is a new conversation; "
                "the one you left or were removed from keeps its history",
            )
        else:
            self._notice(conv_id, f"you were added to {meta.name or 'a group'}")
        self._index_mailboxes()
        for ref_ in meta.mailboxes:
            await self._subscribe(self._mailboxes[ref_.mailbox_id])
        await self._introduce(conv_id)
        self._emit("conversation", conv_id)
        return conv_id

    async def _on_mls(
        self, conv_id: bytes, url: str, seq: int, payload: bytes, digest: bytes
    ) -> None:
        group = self.groups.get(conv_id)
        if group is None:
            return
        try:
            msg = MLSMessage.from_bytes(payload)
        except DecodeError:
            self._notice(conv_id, f"relay {url} delivered a malformed message", True)
            return
        handshake = isinstance(msg.body, PublicMessage) or (
            isinstance(msg.body, PrivateMessage) and msg.body.content_type != 1
        )
        if handshake:
            meta = self._meta(conv_id)
            if url != self._ordering_url(meta, conv_id):
                held = self._held.setdefault(conv_id, [])
                # a relay replaying a held envelope must not grow the list
                if not any(h[0] == url and h[2] == payload for h in held):
                    held.append((url, seq, payload, time.monotonic()))
                self._schedule_hold_check()
                return
        # copies of this message held from other relays are now redundant
        if self._held.get(conv_id):
            self._held[conv_id] = [h for h in self._held[conv_id] if h[2] != payload]
        await self._process(conv_id, payload)

    def _on_undecryptable(self, conv_id: bytes, payload: bytes, exc: Exception) -> None:
        """An MLS message for our current epoch that does not decrypt.

        It came out of a sealed envelope, which only holders of the mailbox's
        write seed (members) can make; the relay cannot forge one.  So it was
        made by a member under other keys for this epoch: the member is on
        another branch of the group, i.e. a relay served different commits
        to different members (a fork, SPEC.md §2).  Report it, once per epoch.
        """
        group = self.groups[conv_id]
        body = MLSMessage.from_bytes(payload).body
        epoch = body.epoch if isinstance(body, PrivateMessage) else None
        if isinstance(body, PublicMessage):
            epoch = body.content.epoch
        if epoch != group.epoch:
            self._notice(conv_id, f"rejected a message: {exc}", True)
            return
        if epoch in self._forks.setdefault(conv_id, set()):
            return
        self._forks[conv_id].add(epoch)
        self._notice(
            conv_id,
            f"FORK DETECTED at epoch {epoch}: a member's messages do not decrypt under "
            "this epoch's keys, so members hold different group states. A relay ordered "
            "commits differently for different members. Messages from the other branch "
            "cannot be read until the group is re-established.",
            warning=True,
        )

    def forks(self, conv_id: bytes) -> set[int]:
        """Epochs at which a fork was detected in this conversation."""
        return set(self._forks.get(conv_id, set()))

    def _schedule_hold_check(self) -> None:
        if self._hold_task is None or self._hold_task.done():
            self._hold_task = asyncio.get_running_loop().create_task(self._check_holds())
            self._tasks.add(self._hold_task)
            self._hold_task.add_done_callback(self._tasks.discard)

    async def _check_holds(self) -> None:
        """A relay that stays connected but withholds handshakes other relays
        delivered would stall the conversation: after HOLD_TIMEOUT it is
        skipped as this conversation's orderer (a loud notice says so)."""
        while any(self._held.values()):
            await asyncio.sleep(self.hold_timeout / 4)
            now = time.monotonic()
            for conv_id, held in list(self._held.items()):
                if conv_id not in self.groups or not held:
                    continue
                if min(h[3] for h in held) > now - self.hold_timeout:
                    continue
                order = self._ordering_url(self._meta(conv_id), conv_id)
                self._suspect.setdefault(conv_id, set()).add(order)
                self._notice(
                    conv_id,
                    f"relay {order} withheld messages that other relays delivered; "
                    "ordering moved to the next relay",
                    warning=True,
                )
            await self._drain_held()

    async def _drain_held(self) -> None:
        async with self._lock:
            for conv_id, held in list(self._held.items()):
                if conv_id not in self.groups:
                    continue
                order = self._ordering_url(self._meta(conv_id), conv_id)
                mine = sorted((h[1], h[2]) for h in held if h[0] == order)
                self._held[conv_id] = [h for h in held if h[0] != order]
                for _, payload in mine:
                    digest = hashlib.sha256(bytes([EnvelopeType.MLS]) + payload).digest()[:16]
                    if self.store.get(NS_SEEN, digest) is None:
                        await self._process(conv_id, payload)

    async def _process(self, conv_id: bytes, payload: bytes) -> None:
        group = self.groups[conv_id]
        was_pending = group.has_pending_commit
        digest = hashlib.sha256(bytes([EnvelopeType.MLS]) + payload).digest()[:16]
        # The in-memory group and the store change together or not at all: if
        # anything fails before the new state is durably stored, go back.
        snapshot = group.snapshot()
        try:
            events = group.process(payload, now=int(time.time()))
        except (ReplayedMessage, WrongEpoch):
            return  # a duplicate, or a commit we already applied
        except CryptoError as exc:
            self._on_undecryptable(conv_id, payload, exc)
            return
        except SamizdatError as exc:
            # attributed when its sender data and signature verify (a member
            # refused by policy, or a commit whose confirmation tag is forged)
            sender = group.authenticated_sender(payload)
            who = "" if sender is None else f" from {self._leaf_name(group, sender)}"
            self._notice(conv_id, f"rejected a message{who}: {exc}", True)
            return
        except BaseException:
            group.restore(snapshot)  # a bug must not leave half a state either
            raise
        try:
            await self._persist(conv_id, group, events, was_pending, digest)
        except BaseException:
            if self._stored_group(conv_id) != group.to_bytes():
                group.restore(snapshot)
            raise

    def _stored_group(self, conv_id: bytes) -> bytes | None:
        try:
            return self.store.get(NS_GROUPS, conv_id)
        except Exception:  # the store is failing: nothing new can be in it
            return None

    async def _persist(
        self,
        conv_id: bytes,
        group: Group,
        events: list[GroupEvent],
        was_pending: bool,
        digest: bytes,
    ) -> None:
        """Store what ``group.process`` changed, then act on it."""
        own_commit = (
            was_pending
            and not group.has_pending_commit
            and any(isinstance(e, EpochAdvanced) for e in events)
            and not any(isinstance(e, PendingCommitDiscarded) for e in events)
            and conv_id in self._pending
            and payload_is_own(group, events)
        )
        if own_commit:
            await self._merged(conv_id, events)
            return
        # One durable transaction for everything this message changed.
        with self.store.transaction():
            self.store.put(NS_SEEN, digest, b"")
            self._save_group(conv_id)
            self._record_events(conv_id, events)
        self._index_mailboxes()
        if any(isinstance(e, EpochAdvanced) for e in events):
            await self._subscribe_new(conv_id)  # GroupMeta may list new mailboxes
        self._emit("conversation", conv_id)
        if any(isinstance(e, ApplicationMessageReceived) for e in events):
            self._schedule_receipts()
        if any(isinstance(e, EpochAdvanced) for e in events):
            self._schedule_flush()  # posts refused under a rotated write key go out now
        pending = self._pending.get(conv_id)
        if (
            any(isinstance(e, PendingCommitDiscarded) for e in events)
            and pending is not None
            and pending.redo is not None
            and not pending.retried
        ):
            pending.retried = True
            pending.welcomes.clear()
            pending.after.clear()
            await pending.redo()

    def _record_events(self, conv_id: bytes, events: list[GroupEvent]) -> None:
        """Turn group events into history, statuses and notes (no I/O but the
        store; callers wrap it in one transaction with the group state)."""
        conv = self.conversation(conv_id)
        if conv is None:
            return
        group = self.groups[conv_id]
        later: list[str] = []
        for event in events:
            if isinstance(event, ApplicationMessageReceived):
                self._on_app(conv, group, event)
            elif isinstance(event, MemberAdded):
                conv.note(f"{self.display_name(event.signature_key)} joined")
            elif isinstance(event, MemberRemoved):
                conv.note(f"{self.display_name(event.identity)} left or was removed")
                if event.identity not in conv.former_members:
                    conv.former_members.append(event.identity)
            elif isinstance(event, RemovedFromGroup):
                conv.left = True
                later.append(self._removal_claim(conv, group, event))
            elif isinstance(event, EpochAdvanced):
                meta = find_group_meta(group.extensions)
                if meta is not None:
                    conv.name = meta.name or conv.name
                    conv.disappearing_ms = meta.disappearing_ms
                if conv.kind == "direct":
                    self._check_direct_peer(conv, group)
            elif isinstance(event, ProposalReceived):
                self._maybe_commit_leave(conv_id, group, event)
        self._save_conv(conv)
        for text in later:
            self._notice(conv_id, text, True)

    def _removal_claim(self, conv: Conversation, group: Group, event: RemovedFromGroup) -> str:
        """How a commit removing us is shown.  A removed member cannot derive
        the new epoch, so it cannot check the commit's confirmation tag (RFC
        9420 §12.4.2); it has checked the framing and the committer's
        signature, so the removal is the committer's claim, attributed to
        them.  Nothing is deleted: conversation and history stay."""
        if event.committer is None:
            return "you were removed from this conversation"
        try:
            key = group.member_leaf(event.committer).signature_key
        except SamizdatError:
            return "you were removed from this conversation"
        conv.removed_by = key
        name = self.display_name(key)
        return (
            f"{name} says you were removed from this conversation (removed, per {name}). "
            f"The removal is signed by {name}; a removed member cannot confirm it with "
            "the others, who may still count you as a member. The history is kept."
        )

    def _check_direct_peer(self, conv: Conversation, group: Group) -> None:
        """In a 1:1 conversation the other member must keep the identity key
        we know.  If their leaf now carries another key (a re-install, or
        someone else), warn loudly and withdraw verification."""
        contact = next((c for c in self.contacts() if c.conversation == conv.group_id), None)
        if contact is None:
            return
        keys = [key for _, _, key in group.members() if key != self.identity.signature_pub]
        if len(keys) == 1 and keys[0] != contact.identity_key:
            name = contact.name or contact.identity_key.hex()[:8]
            contact.key_changed = True
            contact.verified = False
            self._save_contact(contact)
            self._notice(
                conv.group_id,
                f"THE SAFETY NUMBER WITH {name.upper()} CHANGED: their key is not the one "
                "you know. Verify it with them before trusting this conversation.",
                warning=True,
            )

    def _maybe_commit_leave(self, conv_id: bytes, group: Group, event: ProposalReceived) -> None:
        """A member asked to leave (a Remove of itself): the remaining member
        with the lowest leaf index commits it, so the request does not wait.
        A Remove of *another* member is not a leave: it is committed only if
        the policy allows it (an admin's, SPEC §8.3), by the admin with the
        lowest leaf index other than proposer and target, as a full removal
        (mailbox seeds rotated); otherwise it is ignored with a notice."""
        if event.proposal_type != 3 or event.sender_index is None:
            return
        cached = group.state.proposals.get(event.reference)
        if cached is None:
            return
        proposal = cached.content.proposal
        if proposal is None or not isinstance(proposal.body, Remove):
            return
        proposer, removed = event.sender_index, proposal.body.removed
        candidates = [i for i, _, _ in group.members() if i not in (proposer, removed)]
        op: Callable[[], Awaitable[None]]
        if removed != proposer:
            reason = SamizdatPolicy().check(group.state, cached.content.sender, proposal)
            if reason is not None:
                self._notice(
                    conv_id,
                    f"{self._leaf_name(group, proposer)} asked to remove "
                    f"{self._leaf_name(group, removed)}; ignored: {reason}",
                    True,
                )
                return
            admins = self.admins(conv_id)
            candidates = [i for i in candidates if group.member_leaf(i).signature_key in admins]
            op = self._removal(conv_id, group.member_leaf(removed).signature_key)
        else:

            async def op() -> None:
                result = self._commit(conv_id)
                await self._send_commit(conv_id, result.commit)

        if not candidates or min(candidates) != group.own_leaf_index:
            return

        async def leave_then_move() -> None:
            await self._run_commit_quietly(conv_id, op)
            # the leaver holds the mailbox seeds: move to fresh mailboxes
            if conv_id in self.groups and self.groups[conv_id].active:
                await self._run_commit_quietly(conv_id, self._replacement_op(conv_id))

        task = asyncio.get_running_loop().create_task(leave_then_move())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_commit_quietly(self, conv_id: bytes, op: Callable[[], Awaitable[None]]) -> None:
        try:
            await self._run_commit(conv_id, op)
        except SamizdatError as exc:
            self._notice(conv_id, f"could not commit a pending change: {exc}", True)

    def _on_app(self, conv: Conversation, group: Group, event: ApplicationMessageReceived) -> None:
        # The key that verified the message, of the member who held the leaf
        # in the message's epoch: a late message's leaf may be blank or
        # someone else's now (SPEC.md §4.4, §8.11).
        sender_key = event.sender_signature_key
        try:
            message = AppMessage.from_bytes(event.data)
        except DecodeError:
            conv.note(f"{self.display_name(sender_key)} sent a message this client cannot read")
            return
        self._track(conv, sender_key, message.sender_seq)
        body = message.body
        if isinstance(body, (Text, Article, File)):
            entry = _history_entry(message, sender_key, outgoing=False)
            self._append_history(conv.group_id, entry)
            conv.unread += 1
            self._want_receipt(conv.group_id, group, sender_key, message.message_id)
        elif isinstance(body, Receipt):
            for mid in body.message_ids:
                raw = self.store.get(NS_STATUS, mid)
                if raw is None:
                    continue
                status = MessageStatus.from_json(raw)
                target = (
                    status.delivered_to if body.kind == ReceiptKind.DELIVERED else status.read_by
                )
                if sender_key not in target:
                    target.append(sender_key)
                    self.store.put(NS_STATUS, mid, status.to_json())
                    self._emit("status", conv.group_id)
        elif isinstance(body, Profile):
            self._on_profile(conv, sender_key, body)
        elif isinstance(body, KeyPackages):
            contact = self.contact(sender_key)
            if contact is not None:
                valid = [kp for kp in body.key_packages if _kp_signed_by(kp, sender_key)]
                # kept by suite: a flood of one suite never evicts another's
                contact.key_packages = keep_per_suite(
                    contact.key_packages + valid, 2 * KEY_PACKAGE_STOCK
                )
                self._save_contact(contact)
        elif isinstance(body, Disappearing):
            conv.note(
                f"{self.display_name(sender_key)} set disappearing messages to "
                f"{body.timer_ms // 1000}s"
                if body.timer_ms
                else "disappearing messages off"
            )
        elif isinstance(body, RelayMove):
            conv.note(
                f"{self.display_name(sender_key)} moved from {body.old_relay_url} "
                f"to {body.new_relay_url}"
            )

    def _on_profile(self, conv: Conversation, sender_key: bytes, body: Profile) -> None:
        if body.inboxes:  # where a delivery retry can reach them (client/delivery.py)
            self._remember_inboxes(
                sender_key,
                [ContactInbox(i.relay_url, i.mailbox_id, i.write_seed) for i in body.inboxes],
            )
        contact = self.contact(sender_key)
        if contact is None:
            if conv.kind != "direct":
                # group members are not contacts; remember only how to name them
                self.store.put(NS_PEOPLE, sender_key, body.display_name.encode())
                return
            contact = Contact(sender_key, conversation=conv.group_id)
        # a name never decides identity: one another contact has is marked
        contact.name = self._distinct_name(sender_key, body.display_name)
        if body.inboxes:
            contact.inboxes = [
                ContactInbox(i.relay_url, i.mailbox_id, i.write_seed) for i in body.inboxes
            ]
        if conv.kind == "direct" and not conv.name:
            conv.name = contact.name
        self._save_contact(contact)

    def _track(self, conv: Conversation, sender: bytes, seq: int) -> None:
        track = conv.track(sender)
        track.heard_at = self.clock()  # the delivery watch: who is online
        if seq in track.missing:
            track.missing.remove(seq)
        elif seq > track.max_seq:
            gap = range(track.max_seq + 1, seq)
            if len(gap) > 10_000:
                conv.note(f"{self.display_name(sender)} skipped {len(gap)} messages")
            elif gap:
                had_unreported = any(s > track.reported for s in track.missing)
                track.missing.extend(gap)
                self._gap_seen(conv.group_id, track, had_unreported)
            track.max_seq = seq
        conv.set_track(sender, track)

    def missing(self, conv: Conversation) -> dict[bytes, int]:
        """Per sender, how many messages are known to be missing."""
        out = {}
        for key_hex, raw in conv.senders.items():
            track = SenderTrack(**raw)
            if track.missing:
                out[bytes.fromhex(key_hex)] = len(track.missing)
        return out

    def _schedule_flush(self) -> None:
        task = asyncio.get_running_loop().create_task(self.flush_outbox())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _schedule_receipts(self, delay: float = 0.3) -> None:
        """Send delivery receipts once a burst of deliveries has passed, one
        receipt message per conversation (not one per message)."""
        if self._receipt_task is not None and not self._receipt_task.done():
            return

        async def later() -> None:
            await asyncio.sleep(delay)
            await self._flush_receipts()

        self._receipt_task = asyncio.get_running_loop().create_task(later())
        self._tasks.add(self._receipt_task)
        self._receipt_task.add_done_callback(self._tasks.discard)

    def _want_receipt(self, conv_id: bytes, group: Group, sender: bytes, message_id: bytes) -> None:
        """Queue a delivered receipt if we are one of the message's expected
        witnesses: every member in groups of up to 64 others, a sample of 16
        above (``receipt_witnesses``), so traffic stays O(n) per message."""
        others = [key for _, _, key in group.members() if key != sender]
        if self.identity.signature_pub in receipt_witnesses(message_id, others):
            self._receipts.setdefault(conv_id, []).append(message_id)

    async def _flush_receipts(self) -> None:
        pending, self._receipts = self._receipts, {}
        for conv_id, ids in pending.items():
            group = self.groups.get(conv_id)
            if group is None or not group.active:
                continue
            for body in new_receipts(ReceiptKind.DELIVERED, ids):
                with contextlib.suppress(EngineError):
                    await self._send_app(conv_id, body, history=False)


def _unseal_any(mb: _Mailbox, sealed: bytes) -> bytes:
    """Open with the mailbox's current seal key, or one from before a rotation."""
    for key in (mb.key, *mb.old_keys):
        try:
            return unseal(key, mb.mailbox_id, sealed)
        except CryptoError:
            continue
    raise CryptoError("sealed envelope does not open with this mailbox's keys")
