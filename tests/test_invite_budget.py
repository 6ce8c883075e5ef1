"""An invite link is not a volume key (GitHub issue 11, item 2; SPEC.md §8.5).

Before: once the owner drained an invite's mailbox, its relay quota bounded
nothing, and a censor holding the link pushed hundreds of megabytes through
the owner's client (bench/abuse.py, scenario b).  Now every invite has a junk
budget: the owner counts what its mailboxes deliver that is not a contact
request for that invite, and past the budget revokes the invite (its
mailboxes are deleted on the relays), so the link holder's posts are refused.

Real ``samizdat-relay`` processes and real engines; the censor posts with
the link's write capability over its own relay connection, as a stranger
holding the link would.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from client.engine import Engine
from client.invites import INVITE_JUNK_BUDGET, read_invite_link
from client.relay_client import RelayClient
from protocol.app.envelope import EnvelopeType, split
from protocol.app.sealed import MAX_SEALED_PLAINTEXT, seal, seal_key
from protocol.errors import RemoteError
from protocol.relay_frames import UnknownMailbox
from tests.client_support import RelayProcess, eventually, make_engine

pytestmark = pytest.mark.timeout(180)
BIG = 60_000  # plaintext of a junk "welcome": its sealed envelope takes the 64 KiB bucket


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    proc = RelayProcess(tmp_path / "relay").start()  # the shipped limits
    yield proc
    proc.stop()


@pytest.fixture
async def people(tmp_path: Path, relay: RelayProcess) -> AsyncIterator[dict[str, Engine]]:
    engines = {
        name: make_engine(tmp_path / name, name.capitalize(), [relay.url])
        for name in ("alice", "bob")
    }
    for engine in engines.values():
        await engine.connect()
    yield engines
    for engine in engines.values():
        if not engine.closed:
            await engine.close()


async def _ignore(url: str, mailbox_id: bytes, seq: int, envelope: bytes) -> None:
    return None


async def flood(link: str, *, posts: int, size: int, batch: int = 16) -> dict[str, int]:
    """Post up to ``posts`` sealed junk 'welcomes' of ``size`` plaintext bytes
    with the link's write capability, ``batch`` at a time, pausing a little
    between batches so the owner drains the mailbox (a quota alone would
    stop a flood of a mailbox nobody reads).  Stops once the relay answered
    ``UnknownMailbox`` for a whole batch.  Counters of what the relay took."""
    invite = await read_invite_link(link, int(time.time() * 1000))
    inbox = invite.inboxes[0]
    key = seal_key(inbox.write_seed)
    client = RelayClient(inbox.relay_url, _ignore)
    client.start()
    counts = {"accepted": 0, "accepted_bytes": 0, "unknown_mailbox": 0, "other": 0}
    try:
        sent = 0
        while sent < posts:
            envelopes = []
            for _ in range(min(batch, posts - sent)):
                piece = split(
                    EnvelopeType.WELCOME, os.urandom(size), os.urandom,
                    max_size=MAX_SEALED_PLAINTEXT,
                )[0]  # fmt: skip
                # a large one fills the 64 KiB bucket, a small one takes the smallest
                sealed = seal(key, inbox.mailbox_id, piece, os.urandom, full=size >= BIG)
                envelopes.append(sealed)
            sent += len(envelopes)
            results = await asyncio.gather(
                *(
                    client.post(inbox.mailbox_id, inbox.write_seed, os.urandom(16), e)
                    for e in envelopes
                ),
                return_exceptions=True,
            )
            refused = 0
            for result, envelope in zip(results, envelopes, strict=True):
                if isinstance(result, UnknownMailbox):
                    counts["unknown_mailbox"] += 1
                    refused += 1
                elif isinstance(result, RemoteError | Exception):
                    counts["other"] += 1
                else:
                    counts["accepted"] += 1
                    counts["accepted_bytes"] += len(envelope)
            if refused == len(envelopes):
                break
            await asyncio.sleep(0.2)
    finally:
        await client.close()
    return counts


async def test_invite_flood_volume_is_bounded(people: dict[str, Engine]) -> None:
    """A link holder pushes 64 KiB junk while the owner is online and drains
    it: past the invite's junk budget the owner revokes the invite, the
    relay refuses the link's posts, and what the flooder got through is
    bounded by the budget (plus what was in flight), not by its patience."""
    alice = people["alice"]
    record, link = await alice.create_invite(uses=5)
    posts = 8 * INVITE_JUNK_BUDGET
    counts = await asyncio.wait_for(flood(link, posts=posts, size=BIG), 120)
    # on the old code every post is accepted (the owner drains the mailbox)
    assert counts["unknown_mailbox"] > 0, counts
    assert counts["accepted"] <= 3 * INVITE_JUNK_BUDGET, counts
    await eventually(
        lambda: alice.find_invite(record.invite_id.hex()).state == "revoked",
        timeout=30,
        what="the flooded invite to be revoked",
    )
    assert any("junk" in n.text and n.warning for n in alice.notices), alice.notices
    # and the owner's client stays in use: a contact made through a new invite
    bob = people["bob"]
    conv = await bob.accept(await alice.invite())
    await eventually(lambda: bool(alice.contacts()), timeout=20, what="the new contact")
    alice_conv = alice.contacts()[0].conversation
    await bob.send_text(conv.group_id, "after the flood")
    await eventually(
        lambda: any(e.text == "after the flood" for e in alice.history(alice_conv)),
        timeout=20,
        what="the contact's text",
    )


async def test_small_junk_also_spends_the_budget(people: dict[str, Engine]) -> None:
    """The budget counts items too: a flood of the smallest envelopes ends
    the invite as surely as one of large ones."""
    alice = people["alice"]
    record, link = await alice.create_invite(uses=1)
    counts = await asyncio.wait_for(flood(link, posts=20 * INVITE_JUNK_BUDGET, size=40), 120)
    assert counts["unknown_mailbox"] > 0, counts
    assert counts["accepted"] <= 6 * INVITE_JUNK_BUDGET, counts
    await eventually(
        lambda: alice.find_invite(record.invite_id.hex()).state == "revoked",
        timeout=30,
        what="the flooded invite to be revoked",
    )
