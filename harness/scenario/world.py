"""A scenario's world: relays (each behind a malicious-relay proxy, honest or
not), client engines, the groups they share, and every message sent.

Every relay is fronted by a :class:`~harness.malicious.MaliciousRelay`; an
honest relay's proxy has no faults and serves only as the tap that records
deliveries and ciphertext hashes, and as the switch that blocks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.engine import Engine, EngineError
from client.store import Store
from harness.hostile import AttackRecord, HostileMember
from harness.malicious import MaliciousRelay
from harness.scenario.checks import FORK_WORDS
from harness.scenario.format import RelaySpec, Scenario, ScenarioError
from harness.scenario.relays import LocalRelay, ProcessRelay

PASSPHRASE = b"harness passphrase"


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def member_address(index: int) -> str:
    """Member ``index``'s own source address, in loopback's 127.0.0.0/8."""
    n = index + 10
    return f"127.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


@dataclass
class RelayHandle:
    spec: RelaySpec
    upstream: LocalRelay | ProcessRelay
    proxy: MaliciousRelay
    killed: bool = False

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def data_dir(self) -> Path:
        return self.upstream.data_dir


@dataclass
class Member:
    name: str
    display: str
    home: Path
    engine: Engine


@dataclass
class Sent:
    message_id: bytes
    group: str
    sender: str
    kind: str  # text | file
    body: str  # the text, or the file name
    sent_ms: int
    recipients: list[str]
    canary: bytes = b""


@dataclass
class GroupRec:
    label: str
    conv_id: bytes
    creator: str
    members: set[str] = field(default_factory=set)


@dataclass
class ActionRecord:
    t: float
    do: str
    took: float = 0.0
    error: str = ""
    detail: str = ""


class World(HostileMember):
    """Relays and engines for one run; actions mutate it, checks read it."""

    def __init__(self, scenario: Scenario, workdir: Path) -> None:
        self.scenario = scenario
        self.workdir = workdir
        self.rng = random.Random(scenario.seed)
        self.token = f"{self.rng.getrandbits(32):08x}"
        self.relays: dict[str, RelayHandle] = {}
        self.members: dict[str, Member] = {}
        self.groups: dict[str, GroupRec] = {}
        self.sent: list[Sent] = []
        self.canaries: list[bytes] = []
        self.actions: list[ActionRecord] = []
        self.background: list[asyncio.Task[Any]] = []
        self.t0 = time.monotonic()
        self.t0_ms = int(time.time() * 1000)
        self.notes: list[str] = []
        self.files: dict[str, Path] = {}
        self.attacks: list[AttackRecord] = []
        # each member's epoch changes, in the order it applied them:
        # (member, group id, epoch, epoch authenticator, seconds since t0)
        self.epochs: list[tuple[str, bytes, int, bytes, float]] = []

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    # -- set-up ------------------------------------------------------------------

    async def start_relays(self) -> None:
        for i, spec in enumerate(self.scenario.relays):
            data = self.workdir / "relays" / spec.name
            upstream: LocalRelay | ProcessRelay
            if spec.process:
                upstream = ProcessRelay(data)
            else:
                upstream = LocalRelay(data, limits=dict(spec.limits))
            await upstream.start()
            proxy = MaliciousRelay(
                upstream.url, list(spec.faults), seed=self.scenario.seed * 1000 + i
            )
            await proxy.start()
            self.relays[spec.name] = RelayHandle(spec, upstream, proxy)

    async def start_members(self) -> None:
        urls = [self.relays[r].url for r in self.scenario.clients.relays]
        for i in range(self.scenario.clients.count):
            name = f"m{i}"
            home = self.workdir / "clients" / name
            engine = Engine.create(home, PASSPHRASE, f"Member-{name}", urls, fast_kdf=True)
            # each member connects from an address of its own (loopback
            # 127.0.0.0/8): like a user without Tor, whom a relay tells by address
            engine.local_addr = member_address(i)
            self.members[name] = Member(name, f"Member-{name}", home, engine)
            engine.listeners.append(self._epoch_recorder(name, engine))
        await asyncio.gather(*(m.engine.connect() for m in self.members.values()))
        # "member:NAME" reader selectors become that member's connections,
        # told by their source address: every connection reads one mailbox
        # (SPEC.md §7.1 "Connection roles"), so without Tor the address is
        # what a relay singles a member out by
        for handle in self.relays.values():
            for fault in handle.proxy.faults:
                if fault.reader.startswith("member:"):
                    who = self.members[fault.reader[7:]].engine
                    if who.local_addr:
                        fault.reader = "addr:" + who.local_addr

    def _epoch_recorder(self, name: str, engine: Engine) -> Any:
        """A listener noting each epoch this member's client moves to (the
        report's per-member commit order: what one debugs a fork with)."""
        last: dict[bytes, tuple[int, bytes]] = {}

        def changed(what: str, conv: bytes | None) -> None:
            group = engine.groups.get(conv) if conv is not None else None
            if group is None or conv is None:
                return
            now = (group.epoch, group.epoch_authenticator)
            if last.get(conv) != now:
                last[conv] = now
                self.epochs.append((name, conv, now[0], now[1], self.elapsed()))

        return changed

    async def stop(self) -> None:
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        for m in self.members.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(m.engine.close(), 10)
        for r in self.relays.values():
            with contextlib.suppress(Exception):
                await r.proxy.stop()
            with contextlib.suppress(Exception):
                await r.upstream.stop()

    # -- selectors -------------------------------------------------------------------

    def select(
        self, sel: Any, *, exclude: str | None = None, group: str | None = None
    ) -> list[str]:
        """Member names: "all", "others", "mN", a list, "first:N", "last:N",
        "random:N" (seeded); within ``group``'s members when given."""
        pool = sorted(
            self.groups[group].members if group else self.members,
            key=lambda n: int(n[1:]),
        )
        if isinstance(sel, list):
            out = [str(s) for s in sel]
        elif sel in ("all", "others", None):
            out = list(pool)
        elif isinstance(sel, str) and ":" in sel:
            how, _, n = sel.partition(":")
            k = int(n)
            if how == "first":
                out = pool[:k]
            elif how == "last":
                out = pool[-k:]
            elif how == "random":
                out = sorted(self.rng.sample(pool, min(k, len(pool))), key=lambda s: int(s[1:]))
            else:
                raise ScenarioError(f"unknown member selector {sel!r}")
        else:
            out = [str(sel)]
        for name in out:
            if name not in self.members:
                raise ScenarioError(f"no member {name!r}")
        return [n for n in out if n != exclude]

    def engine(self, name: str) -> Engine:
        return self.members[name].engine

    def group(self, label: str) -> GroupRec:
        if label not in self.groups:
            raise ScenarioError(f"no group {label!r} (create_group first)")
        return self.groups[label]

    # -- actions ---------------------------------------------------------------------

    async def run_action(self, action: dict[str, Any]) -> ActionRecord:
        rec = ActionRecord(round(self.elapsed(), 3), action["do"])
        self.actions.append(rec)
        start = time.monotonic()
        handler: Callable[[dict[str, Any]], Awaitable[str | None]] = getattr(
            self, "do_" + action["do"]
        )
        try:
            rec.detail = (await handler(action)) or ""
        except (EngineError, TimeoutError, OSError, RuntimeError) as exc:
            rec.error = f"{type(exc).__name__}: {exc}"
        rec.took = round(time.monotonic() - start, 3)
        return rec

    async def do_wait(self, a: dict[str, Any]) -> None:
        await asyncio.sleep(float(a.get("seconds", 1.0)))

    async def do_join(self, a: dict[str, Any]) -> None:
        tasks, self.background = self.background, []
        await asyncio.gather(*tasks, return_exceptions=True)

    async def befriend(self, a: str, b: str, timeout: float = 60.0) -> None:
        """``b`` accepts ``a``'s invite; both hold each other's KeyPackages."""
        ea, eb = self.engine(a), self.engine(b)
        existing = ea.contact(eb.identity.signature_pub)
        if existing is not None and existing.key_packages and existing.conversation:
            return
        if existing is None or not existing.conversation:
            await eb.accept(await ea.invite())

        def ready() -> bool:
            c = ea.contact(eb.identity.signature_pub)
            return c is not None and bool(c.key_packages) and bool(c.name)

        await eventually(ready, timeout, f"{a} to hold {b}'s KeyPackages")

    async def _befriend_all(self, a: str, others: list[str]) -> None:
        sem = asyncio.Semaphore(4)

        async def one(b: str) -> None:
            async with sem:
                await self.befriend(a, b)

        await asyncio.gather(*(one(b) for b in others))

    async def do_befriend(self, a: dict[str, Any]) -> None:
        by = str(a.get("by", "m0"))
        await self._befriend_all(by, self.select(a.get("members", "others"), exclude=by))

    async def do_create_group(self, a: dict[str, Any]) -> str:
        by = str(a.get("by", "m0"))
        label = str(a.get("group", "g"))
        members = self.select(a.get("members", "all"), exclude=by)
        await self._befriend_all(by, members)
        engine = self.engine(by)
        conv = await engine.create_group(str(a.get("name", label)))
        rec = GroupRec(label, conv.group_id, by, {by})
        self.groups[label] = rec
        if members:
            await self._add(rec, by, members)
        return f"{len(rec.members)} members"

    async def _add(self, rec: GroupRec, by: str, names: list[str]) -> None:
        engine = self.engine(by)
        contacts = []
        for n in names:
            c = engine.contact(self.engine(n).identity.signature_pub)
            assert c is not None
            contacts.append(c)
        await engine.add_members(rec.conv_id, contacts)
        rec.members.update(names)
        await eventually(
            lambda: all(rec.conv_id in self.engine(n).groups for n in names),
            60.0,
            "new members to join from the Welcome",
        )

    async def do_add_members(self, a: dict[str, Any]) -> None:
        rec = self.group(str(a.get("group", "g")))
        by = str(a.get("by", rec.creator))
        names = [n for n in self.select(a.get("members")) if n not in rec.members]
        await self._befriend_all(by, names)
        await self._add(rec, by, names)

    async def do_remove_member(self, a: dict[str, Any]) -> None:
        rec = self.group(str(a.get("group", "g")))
        by = str(a.get("by", rec.creator))
        for name in self.select(a.get("member"), group=rec.label):
            await self.engine(by).remove_member(
                rec.conv_id, self.engine(name).identity.signature_pub
            )
            rec.members.discard(name)

    async def do_set_admin(self, a: dict[str, Any]) -> None:
        rec = self.group(str(a.get("group", "g")))
        by = str(a.get("by", rec.creator))
        admin = bool(a.get("admin", True))
        for name in self.select(a.get("member"), group=rec.label):
            await self.engine(by).set_admin(
                rec.conv_id, self.engine(name).identity.signature_pub, admin
            )

    def _text(self, sender: str, index: int, size: int) -> tuple[str, bytes]:
        canary = f"CANARY-{self.token}-{sender}-{index}-{self.rng.getrandbits(24):06x}"
        text = f"{canary} {sender} says hello #{index}"
        if size > len(text):
            text += " " + "lorem ipsum " * ((size - len(text)) // 12)
        return text, canary.encode()

    async def do_send(self, a: dict[str, Any]) -> str:
        rec = self.group(str(a.get("group", "g")))
        senders = self.select(a.get("from", "all"), group=rec.label)
        count = int(a.get("count", 1))
        rate = float(a.get("rate", 0))
        size = int(a.get("size", 0))
        kind = str(a.get("kind", "text"))
        errors: list[str] = []

        async def one_sender(name: str) -> None:
            engine = self.engine(name)
            for i in range(count):
                index = sum(1 for s in self.sent if s.sender == name)
                text, canary = self._text(name, index, size)
                recipients = sorted(rec.members - {name})
                sent_ms = int(time.time() * 1000)
                try:
                    if kind == "article":
                        mid = await engine.send_article(rec.conv_id, f"article {index}", text)
                    else:
                        mid = await engine.send_text(rec.conv_id, text)
                except EngineError as exc:
                    errors.append(str(exc))
                    continue
                self.sent.append(
                    Sent(mid, rec.label, name, kind, text, sent_ms, recipients, canary)
                )
                self.canaries.append(canary)
                if rate > 0 and i + 1 < count:
                    await asyncio.sleep(1.0 / rate)

        coro = asyncio.gather(*(one_sender(n) for n in senders))
        if a.get("background"):
            self.background.append(asyncio.ensure_future(coro))
            return "in background"
        await coro
        if errors:
            raise EngineError(f"{len(errors)} send(s) failed: {errors[0]}")
        return f"{len(senders) * count} messages"

    async def do_send_file(self, a: dict[str, Any]) -> str:
        rec = self.group(str(a.get("group", "g")))
        senders = self.select(a.get("from", "all"), group=rec.label)
        size = int(a.get("size", 300_000))
        same = bool(a.get("same", True))
        made: list[Path] = []

        def make_file(tag: str) -> Path:
            path = self.workdir / "files" / f"photo-{tag}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            canary = f"CANARY-{self.token}-file-{tag}".encode()
            path.write_bytes(canary + os.urandom(max(0, size - len(canary))))
            self.canaries.append(canary)
            return path

        for name in senders:
            path = made[0] if same and made else make_file(name)
            made.append(path)
            sent_ms = int(time.time() * 1000)
            mid = await self.engine(name).send_file(rec.conv_id, path)
            self.sent.append(
                Sent(mid, rec.label, name, "file", path.name, sent_ms, sorted(rec.members - {name}))
            )
            self.files[mid.hex()] = path
        return f"{len(senders)} file(s) of {size} B"

    async def do_commit_race(self, a: dict[str, Any]) -> str:
        """Several members commit at the same moment (a disappearing-timer
        change each), so the ordering relay must pick one."""
        rec = self.group(str(a.get("group", "g")))
        names = self.select(a.get("by", "first:2"), group=rec.label)
        results = await asyncio.gather(
            *(
                self.engine(n).set_disappearing(rec.conv_id, 3_600_000 * (i + 1))
                for i, n in enumerate(names)
            ),
            return_exceptions=True,
        )
        errs = [
            f"{n}: {r}" for n, r in zip(names, results, strict=True) if isinstance(r, Exception)
        ]
        return "; ".join(errs) if errs else f"{len(names)} commits raced"

    async def do_move_relay(self, a: dict[str, Any]) -> None:
        old = self.relays[str(a["old"])].url
        new = self.relays[str(a["new"])].url if a.get("new") else None
        for name in self.select(a.get("who", "all")):
            engine = self.engine(name)
            if old in engine.identity.relays:
                await engine.move_relay(old, new)

    async def do_kill_relay(self, a: dict[str, Any]) -> None:
        handle = self.relays[str(a["relay"])]
        handle.killed = True
        handle.proxy.go_dark()
        await handle.upstream.stop()

    async def do_block_relay(self, a: dict[str, Any]) -> None:
        handle = self.relays[str(a["relay"])]
        handle.proxy.go_dark(str(a.get("mode", "close")))
        if a.get("seconds"):

            async def later() -> None:
                await asyncio.sleep(float(a["seconds"]))
                handle.proxy.come_back()

            self.background.append(asyncio.ensure_future(later()))

    async def do_arm_fault(self, a: dict[str, Any]) -> str:
        """Start fault number ``fault`` of ``relay`` now (give it a far ``after``)."""
        proxy = self.relays[str(a["relay"])].proxy
        fault = proxy.faults[int(a.get("fault", 0))]
        fault.after = proxy.log.elapsed()
        if a.get("seconds"):
            fault.until = fault.after + float(a["seconds"])
        return f"{fault.kind} armed at {fault.after:.2f}s"

    async def do_unblock_relay(self, a: dict[str, Any]) -> None:
        self.relays[str(a["relay"])].proxy.come_back()

    async def do_restart_client(self, a: dict[str, Any]) -> None:
        for name in self.select(a.get("who")):
            m = self.members[name]
            await m.engine.close()
            local_addr, m.engine = m.engine.local_addr, Engine.open(m.home, PASSPHRASE)
            m.engine.local_addr = local_addr
            await m.engine.connect()

    async def do_export_import(self, a: dict[str, Any]) -> None:
        for name in self.select(a.get("who")):
            m = self.members[name]
            backup = self.workdir / "backups" / f"{name}.backup"
            backup.parent.mkdir(parents=True, exist_ok=True)
            m.engine.export_backup(backup, b"backup words")
            await m.engine.close()
            home = m.home.with_name(m.home.name + "-restored")
            Store.import_backup(backup, b"backup words", home, PASSPHRASE, fast_kdf=True).close()
            m.home = home
            local_addr, m.engine = m.engine.local_addr, Engine.open(home, PASSPHRASE)
            m.engine.local_addr = local_addr
            await m.engine.connect()

    async def do_settle(self, a: dict[str, Any]) -> str:
        timeout = float(a.get("timeout", self.scenario.settle))
        ok = await self.settle(timeout)
        return "all delivered" if ok else "not everything arrived"

    # -- delivery bookkeeping --------------------------------------------------------

    def delivered_ids(self, name: str, label: str) -> dict[bytes, int]:
        """message id -> received_at_ms in ``name``'s history of group ``label``."""
        engine = self.engine(name)
        conv_id = self.groups[label].conv_id
        if conv_id not in engine.groups:
            return {}
        return {e.message_id: e.received_at_ms for e in engine.history(conv_id) if not e.outgoing}

    def expected(self) -> list[tuple[Sent, str]]:
        """(message, reader) pairs that should be delivered: readers that were
        members when it was sent and still are."""
        out: list[tuple[Sent, str]] = []
        for s in self.sent:
            current = self.groups[s.group].members
            out.extend((s, r) for r in s.recipients if r in current)
        return out

    def fork_reported(self) -> bool:
        """Whether a client has told its user that a group forked."""
        return any(
            any(w in n.text.lower() for w in FORK_WORDS)
            for m in self.members.values()
            for n in m.engine.notices
        )

    async def settle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            pending = self.expected()
            seen: dict[tuple[str, str], dict[bytes, int]] = {}
            missing = 0
            for s, r in pending:
                key = (r, s.group)
                if key not in seen:
                    seen[key] = self.delivered_ids(r, s.group)
                if s.message_id not in seen[key]:
                    missing += 1
            if not missing:
                return True
            if self.fork_reported():
                # a forked group never delivers everything: once a client has
                # said so, waiting out the timeout adds nothing (and a short
                # timeout would end the run before a loaded machine said it)
                return False
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.5)
