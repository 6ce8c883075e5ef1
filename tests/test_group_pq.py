"""Post-quantum groups through the Group API (SPEC §4.1.1): every place a suite's KEM is
used (KeyPackages, TreeKEM paths, Welcome, external join) for each PQ suite, and the
attacks a hostile member or a downgrading committer can try."""

from __future__ import annotations

from unittest import mock

import pytest

from protocol.app.envelope import Envelope, EnvelopeType, Reassembler, split
from protocol.app.sealed import MAX_SEALED_PLAINTEXT, seal, seal_key, unseal
from protocol.errors import CryptoError
from protocol.mls.crypto import PQ_SUITES, CipherSuite, Rng, get_suite
from protocol.mls.errors import InvalidCommit, InvalidMessage
from protocol.mls.events import ApplicationMessageReceived
from protocol.mls.group import Group
from protocol.mls.welcome import split_welcome, welcome_export
from protocol.padding import is_envelope_size
from tests.mls_harness import NOW, Harness, Party

IDS = [f"suite-{s:#06x}" for s in PQ_SUITES]
TREE_LABEL = "samizdat ratchet tree"


@pytest.mark.parametrize("suite_id", PQ_SUITES, ids=IDS)
def test_pq_group_create_add_five_remove_update_external_join(suite_id: int) -> None:
    h = Harness(["alice"], suite_id)
    alice = h["alice"]
    joiners = [Party(n, suite_id) for n in ("bob", "carol", "dave", "erin", "frank")]
    bundles = [p.key_package() for p in joiners]
    assert all(len(b.key_package.init_key) == 1216 for b in bundles)
    result = h.commit("alice", add=bundles)
    assert result.welcome is not None
    for p, b in zip(joiners, bundles, strict=True):
        p.group = Group.join(result.welcome, b)
        h.parties[p.name] = p
    h.assert_converged()
    assert alice.g.suite.suite_id == suite_id and len(alice.g.members()) == 6

    for p in h.members():
        h.broadcast(p.name, p.g.encrypt(f"hi from {p.name}".encode(), p.rng))
    got = [e.data for e in h["frank"].received if isinstance(e, ApplicationMessageReceived)]
    assert sorted(got) == sorted(
        f"hi from {n}".encode() for n in ("alice", "bob", "carol", "dave", "erin")
    )

    h.commit("carol", remove=[h["dave"].g.own_leaf_index])  # TreeKEM path to 4 others
    assert not h["dave"].g.active
    h.assert_converged()
    h.broadcast("erin", h["erin"].g.propose_update(h["erin"].rng))
    h.commit("bob")  # commits erin's Update, with bob's own path
    h.assert_converged()

    grace = Party("grace", suite_id)
    grace.group, commit = Group.join_external(
        h["frank"].g.group_info(), grace.identity, grace.rng, NOW
    )
    h.broadcast("grace", commit)
    h.parties["grace"] = grace
    h.assert_converged()
    h.broadcast("grace", grace.g.encrypt(b"post-quantum hello", grace.rng))
    assert any(
        isinstance(e, ApplicationMessageReceived) and e.data == b"post-quantum hello"
        for e in h["alice"].received
    )
    state = h["alice"].g.to_bytes()
    assert Group.from_bytes(state).epoch_authenticator == h["alice"].g.epoch_authenticator


@pytest.mark.parametrize("suite_id", PQ_SUITES, ids=IDS)
def test_classic_key_package_cannot_enter_a_pq_group(suite_id: int) -> None:
    """A downgrade: a committer adds a member by a suite-1 KeyPackage; the joiner's
    init key would be classical, so RFC 9420 §10.1 / §12.2 refuse the Add."""
    h = Harness(["alice", "bob"], suite_id)
    classic = Party("mallory", 1).key_package()
    with pytest.raises((InvalidCommit, InvalidMessage)):
        h["alice"].g.commit(h["alice"].rng, NOW, add=[classic])


@pytest.mark.parametrize("suite_id", PQ_SUITES, ids=IDS)
def test_hostile_committer_corrupts_one_xwing_path_ciphertext(suite_id: int) -> None:
    """A hostile member commits with a valid signature and confirmation tag but sends
    garbage as the X-Wing encapsulation of the path secret to one member (bob).  Bob
    must refuse the commit with his state unchanged (RFC 9420 §12.4.2: the path secret
    must decrypt); carol, whose ciphertext is intact, follows."""
    h = Harness(["alice", "bob", "carol"], suite_id)
    alice, bob, carol = h["alice"], h["bob"], h["carol"]
    honest = CipherSuite.encrypt_with_label
    calls: list[str] = []

    def hostile(
        self: CipherSuite, pub: bytes, label: str, context: bytes, plaintext: bytes, rng: Rng
    ) -> tuple[bytes, bytes]:
        kem_output, ct = honest(self, pub, label, context, plaintext, rng)
        calls.append(label)
        if label == "UpdatePathNode" and calls.count(label) == 1:  # to bob's subtree
            kem_output = kem_output[:100] + bytes([kem_output[100] ^ 1]) + kem_output[101:]
        return kem_output, ct

    with mock.patch.object(CipherSuite, "encrypt_with_label", hostile):
        result = alice.g.commit(alice.rng, NOW)
    assert calls.count("UpdatePathNode") == 2
    before = bob.g.to_bytes()
    with pytest.raises(CryptoError):
        bob.g.process(result.commit)
    assert bob.g.to_bytes() == before
    carol.g.process(result.commit)
    alice.g.process(result.commit)
    assert carol.g.epoch_authenticator == alice.g.epoch_authenticator


