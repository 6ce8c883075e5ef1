"""MLS interop test vectors (mlswg/mls-implementations), one module per kind.

Each kind module exposes:

* ``KIND``: the kind's name as FORMAT.md calls it (``"crypto-basics"``),
* ``FIELDS``: the top-level field names that identify a case of this kind,
* ``run(case: dict) -> None``: verifies one case; raises ``VectorFailure`` on a
  mismatch and ``protocol.errors.UnsupportedError`` for an unsupported cipher
  suite (reported as a skip, never as a pass).

The registry in ``harness.conformance.registry`` recognises a file's kind by the
field names of its cases, so renamed vector files are still recognised.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable


class VectorFailure(AssertionError):
    """A vector case produced a value different from the expected one."""


def expect_equal(what: str, got: object, want: object) -> None:
    """Raise ``VectorFailure`` naming ``what`` when ``got != want``."""
    if got != want:
        g = got.hex() if isinstance(got, bytes) else got
        w = want.hex() if isinstance(want, bytes) else want
        raise VectorFailure(f"{what}: got {g!r}, want {w!r}")


def seeded_rng(seed: bytes) -> Callable[[int], bytes]:
    """A deterministic rng (a SHAKE-256 stream of ``seed``) for reproducible
    vector runs and tests; never for real keys."""
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        counter += 1
        return hashlib.shake_256(seed + counter.to_bytes(8, "big")).digest(n)

    return rng


def h(value: str | None) -> bytes:
    """Hex field of a vector (``null`` becomes empty bytes)."""
    return bytes.fromhex(value) if value else b""
