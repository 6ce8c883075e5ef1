"""``samizdat demo``: the whole flow on one machine, in under a minute.

It starts two relays inside this process (``relay.app.create_app`` on SQLite
in a temporary directory, served on 127.0.0.1 with free ports), creates
three local identities (Alice, you; Bob, a bot that answers; Carol), makes
them contacts through invite links, puts all three in a group, and opens the
app as Alice.  Bob replies to every message and sends a photo he draws;
Carol posts an article.  On exit everything is removed, unless ``--keep
DIR`` was given (the homes stay there, passphrase ``demo``, so ``samizdat
--home DIR/bob history "Samizdat demo"`` shows what Bob received).

Nothing here is test scaffolding the app depends on: the app only receives
an open engine, as it would after the unlock screen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from client.engine import Engine

DEMO_PASSPHRASE = b"demo"
GROUP_NAME = "Samizdat demo"
WAIT = 30.0  # seconds any one setup step may take before the demo gives up

ARTICLE = """\
# Why Samizdat

*Samizdat* was the practice of copying and passing on texts the censor would
not allow, by hand, from reader to reader.

This messenger keeps that spirit:

- **No accounts.** Your identity is a key pair made on your device.
- **Dumb relays.** They store padded ciphertext they cannot read, and no
  relay is indispensable: each conversation lives on several.
- **Visible delivery.** Every message shows whether it reached a relay and
  how many members received it; gaps are reported, never silent.

> Manuscripts don't burn. (Mikhail Bulgakov)

