"""The engine's core: lifecycle, relay plumbing, mailboxes and records.

See :mod:`client.engine` for the theory of operation of the whole engine;
this module holds the state every other part reads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from client.model import (
    NS_CONFIG,
    NS_CONTACTS,
    NS_CONVS,
    NS_CURSORS,
    NS_GROUP_IDS,
    NS_GROUPS,
    NS_INVITES,
    NS_KEY_PACKAGES,
    NS_PEOPLE,
    Contact,
    ContactInbox,
    Conversation,
    HistoryEntry,
    Identity,
    InviteRecord,
)
from client.relay_client import CLOSE_TIMEOUT, RelayUnavailable, cancel_and_wait
from client.sessions import RelaySessions, SessionPolicy
from client.store import Store
from client.suites import CLIENT_SUITES, check_suite
from protocol.app.envelope import Reassembler
from protocol.app.group_meta import (
    GROUP_META_EXTENSION,
    GroupMeta,
    MailboxRef,
    find_group_meta,
)
from protocol.app.messages import (
    AppMessage,
    Article,
    File,
    Text,
)
from protocol.app.policy import SamizdatPolicy, admin_keys
from protocol.app.sealed import seal_key
from protocol.errors import DecodeError, LocalError, RemoteError, SamizdatError
from protocol.mls.crypto import get_suite
from protocol.mls.events import (
    EpochAdvanced,
    GroupEvent,
)
from protocol.mls.group import Group
from protocol.mls.key_package import (
    KeyPackageBundle,
    SigningIdentity,
    create_key_package,
)
from protocol.mls.messages import MLSMessage
from protocol.mls.tree_structs import (
    Capabilities,
    Credential,
    Extension,
    ExtensionType,
    KeyPackage,
    RequiredCapabilities,
)
from protocol.mls.welcome import key_package_ref

log = logging.getLogger(__name__)

SUITE_ID = 1
SUITE = get_suite(SUITE_ID)
# Our leaves support the GroupMeta extension, and every Samizdat group requires
# it, so a client that cannot read the relay list cannot be added.  They list
# every suite we offer (RFC 9420 §7.2), post-quantum ones included (SPEC §4.1.1).
CAPABILITIES = Capabilities((1,), CLIENT_SUITES, (GROUP_META_EXTENSION,), (), (1,))
REQUIRED = Extension(
    ExtensionType.REQUIRED_CAPABILITIES,
    RequiredCapabilities((GROUP_META_EXTENSION,), (), ()).to_bytes(),
)
KEY_PACKAGE_STOCK = 3  # KeyPackages each contact holds so they can add us offline
INVITE_LIFETIME_MS = 30 * 24 * 3600 * 1000
COMMIT_TIMEOUT = 30.0
# seconds a handshake other relays delivered may wait for the ordering relay
HOLD_TIMEOUT = 10.0
# seconds a mailbox replaced in GroupMeta (removal, relay move) is still read:
# members a commit behind go on posting there meanwhile (SPEC.md §8.3)
RETIRED_GRACE = 300.0
MAX_CONVERSATION_RELAYS = 3


def now_ms() -> int:
    return int(time.time() * 1000)


def rng(n: int) -> bytes:
    return os.urandom(n)


class EngineError(LocalError):
    """A request the engine cannot carry out (unknown contact, no relays...)."""

    code = 50


@dataclass
class Notice:
    """Something the user should see (a front end shows it)."""

    conversation: bytes | None
    text: str
    warning: bool = False


@dataclass
class _Mailbox:
    conv_id: bytes | None  # None for our inbox
    relay_url: str
    mailbox_id: bytes
    read_seed: bytes
    write_seed: bytes
    key: bytes  # seal key
    old_keys: tuple[bytes, ...] = ()  # seal keys before a rotation, for messages in flight
    invite_id: bytes = b""  # set for the mailbox of one of our invites (SPEC.md §8.5)
    retired: float = 0.0  # monotonic time it left GroupMeta (still read, never written)


@dataclass
class _PendingOp:
    """A commit in flight and what to do once it is merged."""

    redo: Callable[[], Awaitable[None]] | None
    welcomes: list[tuple[bytes, list[ContactInbox]]] = field(default_factory=list)
    after: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    done: asyncio.Future[None] | None = None
    retried: bool = False


class EngineCore(ABC):
    """State and plumbing shared by every part of the engine."""

    def __init__(self, store: Store, identity: Identity, *, proxy: str | None = None) -> None:
        self.store = store
        self.identity = identity
        self.proxy = proxy
        # one per relay: its isolated connections (SPEC.md §7.1 "Connection roles")
        self.relays: dict[str, RelaySessions] = {}
        self.session_policy = SessionPolicy()
        self.local_addr: str | None = None  # source address of direct connections (tests)
        # (connect, request) seconds for relay sessions made from now on; None:
        # the policy's.  The CLI shortens them and fails fast (client.cli.common).
        self.relay_timeouts: tuple[float, float] | None = None
        self.groups: dict[bytes, Group] = {}
        self.notices: list[Notice] = []
        self.listeners: list[Callable[[str, bytes | None], None]] = []
        self._mailboxes: dict[bytes, _Mailbox] = {}
        self._reassemblers: dict[bytes, Reassembler] = {}  # one per mailbox (per relay)
        # conv -> handshakes held for the ordering relay: (relay, seq, payload, held since)
        self._held: dict[bytes, list[tuple[str, int, bytes, float]]] = {}
        # conv -> relays that withheld handshakes others delivered (skipped as orderer)
        self._suspect: dict[bytes, set[str]] = {}
        self._pending: dict[bytes, _PendingOp] = {}
        self._receipts: dict[bytes, list[bytes]] = {}
        self._lock = asyncio.Lock()
        self._flush_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[object]] = set()
        self._receipt_task: asyncio.Task[None] | None = None
        self._acks: dict[tuple[str, bytes], int] = {}  # inbox acks not yet sent
        self._ack_task: asyncio.Task[None] | None = None
        self._invite_task: asyncio.Task[None] | None = None
        self._invite_junk: dict[bytes, int] = {}  # invite id -> junk items read (§8.5)
        self._accept_lock = asyncio.Lock()  # one pass over the queued accepts at a time
        self._accepting = asyncio.Lock()  # one invite accepted at a time (no twin contact)
        self._accept_task: asyncio.Task[None] | None = None
        self.accept_log: list[str] = []  # what became of queued accepts (shown by the CLI)
        self._hold_task: asyncio.Task[None] | None = None
        self.hold_timeout = HOLD_TIMEOUT
        self._forks: dict[bytes, set[int]] = {}  # conv -> epochs with a detected fork
        self._refusals: dict[tuple[str, str], float] = {}  # (relay, error) -> last notice
        self._retry_delay: dict[str, float] = {}  # relay -> current retry backoff
        self._retry_tasks: dict[str, asyncio.Task[object]] = {}
        self._post_not_before: dict[str, float] = {}  # relay -> last jittered post start
        # outbox key (msg id + mailbox id) -> the task posting it now: a flush
        # leaves it to that task (it keeps its jittered time and its place)
        self._posting: dict[bytes, asyncio.Task[bool]] = {}
        self._post_turns: dict[str, asyncio.Event] = {}  # relay -> its latest post's turn
        self._closing = False
        self.signer = SigningIdentity(
            Credential.basic(identity.signature_pub),
            identity.signature_priv,
            identity.signature_pub,
        )

    @abstractmethod
    async def _on_deliver(self, url: str, mailbox_id: bytes, seq: int, sealed: bytes) -> None:
        """Handle one envelope a relay delivered (see :mod:`client.inbound`)."""

    @abstractmethod
    async def _drain_held(self) -> None:
        """Process handshakes held for the ordering relay (:mod:`client.inbound`)."""

    @abstractmethod
    async def flush_outbox(self, relay_url: str | None = None) -> int:
        """Retry queued envelopes (:mod:`client.outbound`)."""

    @abstractmethod
    def _record_events(self, conv_id: bytes, events: list[GroupEvent]) -> None:
        """Turn group events into history and notices (:mod:`client.inbound`)."""

    @abstractmethod
    async def _on_inbox_welcome(self, mb: _Mailbox, welcome: bytes) -> None:
        """A Welcome arrived in one of our inboxes (:mod:`client.invites`)."""

    @abstractmethod
    def _after_send(
        self, conv_id: bytes, group: Group, message: AppMessage, mls_message: bytes
    ) -> None:
        """Remember a message for the delivery watch (:mod:`client.delivery`)."""

    @abstractmethod
    def _note_refusal(self, message_id: bytes, relay_url: str, exc: RemoteError) -> None:
        """Record a relay's refusal for the delivery alert (:mod:`client.delivery`)."""

    @abstractmethod
    async def _introduce(self, conv_id: bytes) -> None:
        """Send our profile and KeyPackages to a new conversation (:mod:`client.engine`)."""

    def _only_member_left(self, conv_id: bytes) -> bool:
        return len(self.groups[conv_id].members()) <= 1

    # -- lifecycle -------------------------------------------------------------

    def _load(self) -> None:
        for key, value in self.store.items(NS_GROUPS):
            self._hold_group(key, Group.from_bytes(value))

    def _hold_group(self, conv_id: bytes, group: Group) -> None:
        """Keep ``group`` as conversation ``conv_id``: install Samizdat's
        proposal policy (SPEC §8.3) and remember its id for good."""
        group.policy = SamizdatPolicy()
        self.groups[conv_id] = group
        if self.store.get(NS_GROUP_IDS, conv_id) is None:
            self.store.put(NS_GROUP_IDS, conv_id, b"")

    def _known_group_id(self, group_id: bytes) -> bool:
        """Did we ever hold this group (active, left or removed)?"""
        return (
            group_id in self.groups
            or self.store.get(NS_GROUP_IDS, group_id) is not None
            or self.store.get(NS_CONVS, group_id) is not None
        )

    def save_identity(self) -> None:
        self.store.put(NS_CONFIG, b"identity", self.identity.to_json())

    async def connect(self) -> None:
        """Open every relay we use and subscribe to every mailbox."""
        self._index_mailboxes()
        for mb in self._mailboxes.values():
            client = self._relay(mb.relay_url)
            client.start()
        await asyncio.gather(
            *(self._subscribe(mb) for mb in list(self._mailboxes.values())),
            return_exceptions=True,
        )
        await self._ensure_inboxes()

    async def close(self) -> None:
        """Shut down in order, each step bounded: stop starting work, cancel
        and await our tasks, close every relay (sockets, sessions), then the
        store.  Returns even if a task ignores its cancellation."""
        self._closing = True
        stuck = await cancel_and_wait(list(self._tasks), CLOSE_TIMEOUT)
        await asyncio.gather(*(r.close() for r in self.relays.values()), return_exceptions=True)
        self.relays.clear()
        # a delivery handled while the relays closed may have started more
        stuck = await cancel_and_wait([*stuck, *self._tasks], CLOSE_TIMEOUT)
        if stuck:
            log.warning("%d engine task(s) did not stop", len(stuck))
        self.store.close()

    def _relay(self, url: str) -> RelaySessions:
        """The (started) sessions of one relay."""
        if self._closing:
            raise RelayUnavailable("the client is shutting down")
        client = self.relays.get(url)
        if client is None:
            policy = self.session_policy
            if self.relay_timeouts is not None:
                connect, request = self.relay_timeouts
                policy = replace(
                    policy,
                    connect_timeout=connect,
                    request_timeout=request,
                    fail_fast_readers=True,
                )
            client = RelaySessions(
                url,
                self._on_deliver,
                on_state=self._on_relay_state,
                proxy=self.proxy,
                policy=policy,
                local_addr=self.local_addr,
            )
            self.relays[url] = client
        client.start()
        return client

    def _emit(self, what: str, conv: bytes | None = None) -> None:
        for listener in self.listeners:
            try:
                listener(what, conv)
            except Exception:
                log.exception("listener failed")

    def _notice(self, conv: bytes | None, text: str, warning: bool = False) -> None:
        self.notices.append(Notice(conv, text, warning))
        del self.notices[:-200]
        if conv is not None:
            record = self.conversation(conv)
            if record is not None:
                record.note(("WARNING: " if warning else "") + text)
                self._save_conv(record)
        self._emit("notice", conv)

    def _on_relay_state(self, url: str, state: str) -> None:
        self._emit("relay", None)
        # On connect: flush the outbox.  On failure: fail-over, so handshakes
        # held from the next relay in line may now be processed.
        work = self._after_connect(url) if state == "connected" else self._drain_held()
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _after_connect(self, url: str) -> None:
        await self._drain_held()
        await self.flush_outbox(url)

    def relay_states(self) -> dict[str, str]:
        urls = {mb.relay_url for mb in self._mailboxes.values()} | set(self.identity.relays)
        return {u: (self.relays[u].state if u in self.relays else "idle") for u in sorted(urls)}

    # -- mailboxes ---------------------------------------------------------------

    def _index_mailboxes(self) -> None:
        """Rebuild the mailbox index from our inboxes and every active group's
        GroupMeta.  A mailbox whose write seed changed keeps its previous seal
        keys (at most 3): envelopes sealed before the rotation may still be in
        flight, and only members ever held those keys."""
        previous = self._mailboxes
        self._mailboxes = {}
        entries: list[tuple[bytes | None, str, bytes, bytes, bytes, bytes]] = [
            (None, i.relay_url, i.mailbox_id, i.read_seed, i.write_seed, b"")
            for i in self.identity.inboxes
        ]
        for contact in self.contacts():
            entries.extend(
                (None, i.relay_url, i.mailbox_id, i.read_seed, i.write_seed, b"")
                for i in contact.my_inboxes
            )
        wall_ms = now_ms()
        for invite in self.invites():
            if invite.current_state(wall_ms) == "active":
                entries.extend(
                    (None, i.relay_url, i.mailbox_id, i.read_seed, i.write_seed, invite.invite_id)
                    for i in invite.mailboxes
                )
        for conv_id, group in self.groups.items():
            meta = find_group_meta(group.extensions)
            if meta is not None and group.active:
                entries.extend(
                    (conv_id, r.relay_url, r.mailbox_id, r.read_seed, r.write_seed, b"")
                    for r in meta.mailboxes
                )
        for owner, url, mailbox_id, read_seed, write_seed, invite_id in entries:
            key = seal_key(write_seed)
            old = previous.get(mailbox_id)
            old_keys: tuple[bytes, ...] = ()
            if old is not None:
                old_keys = old.old_keys if old.key == key else (old.key, *old.old_keys)[:3]
            self._mailboxes[mailbox_id] = _Mailbox(
                owner, url, mailbox_id, read_seed, write_seed, key, old_keys, invite_id
            )
        now = time.monotonic()
        for mailbox_id, old in previous.items():
            if mailbox_id in self._mailboxes or old.conv_id is None:
                continue
            owner_group = self.groups.get(old.conv_id)
            retired = old.retired or now
            if owner_group is not None and owner_group.active and now - retired < RETIRED_GRACE:
                self._mailboxes[mailbox_id] = replace(old, retired=retired)

    async def _subscribe(self, mb: _Mailbox) -> None:
        client = self._relay(mb.relay_url)
        client.start()
        cursor = self.store.get(NS_CURSORS, mb.mailbox_id)
        from_seq = int(cursor.decode()) if cursor else 0
        try:
            await client.subscribe(
                mb.mailbox_id,
                mb.read_seed,
                from_seq,
                write_seed=mb.write_seed,
                shared=mb.conv_id is not None,
            )
        except RelayUnavailable:
            pass  # re-subscribed automatically on reconnect
        except RemoteError as exc:
            self._notice(mb.conv_id, f"relay {mb.relay_url} refused a subscription: {exc}", True)

    async def _subscribe_new(self, conv_id: bytes) -> None:
        """Subscribe to the conversation's mailboxes not subscribed yet: a
        commit by another member can replace them (a removal, a relay move)."""
        for mb in [m for m in self._mailboxes.values() if m.conv_id == conv_id]:
            client = self.relays.get(mb.relay_url)
            if mb.retired or (client is not None and client.subscribed(mb.mailbox_id)):
                continue
            try:
                await self._subscribe(mb)
            except RelayUnavailable:
                continue  # shutting down

    async def _ensure_inboxes(self) -> None:
        """Create our inbox mailboxes on relays that do not know them yet."""
        for inbox in self.identity.inboxes:
            key = b"created:" + inbox.mailbox_id
            if self.store.get(NS_CURSORS, key):
                continue
            try:
                await self._relay(inbox.relay_url).create_mailbox(
                    inbox.mailbox_id, inbox.read_seed, inbox.write_seed
                )
            except RelayUnavailable:
                continue
            self.store.put(NS_CURSORS, key, b"1")

    async def _create_mailboxes(self, refs: Iterable[MailboxRef]) -> None:
        """Create a group's mailboxes: shared logs, so one member's ack (or a
        removed member's) never deletes what the others have not fetched."""
        for ref in refs:
            await self._relay(ref.relay_url).create_mailbox(
                ref.mailbox_id, ref.read_seed, ref.write_seed, shared=True
            )

    def _ordering_url(self, meta: GroupMeta, conv_id: bytes | None = None) -> str:
        """The ordering relay: the first one in list order that is reachable
        and has not been caught withholding handshakes in this conversation."""
        suspect = self._suspect.get(conv_id, set()) if conv_id is not None else set()
        for ref in meta.mailboxes:
            client = self.relays.get(ref.relay_url)
            if ref.relay_url in suspect:
                continue
            if client is not None and client.state == "connected":
                return ref.relay_url
        usable = [r.relay_url for r in meta.mailboxes if r.relay_url not in suspect]
        return (usable or [meta.mailboxes[0].relay_url])[0]

    # -- records --------------------------------------------------------------------

    def conversation(self, conv_id: bytes) -> Conversation | None:
        raw = self.store.get(NS_CONVS, conv_id)
        return Conversation.from_json(raw) if raw else None

    def _save_conv(self, conv: Conversation) -> None:
        self.store.put(NS_CONVS, conv.group_id, conv.to_json())

    def conversations(self) -> list[Conversation]:
        convs = [Conversation.from_json(v) for _, v in self.store.items(NS_CONVS)]
        return sorted(convs, key=lambda c: c.created_ms)

    def invites(self) -> list[InviteRecord]:
        """Our invites, oldest first."""
        records = [InviteRecord.from_json(v) for _, v in self.store.items(NS_INVITES)]
        return sorted(records, key=lambda r: r.created_ms)

    def _save_invite(self, record: InviteRecord) -> None:
        self.store.put(NS_INVITES, record.invite_id, record.to_json())

    def contact(self, identity_key: bytes) -> Contact | None:
        raw = self.store.get(NS_CONTACTS, identity_key)
        return Contact.from_json(raw) if raw else None

    def contacts(self) -> list[Contact]:
        return sorted(
            (Contact.from_json(v) for _, v in self.store.items(NS_CONTACTS)),
            key=lambda c: c.name.lower(),
        )

    def _save_contact(self, contact: Contact) -> None:
        self.store.put(NS_CONTACTS, contact.identity_key, contact.to_json())

    def find_contact(self, query: str) -> Contact:
        """A contact by name (case-insensitive), identity key hex prefix, or number."""
        contacts = self.contacts()
        q = query.strip().lower()
        exact = [c for c in contacts if c.name.lower() == q]
        if len(exact) == 1:
            return exact[0]
        by_key = [c for c in contacts if c.identity_key.hex().startswith(q) and len(q) >= 4]
        if len(by_key) == 1:
            return by_key[0]
        if q.isdigit() and 1 <= int(q) <= len(contacts):
            return contacts[int(q) - 1]
        if len(exact) > 1 or len(by_key) > 1:
            raise EngineError(f"{query!r} matches several contacts; use the key prefix")
        raise EngineError(f"no contact {query!r}")

    def find_conversation(self, query: str) -> Conversation:
        """A conversation by name, contact name, group id hex prefix or number."""
        convs = [c for c in self.conversations() if not c.left]
        q = query.strip().lower()
        by_name = [c for c in convs if c.name.lower() == q]
        by_id = [c for c in convs if len(q) >= 4 and c.group_id.hex().startswith(q)]
        for found in (by_name, by_id):
            if len(found) == 1:
                return found[0]
        if q.isdigit() and 1 <= int(q) <= len(convs):
            return convs[int(q) - 1]
        try:
            contact = self.find_contact(query)
        except EngineError:
            contact = None
        if contact is not None and contact.conversation:
            conv = self.conversation(contact.conversation)
            if conv is not None:
                return conv
        raise EngineError(f"no conversation {query!r}")

    def display_name(self, identity_key: bytes) -> str:
        if identity_key == self.identity.signature_pub:
            return self.identity.name or "me"
        contact = self.contact(identity_key)
        if contact is not None and contact.name:
            return contact.name
        known = self.store.get(NS_PEOPLE, identity_key)
        if known:
            return self._distinct_name(identity_key, known.decode(errors="replace"))
        return identity_key.hex()[:8]

    def _distinct_name(self, identity_key: bytes, name: str) -> str:
        """``name`` as shown for ``identity_key``: a display name is a claim,
        never an identity (SPEC.md §8.5), so a name that ours or another
        contact's already is gets this key's first 8 hex digits appended."""
        folded = name.strip().casefold()
        taken = folded == self.identity.name.strip().casefold() or any(
            c.identity_key != identity_key and c.name.strip().casefold() == folded
            for c in self.contacts()
        )
        return f"{name} [{identity_key.hex()[:8]}]" if taken else name

    @property
    def closed(self) -> bool:
        return self._closing

    def _save_group(self, conv_id: bytes) -> None:
        self.store.put(NS_GROUPS, conv_id, self.groups[conv_id].to_bytes())

    def members(self, conv_id: bytes) -> list[bytes]:
        """Identity keys of the conversation's members."""
        group = self.groups.get(conv_id)
        return [] if group is None else [key for _, _, key in group.members()]

    def _leaf_name(self, group: Group, leaf_index: int | None) -> str:
        """The display name of the member at ``leaf_index`` of ``group``."""
        if leaf_index is None:
            return "an unknown sender"
        try:
            return self.display_name(group.member_leaf(leaf_index).signature_key)
        except SamizdatError:
            return "an unknown sender"

    def admins(self, conv_id: bytes) -> list[bytes]:
        """Identity keys of the members who are admins (SPEC §8.3)."""
        group = self.groups.get(conv_id)
        meta = None if group is None else find_group_meta(group.extensions)
        if meta is None:
            return []
        members = self.members(conv_id)
        keys = admin_keys(meta, members)
        return [k for k in members if k in keys]

    def is_admin(self, conv_id: bytes, identity_key: bytes | None = None) -> bool:
        return (identity_key or self.identity.signature_pub) in self.admins(conv_id)

    # -- key packages -------------------------------------------------------------------

    def _new_key_package(self, suite_id: int = SUITE_ID) -> bytes:
        """A new KeyPackage of ``suite_id`` (its private keys kept in the store)."""
        suite = get_suite(check_suite(suite_id))
        bundle = create_key_package(
            suite, self.signer, int(time.time()), rng, capabilities=CAPABILITIES
        )
        ref = key_package_ref(suite, bundle.key_package)
        self.store.put(
            NS_KEY_PACKAGES,
            ref,
            b"".join(
                len(x).to_bytes(4, "big") + x
                for x in (bundle.key_package.to_bytes(), bundle.init_priv, bundle.encryption_priv)
            ),
        )
        return bundle.key_package_bytes()

    def _bundle_for(self, ref: bytes) -> KeyPackageBundle | None:
        raw = self.store.get(NS_KEY_PACKAGES, ref)
        if raw is None:
            return None
        parts, pos = [], 0
        while pos < len(raw):
            n = int.from_bytes(raw[pos : pos + 4], "big")
            parts.append(raw[pos + 4 : pos + 4 + n])
            pos += 4 + n
        kp = KeyPackage.from_bytes(parts[0])
        return KeyPackageBundle(kp, parts[1], parts[2], self.identity.signature_priv)


