"""Every limit: quotas, rate limits, connection caps, slow consumers,
malformed input, heartbeat and graceful shutdown."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from protocol.relay_frames import (
    INITIAL_CREDIT,
    Ack,
    BadFrame,
    Credit,
    Error,
    Post,
    Posted,
    QuotaExceeded,
    RateLimited,
    ShuttingDown,
    SlowConsumer,
    StorageFull,
    TooManyConnections,
    decode_server_frame,
)
from relay.app import CONTEXT, create_app
from relay.limits import PerIpLimiter, SendQueue, TokenBucket
from relay.storage.base import MAILBOX_ROW_COST, mailbox_key
from tests.relay_support import Client, Mailbox, envelope
from tests.test_relay_app import code, make_config


@pytest.fixture
async def relay(aiohttp_client: Any, tmp_path: Path) -> Any:
    async def start(**kw: Any) -> Any:
        app = create_app(make_config(tmp_path, **kw))
        tc = await aiohttp_client(app)
        tc.ctx = app[CONTEXT]
        return tc

    return start


async def connect(tc: Any) -> Client:
    return await Client.connect(tc.session, tc.make_url("/ws"))


async def writer_for(tc: Any) -> tuple[Client, Mailbox]:
    c = await connect(tc)
    mb = Mailbox()
    await c.create(mb)
    await c.auth_write(mb)
    return c, mb


def test_token_bucket_refills_with_injected_clock() -> None:
    now = [0.0]
    b = TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [b.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 0.5
    assert b.take() and not b.take()
    now[0] = 100.0
    assert sum(b.take() for _ in range(10)) == 3


def test_per_ip_limiter_is_bounded() -> None:
    lim = PerIpLimiter(1.0, 1, clock=lambda: 0.0, max_entries=3)
    assert lim.take("a") and not lim.take("a")
    for ip in "bcd":
        lim.take(ip)
    assert len(lim._buckets) == 3
    assert lim.take("a")  # evicted, starts over with a full bucket


async def test_send_queue_bounds() -> None:
    q = SendQueue(max_frames=2, max_bytes=10)
    assert q.put(b"12345") and q.put(b"1234")
    assert not q.put(b"1")  # frames
    q2 = SendQueue(max_frames=10, max_bytes=10)
    assert q2.put(b"123456") and not q2.put(b"12345")  # bytes
    assert await q.get_batch() == [b"12345", b"1234"] and len(q) == 0
    q.abort(b"bye")
    assert await q.get_batch() == [b"bye"] and await q.get_batch() == []


async def test_mailbox_message_quota(relay: Any) -> None:
    tc = await relay(limits={"mailbox_max_messages": 3})
    c, mb = await writer_for(tc)
    seqs = []
    for _ in range(3):
        posted = await c.post(mb, envelope())
        assert isinstance(posted, Posted)
        seqs.append(posted.seq)
    assert code(await c.post(mb, envelope())) == QuotaExceeded.code
    await c.auth_read(mb)
    await c.ack(mb, seqs[1])
    assert isinstance(await c.post(mb, envelope()), Posted)


async def test_mailbox_byte_quota(relay: Any) -> None:
    tc = await relay(limits={"mailbox_max_bytes": 1024})
    c, mb = await writer_for(tc)
    assert isinstance(await c.post(mb, envelope(size=512)), Posted)
    assert isinstance(await c.post(mb, envelope(size=512)), Posted)
    assert code(await c.post(mb, envelope(size=256))) == QuotaExceeded.code


async def test_total_storage_limit(relay: Any) -> None:
    # each mailbox row is charged MAILBOX_ROW_COST bytes (SPEC.md §7.11)
    tc = await relay(limits={"total_max_bytes": 600 + 2 * MAILBOX_ROW_COST})
    c, mb = await writer_for(tc)
    other = Mailbox()
    await c.create(other)
    await c.auth_write(other)
    assert isinstance(await c.post(mb, envelope(size=512)), Posted)
    assert code(await c.post(mb, envelope(size=256))) == StorageFull.code
    assert code(await c.post(other, envelope(size=256))) == StorageFull.code


async def test_frame_rate_limit(relay: Any) -> None:
    tc = await relay(limits={"frame_rate": 0.001, "frame_burst": 5})
    c, mb = await writer_for(tc)  # 2 frames
    replies = [await c.post(mb, envelope()) for _ in range(5)]
    assert [isinstance(r, Posted) for r in replies] == [True, True, True, False, False]
    assert code(replies[-1]) == RateLimited.code
    assert not c.ws.closed


async def test_connection_rate_and_caps(relay: Any) -> None:
    tc = await relay(limits={"connect_burst": 2, "connect_rate": 0.001})
    kept = [await connect(tc), await connect(tc)]
    ws = await tc.session.ws_connect(tc.make_url("/ws"))
    frame = decode_server_frame((await ws.receive(timeout=5)).data)
    assert isinstance(frame, Error) and frame.code == RateLimited.code
    close = await ws.receive(timeout=5)
    assert close.type == aiohttp.WSMsgType.CLOSE and close.data == 1013
    assert len(kept) == 2


@pytest.mark.parametrize("limit", ["max_connections", "max_connections_per_ip"])
async def test_connection_count_caps(relay: Any, limit: str) -> None:
    tc = await relay(limits={limit: 2})
    a = await connect(tc)
    b = await connect(tc)
    ws = await tc.session.ws_connect(tc.make_url("/ws"))
    frame = decode_server_frame((await ws.receive(timeout=5)).data)
    assert isinstance(frame, Error) and frame.code == TooManyConnections.code
    await a.close()
    for _ in range(100):
        if tc.ctx.counter.total < 2:
            break
        await asyncio.sleep(0.01)
    await connect(tc)  # a slot was freed
    await b.close()


async def _stall(tc: Any, r: Client, mb: Mailbox) -> Any:
    """Let ``r`` grant all the credit there is and stop reading; push 64 KiB
    messages until its socket is full and Deliver frames fill half the queue,
    where flow control stops them (SPEC §7.6).  Returns the connection."""
    conn = next(c for c in tc.ctx.connections if c.read_grants)
    await r.ws.send_bytes(Credit(2**32 - 1).encode())
    for _ in range(100):
        if conn.credit > INITIAL_CREDIT:
            break
        await asyncio.sleep(0.01)
    big = envelope(size=65536)
    for seq in range(1, 4000):  # up to 250 MiB offered to a peer that never reads
        tc.ctx.storage.hub.publish(mailbox_key(mb.id), seq, big)
        await asyncio.sleep(0)
        q = conn.queue
        assert q.nbytes <= q.max_bytes and len(q) <= q.max_frames
        if len(q) * 2 >= q.max_frames and not conn.subs[mb.id].live:
            break
    assert len(conn.queue) * 2 >= conn.queue.max_frames, "the peer's socket never filled"
    return conn


async def test_slow_consumer_is_disconnected_with_a_reason(relay: Any) -> None:
    tc = await relay(limits={"send_queue_frames": 8, "send_queue_bytes": 1 << 30})
    w, mb = await writer_for(tc)
    r = await connect(tc)
    await r.auth_read(mb)
    await r.subscribe(mb)
    conn = await _stall(tc, r, mb)
    assert not conn.closing  # a backlog alone never makes a slow consumer
    # Requests whose replies the peer does not read overflow the other half
    # (however much the kernel's socket buffers absorb first).
    # Bounded by time, not by a count of requests: on a loaded machine the
    # relay may read the requests (and so queue their replies) well after
    # they were sent.
    deadline = asyncio.get_running_loop().time() + 60
    while not conn.closing and asyncio.get_running_loop().time() < deadline:
        await r.send(Ack(r.rid(), mb.id, 0))
        await asyncio.sleep(0.002)
    assert conn.closing
    frames = []
    while True:
        msg = await r.ws.receive(timeout=5)
        if msg.type != aiohttp.WSMsgType.BINARY:
            break
        frames.append(decode_server_frame(msg.data))
    assert isinstance(frames[-1], Error) and frames[-1].code == SlowConsumer.code
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1008
    assert tc.ctx.metrics.values["samizdat_relay_slow_consumers_total"] == 1
    assert isinstance(await w.post(mb, envelope()), Posted)  # the writer is unaffected


@pytest.mark.parametrize(
    "payload", [b"", b"\x7f", b"\x06\x00\x00\x00\x09short", b"\x81\x00\x00\x00\x01"]
)
async def test_malformed_frame_error_then_close(relay: Any, payload: bytes) -> None:
    tc = await relay()
    c = await connect(tc)
    await c.ws.send_bytes(payload)
    frame = await c.recv()
    assert isinstance(frame, Error) and frame.code == BadFrame.code
    if payload[:1] == b"\x06":
        assert frame.req_id == 9  # attributed when the header is readable
    msg = await c.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1002 and msg.extra


async def test_text_frame_error_then_close(relay: Any) -> None:
    tc = await relay()
    c = await connect(tc)
    await c.ws.send_str("hello")
    frame = await c.recv()
    assert isinstance(frame, Error) and frame.code == BadFrame.code
    assert (await c.ws.receive(timeout=5)).type == aiohttp.WSMsgType.CLOSE


async def test_oversized_frame_closes_1009(relay: Any) -> None:
    tc = await relay()
    c = await connect(tc)
    await c.ws.send_bytes(b"\x06" + b"\0" * 70_000)
    msg = await c.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1009


async def test_heartbeat_closes_a_silent_peer(relay: Any) -> None:
    tc = await relay(limits={"heartbeat": 0.2})
    ws = await tc.session.ws_connect(tc.make_url("/ws"), autoping=False)
    types = []
    for _ in range(10):
        msg = await ws.receive(timeout=5)
        types.append(msg.type)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            break
    assert aiohttp.WSMsgType.PING in types
    assert types[-1] in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_graceful_shutdown_finishes_writes_then_1001(relay: Any) -> None:
    tc = await relay()
    c, mb = await writer_for(tc)
    rids = [c.rid() for _ in range(50)]
    for rid in rids:
        await c.send(Post(rid, mb.id, os.urandom(16), envelope()))
    await asyncio.sleep(0)
    shutdown = asyncio.create_task(tc.app.shutdown())
    frames = []
    while True:
        msg = await c.ws.receive(timeout=10)
        if msg.type != aiohttp.WSMsgType.BINARY:
            break
        frames.append(decode_server_frame(msg.data))
    await shutdown
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001
    assert isinstance(frames[-1], Error) and frames[-1].code == ShuttingDown.code
    posted = {f.req_id for f in frames if isinstance(f, Posted)}
    errors = [f for f in frames[:-1] if isinstance(f, Error)]
    # every post that was read got an answer; none vanished without one
    assert errors == [] and posted <= set(rids) and len(posted) >= 1
    n = len(posted)
    assert len(await tc.ctx.storage.fetch(mailbox_key(mb.id), 0, 100)) == n


async def test_slow_consumer_on_the_live_path(relay: Any) -> None:
    """A peer that never reads, offered ~250 MiB of live pushes, costs the relay
    at most half its send queue and is not disconnected: the pushes wait in
    the store until it reads (SPEC §7.6 flow control; formerly SlowConsumer)."""
    tc = await relay(limits={"send_queue_frames": 8, "send_queue_bytes": 1 << 30})
    _writer, mb = await writer_for(tc)
    r = await connect(tc)
    await r.auth_read(mb)
    await r.subscribe(mb)
    conn = await _stall(tc, r, mb)
    for seq in range(4000, 4100):  # more while stalled: not even queued
        tc.ctx.storage.hub.publish(mailbox_key(mb.id), seq, envelope(size=65536))
    assert len(conn.queue) * 2 <= conn.queue.max_frames + 2
    assert not conn.closing
    assert tc.ctx.metrics.values["samizdat_relay_slow_consumers_total"] == 0
