"""An accept's posts (Welcome, profile, KeyPackages) go out concurrently,
each at its own jittered time (SPEC §7.1), and a flush of the outbox that
runs meanwhile (a relay's reconnection starts one) leaves them to their
tasks: each envelope reaches its relay once, in the order it was issued.
Real relays (the two-relay fixture), real engines."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from client.engine import Engine
from client.model import OutboxItem

pytestmark = pytest.mark.timeout(120)


async def test_accept_posts_each_envelope_once_in_order_despite_a_flush(
    trio: list[Engine],
) -> None:
    alice, bob, _ = trio
    link = await alice.invite()
    issued: list[bytes] = []
    posted: list[tuple[str, bytes]] = []
    flushes: list[asyncio.Task[int]] = []

    queue, post_via = bob._queue, bob._post_via

    def spy_queue(items: list[OutboxItem]) -> None:
        issued.extend(i.msg_id + i.mailbox_id for i in items)
        queue(items)

    async def spy_post(item: OutboxItem, write_seed: bytes) -> None:
        posted.append((item.relay_url, item.msg_id + item.mailbox_id))
        if not flushes:  # while the accept's posts are under way
            flushes.append(asyncio.get_running_loop().create_task(bob.flush_outbox()))
        await post_via(item, write_seed)

    bob._queue = spy_queue  # type: ignore[method-assign]
    bob._post_via = spy_post  # type: ignore[method-assign]
    await bob.accept(link)
    assert flushes, "nothing was posted"
    await asyncio.wait_for(flushes[0], 30)
    assert bob.outbox() == []  # the accept waited for its posts

    keys = [key for _, key in posted]
    twice = [k.hex()[:8] for k, n in Counter(keys).items() if n > 1]
    assert not twice, f"posted more than once: {twice}"
    assert set(keys) == set(issued)
    for url in {u for u, _ in posted}:
        on_relay = [key for u, key in posted if u == url]
        assert on_relay == [k for k in issued if k in set(on_relay)], f"out of order on {url}"
