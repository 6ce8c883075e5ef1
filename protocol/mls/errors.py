"""Errors of the MLS layer, each with its stable code (SPEC.md "Error codes").

All derive from :class:`protocol.errors.RemoteError` (the peer or relay sent
something we reject) except :class:`StateError`, a caller's misuse.  Raising
any of them during message processing guarantees the group state is
unchanged (SPEC.md, "Atomic processing").
"""

from __future__ import annotations

from protocol.errors import LocalError, RemoteError


class InvalidMessage(RemoteError):
    """Well-formed bytes whose meaning violates RFC 9420 (a MUST not met)."""

    code = 20


class WrongEpoch(RemoteError):
    """A message for an epoch other than the group's current one."""

    code = 21


class ReplayedMessage(RemoteError):
    """A ratchet generation that was already consumed (replay or duplicate)."""

    code = 22


class GenerationTooFar(RemoteError):
    """A generation beyond the forward-ratchet limit (RFC 9420 §15.3)."""

    code = 23


class InvalidCommit(InvalidMessage):
    """A Commit that fails the validation of RFC 9420 §12.4.2."""

    code = 24


class UnknownMember(InvalidMessage):
    """A sender or leaf index that names no member."""

    code = 25


class StateError(LocalError):
    """The operation is not valid in the group's current state."""

    code = 26
