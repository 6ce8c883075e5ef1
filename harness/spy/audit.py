"""``samizdat-harness spy``: run the spy scenario (or read given spy logs),
analyse, write the JSON and HTML report, and exit non-zero on a violation
of SPEC.md §2/§7.1 (2 when the scenario or the logs themselves fail)."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness.spy.analysis import ADDRESS_WINDOW, TIMING_DELTA, LogError, analyse, load_logs
from harness.spy.report import render_terminal, write_audit
from harness.spy.scenario import ScenarioFailed, ScenarioRun, SpyOptions, run_scenario


def audit_scenario(
    options: SpyOptions,
    workdir: Path,
    *,
    address_window: float = ADDRESS_WINDOW,
    timing_delta: float = TIMING_DELTA,
) -> tuple[dict[str, Any], ScenarioRun]:
    """Run the scenario in ``workdir`` and analyse what its relays logged."""
    run = run_scenario(options, workdir)
    result = analyse(
        load_logs(run.logs),
        run.truth,
        address_window=address_window,
        timing_delta=timing_delta,
    )
    result["scenario"] = {
        "members": options.members,
        "relays": options.relays,
        "messages_per_member": options.messages,
        "file_chunks": options.file_chunks,
        "proxy": options.proxy,
        "seconds": round(run.seconds, 1),
    }
    if options.proxy:
        result["scenario"]["proxy_connects"] = len(run.proxy_connects)
        result["scenario"]["proxy_usernames"] = len({u for _, _, u in run.proxy_connects if u})
    result["ground_truth_detail"] = run.truth.to_json()
    return result, run


def add_parser(sub: Any) -> None:
    sp = sub.add_parser(
        "spy",
        help="audit what a compelled relay learns (SPEC.md §7.1.1)",
        description="Run a group over relays that log everything their process sees, then "
        "report what they can infer (contact graph, post attribution, cross-relay links, "
        "timing) and whether SPEC admits it. Exit 1 on a violation.",
    )
    sp.add_argument("--members", type=int, default=3, help="group size (default 3)")
    sp.add_argument("--relays", type=int, default=2, help="spy relays (default 2)")
    sp.add_argument("--messages", type=int, default=2, help="texts per member (default 2)")
    sp.add_argument("--file-chunks", type=int, default=1, help="chunks of the file (0: none)")
    sp.add_argument("--proxy", action="store_true", help="clients connect through a SOCKS5 proxy")
    sp.add_argument(
        "--logs",
        nargs="+",
        type=Path,
        metavar="FILE.jsonl",
        help="analyse these spy logs instead of running the scenario (no ground truth)",
    )
    sp.add_argument("--address-window", type=float, default=ADDRESS_WINDOW, metavar="SECONDS")
    sp.add_argument("--timing-delta", type=float, default=TIMING_DELTA, metavar="SECONDS")
    sp.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report directory (default: the harness report directory in the user's cache, "
        "never the working tree)",
    )
    sp.add_argument("--workdir", type=Path, help="keep relay and client data here")
    sp.set_defaults(func=cmd_spy)


def cmd_spy(args: argparse.Namespace) -> int:
    from harness.cli import default_report_dir

    out = args.out or default_report_dir()
    try:
        if args.logs:
            result = analyse(
                load_logs(args.logs),
                address_window=args.address_window,
                timing_delta=args.timing_delta,
            )
            logs = list(args.logs)
        else:
            options = SpyOptions(
                args.members, args.relays, args.messages, args.file_chunks, args.proxy
            )
            with tempfile.TemporaryDirectory(prefix="samizdat-spy-") as tmp:
                workdir = args.workdir or Path(tmp)
                result, run = audit_scenario(
                    options,
                    workdir,
                    address_window=args.address_window,
                    timing_delta=args.timing_delta,
                )
                out.mkdir(parents=True, exist_ok=True)
                logs = [shutil.copy(p, out / p.name) for p in run.logs]
    except (ValueError, LogError, ScenarioFailed, RuntimeError) as exc:
        print(f"spy: {exc}", file=sys.stderr)
        return 2
    print(render_terminal(result))
    js, html = write_audit(result, out)
    print(f"  report: {js} {html}")
    print(f"  spy logs: {' '.join(str(p) for p in logs)}")
    return 1 if result["violations"] else 0
