"""The application's say over which proposals a group accepts (RFC 9420 §12.2,
§12.4.2: "An application may extend the above procedure by additional rules").

A :class:`ProposalPolicy` is consulted by :class:`~protocol.mls.group.Group`
for every proposal: on receipt of a standalone proposal (refused: not cached,
``InvalidMessage("policy: ...")``), for every proposal a received Commit
covers (refused: the Commit is ``InvalidCommit("policy: ...")`` and nothing
changes), and when committing (refused cached proposals are left out and
reported as :class:`~protocol.mls.events.ProposalDropped`).  The policy must
be a pure function of its arguments so that every member decides alike.
"""

from __future__ import annotations

from typing import Protocol

from protocol.mls.group_state import GroupState
from protocol.mls.messages import Proposal, Sender


class ProposalPolicy(Protocol):
    def check(self, state: GroupState, proposer: Sender, proposal: Proposal) -> str | None:
        """None if allowed, else a short human reason (e.g. "only admins may remove others")."""


class AllowAll:
    """The default: RFC 9420 behaviour, everything valid is allowed."""

    def check(self, state: GroupState, proposer: Sender, proposal: Proposal) -> None:
        return None
