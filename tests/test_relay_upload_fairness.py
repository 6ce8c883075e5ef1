"""Slow uploads cannot hold the relay's upload pool (GitHub issue 11, item 3;
bench/abuse.py scenario c).  SPEC.md §7.9, §7.11.

Before: a body trickled at 16 B/s passed the per-piece ``body_timeout``
(each read returned *some* bytes in time) and was held until
``upload_timeout`` (120 s); 256 such uploads from a few addresses filled
``max_uploads`` and the victim's own upload was refused (503).  Now the
relay measures each 64 KiB piece of the body, and when the pool is full a
newcomer takes the slot of the slowest upload of the address holding the
most slots (fair share per address).

Real relay processes; the attacker's sockets come from 127.0.0.2 and up, as
strangers' would on a network, the victim's from 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.relay_process import RelayProcess
from protocol.padding import BLOB_CHUNK_SIZE
from protocol.relay_frames import BlobTicket
from tests.required import missing

pytestmark = [pytest.mark.timeout(120)]

HOST = "127.0.0.1"

try:
    with socket.create_connection((HOST, 9), timeout=0.1, source_address=("127.0.0.2", 0)):
        pass
except ConnectionRefusedError:
    pass
except OSError:
    missing("needs the loopback addresses 127.0.0.2 and up", module=True)


@pytest.fixture
def relays() -> Iterator[list[RelayProcess]]:
    started: list[RelayProcess] = []
    yield started
    for relay in started:
        relay.stop()


def start(
    relays: list[RelayProcess], data_dir: Path, limits: dict[str, int | float]
) -> RelayProcess:
    relay = RelayProcess(data_dir, limits=limits)
    relays.append(relay)
    return relay.start()


def ticket(relay: RelayProcess) -> BlobTicket:
    req = urllib.request.Request(relay.url + "/blob", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return BlobTicket.decode(resp.read())


def put(relay: RelayProcess, t: BlobTicket, index: int) -> int:
    """The victim's upload of one whole chunk from 127.0.0.1: its status."""
    req = urllib.request.Request(
        f"{relay.url}/blob/{t.blob_id.hex()}/{index}",
        data=os.urandom(BLOB_CHUNK_SIZE),
        method="PUT",
        headers={"Authorization": f"Bearer {t.upload_token.hex()}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def slow_upload(relay: RelayProcess, t: BlobTicket, index: int, source: str) -> socket.socket:
    """Headers and 1 KiB of a chunk, from ``source``; the caller trickles the rest."""
    s = socket.create_connection((HOST, relay.port), timeout=5, source_address=(source, 0))
    s.sendall(
        (
            f"PUT /blob/{t.blob_id.hex()}/{index} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {t.upload_token.hex()}\r\n"
            f"Content-Length: {BLOB_CHUNK_SIZE}\r\n\r\n"
        ).encode()
        + b"\0" * 1024
    )
    return s


def trickle(socks: list[socket.socket]) -> int:
    """16 bytes to each socket still open; how many are still open."""
    open_ = 0
    for s in socks:
        try:
            s.sendall(b"\0" * 16)
            s.setblocking(False)
            try:
                if s.recv(1, socket.MSG_PEEK) == b"":
                    continue  # closed by the relay
                continue  # the relay answered (refused): no longer held
            except BlockingIOError:
                open_ += 1
            finally:
                s.setblocking(True)
        except OSError:
            continue
    return open_


def test_a_trickled_body_is_cut_after_body_timeout(
    tmp_path: Path, relays: list[RelayProcess]
) -> None:
    """16 B every half second is no upload: the relay cuts it once a 64 KiB
    piece has not arrived within ``body_timeout``, not at ``upload_timeout``."""
    relay = start(relays, tmp_path / "data", {"body_timeout": 3, "upload_timeout": 60})
    t = ticket(relay)
    socks = [slow_upload(relay, t, i, "127.0.0.2") for i in range(4)]
    try:
        start_ = time.monotonic()
        held = len(socks)
        while held and time.monotonic() - start_ < 30:
            time.sleep(0.5)
            held = trickle(socks)
        took = time.monotonic() - start_
        # on the old code every read returned 16 bytes in time: held for 60 s
        assert held == 0 and took < 15, (held, took)
    finally:
        for s in socks:
            s.close()


def test_slow_uploads_cannot_lock_out_another_address(
    tmp_path: Path, relays: list[RelayProcess]
) -> None:
    """Two addresses fill the upload pool with slow uploads (within every
    per-address cap); a third address still uploads its chunk at once."""
    relay = start(
        relays,
        tmp_path / "data",
        {"max_uploads": 16, "max_uploads_per_ip": 16, "body_timeout": 30, "upload_timeout": 60},
    )
    tickets = [ticket(relay) for _ in range(2)]
    socks: list[socket.socket] = []
    try:
        for i in range(16):
            source = f"127.0.0.{2 + i % 2}"
            socks.append(slow_upload(relay, tickets[i % 2], i // 2, source))
        time.sleep(1.5)
        assert trickle(socks) == 16  # the pool is full of slow uploads
        mine = ticket(relay)
        status = put(relay, mine, 0)
        # on the old code: 503 Unavailable, "too many uploads in progress"
        assert status == 201, status
        # the pool gave one slot, and only one, to the newcomer
        assert trickle(socks) == 15
    finally:
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()
