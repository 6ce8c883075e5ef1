"""A seized relay (its SQLite file and its log) tells as little as it can.

An operator compelled to hand over the data directory and the log after
traffic: the relay must not hold a message's arrival time to the second
(expiry times are rounded up to the hour, SPEC §7.12), de-duplication rows
outliving the messages they cover (they would tell which msg_ids were
posted after the reader acked them), a lifetime counter (``head_seq`` was
the number of posts a mailbox ever had), or a client address in any log line
at default settings, including the errors for malformed requests.

The relay is a real ``samizdat-relay`` process listening on 127.0.0.1; the
client connects from 127.0.0.2 (any 127/8 address is loopback on Linux) and
also claims ``X-Forwarded-For: 203.0.113.7``, so either address in the log
or the store is the client's.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from protocol.relay_frames import Posted
from tests import nats_fixtures
from tests.nats_fixtures import NatsServer, wait_jetstream
from tests.relay_support import Client, Mailbox, envelope
from tests.required import missing
from tests.test_relay_process import RelayProcess

nats_server = nats_fixtures.nats_server
CLIENT = "127.0.0.2"
FORWARDED = "203.0.113.7"
# SPEC §7.7/§7.12: stored times are whole hours; seq = (hour << 32) + posts
# earlier in that hour to that mailbox
TIME_BUCKET = 3600
SEQ_SHIFT = 32
POSTS = 12
ACKED = 5

MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 9000 + b"\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"get / HTTP/1.1\r\nHost: x\r\n\r\n",
    bytes.fromhex("16030100a1010000") + b"\x03\x03" + b"\x00" * 32,
    b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
]


def _loopback_alias_works() -> bool:
    try:
        with socket.socket() as s:
            s.bind((CLIENT, 0))
        return True
    except OSError:
        return False


def send_raw(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    addr = ("127.0.0.1", port)
    with socket.create_connection(addr, timeout=timeout, source_address=(CLIENT, 0)) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


async def traffic(relay: RelayProcess) -> tuple[Mailbox, list[int]]:
    # no pooling: the decoy closes connections the way nginx does, and a
    # pooled one collected later warned as unclosed (filterwarnings=error)
    connector = aiohttp.TCPConnector(local_addr=(CLIENT, 0), force_close=True)
    headers = {"X-Forwarded-For": FORWARDED}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as s:
        w = await Client.connect(s, relay.url())
        mb = Mailbox()
        await w.create(mb)
        await w.auth_write(mb)
        seqs = []
        for i in range(POSTS):
            p = await w.post(mb, envelope(b"m%d" % i), os.urandom(16))
            assert isinstance(p, Posted)
            seqs.append(p.seq)
        r = await Client.connect(s, relay.url())
        await r.auth_read(mb)
        await r.subscribe(mb)
        await r.wait_delivered(POSTS)
        await r.ack(mb, seqs[ACKED - 1])
        async with s.post(relay.url().removesuffix("/ws") + "/blob") as resp:
            assert resp.status == 201
            await resp.read()
        for path in ("/", "/missing", "/ws"):
            async with s.get(relay.url().removesuffix("/ws") + path) as resp:
                await resp.read()
        await w.close()
        await r.close()
    for data in MALFORMED:
        answer = await asyncio.to_thread(send_raw, relay.port, data)
        assert answer.startswith(b"HTTP/1.1 4") or answer.startswith(b"HTTP/1.1 5"), answer[:80]
        assert b"aiohttp" not in answer and b"Python" not in answer
    return mb, seqs


def stop(relay: RelayProcess) -> str:
    """SIGTERM the relay; everything it wrote (stdout and stderr)."""
    assert relay.proc is not None
    relay.proc.send_signal(signal.SIGTERM)
    out, err = relay.proc.communicate(timeout=30)
    return out.decode() + err.decode()


def assert_log_has_no_address(log: str) -> None:
    assert "listening on" in log, "the relay's output was not captured"
    for addr in (CLIENT, FORWARDED):
        assert addr not in log, [line for line in log.splitlines() if addr in line]


@pytest.fixture
def relays() -> Any:
    procs: list[RelayProcess] = []
    yield procs
    for p in procs:
        if p.proc is not None and p.proc.poll() is None:
            p.kill()


async def test_sqlite_relay_stores_and_logs_less(tmp_path: Path, relays: list) -> None:
    if not _loopback_alias_works():
        missing("127.0.0.2 is not a loopback address here")
    relay = RelayProcess(tmp_path, "--host", "127.0.0.1").start()
    relays.append(relay)
    started = int(time.time())
    _, seqs = await traffic(relay)
    finished = int(time.time())
    assert_log_has_no_address(stop(relay))

    db = sqlite3.connect(tmp_path / "relay.sqlite3")
    try:
        tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"mailboxes", "messages", "blobs"}, tables
        expiries = [
            (table, e)
            for table in sorted(tables)
            for (e,) in db.execute(f"SELECT expires FROM {table}")
        ]
        assert {t for t, _ in expiries} == tables
        # arrival times: only the hour survives in any stored time
        assert all(e % TIME_BUCKET == 0 for _, e in expiries), expiries
        # de-duplication keys went with the acked messages: each is a column
        # of its message's row, there is no other table to outlive them
        stored = sorted(s for (s,) in db.execute("SELECT seq FROM messages"))
        dkeys = {d for (d,) in db.execute("SELECT dkey FROM messages")}
        assert stored == seqs[ACKED:] and len(dkeys) == len(stored)
        # no lifetime counter: the head is the hour's base plus that hour's posts
        ((head,),) = db.execute("SELECT head_seq FROM mailboxes").fetchall()
        assert head == seqs[-1] and head != POSTS
        hours = {t // TIME_BUCKET for t in range(started, finished + 1)}
        assert head >> SEQ_SHIFT in hours and head % (1 << SEQ_SHIFT) < POSTS
    finally:
        db.close()


async def test_nats_relay_logs_no_address(
    tmp_path: Path, relays: list, nats_server: NatsServer
) -> None:
    if not _loopback_alias_works():
        missing("127.0.0.2 is not a loopback address here")
    await wait_jetstream(nats_server.url)
    relay = RelayProcess(
        tmp_path, "--host", "127.0.0.1", "--backend", "nats", "--nats-url", nats_server.url
    ).start()
    relays.append(relay)
    await traffic(relay)
    assert_log_has_no_address(stop(relay))
    # the blob's stored expiry is rounded up to the hour here too; what
    # JetStream itself keeps (arrival stamps, its duplicate window) is
    # beyond the relay (SPEC §7.12)
    import nats

    nc = await nats.connect(nats_server.url)
    try:
        kv = await nc.jetstream().key_value("sz_blobmeta")
        keys = await kv.keys()
        assert keys
        for k in keys:
            entry = await kv.get(k)
            assert entry.value is not None
            assert int.from_bytes(entry.value[64:72], "big") % TIME_BUCKET == 0
    finally:
        await nc.close()


async def test_tls_errors_log_no_address(tmp_path: Path, relays: list) -> None:
    """Broken TLS (plain HTTP on the TLS port, a truncated or bogus
    handshake, garbage inside TLS) makes asyncio report errors whose context
    holds the peer's address; the relay logs none of it."""
    import ssl

    from tests.test_relay_process import _self_signed

    if not _loopback_alias_works():
        missing("127.0.0.2 is not a loopback address here")
    cert, key = _self_signed(tmp_path)
    relay = RelayProcess(
        tmp_path / "d", "--host", "127.0.0.1", "--tls-cert", str(cert), "--tls-key", str(key)
    ).start()
    relays.append(relay)
    for data in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x02\x00\x01" + b"\xff" * 80):
        await asyncio.to_thread(send_raw, relay.port, data, 2.0)  # no answer comes
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    def inside_tls(data: bytes) -> None:
        with (
            socket.create_connection(
                ("127.0.0.1", relay.port), timeout=10, source_address=(CLIENT, 0)
            ) as raw,
            ctx.wrap_socket(raw) as s,
        ):
            s.sendall(data)
            try:
                while s.recv(65536):
                    pass
            except (OSError, ssl.SSLError):
                pass

    for data in MALFORMED[:3]:
        await asyncio.to_thread(inside_tls, data)
    assert_log_has_no_address(stop(relay))


