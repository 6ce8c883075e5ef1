"""Nothing shared across relays (issue 15 item 3, SPEC.md §7.1, §8.7).

The attack: two relays of one conversation collude (or are compelled by the
same authority) and compare what they hold and what they were sent, to link
their mailboxes as one group.  After a group exchange and a file, on two real
relay processes: no ``msg_id`` was posted to both, no envelope is stored on
both, and no 64-byte block of attachment data is the same on both.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from client.engine import Engine
from client.relay_client import RelayClient
from protocol.app import attachments
from protocol.app.messages import File
from tests.client_support import RelayProcess, befriend, eventually

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def posted(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[bytes]]:
    """Every msg_id each relay was sent in a Post: what its process sees."""
    seen: dict[str, list[bytes]] = {}
    original = RelayClient.post

    async def spy(
        self: RelayClient, mailbox_id: bytes, write_seed: bytes, msg_id: bytes, envelope: bytes
    ) -> int:
        seen.setdefault(self.url, []).append(msg_id)
        return await original(self, mailbox_id, write_seed, msg_id, envelope)

    monkeypatch.setattr(RelayClient, "post", spy)
    return seen


def _blocks(relay: RelayProcess) -> set[bytes]:
    """Every 64-byte block of every stored blob chunk on ``relay``."""
    out: set[bytes] = set()
    for path in (relay.data_dir / "blobs").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            out.update(data[i : i + 64] for i in range(0, len(data) - 63, 64))
    return out


def _envelopes(relay: RelayProcess) -> set[bytes]:
    db = sqlite3.connect(f"file:{relay.data_dir / 'relay.sqlite3'}?mode=ro", uri=True)
    try:
        return {bytes(row[0]) for row in db.execute("SELECT envelope FROM messages")}
    finally:
        db.close()


async def test_two_relays_share_no_id_envelope_or_chunk(
    trio: list[Engine], relays: list[RelayProcess], posted: dict[str, list[bytes]], tmp_path: Path
) -> None:
    alice, bob, carol = trio
    await befriend(alice, bob)
    await befriend(alice, carol)
    group = await alice.create_group("colluders beware")
    await alice.add_members(
        group.group_id, [alice.find_contact("Bob"), alice.find_contact("Carol")]
    )
    for e in (bob, carol):
        await eventually(lambda e=e: any(c.name == "colluders beware" for c in e.conversations()))
    for e in trio:
        gid = e.find_conversation("colluders beware").group_id
        await e.send_text(gid, f"hello from {e.identity.name}")
    photo = tmp_path / "photo.bin"
    photo.write_bytes(os.urandom(2 * attachments.CHUNK_PLAINTEXT_SIZE + 1000))  # 3 chunks
    await alice.send_file(group.group_id, photo)
    for e in (bob, carol):
        gid = e.find_conversation("colluders beware").group_id
        await eventually(
            lambda e=e, gid=gid: any(h.kind == "file" for h in e.history(gid)),
            what=f"{e.identity.name} gets the file",
        )
        entry = next(h for h in e.history(gid) if h.kind == "file")
        body = File.from_bytes(bytes.fromhex(entry.file["descriptor"]))
        assert len({c.relay_url for c in body.chunks[0].copies}) == 2  # a copy on each relay
        dest = tmp_path / f"{e.identity.name}.bin"
        await e.fetch_file(gid, body, dest)
        assert dest.read_bytes() == photo.read_bytes()

    # what each relay was sent and holds
    a, b = (r.url for r in relays)
    assert posted.get(a) and posted.get(b)
    assert set(posted[a]).isdisjoint(posted[b]), "the same msg_id went to both relays"
    env_a, env_b = _envelopes(relays[0]), _envelopes(relays[1])
    assert env_a and env_b and env_a.isdisjoint(env_b)
    blocks_a, blocks_b = _blocks(relays[0]), _blocks(relays[1])
    assert len(blocks_a) >= 3 * 4096 and len(blocks_b) >= 3 * 4096  # three chunks each
    assert blocks_a.isdisjoint(blocks_b), "attachment bytes are the same on both relays"


def test_copies_differ_per_relay_and_decrypt_to_the_file() -> None:
    enc = attachments.encrypt_file(b"x" * 1000, os.urandom)
    one = attachments.copy_chunks(enc.key, "https://a.example/p", enc.chunks)
    two = attachments.copy_chunks(enc.key, "https://b.example/p", enc.chunks)
    assert one[0] != two[0] and one[0] != enc.chunks[0]
    back = attachments.copy_chunks(enc.key, "https://b.example/p", two)
    assert attachments.decrypt_file(enc.key, back, enc.size, enc.ciphertext_digest) == b"x" * 1000
