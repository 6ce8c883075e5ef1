"""Property tests: whatever bytes arrive, Group.process either succeeds or
raises a RemoteError, and a rejection leaves the state byte-for-byte as it
was (STYLE.md convention 5)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.errors import RemoteError
from protocol.mls.group import Group
from tests.mls_harness import NOW, Harness

_H = Harness(["alice", "bob", "carol"])
_ALICE, _BOB = _H["alice"], _H["bob"]
_SAMPLES = [
    _ALICE.g.encrypt(b"sample application message", _ALICE.rng),
    _ALICE.g.commit(_ALICE.rng, NOW).commit,
    _ALICE.g.commit(_ALICE.rng, NOW, public=True).commit,
    _ALICE.g.propose_update(_ALICE.rng),
]
_ALICE.g.clear_pending_commit()
_BASE = _BOB.g.to_bytes()


def _assert_rejected_cleanly(data: bytes) -> None:
    group = _BOB.g
    before = group.to_bytes()
    try:
        group.process(data)
    except RemoteError:
        assert group.to_bytes() == before
    else:
        # a valid message may apply: restore for the next example
        _BOB.group = Group.from_bytes(_BASE)


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
