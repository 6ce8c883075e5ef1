"""The MLS group: the public API the client lives on (RFC 9420 §11, §12).

Theory of operation
-------------------
A :class:`Group` holds one :class:`~protocol.mls.group_state.GroupState` and
never edits it in place while processing a message: commit processing builds
a complete successor state from copies and assigns it only after every check
of §12.4.2 has passed, including the confirmation tag.  Any exception leaves
``group.state`` exactly as it was (the only mutation that precedes
validation, consuming a ratchet key, happens in a copy too).  A caller that
persists the state undoes an *accepted* message it could not store with
:meth:`Group.snapshot` / :meth:`Group.restore`.

Committing is two-step, because Samizdat orders commits through a relay: the
committer builds its commit and the successor state (:meth:`Group.commit`),
sends the commit, and only switches epoch when the commit comes back in order
(:meth:`Group.process` recognises its own bytes) or the caller calls
:meth:`Group.merge_pending_commit`.  A competing commit that arrives first
wins and voids the pending one.

Handshake messages are PrivateMessages by default so that relays cannot see
membership changes; PublicMessage is accepted and can be produced.

Every function that needs randomness or time takes ``rng`` / ``now``.

Layout: this module holds :class:`Group` and builds commits
(:meth:`Group.commit`); processing a received commit and validating a
received proposal is :mod:`protocol.mls.commit_process`; joining (Welcome,
external commit) and the messages of non-members are
:mod:`protocol.mls.group_join`; what all of them share to build an epoch's
state, GroupInfo and Welcome is :mod:`protocol.mls.group_epoch`.  None of
those imports this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.errors import DecodeError, RemoteError
from protocol.mls import tree_math as tm
from protocol.mls.commit_process import cache_proposal, external_sender_key, process_commit
from protocol.mls.crypto import CipherSuite, Rng, get_suite
from protocol.mls.errors import InvalidCommit, InvalidMessage, StateError, UnknownMember, WrongEpoch
from protocol.mls.events import GroupEvent, PendingCommitDiscarded, ProposalDropped
from protocol.mls.framing import (
    content_signature,
    proposal_ref,
    protect_private,
    protect_public,
    sign_content,
    unprotect_private,
    unprotect_public,
    verify_content_signature,
)
from protocol.mls.group_epoch import (
    CommitOutcome,
    PskStore,
    app_event,
    build_welcome,
    commit_events,
    epoch_state,
    expect_body,
    leaf_builder,
    leaf_identity,
    own_content,
    prune_private_keys,
    psk_value,
    required_psk_secret,
    resolved_proposal,
    signed_group_info,
    successor_state,
)
from protocol.mls.group_join import (
    external_proposal,
    join_external_state,
    join_state,
    new_member_proposal,
)
from protocol.mls.group_state import EpochMember, GroupState, PastEpoch
from protocol.mls.key_package import (
    KeyPackageBundle,
    SigningIdentity,
    create_key_package,
    sign_leaf_node,
)
from protocol.mls.key_schedule import (
    confirmation_tag,
    confirmed_transcript_hash,
    derive_epoch,
    epoch_from_epoch_secret,
    interim_transcript_hash,
    mls_exporter,
)
from protocol.mls.messages import (
    Add,
    AuthenticatedContent,
    Commit,
    ContentType,
    FramedContentAuthData,
    GroupContext,
    GroupContextExtensions,
    GroupInfo,
    MLSMessage,
    PreSharedKey,
    PreSharedKeyID,
    PrivateMessage,
    Proposal,
    ProposalOrRef,
    PublicMessage,
    Remove,
    Sender,
    SenderType,
    Update,
    Welcome,
    WireFormat,
    confirmed_transcript_hash_input,
)
from protocol.mls.policy import AllowAll, ProposalPolicy
from protocol.mls.proposals import ResolvedProposal
from protocol.mls.proposals import apply_proposals as _apply_proposals
from protocol.mls.ratchet_tree import RatchetTree
from protocol.mls.selection import ProposalSelection, select_proposals
from protocol.mls.tree_structs import (
    Capabilities,
    Extension,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    Node,
    ProtocolVersion,
    encode_ratchet_tree,
)
from protocol.mls.treekem import create_path

__all__ = [
    "CommitResult",
    "Group",
    "GroupSnapshot",
    "PskStore",
    "external_proposal",
    "new_member_proposal",
]


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What :meth:`Group.commit` produces; nothing is applied yet."""

    commit: bytes  # MLSMessage to send to the group
    welcome: bytes | None  # MLSMessage(Welcome) for the added members
    group_info: bytes  # MLSMessage(GroupInfo) of the new epoch, for external joins
    ratchet_tree: bytes  # ratchet_tree extension data of the new epoch
    dropped: tuple[ProposalDropped, ...] = ()  # cached proposals left out (SPEC §4.4)


