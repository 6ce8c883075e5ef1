"""Which cached proposals a committer includes (RFC 9420 §12.2, §12.4.1).

Theory of operation
-------------------
Every member caches every valid proposal of the epoch, and by default a
commit covers all of them.  A cached proposal can stop being committable: its
PSK is unknown to the committer, its KeyPackage expired, it conflicts with
another proposal, or the policy refuses it.  Including it would make every
commit fail, so one hostile proposal would freeze the group.  The rule here
is therefore: a cached proposal never blocks a commit.  :func:`select_proposals`

1. judges each cached proposal on its own against the state at commit time
   (the same :func:`~protocol.mls.proposals.apply_proposals` every receiver
   runs, the PSK store, the policy) and leaves out those that fail;
2. applies the SHOULDs of §12.2 among the rest: a Remove beats an Update of the
   same leaf, the latest Update of a leaf beats earlier ones, one Remove per
   leaf, one Add per client, one proposal per PSK, one GroupContextExtensions
   (the committer's own, else the latest), and other proposals beat a ReInit;
3. validates the whole list and, while it fails, leaves out the proposal the
   failure is about (``ProposalCursor``), so conflicts between proposals that
   are each valid cannot block the commit either.

The committer's own by-value proposals are never left out: if they are
invalid on their own, the caller gets the error.

A proposal left out stays cached unless every member would refuse it in any
commit of this epoch: only a policy refusal is forgotten (the policy is a
group-wide rule, the same for every member).  An unknown PSK, a Remove of
the committer itself or a KeyPackage judged expired by this member's clock
are verdicts of this member alone; another member's commit may rightly
include the proposal, and forgetting it would leave this member unable to
process that commit (a fork).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from protocol.errors import CryptoError
from protocol.mls.crypto import CipherSuite
from protocol.mls.errors import InvalidMessage, StateError
from protocol.mls.events import ProposalDropped
from protocol.mls.group_state import GroupState
from protocol.mls.messages import (
    Add,
    AuthenticatedContent,
    GroupContext,
    GroupContextExtensions,
    PreSharedKey,
    PreSharedKeyID,
    Proposal,
    ReInit,
    Remove,
    Sender,
    Update,
)
from protocol.mls.policy import ProposalPolicy
from protocol.mls.proposals import (
    AppliedProposals,
    ProposalCursor,
    ResolvedProposal,
    apply_proposals,
)
from protocol.mls.ratchet_tree import RatchetTree

PSK_UNAVAILABLE = "the committer does not have this PSK"


@dataclass(slots=True)
class ProposalSelection:
    refs: list[bytes]  # cached proposals to commit by reference, in cache order
    dropped: list[ProposalDropped]  # cached proposals left out, with the reason
    forget: set[bytes] = field(default_factory=set)  # invalid or refused: drop from the cache
    # The validated result of applying ``refs`` then the by-value proposals, in
    # that order (what the commit carries), so the committer need not redo it.
    applied: AppliedProposals | None = None


@dataclass(slots=True)
class _Cached:
    ref: bytes
    proposal: Proposal
    sender: Sender

    @property
    def resolved(self) -> ResolvedProposal:
        return ResolvedProposal(self.proposal, self.sender)


def _cached(ref: bytes, auth: AuthenticatedContent) -> _Cached:
    proposal = auth.content.proposal
    assert proposal is not None
    return _Cached(ref, proposal, auth.content.sender)


def select_proposals(
    *,
    cached: Sequence[tuple[bytes, AuthenticatedContent]],
    by_value: Sequence[Proposal],
    state: GroupState,
    policy: ProposalPolicy,
    psk_available: Callable[[PreSharedKeyID], bool],
    now: int | None,
) -> ProposalSelection:
    """The cached proposals ``state.own_leaf`` should commit along with its
    ``by_value`` ones (see the module docstring)."""
    own = state.own_leaf
    mine = [ResolvedProposal(p, Sender.member(own)) for p in by_value]
    for p in mine:
        reason = policy.check(state, p.sender, p.proposal)
        if reason is not None:
            raise StateError(f"policy: {reason}")
    judge = _Judge(state.suite, state.context, state.tree, own, now)
    # The committer's own proposals: their errors are the caller's.
    applied_mine = judge.apply(mine)
    selection = ProposalSelection([], [])

    def drop(c: _Cached, reason: str, *, forget: bool) -> None:
        index = c.sender.leaf_index if c.sender.leaf_index is not None else c.sender.sender_index
        selection.dropped.append(ProposalDropped(c.ref, c.proposal.proposal_type, index, reason))
        if forget:
            selection.forget.add(c.ref)

    # 1. each proposal on its own (an Add together with the Removes, which may
    # take out an old leaf of the same client, §12.2)
    valid: list[_Cached] = []
    entries = [_cached(ref, auth) for ref, auth in cached]
    entries.sort(key=lambda c: isinstance(c.proposal.body, Add))  # stable: Adds last
    context: list[ResolvedProposal] = [p for p in mine if isinstance(p.proposal.body, Remove)]
    for c in entries:
        proposal = c.proposal
        if isinstance(proposal.body, Update) and c.sender.leaf_index == own:
            continue  # our own Update: the commit's path supersedes it (§12.4.1)
        reason = policy.check(state, c.sender, proposal)
        if reason is not None:
            drop(c, f"policy: {reason}", forget=True)
            continue
        if isinstance(proposal.body, PreSharedKey) and not psk_available(proposal.body.psk):
            drop(c, PSK_UNAVAILABLE, forget=False)
            continue
        alone = [c.resolved]
        if isinstance(proposal.body, Add):
            alone = context + alone
        error = judge.error(alone)
        if error is not None:
            drop(c, error, forget=False)
            continue
        if isinstance(proposal.body, Remove) and all(
            r.proposal.body != proposal.body for r in context
        ):
            context.append(c.resolved)
        valid.append(c)
    order = {ref: i for i, (ref, _) in enumerate(cached)}
    valid.sort(key=lambda c: order[c.ref])

    # 2. the preferences of §12.2
    kept = _prefer(valid, by_value, drop)

    # 3. the list as a whole; leave out whatever a failure is pinned on
    while True:
        if not kept:  # ``mine`` alone, already applied above
            selection.applied = applied_mine
            break
        cursor = ProposalCursor()
        error = judge.error([c.resolved for c in kept] + mine, cursor)
        if error is None:
            selection.applied = judge.last
            break
        if not kept:  # cannot happen: ``mine`` alone passed above; keeps the loop bounded
            raise InvalidMessage(error)
        if cursor.index is not None and cursor.index < len(kept):
            # valid alone, so another commit may include it: keep it cached
            drop(kept.pop(cursor.index), error, forget=False)
            continue
        # Not pinned on one cached proposal (the committer's own proposals are
        # valid alone): a cached GroupContextExtensions is the likely cause,
        # else leave every cached proposal out.
        culprits = [c for c in kept if isinstance(c.proposal.body, GroupContextExtensions)]
        for c in culprits or list(kept):
            kept.remove(c)
            drop(c, f"conflicts with the rest of the commit: {error}", forget=False)
    selection.refs = [c.ref for c in kept]
    selection.dropped.sort(key=lambda d: order[d.reference])
    return selection


class _Judge:
    """``apply_proposals`` against the state at commit time, as an error string."""

    def __init__(
        self,
        suite: CipherSuite,
        context: GroupContext,
        tree: RatchetTree,
        own: int,
        now: int | None,
    ) -> None:
        self.suite, self.context, self.tree, self.own, self.now = suite, context, tree, own, now
        self.last: AppliedProposals | None = None  # the result of the last successful error()

    def apply(
        self, proposals: list[ResolvedProposal], cursor: ProposalCursor | None = None
    ) -> AppliedProposals:
        return apply_proposals(
            self.suite, self.context, self.tree, proposals, self.own, self.now, cursor
        )

    def error(
        self, proposals: list[ResolvedProposal], cursor: ProposalCursor | None = None
    ) -> str | None:
        self.last = None
        try:
            self.last = self.apply(proposals, cursor)
        except (InvalidMessage, CryptoError) as exc:
            return str(exc) or type(exc).__name__
        return None


def _prefer(
    valid: list[_Cached],
    by_value: Sequence[Proposal],
    drop: Callable[..., None],
) -> list[_Cached]:
    """§12.2's SHOULDs for a committer holding conflicting valid proposals."""
    removed = {p.body.removed for p in by_value if isinstance(p.body, Remove)}
    added: set[bytes] = set()  # signature keys (the client) and encryption keys of kept Adds
    for p in by_value:
        if isinstance(p.body, Add):
            added |= {p.body.key_package.leaf_node.signature_key}
            added |= {p.body.key_package.leaf_node.encryption_key}
    psks = {p.body.psk.to_bytes() for p in by_value if isinstance(p.body, PreSharedKey)}
    own_gce = any(isinstance(p.body, GroupContextExtensions) for p in by_value)
    latest_update: dict[int, bytes] = {}
    last_gce: bytes | None = None
    for c in valid:
        body = c.proposal.body
        if isinstance(body, Update) and c.sender.leaf_index is not None:
            latest_update[c.sender.leaf_index] = c.ref
        elif isinstance(body, GroupContextExtensions):
            last_gce = c.ref

    kept: list[_Cached] = []
    for c in valid:  # Removes first: they decide which Updates survive
        body = c.proposal.body
        if isinstance(body, Remove):
            if body.removed in removed:
                drop(c, f"leaf {body.removed} is already removed by this commit", forget=False)
            else:
                removed.add(body.removed)
                kept.append(c)
    for c in valid:
        body = c.proposal.body
        if isinstance(body, Remove):
            continue
        if isinstance(body, Update):
            leaf = c.sender.leaf_index
            if leaf in removed:
                drop(c, f"superseded: leaf {leaf} is removed by this commit", forget=False)
            elif latest_update.get(leaf if leaf is not None else -1) != c.ref:
                drop(c, f"superseded by a later Update from leaf {leaf}", forget=False)
            else:
                kept.append(c)
        elif isinstance(body, Add):
            # Resolved here rather than in step 3, so that many Adds sharing
            # a key cost one pass, not one validation round each.
            new = body.key_package.leaf_node
            if new.signature_key in added:
                drop(c, "this client is already added by this commit", forget=False)
            elif new.encryption_key in added:
                drop(c, "another Add of this commit has the same encryption key", forget=False)
            else:
                added |= {new.signature_key, new.encryption_key}
                kept.append(c)
        elif isinstance(body, PreSharedKey):
            encoded = body.psk.to_bytes()
            if encoded in psks:
                drop(c, "this PSK is already in this commit", forget=False)
            else:
                psks.add(encoded)
                kept.append(c)
        elif isinstance(body, GroupContextExtensions):
            if own_gce or c.ref != last_gce:
                drop(c, "superseded by a later GroupContextExtensions", forget=False)
            else:
                kept.append(c)
        else:
            kept.append(c)

    # A ReInit must be alone; other proposals are preferred (§12.2).
    others = [c for c in kept if not isinstance(c.proposal.body, ReInit)]
    reinits = [c for c in kept if isinstance(c.proposal.body, ReInit)]
    if others or by_value:
        for c in reinits:
            drop(c, "a ReInit must be alone in a commit; other proposals go first", forget=False)
        kept = others
    else:
        for c in reinits[1:]:
            drop(c, "only one ReInit per commit", forget=False)
        kept = reinits[:1]
    refs = {c.ref for c in kept}
    return [c for c in valid if c.ref in refs]  # in cache order
