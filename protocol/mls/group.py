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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from protocol.codec import decode_exact
from protocol.errors import CryptoError, DecodeError, RemoteError
from protocol.mls import tree_math as tm
from protocol.mls.crypto import CipherSuite, Rng, get_suite
from protocol.mls.errors import (
    InvalidCommit,
    InvalidMessage,
    StateError,
    UnknownMember,
    WrongEpoch,
)
from protocol.mls.events import (
    ApplicationMessageReceived,
    EpochAdvanced,
    ExtensionsChanged,
    GroupEvent,
    MemberAdded,
    MemberRemoved,
    MemberUpdated,
    PendingCommitDiscarded,
    ProposalDropped,
    ProposalReceived,
    ReInitRequested,
    RemovedFromGroup,
)
from protocol.mls.framing import (
    DecryptedContent,
    content_signature,
    proposal_ref,
    protect_private,
    protect_public,
    sign_content,
    unprotect_private,
    unprotect_public,
    verify_content_signature,
)
from protocol.mls.group_state import (
    MAX_PAST_EPOCHS,
    MAX_RESUMPTION_PSKS,
    EpochMember,
    GroupState,
    LeafRoster,
    PastEpoch,
)
from protocol.mls.key_package import (
    KeyPackageBundle,
    SigningIdentity,
    create_key_package,
    sign_leaf_node,
    validate_key_package,
)
from protocol.mls.key_schedule import (
    EpochSecrets,
    confirmation_tag,
    confirmed_transcript_hash,
    derive_epoch,
    epoch_from_epoch_secret,
    epoch_from_joiner,
    interim_transcript_hash,
    mls_exporter,
    psk_secret,
    welcome_key_nonce,
)
from protocol.mls.messages import (
    Add,
    AuthenticatedContent,
    Commit,
    ContentType,
    EncryptedGroupSecrets,
    ExternalInit,
    ExternalPub,
    FramedContent,
    FramedContentAuthData,
    GroupContext,
    GroupContextExtensions,
    GroupInfo,
    GroupSecrets,
    MLSMessage,
    PathSecret,
    PreSharedKey,
    PreSharedKeyID,
    PrivateMessage,
    Proposal,
    ProposalOrRef,
    ProposalOrRefType,
    PSKType,
    PublicMessage,
    Remove,
    ResumptionPSKUsage,
    Sender,
    SenderType,
    Update,
    Welcome,
    WireFormat,
    confirmed_transcript_hash_input,
)
from protocol.mls.policy import AllowAll, ProposalPolicy
from protocol.mls.proposals import (
    EXTERNAL_ALLOWED,
    AppliedProposals,
    ResolvedProposal,
    check_external_joiner,
    check_successor_credential,
    check_update_leaf,
    validate_leaf_for_group,
)
from protocol.mls.proposals import apply_proposals as _apply_proposals
from protocol.mls.ratchet_tree import RatchetTree, verify_leaf_node_signature
from protocol.mls.secret_tree import SecretTree
from protocol.mls.selection import ProposalSelection, select_proposals
from protocol.mls.tree_structs import (
    Capabilities,
    Extension,
    ExtensionType,
    HPKECiphertext,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    Node,
    ProtocolVersion,
    UpdatePath,
    decode_external_senders,
    decode_ratchet_tree,
    encode_ratchet_tree,
    find_extension,
)
from protocol.mls.treekem import (
    create_path,
    decrypt_path,
    keys_from_path_secret,
    merge_path,
    path_secret_for,
)
from protocol.mls.welcome import (
    decrypt_group_info,
    decrypt_group_secrets,
    find_secrets,
    key_package_ref,
    verify_group_info_signature,
)

EXTERNAL_INIT_LABEL = b"MLS 1.0 external init secret"


@dataclass(slots=True)
class PskStore:
    """Pre-shared keys the application makes available to its groups.

    ``external`` maps psk_id to the key; ``resumption`` maps (group_id,
    epoch) to the resumption PSK of another group (reinit and branch).
    """

    external: dict[bytes, bytes] = field(default_factory=dict)
    resumption: dict[tuple[bytes, int], bytes] = field(default_factory=dict)


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


@dataclass(slots=True)
class _CommitOutcome:
    state: GroupState
    events: list[GroupEvent]
    secrets: EpochSecrets
    applied: AppliedProposals
    path_secrets: dict[int, bytes]


