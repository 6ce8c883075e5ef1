"""Resource exhaustion of a real relay process (GitHub issue 11, item 3).

Each test performs the attack against a ``samizdat-relay`` process and
watches the process itself: its open descriptors (``/proc/PID/fd``), its log
and whether it still serves.  Limits are configured low so every test is
bounded (at most 60 sockets, well under 30 s each).
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.relay_process import ROOT, RelayProcess
from protocol.padding import BLOB_CHUNK_SIZE
from protocol.relay_frames import (
    AccessDenied,
    BlobTicket,
    Error,
    Ok,
    RateLimited,
    StorageFull,
    decode_server_frame,
)
from relay.app import create_app
from relay.limits import Slots
from relay.storage.base import MAILBOX_ROW_COST
from tests import nats_fixtures
from tests.relay_support import Client, Mailbox
from tests.required import missing
from tests.test_relay_app import code, make_config

pytestmark = [
    pytest.mark.timeout(120),
]

if not Path("/proc/self/fd").is_dir():
    missing("needs /proc/PID/fd to count the relay's descriptors", module=True)

HOST = "127.0.0.1"


@pytest.fixture
def relays() -> Iterator[list[RelayProcess]]:
    started: list[RelayProcess] = []
    yield started
    for relay in started:
        relay.stop()


def start(relays: list[RelayProcess], data_dir: Path, **kw: Any) -> RelayProcess:
    relay = RelayProcess(data_dir, **kw)
    relays.append(relay)
    return relay.start()


def fds(relay: RelayProcess) -> int:
    assert relay.proc is not None
    return len(os.listdir(f"/proc/{relay.proc.pid}/fd"))


def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def http(
    relay: RelayProcess, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    req = urllib.request.Request(relay.url + path, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def ended(sock: socket.socket, timeout: float) -> bool:
    """True once the relay closed ``sock`` (EOF or reset) within ``timeout``."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


def test_slow_uploaders_cannot_pin_descriptors(tmp_path: Path, relays: list[RelayProcess]) -> None:
    relay = start(
        relays,
        tmp_path / "data",
        limits={
            "max_uploads_per_ip": 8,
            "max_requests_per_ip": 12,
            "max_connections_per_ip": 4,
            "header_timeout": 3,
            "body_timeout": 3,
            "upload_timeout": 6,
        },
    )
    status, body = http(relay, "POST", "/blob")
    assert status == 201
    ticket = BlobTicket.decode(body)
    time.sleep(0.5)
    baseline = fds(relay)
    head = (
        f"PUT /blob/{ticket.blob_id.hex()}/0 HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {ticket.upload_token.hex()}\r\n"
        f"Content-Length: {BLOB_CHUNK_SIZE}\r\n\r\n"
    ).encode()
    socks = []
    peak = baseline
    try:
        for _ in range(60):  # 60 uploaders that send 1 kB of a 256 KiB chunk, then stall
            s = socket.create_connection((HOST, relay.port), timeout=5)
            socks.append(s)
            with contextlib.suppress(OSError):
                s.sendall(head + b"\0" * 1024)
            peak = max(peak, fds(relay))
        for _ in range(20):
            peak = max(peak, fds(relay))
            time.sleep(0.1)
        # at most 16 sockets (4 + 12 per address) and 8 spool files at once
        assert peak <= baseline + 30, (baseline, peak)
        # the stalled uploads time out and everything is given back
        assert wait_until(lambda: fds(relay) <= baseline + 1, 20), (baseline, fds(relay))
        assert all(ended(s, 5) for s in socks)
        print(f"descriptors: baseline {baseline}, peak {peak}")
    finally:
        for s in socks:
            s.close()
    assert http(relay, "GET", "/")[0] == 200
    assert not list((tmp_path / "data" / "spool").iterdir())


