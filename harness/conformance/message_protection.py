"""Message-protection vectors (FORMAT.md "Message Protection")."""

from __future__ import annotations

from typing import Any

from harness.conformance import VectorFailure, expect_equal, h, seeded_rng
from protocol.mls.crypto import CipherSuite, get_suite
from protocol.mls.errors import InvalidMessage
from protocol.mls.framing import (
    protect_private,
    protect_public,
    sign_content,
    unprotect_private,
    unprotect_public,
    verify_content_signature,
)
from protocol.mls.messages import (
    AuthenticatedContent,
    Commit,
    Content,
    ContentType,
    FramedContent,
    GroupContext,
    MLSMessage,
    Proposal,
    Sender,
    WireFormat,
)
from protocol.mls.secret_tree import SecretTree
from protocol.mls.tree_structs import ProtocolVersion

KIND = "message-protection"
SENDER = 1


def _check(
    suite: CipherSuite,
    case: dict[str, Any],
    context: GroupContext,
    name: str,
    content_type: ContentType,
    raw: Content,
) -> None:
    membership_key = h(case["membership_key"])
    sig_priv, sig_pub = h(case["signature_priv"]), h(case["signature_pub"])
    enc_secret, sd_secret = h(case["encryption_secret"]), h(case["sender_data_secret"])
    tag = bytes(suite.hash_len) if content_type == ContentType.COMMIT else None
    framed = FramedContent(
        context.group_id, context.epoch, Sender.member(SENDER), b"", content_type, raw
    )
    rng = seeded_rng(name.encode())

    def signed(wire_format: WireFormat) -> AuthenticatedContent:
        return sign_content(suite, wire_format, framed, context, sig_priv, tag)

    if content_type == ContentType.APPLICATION:
        try:
            protect_public(suite, signed(WireFormat.MLS_PUBLIC_MESSAGE), context, membership_key)
        except InvalidMessage:
            pass
        else:
            raise VectorFailure("application data was accepted as a PublicMessage")
    else:
        pub = MLSMessage.from_bytes(h(case[f"{name}_pub"])).public_message
        if pub is None:
            raise VectorFailure(f"{name}_pub is not a PublicMessage")
        auth = unprotect_public(suite, pub, context, membership_key)
        verify_content_signature(suite, auth, context, sig_pub)
        expect_equal(f"{name}_pub content", auth.content.content, raw)
        mine = protect_public(suite, signed(WireFormat.MLS_PUBLIC_MESSAGE), context, membership_key)
        wire_pub = MLSMessage.from_bytes(MLSMessage.of(mine).to_bytes()).public_message
        assert wire_pub is not None
        again = unprotect_public(suite, wire_pub, context, membership_key)
        verify_content_signature(suite, again, context, sig_pub)
        expect_equal(f"{name} public round trip", again.content.content, raw)

    priv = MLSMessage.from_bytes(h(case[f"{name}_priv"])).private_message
    if priv is None:
        raise VectorFailure(f"{name}_priv is not a PrivateMessage")
    receiver = SecretTree(suite, enc_secret, 2)
    decrypted = unprotect_private(suite, priv, context, receiver, sd_secret)
    verify_content_signature(suite, decrypted.content, context, sig_pub)
    decrypted.consume()
    expect_equal(f"{name}_priv content", decrypted.content.content.content, raw)

    sender_tree = SecretTree(suite, enc_secret, 2)
    mine_priv = protect_private(
        suite, signed(WireFormat.MLS_PRIVATE_MESSAGE), sender_tree, sd_secret, rng, padding=7
    )
    wire = MLSMessage.from_bytes(MLSMessage.of(mine_priv).to_bytes()).private_message
    assert wire is not None
    back = unprotect_private(suite, wire, context, SecretTree(suite, enc_secret, 2), sd_secret)
    verify_content_signature(suite, back.content, context, sig_pub)
    expect_equal(f"{name} private round trip", back.content.content.content, raw)


def run(case: dict[str, Any]) -> None:
    suite = get_suite(case["cipher_suite"])
    context = GroupContext(
        version=ProtocolVersion.MLS10,
        cipher_suite=case["cipher_suite"],
        group_id=h(case["group_id"]),
        epoch=case["epoch"],
        tree_hash=h(case["tree_hash"]),
        confirmed_transcript_hash=h(case["confirmed_transcript_hash"]),
        extensions=(),
    )
    _check(
        suite,
        case,
        context,
        "proposal",
        ContentType.PROPOSAL,
        Proposal.from_bytes(h(case["proposal"])),
    )
    _check(suite, case, context, "commit", ContentType.COMMIT, Commit.from_bytes(h(case["commit"])))
    _check(suite, case, context, "application", ContentType.APPLICATION, h(case["application"]))