def test_pq_suite_sizes() -> None:
    """KeyPackage and leaf sizes grow by the X-Wing key: 1216-byte init and leaf keys."""
    for suite_id in PQ_SUITES:
        bundle = Party("size", suite_id).key_package()
        kp = bundle.key_package
        assert len(kp.init_key) == len(kp.leaf_node.encryption_key) == 1216
        assert len(bundle.init_priv) == len(bundle.encryption_priv) == 32
        assert get_suite(suite_id).hash_len in (32, 48)


@pytest.mark.parametrize("suite_id", [1, *PQ_SUITES], ids=["suite-1", *IDS])
def test_lean_welcome_split_per_joiner_with_the_tree_out_of_band(suite_id: int) -> None:
    """The large-group mitigation (SPEC §4.1.1): a Welcome without the tree, cut into one
    single-entry Welcome per joiner.  A joiner's part is useless to another joiner, and
    a substituted tree (a hostile relay or committer serving the wrong one) is refused."""
    h = Harness(["alice", "bob"], suite_id)
    joiners = [Party(n, suite_id) for n in ("carol", "dave", "erin")]
    bundles = [p.key_package() for p in joiners]
    alice = h["alice"]
    stale_tree = alice.g.ratchet_tree()
    result = alice.g.commit(alice.rng, NOW, add=bundles, welcome_tree=False)
    assert result.welcome is not None
    parts = split_welcome(result.welcome)
    assert len(parts) == 3 and all(len(w) < len(result.welcome) for _, w in parts)
    with pytest.raises(InvalidMessage, match="no ratchet tree"):
        Group.join(parts[0][1], bundles[0])
    with pytest.raises(InvalidMessage, match="no entry"):
        Group.join(parts[1][1], bundles[0], ratchet_tree=result.ratchet_tree)
    with pytest.raises(InvalidMessage, match="tree hash"):
        Group.join(parts[0][1], bundles[0], ratchet_tree=stale_tree)
    h.broadcast("alice", result.commit)
    alice.g.process(result.commit)
    # The tree travels once, encrypted under an exporter key of the new epoch, which
    # each joiner derives from its own part before it has the tree.
    suite = alice.g.suite
    tree_key = alice.g.export_secret(TREE_LABEL, b"", suite.key_len)
    nonce = bytes(suite.nonce_len)  # one key, one message
    blob = suite.aead_seal(tree_key, nonce, b"", result.ratchet_tree)
    for p, b, (_, part) in zip(joiners, bundles, parts, strict=True):
        key = welcome_export(part, b.key_package, b.init_priv, TREE_LABEL, suite.key_len)
        assert key == tree_key
        p.group = Group.join(part, b, ratchet_tree=suite.aead_open(key, nonce, b"", blob))
        h.parties[p.name] = p
    h.assert_converged()
    with pytest.raises(InvalidMessage, match="no entry"):
        welcome_export(parts[0][1], bundles[1].key_package, bundles[1].init_priv, "x", 16)
    with pytest.raises(InvalidMessage):
        split_welcome(result.commit)


def test_pq_handshakes_fit_the_relay_buckets() -> None:
    """SPEC §4.1.1 relay fit: PQ KeyPackages and per-joiner Welcomes seal into one
    4 KiB envelope; a full-tree Welcome of a 40-member PQ group is fragmented into
    64 KiB envelopes and reassembled; every sealed size is a padding bucket (§7.3)."""
    suite_id = PQ_SUITES[1]
    h = Harness(["alice"], suite_id)
    joiners = [Party(f"j{i}", suite_id) for i in range(39)]
    bundles = [p.key_package() for p in joiners]
    full = h["alice"].g.commit(h["alice"].rng, NOW, add=bundles)
    lean = h["alice"].g.commit(h["alice"].rng, NOW, add=bundles, welcome_tree=False)
    assert full.welcome is not None and lean.welcome is not None
    key, mailbox = seal_key(bytes(32)), bytes(32)
    rng = h["alice"].rng

    def sealed_sizes(kind: EnvelopeType, payload: bytes) -> list[int]:
        pieces = split(kind, payload, rng, max_size=MAX_SEALED_PLAINTEXT)
        sealed = [seal(key, mailbox, p, rng, full=len(pieces) > 1) for p in pieces]
        reassembler = Reassembler()
        got = [reassembler.add(open_envelope_unsealed(s), 0) for s in sealed]
        assert got[-1] == (kind, payload)
        return [len(s) for s in sealed]

    def open_envelope_unsealed(sealed: bytes) -> Envelope:
        return Envelope.from_bytes(unseal(key, mailbox, sealed))

    assert sealed_sizes(EnvelopeType.MLS, bundles[0].key_package_bytes()) == [4096]
    assert sealed_sizes(EnvelopeType.WELCOME, split_welcome(lean.welcome)[0][1]) == [4096]
    sizes = sealed_sizes(EnvelopeType.WELCOME, full.welcome)
    assert len(sizes) > 1 and set(sizes) == {65536}
    assert all(is_envelope_size(n) for n in sizes)
