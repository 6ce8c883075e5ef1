"""Message protection, Welcome decryption and transcript hashes: the official
vectors, and rejection of tampered, replayed and out-of-epoch messages."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from harness.conformance import message_protection, seeded_rng, transcript_hashes, welcome
from protocol.errors import CryptoError
from protocol.mls.crypto import get_suite
from protocol.mls.errors import InvalidMessage, ReplayedMessage, WrongEpoch
from protocol.mls.framing import (
    protect_private,
    protect_public,
    sign_content,
    unprotect_private,
    unprotect_public,
)
from protocol.mls.messages import (
    ContentType,
    FramedContent,
    GroupContext,
    PrivateMessage,
    Sender,
    WireFormat,
)
from protocol.mls.secret_tree import SecretTree
from tests.conftest import run_vector, vector_cases


@pytest.mark.parametrize("case", vector_cases("message-protection.json"))
def test_message_protection_vectors(case: Any) -> None:
    run_vector(message_protection, case)


@pytest.mark.parametrize("case", vector_cases("welcome.json"))
def test_welcome_vectors(case: Any) -> None:
    run_vector(welcome, case)


@pytest.mark.parametrize("case", vector_cases("transcript-hashes.json"))
def test_transcript_hash_vectors(case: Any) -> None:
    run_vector(transcript_hashes, case)


SUITE = get_suite(1)
ENC = bytes(range(32))
SD = bytes(range(32, 64))
SIG_PRIV, SIG_PUB = SUITE.signature_key_pair(seeded_rng(b"signer"))
CONTEXT = GroupContext(1, 1, b"group", 7, b"\x01" * 32, b"\x02" * 32, ())


def _private(text: bytes = b"hello", tree: SecretTree | None = None) -> PrivateMessage:
    framed = FramedContent(b"group", 7, Sender.member(1), b"ad", ContentType.APPLICATION, text)
    auth = sign_content(SUITE, WireFormat.MLS_PRIVATE_MESSAGE, framed, CONTEXT, SIG_PRIV)
    sender_tree = tree or SecretTree(SUITE, ENC, 2)
    return protect_private(SUITE, auth, sender_tree, SD, seeded_rng(b"x"), padding=3)


def test_private_round_trip_then_replay_rejected() -> None:
    receiver = SecretTree(SUITE, ENC, 2)
    message = _private()
    decrypted = unprotect_private(SUITE, message, CONTEXT, receiver, SD)
    assert decrypted.content.content.content == b"hello"
    decrypted.consume()
    with pytest.raises(ReplayedMessage):
        unprotect_private(SUITE, message, CONTEXT, receiver, SD)


@pytest.mark.parametrize(
    "field", ["ciphertext", "encrypted_sender_data", "authenticated_data", "content_type"]
)
def test_tampered_private_message_rejected_without_state_change(field: str) -> None:
    receiver = SecretTree(SUITE, ENC, 2)
    message = _private()
    if field == "content_type":
        bad = dataclasses.replace(message, content_type=ContentType.PROPOSAL)
    else:
        value = getattr(message, field)
        flipped = value[:-1] + bytes([value[-1] ^ 1]) if value else b"x"
        bad = dataclasses.replace(message, **{field: flipped})
    with pytest.raises((CryptoError, InvalidMessage)):
        unprotect_private(SUITE, bad, CONTEXT, receiver, SD)
    # the genuine message still decrypts: nothing was consumed
    unprotect_private(SUITE, message, CONTEXT, receiver, SD).consume()


def test_wrong_epoch_and_group_rejected() -> None:
    receiver = SecretTree(SUITE, ENC, 2)
    message = _private()
    with pytest.raises(WrongEpoch):
        unprotect_private(SUITE, dataclasses.replace(message, epoch=6), CONTEXT, receiver, SD)
    with pytest.raises(InvalidMessage):
        unprotect_private(
            SUITE, dataclasses.replace(message, group_id=b"other"), CONTEXT, receiver, SD
        )


def test_public_message_membership_tag_and_application_refused() -> None:
    from protocol.mls.messages import Proposal, Remove

    framed = FramedContent(
        b"group", 7, Sender.member(1), b"", ContentType.PROPOSAL, Proposal.of(Remove(0))
    )
    auth = sign_content(SUITE, WireFormat.MLS_PUBLIC_MESSAGE, framed, CONTEXT, SIG_PRIV)
    key = b"k" * 32
    public = protect_public(SUITE, auth, CONTEXT, key)
    unprotect_public(SUITE, public, CONTEXT, key)
    with pytest.raises(CryptoError):
        unprotect_public(SUITE, public, CONTEXT, b"j" * 32)
    app = FramedContent(b"group", 7, Sender.member(1), b"", ContentType.APPLICATION, b"hi")
    signed = sign_content(SUITE, WireFormat.MLS_PUBLIC_MESSAGE, app, CONTEXT, SIG_PRIV)
    with pytest.raises(InvalidMessage):
        protect_public(SUITE, signed, CONTEXT, key)