INTERLEAVED = 6  # posts per mailbox, alternating A1, B1, A2, B2, ...


def _recovers_interleaving(values: list[Any], arrival: list[int]) -> bool:
    """Whether ``values`` (one per stored message) order every pair of
    messages from *different* mailboxes strictly, and the same way (or the
    reverse way) as they arrived.  Equal values (two mailboxes' seqs in the
    same hour) leave the pair unordered, so they do not count as recovery."""
    if any(not isinstance(v, int) for v in values):
        return False
    n = len(values)
    pairs = [(i, j) for i in range(n) for j in range(n) if arrival[i] % 2 != arrival[j] % 2]
    for sign in (1, -1):
        if all((values[i] - values[j]) * sign * (arrival[i] - arrival[j]) > 0 for i, j in pairs):
            return True
    return False


async def test_seized_database_does_not_order_mailboxes(tmp_path: Path, relays: list) -> None:
    """A seized relay database must not tell which of two mailboxes got its
    still-unread message first (SPEC §7.10.1, §7.12 "Stored less").

    Posts go to two mailboxes strictly interleaved (A1, B1, A2, B2, ...),
    each acknowledged before the next is sent, so each commits on its own.
    The attacker reads the whole messages table: every column, the order
    SQLite returns the rows in, and any rowid (a rowid table's ``rowid``
    grows with every insert, which is the arrival order across mailboxes).
    """
    from relay.storage.base import mailbox_key

    relay = RelayProcess(tmp_path, "--host", "127.0.0.1").start()
    relays.append(relay)
    a, b = Mailbox(), Mailbox()
    async with aiohttp.ClientSession() as s:
        w = await Client.connect(s, relay.url())
        for mb in (a, b):
            await w.create(mb)
            await w.auth_write(mb)
        for i in range(INTERLEAVED):
            for mb in (a, b):
                p = await w.post(mb, envelope(b"m%d" % i), os.urandom(16))
                assert isinstance(p, Posted)
        await w.close()
    stop(relay)

    db = sqlite3.connect(tmp_path / "relay.sqlite3")
    try:
        # the arrival rank of each stored message: A_i -> 2i, B_i -> 2i + 1
        # (messages name their mailbox by its id, SPEC §7.10.1)
        ids = dict(db.execute("SELECT key, id FROM mailboxes").fetchall())
        rank = {ids[mailbox_key(a.id)]: 0, ids[mailbox_key(b.id)]: 1}
        # no rowid at all: WITHOUT ROWID tables have none to ORDER BY
        for hidden in ("rowid", "_rowid_", "oid"):
            with pytest.raises(sqlite3.OperationalError):
                db.execute(f"SELECT {hidden} FROM messages").fetchall()
        cursor = db.execute("SELECT * FROM messages")
        columns = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
        assert len(rows) == 2 * INTERLEAVED
        mbox = columns.index("mbox")
        seq = columns.index("seq")
        # arrival rank from what the test knows (the seq's place within its
        # own mailbox), never from the database's order
        per_box: dict[bytes, list[int]] = {}
        for row in rows:
            per_box.setdefault(row[mbox], []).append(row[seq])
        arrival = [2 * sorted(per_box[row[mbox]]).index(row[seq]) + rank[row[mbox]] for row in rows]
        # the order the rows come back in (the table's physical order) ...
        returned = [arrival[i] % 2 for i in range(len(rows))]
        assert returned != [r % 2 for r in sorted(arrival)], "rows come back in arrival order"
        assert not _recovers_interleaving(list(range(len(rows))), arrival), columns
        # ... and no column orders A's messages against B's by arrival
        for c, name in enumerate(columns):
            values = [row[c] for row in rows]
            assert not _recovers_interleaving(values, arrival), f"column {name} orders mailboxes"
    finally:
        db.close()


