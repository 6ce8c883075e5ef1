"""Relay benchmark: delivered messages/s, p50/p99 latency, memory per idle connection.

Runs, in one go and each as a real process on 127.0.0.1:

* ``samizdat-sqlite``: ``python -m relay.cli`` on SQLite (synchronous=FULL);
* ``samizdat-nats``: the same relay on a single-node nats-server (sync always);
* ``nostr-relay``: the PyPI ``nostr-relay`` (its default config: SQLite,
  signature validation on; events are pre-signed so signing is not timed),
  publishing EVENTs to subscribers with a matching ``authors`` filter;
* ``bare-aiohttp``: an aiohttp WebSocket broadcast server with no storage,
  no auth and no framing beyond a 1-byte opcode: the framework's floor.

Scenarios: (a) one mailbox with ``--readers`` live readers; (b) ``--mailboxes``
mailboxes with one reader each.  One publisher connection per 250 mailboxes
keeps ``--window`` posts in flight and waits for each store acknowledgement
(Posted / OK / ack), so the figure is end-to-end: accepted, stored, fanned
out and received.  Latency is from send to receipt at a reader.  Memory per
idle connection is the relay process tree's RSS growth per connected, idle
WebSocket, measured before scenario (b) subscribes.

Defaults: 20,000 posts per scenario, 3 repeats interleaved across servers,
medians printed with the relay process tree's CPU per post (user + system,
during the timed phase; in brackets its main thread's, the event loop) and
the ratio to the bare-aiohttp floor; about fifteen minutes on two cores.
Scale with --messages-a, --messages-b,
--readers, --mailboxes, --publishers, --repeats; ``--only`` picks servers,
``--scenarios`` picks a and/or b.
Environment: ``RELAY_BENCH_SYNC=NORMAL`` runs SQLite with synchronous=NORMAL,
``RELAY_BENCH_PROFILE=file`` runs the Samizdat relay under cProfile,
``RELAY_BENCH_PYSPY=file`` attaches ``py-spy record`` (250 Hz, every thread,
raw folded stacks) to each Samizdat relay process, one numbered file per run
(``file.1``, ``file.2``, ...), written when that relay exits;
``RELAY_BENCH_STDERR=1`` keeps its stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nacl.signing import SigningKey  # noqa: E402

from protocol.relay_frames import (  # noqa: E402
    MAX_CREDIT,
    AuthRead,
    AuthWrite,
    Create,
    Credit,
    Subscribe,
    auth_message,
    decode_server_frame,
)

ENVELOPE = 256
DELIVER_OFFSET = 1 + 32 + 8 + 2  # Deliver: type, mailbox id, seq, varint length of 256
SIGNER = """
import json, sys, time
from aionostr.key import PrivateKey
from aionostr.event import Event
n_keys, n_events = int(sys.argv[1]), int(sys.argv[2])
keys = [PrivateKey() for _ in range(n_keys)]
for i in range(n_events):
    k = keys[i % n_keys]
    e = Event(pubkey=k.public_key.hex(), content="x" * 200 + str(i), kind=1, tags=[],
              created_at=int(time.time()))
    e.sign(k.hex())
    print(json.dumps(e.to_json_object()))
"""


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("server did not start")


def tree_rss(pid: int) -> int:
    """RSS in bytes of ``pid`` and all its descendants (Linux /proc)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = (task / "children").read_text().split()
                stack.extend(int(k) for k in kids)
        except OSError:
            continue
    return total


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            for task in Path(f"/proc/{p}/task").iterdir():
                stack.extend(int(k) for k in (task / "children").read_text().split())
        except (OSError, IndexError, ValueError):
            continue
    return total


def loop_cpu(pid: int) -> float:
    """CPU seconds used so far by the main thread of ``pid`` (its event loop,
    for the relays here; storage threads and child processes excluded)."""
    try:
        fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class Server:
    name: str
    url: str
    pid: int
    kind: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # profilers attached to a process in procs: stopped after all of them,
    # so they see the relay exit and write their file
    watchers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        for p in self.watchers:
            try:
                p.wait(30)  # py-spy writes its file once its target is gone
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGINT)  # py-spy writes on Ctrl-C too
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)


_PYSPY_RUNS = [0]


