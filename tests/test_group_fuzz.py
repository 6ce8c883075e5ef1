"""Property tests: whatever bytes arrive, Group.process either succeeds or
raises a RemoteError, and a rejection leaves the state byte-for-byte as it
was (STYLE.md convention 5).

Every sample below is a valid message for bob (checked by
``test_samples_are_accepted``), and every field of a PrivateMessage or
PublicMessage is authenticated (AEAD additional data, signature, membership
tag; RFC 9420 §6.2, §6.3).  So a mutated or truncated sample must be
*rejected*: acceptance is a forgery and fails the test.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.errors import RemoteError
from protocol.mls.group import Group
from tests.mls_harness import NOW, Harness

_H = Harness(["alice", "bob", "carol"])
_ALICE, _BOB = _H["alice"], _H["bob"]
_LATE = _ALICE.g.encrypt(b"sent in the previous epoch", _ALICE.rng)
_H.commit("carol")  # bob keeps the previous epoch's keys: _LATE opens late
_SAMPLES = [
    _ALICE.g.encrypt(b"sample application message", _ALICE.rng),
    _ALICE.g.commit(_ALICE.rng, NOW).commit,
    _ALICE.g.commit(_ALICE.rng, NOW, public=True).commit,
    _ALICE.g.propose_update(_ALICE.rng),
    _LATE,
]
_ALICE.g.clear_pending_commit()
_BASE = _BOB.g.to_bytes()


def _assert_rejected_cleanly(data: bytes) -> None:
    group = _BOB.g
    before = group.to_bytes()
    try:
        events = group.process(data)
    except RemoteError:
        assert group.to_bytes() == before
        return
    _BOB.group = Group.from_bytes(_BASE)  # keep later examples meaningful
    raise AssertionError(f"forged input of {len(data)} bytes accepted: {events}")


@pytest.mark.parametrize("which", range(len(_SAMPLES)))
def test_samples_are_accepted(which: int) -> None:
    """The unmutated samples are valid, so their mutations test something."""
    group = Group.from_bytes(_BASE)
    assert group.process(_SAMPLES[which])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    _assert_rejected_cleanly(data)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(range(len(_SAMPLES))),
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=1, max_value=255),
)
def test_single_byte_mutations(which: int, position: int, xor: int) -> None:
    sample = bytearray(_SAMPLES[which])
    sample[position % len(sample)] ^= xor
    _assert_rejected_cleanly(bytes(sample))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(range(len(_SAMPLES))), st.integers(min_value=0, max_value=10_000))
def test_truncations(which: int, cut: int) -> None:
    sample = _SAMPLES[which]
    _assert_rejected_cleanly(sample[: cut % len(sample)])


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(range(len(_SAMPLES))),
    st.binary(min_size=1, max_size=40),
)
def test_appended_bytes(which: int, tail: bytes) -> None:
    _assert_rejected_cleanly(_SAMPLES[which] + tail)


@pytest.mark.parametrize("which", range(len(_SAMPLES)))
def test_every_byte_flipped(which: int) -> None:
    """Deterministic companion of the random mutations: each byte of each
    sample, flipped three ways, is rejected and changes nothing."""
    sample = _SAMPLES[which]
    for position in range(len(sample)):
        for xor in (0x01, 0x80, 0xFF):
            mutated = bytearray(sample)
            mutated[position] ^= xor
            _assert_rejected_cleanly(bytes(mutated))