CREATED = 16  # mailboxes created one after the other


def _orders(values: list[Any]) -> bool:
    """Whether ``values`` (one per mailbox, in creation order) are strictly
    increasing or strictly decreasing: a column that tells which mailbox
    was created first (a counter would)."""
    pairs = list(itertools.pairwise(values))
    return all(x < y for x, y in pairs) or all(x > y for x, y in pairs)


async def test_seized_database_does_not_order_mailbox_creation(tmp_path: Path) -> None:
    """Mailboxes made one after the other (a user's inbox, then the group
    mailbox they create the next moment) must not be linked by their
    creation order: no column of ``mailboxes`` or ``messages``, and not the
    order rows come back in, ranks them by creation (SPEC §7.12).  The
    messages table names its mailbox by an integer id, so a sequential id
    would do exactly that; ids are drawn at random."""
    from relay.config import Limits
    from relay.storage.base import dedup_key, mailbox_key
    from relay.storage.sqlite import SqliteStorage

    assert _orders(list(range(CREATED)))  # the check sees a counter
    store = SqliteStorage(tmp_path, Limits())
    await store.start()
    now = int(time.time())
    keys = []
    try:
        for _ in range(CREATED):
            mid = os.urandom(32)
            key = mailbox_key(mid)
            await store.create_mailbox(key, os.urandom(32), os.urandom(32), 86400, now)
            keys.append((mid, key))
        for mid, key in keys:  # one message each, posted in creation order too
            await store.post(key, dedup_key(mid, os.urandom(16)), envelope(b"m"), now)
    finally:
        await store.close()
    created = {key: i for i, (_, key) in enumerate(keys)}
    db = sqlite3.connect(tmp_path / "relay.sqlite3")
    try:
        cursor = db.execute("SELECT * FROM mailboxes")
        columns = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
        key_col = columns.index("key")
        returned = [created[row[key_col]] for row in rows]
        assert not _orders(returned), "mailbox rows come back in creation order"
        by_creation = sorted(rows, key=lambda row: created[row[key_col]])
        for c, name in enumerate(columns):
            values = [row[c] for row in by_creation]
            assert not _orders(values), f"mailboxes.{name} orders mailboxes by creation"
        id_of = {row[key_col]: row[columns.index("id")] for row in rows}
        # the messages, one per mailbox, in the order SQLite returns them
        # and by every column (their mailbox id among them)
        cursor = db.execute("SELECT * FROM messages")
        mcolumns = [d[0] for d in cursor.description]
        mrows = cursor.fetchall()
        rank = {id_of[key]: created[key] for key in created}
        mbox = mcolumns.index("mbox")
        assert not _orders([rank[row[mbox]] for row in mrows]), "messages in creation order"
        mrows.sort(key=lambda row: rank[row[mbox]])
        for c, name in enumerate(mcolumns):
            if name == "seq":  # the hour's base + 1 in every mailbox: all equal
                continue
            values = [row[c] for row in mrows]
            assert not _orders(values), f"messages.{name} orders mailboxes by creation"
    finally:
        db.close()


