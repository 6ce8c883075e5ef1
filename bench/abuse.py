"""Can a censor slow a victim down?  A victim's message latency under abuse
(GitHub issue 11, "Measure it").

    python bench/abuse.py [--quick] [--only baseline,a,b,c,d,baseline-end]
                          [--json FILE] [--limit KEY=VALUE ...]

One real ``samizdat-relay`` process on 127.0.0.1 and real client engines:
Alice sends the victim a short text every ``--interval`` seconds and the
latency is from Alice's ``send_text`` call to the text being in the victim's
history.  Scenarios, one after the other on the same relay:

* ``baseline``: no abuse.
* ``a-backlog``: while Dana was offline, Mallory (a contact) sent her a
  ``--backlog-mb`` article; Dana comes online and Alice's texts are timed
  while the backlog drains (the scenario ends when the article is in Dana's
  history, or after ``--backlog-cap`` s).
* ``b-invite-flood``: a censor holding one of Bob's invite links posts
  sealed 64 KiB junk "welcomes" into its mailbox, as fast as the relay
  takes them, for the whole window; Bob revokes the invite afterwards.
* ``c-slow-sockets``: ``--idle`` idle WebSockets (they answer pings) and
  ``--uploads`` slow blob PUTs (1 KiB, then 16 B/s) held open for the
  window, reopened as the relay closes them.  Mid-window Bob uploads one
  blob chunk himself: does the relay still serve him?
* ``d-random-bytes``: random bytes on raw TCP connections, random binary
  WebSocket frames, and random envelopes posted with an invite link's write
  capability, ``--random-rate`` operations a second in total.
* ``baseline-end``: no abuse again (machine noise, and whether the relay
  came back).

The attacker runs in its own process (``bench/abuse_attack.py``) from
source addresses 127.0.0.2 and up (``--addresses``): every socket goes to
127.0.0.1, but the relay's per-address limits see strangers, as they would
on a network, rather than the victim's own 127.0.0.1.  The relay runs with
its shipped defaults (an operator's relay.toml changing nothing but keeping
``metrics = true`` on loopback), ``--limit`` overrides one; the effective
figures are printed.

For each scenario: the number of texts, how many never arrived (``lost``,
counted as infinite latency), p50 and p99, p99 over the baseline's p99, and
the relay's open descriptors (``/proc/PID/fd``) and RSS before, at the peak
and after the abuse ended (``after`` is read 6 s after descriptors are back
within 8 of ``before``, or after ``--settle`` s: the relay returns memory
within a few seconds of a burst of sockets closing).  Notes under the table
give the attacker's counters, the relay's /metrics counters that moved and
the longest stall of the bench's event loop (Alice's and the victim's
engines share it: a victim busy with a large message delays every text).

The machine is shared: two cores run the relay, the victim's engines and
the attacker.  Read the large differences, not the third digit.  ``--quick``
(< 60 s) shrinks every figure; it exists for the smoke test, its latencies
mean little.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from client.engine import Engine  # noqa: E402
from harness.relay_process import RelayProcess  # noqa: E402
from protocol.padding import BLOB_CHUNK_SIZE  # noqa: E402

PASSPHRASE = b"abuse bench"
ATTACKER = Path(__file__).resolve().parent / "abuse_attack.py"
SETTLE_SLACK = 8  # descriptors: "returned" means within this of before


@dataclass
class Params:
    window: float = 15.0  # seconds of abuse per scenario (b, c, d, baselines)
    backlog_cap: float = 45.0
    grace: float = 10.0  # after a window, for texts still on their way
    settle: float = 30.0
    rss_wait: float = 6.0  # after descriptors are back, before RSS "after" is read
    interval: float = 0.1  # 150 texts in a window: p99 is the second worst
    backlog_mb: float = 9.0
    idle: int = 2_000
    uploads: int = 400
    addresses: int = 16
    flood_in_flight: int = 32
    random_rate: float = 100.0
    random_workers: int = 16

    @classmethod
    def quick(cls) -> Params:
        return cls(
            window=3.0,
            backlog_cap=10.0,
            grace=3.0,
            settle=4.0,
            rss_wait=0.5,
            interval=0.2,
            backlog_mb=1.0,
            idle=100,
            uploads=20,
            addresses=4,
            flood_in_flight=8,
            random_rate=20.0,
            random_workers=4,
        )


# ------------------------------------------------------------- measurement


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``inf`` counts: a lost text is infinitely late)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


class RelayWatch:
    """Samples the relay's open descriptors and RSS every 0.2 s."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_fds = 0
        self.peak_rss = 0
        self._task: asyncio.Task[None] | None = None

    def now(self) -> tuple[int, int]:
        fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        rss = 0
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
        return fds, rss

    def reset(self) -> tuple[int, int]:
        fds, rss = self.now()
        self.peak_fds, self.peak_rss = fds, rss
        return fds, rss

    async def _sample(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                fds, rss = self.now()
                self.peak_fds = max(self.peak_fds, fds)
                self.peak_rss = max(self.peak_rss, rss)
            await asyncio.sleep(0.2)

    def start(self) -> None:
        self._task = asyncio.create_task(self._sample())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def settle(
        self, fds_before: int, timeout: float, rss_wait: float
    ) -> tuple[int, int, float]:
        """Wait (bounded) for descriptors to come back, then ``rss_wait`` s
        more (the relay trims its heap every 2 s after a burst of sockets
        closed, relay/memory.py); (fds, rss, seconds)."""
        start = time.monotonic()
        fds, rss = self.now()
        while fds > fds_before + SETTLE_SLACK and time.monotonic() - start < timeout:
            await asyncio.sleep(0.25)
            fds, rss = self.now()
        await asyncio.sleep(rss_wait)  # memory is returned (or not) a little later
        fds, rss = self.now()
        return fds, rss, time.monotonic() - start


async def scrape_metrics(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url + "/metrics", timeout=aiohttp.ClientTimeout(total=10)) as resp,
        ):
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return out
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


