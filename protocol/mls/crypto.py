"""The MLS cipher suites (RFC 9420 §5.1, §17.1) and the labelled operations built on them.

:func:`get_suite` returns the one immutable :class:`CipherSuite` for a suite
id.  A suite bundles the hash and MAC, HKDF, the AEAD, the signature scheme
and HPKE (:mod:`protocol.mls.hpke`), plus the MLS constructions over them:
ExpandWithLabel / DeriveSecret (§8), DeriveTreeSecret (§9), RefHash (§5.2),
SignWithLabel (§5.1.2) and EncryptWithLabel (§5.1.3).

Nothing here draws randomness itself: key generation and HPKE encryption take
an ``rng`` (``rng(n)`` returns ``n`` random bytes), so a seeded ``rng`` makes
every output reproducible.  ECDSA signing is deterministic (RFC 6979).

Key formats are those of the MLS test vectors: Ed25519 / Ed448 keys raw
(RFC 8032; the private key is the seed), ECDSA private keys as fixed-length
big-endian scalars and public keys as uncompressed SEC1 points, HPKE keys as
RFC 9180 SerializePrivateKey / SerializePublicKey.  ECDSA signatures are DER.

Errors follow one rule.  Anything that may have come from a peer (a public
key, a signature, a KEM output, a ciphertext, a MAC tag) and does not verify
or has the wrong shape raises :class:`~protocol.errors.CryptoError`.  A
malformed private key, AEAD key or nonce, or an impossible output length is
the caller's bug and raises :class:`~protocol.errors.LocalError`.  An unknown
or unsupported suite raises :class:`~protocol.errors.UnsupportedError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import constant_time, hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448

from protocol.codec import opaque
from protocol.errors import CryptoError, LocalError, UnsupportedError
from protocol.mls.hpke import (
    Aead,
    EcKem,
    Hpke,
    Kdf,
    X448Kem,
    X25519Kem,
    ec_point,
    load_ec_public,
    scalar_from_bytes,
)
from protocol.mls.xwing import XWingKem

Rng = Callable[[int], bytes]

_LABEL_PREFIX = b"MLS 1.0 "


def _mls_label(label: str) -> bytes:
    """``opaque label<V> = "MLS 1.0 " + Label``, encoded."""
    return opaque(_LABEL_PREFIX + label.encode())


class _SignatureScheme(ABC):
    name: str

    @abstractmethod
    def key_pair(self, rng: Rng) -> tuple[bytes, bytes]: ...

    @abstractmethod
    def public_key(self, priv: bytes) -> bytes: ...

    @abstractmethod
    def sign(self, priv: bytes, message: bytes) -> bytes: ...

    @abstractmethod
    def verify(self, pub: bytes, message: bytes, signature: bytes) -> None: ...


class _Ed25519(_SignatureScheme):
    """Ed25519 through libsodium (PyNaCl), which is faster than OpenSSL here."""

    name = "Ed25519"

    @staticmethod
    def _expand(priv: bytes) -> tuple[bytes, bytes]:
        if len(priv) != 32:
            raise LocalError(f"Ed25519 private key must be 32 bytes, not {len(priv)}")
        pk, sk = nacl.bindings.crypto_sign_seed_keypair(priv)
        return bytes(pk), bytes(sk)

    def key_pair(self, rng: Rng) -> tuple[bytes, bytes]:
        seed = rng(32)
        return seed, self._expand(seed)[0]

    def public_key(self, priv: bytes) -> bytes:
        return self._expand(priv)[0]

    def sign(self, priv: bytes, message: bytes) -> bytes:
        signed = nacl.bindings.crypto_sign(message, self._expand(priv)[1])
        return bytes(signed[:64])

    def verify(self, pub: bytes, message: bytes, signature: bytes) -> None:
        if len(pub) != 32 or len(signature) != 64:
            raise CryptoError("Ed25519 public key or signature has the wrong length")
        try:
            nacl.bindings.crypto_sign_open(signature + message, pub)
        except nacl.exceptions.CryptoError:
            raise CryptoError("Ed25519 signature does not verify") from None


class _Ed448(_SignatureScheme):
    name = "Ed448"

    def key_pair(self, rng: Rng) -> tuple[bytes, bytes]:
        seed = rng(57)
        return seed, self.public_key(seed)

    @staticmethod
    def _load(priv: bytes) -> ed448.Ed448PrivateKey:
        if len(priv) != 57:
            raise LocalError(f"Ed448 private key must be 57 bytes, not {len(priv)}")
        return ed448.Ed448PrivateKey.from_private_bytes(priv)

    def public_key(self, priv: bytes) -> bytes:
        return self._load(priv).public_key().public_bytes_raw()

    def sign(self, priv: bytes, message: bytes) -> bytes:
        return self._load(priv).sign(message)

    def verify(self, pub: bytes, message: bytes, signature: bytes) -> None:
        if len(pub) != 57 or len(signature) != 114:
            raise CryptoError("Ed448 public key or signature has the wrong length")
        try:
            ed448.Ed448PublicKey.from_public_bytes(pub).verify(signature, message)
        except (InvalidSignature, ValueError):
            raise CryptoError("Ed448 signature does not verify") from None


class _Ecdsa(_SignatureScheme):
    """ECDSA with deterministic nonces (RFC 6979) and DER signatures."""

    def __init__(self, kem: EcKem, algorithm: hashes.HashAlgorithm) -> None:
        # The curve parameters come from the suite's DHKEM, which is on the same curve.
        self.name = f"ECDSA {kem.curve.name}"
        self._kem = kem
        self._ecdsa = ec.ECDSA(algorithm, deterministic_signing=True)

    def _load(self, priv: bytes) -> ec.EllipticCurvePrivateKey:
        kem = self._kem
        return ec.derive_private_key(
            scalar_from_bytes(priv, kem.n_sk, kem.order, self.name, allow_short=True), kem.curve
        )

    def key_pair(self, rng: Rng) -> tuple[bytes, bytes]:
        # Rejection sampling as in RFC 9180 §7.1.3, with the top bits masked off.
        kem = self._kem
        top_bits = kem.order.bit_length() - 8 * (kem.n_sk - 1)
        for _ in range(256):
            candidate = bytearray(rng(kem.n_sk))
            candidate[0] &= (1 << top_bits) - 1
            if 0 < int.from_bytes(candidate, "big") < kem.order:
                return bytes(candidate), self.public_key(bytes(candidate))
        raise LocalError(f"{self.name}: the rng produced no valid private key")

    def public_key(self, priv: bytes) -> bytes:
        return ec_point(self._load(priv).public_key())

    def sign(self, priv: bytes, message: bytes) -> bytes:
        return self._load(priv).sign(message, self._ecdsa)

    def verify(self, pub: bytes, message: bytes, signature: bytes) -> None:
        key = load_ec_public(pub, self._kem.n_pk, self._kem.curve, self.name)
        try:
            key.verify(signature, message, self._ecdsa)
        except InvalidSignature:
            raise CryptoError(f"{self.name} signature does not verify") from None


@dataclass(frozen=True, eq=False)
class CipherSuite:
    """One MLS cipher suite (RFC 9420 §17.1); get instances from :func:`get_suite`."""

    suite_id: int
    name: str
    _kdf: Kdf = field(repr=False)
    _aead: Aead = field(repr=False)
    _hpke: Hpke = field(repr=False)
    _sig: _SignatureScheme = field(repr=False)

    @property
    def hash_len(self) -> int:
        """Nh: the output size of the hash and of KDF.Extract."""
        return self._kdf.n_h

    @property
    def key_len(self) -> int:
        """AEAD.Nk."""
        return self._aead.n_k

    @property
    def nonce_len(self) -> int:
        """AEAD.Nn."""
        return self._aead.n_n

    # -- hash, MAC, KDF ---------------------------------------------------------

    def hash(self, data: bytes) -> bytes:
        return self._kdf.hash(data)

    def mac(self, key: bytes, data: bytes) -> bytes:
        """HMAC with the suite's hash (RFC 9420 §5.1)."""
        return self._kdf.hmac(key, data)

    def verify_mac(self, key: bytes, data: bytes, tag: bytes) -> None:
        """Constant-time comparison of ``tag`` with ``mac(key, data)``."""
        if not constant_time.bytes_eq(self.mac(key, data), tag):
            raise CryptoError("MAC does not verify")

    def kdf_extract(self, salt: bytes, ikm: bytes) -> bytes:
        return self._kdf.extract(salt, ikm)

    def kdf_expand(self, prk: bytes, info: bytes, length: int) -> bytes:
        return self._kdf.expand(prk, info, length)

    def expand_with_label(self, secret: bytes, label: str, context: bytes, length: int) -> bytes:
        """ExpandWithLabel (RFC 9420 §8); ``label`` without the "MLS 1.0 " prefix."""
        if not 0 <= length < 1 << 16:
            raise LocalError(f"ExpandWithLabel length {length} does not fit in a uint16")
        kdf_label = length.to_bytes(2, "big") + _mls_label(label) + opaque(context)
        return self._kdf.expand(secret, kdf_label, length)

    def derive_secret(self, secret: bytes, label: str) -> bytes:
        """DeriveSecret (RFC 9420 §8)."""
        return self.expand_with_label(secret, label, b"", self._kdf.n_h)

    def derive_tree_secret(self, secret: bytes, label: str, generation: int, length: int) -> bytes:
        """DeriveTreeSecret (RFC 9420 §9.1): the context is the uint32 generation."""
        if not 0 <= generation < 1 << 32:
            raise LocalError(f"generation {generation} does not fit in a uint32")
        return self.expand_with_label(secret, label, generation.to_bytes(4, "big"), length)

    def ref_hash(self, label: str, value: bytes) -> bytes:
        """RefHash (RFC 9420 §5.2); ``label`` is used whole (no prefix is added)."""
        return self._kdf.hash(opaque(label.encode()) + opaque(value))

    # -- AEAD ----------------------------------------------------------------------

    def aead_seal(self, key: bytes, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        return self._aead.seal(key, nonce, aad, plaintext)

    def aead_open(self, key: bytes, nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        return self._aead.open(key, nonce, aad, ciphertext)

    # -- signatures ----------------------------------------------------------------

    def signature_key_pair(self, rng: Rng) -> tuple[bytes, bytes]:
        """A fresh (private, public) signature key pair."""
        return self._sig.key_pair(rng)

    def signature_public_key(self, priv: bytes) -> bytes:
        return self._sig.public_key(priv)

    def sign(self, priv: bytes, message: bytes) -> bytes:
        return self._sig.sign(priv, message)

    def verify(self, pub: bytes, message: bytes, signature: bytes) -> None:
        self._sig.verify(pub, message, signature)

    def sign_with_label(self, priv: bytes, label: str, content: bytes) -> bytes:
        """SignWithLabel (RFC 9420 §5.1.2) over SignContent."""
        return self._sig.sign(priv, _mls_label(label) + opaque(content))

    def verify_with_label(self, pub: bytes, label: str, content: bytes, signature: bytes) -> None:
        self._sig.verify(pub, _mls_label(label) + opaque(content), signature)

    # -- HPKE (RFC 9180 base mode) -------------------------------------------------

    def hpke_key_pair(self, rng: Rng) -> tuple[bytes, bytes]:
        """A fresh (private, public) HPKE key pair: DeriveKeyPair of Nsk random bytes."""
        return self._hpke.kem.derive_key_pair(rng(self._hpke.kem.n_sk))

    def derive_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]:
        """KEM DeriveKeyPair (RFC 9180 §7.1.3): (SerializePrivateKey, SerializePublicKey)."""
        return self._hpke.kem.derive_key_pair(ikm)

    def hpke_public_key(self, priv: bytes) -> bytes:
        return self._hpke.kem.public_key(priv)

    def hpke_seal(
        self, pub: bytes, info: bytes, aad: bytes, plaintext: bytes, rng: Rng
    ) -> tuple[bytes, bytes]:
        """SealBase: (enc, ciphertext)."""
        return self._hpke.seal(pub, info, aad, plaintext, rng(self._hpke.kem.n_ikm_e))

    def hpke_open(
        self, priv: bytes, enc: bytes, info: bytes, aad: bytes, ciphertext: bytes
    ) -> bytes:
        """OpenBase; raises CryptoError when the ciphertext does not decrypt."""
        return self._hpke.open(enc, priv, info, aad, ciphertext)

    def hpke_export_sender(
        self, pub: bytes, info: bytes, exporter_context: bytes, length: int, rng: Rng
    ) -> tuple[bytes, bytes]:
        """SetupBaseS + Export (RFC 9180 §5.3): (enc, secret); MLS external init (§12.4.3.2)."""
        kem = self._hpke.kem
        return self._hpke.send_export(pub, info, exporter_context, length, rng(kem.n_ikm_e))

    def hpke_export_receiver(
        self, priv: bytes, enc: bytes, info: bytes, exporter_context: bytes, length: int
    ) -> bytes:
        """SetupBaseR + Export: the secret :meth:`hpke_export_sender` produced for ``enc``."""
        return self._hpke.receive_export(enc, priv, info, exporter_context, length)

    def encrypt_with_label(
        self, pub: bytes, label: str, context: bytes, plaintext: bytes, rng: Rng
    ) -> tuple[bytes, bytes]:
        """EncryptWithLabel (RFC 9420 §5.1.3): (kem_output, ciphertext)."""
        info = _mls_label(label) + opaque(context)
        return self.hpke_seal(pub, info, b"", plaintext, rng)

    def encrypt_with_label_many(
        self, label: str, context: bytes, recipients: list[tuple[bytes, bytes]], rng: Rng
    ) -> list[tuple[bytes, bytes]]:
        """EncryptWithLabel of each (public key, plaintext) under one label and
        context: the HPKE ``info`` is built and hashed once (a Welcome's
        context is the whole encrypted GroupInfo, RFC 9420 §12.4.3.1)."""
        info = _mls_label(label) + opaque(context)
        return [self.hpke_seal(pub, info, b"", plaintext, rng) for pub, plaintext in recipients]

    def decrypt_with_label(
        self, priv: bytes, label: str, context: bytes, kem_output: bytes, ciphertext: bytes
    ) -> bytes:
        """DecryptWithLabel (RFC 9420 §5.1.3)."""
        info = _mls_label(label) + opaque(context)
        return self.hpke_open(priv, kem_output, info, b"", ciphertext)


def _make_suite(suite_id: int) -> CipherSuite:
    name = SUITE_NAMES[suite_id]
    sha256 = Kdf(1, hashes.SHA256())
    sha384 = Kdf(2, hashes.SHA384())
    sha512 = Kdf(3, hashes.SHA512())
    aes128 = Aead(1, "AES-128-GCM", 16)
    aes256 = Aead(2, "AES-256-GCM", 32)
    chacha = Aead(3, "ChaCha20-Poly1305", 32)
    sig: _SignatureScheme
    if suite_id in (XWING_SUITE, MLKEM768X25519_SUITE):
        # SPEC §4.1.1: the post-quantum hybrids, X-Wing with the suite's HKDF and AEAD.
        kdf, aead = (sha256, aes128) if suite_id == XWING_SUITE else (sha384, aes256)
        hpke = Hpke(XWingKem(), kdf, aead)
        sig = _Ed25519()
    elif suite_id in (1, 3):
        kdf, aead = sha256, aes128 if suite_id == 1 else chacha
        hpke = Hpke(X25519Kem(kdf), kdf, aead)
        sig = _Ed25519()
    elif suite_id in (4, 6):
        kdf, aead = sha512, aes256 if suite_id == 4 else chacha
        hpke = Hpke(X448Kem(kdf), kdf, aead)
        sig = _Ed448()
    else:
        kdf, kem_id = {2: (sha256, 0x0010), 5: (sha512, 0x0012), 7: (sha384, 0x0011)}[suite_id]
        aead = aes128 if suite_id == 2 else aes256
        kem = EcKem(kdf, kem_id)
        hpke = Hpke(kem, kdf, aead)
        sig = _Ecdsa(kem, kdf.algorithm)
    return CipherSuite(suite_id, name, kdf, aead, hpke, sig)


SUITE_NAMES: dict[int, str] = {
    1: "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519",
    2: "MLS_128_DHKEMP256_AES128GCM_SHA256_P256",
    3: "MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519",
    4: "MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448",
    5: "MLS_256_DHKEMP521_AES256GCM_SHA512_P521",
    6: "MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448",
    7: "MLS_256_DHKEMP384_AES256GCM_SHA384_P384",
    0x004E: "MLS_128_MLKEM768X25519_AES256GCM_SHA384_Ed25519",
    0x004F: "MLS_128_XWING_AES128GCM_SHA256_Ed25519",
}

# Post-quantum hybrid suites (SPEC §4.1.1).  IANA has assigned none; these are the
# values OpenMLS uses for the same compositions (openmls traits/src/types.rs).
XWING_SUITE = 0x004F  # draft-mahy-mls-xwing: X-Wing, AES-128-GCM, SHA-256, Ed25519
MLKEM768X25519_SUITE = 0x004E  # draft-ietf-mls-pq-ciphersuites: ML-KEM-768+X25519, AES-256, SHA-384
PQ_SUITES: tuple[int, ...] = (XWING_SUITE, MLKEM768X25519_SUITE)

SUPPORTED_SUITES: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, *PQ_SUITES)

_SUITES: dict[int, CipherSuite] = {i: _make_suite(i) for i in SUPPORTED_SUITES}


def get_suite(suite_id: int) -> CipherSuite:
    """The cipher suite ``suite_id``; raises UnsupportedError for any other id."""
    suite = _SUITES.get(suite_id)
    if suite is None:
        name = SUITE_NAMES.get(suite_id, "unknown")
        raise UnsupportedError(f"cipher suite {suite_id} ({name}) is not supported")
    return suite
