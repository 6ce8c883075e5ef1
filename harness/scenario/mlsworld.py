"""Scale mode (``clients.mode = "mls"``): hundreds of members as in-process
MLS groups (``protocol.mls.group``) over a real relay.

Full engines cost a store, a relay connection and a 1:1 conversation per
member; this mode keeps what matters for a large group's figures and drops
the rest.  Every member holds a real :class:`~protocol.mls.group.Group`;
commits, Welcomes and application messages are sealed and fragmented exactly
as the client does (``protocol.app.sealed``, ``protocol.app.envelope``) and
travel through the relay (behind its malicious-relay tap): one group mailbox,
plus one "lobby" mailbox that carries each Welcome once for all the members
it adds (a Welcome is encrypted to each new member's KeyPackage, so one copy
serves them all).  Members share ``clients.connections`` reader connections,
each of which hands every delivered message to its members in relay order.

The driver is sequential like a group's ordering relay: one operation
(commit or message), then a barrier until every member has processed it,
which is when its figures are taken: commit build time and size, Welcome
size, each joiner's join time (from posting to a usable group) and CPU cost,
and per-member delivery latency of application messages.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.relay_client import RelayClient
from harness.scenario import checks as C
from harness.scenario.format import Scenario
from harness.scenario.runner import REPORT_VERSION, overall, relay_reports
from harness.scenario.world import World
from protocol.app.envelope import Envelope, EnvelopeType, Reassembler, split
from protocol.app.group_meta import MailboxRef, new_mailbox_ref
from protocol.app.sealed import MAX_SEALED_PLAINTEXT, seal, seal_key, unseal
from protocol.errors import SamizdatError
from protocol.mls.crypto import get_suite
from protocol.mls.events import ApplicationMessageReceived, RemovedFromGroup
from protocol.mls.group import Group
from protocol.mls.key_package import KeyPackageBundle, SigningIdentity, create_key_package
from protocol.mls.messages import MLSMessage
from protocol.mls.welcome import key_package_ref

BARRIER_TIMEOUT = 120.0


def _rng_from(r: random.Random) -> Any:
    return lambda n: r.randbytes(n)


@dataclass
class MlsMember:
    name: str
    rng: Any
    identity: SigningIdentity
    group: Group | None = None
    bundle: KeyPackageBundle | None = None
    kp_ref: bytes = b""
    conn: int = 0
    removed: bool = False
    join_posted: float = 0.0
    join_ms: float = 0.0  # posting the Welcome -> group usable
    join_cpu_ms: float = 0.0  # Group.join alone
    received: dict[str, float] = field(default_factory=dict)  # msg tag -> latency ms


class MlsWorld:
    def __init__(self, scenario: Scenario, workdir: Path) -> None:
        self.scenario = scenario
        self.suite = get_suite(scenario.clients.suite)
        self.base = World(scenario, workdir)  # relays and the action log
        self.rand = random.Random(scenario.seed)
        self.rng = _rng_from(self.rand)
        self.members: dict[str, MlsMember] = {}
        self.conns: list[RelayClient] = []
        self.writer: RelayClient | None = None
        self.group_box: MailboxRef | None = None
        self.lobby: MailboxRef | None = None
        self.reassemblers: list[Reassembler] = []
        self.commits: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.canaries: list[bytes] = []
        self.next_index = 0
        self.now = int(time.time())

    # -- set-up ------------------------------------------------------------------

    async def start(self) -> None:
        await self.base.start_relays()
        url = self.base.relays[self.scenario.clients.relays[0]].url
        self.group_box = new_mailbox_ref(url, self.rng)
        self.lobby = new_mailbox_ref(url, self.rng)
        self.writer = RelayClient(url, self._ignore)
        self.writer.start()
        for box in (self.group_box, self.lobby):
            await self.writer.create_mailbox(box.mailbox_id, box.read_seed, box.write_seed)
        k = max(1, min(self.scenario.clients.connections, self.scenario.clients.count))
        for i in range(k):
            conn = RelayClient(url, self._deliverer(i))
            conn.start()
            self.conns.append(conn)
            self.reassemblers.append(Reassembler())
            await conn.subscribe(self.group_box.mailbox_id, self.group_box.read_seed)
        await self.conns[0].subscribe(self.lobby.mailbox_id, self.lobby.read_seed)

    async def stop(self) -> None:
        for c in [*self.conns, *([self.writer] if self.writer else [])]:
            await c.close()
        await self.base.stop()

    async def _ignore(self, *_: Any) -> None:
        return None

    def new_member(self) -> MlsMember:
        name = f"m{self.next_index}"
        r = random.Random(f"{self.scenario.seed}/{name}")
        rng = _rng_from(r)
        m = MlsMember(name, rng, SigningIdentity.generate(self.suite, name.encode(), rng))
        m.conn = self.next_index % max(1, len(self.conns))
        self.next_index += 1
        self.members[name] = m
        return m

    def active(self) -> list[MlsMember]:
        return [m for m in self.members.values() if m.group is not None and not m.removed]

    # -- transport -----------------------------------------------------------------

    async def post(self, box: MailboxRef, kind: EnvelopeType, payload: bytes) -> int:
        assert self.writer is not None
        pieces = split(kind, payload, self.rng, max_size=MAX_SEALED_PLAINTEXT)
        full = len(pieces) > 1
        key = seal_key(box.write_seed)
        total = 0
        for piece in pieces:
            sealed = seal(key, box.mailbox_id, piece, self.rng, full=full)
            total += len(sealed)
            await self.writer.post(box.mailbox_id, box.write_seed, self.rng(16), sealed)
        return total

    def _deliverer(self, index: int) -> Any:
        async def on_deliver(url: str, mailbox_id: bytes, seq: int, sealed: bytes) -> None:
            assert self.group_box is not None and self.lobby is not None
            box = self.group_box if mailbox_id == self.group_box.mailbox_id else self.lobby
            try:
                env = Envelope.from_bytes(unseal(seal_key(box.write_seed), mailbox_id, sealed))
                complete = self.reassemblers[index].add(env, int(time.time() * 1000))
            except SamizdatError:
                return
            if complete is None:
                return
            kind, payload = complete
            if kind == EnvelopeType.WELCOME:
                self._on_welcome(payload)
            else:
                self._on_group_message(index, payload)

        return on_deliver

    def _on_welcome(self, payload: bytes) -> None:
        welcome = MLSMessage.from_bytes(payload).welcome
        if welcome is None:
            return
        refs = {s.new_member for s in welcome.secrets}
        for m in self.members.values():
            if m.group is None and m.bundle is not None and m.kp_ref in refs:
                t = time.perf_counter()
                m.group = Group.join(welcome, m.bundle)
                m.join_cpu_ms = (time.perf_counter() - t) * 1000
                m.join_ms = (time.monotonic() - m.join_posted) * 1000
                m.bundle = None

    def _on_group_message(self, conn: int, payload: bytes) -> None:
        now = time.monotonic()
        for m in self.members.values():
            if m.conn != conn or m.group is None or m.removed:
                continue
            try:
                events = m.group.process(payload, now=self.now)
            except SamizdatError:
                continue  # an older epoch's commit, or our own app message
            for ev in events:
                if isinstance(ev, RemovedFromGroup):
                    m.removed = True
                elif isinstance(ev, ApplicationMessageReceived):
                    tag = ev.data.split(b" ", 1)[0].decode()
                    sent = next((x for x in self.messages if x["tag"] == tag), None)
                    if sent is not None:
                        m.received[tag] = (now - sent["t"]) * 1000

    async def barrier(self, check: Any, what: str) -> float:
        start = time.monotonic()
        deadline = start + BARRIER_TIMEOUT
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"barrier: {what}")
            await asyncio.sleep(0.02)
        return (time.monotonic() - start) * 1000

    # -- operations --------------------------------------------------------------------

    async def commit(
        self, committer: MlsMember, add: list[MlsMember], remove: list[MlsMember]
    ) -> None:
        assert self.group_box is not None and self.lobby is not None
        g = committer.group
        assert g is not None
        for m in add:
            m.bundle = create_key_package(self.suite, m.identity, self.now, m.rng)
            m.kp_ref = key_package_ref(self.suite, m.bundle.key_package)
        leaves = {key: i for i, _, key in g.members()}
        t = time.perf_counter()
        result = g.commit(
            self.rng,
            self.now,
            add=[m.bundle for m in add if m.bundle is not None],
            remove=[leaves[m.identity.signature_pub] for m in remove],
        )
        build_ms = (time.perf_counter() - t) * 1000
        epoch = g.epoch + 1
        staying = [m for m in self.active() if m not in remove]
        posted = time.monotonic()
        sealed_commit = await self.post(self.group_box, EnvelopeType.MLS, result.commit)
        welcome_size = 0
        if result.welcome is not None:
            for m in add:
                m.join_posted = time.monotonic()
            welcome_size = len(result.welcome)
            await self.post(self.lobby, EnvelopeType.WELCOME, result.welcome)

        def done() -> bool:
            return all(m.group is not None and m.group.epoch == epoch for m in staying + add) and (
                all(m.removed for m in remove)
            )

        await self.barrier(done, f"epoch {epoch} everywhere")
        self.commits.append(
            {
                "epoch": epoch,
                "committer": committer.name,
                "added": len(add),
                "removed": len(remove),
                "members_after": len(self.active()),
                "commit_bytes": len(result.commit),
                "sealed_bytes": sealed_commit,
                "welcome_bytes": welcome_size,
                "build_ms": round(build_ms, 1),
                "all_applied_ms": round((time.monotonic() - posted) * 1000, 1),
                "join_ms": [round(m.join_ms, 1) for m in add],
                "join_cpu_ms": [round(m.join_cpu_ms, 1) for m in add],
            }
        )

    async def do_mls_grow(self, a: dict[str, Any]) -> str:
        total = int(a.get("members", self.scenario.clients.count))
        batch = max(1, int(a.get("batch", 50)))
        if not self.members:
            creator = self.new_member()
            creator.group = Group.create(
                self.suite.suite_id, self.rng(16), creator.identity, creator.rng, self.now
            )
        creator = self.active()[0]
        while len(self.active()) < total:
            n = min(batch, total - len(self.active()))
            await self.commit(creator, [self.new_member() for _ in range(n)], [])
        return f"{len(self.active())} members in {len(self.commits)} commits"

    async def do_mls_churn(self, a: dict[str, Any]) -> str:
        rounds = int(a.get("rounds", 3))
        for _ in range(rounds):
            current = self.active()
            committer = self.rand.choice(current)
            others = [m for m in current if m is not committer]
            remove = self.rand.sample(others, min(int(a.get("remove", 1)), len(others)))
            add = [self.new_member() for _ in range(int(a.get("add", 1)))]
            await self.commit(committer, add, remove)
        return f"{rounds} churn commits, {len(self.active())} members"

    async def do_mls_send(self, a: dict[str, Any]) -> str:
        assert self.group_box is not None
        count = int(a.get("count", 5))
        size = int(a.get("size", 200))
        for i in range(count):
            sender = self.rand.choice(self.active())
            assert sender.group is not None
            tag = f"msg{len(self.messages)}"
            canary = f"CANARY-{self.base.token}-{tag}".encode()
            self.canaries.append(canary)
            body = tag.encode() + b" " + canary + b" " + b"x" * max(0, size - len(canary))
            ct = sender.group.encrypt(body, sender.rng)
            recipients = [m for m in self.active() if m is not sender]
            rec = {
                "tag": tag,
                "sender": sender.name,
                "t": time.monotonic(),
                "bytes": len(ct),
                "recipients": [m.name for m in recipients],
            }
            self.messages.append(rec)
            await self.post(self.group_box, EnvelopeType.MLS, ct)
            try:
                await self.barrier(
                    lambda r=recipients, t=tag: all(t in m.received for m in r),
                    f"{tag} delivered",
                )
            except TimeoutError:
                rec["incomplete"] = True
            if a.get("rate") and i + 1 < count:
                await asyncio.sleep(1.0 / float(a["rate"]))
        return f"{count} messages"


async def run_mls(scenario: Scenario, workdir: Path) -> dict[str, Any]:
    world = MlsWorld(scenario, workdir)
    started = time.time()
    error = ""
    try:
        await world.start()
        for action in scenario.actions:
            handler = getattr(world, "do_" + action["do"], None)
            if handler is None:
                handler = getattr(world.base, "do_" + action["do"])
            rec_t = time.monotonic()
            try:
                detail = await asyncio.wait_for(handler(action), scenario.timeout)
                world.base.actions.append(_action(world, action["do"], rec_t, detail or "", ""))
            except (TimeoutError, SamizdatError, OSError) as exc:
                msg = f"{type(exc).__name__}: {exc}"
                world.base.actions.append(_action(world, action["do"], rec_t, "", msg))
                error = error or f"{action['do']}: {msg}"
        results = mls_checks(world)
    finally:
        await world.stop()
    if scenario.checks.get("canary"):
        dirs = [h.data_dir for h in world.base.relays.values()]
        results.append(C.check_canary(dirs, world.canaries))
    C.apply_known(results, scenario.known_failures)
    return mls_report(world, results, started, error)


def _action(world: MlsWorld, do: str, t: float, detail: str, error: str) -> Any:
    from harness.scenario.world import ActionRecord

    return ActionRecord(
        round(t - world.base.t0, 3), do, round(time.monotonic() - t, 3), error, detail
    )


def mls_checks(world: MlsWorld) -> list[C.CheckResult]:
    results = []
    active = world.active()
    auths: dict[str, list[str]] = {}
    for m in active:
        assert m.group is not None
        auths.setdefault(
            f"epoch {m.group.epoch} {m.group.epoch_authenticator.hex()[:16]}", []
        ).append(m.name)
    summary = {k: len(v) for k, v in auths.items()}
    results.append(
        C.CheckResult(
            "convergence",
            "passed" if len(auths) == 1 else "failed",
            f"{len(active)} members on one epoch authenticator"
            if len(auths) == 1
            else f"members diverged: {summary}",
            {"groups": {"g": summary}},
        )
    )
    expected = sum(len(x["recipients"]) for x in world.messages)
    got = sum(
        1 for x in world.messages for n in x["recipients"] if x["tag"] in world.members[n].received
    )
    results.append(
        C.CheckResult(
            "delivery",
            "passed" if got == expected else "failed",
            f"{got}/{expected} application messages decrypted by their recipients",
            {"expected": expected, "outcomes": {"delivered": got, "silent": expected - got}},
        )
    )
    lat = [v for m in world.members.values() for v in m.received.values()]
    fig = C.latency_figures(lat)
    results.append(
        C.CheckResult(
            "latency",
            "passed",
            f"{fig['count']} deliveries, p50 {fig['p50_ms']:.0f} ms, p95 {fig['p95_ms']:.0f} ms",
            fig,
        )
    )
    return results


def mls_report(
    world: MlsWorld, results: list[C.CheckResult], started: float, error: str
) -> dict[str, Any]:
    sc = world.scenario
    joins = [j for c in world.commits for j in c["join_ms"]]
    join_cpu = [j for c in world.commits for j in c["join_cpu_ms"]]
    lat = [v for m in world.members.values() for v in m.received.values()]
    timeline = []
    for m in world.members.values():
        for tag, ms in m.received.items():
            sent = next(x for x in world.messages if x["tag"] == tag)
            t = sent["t"] - world.base.t0
            timeline.append(
                {
                    "member": m.name,
                    "sender": sent["sender"],
                    "t": round(t + ms / 1000, 3),
                    "sent_t": round(t, 3),
                    "latency_ms": round(ms, 1),
                }
            )
    relays = relay_reports(world.base)
    return {
        "version": REPORT_VERSION,
        "scenario": sc.name,
        "description": sc.description,
        "file": str(sc.path) if sc.path else "",
        "mode": "mls",
        "seed": sc.seed,
        "params": sc.params,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 2),
        "result": overall(results, error),
        "error": error,
        "settled": not error,
        "checks": [r.to_json() for r in results],
        "members": sorted(world.members, key=lambda n: int(n[1:])),
        "groups": {"g": {"members": sorted(m.name for m in world.active())}},
        "relays": list(relays.values()),
        "actions": [vars(a) for a in world.base.actions],
        "messages": {
            "sent": len(world.messages),
            "expected_deliveries": sum(len(x["recipients"]) for x in world.messages),
            "delivered": len(lat),
        },
        "throughput": {},
        "latency": C.latency_figures(lat),
        "timeline": timeline,
        "faults": {"injected": {}, "detected": {}, "outcome": {}, "claims": {}},
        "notices": {},
        "mls": {
            "suite": world.suite.suite_id,
            "members": len(world.active()),
            "commits": world.commits,
            "join_ms": C.latency_figures(joins),
            "join_cpu_ms": C.latency_figures(join_cpu),
            "max_commit_bytes": max((c["commit_bytes"] for c in world.commits), default=0),
            "max_welcome_bytes": max((c["welcome_bytes"] for c in world.commits), default=0),
            "connections": len(world.conns),
        },
    }
