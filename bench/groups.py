"""MLS group operations at scale, side by side with mls-rs (RFC 9420 suite 1).

    python bench/groups.py [--sizes 100,500,1000,2000] [--rounds 3] [--big 10000]
    python bench/groups.py --quick          # N=20,40: a smoke test (pytest runs it)

What is measured, for each group size N, on both sides in the same process:

* **add-all commit**: a one-member group commits Adds for N-1 KeyPackages
  (no UpdatePath on either side: mls-rs's binding never puts one in an
  add-only commit, so Samizdat commits with ``path=False`` to do the same
  work), building the commit and the Welcome, then merging it;
* **join**: one new member joins from that Welcome (tree in the GroupInfo);
* **remove commit** / **process remove**: the creator removes one member
  (a commit with an UpdatePath to the whole group), another member
  processes it;
* **update commit** / **process path-update**: the creator commits an empty
  commit with a path (re-keying its leaf), another member processes it;
* **app message send** / **app message receive**: the creator encrypts
  ``APP_BATCH`` application messages of ``APP_SIZE`` bytes, another member
  decrypts and verifies them; the figure is per message.

Fairness rules (issue 12): mls-rs is driven through its raw binding
(``mls_rs_uniffi``: ``Group.add_members``, ``process_incoming_message``,
``Client.join_group``), never through the test adapter, which re-parses the
tree on every message.  Both sides run the same operation on the same tree
shape (same leaf indices) round by round, alternating which side goes first,
and the time is CPU time (``time.process_time``) of this process; each
figure is the median of the rounds.  Ratios are Samizdat / mls-rs: below
1.0 Samizdat is faster.

The exponent check: for each operation and each doubling of N in the
table, ``log2(t(2N) / t(N))`` must stay below ``log2(2.2)`` (about 1.14),
i.e. no operation grows quadratically.  It uses the best (smallest) time of
the rounds: the work is deterministic and a loaded machine only adds time,
so the minimum is the steadiest estimate of the work itself.

``--big`` runs Samizdat alone at that size (mls-rs through its binding is
too slow to set up there): add-all commit, join, add 10, remove 10, an
update, memory per member (traced allocations of one joined member's
state, divided by N), and Welcome and commit sizes.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol.mls.crypto import get_suite
from protocol.mls.group import Group
from protocol.mls.key_package import KeyPackageBundle, SigningIdentity, create_key_package

SUITE = 1
EXPONENT_LIMIT = math.log2(2.2)
OPS = (
    "add-all commit",
    "join",
    "remove commit",
    "process remove",
    "update commit",
    "process path-update",
    "app message send",
    "app message receive",
)
APP_BATCH = 50  # application messages per round (one is too short to time)
APP_SIZE = 200  # bytes of plaintext each


def rng(n: int) -> bytes:
    return os.urandom(n)


def cpu(fn: Callable[[], object]) -> tuple[float, object]:
    """CPU seconds of ``fn()`` (all threads of this process) and its result."""
    gc.collect()
    start = time.process_time()
    out = fn()
    return time.process_time() - start, out


# -- Samizdat ----------------------------------------------------------------------


class Samizdat:
    """A group of N on the Samizdat side: creator at leaf 0, receiver at leaf 1."""

    name = "samizdat"

    def __init__(self, n: int) -> None:
        self.suite = get_suite(SUITE)
        self.now = int(time.time())
        self.n = n
        ids = [SigningIdentity.generate(self.suite, f"m{i}".encode(), rng) for i in range(n)]
        self.creator_id = ids[0]
        self.bundles: list[KeyPackageBundle] = [
            create_key_package(self.suite, ident, self.now, rng) for ident in ids[1:]
        ]
        self.creator: Group | None = None
        self.receiver: Group | None = None
        self.welcome = b""
        self.sizes: dict[str, int] = {}

    def add_all(self) -> None:
        group = Group.create(SUITE, os.urandom(16), self.creator_id, rng, self.now)
        result = group.commit(rng, self.now, add=self.bundles, path=False)
        group.merge_pending_commit()
        assert result.welcome is not None
        self.creator, self.welcome = group, result.welcome
        self.sizes["add-all commit"] = len(result.commit)
        self.sizes["welcome"] = len(result.welcome)

    def join(self, k: int) -> None:
        group = Group.join(self.welcome, self.bundles[k - 1])
        assert group.own_leaf_index == k
        if k == 1:
            self.receiver = group

    def remove_commit(self, leaf: int) -> bytes:
        assert self.creator is not None
        result = self.creator.commit(rng, self.now, remove=[leaf])
        self.creator.merge_pending_commit()
        self.sizes["remove commit"] = len(result.commit)
        return result.commit

    def update_commit(self) -> bytes:
        assert self.creator is not None
        result = self.creator.commit(rng, self.now)
        self.creator.merge_pending_commit()
        self.sizes["update commit"] = len(result.commit)
        return result.commit

    def process(self, commit: object) -> None:
        assert self.receiver is not None and isinstance(commit, bytes)
        self.receiver.process(commit, now=self.now)

    def encrypt_many(self, count: int) -> list[bytes]:
        assert self.creator is not None
        return [self.creator.encrypt(bytes(APP_SIZE), rng) for _ in range(count)]

    def receive_many(self, messages: object) -> None:
        assert self.receiver is not None and isinstance(messages, list)
        for m in messages:
            self.receiver.process(m, now=self.now)

    def check_in_sync(self) -> None:
        assert self.creator is not None and self.receiver is not None
        assert self.creator.epoch_authenticator == self.receiver.epoch_authenticator


# -- mls-rs (raw binding) --------------------------------------------------------------


class MlsRs:
    """The same group on the mls-rs side, through ``mls_rs_uniffi`` directly."""

    name = "mls-rs"

    def __init__(self, n: int) -> None:
        import mls_rs_uniffi as rs  # type: ignore[import-untyped]

        self.rs = rs
        cs = rs.CipherSuite.CURVE25519_AES128
        self.clients = [
            rs.Client(
                f"m{i}".encode(), rs.generate_signature_keypair(cs), rs.client_config_default()
            )
            for i in range(n)
        ]
        self.key_packages = [c.generate_key_package_message() for c in self.clients[1:]]
        self.creator: Any = None  # mls_rs_uniffi.Group
        self.receiver: Any = None
        self.welcome: Any = None  # mls_rs_uniffi.Message
        self.sizes: dict[str, int] = {}

    def add_all(self) -> None:
        group = self.clients[0].create_group(None)
        out = group.add_members(self.key_packages)
        group.process_incoming_message(out.commit_message)  # the binding's merge
        self.creator, self.welcome = group, out.welcome_message
        self.sizes["add-all commit"] = len(out.commit_message.to_bytes())
        self.sizes["welcome"] = len(out.welcome_message.to_bytes())

    def join(self, k: int) -> None:
        info = self.clients[k].join_group(None, self.welcome)
        if k == 1:
            self.receiver = info.group

    def remove_commit(self, leaf: int) -> object:
        out = self.creator.remove_members([self.clients[leaf].signing_identity()])
        self.creator.process_incoming_message(out.commit_message)
        self.sizes["remove commit"] = len(out.commit_message.to_bytes())
        return out.commit_message

    def update_commit(self) -> object:
        out = self.creator.commit()
        self.creator.process_incoming_message(out.commit_message)
        self.sizes["update commit"] = len(out.commit_message.to_bytes())
        return out.commit_message

    def process(self, commit: object) -> None:
        self.receiver.process_incoming_message(commit)

    def encrypt_many(self, count: int) -> list[object]:
        return [self.creator.encrypt_application_message(bytes(APP_SIZE)) for _ in range(count)]

    def receive_many(self, messages: object) -> None:
        assert isinstance(messages, list)
        for m in messages:
            self.receiver.process_incoming_message(m)

    def check_in_sync(self) -> None:
        a = self.creator.export_secret(b"bench", b"", 32)
        b = self.receiver.export_secret(b"bench", b"", 32)
        assert a == b


# -- the side-by-side run ------------------------------------------------------------------


@dataclass
class Row:
    times: dict[str, list[float]] = field(default_factory=dict)

    def add(self, op: str, t: float) -> None:
        self.times.setdefault(op, []).append(t)

    def median(self, op: str) -> float | None:
        values = self.times.get(op)
        return statistics.median(values) if values else None

    def best(self, op: str) -> float | None:
        values = self.times.get(op)
        return min(values) if values else None


def run_size(
    n: int, rounds: int, small_rounds: int, with_rs: bool
) -> tuple[Row, Row | None, dict[str, int]]:
    """Both sides at size ``n``, interleaved round by round: ``rounds`` add-all
    commits, then ``small_rounds`` of each cheaper operation."""
    sides: list[Samizdat | MlsRs] = [Samizdat(n)]
    rows = [Row()]
    if with_rs:
        sides.append(MlsRs(n))
        rows.append(Row())

    def each(r: int, step: Callable[[Samizdat | MlsRs, Row, int], None]) -> None:
        order = list(range(len(sides)))
        if r % 2:
            order.reverse()  # alternate who goes first
        for i in order:
            step(sides[i], rows[i], r)

    def add_all(s: Samizdat | MlsRs, row: Row, r: int) -> None:
        row.add("add-all commit", cpu(s.add_all)[0])

    def join(s: Samizdat | MlsRs, row: Row, r: int) -> None:
        # leaf 1 joins first and stays as the receiver
        row.add("join", cpu(lambda: s.join(1 + r))[0])

    def remove(s: Samizdat | MlsRs, row: Row, r: int) -> None:
        # from the right, away from the creator (leaf 0) and the receiver (leaf 1)
        t, commit = cpu(lambda: s.remove_commit(n - 1 - r))
        row.add("remove commit", t)
        row.add("process remove", cpu(lambda: s.process(commit))[0])

    def update(s: Samizdat | MlsRs, row: Row, r: int) -> None:
        t, commit = cpu(s.update_commit)
        row.add("update commit", t)
        row.add("process path-update", cpu(lambda: s.process(commit))[0])

    def app(s: Samizdat | MlsRs, row: Row, r: int) -> None:
        t, messages = cpu(lambda: s.encrypt_many(APP_BATCH))
        row.add("app message send", t / APP_BATCH)
        row.add("app message receive", cpu(lambda: s.receive_many(messages))[0] / APP_BATCH)

    for r in range(rounds):  # the last round's group is the one kept
        each(r, add_all)
    for step in (join, remove, update, app):
        for r in range(small_rounds):
            each(r, step)
    for s in sides:
        s.check_in_sync()
    sizes = dict(sides[0].sizes)
    return rows[0], rows[1] if with_rs else None, sizes


def fmt_t(t: float | None) -> str:
    if t is None:
        return "-"
    if t < 0.001:
        return f"{t * 1e6:.0f} us"
    return f"{t * 1000:.1f} ms" if t < 1 else f"{t:.2f} s"


def print_table(sizes: list[int], ours: dict[int, Row], theirs: dict[int, Row | None]) -> None:
    print("\nSamizdat / mls-rs, CPU time, median of rounds (ratio < 1: Samizdat faster)")
    head = f"{'operation':22}" + "".join(f"{'N=' + str(n):>30}" for n in sizes)
    print(head)
    for op in OPS:
        cells = []
        for n in sizes:
            a = ours[n].median(op)
            other = theirs[n]
            b = other.median(op) if other is not None else None
            if a is not None and b:
                cells.append(f"{a / b:5.2f}x ({fmt_t(a)} vs {fmt_t(b)})")
            else:
                cells.append(fmt_t(a))
        print(f"{op:22}" + "".join(f"{c:>30}" for c in cells))


def print_exponents(sizes: list[int], ours: dict[int, Row]) -> bool:
    """log2 of the time ratio for each doubling of N; True if all are below the limit."""
    print(
        f"\ndoubling exponent (log2 t(2N)/t(N), best of rounds), Samizdat;"
        f" limit {EXPONENT_LIMIT:.2f} (2.2x)"
    )
    ok = True
    pairs = [(a, b) for a in sizes for b in sizes if b == 2 * a]
    if not pairs:
        print("  (no doubling pair among the sizes)")
        return True
    for op in OPS:
        cells = []
        for a, b in pairs:
            ta, tb = ours[a].best(op), ours[b].best(op)
            if not ta or not tb:
                cells.append(f"{a}->{b}: -")
                continue
            e = math.log2(tb / ta)
            flag = "" if e <= EXPONENT_LIMIT else " OVER"
            ok = ok and e <= EXPONENT_LIMIT
            cells.append(f"{a}->{b}: {e:5.2f}{flag}")
        print(f"  {op:22}" + "  ".join(cells))
    return ok


def print_sizes(sizes: list[int], msg_sizes: dict[int, dict[str, int]]) -> None:
    print("\nmessage sizes, Samizdat (bytes)")
    kinds = ("welcome", "add-all commit", "remove commit", "update commit")
    print(f"{'N':>7}" + "".join(f"{k:>18}" for k in kinds))
    for n in sizes:
        print(f"{n:>7}" + "".join(f"{msg_sizes[n].get(k, 0):>18,}" for k in kinds))


# -- Samizdat alone at 10,000 ------------------------------------------------------------------


def big_run(n: int) -> dict[str, float]:
    """Create, join and change a group of ``n`` (Samizdat only)."""
    s = Samizdat(n + 10)  # 10 spare KeyPackages for the "add 10" step
    spare = s.bundles[n - 1 :]
    s.bundles = s.bundles[: n - 1]
    out: dict[str, float] = {}
    out["add-all commit s"], _ = cpu(s.add_all)
    out["join s"], _ = cpu(lambda: s.join(1))
    out["welcome bytes"] = s.sizes["welcome"]
    out["add-all commit bytes"] = s.sizes["add-all commit"]
    assert s.receiver is not None and s.creator is not None
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    probe = Group.join(s.welcome, s.bundles[1])
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    out["memory per member bytes"] = (after - before) / n
    out["state bytes per member"] = len(probe.to_bytes()) / n
    del probe

    def add10() -> bytes:
        assert s.creator is not None
        result = s.creator.commit(rng, s.now, add=spare)
        s.creator.merge_pending_commit()
        out["add-10 commit bytes"] = len(result.commit)
        return result.commit

    out["add 10 commit s"], commit = cpu(add10)
    out["process add 10 s"], _ = cpu(lambda: s.process(commit))

    def remove10() -> bytes:
        assert s.creator is not None
        result = s.creator.commit(rng, s.now, remove=list(range(n - 10, n)))
        s.creator.merge_pending_commit()
        out["remove-10 commit bytes"] = len(result.commit)
        return result.commit

    out["remove 10 commit s"], commit = cpu(remove10)
    out["process remove 10 s"], _ = cpu(lambda: s.process(commit))
    out["update commit s"], commit = cpu(s.update_commit)
    out["update commit bytes"] = s.sizes["update commit"]
    out["process update s"], _ = cpu(lambda: s.process(commit))
    s.check_in_sync()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="MLS group operations vs mls-rs")
    parser.add_argument("--sizes", default="100,500,1000,2000")
    parser.add_argument("--rounds", type=int, default=3, help="add-all commits per size")
    parser.add_argument("--small-rounds", type=int, default=7, help="rounds of the other ops")
    parser.add_argument("--big", type=int, default=10000, help="0 to skip the Samizdat-only run")
    parser.add_argument("--quick", action="store_true", help="smoke test: N=20,40, 2 rounds")
    parser.add_argument("--no-mlsrs", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x]
    rounds, small_rounds, big = args.rounds, args.small_rounds, args.big
    if args.quick:
        sizes, rounds, small_rounds, big = [20, 40], 2, 2, 0
    with_rs = not args.no_mlsrs
    if with_rs:
        try:
            import mls_rs_uniffi  # noqa: F401
        except ImportError as exc:
            print(f"(mls-rs not measured: {exc})")
            with_rs = False
    print(
        f"MLS groups, suite {SUITE}, sizes {sizes}, CPU time medians of {rounds} add-all"
        f" rounds and {small_rounds} rounds of the other operations"
    )
    ours: dict[int, Row] = {}
    theirs: dict[int, Row | None] = {}
    msg_sizes: dict[int, dict[str, int]] = {}
    for n in sizes:
        wall = time.perf_counter()
        ours[n], theirs[n], msg_sizes[n] = run_size(n, rounds, small_rounds, with_rs)
        print(f"  N={n} done in {time.perf_counter() - wall:.0f} s wall", flush=True)
    print_table(sizes, ours, theirs)
    print_exponents(sizes, ours)
    print_sizes(sizes, msg_sizes)
    if big:
        print(f"\nSamizdat alone at N={big:,}")
        for key, value in big_run(big).items():
            if key.endswith(" s"):
                print(f"  {key[:-2]:28} {fmt_t(value)}")
            else:
                print(f"  {key:28} {value:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
