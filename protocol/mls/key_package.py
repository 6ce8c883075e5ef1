"""KeyPackages and leaf nodes: creation and validation (RFC 9420 §7.2, §7.3,
§10).

A ``KeyPackageBundle`` is a KeyPackage with the three private keys that belong
to it; the bundle never leaves the device, the KeyPackage is published.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from protocol.mls.crypto import CipherSuite, Rng
from protocol.mls.errors import InvalidMessage
from protocol.mls.ratchet_tree import check_leaf_node_basics, verify_leaf_node_signature
from protocol.mls.tree_structs import (
    Capabilities,
    Credential,
    Extension,
    KeyPackage,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    ProtocolVersion,
)

DEFAULT_LIFETIME = 90 * 24 * 3600  # seconds a KeyPackage stays valid
MAX_LIFETIME = 5 * 366 * 24 * 3600  # longest lifetime accepted (§7.2: apps MUST cap it)
CLOCK_SKEW = 3600  # not_before may lie this far in the future


def default_capabilities(suite_id: int) -> Capabilities:
    return Capabilities(
        versions=(ProtocolVersion.MLS10,),
        cipher_suites=(suite_id,),
        extensions=(),
        proposals=(),
        credentials=(1,),
    )


@dataclass(frozen=True, slots=True)
class SigningIdentity:
    """A member's credential with its signature key pair."""

    credential: Credential
    signature_priv: bytes
    signature_pub: bytes

    @classmethod
    def generate(cls, suite: CipherSuite, identity: bytes, rng: Rng) -> SigningIdentity:
        priv, pub = suite.signature_key_pair(rng)
        return cls(Credential.basic(identity), priv, pub)


def sign_leaf_node(
    suite: CipherSuite,
    leaf: LeafNode,
    signature_priv: bytes,
    group_id: bytes | None = None,
    leaf_index: int | None = None,
) -> LeafNode:
    """``leaf`` with its signature over LeafNodeTBS (§7.2) replaced."""
    unsigned = dataclasses.replace(leaf, signature=b"")
    tbs = unsigned.tbs_bytes(group_id, leaf_index)
    return dataclasses.replace(
        unsigned, signature=suite.sign_with_label(signature_priv, "LeafNodeTBS", tbs)
    )


@dataclass(frozen=True, slots=True)
class KeyPackageBundle:
    key_package: KeyPackage
    init_priv: bytes
    encryption_priv: bytes
    signature_priv: bytes

    def key_package_bytes(self) -> bytes:
        """The KeyPackage as it is published: an encoded MLSMessage."""
        from protocol.mls.messages import MLSMessage

        return MLSMessage.of(self.key_package).to_bytes()


def create_key_package(
    suite: CipherSuite,
    identity: SigningIdentity,
    now: int,
    rng: Rng,
    *,
    lifetime: int = DEFAULT_LIFETIME,
    capabilities: Capabilities | None = None,
    leaf_extensions: tuple[Extension, ...] = (),
    extensions: tuple[Extension, ...] = (),
) -> KeyPackageBundle:
    """A fresh KeyPackage with new init and encryption keys (§10)."""
    init_priv, init_pub = suite.hpke_key_pair(rng)
    enc_priv, enc_pub = suite.hpke_key_pair(rng)
    leaf = LeafNode(
        encryption_key=enc_pub,
        signature_key=identity.signature_pub,
        credential=identity.credential,
        capabilities=capabilities or default_capabilities(suite.suite_id),
        leaf_node_source=LeafNodeSource.KEY_PACKAGE,
        lifetime=Lifetime(max(0, now - CLOCK_SKEW), now + lifetime),
        parent_hash=None,
        extensions=leaf_extensions,
        signature=b"",
    )
    leaf = sign_leaf_node(suite, leaf, identity.signature_priv)
    unsigned = KeyPackage(ProtocolVersion.MLS10, suite.suite_id, init_pub, leaf, extensions, b"")
    signature = suite.sign_with_label(
        identity.signature_priv, "KeyPackageTBS", unsigned.tbs_bytes()
    )
    key_package = dataclasses.replace(unsigned, signature=signature)
    return KeyPackageBundle(key_package, init_priv, enc_priv, identity.signature_priv)


def check_lifetime(leaf: LeafNode, now: int | None) -> None:
    """The lifetime rules of §7.2/§7.3 (skipped when ``now`` is None)."""
    if leaf.lifetime is None or now is None:
        return
    lt = leaf.lifetime
    if lt.not_after - lt.not_before > MAX_LIFETIME + CLOCK_SKEW:
        raise InvalidMessage("leaf node lifetime is longer than allowed")
    if not lt.not_before - CLOCK_SKEW <= now <= lt.not_after:
        raise InvalidMessage("leaf node is outside its lifetime")


def validate_key_package(suite: CipherSuite, key_package: KeyPackage, now: int | None) -> None:
    """KeyPackage validation (§10.1): suite, signatures, leaf node, keys."""
    if key_package.cipher_suite != suite.suite_id:
        raise InvalidMessage(f"KeyPackage for suite {key_package.cipher_suite}")
    leaf = key_package.leaf_node
    suite.verify_with_label(
        leaf.signature_key, "KeyPackageTBS", key_package.tbs_bytes(), key_package.signature
    )
    if leaf.leaf_node_source != LeafNodeSource.KEY_PACKAGE:
        raise InvalidMessage("KeyPackage leaf node must have source key_package")
    verify_leaf_node_signature(suite, leaf, b"", 0)
    check_leaf_node_basics(leaf, suite.suite_id)
    check_lifetime(leaf, now)
    if key_package.init_key == leaf.encryption_key:
        raise InvalidMessage("KeyPackage init_key equals its leaf encryption_key")
