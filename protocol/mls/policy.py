"""The application's say over which proposals a group accepts (RFC 9420 §12.4.2).

RFC 9420 validates proposals structurally; it leaves to the application who
may propose what ("the application MAY ... reject a Commit whose proposals
its policy does not allow").  A :class:`ProposalPolicy` is that hook: the
group asks it about every proposal it receives, every proposal a received
Commit covers, and every cached proposal before committing it.  The default,
:class:`AllowAll`, is plain RFC 9420 behaviour.

A policy sees the state of the epoch the proposal belongs to, never the state
a Commit would produce, and must be deterministic: every member has to reach
the same verdict or the group forks.
"""

from __future__ import annotations

from typing import Protocol

from protocol.mls.group_state import GroupState
from protocol.mls.messages import Proposal, Sender


class ProposalPolicy(Protocol):
    def check(self, state: GroupState, proposer: Sender, proposal: Proposal) -> str | None:
        """None if allowed, else a short human reason (e.g. "only admins may remove others")."""


class AllowAll:
    """The default: RFC 9420 behaviour, every valid proposal is allowed."""

    def check(self, state: GroupState, proposer: Sender, proposal: Proposal) -> None:
        return None
