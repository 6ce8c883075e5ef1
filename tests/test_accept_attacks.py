"""Attacks on links ``accept`` keeps while their relay is down (SPEC.md
§8.5) and on an accept's posts going out together (SPEC.md §7.1): a censor
holding or crafting invite links, and other sends of the same engine while
an accept's batch is open.  Real relay processes, in-process engines with
the CLI's fail-fast timeouts."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from client.cli.common import CLI_CONNECT_TIMEOUT, CLI_REQUEST_TIMEOUT
from client.core import rng
from client.engine import NS_ACCEPTS, AcceptQueued, Engine, EngineError
from protocol.app.invite import Invite, invite_blob_keys, short_invite_link
from tests.client_support import RelayProcess, make_engine

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("damage", ["undecodable", "bad signature"])
async def test_a_kept_link_to_a_crafted_invite_is_dropped_not_kept_forever(
    tmp_path: Path, damage: str
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
        # undecodable, or: decodes, its leaf is the censor's, its signature
        # is wrong (RFC 9420 §10.1)
        kp = invite.key_package
        kp = b"\x00not a KeyPackage" if damage == "undecodable" else kp[:-1] + bytes([kp[-1] ^ 1])
        bad = Invite.create(
            invite.inboxes, censor.identity.signature_priv, kp, invite.expires_at_ms
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


async def _censor_links(tmp_path: Path, n: int) -> tuple[RelayProcess, Engine, list[str]]:
    """``n`` links naming the censor's relay, each with an invite mailbox
    that exists but is empty: the relay answers, and never delivers."""
    relay = RelayProcess(tmp_path / "relay").start()
    censor = make_engine(tmp_path / "censor", "Censor", [relay.url])
    await censor.connect()
    links = []
    for _ in range(n):
        secret = rng(16)
        keys = invite_blob_keys(secret)
        await censor._relay(relay.url).create_mailbox(keys.mailbox_id, keys.read_seed, rng(32))
        links.append(short_invite_link(secret, relay.url))
    await censor.close()
    return relay, censor, links


async def test_many_kept_links_to_a_silent_relay_do_not_add_up_in_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The censor hands over links whose relay answers but never delivers
    (each read waits INVITE_FETCH_ATTEMPTS x INVITE_FETCH_TIMEOUT).  Kept
    while the relay was down, they must not make every later sync wait that
    long once per link: read one after another, 4 links cost 4 times."""
    monkeypatch.setattr("client.invites.INVITE_FETCH_TIMEOUT", 2.0)
    relay, _, links = await _censor_links(tmp_path, 4)
    bob = make_engine(tmp_path / "bob", "Bob", [relay.url])
    bob.relay_timeouts = (CLI_CONNECT_TIMEOUT, CLI_REQUEST_TIMEOUT)
    try:
        relay.stop()
        for link in links:
            with pytest.raises(AcceptQueued):
                await bob.accept(link)
        relay = RelayProcess(relay.data_dir, port=relay.port).start()
        started = time.monotonic()
        assert await bob.accept_queued() == []
        took = time.monotonic() - started
        # one read: 4 attempts x 2 s; the 4 links one after another: 32 s
        assert took < 20, f"the kept links cost {took:.0f} s, one after another"
        assert sorted(bob.queued_accepts()) == sorted(links)
    finally:
        if not bob.closed:
            await bob.close()
        relay.stop()


async def test_a_kept_link_is_given_up_after_an_invite_lifetime(tmp_path: Path) -> None:
    """A link whose relay never serves it (down for good, or a censor's)
    is not kept forever: that would make every 'sync' exit 3 forever."""
    relay, _, links = await _censor_links(tmp_path, 1)
    bob = make_engine(tmp_path / "bob", "Bob", [relay.url])
    bob.relay_timeouts = (CLI_CONNECT_TIMEOUT, CLI_REQUEST_TIMEOUT)
    try:
        relay.stop()
        with pytest.raises(AcceptQueued):
            await bob.accept(links[0])
        [(key, raw)] = bob.store.items(NS_ACCEPTS)
        record = json.loads(raw)
        record["queued_ms"] -= 31 * 24 * 3600 * 1000
        bob.store.put(NS_ACCEPTS, key, json.dumps(record).encode())
        settled = await bob.accept_queued()
        assert bob.queued_accepts() == [], "kept forever"
        assert len(settled) == 1 and any(n.warning for n in bob.notices), settled
    finally:
        if not bob.closed:
            await bob.close()
        relay.stop()


