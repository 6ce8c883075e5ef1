"""The state of one member in one MLS group, and its serialization.

``GroupState`` is everything a member must remember between messages.  The
group logic (:mod:`protocol.mls.group`) never edits a live state: it derives
a new one and swaps it in, so a message that fails half-way leaves the old
state untouched.

The byte form (:meth:`GroupState.to_bytes`) is for the client's encrypted
store, not a wire format.  It is TLS-PL encoded like everything else, starts
with a format version, and decoding checks it strictly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from protocol.codec import Reader, Writer, decode_exact
from protocol.errors import DecodeError
from protocol.mls.crypto import CipherSuite, get_suite
from protocol.mls.framing import proposal_ref
from protocol.mls.messages import AuthenticatedContent, GroupContext
from protocol.mls.ratchet_tree import RatchetTree
from protocol.mls.secret_tree import SecretTree
from protocol.mls.tree_structs import pull_ratchet_tree, push_ratchet_tree

STATE_FORMAT = 2  # 2: past epochs keep each sender's identity (format 1 is still read)
MAX_PAST_EPOCHS = 2  # epochs whose keys are kept for late application messages
MAX_RESUMPTION_PSKS = 16  # past epochs whose resumption PSK is kept (§8.6)


@dataclass(frozen=True, slots=True)
class EpochMember:
    """Who held a leaf in some epoch: its credential's identity and its
    signature key.  A late message is verified with, and credited to, this
    (RFC 9420 §6.3.2: the sender data names a leaf of that epoch's tree)."""

    identity: bytes
    signature_key: bytes


@dataclass(frozen=True, slots=True)
class PastEpoch:
    """What is needed to open a late application message of an old epoch,
    and to say who sent it: not the tree, only each member's credential.

    Frozen: opening a late message replaces the entry (with the advanced
    secret tree) instead of editing it, so copies of a state never share a
    mutable part (see :meth:`GroupState.copy`)."""

    context: GroupContext
    sender_data_secret: bytes
    secret_tree: SecretTree
    members: dict[int, EpochMember]  # leaf index -> who held it in that epoch


@dataclass(slots=True)
class GroupState:
    suite: CipherSuite
    context: GroupContext
    tree: RatchetTree
    own_leaf: int
    private_keys: dict[int, bytes]  # node index -> HPKE private key
    signature_priv: bytes
    init_secret: bytes
    sender_data_secret: bytes
    exporter_secret: bytes
    external_secret: bytes
    membership_key: bytes
    resumption_psk: bytes
    epoch_authenticator: bytes
    confirmation_tag: bytes  # of the commit that began this epoch (for GroupInfo)
    interim_transcript_hash: bytes
    secret_tree: SecretTree
    proposals: dict[bytes, AuthenticatedContent] = field(default_factory=dict)
    resumption_psks: dict[int, bytes] = field(default_factory=dict)
    past_epochs: dict[int, PastEpoch] = field(default_factory=dict)
    update_keys: dict[bytes, bytes] = field(default_factory=dict)  # our Update proposals
    active: bool = True

    def copy(self) -> GroupState:
        """A copy that can be changed without touching this state."""
        return replace(
            self,
            tree=self.tree.copy(),
            private_keys=dict(self.private_keys),
            secret_tree=self.secret_tree.copy(),
            proposals=dict(self.proposals),
            resumption_psks=dict(self.resumption_psks),
            past_epochs=dict(self.past_epochs),
            update_keys=dict(self.update_keys),
        )

    # -- serialization --------------------------------------------------------

    def to_bytes(self) -> bytes:
        w = Writer()
        w.push_uint16(STATE_FORMAT)
        w.push_uint16(self.suite.suite_id)
        self.context.encode(w)
        push_ratchet_tree(w, self.tree.to_nodes())
        w.push_uint32(self.own_leaf)
        w.push_vector(sorted(self.private_keys.items()), _push_int_bytes)
        for secret in (
            self.signature_priv,
            self.init_secret,
            self.sender_data_secret,
            self.exporter_secret,
            self.external_secret,
            self.membership_key,
            self.resumption_psk,
            self.epoch_authenticator,
            self.confirmation_tag,
            self.interim_transcript_hash,
        ):
            w.push_opaque(secret)
        self.secret_tree.encode(w)
        w.push_vector(self.proposals.values(), _push_struct)
        w.push_vector(sorted(self.resumption_psks.items()), _push_int_bytes)
        w.push_vector(sorted(self.past_epochs.items()), _push_past_epoch)
        w.push_vector(sorted(self.update_keys.items()), _push_bytes_pair)
        w.push_bool(self.active)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> GroupState:
        return decode_exact(data, cls._decode)

    @classmethod
    def _decode(cls, r: Reader) -> GroupState:
        version = r.pull_uint16()
        if version not in (1, STATE_FORMAT):
            raise DecodeError("unknown group state format")
        suite = get_suite(r.pull_uint16())
        context = GroupContext.decode(r)
        tree = RatchetTree(suite, pull_ratchet_tree(r))
        own_leaf = r.pull_uint32()
        private_keys = dict(r.pull_vector(_pull_int_bytes))
        (
            signature_priv,
            init_secret,
            sender_data_secret,
            exporter_secret,
            external_secret,
            membership_key,
            resumption_psk,
            epoch_authenticator,
            confirmation_tag,
            interim_transcript_hash,
        ) = (r.pull_opaque() for _ in range(10))
        secret_tree = SecretTree.decode(suite, r)
        proposals = r.pull_vector(AuthenticatedContent.decode)
        resumption = dict(r.pull_vector(_pull_int_bytes))
        past = dict(r.pull_vector(lambda rr: _pull_past_epoch(suite, rr, version)))
        update_keys = dict(r.pull_vector(_pull_bytes_pair))
        active = r.pull_bool()
        if version == 1:
            past = {e: _identities_from(p, tree) for e, p in past.items()}
        return cls(
            suite=suite,
            context=context,
            tree=tree,
            own_leaf=own_leaf,
            private_keys=private_keys,
            signature_priv=signature_priv,
            init_secret=init_secret,
            sender_data_secret=sender_data_secret,
            exporter_secret=exporter_secret,
            external_secret=external_secret,
            membership_key=membership_key,
            resumption_psk=resumption_psk,
            epoch_authenticator=epoch_authenticator,
            confirmation_tag=confirmation_tag,
            interim_transcript_hash=interim_transcript_hash,
            secret_tree=secret_tree,
            proposals={proposal_ref(suite, p): p for p in proposals},
            resumption_psks=resumption,
            past_epochs=past,
            update_keys=update_keys,
            active=active,
        )


def _push_struct(w: Writer, item: AuthenticatedContent) -> None:
    item.encode(w)


def _push_int_bytes(w: Writer, item: tuple[int, bytes]) -> None:
    w.push_uint64(item[0])
    w.push_opaque(item[1])


def _pull_int_bytes(r: Reader) -> tuple[int, bytes]:
    return r.pull_uint64(), r.pull_opaque()


def _push_bytes_pair(w: Writer, item: tuple[bytes, bytes]) -> None:
    w.push_opaque(item[0])
    w.push_opaque(item[1])


def _pull_bytes_pair(r: Reader) -> tuple[bytes, bytes]:
    return r.pull_opaque(), r.pull_opaque()


def _push_past_epoch(w: Writer, item: tuple[int, PastEpoch]) -> None:
    epoch, past = item
    w.push_uint64(epoch)
    past.context.encode(w)
    w.push_opaque(past.sender_data_secret)
    past.secret_tree.encode(w)
    w.push_vector(sorted(past.members.items()), _push_member)


def _push_member(w: Writer, item: tuple[int, EpochMember]) -> None:
    w.push_uint64(item[0])
    w.push_opaque(item[1].identity)
    w.push_opaque(item[1].signature_key)


def _pull_member(r: Reader) -> tuple[int, EpochMember]:
    return r.pull_uint64(), EpochMember(r.pull_opaque(), r.pull_opaque())


def _pull_past_epoch(suite: CipherSuite, r: Reader, version: int) -> tuple[int, PastEpoch]:
    epoch = r.pull_uint64()
    context = GroupContext.decode(r)
    sender_data_secret = r.pull_opaque()
    secret_tree = SecretTree.decode(suite, r)
    if version == 1:  # leaf -> signature key only; identities filled in by the caller
        members = {i: EpochMember(b"", key) for i, key in r.pull_vector(_pull_int_bytes)}
    else:
        members = dict(r.pull_vector(_pull_member))
    return epoch, PastEpoch(context, sender_data_secret, secret_tree, members)


def _identities_from(past: PastEpoch, tree: RatchetTree) -> PastEpoch:
    """A format-1 past epoch kept only signature keys.  Signature keys are
    unique among a group's members (RFC 9420 §7.3), so a key still in the
    tree names its holder's identity; a departed member's stays unknown."""
    by_key = {leaf.signature_key: leaf.credential.identity or b"" for _, leaf in tree.members()}
    members = {
        i: EpochMember(by_key.get(m.signature_key, b""), m.signature_key)
        for i, m in past.members.items()
    }
    return replace(past, members=members)
