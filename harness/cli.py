"""``samizdat-harness``: the protocol test harness's command line.

Subcommands: ``vectors`` (MLS interop vectors), ``malicious-relay``,
``scenario``, ``relay-conformance`` and ``spy`` (SPEC.md §10).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.conformance.registry import FileReport, iter_vector_files, run_file
from harness.malicious import KINDS, Fault, FaultError, MaliciousRelay


def _print_report(report: FileReport, verbose: bool) -> None:
    name = report.path.name
    if report.error:
        print(f"{name}: ERROR {report.error}")
        return
    if not report.implemented:
        print(f"{name}: kind {report.kind!r} is not implemented yet (0 cases run)")
        return
    print(
        f"{name} [{report.kind}]: {report.count('passed')} passed, "
        f"{report.count('failed')} failed, {report.count('skipped')} skipped"
    )
    by_suite: dict[int | None, list[str]] = defaultdict(list)
    for o in report.outcomes:
        by_suite[o.suite].append(o.status)
    if any(s is not None for s in by_suite):
        for suite in sorted(by_suite, key=lambda s: -1 if s is None else s):
            statuses = by_suite[suite]
            label = "no suite" if suite is None else f"suite {suite}"
            print(
                f"    {label}: {statuses.count('passed')} passed, "
                f"{statuses.count('failed')} failed, {statuses.count('skipped')} skipped"
            )
    reasons: dict[str, int] = defaultdict(int)
    for o in report.outcomes:
        if o.status == "skipped":
            reasons[o.reason] += 1
    for reason, n in sorted(reasons.items()):
        print(f"    skipped {n}: {reason}")
    shown = 0
    for o in report.outcomes:
        if o.status == "failed" and (verbose or shown < 5):
            print(f"    FAILED case {o.index} (suite {o.suite}): {o.reason}")
            shown += 1
    hidden = report.count("failed") - shown
    if hidden > 0:
        print(f"    ... {hidden} more failure(s); run with -v to list all")


def cmd_vectors(args: argparse.Namespace) -> int:
    if args.generate is not None:
        from harness.conformance.generate import DEFAULT_SEED, generate

        seed = args.seed.encode() if args.seed is not None else DEFAULT_SEED
        for path in generate(Path(args.generate), seed=seed):
            print(f"wrote {path}")
        if not args.paths:
            return 0
    if not args.paths:
        print("error: give vector files or directories, or --generate DIR", file=sys.stderr)
        return 2
    paths = [Path(p) for p in args.paths]
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"error: no such file or directory: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    passed = failed = skipped = 0
    unusable = 0
    for path in iter_vector_files(paths):
        report = run_file(path)
        _print_report(report, args.verbose)
        passed += report.count("passed")
        failed += report.count("failed")
        skipped += report.count("skipped")
        if report.error or not report.implemented:
            unusable += 1
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    if unusable:
        print(f"({unusable} file(s) not run: unknown or not-yet-implemented kinds, listed above)")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samizdat-harness", description="Samizdat protocol test harness."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    vec = sub.add_parser(
        "vectors",
        help="run the official MLS interop test vectors",
        description="Run MLS interop test-vector files (kinds are recognised by content).",
    )
    vec.add_argument("paths", nargs="*", metavar="PATH", help="vector files or directories")
    vec.add_argument(
        "--generate",
        metavar="DIR",
        help="first write vectors for the post-quantum suites into DIR (SPEC §6.1)",
    )
    vec.add_argument(
        "--seed", help="seed for --generate (default: the one the published files use)"
    )
    vec.add_argument("-v", "--verbose", action="store_true", help="list every failure")
    vec.set_defaults(func=cmd_vectors)
    add_subcommands(sub, malicious_relay, scenario, relay_conformance)
    from harness.spy.audit import add_parser as add_spy

    add_spy(sub)
    return parser


Handler = Callable[[argparse.Namespace], int]


def add_subcommands(
    sub: Any, malicious: Handler, scenario_cmd: Handler, conformance: Handler
) -> None:
    mal = sub.add_parser(
        "malicious-relay",
        help="run a fault-injecting relay in front of a real one",
        description="A seeded fault-injecting WebSocket+HTTP proxy in front of a real relay. "
        "Faults: " + "; ".join(f"{k}: {v}" for k, v in KINDS.items()),
    )
    mal.add_argument("--upstream", required=True, metavar="URL", help="the real relay")
    mal.add_argument("--listen", default="127.0.0.1:8481", metavar="HOST:PORT")
    mal.add_argument("--seed", type=int, default=0)
    mal.add_argument("--report", type=Path, metavar="FILE", help="JSON fault log and traffic")
    mal.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND[:k=v,...]",
        help="a fault, e.g. drop:rate=0.3,mailbox=ab12 or fork:reader=odd,min_size=1024",
    )
    mal.add_argument("--mailbox", default="", metavar="HEX", help="target of the shorthands")
    mal.add_argument("--reader", default="", metavar="SEL", help="conn:N, reads:HEX, odd, even")
    for kind in ("drop", "duplicate", "replay", "inject", "tamper"):
        mal.add_argument(f"--{kind}", type=float, metavar="RATE", help=f"{kind} at this rate")
    mal.add_argument("--delay", type=float, metavar="SECONDS")
    mal.add_argument("--jitter", type=float, default=0.0, metavar="SECONDS")
    mal.add_argument("--reorder", type=int, metavar="WINDOW")
    mal.add_argument("--withhold", action="store_true", help="withhold --mailbox from --reader")
    mal.add_argument("--fork", action="store_true", help="fork --reader (default odd)")
    mal.add_argument("--dark-after", type=float, metavar="T")
    mal.add_argument("--refuse-after", type=float, metavar="T")
    mal.add_argument("--duration", type=float, default=0, help="stop after this many seconds")
    mal.set_defaults(func=malicious)

    sc = sub.add_parser(
        "scenario",
        help="run declarative scenarios (TOML)",
        description="Run scenario files: relays (honest or malicious), clients, timed actions "
        "and end-of-run checks; writes a JSON and an HTML report per scenario.",
    )
    sc.add_argument("files", nargs="+", type=Path, metavar="FILE.toml")
    sc.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter (members=500) or any key (relays.0.kind=...)",
    )
    sc.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="where the JSON and HTML reports go (default: the user's cache directory, "
        "samizdat-harness/reports; never the working tree)",
    )
    sc.add_argument("--workdir", type=Path, help="keep relay and client data here")
    sc.set_defaults(func=scenario_cmd)

    rc = sub.add_parser(
        "relay-conformance",
        help="check a relay against SPEC.md §7",
        description="Run the relay conformance suite against URL (include the secret prefix).",
    )
    rc.add_argument("url", metavar="URL")
    rc.add_argument(
        "--mailbox-max-messages",
        type=int,
        default=0,
        metavar="N",
        help="the relay's mailbox_max_messages (enables the quota check)",
    )
    rc.add_argument(
        "--ttl-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for a 1 s TTL to expire (enables the TTL check)",
    )
    rc.add_argument("--access-token", default="", help="the operator's access token, if any")
    rc.add_argument("--only", action="append", default=[], metavar="CHECK")
    rc.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    rc.set_defaults(func=conformance)


def faults_from_args(args: argparse.Namespace) -> list[Fault]:
    sel = {"mailbox": args.mailbox, "reader": args.reader}
    faults = [Fault.parse(text) for text in args.fault]
    for kind in ("drop", "duplicate", "replay", "inject", "tamper"):
        rate = getattr(args, kind)
        if rate is not None:
            faults.append(Fault(kind, rate=rate, **sel))
    if args.delay is not None:
        faults.append(Fault("delay", seconds=args.delay, jitter=args.jitter, **sel))
    if args.reorder is not None:
        faults.append(Fault("reorder", window=args.reorder, **sel))
    if args.withhold:
        faults.append(Fault("withhold", **sel))
    if args.fork:
        faults.append(Fault("fork", mailbox=args.mailbox, reader=args.reader or "odd"))
    if args.dark_after is not None:
        faults.append(Fault("dark", after=args.dark_after))
    if args.refuse_after is not None:
        faults.append(Fault("refuse", after=args.refuse_after))
    return faults


def malicious_relay(args: argparse.Namespace) -> int:
    try:
        faults = faults_from_args(args)
    except FaultError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    host, _, port = args.listen.rpartition(":")
    relay = MaliciousRelay(
        args.upstream, faults, seed=args.seed, host=host or "127.0.0.1", port=int(port or 0)
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        if sys.platform != "win32":  # the Windows event loop has no signal handlers
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        await relay.start()
        print(f"malicious relay on {relay.url} -> {relay.upstream}, seed {args.seed}", flush=True)
        for f in faults:
            print(f"  fault {json.dumps(f.describe())}", flush=True)
        shown = 0
        deadline = time.monotonic() + args.duration if args.duration else None
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                for ev in relay.log.events[shown:]:
                    print(
                        f"  {ev.t:9.3f}s {ev.kind:<9} conn {ev.conn} mailbox {ev.mailbox} "
                        f"seq {ev.seq} {ev.detail}",
                        flush=True,
                    )
                shown = len(relay.log.events)
                if deadline is not None and time.monotonic() >= deadline:
                    break
        finally:
            await relay.stop()
        if args.report:
            write_proxy_report(relay, args.report)
        print(f"{len(relay.log.events)} fault(s) injected: {relay.log.counts()}")

    asyncio.run(main())
    return 0


def write_proxy_report(relay: MaliciousRelay, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "upstream": relay.upstream,
                "url": relay.url,
                "seed": relay.seed,
                "faults": [f.describe() | {"injected": f.injected} for f in relay.faults],
                "faults_log": relay.log.to_json(),
                "traffic": relay.stats.summary(),
            },
            indent=1,
        )
    )


def default_report_dir() -> Path:
    """Reports default to the user's cache directory, never the working tree."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("samizdat-harness")) / "reports"


def scenario(args: argparse.Namespace) -> int:
    from harness.report import render_terminal, write_reports
    from harness.scenario import ScenarioError, load
    from harness.scenario.runner import run

    worst = 0
    for path in args.files:
        try:
            sc = load(path, args.set)
        except ScenarioError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            return 2
        workdir = args.workdir / sc.name if args.workdir else None
        report = asyncio.run(run(sc, workdir))
        print(render_terminal(report))
        js, html = write_reports(report, args.report_dir or default_report_dir())
        print(f"  report: {js} {html}")
        if report["result"] == "failed":
            worst = 1
    return worst


def relay_conformance(args: argparse.Namespace) -> int:
    from harness.relay_conformance import Options, format_outcomes, run_suite

    opts = Options(args.url, args.mailbox_max_messages, args.ttl_wait, args.access_token)
    outcomes = asyncio.run(run_suite(opts, args.only or None))
    print(format_outcomes(outcomes))
    if args.json:
        args.json.write_text(json.dumps([vars(o) for o in outcomes], indent=1))
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
