"""Proposal validation and application (RFC 9420 §12.1 to §12.3).

:func:`apply_proposals` checks a committed proposal list against every rule
of §12.2 and applies it in the order of §12.3 to a *copy* of the tree, so the
caller can drop the result if anything later in commit processing fails.  A
:class:`ProposalCursor` passed to it names the proposal a failure is about,
which is how a committer leaves out exactly the offending cached proposal
(:mod:`protocol.mls.selection`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from protocol.codec import decode_exact
from protocol.errors import DecodeError
from protocol.mls.crypto import CipherSuite
from protocol.mls.errors import InvalidCommit, InvalidMessage
from protocol.mls.key_package import check_lifetime, validate_key_package
from protocol.mls.messages import (
    Add,
    ExternalInit,
    GroupContext,
    GroupContextExtensions,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    PSKType,
    ReInit,
    Remove,
    ResumptionPSKUsage,
    Sender,
    SenderType,
    Update,
)
from protocol.mls.ratchet_tree import (
    DEFAULT_PROPOSALS,
    RatchetTree,
    check_leaf_node_basics,
    verify_leaf_node_signature,
)
from protocol.mls.tree_structs import (
    Extension,
    ExtensionType,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    ProposalType,
    RequiredCapabilities,
    find_extension,
)

# Proposal types that force a Commit to carry a path (§12.4, §17.4).
PATH_REQUIRED = frozenset(
    {
        ProposalType.UPDATE,
        ProposalType.REMOVE,
        ProposalType.EXTERNAL_INIT,
        ProposalType.GROUP_CONTEXT_EXTENSIONS,
    }
)
# Proposal types an external sender may send (§12.1.8).
EXTERNAL_ALLOWED = frozenset(
    {
        ProposalType.ADD,
        ProposalType.REMOVE,
        ProposalType.PSK,
        ProposalType.REINIT,
        ProposalType.GROUP_CONTEXT_EXTENSIONS,
    }
)


@dataclass(frozen=True, slots=True)
class ResolvedProposal:
    """A committed proposal with the sender that proposed it."""

    proposal: Proposal
    sender: Sender


@dataclass(slots=True)
class ProposalCursor:
    """Set by :func:`apply_proposals` to the index of the proposal it is judging;
    None while it checks the list as a whole."""

    index: int | None = None


@dataclass(slots=True)
class AppliedProposals:
    tree: RatchetTree
    extensions: tuple[Extension, ...]
    added: list[tuple[int, KeyPackage]] = field(default_factory=list)
    removed: list[tuple[int, LeafNode]] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    psks: list[PreSharedKeyID] = field(default_factory=list)
    external_init: ExternalInit | None = None
    reinit: ReInit | None = None
    path_required: bool = False
    extensions_changed: bool = False

    @property
    def new_leaves(self) -> frozenset[int]:
        return frozenset(i for i, _ in self.added)


def required_capabilities(extensions: Sequence[Extension]) -> RequiredCapabilities | None:
    ext = find_extension(extensions, ExtensionType.REQUIRED_CAPABILITIES)
    if ext is None:
        return None
    try:
        return decode_exact(ext.extension_data, RequiredCapabilities.decode)
    except DecodeError as exc:
        raise InvalidMessage(f"malformed required_capabilities: {exc}") from exc


def check_required_capabilities(leaf: LeafNode, required: RequiredCapabilities | None) -> None:
    if required is None:
        return
    caps = leaf.capabilities
    for ext_type in required.extension_types:
        if ext_type not in caps.extensions and ext_type not in (1, 2, 3, 4, 5):
            raise InvalidMessage(f"member lacks required extension {ext_type}")
    for prop_type in required.proposal_types:
        if prop_type not in caps.proposals and prop_type not in DEFAULT_PROPOSALS:
            raise InvalidMessage(f"member lacks required proposal type {prop_type}")
    for cred_type in required.credential_types:
        if cred_type not in caps.credentials:
            raise InvalidMessage(f"member lacks required credential type {cred_type}")


@dataclass(slots=True)
class CredentialSupport:
    """The credential types of a tree's members, for the §7.3 check that a
    new leaf and the members support each other's credential types.

    Built once per tree (one pass over the members) and extended with
    :meth:`admit` as leaves are added, so that validating many new leaves
    costs one pass, not one per leaf."""

    supported: frozenset[int] | None  # types every member supports (None: no member)
    in_use: set[int]  # credential types of the members

    @classmethod
    def of(cls, tree: RatchetTree) -> CredentialSupport:
        supported, in_use = tree.credential_support()
        return cls(supported, set(in_use))

    def admit(self, leaf: LeafNode) -> None:
        caps = frozenset(leaf.capabilities.credentials)
        self.supported = caps if self.supported is None else self.supported & caps
        self.in_use.add(leaf.credential.credential_type)


def validate_leaf_for_group(
    suite: CipherSuite,
    tree: RatchetTree,
    leaf: LeafNode,
    extensions: Sequence[Extension],
    now: int | None,
    credentials: CredentialSupport | None = None,
) -> None:
    """The group-dependent rules of §7.3 for a leaf about to enter the tree.

    ``credentials`` must describe ``tree``'s members; it is computed when
    not given."""
    check_leaf_node_basics(leaf, suite.suite_id)
    check_lifetime(leaf, now)
    check_required_capabilities(leaf, required_capabilities(extensions))
    if credentials is None:
        credentials = CredentialSupport.of(tree)
    cred = leaf.credential.credential_type
    if credentials.supported is not None and cred not in credentials.supported:
        raise InvalidMessage(f"a member does not support credential type {cred}")
    if not credentials.in_use <= set(leaf.capabilities.credentials):
        raise InvalidMessage("new leaf does not support a credential type in use")


def check_unique_keys(tree: RatchetTree, leaf: LeafNode, leaf_index: int | None) -> None:
    """RFC 9420 §7.3, §16.7: a leaf entering ``tree`` at ``leaf_index`` (None:
    a new leaf) shares its encryption key with no node of the tree and its
    signature key with no other member.  A violating tree is refused by every
    later joiner (§12.4.3.1), so letting one in locks new members out."""
    own = None if leaf_index is None else 2 * leaf_index
    if tree.has_encryption_key(leaf.encryption_key, except_node=own):
        raise InvalidMessage("the leaf reuses an encryption key of the tree")
    if tree.has_signature_key(leaf.signature_key, except_leaf=leaf_index):
        raise InvalidMessage("the leaf reuses another member's signature key")


def check_update_leaf(
    suite: CipherSuite,
    group_id: bytes,
    tree: RatchetTree,
    sender: int,
    leaf: LeafNode,
    extensions: Sequence[Extension],
    now: int | None,
) -> None:
    """An Update proposal's LeafNode from leaf ``sender`` (§12.1.2, §7.3)."""
    old = tree.member_leaf(sender)
    if leaf.leaf_node_source != LeafNodeSource.UPDATE:
        raise InvalidMessage("Update leaf must have source update")
    if leaf.encryption_key == old.encryption_key:
        raise InvalidMessage("Update must change the encryption key")
    verify_leaf_node_signature(suite, leaf, group_id, sender)
    validate_leaf_for_group(suite, tree, leaf, extensions, now)
    check_unique_keys(tree, leaf, sender)
    check_successor_credential(old, leaf)


