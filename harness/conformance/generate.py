"""Generate MLS interop test vectors (FORMAT.md shapes) for any supported suite.

Written for the post-quantum suites (SPEC §4.1.1), for which no published MLS
vectors exist.  Everything is deterministic from ``seed``: each kind and suite
draws from its own :func:`~harness.conformance.seeded_rng` stream, and every
HPKE encapsulation (EncryptWithLabel, Welcome, UpdatePath) takes its ``eseed``
from that stream, so the same seed gives byte-identical files.

These vectors are produced by this implementation: running them through
``samizdat-harness vectors`` checks self-consistency (and determinism, and
that a reader of the files reproduces every value), not interoperability,
until another implementation runs them (SPEC §6.1).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.conformance import seeded_rng
from protocol.mls.crypto import PQ_SUITES, CipherSuite, Rng, get_suite
from protocol.mls.framing import protect_private, protect_public, sign_content
from protocol.mls.group import CommitResult, Group
from protocol.mls.key_package import SigningIdentity, create_key_package
from protocol.mls.key_schedule import derive_epoch, mls_exporter
from protocol.mls.messages import (
    Commit,
    ContentType,
    FramedContent,
    GroupContext,
    MLSMessage,
    Proposal,
    Remove,
    Sender,
    WireFormat,
)
from protocol.mls.ratchet_tree import RatchetTree
from protocol.mls.secret_tree import RatchetType, SecretTree, sender_data_key_nonce
from protocol.mls.tree_structs import (
    LeafNode,
    LeafNodeSource,
    ProtocolVersion,
    decode_ratchet_tree,
)
from protocol.mls.treekem import create_path, decrypt_path

NOW = 1_790_000_000  # the clock of every generated group (KeyPackage lifetimes)
DEFAULT_SEED = b"samizdat pq vectors v1"


def _hex(data: bytes) -> str:
    return data.hex()


def crypto_basics(suite: CipherSuite, rng: Rng) -> dict[str, Any]:
    n = suite.hash_len
    secret, value, context = rng(n), rng(32), rng(16)
    sig_priv, sig_pub = suite.signature_key_pair(rng)
    content = rng(48)
    hpke_priv, hpke_pub = suite.hpke_key_pair(rng)
    plaintext = b"the quantum-safe path secret"
    kem_output, ciphertext = suite.encrypt_with_label(
        hpke_pub, "EncryptWithLabel", context, plaintext, rng
    )
    return {
        "cipher_suite": suite.suite_id,
        "ref_hash": {
            "label": "RefHash",
            "value": _hex(value),
            "out": _hex(suite.ref_hash("RefHash", value)),
        },
        "expand_with_label": {
            "secret": _hex(secret),
            "label": "ExpandWithLabel",
            "context": _hex(context),
            "length": 42,
            "out": _hex(suite.expand_with_label(secret, "ExpandWithLabel", context, 42)),
        },
        "derive_secret": {
            "secret": _hex(secret),
            "label": "DeriveSecret",
            "out": _hex(suite.derive_secret(secret, "DeriveSecret")),
        },
        "derive_tree_secret": {
            "secret": _hex(secret),
            "label": "DeriveTreeSecret",
            "generation": 9,
            "length": n,
            "out": _hex(suite.derive_tree_secret(secret, "DeriveTreeSecret", 9, n)),
        },
        "sign_with_label": {
            "priv": _hex(sig_priv),
            "pub": _hex(sig_pub),
            "content": _hex(content),
            "label": "SignWithLabel",
            "signature": _hex(suite.sign_with_label(sig_priv, "SignWithLabel", content)),
        },
        "encrypt_with_label": {
            "priv": _hex(hpke_priv),
            "pub": _hex(hpke_pub),
            "label": "EncryptWithLabel",
            "context": _hex(context),
            "plaintext": _hex(plaintext),
            "kem_output": _hex(kem_output),
            "ciphertext": _hex(ciphertext),
        },
    }


def key_schedule(suite: CipherSuite, rng: Rng, n_epochs: int = 3) -> dict[str, Any]:
    n = suite.hash_len
    group_id, init_secret = rng(16), rng(n)
    case: dict[str, Any] = {
        "cipher_suite": suite.suite_id,
        "group_id": _hex(group_id),
        "initial_init_secret": _hex(init_secret),
        "epochs": [],
    }
    for epoch in range(n_epochs):
        tree_hash, commit_secret, cth = rng(n), rng(n), rng(n)
        psk_secret = rng(n) if epoch % 2 else bytes(n)
        context = GroupContext(
            ProtocolVersion.MLS10, suite.suite_id, group_id, epoch, tree_hash, cth, ()
        ).to_bytes()
        s = derive_epoch(suite, init_secret, commit_secret, context, psk_secret)
        exporter_context = rng(8)
        case["epochs"].append(
            {
                "tree_hash": _hex(tree_hash),
                "commit_secret": _hex(commit_secret),
                "psk_secret": _hex(psk_secret),
                "confirmed_transcript_hash": _hex(cth),
                "group_context": _hex(context),
                **{
                    name: _hex(getattr(s, name))
                    for name in (
                        "joiner_secret",
                        "welcome_secret",
                        "init_secret",
                        "sender_data_secret",
                        "encryption_secret",
                        "exporter_secret",
                        "epoch_authenticator",
                        "external_secret",
                        "confirmation_key",
                        "membership_key",
                        "resumption_psk",
                    )
                },
                "external_pub": _hex(suite.derive_key_pair(s.external_secret)[1]),
                "exporter": {
                    "label": "exporter label",
                    "context": _hex(exporter_context),
                    "length": 32,
                    "secret": _hex(
                        mls_exporter(
                            suite, s.exporter_secret, "exporter label", exporter_context, 32
                        )
                    ),
                },
            }
        )
        init_secret = s.init_secret
    return case


def secret_tree(suite: CipherSuite, rng: Rng, n_leaves: int = 5) -> dict[str, Any]:
    sd_secret, sample, enc_secret = rng(suite.hash_len), rng(suite.hash_len), rng(suite.hash_len)
    key, nonce = sender_data_key_nonce(suite, sd_secret, sample)
    tree = SecretTree(suite, enc_secret, n_leaves)
    leaves = []
    for leaf in range(n_leaves):
        entries = []
        for generation in (0, 1, 15):
            hk, hn = tree.consume(leaf, RatchetType.HANDSHAKE, generation)
            ak, an = tree.consume(leaf, RatchetType.APPLICATION, generation)
            entries.append(
                {
                    "generation": generation,
                    "handshake_key": _hex(hk),
                    "handshake_nonce": _hex(hn),
                    "application_key": _hex(ak),
                    "application_nonce": _hex(an),
                }
            )
        leaves.append(entries)
    return {
        "cipher_suite": suite.suite_id,
        "sender_data": {
            "sender_data_secret": _hex(sd_secret),
            "ciphertext": _hex(sample),
            "key": _hex(key),
            "nonce": _hex(nonce),
        },
        "encryption_secret": _hex(enc_secret),
        "leaves": leaves,
    }


def message_protection(suite: CipherSuite, rng: Rng) -> dict[str, Any]:
    n = suite.hash_len
    group_id = rng(16)
    context = GroupContext(ProtocolVersion.MLS10, suite.suite_id, group_id, 7, rng(n), rng(n), ())
    sig_priv, sig_pub = suite.signature_key_pair(rng)
    enc_secret, sd_secret, membership_key = rng(n), rng(n), rng(n)
    tree = SecretTree(suite, enc_secret, 2)
    proposal = Proposal.of(Remove(0))
    commit = Commit((), None)
    application = b"post-quantum application data"
    case: dict[str, Any] = {
        "cipher_suite": suite.suite_id,
        "group_id": _hex(group_id),
        "epoch": context.epoch,
        "tree_hash": _hex(context.tree_hash),
        "confirmed_transcript_hash": _hex(context.confirmed_transcript_hash),
        "signature_priv": _hex(sig_priv),
        "signature_pub": _hex(sig_pub),
        "encryption_secret": _hex(enc_secret),
        "sender_data_secret": _hex(sd_secret),
        "membership_key": _hex(membership_key),
        "proposal": _hex(proposal.to_bytes()),
        "commit": _hex(commit.to_bytes()),
        "application": _hex(application),
    }
    items: list[tuple[str, ContentType, Any]] = [
        ("proposal", ContentType.PROPOSAL, proposal),
        ("commit", ContentType.COMMIT, commit),
        ("application", ContentType.APPLICATION, application),
    ]
    for name, content_type, raw in items:
        framed = FramedContent(group_id, context.epoch, Sender.member(1), b"", content_type, raw)
        # A commit's confirmation tag is any MAC-sized value here (FORMAT.md: only the
        # framing is tested); the reader signs with the same all-zero tag.
        tag = bytes(n) if content_type == ContentType.COMMIT else None
        if content_type != ContentType.APPLICATION:
            auth = sign_content(
                suite, WireFormat.MLS_PUBLIC_MESSAGE, framed, context, sig_priv, tag
            )
            pub = protect_public(suite, auth, context, membership_key)
            case[f"{name}_pub"] = _hex(MLSMessage.of(pub).to_bytes())
        auth = sign_content(suite, WireFormat.MLS_PRIVATE_MESSAGE, framed, context, sig_priv, tag)
        priv = protect_private(suite, auth, tree, sd_secret, rng)
        case[f"{name}_priv"] = _hex(MLSMessage.of(priv).to_bytes())
        tree = SecretTree(suite, enc_secret, 2)  # each item starts from a fresh tree
    return case


def _group(suite: CipherSuite, rng: Rng, name: bytes) -> tuple[Group, SigningIdentity]:
    identity = SigningIdentity.generate(suite, name, rng)
    return Group.create(suite.suite_id, b"pq-group-" + name, identity, rng, NOW), identity


def welcome(suite: CipherSuite, rng: Rng) -> dict[str, Any]:
    alice, alice_id = _group(suite, rng, b"alice")
    bob = create_key_package(suite, SigningIdentity.generate(suite, b"bob", rng), NOW, rng)
    result = alice.commit(rng, NOW, add=[bob])
    assert result.welcome is not None
    return {
        "cipher_suite": suite.suite_id,
        "init_priv": _hex(bob.init_priv),
        "signer_pub": _hex(alice_id.signature_pub),
        "key_package": _hex(bob.key_package_bytes()),
        "welcome": _hex(result.welcome),
    }


def passive_client_welcome(suite: CipherSuite, rng: Rng) -> dict[str, Any]:
    """The passive client (bob) joins, then follows adds, an Update by reference,
    removes, path-only commits and a commit by a member who joined after him."""
    alice, _ = _group(suite, rng, b"alice")
    bob = create_key_package(suite, SigningIdentity.generate(suite, b"bob", rng), NOW, rng)
    result = alice.commit(rng, NOW, add=[bob])
    alice.merge_pending_commit()
    assert result.welcome is not None
    passive = Group.join(result.welcome, bob)
    case: dict[str, Any] = {
        "cipher_suite": suite.suite_id,
        "external_psks": [],
        "key_package": _hex(bob.key_package_bytes()),
        "signature_priv": _hex(bob.signature_priv),
        "encryption_priv": _hex(bob.encryption_priv),
        "init_priv": _hex(bob.init_priv),
        "welcome": _hex(result.welcome),
        "ratchet_tree": None,
        "initial_epoch_authenticator": _hex(passive.epoch_authenticator),
        "epochs": [],
    }
    members: dict[bytes, Group] = {b"alice": alice}

    def epoch(committer: bytes, proposals: list[tuple[bytes, bytes]], **kw: Any) -> CommitResult:
        for proposer, message in proposals:
            for name, g in members.items():
                if name != proposer:
                    g.process(message)
            passive.process(message)
        res = members[committer].commit(rng, NOW, **kw)
        for name, g in members.items():
            if name != committer:
                g.process(res.commit)
        members[committer].merge_pending_commit()
        passive.process(res.commit)
        case["epochs"].append(
            {
                "proposals": [_hex(m) for _, m in proposals],
                "commit": _hex(res.commit),
                "epoch_authenticator": _hex(passive.epoch_authenticator),
            }
        )
        return res

    carol = create_key_package(suite, SigningIdentity.generate(suite, b"carol", rng), NOW, rng)
    res = epoch(b"alice", [], add=[carol])
    assert res.welcome is not None
    members[b"carol"] = Group.join(res.welcome, carol)
    epoch(b"carol", [])  # a path-only commit by the newer member
    update = members[b"alice"].propose_update(rng)
    epoch(b"carol", [(b"alice", update)])  # alice's Update, by reference
    dave = create_key_package(suite, SigningIdentity.generate(suite, b"dave", rng), NOW, rng)
    res = epoch(b"alice", [], add=[dave])
    assert res.welcome is not None
    members[b"dave"] = Group.join(res.welcome, dave)
    carol_leaf = members[b"carol"].own_leaf_index
    epoch(b"dave", [], remove=[carol_leaf])
    del members[b"carol"]
    epoch(b"alice", [])
    return case


def treekem(suite: CipherSuite, rng: Rng, n: int = 6) -> dict[str, Any]:
    """A tree of ``n`` members added in one path-less commit (every parent blank, so
    each member's private state is its leaf key), then an UpdatePath from each of
    three senders against that tree; path secrets and commit secrets as a receiver
    decrypts them."""
    ids = [SigningIdentity.generate(suite, f"m{i}".encode(), rng) for i in range(n)]
    group = Group.create(suite.suite_id, b"pq-treekem", ids[0], rng, NOW)
    bundles = [create_key_package(suite, ident, NOW, rng) for ident in ids[1:]]
    group.commit(rng, NOW, add=bundles, path=False)
    group.merge_pending_commit()
    base = RatchetTree(suite, decode_ratchet_tree(group.ratchet_tree()))
    enc_privs = [group.state.private_keys[0], *(b.encryption_priv for b in bundles)]
    epoch, cth = 3, rng(suite.hash_len)
    group_id = group.group_id

    def context_for(tree_hash: bytes) -> bytes:
        return GroupContext(
            ProtocolVersion.MLS10, suite.suite_id, group_id, epoch, tree_hash, cth, ()
        ).to_bytes()

    update_paths = []
    for sender in (0, 3, n - 1):
        old = base.member_leaf(sender)

        def build_leaf(
            key: bytes, parent_hash: bytes, old: LeafNode = old, i: int = sender
        ) -> LeafNode:
            unsigned = dataclasses.replace(
                old,
                encryption_key=key,
                leaf_node_source=LeafNodeSource.COMMIT,
                lifetime=None,
                parent_hash=parent_hash,
                signature=b"",
            )
            sig = suite.sign_with_label(
                ids[i].signature_priv, "LeafNodeTBS", unsigned.tbs_bytes(group_id, i)
            )
            return dataclasses.replace(unsigned, signature=sig)

        mine = base.copy()
        path, keys = create_path(suite, mine, sender, build_leaf, context_for, frozenset(), rng)
        context = context_for(mine.tree_hash())
        secrets: list[str | None] = []
        for j in range(n):
            if j == sender:
                secrets.append(None)
                continue
            got = decrypt_path(
                suite, mine, sender, path, j, {2 * j: enc_privs[j]}, context, frozenset()
            )
            fdp = mine.filtered_direct_path(sender)
            first = min(got.path_secrets, key=fdp.index)
            assert got.commit_secret == keys.commit_secret
            secrets.append(_hex(got.path_secrets[first]))
        update_paths.append(
            {
                "sender": sender,
                "update_path": _hex(path.to_bytes()),
                "path_secrets": secrets,
                "commit_secret": _hex(keys.commit_secret),
                "tree_hash_after": _hex(mine.tree_hash()),
            }
        )
    return {
        "cipher_suite": suite.suite_id,
        "group_id": _hex(group_id),
        "epoch": epoch,
        "confirmed_transcript_hash": _hex(cth),
        "ratchet_tree": _hex(group.ratchet_tree()),
        "leaves_private": [
            {
                "index": i,
                "encryption_priv": _hex(enc_privs[i]),
                "signature_priv": _hex(ids[i].signature_priv),
                "path_secrets": [],
            }
            for i in range(n)
        ],
        "update_paths": update_paths,
    }


GENERATORS: dict[str, Callable[[CipherSuite, Rng], dict[str, Any]]] = {
    "crypto-basics": crypto_basics,
    "key-schedule": key_schedule,
    "secret-tree": secret_tree,
    "message-protection": message_protection,
    "welcome": welcome,
    "passive-client-welcome": passive_client_welcome,
    "treekem": treekem,
}


def generate(
    directory: Path, *, seed: bytes = DEFAULT_SEED, suites: tuple[int, ...] = PQ_SUITES
) -> list[Path]:
    """Write one ``<kind>.json`` per generator into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, make in GENERATORS.items():
        cases = [
            make(get_suite(s), seeded_rng(seed + b"/" + kind.encode() + s.to_bytes(2, "big")))
            for s in suites
        ]
        path = directory / f"{kind}.json"
        path.write_text(json.dumps(cases, indent=2) + "\n")
        written.append(path)
    return written
