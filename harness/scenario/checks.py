"""The checks evaluated at the end of a scenario, over a snapshot of the world.

Each check returns a :class:`CheckResult`.  A check the scenario lists under
``known_failures`` turns ``failed`` into ``xfail`` (with the reason) and
``passed`` into ``xpass`` (the known failure is gone: update the scenario).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# SPEC §2 says what the client does about each fault; the report repeats it.
FAULT_CLAIMS: dict[str, str] = {
    "drop": "survived (other relays) or detected (gap in the sender's sequence)",
    "withhold": "survived (other relays) or detected (gap in the sender's sequence)",
    "delay": "survived",
    "reorder": "survived (application messages accepted in any order)",
    "duplicate": "survived (de-duplicated by content hash)",
    "replay": "survived (de-duplicated; ratchet generation already used)",
    "inject": "detected (envelope does not unseal: warning notice)",
    "tamper": "detected (envelope does not unseal: warning notice)",
    "fork": "detected (sealed messages of the current epoch that do not decrypt, SPEC.md §8.11)",
    "dark": "survived (fail-over to the next relay of the group)",
    "refuse": "survived (fail-over to the next relay of the group)",
}
LATENCY_BINS_MS = [0, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, math.inf]


@dataclass
class CheckResult:
    name: str
    status: str  # passed | failed | skipped | xfail | xpass
    summary: str
    data: dict[str, Any] = field(default_factory=dict)
    reason: str = ""  # for xfail / xpass: the known failure's reason

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "summary": self.summary,
            "reason": self.reason,
            "data": self.data,
        }


def apply_known(results: list[CheckResult], known: dict[str, str]) -> list[CheckResult]:
    for r in results:
        if r.name in known:
            r.reason = known[r.name]
            if r.status == "failed":
                r.status = "xfail"
            elif r.status == "passed":
                r.status = "xpass"
    return results


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def latency_figures(latencies: list[float]) -> dict[str, Any]:
    hist = []
    for lo, hi in itertools.pairwise(LATENCY_BINS_MS):
        n = sum(1 for v in latencies if lo <= v < hi)
        hist.append([lo, None if hi == math.inf else hi, n])
    return {
        "count": len(latencies),
        "p50_ms": round(percentile(latencies, 0.5), 1),
        "p95_ms": round(percentile(latencies, 0.95), 1),
        "max_ms": round(max(latencies), 1) if latencies else 0.0,
        "mean_ms": round(sum(latencies) / len(latencies), 1) if latencies else 0.0,
        "histogram": hist,
    }


# -- engine-mode checks over a snapshot ---------------------------------------------
#
# snapshot = {
#   "members": {name: {"key": hex, "groups": {label: {"history": [...], "missing": {hex: n},
#               "epoch": int, "auth": hex, "active": bool}}, "notices": [(conv hex, text, warn)]}},
#   "sent": [{"id": hex, "group", "sender", "kind", "body", "sent_ms", "recipients"}],
#   "groups": {label: {"members": [...]}},
#   "statuses": {msg id hex: {"relays_stored": [...], "delivered_to": [key hex...]}},
# }


def check_delivery(snap: dict[str, Any], mode: Any) -> CheckResult:
    members = snap["members"]
    keys = {name: m["key"] for name, m in members.items()}
    outcomes = {"delivered": 0, "reported_missing": 0, "visible_to_sender": 0, "silent": 0}
    undelivered: dict[tuple[str, str, str], int] = {}
    silent: list[str] = []
    not_stored = 0
    for s in snap["sent"]:
        status = snap["statuses"].get(s["id"], {})
        # a message meant for nobody (the hostile member's withheld one,
        # handed to its victim by the harness) need not be on a relay
        if not status.get("relays_stored") and s["recipients"]:
            not_stored += 1
        current = set(snap["groups"][s["group"]]["members"])
        for r in s["recipients"]:
            if r not in current:
                continue
            g = members[r]["groups"].get(s["group"])
            ids = {e["id"] for e in g["history"]} if g else set()
            if s["id"] in ids:
                outcomes["delivered"] += 1
                continue
            undelivered[(r, s["group"], s["sender"])] = (
                undelivered.get((r, s["group"], s["sender"]), 0) + 1
            )
    for (r, label, sender), n in undelivered.items():
        g = members[r]["groups"].get(label)
        reported = g["missing"].get(keys[sender], 0) if g else 0
        by_reader = min(n, reported)
        outcomes["reported_missing"] += by_reader
        rest = n - by_reader
        # the sender sees per-member delivery receipts (groups up to 64)
        visible = 0
        for s in snap["sent"]:
            if rest - visible <= 0:
                break
            if s["sender"] == sender and s["group"] == label and r in s["recipients"]:
                st = snap["statuses"].get(s["id"], {})
                if keys[r] not in st.get("delivered_to", []) and st.get("receipts", True):
                    visible += 1
        visible = min(visible, rest)
        outcomes["visible_to_sender"] += visible
        if rest - visible > 0:
            outcomes["silent"] += rest - visible
            silent.append(f"{rest - visible} from {sender} to {r}")
    total = sum(outcomes.values())
    data = {"outcomes": outcomes, "expected": total, "not_stored_on_any_relay": not_stored}
    undelivered_n = total - outcomes["delivered"]
    if mode == "all":
        ok = undelivered_n == 0 and not_stored == 0
        summary = f"{outcomes['delivered']}/{total} delivered"
    else:
        ok = outcomes["silent"] == 0
        summary = (
            f"{outcomes['delivered']}/{total} delivered, {undelivered_n} undelivered "
            f"({outcomes['reported_missing']} reported missing by the reader, "
            f"{outcomes['visible_to_sender']} visible to the sender, {outcomes['silent']} silent)"
        )
    if silent:
        data["silent"] = silent[:20]
    return CheckResult("delivery", "passed" if ok else "failed", summary, data)


def check_no_forgery(snap: dict[str, Any]) -> CheckResult:
    sent = {s["id"]: s for s in snap["sent"]}
    keys = {name: m["key"] for name, m in snap["members"].items()}
    problems: list[str] = []
    shown = 0
    for name, m in snap["members"].items():
        for label, g in m["groups"].items():
            seen: set[str] = set()
            for e in g["history"]:
                shown += 1
                if e["id"] in seen:
                    problems.append(f"{name}/{label}: message {e['id'][:8]} shown twice")
                seen.add(e["id"])
                if e["outgoing"]:
                    continue
                s = sent.get(e["id"])
                if s is None:
                    problems.append(f"{name}/{label}: message {e['id'][:8]} was never sent")
                elif e["sender"] != keys[s["sender"]]:
                    problems.append(f"{name}/{label}: {e['id'][:8]} attributed to another sender")
                elif (s["kind"] == "file") != (e["kind"] == "file") or e["body"] != s["body"]:
                    problems.append(f"{name}/{label}: {e['id'][:8]} content differs from sent")
    ok = not problems
    summary = (
        f"{shown} history entries, none forged, altered or repeated"
        if ok
        else f"{len(problems)} problem(s): {problems[0]}"
    )
    return CheckResult("no_forgery", "passed" if ok else "failed", summary, {"problems": problems})


FORK_WORDS = ("fork", "epoch authenticator", "diverge")


def check_convergence(snap: dict[str, Any]) -> CheckResult:
    per_group: dict[str, Any] = {}
    ok = True
    forks = []
    for label, info in snap["groups"].items():
        auths: dict[str, list[str]] = {}
        for name in info["members"]:
            g = snap["members"][name]["groups"].get(label)
            if g is None or not g["active"]:
                auths.setdefault("(not joined)", []).append(name)
                continue
            auths.setdefault(f"epoch {g['epoch']} {g['auth'][:16]}", []).append(name)
        per_group[label] = auths
        if len(auths) > 1:
            ok = False
            forks.append(label)
    detected = [
        (name, text)
        for name, m in snap["members"].items()
        for _, text, _ in m["notices"]
        if any(w in text.lower() for w in FORK_WORDS)
    ]
    data = {"groups": per_group, "fork_notices": detected[:10]}
    if ok:
        return CheckResult("convergence", "passed", "every member on one epoch authenticator", data)
    branches = {label: len(per_group[label]) for label in forks}
    if detected:
        return CheckResult(
            "convergence",
            "passed",
            f"fork in {branches} detected and reported by {len(detected)} client notice(s)",
            data,
        )
    return CheckResult(
        "convergence",
        "failed",
        f"members diverged {branches} and no client reported a fork",
        data,
    )


def scan_dirs(paths: list[Path], needles: list[bytes]) -> list[tuple[str, str]]:
    hits = []
    for root in paths:
        if not root.exists():
            continue
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if not path.is_file():
                continue
            data = path.read_bytes()
            for needle in needles:
                if needle in data:
                    hits.append((str(path), needle.decode(errors="replace")))
    return hits


def check_canary(relay_dirs: list[Path], canaries: list[bytes]) -> CheckResult:
    if not canaries:
        return CheckResult("canary", "skipped", "no canary was sent")
    hits = scan_dirs(relay_dirs, canaries)
    if hits:
        return CheckResult(
            "canary",
            "failed",
            f"plaintext found in a relay store: {hits[0][1]} in {hits[0][0]}",
            {"hits": hits[:20]},
        )
    return CheckResult(
        "canary",
        "passed",
        f"{len(canaries)} canaries absent from {len(relay_dirs)} relay data dir(s)",
        {"canaries": len(canaries)},
    )


def check_no_repeats(relays: dict[str, dict[str, Any]]) -> CheckResult:
    found = {name: r["traffic"]["repeats"] for name, r in relays.items()}
    bad = {n: v for n, v in found.items() if any(v.values())}
    data = {"per_relay": found}
    if bad:
        return CheckResult("no_repeats", "failed", f"repeated ciphertext or blob ids: {bad}", data)
    posts = sum(r["traffic"]["posts"] for r in relays.values())
    chunks = sum(r["traffic"]["blob_chunks"] for r in relays.values())
    return CheckResult(
        "no_repeats",
        "passed",
        f"{posts} envelopes and {chunks} blob chunks, no ciphertext hash or blob id repeated",
        data,
    )


def check_fault_detection(
    snap: dict[str, Any],
    relays: dict[str, dict[str, Any]],
    delivery: CheckResult,
    convergence: CheckResult,
) -> CheckResult:
    injected: dict[str, int] = {}
    post_tamper = 0
    for r in relays.values():
        for ev in r["faults_log"]:
            injected[ev["kind"]] = injected.get(ev["kind"], 0) + 1
            if ev["kind"] == "tamper" and ev["detail"] == "stored altered":
                post_tamper += 1
    unopened = sum(
        1
        for m in snap["members"].values()
        for _, text, warn in m["notices"]
        if warn and "does not open" in text
    )
    outcome: dict[str, dict[str, Any]] = {}
    ok = True
    for kind, n in sorted(injected.items()):
        row: dict[str, Any] = {"injected": n, "claim": FAULT_CLAIMS.get(kind, "")}
        if kind in ("tamper", "inject"):
            need = injected.get("tamper", 0) - post_tamper + injected.get("inject", 0)
            need += 1 if post_tamper else 0
            row["detected"] = min(n, unopened)
            row["outcome"] = "detected" if unopened >= need else "partly detected"
            ok = ok and unopened >= need
        elif kind == "fork":
            forked = convergence.data.get("groups", {})
            diverged = any(len(v) > 1 for v in forked.values())
            noticed = bool(convergence.data.get("fork_notices"))
            row["detected"] = n if noticed else 0
            row["outcome"] = (
                "detected" if noticed else ("not detected" if diverged else "survived (no fork)")
            )
            ok = ok and (noticed or not diverged)
        elif kind in ("drop", "withhold"):
            o = delivery.data.get("outcomes", {})
            row["detected"] = o.get("reported_missing", 0)
            row["outcome"] = (
                "survived"
                if not o.get("silent") and o.get("delivered") == delivery.data.get("expected")
                else ("detected" if not o.get("silent") else "silent loss")
            )
            ok = ok and not o.get("silent")
        else:
            row["detected"] = 0
            row["outcome"] = "survived" if delivery.status != "failed" else "not survived"
        outcome[kind] = row
    if not injected:
        return CheckResult("fault_detection", "skipped", "no fault injected", {"faults": {}})
    summary = ", ".join(
        f"{k}: {v['injected']} injected, {v['outcome']}" for k, v in outcome.items()
    )
    return CheckResult(
        "fault_detection",
        "passed" if ok else "failed",
        summary,
        {"faults": outcome, "unopened_notices": unopened},
    )
