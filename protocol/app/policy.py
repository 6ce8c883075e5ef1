"""Who may do what in a Samizdat conversation (SPEC.md §8.3, "Admins").

Provides :class:`SamizdatPolicy`, the :class:`~protocol.mls.policy.ProposalPolicy`
every Samizdat client installs on its groups, and :func:`admin_keys` /
:func:`is_admin`, the same rule for the client's own decisions.

Theory of operation
-------------------
RFC 9420 checks that proposals are well-formed; it leaves *who* may propose
what to the application (§12.4.2: a member MAY refuse a Commit whose
proposals its policy does not allow).  Without a rule, any member could
move the group to relays it controls, rename it, close it (ReInit), or
remove everybody else.  The rule is evaluated by every member on receipt,
against the GroupContext of the proposal's epoch, so all members reach the
same verdict (a verdict that differed between members would fork the group).

- The *admins* of a group are the members whose identity key is listed in
  ``GroupMeta.admins``.  If no current member is listed (a group made before
  admins existed, or the last admin left), every member is an admin, so a
  group never ends up with nobody able to manage it.  In a direct (1:1)
  conversation both members are admins.
- Admins only: Add (group kind), Remove of another member, ReInit, and a
  GroupContextExtensions that changes anything but the disappearing timer.
- Anyone: Remove of oneself (leaving), Update, PreSharedKey, and a
  GroupContextExtensions that changes only ``disappearing_ms`` (every member
  can keep copies of what it receives anyway; the change is announced).
- Nobody: ExternalInit (Samizdat publishes no GroupInfo, §8.3), a
  GroupContextExtensions that drops or corrupts GroupMeta, changes the
  conversation kind or leaves a group without admins, and a third member in a
  direct conversation.
"""

from __future__ import annotations

from dataclasses import replace

from protocol.app.group_meta import (
    GROUP_META_EXTENSION,
    ConversationKind,
    GroupMeta,
    find_group_meta,
)
from protocol.errors import DecodeError
from protocol.mls.group_state import GroupState
from protocol.mls.messages import (
    Add,
    ExternalInit,
    GroupContextExtensions,
    Proposal,
    ReInit,
    Remove,
    Sender,
    SenderType,
)
from protocol.mls.tree_structs import Extension


def admin_keys(meta: GroupMeta, member_keys: list[bytes]) -> set[bytes]:
    """The identity keys that count as admins among ``member_keys``."""
    if meta.kind == ConversationKind.DIRECT:
        return set(member_keys)
    listed = {k for k in member_keys if k in meta.admins}
    return listed or set(member_keys)


def is_admin(meta: GroupMeta, member_keys: list[bytes], key: bytes) -> bool:
    return key in admin_keys(meta, member_keys)


class SamizdatPolicy:
    """The proposal policy of Samizdat conversations (see the module docstring)."""

    def check(self, state: GroupState, proposer: Sender, proposal: Proposal) -> str | None:
        try:
            meta = find_group_meta(state.context.extensions)
        except DecodeError:
            meta = None
        if meta is None:
            return None  # not a Samizdat conversation: plain RFC 9420
        body = proposal.body
        members = [leaf.signature_key for _, leaf in state.tree.members()]
        key = None
        if proposer.sender_type == SenderType.MEMBER and proposer.leaf_index is not None:
            key = state.tree.member_leaf(proposer.leaf_index).signature_key
        admin = key is not None and is_admin(meta, members, key)
        if isinstance(body, ExternalInit):
            return "Samizdat conversations take no external joins"
        if isinstance(body, Remove):
            if key is not None and body.removed == proposer.leaf_index:
                return None  # leaving
            return None if admin else "only admins may remove other members"
        if isinstance(body, Add):
            if meta.kind == ConversationKind.DIRECT:
                return None if len(members) < 2 else "a direct conversation has two members"
            return None if admin else "only admins may add members"
        if isinstance(body, ReInit):
            return None if admin else "only admins may close the conversation"
        if isinstance(body, GroupContextExtensions):
            return _check_extensions(state.context.extensions, body.extensions, meta, admin)
        return None


def _check_extensions(
    old_exts: tuple[Extension, ...], new_exts: tuple[Extension, ...], old: GroupMeta, admin: bool
) -> str | None:
    try:
        new = find_group_meta(new_exts)
    except DecodeError as exc:
        return f"malformed group metadata: {exc}"
    if new is None:
        return "the group metadata cannot be removed"
    if new.kind != old.kind:
        return "the conversation kind cannot change"
    if old.kind == ConversationKind.GROUP and old.admins and not new.admins:
        return "a group keeps at least one admin"
    if admin:
        return None
    others_same = _without_meta(old_exts) == _without_meta(new_exts)
    if others_same and replace(new, disappearing_ms=old.disappearing_ms) == old:
        return None  # only the timer changed
    return "only admins may change the group's name, relays or admins"


def _without_meta(exts: tuple[Extension, ...]) -> list[Extension]:
    return [e for e in exts if e.extension_type != GROUP_META_EXTENSION]