async def test_posts_write_no_mailbox_row(tmp_path: Path) -> None:
    """A post stores its message and nothing else: no mailbox row is
    rewritten per batch (the head, count, bytes and expiry follow from the
    messages), so a seized database's mailbox rows do not tell when each
    mailbox last got a post beyond what its messages already tell."""
    from relay.config import Limits
    from relay.storage.base import dedup_key, mailbox_key
    from relay.storage.sqlite import SqliteStorage

    store = SqliteStorage(tmp_path, Limits())
    await store.start()
    now = int(time.time())
    try:
        boxes = [os.urandom(32) for _ in range(4)]
        for mid in boxes:
            await store.create_mailbox(mailbox_key(mid), b"r" * 32, b"w" * 32, 86400, now)
        statements: list[str] = []
        assert store._db is not None
        store._db.set_trace_callback(statements.append)
        posts = [
            store.post_nowait(mailbox_key(mid), dedup_key(mid, os.urandom(16)), envelope(), now)
            for _ in range(8)
            for mid in boxes
        ]
        await asyncio.gather(*posts)
        store._db.set_trace_callback(None)
        writes = [s for s in statements if "mailboxes" in s and not s.startswith("SELECT")]
        assert writes == [], writes
        assert any(s.startswith("INSERT INTO messages") for s in statements)
    finally:
        await store.close()