def attach_pyspy(pid: int) -> list[subprocess.Popen[bytes]]:
    """``RELAY_BENCH_PYSPY=file``: ``py-spy record`` on ``pid`` into ``file.N``."""
    out = os.environ.get("RELAY_BENCH_PYSPY")
    if not out:
        return []
    binary = str(Path(sys.executable).with_name("py-spy"))
    if not Path(binary).exists():
        binary = shutil.which("py-spy") or "py-spy"
    _PYSPY_RUNS[0] += 1
    path = f"{out}.{_PYSPY_RUNS[0]}"
    cmd = [binary, "record", "--pid", str(pid), "-r", "250", "--threads"]
    cmd += ["--format", "raw", "-o", path]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"py-spy: relay pid {pid} -> {path}", flush=True)
    return [proc]


RELAY_TOML = """
sqlite_synchronous = "{sync}"
[limits]
max_connections = 100000
max_connections_per_ip = 100000
connect_rate = 1000000.0
connect_burst = 1000000
frame_rate = 10000000.0
frame_burst = 10000000
mailbox_max_messages = 1000000
mailbox_create_rate = 1000000.0
mailbox_create_burst = 1000000
mailbox_post_rate = 1000000.0
mailbox_post_burst = 1000000
send_queue_frames = 65536
send_queue_bytes = 268435456
"""


def start_samizdat(tmp: Path, backend: str, nats_url: str = "") -> Server:
    port = free_port()
    cfg = tmp / "relay.toml"
    cfg.write_text(RELAY_TOML.format(sync=os.environ.get("RELAY_BENCH_SYNC", "FULL")))
    prof = os.environ.get("RELAY_BENCH_PROFILE")
    pre = ["-m", "cProfile", "-o", prof] if prof else []
    cmd = [
        sys.executable,
        *pre,
        "-m",
        "relay.cli",
        "--config",
        str(cfg),
        "--port",
        str(port),
        "--data-dir",
        str(tmp / "data"),
        "--backend",
        backend,
    ]
    if nats_url:
        cmd += ["--nats-url", nats_url]
    err = None if os.environ.get("RELAY_BENCH_STDERR") else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    wait_port(port, proc)
    server = Server(f"samizdat-{backend}", f"ws://127.0.0.1:{port}/ws", proc.pid, "samizdat")
    server.procs = [proc]
    server.watchers = attach_pyspy(proc.pid)
    return server


def start_nats(tmp: Path) -> subprocess.Popen[bytes]:
    binary = str(Path(sys.executable).with_name("nats-server"))
    if not Path(binary).exists():
        binary = shutil.which("nats-server") or "nats-server"
    port = free_port()
    conf = tmp / "nats.conf"
    conf.write_text(
        f'host: 127.0.0.1\nport: {port}\njetstream {{\n  store_dir: "{tmp / "js"}"\n'
        "  sync_interval: always\n}\n"
    )
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_port(port, proc)
    proc.port = port  # type: ignore[attr-defined]
    return proc


NOSTR_YAML = """
DEBUG: false
relay_name: bench
storage:
  sqlalchemy.url: sqlite+aiosqlite:///{db}
  num_concurrent_reqs: 10
  num_concurrent_adds: 2
  validators:
    - nostr_relay.validators.is_not_too_large
    - nostr_relay.validators.is_signed
    - nostr_relay.validators.is_recent
verification:
  nip05_verification: disabled
gunicorn:
  bind: 127.0.0.1:{port}
  workers: 1
  loglevel: warning
  reload: false
authentication:
  enabled: false
message_timeout: 1800
subscription_limit: 32
max_limit: 6000
hellthread_limit: 100
logging:
  version: 1
  disable_existing_loggers: true
  root:
    level: WARNING
"""


def start_nostr(tmp: Path, binary: str) -> Server:
    port = free_port()
    cfg = tmp / "nostr.yaml"
    cfg.write_text(NOSTR_YAML.format(db=tmp / "nostr.sqlite3", port=port))
    proc = subprocess.Popen(
        [binary, "-c", str(cfg), "serve"],
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc, timeout=60)
    return Server("nostr-relay", f"ws://127.0.0.1:{port}/", proc.pid, "nostr", [proc])


def start_bare() -> Server:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-bare", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    return Server("bare-aiohttp", f"ws://127.0.0.1:{port}/ws", proc.pid, "bare", [proc])


