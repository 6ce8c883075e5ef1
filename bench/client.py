"""Client benchmark through a real local relay (SQLite), in one run.

    python bench/client.py [--queued 10000] [--members 200] [--latency 200]

Prints:
* time for a client that was offline to sync N queued messages (and msgs/s),
* time to create an M-member group (the add-all commit) and for a member to
  join from the Welcome,
* send-to-receive latency (p50/p99) of a text message between two online
  clients through the relay.
Medians/percentiles are what to quote: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client.engine import Engine
from harness.relay_process import RelayProcess
from protocol.mls.crypto import get_suite
from protocol.mls.group import Group
from protocol.mls.key_package import SigningIdentity, create_key_package
from tests.client_support import befriend, eventually, make_engine


async def bench_sync(base: Path, url: str, n: int) -> tuple[float, float]:
    alice = make_engine(base / "sync-alice", "Alice", [url])
    bob = make_engine(base / "sync-bob", "Bob", [url])
    await alice.connect()
    await bob.connect()
    conv = await befriend(alice, bob)
    await alice.close()  # alice goes offline
    start = time.perf_counter()
    for i in range(n):
        await bob.send_text(conv, f"queued message {i}")
    queue_time = time.perf_counter() - start
    await eventually(lambda: not bob.outbox(), timeout=600, what="all posted")
    await bob.close()
    alice = Engine.open(base / "sync-alice", b"test passphrase")
    conv_a = alice.find_conversation("Bob").group_id
    start = time.perf_counter()
    await alice.connect()
    await eventually(
        lambda: alice.store.log_count(f"history:{conv_a.hex()}") >= n,
        timeout=1200,
        what="all synced",
    )
    elapsed = time.perf_counter() - start
    await alice.close()
    return elapsed, queue_time


def bench_group(members: int) -> tuple[float, float, int]:
    suite = get_suite(1)
    now = int(time.time())
    ids = [SigningIdentity.generate(suite, f"m{i}".encode(), os.urandom) for i in range(members)]
    bundles = [create_key_package(suite, i, now, os.urandom) for i in ids[1:]]
    creator = Group.create(1, os.urandom(16), ids[0], os.urandom, now)
    start = time.perf_counter()
    result = creator.commit(os.urandom, now, add=bundles)
    creator.merge_pending_commit()
    create = time.perf_counter() - start
    assert result.welcome is not None
    start = time.perf_counter()
    Group.join(result.welcome, bundles[-1])
    join = time.perf_counter() - start
    return create, join, len(result.welcome)


async def bench_engine_group(base: Path, url: str, members: int) -> tuple[float, float]:
    """The same through engines and a relay: the creator adds everyone (its
    commit, the echo, 199 Welcomes posted); then one member joins."""
    creator = make_engine(base / "g-creator", "Creator", [url])
    await creator.connect()
    others = [make_engine(base / f"g-{i}", f"M{i}", [url]) for i in range(members - 1)]
    for o in others:
        await o.connect()
    for o in others:
        await befriend(creator, o)
    # Every member is its own device: measure the creator and one joiner, with
    # the others offline (their Welcomes wait for them on the relay).
    last = others[-1]
    for o in others[:-1]:
        await o.close()
    group = await creator.create_group("big")
    start = time.perf_counter()
    await creator.add_members(
        group.group_id, [creator.find_contact(o.identity.name) for o in others]
    )
    create = time.perf_counter() - start
    start = time.perf_counter()
    await eventually(lambda: any(c.name == "big" for c in last.conversations()), timeout=600)
    join = time.perf_counter() - start
    for e in (creator, last):
        await e.close()
    return create, join


async def bench_latency(base: Path, url: str, n: int) -> list[float]:
    alice = make_engine(base / "lat-alice", "Alice", [url])
    bob = make_engine(base / "lat-bob", "Bob", [url])
    await alice.connect()
    await bob.connect()
    conv = await befriend(alice, bob)
    conv_a = alice.find_conversation("Bob").group_id
    received: dict[str, float] = {}

    def on_event(what: str, conv_id: bytes | None) -> None:
        if what == "conversation" and conv_id == conv_a:
            for e in alice.history(conv_a, limit=3):
                received.setdefault(e.text, time.perf_counter())

    alice.listeners.append(on_event)
    samples = []
    for i in range(n):
        text = f"ping {i}"
        start = time.perf_counter()
        await bob.send_text(conv, text)
        await eventually(lambda t=text: t in received, timeout=30)
        samples.append(received[text] - start)
    await alice.close()
    await bob.close()
    return samples


async def main() -> None:
    parser = argparse.ArgumentParser(description="client benchmark")
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument(
        "--engine-members",
        type=int,
        default=0,
        help="also run the group benchmark through full engines (slow)",
    )
    parser.add_argument("--latency", type=int, default=200)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="samizdat-bench-"))
    # room for the queued messages plus the conversation's own traffic
    quota = {"mailbox_max_messages": args.queued + 1000}
    relay = RelayProcess(base / "relay", limits=quota).start()
    try:
        lat = await bench_latency(base, relay.url, args.latency)
        lat.sort()
        print(
            f"send-to-receive latency over {len(lat)} messages: "
            f"p50 {statistics.median(lat) * 1000:.1f} ms, "
            f"p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.1f} ms"
        )
        create, join, size = bench_group(args.members)
        print(
            f"{args.members}-member group (MLS core): add-all commit {create * 1000:.0f} ms, "
            f"join from Welcome {join * 1000:.0f} ms, Welcome {size / 1024:.0f} KiB"
        )
        if args.engine_members:
            create, join = await bench_engine_group(base, relay.url, args.engine_members)
            print(
                f"{args.engine_members}-member group (engines via relay): add {create:.1f} s, "
                f"last member joined {join:.1f} s later"
            )
        elapsed, queue_time = await bench_sync(base, relay.url, args.queued)
        print(
            f"queued {args.queued} messages in {queue_time:.1f} s; offline client synced them "
            f"in {elapsed:.1f} s ({args.queued / elapsed:,.0f} msgs/s)"
        )
    finally:
        relay.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
