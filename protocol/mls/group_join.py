"""Joining a group (RFC 9420 §12.4.3): from a Welcome, by external commit,
and the messages a non-member sends (§12.1.8).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from protocol.codec import decode_exact
from protocol.errors import CryptoError
from protocol.mls import tree_math as tm
from protocol.mls.crypto import CipherSuite, Rng, get_suite
from protocol.mls.errors import InvalidCommit, InvalidMessage, StateError
from protocol.mls.framing import content_signature, protect_public, sign_content
from protocol.mls.group_epoch import (
    EXTERNAL_INIT_LABEL,
    PskStore,
    epoch_state,
    expect_body,
    leaf_builder,
    required_psk_secret,
)
from protocol.mls.group_state import GroupState
from protocol.mls.key_package import KeyPackageBundle, SigningIdentity, create_key_package
from protocol.mls.key_schedule import (
    EpochSecrets,
    confirmation_tag,
    confirmed_transcript_hash,
    derive_epoch,
    epoch_from_joiner,
    interim_transcript_hash,
)
from protocol.mls.messages import (
    Add,
    AuthenticatedContent,
    Commit,
    ContentType,
    ExternalInit,
    ExternalPub,
    FramedContent,
    FramedContentAuthData,
    GroupContext,
    GroupInfo,
    MLSMessage,
    PreSharedKeyID,
    Proposal,
    ProposalOrRef,
    PSKType,
    Remove,
    ResumptionPSKUsage,
    Sender,
    Welcome,
    WireFormat,
    confirmed_transcript_hash_input,
)
from protocol.mls.proposals import EXTERNAL_ALLOWED, ResolvedProposal, check_external_joiner
from protocol.mls.proposals import apply_proposals as _apply_proposals
from protocol.mls.ratchet_tree import RatchetTree
from protocol.mls.tree_structs import (
    ExtensionType,
    Node,
    ProtocolVersion,
    decode_ratchet_tree,
    find_extension,
)
from protocol.mls.treekem import create_path, keys_from_path_secret
from protocol.mls.welcome import (
    decrypt_group_info,
    decrypt_group_secrets,
    find_secrets,
    verify_group_info_signature,
)


def join_state(
    welcome: bytes | Welcome,
    bundle: KeyPackageBundle,
    *,
    ratchet_tree: bytes | Sequence[Node | None] | None = None,
    psks: PskStore,
) -> GroupState:
    """The state of a member joining from a Welcome (§12.4.3.1).  The tree
    comes from the GroupInfo's ``ratchet_tree`` extension or from
    ``ratchet_tree``."""
    if isinstance(welcome, bytes):
        welcome = expect_body(welcome, Welcome)
    suite = get_suite(welcome.cipher_suite)
    kp = bundle.key_package
    entry = find_secrets(suite, welcome, kp)
    secrets = decrypt_group_secrets(suite, welcome, entry, bundle.init_priv)
    check_welcome_psks(secrets.psks)
    psk = required_psk_secret(suite, secrets.psks, psks, None)
    info = decrypt_group_info(suite, welcome, secrets.joiner_secret, psk)
    context = info.group_context
    if context.cipher_suite != kp.cipher_suite:
        raise InvalidMessage("GroupInfo suite differs from the KeyPackage's")
    tree = tree_for_join(suite, info, ratchet_tree)
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
            keys_from_path_secret(suite, tree, info.signer, node, secrets.path_secret.path_secret)
        )
    epoch = epoch_from_info(suite, info, secrets.joiner_secret, psk)
    state = epoch_state(
        suite,
        context,
        tree,
        own,
        private_keys,
        bundle.signature_priv,
        epoch,
        info.confirmation_tag,
        interim_transcript_hash(suite, context.confirmed_transcript_hash, info.confirmation_tag),
    )
    return state


def join_external_state(
    group_info: bytes | GroupInfo,
    identity: SigningIdentity,
    rng: Rng,
    now: int,
    *,
    ratchet_tree: bytes | Sequence[Node | None] | None = None,
    remove_prior: int | None = None,
    authenticated_data: bytes = b"",
    psks: PskStore,
) -> tuple[GroupState, bytes]:
    """Join by external commit (§12.4.3.2).  Returns the state, already in
    the new epoch, and the commit (a PublicMessage) to send."""
    if isinstance(group_info, bytes):
        group_info = expect_body(group_info, GroupInfo)
    info = group_info
    old_context = info.group_context
    suite = get_suite(old_context.cipher_suite)
    tree = tree_for_join(suite, info, ratchet_tree)
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
        leaf_builder(suite, template, identity.signature_priv, old_context.group_id, own),
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
    psk = required_psk_secret(suite, applied.psks, psks, None)
    epoch = derive_epoch(suite, init_secret, keys.commit_secret, context.to_bytes(), psk)
    tag = confirmation_tag(suite, epoch.confirmation_key, confirmed)
    auth = AuthenticatedContent(
        WireFormat.MLS_PUBLIC_MESSAGE, framed, FramedContentAuthData(signature, tag)
    )
    message = MLSMessage.of(protect_public(suite, auth, old_context, None)).to_bytes()
    state = epoch_state(
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
    return state, message


def check_welcome_psks(psks: Sequence[PreSharedKeyID]) -> None:
    special = [
        p
        for p in psks
        if p.psktype == PSKType.RESUMPTION
        and p.usage in (ResumptionPSKUsage.REINIT, ResumptionPSKUsage.BRANCH)
    ]
    if special and len(psks) != 1:
        raise InvalidMessage("a reinit/branch PSK must be the only PSK of a Welcome")


def tree_for_join(
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


def epoch_from_info(
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
        group_info = expect_body(group_info, GroupInfo)
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
