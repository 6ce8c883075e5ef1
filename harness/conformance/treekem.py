"""TreeKEM vectors (FORMAT.md "TreeKEM")."""

from __future__ import annotations

import dataclasses
from typing import Any

from harness.conformance import VectorFailure, expect_equal, h, seeded_rng
from protocol.mls.crypto import CipherSuite, get_suite
from protocol.mls.messages import GroupContext
from protocol.mls.ratchet_tree import RatchetTree, verify_leaf_node_signature
from protocol.mls.tree_structs import (
    LeafNode,
    LeafNodeSource,
    ProtocolVersion,
    UpdatePath,
    decode_ratchet_tree,
)
from protocol.mls.treekem import create_path, decrypt_path, merge_path, node_key_pair

KIND = "treekem"
NO_NEW_LEAVES: frozenset[int] = frozenset()


def _private_state(
    suite: CipherSuite, tree: RatchetTree, entry: dict[str, Any]
) -> dict[int, bytes]:
    keys = {2 * entry["index"]: h(entry["encryption_priv"])}
    for ps in entry["path_secrets"]:
        keys[ps["node"]] = node_key_pair(suite, h(ps["path_secret"]))[0]
    for x, priv in keys.items():
        if tree.public_key(x) != suite.hpke_public_key(priv):
            raise VectorFailure(f"leaf {entry['index']}: private key of node {x} mismatches tree")
    return keys


def run(case: dict[str, Any]) -> None:
    suite = get_suite(case["cipher_suite"])
    group_id = h(case["group_id"])
    base = RatchetTree(suite, decode_ratchet_tree(h(case["ratchet_tree"])))
    privates = {e["index"]: _private_state(suite, base, e) for e in case["leaves_private"]}
    signers = {e["index"]: h(e["signature_priv"]) for e in case["leaves_private"]}

    def context_for(tree_hash: bytes) -> bytes:
        return GroupContext(
            ProtocolVersion.MLS10,
            case["cipher_suite"],
            group_id,
            case["epoch"],
            tree_hash,
            h(case["confirmed_transcript_hash"]),
            (),
        ).to_bytes()

    for up in case["update_paths"]:
        sender = up["sender"]
        path = UpdatePath.from_bytes(h(up["update_path"]))
        merged = base.copy()
        merge_path(merged, sender, path, NO_NEW_LEAVES)
        verify_leaf_node_signature(suite, path.leaf_node, group_id, sender)
        expect_equal("tree_hash_after", merged.tree_hash(), h(up["tree_hash_after"]))
        context = context_for(merged.tree_hash())
        for j, keys in privates.items():
            if j == sender:
                continue
            got = decrypt_path(suite, merged, sender, path, j, keys, context, NO_NEW_LEAVES)
            first = min(
                got.path_secrets, key=lambda x: merged.filtered_direct_path(sender).index(x)
            )
            expect_equal(
                f"path secret for leaf {j}", got.path_secrets[first], h(up["path_secrets"][j])
            )
            expect_equal(f"commit secret at leaf {j}", got.commit_secret, h(up["commit_secret"]))

        if sender not in signers:
            continue
        old_leaf = base.member_leaf(sender)

        def build_leaf(
            key: bytes, parent_hash: bytes, old: LeafNode = old_leaf, sender: int = sender
        ) -> LeafNode:
            unsigned = dataclasses.replace(
                old,
                encryption_key=key,
                leaf_node_source=LeafNodeSource.COMMIT,
                lifetime=None,
                parent_hash=parent_hash,
                signature=b"",
            )
            tbs = unsigned.tbs_bytes(group_id, sender)
            sig = suite.sign_with_label(signers[sender], "LeafNodeTBS", tbs)
            return dataclasses.replace(unsigned, signature=sig)

        mine = base.copy()
        new_path, path_keys = create_path(
            suite,
            mine,
            sender,
            build_leaf,
            context_for,
            NO_NEW_LEAVES,
            seeded_rng(b"treekem" + bytes([sender])),
        )
        context = context_for(mine.tree_hash())
        for j, their_keys in privates.items():
            if j == sender:
                continue
            theirs = base.copy()
            merge_path(theirs, sender, UpdatePath.from_bytes(new_path.to_bytes()), NO_NEW_LEAVES)
            expect_equal("re-created path tree hash", theirs.tree_hash(), mine.tree_hash())
            got = decrypt_path(
                suite, theirs, sender, new_path, j, their_keys, context, NO_NEW_LEAVES
            )
            expect_equal(
                f"new commit secret at leaf {j}", got.commit_secret, path_keys.commit_secret
            )
