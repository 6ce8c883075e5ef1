"""The fault model of the malicious relay: what it may do, to whom, and when.

A :class:`Fault` names one behaviour of SPEC.md §2's adversary (drop, delay,
reorder, duplicate, replay, inject, tamper, withhold, fork, go dark, refuse)
and a selector: which mailbox (hex prefix of its id), which reader
connection, from when until when, at what rate and how many times.  Every
decision is drawn from a per-fault ``random.Random`` seeded from the run
seed and the fault's position, so a run with the same frames makes the same
choices.  Every injected fault becomes one :class:`FaultEvent` in the log.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# kind -> one line of what it does (the CLI's help and SPEC.md §10 agree)
KINDS: dict[str, str] = {
    "drop": "drop Deliver frames (direction=deliver) or fake-ack posts and never store "
    "them (direction=post)",
    "delay": "hold Deliver frames for `seconds` (+ up to `jitter`) before sending them",
    "reorder": "buffer `window` Deliver frames per reader and mailbox, send them shuffled "
    "(renumbered so the client sees a valid increasing order)",
    "duplicate": "send a Deliver again under a fresh sequence number",
    "replay": "re-send an older envelope of the same mailbox under a fresh sequence number",
    "inject": "send a forged envelope (random bytes of a bucket size) under a fresh seq",
    "tamper": "flip one byte of an envelope (direction=deliver: per reader; post: stored)",
    "withhold": "never deliver the selected mailbox to the selected reader(s)",
    "fork": "serve the selected readers a different order: swap the next two Deliver "
    "frames of at least `min_size` bytes that arrive within `seconds`",
    "dark": "from `after` on, close every connection and answer nothing (HTTP 502)",
    "refuse": "from `after` on, refuse new connections (existing ones continue)",
}

# Faults that need sequence numbers the upstream relay never assigned.
INJECTING = frozenset({"duplicate", "replay", "inject"})


class FaultError(ValueError):
    """An invalid fault description."""


@dataclass
class Fault:
    kind: str
    rate: float = 1.0
    mailbox: str = ""  # hex prefix of the mailbox id; "" = every mailbox
    # "", "conn:N", "reads:HEX", "addr:IP", "odd", "even" (scenarios: "member:NAME")
    reader: str = ""
    after: float = 0.0  # seconds since the relay started
    until: float = math.inf
    seconds: float = 0.0  # delay, fork pairing window
    jitter: float = 0.0
    window: int = 4  # reorder buffer
    count: int = 0  # at most this many injections (0: unlimited)
    min_size: int = 0  # only envelopes of at least this many bytes
    direction: str = "deliver"  # drop/tamper: "deliver" or "post"
    mode: str = "close"  # dark: "close" (drop connections) or "blackhole" (hang them)
    injected: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise FaultError(f"unknown fault kind {self.kind!r} (one of {', '.join(KINDS)})")
        if not 0.0 <= self.rate <= 1.0:
            raise FaultError(f"{self.kind}: rate must be within 0..1")
        if self.direction not in ("deliver", "post"):
            raise FaultError(f"{self.kind}: direction must be deliver or post")
        if self.direction == "post" and self.kind not in ("drop", "tamper"):
            raise FaultError(f"{self.kind}: only drop and tamper act on posts")
        if self.mode not in ("close", "blackhole"):
            raise FaultError("dark: mode must be close or blackhole")
        if self.window < 2 and self.kind == "reorder":
            raise FaultError("reorder: window must be at least 2")
        if self.kind == "fork" and self.seconds <= 0:
            self.seconds = 1.0
        try:
            bytes.fromhex(self.mailbox if len(self.mailbox) % 2 == 0 else self.mailbox + "0")
        except ValueError:
            raise FaultError(f"{self.kind}: mailbox must be a hex prefix") from None
        r = self.reader
        if (
            r
            and r not in ("odd", "even")
            and not r.startswith(("conn:", "reads:", "addr:", "member:"))
        ):
            raise FaultError(f"{self.kind}: reader must be conn:N, reads:HEX, addr:IP, odd or even")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        names = {f.name for f in fields(cls) if f.init}
        unknown = set(data) - names
        if unknown:
            raise FaultError(f"unknown fault key(s): {', '.join(sorted(unknown))}")
        if "kind" not in data:
            raise FaultError("a fault needs a kind")
        return cls(**data)

    @classmethod
    def parse(cls, text: str) -> Fault:
        """``kind[:key=value,key=value...]``, e.g. ``drop:rate=0.3,mailbox=ab12``."""
        kind, _, rest = text.partition(":")
        data: dict[str, Any] = {"kind": kind.strip()}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise FaultError(f"expected key=value in {item!r}")
            data[key.strip()] = _coerce(value.strip())
        return cls.from_dict(data)

    def describe(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "injected"}
        if out["until"] == math.inf:
            out["until"] = None
        return out

    def active(self, elapsed: float) -> bool:
        return self.after <= elapsed < self.until

    def exhausted(self) -> bool:
        return bool(self.count) and self.injected >= self.count

    def matches(self, conn: ConnInfo | None, mailbox_id: bytes | None, size: int) -> bool:
        if self.mailbox and (mailbox_id is None or not mailbox_id.hex().startswith(self.mailbox)):
            return False
        if size < self.min_size:
            return False
        r = self.reader
        if not r:
            return True
        if conn is None:
            return False
        if r == "odd":
            return conn.index % 2 == 1
        if r == "even":
            return conn.index % 2 == 0
        if r.startswith("conn:"):
            return str(conn.index) == r[5:]
        if r.startswith("addr:"):
            return conn.peer == r[5:]
        if not r.startswith("reads:"):
            return False  # an unresolved scenario selector matches nobody
        prefix = r[6:]
        return any(m.hex().startswith(prefix) for m in conn.reads)


def _coerce(value: str) -> Any:
    for conv in (int, float):
        try:
            return conv(value)
        except ValueError:
            pass
    return value


@dataclass
class ConnInfo:
    """What the malicious relay knows of one WebSocket: its number, the
    address it came from and which mailboxes it proved the read key of (all
    a relay can know, SPEC.md §7.1)."""

    index: int
    opened: float
    reads: set[bytes] = field(default_factory=set)
    peer: str = ""


@dataclass(frozen=True)
class FaultEvent:
    t: float  # seconds since the relay started
    kind: str
    conn: int  # connection number, 0 for HTTP or relay-wide
    mailbox: str  # first 8 hex digits of the mailbox id
    seq: int  # the upstream sequence number concerned (0 if none)
    detail: str = ""


class FaultLog:
    """Every fault injected, in order (the run report's ``faults`` list)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.start = clock()
        self.events: list[FaultEvent] = []

    def elapsed(self) -> float:
        return self._clock() - self.start

    def add(
        self, kind: str, conn: int, mailbox: bytes | None, seq: int = 0, detail: str = ""
    ) -> FaultEvent:
        ev = FaultEvent(
            round(self.elapsed(), 4), kind, conn, mailbox.hex()[:8] if mailbox else "", seq, detail
        )
        self.events.append(ev)
        return ev

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for ev in self.events:
            out[ev.kind] = out.get(ev.kind, 0) + 1
        return out

    def to_json(self) -> list[dict[str, Any]]:
        return [asdict(e) for e in self.events]


def fault_rngs(seed: int, faults: list[Fault]) -> list[random.Random]:
    """One independent generator per fault, derived from the run seed."""
    return [random.Random(f"{seed}/{i}/{f.kind}") for i, f in enumerate(faults)]
