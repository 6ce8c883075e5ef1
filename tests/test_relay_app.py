"""Mailbox protocol behaviour through aiohttp's test client (SQLite backend)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from protocol.padding import ENVELOPE_BUCKETS
from protocol.relay_frames import (
    PROTOCOL_VERSION,
    AccessDenied,
    BadRequest,
    BadSignature,
    BadSize,
    Challenge,
    Error,
    MailboxExists,
    NotAuthorized,
    Ok,
    Post,
    Posted,
    Subscribed,
    TooLarge,
    TooManyMailboxes,
    Unavailable,
    UnknownMailbox,
    Unsubscribe,
)
from relay.app import CONTEXT, create_app
from relay.config import RelayConfig
from tests.relay_support import Client, Mailbox, envelope


def make_config(tmp_path: Path, **kw: Any) -> RelayConfig:
    limits = kw.pop("limits", {})
    cfg = RelayConfig(data_dir=tmp_path, **kw)
    for k, v in limits.items():
        setattr(cfg.limits, k, v)
    return cfg.validate()


@pytest.fixture
async def relay(aiohttp_client: Any, tmp_path: Path) -> Any:
    async def start(**kw: Any) -> Any:
        app = create_app(make_config(tmp_path, **kw))
        tc = await aiohttp_client(app)
        tc.ctx = app[CONTEXT]
        tc.ws_path = f"{app[CONTEXT].config.prefix}/ws"
        return tc

    return start


async def connect(tc: Any) -> Client:
    return await Client.connect(tc.session, tc.make_url(tc.ws_path))


def code(frame: Any) -> int:
    assert isinstance(frame, Error), frame
    return frame.code


async def test_challenge_first(relay: Any) -> None:
    tc = await relay()
    ws = await tc.ws_connect(tc.ws_path)
    msg = await ws.receive(timeout=5)
    c = Client(ws)
    frame = c.proto.receive(msg.data)
    assert isinstance(frame, Challenge)
    assert frame.version == PROTOCOL_VERSION == 2 and len(frame.nonce) == 32
    assert frame.max_envelope_size == 65536
    await ws.close()


async def test_nonce_differs_per_connection(relay: Any) -> None:
    tc = await relay()
    a, b = await connect(tc), await connect(tc)
    assert a.proto.challenge.nonce != b.proto.challenge.nonce


async def test_create_post_subscribe_roundtrip(relay: Any) -> None:
    tc = await relay()
    w, r = await connect(tc), await connect(tc)
    mb = Mailbox()
    assert isinstance(await w.create(mb), Ok)
    assert isinstance(await w.create(mb), Ok)  # identical re-create is idempotent
    assert isinstance(await w.auth_write(mb), Ok)
    first = await w.post(mb, envelope(b"one"))
    assert isinstance(first, Posted) and not first.duplicate
    s1 = first.seq  # the hour's base, not 1 (SPEC §7.7: no lifetime counter)
    assert isinstance(await r.auth_read(mb), Ok)
    sub = await r.subscribe(mb)
    assert isinstance(sub, Subscribed) and sub.head_seq == s1
    await r.wait_delivered(1)
    seqs = [s1]
    for i in range(2, 6):
        p = await w.post(mb, envelope(b"n%d" % i))
        # the next seq, or a later hour's base: increasing, never reused
        assert isinstance(p, Posted) and p.seq > seqs[-1]
        seqs.append(p.seq)
    assert seqs[-1] - s1 == 4 or seqs[-1] >> 32 > s1 >> 32
    got = await r.wait_delivered(5)
    assert [d.seq for d in got] == seqs
    assert got[0].envelope == envelope(b"one") and got[0].mailbox_id == mb.id


async def test_pipelined_posts_past_the_in_flight_cap(relay: Any) -> None:
    """More posts pipelined than MAX_INFLIGHT, one of them malformed: reading
    pauses at the cap and resumes; every post is answered once, the bad one
    with BadSize and nothing stored, the seqs follow arrival order and a reader
    gets every stored one in that order."""
    from relay.connection import MAX_INFLIGHT

    tc = await relay()
    w, r = await connect(tc), await connect(tc)
    mb = Mailbox()
    await w.create(mb)
    await w.auth_write(mb)
    await r.auth_read(mb)
    assert isinstance(await r.subscribe(mb), Subscribed)
    n, bad = 2 * MAX_INFLIGHT + 50, MAX_INFLIGHT + 7
    rids = [w.rid() for _ in range(n)]
    for i, rid in enumerate(rids):
        env = b"x" * 100 if i == bad else envelope(b"%d" % i)  # 100 B is no bucket
        await w.send(Post(rid, mb.id, os.urandom(16), env))
    replies = [await w.reply(rid) for rid in rids]
    assert code(replies[bad]) == BadSize.code
    posted = replies[:bad] + replies[bad + 1 :]
    assert all(isinstance(p, Posted) and not p.duplicate for p in posted)
    seqs = [p.seq for p in posted]  # type: ignore[union-attr]
    assert seqs == sorted(set(seqs))
    got = await r.wait_delivered(n - 1)
    assert [d.seq for d in got] == seqs
    assert [d.envelope for d in got] == [envelope(b"%d" % i) for i in range(n) if i != bad]


async def test_idempotent_post_returns_original_seq(relay: Any) -> None:
    tc = await relay()
    c = await connect(tc)
    mb = Mailbox()
    await c.create(mb)
    await c.auth_write(mb)
    mid = os.urandom(16)
    a = await c.post(mb, envelope(b"x"), mid)
    await c.post(mb, envelope(b"y"))
    b = await c.post(mb, envelope(b"x"), mid)
    assert isinstance(a, Posted) and isinstance(b, Posted)
    assert not a.duplicate and (b.seq, b.duplicate) == (a.seq, True)
    # one-shot signed retries de-duplicate against the same index
    s = await c.post_signed(mb, envelope(b"x"), mid)
    assert isinstance(s, Posted) and (s.seq, s.duplicate) == (a.seq, True)


async def test_backfill_from_seq_and_ack(relay: Any) -> None:
    tc = await relay()
    c = await connect(tc)
    mb = Mailbox()
    await c.create(mb)
    await c.auth_write(mb)
    seqs = []
    for i in range(10):
        posted = await c.post(mb, envelope(b"%d" % i))
        assert isinstance(posted, Posted)
        seqs.append(posted.seq)
    r = await connect(tc)
    await r.auth_read(mb)
    await r.subscribe(mb, from_seq=seqs[6])
    assert [d.seq for d in await r.wait_delivered(4)] == seqs[6:]
    assert isinstance(await r.ack(mb, seqs[7]), Ok)
    r2 = await connect(tc)
    await r2.auth_read(mb)
    sub = await r2.subscribe(mb)
    assert isinstance(sub, Subscribed) and sub.head_seq == seqs[9]
    assert [d.seq for d in await r2.wait_delivered(2)] == seqs[8:]
    # acking past the head, even at 2^64-1, is clamped and harmless
    assert isinstance(await r2.ack(mb, 2**64 - 1), Ok)
    p = await c.post(mb, envelope(b"after"))
    assert isinstance(p, Posted) and p.seq > seqs[9]  # seqs are never reused


async def test_backfill_larger_than_a_page_then_live(relay: Any) -> None:
    tc = await relay()
    c = await connect(tc)
    mb = Mailbox()
    await c.create(mb)
    await c.auth_write(mb)
    for _ in range(600):
        await c.send(
            __import__("protocol.relay_frames").relay_frames.Post(
                c.rid(), mb.id, os.urandom(16), envelope(b"b")
            )
        )
    while len([f for f in c.replies.values() if isinstance(f, Posted)]) < 600:
        f = await c.recv()
        c.replies[f.req_id] = f
    r = await connect(tc)
    await r.auth_read(mb)
    posted = sorted(f.seq for f in c.replies.values() if isinstance(f, Posted))
    await r.subscribe(mb)
    live = await c.post(mb, envelope(b"live"))
    assert isinstance(live, Posted)
    got = await r.wait_delivered(601)
    assert [d.seq for d in got] == [*posted, live.seq]


async def test_unsubscribe_stops_pushes(relay: Any) -> None:
    tc = await relay()
    w, r = await connect(tc), await connect(tc)
    mb = Mailbox()
    await w.create(mb)
    await w.auth_write(mb)
    await r.auth_read(mb)
    await r.subscribe(mb)
    assert isinstance(await r.request(Unsubscribe(r.rid(), mb.id)), Ok)
    await w.post(mb, envelope())
    assert isinstance(await r.ack(mb, 0), Ok)  # a round trip: nothing was pushed before it
    assert r.delivered == []


async def test_refusals(relay: Any) -> None:
    tc = await relay()
    c = await connect(tc)
    mb, other = Mailbox(), Mailbox()
    assert code(await c.auth_read(mb)) == UnknownMailbox.code
    await c.create(mb)
    clash = Mailbox(id=mb.id)
    assert code(await c.create(clash)) == MailboxExists.code
    assert code(await c.post(mb, envelope())) == NotAuthorized.code
    assert code(await c.subscribe(mb)) == NotAuthorized.code
    assert code(await c.ack(mb, 1)) == NotAuthorized.code
    assert code(await c.auth_read(mb, key=mb.write)) == BadSignature.code
    assert code(await c.auth_write(mb, key=mb.read)) == BadSignature.code
    assert code(await c.post_signed(mb, envelope(), key=SigningKey.generate())) == (
        BadSignature.code
    )
    assert code(await c.post_signed(other, envelope())) == UnknownMailbox.code
    await c.auth_write(mb)
    assert code(await c.post(mb, envelope(size=300))) == BadSize.code
    assert code(await c.post(mb, envelope(size=0))) == BadSize.code
    assert code(await c.post(mb, envelope(size=65537))) == TooLarge.code
    assert code(await c.create(Mailbox(), ttl=10**9)) == BadRequest.code
    bad = Mailbox()
    frame = bad.create(c.rid())
    bogus = type(frame)(frame.req_id, bad.id, b"\xff" * 32, frame.write_key)
    assert code(await c.request(bogus)) == BadRequest.code
    assert not c.ws.closed  # non-fatal refusals keep the connection


async def test_every_bucket_size_accepted(relay: Any) -> None:
    tc = await relay()
    c = await connect(tc)
    mb = Mailbox()
    await c.create(mb)
    await c.auth_write(mb)
    for size in ENVELOPE_BUCKETS:
        assert isinstance(await c.post(mb, envelope(size=size)), Posted)


async def test_max_envelope_size_limit(relay: Any) -> None:
    tc = await relay(limits={"max_envelope_size": 1024})
    c = await connect(tc)
    assert c.proto.challenge.max_envelope_size == 1024
    mb = Mailbox()
    await c.create(mb)
    await c.auth_write(mb)
    assert isinstance(await c.post(mb, envelope(size=1024)), Posted)
    assert code(await c.post(mb, envelope(size=2048))) == TooLarge.code


async def test_write_key_rotation(relay: Any) -> None:
    tc = await relay()
    a, b = await connect(tc), await connect(tc)
    mb = Mailbox()
    await a.create(mb)
    await a.auth_write(mb)
    await b.auth_write(mb)
    new = SigningKey.generate()
    assert code(await a.rotate(mb, new, signer=new)) == BadSignature.code
    assert isinstance(await a.rotate(mb, new), Ok)
    # the rotating connection keeps posting; the other one lost its grant
    assert isinstance(await a.post(mb, envelope()), Posted)
    assert code(await b.post(mb, envelope())) == NotAuthorized.code
    assert code(await b.post_signed(mb, envelope())) == BadSignature.code
    old = mb.write
    mb.write = new
    assert isinstance(await b.auth_write(mb), Ok)
    assert isinstance(await b.post_signed(mb, envelope()), Posted)
    assert code(await b.auth_write(mb, key=old)) == BadSignature.code


async def test_access_token_for_create(relay: Any) -> None:
    tc = await relay(access_token="s3cret")
    c = await connect(tc)
    assert code(await c.create(Mailbox())) == AccessDenied.code
    assert code(await c.create(Mailbox(), token=b"wrong")) == AccessDenied.code
    assert isinstance(await c.create(Mailbox(), token=b"s3cret"), Ok)


async def test_mailboxes_per_connection_limit(relay: Any) -> None:
    tc = await relay(limits={"mailboxes_per_connection": 2})
    c = await connect(tc)
    boxes = [Mailbox() for _ in range(3)]
    for mb in boxes:
        await c.create(mb)
    assert isinstance(await c.auth_read(boxes[0]), Ok)
    assert isinstance(await c.auth_write(boxes[0]), Ok)
    assert isinstance(await c.auth_write(boxes[1]), Ok)
    assert code(await c.auth_read(boxes[2])) == TooManyMailboxes.code
    assert isinstance(await c.auth_read(boxes[1]), Ok)  # already counted


async def test_ttl_expiry(relay: Any) -> None:
    tc = await relay()
    c = await connect(tc)
    mb, keep = Mailbox(), Mailbox()
    await c.create(mb, ttl=60)
    # a day: with hour buckets, a one-hour TTL made in the last minute of an
    # hour lands in the same bucket as the 60 s one (the test failed then)
    await c.create(keep, ttl=86400)
    await c.auth_write(mb)
    await c.post(mb, envelope())
    storage = tc.ctx.storage
    import time

    from relay.storage.base import expiry_bucket

    now = int(time.time())
    # stored expiries are rounded up to the hour (SPEC §7.12): the message
    # lives at least its TTL and at most an hour longer
    end = expiry_bucket(now, 60)
    assert await storage.expire(now) == 0
    assert await storage.expire(end - 3600) == 0
    assert await storage.expire(end) == 2  # the message, then the idle mailbox
    assert code(await c.auth_read(mb)) == UnknownMailbox.code
    assert isinstance(await c.auth_read(keep), Ok)


async def test_storage_failure_is_a_typed_unavailable(relay: Any) -> None:
    tc = await relay()
    c = await connect(tc)
    mb = Mailbox()
    await c.create(mb)
    await c.auth_write(mb)
    await tc.ctx.storage.close()
    assert code(await c.post(mb, envelope())) == Unavailable.code
    assert code(await c.create(Mailbox())) == Unavailable.code
    assert not c.ws.closed


async def test_identical_recreate_refreshes_lifetime(relay: Any) -> None:
    import time

    tc = await relay()
    c = await connect(tc)
    mb = Mailbox()
    await c.create(mb, ttl=60)
    now = int(time.time())
    storage = tc.ctx.storage

    def age(db: Any) -> None:  # pretend the mailbox was created long ago
        db.execute("UPDATE mailboxes SET expires=?", (now - 1,))
        storage._mbx.clear()

    await storage._call(age)
    await c.create(mb, ttl=60)
    assert await storage.expire(now + 30) == 0
    assert isinstance(await c.auth_read(mb), Ok)
    await storage._call(age)
    assert await storage.expire(now) == 1  # without the refresh it would have gone
