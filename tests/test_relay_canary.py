"""The relay adds no plaintext metadata of its own to what it stores.

Traffic carries canary strings in the envelope (the ciphertext slot), and the
relay also sees a mailbox id, client message ids and the client's address.
Afterwards the SQLite file (with its WAL) and the NATS store directory must
hold none of: the mailbox id (raw or hex), any client message id (raw or
hex), or an IP address string.  The envelope canary itself *is* stored (the
relay stores what clients send; clients encrypt), which the test checks too,
so a scan that finds nothing is known to be a scan that works.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from protocol.padding import pad
from relay.app import CONTEXT, create_app
from tests import nats_fixtures
from tests.nats_fixtures import NatsServer, store_files
from tests.relay_support import Client, Mailbox
from tests.test_relay_app import make_config

CANARY = b"CANARY-7f3a-in-the-ciphertext-slot"

nats_server = nats_fixtures.nats_server
nats_cluster = nats_fixtures.nats_cluster


def forbidden(mb: Mailbox, msg_ids: list[bytes]) -> dict[str, bytes]:
    out = {
        "mailbox raw": mb.id,
        "mailbox hex": mb.id.hex().encode(),
        "mailbox HEX": mb.id.hex().upper().encode(),
        "ip": b"127.0.0.1",
    }
    for i, m in enumerate(msg_ids):
        out[f"msg_id {i} raw"] = m
        out[f"msg_id {i} hex"] = m.hex().encode()
    return out


async def traffic(tc: Any) -> tuple[Mailbox, list[bytes]]:
    c = await Client.connect(tc.session, tc.make_url("/ws"))
    mb = Mailbox()
    await c.create(mb)
    await c.auth_write(mb)
    ids = [os.urandom(16) for _ in range(20)]
    for i, mid in enumerate(ids):
        await c.post(mb, pad(CANARY + b" %d" % i), mid)
    r = await Client.connect(tc.session, tc.make_url("/ws"))
    await r.auth_read(mb)
    await r.subscribe(mb)
    delivered = await r.wait_delivered(20)
    await r.ack(mb, delivered[0].seq)  # seqs start from the hour's base (SPEC §7.7)
    await c.close()
    await r.close()
    return mb, ids


def scan(files: list[Path], needles: dict[str, bytes]) -> tuple[dict[str, list[str]], bool]:
    found: dict[str, list[str]] = {}
    canary_seen = False
    for f in files:
        data = f.read_bytes()
        canary_seen |= CANARY in data
        for name, needle in needles.items():
            if needle in data:
                found.setdefault(name, []).append(f.name)
    return found, canary_seen


async def test_sqlite_store_holds_no_relay_metadata(aiohttp_client: Any, tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path))
    tc = await aiohttp_client(app)
    mb, ids = await traffic(tc)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.startswith("relay.sqlite3") for p in files)
    found, canary_seen = scan(files, forbidden(mb, ids))
    assert canary_seen  # the scan does see stored envelopes
    assert found == {}
    assert app[CONTEXT].config.debug_log is False


async def test_nats_store_holds_no_relay_metadata(
    aiohttp_client: Any, tmp_path: Path, nats_server: NatsServer
) -> None:
    app = create_app(make_config(tmp_path / "relay", backend="nats", nats_url=nats_server.url))
    tc = await aiohttp_client(app)
    mb, ids = await traffic(tc)
    await tc.close()  # flush the relay's connection before reading the store
    files = list(store_files(nats_server.store))
    assert files
    found, canary_seen = scan(files, forbidden(mb, ids))
    assert canary_seen
    assert found == {}
