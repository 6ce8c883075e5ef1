"""The conversation's name, kind, timer and relay list, as MLS group state.

Provides :class:`MailboxRef`, :class:`GroupMeta`, the private GroupContext
extension type :data:`GROUP_META_EXTENSION` (0xF5A1) with
:func:`meta_extension` / :func:`find_group_meta`, :func:`new_mailbox_ref`, and
:func:`ordering_mailbox`, the deterministic fail-over rule.

Theory of operation
-------------------
``GroupMeta`` lives in the GroupContext's extensions, so it is part of the
MLS key schedule: every member of an epoch holds the same bytes, or their
epoch secrets differ and they cannot talk at all.  It changes only through a
GroupContextExtensions proposal in a Commit, which travels as a
PrivateMessage; the relay never sees it.  (A client MUST NOT publish a
GroupInfo of a Samizdat group: it would reveal the mailbox seeds.)

Each :class:`MailboxRef` carries the Ed25519 *seeds* of the mailbox's read
and write keys: every member can read and post, and anyone removed from the
group keeps them, so a client SHOULD replace the mailboxes (fresh
:func:`new_mailbox_ref`) in the Commit that removes a member.

Ordering rule: Commits are accepted in the order of the *ordering relay*,
the first mailbox in list order whose relay is reachable.  Because every
member holds the same list (above), members that can reach the same relays
pick the same one; the list is the only input besides reachability.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Self

import nacl.bindings

from protocol.app import (
    Rng,
    check_len,
    check_range,
    pull_fixed_ids,
    pull_text,
    pull_url,
    pull_vector_max,
    push_fixed,
    push_fixed_ids,
    push_text,
    push_url,
    push_vector_max,
    random_bytes,
)
from protocol.codec import Reader, Writer, decode_exact
from protocol.errors import DecodeError, LocalError
from protocol.mls.tree_structs import Extension, Struct, find_extension

#: Private-use ExtensionType (RFC 9420 §17.3: 0xF000-0xFFFF).
GROUP_META_EXTENSION = 0xF5A1
MAILBOX_ID_LEN = 32
SEED_LEN = 32
MAX_GROUP_NAME_LEN = 256
#: BRIEF §4 expects 2-3 relays per conversation; 8 leaves room for moves.
MAX_MAILBOXES = 8
IDENTITY_KEY_LEN = 32  # Ed25519 signature key (cipher suite 1)
MAX_ADMINS = 256
UINT64_MAX = (1 << 64) - 1


class ConversationKind(IntEnum):
    DIRECT = 1
    GROUP = 2


@dataclass(frozen=True, slots=True)
class MailboxRef(Struct):
    """A conversation mailbox and the seeds of its relay read/write keys."""

    relay_url: str
    mailbox_id: bytes
    read_seed: bytes
    write_seed: bytes

    def __post_init__(self) -> None:
        check_len(self.mailbox_id, MAILBOX_ID_LEN, "mailbox_id")
        check_len(self.read_seed, SEED_LEN, "read_seed")
        check_len(self.write_seed, SEED_LEN, "write_seed")

    def encode(self, w: Writer) -> None:
        push_url(w, self.relay_url)
        push_fixed(w, self.mailbox_id, MAILBOX_ID_LEN, "mailbox_id")
        push_fixed(w, self.read_seed, SEED_LEN, "read_seed")
        push_fixed(w, self.write_seed, SEED_LEN, "write_seed")

    @classmethod
    def decode(cls, r: Reader) -> Self:
        relay_url = pull_url(r)
        mailbox_id = r.pull_bytes(MAILBOX_ID_LEN)
        read_seed = r.pull_bytes(SEED_LEN)
        return cls(relay_url, mailbox_id, read_seed, r.pull_bytes(SEED_LEN))

    def read_key(self) -> bytes:
        """The Ed25519 public read key to register with the relay."""
        return bytes(nacl.bindings.crypto_sign_seed_keypair(self.read_seed)[0])

    def write_key(self) -> bytes:
        """The Ed25519 public write key to register with the relay."""
        return bytes(nacl.bindings.crypto_sign_seed_keypair(self.write_seed)[0])


def new_mailbox_ref(relay_url: str, rng: Rng) -> MailboxRef:
    """A fresh mailbox on ``relay_url``: random id and key seeds from ``rng``."""
    return MailboxRef(
        relay_url,
        random_bytes(rng, MAILBOX_ID_LEN, "mailbox_id"),
        random_bytes(rng, SEED_LEN, "read_seed"),
        random_bytes(rng, SEED_LEN, "write_seed"),
    )


@dataclass(frozen=True, slots=True)
class GroupMeta(Struct):
    """``GroupMeta`` (SPEC.md §8.3); ``mailboxes[0]`` is the preferred orderer.

    ``admins`` are the identity keys that may change the group's name, relay
    list and admins, add members and remove others (the rules are in
    :mod:`protocol.app.policy`).  It is encoded only when non-empty, so a
    GroupMeta written before admins existed still decodes (to no admins)
    and every value has exactly one encoding."""

    name: str
    mailboxes: tuple[MailboxRef, ...]
    disappearing_ms: int = 0
    kind: ConversationKind = ConversationKind.GROUP
    admins: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        check_range(len(self.mailboxes), 1, MAX_MAILBOXES, "number of mailboxes")
        check_range(len(self.admins), 0, MAX_ADMINS, "number of admins")
        for key in self.admins:
            check_len(key, IDENTITY_KEY_LEN, "admin identity key")
        if len(set(self.admins)) != len(self.admins):
            raise LocalError("an admin appears twice")
        check_range(self.disappearing_ms, 0, UINT64_MAX, "disappearing_ms")
        if not isinstance(self.kind, ConversationKind):
            raise LocalError(f"unknown conversation kind {self.kind}")
        if _duplicate_relay(self.mailboxes):
            raise LocalError("a relay appears twice in the mailbox list")

    def encode(self, w: Writer) -> None:
        push_text(w, self.name, MAX_GROUP_NAME_LEN, "name")
        push_vector_max(w, self.mailboxes, _push_mailbox, MAX_MAILBOXES, "mailboxes", min_count=1)
        w.push_uint64(self.disappearing_ms)
        w.push_uint8(self.kind)
        if self.admins:
            push_fixed_ids(w, self.admins, IDENTITY_KEY_LEN, MAX_ADMINS, "admins")

    @classmethod
    def decode(cls, r: Reader) -> Self:
        name = pull_text(r, MAX_GROUP_NAME_LEN, "name")
        mailboxes = pull_vector_max(r, MailboxRef.decode, MAX_MAILBOXES, "mailboxes", min_count=1)
        if _duplicate_relay(mailboxes):
            raise DecodeError("a relay appears twice in the mailbox list")
        disappearing_ms = r.pull_uint64()
        raw_kind = r.pull_uint8()
        try:
            kind = ConversationKind(raw_kind)
        except ValueError:
            raise DecodeError(f"unknown conversation kind {raw_kind}") from None
        admins: tuple[bytes, ...] = ()
        if not r.eof():  # absent in GroupMeta written before admins existed
            admins = pull_fixed_ids(r, IDENTITY_KEY_LEN, MAX_ADMINS, "admins")
            if not admins:
                raise DecodeError("an empty admin list is encoded by leaving it out")
            if len(set(admins)) != len(admins):
                raise DecodeError("an admin appears twice")
        return cls(name, mailboxes, disappearing_ms, kind, admins)

    @property
    def relay_urls(self) -> tuple[str, ...]:
        return tuple(m.relay_url for m in self.mailboxes)


def _duplicate_relay(mailboxes: Sequence[MailboxRef]) -> bool:
    urls = [m.relay_url for m in mailboxes]
    return len(set(urls)) != len(urls)


def _push_mailbox(w: Writer, mailbox: MailboxRef) -> None:
    mailbox.encode(w)


def encode_group_meta(meta: GroupMeta) -> bytes:
    return meta.to_bytes()


def decode_group_meta(data: bytes) -> GroupMeta:
    return decode_exact(data, GroupMeta.decode)


def meta_extension(meta: GroupMeta) -> Extension:
    """The GroupContext extension that carries ``meta``."""
    return Extension(GROUP_META_EXTENSION, meta.to_bytes())


def find_group_meta(extensions: Sequence[Extension]) -> GroupMeta | None:
    """The group's GroupMeta, None if absent; DecodeError if malformed or repeated."""
    if sum(1 for e in extensions if e.extension_type == GROUP_META_EXTENSION) > 1:
        raise DecodeError("GroupMeta extension appears more than once")
    ext = find_extension(extensions, GROUP_META_EXTENSION)
    return None if ext is None else decode_group_meta(ext.extension_data)


def ordering_mailbox(meta: GroupMeta, reachable: Callable[[str], bool]) -> MailboxRef | None:
    """The ordering relay's mailbox: the first in list order whose relay is reachable.

    ``reachable(relay_url)`` is the caller's current view (a connected
    WebSocket, or a failed attempt within the backoff window).  None if no
    relay is reachable: Commits wait, application messages still go to every
    relay.
    """
    for mailbox in meta.mailboxes:
        if reachable(mailbox.relay_url):
            return mailbox
    return None
