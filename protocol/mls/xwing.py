"""The X-Wing hybrid KEM (ML-KEM-768 + X25519) as an HPKE KEM, deterministic.

Construction: draft-connolly-cfrg-xwing-kem-10 §5 (key expansion §5.2, combiner
§5.3, EncapsulateDerand §5.4.1, Decapsulate §5.5).  HPKE integration: HPKE KEM
id 0x647a "MLKEM768-X25519" of draft-ietf-hpke-pq §4 / §8.2, whose
DeriveKeyPair is ``SHAKE256.LabeledDerive(ikm, "DeriveKeyPair", "", 32)`` (the
X-Wing draft's §5.6 says plain ``SHAKE256(ikm, 32)``; the HPKE draft registers
the code point, and its Appendix A vectors pin the labelled form, which we
follow and check in tests).

Sizes: private key 32 bytes (the seed), public key 1216 (ML-KEM-768 1184 ||
X25519 32), encapsulation 1120 (ML-KEM-768 1088 || X25519 32), secret 32.

Determinism: ``protocol/`` takes its randomness from the caller.  Key pairs come
from a seed, and ``cryptography``'s ``MLKEM768PrivateKey.from_seed_bytes``
derives ML-KEM keys from the (d, z) seed (FIPS 203 ML-KEM.KeyGen_internal) and
decapsulates.  ``cryptography`` has no encapsulation from caller-supplied
randomness, so the ML-KEM half of ``EncapsulateDerand`` is FIPS 203
ML-KEM.Encaps_internal (Algorithm 17) from ``kyber-py``, which also runs the
FIPS 203 §7.2 encapsulation-key checks.  The two libraries check each other:
every encapsulation made here is decapsulated by ``cryptography``.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hpke as lib_hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from kyber_py.ml_kem import ML_KEM_768

from protocol.errors import CryptoError, LocalError
from protocol.mls.hpke import Kem

# draft-connolly-cfrg-xwing-kem-10 §5.3: the 6-byte label "\./" "/^\".
_XWING_LABEL = bytes.fromhex("5c2e2f2f5e5c")
_N_PK_M, _N_CT_M = 1184, 1088

KEM_ID = 0x647A  # draft-ietf-hpke-pq §8.2 (MLKEM768-X25519), = X-Wing
N_SK, N_PK, N_ENC, N_SECRET, N_ESEED = 32, 1216, 1120, 32, 64


def _i2osp(value: int, length: int) -> bytes:
    return value.to_bytes(length, "big")


def shake256_labeled_derive(
    suite_id: bytes, ikm: bytes, label: bytes, context: bytes, n: int
) -> bytes:
    """SHAKE256.LabeledDerive of draft-ietf-hpke-pq §5 (one-stage KDF, HPKE-v1 labels)."""
    labeled_ikm = (
        ikm + b"HPKE-v1" + suite_id + _i2osp(len(label), 2) + label + _i2osp(n, 2) + context
    )
    return hashlib.shake_256(labeled_ikm).digest(n)


class ExpandedKey:
    """expandDecapsulationKey(sk) of X-Wing §5.2, with the library key objects."""

    __slots__ = ("mlkem", "pk", "pk_x", "x25519")

    def __init__(self, sk: bytes) -> None:
        if len(sk) != N_SK:
            raise LocalError(f"X-Wing private key must be {N_SK} bytes, not {len(sk)}")
        expanded = hashlib.shake_256(sk).digest(96)
        # ML-KEM-768.KeyGen_internal(d = expanded[0:32], z = expanded[32:64]).
        self.mlkem = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
        self.x25519 = x25519.X25519PrivateKey.from_private_bytes(expanded[64:96])
        self.pk_x = self.x25519.public_key().public_bytes_raw()
        self.pk = self.mlkem.public_key().public_bytes_raw() + self.pk_x


def _combiner(ss_m: bytes, ss_x: bytes, ct_x: bytes, pk_x: bytes) -> bytes:
    """X-Wing §5.3: SHA3-256(ss_M || ss_X || ct_X || pk_X || XWingLabel)."""
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + _XWING_LABEL).digest()


def _x25519(key: x25519.X25519PrivateKey, public: bytes) -> bytes:
    try:
        return key.exchange(x25519.X25519PublicKey.from_public_bytes(public))
    except ValueError:
        # A small-order point gives the all-zero output, which the library refuses.
        raise CryptoError("X-Wing: invalid X25519 share") from None


def generate_key_pair_derand(sk: bytes) -> tuple[bytes, bytes]:
    """GenerateKeyPairDerand (X-Wing §5.2.1): (sk, pk)."""
    return sk, ExpandedKey(sk).pk


def derive_key_pair(ikm: bytes) -> tuple[bytes, bytes]:
    """HPKE DeriveKeyPair for KEM 0x647a (draft-ietf-hpke-pq §4)."""
    seed = shake256_labeled_derive(b"KEM" + _i2osp(KEM_ID, 2), ikm, b"DeriveKeyPair", b"", N_SK)
    return generate_key_pair_derand(seed)


def encapsulate_derand(pk: bytes, eseed: bytes) -> tuple[bytes, bytes]:
    """EncapsulateDerand (X-Wing §5.4.1): (shared secret, ciphertext).

    A public key of the wrong length or failing the ML-KEM encapsulation-key
    check (FIPS 203 §7.2) raises CryptoError (HPKE EncapError).
    """
    if len(pk) != N_PK:
        raise CryptoError(f"X-Wing public key must be {N_PK} bytes, not {len(pk)}")
    if len(eseed) != N_ESEED:
        raise LocalError(f"X-Wing encapsulation seed must be {N_ESEED} bytes, not {len(eseed)}")
    pk_m, pk_x = pk[:_N_PK_M], pk[_N_PK_M:]
    ek_x = x25519.X25519PrivateKey.from_private_bytes(eseed[32:64])
    ct_x = ek_x.public_key().public_bytes_raw()
    ss_x = _x25519(ek_x, pk_x)
    try:
        ss_m, ct_m = ML_KEM_768._encaps_internal(pk_m, eseed[:32])
    except ValueError:
        raise CryptoError("X-Wing: the ML-KEM-768 encapsulation key fails its check") from None
    return _combiner(ss_m, ss_x, ct_x, pk_x), ct_m + ct_x


def decapsulate(ct: bytes, key: ExpandedKey) -> bytes:
    """Decapsulate (X-Wing §5.5) with an expanded private key."""
    if len(ct) != N_ENC:
        raise CryptoError(f"X-Wing encapsulation must be {N_ENC} bytes, not {len(ct)}")
    ct_m, ct_x = ct[:_N_CT_M], ct[_N_CT_M:]
    try:
        ss_m = key.mlkem.decapsulate(ct_m)
    except ValueError:  # pragma: no cover - a right-length ciphertext always decapsulates
        raise CryptoError("X-Wing: ML-KEM-768 decapsulation failed") from None
    ss_x = _x25519(key.x25519, ct_x)
    return _combiner(ss_m, ss_x, ct_x, key.pk_x)


class XWingKem(Kem):
    """X-Wing as HPKE KEM 0x647a; ``ikm_e`` is the 64-byte ``eseed`` of EncapsulateDerand."""

    kem_id, name = KEM_ID, "X-Wing"
    n_secret, n_enc, n_pk, n_sk = N_SECRET, N_ENC, N_PK, N_SK

    @property
    def n_ikm_e(self) -> int:
        return N_ESEED

    def derive_key_pair(self, ikm: bytes) -> tuple[bytes, bytes]:
        return derive_key_pair(ikm)

    def public_key(self, sk: bytes) -> bytes:
        return ExpandedKey(sk).pk

    def encap(self, pk_r: bytes, ikm_e: bytes) -> tuple[bytes, bytes]:
        return encapsulate_derand(pk_r, ikm_e)

    def decap(self, enc: bytes, sk_r: bytes) -> bytes:
        return decapsulate(enc, ExpandedKey(sk_r))

    def library_private(self, sk: bytes) -> lib_hpke.MLKEM768X25519PrivateKey:
        key = ExpandedKey(sk)
        return lib_hpke.MLKEM768X25519PrivateKey(key.mlkem, key.x25519)