METRICS_OF_INTEREST = (
    "slow_consumers",
    "sockets_refused",
    "requests_refused",
    "timeouts",
    "rate_limited",
    "errors_total",
    "posts_total",
)


def metric_changes(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    changes = {}
    for name, value in after.items():
        short = name.removeprefix("samizdat_relay_")
        if any(k in short for k in METRICS_OF_INTEREST):
            delta = int(value - before.get(name, 0.0))
            if delta:
                changes[short] = delta
    return changes


class Pings:
    """Alice's texts to the victim, timed from send_text to the victim's history."""

    def __init__(
        self, sender: Engine, receiver: Engine, conv: bytes, tag: str, interval: float
    ) -> None:
        self.sender, self.receiver, self.conv = sender, receiver, conv
        self.tag, self.interval = tag, interval
        self.sent: dict[str, float] = {}
        self.got: dict[str, float] = {}
        self.send_errors = 0
        receiver.listeners.append(self._on_event)

    def _on_event(self, what: str, conv: bytes | None) -> None:
        if what != "conversation" or conv != self.conv:
            return
        now = time.monotonic()
        for entry in self.receiver.history(self.conv, limit=20):
            if entry.text in self.sent and entry.text not in self.got:
                self.got[entry.text] = now

    async def _send(self, text: str) -> None:
        self.sent[text] = time.monotonic()
        try:
            await self.sender.send_text(self.conv, text)
        except Exception:
            self.send_errors += 1

    async def run(
        self, window: float, grace: float, until: Callable[[], bool] | None = None
    ) -> float:
        """Send for ``window`` s (or until ``until()``, after at least 3 s),
        then wait up to ``grace`` s for stragglers; the sending time."""
        tasks: list[asyncio.Task[None]] = []
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < window:
            if until is not None and time.monotonic() - start >= 3.0 and until():
                break
            tasks.append(asyncio.create_task(self._send(f"{self.tag} {i}")))
            i += 1
            await asyncio.sleep(self.interval)
        sending = time.monotonic() - start
        deadline = time.monotonic() + grace
        while len(self.got) < len(self.sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.receiver.listeners.remove(self._on_event)
        return sending

    def latencies(self) -> list[float]:
        return [self.got.get(t, math.inf) - s for t, s in self.sent.items()]

    def worst(self, n: int = 5) -> list[tuple[float, float]]:
        """The ``n`` latest texts: (seconds into the window it was sent, ms)."""
        if not self.sent:
            return []
        start = min(self.sent.values())
        late = sorted(self.sent.items(), key=lambda kv: self.got.get(kv[0], math.inf) - kv[1])
        return [
            (round(s - start, 1), round((self.got.get(t, math.inf) - s) * 1000))
            for t, s in late[-n:][::-1]
        ]


class RelayLag:
    """How long the relay takes to answer ``GET /metrics`` (every 0.1 s): a
    stall of its event loop shows here; (worst s, seconds into the window)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.worst = (0.0, 0.0)
        self._task: asyncio.Task[None] | None = None

    async def _probe(self) -> None:
        start = time.monotonic()
        async with aiohttp.ClientSession() as session:
            while True:
                t = time.monotonic()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(
                        self.url + "/metrics", timeout=aiohttp.ClientTimeout(total=10)
                    ) as resp:
                        await resp.read()
                took = time.monotonic() - t
                if took > self.worst[0]:
                    self.worst = (took, t - start)
                await asyncio.sleep(0.1)

    def start(self) -> None:
        self._task = asyncio.create_task(self._probe())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class LoopLag:
    """The longest stall of this process's event loop (0.02 s ticks)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(0.02)
            self.worst = max(self.worst, time.monotonic() - start - 0.02)

    def start(self) -> None:
        self._task = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class AttackerProcess:
    """``bench/abuse_attack.py`` as a child process (SIGTERM ends it)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.proc: asyncio.subprocess.Process | None = None
        self.ready: dict[str, Any] = {}
        self.done: dict[str, Any] = {}

    async def start(self, timeout: float) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ATTACKER),
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(self.config).encode())
        self.proc.stdin.close()
        line = await self._line(timeout)
        self.ready = line or {"event": "not ready", "after_s": timeout}

    async def _line(self, timeout: float) -> dict[str, Any] | None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            return None
        return json.loads(raw) if raw.strip() else None

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        self.done = await self._line(40.0) or {}
        try:
            await asyncio.wait_for(self.proc.wait(), 10.0)
        except TimeoutError:
            self.proc.kill()  # this child only, by its pid
            await self.proc.wait()


# --------------------------------------------------------------- scenarios


@dataclass
class Result:
    name: str
    texts: int = 0
    lost: int = 0
    p50: float = math.nan
    p99: float = math.nan
    fds: tuple[int, int, int] = (0, 0, 0)
    rss: tuple[int, int, int] = (0, 0, 0)
    settle_s: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)


class Bench:
    def __init__(self, params: Params, workdir: Path, limits: dict[str, float]) -> None:
        self.p = params
        self.workdir = workdir
        self.relay = RelayProcess(workdir / "relay", limits=limits, settings={"metrics": True})
        self.engines: dict[str, Engine] = {}
        self.convs: dict[str, bytes] = {}
        self.results: list[Result] = []
        self.watch: RelayWatch | None = None
        self.attackers: list[AttackerProcess] = []

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.{2 + i}" for i in range(self.p.addresses)]

    # -- set-up and tear-down --------------------------------------------------------

    def engine(self, name: str) -> Engine:
        home = self.workdir / name
        if home.exists():
            engine = Engine.open(home, PASSPHRASE)
        else:
            engine = Engine.create(
                home, PASSPHRASE, name.capitalize(), [self.relay.url], fast_kdf=True
            )
        self.engines[name] = engine
        return engine

    async def befriend(self, a: Engine, b: Engine) -> bytes:
        conv = await b.accept(await a.invite())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            friends = a.contacts() and any(c.key_packages for c in b.contacts())
            if friends and conv.group_id in a.groups:
                return conv.group_id
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{a.identity.name} and {b.identity.name} did not become contacts")

    async def setup(self) -> None:
        self.relay.start()
        assert self.relay.proc is not None
        self.watch = RelayWatch(self.relay.proc.pid)
        self.watch.start()
        alice, bob, dana, mallory = (self.engine(n) for n in ("alice", "bob", "dana", "mallory"))
        for e in (alice, bob, dana, mallory):
            await e.connect()
        self.convs["bob"] = await self.befriend(alice, bob)
        self.convs["dana"] = await self.befriend(alice, dana)
        self.convs["mallory"] = await self.befriend(mallory, dana)
        await dana.close()  # Dana's phone is off until scenario a
        del self.engines["dana"]

    async def teardown(self) -> None:
        for attacker in self.attackers:
            with contextlib.suppress(Exception):
                await attacker.stop()
        for engine in self.engines.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(engine.close(), 30)
        if self.watch is not None:
            await self.watch.stop()
        self.relay.stop()

    # -- one scenario ------------------------------------------------------------------

    async def scenario(
        self,
        name: str,
        *,
        victim: str = "bob",
        attack: dict[str, Any] | None = None,
        before_pings: Callable[[], Any] | None = None,
        until: Callable[[], bool] | None = None,
        during: Callable[[], Any] | None = None,
        after: Callable[[], Any] | None = None,
        window: float | None = None,
    ) -> Result:
        assert self.watch is not None
        result = Result(name)
        began = time.monotonic()
        metrics_before = await scrape_metrics(self.relay.url)
        fds0, rss0 = self.watch.reset()
        attacker = None
        if attack is not None:
            attacker = AttackerProcess(
                {"port": self.relay.port, "addresses": self.addresses, **attack}
            )
            self.attackers.append(attacker)
            await attacker.start(timeout=40.0)
            result.notes["attacker ready"] = attacker.ready
        if before_pings is not None:
            await before_pings()
        pings = Pings(
            self.engines["alice"],
            self.engines[victim],
            self.convs[victim],
            name,
            self.p.interval,
        )
        side = asyncio.create_task(during()) if during is not None else None
        lag = LoopLag()
        lag.start()
        relay_lag = RelayLag(self.relay.url)
        relay_lag.start()
        sending = await pings.run(window or self.p.window, self.p.grace, until)
        await lag.stop()
        await relay_lag.stop()
        worst, when = relay_lag.worst
        result.notes["relay answer max ms (s into window)"] = (round(worst * 1000), round(when, 1))
        # the engines share this process's event loop: a long stall (e.g. the
        # victim's engine handling a large message) delays every text
        result.notes["bench loop stall max ms"] = round(lag.worst * 1000)
        result.notes["sending_s"] = round(sending, 1)
        if side is not None:
            with contextlib.suppress(Exception):
                result.notes["probe"] = await asyncio.wait_for(side, 60)
        if attacker is not None:
            await attacker.stop()
            result.notes["attacker"] = attacker.done
        if after is not None:
            await after()
        peak = (self.watch.peak_fds, self.watch.peak_rss)
        fds1, rss1, took = await self.watch.settle(fds0, self.p.settle, self.p.rss_wait)
        result.fds = (fds0, peak[0], fds1)
        result.rss = (rss0, peak[1], rss1)
        result.settle_s = round(took, 1)
        lat = pings.latencies()
        result.texts = len(lat)
        result.lost = sum(1 for x in lat if math.isinf(x))
        result.p50, result.p99 = percentile(lat, 50), percentile(lat, 99)
        # when the slowest texts were sent: a burst of relay work shows as a cluster
        result.notes["worst texts (s into window, ms)"] = pings.worst()
        if pings.send_errors:
            result.notes["send errors"] = pings.send_errors
        result.notes["relay"] = metric_changes(metrics_before, await scrape_metrics(self.relay.url))
        result.notes["took_s"] = round(time.monotonic() - began, 1)
        self.results.append(result)
        print(f"  {row(result, self.baseline_p99())}", flush=True)
        return result

    def baseline_p99(self) -> float:
        return self.results[0].p99 if self.results else math.nan

    # -- the scenarios -----------------------------------------------------------------------

    async def backlog(self) -> Result:
        """While Dana is offline Mallory sends her an article (not timed);
        she comes online and Alice's texts are timed while it drains."""
        conv = self.convs["mallory"]
        size = int(self.p.backlog_mb * 1_000_000)
        lines, total = ["# The long read\n\n"], 0
        while total < size:
            lines.append(f"Paragraph {len(lines)}: {os.urandom(32).hex()}\n\n")
            total += len(lines[-1])
        article = "".join(lines)
        await self.engines["mallory"].send_article(conv, "The long read", article)
        state: dict[str, float] = {}
        tasks: list[asyncio.Task[None]] = []

        def drained() -> bool:
            return "drained" in state

        async def watch_drain(dana: Engine) -> None:
            while not dana.closed:
                for e in dana.history(conv, limit=5):
                    if e.kind == "article" and len(e.text) == len(article):
                        state["drained"] = time.monotonic() - state["start"]
                        return
                await asyncio.sleep(0.1)

        async def dana_online() -> None:
            # she opens the app: the texts are timed from now, connecting included
            dana = self.engine("dana")
            state["start"] = time.monotonic()
            tasks.append(asyncio.create_task(watch_drain(dana)))
            tasks.append(asyncio.create_task(dana.connect()))

        async def dana_offline() -> None:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            dana = self.engines.pop("dana")
            state["reconnects"] = sum(c.failures for c in dana.relays.values())
            await dana.close()

        result = await self.scenario(
            "a-backlog",
            victim="dana",
            before_pings=dana_online,
            until=drained,
            after=dana_offline,
            window=self.p.backlog_cap,
        )
        result.notes["backlog"] = f"{self.p.backlog_mb:g} MB article"
        result.notes["drained_s"] = round(state["drained"], 1) if "drained" in state else "never"
        result.notes["dana relay reconnects"] = state.get("reconnects", 0)
        return result

    async def invite_attack(self, name: str, kind: str, **figures: Any) -> Result:
        bob = self.engines["bob"]
        record, link = await bob.create_invite(uses=5)

        async def revoke() -> None:
            await bob.revoke_invite(record.invite_id.hex())

        return await self.scenario(
            name,
            attack={"kind": kind, "link": link, **figures},
            after=revoke,
        )

    async def slow_sockets(self) -> Result:
        bob = self.engines["bob"]

        async def upload_probe() -> str:
            await asyncio.sleep(self.p.window / 2)
            start = time.monotonic()
            try:
                await asyncio.wait_for(
                    bob._relay(self.relay.url).upload_blob([os.urandom(BLOB_CHUNK_SIZE)]), 45
                )
                return f"Bob's 256 KiB upload: ok in {time.monotonic() - start:.1f} s"
            except Exception as exc:
                took = time.monotonic() - start
                return f"Bob's 256 KiB upload: {type(exc).__name__} after {took:.1f} s"

        return await self.scenario(
            "c-slow-sockets",
            attack={"kind": "hold", "idle": self.p.idle, "uploads": self.p.uploads, "ramp": 25},
            during=upload_probe,
        )

    async def run(self, names: list[str]) -> None:
        print(f"relay: {relay_summary(self.relay)}", flush=True)
        print(f"figures: {json.dumps(asdict(self.p))}", flush=True)
        print(HEADER, flush=True)
        scenarios: dict[str, Callable[[], Awaitable[Result]]] = {
            "baseline": lambda: self.scenario("baseline"),
            "a": self.backlog,
            "b": lambda: self.invite_attack(
                "b-invite-flood", "flood", in_flight=self.p.flood_in_flight
            ),
            "c": self.slow_sockets,
            "d": lambda: self.invite_attack(
                "d-random-bytes", "random", rate=self.p.random_rate, workers=self.p.random_workers
            ),
            "baseline-end": lambda: self.scenario("baseline-end"),
        }
        for name in names:
            await scenarios[name]()


SCENARIOS = ["baseline", "a", "b", "c", "d", "baseline-end"]


# ------------------------------------------------------------------ output


def ms(x: float) -> str:
    if math.isnan(x):
        return "-"
    return "inf" if math.isinf(x) else f"{x * 1000:.0f}"


def ratio(p99: float, base: float) -> str:
    if math.isnan(p99) or math.isnan(base) or base <= 0:
        return "-"
    return "inf" if math.isinf(p99) else f"{p99 / base:.1f}x"


def goal(r: Result, base: float) -> str:
    """``ok`` when p99 is within 2x the baseline's (issue 11), else ``miss``."""
    if r.name.startswith("baseline") or math.isnan(r.p99) or math.isnan(base):
        return "-"
    return "ok" if r.p99 <= 2 * base else "miss"


HEADER = (
    f"{'scenario':<16} {'texts':>5} {'lost':>4} {'p50 ms':>7} {'p99 ms':>7} {'p99/base':>8}"
    f" {'goal':>4}"
    f"  {'fds before/peak/after':>21}  {'RSS MB before/peak/after':>24}"
)


def row(r: Result, base_p99: float) -> str:
    fds = "/".join(str(x) for x in r.fds)
    rss = "/".join(f"{x / 1e6:.0f}" for x in r.rss)
    return (
        f"{r.name:<16} {r.texts:>5} {r.lost:>4} {ms(r.p50):>7} {ms(r.p99):>7}"
        f" {ratio(r.p99, base_p99):>8} {goal(r, base_p99):>4}  {fds:>21}  {rss:>24}"
    )


def relay_summary(relay: RelayProcess) -> str:
    """The relay's effective limits (its own check-config) and descriptor limit."""
    config = relay.data_dir.parent / f"relay-{relay.port}.toml"
    out = subprocess.run(
        [sys.executable, "-m", "relay.cli", "check-config", "--config", str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    try:
        lim = json.loads(out.stdout)["limits"]
    except (ValueError, KeyError):
        return "check-config failed: " + out.stderr.strip()
    keys = (
        "max_connections", "max_connections_per_ip", "connect_rate", "connect_burst",
        "max_requests", "max_requests_per_ip", "max_uploads", "max_uploads_per_ip",
        "max_uploads_per_blob", "header_timeout", "body_timeout", "upload_timeout",
        "send_queue_bytes", "mailbox_max_bytes", "mailbox_max_messages", "frame_rate",
    )  # fmt: skip
    nofile = "?"
    assert relay.proc is not None
    for line in Path(f"/proc/{relay.proc.pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            nofile = line.split()[3]
    return ", ".join(f"{k}={lim[k]}" for k in keys if k in lim) + f"; RLIMIT_NOFILE={nofile}"


def print_table(results: list[Result]) -> None:
    base = results[0].p99 if results else math.nan
    print()
    print(HEADER)
    for r in results:
        print(row(r, base))
    print()
    for r in results:
        print(f"{r.name}: settled in {r.settle_s} s; " + json.dumps(r.notes, default=str))


def parse_limits(items: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--limit wants KEY=VALUE, not {item!r}")
        out[key.strip()] = float(value) if "." in value else int(value)
    return out


async def amain(args: argparse.Namespace) -> tuple[list[Result], list[int]]:
    params = Params.quick() if args.quick else Params()
    for name in ("window", "backlog_cap", "backlog_mb", "idle", "uploads", "addresses"):
        value = getattr(args, name)
        if value is not None:
            setattr(params, name, value)
    workdir = Path(tempfile.mkdtemp(prefix="samizdat-abuse-"))
    bench = Bench(params, workdir, parse_limits(args.limit))
    try:
        t = time.monotonic()
        await bench.setup()
        print(f"set-up: {time.monotonic() - t:.0f} s", flush=True)
        await bench.run(args.only.split(",") if args.only else SCENARIOS)
    finally:
        t = time.monotonic()
        await bench.teardown()
        print(f"tear-down: {time.monotonic() - t:.0f} s", flush=True)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")
    pids = [p.proc.pid for p in bench.attackers if p.proc is not None]
    if bench.relay.proc is not None:
        pids.append(bench.relay.proc.pid)
    return bench.results, pids


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small figures, < 60 s (smoke test)")
    ap.add_argument("--window", type=float, help="seconds of abuse per scenario")
    ap.add_argument("--backlog-cap", type=float, help="longest wait for the backlog to drain")
    ap.add_argument("--backlog-mb", type=float, help="size of the offline member's backlog")
    ap.add_argument("--idle", type=int, help="idle WebSockets held in scenario c")
    ap.add_argument("--uploads", type=int, help="slow blob uploads held in scenario c")
    ap.add_argument("--addresses", type=int, help="attacker source addresses 127.0.0.2...")
    ap.add_argument("--limit", action="append", default=[], help="relay [limits] KEY=VALUE")
    ap.add_argument(
        "--only",
        help="comma-separated scenarios to run, in order, repeats allowed "
        f"(default {','.join(SCENARIOS)}; the first is the baseline of the ratios)",
    )
    ap.add_argument("--json", type=Path, help="write the results here too")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)
    unknown = set((args.only or "").split(",")) - set(SCENARIOS) - {""}
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {SCENARIOS}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65_536 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < want:
        # the attacker (a child) holds thousands of sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    started = time.monotonic()
    results, pids = asyncio.run(amain(args))
    print_table(results)
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    if args.json:
        out = {"results": [asdict(r) for r in results], "pids": pids}
        args.json.write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
