"""Benchmark of the MLS core paths, side by side with mls-rs in one run.

    python bench/core.py [--rounds 5] [--messages 2000] [--members 50]

Prints operations per second (median of ``--rounds`` runs; this machine is
shared and noisy, so medians and ratios are what to quote) for:

* secret-tree ratchet steps (one generation: key, nonce and next secret),
* application message protect (Group.encrypt) and unprotect (Group.process),
* the same two operations in mls-rs (Rust, via the ``mls_rs_uniffi`` wheel of
  the test extra) and the ratio Samizdat / mls-rs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol.mls.crypto import get_suite
from protocol.mls.group import Group
from protocol.mls.key_package import SigningIdentity, create_key_package
from protocol.mls.secret_tree import RatchetType, SecretTree


def rng(n: int) -> bytes:
    return os.urandom(n)


def ratchet_rate(n: int, rounds: int) -> float:
    suite = get_suite(1)
    samples = []
    for _ in range(rounds):
        tree = SecretTree(suite, os.urandom(32), 64, max_forward=n + 1)
        start = time.perf_counter()
        for g in range(n):
            tree.consume(5, RatchetType.APPLICATION, g)
        samples.append(n / (time.perf_counter() - start))
    return statistics.median(samples)


def pair_rates(
    encrypt: Callable[[], bytes], decrypt: Callable[[bytes], object], n: int, rounds: int
) -> tuple[float, float]:
    """Median encrypt and decrypt rates; each round encrypts ``n`` messages
    and the receiver decrypts them in order, so no generation is skipped."""
    enc, dec = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        msgs = [encrypt() for _ in range(n)]
        mid = time.perf_counter()
        for m in msgs:
            decrypt(m)
        end = time.perf_counter()
        enc.append(n / (mid - start))
        dec.append(n / (end - mid))
    return statistics.median(enc), statistics.median(dec)


def samizdat_pair(members: int) -> tuple[Group, Group]:
    suite = get_suite(1)
    now = int(time.time())
    ids = [SigningIdentity.generate(suite, f"m{i}".encode(), rng) for i in range(members)]
    alice = Group.create(1, os.urandom(16), ids[0], rng, now)
    bundles = [create_key_package(suite, ident, now, rng) for ident in ids[1:]]
    result = alice.commit(rng, now, add=bundles)
    alice.merge_pending_commit()
    assert result.welcome is not None
    return alice, Group.join(result.welcome, bundles[0])


def mlsrs_rates(members: int, payload: bytes, n: int, rounds: int) -> tuple[float, float]:
    from tests.interop.mlsrs import RsMember

    alice, bob = RsMember.new(b"alice"), RsMember.new(b"bob")
    alice.create_group()
    others = [RsMember.new(f"m{i}".encode()) for i in range(members - 2)]
    _, welcome = alice.add([bob.key_package()] + [o.key_package() for o in others])
    assert welcome is not None
    bob.join(welcome)
    return pair_rates(lambda: alice.encrypt(payload), bob.process, n, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description="MLS core benchmark")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--members", type=int, default=50)
    args = parser.parse_args()
    n, rounds = args.messages, args.rounds
    payload = b"x" * 100

    alice, bob = samizdat_pair(args.members)
    enc, dec = pair_rates(lambda: alice.encrypt(payload, rng), bob.process, n, rounds)
    rs: tuple[float, float] | tuple[None, None] = (None, None)
    try:
        rs = mlsrs_rates(args.members, payload, n, rounds)
    except Exception as exc:  # the wheel is a test extra: report, do not fail
        print(f"(mls-rs not measured: {exc})")
    rows = [
        ("secret-tree ratchet step", ratchet_rate(n, rounds), None),
        ("PrivateMessage protect (encrypt)", enc, rs[0]),
        ("PrivateMessage unprotect (decrypt)", dec, rs[1]),
    ]
    print(
        f"MLS core, suite 1, {args.members}-member group, {len(payload)}-byte messages, "
        f"median of {rounds} runs of {n}"
    )
    print(f"{'operation':38} {'samizdat/s':>12} {'mls-rs/s':>12} {'ratio':>7}")
    for name, ours, theirs in rows:
        other = f"{theirs:12,.0f}" if theirs else f"{'-':>12}"
        ratio = f"{ours / theirs:7.2f}" if theirs else f"{'-':>7}"
        print(f"{name:38} {ours:12,.0f} {other} {ratio}")


if __name__ == "__main__":
    main()
