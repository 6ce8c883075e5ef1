"""The run report read by a person: why each check passed, no Python reprs
or raw JSON, round axis ticks, action labels that do not overlap, and the
forked member's row marked with each member's epoch (a synthetic report, so
every case is present and the test is fast)."""

from __future__ import annotations

import itertools
import re
from typing import Any

from harness.report import render_html, render_terminal


def report() -> dict[str, Any]:
    return {
        "scenario": "forking",
        "description": "a relay forks the group",
        "file": "",
        "mode": "detect",
        "seed": 7,
        "params": {"members": 3, "rate": 0.5},
        "started": "2026-11-30T07:00:00Z",
        "duration_s": 7.3,
        "result": "passed",
        "error": "",
        "checks": [
            {
                "name": "delivery",
                "status": "passed",
                "summary": "12/24 delivered, 12 undelivered (7 reported missing by the reader, "
                "5 visible to the sender, 0 silent)",
                "reason": "",
                "data": {
                    "outcomes": {
                        "delivered": 12,
                        "reported_missing": 7,
                        "visible_to_sender": 5,
                        "silent": 0,
                    },
                    "expected": 24,
                    "not_stored_on_any_relay": 0,
                },
            },
            {
                "name": "convergence",
                "status": "passed",
                "summary": "fork in {'g': 2} detected and reported by 2 client notice(s)",
                "reason": "",
                "data": {
                    "groups": {
                        "g": {
                            "epoch 3 aaaaaaaaaaaaaaaa": ["m1", "m2"],
                            "epoch 3 bbbbbbbbbbbbbbbb": ["m3"],
                        }
                    },
                    "fork_notices": [["m1", "fork detected"], ["m3", "fork detected"]],
                },
            },
            {
                "name": "no_repeats",
                "status": "failed",
                "summary": "repeated ciphertext or blob ids: {'r1': {'envelopes': 2, 'blobs': 0}}",
                "reason": "",
                "data": {"per_relay": {"r1": {"envelopes": 2, "blobs": 0}}},
            },
            {
                "name": "canary",
                "status": "passed",
                "summary": "3 canaries absent from 2 relay data dir(s)",
                "reason": "",
                "data": {"canaries": 3},
            },
        ],
        "members": ["m1", "m2", "m3"],
        "groups": {"g": {"members": ["m1", "m2", "m3"]}},
        "relays": [
            {
                "name": "r1",
                "kind": "malicious",
                "faults": [{"kind": "fork", "rate": 1}],
                "traffic": {
                    "connections": 3,
                    "posts": 30,
                    "delivers_out": 50,
                    "blob_chunks": 0,
                    "repeats": {"envelopes": 2, "blobs": 0},
                },
                "faults_log": [
                    {"t": 2.0, "kind": "fork", "conn": 1, "mailbox": "ab", "seq": 3, "detail": ""}
                ],
            }
        ],
        "actions": [
            {"t": 0.1, "do": "create_group", "took": 0.1, "detail": "", "error": ""},
            {"t": 0.15, "do": "add_members", "took": 0.1, "detail": "", "error": ""},
            {"t": 0.2, "do": "send_burst", "took": 0.1, "detail": "", "error": ""},
            {"t": 0.25, "do": "commit_race", "took": 0.1, "detail": "", "error": ""},
            {"t": 0.3, "do": "remove_member", "took": 0.1, "detail": "", "error": ""},
            {"t": 5.0, "do": "settle", "took": 1.0, "detail": "", "error": ""},
        ],
        "messages": {"sent": 8, "expected_deliveries": 24, "delivered": 12},
        "throughput": {"deliveries_per_s": 2.0, "span_s": 6.0},
        "latency": {
            "count": 12,
            "p50_ms": 40.0,
            "p95_ms": 90.0,
            "max_ms": 95.0,
            "histogram": [[0, 50, 7], [50, 100, 5], [100, None, 0]],
        },
        "timeline": [
            {"member": m, "sender": "m1", "t": 0.5 + i * 0.5, "sent_t": 0.4, "latency_ms": 40.0}
            for i, m in enumerate(["m1", "m2", "m3"] * 4)
        ],
        "faults": {
            "injected": {"fork": 3},
            "detected": {"fork": 3},
            "outcome": {"fork": "detected"},
            "claims": {"fork": "detected"},
        },
        "attacks": [],
        "notices": {},
        "epochs": [
            {"member": m, "group": "g", "epoch": e, "auth": a, "t": t}
            for m, e, a, t in [
                ("m1", 1, "a1", 0.2),
                ("m2", 1, "a1", 0.3),
                ("m3", 1, "a1", 0.3),
                ("m1", 2, "a2", 1.0),
                ("m2", 2, "a2", 1.1),
                ("m3", 2, "a2", 1.2),
                ("m1", 3, "aaaaaaaaaaaaaaaa", 2.1),
                ("m2", 3, "aaaaaaaaaaaaaaaa", 2.2),
                ("m3", 3, "bbbbbbbbbbbbbbbb", 2.3),
            ]
        ],
    }


