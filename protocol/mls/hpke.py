"""HPKE base mode (RFC 9180) for the KEMs, KDFs and AEADs of the MLS cipher suites.

Written out rather than taken from ``cryptography.hazmat.primitives.hpke``
because that API draws its ephemeral key from the operating system and takes
no associated data, and ``protocol/`` must be deterministic given its caller's
randomness.  The caller passes the ephemeral key's input keying material
(``ikm_e``, as in the RFC 9180 test vectors); the ephemeral key pair is
``DeriveKeyPair(ikm_e)``.  The library is still used where it fits: opening
with empty associated data (the only kind MLS uses) goes through it when it
knows the KEM, which is fast and gives an independent implementation.

Only what MLS needs is here: DHKEM over X25519, X448, P-256, P-384 and P-521
(§4.1; the X-Wing KEM of the post-quantum suites is in :mod:`protocol.mls.xwing`),
HKDF-SHA256/384/512 (§4.2), AES-GCM and ChaCha20-Poly1305 (§5.2) and
the one-shot base-mode Seal/Open and secret export (§5.3, §6.1).

Errors: a public key, encapsulation or ciphertext that does not work (wrong
length, not on the curve, failing tag) raises :class:`CryptoError`, since such
bytes come from peers; a malformed private key or a bad length requested by
the caller raises :class:`LocalError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives import hpke as lib_hpke
from cryptography.hazmat.primitives.asymmetric import ec, x448, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocol.errors import CryptoError, LocalError

K = TypeVar("K")

_VERSION = b"HPKE-v1"
_MODE_BASE = b"\x00"


def _i2osp(value: int, length: int) -> bytes:
    return value.to_bytes(length, "big")


class Kdf:
    """HKDF with one hash function (RFC 5869; RFC 9180 §4.2 ids)."""

    __slots__ = ("algorithm", "kdf_id", "n_h")

    def __init__(self, kdf_id: int, algorithm: hashes.HashAlgorithm) -> None:
        self.kdf_id = kdf_id
        self.algorithm = algorithm
        self.n_h = algorithm.digest_size

    def hash(self, data: bytes) -> bytes:
        h = hashes.Hash(self.algorithm)
        h.update(data)
        return h.finalize()

    def hmac(self, key: bytes, data: bytes) -> bytes:
        h = hmac.HMAC(key, self.algorithm)
        h.update(data)
        return h.finalize()

    def extract(self, salt: bytes, ikm: bytes) -> bytes:
        # RFC 5869 §2.2: an absent salt is Nh zero bytes.
        return self.hmac(salt or bytes(self.n_h), ikm)

    def expand(self, prk: bytes, info: bytes, length: int) -> bytes:
        if not 0 <= length <= 255 * self.n_h:
            raise LocalError(f"HKDF-Expand length {length} out of range 0..{255 * self.n_h}")
        if length == 0:
            return b""
        return HKDFExpand(self.algorithm, length, info).derive(prk)

    def labeled_extract(self, suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
        """RFC 9180 §4 LabeledExtract."""
        return self.extract(salt, _VERSION + suite_id + label + ikm)

    def labeled_expand(
        self, suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int
    ) -> bytes:
        """RFC 9180 §4 LabeledExpand."""
        if not 0 <= length < 1 << 16:
            raise LocalError(f"LabeledExpand length {length} does not fit in 2 bytes")
        return self.expand(prk, _i2osp(length, 2) + _VERSION + suite_id + label + info, length)


class Aead:
    """AES-128-GCM, AES-256-GCM or ChaCha20-Poly1305 (RFC 9180 §7.3 ids)."""

    __slots__ = ("_cls", "aead_id", "n_k", "n_n", "name")

    def __init__(self, aead_id: int, name: str, n_k: int) -> None:
        self.aead_id = aead_id
        self.name = name
        self.n_k = n_k
        self.n_n = 12
        self._cls: type[AESGCM] | type[ChaCha20Poly1305] = (
            ChaCha20Poly1305 if aead_id == 3 else AESGCM
        )

    def _cipher(self, key: bytes, nonce: bytes) -> AESGCM | ChaCha20Poly1305:
        if len(key) != self.n_k:
            raise LocalError(f"{self.name} key must be {self.n_k} bytes, not {len(key)}")
        if len(nonce) != self.n_n:
            raise LocalError(f"{self.name} nonce must be {self.n_n} bytes, not {len(nonce)}")
        return self._cls(key)

    def seal(self, key: bytes, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        return self._cipher(key, nonce).encrypt(nonce, plaintext, aad)

    def open(self, key: bytes, nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        cipher = self._cipher(key, nonce)
        try:
            return cipher.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise CryptoError(f"{self.name} decryption failed") from None


class Kem(ABC):
    """An HPKE KEM (RFC 9180 §4): DHKEM below, X-Wing in :mod:`protocol.mls.xwing`."""

    kem_id: int
    name: str
    n_secret: int
    n_enc: int
    n_pk: int
    n_sk: int

    @property
    def n_ikm_e(self) -> int:
        """How many random bytes one encapsulation consumes (``ikm_e``)."""
        return self.n_sk

    @abstractmethod
    def derive_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]:
        """DeriveKeyPair: (SerializePrivateKey(sk), SerializePublicKey(pk))."""

    @abstractmethod
    def public_key(self, sk: bytes) -> bytes:
        """SerializePublicKey of the key pair of ``sk``."""

    @abstractmethod
    def encap(self, pk_r: bytes, ikm_e: bytes) -> tuple[bytes, bytes]:
        """(shared_secret, enc), deterministic in ``ikm_e``."""

    @abstractmethod
    def decap(self, enc: bytes, sk_r: bytes) -> bytes:
        """The shared secret; CryptoError when ``enc`` is unusable."""

    @abstractmethod
    def library_private(self, sk: bytes) -> Any:
        """``sk`` as a ``cryptography`` HPKE private-key object."""

    def check_public(self, what: str, value: bytes) -> None:
        """Raise CryptoError unless ``value`` has the length of a serialized public key."""
        if len(value) != self.n_pk:
            raise CryptoError(f"{self.name} {what} must be {self.n_pk} bytes, not {len(value)}")

    def check_enc(self, enc: bytes) -> None:
        """Raise CryptoError unless ``enc`` has the length of an encapsulation (Nenc)."""
        if len(enc) != self.n_enc:
            raise CryptoError(
                f"{self.name} encapsulated key must be {self.n_enc} bytes, not {len(enc)}"
            )


class DhKem(Kem, Generic[K]):
    """DHKEM(Group, KDF) of RFC 9180 §4.1; subclasses supply the group.

    ``K`` is the group's private-key object; keeping it between steps saves
    re-parsing (each parse costs a scalar multiplication).
    """

    def __init__(self, kdf: Kdf) -> None:
        self.kdf = kdf
        self.suite_id = b"KEM" + _i2osp(self.kem_id, 2)

    @abstractmethod
    def load_private(self, sk: bytes) -> K:
        """DeserializePrivateKey; raises LocalError for a malformed key."""

    @abstractmethod
    def serialize_public(self, key: K) -> bytes:
        """SerializePublicKey(pk(key))."""

    @abstractmethod
    def exchange(self, key: K, pk: bytes) -> bytes:
        """DH(key, pk); raises CryptoError when ``pk`` is unusable."""

    @abstractmethod
    def derive_private(self, ikm: bytes) -> tuple[bytes, K]:
        """The private half of DeriveKeyPair (RFC 9180 §7.1.3), serialized and loaded."""

    def derive_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]:
        """RFC 9180 §7.1.3: (SerializePrivateKey(sk), SerializePublicKey(pk))."""
        sk, key = self.derive_private(ikm)
        return sk, self.serialize_public(key)

    def public_key(self, sk: bytes) -> bytes:
        return self.serialize_public(self.load_private(sk))

    def _extract_and_expand(self, dh: bytes, kem_context: bytes) -> bytes:
        eae_prk = self.kdf.labeled_extract(self.suite_id, b"", b"eae_prk", dh)
        return self.kdf.labeled_expand(
            self.suite_id, eae_prk, b"shared_secret", kem_context, self.n_secret
        )

    def library_private(self, sk: bytes) -> K:
        return self.load_private(sk)

    def encap(self, pk_r: bytes, ikm_e: bytes) -> tuple[bytes, bytes]:
        """(shared_secret, enc), the ephemeral key being DeriveKeyPair(ikm_e)."""
        self.check_public("public key", pk_r)
        _, key_e = self.derive_private(ikm_e)
        enc = self.serialize_public(key_e)
        dh = self.exchange(key_e, pk_r)
        return self._extract_and_expand(dh, enc + pk_r), enc

    def decap(self, enc: bytes, sk_r: bytes) -> bytes:
        self.check_public("encapsulated key", enc)
        key_r = self.load_private(sk_r)
        dh = self.exchange(key_r, enc)
        return self._extract_and_expand(dh, enc + self.serialize_public(key_r))


class X25519Kem(DhKem[x25519.X25519PrivateKey]):
    """DHKEM(X25519, HKDF-SHA256)."""

    kem_id, name = 0x0020, "DHKEM(X25519)"
    n_secret = n_enc = n_pk = n_sk = 32

    def load_private(self, sk: bytes) -> x25519.X25519PrivateKey:
        if len(sk) != self.n_sk:
            raise LocalError(f"{self.name} private key must be {self.n_sk} bytes, not {len(sk)}")
        return x25519.X25519PrivateKey.from_private_bytes(sk)

    def derive_private(self, ikm: bytes) -> tuple[bytes, x25519.X25519PrivateKey]:
        dkp_prk = self.kdf.labeled_extract(self.suite_id, b"", b"dkp_prk", ikm)
        sk = self.kdf.labeled_expand(self.suite_id, dkp_prk, b"sk", b"", self.n_sk)
        return sk, self.load_private(sk)

    def serialize_public(self, key: x25519.X25519PrivateKey) -> bytes:
        return key.public_key().public_bytes_raw()

    def exchange(self, key: x25519.X25519PrivateKey, pk: bytes) -> bytes:
        self.check_public("public key", pk)
        try:
            return key.exchange(x25519.X25519PublicKey.from_public_bytes(pk))
        except ValueError:
            # RFC 9180 §7.1.4: an all-zero shared secret (small-order point) must abort.
            raise CryptoError(f"{self.name}: invalid public key") from None


class X448Kem(DhKem[x448.X448PrivateKey]):
    """DHKEM(X448, HKDF-SHA512)."""

    kem_id, name = 0x0021, "DHKEM(X448)"
    n_secret = 64
    n_enc = n_pk = n_sk = 56

    def load_private(self, sk: bytes) -> x448.X448PrivateKey:
        if len(sk) != self.n_sk:
            raise LocalError(f"{self.name} private key must be {self.n_sk} bytes, not {len(sk)}")
        return x448.X448PrivateKey.from_private_bytes(sk)

    def derive_private(self, ikm: bytes) -> tuple[bytes, x448.X448PrivateKey]:
        dkp_prk = self.kdf.labeled_extract(self.suite_id, b"", b"dkp_prk", ikm)
        sk = self.kdf.labeled_expand(self.suite_id, dkp_prk, b"sk", b"", self.n_sk)
        return sk, self.load_private(sk)

    def serialize_public(self, key: x448.X448PrivateKey) -> bytes:
        return key.public_key().public_bytes_raw()

    def exchange(self, key: x448.X448PrivateKey, pk: bytes) -> bytes:
        self.check_public("public key", pk)
        try:
            return key.exchange(x448.X448PublicKey.from_public_bytes(pk))
        except ValueError:
            # RFC 9180 §7.1.4: an all-zero shared secret (small-order point) must abort.
            raise CryptoError(f"{self.name}: invalid public key") from None


class EcKem(DhKem[ec.EllipticCurvePrivateKey]):
    """DHKEM over P-256, P-384 or P-521 (SEC1 uncompressed points)."""

    _PARAMS: ClassVar[dict[int, tuple[str, int, ec.EllipticCurve, int, int]]] = {
        # kem_id: (name, Nsecret, curve, Nsk, DeriveKeyPair bitmask of RFC 9180 §7.1.3)
        0x0010: ("DHKEM(P-256)", 32, ec.SECP256R1(), 32, 0xFF),
        0x0011: ("DHKEM(P-384)", 48, ec.SECP384R1(), 48, 0xFF),
        0x0012: ("DHKEM(P-521)", 64, ec.SECP521R1(), 66, 0x01),
    }
    _ORDERS: ClassVar[dict[str, int]] = {
        "secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
        "secp384r1": int(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
            "581A0DB248B0A77AECEC196ACCC52973",
            16,
        ),
        "secp521r1": int(
            "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
            "FA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
            16,
        ),
    }

    def __init__(self, kdf: Kdf, kem_id: int) -> None:
        self.kem_id = kem_id
        self.name, self.n_secret, self.curve, self.n_sk, self._bitmask = self._PARAMS[kem_id]
        self.order = self._ORDERS[self.curve.name]
        self.n_pk = self.n_enc = 1 + 2 * self.n_sk
        super().__init__(kdf)

    def load_private(self, sk: bytes) -> ec.EllipticCurvePrivateKey:
        return ec.derive_private_key(
            scalar_from_bytes(sk, self.n_sk, self.order, self.name, allow_short=True), self.curve
        )

    def load_public(self, pk: bytes) -> ec.EllipticCurvePublicKey:
        return load_ec_public(pk, self.n_pk, self.curve, self.name)

    def derive_private(self, ikm: bytes) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
        dkp_prk = self.kdf.labeled_extract(self.suite_id, b"", b"dkp_prk", ikm)
        for counter in range(256):
            candidate = bytearray(
                self.kdf.labeled_expand(
                    self.suite_id, dkp_prk, b"candidate", _i2osp(counter, 1), self.n_sk
                )
            )
            candidate[0] &= self._bitmask
            sk = int.from_bytes(candidate, "big")
            if 0 < sk < self.order:
                return bytes(candidate), ec.derive_private_key(sk, self.curve)
        raise LocalError(f"{self.name} DeriveKeyPair found no valid scalar")  # pragma: no cover

    def serialize_public(self, key: ec.EllipticCurvePrivateKey) -> bytes:
        return ec_point(key.public_key())

    def exchange(self, key: ec.EllipticCurvePrivateKey, pk: bytes) -> bytes:
        public = self.load_public(pk)
        try:
            return key.exchange(ec.ECDH(), public)
        except ValueError:  # pragma: no cover - a valid point never fails
            raise CryptoError(f"{self.name}: key agreement failed") from None


def scalar_from_bytes(
    data: bytes, length: int, order: int, what: str, *, allow_short: bool = False
) -> int:
    """A private scalar serialized as a fixed-length big-endian integer in [1, n-1].

    ``allow_short`` accepts encodings with leading zero bytes dropped, which
    some implementations emit for ECDSA and ECDH private keys (the official
    message-protection and passive-client vectors carry 65-byte P-521 keys);
    the range check is what matters.
    """
    if not (0 < len(data) <= length if allow_short else len(data) == length):
        raise LocalError(f"{what} private key must be {length} bytes, not {len(data)}")
    value = int.from_bytes(data, "big")
    if not 0 < value < order:
        raise LocalError(f"{what} private key is not a valid scalar")
    return value


def load_ec_public(
    data: bytes, length: int, curve: ec.EllipticCurve, what: str
) -> ec.EllipticCurvePublicKey:
    """An uncompressed SEC1 point of ``curve``, validated; CryptoError otherwise."""
    if len(data) != length or data[0] != 0x04:
        raise CryptoError(f"{what} public key is not a {length}-byte uncompressed point")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, data)
    except ValueError:
        raise CryptoError(f"{what} public key is not a point on the curve") from None


def ec_point(key: ec.EllipticCurvePublicKey) -> bytes:
    """The uncompressed SEC1 encoding of ``key``."""
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


class Context:
    """The base-mode encryption context after KeySchedule (RFC 9180 §5.1), sequence 0."""

    __slots__ = ("base_nonce", "exporter_secret", "key")

    def __init__(self, key: bytes, base_nonce: bytes, exporter_secret: bytes) -> None:
        self.key = key
        self.base_nonce = base_nonce
        self.exporter_secret = exporter_secret


_LIB_KEMS = {
    0x0010: lib_hpke.KEM.P256,
    0x0011: lib_hpke.KEM.P384,
    0x0012: lib_hpke.KEM.P521,
    0x0020: lib_hpke.KEM.X25519,
    0x647A: lib_hpke.KEM.MLKEM768_X25519,
}
_LIB_KDFS = {1: lib_hpke.KDF.HKDF_SHA256, 2: lib_hpke.KDF.HKDF_SHA384, 3: lib_hpke.KDF.HKDF_SHA512}
_LIB_AEADS = {
    1: lib_hpke.AEAD.AES_128_GCM,
    2: lib_hpke.AEAD.AES_256_GCM,
    3: lib_hpke.AEAD.CHACHA20_POLY1305,
}


# ``info`` strings at least this long have their hash memoised (see key_schedule).
_MEMO_INFO_MIN = 1024


class Hpke:
    """One HPKE ciphersuite in base mode, single-shot (RFC 9180 §6.1)."""

    def __init__(self, kem: Kem, kdf: Kdf, aead: Aead) -> None:
        self.kem = kem
        self.kdf = kdf
        self.aead = aead
        self.suite_id = (
            b"HPKE" + _i2osp(kem.kem_id, 2) + _i2osp(kdf.kdf_id, 2) + _i2osp(aead.aead_id, 2)
        )
        # (info, its info_hash) of the last large ``info``; compared by identity,
        # which holding the reference keeps meaningful (bytes are immutable).
        self._last_info: tuple[bytes | None, bytes] = (None, b"")
        lib_kem = _LIB_KEMS.get(kem.kem_id)
        self.lib_suite = (
            lib_hpke.Suite(lib_kem, _LIB_KDFS[kdf.kdf_id], _LIB_AEADS[aead.aead_id])
            if lib_kem is not None
            else None
        )

    def key_schedule(self, shared_secret: bytes, info: bytes) -> Context:
        """KeySchedule(mode_base, shared_secret, info, "", "") of RFC 9180 §5.1."""
        kdf, sid = self.kdf, self.suite_id
        psk_id_hash = kdf.labeled_extract(sid, b"", b"psk_id_hash", b"")
        # One commit seals to every joiner with the same ``info`` (MLS puts the
        # whole encrypted GroupInfo in it): hash that object once, not per joiner.
        last_info, info_hash = self._last_info
        if info is not last_info:
            info_hash = kdf.labeled_extract(sid, b"", b"info_hash", info)
            if len(info) >= _MEMO_INFO_MIN:
                self._last_info = (info, info_hash)
        ks_context = _MODE_BASE + psk_id_hash + info_hash
        secret = kdf.labeled_extract(sid, shared_secret, b"secret", b"")
        return Context(
            kdf.labeled_expand(sid, secret, b"key", ks_context, self.aead.n_k),
            kdf.labeled_expand(sid, secret, b"base_nonce", ks_context, self.aead.n_n),
            kdf.labeled_expand(sid, secret, b"exp", ks_context, kdf.n_h),
        )

    def setup_base_s(self, pk_r: bytes, info: bytes, ikm_e: bytes) -> tuple[bytes, Context]:
        shared_secret, enc = self.kem.encap(pk_r, ikm_e)
        return enc, self.key_schedule(shared_secret, info)

    def setup_base_r(self, enc: bytes, sk_r: bytes, info: bytes) -> Context:
        return self.key_schedule(self.kem.decap(enc, sk_r), info)

    def seal(
        self, pk_r: bytes, info: bytes, aad: bytes, plaintext: bytes, ikm_e: bytes
    ) -> tuple[bytes, bytes]:
        """SealBase: (enc, ct).  The first message uses the base nonce unchanged (§5.2)."""
        enc, ctx = self.setup_base_s(pk_r, info, ikm_e)
        return enc, self.aead.seal(ctx.key, ctx.base_nonce, aad, plaintext)

    def open(self, enc: bytes, sk_r: bytes, info: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        """OpenBase; raises CryptoError when anything fails to verify."""
        if self.lib_suite is not None and not aad:
            return self.open_with_library(enc, sk_r, info, ciphertext)
        return self.open_own(enc, sk_r, info, aad, ciphertext)

    def open_own(
        self, enc: bytes, sk_r: bytes, info: bytes, aad: bytes, ciphertext: bytes
    ) -> bytes:
        ctx = self.setup_base_r(enc, sk_r, info)
        return self.aead.open(ctx.key, ctx.base_nonce, aad, ciphertext)

    def open_with_library(self, enc: bytes, sk_r: bytes, info: bytes, ciphertext: bytes) -> bytes:
        if self.lib_suite is None:
            raise LocalError(f"the library HPKE has no {self.kem.name}")
        # The library takes enc || ct; a wrong-length enc would be split elsewhere.
        self.kem.check_enc(enc)
        key = self.kem.library_private(sk_r)
        try:
            return self.lib_suite.decrypt(enc + ciphertext, key, info=info)
        except (InvalidTag, ValueError):
            raise CryptoError("HPKE decryption failed") from None

    def send_export(
        self, pk_r: bytes, info: bytes, exporter_context: bytes, length: int, ikm_e: bytes
    ) -> tuple[bytes, bytes]:
        """SetupBaseS then Context.Export (§5.3): (enc, exported secret)."""
        enc, ctx = self.setup_base_s(pk_r, info, ikm_e)
        return enc, self.export(ctx, exporter_context, length)

    def receive_export(
        self, enc: bytes, sk_r: bytes, info: bytes, exporter_context: bytes, length: int
    ) -> bytes:
        return self.export(self.setup_base_r(enc, sk_r, info), exporter_context, length)

    def export(self, ctx: Context, exporter_context: bytes, length: int) -> bytes:
        return self.kdf.labeled_expand(
            self.suite_id, ctx.exporter_secret, b"sec", exporter_context, length
        )
