"""Benchmark of the MLS core paths, side by side with mls-rs in one run.

    python bench/core.py [--rounds 5] [--messages 2000] [--members 50]

Prints operations per second (median of ``--rounds`` runs; this machine is
shared and noisy, so medians and ratios are what to quote) for:

* secret-tree ratchet steps (one generation: key, nonce and next secret),
* application message protect (Group.encrypt) and unprotect (Group.process),
* the same two operations in mls-rs (Rust, via the ``mls_rs_uniffi`` wheel of
  the test extra) and the ratio Samizdat / mls-rs (above 1.0: Samizdat faster).

Fairness (issue 12): mls-rs is called through its raw binding
(``encrypt_application_message`` / ``process_incoming_message``, with the
wire bytes going through ``Message.to_bytes`` / ``Message.from_bytes`` as
Samizdat's do), not through the test adapter, which re-parses the ratchet
tree on every message.  The two sides alternate round by round, and rates
are measured in CPU time (``time.process_time``), not wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
        start = time.process_time()
        for g in range(n):
            tree.consume(5, RatchetType.APPLICATION, g)
        samples.append(n / max(time.process_time() - start, 1e-9))
    return statistics.median(samples)


Pair = tuple[Callable[[], bytes], Callable[[bytes], object]]


def one_round(pair: Pair, n: int) -> tuple[float, float]:
    """Encrypt ``n`` messages, then decrypt them in order (no generation is
    skipped): (encrypt rate, decrypt rate) in CPU time."""
    encrypt, decrypt = pair
    start = time.process_time()
    msgs = [encrypt() for _ in range(n)]
    mid = time.process_time()
    for m in msgs:
        decrypt(m)
    end = time.process_time()
    return n / max(mid - start, 1e-9), n / max(end - mid, 1e-9)


def samizdat_pair(members: int, payload: bytes) -> Pair:
    suite = get_suite(1)
    now = int(time.time())
    ids = [SigningIdentity.generate(suite, f"m{i}".encode(), rng) for i in range(members)]
    alice = Group.create(1, os.urandom(16), ids[0], rng, now)
    bundles = [create_key_package(suite, ident, now, rng) for ident in ids[1:]]
    result = alice.commit(rng, now, add=bundles)
    alice.merge_pending_commit()
    assert result.welcome is not None
    bob = Group.join(result.welcome, bundles[0])
    return (lambda: alice.encrypt(payload, rng)), bob.process


def mlsrs_pair(members: int, payload: bytes) -> Pair:
    """The same group in mls-rs, driven through ``mls_rs_uniffi`` directly."""
    import mls_rs_uniffi as rs  # type: ignore[import-untyped]

    cs = rs.CipherSuite.CURVE25519_AES128
    clients = [
        rs.Client(f"m{i}".encode(), rs.generate_signature_keypair(cs), rs.client_config_default())
        for i in range(members)
    ]
    alice: Any = clients[0].create_group(None)
    out = alice.add_members([c.generate_key_package_message() for c in clients[1:]])
    alice.process_incoming_message(out.commit_message)  # the binding's way to merge
    bob: Any = clients[1].join_group(None, out.welcome_message).group

    def encrypt() -> bytes:
        return bytes(alice.encrypt_application_message(payload).to_bytes())

    def decrypt(data: bytes) -> object:
        return bob.process_incoming_message(rs.Message.from_bytes(data))

    return encrypt, decrypt


def main() -> None:
    parser = argparse.ArgumentParser(description="MLS core benchmark")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--members", type=int, default=50)
    args = parser.parse_args()
    n, rounds = args.messages, args.rounds
    payload = b"x" * 100

    pairs: list[Pair] = [samizdat_pair(args.members, payload)]
    try:
        pairs.append(mlsrs_pair(args.members, payload))
    except Exception as exc:  # the wheel is a test extra: report, do not fail
        print(f"(mls-rs not measured: {exc})")
    samples: list[list[tuple[float, float]]] = [[] for _ in pairs]
    for r in range(rounds):
        order = list(range(len(pairs)))
        if r % 2:
            order.reverse()  # alternate who goes first
        for i in order:
            samples[i].append(one_round(pairs[i], n))
    medians = [
        (statistics.median(e for e, _ in s), statistics.median(d for _, d in s)) for s in samples
    ]
    enc, dec = medians[0]
    rs: tuple[float, float] | tuple[None, None] = medians[1] if len(medians) > 1 else (None, None)
    rows = [
        ("secret-tree ratchet step", ratchet_rate(n, rounds), None),
        ("PrivateMessage protect (encrypt)", enc, rs[0]),
        ("PrivateMessage unprotect (decrypt)", dec, rs[1]),
    ]
    print(
        f"MLS core, suite 1, {args.members}-member group, {len(payload)}-byte messages, "
        f"median of {rounds} interleaved runs of {n}, CPU time"
    )
    print(f"{'operation':38} {'samizdat/s':>12} {'mls-rs/s':>12} {'ratio':>7}")
    for name, ours, theirs in rows:
        other = f"{theirs:12,.0f}" if theirs else f"{'-':>12}"
        ratio = f"{ours / theirs:7.2f}" if theirs else f"{'-':>7}"
        print(f"{name:38} {ours:12,.0f} {other} {ratio}")


if __name__ == "__main__":
    main()