@dataclass(slots=True)
class _PendingCommit:
    message: bytes
    state: GroupState
    events: list[GroupEvent]


@dataclass(frozen=True, slots=True)
class GroupSnapshot:
    """An in-memory checkpoint of a :class:`Group` (see :meth:`Group.snapshot`)."""

    state: GroupState
    pending: _PendingCommit | None


class Group:
    """One member's view of one MLS group."""

    def __init__(self, state: GroupState, psks: PskStore | None = None) -> None:
        self.state = state
        self.psks = psks or PskStore()
        self._pending: _PendingCommit | None = None
        # The application's rules over proposals (protocol/mls/policy.py); not serialized.
        self.policy: ProposalPolicy = AllowAll()
        # Cached proposals the last commit() left out, also in CommitResult.dropped.
        self.last_dropped: list[ProposalDropped] = []

    # -- creation ---------------------------------------------------------------

    @classmethod
    def create(
        cls,
        suite_id: int,
        group_id: bytes,
        identity: SigningIdentity,
        rng: Rng,
        now: int,
        *,
        extensions: tuple[Extension, ...] = (),
        capabilities: Capabilities | None = None,
        psks: PskStore | None = None,
    ) -> Group:
        """A one-member group (§11): random epoch secret, empty transcript.

        ``capabilities`` go into the creator's leaf (default: this suite,
        basic credentials, no extra extensions)."""
        suite = get_suite(suite_id)
        bundle = create_key_package(suite, identity, now, rng, capabilities=capabilities)
        leaf = bundle.key_package.leaf_node
        tree = RatchetTree.single(suite, leaf)
        context = GroupContext(
            ProtocolVersion.MLS10, suite_id, group_id, 0, tree.tree_hash(), b"", extensions
        )
        secrets = epoch_from_epoch_secret(suite, rng(suite.hash_len))
        tag = confirmation_tag(suite, secrets.confirmation_key, b"")
        state = epoch_state(
            suite,
            context,
            tree,
            0,
            {0: bundle.encryption_priv},
            identity.signature_priv,
            secrets,
            tag,
            interim_transcript_hash(suite, b"", tag),
        )
        return cls(state, psks)

    @classmethod
    def join(
        cls,
        welcome: bytes | Welcome,
        bundle: KeyPackageBundle,
        *,
        ratchet_tree: bytes | Sequence[Node | None] | None = None,
        psks: PskStore | None = None,
    ) -> Group:
        """Join from a Welcome (§12.4.3.1).  The tree comes from the GroupInfo's
        ``ratchet_tree`` extension or from ``ratchet_tree``."""
        psks = psks or PskStore()
        return cls(join_state(welcome, bundle, ratchet_tree=ratchet_tree, psks=psks), psks)

    @classmethod
    def join_external(
        cls,
        group_info: bytes | GroupInfo,
        identity: SigningIdentity,
        rng: Rng,
        now: int,
        *,
        ratchet_tree: bytes | Sequence[Node | None] | None = None,
        remove_prior: int | None = None,
        authenticated_data: bytes = b"",
        psks: PskStore | None = None,
    ) -> tuple[Group, bytes]:
        """Join by external commit (§12.4.3.2).  Returns the group, already in
        the new epoch, and the commit (a PublicMessage) to send."""
        psks = psks or PskStore()
        state, message = join_external_state(
            group_info,
            identity,
            rng,
            now,
            ratchet_tree=ratchet_tree,
            remove_prior=remove_prior,
            authenticated_data=authenticated_data,
            psks=psks,
        )
        return cls(state, psks), message

    # -- accessors --------------------------------------------------------------------

    @property
    def suite(self) -> CipherSuite:
        return self.state.suite

    @property
    def group_id(self) -> bytes:
        return self.state.context.group_id

    @property
    def epoch(self) -> int:
        return self.state.context.epoch

    @property
    def own_leaf_index(self) -> int:
        return self.state.own_leaf

    @property
    def epoch_authenticator(self) -> bytes:
        return self.state.epoch_authenticator

    @property
    def extensions(self) -> tuple[Extension, ...]:
        return self.state.context.extensions

    @property
    def active(self) -> bool:
        return self.state.active

    @property
    def has_pending_commit(self) -> bool:
        return self._pending is not None

    def members(self) -> list[tuple[int, bytes, bytes]]:
        """(leaf index, credential identity, signature key) of each member."""
        return [
            (i, leaf_identity(leaf), leaf.signature_key) for i, leaf in self.state.tree.members()
        ]

    def member_leaf(self, leaf_index: int) -> LeafNode:
        return self.state.tree.member_leaf(leaf_index)

    def export_secret(self, label: str, context: bytes, length: int) -> bytes:
        """``MLS-Exporter(label, context, length)`` of the current epoch (§8.5)."""
        return mls_exporter(self.suite, self.state.exporter_secret, label, context, length)

    def pending_export_secret(self, label: str, context: bytes, length: int) -> bytes:
        """``MLS-Exporter`` of the epoch our pending commit creates (§8.5): for
        what joiners of that commit need before it is merged, such as the key
        of the ratchet tree posted apart from the Welcome (SPEC §4.1.1)."""
        if self._pending is None:
            raise StateError("no pending commit")
        state = self._pending.state
        return mls_exporter(self.suite, state.exporter_secret, label, context, length)

    def ratchet_tree(self) -> bytes:
        """The ``ratchet_tree`` extension data for the current epoch."""
        return encode_ratchet_tree(self.state.tree.to_nodes())

    def group_info(self, *, with_tree: bool = True, external_pub: bool = True) -> bytes:
        """A signed GroupInfo for the current epoch (for external joins)."""
        state = self.state
        return MLSMessage.of(signed_group_info(state, with_tree, external_pub)).to_bytes()

    def to_bytes(self) -> bytes:
        """Serialize the group state (for an encrypted store; see SPEC.md)."""
        return self.state.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes, psks: PskStore | None = None) -> Group:
        try:
            return cls(GroupState.from_bytes(data), psks)
        except (InvalidMessage, ValueError) as exc:
            raise DecodeError(f"corrupt group state: {exc}") from exc

    # -- application messages -------------------------------------------------------------

    def encrypt(
        self, plaintext: bytes, rng: Rng, *, authenticated_data: bytes = b"", padding: int = 0
    ) -> bytes:
        """An application message as an encoded MLSMessage(PrivateMessage)."""
        state = self._require_active()
        framed = own_content(state, ContentType.APPLICATION, plaintext, authenticated_data)
        auth = sign_content(
            state.suite,
            WireFormat.MLS_PRIVATE_MESSAGE,
            framed,
            state.context,
            state.signature_priv,
        )
        message = protect_private(
            state.suite, auth, state.secret_tree, state.sender_data_secret, rng, padding
        )
        return MLSMessage.of(message).to_bytes()

    # -- proposals ------------------------------------------------------------------------

    def propose(
        self,
        proposal: Proposal,
        rng: Rng,
        *,
        authenticated_data: bytes = b"",
        public: bool = False,
    ) -> bytes:
        """Send a proposal by value; it is cached for our next commit too."""
        state = self._require_active()
        wire_format = WireFormat.MLS_PUBLIC_MESSAGE if public else WireFormat.MLS_PRIVATE_MESSAGE
        framed = own_content(state, ContentType.PROPOSAL, proposal, authenticated_data)
        auth = sign_content(state.suite, wire_format, framed, state.context, state.signature_priv)
        state.proposals[proposal_ref(state.suite, auth)] = auth
        return self._protect(state, auth, rng)

    def propose_update(self, rng: Rng) -> bytes:
        """An Update proposal with a fresh encryption key (§12.1.2)."""
        state = self._require_active()
        enc_priv, enc_pub = state.suite.hpke_key_pair(rng)
        old = state.tree.member_leaf(state.own_leaf)
        leaf = dataclasses.replace(
            old,
            encryption_key=enc_pub,
            leaf_node_source=LeafNodeSource.UPDATE,
            lifetime=None,
            parent_hash=None,
        )
        leaf = sign_leaf_node(
            state.suite, leaf, state.signature_priv, state.context.group_id, state.own_leaf
        )
        # The private key is needed only if someone commits this Update.
        state.update_keys[enc_pub] = enc_priv
        return self.propose(Proposal.of(Update(leaf)), rng)

    # -- commits ------------------------------------------------------------------------------

    def commit(
        self,
        rng: Rng,
        now: int,
        *,
        add: Sequence[bytes | KeyPackageBundle] = (),
        remove: Sequence[int] = (),
        psks: Sequence[PreSharedKeyID] = (),
        extensions: tuple[Extension, ...] | None = None,
        path: bool = True,
        include_pending: bool = True,
        authenticated_data: bytes = b"",
        public: bool = False,
        welcome_tree: bool = True,
    ) -> CommitResult:
        """Build a commit of the given proposals plus the pending ones (§12.4.1).

        ``add`` takes encoded MLSMessage(KeyPackage)s.  The group does not
        change until the commit comes back through :meth:`process` or
        :meth:`merge_pending_commit` is called.  ``welcome_tree=False`` leaves
        the ratchet tree out of the Welcome's GroupInfo (joiners then need
        ``CommitResult.ratchet_tree``; SPEC §4.1.1, large PQ groups).
        """
        state = self._require_active()
        suite = state.suite
        by_value: list[Proposal] = []
        for kp_bytes in add:
            if isinstance(kp_bytes, KeyPackageBundle):
                kp = kp_bytes.key_package
            else:
                kp = expect_body(kp_bytes, KeyPackage)
            by_value.append(Proposal.of(Add(kp)))
        by_value.extend(Proposal.of(Remove(i)) for i in remove)
        by_value.extend(Proposal.of(PreSharedKey(p)) for p in psks)
        if extensions is not None:
            by_value.append(Proposal.of(GroupContextExtensions(extensions)))

        selection = ProposalSelection([], [])
        if include_pending:
            selection = select_proposals(
                cached=list(state.proposals.items()),
                by_value=by_value,
                state=state,
                policy=self.policy,
                psk_available=lambda psk: psk_value(psk, self.psks, state) is not None,
                now=now,
            )
        else:
            for p in by_value:
                reason = self.policy.check(state, Sender.member(state.own_leaf), p)
                if reason is not None:
                    raise StateError(f"policy: {reason}")
        refs = [(ref, state.proposals[ref]) for ref in selection.refs]

        resolved = [resolved_proposal(c) for _, c in refs] + [
            ResolvedProposal(p, Sender.member(state.own_leaf)) for p in by_value
        ]
        applied = selection.applied  # the selection validated exactly this list
        if applied is None:
            applied = _apply_proposals(
                suite, state.context, state.tree, resolved, state.own_leaf, now
            )
        if applied.path_required and not path:
            raise StateError("these proposals require a path")
        new_tree = applied.tree
        provisional = dataclasses.replace(
            state.context, epoch=state.context.epoch + 1, extensions=applied.extensions
        )
        update_path = None
        commit_secret = bytes(suite.hash_len)
        new_private = dict(state.private_keys)
        path_secrets: dict[int, bytes] = {}
        if path:
            own_leaf = new_tree.member_leaf(state.own_leaf)

            def context_for(tree_hash: bytes) -> bytes:
                return dataclasses.replace(provisional, tree_hash=tree_hash).to_bytes()

            update_path, keys = create_path(
                suite,
                new_tree,
                state.own_leaf,
                leaf_builder(
                    suite, own_leaf, state.signature_priv, state.context.group_id, state.own_leaf
                ),
                context_for,
                applied.new_leaves,
                rng,
            )
            commit_secret = keys.commit_secret
            path_secrets = keys.path_secrets
            for x in tm.direct_path(2 * state.own_leaf, state.tree.n_leaves):
                new_private.pop(x, None)
            new_private.update(keys.private_keys)
        prune_private_keys(new_private, new_tree)

        proposal_or_refs = tuple(ProposalOrRef.of_reference(r) for r, _ in refs) + tuple(
            ProposalOrRef.of_proposal(p) for p in by_value
        )
        commit = Commit(proposal_or_refs, update_path)
        wire_format = WireFormat.MLS_PUBLIC_MESSAGE if public else WireFormat.MLS_PRIVATE_MESSAGE
        framed = own_content(state, ContentType.COMMIT, commit, authenticated_data)
        signature = content_signature(
            suite, wire_format, framed, state.context, state.signature_priv
        )
        confirmed = confirmed_transcript_hash(
            suite,
            state.interim_transcript_hash,
            confirmed_transcript_hash_input(wire_format, framed, signature),
        )
        context = dataclasses.replace(
            provisional, tree_hash=new_tree.tree_hash(), confirmed_transcript_hash=confirmed
        )
        psk = required_psk_secret(suite, applied.psks, self.psks, state)
        secrets = derive_epoch(suite, state.init_secret, commit_secret, context.to_bytes(), psk)
        tag = confirmation_tag(suite, secrets.confirmation_key, confirmed)
        auth = AuthenticatedContent(wire_format, framed, FramedContentAuthData(signature, tag))
        message = self._protect(state, auth, rng)

        new_state = successor_state(
            state,
            context,
            new_tree,
            new_private,
            secrets,
            tag,
            interim_transcript_hash(suite, confirmed, tag),
        )
        if applied.reinit is not None:
            new_state.active = False  # §12.4.2: no more messages in this group
        info = signed_group_info(new_state, True, True)
        welcome = None
        if applied.added:
            welcome_info = info if welcome_tree else signed_group_info(new_state, False, True)
            welcome = build_welcome(
                suite, welcome_info, new_tree, state.own_leaf, applied, secrets, path_secrets, rng
            ).to_bytes()
        events = commit_events(new_state, applied, state.own_leaf)
        self._pending = _PendingCommit(message, new_state, events)
        for ref in selection.forget:  # invalid now, so invalid in any commit of this epoch
            state.proposals.pop(ref, None)
        self.last_dropped = list(selection.dropped)
        return CommitResult(
            message,
            welcome,
            MLSMessage.of(info).to_bytes(),
            encode_ratchet_tree(new_tree.to_nodes()),
            tuple(selection.dropped),
        )

    def merge_pending_commit(self) -> list[GroupEvent]:
        """Switch to the epoch our pending commit creates."""
        if self._pending is None:
            raise StateError("no pending commit")
        pending, self._pending = self._pending, None
        self.state = pending.state
        return pending.events

    def clear_pending_commit(self) -> None:
        self._pending = None

    # -- processing ---------------------------------------------------------------------------

    def snapshot(self) -> GroupSnapshot:
        """A checkpoint to :meth:`restore` if what the caller does after
        :meth:`process` (persisting the new state) fails, so memory never
        runs ahead of the store.  ``process`` itself needs none: a rejected
        message changes nothing."""
        return GroupSnapshot(self.state.copy(), self._pending)

    def restore(self, snapshot: GroupSnapshot) -> None:
        """Go back to ``snapshot`` (which stays usable for another restore)."""
        self.state = snapshot.state.copy()
        self._pending = snapshot.pending

    def process(self, message: bytes, *, now: int | None = None) -> list[GroupEvent]:
        """Process one MLSMessage from the group; return what happened.

        Raises a :class:`~protocol.errors.RemoteError` subclass (and changes
        nothing) if the message is invalid, replayed, for another epoch, or
        not verifiable.
        """
        if self._pending is not None and message == self._pending.message:
            return self.merge_pending_commit()
        msg = MLSMessage.from_bytes(message)
        if msg.private_message is not None:
            return self._process_private(msg.private_message, now)
        if msg.public_message is not None:
            return self._process_public(msg.public_message, now)
        raise InvalidMessage(f"a {msg.wire_format.name} is not a group message")

    def _process_private(self, pm: PrivateMessage, now: int | None) -> list[GroupEvent]:
        state = self.state
        if pm.group_id != state.context.group_id:
            raise InvalidMessage("message for another group")
        if pm.epoch != state.context.epoch:
            past = state.past_epochs.get(pm.epoch)
            if past is None or pm.content_type != ContentType.APPLICATION:
                raise WrongEpoch(f"message for epoch {pm.epoch}, group is at {state.context.epoch}")
            return [self._open_late(pm, past)]
        if not state.active:
            raise StateError("this member is no longer in the group")
        work = state.secret_tree.copy()
        decrypted = unprotect_private(
            state.suite, pm, state.context, work, state.sender_data_secret
        )
        auth = decrypted.content
        sender = auth.content.sender.leaf_index
        assert sender is not None
        leaf = state.tree.member_leaf(sender)
        verify_content_signature(state.suite, auth, state.context, leaf.signature_key)
        decrypted.consume()
        if pm.content_type == ContentType.APPLICATION:
            state.secret_tree = work
            return [app_event(decrypted, EpochMember(leaf_identity(leaf), leaf.signature_key))]
        if pm.content_type == ContentType.PROPOSAL:
            event = cache_proposal(state, self.policy, auth, now)
            state.secret_tree = work
            return [event]
        outcome = process_commit(self.state, self.psks, self.policy, auth, now)
        return self._adopt(outcome)

    def authenticated_sender(self, message: bytes) -> int | None:
        """The leaf index of the member that sent ``message`` in the current
        epoch if its framing (sender data / membership tag) and signature
        verify, else None.  Changes nothing: keys are used on copies.  Lets
        the application attribute a message it rejected for another reason
        (a policy refusal, a confirmation tag that does not verify)."""
        state = self.state
        try:
            msg = MLSMessage.from_bytes(message)
            if msg.private_message is not None:
                pm = msg.private_message
                if pm.group_id != state.context.group_id or pm.epoch != state.context.epoch:
                    return None
                auth = unprotect_private(
                    state.suite,
                    pm,
                    state.context,
                    state.secret_tree.copy(),
                    state.sender_data_secret,
                ).content
            elif msg.public_message is not None:
                auth = unprotect_public(
                    state.suite, msg.public_message, state.context, state.membership_key
                )
            else:
                return None
            sender = auth.content.sender
            if sender.sender_type != SenderType.MEMBER or sender.leaf_index is None:
                return None
            leaf = state.tree.member_leaf(sender.leaf_index)
            verify_content_signature(state.suite, auth, state.context, leaf.signature_key)
        except (RemoteError, ValueError):
            return None
        return sender.leaf_index

    def _open_late(self, pm: PrivateMessage, past: PastEpoch) -> GroupEvent:
        """An application message of a kept past epoch.  Everything about it
        is of *that* epoch: its keys, and the member who held the sender's
        leaf then (RFC 9420 §6.3.2: sender data names a leaf of the epoch's
        tree; §6.1: the signature is checked with that leaf's key).  The
        leaf may be blank or someone else's now; the event names the sender
        of the epoch, never the leaf's current occupant."""
        work = past.secret_tree.copy()
        decrypted = unprotect_private(self.suite, pm, past.context, work, past.sender_data_secret)
        auth = decrypted.content
        sender = auth.content.sender.leaf_index
        assert sender is not None
        member = past.members.get(sender)
        if member is None:
            raise UnknownMember(f"leaf {sender} was not a member in epoch {pm.epoch}")
        verify_content_signature(self.suite, auth, past.context, member.signature_key)
        decrypted.consume()
        # PastEpoch is shared by copies of the state: replace it, never edit it.
        self.state.past_epochs[pm.epoch] = dataclasses.replace(past, secret_tree=work)
        return app_event(decrypted, member)

    def _process_public(self, pub: PublicMessage, now: int | None) -> list[GroupEvent]:
        state = self.state
        if not state.active:
            raise StateError("this member is no longer in the group")
        auth = unprotect_public(state.suite, pub, state.context, state.membership_key)
        sender = auth.content.sender
        content = auth.content
        if sender.sender_type == SenderType.MEMBER:
            assert sender.leaf_index is not None
            key = state.tree.member_leaf(sender.leaf_index).signature_key
        elif sender.sender_type == SenderType.EXTERNAL:
            key = external_sender_key(state, sender, content)
        elif sender.sender_type == SenderType.NEW_MEMBER_PROPOSAL:
            prop = content.proposal
            if prop is None or not isinstance(prop.body, Add):
                raise InvalidMessage("a new_member_proposal must be an Add")
            key = prop.body.key_package.leaf_node.signature_key
        else:  # new_member_commit
            commit = content.commit
            if commit is None or commit.path is None:
                raise InvalidCommit("an external commit must carry a path")
            key = commit.path.leaf_node.signature_key
        verify_content_signature(state.suite, auth, state.context, key)
        if content.content_type == ContentType.PROPOSAL:
            return [cache_proposal(state, self.policy, auth, now)]
        if content.content_type == ContentType.COMMIT:
            if sender.sender_type in (SenderType.EXTERNAL, SenderType.NEW_MEMBER_PROPOSAL):
                raise InvalidMessage("only members and joiners send commits")
            return self._adopt(process_commit(self.state, self.psks, self.policy, auth, now))
        raise InvalidMessage("application data in a PublicMessage")

    def _adopt(self, outcome: CommitOutcome) -> list[GroupEvent]:
        events = list(outcome.events)
        if self._pending is not None:
            events.insert(0, PendingCommitDiscarded(self.state.context.epoch))
            self._pending = None
        self.state = outcome.state
        return events

    # -- helpers ----------------------------------------------------------------------------------

    def _require_active(self) -> GroupState:
        if not self.state.active:
            raise StateError("this member can no longer send in this group")
        return self.state

    def _protect(self, state: GroupState, auth: AuthenticatedContent, rng: Rng) -> bytes:
        if auth.wire_format == WireFormat.MLS_PUBLIC_MESSAGE:
            pub = protect_public(state.suite, auth, state.context, state.membership_key)
            return MLSMessage.of(pub).to_bytes()
        priv = protect_private(state.suite, auth, state.secret_tree, state.sender_data_secret, rng)
        return MLSMessage.of(priv).to_bytes()


# -- module helpers ------------------------------------------------------------------------------
