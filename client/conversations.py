"""Conversations and relays: creating groups, membership and relay changes, commits."""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any

from client.core import (
    CAPABILITIES,
    COMMIT_TIMEOUT,
    MAX_CONVERSATION_RELAYS,
    REQUIRED,
    EngineError,
    _PendingOp,
    now_ms,
    rng,
)
from client.model import (
    NS_CURSORS,
    Contact,
    ContactInbox,
    Conversation,
    Inbox,
)
from client.outbound import Outbound
from client.relay_client import RelayUnavailable
from client.suites import DEFAULT_SUITE, check_suite, describe_suite, find_key_package
from client.tree_welcome import TREE_BLOB_THRESHOLD, tree_blob_wanted, tree_welcomes, upload_tree
from protocol.app.envelope import EnvelopeType
from protocol.app.group_meta import (
    ConversationKind,
    GroupMeta,
    MailboxRef,
    find_group_meta,
    meta_extension,
    new_mailbox_ref,
)
from protocol.app.messages import (
    Disappearing,
    RelayMove,
)
from protocol.errors import RemoteError
from protocol.mls.events import (
    GroupEvent,
)
from protocol.mls.group import CommitResult, Group


class Conversations(Outbound):
    """Conversations and relays: creating groups, membership and relay changes, commits."""

    #: repeated tree bytes above which an add posts the tree once (client.tree_welcome)
    tree_blob_threshold = TREE_BLOB_THRESHOLD

    # -- conversations ------------------------------------------------------------------

    async def _create_conversation(
        self, name: str, kind: ConversationKind, relays: list[str], suite: int = DEFAULT_SUITE
    ) -> Conversation:
        """A new conversation: an MLS group of ``suite`` (for its whole life,
        SPEC.md §4.1.1) with us alone in it, on mailboxes on ``relays``."""
        check_suite(suite)
        if not relays:
            raise EngineError("no relays configured")
        refs = tuple(new_mailbox_ref(url, rng) for url in relays)
        await self._create_mailboxes_best_effort(refs)
        # SPEC §8.3: the creator of a group is its first admin; in a direct
        # conversation both members are admins by rule, so none are listed.
        admins = (self.identity.signature_pub,) if kind == ConversationKind.GROUP else ()
        meta = GroupMeta(name, refs, 0, kind, admins)
        group_id = rng(16)
        group = Group.create(
            suite,
            group_id,
            self.signer,
            rng,
            int(time.time()),
            extensions=(meta_extension(meta), REQUIRED),
            capabilities=CAPABILITIES,
        )
        self._hold_group(group_id, group)
        conv = Conversation(
            group_id, "direct" if kind == ConversationKind.DIRECT else "group", name, now_ms()
        )
        self._save_conv(conv)
        self._save_group(group_id)
        self._index_mailboxes()
        for ref in refs:
            await self._subscribe(self._mailboxes[ref.mailbox_id])
        return conv

    async def _create_mailboxes_best_effort(self, refs: Iterable[MailboxRef]) -> None:
        refs = list(refs)
        # every relay at once (each creation is a connection of its own)
        results = await asyncio.gather(
            *(
                self._relay(ref.relay_url).create_mailbox(
                    ref.mailbox_id, ref.read_seed, ref.write_seed, shared=True
                )
                for ref in refs
            ),
            return_exceptions=True,
        )
        created = 0
        errors = []
        for ref, result in zip(refs, results, strict=True):
            if isinstance(result, RemoteError):  # RelayUnavailable too
                errors.append(f"{ref.relay_url}: {result}")
            elif isinstance(result, BaseException):
                raise result
            else:
                created += 1
        if not created:
            raise EngineError("no relay could create a mailbox: " + "; ".join(errors))
        for err in errors:
            self._notice(None, f"relay unavailable while creating a mailbox ({err})", True)

    async def create_group(self, name: str, suite: int = DEFAULT_SUITE) -> Conversation:
        """A new group in cipher suite ``suite`` (classic by default; a
        post-quantum one with ``client.suites.PQ_DEFAULT_SUITE``)."""
        return await self._create_conversation(
            name, ConversationKind.GROUP, self.identity.relays[:MAX_CONVERSATION_RELAYS], suite
        )

    def conversation_suite(self, conv_id: bytes) -> int:
        """The cipher suite of a conversation's group."""
        if conv_id not in self.groups:
            raise EngineError("unknown conversation")
        return self.groups[conv_id].suite.suite_id

    async def add_members(self, conv_id: bytes, contacts: list[Contact]) -> None:
        self._require_admin(conv_id, "add members")
        conv = self.conversation(conv_id)
        for contact in contacts:
            if conv is not None and contact.identity_key in conv.former_members:
                raise EngineError(
                    f"{contact.name or contact.identity_key.hex()[:8]} was a member of this "
                    "conversation before and cannot rejoin the same group; start a new one"
                )
        # Every joiner needs a KeyPackage of the group's suite (RFC 9420
        # §12.1.1): all are found before any is taken, so a refusal consumes
        # nothing; there is no silent downgrade to another suite.
        suite = self.conversation_suite(conv_id)
        picks = []
        for contact in contacts:
            who = contact.name or contact.identity_key.hex()[:8]
            if not contact.key_packages:
                raise EngineError(f"no KeyPackage of {who} yet: sync with them first")
            index = find_key_package(contact.key_packages, suite)
            if index is None:
                raise EngineError(
                    f"{who} has no KeyPackage for this conversation's cipher suite "
                    f"{describe_suite(suite)}: their client does not offer it or has not "
                    "synced with you since; they cannot be added to this group"
                )
            picks.append(index)
        items = []
        for contact, index in zip(contacts, picks, strict=True):
            items.append((contact.key_packages.pop(index), contact.inboxes))
            self._save_contact(contact)
        await self._add_members(conv_id, items)

    async def _add_members(
        self, conv_id: bytes, items: list[tuple[bytes, list[ContactInbox]]]
    ) -> None:
        async def op() -> None:
            kps = [kp for kp, _ in items]
            group = self.groups[conv_id]
            lean = tree_blob_wanted(group, kps, self.tree_blob_threshold)
            result = self._commit(conv_id, add=kps, welcome_tree=not lean)
            assert result.welcome is not None
            pending = self._pending.setdefault(conv_id, _PendingOp(None))
            if not lean:
                pending.welcomes = [(result.welcome, inboxes) for _, inboxes in items]
                await self._send_commit(conv_id, result.commit)
                return
            # the tree goes once, as a blob, before the commit (SPEC §4.1.1)
            try:
                relays = ((url, self._relay(url)) for url in self.identity.relays)
                refs, digest, errors = await upload_tree(group, result, relays)
            except (EngineError, RelayUnavailable):
                group.clear_pending_commit()
                raise
            for err in errors:
                self._notice(conv_id, f"relay did not take the group's tree ({err})", True)
            posts = tree_welcomes(group.suite, result, items, refs, digest)

            async def post_welcomes() -> None:
                for body, inboxes in posts:
                    await self._post_to_inboxes(
                        body, inboxes, conv_id, kind=EnvelopeType.TREE_WELCOME
                    )

            pending.after.append(post_welcomes)
            await self._send_commit(conv_id, result.commit)

        await self._run_commit(conv_id, op)

    async def remove_member(self, conv_id: bytes, identity_key: bytes) -> None:
        self._require_admin(conv_id, "remove other members")
        await self._run_commit(conv_id, self._removal(conv_id, identity_key))
        await self._run_commit(conv_id, self._replacement_op(conv_id))

    def _removal(self, conv_id: bytes, identity_key: bytes) -> Callable[[], Awaitable[None]]:
        """The commit-building op that removes ``identity_key`` (an admin's)."""

        async def op() -> None:
            group = self.groups[conv_id]
            leaf = next((i for i, _, key in group.members() if key == identity_key), None)
            if leaf is None:
                raise EngineError("not a member of this conversation")
            meta = find_group_meta(group.extensions)
            assert meta is not None
            # The mailboxes move in a commit of their own, in the next epoch
            # (_replacement_op): new seeds in this one would reach the removed
            # member.  A removed admin is no longer listed.
            extensions = None
            if identity_key in meta.admins:
                admins = tuple(k for k in meta.admins if k != identity_key)
                extensions = (meta_extension(replace(meta, admins=admins)), REQUIRED)
            result = self._commit(conv_id, remove=[leaf], extensions=extensions)
            await self._send_commit(conv_id, result.commit)

        return op

    def _replacement_op(self, conv_id: bytes) -> Callable[[], Awaitable[None]]:
        """The commit that moves a group to fresh mailboxes after a removal.

        A removed member holds the old mailbox seeds: it could go on reading
        the mailboxes (the traffic pattern), filling them, and acking.  So
        every mailbox is replaced by a fresh one (new id and seeds) on the
        same relay, created there first (SPEC.md §8.3).  This must be a commit
        of its own, in the epoch *after* the removal: the removing commit is
        encrypted under the old epoch's handshake keys, which the removed
        member holds (RFC 9420 §6.3.1), so new seeds in it would leak; the
        next epoch's secrets are encrypted only to the remaining members
        (RFC 9420 §12.4.2)."""

        async def op() -> None:
            meta = self._meta(conv_id)
            fresh = tuple(new_mailbox_ref(ref.relay_url, rng) for ref in meta.mailboxes)
            await self._create_mailboxes_best_effort(fresh)
            new_meta = replace(meta, mailboxes=fresh)
            result = self._commit(conv_id, extensions=(meta_extension(new_meta), REQUIRED))
            pending = self._pending.setdefault(conv_id, _PendingOp(None))
            pending.after.append(lambda: self._retire_mailboxes(meta.mailboxes))
            await self._send_commit(conv_id, result.commit)

        return op

    async def _retire_mailboxes(self, refs: Iterable[MailboxRef]) -> None:
        """After a removal merged: rotate the abandoned mailboxes' write keys
        to a seed nobody keeps, so nobody (the removed member included) can
        post there any more; they expire by TTL."""
        for ref in refs:
            with contextlib.suppress(RelayUnavailable, RemoteError):
                await self._relay(ref.relay_url).rotate_write(
                    ref.mailbox_id, ref.write_seed, rng(32)
                )

    async def leave(self, conv_id: bytes) -> None:
        """Ask the others to remove us (MLS has no self-removal commit) and
        stop using the conversation here."""
        from protocol.mls.messages import Proposal, Remove

        group = self.groups[conv_id]
        message = group.propose(Proposal.of(Remove(group.own_leaf_index)), rng)
        await self._post_mls(conv_id, message, b"")
        conv = self.conversation(conv_id)
        if conv is not None:
            conv.left = True
            self._save_conv(conv)

    async def set_disappearing(self, conv_id: bytes, timer_ms: int) -> None:
        async def op() -> None:
            group = self.groups[conv_id]
            meta = find_group_meta(group.extensions)
            assert meta is not None
            new_meta = replace(meta, disappearing_ms=timer_ms)
            result = self._commit(conv_id, extensions=(meta_extension(new_meta), REQUIRED))
            await self._send_commit(conv_id, result.commit)

        await self._run_commit(conv_id, op)
        await self._send_app(conv_id, Disappearing(timer_ms), history=False)

    async def set_admin(self, conv_id: bytes, identity_key: bytes, admin: bool = True) -> None:
        """Make a member an admin of a group, or stop them being one (admins only)."""
        self._require_admin(conv_id, "change who the admins are")
        if identity_key not in self.members(conv_id):
            raise EngineError("not a member of this conversation")

        async def op() -> None:
            meta = self._meta(conv_id)
            if meta.kind != ConversationKind.GROUP:
                raise EngineError("both members of a direct conversation are admins")
            # a group that lists nobody (made before admins existed) starts
            # its list with every current admin, i.e. every member
            listed = meta.admins or tuple(self.admins(conv_id))
            admins = tuple(k for k in listed if k != identity_key)
            if admin:
                admins += (identity_key,)
            if not admins:
                raise EngineError("a group keeps at least one admin")
            new_meta = replace(meta, admins=admins)
            result = self._commit(conv_id, extensions=(meta_extension(new_meta), REQUIRED))
            await self._send_commit(conv_id, result.commit)

        await self._run_commit(conv_id, op)

    def _require_admin(self, conv_id: bytes, what: str) -> None:
        """Fail early for what the others would refuse (SPEC §8.3)."""
        if conv_id not in self.groups:
            raise EngineError("unknown conversation")
        if not self.is_admin(conv_id):
            raise EngineError(f"only admins of this conversation may {what}")

    def _commit(self, conv_id: bytes, **kwargs: Any) -> CommitResult:
        """Build a commit; cached proposals the group had to leave out
        (invalid, refused by policy, or in conflict with ours) are shown."""
        group = self.groups[conv_id]
        result = group.commit(rng, int(time.time()), **kwargs)
        for dropped in group.last_dropped:
            self._notice(
                conv_id,
                f"a pending proposal from {self._leaf_name(group, dropped.sender_index)} "
                f"was left out of our commit: {dropped.reason}",
            )
        return result

    async def _run_commit(self, conv_id: bytes, op: Callable[[], Awaitable[None]]) -> None:
        """Run a commit-building ``op`` and wait until the commit is merged
        (redoing it once if a competing commit wins)."""
        if conv_id not in self.groups:
            raise EngineError("unknown conversation")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = _PendingOp(op, done=future)
        self._pending[conv_id] = pending
        await op()
        group = self.groups[conv_id]
        if len(group.members()) == 1 or self._only_member_left(conv_id):
            # nobody else can commit concurrently: merge at once
            await self._merged(conv_id, group.merge_pending_commit())
        try:
            await asyncio.wait_for(future, COMMIT_TIMEOUT)
        except TimeoutError:
            raise EngineError(
                "the conversation's ordering relay did not echo our commit in time; "
                "it stays queued and will apply when relays are reachable"
            ) from None

    async def _merged(self, conv_id: bytes, events: list[GroupEvent]) -> None:
        """Our pending commit took effect."""
        with self.store.transaction():
            self._save_group(conv_id)
            self._record_events(conv_id, events)
        pending = self._pending.pop(conv_id, None)
        self._index_mailboxes()
        self._emit("conversation", conv_id)
        if pending is not None:
            for welcome, inboxes in pending.welcomes:
                await self._post_to_inboxes(welcome, inboxes, conv_id)
            for action in pending.after:
                await action()
            if pending.done is not None and not pending.done.done():
                pending.done.set_result(None)
        for mb in [m for m in self._mailboxes.values() if m.conv_id == conv_id]:
            await self._subscribe(mb)

    # -- relays -------------------------------------------------------------------------------

    async def add_relay(self, url: str) -> None:
        url = url.rstrip("/")
        if url in self.identity.relays:
            raise EngineError(f"{url} is already one of your relays")
        inbox = Inbox(url, rng(32), rng(32), rng(32))
        await self._relay(url).create_mailbox(inbox.mailbox_id, inbox.read_seed, inbox.write_seed)
        self.identity.relays.append(url)
        self.identity.inboxes.append(inbox)
        self.save_identity()
        self.store.put(NS_CURSORS, b"created:" + inbox.mailbox_id, b"1")
        self._index_mailboxes()
        await self._subscribe(self._mailboxes[inbox.mailbox_id])
        await self._announce_inboxes()

    async def remove_relay(self, url: str) -> None:
        await self.move_relay(url, None)

    async def move_relay(self, old: str, new: str | None) -> None:
        """Re-home our inbox and every conversation from ``old`` to ``new``
        (or just drop ``old``); every contact and group is told over all the
        relays still in use, so it works when ``old`` is already gone."""
        old, new = old.rstrip("/"), new.rstrip("/") if new else None
        if old not in self.identity.relays:
            raise EngineError(f"{old} is not one of your relays")
        if new is not None and new not in self.identity.relays:
            await self.add_relay(new)
        self.identity.relays = [u for u in self.identity.relays if u != old]
        if not self.identity.relays:
            raise EngineError("you would have no relay left; add one first")
        self.identity.inboxes = [i for i in self.identity.inboxes if i.relay_url != old]
        self.save_identity()
        await self._announce_inboxes(old, new)
        for conv_id, group in list(self.groups.items()):
            meta = find_group_meta(group.extensions)
            if meta is None or not group.active or old not in meta.relay_urls:
                continue
            if not self.is_admin(conv_id):
                self._notice(
                    conv_id,
                    f"only admins can move this conversation off {old}; ask one of them",
                    True,
                )
                continue
            kept = [r for r in meta.mailboxes if r.relay_url != old]
            added: list[MailboxRef] = []
            if new is not None and new not in meta.relay_urls:
                ref = new_mailbox_ref(new, rng)
                await self._create_mailboxes([ref])
                added.append(ref)
            if not kept and not added:
                self._notice(conv_id, f"cannot move off {old}: it is the only relay", True)
                continue
            position = [r.relay_url for r in meta.mailboxes].index(old)
            mailboxes = kept[:position] + added + kept[position:]
            new_meta = replace(meta, mailboxes=tuple(mailboxes))

            async def op(conv_id: bytes = conv_id, new_meta: GroupMeta = new_meta) -> None:
                result = self._commit(conv_id, extensions=(meta_extension(new_meta), REQUIRED))
                await self._send_commit(conv_id, result.commit)

            try:
                await self._run_commit(conv_id, op)
            except EngineError as exc:
                self._notice(conv_id, f"relay move pending: {exc}", True)
            if new is not None:
                with contextlib.suppress(EngineError):
                    await self._send_app(conv_id, RelayMove(old, new), history=False)

    async def _announce_inboxes(self, old: str | None = None, new: str | None = None) -> None:
        """Tell every contact its inboxes on our current relays (a ``Profile``
        each: every contact has inboxes of its own, SPEC.md §8.5)."""
        for contact in self.contacts():
            if contact.conversation and contact.conversation in self.groups:
                await self._send_profile(contact.conversation)

    @abstractmethod
    async def _send_profile(self, conv_id: bytes) -> None:
        """Send our Profile to a conversation (:mod:`client.invites`)."""