def check_successor_credential(old: LeafNode, new: LeafNode) -> None:
    """RFC 9420 §5.3.1: a member's new credential (Update, commit path, resync)
    must present identifiers "valid as a successor" to the old ones under the
    application's policy.  Samizdat's policy: the credential does not change,
    so a member cannot take another's name (the signature key may change)."""
    if new.credential != old.credential:
        raise InvalidMessage("a member's credential may not change to another identity")


def check_external_joiner(
    tree: RatchetTree, removed: Sequence[tuple[int, LeafNode]], leaf: LeafNode
) -> None:
    """An external commit's joiner leaf against the proposals it carries.

    ``tree`` is the tree after the commit's Remove, before the joiner's leaf
    is added.  RFC 9420 §12.2: the one Remove an external commit may hold is
    the joiner removing "an old version of themselves", whose LeafNode must
    meet the criteria of an Update for the removed leaf, so the credential
    must be the removed member's (Samizdat's rule for "acceptable
    identifiers", §5.3.1).  And §7.3: the joiner's signature key must not be
    another member's (a "rejoin" that keeps the old leaf would break every
    later join, §12.4.3.1).
    """
    for _, old in removed:
        if old.credential != leaf.credential:
            raise InvalidCommit("an external commit may only remove the joiner's own earlier leaf")
    if tree.has_signature_key(leaf.signature_key):
        raise InvalidCommit("the joiner's leaf reuses another member's signature key")


def _check_psk(suite: CipherSuite, psk: PreSharedKeyID, in_reinit_or_branch: bool) -> None:
    if len(psk.psk_nonce) != suite.hash_len:
        raise InvalidCommit("psk_nonce must be KDF.Nh bytes")
    if (
        psk.psktype == PSKType.RESUMPTION
        and psk.usage in (ResumptionPSKUsage.REINIT, ResumptionPSKUsage.BRANCH)
        and not in_reinit_or_branch
    ):
        raise InvalidCommit("reinit/branch resumption PSK outside reinit or branch")


