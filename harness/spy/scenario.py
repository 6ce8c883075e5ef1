"""The spy scenario: a small group over spy relays, with known ground truth.

Members (Alice, Bob, Carol, ... in that order) run real client engines in
this process; relays are real relay processes with the spy's logging
(``harness.spy.relay``).  Alice befriends everyone (one invite each), makes
a group of all of them, each member sends ``messages`` texts to it, and
Alice sends a file of ``file_chunks`` chunks.  With ``proxy`` every client
connection goes through a local SOCKS5 proxy (as it would through Tor).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.relay_process import RelayProcess
from harness.spy.ground import GroundTruth, as_member, recording
from harness.spy.socks import Socks5Proxy

NAMES = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi")
GROUP = "spy audit"
WAIT = 90.0  # generous: a loaded 2-core machine


class ScenarioFailed(RuntimeError):
    """The scenario itself did not complete (not an audit finding)."""


@dataclass
class SpyOptions:
    members: int = 3
    relays: int = 2
    messages: int = 2  # texts per member to the group
    file_chunks: int = 1  # chunks of the file Alice sends (0: no file)
    proxy: bool = False

    def validate(self) -> None:
        if not 2 <= self.members <= len(NAMES):
            raise ValueError(f"members must be 2 to {len(NAMES)}")
        if not 1 <= self.relays <= 8:
            raise ValueError("relays must be 1 to 8")
        if not 0 <= self.messages <= 1000 or not 0 <= self.file_chunks <= 64:
            raise ValueError("messages must be 0 to 1000, file_chunks 0 to 64")


@dataclass
class ScenarioRun:
    options: SpyOptions
    relay_urls: list[str]
    logs: list[Path]
    truth: GroundTruth
    proxy_connects: list[tuple[str, int, str]] = field(default_factory=list)
    seconds: float = 0.0


def spy_command(log: Path) -> list[str]:
    return [sys.executable, "-m", "harness.spy.relay", "--spy-log", str(log)]


def run_scenario(options: SpyOptions, workdir: Path) -> ScenarioRun:
    """Start the spy relays, drive the scenario, stop the relays.  ``workdir``
    (relay and client data, the spy logs) must be new or empty."""
    options.validate()
    if workdir.exists() and any(workdir.iterdir()):
        raise ValueError(f"the work directory {workdir} is not empty")
    workdir.mkdir(parents=True, exist_ok=True)
    logs = [workdir / f"spy-relay{i}.jsonl" for i in range(options.relays)]
    relays = [
        RelayProcess(workdir / f"relay{i}", command=spy_command(log)) for i, log in enumerate(logs)
    ]
    started = time.monotonic()
    try:
        for r in relays:
            r.start()
        truth = GroundTruth()
        with recording(truth):
            connects = asyncio.run(_drive(options, [r.url for r in relays], workdir, truth))
    finally:
        for r in relays:
            r.stop()
    return ScenarioRun(
        options, [r.url for r in relays], logs, truth, connects, time.monotonic() - started
    )


async def _eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise ScenarioFailed(f"timed out waiting for {what}")


async def _drive(
    options: SpyOptions, urls: list[str], workdir: Path, truth: GroundTruth
) -> list[tuple[str, int, str]]:
    from client.engine import Engine
    from protocol.app.attachments import CHUNK_PLAINTEXT_SIZE

    proxy = await Socks5Proxy().start() if options.proxy else None
    names = list(NAMES[: options.members])
    truth.members = names
    engines: dict[str, Any] = {}
    try:
        for name in names:
            engines[name] = Engine.create(
                workdir / name.lower(),
                b"spy scenario passphrase",
                name,
                urls,
                proxy=proxy.url if proxy else None,
                fast_kdf=True,
            )
        for name, e in engines.items():
            await as_member(name, e.connect())
        alice = engines[names[0]]
        for name in names[1:]:
            await _befriend(names[0], alice, name, engines[name])
        group = await as_member(names[0], alice.create_group(GROUP))
        contacts = [alice.find_contact(n) for n in names[1:]]
        await as_member(names[0], alice.add_members(group.group_id, contacts))
        for name in names[1:]:
            await _eventually(_joined(engines[name]), f"{name} to join the group")
        for i in range(options.messages):
            for name, e in engines.items():
                gid = e.find_conversation(GROUP).group_id
                await as_member(name, e.send_text(gid, f"message {i} from {name}"))
        expected = options.messages * (len(names) - 1)
        for name, e in engines.items():
            await _eventually(_received(e, "text", expected), f"{name} to receive every text")
        if options.file_chunks:
            path = workdir / "file.bin"
            path.write_bytes(os.urandom(options.file_chunks * CHUNK_PLAINTEXT_SIZE - 100))
            await as_member(names[0], alice.send_file(group.group_id, path))
            for name in names[1:]:
                await _eventually(_received(engines[name], "file", 1), f"{name} to get the file")
        # the jittered second copies (SPEC §7.1, at most 0.5 s late) and acks
        await asyncio.sleep(2.0)
        for name, e in engines.items():
            truth.note_mailboxes(name, e)
    finally:
        for name, e in engines.items():
            try:
                await as_member(name, e.close())
            except Exception as exc:  # a failing close must not hide the run's own error
                print(f"spy scenario: closing {name}: {exc}", file=sys.stderr)
        if proxy is not None:
            await proxy.close()
    return list(proxy.connects) if proxy is not None else []


def _joined(e: Any) -> Callable[[], bool]:
    return lambda: any(c.name == GROUP for c in e.conversations())


def _received(e: Any, kind: str, n: int) -> Callable[[], bool]:
    """``e`` holds at least ``n`` incoming entries of ``kind`` in the group."""

    def check() -> bool:
        gid = e.find_conversation(GROUP).group_id
        return sum(1 for h in e.history(gid) if h.kind == kind and not h.outgoing) >= n

    return check


async def _befriend(a_name: str, a: Any, b_name: str, b: Any) -> None:
    link = await as_member(a_name, a.invite())
    await as_member(b_name, b.accept(link))
    await _eventually(
        lambda: any(c.name == b_name for c in a.contacts()), f"{a_name} to see {b_name}"
    )
    await _eventually(
        lambda: any(c.name == a_name for c in b.contacts()), f"{b_name} to see {a_name}"
    )

    def packages() -> bool:
        ab = a.contact(b.identity.signature_pub)
        ba = b.contact(a.identity.signature_pub)
        return bool(ab and ab.key_packages and ba and ba.key_packages)

    await _eventually(packages, f"{a_name} and {b_name} to exchange key packages")
