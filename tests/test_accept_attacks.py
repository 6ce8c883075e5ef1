"""Attacks on links ``accept`` keeps while their relay is down (SPEC.md
§8.5) and on an accept's posts going out together (SPEC.md §7.1): a censor
holding or crafting invite links, and other sends of the same engine while
an accept's batch is open.  Real relay processes, in-process engines with
the CLI's fail-fast timeouts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from client.cli.common import CLI_CONNECT_TIMEOUT, CLI_REQUEST_TIMEOUT
from client.engine import AcceptQueued, Engine
from protocol.app.invite import Invite
from tests.client_support import RelayProcess, make_engine

pytestmark = pytest.mark.timeout(120)


async def test_a_kept_link_to_a_crafted_invite_is_dropped_not_kept_forever(
    tmp_path: Path,
) -> None:
    """The censor's link first names a relay that is down, then serves a
    signed invite whose KeyPackage does not decode.  The retry must drop it
    with a notice: kept, it would be fetched again by every later 'sync',
    which would exit 3 ("still waiting") forever."""
    relay = RelayProcess(tmp_path / "relay").start()
    censor = make_engine(tmp_path / "censor", "Censor", [relay.url])
    bob = make_engine(tmp_path / "bob", "Bob", [relay.url])
    bob.relay_timeouts = (CLI_CONNECT_TIMEOUT, CLI_REQUEST_TIMEOUT)
    store_blob = censor._store_invite_blob

    async def crafted(record, invite, made, ttl_s):  # type: ignore[no-untyped-def]
        bad = Invite.create(
            invite.inboxes,
            censor.identity.signature_priv,
            b"\x00not a KeyPackage",
            invite.expires_at_ms,
        )
        return await store_blob(record, bad, made, ttl_s)

    censor._store_invite_blob = crafted  # type: ignore[method-assign]
    try:
        await censor.connect()
        _, link = await censor.create_invite()
        await censor.close()
        relay.stop()
        with pytest.raises(AcceptQueued):
            await bob.accept(link)
        relay = RelayProcess(relay.data_dir, port=relay.port).start()

        settled = await bob.accept_queued()
        assert len(settled) == 1, settled
        assert bob.queued_accepts() == [], "a crafted invite stays kept forever"
        assert bob.contacts() == [] and bob.conversations() == []
        assert any(n.warning and "could not be accepted" in n.text for n in bob.notices)
    finally:
        for engine in (censor, bob):
            if not engine.closed:
                await engine.close()
        relay.stop()


async def test_a_send_while_an_accept_posts_together_still_waits_for_its_posts(
    trio: list[Engine],
) -> None:
    """An accept's batch is open in one task (the app accepting a link);
    the user sends a message meanwhile from another.  That send must wait
    for its own posts as any send does (up to its 3 s), not hand them to the
    accept's batch and return with them unposted."""
    _, bob, _ = trio
    conv = await bob.create_group("notes")
    release, opened = asyncio.Event(), asyncio.Event()

    async def accepting() -> None:
        async with bob._posting_together():
            opened.set()
            await release.wait()

    holder = asyncio.get_running_loop().create_task(accepting())
    try:
        await asyncio.wait_for(opened.wait(), 30)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await bob.send_text(conv.group_id, "sent while an accept posts")
        waited = loop.time() - started
        pending = [i for i in bob.outbox() if i.conversation == conv.group_id]
        assert not pending or waited >= 2.5, (
            f"send returned after {waited:.2f} s with {len(pending)} post(s) not made"
        )
    finally:
        release.set()
        await asyncio.wait_for(holder, 30)
