"""CLI latency: each ``samizdat`` command run as a process, wall time, medians.

    python bench/cli.py [--runs 5] [--quick] [--code DIR]... [--no-bytecode]

Two local relay processes (SQLite; one with ``--quick``); Alice and Bob, each on both relays, are
contacts with a message each way; each link Alice accepts is another person's.  Every
command is run ``--runs`` times as a fresh process (``python -m client.cli``)
with the real Argon2id store KDF, first with both relays up, then with both
relays stopped (connections refused).  The table gives the median wall time
of each, the goal of issue 12 item 5, and the exit status of the last run.

Two timings with the relays up: ``first`` is a command run after
``samizdat lock`` (no key agent: it reads the passphrase, pays Argon2id and
starts an agent), ``warm`` the same command run next, served by the agent
(SPEC.md §9, "Local key agent"); the relays-down runs are warm.  Goals are on
the warm times.  A checkout without the agent pays the passphrase every time.

``--code DIR`` runs the CLI of another checkout (e.g. the code before a
change: ``git archive COMMIT | tar -x -C DIR``) against the same relays and
harness; given twice or more, the checkouts' runs are interleaved (run i of
each command for each checkout in turn), one table each, then the ratios of
the warm medians to the first checkout's.  By default the CLI's processes
get a bytecode cache (in a temporary ``PYTHONPYCACHEPREFIX``), as an
installed package has; ``--no-bytecode`` runs them with
``PYTHONDONTWRITEBYTECODE=1`` so every module is compiled from source each
time.  ``--quick`` (one run, a few commands) is the smoke test's.
The machine is usually shared: quote medians, and the KDF line, which is the
floor every command that opens the store without an agent pays.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from client import agent  # noqa: E402
from harness.relay_process import RelayProcess  # noqa: E402

PASSPHRASE = "bench passphrase"
TIMEOUT = 120.0


@dataclass
class Case:
    """One command line; ``home`` picks whose data directory it runs in,
    ``prepare`` (if any) returns the arguments fresh for each run."""

    label: str
    args: list[str]
    goal_up: float | None
    goal_down: float | None
    home: str = "alice"
    prepare: Callable[[int], list[str]] | None = None
    quick: bool = False
    first: list[float] = field(default_factory=list)
    cpu_first: list[float] = field(default_factory=list)
    up: list[float] = field(default_factory=list)
    down: list[float] = field(default_factory=list)
    cpu_up: list[float] = field(default_factory=list)
    cpu_down: list[float] = field(default_factory=list)
    status_up: int | None = None
    status_down: int | None = None


class Lab:
    def __init__(self, base: Path, code: Path, bytecode: bool, n_relays: int = 2) -> None:
        self.base = base
        self.code = code
        self.relays = [RelayProcess(base / f"relay{i}" / "data") for i in range(n_relays)]
        self.env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        self.env |= {
            "SAMIZDAT_PASSPHRASE": PASSPHRASE,
            "SAMIZDAT_AGENT": "on",  # the default, whatever the caller's setting
            "PYTHONPATH": str(code),
            "HOME": str(base / "unixhome"),
        }
        if bytecode:
            self.env.pop("PYTHONDONTWRITEBYTECODE", None)
            self.env["PYTHONPYCACHEPREFIX"] = str(base / "pycache")
        else:
            self.env["PYTHONDONTWRITEBYTECODE"] = "1"

    def run(
        self, home: str, args: list[str], code: Path | None = None
    ) -> tuple[float, float, subprocess.CompletedProcess[str]]:
        """Wall seconds, CPU seconds (user + system) and the result of one
        CLI process (of checkout ``code``, by default the lab's)."""
        cmd = [sys.executable, "-m", "client.cli", "--home", str(self.base / home), *args]
        env = self.env | {"PYTHONPATH": str(code or self.code)}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        result = subprocess.run(
            cmd, cwd=self.base, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return wall, cpu, result

    def must(self, home: str, *args: str) -> str:
        _, _, result = self.run(home, list(args))
        if result.returncode != 0:
            raise SystemExit(f"set-up step {args} failed: {result.stderr.strip()}")
        return result.stdout

    def start_relays(self) -> None:
        for i, relay in enumerate(self.relays):
            self.relays[i] = RelayProcess(relay.data_dir, port=relay.port).start()

    def stop_relays(self) -> None:
        for relay in self.relays:
            relay.stop()

    def lock(self, home: str) -> None:
        """Stop the key agent of ``home``, if any (this checkout's
        client.agent speaks to any version's agent)."""
        agent.stop(self.base / home)

    def lock_all(self) -> None:
        for home in self.base.iterdir():
            if (home / "store.db").is_file():
                agent.stop(home)

    def setup(self, quick: bool) -> None:
        self.start_relays()
        urls = [a for r in self.relays for a in ("--relay", r.url)]
        self.must("alice", "init", "--name", "Alice", *urls)
        self.must("bob", "init", "--name", "Bob", *urls)
        link = self.must("alice", "invite").split()[0]
        self.must("bob", "accept", link)
        self.must("alice", "sync", "--wait", "2")
        if quick:
            return
        self.must("bob", "sync", "--wait", "1")
        self.must("bob", "send", "Alice", "hello from Bob")
        self.must("alice", "send", "Bob", "hello from Alice")
        self.must("alice", "sync", "--wait", "1")

    def links(self, n: int) -> list[str]:
        """``n`` invite links, each of another person (accepting the same
        person twice is refused), made while the relays are up."""
        urls = [a for r in self.relays for a in ("--relay", r.url)]
        links = []
        for i in range(n):
            self.must(f"inviter{i}", "init", "--name", f"Inviter {i}", *urls)
            links.append(self.must(f"inviter{i}", "invite").split()[0])
        return links


def kdf_seconds(runs: int) -> float:
    """The store's Argon2id (its default cost) alone, in this process."""
    from client.store import crypto

    times = []
    for _ in range(runs):
        start = time.perf_counter()
        crypto.passphrase_key(b"x", bytes(16), crypto.DEFAULT_OPSLIMIT, crypto.DEFAULT_MEMLIMIT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cases(lab: Lab, links: list[str], quick: bool, slot: int = 0, stride: int = 1) -> list[Case]:
    """The commands, fresh; run i of ``accept LINK`` takes
    ``links[i * stride + slot]`` (each checkout its own people)."""
    urls = [a for r in lab.relays for a in ("--relay", r.url)]

    def accept(i: int) -> list[str]:
        return ["accept", links[i * stride + slot]]

    def init(i: int) -> list[str]:
        return ["--home", str(lab.base / f"new{time.monotonic_ns()}"), "init", "--name", "N", *urls]

    table = [
        Case("chats", ["chats"], 0.3, 0.3, quick=True),
        Case("contacts", ["contacts"], 0.3, 0.3),
        Case("history Bob", ["history", "Bob"], 0.3, 0.3),
        Case("verify Bob", ["verify", "Bob"], 0.3, 0.3),
        Case("invite list", ["invite", "list"], 0.3, 0.3),
        Case("relays", ["relays"], 0.3, 0.3),
        Case("send Bob TEXT", ["send", "Bob", "bench message"], 1.0, 3.0, quick=True),
        Case("send nobody TEXT (bad input)", ["send", "nobody", "x"], 0.3, 0.3, quick=True),
        Case("accept BADLINK (bad input)", ["accept", "samizdat:i/AAAA"], 0.3, 0.3),
        Case("sync --wait 0", ["sync", "--wait", "0"], None, 3.0, quick=True),
        Case("invite (new link)", ["invite"], None, 3.0),
        Case("accept LINK", [], None, 3.0, prepare=accept),
        Case("init", [], None, 3.0, prepare=init),
    ]
    return table if not quick else [c for c in table if c.quick]


def measure(lab: Lab, tables: dict[Path, list[Case]], runs: int, up: bool) -> None:
    """Run i of each command for each checkout in turn.  With the relays
    up, each run is a ``first`` (after ``lock``) then a warm one."""
    codes = list(tables)
    for n in range(len(tables[codes[0]])):
        for i in range(runs):
            for code in codes:
                case = tables[code][n]
                args = case.prepare(i) if case.prepare else case.args
                home = case.home
                if args[:1] == ["--home"]:
                    home, args = args[1], args[2:]
                if up and not case.prepare:
                    lab.lock(home)
                    seconds, cpu, result = lab.run(home, args, code)
                    case.first.append(seconds)
                    case.cpu_first.append(cpu)
                seconds, cpu, result = lab.run(home, args, code)
                (case.up if up else case.down).append(seconds)
                (case.cpu_up if up else case.cpu_down).append(cpu)
                if up:
                    case.status_up = result.returncode
                else:
                    case.status_down = result.returncode


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f}" if values else "     -"


def goal(value: float | None) -> str:
    return f"< {value:g}" if value is not None else "-"


def verdict(values: list[float], target: float | None) -> str:
    if not values or target is None:
        return ""
    return "ok" if statistics.median(values) < target else "MISSED"


def report(table: list[Case], runs: int, kdf: float, code: Path, bytecode: bool) -> None:
    print(f"samizdat CLI latency: {runs} run(s) per command, medians per process")
    print(f"code: {code}; bytecode cache: {'yes' if bytecode else 'no'}")
    print(
        f"store KDF (Argon2id, default cost) alone: {kdf:.2f} s,"
        " paid by every store open without a key agent"
    )
    head = (
        f"{'command':32} {'first':>6} {'cpu':>6}   {'up':>6} {'cpu':>6} {'goal':>6} {'':6} "
        f"{'exit':>4}   {'down':>6} {'cpu':>6} {'goal':>6} {'':6} {'exit':>4}"
    )
    print(head)
    print("-" * len(head))
    for c in table:
        print(
            f"{c.label:32} {fmt(c.first)} {fmt(c.cpu_first)}   "
            f"{fmt(c.up)} {fmt(c.cpu_up)} {goal(c.goal_up):>6} "
            f"{verdict(c.up, c.goal_up):6} {c.status_up if c.status_up is not None else '-':>4}   "
            f"{fmt(c.down)} {fmt(c.cpu_down)} {goal(c.goal_down):>6} "
            f"{verdict(c.down, c.goal_down):6} "
            f"{c.status_down if c.status_down is not None else '-':>4}"
        )
    print("(wall and CPU seconds (user + system) of the process: on a loaded machine the")
    print(" wall time waits for a core, the CPU time does not; goals are on wall time)")
    print("(first: relays up, no key agent, passphrase and Argon2id; up/down: the next run,")
    print(" with the agent if the code has one; down: every relay stopped, exit 3 = queued)")


def ratios(tables: dict[Path, list[Case]]) -> None:
    """Warm medians (wall and CPU) of each checkout over the first one's."""
    codes = list(tables)
    base = tables[codes[0]]
    for code in codes[1:]:
        print(f"\nratios, {code} / {codes[0]} (warm medians; < 1 is faster)")
        print(f"{'command':32} {'up':>6} {'cpu':>6}   {'down':>6} {'cpu':>6}")
        for old, new in zip(base, tables[code], strict=True):
            cells = [
                ratio(new.up, old.up),
                ratio(new.cpu_up, old.cpu_up),
                "  ",
                ratio(new.down, old.down),
                ratio(new.cpu_down, old.cpu_down),
            ]
            print(f"{new.label:32} " + " ".join(cells))


def ratio(new: list[float], old: list[float]) -> str:
    if not new or not old or statistics.median(old) == 0:
        return "     -"
    return f"{statistics.median(new) / statistics.median(old):6.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per command (default 5)")
    parser.add_argument("--quick", action="store_true", help="one run of a few commands")
    parser.add_argument(
        "--code",
        type=Path,
        action="append",
        help="checkout whose CLI to run (default this one); repeat to compare, interleaved",
    )
    parser.add_argument(
        "--no-bytecode", action="store_true", help="compile every module from source each run"
    )
    args = parser.parse_args(argv)
    runs = 1 if args.quick else max(1, args.runs)
    bytecode = not args.no_bytecode
    codes = [c.resolve() for c in (args.code or [ROOT])]
    with tempfile.TemporaryDirectory(prefix="samizdat-bench-cli-") as tmp:
        lab = Lab(Path(tmp), codes[0], bytecode, 1 if args.quick else 2)
        try:
            lab.setup(args.quick)
            links = [] if args.quick else lab.links(runs * len(codes))
            tables = {
                code: cases(lab, links, args.quick, k, len(codes)) for k, code in enumerate(codes)
            }
            for code in codes:  # warm the bytecode cache and the page cache
                lab.run("alice", ["chats"], code)
            measure(lab, tables, runs, up=True)
            lab.stop_relays()
            measure(lab, tables, runs, up=False)
        finally:
            lab.stop_relays()
            lab.lock_all()
        kdf = kdf_seconds(1 if args.quick else 3)
        for code in codes:
            report(tables[code], runs, kdf, code, bytecode)
            print()
        ratios(tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
