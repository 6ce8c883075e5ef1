"""Many isolated sessions behind one address (issue 15 item 1, SPEC.md §7.10).

Clients open one connection per mailbox they read and short-lived ones to
post (SPEC.md §7.1 "Connection roles"), and many users share one address
(a Tor exit, a carrier NAT).  The attack: a relay with its default limits
must admit them all (per-address caps high, per-connection work budgets),
while the quota that protects a mailbox goes with the mailbox (its
capability), not with whoever shares the flooder's address.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from protocol.relay_frames import Posted, RateLimited
from relay.app import CONTEXT, create_app
from tests.relay_support import Client, Mailbox, envelope
from tests.test_relay_app import code, make_config

pytestmark = pytest.mark.timeout(120)

USERS = 30
SESSIONS = 12  # per user: readers and posters (client.sessions.SessionPolicy bounds)


@pytest.fixture
async def relay(aiohttp_client: Any, tmp_path: Path) -> Any:
    async def start(**kw: Any) -> Any:
        app = create_app(make_config(tmp_path, **kw))
        tc = await aiohttp_client(app)
        tc.ctx = app[CONTEXT]
        return tc

    return start


async def _session(
    tc: Any, mb: Mailbox, http: aiohttp.ClientSession | None = None
) -> tuple[Client, bool]:
    """One isolated session: connect, create its mailbox, prove a key, post once."""
    c = await Client.connect(http or tc.session, tc.make_url("/ws"))
    await c.create(mb)
    await c.auth_write(mb)
    return c, isinstance(await c.post(mb, envelope()), Posted)


async def test_one_address_holds_many_users_isolated_sessions(relay: Any) -> None:
    """360 connections from 127.0.0.1, opened 60 at a time, each doing work:
    the defaults admit every one (before: 256 per address, 100 opened in a
    burst, and one frame budget shared by everyone behind the address)."""
    tc = await relay()
    clients: list[Client] = []
    refused = 0
    # no client-side cap on connections (aiohttp's default is 100)
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    try:
        for _ in range(USERS * SESSIONS // 60):
            done = await asyncio.gather(
                *(asyncio.wait_for(_session(tc, Mailbox(), http), 15) for _ in range(60)),
                return_exceptions=True,
            )
            for result in done:
                if isinstance(result, BaseException):
                    refused += 1
                else:
                    clients.append(result[0])
                    refused += not result[1]
        assert refused == 0, f"{refused} of {USERS * SESSIONS} sessions refused behind one address"
        assert len(tc.ctx.connections) == USERS * SESSIONS
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await http.close()


async def test_a_mailbox_flood_is_limited_by_its_capability_not_the_address(
    relay: Any,
) -> None:
    """A writer flooding one mailbox over fresh connections hits that
    mailbox's post quota; another user's mailbox, same address, is unharmed."""
    tc = await relay(limits={"mailbox_post_rate": 0.001, "mailbox_post_burst": 5})
    flooded, other = Mailbox(), Mailbox()
    clients = []
    try:
        results = []
        for _ in range(8):  # a new connection per post: per-connection budgets do not help
            c, ok = await _session(tc, flooded)
            clients.append(c)
            results.append(ok)
        assert results[:4] == [True] * 4 and not any(results[5:])
        last = await clients[-1].post(flooded, envelope())
        assert code(last) == RateLimited.code
        c, ok = await _session(tc, other)
        clients.append(c)
        assert ok, "a mailbox's quota limited another mailbox behind the same address"
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