def _leaf_identity(leaf: LeafNode) -> bytes:
    return leaf.credential.identity or b""


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
        state = _new_state(
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
        if isinstance(welcome, bytes):
            welcome = _expect_body(welcome, Welcome)
        suite = get_suite(welcome.cipher_suite)
        kp = bundle.key_package
        entry = find_secrets(suite, welcome, kp)
        secrets = decrypt_group_secrets(suite, welcome, entry, bundle.init_priv)
        _check_welcome_psks(secrets.psks)
        psk = _psk_secret(suite, secrets.psks, psks, None)
        info = decrypt_group_info(suite, welcome, secrets.joiner_secret, psk)
        context = info.group_context
        if context.cipher_suite != kp.cipher_suite:
            raise InvalidMessage("GroupInfo suite differs from the KeyPackage's")
        tree = _tree_for_join(suite, info, ratchet_tree)
        if tree.tree_hash() != context.tree_hash:
            raise InvalidMessage("ratchet tree does not match the GroupInfo tree hash")
        signer = tree.member_leaf(info.signer)
        verify_group_info_signature(suite, info, signer.signature_key)
        tree.validate(context.group_id, context.cipher_suite)
        own = next((i for i, leaf in tree.members() if leaf == kp.leaf_node), None)
        if own is None:
            raise InvalidMessage("the tree has no leaf for this KeyPackage")
        private_keys = {2 * own: bundle.encryption_priv}
        if secrets.path_secret is not None:
            node = tm.common_ancestor(2 * own, 2 * info.signer)
            private_keys.update(
                keys_from_path_secret(
                    suite, tree, info.signer, node, secrets.path_secret.path_secret
                )
            )
        epoch = _epoch_from_info(suite, info, secrets.joiner_secret, psk)
        state = _new_state(
            suite,
            context,
            tree,
            own,
            private_keys,
            bundle.signature_priv,
            epoch,
            info.confirmation_tag,
            interim_transcript_hash(
                suite, context.confirmed_transcript_hash, info.confirmation_tag
            ),
        )
        return cls(state, psks)

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
        if isinstance(group_info, bytes):
            group_info = _expect_body(group_info, GroupInfo)
        info = group_info
        old_context = info.group_context
        suite = get_suite(old_context.cipher_suite)
        tree = _tree_for_join(suite, info, ratchet_tree)
        if tree.tree_hash() != old_context.tree_hash:
            raise InvalidMessage("ratchet tree does not match the GroupInfo tree hash")
        verify_group_info_signature(suite, info, tree.member_leaf(info.signer).signature_key)
        tree.validate(old_context.group_id, old_context.cipher_suite)
        ext = find_extension(info.extensions, ExtensionType.EXTERNAL_PUB)
        if ext is None:
            raise InvalidMessage("GroupInfo has no external_pub extension")
        external_pub = decode_exact(ext.extension_data, ExternalPub.decode).external_pub
        kem_output, init_secret = suite.hpke_export_sender(
            external_pub, b"", EXTERNAL_INIT_LABEL, suite.hash_len, rng
        )
        proposals = [Proposal.of(ExternalInit(kem_output))]
        if remove_prior is not None:
            proposals.append(Proposal.of(Remove(remove_prior)))
        resolved = [ResolvedProposal(p, Sender.new_member_commit()) for p in proposals]
        applied = _apply_proposals(suite, old_context, tree, resolved, None, now)
        bundle = create_key_package(suite, identity, now, rng)
        new_tree = applied.tree
        try:
            check_external_joiner(new_tree, applied.removed, bundle.key_package.leaf_node)
        except InvalidCommit as exc:
            raise StateError(str(exc)) from exc
        own = new_tree.add_leaf(bundle.key_package.leaf_node)
        template = bundle.key_package.leaf_node
        new_context = dataclasses.replace(old_context, epoch=old_context.epoch + 1)

        def context_for(tree_hash: bytes) -> bytes:
            return dataclasses.replace(new_context, tree_hash=tree_hash).to_bytes()

        path, keys = create_path(
            suite,
            new_tree,
            own,
            _leaf_builder(suite, template, identity.signature_priv, old_context.group_id, own),
            context_for,
            applied.new_leaves,
            rng,
        )
        commit = Commit(tuple(ProposalOrRef.of_proposal(p) for p in proposals), path)
        framed = FramedContent(
            old_context.group_id,
            old_context.epoch,
            Sender.new_member_commit(),
            authenticated_data,
            ContentType.COMMIT,
            commit,
        )
        signature = content_signature(
            suite, WireFormat.MLS_PUBLIC_MESSAGE, framed, old_context, identity.signature_priv
        )
        interim = interim_transcript_hash(
            suite, old_context.confirmed_transcript_hash, info.confirmation_tag
        )
        confirmed = confirmed_transcript_hash(
            suite,
            interim,
            confirmed_transcript_hash_input(WireFormat.MLS_PUBLIC_MESSAGE, framed, signature),
        )
        context = dataclasses.replace(
            new_context,
            tree_hash=new_tree.tree_hash(),
            confirmed_transcript_hash=confirmed,
            extensions=applied.extensions,
        )
        psks = psks or PskStore()
        psk = _psk_secret(suite, applied.psks, psks, None)
        epoch = derive_epoch(suite, init_secret, keys.commit_secret, context.to_bytes(), psk)
        tag = confirmation_tag(suite, epoch.confirmation_key, confirmed)
        auth = AuthenticatedContent(
            WireFormat.MLS_PUBLIC_MESSAGE, framed, FramedContentAuthData(signature, tag)
        )
        message = MLSMessage.of(protect_public(suite, auth, old_context, None)).to_bytes()
        state = _new_state(
            suite,
            context,
            new_tree,
            own,
            dict(keys.private_keys),
            identity.signature_priv,
            epoch,
            tag,
            interim_transcript_hash(suite, confirmed, tag),
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
            (i, _leaf_identity(leaf), leaf.signature_key) for i, leaf in self.state.tree.members()
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
        return MLSMessage.of(_group_info(state, with_tree, external_pub)).to_bytes()

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
        framed = _own_content(state, ContentType.APPLICATION, plaintext, authenticated_data)
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
        framed = _own_content(state, ContentType.PROPOSAL, proposal, authenticated_data)
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
                kp = _expect_body(kp_bytes, KeyPackage)
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
                psk_available=lambda psk: _psk_value(psk, self.psks, state) is not None,
                now=now,
            )
        else:
            for p in by_value:
                reason = self.policy.check(state, Sender.member(state.own_leaf), p)
                if reason is not None:
                    raise StateError(f"policy: {reason}")
        refs = [(ref, state.proposals[ref]) for ref in selection.refs]

        resolved = [_resolved(c) for _, c in refs] + [
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
                _leaf_builder(
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
        _prune_private_keys(new_private, new_tree)

        proposal_or_refs = tuple(ProposalOrRef.of_reference(r) for r, _ in refs) + tuple(
            ProposalOrRef.of_proposal(p) for p in by_value
        )
        commit = Commit(proposal_or_refs, update_path)
        wire_format = WireFormat.MLS_PUBLIC_MESSAGE if public else WireFormat.MLS_PRIVATE_MESSAGE
        framed = _own_content(state, ContentType.COMMIT, commit, authenticated_data)
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
        psk = _psk_secret(suite, applied.psks, self.psks, state)
        secrets = derive_epoch(suite, state.init_secret, commit_secret, context.to_bytes(), psk)
        tag = confirmation_tag(suite, secrets.confirmation_key, confirmed)
        auth = AuthenticatedContent(wire_format, framed, FramedContentAuthData(signature, tag))
        message = self._protect(state, auth, rng)

        new_state = _successor(
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
        info = _group_info(new_state, True, True)
        welcome = None
        if applied.added:
            welcome_info = info if welcome_tree else _group_info(new_state, False, True)
            welcome = _welcome(
                suite, welcome_info, new_tree, state.own_leaf, applied, secrets, path_secrets, rng
            ).to_bytes()
        events = _commit_events(new_state, applied, state.own_leaf)
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
            return [_app_event(decrypted, EpochMember(_leaf_identity(leaf), leaf.signature_key))]
        if pm.content_type == ContentType.PROPOSAL:
            event = self._cache_proposal(state, auth, now)
            state.secret_tree = work
            return [event]
        outcome = self._process_commit(auth, now)
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
        return _app_event(decrypted, member)

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
            key = _external_sender_key(state, sender, content)
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
            return [self._cache_proposal(state, auth, now)]
        if content.content_type == ContentType.COMMIT:
            if sender.sender_type in (SenderType.EXTERNAL, SenderType.NEW_MEMBER_PROPOSAL):
                raise InvalidMessage("only members and joiners send commits")
            return self._adopt(self._process_commit(auth, now))
        raise InvalidMessage("application data in a PublicMessage")

    def _cache_proposal(
        self, state: GroupState, auth: AuthenticatedContent, now: int | None
    ) -> GroupEvent:
        """Validate a proposal on receipt (§12.1) and remember it by reference."""
        proposal = auth.content.proposal
        assert proposal is not None
        body = proposal.body
        sender = auth.content.sender
        if (
            sender.sender_type != SenderType.MEMBER
            and proposal.proposal_type not in EXTERNAL_ALLOWED
        ):
            raise InvalidMessage("proposal type not allowed from an external sender")
        if isinstance(body, ExternalInit):
            raise InvalidMessage("ExternalInit outside an external commit")
        if isinstance(body, Add):
            validate_key_package(state.suite, body.key_package, now)
        elif isinstance(body, Update):
            if sender.leaf_index is None:
                raise InvalidMessage("Update from a non-member")
            check_update_leaf(
                state.suite,
                state.context.group_id,
                state.tree,
                sender.leaf_index,
                body.leaf_node,
                state.context.extensions,
                now,
            )
        elif isinstance(body, Remove) and state.tree.leaf(body.removed) is None:
            raise InvalidMessage(f"Remove of non-member leaf {body.removed}")
        reason = self.policy.check(state, sender, proposal)
        if reason is not None:
            raise InvalidMessage(f"policy: {reason}")
        ref = proposal_ref(state.suite, auth)
        state.proposals[ref] = auth
        return ProposalReceived(
            ref,
            proposal.proposal_type,
            sender.sender_type,
            sender.leaf_index if sender.leaf_index is not None else sender.sender_index,
        )

    def _process_commit(self, auth: AuthenticatedContent, now: int | None) -> _CommitOutcome:
        """Everything of §12.4.2 after unprotecting and the signature."""
        state = self.state
        suite = state.suite
        content = auth.content
        commit = content.commit
        assert commit is not None
        external = content.sender.sender_type == SenderType.NEW_MEMBER_COMMIT
        committer = None if external else content.sender.leaf_index

        resolved: list[ResolvedProposal] = []
        for por in commit.proposals:
            if por.type == ProposalOrRefType.PROPOSAL:
                assert por.proposal is not None
                resolved.append(ResolvedProposal(por.proposal, content.sender))
                continue
            if external:
                raise InvalidCommit("an external commit cannot hold proposal references")
            assert por.reference is not None
            cached = state.proposals.get(por.reference)
            if cached is None:
                raise InvalidCommit("commit references an unknown proposal")
            resolved.append(_resolved(cached))
        # RFC 9420 §12.4.2: the application may refuse proposals its policy forbids.
        for r in resolved:
            reason = self.policy.check(state, r.sender, r.proposal)
            if reason is not None:
                raise InvalidCommit(f"policy: {reason}")

        applied = _apply_proposals(suite, state.context, state.tree, resolved, committer, now)
        if applied.path_required and commit.path is None:
            raise InvalidCommit("this commit requires a path")
        new_tree = applied.tree
        provisional = dataclasses.replace(
            state.context, epoch=state.context.epoch + 1, extensions=applied.extensions
        )
        private_keys = dict(state.private_keys)
        if state.own_leaf in applied.updated:
            # Someone committed our Update: our leaf now has the key we proposed.
            own_key = new_tree.member_leaf(state.own_leaf).encryption_key
            if own_key not in state.update_keys:
                raise InvalidCommit("commit applies an Update of ours we did not make")
            private_keys[2 * state.own_leaf] = state.update_keys[own_key]
        _prune_private_keys(private_keys, new_tree)
        commit_secret = bytes(suite.hash_len)
        removed_self = any(i == state.own_leaf for i, _ in applied.removed)
        if commit.path is not None:
            path = commit.path
            if external:
                # RFC 9420 §12.2: a Remove only of the joiner's own earlier leaf.
                check_external_joiner(new_tree, applied.removed, path.leaf_node)
                committer = new_tree.add_leaf(path.leaf_node)
            assert committer is not None
            _check_path_leaf(suite, state, new_tree, committer, path, external, now, applied)
            merge_path(new_tree, committer, path, applied.new_leaves)
            context_bytes = dataclasses.replace(
                provisional, tree_hash=new_tree.tree_hash()
            ).to_bytes()
            for x in tm.direct_path(2 * committer, new_tree.n_leaves):
                private_keys.pop(x, None)
            if not removed_self:
                keys = decrypt_path(
                    suite,
                    new_tree,
                    committer,
                    path,
                    state.own_leaf,
                    private_keys,
                    context_bytes,
                    applied.new_leaves,
                )
                private_keys.update(keys.private_keys)
                commit_secret = keys.commit_secret
        elif external:
            raise InvalidCommit("an external commit must carry a path")

        confirmed = confirmed_transcript_hash(
            suite,
            state.interim_transcript_hash,
            confirmed_transcript_hash_input(auth.wire_format, content, auth.auth.signature),
        )
        context = dataclasses.replace(
            provisional, tree_hash=new_tree.tree_hash(), confirmed_transcript_hash=confirmed
        )
        tag = auth.auth.confirmation_tag
        assert tag is not None
        if removed_self:
            # We cannot derive the new epoch (no path secret reaches us); the
            # commit's signature and membership checks are all we can verify.
            new_state = state.copy()
            new_state.active = False
            new_state.proposals = {}
            events: list[GroupEvent] = [
                MemberRemoved(i, _leaf_identity(leaf)) for i, leaf in applied.removed
            ]
            events.append(RemovedFromGroup(context.epoch, committer))
            return _CommitOutcome(new_state, events, _NO_SECRETS, applied, {})

        init_secret = state.init_secret
        if applied.external_init is not None:
            external_priv, _ = suite.derive_key_pair(state.external_secret)
            init_secret = suite.hpke_export_receiver(
                external_priv,
                applied.external_init.kem_output,
                b"",
                EXTERNAL_INIT_LABEL,
                suite.hash_len,
            )
        psk = _psk_secret(suite, applied.psks, self.psks, state)
        secrets = derive_epoch(suite, init_secret, commit_secret, context.to_bytes(), psk)
        try:
            suite.verify_mac(secrets.confirmation_key, confirmed, tag)
        except CryptoError as exc:
            raise InvalidCommit("confirmation tag does not verify") from exc
        _prune_private_keys(private_keys, new_tree)
        new_state = _successor(
            state,
            context,
            new_tree,
            private_keys,
            secrets,
            tag,
            interim_transcript_hash(suite, confirmed, tag),
        )
        if applied.reinit is not None:
            new_state.active = False
        events = _commit_events(new_state, applied, committer)
        return _CommitOutcome(new_state, events, secrets, applied, {})

    def _adopt(self, outcome: _CommitOutcome) -> list[GroupEvent]:
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

_NO_SECRETS = EpochSecrets(*([b""] * 12))


B = TypeVar("B", Welcome, GroupInfo, KeyPackage)


def _expect_body(data: bytes, kind: type[B]) -> B:
    msg = MLSMessage.from_bytes(data)
    if not isinstance(msg.body, kind):
        raise InvalidMessage(f"expected {kind.__name__}, got {msg.wire_format.name}")
    return msg.body


def _own_content(
    state: GroupState,
    content_type: ContentType,
    content: bytes | Proposal | Commit,
    authenticated_data: bytes,
) -> FramedContent:
    """FramedContent sent by this member in the current epoch."""
    return FramedContent(
        state.context.group_id,
        state.context.epoch,
        Sender.member(state.own_leaf),
        authenticated_data,
        content_type,
        content,
    )


def _resolved(cached: AuthenticatedContent) -> ResolvedProposal:
    proposal = cached.content.proposal
    assert proposal is not None
    return ResolvedProposal(proposal, cached.content.sender)


def _app_event(decrypted: DecryptedContent, member: EpochMember) -> ApplicationMessageReceived:
    """The event for a verified application message; ``member`` is whoever
    held the sender's leaf in the message's epoch."""
    content = decrypted.content.content
    assert content.sender.leaf_index is not None and content.application_data is not None
    return ApplicationMessageReceived(
        content.sender.leaf_index,
        content.application_data,
        content.authenticated_data,
        content.epoch,
        decrypted.generation,
        member.identity,
        member.signature_key,
    )


def _new_state(
    suite: CipherSuite,
    context: GroupContext,
    tree: RatchetTree,
    own_leaf: int,
    private_keys: dict[int, bytes],
    signature_priv: bytes,
    secrets: EpochSecrets,
    tag: bytes,
    interim: bytes,
) -> GroupState:
    return GroupState(
        suite=suite,
        context=context,
        tree=tree,
        own_leaf=own_leaf,
        private_keys=private_keys,
        signature_priv=signature_priv,
        init_secret=secrets.init_secret,
        sender_data_secret=secrets.sender_data_secret,
        exporter_secret=secrets.exporter_secret,
        external_secret=secrets.external_secret,
        membership_key=secrets.membership_key,
        resumption_psk=secrets.resumption_psk,
        epoch_authenticator=secrets.epoch_authenticator,
        confirmation_tag=tag,
        interim_transcript_hash=interim,
        secret_tree=SecretTree(suite, secrets.encryption_secret, tree.n_leaves),
        resumption_psks={context.epoch: secrets.resumption_psk},
    )


def _successor(
    old: GroupState,
    context: GroupContext,
    tree: RatchetTree,
    private_keys: dict[int, bytes],
    secrets: EpochSecrets,
    tag: bytes,
    interim: bytes,
) -> GroupState:
    """The state of the next epoch; keeps late-message keys of the old one."""
    new = _new_state(
        old.suite,
        context,
        tree,
        old.own_leaf,
        private_keys,
        old.signature_priv,
        secrets,
        tag,
        interim,
    )
    history = dict(old.resumption_psks)
    history[context.epoch] = secrets.resumption_psk
    for epoch in sorted(history)[:-MAX_RESUMPTION_PSKS]:
        del history[epoch]
    new.resumption_psks = history
    past = dict(old.past_epochs)
    past[old.context.epoch] = PastEpoch(
        old.context,
        old.sender_data_secret,
        old.secret_tree.copy(),
        LeafRoster(list(old.tree.nodes)),  # a snapshot: trees are edited in place
    )
    for epoch in sorted(past)[:-MAX_PAST_EPOCHS]:
        del past[epoch]
    new.past_epochs = past
    return new


def _prune_private_keys(keys: dict[int, bytes], tree: RatchetTree) -> None:
    """Drop private keys whose node is gone, blank, or has another key now."""
    for x in list(keys):
        if x >= len(tree.nodes) or tree.nodes[x] is None:
            del keys[x]


def _leaf_builder(
    suite: CipherSuite, template: LeafNode, signature_priv: bytes, group_id: bytes, leaf_index: int
) -> Callable[[bytes, bytes], LeafNode]:
    def build(encryption_key: bytes, parent_hash: bytes) -> LeafNode:
        leaf = dataclasses.replace(
            template,
            encryption_key=encryption_key,
            leaf_node_source=LeafNodeSource.COMMIT,
            lifetime=None,
            parent_hash=parent_hash,
        )
        return sign_leaf_node(suite, leaf, signature_priv, group_id, leaf_index)

    return build


def _check_path_leaf(
    suite: CipherSuite,
    state: GroupState,
    tree: RatchetTree,
    committer: int,
    path: UpdatePath,
    external: bool,
    now: int | None,
    applied: AppliedProposals,
) -> None:
    """The UpdatePath checks of §12.4.2 that precede merging."""
    leaf = path.leaf_node
    if leaf.leaf_node_source != LeafNodeSource.COMMIT:
        raise InvalidCommit("the path's leaf must have source commit")
    verify_leaf_node_signature(suite, leaf, state.context.group_id, committer)
    validate_leaf_for_group(suite, tree, leaf, applied.extensions, now)
    if not external:
        old = state.tree.member_leaf(committer)
        if leaf.encryption_key == old.encryption_key:
            raise InvalidCommit("the committer's leaf must get a new encryption key")
        try:
            check_successor_credential(old, leaf)
        except InvalidMessage as exc:
            raise InvalidCommit(str(exc)) from exc
    # §7.3 and §16.7 uniqueness, for an external joiner's leaf too (it is
    # already in ``tree``, at ``committer``).
    keys = [n.encryption_key for n in path.nodes] + [leaf.encryption_key]
    if any(tree.has_encryption_key(k, except_node=2 * committer) for k in keys):
        raise InvalidCommit("the UpdatePath reuses a public key of the tree")
    if tree.has_signature_key(leaf.signature_key, except_leaf=committer):
        raise InvalidCommit("the committer's leaf reuses another member's signature key")


def _external_sender_key(state: GroupState, sender: Sender, content: FramedContent) -> bytes:
    ext = find_extension(state.context.extensions, ExtensionType.EXTERNAL_SENDERS)
    if ext is None:
        raise InvalidMessage("external sender but no external_senders extension")
    try:
        senders = decode_external_senders(ext.extension_data)
    except DecodeError as exc:
        raise InvalidMessage(f"malformed external_senders: {exc}") from exc
    index = sender.sender_index
    if index is None or index >= len(senders):
        raise InvalidMessage("unknown external sender index")
    if content.content_type != ContentType.PROPOSAL:
        raise InvalidMessage("external senders may only send proposals")
    return senders[index].signature_key


def _check_welcome_psks(psks: Sequence[PreSharedKeyID]) -> None:
    special = [
        p
        for p in psks
        if p.psktype == PSKType.RESUMPTION
        and p.usage in (ResumptionPSKUsage.REINIT, ResumptionPSKUsage.BRANCH)
    ]
    if special and len(psks) != 1:
        raise InvalidMessage("a reinit/branch PSK must be the only PSK of a Welcome")


def _psk_value(psk_id: PreSharedKeyID, store: PskStore, state: GroupState | None) -> bytes | None:
    """The PSK ``psk_id`` names, if this member has it."""
    if psk_id.psktype == PSKType.EXTERNAL:
        assert psk_id.psk_id is not None
        return store.external.get(psk_id.psk_id)
    assert psk_id.psk_group_id is not None and psk_id.psk_epoch is not None
    value = None
    if state is not None and psk_id.psk_group_id == state.context.group_id:
        value = state.resumption_psks.get(psk_id.psk_epoch)
    if value is None:
        value = store.resumption.get((psk_id.psk_group_id, psk_id.psk_epoch))
    return value


def _psk_secret(
    suite: CipherSuite,
    ids: Sequence[PreSharedKeyID],
    store: PskStore,
    state: GroupState | None,
) -> bytes | None:
    if not ids:
        return None
    pairs = []
    for psk_id in ids:
        value = _psk_value(psk_id, store, state)
        if value is None:
            raise InvalidCommit("a required PSK is not available")
        pairs.append((psk_id.to_bytes(), value))
    return psk_secret(suite, pairs)


def _tree_for_join(
    suite: CipherSuite, info: GroupInfo, given: bytes | Sequence[Node | None] | None
) -> RatchetTree:
    if given is None:
        ext = find_extension(info.extensions, ExtensionType.RATCHET_TREE)
        if ext is None:
            raise InvalidMessage("no ratchet tree: none in the GroupInfo and none given")
        nodes = decode_ratchet_tree(ext.extension_data)
    elif isinstance(given, bytes):
        nodes = decode_ratchet_tree(given)
    else:
        nodes = list(given)
    return RatchetTree(suite, nodes)


def _epoch_from_info(
    suite: CipherSuite, info: GroupInfo, joiner: bytes, psk: bytes | None
) -> EpochSecrets:
    secrets = epoch_from_joiner(suite, joiner, psk, info.group_context.to_bytes())
    try:
        suite.verify_mac(
            secrets.confirmation_key,
            info.group_context.confirmed_transcript_hash,
            info.confirmation_tag,
        )
    except CryptoError as exc:
        raise InvalidMessage("GroupInfo confirmation tag does not verify") from exc
    return secrets


def _group_info(state: GroupState, with_tree: bool, external_pub: bool) -> GroupInfo:
    suite = state.suite
    extensions: list[Extension] = []
    if with_tree:
        extensions.append(
            Extension(ExtensionType.RATCHET_TREE, encode_ratchet_tree(state.tree.to_nodes()))
        )
    if external_pub:
        _, pub = suite.derive_key_pair(state.external_secret)
        extensions.append(Extension(ExtensionType.EXTERNAL_PUB, ExternalPub(pub).to_bytes()))
    unsigned = GroupInfo(
        state.context, tuple(extensions), state.confirmation_tag, state.own_leaf, b""
    )
    signature = suite.sign_with_label(state.signature_priv, "GroupInfoTBS", unsigned.tbs_bytes())
    return dataclasses.replace(unsigned, signature=signature)


def _welcome(
    suite: CipherSuite,
    info: GroupInfo,
    tree: RatchetTree,
    committer: int,
    applied: AppliedProposals,
    secrets: EpochSecrets,
    path_secrets: Mapping[int, bytes],
    rng: Rng,
) -> MLSMessage:
    """The Welcome for the members a commit adds (§12.4.3.1).  Its GroupInfo
    carries the ratchet tree, so joiners need nothing else."""
    key, nonce = welcome_key_nonce(suite, secrets.welcome_secret)
    encrypted_info = suite.aead_seal(key, nonce, b"", info.to_bytes())
    recipients = []
    for leaf_index, kp in applied.added:
        secret = path_secret_for(tree, committer, leaf_index, path_secrets)
        group_secrets = GroupSecrets(
            secrets.joiner_secret,
            PathSecret(secret) if secret is not None else None,
            tuple(applied.psks),
        )
        recipients.append((kp.init_key, group_secrets.to_bytes()))
    sealed = suite.encrypt_with_label_many("Welcome", encrypted_info, recipients, rng)
    entries = tuple(
        EncryptedGroupSecrets(key_package_ref(suite, kp), HPKECiphertext(kem_output, ct))
        for (_, kp), (kem_output, ct) in zip(applied.added, sealed, strict=True)
    )
    return MLSMessage.of(Welcome(suite.suite_id, entries, encrypted_info))


def _commit_events(
    new: GroupState, applied: AppliedProposals, committer: int | None
) -> list[GroupEvent]:
    events: list[GroupEvent] = []
    for i, leaf in applied.removed:
        events.append(MemberRemoved(i, _leaf_identity(leaf)))
    for i in applied.updated:
        events.append(MemberUpdated(i))
    for i, kp in applied.added:
        events.append(MemberAdded(i, _leaf_identity(kp.leaf_node), kp.leaf_node.signature_key))
    if applied.extensions_changed:
        events.append(ExtensionsChanged(tuple(e.extension_type for e in applied.extensions)))
    if applied.reinit is not None:
        r = applied.reinit
        events.append(ReInitRequested(r.group_id, r.version, r.cipher_suite))
    events.append(EpochAdvanced(new.context.epoch, new.epoch_authenticator, committer))
    return events


def external_proposal(
    suite_id: int,
    group_id: bytes,
    epoch: int,
    proposal: Proposal,
    sender_index: int,
    signature_priv: bytes,
) -> bytes:
    """A proposal from a pre-provisioned external sender (§12.1.8), as an
    encoded MLSMessage(PublicMessage).  The group must list the sender at
    ``sender_index`` of its external_senders extension."""
    suite = get_suite(suite_id)
    if proposal.proposal_type not in EXTERNAL_ALLOWED:
        raise StateError("this proposal type cannot come from an external sender")
    framed = FramedContent(
        group_id, epoch, Sender.external(sender_index), b"", ContentType.PROPOSAL, proposal
    )
    return _external_public(suite, framed, signature_priv)


def new_member_proposal(group_info: bytes | GroupInfo, bundle: KeyPackageBundle) -> bytes:
    """A joiner's own Add proposal (sender new_member_proposal, §12.1.8),
    signed with its KeyPackage's key; a member must then commit it."""
    if isinstance(group_info, bytes):
        group_info = _expect_body(group_info, GroupInfo)
    context = group_info.group_context
    suite = get_suite(context.cipher_suite)
    framed = FramedContent(
        context.group_id,
        context.epoch,
        Sender.new_member_proposal(),
        b"",
        ContentType.PROPOSAL,
        Proposal.of(Add(bundle.key_package)),
    )
    return _external_public(suite, framed, bundle.signature_priv)


def _external_public(suite: CipherSuite, framed: FramedContent, signature_priv: bytes) -> bytes:
    # Non-member senders sign FramedContentTBS without a GroupContext (§6.1),
    # so no context is needed; a placeholder satisfies the signature helper.
    placeholder = GroupContext(ProtocolVersion.MLS10, suite.suite_id, b"", 0, b"", b"", ())
    auth = sign_content(suite, WireFormat.MLS_PUBLIC_MESSAGE, framed, placeholder, signature_priv)
    return MLSMessage.of(protect_public(suite, auth, placeholder, None)).to_bytes()