Press **Escape** to go back to the conversation.
"""


def demo_png(width: int = 96, height: int = 64) -> bytes:
    """A small sunset picture as a PNG, built with zlib and struct only."""
    rows = []
    cx, cy, radius = width // 2, height * 2 // 3, height // 4
    for y in range(height):
        row = bytearray(b"\x00")  # filter: none
        for x in range(width):
            if (x - cx) ** 2 + (y - cy) ** 2 <= radius**2 and y < height * 3 // 4:
                pixel = (255, 200 - y, 40)
            elif y >= height * 3 // 4:
                pixel = (20, 40 + (x * 60) // width, 110 + (y % 4) * 10)
            else:
                pixel = (60 + y * 3, 40 + y, 140 - y)
            row += bytes(max(0, min(255, c)) for c in pixel)
        rows.append(bytes(row))

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + chunk(b"IEND", b"")
    )


async def _until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the demo timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _joined(engine: Engine, group_id: bytes) -> Callable[[], bool]:
    """A check for ``_until``: ``engine`` has joined the group ``group_id``."""
    return lambda: group_id in engine.groups


class Demo:
    """The demo's relays, identities and bot, all on the app's event loop."""

    def __init__(self, base: Path, *, relays: int = 2) -> None:
        self.base = base
        self.n_relays = relays
        self.runners: list[Any] = []
        self.urls: list[str] = []
        self.engines: dict[str, Engine] = {}
        self.group_id: bytes = b""
        self._tasks: set[asyncio.Task[None]] = set()
        self._answered: set[bytes] = set()
        self._bot_lock = asyncio.Lock()

    # -- relays ---------------------------------------------------------------------

    async def start_relay(self, index: int) -> str:
        from aiohttp import web

        from relay.app import create_app
        from relay.config import RelayConfig

        config = RelayConfig(host="127.0.0.1", port=0, data_dir=self.base / f"relay-{index}")
        config.metrics = False
        config.limits.shutdown_grace = 0.5
        config.data_dir.mkdir(parents=True, exist_ok=True)
        runner = web.AppRunner(create_app(config), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    # -- setup ----------------------------------------------------------------------

    async def prepare(self, step: Callable[[str], None]) -> Engine:
        step(f"Working in {self.base}")
        for i in range(self.n_relays):
            url = await self.start_relay(i)
            self.urls.append(url)
            step(f"Relay {i + 1} runs at {url} (SQLite, in this process)")
        for name in ("Alice", "Bob", "Carol"):
            engine = Engine.create(
                self.base / name.lower(), DEMO_PASSPHRASE, name, self.urls, fast_kdf=True
            )
            self.engines[name] = engine
            await engine.connect()
            step(f"Created {name}'s identity (a key pair; no account anywhere)")
        alice, bob, carol = (self.engines[n] for n in ("Alice", "Bob", "Carol"))
        for other in (bob, carol):
            await self.befriend(alice, other)
            step(f"{other.identity.name} accepted Alice's invite link: a 1:1 conversation")
        group = await alice.create_group(GROUP_NAME)
        self.group_id = group.group_id
        await alice.add_members(
            group.group_id, [alice.find_contact("Bob"), alice.find_contact("Carol")]
        )
        for other in (bob, carol):
            await _until(
                _joined(other, group.group_id),
                f"{other.identity.name} to join the group",
            )
        step(f"Alice created the group {GROUP_NAME!r} with Bob and Carol")
        self._answered = {e.message_id for e in bob.history(group.group_id)}
        bob.listeners.append(self._on_bob_event)
        self._spawn(self._opening_scene())
        step("Opening the app as Alice...")
        return alice

    async def befriend(self, a: Engine, b: Engine) -> None:
        await b.accept(await a.invite())
        a_key, b_key = a.identity.signature_pub, b.identity.signature_pub

        def friends() -> bool:
            ca, cb = a.contact(b_key), b.contact(a_key)
            return bool(ca and ca.name and ca.key_packages and cb and cb.name and cb.key_packages)

        await _until(friends, f"{a.identity.name} and {b.identity.name} to become contacts")

    async def _opening_scene(self) -> None:
        bob, carol = self.engines["Bob"], self.engines["Carol"]
        await asyncio.sleep(1.0)
        with contextlib.suppress(Exception):
            await carol.send_text(
                carol.find_conversation("Alice").group_id,
                "Hi Alice! Compare our safety numbers some time: /verify Carol",
            )
        await bob.send_text(
            self.group_id,
            "Hi Alice, I'm Bob, a bot. Type a message and I will answer. "
            "Under your messages you see where they are: sent, on relay, delivered.",
        )
        await self._send_photo(bob)
        await asyncio.sleep(0.5)
        await carol.send_article(self.group_id, "Why Samizdat", ARTICLE)

    async def _send_photo(self, engine: Engine, conv_id: bytes | None = None) -> None:
        path = self.base / "sunset.png"
        path.write_bytes(demo_png())
        await engine.send_file(conv_id or self.group_id, path)

    # -- the bot ----------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_bob_event(self, what: str, conv_id: bytes | None) -> None:
        if what == "message" and conv_id is not None:
            self._spawn(self._answer(conv_id))

    async def _answer(self, conv_id: bytes) -> None:
        bob = self.engines["Bob"]
        async with self._bot_lock:
            for entry in bob.history(conv_id, limit=20):
                if entry.outgoing or entry.message_id in self._answered:
                    continue
                self._answered.add(entry.message_id)
                if entry.sender != self.engines["Alice"].identity.signature_pub:
                    continue  # Bob answers the user, not the other demo people
                if entry.kind != "text":
                    reply = f"Thanks for the {entry.kind}!"
                else:
                    reply = f'Bob here: I got "{entry.text}"'
                try:
                    await bob.send_text(conv_id, reply)
                    if entry.kind == "text" and "photo" in entry.text.lower():
                        await self._send_photo(bob, conv_id)
                except Exception as exc:  # a bot must not die on one failed reply
                    logging.getLogger(__name__).warning("bot reply failed: %s", exc)

    # -- teardown ---------------------------------------------------------------------

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for name, engine in self.engines.items():
            if name != "Alice":  # the app closes its own engine
                with contextlib.suppress(Exception):
                    await engine.close()
        for runner in self.runners:
            with contextlib.suppress(Exception):
                await runner.cleanup()
        self.runners.clear()


def main(args: argparse.Namespace) -> int:
    """Run the demo app; returns the exit status."""
    from client.tui.app import SamizdatApp

    keep = getattr(args, "keep", None)
    if keep:
        base = Path(keep).resolve()
        if base.exists() and any(base.iterdir()):
            print(
                f"error: {base} is not empty; give --keep an empty or new directory",
                file=sys.stderr,
            )
            return 1
        base.mkdir(parents=True, exist_ok=True)
    else:
        base = Path(tempfile.mkdtemp(prefix="samizdat-demo-"))
    logging.getLogger().addHandler(logging.NullHandler())  # nothing may scribble on the screen
    demo = Demo(base)
    app = SamizdatApp(prepare=demo.prepare, cleanup=demo.stop)
    try:
        code = app.run()
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    if keep:
        print(f"demo data kept in {base} (passphrase: demo)")
    return int(code or 0)
