"""Mailbox sealing: what a relay stores is AEAD ciphertext of exact bucket size.

Why a layer above MLS: an MLS PrivateMessage leaves ``group_id``, ``epoch``
and ``content_type`` in clear (RFC 9420 §6.3), and a Welcome names the
KeyPackage it is for.  Posted as they are, they would let a relay link one
group's mailboxes across relays, count its epochs and tell commits from
chat, which is exactly what BRIEF §5 criticises in MLS-over-Nostr.  So every
envelope is sealed before it is posted:

    sealed = nonce[24] || XChaCha20-Poly1305(K, nonce, aad = mailbox_id, pad(envelope))
    K      = HKDF-SHA256(salt = "", ikm = write_seed, info = "samizdat mailbox seal v1", 32)

Everyone who may post to the mailbox holds its write seed (group members,
or contacts holding the owner's invite); the relay holds only the Ed25519
public keys, so it learns nothing but the bucket size.  The mailbox id is
associated data: an envelope replayed into another mailbox does not open.
Padding is applied to the plaintext with the seal's 40 bytes of overhead
accounted for, so ``len(sealed)`` is always an envelope bucket.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError as NaclCryptoError

from protocol.errors import CryptoError, LocalError
from protocol.padding import ENVELOPE_BUCKETS, Rng, is_envelope_size, pad, unpad

NONCE_LEN = 24
TAG_LEN = 16
OVERHEAD = NONCE_LEN + TAG_LEN
MAX_SEALED_PLAINTEXT = ENVELOPE_BUCKETS[-1] - OVERHEAD - 4  # 4: the padding length header
_INFO = b"samizdat mailbox seal v1"


def seal_key(write_seed: bytes) -> bytes:
    if len(write_seed) != 32:
        raise LocalError("a mailbox write seed is 32 bytes")
    return HKDF(hashes.SHA256(), 32, b"", _INFO).derive(write_seed)


def seal(key: bytes, mailbox_id: bytes, envelope: bytes, rng: Rng, *, full: bool = False) -> bytes:
    """Pad and encrypt ``envelope`` for ``mailbox_id``; the result's length is
    an envelope bucket (the largest one if ``full``: fragments of one large
    message all take it, so only their count shows).  Envelopes too large for
    one bucket must be split first (:func:`protocol.app.envelope.split` with
    ``max_size=MAX_SEALED_PLAINTEXT``)."""
    if len(envelope) > MAX_SEALED_PLAINTEXT:
        raise LocalError(f"envelope of {len(envelope)} bytes is too large to seal")
    buckets = (ENVELOPE_BUCKETS[-1],) if full else ENVELOPE_BUCKETS
    padded = pad(envelope, None, overhead=OVERHEAD, buckets=buckets)  # zero fill: encrypted
    nonce = rng(NONCE_LEN)
    ciphertext = crypto_aead_xchacha20poly1305_ietf_encrypt(padded, mailbox_id, nonce, key)
    sealed = nonce + ciphertext
    assert is_envelope_size(len(sealed)), len(sealed)
    return sealed


def unseal(key: bytes, mailbox_id: bytes, sealed: bytes) -> bytes:
    """Open a sealed envelope; ``CryptoError`` if it was not sealed for this
    mailbox with this key, or was altered."""
    if len(sealed) < OVERHEAD:
        raise CryptoError("sealed envelope too short")
    nonce, ciphertext = sealed[:NONCE_LEN], sealed[NONCE_LEN:]
    try:
        padded = crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, mailbox_id, nonce, key)
    except NaclCryptoError:
        raise CryptoError("sealed envelope does not open with this mailbox's key") from None
    return unpad(padded)
