"""The malicious relay injects exactly the faults it is configured with
(seeded), logs each one, and otherwise relays faithfully."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.malicious import STRIDE, Fault, FaultError, MaliciousRelay
from harness.scenario.relays import LocalRelay
from protocol.padding import BLOB_CHUNK_SIZE
from protocol.relay_frames import BlobTicket, Posted
from tests.relay_support import Client, Mailbox, envelope

pytestmark = pytest.mark.timeout(60)

Start = Callable[..., Any]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[Start]:
    relay = await LocalRelay(tmp_path / "relay").start()
    session = aiohttp.ClientSession()
    proxies: list[MaliciousRelay] = []

    async def start(*faults: Fault, seed: int = 1) -> tuple[MaliciousRelay, Any]:
        proxy = await MaliciousRelay(relay.url, list(faults), seed=seed).start()
        proxies.append(proxy)

        async def connect() -> Client:
            return await Client.connect(session, proxy.url + "/ws")

        return proxy, connect

    yield start
    for p in proxies:
        await p.stop()
    await session.close()
    await relay.stop()


async def writer(connect: Any, mb: Mailbox) -> Client:
    c = await connect()
    await c.create(mb)
    await c.auth_write(mb)
    return c


async def reader(connect: Any, *boxes: Mailbox) -> Client:
    c = await connect()
    for mb in boxes:
        await c.auth_read(mb)
    for mb in boxes:
        await c.subscribe(mb)
    return c


async def post_n(w: Client, mb: Mailbox, n: int, seqs: list[int] | None = None) -> list[bytes]:
    """Post ``n`` envelopes; their seqs (as the writer was told) go to ``seqs``
    (the relay's seqs start from the hour's base, not 1: SPEC §7.7)."""
    envs = [envelope(b"msg %d " % i + os.urandom(8)) for i in range(n)]
    for env in envs:
        reply = await w.post(mb, env)
        assert isinstance(reply, Posted)
        if seqs is not None:
            seqs.append(reply.seq)
    return envs


async def settle(c: Client, mb: Mailbox) -> None:
    """A round trip after the posts: every Deliver before it has arrived."""
    await c.ack(mb, 0)


def test_fault_parsing() -> None:
    f = Fault.parse("drop:rate=0.25,mailbox=ab12,reader=conn:2")
    assert (f.kind, f.rate, f.mailbox, f.reader) == ("drop", 0.25, "ab12", "conn:2")
    for bad in ("explode", "drop:rate=2", "drop:reader=bob", "delay:direction=post", "drop:x"):
        with pytest.raises(FaultError):
            Fault.parse(bad)
    with pytest.raises(FaultError):
        Fault.from_dict({"kind": "drop", "colour": "red"})


async def test_honest_passthrough_records_hashes(world: Start) -> None:
    proxy, connect = await world()
    mb = Mailbox()
    w = await writer(connect, mb)
    r = await reader(connect, mb)
    seqs: list[int] = []
    envs = await post_n(w, mb, 5, seqs)
    got = await r.wait_delivered(5)
    assert [d.envelope for d in got] == envs and [d.seq for d in got] == seqs
    assert proxy.log.events == [] and proxy.stride == 1
    assert proxy.stats.posts == 5 and proxy.stats.repeats()["envelopes"] == 0
    await w.post(mb, envs[0])  # the same ciphertext under another msg id: a repeat
    assert proxy.stats.repeats()["envelopes"] == 1


async def test_drop_targets_one_mailbox(world: Start) -> None:
    a, b = Mailbox(), Mailbox()
    proxy, connect = await world(Fault("drop", mailbox=a.id.hex()[:6]))
    wa, wb = await writer(connect, a), await writer(connect, b)
    r = await reader(connect, a, b)
    seqs: list[int] = []
    await post_n(wa, a, 4, seqs)
    await post_n(wb, b, 4)
    await r.wait_delivered(4)
    await settle(r, a)
    assert {d.mailbox_id for d in r.delivered} == {b.id}
    drops = [e for e in proxy.log.events if e.kind == "drop"]
    assert len(drops) == 4 and {e.mailbox for e in drops} == {a.id.hex()[:8]}
    assert [e.seq for e in drops] == seqs


async def test_withhold_from_one_reader_only(world: Start) -> None:
    mb, marker = Mailbox(), Mailbox()
    proxy, connect = await world(Fault("withhold", reader="reads:" + marker.id.hex()[:8]))
    w = await writer(connect, mb)
    await w.create(marker)
    victim = await reader(connect, mb, marker)
    other = await reader(connect, mb)
    await post_n(w, mb, 3)
    await other.wait_delivered(3)
    await settle(victim, mb)
    assert victim.delivered == []
    assert len([e for e in proxy.log.events if e.kind == "withhold"]) == 3


async def test_seeded_drop_rate_is_reproducible(world: Start) -> None:
    dropped = []
    for _ in range(2):
        proxy, connect = await world(Fault("drop", rate=0.5), seed=7)
        mb = Mailbox()
        w = await writer(connect, mb)
        r = await reader(connect, mb)
        await post_n(w, mb, 20)
        await settle(r, mb)
        dropped.append([e.seq for e in proxy.log.events])
        assert len(r.delivered) + len(dropped[-1]) == 20
    assert dropped[0] == dropped[1] and 3 < len(dropped[0]) < 17


async def test_duplicate_replay_inject_take_fresh_seqs(world: Start) -> None:
    proxy, connect = await world(
        Fault("duplicate", count=1), Fault("replay", after=0, count=1), Fault("inject", count=1)
    )
    assert proxy.stride == STRIDE
    mb = Mailbox()
    w = await writer(connect, mb)
    r = await reader(connect, mb)
    told: list[int] = []
    envs = await post_n(w, mb, 3, told)
    posted = await w.post(mb, envelope(b"last"))
    # the proxy scales every upstream seq by STRIDE, leaving room for fresh ones
    assert isinstance(posted, Posted) and posted.seq % STRIDE == 0 and posted.seq > told[-1]
    await settle(r, mb)
    seqs = [d.seq for d in r.delivered]
    assert seqs == sorted(set(seqs)), seqs  # strictly increasing: the client accepts all
    bodies = [d.envelope for d in r.delivered]
    assert bodies[0] == bodies[1] == envs[0]  # duplicate
    kinds = proxy.log.counts()
    assert kinds == {"duplicate": 1, "replay": 1, "inject": 1}
    assert len(r.delivered) == 4 + 3
    # a re-subscription from the client's cursor maps back onto upstream seqs
    r2 = await connect()
    await r2.auth_read(mb)
    await r2.subscribe(mb, from_seq=seqs[-1] + 1)
    await settle(r2, mb)
    assert [d.seq for d in r2.delivered] == []


async def test_tamper_flips_one_bit(world: Start) -> None:
    proxy, connect = await world(Fault("tamper"))
    mb = Mailbox()
    w = await writer(connect, mb)
    r = await reader(connect, mb)
    envs = await post_n(w, mb, 2)
    got = await r.wait_delivered(2)
    for d, env in zip(got, envs, strict=True):
        diff = [x ^ y for x, y in zip(d.envelope, env, strict=True) if x != y]
        assert len(diff) == 1 and bin(diff[0]).count("1") == 1
    assert proxy.log.counts() == {"tamper": 2}


async def test_post_drop_fakes_the_ack(world: Start) -> None:
    proxy, connect = await world(Fault("drop", direction="post", count=1))
    mb = Mailbox()
    w = await writer(connect, mb)
    r = await reader(connect, mb)
    envs = await post_n(w, mb, 3)  # all three "Posted"
    await r.wait_delivered(2)
    await settle(r, mb)
    assert [d.envelope for d in r.delivered] == envs[1:]
    assert proxy.log.events[0].detail == "fake-acked"


async def test_reorder_keeps_seqs_increasing(world: Start) -> None:
    proxy, connect = await world(Fault("reorder", window=5))
    mb = Mailbox()
    w = await writer(connect, mb)
    r = await reader(connect, mb)
    seqs: list[int] = []
    envs = await post_n(w, mb, 10, seqs)
    got = await r.wait_delivered(10)
    assert [d.seq for d in got] == seqs
    assert sorted(d.envelope for d in got) == sorted(envs)
    assert [d.envelope for d in got] != envs
    assert proxy.log.counts().get("reorder", 0) >= 1


async def test_fork_serves_readers_different_orders(world: Start) -> None:
    proxy, connect = await world(Fault("fork", reader="even", seconds=1.0, count=1))
    mb = Mailbox()
    w = await writer(connect, mb)  # conn 1 (odd)
    odd = await reader(connect, mb)  # conn 2 (even): forked
    even = await reader(connect, mb)  # conn 3
    seqs: list[int] = []
    envs = await post_n(w, mb, 2, seqs)
    a, b = await odd.wait_delivered(2), await even.wait_delivered(2)
    assert [d.envelope for d in b] == envs
    assert [d.envelope for d in a] == envs[::-1] and [d.seq for d in a] == seqs
    assert proxy.log.counts() == {"fork": 1}


async def test_refuse_and_dark(world: Start) -> None:
    proxy, connect = await world(Fault("refuse", after=0.0))
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await connect()
    assert proxy.stats.refused == 1 and proxy.log.counts() == {"refuse": 1}
    proxy2, connect2 = await world()
    c = await connect2()
    proxy2.go_dark()
    with pytest.raises((ConnectionError, TimeoutError)):
        await c.recv(timeout=5)
    assert "dark" in proxy2.log.counts()


async def test_blob_traffic_is_relayed_and_hashed(world: Start) -> None:
    proxy, _ = await world()
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy.url + "/blob") as resp:
            assert resp.status == 201
            ticket = BlobTicket.decode(await resp.read())
        chunk = os.urandom(BLOB_CHUNK_SIZE)
        url = f"{proxy.url}/blob/{ticket.blob_id.hex()}/0"
        auth = {"Authorization": "Bearer " + ticket.upload_token.hex()}
        async with s.put(url, data=chunk, headers=auth) as resp:
            assert resp.status == 201
        read = {"Authorization": "Bearer " + ticket.read_token.hex()}
        async with s.get(url, headers=read) as resp:
            assert await resp.read() == chunk
        async with s.get(proxy.url + "/") as resp:
            assert resp.status == 200 and resp.headers.get("Server") == "nginx"
    assert proxy.stats.blob_ids == [ticket.blob_id] and proxy.stats.blob_chunks == 1


async def test_standalone_cli_logs_faults_to_its_report(world: Start, tmp_path: Path) -> None:
    import asyncio
    import json
    import sys

    from harness.relay_process import ROOT, free_port

    upstream = (await world())[0].upstream  # the fixture's honest relay
    port = free_port()
    report = tmp_path / "mal.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harness.cli",
        "malicious-relay",
        "--upstream",
        upstream,
        "--listen",
        f"127.0.0.1:{port}",
        "--duplicate",
        "1",
        "--seed",
        "3",
        "--report",
        str(report),
        "--duration",
        "6",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    banner = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert b"malicious relay on" in banner
    async with aiohttp.ClientSession() as session:
        mb = Mailbox()
        w = await Client.connect(session, f"http://127.0.0.1:{port}/ws")
        await w.create(mb)
        await w.auth_write(mb)
        await w.auth_read(mb)
        await w.subscribe(mb)
        await w.post(mb, envelope(b"once"))
        got = await w.wait_delivered(2)
        assert got[0].envelope == got[1].envelope and got[1].seq > got[0].seq
        await w.close()
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, out
    data = json.loads(report.read_text())
    assert data["seed"] == 3 and [e["kind"] for e in data["faults_log"]] == ["duplicate"]
    assert data["faults_log"][0]["mailbox"] == mb.id.hex()[:8]
    assert b"duplicate" in out
