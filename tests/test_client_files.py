"""Attachments against hostile senders and relays, and disappearing messages
that really disappear (SPEC §8.7, §8.11, §9).

* A blob download reads at most one chunk (256 KiB) per request, whatever a
  relay sends; a File message cannot make the client read more than it says.
* A File message names relays chosen by its sender: the client downloads
  only from the conversation's relays unless the user names another.
* Expired messages leave the store, attachments included, on a timer and
  before a backup, not only when a page of history happens to be read.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from client.engine import Engine, EngineError
from client.files import safe_file_name
from client.model import history_ns
from client.relay_client import RelayClient
from client.store import Store
from protocol.app import attachments
from protocol.app.messages import BlobRef, ChunkRef, File
from protocol.errors import RemoteError
from tests.client_support import RelayProcess, befriend, eventually, make_engine
from tests.hostile_blob import hostile_blob_server

pytestmark = pytest.mark.timeout(240)

FIFTY_MB = 50 * 1024 * 1024


@pytest.mark.parametrize(
    ("received", "saved"),
    [
        ("../../x", "x"),
        ("..\\..\\windows\\y.txt", "y.txt"),
        ("/etc/passwd", "passwd"),
        ("C:\\Users\\me\\z.doc", "z.doc"),
        (".bashrc", "bashrc"),
        ("..", "file"),
        (".", "file"),
        ("", "file"),
        ("...   ", "file"),
        ("report\x00.pdf", "report.pdf"),
        ("\x1b[31mred\x1b[0m\n.txt", "[31mred[0m.txt"),
        ("photo\u202egnp.exe", "photognp.exe"),  # a bidi override hiding ".exe"
        ("CON", "file-CON"),
        ("nul.txt", "file-nul.txt"),
        ("a:b?c*.txt", "a_b_c_.txt"),
        ("name. . ", "name"),
        ("ordinary name.jpg", "ordinary name.jpg"),
    ],
)
def test_safe_file_name(received: str, saved: str) -> None:
    assert safe_file_name(received) == saved


def test_safe_file_name_caps_length_and_keeps_the_extension() -> None:
    long = safe_file_name("a" * 300 + ".jpeg")
    assert long == "a" * 195 + ".jpeg" and len(long.encode()) == 200
    wide = safe_file_name("\u00e9" * 150 + ".png")  # 2 bytes each: cut on a character
    assert wide == "\u00e9" * 98 + ".png" and len(wide.encode()) == 200
    odd = safe_file_name("x." + "y" * 300)  # not an extension worth keeping
    assert len(odd.encode()) == 200 and odd.startswith("x.yyy")


async def _no_delivery(url: str, mailbox_id: bytes, seq: int, sealed: bytes) -> None:
    raise AssertionError("a blob download must not subscribe to anything")


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
async def test_blob_download_reads_at_most_one_chunk(declare_length: bool) -> None:
    """A relay answering a chunk download with 50 MB: the client stops
    reading past 256 KiB and reports the relay, holding one chunk at most."""
    async with hostile_blob_server(FIFTY_MB, declare_length=declare_length) as server:
        client = RelayClient(server.url, _no_delivery)
        try:
            with pytest.raises(RemoteError, match="more than 262144 bytes"):
                await client.download_chunk(bytes(16), 0, bytes(32))
        finally:
            await client.close()
        assert server.requests == [f"/blob/{bytes(16).hex()}/0"]
        assert server.finished == 0, "the whole 50 MB answer was read"
        assert server.bytes_sent < FIFTY_MB


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    # room for 300 attachment uploads (two HTTP requests each) in a few seconds
    proc = RelayProcess(
        tmp_path / "relay", limits={"blob_rate": 100_000, "blob_burst": 100_000}
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
async def pair(tmp_path: Path, relay: RelayProcess) -> AsyncIterator[tuple[Engine, Engine]]:
    alice = make_engine(tmp_path / "alice", "Alice", [relay.url])
    bob = make_engine(tmp_path / "bob", "Bob", [relay.url])
    for e in (alice, bob):
        await e.connect()
    yield alice, bob
    for e in (alice, bob):
        await e.close()


def _hostile_file(name: str, relay_url: str, data: bytes = b"not much") -> File:
    """A File message whose one chunk lives on ``relay_url`` (the sender's pick)."""
    enc = attachments.encrypt_file(data, lambda n: bytes(n))
    ref = ChunkRef((BlobRef(relay_url, bytes(16), bytes(32)),))
    return File(
        name,
        "image/png",
        enc.size,
        attachments.CHUNK_PLAINTEXT_SIZE,
        enc.key,
        (ref,) * len(enc.chunks),
        enc.ciphertext_digest,
    )


async def test_file_on_an_outside_relay_needs_consent(
    pair: tuple[Engine, Engine], tmp_path: Path
) -> None:
    """A hostile member sends a File pointing at a server of theirs (a relay
    that is not the conversation's): the receiver neither contacts it (that
    would reveal its address) nor reads 50 MB from it when allowed to."""
    alice, bob = pair
    conv = await befriend(alice, bob)
    bob_conv = bob.find_conversation("Alice").group_id
    async with hostile_blob_server(FIFTY_MB) as server:
        await alice._send_app(conv, _hostile_file("cat.png", server.url))
        await eventually(lambda: any(e.kind == "file" for e in bob.history(bob_conv)))
        entry = next(e for e in bob.history(bob_conv) if e.kind == "file")
        body = File.from_bytes(bytes.fromhex(entry.file["descriptor"]))
        assert bob.outside_relays(bob_conv, body) == [server.url]

        dest = tmp_path / "cat.png"
        with pytest.raises(EngineError, match="not a relay of this conversation") as err:
            await bob.fetch_file(bob_conv, body, dest)
        assert server.url in str(err.value)
        with pytest.raises(EngineError, match="not a relay of this conversation"):
            await bob.fetch_bytes(bob_conv, body, max_size=1 << 20)
        assert server.requests == [], "the client contacted a relay the sender chose"
        assert server.url not in bob.relays, "an outside relay became a supervised connection"

        # allowed by the user: the oversized answer is cut off at one chunk
        with pytest.raises(EngineError, match="unavailable"):
            await bob.fetch_file(bob_conv, body, dest, allow_relays=[server.url])
        assert len(server.requests) == 1 and server.finished == 0
        assert not dest.exists() and list(tmp_path.glob("cat.png*")) == []
        assert server.url not in bob.relays


async def test_declared_size_bounds_the_download(pair: tuple[Engine, Engine]) -> None:
    """A File that declares more than the caller will hold (a photo shown
    inline) is refused before any download."""
    alice, bob = pair
    conv = await befriend(alice, bob)
    relay_url = alice.conversation_relays(conv)[0]
    body = _hostile_file("big.png", relay_url, bytes(600_000))
    with pytest.raises(EngineError, match="larger than"):
        await bob.fetch_bytes(bob.find_conversation("Alice").group_id, body, max_size=500_000)


# -- disappearing messages ------------------------------------------------------------------

HOUR_MS = 3600 * 1000


def _raw_counts(home: Path, ns_id: bytes) -> tuple[int, int, int]:
    """(log rows of one namespace, file key rows, files on disk), read from
    the SQLite file itself, not through the store API."""
    conn = sqlite3.connect(home / "store.db")
    try:
        (log_rows,) = conn.execute("SELECT count(*) FROM log WHERE ns = ?", (ns_id,)).fetchone()
        (file_rows,) = conn.execute("SELECT count(*) FROM files").fetchone()
    finally:
        conn.close()
    return int(log_rows), int(file_rows), len(list((home / "files").iterdir()))


async def _expiring_history(alice: Engine, tmp_path: Path, n_files: int) -> bytes:
    """A conversation with 3 lasting texts, then ``n_files`` files sent
    under a one-hour disappearing timer."""
    conv = (await alice.create_group("notes")).group_id
    for i in range(3):
        await alice.send_text(conv, f"keep {i}")
    await alice.set_disappearing(conv, HOUR_MS)
    for i in range(n_files):
        path = tmp_path / f"secret-{i}.txt"
        path.write_bytes(b"secret attachment %d" % i)
        await alice.send_file(conv, path)
    return conv


async def test_expired_messages_leave_the_store_and_backups(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """300 expiring messages with attachments, two hours later: none is in
    the SQLite file or in a backup, although no one read the history."""
    home = tmp_path / "alice"
    alice = make_engine(home, "Alice", [relay.url])
    alice.expiry_interval = 0.2
    try:
        await alice.connect()
        conv = await _expiring_history(alice, tmp_path, 300)
        ns_id = alice.store._ns_id(history_ns(conv))
        assert alice.store.log_count(history_ns(conv)) == 303
        assert len(list((home / "files").iterdir())) == 300
        alice.history(conv, limit=50)  # what a client showing the last page did

        real_clock = alice.clock
        alice.clock = lambda: real_clock() + 2 * HOUR_MS / 1000  # two hours pass
        await eventually(
            lambda: alice.store.log_count(history_ns(conv)) == 3, timeout=60, what="the sweep"
        )
        backup = tmp_path / "alice.backup"
        alice.export_backup(backup, b"backup passphrase")
    finally:
        await alice.close()

    log_rows, file_rows, files_on_disk = _raw_counts(home, ns_id)
    assert (log_rows, file_rows, files_on_disk) == (3, 0, 0)

    restored = Store.import_backup(backup, b"backup passphrase", tmp_path / "restored", b"pw")
    try:
        texts = [json.loads(raw)["text"] for _, raw in restored.read_log(history_ns(conv))]
        assert texts == ["keep 0", "keep 1", "keep 2"]
        assert restored.log_count(history_ns(conv)) == 3
        assert list((tmp_path / "restored" / "files").iterdir()) == []
    finally:
        restored.close()


async def test_backup_sweeps_what_is_due_first(tmp_path: Path, relay: RelayProcess) -> None:
    """A backup taken before the timer has run holds no expired message."""
    home = tmp_path / "alice"
    alice = make_engine(home, "Alice", [relay.url])
    alice.expiry_interval = 3600.0  # the timer will not run during this test
    try:
        await alice.connect()
        conv = await _expiring_history(alice, tmp_path, 5)
        real_clock = alice.clock
        alice.clock = lambda: real_clock() + 2 * HOUR_MS / 1000
        backup = tmp_path / "alice.backup"
        alice.export_backup(backup, b"backup passphrase")
    finally:
        await alice.close()
    restored = Store.import_backup(backup, b"backup passphrase", tmp_path / "restored", b"pw")
    try:
        assert restored.log_count(history_ns(conv)) == 3
        assert list((tmp_path / "restored" / "files").iterdir()) == []
    finally:
        restored.close()


async def test_expiry_schedule_survives_a_restart(tmp_path: Path, relay: RelayProcess) -> None:
    """Messages that expire while the client is closed are found by the
    next sweep without reading any history (the schedule is in the store)."""
    home = tmp_path / "alice"
    alice = make_engine(home, "Alice", [relay.url])
    alice.expiry_interval = 3600.0
    try:
        await alice.connect()
        conv = await _expiring_history(alice, tmp_path, 5)
    finally:
        await alice.close()
    reopened = Engine.open(home, b"test passphrase")
    try:
        assert reopened.store.log_count(history_ns(conv)) == 8
        real_clock = reopened.clock
        reopened.clock = lambda: real_clock() + 2 * HOUR_MS / 1000
        assert reopened.expire_due() == 5
        assert reopened.store.log_count(history_ns(conv)) == 3
        assert list((home / "files").iterdir()) == []
    finally:
        await reopened.close()
