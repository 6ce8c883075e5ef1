"""The attacker of ``bench/abuse.py``: a separate process, so that its work
never runs on the victim's event loop.

    python bench/abuse_attack.py < config.json

The configuration (JSON on stdin) names the ``kind`` of abuse, the relay's
port on 127.0.0.1, the source addresses to use (127.0.0.2 and up: loopback,
but not the victim's 127.0.0.1, so per-address limits see a stranger, as they
would on a real network) and the figures.  Every socket goes to 127.0.0.1.

The process prints one JSON line ``{"event": "ready", ...}`` once the abuse
is at full strength, keeps it up until SIGTERM (or ``seconds``), closes
everything and prints ``{"event": "done", ...}`` with its counters.

Kinds:

* ``flood``: post sealed junk "welcome" envelopes of 64 KiB into an invite's
  mailbox with the link's write capability, ``in_flight`` at a time; when
  the relay answers QuotaExceeded, wait and go on (the owner drains).
* ``hold``: ``idle`` WebSockets that only answer pings, plus ``uploads`` blob
  PUTs that send 1 KiB of a 256 KiB chunk then trickle 16 bytes a second;
  whatever the relay closes or refuses is opened again after a pause.
* ``random``: ``workers`` loops, ``rate`` operations a second in total, each
  one of: random bytes on a raw TCP connection, a random binary frame on a
  WebSocket, a random envelope of a valid size posted with an invite's
  write capability (it does not open with the mailbox's seal key).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client.invites import read_invite_link
from client.relay_client import RelayClient
from protocol.app.envelope import EnvelopeType, split
from protocol.app.sealed import MAX_SEALED_PLAINTEXT, seal, seal_key
from protocol.errors import (
    DecodeError,
    RemoteError,
)
from protocol.padding import BLOB_CHUNK_SIZE, ENVELOPE_BUCKETS
from protocol.relay_frames import (
    BlobTicket,
    Challenge,
    QuotaExceeded,
    decode_server_frame,
)

HOST = "127.0.0.1"
UPLOADS_PER_TICKET = 8  # the relay's default max_uploads_per_blob


class BoundRelayClient(RelayClient):
    """The real relay client, its sockets bound to one source address."""

    def __init__(self, url: str, local: str) -> None:
        super().__init__(url, _ignore, request_timeout=30.0, max_backoff=2.0)
        self.local = local

    def _make_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(local_addr=(self.local, 0), limit=0)
        return aiohttp.ClientSession(connector=connector)


def _is_challenge(msg: aiohttp.WSMessage) -> bool:
    if msg.type != aiohttp.WSMsgType.BINARY:
        return False
    try:
        return isinstance(decode_server_frame(msg.data), Challenge)
    except DecodeError:
        return False


async def _ignore(url: str, mailbox_id: bytes, seq: int, envelope: bytes) -> None:
    return None


class Attack:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.port = int(cfg["port"])
        self.url = f"http://{HOST}:{self.port}"
        self.addresses: list[str] = list(cfg["addresses"])
        self.stop = asyncio.Event()
        self.counts: dict[str, int] = {}
        self.held = {"idle": 0, "uploads": 0}
        self.tried: set[int] = set()
        self.ramp: dict[str, float] = {}  # upload workers that made their first attempt
        self.peak = {"idle": 0, "uploads": 0}
        self.sessions: dict[str, aiohttp.ClientSession] = {}

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def hold(self, key: str, delta: int) -> None:
        self.held[key] += delta
        self.peak[key] = max(self.peak[key], self.held[key])

    def session(self, address: str) -> aiohttp.ClientSession:
        if address not in self.sessions:
            connector = aiohttp.TCPConnector(local_addr=(address, 0), limit=0, force_close=True)
            self.sessions[address] = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None, connect=10)
            )
        return self.sessions[address]

    async def pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def close(self) -> None:
        for s in self.sessions.values():
            await s.close()

    # -- flood ------------------------------------------------------------------

    async def flood(self, ready: asyncio.Event) -> None:
        # what a censor holding the link reads while the invite is live
        invite = await read_invite_link(self.cfg["link"], int(time.time() * 1000))
        box = invite.inboxes[0]
        key = seal_key(box.write_seed)
        client = BoundRelayClient(box.relay_url, self.addresses[0])
        client.start()

        async def one() -> None:
            piece = split(
                EnvelopeType.WELCOME, os.urandom(60_000), os.urandom, max_size=MAX_SEALED_PLAINTEXT
            )[0]
            sealed = seal(key, box.mailbox_id, piece, os.urandom, full=True)
            try:
                await client.post(box.mailbox_id, box.write_seed, os.urandom(16), sealed)
                self.count("posted")
                self.count("posted_bytes", len(sealed))
            except QuotaExceeded:
                self.count("quota_exceeded")
                await self.pause(0.5)
            except (RemoteError, OSError) as exc:
                self.count("refused_" + type(exc).__name__)
                await self.pause(0.5)

        async def worker() -> None:
            while not self.stop.is_set():
                await one()

        try:
            ready.set()
            await asyncio.gather(*(worker() for _ in range(int(self.cfg.get("in_flight", 32)))))
        finally:
            await client.close()

    # -- hold: idle WebSockets and slow uploads -----------------------------------

    async def idle_socket(self, address: str) -> None:
        while not self.stop.is_set():
            try:
                ws = await self.session(address).ws_connect(
                    f"ws://{HOST}:{self.port}/ws", autoping=True, heartbeat=None
                )
            except (aiohttp.ClientError, OSError):
                self.count("idle_connect_failed")
                await self.pause(1.0)
                continue
            first = True
            held = False
            try:
                async for msg in ws:
                    # the relay's first frame is its challenge; an Error
                    # followed by a close is a refusal (rate or cap)
                    if first and _is_challenge(msg):
                        first, held = False, True
                        self.hold("idle", 1)
                        self.count("idle_opened")
                    elif first:
                        self.count("idle_refused")
                        break
                    if self.stop.is_set():
                        break
            except (aiohttp.ClientError, OSError):
                pass
            finally:
                if held:
                    self.hold("idle", -1)
                    if not self.stop.is_set():
                        self.count("idle_closed_by_relay")
                with contextlib.suppress(Exception):
                    await ws.close()
            await self.pause(1.0)

    async def _tickets(self, n: int) -> list[BlobTicket]:
        tickets: list[BlobTicket] = []
        for i in range(n):
            address = self.addresses[i % len(self.addresses)]
            try:
                async with self.session(address).post(f"{self.url}/blob") as resp:
                    body = await resp.read()
                    if resp.status == 201:
                        tickets.append(BlobTicket.decode(body))
                    else:
                        self.count(f"ticket_refused_{resp.status}")
            except (aiohttp.ClientError, OSError):
                self.count("ticket_failed")
        return tickets

    async def slow_upload(self, worker: int, address: str, ticket: BlobTicket, index: int) -> None:
        head = (
            f"PUT /blob/{ticket.blob_id.hex()}/{index} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            f"Authorization: Bearer {ticket.upload_token.hex()}\r\n"
            f"Content-Length: {BLOB_CHUNK_SIZE}\r\n\r\n"
        ).encode()
        while not self.stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(
                    HOST, self.port, local_addr=(address, 0)
                )
            except OSError:
                self.count("upload_connect_failed")
                await self.pause(1.0)
                continue
            self.hold("uploads", 1)
            self.count("uploads_opened")
            try:
                writer.write(head + b"\0" * 1024)
                while not self.stop.is_set():
                    try:
                        data = await asyncio.wait_for(reader.read(64), 1.0)
                    except TimeoutError:
                        writer.write(b"\0" * 16)  # 16 bytes a second: a slow line
                        await writer.drain()
                        self.tried.add(worker)  # held for a second at least
                        continue
                    self.tried.add(worker)
                    if data.startswith(b"HTTP/1.1 408") or not data:
                        self.count("uploads_closed_by_relay")
                    else:
                        self.count("uploads_refused_" + data[9:12].decode("ascii", "replace"))
                    break
            except OSError:
                self.count("uploads_closed_by_relay")
            finally:
                self.hold("uploads", -1)
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            await self.pause(1.0)

    async def hold_sockets(self, ready: asyncio.Event) -> None:
        idle, uploads = int(self.cfg["idle"]), int(self.cfg["uploads"])
        tickets = await self._tickets(-(-uploads // UPLOADS_PER_TICKET))
        tasks = [
            asyncio.create_task(self.idle_socket(self.addresses[i % len(self.addresses)]))
            for i in range(idle)
        ]
        for i in range(uploads if tickets else 0):
            ticket = tickets[(i // UPLOADS_PER_TICKET) % len(tickets)]
            address = self.addresses[i % len(self.addresses)]
            tasks.append(
                asyncio.create_task(self.slow_upload(i, address, ticket, i % UPLOADS_PER_TICKET))
            )
        # ready: every idle socket is held (or the ramp time is over) and every
        # upload has been held for a second or answered (a refusal counts:
        # the relay's caps decide how many are held, not the attacker)
        start = time.monotonic()
        deadline = start + float(self.cfg.get("ramp", 20.0))
        while time.monotonic() < deadline and not self.stop.is_set():
            if self.held["idle"] >= idle and "idle_s" not in self.ramp:
                self.ramp["idle_s"] = round(time.monotonic() - start, 1)
            if len(self.tried) >= uploads and "uploads_s" not in self.ramp:
                self.ramp["uploads_s"] = round(time.monotonic() - start, 1)
            if len(self.ramp) == 2:
                break
            await asyncio.sleep(0.2)
        ready.set()
        await self.stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- random bytes ------------------------------------------------------------------

    async def random_raw(self, address: str) -> None:
        try:
            reader, writer = await asyncio.open_connection(HOST, self.port, local_addr=(address, 0))
        except OSError:
            self.count("raw_connect_failed")
            return
        try:
            writer.write(os.urandom(random.randint(1, 16_384)))
            await writer.drain()
            await asyncio.wait_for(reader.read(), 10.0)  # the relay answers and closes
            self.count("raw_sent")
        except (OSError, TimeoutError):
            self.count("raw_held_10s")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def random_frame(self, address: str) -> None:
        try:
            ws = await self.session(address).ws_connect(f"ws://{HOST}:{self.port}/ws")
        except (aiohttp.ClientError, OSError):
            self.count("ws_connect_failed")
            return
        try:
            await asyncio.wait_for(ws.receive(), 10.0)  # challenge (or refusal)
            await ws.send_bytes(os.urandom(random.randint(1, 65_536)))
            while True:
                msg = await asyncio.wait_for(ws.receive(), 10.0)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    break
            self.count("ws_frames_sent")
        except (OSError, TimeoutError, aiohttp.ClientError):
            self.count("ws_held_10s")
        finally:
            await ws.close()

    async def random_bytes(self, ready: asyncio.Event) -> None:
        # what a censor holding the link reads while the invite is live
        invite = await read_invite_link(self.cfg["link"], int(time.time() * 1000))
        box = invite.inboxes[0]
        poster = BoundRelayClient(box.relay_url, self.addresses[-1])
        poster.start()
        rate = float(self.cfg.get("rate", 100.0))
        budget = asyncio.Semaphore(0)

        async def refill() -> None:
            while not self.stop.is_set():
                budget.release()
                await asyncio.sleep(1.0 / rate)

        async def post_random() -> None:
            junk = os.urandom(random.choice(ENVELOPE_BUCKETS))
            try:
                await poster.post(box.mailbox_id, box.write_seed, os.urandom(16), junk)
                self.count("envelopes_posted")
            except (RemoteError, OSError) as exc:
                self.count("envelopes_refused_" + type(exc).__name__)

        async def worker(i: int) -> None:
            address = self.addresses[i % len(self.addresses)]
            while not self.stop.is_set():
                await budget.acquire()
                if self.stop.is_set():
                    return
                op = random.choice((self.random_raw, self.random_frame, None))
                await (post_random() if op is None else op(address))

        refiller = asyncio.create_task(refill())
        workers = [asyncio.create_task(worker(i)) for i in range(int(self.cfg.get("workers", 16)))]
        ready.set()
        await self.stop.wait()
        for _ in workers:
            budget.release()
        await asyncio.wait(workers, timeout=12.0)
        for t in [refiller, *workers]:
            t.cancel()
        await asyncio.gather(refiller, *workers, return_exceptions=True)
        await poster.close()


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def main() -> None:
    cfg = json.loads(sys.stdin.read())
    attack = Attack(cfg)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, attack.stop.set)
    loop.add_signal_handler(signal.SIGINT, attack.stop.set)
    ready = asyncio.Event()
    run = {"flood": attack.flood, "hold": attack.hold_sockets, "random": attack.random_bytes}
    task = asyncio.create_task(run[cfg["kind"]](ready))
    started = time.monotonic()
    await asyncio.wait(
        [task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED
    )
    emit(
        "ready",
        held=dict(attack.held),
        took=round(time.monotonic() - started, 2),
        **({"ramp": attack.ramp} if attack.ramp else {}),
    )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(attack.stop.wait(), float(cfg.get("seconds", 300)))
    attack.stop.set()
    try:
        await asyncio.wait_for(task, 20.0)
    except TimeoutError:
        attack.count("stuck_at_stop")
    await attack.close()
    usage = os.times()
    emit(
        "done",
        counts=attack.counts,
        peak=attack.peak,
        cpu_s=round(usage.user + usage.system, 1),
    )


if __name__ == "__main__":
    socket.setdefaulttimeout(10)
    asyncio.run(main())
