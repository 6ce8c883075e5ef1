"""TreeKEM: creating and processing UpdatePaths (RFC 9420 §7.4 to §7.6, §7.9).

Theory of operation
-------------------
A committer draws a fresh leaf secret, derives one path secret per node of
its filtered direct path (``path_secret[n+1] = DeriveSecret(path_secret[n],
"path")``), a key pair per node from ``DeriveSecret(path_secret, "node")``,
and the commit secret one step past the root.  Each path secret is
HPKE-encrypted to every node in the resolution of the copath child, except
members added by the same commit, under the *provisional* GroupContext (whose
tree hash already reflects the merged path).

Both sides merge the path into the tree the same way: blank the direct path,
set the filtered-direct-path nodes with empty unmerged leaves, then chain the
parent hashes from the root down (§7.9).  The receiver checks that the chain
ends at the parent hash the committer signed in its new leaf, decrypts the one
ciphertext meant for a node whose private key it holds, re-derives the path
and checks every derived public key against the path.

All functions mutate the ``RatchetTree`` they are given; group logic passes a
copy and discards it on any error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from protocol.errors import CryptoError
from protocol.mls import tree_math as tm
from protocol.mls.crypto import CipherSuite, Rng
from protocol.mls.errors import InvalidCommit
from protocol.mls.ratchet_tree import RatchetTree
from protocol.mls.tree_structs import (
    HPKECiphertext,
    LeafNode,
    LeafNodeSource,
    ParentNode,
    UpdatePath,
    UpdatePathNode,
)

# builds the committer's signed leaf from (encryption_key, parent_hash)
LeafBuilder = Callable[[bytes, bytes], LeafNode]
# the provisional GroupContext (encoded) for a given new tree hash
ContextFor = Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class PathKeys:
    """Secrets a path leaves with its holder."""

    commit_secret: bytes
    path_secrets: dict[int, bytes]  # node index -> path secret (for Welcomes)
    private_keys: dict[int, bytes]  # node index -> HPKE private key


def node_key_pair(suite: CipherSuite, path_secret: bytes) -> tuple[bytes, bytes]:
    return suite.derive_key_pair(suite.derive_secret(path_secret, "node"))


def _derive_chain(
    suite: CipherSuite, first: bytes, nodes: list[int]
) -> tuple[dict[int, bytes], dict[int, bytes], dict[int, bytes], bytes]:
    """Path secrets, private and public keys for ``nodes`` starting from
    ``first``; and the secret one step beyond (the commit secret)."""
    secrets: dict[int, bytes] = {}
    privs: dict[int, bytes] = {}
    pubs: dict[int, bytes] = {}
    secret = first
    for x in nodes:
        secrets[x] = secret
        privs[x], pubs[x] = node_key_pair(suite, secret)
        secret = suite.derive_secret(secret, "path")
    return secrets, privs, pubs, secret


def copath_child(parent: int, leaf_index: int) -> int:
    """The child of ``parent`` whose subtree does not hold the leaf."""
    left = tm.left(parent)
    return tm.right(parent) if tm.is_in_subtree(left, 2 * leaf_index) else left


def _set_path(tree: RatchetTree, leaf_index: int, fdp: list[int], keys: list[bytes]) -> bytes:
    """Blank the direct path, install ``keys`` on the filtered direct path and
    chain the parent hashes top-down; returns the leaf's parent hash."""
    tree.blank_direct_path(leaf_index)
    parent_hash = b""
    for x, key in reversed(list(zip(fdp, keys, strict=True))):
        tree.set_parent(x, ParentNode(key, parent_hash, ()))
        parent_hash = tree.parent_hash_of(x, copath_child(x, leaf_index))
    return parent_hash


def create_path(
    suite: CipherSuite,
    tree: RatchetTree,
    leaf_index: int,
    build_leaf: LeafBuilder,
    context_for: ContextFor,
    new_leaves: frozenset[int],
    rng: Rng,
) -> tuple[UpdatePath, PathKeys]:
    """Re-key ``leaf_index``'s path in ``tree`` and encrypt it to the group."""
    fdp = tree.filtered_direct_path(leaf_index)
    leaf_secret = rng(suite.hash_len)
    leaf_priv, leaf_pub = node_key_pair(suite, leaf_secret)
    secrets, privs, pubs, commit_secret = _derive_chain(
        suite, suite.derive_secret(leaf_secret, "path"), fdp
    )
    leaf_parent_hash = _set_path(tree, leaf_index, fdp, [pubs[x] for x in fdp])
    leaf = build_leaf(leaf_pub, leaf_parent_hash)
    if leaf.encryption_key != leaf_pub or leaf.parent_hash != leaf_parent_hash:
        raise InvalidCommit("leaf builder did not use the path's key and parent hash")
    tree.set_leaf(leaf_index, leaf)
    context = context_for(tree.tree_hash())

    path_nodes = []
    for x in fdp:
        ciphertexts = []
        for target in tree.resolution(copath_child(x, leaf_index), new_leaves):
            key = tree.public_key(target)
            assert key is not None
            kem_output, ct = suite.encrypt_with_label(
                key, "UpdatePathNode", context, secrets[x], rng
            )
            ciphertexts.append(HPKECiphertext(kem_output, ct))
        path_nodes.append(UpdatePathNode(pubs[x], tuple(ciphertexts)))
    privs[2 * leaf_index] = leaf_priv
    return UpdatePath(leaf, tuple(path_nodes)), PathKeys(commit_secret, secrets, privs)


