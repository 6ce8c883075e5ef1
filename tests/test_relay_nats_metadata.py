"""The JetStream backend's mailbox-metadata cache: a post is authorized by
metadata at most ``INFO_TTL`` seconds staler than the KV, however long a busy
mailbox's entry lives in the cache thanks to the bucket watch (relay/storage/
nats.py, "Metadata"), and a KV read that raced a change is never cached."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from protocol.relay_frames import NotAuthorized, Ok, Posted, UnknownMailbox
from relay.storage import nats as nats_storage
from relay.storage.base import dedup_key, mailbox_key
from tests import nats_fixtures
from tests.nats_fixtures import NatsServer
from tests.relay_support import Mailbox, envelope
from tests.test_relay_app import code
from tests.test_relay_nats import connect, start_relay

nats_server = nats_fixtures.nats_server

# generous for a loaded 2-core machine; a cache entry confirmed by the watch
# lives INFO_MAX_AGE (30 s), so a missed change would outlast this
SLACK = 8.0


async def wait_confirmed(storage: Any) -> None:
    for _ in range(200):
        if storage._max_age(time.monotonic()) == nats_storage.INFO_MAX_AGE:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the metadata watch was never confirmed")


async def refused_within(c: Any, mb: Mailbox, refusal: int, bound: float) -> float:
    """Post through ``c`` until refused with ``refusal``; seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < bound:
        f = await c.post(mb, envelope())
        if not isinstance(f, Posted):
            assert code(f) == refusal, f
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    raise AssertionError(f"still accepted {bound} s after the change")


@pytest.mark.parametrize("watch", ["healthy", "lost"])
async def test_change_through_another_relay_takes_effect_within_info_ttl(
    aiohttp_client: Any, tmp_path: Path, nats_server: NatsServer, watch: str
) -> None:
    a = await start_relay(aiohttp_client, tmp_path, nats_server.url, "a")
    b = await start_relay(aiohttp_client, tmp_path, nats_server.url, "b")
    storage = a.ctx.storage
    rotated, deleted = Mailbox(), Mailbox()
    ca, cb = await connect(a), await connect(b)
    for mb in (rotated, deleted):
        assert isinstance(await ca.create(mb), Ok)
        await ca.auth_write(mb)
        await cb.auth_write(mb)
        assert isinstance(await ca.post(mb, envelope()), Posted)  # cached on a
    await wait_confirmed(storage)
    if watch == "lost":
        # the watch dies silently: no confirmation can follow the change, so
        # the plain INFO_TTL applies again
        await storage._watch_sub.unsubscribe()
    assert isinstance(await cb.rotate(rotated, SigningKey.generate()), Ok)
    assert isinstance(await cb.request(_delete(cb, deleted)), Ok)
    bound = nats_storage.INFO_TTL + SLACK
    await refused_within(ca, rotated, NotAuthorized.code, bound)
    await refused_within(ca, deleted, UnknownMailbox.code, bound)


def _delete(c: Any, mb: Mailbox) -> Any:
    from protocol.relay_frames import DeleteMailbox

    sig = mb.read.sign(c.proto.auth_payload("delete-mailbox", mb.id)).signature
    return DeleteMailbox(c.rid(), mb.id, sig)


@pytest.mark.parametrize("reader", ["post", "refresh"])
async def test_kv_read_racing_a_rotation_is_not_cached(
    aiohttp_client: Any, tmp_path: Path, nats_server: NatsServer, reader: str
) -> None:
    """Attack: a KV read sent before a rotation through this very relay and
    answered after it must not be cached, else the old write key keeps
    posting for up to the cache's lifetime."""
    a = await start_relay(aiohttp_client, tmp_path, nats_server.url, "a")
    storage = a.ctx.storage
    mb = Mailbox()
    c = await connect(a)
    assert isinstance(await c.create(mb), Ok)
    key = mailbox_key(mb.id)
    old = bytes(mb.write.verify_key)
    # the watch delivers the create (dropping the key from the cache) first
    last = (await storage._js.stream_info(f"KV_{nats_storage.MBX_BUCKET}")).state.last_seq
    for _ in range(200):
        if storage._kv_seen >= last:
            break
        await asyncio.sleep(0.05)
    await storage.post(key, dedup_key(mb.id, os.urandom(16)), envelope(), int(time.time()), old)
    kv, real_get = storage._kv, storage._kv.get
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_get(k: str) -> Any:
        entry = await real_get(k)  # the old metadata
        if not entered.is_set():
            entered.set()
            await release.wait()
        return entry

    kv.get = slow_get
    try:
        if reader == "post":
            stale = asyncio.ensure_future(storage._info(key, fresh=True))
        else:
            # the cached entry is due for its background re-read
            when, info = storage._cache[key]
            storage._cache[key] = (when - nats_storage.INFO_MAX_AGE, info)
            storage._to_refresh.add(key)
            stale = asyncio.ensure_future(storage._refresh_loop())
        await asyncio.wait_for(entered.wait(), 10)
        await storage.rotate_write_key(key, bytes(SigningKey.generate().verify_key))
        release.set()
        await asyncio.wait_for(stale, 10)
    finally:
        kv.get = real_get
    with pytest.raises(NotAuthorized):
        await storage.post(key, dedup_key(mb.id, os.urandom(16)), envelope(), int(time.time()), old)