def cells(html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td>(.*?)</td>", html, re.S)]


def test_a_passed_check_says_why() -> None:
    html = render_html(report())
    term = render_terminal(report())
    for text in (html, term):
        assert "no undelivered message was silent" in text
        assert "every fork was reported" in text
    line = next(ln for ln in term.splitlines() if "delivery" in ln)
    assert "12/24" in line
    assert "because" in term.split("delivery", 1)[1].split("convergence", 1)[0]


def test_no_python_reprs_or_raw_json() -> None:
    html = render_html(report())
    term = render_terminal(report())
    meta = re.findall(r"<p class='meta'>(.*?)</p>", html, re.S)
    for text in [*cells(html), *meta, term]:
        assert not re.search(r"[{\[]['\"]", text), text
        assert "{'" not in text and '{"' not in text, text
    assert any("g: 2 branches" in c for c in cells(html))


def test_axis_ticks_are_round() -> None:
    html = render_html(report())
    seconds = [float(v) for v in re.findall(r">(\d+(?:\.\d+)?) s</text>", html)]
    assert len(seconds) >= 3
    steps = {round(b - a, 6) for a, b in itertools.pairwise(seconds)}
    assert len(steps) == 1
    step = steps.pop()
    assert step in (0.5, 1, 2, 5, 10, 20, 30, 60)
    assert seconds[0] == 0
    # count axes: whole numbers only
    svg_counts = re.findall(r'text-anchor="end">([0-9.]+)</text>', html)
    assert svg_counts and all(float(v).is_integer() for v in svg_counts), svg_counts


def test_action_labels_do_not_overlap() -> None:
    html = render_html(report())
    labels = re.findall(
        r'<text x="([\d.]+)" y="([\d.]+)" text-anchor="(start|end)" class="action"[^>]*>([^<]*)<',
        html,
    )
    assert len(labels) >= 5, labels  # every action named (close ones on further lines)
    spans: dict[str, list[tuple[float, float]]] = {}
    for x, y, anchor, text in labels:
        width = 6.2 * len(text)
        lo = float(x) - (width if anchor == "end" else 0)
        spans.setdefault(y, []).append((lo, lo + width))
    for row in spans.values():
        row.sort()
        for (_, end), (start, _) in itertools.pairwise(row):
            assert start >= end, row


def test_the_forked_member_row_is_marked_with_epochs() -> None:
    html = render_html(report())
    rows = re.findall(r'text-anchor="end"[^>]*class="row"[^>]*>([^<]*)<', html)
    assert any("m3" in r and "forked" in r for r in rows), rows
    assert not any("m1" in r and "forked" in r for r in rows), rows
    assert any("m1" in r and "epoch 3" in r for r in rows), rows
    term = render_terminal(report())
    assert "m3" in term and "forked" in term


def test_each_member_epoch_order_is_on_the_timeline() -> None:
    html = render_html(report())
    marks = re.findall(r'<path class="epoch"[^>]*fill="([^"]+)"><title>([^<]*)</title>', html)
    assert len(marks) == 9
    red = [t for colour, t in marks if colour == "#c62828"]
    assert len(red) == 1 and red[0].startswith("m3: epoch 3") and "forked" in red[0]
    assert any(t.startswith("m1: epoch 2") and "change 2" in t for _, t in marks)
    term = render_terminal(report())
    assert "epochs of m3: 1 (0.3 s, a1) -> 2 (1.2 s, a2) -> 3 (2.3 s, bbbbbb)" in term
