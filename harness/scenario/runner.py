"""Run a scenario: start its relays and clients, play its timed actions,
settle, evaluate its checks, and return the run report (a JSON-able dict,
SPEC.md §10.4)."""

from __future__ import annotations

import asyncio
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from client.engine import Engine
from harness.hostile import check_insider
from harness.scenario import checks as C
from harness.scenario.format import Scenario
from harness.scenario.world import World

REPORT_VERSION = 1


async def run(scenario: Scenario, workdir: Path | None = None) -> dict[str, Any]:
    """Run ``scenario`` in ``workdir`` (a temporary directory if None)."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="samizdat-scenario-") as tmp:
            return await run(scenario, Path(tmp))
    if scenario.clients.mode == "mls":
        from harness.scenario.mlsworld import run_mls

        return await run_mls(scenario, workdir)
    world = World(scenario, workdir)
    started = time.time()
    error = ""
    try:
        await world.start_relays()
        await world.start_members()
        try:
            await asyncio.wait_for(_play(world), scenario.timeout)
        except TimeoutError:
            error = f"scenario timed out after {scenario.timeout:.0f}s"
        await world.do_join({})
        already = bool(scenario.actions) and scenario.actions[-1]["do"] == "settle"
        settled = await world.settle(0.0 if already else scenario.settle)
        snap = snapshot(world)
    finally:
        await world.stop()
    relays = relay_reports(world)
    results = evaluate(scenario, world, snap, relays)
    return build_report(scenario, world, snap, relays, results, started, settled, error)


async def _play(world: World) -> None:
    for action in world.scenario.actions:
        at = action.get("at")
        if at is not None:
            delay = float(at) - world.elapsed()
            if delay > 0:
                await asyncio.sleep(delay)
        if action.get("background") and action["do"] != "send":
            world.background.append(asyncio.ensure_future(world.run_action(action)))
            continue
        await world.run_action(action)


def _entry(e: Any) -> dict[str, Any]:
    return {
        "id": e.message_id.hex(),
        "sender": e.sender.hex(),
        "kind": e.kind,
        "body": e.file.get("name", "") if e.kind == "file" else e.text,
        "received_ms": e.received_at_ms,
        "outgoing": e.outgoing,
    }


def snapshot(world: World) -> dict[str, Any]:
    """Everything the checks read, taken from the engines before they close."""
    members: dict[str, Any] = {}
    statuses: dict[str, Any] = {}
    for name, m in world.members.items():
        engine: Engine = m.engine
        groups: dict[str, Any] = {}
        for label, rec in world.groups.items():
            group = engine.groups.get(rec.conv_id)
            conv = engine.conversation(rec.conv_id)
            if group is None or conv is None:
                continue
            groups[label] = {
                "history": [_entry(e) for e in engine.history(rec.conv_id)],
                "missing": {k.hex(): n for k, n in engine.missing(conv).items()},
                "epoch": group.epoch,
                "auth": group.epoch_authenticator.hex(),
                "active": group.active and not conv.left,
                "size": len(group.members()),
            }
        members[name] = {
            "key": engine.identity.signature_pub.hex(),
            "groups": groups,
            "notices": [
                (n.conversation.hex() if n.conversation else "", n.text, n.warning)
                for n in engine.notices
            ],
        }
    for s in world.sent:
        st = world.engine(s.sender).status(s.message_id)
        size = len(world.groups[s.group].members)
        statuses[s.message_id.hex()] = {
            "relays_stored": list(st.relays_stored) if st else [],
            "delivered_to": [k.hex() for k in st.delivered_to] if st else [],
            "receipts": size <= 64,
        }
    return {
        "members": members,
        "statuses": statuses,
        "groups": {label: {"members": sorted(g.members)} for label, g in world.groups.items()},
        "sent": [
            {
                "id": s.message_id.hex(),
                "group": s.group,
                "sender": s.sender,
                "kind": s.kind,
                "body": s.body,
                "sent_ms": s.sent_ms,
                "recipients": s.recipients,
            }
            for s in world.sent
        ],
    }


def relay_reports(world: World) -> dict[str, dict[str, Any]]:
    out = {}
    for name, h in world.relays.items():
        out[name] = {
            "name": name,
            "kind": h.spec.kind,
            "process": h.spec.process,
            "url": h.url,
            "upstream": h.upstream.url,
            "killed": h.killed,
            "faults": [f.describe() | {"injected": f.injected} for f in h.proxy.faults],
            "faults_log": h.proxy.log.to_json(),
            "traffic": h.proxy.stats.summary(),
        }
    return out


def evaluate(
    scenario: Scenario, world: World, snap: dict[str, Any], relays: dict[str, dict[str, Any]]
) -> list[C.CheckResult]:
    want = scenario.checks
    results: list[C.CheckResult] = []
    delivery = C.check_delivery(snap, want["delivery"])
    convergence = C.check_convergence(snap)
    if want["delivery"]:
        results.append(delivery)
    if want["no_forgery"]:
        results.append(C.check_no_forgery(snap))
    if want["convergence"]:
        results.append(convergence)
    if want["canary"]:
        results.append(C.check_canary([h.data_dir for h in world.relays.values()], world.canaries))
    if want["fault_detection"]:
        results.append(C.check_fault_detection(snap, relays, delivery, convergence))
    if want["no_repeats"]:
        results.append(C.check_no_repeats(relays))
    if want["insider"]:
        results.append(check_insider(world.attacks))
    if want["latency"]:
        lat = latencies(snap)
        fig = C.latency_figures([x["latency_ms"] for x in lat])
        limit = want["latency"] if not isinstance(want["latency"], bool) else None
        ok = limit is None or fig["p95_ms"] <= float(limit)
        results.append(
            C.CheckResult(
                "latency",
                "passed" if ok else "failed",
                f"{fig['count']} deliveries, p50 {fig['p50_ms']:.0f} ms, p95 "
                f"{fig['p95_ms']:.0f} ms, max {fig['max_ms']:.0f} ms"
                + (f" (limit p95 {limit} ms)" if limit else ""),
                fig,
            )
        )
    return C.apply_known(results, scenario.known_failures)


def latencies(snap: dict[str, Any]) -> list[dict[str, Any]]:
    sent = {s["id"]: s for s in snap["sent"]}
    out = []
    for name, m in snap["members"].items():
        for label, g in m["groups"].items():
            for e in g["history"]:
                s = sent.get(e["id"])
                if s is None or e["outgoing"]:
                    continue
                out.append(
                    {
                        "member": name,
                        "group": label,
                        "sender": s["sender"],
                        "sent_ms": s["sent_ms"],
                        "received_ms": e["received_ms"],
                        "latency_ms": max(0, e["received_ms"] - s["sent_ms"]),
                    }
                )
    return out


def overall(results: list[C.CheckResult], error: str = "") -> str:
    statuses = {r.status for r in results}
    if error or "failed" in statuses:
        return "failed"
    if "xfail" in statuses:
        return "known-failure"
    return "passed"


def build_report(
    scenario: Scenario,
    world: World,
    snap: dict[str, Any],
    relays: dict[str, dict[str, Any]],
    results: list[C.CheckResult],
    started: float,
    settled: bool,
    error: str,
) -> dict[str, Any]:
    lat = latencies(snap)
    t0 = world.t0_ms
    timeline = [
        {
            "member": x["member"],
            "sender": x["sender"],
            "t": round((x["received_ms"] - t0) / 1000, 3),
            "sent_t": round((x["sent_ms"] - t0) / 1000, 3),
            "latency_ms": x["latency_ms"],
        }
        for x in lat
    ]
    sends = [(s["sent_ms"] - t0) / 1000 for s in snap["sent"]]
    recv = [x["t"] for x in timeline]
    span = (max(recv) - min(sends)) if recv and sends else 0.0
    errors = [a for a in world.actions if a.error]
    if errors and not error:
        error = f"{len(errors)} action(s) failed: {errors[0].do}: {errors[0].error}"
    return {
        "version": REPORT_VERSION,
        "scenario": scenario.name,
        "description": scenario.description,
        "file": str(scenario.path) if scenario.path else "",
        "mode": scenario.clients.mode,
        "seed": scenario.seed,
        "params": scenario.params,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 2),
        "host": platform.node(),
        "result": overall(results, error),
        "error": error,
        "settled": settled,
        "checks": [r.to_json() for r in results],
        "members": sorted(world.members, key=lambda n: int(n[1:])),
        "groups": snap["groups"],
        "relays": list(relays.values()),
        "actions": [vars(a) for a in world.actions],
        "messages": {
            "sent": len(snap["sent"]),
            "expected_deliveries": len(world.expected()),
            "delivered": len(lat),
        },
        "throughput": {
            "deliveries_per_s": round(len(lat) / span, 2) if span > 0 else 0.0,
            "span_s": round(span, 3),
        },
        "latency": C.latency_figures([x["latency_ms"] for x in lat]),
        "timeline": timeline,
        "faults": fault_summary(relays, results),
        "attacks": [r.to_json() for r in world.attacks],
        "epochs": epoch_changes(world),
        "notices": {
            name: [t for _, t, w in m["notices"] if w][-20:] for name, m in snap["members"].items()
        },
    }


def epoch_changes(world: World) -> list[dict[str, Any]]:
    """Each member's epoch changes in the scenario's groups (not the direct
    conversations made to exchange contacts), in the order it applied them."""
    labels = {g.conv_id: label for label, g in world.groups.items()}
    return [
        {
            "member": name,
            "group": labels[conv],
            "epoch": epoch,
            "auth": auth.hex()[:16],
            "t": round(t, 3),
        }
        for name, conv, epoch, auth, t in world.epochs
        if conv in labels
    ]


def fault_summary(
    relays: dict[str, dict[str, Any]], results: list[C.CheckResult]
) -> dict[str, Any]:
    injected: dict[str, int] = {}
    for r in relays.values():
        for ev in r["faults_log"]:
            injected[ev["kind"]] = injected.get(ev["kind"], 0) + 1
    fd = next((r for r in results if r.name == "fault_detection"), None)
    rows = fd.data.get("faults", {}) if fd else {}
    return {
        "injected": injected,
        "detected": {k: v.get("detected", 0) for k, v in rows.items()},
        "outcome": {k: v.get("outcome", "") for k, v in rows.items()},
        "claims": {k: C.FAULT_CLAIMS.get(k, "") for k in injected},
    }
