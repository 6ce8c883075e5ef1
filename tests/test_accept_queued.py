"""Links ``accept`` kept while their relay was down (SPEC.md §8.5): a kept
link whose invite was revoked meanwhile is dropped with a notice, creates
nothing and is never retried; one whose relay is still down stays kept.
Real relay process, in-process engines with the CLI's fail-fast timeouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.cli.common import CLI_CONNECT_TIMEOUT, CLI_REQUEST_TIMEOUT
from client.engine import AcceptQueued, Engine
from tests.client_support import RelayProcess, make_engine

pytestmark = pytest.mark.timeout(120)


async def test_a_kept_link_revoked_meanwhile_is_dropped_with_a_notice(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "relay").start()
    alice = make_engine(tmp_path / "alice", "Alice", [relay.url])
    bob = make_engine(tmp_path / "bob", "Bob", [relay.url])
    bob.relay_timeouts = (CLI_CONNECT_TIMEOUT, CLI_REQUEST_TIMEOUT)
    try:
        await alice.connect()
        record, link = await alice.create_invite()
        await alice.close()
        relay.stop()

        with pytest.raises(AcceptQueued):
            await bob.accept(link)
        with pytest.raises(AcceptQueued):  # again: still one kept link
            await bob.accept(link)
        assert bob.queued_accepts() == [link]
        assert await bob.accept_queued() == []  # the relay is still down: kept
        assert bob.queued_accepts() == [link]

        relay = RelayProcess(relay.data_dir, port=relay.port).start()
        alice = Engine.open(tmp_path / "alice", b"test passphrase")
        await alice.connect()
        await alice.revoke_invite(record.invite_id.hex())

        settled = await bob.accept_queued()
        assert len(settled) == 1 and "no longer valid" in settled[0], settled
        assert bob.queued_accepts() == []
        assert bob.contacts() == [] and bob.conversations() == []
        assert any("no longer valid" in n.text and n.warning for n in bob.notices)
        assert await bob.accept_queued() == []
    finally:
        for engine in (alice, bob):
            if not engine.closed:
                await engine.close()
        relay.stop()
