"""``samizdat-harness``: the protocol test harness's command line."""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from harness.conformance.registry import FileReport, iter_vector_files, run_file


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
    vec.add_argument("paths", nargs="+", metavar="PATH", help="vector files or directories")
    vec.add_argument("-v", "--verbose", action="store_true", help="list every failure")
    vec.set_defaults(func=cmd_vectors)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