async def test_kept_links_are_bounded_in_number_and_size(tmp_path: Path) -> None:
    """Links are kept only up to a bound (each costs every sync a read),
    and a huge link is refused rather than kept."""
    relay = RelayProcess(tmp_path / "relay").start()
    url = relay.url
    relay.stop()
    bob = make_engine(tmp_path / "bob", "Bob", [url])
    bob.relay_timeouts = (CLI_CONNECT_TIMEOUT, CLI_REQUEST_TIMEOUT)
    try:
        huge = short_invite_link(rng(16), url) + "/" + "x" * 100_000
        with pytest.raises(EngineError) as info:
            await bob.accept(huge)
        assert not isinstance(info.value, AcceptQueued)
        assert bob.queued_accepts() == []
        # links whose relay URL can never be reached are refused, not kept
        secret = short_invite_link(rng(16), url).split("/")[1]
        for where in [
            "http://[::1",
            "http://127.0.0.1:99999",
            "ftp://x",
            "http://%00",
            "\u202ehttp://x",
        ]:
            with pytest.raises(EngineError) as info:
                await bob.accept(f"samizdat:i/{secret}/{where}")
            assert not isinstance(info.value, AcceptQueued), where
        assert bob.queued_accepts() == []
        refused = 0
        for _ in range(40):
            try:
                await bob.accept(short_invite_link(rng(16), url))
            except AcceptQueued:
                continue
            except EngineError:
                refused += 1
        assert refused, "any number of links is kept"
        assert len(bob.queued_accepts()) <= 40 - refused
    finally:
        if not bob.closed:
            await bob.close()


async def test_a_kept_link_accepted_again_while_the_retry_runs_makes_one_contact(
    tmp_path: Path,
) -> None:
    """The app's timer retries a kept link while the user, impatient,
    accepts the same link again: one conversation, one contact request
    (two would use up two of the invite's uses and send two Welcomes)."""
    relay = RelayProcess(tmp_path / "relay").start()
    alice = make_engine(tmp_path / "alice", "Alice", [relay.url])
    bob = make_engine(tmp_path / "bob", "Bob", [relay.url])
    bob.relay_timeouts = (CLI_CONNECT_TIMEOUT, CLI_REQUEST_TIMEOUT)
    try:
        await alice.connect()
        _, link = await alice.create_invite(uses=5)
        await alice.close()
        relay.stop()
        with pytest.raises(AcceptQueued):
            await bob.accept(link)
        relay = RelayProcess(relay.data_dir, port=relay.port).start()

        results = await asyncio.gather(
            bob.accept_queued(), bob.accept(link), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, EngineError):
                raise result
        assert len(bob.conversations()) == 1, "one link accepted twice at once"
        assert len(bob.contacts()) == 1
        assert bob.queued_accepts() == []
    finally:
        for engine in (alice, bob):
            if not engine.closed:
                await engine.close()
        relay.stop()


async def test_a_kept_link_to_a_silent_relay_does_not_hold_up_reading_mail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync with a kept link whose relay answers but never delivers must
    read the user's mailboxes at once, not after that read gives up (a sync
    cut short by a caller's time limit would then never read mail)."""
    monkeypatch.setattr("client.invites.INVITE_FETCH_TIMEOUT", 5.0)  # 4 x 5 s
    censor_relay, _, links = await _censor_links(tmp_path / "censor", 1)
    own = RelayProcess(tmp_path / "own").start()
    bob = make_engine(tmp_path / "bob", "Bob", [own.url])
    bob.relay_timeouts = (CLI_CONNECT_TIMEOUT, CLI_REQUEST_TIMEOUT)
    try:
        censor_relay.stop()
        with pytest.raises(AcceptQueued):
            await bob.accept(links[0])
        censor_relay = RelayProcess(censor_relay.data_dir, port=censor_relay.port).start()
        await bob.connect()
        loop = asyncio.get_running_loop()
        read_at: list[float] = []
        for relay in bob.relays.values():
            catch_up = relay.catch_up

            async def spy(limit: float, catch_up=catch_up) -> None:  # type: ignore[no-untyped-def]
                read_at.append(loop.time())
                await catch_up(limit)

            relay.catch_up = spy  # type: ignore[method-assign]
        started = loop.time()
        await bob.sync(wait=0)
        assert read_at, "no mailbox was read"
        assert read_at[0] - started < 10, (
            f"mail read {read_at[0] - started:.0f} s into the sync, after the kept link"
        )
        assert bob.queued_accepts() == links
    finally:
        if not bob.closed:
            await bob.close()
        censor_relay.stop()
        own.stop()