def _read_blocks(path: Path, size: int = 64 * 1024) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while block := fh.read(size):
            yield block


def payload_is_own(group: Group, events: list[GroupEvent]) -> bool:
    return any(isinstance(e, EpochAdvanced) and e.committer == group.own_leaf_index for e in events)


def _history_entry(message: AppMessage, sender: bytes, *, outgoing: bool) -> HistoryEntry:
    body = message.body
    now = now_ms()
    entry = HistoryEntry(
        message.message_id,
        sender,
        "text",
        message.sent_at_ms,
        now,
        outgoing=outgoing,
        expires_at_ms=now + message.expires_after_ms if message.expires_after_ms else 0,
    )
    if isinstance(body, Text):
        entry.text = body.text
    elif isinstance(body, Article):
        entry.kind, entry.title, entry.text = "article", body.title, body.markdown
    elif isinstance(body, File):
        entry.kind = "file"
        entry.file = {
            "name": body.name,
            "media_type": body.media_type,
            "size": body.size,
            "descriptor": body.to_bytes().hex(),
        }
    return entry


def _kp_signed_by(kp_bytes: bytes, identity_key: bytes) -> bool:
    try:
        kp = MLSMessage.from_bytes(kp_bytes).key_package
    except DecodeError:
        return False
    return kp is not None and kp.leaf_node.signature_key == identity_key


def _unique(urls: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for url in urls:
        url = url.rstrip("/")
        if url not in seen:
            seen.append(url)
    return seen