def serve_bare(port: int) -> None:
    """The floor: subscribe = b"S"+channel, publish = b"P"+channel+payload -> b"A"."""
    from aiohttp import web

    channels: dict[bytes, set[web.WebSocketResponse]] = {}

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        mine: list[bytes] = []
        try:
            async for msg in ws:
                data = msg.data
                if data[:1] == b"S":
                    channels.setdefault(data[1:33], set()).add(ws)
                    mine.append(data[1:33])
                elif data[:1] == b"P":
                    payload = data[33:]
                    for sub in list(channels.get(data[1:33], ())):
                        await sub.send_bytes(payload)
                    await ws.send_bytes(b"A")
        finally:
            for ch in mine:
                channels.get(ch, set()).discard(ws)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# ---------------------------------------------------------------- drivers


class Driver(ABC):
    """Protocol-specific steps; ``token`` identifies a message for latency."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def connect(self) -> aiohttp.ClientWebSocketResponse:
        return await self.session.ws_connect(self.url, max_msg_size=0, compress=0)

    # Optional steps: a protocol that needs none of them keeps these no-ops.
    async def prepare(self, n_mailboxes: int, n_messages: int) -> None:  # noqa: B027
        """Create whatever the server needs before the run (default: nothing)."""

    async def subscribe(self, ws: Any, mailbox: int) -> None:  # noqa: B027
        """Make ``ws`` a reader of ``mailbox`` (default: nothing)."""

    async def setup_publisher(self, ws: Any, mailboxes: list[int]) -> None:  # noqa: B027
        """Authorize ``ws`` to post to ``mailboxes`` (default: nothing)."""

    @abstractmethod
    def post(self, i: int, mailbox: int) -> tuple[bytes | str, bytes]:
        """(what to send, token)"""

    @abstractmethod
    def is_ack(self, data: Any) -> bool:
        """Whether ``data`` acknowledges a post."""

    @abstractmethod
    def delivered_token(self, data: Any) -> bytes | None:
        """The token of the message ``data`` delivers, if it delivers one."""


class SamizdatDriver(Driver):
    async def prepare(self, n_mailboxes: int, n_messages: int) -> None:
        self.read, self.write = SigningKey.generate(), SigningKey.generate()
        self.ids = [os.urandom(32) for _ in range(n_mailboxes)]
        self.nonces: dict[int, bytes] = {}
        ws = await self.connect()
        rk, wk = bytes(self.read.verify_key), bytes(self.write.verify_key)
        for i, mid in enumerate(self.ids):
            await ws.send_bytes(Create(i + 1, mid, rk, wk).encode())
        for _ in self.ids:
            frame = decode_server_frame((await ws.receive()).data)
            assert type(frame).__name__ == "Ok", frame
        await ws.close()

    async def connect(self) -> aiohttp.ClientWebSocketResponse:
        ws = await super().connect()
        frame = decode_server_frame((await ws.receive()).data)
        self.nonces[id(ws)] = frame.nonce  # type: ignore[union-attr]
        return ws

    async def _auth(
        self, ws: Any, cls: Any, key: SigningKey, purpose: str, mailboxes: list[int]
    ) -> None:
        nonce = self.nonces[id(getattr(ws, "ws", ws))]  # a Tap's socket
        for m in mailboxes:
            sig = key.sign(auth_message(purpose, nonce, self.ids[m])).signature
            await ws.send_bytes(cls(m + 1, self.ids[m], sig).encode())
        for _ in mailboxes:
            frame = decode_server_frame((await ws.receive()).data)
            assert type(frame).__name__ == "Ok", frame

    async def subscribe(self, ws: Any, mailbox: int) -> None:
        await self._auth(ws, AuthRead, self.read, "auth-read", [mailbox])
        await ws.send_bytes(Subscribe(1, self.ids[mailbox], 0).encode())
        frame = decode_server_frame((await ws.receive()).data)
        assert type(frame).__name__ == "Subscribed", frame
        # a reader as fast as the network: all the credit there is (SPEC §7.6)
        await ws.send_bytes(Credit(MAX_CREDIT).encode())

    async def setup_publisher(self, ws: Any, mailboxes: list[int]) -> None:
        await self._auth(ws, AuthWrite, self.write, "auth-write", mailboxes)

    def post(self, i: int, mailbox: int) -> tuple[bytes | str, bytes]:
        token = struct.pack(">Q", i)
        # Post.encode() by hand (the same bytes; the bench client must not be
        # the bottleneck): type, req_id, mailbox id, msg id, varint(256), envelope.
        frame = b"\x06%s%s%s\x41\x00%s%s" % (
            struct.pack(">I", (i + 1) & 0xFFFFFFFF),
            self.ids[mailbox],
            os.urandom(16),
            token,
            bytes(ENVELOPE - 8),
        )
        return frame, token

    def is_ack(self, data: Any) -> bool:
        return data[0] == 0x82

    def delivered_token(self, data: Any) -> bytes | None:
        if data[0] != 0x84:
            return None
        return bytes(data[DELIVER_OFFSET : DELIVER_OFFSET + 8])


class BareDriver(Driver):
    async def prepare(self, n_mailboxes: int, n_messages: int) -> None:
        self.ids = [os.urandom(32) for _ in range(n_mailboxes)]

    async def subscribe(self, ws: Any, mailbox: int) -> None:
        await ws.send_bytes(b"S" + self.ids[mailbox])

    def post(self, i: int, mailbox: int) -> tuple[bytes | str, bytes]:
        token = struct.pack(">Q", i)
        return b"P" + self.ids[mailbox] + token + bytes(ENVELOPE - 8), token

    def is_ack(self, data: Any) -> bool:
        return data == b"A"

    def delivered_token(self, data: Any) -> bytes | None:
        return bytes(data[:8])


class NostrDriver(Driver):
    def __init__(self, session: aiohttp.ClientSession, url: str, python: str) -> None:
        super().__init__(session, url)
        self.python = python

    async def prepare(self, n_mailboxes: int, n_messages: int) -> None:
        out = subprocess.run(
            [self.python, "-c", SIGNER, str(n_mailboxes), str(n_messages)],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        self.events = [json.loads(line) for line in out.stdout.splitlines()]
        self.authors = [self.events[i]["pubkey"] for i in range(n_mailboxes)]

    async def subscribe(self, ws: Any, mailbox: int) -> None:
        await ws.send_str(
            json.dumps(["REQ", "s", {"authors": [self.authors[mailbox]], "limit": 1}])
        )
        while True:
            msg = json.loads((await ws.receive()).data)
            if msg[0] == "EOSE":
                return

    def post(self, i: int, mailbox: int) -> tuple[bytes | str, bytes]:
        event = self.events[i]
        return json.dumps(["EVENT", event]), event["id"].encode()

    def is_ack(self, data: Any) -> bool:
        return isinstance(data, str) and data.startswith('["OK"')

    def delivered_token(self, data: Any) -> bytes | None:
        msg = json.loads(data)
        return msg[2]["id"].encode() if msg[0] == "EVENT" else None


# ---------------------------------------------------------------- scenarios


class Tap:
    """A client WebSocket read from the moment it connects: one task drains
    it into a queue, so it answers the relay's pings (aiohttp answers them
    inside ``receive``) through however long set-up takes; 10,000 readers
    take minutes to connect and subscribe on two cores, past the relay's
    30-second heartbeat.  Drivers use it like the socket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.inbox: asyncio.Queue[aiohttp.WSMessage] = asyncio.Queue()
        self.task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            msg = await self.ws.receive()
            self.inbox.put_nowait(msg)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return

    async def receive(self) -> aiohttp.WSMessage:
        return await self.inbox.get()

    async def send_bytes(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def send_str(self, data: str) -> None:
        await self.ws.send_str(data)

    async def close(self) -> None:
        self.task.cancel()
        await self.ws.close()


@dataclass
class Result:
    server: str
    scenario: str
    delivered: int
    expected: int
    seconds: float
    latencies: list[float]
    idle_conn_bytes: float | None = None
    posts: int = 0
    cpu_seconds: float = 0.0  # the relay process tree's CPU while timed
    loop_seconds: float = 0.0  # of which its main thread's (the event loop)

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_post_us(self) -> float:
        return self.cpu_seconds / self.posts * 1e6 if self.posts else float("nan")

    @property
    def loop_per_post_us(self) -> float:
        return self.loop_seconds / self.posts * 1e6 if self.posts else float("nan")

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


async def run_scenario(
    driver: Driver,
    server: Server,
    scenario: str,
    n_mailboxes: int,
    readers_per_mailbox: int,
    n_messages: int,
    window: int,
    timeout: float,
    publishers: int = 0,
) -> Result:
    if isinstance(driver, NostrDriver):
        n_messages = min(n_messages, len(driver.events))
    rss0 = tree_rss(server.pid)
    readers = [Tap(await driver.connect()) for _ in range(n_mailboxes * readers_per_mailbox)]
    await asyncio.sleep(0.5)
    idle = (tree_rss(server.pid) - rss0) / len(readers)
    n_pub = publishers or max(1, n_mailboxes // 250)
    per = n_messages // n_pub
    expected = per * n_pub * readers_per_mailbox
    sent: dict[bytes, float] = {}
    lat: list[float] = []
    got = 0
    done = asyncio.Event()
    last = [0.0]
    subscribed = [0]
    all_subscribed = asyncio.Event()

    async def read(ws: Tap, mailbox: int) -> None:
        # every reader subscribes, then counts deliveries, in its own task
        nonlocal got
        await driver.subscribe(ws, mailbox)
        subscribed[0] += 1
        if subscribed[0] == len(readers):
            all_subscribed.set()
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.BINARY and msg.type != aiohttp.WSMsgType.TEXT:
                return
            now = time.perf_counter()
            token = driver.delivered_token(msg.data)
            if token is None:
                continue
            t0 = sent.get(token)
            if t0 is not None:
                lat.append(now - t0)
            got += 1
            last[0] = now
            if got >= expected:
                done.set()

    tasks = [asyncio.create_task(read(ws, i % n_mailboxes)) for i, ws in enumerate(readers)]
    await asyncio.wait_for(all_subscribed.wait(), timeout)
    groups = [list(range(p, n_mailboxes, n_pub)) for p in range(n_pub)]
    pubs = [await driver.connect() for _ in range(n_pub)]
    for ws, group in zip(pubs, groups, strict=True):
        await driver.setup_publisher(ws, group)

    async def publish(ws: Any, group: list[int], first: int, count: int) -> None:
        sem = asyncio.Semaphore(window)

        async def acks() -> None:
            async for msg in ws:
                if driver.is_ack(msg.data):
                    sem.release()

        ack_task = asyncio.create_task(acks())
        for k in range(count):
            await sem.acquire()
            data, token = driver.post(first + k, group[k % len(group)])
            sent[token] = time.perf_counter()
            if isinstance(data, str):
                await ws.send_str(data)
            else:
                await ws.send_bytes(data)
        for _ in range(window):
            await sem.acquire()
        ack_task.cancel()

    cpu0, loop0 = tree_cpu(server.pid), loop_cpu(server.pid)
    start = time.perf_counter()
    pub_tasks = [
        asyncio.create_task(publish(ws, g, p * per, per))
        for p, (ws, g) in enumerate(zip(pubs, groups, strict=True))
    ]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout)
    elapsed = (last[0] or time.perf_counter()) - start
    cpu, loop = tree_cpu(server.pid) - cpu0, loop_cpu(server.pid) - loop0
    for t in [*tasks, *pub_tasks]:
        t.cancel()
    await asyncio.gather(*tasks, *pub_tasks, return_exceptions=True)
    for ws in [*readers, *pubs]:
        await ws.close()
    return Result(server.name, scenario, got, expected, elapsed, lat, idle, per * n_pub, cpu, loop)


@contextlib.contextmanager
def launched(name: str, tmp: Path, args: argparse.Namespace) -> Iterator[Server]:
    procs: list[subprocess.Popen[bytes]] = []
    if name == "samizdat-sqlite":
        server = start_samizdat(tmp, "sqlite")
    elif name == "samizdat-nats":
        nats = start_nats(tmp)
        procs.append(nats)
        server = start_samizdat(tmp, "nats", f"nats://127.0.0.1:{nats.port}")  # type: ignore[attr-defined]
    elif name == "nostr-relay":
        server = start_nostr(tmp, args.nostr_relay)
    else:
        server = start_bare()
    server.procs = procs + server.procs
    try:
        yield server
    finally:
        server.stop()


def make_driver(
    name: str, session: aiohttp.ClientSession, server: Server, args: argparse.Namespace
) -> Driver:
    if server.kind == "samizdat":
        return SamizdatDriver(session, server.url)
    if server.kind == "nostr":
        python = str(Path(args.nostr_relay).with_name("python"))
        return NostrDriver(session, server.url, python)
    return BareDriver(session, server.url)


async def bench_one(name: str, scenario: str, args: argparse.Namespace) -> Result:
    """One run of one scenario on a freshly started server."""
    n_mb, n_readers, n_msgs = (
        (1, args.readers, args.messages_a)
        if scenario == "a"
        else (args.mailboxes, 1, args.messages_b)
    )
    with (
        tempfile.TemporaryDirectory(prefix="relay-bench-") as tmpdir,
        launched(name, Path(tmpdir), args) as server,
    ):
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            driver = make_driver(name, session, server, args)
            await driver.prepare(n_mb, n_msgs)
            return await run_scenario(
                driver,
                server,
                scenario,
                n_mb,
                n_readers,
                n_msgs,
                args.window,
                args.timeout,
                args.publishers if scenario == "b" else 0,
            )


def fmt(r: Result) -> str:
    partial = "" if r.delivered >= r.expected else f"  (PARTIAL {r.delivered}/{r.expected})"
    idle = f"{r.idle_conn_bytes / 1024:7.1f} KiB/conn" if r.idle_conn_bytes is not None else ""
    return (
        f"{r.server:16s} ({r.scenario}) {r.rate:10.0f} msg/s  p50 {r.pct(0.5):8.2f} ms  "
        f"p99 {r.pct(0.99):8.2f} ms  cpu {r.cpu_per_post_us:7.1f} us/post "
        f"(loop {r.loop_per_post_us:5.1f})  "
        f"idle {idle}{partial}"
    )


def median(xs: list[float]) -> float:
    ys = sorted(xs)
    n = len(ys)
    return (ys[n // 2] + ys[(n - 1) // 2]) / 2 if n else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    p.add_argument("--readers", type=int, default=100)
    p.add_argument("--mailboxes", type=int, default=1000)
    p.add_argument("--messages-a", type=int, default=20_000, help="posts in scenario (a)")
    p.add_argument("--messages-b", type=int, default=20_000, help="posts in scenario (b)")
    p.add_argument("--window", type=int, default=64, help="posts in flight per publisher")
    p.add_argument(
        "--publishers",
        type=int,
        default=0,
        help="publisher connections in (b); default one per 250 mailboxes",
    )
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs of each; medians")
    p.add_argument("--scenarios", default="a,b")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument(
        "--nostr-relay", default=shutil.which("nostr-relay") or "/tmp/nostr-venv/bin/nostr-relay"
    )
    p.add_argument("--only", default="samizdat-sqlite,samizdat-nats,nostr-relay,bare-aiohttp")
    args = p.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if "nostr-relay" in names and not Path(args.nostr_relay).exists():
        print(
            f"nostr-relay not found at {args.nostr_relay}: skipped "
            "(pip install nostr-relay, or pass --nostr-relay PATH)"
        )
        names.remove("nostr-relay")
    scenarios = [sc.strip() for sc in args.scenarios.split(",") if sc.strip()]
    runs: dict[tuple[str, str], list[Result]] = {}
    # Interleaved: each repeat runs every server once, so a burst of load from
    # another process on a shared machine hits all of them alike.
    for rep in range(args.repeats):
        for sc in scenarios:
            for name in names:
                try:
                    r = asyncio.run(bench_one(name, sc, args))
                except Exception as exc:
                    print(f"{name} ({sc}) run {rep + 1}: failed: {type(exc).__name__}: {exc}")
                    continue
                runs.setdefault((name, sc), []).append(r)
                print(f"run {rep + 1}: {fmt(r)}", flush=True)
    print(f"\nmedians of {args.repeats} interleaved runs:")
    rates: dict[tuple[str, str], float] = {}
    for (name, sc), rs in runs.items():
        rates[(name, sc)] = median([r.rate for r in rs])
        print(
            f"{name:16s} ({sc}) {rates[(name, sc)]:10.0f} msg/s  "
            f"p50 {median([r.pct(0.5) for r in rs]):8.2f} ms  "
            f"p99 {median([r.pct(0.99) for r in rs]):8.2f} ms  "
            f"relay cpu {median([r.cpu_per_post_us for r in rs]):7.1f} us/post "
            f"(loop {median([r.loop_per_post_us for r in rs]):5.1f})  "
            f"({sum(r.delivered < r.expected for r in rs)} partial)"
        )
    print("\nratios of median delivered msg/s (server / bare-aiohttp floor):")
    for (name, sc), rate in rates.items():
        floor = rates.get(("bare-aiohttp", sc))
        if name != "bare-aiohttp" and floor:
            print(f"  ({sc}) {name:16s}: {rate / floor:6.2f}x")


if __name__ == "__main__":
    main()
