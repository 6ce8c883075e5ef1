"""Session isolation (issue 15 item 1, SPEC.md §2 and §7.1 "Connection roles").

The attack: a relay operator compelled to log what the relay process already
holds in memory: which connection proved which mailbox's read key, and which
connection posted to which mailbox.  Two real relay processes log exactly
that (``debug_log``, enabled only here), three real engines form a group
through a local SOCKS5 proxy, everyone posts, and the logs are read back:

* no connection may read two mailboxes (else the relay links them: a
  user's inbox to their conversations, i.e. the contact graph);
* no post may arrive on a connection that proved a read key (else the post
  is attributed to that reader);
* every connection through the proxy uses its own SOCKS5 credentials, so
  Tor's ``IsolateSOCKSAuth`` gives each its own circuit (exit address).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from client.engine import Engine
from tests.client_support import RelayProcess, befriend, eventually
from tests.test_privacy_proxy import Socks5

pytestmark = pytest.mark.timeout(300)

NAMES = ("relay-a.only-via-proxy.test", "relay-b.only-via-proxy.test")
# the relay's debug log: "auth-read of MAILBOX on connection N", "post to MAILBOX on connection N"
_LINE = re.compile(r"(auth-read|auth-write|post) (?:of|to) ([0-9a-f]{64}) on connection (\d+)")


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[list[RelayProcess]]:
    procs = [
        RelayProcess(tmp_path / f"relay{i}", settings={"debug_log": True}).start() for i in range(2)
    ]
    yield procs
    for p in procs:
        p.stop()


@pytest.fixture
async def proxy(relays: list[RelayProcess]) -> AsyncIterator[Socks5]:
    server = await Socks5({n: r.port for n, r in zip(NAMES, relays, strict=True)}).start()
    yield server
    await server.close()


def what_the_relay_saw(relay: RelayProcess) -> tuple[dict[int, set[str]], list[tuple[int, str]]]:
    """Per connection the mailboxes it proved a read key for; every post (connection, mailbox)."""
    reads: dict[int, set[str]] = defaultdict(set)
    posts: list[tuple[int, str]] = []
    for match in _LINE.finditer(relay.log_path.read_text(errors="replace")):
        kind, mailbox, conn = match[1], match[2], int(match[3])
        if kind == "auth-read":
            reads[conn].add(mailbox)
        elif kind == "post":
            posts.append((conn, mailbox))
    return reads, posts


def _texts(engine: Engine, conv: bytes) -> list[str]:
    return [e.text for e in engine.history(conv) if e.kind == "text"]


async def test_a_compelled_relay_links_no_mailboxes_and_attributes_no_post(
    tmp_path: Path, relays: list[RelayProcess], proxy: Socks5
) -> None:
    urls = [f"http://{n}:{r.port}" for n, r in zip(NAMES, relays, strict=True)]
    engines = [
        Engine.create(tmp_path / n, b"pw", n.capitalize(), urls, proxy=proxy.url, fast_kdf=True)
        for n in ("alice", "bob", "carol")
    ]
    alice, bob, carol = engines
    try:
        for e in engines:
            await e.connect()
        await befriend(alice, bob)
        await befriend(alice, carol)
        group = await alice.create_group("crew")
        await alice.add_members(
            group.group_id, [alice.find_contact("Bob"), alice.find_contact("Carol")]
        )
        for e in (bob, carol):
            await eventually(lambda e=e: any(c.name == "crew" for c in e.conversations()))
        gids = [e.find_conversation("crew").group_id for e in engines]
        for e, gid in zip(engines, gids, strict=True):
            await e.send_text(gid, f"hello from {e.identity.name}")
        for e, gid in zip(engines, gids, strict=True):
            await eventually(
                lambda e=e, gid=gid: len(_texts(e, gid)) == 3, 60, f"{e.identity.name} reads 3"
            )
    finally:
        for e in engines:
            await e.close()

    linked = attributed = total_posts = 0
    widest = 0
    for relay in relays:
        reads, posts = what_the_relay_saw(relay)
        assert reads, "the relay's debug log shows no reads: the test sees nothing"
        linked += sum(1 for boxes in reads.values() if len(boxes) > 1)
        widest = max(widest, *(len(boxes) for boxes in reads.values()))
        attributed += sum(1 for conn, _ in posts if conn in reads)
        total_posts += len(posts)
    auths = proxy.auths
    seen = (
        f"{linked} connection(s) read several mailboxes (up to {widest} on one); "
        f"{attributed} of {total_posts} posts came on a reader's connection; "
        f"{len(set(auths))} SOCKS5 credentials for {len(auths)} connections"
    )
    assert total_posts >= 6, "the group's posts did not reach the relays"
    assert linked == 0 and attributed == 0, seen
    # one SOCKS5 username/password per connection: one Tor circuit each
    assert auths and None not in auths, seen
    assert len(set(auths)) == len(auths), seen