def merge_path(
    tree: RatchetTree, sender: int, path: UpdatePath, new_leaves: frozenset[int]
) -> None:
    """Merge a received path into ``tree`` (§7.5), checking its shape and the
    parent hash the sender signed.  The leaf's signature is the caller's."""
    fdp = tree.filtered_direct_path(sender)
    if len(path.nodes) != len(fdp):
        raise InvalidCommit(
            f"UpdatePath has {len(path.nodes)} nodes, filtered direct path {len(fdp)}"
        )
    for x, node in zip(fdp, path.nodes, strict=True):
        expected = len(tree.resolution(copath_child(x, sender), new_leaves))
        if len(node.encrypted_path_secret) != expected:
            raise InvalidCommit(f"UpdatePath node {x} has a wrong number of ciphertexts")
    if path.leaf_node.leaf_node_source != LeafNodeSource.COMMIT:
        raise InvalidCommit("UpdatePath leaf must have source commit")
    parent_hash = _set_path(tree, sender, fdp, [n.encryption_key for n in path.nodes])
    if path.leaf_node.parent_hash != parent_hash:
        raise InvalidCommit("UpdatePath leaf parent_hash does not match the path")
    tree.set_leaf(sender, path.leaf_node)


def decrypt_path(
    suite: CipherSuite,
    tree: RatchetTree,
    sender: int,
    path: UpdatePath,
    receiver: int,
    private_keys: Mapping[int, bytes],
    context: bytes,
    new_leaves: frozenset[int],
) -> PathKeys:
    """Recover the path secrets meant for ``receiver`` from a merged path.

    ``private_keys`` are the receiver's node keys from before the merge; the
    result holds the new keys for the nodes of the path it shares.
    """
    fdp = tree.filtered_direct_path(sender)
    for i, x in enumerate(fdp):
        child = copath_child(x, sender)
        if not tm.is_in_subtree(child, 2 * receiver):
            continue
        resolution = tree.resolution(child, new_leaves)
        for j, target in enumerate(resolution):
            if target in private_keys:
                ct = path.nodes[i].encrypted_path_secret[j]
                secret = suite.decrypt_with_label(
                    private_keys[target], "UpdatePathNode", context, ct.kem_output, ct.ciphertext
                )
                break
        else:
            raise InvalidCommit("no private key for any node in the copath resolution")
        secrets, privs, pubs, commit_secret = _derive_chain(suite, secret, fdp[i:])
        for k, y in enumerate(fdp[i:], start=i):
            if pubs[y] != path.nodes[k].encryption_key:
                raise CryptoError(f"derived key for node {y} does not match the UpdatePath")
        return PathKeys(commit_secret, secrets, privs)
    raise InvalidCommit(f"leaf {receiver} is not below the path of leaf {sender}")


def path_secret_for(
    tree: RatchetTree, committer: int, joiner: int, path_secrets: Mapping[int, bytes]
) -> bytes | None:
    """The path secret a new member gets in its Welcome: that of the lowest
    node of the committer's filtered direct path above the joiner (§12.4.3.1)."""
    for x in tree.filtered_direct_path(committer):
        if tm.is_in_subtree(x, 2 * joiner):
            return path_secrets.get(x)
    return None


def keys_from_path_secret(
    suite: CipherSuite, tree: RatchetTree, committer: int, node: int, secret: bytes
) -> dict[int, bytes]:
    """Private keys a joiner derives from its Welcome path secret, checked
    against the public tree."""
    fdp = tree.filtered_direct_path(committer)
    if node not in fdp:
        raise InvalidCommit("Welcome path secret is for a node off the committer's path")
    _, privs, pubs, _ = _derive_chain(suite, secret, fdp[fdp.index(node) :])
    for y, pub in pubs.items():
        if tree.public_key(y) != pub:
            raise CryptoError(f"Welcome path secret does not match node {y}")
    return privs
