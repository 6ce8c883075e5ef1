"""The terminal summary of a run report."""

from __future__ import annotations

from typing import Any

from harness.report.explain import fork_lines, member_states, plain_text, summary, why

LABEL = {
    "passed": "pass ",
    "failed": "FAIL ",
    "skipped": "skip ",
    "xfail": "xfail",
    "xpass": "XPASS",
}


def epoch_lines(report: dict[str, Any], most: int = 10) -> list[str]:
    """Each member's epochs in the order its client applied them."""
    per: dict[str, list[str]] = {}
    for e in report.get("epochs", []):
        per.setdefault(e["member"], []).append(f"{e['epoch']} ({e['t']:.1f} s, {e['auth'][:6]})")
    lines = []
    for name, steps in list(per.items())[:12]:
        shown = steps[-most:]
        more = "... -> " if len(steps) > most else ""
        lines.append(f"  epochs of {name}: {more}{' -> '.join(shown)}")
    return lines


def render_terminal(report: dict[str, Any]) -> str:
    lines = []
    result = report["result"].upper()
    lines.append(
        f"scenario {report['scenario']}: {result} "
        f"({report['duration_s']:.1f} s, seed {report['seed']}, mode {report['mode']})"
    )
    if report.get("error"):
        lines.append(f"  error: {report['error']}")
    for c in report["checks"]:
        lines.append(
            f"  [{LABEL.get(c['status'], c['status'])}] {c['name']:<16} {summary(c, report)}"
        )
        reason = why(c, report)
        if reason:
            lines.append(f"          {reason}")
        if c["status"] in ("xfail", "xpass") and c.get("reason"):
            tag = "known failure" if c["status"] == "xfail" else "fixed? known failure"
            lines.append(f"          {tag}: {c['reason']}")
    faults = report.get("faults", {})
    if faults.get("injected"):
        parts = [
            f"{k} {n} ({faults.get('outcome', {}).get(k, '') or 'logged'})"
            for k, n in sorted(faults["injected"].items())
        ]
        lines.append("  faults injected: " + ", ".join(parts))
    for line in fork_lines(report):
        lines.append(f"  fork: {line}")
    forked = {m: st for m, st in member_states(report).items() if st["forked"]}
    for name, st in forked.items():
        lines.append(f"  {name}: forked in {st['forked']} ({st['epoch']})")
    if forked or len(report.get("members", [])) <= 8:
        lines += epoch_lines(report)
    for x in report.get("attacks", []):
        lines.append(f"  attack {x['kind']} by {x['attacker']}: {x['outcome']}: {x['observed']}")
    lat = report.get("latency", {})
    if lat.get("count"):
        tp = report.get("throughput", {})
        extra = f", {tp['deliveries_per_s']} deliveries/s" if tp.get("deliveries_per_s") else ""
        lines.append(
            f"  latency: {lat['count']} deliveries, p50 {lat['p50_ms']:.0f} ms, "
            f"p95 {lat['p95_ms']:.0f} ms, max {lat['max_ms']:.0f} ms{extra}"
        )
    mls = report.get("mls")
    if mls:
        lines.append(
            f"  group: {mls['members']} members, {len(mls['commits'])} commits, largest commit "
            f"{mls['max_commit_bytes']} B, largest Welcome {mls['max_welcome_bytes']} B"
        )
        j, jc = mls["join_ms"], mls["join_cpu_ms"]
        if j["count"]:
            lines.append(
                f"  joins: {j['count']}, Welcome posted -> usable p50 {j['p50_ms']:.0f} ms "
                f"p95 {j['p95_ms']:.0f} ms; Group.join CPU p50 {jc['p50_ms']:.0f} ms "
                f"max {jc['max_ms']:.0f} ms"
            )
    failed = [a for a in report.get("actions", []) if a.get("error")]
    for a in failed[:5]:
        lines.append(f"  action {a['do']} at {a['t']:.1f}s failed: {plain_text(a['error'])}")
    return "\n".join(lines)