def test_half_sent_headers_are_closed(tmp_path: Path, relays: list[RelayProcess]) -> None:
    relay = start(relays, tmp_path / "data", limits={"header_timeout": 2})
    socks = []
    try:
        for _ in range(20):
            s = socket.create_connection((HOST, relay.port), timeout=5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # no blank line: never finished
            socks.append(s)
        trickle = socket.create_connection((HOST, relay.port), timeout=5)
        socks.append(trickle)
        started = time.monotonic()
        trickle.sendall(b"GET / HTTP/1.1\r\n")
        closed = False
        for _ in range(40):  # one header byte every 0.25 s keeps nothing alive
            try:
                trickle.sendall(b"X")
            except OSError:
                closed = True
                break
            time.sleep(0.25)
        assert closed or ended(trickle, 3), "a trickled header kept the connection"
        assert time.monotonic() - started < 2 + 6
        for s in socks[:-1]:
            assert ended(s, 6), "half-sent headers were held past the header timeout"
    finally:
        for s in socks:
            s.close()
    assert http(relay, "GET", "/")[0] == 200


async def create_from(relay: RelayProcess, address: str, boxes: int | list[Mailbox]) -> list[int]:
    """Create frames from one (forwarded) address: 0 (Ok) or the error code."""
    if isinstance(boxes, int):
        boxes = [Mailbox() for _ in range(boxes)]
    results = []
    async with aiohttp.ClientSession() as session:
        client = await Client.connect(
            session, f"{relay.url}/ws", headers={"X-Forwarded-For": address}
        )
        for mb in boxes:
            reply = await client.create(mb)
            results.append(0 if isinstance(reply, Ok) else code(reply))
        await client.ws.close()
    return results


async def test_mailbox_creation_is_capped(tmp_path: Path, relays: list[RelayProcess]) -> None:
    limits = {"mailbox_create_burst": 5, "mailbox_create_rate": 0.001, "max_mailboxes": 8}
    relay = start(relays, tmp_path / "a", settings={"forwarded_for": True}, limits=limits)
    # per address: five, then RateLimited
    first = [Mailbox() for _ in range(7)]
    assert await create_from(relay, "203.0.113.1", first) == [0] * 5 + [RateLimited.code] * 2
    # re-creating an existing mailbox (clients do on each connection) is free
    assert await create_from(relay, "203.0.113.1", first[:5] * 2) == [0] * 10
    # in total: eight, then StorageFull, whatever the address
    got = await create_from(relay, "203.0.113.2", 4)
    assert got == [0, 0, 0, StorageFull.code]
    relay.stop()
    relay.start()  # the count survives a restart
    assert await create_from(relay, "203.0.113.3", 1) == [StorageFull.code]
    # mailbox rows count toward total_max_bytes at MAILBOX_ROW_COST each
    small = start(
        relays,
        tmp_path / "b",
        settings={"forwarded_for": True},
        limits={"total_max_bytes": 3 * MAILBOX_ROW_COST},
    )
    assert await create_from(small, "203.0.113.4", 4) == [0, 0, 0, StorageFull.code]


def _low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


def test_low_descriptor_limit_refuses_cleanly(tmp_path: Path, relays: list[RelayProcess]) -> None:
    relay = start(relays, tmp_path / "data", preexec_fn=_low_nofile)
    socks = []
    try:
        for _ in range(60):
            s = socket.create_connection((HOST, relay.port), timeout=5)
            socks.append(s)
            with contextlib.suppress(OSError):
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        time.sleep(1)
        log = relay.log_path.read_text()
        assert "Traceback" not in log and len(log) < 4096, f"{len(log)} bytes of log"
        assert fds(relay) <= 64
        refused = sum(ended(s, 0.5) for s in socks)
        assert refused >= 20, refused  # beyond the budget: closed at once
        assert relay.running
    finally:
        for s in socks:
            s.close()
    assert wait_until(lambda: http(relay, "GET", "/")[0] == 200, 10)
    log = relay.log_path.read_text()
    assert "Traceback" not in log and len(log) < 4096, f"{len(log)} bytes of log"
    assert log.count("file descriptor limit") == 1, log
    print(f"refused {refused} of 60; log:\n{log}")


def test_beyond_loopback_metrics_and_blobs_need_tokens(
    tmp_path: Path, relays: list[RelayProcess]
) -> None:
    relay = start(relays, tmp_path / "a", host="0.0.0.0")
    status, body = http(relay, "GET", "/metrics")
    assert status == 404 and b"samizdat" not in body  # the decoy
    status, body = http(relay, "POST", "/blob")
    assert status == 403
    frame = decode_server_frame(body)
    assert isinstance(frame, Error) and frame.code == AccessDenied.code
    log = relay.log_path.read_text()
    assert "metrics_token" in log and "access_token" in log
    # explicitly opened by the operator
    opened = start(
        relays,
        tmp_path / "b",
        host="0.0.0.0",
        settings={"metrics_public": True, "blobs_public": True},
    )
    status, body = http(opened, "GET", "/metrics")
    assert status == 200 and b"samizdat_relay_connections" in body
    assert http(opened, "POST", "/blob")[0] == 201
    # or with tokens
    tokens = start(
        relays,
        tmp_path / "c",
        host="0.0.0.0",
        settings={"metrics_token": "m", "access_token": "t"},
    )
    assert http(tokens, "GET", "/metrics", {"Authorization": "Bearer m"})[0] == 200
    assert http(tokens, "POST", "/blob", {"Authorization": "Bearer t"})[0] == 201


nats_server = nats_fixtures.nats_server


async def test_mailbox_total_on_nats(
    aiohttp_client: Any, tmp_path: Path, nats_server: nats_fixtures.NatsServer
) -> None:
    """JetStream holds the count for every relay process that shares it."""
    limits = {"max_mailboxes": 3}
    apps = [
        create_app(
            make_config(tmp_path / n, backend="nats", nats_url=nats_server.url, limits=limits)
        )
        for n in ("a", "b")
    ]
    clients = [await aiohttp_client(app) for app in apps]
    a, b = [await Client.connect(tc.session, tc.make_url("/ws")) for tc in clients]
    made = [Mailbox() for _ in range(3)]
    for mb in made[:2]:
        assert isinstance(await a.create(mb), Ok)
    assert isinstance(await b.create(made[2]), Ok)
    assert code(await b.create(Mailbox())) == StorageFull.code
    assert code(await a.create(Mailbox())) == StorageFull.code


OUT_OF_FDS_CHILD = """
import logging, os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="LOG %(message)s")
from relay.config import Limits
from relay.sockets import listen
sock = listen("127.0.0.1", 0, Limits())
print(sock.getsockname()[1], flush=True)
hog = []
try:
    while True:
        hog.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
sys.stdin.readline()
results = []
for _ in range(6):
    try:
        sock.accept()[0].close()
        results.append("accepted")
    except ConnectionAbortedError:
        results.append("refused")
    except BlockingIOError:
        results.append("empty")
for fd in hog:
    os.close(fd)
print("FIRST", " ".join(results), flush=True)
sys.stdin.readline()
conn, _ = sock.accept()
conn.close()
print("THEN accepted", flush=True)
"""


def test_out_of_descriptors_refuses_with_the_spare(tmp_path: Path) -> None:
    """Even when every descriptor is taken, a pending connection is refused
    (accepted with the spare descriptor and closed), logged once, no traceback."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen(
        [sys.executable, "-c", OUT_OF_FDS_CHILD],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    clients: list[socket.socket] = []
    try:
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline())
        clients += [socket.create_connection((HOST, port), timeout=5) for _ in range(3)]
        time.sleep(0.3)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert all(ended(c, 5) for c in clients)  # refused: closed, not left pending
        before: list[str] = []
        first = child.stdout.readline()
        while not first.startswith("FIRST"):
            assert first, "the child ended early: " + "".join(before)
            before.append(first)
            first = child.stdout.readline()
        clients.append(socket.create_connection((HOST, port), timeout=5))
        child.stdin.write("go\n")
        child.stdin.flush()
        rest, _ = child.communicate(timeout=20)
    finally:
        for c in clients:
            c.close()
        if child.poll() is None:
            child.kill()
            child.wait()
    out = "".join(before) + first + rest
    assert first.split()[1:] == ["refused"] * 3 + ["empty"] * 3, out
    assert "THEN accepted" in rest, out  # descriptors back: served again
    assert out.count("LOG out of file descriptors") == 1 and "Traceback" not in out, out


def test_slots_bound_total_address_and_key() -> None:
    slots = Slots(max_total=4, max_per_ip=2, max_per_key=3)
    assert slots.acquire("a", b"k") is None and slots.acquire("a", b"k") is None
    assert slots.acquire("a", b"k") == "ip"
    assert slots.acquire("b", b"k") is None
    assert slots.acquire("b", b"k") == "key"
    assert slots.acquire("c", b"other") is None
    assert slots.acquire("d", b"other") == "total"
    for ip in ("a", "a", "b"):
        slots.release(ip, b"k")
    slots.release("c", b"other")
    assert slots.total == 0 and not slots._per_ip and not slots._per_key
