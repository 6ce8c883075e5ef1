"""The client's records: identity, contacts, conversations, history entries.

Records are small dataclasses serialized as JSON (bytes as hex) and stored
only inside the encrypted store (:mod:`client.store`), never in clear.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Self

# store namespaces
NS_CONFIG = "config"
NS_CONTACTS = "contacts"
NS_CONVS = "conversations"
NS_GROUPS = "groups"
NS_STATUS = "status"
NS_OUTBOX = "outbox"
NS_KEY_PACKAGES = "key-packages"
NS_SEEN = "seen"
NS_CURSORS = "cursors"
NS_PEOPLE = "people"  # display names of group members who are not contacts
NS_EXPIRY = "expiry"  # conv id || u64 history seq -> when it is due (client.expiry)
# every MLS group id this client ever held (created, joined, left or removed
# from): a Welcome for one of them is refused (RFC 9420 §12.4.3.1)
NS_GROUP_IDS = "group-ids"
NS_INVITES = "invites"  # our invites: one record per invite id
NS_INBOXES = "inboxes"  # identity key -> inboxes from their latest Profile (JSON list)
NS_AWAIT = "awaiting"  # message id -> Awaiting: our messages not yet confirmed delivered


def history_ns(conv_id: bytes) -> str:
    return "history:" + conv_id.hex()


class Record:
    """JSON (de)serialization for the dataclass records below."""

    def to_json(self) -> bytes:
        return json.dumps(_encode(asdict(self)), sort_keys=True).encode()  # type: ignore[call-overload]

    @classmethod
    def from_json(cls, data: bytes) -> Self:
        raw = json.loads(data)
        names = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        kwargs = {k: _decode(v, str(names[k].type)) for k, v in raw.items() if k in names}
        return cls(**kwargs)


def _encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$b": value.hex()}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any, _type: str = "") -> Any:
    if isinstance(value, dict):
        if set(value) == {"$b"}:
            return bytes.fromhex(value["$b"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


@dataclass
class Inbox(Record):
    """One of our inbox mailboxes (for Welcomes and contact requests)."""

    relay_url: str
    mailbox_id: bytes
    read_seed: bytes
    write_seed: bytes


@dataclass
class Identity(Record):
    signature_priv: bytes  # Ed25519 seed: also the MLS signature key (suite 1)
    signature_pub: bytes
    name: str
    relays: list[str] = field(default_factory=list)
    inboxes: list[Inbox] = field(default_factory=list)
    created_ms: int = 0
    # True once no invite link or Profile can hold the inboxes' write seeds:
    # identities made since invites have their own mailboxes (SPEC.md §8.5).
    # Identities stored by older versions lack the field: False.
    inbox_private: bool = False
    # The SOCKS5 proxy every relay connection goes through ("" = none), a
    # setting of the profile, so no later command forgets it (SPEC.md §7.1).
    proxy: str = ""
    # Private routing (SPEC.md §7.14): the relay of ``relays`` that posts to
    # the others go through ("" = post directly), and whether a post may go
    # directly when it fails (default: no, it waits: a direct post shows our
    # address to the destination relay).
    forwarder: str = ""
    forward_fallback: bool = False

    @classmethod
    def from_json(cls, data: bytes) -> Identity:
        ident = super().from_json(data)
        ident.inboxes = [i if isinstance(i, Inbox) else Inbox(**i) for i in ident.inboxes]
        return ident


@dataclass
class ContactInbox(Record):
    relay_url: str
    mailbox_id: bytes
    write_seed: bytes


@dataclass
class Contact(Record):
    identity_key: bytes
    name: str = ""
    verified: bool = False
    verified_key: bytes = b""
    key_changed: bool = False
    conversation: bytes = b""  # group id of the 1:1 conversation
    inboxes: list[ContactInbox] = field(default_factory=list)
    # the inboxes we gave this contact alone (we read them): SPEC.md §8.5
    my_inboxes: list[Inbox] = field(default_factory=list)
    key_packages: list[bytes] = field(default_factory=list)  # MLSMessage(KeyPackage)s to add them
    kps_published: int = 0  # our suite-1 KeyPackages this contact holds and has not used
    # the same for each other suite (hex id -> count): SPEC.md §4.1.1
    suite_kps_published: dict[str, int] = field(default_factory=dict)

    def published(self, suite: int) -> int:
        """How many of our KeyPackages of ``suite`` this contact holds."""
        if suite == 1:
            return self.kps_published
        return self.suite_kps_published.get(f"{suite:#06x}", 0)

    def set_published(self, suite: int, count: int) -> None:
        if suite == 1:
            self.kps_published = count
        else:
            self.suite_kps_published[f"{suite:#06x}"] = count

    @classmethod
    def from_json(cls, data: bytes) -> Contact:
        c = super().from_json(data)
        c.inboxes = [i if isinstance(i, ContactInbox) else ContactInbox(**i) for i in c.inboxes]
        c.my_inboxes = [i if isinstance(i, Inbox) else Inbox(**i) for i in c.my_inboxes]
        return c


@dataclass
class InviteRecord(Record):
    """One invite we handed out: its own mailboxes (one per relay, so its own
    relay quota), how many contact requests it may still open, and its state.

    ``state`` is ``active``, ``used`` (``uses`` reached ``max_uses``),
    ``expired`` or ``revoked``; only an active, unexpired invite's mailboxes
    are read.  ``deleted`` says the relays confirmed deleting them."""

    invite_id: bytes
    created_ms: int
    expires_at_ms: int
    max_uses: int
    key_package_ref: bytes
    mailboxes: list[Inbox] = field(default_factory=list)
    uses: int = 0
    state: str = "active"
    deleted: bool = False
    accepted: list[bytes] = field(default_factory=list)  # identity keys it brought
    # the mailbox holding the encrypted invite a short link names (0 or 1 of
    # them; never read by us, deleted with the others): SPEC.md §8.5
    blob: list[Inbox] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: bytes) -> InviteRecord:
        r = super().from_json(data)
        r.mailboxes = [i if isinstance(i, Inbox) else Inbox(**i) for i in r.mailboxes]
        r.blob = [i if isinstance(i, Inbox) else Inbox(**i) for i in r.blob]
        return r

    def current_state(self, now_ms: int) -> str:
        if self.state == "active" and now_ms >= self.expires_at_ms:
            return "expired"
        return self.state


@dataclass
class SenderTrack(Record):
    """Per-sender sequence numbers seen: gaps are missing messages."""

    max_seq: int = 0
    missing: list[int] = field(default_factory=list)
    gap_since: float = 0.0  # clock time the oldest unreported gap was seen
    heard_at: float = 0.0  # clock time of the sender's latest message here
    reported: int = 0  # missing seqs up to this one were reported to the user


@dataclass
class Conversation(Record):
    group_id: bytes
    kind: str  # "direct" | "group"
    name: str = ""
    created_ms: int = 0
    unread: int = 0
    my_seq: int = 0  # our last sender_seq here
    disappearing_ms: int = 0
    left: bool = False
    # identity key of the member whose commit removed us: the removal is their
    # claim, which a removed member cannot check against the others (SPEC §8.11)
    removed_by: bytes = b""
    # identity keys of members who left or were removed: they cannot be added
    # back to this group (their clients refuse the Welcome, RFC 9420 §12.4.3.1)
    former_members: list[bytes] = field(default_factory=list)
    senders: dict[str, Any] = field(default_factory=dict)  # identity hex -> SenderTrack dict
    events: list[str] = field(default_factory=list)  # warnings shown to the user (bounded)

    def track(self, identity: bytes) -> SenderTrack:
        raw = self.senders.get(identity.hex())
        return SenderTrack(**raw) if raw else SenderTrack()

    def set_track(self, identity: bytes, track: SenderTrack) -> None:
        self.senders[identity.hex()] = asdict(track)

    def note(self, text: str) -> None:
        self.events.append(text)
        del self.events[:-50]


@dataclass
class HistoryEntry(Record):
    message_id: bytes
    sender: bytes  # identity key; ours for sent messages
    kind: str  # text | article | file | event
    sent_at_ms: int
    received_at_ms: int
    text: str = ""
    title: str = ""
    file: dict[str, Any] = field(default_factory=dict)  # name, media_type, size, file_id
    expires_at_ms: int = 0
    outgoing: bool = False


@dataclass
class MessageStatus(Record):
    """Delivery state of one of our messages: sent -> on relay -> delivered."""

    message_id: bytes
    conversation: bytes
    relays_stored: list[str] = field(default_factory=list)
    delivered_to: list[bytes] = field(default_factory=list)
    read_by: list[bytes] = field(default_factory=list)
    recipients: int = 0


@dataclass
class Awaiting(Record):
    """One of our messages whose delivery receipts are not all in: what the
    delivery watch needs to alert and to send it again (client/delivery.py)."""

    message_id: bytes
    conversation: bytes
    mls_message: bytes  # the MLS ciphertext, re-posted unchanged on retry
    deadline: float  # clock time of the next alert
    expected: list[bytes] = field(default_factory=list)  # identity keys that owe a receipt
    refused: dict[str, str] = field(default_factory=dict)  # relay url -> refusal
    retried: bool = False
    sent_at: float = 0.0  # clock time it was sent


@dataclass
class OutboxItem(Record):
    """A sealed envelope not yet acknowledged by one relay (survives restarts)."""

    relay_url: str
    mailbox_id: bytes
    msg_id: bytes
    sealed: bytes
    conversation: bytes = b""
    message_id: bytes = b""
    created_ms: int = 0
    write_seed: bytes = b""  # for a contact's inbox (a capability from their invite)
