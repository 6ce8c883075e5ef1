"""mls-rs through :mod:`tests.interop.mlsrs`, checked with Samizdat's codec and crypto.

Three purposes:

* prove the adapter (``RsMember``) is reliable before it is used against
  Samizdat: mls-rs on every side, 12+ epochs of add/remove/update commits,
  messages both ways, exporter / epoch_authenticator / GroupContext / tree
  agreement every epoch;
* prove Samizdat's wire structs line up with an independent implementation:
  every KeyPackage, Commit, Proposal, Welcome, PrivateMessage and ratchet tree
  mls-rs emits must decode with ``protocol.mls`` and re-encode to the same
  bytes; commit signatures, membership tags, transcript hashes, LeafNode and
  KeyPackage signatures are recomputed with Samizdat's crypto from the secrets
  recovered out of mls-rs's state;
* exercise Samizdat's low-level primitives against mls-rs ahead of the group
  API: a KeyPackage built with ``protocol.mls`` is added by mls-rs, its Welcome
  opened with ``protocol.mls.welcome``, and PrivateMessages flow both ways
  through ``protocol.mls.framing`` / ``secret_tree``.
"""

from __future__ import annotations

import dataclasses
import os
import time

import pytest

# tests.interop.mlsrs skips (locally) or fails (CI=true) when the mls-rs wheel is missing.
from protocol.mls import welcome as welcome_mod
from protocol.mls.crypto import get_suite
from protocol.mls.framing import (
    protect_private,
    sign_content,
    unprotect_private,
    verify_content_signature,
)
from protocol.mls.key_schedule import mls_exporter
from protocol.mls.messages import (
    Add,
    ContentType,
    FramedContent,
    GroupContext,
    MLSMessage,
    PublicMessage,
    Remove,
    Sender,
    SenderType,
    WireFormat,
    authenticated_content_tbm,
    confirmed_transcript_hash_input,
    framed_content_tbs,
    interim_transcript_hash_input,
)
from protocol.mls.secret_tree import SecretTree
from protocol.mls.tree_structs import (
    Capabilities,
    Credential,
    CredentialType,
    ExtensionType,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    NodeType,
    ProtocolVersion,
    decode_ratchet_tree,
    encode_ratchet_tree,
    find_extension,
)
from tests.interop.mlsrs import (
    SUITE,
    CommitInfo,
    ProposalInfo,
    RsError,
    RsGroupContext,
    RsMember,
    message_header,
    parse_ratchet_tree,
)

CS = get_suite(SUITE)
LABELS = [(b"samizdat interop", b"", 32), (b"exporter", b"epoch-check", 17)]


# --------------------------------------------------------------------------
# Decoding helpers (Samizdat's codec on mls-rs bytes)


def decode(data: bytes, wire_format: WireFormat) -> MLSMessage:
    msg = MLSMessage.from_bytes(data)
    assert msg.wire_format == wire_format
    assert msg.to_bytes() == data, "re-encoding changed the bytes"
    return msg


def decode_tree(data: bytes) -> list:
    nodes = decode_ratchet_tree(data)
    assert encode_ratchet_tree(nodes) == data, "ratchet_tree re-encoding changed the bytes"
    assert parse_ratchet_tree(data)  # the adapter's own parser agrees it is well formed
    return nodes


def check_key_package(data: bytes, name: bytes) -> None:
    kp = decode(data, WireFormat.MLS_KEY_PACKAGE).key_package
    assert kp is not None
    assert kp.cipher_suite == SUITE
    leaf = kp.leaf_node
    assert leaf.credential.credential_type == CredentialType.BASIC
    assert leaf.credential.identity == name
    assert leaf.leaf_node_source == LeafNodeSource.KEY_PACKAGE
    CS.verify_with_label(leaf.signature_key, "KeyPackageTBS", kp.tbs_bytes(), kp.signature)
    CS.verify_with_label(leaf.signature_key, "LeafNodeTBS", leaf.tbs_bytes(), leaf.signature)


