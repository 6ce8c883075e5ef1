"""Processing a received commit (RFC 9420 §12.4.2) and validating a received
proposal (§12.1).

:func:`process_commit` builds the complete successor state from copies and
returns it; :class:`~protocol.mls.group.Group` adopts it only if nothing
raised, so a rejected commit changes nothing.
"""

from __future__ import annotations

import dataclasses

from protocol.errors import CryptoError, DecodeError
from protocol.mls import tree_math as tm
from protocol.mls.crypto import CipherSuite
from protocol.mls.errors import InvalidCommit, InvalidMessage
from protocol.mls.events import GroupEvent, MemberRemoved, ProposalReceived, RemovedFromGroup
from protocol.mls.framing import proposal_ref
from protocol.mls.group_epoch import (
    EXTERNAL_INIT_LABEL,
    NO_SECRETS,
    CommitOutcome,
    PskStore,
    commit_events,
    leaf_identity,
    prune_private_keys,
    required_psk_secret,
    resolved_proposal,
    successor_state,
)
from protocol.mls.group_state import GroupState
from protocol.mls.key_package import validate_key_package
from protocol.mls.key_schedule import (
    confirmed_transcript_hash,
    derive_epoch,
    interim_transcript_hash,
)
from protocol.mls.messages import (
    Add,
    AuthenticatedContent,
    ContentType,
    ExternalInit,
    FramedContent,
    ProposalOrRefType,
    Remove,
    Sender,
    SenderType,
    Update,
    confirmed_transcript_hash_input,
)
from protocol.mls.policy import ProposalPolicy
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
from protocol.mls.tree_structs import (
    ExtensionType,
    LeafNodeSource,
    UpdatePath,
    decode_external_senders,
    find_extension,
)
from protocol.mls.treekem import decrypt_path, merge_path


def process_commit(
    state: GroupState,
    psks: PskStore,
    policy: ProposalPolicy,
    auth: AuthenticatedContent,
    now: int | None,
) -> CommitOutcome:
    """Everything of §12.4.2 after unprotecting and the signature."""
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
        resolved.append(resolved_proposal(cached))
    # RFC 9420 §12.4.2: the application may refuse proposals its policy forbids.
    for r in resolved:
        reason = policy.check(state, r.sender, r.proposal)
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
    prune_private_keys(private_keys, new_tree)
    commit_secret = bytes(suite.hash_len)
    removed_self = any(i == state.own_leaf for i, _ in applied.removed)
    if commit.path is not None:
        path = commit.path
        if external:
            # RFC 9420 §12.2: a Remove only of the joiner's own earlier leaf.
            check_external_joiner(new_tree, applied.removed, path.leaf_node)
            committer = new_tree.add_leaf(path.leaf_node)
        assert committer is not None
        check_path_leaf(suite, state, new_tree, committer, path, external, now, applied)
        merge_path(new_tree, committer, path, applied.new_leaves)
        context_bytes = dataclasses.replace(provisional, tree_hash=new_tree.tree_hash()).to_bytes()
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
            MemberRemoved(i, leaf_identity(leaf)) for i, leaf in applied.removed
        ]
        events.append(RemovedFromGroup(context.epoch, committer))
        return CommitOutcome(new_state, events, NO_SECRETS, applied, {})

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
    psk = required_psk_secret(suite, applied.psks, psks, state)
    secrets = derive_epoch(suite, init_secret, commit_secret, context.to_bytes(), psk)
    try:
        suite.verify_mac(secrets.confirmation_key, confirmed, tag)
    except CryptoError as exc:
        raise InvalidCommit("confirmation tag does not verify") from exc
    prune_private_keys(private_keys, new_tree)
    new_state = successor_state(
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
    events = commit_events(new_state, applied, committer)
    return CommitOutcome(new_state, events, secrets, applied, {})


def cache_proposal(
    state: GroupState, policy: ProposalPolicy, auth: AuthenticatedContent, now: int | None
) -> GroupEvent:
    """Validate a proposal on receipt (§12.1) and remember it by reference."""
    proposal = auth.content.proposal
    assert proposal is not None
    body = proposal.body
    sender = auth.content.sender
    if sender.sender_type != SenderType.MEMBER and proposal.proposal_type not in EXTERNAL_ALLOWED:
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
    reason = policy.check(state, sender, proposal)
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


def check_path_leaf(
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


def external_sender_key(state: GroupState, sender: Sender, content: FramedContent) -> bytes:
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