def apply_proposals(
    suite: CipherSuite,
    context: GroupContext,
    tree: RatchetTree,
    proposals: Sequence[ResolvedProposal],
    committer: int | None,
    now: int | None,
    cursor: ProposalCursor | None = None,
) -> AppliedProposals:
    """Validate (§12.2) and apply (§12.3) a committed proposal list.

    ``committer`` is the committer's leaf index, or None for an external
    commit.  ``tree`` is not modified: the result holds a new one.  On
    failure ``cursor.index`` names the offending proposal (None: the list).
    """
    at = cursor if cursor is not None else ProposalCursor()
    at.index = None
    external = committer is None
    kinds = [p.proposal.proposal_type for p in proposals]
    if external:
        if kinds.count(ProposalType.EXTERNAL_INIT) != 1:
            raise InvalidCommit("an external commit needs exactly one ExternalInit")
        if kinds.count(ProposalType.REMOVE) > 1:
            raise InvalidCommit("an external commit may remove at most one member")
        allowed = {ProposalType.EXTERNAL_INIT, ProposalType.REMOVE, ProposalType.PSK}
        if any(k not in allowed for k in kinds):
            raise InvalidCommit("an external commit may only hold ExternalInit, Remove, PSK")
    else:
        if ProposalType.EXTERNAL_INIT in kinds:
            raise InvalidCommit("ExternalInit in a member's commit")
        if ProposalType.REINIT in kinds and len(kinds) > 1:
            raise InvalidCommit("ReInit must be the only proposal")
    if kinds.count(ProposalType.GROUP_CONTEXT_EXTENSIONS) > 1:
        raise InvalidCommit("more than one GroupContextExtensions proposal")
    if any(k not in DEFAULT_PROPOSALS for k in kinds):
        raise InvalidCommit("unsupported proposal type")

    result = AppliedProposals(tree.copy(), context.extensions)
    result.path_required = not proposals or any(k in PATH_REQUIRED for k in kinds)
    new = result.tree

    # GroupContextExtensions first: later proposals are judged against them.
    for i, p in enumerate(proposals):
        body = p.proposal.body
        if isinstance(body, GroupContextExtensions):
            at.index = i
            required_capabilities(body.extensions)  # malformed: this proposal's fault
            result.extensions = body.extensions
            result.extensions_changed = True

    touched: set[int] = set()
    for i, p in enumerate(proposals):
        body = p.proposal.body
        if isinstance(body, Update):
            at.index = i
            sender = p.sender.leaf_index
            if p.sender.sender_type != SenderType.MEMBER or sender is None:
                raise InvalidCommit("Update from a non-member")
            if sender == committer:
                raise InvalidCommit("the committer cannot commit its own Update")
            if sender in touched:
                raise InvalidCommit(f"leaf {sender} is updated or removed twice")
            touched.add(sender)
            # Judged against the tree as updated so far, so two Updates cannot
            # bring in one new key either (§7.3 uniqueness, §16.7).
            check_update_leaf(
                suite, context.group_id, new, sender, body.leaf_node, result.extensions, now
            )
            new.update_leaf(sender, body.leaf_node)
            result.updated.append(sender)

    for i, p in enumerate(proposals):
        body = p.proposal.body
        if isinstance(body, Remove):
            at.index = i
            if body.removed == committer:
                raise InvalidCommit("the committer cannot remove itself")
            if body.removed in touched:
                raise InvalidCommit(f"leaf {body.removed} is updated or removed twice")
            touched.add(body.removed)
            gone = tree.leaf(body.removed)
            if gone is None:
                raise InvalidCommit(f"Remove of blank or absent leaf {body.removed}")
            result.removed.append((body.removed, gone))
            new.remove_leaf(body.removed)

    # §16.7: leaf keys must differ from parent node keys too (the tree's key
    # index covers every node, and the leaves added so far).
    credentials: CredentialSupport | None = None
    for i, p in enumerate(proposals):
        body = p.proposal.body
        if isinstance(body, Add):
            at.index = i
            kp = body.key_package
            validate_key_package(suite, kp, now)
            if credentials is None:
                credentials = CredentialSupport.of(new)
            validate_leaf_for_group(suite, new, kp.leaf_node, result.extensions, now, credentials)
            if new.has_signature_key(kp.leaf_node.signature_key):
                raise InvalidCommit("Add of a client already in the group")
            if new.has_encryption_key(kp.leaf_node.encryption_key):
                raise InvalidCommit("Add reuses an encryption key in the tree")
            result.added.append((new.add_leaf(kp.leaf_node), kp))
            credentials.admit(kp.leaf_node)

    seen_psks: set[bytes] = set()
    for i, p in enumerate(proposals):
        body = p.proposal.body
        at.index = i
        if isinstance(body, PreSharedKey):
            _check_psk(suite, body.psk, in_reinit_or_branch=False)
            encoded = body.psk.to_bytes()
            if encoded in seen_psks:
                raise InvalidCommit("the same PSK is proposed twice")
            seen_psks.add(encoded)
            result.psks.append(body.psk)
        elif isinstance(body, ExternalInit):
            result.external_init = body
        elif isinstance(body, ReInit):
            if body.version < context.version:
                raise InvalidCommit("ReInit to an older protocol version")
            result.reinit = body

    if result.extensions_changed:
        at.index = next(
            i for i, k in enumerate(kinds) if k == ProposalType.GROUP_CONTEXT_EXTENSIONS
        )
        required = required_capabilities(result.extensions)
        for _, leaf in new.members():
            check_required_capabilities(leaf, required)
    return result