def check_tree_signatures(tree: bytes, group_id: bytes) -> None:
    for i, node in enumerate(decode_tree(tree)):
        if node is None or node.node_type != NodeType.LEAF:
            continue
        leaf = node.leaf_node
        assert leaf is not None
        if leaf.leaf_node_source == LeafNodeSource.KEY_PACKAGE:
            tbs = leaf.tbs_bytes()
        else:
            tbs = leaf.tbs_bytes(group_id, i // 2)
        CS.verify_with_label(leaf.signature_key, "LeafNodeTBS", tbs, leaf.signature)


# --------------------------------------------------------------------------
# A group of RsMembers with per-epoch agreement checks


class World:
    def __init__(self, *, ratchet_tree_extension: bool = False) -> None:
        self.ext = ratchet_tree_extension
        self.members: list[RsMember] = []
        self.prev_tag: bytes | None = None  # confirmation tag of the last commit
        self.commits = 0
        self.epochs_checked: list[int] = []

    def new_member(self, name: bytes) -> RsMember:
        return RsMember.new(name, ratchet_tree_extension=self.ext)

    def create(self, name: bytes) -> RsMember:
        m = self.new_member(name)
        m.create_group(b"interop-" + name)
        assert m.epoch() == 0
        self.members = [m]
        self.check_epoch()
        return m

    def find(self, name: bytes) -> RsMember:
        return next(m for m in self.members if m.name == name)

    # -- commits -----------------------------------------------------------

    @staticmethod
    def _pre(committer: RsMember) -> tuple[RsGroupContext, dict[str, bytes]]:
        """Epoch-n state, taken before the committer builds (and merges) its commit."""
        return committer.group_context(), committer.key_schedule()

    def _distribute(
        self,
        committer: RsMember,
        commit: bytes,
        removed: bytes | None,
        pre_state: tuple[RsGroupContext, dict[str, bytes]],
        *,
        check: bool = True,
    ) -> None:
        """Check the commit with Samizdat's codec/crypto, then let everyone process it."""
        pre, pre_ks = pre_state
        msg = decode(commit, WireFormat.MLS_PUBLIC_MESSAGE)
        pm = msg.public_message
        assert isinstance(pm, PublicMessage)
        content = pm.content
        assert content.content_type == ContentType.COMMIT
        assert content.epoch == pre.epoch
        assert content.group_id == pre.group_id
        assert content.sender.sender_type == SenderType.MEMBER
        sender_leaf = content.sender.leaf_index
        assert sender_leaf == committer.leaf_index()
        # Samizdat's GroupContext codec round-trips mls-rs's encoding ...
        gc = GroupContext.from_bytes(pre.encoded)
        assert gc.to_bytes() == pre.encoded
        assert (gc.epoch, gc.group_id, gc.tree_hash) == (pre.epoch, pre.group_id, pre.tree_hash)
        # ... and reproduces the FramedContentTBS mls-rs signed and MACed.
        tbs = framed_content_tbs(WireFormat.MLS_PUBLIC_MESSAGE, content, gc)
        sig_key = next(m.signature_key for m in committer.members() if m.leaf_index == sender_leaf)
        CS.verify_with_label(sig_key, "FramedContentTBS", tbs, pm.auth.signature)
        assert pm.membership_tag == CS.mac(
            pre_ks["membership"], authenticated_content_tbm(tbs, pm.auth)
        )
        new_confirmed = None
        if self.prev_tag is not None:
            interim = CS.hash(
                pre.confirmed_transcript_hash + interim_transcript_hash_input(self.prev_tag)
            )
            new_confirmed = CS.hash(
                interim
                + confirmed_transcript_hash_input(
                    WireFormat.MLS_PUBLIC_MESSAGE, content, pm.auth.signature
                )
            )
        assert pm.auth.confirmation_tag is not None
        self.prev_tag = pm.auth.confirmation_tag

        for m in list(self.members):
            if m is committer:
                continue
            kind, info = m.process(commit)
            assert kind == "commit"
            assert isinstance(info, CommitInfo)
            assert info.sender == sender_leaf
            assert info.epoch == pre.epoch + 1
            assert info.removed == (m.name == removed)
            if info.removed:
                self.members.remove(m)
        self.commits += 1
        post = committer.group_context()
        assert post.epoch == pre.epoch + 1
        if new_confirmed is not None:
            assert post.confirmed_transcript_hash == new_confirmed
        if check:
            self.check_epoch()

    def add(self, committer: RsMember, names: list[bytes]) -> list[RsMember]:
        joiners = [self.new_member(n) for n in names]
        kps = [j.key_package() for j in joiners]
        for kp, j in zip(kps, joiners, strict=True):
            check_key_package(kp, j.name)
        pre = self._pre(committer)
        commit, welcome = committer.add(kps)
        assert welcome is not None
        body = decode(commit, WireFormat.MLS_PUBLIC_MESSAGE).public_message
        assert body is not None and body.content.commit is not None
        proposals = body.content.commit.proposals
        assert [type(p.proposal.body) for p in proposals if p.proposal] == [Add] * len(names)
        assert body.content.commit.path is None  # add-only: mls-rs sends no path
        w = decode(welcome, WireFormat.MLS_WELCOME).welcome
        assert w is not None and w.cipher_suite == SUITE and len(w.secrets) == len(names)
        tree = committer.export_ratchet_tree()
        if not self.ext:
            assert committer.last_ratchet_tree == tree
        else:
            assert committer.last_ratchet_tree is None
        self._distribute(committer, commit, None, pre, check=False)
        for j in joiners:
            j.join(welcome, None if self.ext else tree)
            self.members.append(j)
        self.check_epoch()
        return joiners

    def update(self, committer: RsMember) -> None:
        pre = self._pre(committer)
        commit = committer.update()
        body = decode(commit, WireFormat.MLS_PUBLIC_MESSAGE).public_message
        assert body is not None and body.content.commit is not None
        assert body.content.commit.proposals == ()
        path = body.content.commit.path
        assert path is not None
        assert path.leaf_node.leaf_node_source == LeafNodeSource.COMMIT
        self._distribute(committer, commit, None, pre)

    def remove(self, committer: RsMember, victim: RsMember) -> None:
        leaf = victim.leaf_index()
        pre = self._pre(committer)
        commit = committer.remove(leaf)
        body = decode(commit, WireFormat.MLS_PUBLIC_MESSAGE).public_message
        assert body is not None and body.content.commit is not None
        (por,) = body.content.commit.proposals
        assert por.proposal is not None and por.proposal.body == Remove(leaf)
        assert body.content.commit.path is not None
        self._distribute(committer, commit, victim.name, pre)
        assert victim not in self.members

    # -- per-epoch checks ----------------------------------------------------

    def check_epoch(self) -> None:
        ms = self.members
        epoch = ms[0].epoch()
        contexts = [m.group_context() for m in ms]
        assert {c.epoch for c in contexts} == {epoch}
        assert len({c.encoded for c in contexts}) == 1
        for label, context, length in LABELS:
            secrets = {m.export_secret(label, context, length) for m in ms}
            assert len(secrets) == 1 and len(next(iter(secrets))) == length
        assert len({m.epoch_authenticator() for m in ms}) == 1
        # Samizdat's MLS-Exporter over the exporter_secret mls-rs holds.
        ks = ms[0].key_schedule()
        label, context, length = LABELS[0]
        assert mls_exporter(CS, ks["exporter"], label.decode(), context, length) == ms[
            0
        ].export_secret(label, context, length)
        trees = {m.export_ratchet_tree() for m in ms}
        assert len(trees) == 1
        tree = next(iter(trees))
        nodes = decode_tree(tree)
        check_tree_signatures(tree, contexts[0].group_id)
        roster = sorted((m.leaf_index(), m.name) for m in ms)
        assert [(x.leaf_index, x.identity) for x in ms[0].members()] == roster
        leaves = [n for n in nodes[::2] if n is not None]
        assert len(leaves) == len(ms)
        self.epochs_checked.append(epoch)

    def chat(self) -> None:
        """Every member sends one application message; everyone else reads it."""
        for sender in self.members:
            text = b"%s@%d" % (sender.name, sender.epoch())
            ct = sender.encrypt(text)
            pm = decode(ct, WireFormat.MLS_PRIVATE_MESSAGE).private_message
            assert pm is not None
            assert pm.epoch == sender.epoch()
            assert pm.content_type == ContentType.APPLICATION
            assert pm.group_id == sender.group_id()
            for r in self.members:
                if r is sender:
                    continue
                assert r.process(ct) == ("application", text)
                assert r.last_sender == sender.leaf_index()


# --------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [False, True], ids=["tree-out-of-band", "tree-extension"])
def test_many_epochs(ext: bool) -> None:
    w = World(ratchet_tree_extension=ext)
    a = w.create(b"alice")
    b, c = w.add(a, [b"bob", b"carol"])  # epoch 1: one Welcome for two joiners
    w.chat()
    w.update(b)  # 2
    w.chat()
    (d,) = w.add(c, [b"dave"])  # 3
    w.chat()
    w.update(d)  # 4
    w.remove(a, c)  # 5
    w.chat()
    (e,) = w.add(b, [b"erin"])  # 6
    w.update(e)  # 7
    w.chat()
    w.remove(d, b)  # 8
    w.update(a)  # 9
    w.chat()
    (f,) = w.add(e, [b"frank"])  # 10
    w.remove(f, a)  # 11: leaf 0 goes blank
    w.chat()
    w.update(d)  # 12
    w.chat()
    assert w.commits == 12
    assert sorted(m.name for m in w.members) == [b"dave", b"erin", b"frank"]
    assert all(m.epoch() == 12 for m in w.members)
    assert w.epochs_checked[-1] == 12 and len(set(w.epochs_checked)) == 13


def test_remove_rightmost_truncates_tree() -> None:
    w = World()
    a = w.create(b"a")
    b, c, d = w.add(a, [b"b", b"c", b"d"])
    assert len(decode_ratchet_tree(a.export_ratchet_tree())) == 7
    w.remove(b, d)
    # RFC 9420 §7.8: the tree is truncated; our decoder rejects trailing blanks.
    assert len(decode_ratchet_tree(a.export_ratchet_tree())) == 5
    w.remove(a, c)
    assert len(decode_ratchet_tree(a.export_ratchet_tree())) == 3
    w.remove(a, b)
    assert len(decode_ratchet_tree(a.export_ratchet_tree())) == 1
    (e,) = w.add(a, [b"e"])
    assert e.leaf_index() == 1


def test_proposals_by_reference() -> None:
    w = World()
    a = w.create(b"a")
    b, c = w.add(a, [b"b", b"c"])
    d = w.new_member(b"d")
    kp = d.key_package()
    props = b.propose_add([kp]) + b.propose_remove(c.leaf_index())
    for p in props:
        msg = decode(p, WireFormat.MLS_PUBLIC_MESSAGE)
        assert msg.public_message is not None
        assert msg.public_message.content.content_type == ContentType.PROPOSAL
    types = [message_header(p)["proposal_type"] for p in props]
    assert types == [1, 3]
    for m in (a, c):
        for p in props:
            kind, info = m.process(p)
            assert kind == "proposal"
            assert info == ProposalInfo(sender=b.leaf_index(), proposal_type=info.proposal_type)
    for p in props:  # the proposer may feed its own proposals back (no-op)
        assert b.process(p)[0] == "proposal"
    commit, welcome = a.commit()
    assert welcome is not None
    body = decode(commit, WireFormat.MLS_PUBLIC_MESSAGE).public_message
    assert body is not None and body.content.commit is not None
    assert [p.reference is not None for p in body.content.commit.proposals] == [True, True]
    assert body.content.commit.path is not None  # a Remove forces a path
    for m in (b, c):
        kind, info = m.process(commit)
        assert kind == "commit" and isinstance(info, CommitInfo)
        assert info.removed == (m is c)
        # CommitEffect.REMOVED carries no proposal lists
        assert info.applied_proposals == (0 if m is c else 2)
    d.join(welcome, a.export_ratchet_tree())
    w.members = [a, b, d]
    w.check_epoch()


def test_pending_commit_semantics() -> None:
    w = World()
    a = w.create(b"a")
    (b,) = w.add(a, [b"b"])
    commit = a.update(apply=False)
    assert a.epoch() == 1  # built, not merged
    with pytest.raises(RuntimeError):
        a.epoch_authenticator()  # snapshot tail differs while a commit is pending
    a.apply_pending_commit()
    assert a.epoch() == 2
    b.process(commit)
    w.check_epoch()
    # A competing commit from another member supersedes a pending one.
    a.update(apply=False)
    rival = b.update()
    kind, info = a.process(rival)
    assert kind == "commit" and isinstance(info, CommitInfo) and info.sender == 1
    a._pending = None  # the stale pending commit is gone
    w.prev_tag = None
    w.check_epoch()
    assert a.epoch() == 3


def test_binding_rejections() -> None:
    w = World()
    a = w.create(b"a")
    (b,) = w.add(a, [b"b"])
    ct = a.encrypt(b"x")
    with pytest.raises(RsError):
        a.process(ct)  # message from self can't be processed
    commit = b.update()
    a.process(commit)
    with pytest.raises(RsError):
        a.process(commit)  # replay: wrong epoch
    with pytest.raises(RsError):
        a.remove(a.leaf_index())  # a committer cannot remove itself
    dup = w.new_member(b"b")
    with pytest.raises(RsError):
        a.add([dup.key_package()])  # identities must be unique in mls-rs
    with pytest.raises(RsError):
        a.process(b"\x00\x01\x00\x02garbage")


def test_old_epoch_application_message_still_decrypts() -> None:
    w = World()
    a = w.create(b"a")
    (b,) = w.add(a, [b"b"])
    old = b.encrypt(b"from epoch 1")
    commit = a.update()
    b.process(commit)
    assert a.process(old) == ("application", b"from epoch 1")


def test_out_of_band_tree_is_required_without_extension() -> None:
    a = RsMember.new(b"a", ratchet_tree_extension=False)
    a.create_group()
    b = RsMember.new(b"b")
    _, welcome = a.add([b.key_package()])
    assert welcome is not None
    with pytest.raises(RsError, match="ratchet tree not provided"):
        b.join(welcome, None)
    b.join(welcome, a.export_ratchet_tree())
    assert b.epoch() == 1 and b.leaf_index() == 1


def test_mls_rs_accepts_key_package_built_with_samizdat_structs() -> None:
    """KeyPackage/LeafNode TBS encodings and SignWithLabel agree with mls-rs."""
    kp, _, _ = _samizdat_key_package(b"samizdat")
    a = RsMember.new(b"a")
    a.create_group()
    commit, welcome = a.add([MLSMessage.of(kp).to_bytes()])
    assert welcome is not None
    assert [(m.leaf_index, m.identity) for m in a.members()] == [(0, b"a"), (1, b"samizdat")]
    decode(commit, WireFormat.MLS_PUBLIC_MESSAGE)
    # A bad signature is refused.
    bad = dataclasses.replace(kp, signature=bytes(64))
    with pytest.raises(RsError):
        a.add([MLSMessage.of(bad).to_bytes()])


# --------------------------------------------------------------------------
# mls-rs against Samizdat's low-level primitives (no group API needed): a
# KeyPackage built with protocol.mls is added by mls-rs; its Welcome is opened
# with protocol.mls.welcome; PrivateMessages then flow both ways through
# protocol.mls.framing / secret_tree.


def _samizdat_key_package(name: bytes) -> tuple[KeyPackage, bytes, bytes]:
    """(KeyPackage, init_priv, signature_priv)."""
    sig_priv, sig_pub = CS.signature_key_pair(os.urandom)
    _, enc_pub = CS.hpke_key_pair(os.urandom)
    init_priv, init_pub = CS.hpke_key_pair(os.urandom)
    now = int(time.time())
    leaf = LeafNode(
        enc_pub,
        sig_pub,
        Credential.basic(name),
        Capabilities((1,), (SUITE,), (), (), (CredentialType.BASIC,)),
        LeafNodeSource.KEY_PACKAGE,
        Lifetime(now - 3600, now + 86400),
        None,
        (),
        b"",
    )
    leaf = dataclasses.replace(
        leaf, signature=CS.sign_with_label(sig_priv, "LeafNodeTBS", leaf.tbs_bytes())
    )
    kp = KeyPackage(ProtocolVersion.MLS10, SUITE, init_pub, leaf, (), b"")
    kp = dataclasses.replace(
        kp, signature=CS.sign_with_label(sig_priv, "KeyPackageTBS", kp.tbs_bytes())
    )
    return kp, init_priv, sig_priv


@pytest.mark.parametrize("ext", [False, True], ids=["tree-out-of-band", "tree-extension"])
@pytest.mark.parametrize("with_path", [False, True], ids=["add-only", "add+remove"])
def test_samizdat_primitives_join_and_chat(ext: bool, with_path: bool) -> None:
    a = RsMember.new(b"a", ratchet_tree_extension=ext)
    a.create_group()
    b = RsMember.new(b"b", ratchet_tree_extension=ext)
    c = RsMember.new(b"c", ratchet_tree_extension=ext)
    _, welcome = a.add([b.key_package(), c.key_package()])
    assert welcome is not None
    b.join(welcome, a.export_ratchet_tree())
    c.join(welcome, a.export_ratchet_tree())
    update = a.update()
    b.process(update)
    c.process(update)

    kp, init_priv, sig_priv = _samizdat_key_package(b"samizdat")
    kp_bytes = MLSMessage.of(kp).to_bytes()
    if with_path:  # by-reference Add + Remove: the commit carries an UpdatePath
        props = b.propose_add([kp_bytes]) + b.propose_remove(c.leaf_index())
        for p in props:
            a.process(p)
        commit, welcome = a.commit()
        b.process(commit)
        committer = a
    else:
        commit, welcome = b.add([kp_bytes])
        a.process(commit)
        c.process(commit)
        committer = b
    assert welcome is not None
    rs = [a, b] if with_path else [a, b, c]

    wm = decode(welcome, WireFormat.MLS_WELCOME).welcome
    assert wm is not None
    secrets = welcome_mod.decrypt_group_secrets(
        CS, wm, welcome_mod.find_secrets(CS, wm, kp), init_priv
    )
    assert secrets.psks == ()
    assert (secrets.path_secret is not None) == with_path
    info = welcome_mod.decrypt_group_info(CS, wm, secrets.joiner_secret, None)
    assert info.signer == committer.leaf_index()
    welcome_mod.verify_group_info_signature(CS, info, committer.signature_public_key)
    epoch = welcome_mod.epoch_from_group_info(CS, info, secrets.joiner_secret, None)
    gc = info.group_context
    assert gc.to_bytes() == a.group_context().encoded
    assert epoch.epoch_authenticator == a.epoch_authenticator()
    assert epoch.membership_key == a.key_schedule()["membership"]
    assert mls_exporter(CS, epoch.exporter_secret, "interop", b"ctx", 24) == a.export_secret(
        b"interop", b"ctx", 24
    )
    tree_ext = find_extension(info.extensions, ExtensionType.RATCHET_TREE)
    if ext:
        assert tree_ext is not None
        assert tree_ext.extension_data == a.export_ratchet_tree()
        tree = tree_ext.extension_data
    else:
        assert tree_ext is None
        tree = committer.last_ratchet_tree
        assert tree == a.export_ratchet_tree()
    nodes = decode_tree(tree)
    me = next(
        i // 2
        for i, n in enumerate(nodes)
        if n is not None
        and n.leaf_node is not None
        and n.leaf_node.signature_key == kp.leaf_node.signature_key
    )
    secret_tree = SecretTree(CS, epoch.encryption_secret, (len(nodes) + 1) // 2)

    for round_ in range(3):
        for sender in rs:  # mls-rs -> Samizdat primitives
            text = b"%s says %d" % (sender.name, round_)
            pm = decode(sender.encrypt(text), WireFormat.MLS_PRIVATE_MESSAGE).private_message
            assert pm is not None
            dec = unprotect_private(CS, pm, gc, secret_tree, epoch.sender_data_secret)
            leaf = dec.content.content.sender.leaf_index
            assert leaf == sender.leaf_index()
            node = nodes[2 * leaf]
            assert node is not None and node.leaf_node is not None
            verify_content_signature(CS, dec.content, gc, node.leaf_node.signature_key)
            dec.consume()
            assert dec.content.content.application_data == text
        # Samizdat primitives -> every mls-rs member
        text = b"samizdat says %d" % round_
        content = FramedContent(
            gc.group_id, gc.epoch, Sender.member(me), b"", ContentType.APPLICATION, text
        )
        auth = sign_content(CS, WireFormat.MLS_PRIVATE_MESSAGE, content, gc, sig_priv)
        out = MLSMessage.of(
            protect_private(CS, auth, secret_tree, epoch.sender_data_secret, os.urandom)
        ).to_bytes()
        for r in rs:
            assert r.process(out) == ("application", text)
            assert r.last_sender == me
