"""The MLS key schedule, PSK secret and transcript hashes (RFC 9420 §8).

Everything here is a pure function of its inputs; the ``CipherSuite`` supplies
the KDF, hash and MAC.  ``EpochSecrets`` is the full set of secrets of one
epoch; group state keeps only what it needs and drops the rest (RFC 9420 §9.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocol.codec import encode_varint
from protocol.mls.crypto import CipherSuite


@dataclass(frozen=True, slots=True)
class EpochSecrets:
    """Secrets of one epoch (RFC 9420 §8, Figure 22 and Table 4)."""

    joiner_secret: bytes
    welcome_secret: bytes
    epoch_secret: bytes
    sender_data_secret: bytes
    encryption_secret: bytes
    exporter_secret: bytes
    external_secret: bytes
    confirmation_key: bytes
    membership_key: bytes
    resumption_psk: bytes
    epoch_authenticator: bytes
    init_secret: bytes


def joiner_secret(
    suite: CipherSuite, init_secret: bytes, commit_secret: bytes, group_context: bytes
) -> bytes:
    """``ExpandWithLabel(Extract(init_secret, commit_secret), "joiner", GC, Nh)``."""
    prk = suite.kdf_extract(init_secret, commit_secret)
    return suite.expand_with_label(prk, "joiner", group_context, suite.hash_len)


def _member_secret(suite: CipherSuite, joiner: bytes, psk_secret: bytes | None) -> bytes:
    """``KDF.Extract(joiner_secret, psk_secret or 0)`` (Figure 22)."""
    return suite.kdf_extract(
        joiner, psk_secret if psk_secret is not None else bytes(suite.hash_len)
    )


def welcome_secret(suite: CipherSuite, joiner: bytes, psk_secret: bytes | None) -> bytes:
    """The welcome secret, which a joiner needs before it knows the GroupContext."""
    return suite.derive_secret(_member_secret(suite, joiner, psk_secret), "welcome")


def epoch_from_joiner(
    suite: CipherSuite, joiner: bytes, psk_secret: bytes | None, group_context: bytes
) -> EpochSecrets:
    """Derive the epoch's secrets from the joiner secret (the Welcome path).

    ``psk_secret`` of ``None`` means no PSKs: the all-zero vector (§8.4).
    """
    member = _member_secret(suite, joiner, psk_secret)
    epoch = suite.expand_with_label(member, "epoch", group_context, suite.hash_len)
    return epoch_from_epoch_secret(
        suite, epoch, joiner=joiner, welcome=suite.derive_secret(member, "welcome")
    )


def epoch_from_epoch_secret(
    suite: CipherSuite, epoch: bytes, *, joiner: bytes = b"", welcome: bytes = b""
) -> EpochSecrets:
    """The secrets derived from an epoch secret (Table 4).  A new group's first
    epoch starts from a random epoch secret and has no joiner secret (§11)."""
    return EpochSecrets(
        joiner_secret=joiner,
        welcome_secret=welcome,
        epoch_secret=epoch,
        sender_data_secret=suite.derive_secret(epoch, "sender data"),
        encryption_secret=suite.derive_secret(epoch, "encryption"),
        exporter_secret=suite.derive_secret(epoch, "exporter"),
        external_secret=suite.derive_secret(epoch, "external"),
        confirmation_key=suite.derive_secret(epoch, "confirm"),
        membership_key=suite.derive_secret(epoch, "membership"),
        resumption_psk=suite.derive_secret(epoch, "resumption"),
        epoch_authenticator=suite.derive_secret(epoch, "authentication"),
        init_secret=suite.derive_secret(epoch, "init"),
    )


def derive_epoch(
    suite: CipherSuite,
    init_secret: bytes,
    commit_secret: bytes,
    group_context: bytes,
    psk_secret: bytes | None = None,
) -> EpochSecrets:
    """Derive an epoch from the previous init secret (the member's path)."""
    joiner = joiner_secret(suite, init_secret, commit_secret, group_context)
    return epoch_from_joiner(suite, joiner, psk_secret, group_context)


def welcome_key_nonce(suite: CipherSuite, welcome_secret: bytes) -> tuple[bytes, bytes]:
    """Key and nonce that encrypt a Welcome's GroupInfo (RFC 9420 §12.4.3.1)."""
    key = suite.expand_with_label(welcome_secret, "key", b"", suite.key_len)
    nonce = suite.expand_with_label(welcome_secret, "nonce", b"", suite.nonce_len)
    return key, nonce


def mls_exporter(
    suite: CipherSuite, exporter_secret: bytes, label: str, context: bytes, length: int
) -> bytes:
    """``MLS-Exporter(Label, Context, Length)`` (RFC 9420 §8.5)."""
    secret = suite.derive_secret(exporter_secret, label)
    return suite.expand_with_label(secret, "exported", suite.hash(context), length)


def psk_secret(suite: CipherSuite, psks: Sequence[tuple[bytes, bytes]]) -> bytes:
    """Chain PSKs into ``psk_secret`` (RFC 9420 §8.4).

    ``psks`` holds ``(encoded PreSharedKeyID, psk)`` pairs in proposal order.
    No PSKs give the all-zero vector of length ``KDF.Nh``.
    """
    nh = suite.hash_len
    zero = bytes(nh)
    secret = zero
    count = len(psks)
    for index, (psk_id, psk) in enumerate(psks):
        extracted = suite.kdf_extract(zero, psk)
        # PSKLabel = PreSharedKeyID id; uint16 index; uint16 count
        label = psk_id + index.to_bytes(2, "big") + count.to_bytes(2, "big")
        psk_input = suite.expand_with_label(extracted, "derived psk", label, nh)
        secret = suite.kdf_extract(psk_input, secret)
    return secret


def confirmed_transcript_hash(
    suite: CipherSuite, interim_before: bytes, confirmed_input: bytes
) -> bytes:
    """``Hash(interim_[n-1] || ConfirmedTranscriptHashInput_[n])`` (§8.2).

    ``confirmed_input`` is the encoded wire_format, FramedContent and signature
    of the Commit's AuthenticatedContent.
    """
    return suite.hash(interim_before + confirmed_input)


def interim_transcript_hash(suite: CipherSuite, confirmed: bytes, confirmation_tag: bytes) -> bytes:
    """``Hash(confirmed_[n] || InterimTranscriptHashInput_[n])``; the input is
    the confirmation tag as ``opaque MAC<V>`` (§8.2)."""
    return suite.hash(confirmed + encode_varint(len(confirmation_tag)) + confirmation_tag)


def confirmation_tag(suite: CipherSuite, confirmation_key: bytes, confirmed: bytes) -> bytes:
    """``MAC(confirmation_key, confirmed_transcript_hash)`` (RFC 9420 §6.1)."""
    return suite.mac(confirmation_key, confirmed)
