"""The states and messages of a new epoch, shared by commit building
(:mod:`protocol.mls.group`), commit processing (:mod:`protocol.mls.commit_process`)
and joining (:mod:`protocol.mls.group_join`).

Nothing here edits a live state: each function builds a new value from its
arguments (RFC 9420 §8 key schedule, §12.4 epoch changes, §12.4.3 Welcome).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from protocol.mls.crypto import CipherSuite, Rng
from protocol.mls.errors import InvalidCommit, InvalidMessage
from protocol.mls.events import (
    ApplicationMessageReceived,
    EpochAdvanced,
    ExtensionsChanged,
    GroupEvent,
    MemberAdded,
    MemberRemoved,
    MemberUpdated,
    ReInitRequested,
)
from protocol.mls.framing import DecryptedContent
from protocol.mls.group_state import (
    MAX_PAST_EPOCHS,
    MAX_RESUMPTION_PSKS,
    EpochMember,
    GroupState,
    LeafRoster,
    PastEpoch,
)
from protocol.mls.key_package import sign_leaf_node
from protocol.mls.key_schedule import EpochSecrets, psk_secret, welcome_key_nonce
from protocol.mls.messages import (
    AuthenticatedContent,
    Commit,
    ContentType,
    EncryptedGroupSecrets,
    ExternalPub,
    FramedContent,
    GroupContext,
    GroupInfo,
    GroupSecrets,
    MLSMessage,
    PathSecret,
    PreSharedKeyID,
    Proposal,
    PSKType,
    Sender,
    Welcome,
)
from protocol.mls.proposals import AppliedProposals, ResolvedProposal
from protocol.mls.ratchet_tree import RatchetTree
from protocol.mls.secret_tree import SecretTree
from protocol.mls.tree_structs import (
    Extension,
    ExtensionType,
    HPKECiphertext,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    encode_ratchet_tree,
)
from protocol.mls.treekem import path_secret_for
from protocol.mls.welcome import key_package_ref

EXTERNAL_INIT_LABEL = b"MLS 1.0 external init secret"


@dataclass(slots=True)
class PskStore:
    """Pre-shared keys the application makes available to its groups.

    ``external`` maps psk_id to the key; ``resumption`` maps (group_id,
    epoch) to the resumption PSK of another group (reinit and branch).
    """

    external: dict[bytes, bytes] = field(default_factory=dict)
    resumption: dict[tuple[bytes, int], bytes] = field(default_factory=dict)


@dataclass(slots=True)
class CommitOutcome:
    state: GroupState
    events: list[GroupEvent]
    secrets: EpochSecrets
    applied: AppliedProposals
    path_secrets: dict[int, bytes]


NO_SECRETS = EpochSecrets(*([b""] * 12))


B = TypeVar("B", Welcome, GroupInfo, KeyPackage)


def expect_body(data: bytes, kind: type[B]) -> B:
    msg = MLSMessage.from_bytes(data)
    if not isinstance(msg.body, kind):
        raise InvalidMessage(f"expected {kind.__name__}, got {msg.wire_format.name}")
    return msg.body


def leaf_identity(leaf: LeafNode) -> bytes:
    return leaf.credential.identity or b""


def own_content(
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


def resolved_proposal(cached: AuthenticatedContent) -> ResolvedProposal:
    proposal = cached.content.proposal
    assert proposal is not None
    return ResolvedProposal(proposal, cached.content.sender)


def app_event(decrypted: DecryptedContent, member: EpochMember) -> ApplicationMessageReceived:
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


def epoch_state(
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


def successor_state(
    old: GroupState,
    context: GroupContext,
    tree: RatchetTree,
    private_keys: dict[int, bytes],
    secrets: EpochSecrets,
    tag: bytes,
    interim: bytes,
) -> GroupState:
    """The state of the next epoch; keeps late-message keys of the old one."""
    new = epoch_state(
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


def prune_private_keys(keys: dict[int, bytes], tree: RatchetTree) -> None:
    """Drop private keys whose node is gone, blank, or has another key now."""
    for x in list(keys):
        if x >= len(tree.nodes) or tree.nodes[x] is None:
            del keys[x]


def leaf_builder(
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


def psk_value(psk_id: PreSharedKeyID, store: PskStore, state: GroupState | None) -> bytes | None:
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


def required_psk_secret(
    suite: CipherSuite,
    ids: Sequence[PreSharedKeyID],
    store: PskStore,
    state: GroupState | None,
) -> bytes | None:
    if not ids:
        return None
    pairs = []
    for psk_id in ids:
        value = psk_value(psk_id, store, state)
        if value is None:
            raise InvalidCommit("a required PSK is not available")
        pairs.append((psk_id.to_bytes(), value))
    return psk_secret(suite, pairs)


def signed_group_info(state: GroupState, with_tree: bool, external_pub: bool) -> GroupInfo:
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


def build_welcome(
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


def commit_events(
    new: GroupState, applied: AppliedProposals, committer: int | None
) -> list[GroupEvent]:
    events: list[GroupEvent] = []
    for i, leaf in applied.removed:
        events.append(MemberRemoved(i, leaf_identity(leaf)))
    for i in applied.updated:
        events.append(MemberUpdated(i))
    for i, kp in applied.added:
        events.append(MemberAdded(i, leaf_identity(kp.leaf_node), kp.leaf_node.signature_key))
    if applied.extensions_changed:
        events.append(ExtensionsChanged(tuple(e.extension_type for e in applied.extensions)))
    if applied.reinit is not None:
        r = applied.reinit
        events.append(ReInitRequested(r.group_id, r.version, r.cipher_suite))
    events.append(EpochAdvanced(new.context.epoch, new.epoch_authenticator, committer))
    return events
