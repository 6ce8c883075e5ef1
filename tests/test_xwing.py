"""X-Wing (ML-KEM-768 + X25519) and the post-quantum suites: published vectors, library
cross-checks, and hostile keys and encapsulations (SPEC §4.1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hpke as lib_hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from harness.conformance.crypto_basics import seeded_rng
from protocol.errors import CryptoError, LocalError
from protocol.mls import xwing
from protocol.mls.crypto import PQ_SUITES, get_suite
from protocol.mls.hpke import Aead, Hpke, Kdf

DATA = json.loads((Path(__file__).parent / "data" / "xwing-test-vectors.json").read_text())
PQ = [get_suite(i) for i in PQ_SUITES]


def h(value: str) -> bytes:
    return bytes.fromhex(value)


@pytest.mark.parametrize("v", DATA["xwing"], ids=lambda v: v["seed"][:8])
def test_xwing_draft_vectors(v: dict[str, str]) -> None:
    """draft-connolly-cfrg-xwing-kem-10 Appendix C: keygen, EncapsulateDerand, Decapsulate."""
    sk, pk = xwing.generate_key_pair_derand(h(v["seed"]))
    assert sk == h(v["sk"]) and pk == h(v["pk"])
    ss, ct = xwing.encapsulate_derand(pk, h(v["eseed"]))
    assert ct == h(v["ct"]) and ss == h(v["ss"])
    assert xwing.decapsulate(ct, xwing.ExpandedKey(sk)) == h(v["ss"])


@pytest.mark.parametrize("v", DATA["hpke_pq"], ids=lambda v: f"kem{v['kem_id']}")
def test_hpke_pq_vector(v: dict[str, Any]) -> None:
    """draft-ietf-hpke-pq Appendix A.5: DeriveKeyPair, Encap, KeySchedule, Seal, Export."""
    assert (v["mode"], v["kem_id"], v["kdf_id"], v["aead_id"]) == (0, 0x647A, 1, 3)
    hpke = Hpke(xwing.XWingKem(), Kdf(1, hashes.SHA256()), Aead(3, "ChaCha20-Poly1305", 32))
    assert hpke.suite_id == h(v["suite_id"])
    sk, pk = hpke.kem.derive_key_pair(h(v["ikmR"]))
    assert sk == h(v["skRm"]) and pk == h(v["pkRm"])
    enc, ctx = hpke.setup_base_s(pk, h(v["info"]), h(v["ikmE"]))
    assert enc == h(v["enc"])
    assert hpke.kem.decap(enc, sk) == h(v["shared_secret"])
    assert (ctx.key, ctx.base_nonce, ctx.exporter_secret) == (
        h(v["key"]),
        h(v["base_nonce"]),
        h(v["exporter_secret"]),
    )
    first = v["encryptions"][0]
    assert first["nonce"] == v["base_nonce"]  # sequence number 0
    _, ct = hpke.seal(pk, h(v["info"]), h(first["aad"]), h(first["pt"]), h(v["ikmE"]))
    assert ct == h(first["ct"])
    assert hpke.open(enc, sk, h(v["info"]), h(first["aad"]), ct) == h(first["pt"])
    for e in v["exports"]:
        got = hpke.export(ctx, h(e["exporter_context"]), e["L"])
        assert got == h(e["exported_value"])


@pytest.mark.parametrize("suite", PQ, ids=lambda s: f"suite-{s.suite_id:#06x}")
def test_pq_suite_agrees_with_library(suite: Any) -> None:
    """Both directions against cryptography's MLKEM768-X25519 HPKE, for each PQ suite."""
    hpke = suite._hpke
    assert hpke.lib_suite is not None
    priv, pub = suite.hpke_key_pair(seeded_rng(b"pq-lib"))
    enc, ct = suite.hpke_seal(pub, b"info", b"", b"to the library", seeded_rng(b"e"))
    assert len(enc) == 1120 and len(pub) == 1216 and len(priv) == 32
    lib_key = hpke.kem.library_private(priv)
    assert hpke.lib_suite.decrypt(enc + ct, lib_key, info=b"info") == b"to the library"
    lib_pub = lib_hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(pub[:1184]),
        x25519.X25519PublicKey.from_public_bytes(pub[1184:]),
    )
    both = hpke.lib_suite.encrypt(b"from the library", lib_pub, info=b"info")
    enc, ct = both[:1120], both[1120:]
    assert hpke.open_own(enc, priv, b"info", b"", ct) == b"from the library"


@pytest.mark.parametrize("suite", PQ, ids=lambda s: f"suite-{s.suite_id:#06x}")
def test_hostile_xwing_keys_and_encapsulations(suite: Any) -> None:
    """What a hostile member can send in place of an X-Wing key or encapsulation."""
    rng = seeded_rng(b"hostile")
    priv, pub = suite.hpke_key_pair(rng)
    # An ML-KEM key with a coefficient >= q fails the FIPS 203 §7.2 modulus check.
    bad_mlkem = b"\xff\xff\xff" + pub[3:]
    with pytest.raises(CryptoError, match="encapsulation key"):
        suite.encrypt_with_label(bad_mlkem, "UpdatePathNode", b"", b"s", rng)
    # An X25519 share of small order (the all-zero point).
    with pytest.raises(CryptoError):
        suite.encrypt_with_label(pub[:1184] + bytes(32), "UpdatePathNode", b"", b"s", rng)
    kem_output, ct = suite.encrypt_with_label(pub, "UpdatePathNode", b"", b"secret", rng)
    for bad in (
        kem_output[:-1],
        kem_output + b"\0",
        b"",
        bytes(1120),
        kem_output[:1088] + bytes(32),
    ):
        with pytest.raises(CryptoError):
            suite.decrypt_with_label(priv, "UpdatePathNode", b"", bad, ct)
    # A flipped bit in either half: ML-KEM rejects implicitly, so the AEAD tag fails.
    for index in (0, 1087, 1088, 1119):
        bad = kem_output[:index] + bytes([kem_output[index] ^ 1]) + kem_output[index + 1 :]
        with pytest.raises(CryptoError):
            suite.decrypt_with_label(priv, "UpdatePathNode", b"", bad, ct)
    with pytest.raises(CryptoError):
        suite._hpke.open_own(
            kem_output[:1088] + bytes(32), priv, b"MLS 1.0 UpdatePathNode", b"", ct
        )
    with pytest.raises(LocalError):
        suite.hpke_public_key(priv[:-1])


def test_encapsulation_is_deterministic_in_the_callers_randomness() -> None:
    suite = get_suite(PQ_SUITES[0])
    _, pub = suite.hpke_key_pair(seeded_rng(b"d"))
    one = suite.hpke_seal(pub, b"", b"", b"m", seeded_rng(b"same"))
    two = suite.hpke_seal(pub, b"", b"", b"m", seeded_rng(b"same"))
    three = suite.hpke_seal(pub, b"", b"", b"m", seeded_rng(b"other"))
    assert one == two and one != three
    with pytest.raises(LocalError):
        xwing.encapsulate_derand(pub, bytes(63))
