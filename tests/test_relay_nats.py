"""The JetStream backend against a real nats-server: the same protocol
behaviour as SQLite, and two relay processes over one JetStream."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from protocol.relay_frames import (
    BlobTicket,
    Error,
    MailboxExists,
    NotAuthorized,
    Ok,
    Post,
    Posted,
    QuotaExceeded,
    Subscribed,
    UnknownMailbox,
)
from relay.app import CONTEXT, create_app
from tests import nats_fixtures
from tests.nats_fixtures import NatsServer, wait_jetstream
from tests.relay_support import Client, Mailbox, envelope
from tests.test_relay_app import code, make_config

nats_server = nats_fixtures.nats_server
nats_cluster = nats_fixtures.nats_cluster


async def start_relay(aiohttp_client: Any, tmp: Path, url: str, name: str, **kw: Any) -> Any:
    app = create_app(make_config(tmp / name, backend="nats", nats_url=url, **kw))
    tc = await aiohttp_client(app)
    tc.ctx = app[CONTEXT]
    return tc


async def connect(tc: Any) -> Client:
    return await Client.connect(tc.session, tc.make_url("/ws"))


async def test_protocol_on_nats(
    aiohttp_client: Any, tmp_path: Path, nats_server: NatsServer
) -> None:
    tc = await start_relay(aiohttp_client, tmp_path, nats_server.url, "a")
    w, r = await connect(tc), await connect(tc)
    mb = Mailbox()
    assert isinstance(await w.create(mb), Ok)
    assert isinstance(await w.create(mb), Ok)
    assert code(await w.create(Mailbox(id=mb.id))) == MailboxExists.code
    assert code(await w.auth_read(Mailbox())) == UnknownMailbox.code
    await w.auth_write(mb)
    mid = os.urandom(16)
    first = await w.post(mb, envelope(b"1"), mid)
    again = await w.post(mb, envelope(b"1"), mid)
    assert isinstance(first, Posted) and isinstance(again, Posted)
    assert again.seq == first.seq and again.duplicate and not first.duplicate
    seqs = [first.seq]
    for i in range(5):
        p = await w.post(mb, envelope(b"%d" % i))
        seqs.append(p.seq)  # type: ignore[union-attr]
    assert seqs == sorted(seqs) and len(set(seqs)) == 6
    await r.auth_read(mb)
    sub = await r.subscribe(mb, from_seq=seqs[2])
    assert isinstance(sub, Subscribed) and sub.head_seq == seqs[-1]
    got = await r.wait_delivered(4)
    assert [d.seq for d in got] == seqs[2:]
    live = await w.post_signed(mb, envelope(b"live"))
    got = await r.wait_delivered(5)
    assert got[-1].seq == live.seq and got[-1].envelope == envelope(b"live")  # type: ignore[union-attr]
    assert isinstance(await r.ack(mb, seqs[3]), Ok)
    r2 = await connect(tc)
    await r2.auth_read(mb)
    await r2.subscribe(mb)
    assert [d.seq for d in await r2.wait_delivered(3)] == [*seqs[4:], live.seq]  # type: ignore[union-attr]


async def test_quota_and_rotation_on_nats(
    aiohttp_client: Any, tmp_path: Path, nats_server: NatsServer
) -> None:
    tc = await start_relay(
        aiohttp_client, tmp_path, nats_server.url, "a", limits={"mailbox_max_messages": 3}
    )
    c = await connect(tc)
    mb = Mailbox()
    await c.create(mb)
    await c.auth_write(mb)
    for _ in range(3):
        assert isinstance(await c.post(mb, envelope()), Posted)
    assert code(await c.post(mb, envelope())) == QuotaExceeded.code
    other = await connect(tc)
    await other.auth_write(mb)
    from nacl.signing import SigningKey

    new = SigningKey.generate()
    assert isinstance(await c.rotate(mb, new), Ok)
    assert code(await other.post(mb, envelope())) == NotAuthorized.code


async def test_two_relays_one_jetstream(
    aiohttp_client: Any, tmp_path: Path, nats_server: NatsServer
) -> None:
    a = await start_relay(aiohttp_client, tmp_path, nats_server.url, "a")
    b = await start_relay(aiohttp_client, tmp_path, nats_server.url, "b")
    reader, writer = await connect(a), await connect(b)
    mb = Mailbox()
    await writer.create(mb)
    await writer.auth_write(mb)
    await reader.auth_read(mb)
    await reader.subscribe(mb)
    posted = []
    for i in range(50):
        await writer.send(Post(writer.rid(), mb.id, os.urandom(16), envelope(b"%d" % i)))
    while len(posted) < 50:
        f = await writer.recv()
        if isinstance(f, Posted):
            posted.append(f.seq)
    got = await reader.wait_delivered(50)
    assert sorted(d.seq for d in got) == [d.seq for d in got] == sorted(posted)


async def test_gap_check_fills_missed_pushes(
    aiohttp_client: Any, tmp_path: Path, nats_server: NatsServer
) -> None:
    tc = await start_relay(aiohttp_client, tmp_path, nats_server.url, "a")
    w, r = await connect(tc), await connect(tc)
    mb = Mailbox()
    await w.create(mb)
    await w.auth_write(mb)
    await r.auth_read(mb)
    await r.subscribe(mb)
    first = await w.post(mb, envelope(b"0"))
    await r.wait_delivered(1)
    storage = tc.ctx.storage
    from relay.storage.base import mailbox_key

    key = mailbox_key(mb.id)
    # Simulate a lost republish: publish straight into the stream while this
    # process's live subscription is paused, then post normally.
    live_sub = await storage._live[key]
    await live_sub.unsubscribe()
    missed = await w.post(mb, envelope(b"missed"))
    storage._live[key] = asyncio.ensure_future(storage._subscribe_live(key))
    await storage._live[key]
    last = await w.post(mb, envelope(b"after"))
    got = await r.wait_delivered(3)
    assert [d.seq for d in got] == [first.seq, missed.seq, last.seq]  # type: ignore[union-attr]
    assert got[1].envelope == envelope(b"missed")


async def test_blobs_on_nats(aiohttp_client: Any, tmp_path: Path, nats_server: NatsServer) -> None:
    from protocol.padding import BLOB_CHUNK_SIZE

    tc = await start_relay(aiohttp_client, tmp_path, nats_server.url, "a")
    t = BlobTicket.decode(await (await tc.post("/blob")).read())
    url = f"/blob/{t.blob_id.hex()}"
    up = {"Authorization": "Bearer " + t.upload_token.hex()}
    rd = {"Authorization": "Bearer " + t.read_token.hex()}
    chunk = os.urandom(BLOB_CHUNK_SIZE)
    assert (await tc.put(f"{url}/0", data=chunk, headers=up)).status == 201
    assert (await tc.put(f"{url}/0", data=chunk, headers=up)).status == 200
    got = await tc.get(f"{url}/0", headers=rd)
    assert got.status == 200 and await got.read() == chunk
    assert (await tc.get(f"{url}/1", headers=rd)).status == 404
    assert (await tc.delete(url, headers=up)).status == 204
    assert (await tc.get(f"{url}/0", headers=rd)).status == 404


@pytest.mark.parametrize("replicas", [3])
async def test_cluster_node_killed_under_load_loses_no_ack(
    aiohttp_client: Any, tmp_path: Path, nats_cluster: list[NatsServer], replicas: int
) -> None:
    import signal

    urls = ",".join(n.url for n in nats_cluster)
    await wait_jetstream(urls, replicas)
    tc = await start_relay(
        aiohttp_client, tmp_path, urls, "a", nats_replicas=replicas, nats_shards=2
    )
    c = await connect(tc)
    mb = Mailbox()
    await c.create(mb)
    await c.auth_write(mb)
    # A window of 32 posts in flight; node n1 is SIGKILLed after 100 sends.  A
    # post refused during fail-over (typed Unavailable) is retried with the
    # same msg_id, which JetStream de-duplicates.
    to_send = [(os.urandom(16), envelope(b"m%d" % i)) for i in range(300)]
    to_send.reverse()
    pending: dict[int, tuple[bytes, bytes]] = {}
    acked: dict[int, bytes] = {}
    sent = retries = 0
    killed = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 90
    while (to_send or pending) and loop.time() < deadline:
        while to_send and len(pending) < 32:
            mid, body = to_send.pop()
            rid = c.rid()
            pending[rid] = (mid, body)
            await c.send(Post(rid, mb.id, mid, body))
            sent += 1
            if sent == 100:
                nats_cluster[1].stop(signal.SIGKILL)
                killed = True
        f = await c.recv(timeout=30)
        if isinstance(f, Posted):
            acked[f.seq] = pending.pop(f.req_id)[1]
        elif isinstance(f, Error):
            to_send.append(pending.pop(f.req_id))
            retries += 1
    assert killed and not to_send and not pending
    assert sorted(acked.values()) == sorted(envelope(b"m%d" % i) for i in range(300))
    r = await connect(tc)
    # Right after a fail-over a request may time out (typed Unavailable): a
    # client retries, as SPEC.md §7.8 says.
    for step in (r.auth_read, r.subscribe):
        for _ in range(20):
            if not isinstance(await step(mb), Error):
                break
            await asyncio.sleep(0.5)
    got = {d.seq: d.envelope for d in await r.wait_delivered(len(acked), timeout=30)}
    assert got == acked
