"""A self-contained HTML run report: inline CSS and SVG, no external assets.

Charts: the delivery timeline (one row per member, a dot per message
received, coloured by sender, with the faults each relay injected on rows of
their own), the latency histogram, faults injected versus detected, and for
scale runs the commit and Welcome sizes per epoch and the join times.
"""

from __future__ import annotations

from html import escape
from typing import Any

from harness.report.explain import (
    member_states,
    nice_ticks,
    plain,
    seconds_label,
    summary,
    why,
)

PALETTE = [
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#b07aa1",
    "#76b7b2",
    "#edc948",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
    "#e15759",
]
FAULT_COLOURS = {
    "drop": "#e15759",
    "withhold": "#c0392b",
    "delay": "#edc948",
    "reorder": "#f28e2b",
    "duplicate": "#b07aa1",
    "replay": "#9c755f",
    "inject": "#8e44ad",
    "tamper": "#d35400",
    "fork": "#000000",
    "dark": "#555555",
    "refuse": "#7f8c8d",
}
STATUS_COLOURS = {
    "passed": "#2e7d32",
    "failed": "#c62828",
    "skipped": "#757575",
    "xfail": "#ef6c00",
    "xpass": "#1565c0",
    "known-failure": "#ef6c00",
}

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1100px;color:#222;background:#fafafa}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.badge{display:inline-block;padding:3px 10px;border-radius:12px;color:#fff;font-weight:600;
font-size:14px;vertical-align:middle}
.meta{color:#555;font-size:13px}table{border-collapse:collapse;width:100%;font-size:13px}
td,th{padding:5px 8px;border-bottom:1px solid #e5e5e5;text-align:left;vertical-align:top}
th{background:#f0f0f0}.st{font-weight:700}.card{background:#fff;border:1px solid #e3e3e3;
border-radius:8px;padding:12px 16px;margin:10px 0}.grid{display:grid;
grid-template-columns:1fr 1fr;gap:14px}.kpi{display:inline-block;margin-right:28px}
.kpi b{display:block;font-size:22px}.kpi span{color:#666;font-size:12px}
svg text{font-size:11px;fill:#333}.why{color:#555}
.legend span{display:inline-block;margin-right:12px;
font-size:12px}.legend i{display:inline-block;width:10px;height:10px;border-radius:5px;
margin-right:4px;vertical-align:middle}
"""


def _badge(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#555")
    return f'<span class="badge" style="background:{colour}">{escape(status.upper())}</span>'


def _sender_colours(report: dict[str, Any]) -> dict[str, str]:
    senders = sorted({t["sender"] for t in report.get("timeline", [])}, key=_member_key)
    return {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(senders)}


def _member_key(name: str) -> tuple[int, str]:
    return (int(name[1:]), name) if name[1:].isdigit() else (10**9, name)


def timeline_svg(report: dict[str, Any], max_rows: int = 40) -> str:
    tl = report.get("timeline", [])
    members = sorted(set(report.get("members", [])) | {t["member"] for t in tl}, key=_member_key)
    if len(members) > max_rows:
        members = members[:max_rows]
    relays = [r for r in report.get("relays", []) if r.get("faults_log")]
    rows = [("member", m) for m in members] + [("relay", r["name"]) for r in relays]
    if not rows:
        return "<p>No deliveries were recorded.</p>"
    t_last = max(
        [t["t"] for t in tl]
        + [e["t"] for r in relays for e in r["faults_log"]]
        + [a["t"] for a in report.get("actions", [])]
        + [e["t"] for e in report.get("epochs", [])]
        + [1.0]
    )
    ticks = nice_ticks(t_last, most=6)
    t_max = ticks[-1]  # the axis ends on a round tick
    left, width, row_h = 170, 1000, 18
    plot_w = width - left - 20
    levels = _label_levels(report.get("actions", []), left, plot_w, t_max)
    n_levels = max((lv for lv, _, _ in levels if lv is not None), default=-1) + 1
    top = 16 + LABEL_H * max(n_levels, 1)
    height = top + row_h * len(rows) + 30

    def x(t: float) -> float:
        return left + plot_w * max(0.0, t) / t_max

    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    for a, (level, xa, anchor) in zip(report.get("actions", []), levels, strict=True):
        parts.append(
            f'<line x1="{xa:.1f}" y1="{top - 6}" x2="{xa:.1f}" y2="{height - 28}" '
            f'stroke="#ccc" stroke-dasharray="3,3"><title>{escape(a["do"])} at '
            f"{a['t']:.2f} s</title></line>"
        )
        if level is not None:
            parts.append(
                f'<text x="{xa + (2 if anchor == "start" else -2):.1f}" '
                f'y="{top - 8 - LABEL_H * level}" text-anchor="{anchor}" class="action" '
                f'style="font-size:10px;fill:#888">{escape(a["do"])}</text>'
            )
    states = member_states(report)
    colours = _sender_colours(report)
    index = {row: i for i, row in enumerate(rows)}
    for i, (kind, name) in enumerate(rows):
        y = top + i * row_h + row_h / 2
        fill = "#f4f4f4" if i % 2 == 0 else "#fff"
        parts.append(
            f'<rect x="{left}" y="{top + i * row_h}" width="{plot_w}" height="{row_h}" '
            f'fill="{fill}"/>'
        )
        label, style = (name, "") if kind == "member" else (f"relay {name} faults", "")
        st = states.get(name) if kind == "member" else None
        if st is not None:
            label = f"{name} · {st['epoch']}" if st["epoch"] else name
            if st["forked"]:
                # a member left on a minority branch of a fork (SPEC.md §8.11)
                label += " · forked"
                style = ' style="fill:#c62828;font-weight:700"'
                parts.append(
                    f'<rect x="{left}" y="{top + i * row_h}" width="{plot_w}" height="{row_h}" '
                    f'fill="#c62828" fill-opacity="0.08"/>'
                )
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="row"{style}>'
            f"{escape(label)}</text>"
        )
    for t in tl:
        row = index.get(("member", t["member"]))
        if row is None:
            continue
        y = top + row * row_h + row_h / 2
        parts.append(
            f'<circle cx="{x(t["t"]):.1f}" cy="{y:.1f}" r="3.2" fill="{colours[t["sender"]]}">'
            f"<title>{escape(t['sender'])} → {escape(t['member'])}: "
            f"{t['latency_ms']:.0f} ms</title></circle>"
        )
    parts += _epoch_marks(report, index, x, top, row_h)
    for r in relays:
        i = index[("relay", r["name"])]
        y0 = top + i * row_h + 3
        for e in r["faults_log"][:3000]:
            colour = FAULT_COLOURS.get(e["kind"], "#333")
            parts.append(
                f'<rect x="{x(e["t"]) - 1:.1f}" y="{y0}" width="2.5" height="{row_h - 6}" '
                f'fill="{colour}"><title>{escape(e["kind"])} conn {e["conn"]} mailbox '
                f"{escape(e['mailbox'])} seq {e['seq']} {escape(e['detail'])}</title></rect>"
            )
    # axis
    ya = height - 24
    parts.append(f'<line x1="{left}" y1="{ya}" x2="{left + plot_w}" y2="{ya}" stroke="#999"/>')
    for t in ticks:
        parts.append(
            f'<text x="{x(t):.1f}" y="{ya + 14}" text-anchor="middle">{seconds_label(t)}</text>'
        )
    parts.append("</svg>")
    shown_senders = list(colours.items())[:12]
    legend = "".join(
        f'<span><i style="background:{c}"></i>from {escape(s)}</span>' for s, c in shown_senders
    )
    if len(colours) > len(shown_senders):
        legend += f"<span>… {len(colours) - len(shown_senders)} more senders</span>"
    kinds = sorted({e["kind"] for r in relays for e in r["faults_log"]})
    legend += "".join(
        f'<span><i style="background:{FAULT_COLOURS.get(k, "#333")};border-radius:0"></i>'
        f"{escape(k)}</span>"
        for k in kinds
    )
    total = len(set(report.get("members", [])) | {t["member"] for t in tl})
    more = (
        f"<p class='meta'>showing the first {max_rows} of {total} members</p>"
        if total > max_rows
        else ""
    )
    return "".join(parts) + f'<div class="legend">{legend}</div>{more}'


def _epoch_marks(
    report: dict[str, Any],
    index: dict[tuple[str, str], int],
    x: Any,
    top: float,
    row_h: float,
) -> list[str]:
    """A mark on each member's row where its client moved to a new epoch,
    labelled with the epoch, in the order it applied commits.  Where members
    reached the same epoch with different authenticators (a fork), the
    marks of the smaller branch are red."""
    epochs = report.get("epochs", [])
    branches: dict[tuple[str, int], dict[str, set[str]]] = {}
    for e in epochs:
        branches.setdefault((e["group"], e["epoch"]), {}).setdefault(e["auth"], set()).add(
            e["member"]
        )
    main = {
        key: min(auths, key=lambda a: (-len(auths[a]), sorted(auths[a])))
        for key, auths in branches.items()
    }
    parts = []
    order: dict[str, int] = {}
    for e in epochs:
        i = index.get(("member", e["member"]))
        if i is None:
            continue
        order[e["member"]] = order.get(e["member"], 0) + 1
        forked = e["auth"] != main[(e["group"], e["epoch"])]
        colour = "#c62828" if forked else "#555"
        xe, y0 = x(e["t"]), top + i * row_h
        parts.append(
            f'<path class="epoch" d="M{xe:.1f},{y0 + 1:.1f} l3,4 l-3,4 l-3,-4 z" '
            f'fill="{colour}"><title>{escape(e["member"])}: epoch {e["epoch"]} of '
            f"{escape(e['group'])} at {e['t']:.2f} s (change {order[e['member']]}, "
            f"authenticator {escape(e['auth'])}{', forked' if forked else ''})</title></path>"
            f'<text x="{xe + 4:.1f}" y="{y0 + 8:.1f}" style="font-size:8px;fill:{colour}">'
            f"{e['epoch']}</text>"
        )
    return parts


LABEL_H = 11  # one line of action labels
LABEL_LEVELS = 5
CHAR_W = 6.2  # a generous width of one 10px character


def _label_levels(
    actions: list[dict[str, Any]], left: float, plot_w: float, t_max: float
) -> list[tuple[int | None, float, str]]:
    """(line, x, anchor) of each action's label: the first line above the
    plot where it does not overlap a label already placed; None when every
    line is taken there (the dashed line keeps a tooltip)."""
    ends = [-1e9] * LABEL_LEVELS
    out: list[tuple[int | None, float, str]] = []
    for a in actions:
        xa = left + plot_w * max(0.0, a["t"]) / t_max
        w = CHAR_W * len(str(a["do"])) + 2
        anchor = "end" if xa + w > left + plot_w else "start"
        lo = xa - w if anchor == "end" else xa
        level = next((k for k in range(LABEL_LEVELS) if lo >= ends[k] + 4), None)
        if level is not None:
            ends[level] = lo + w
        out.append((level, xa, anchor))
    return out


def bars_svg(
    labels: list[str],
    series: list[tuple[str, str, list[float]]],
    *,
    width: int = 500,
    height: int = 240,
    unit: str = "",
    integer: bool = False,
) -> str:
    """Grouped vertical bars: ``series`` is (name, colour, values per label);
    ``integer`` for counts (whole-number ticks)."""
    if not labels:
        return "<p>Nothing to chart.</p>"
    left, bottom, top = 48, 46, 14
    plot_w, plot_h = width - left - 10, height - bottom - top
    ticks = nice_ticks(
        max([v for _, _, vals in series for v in vals] + [1]), most=4, integer=integer
    )
    vmax = ticks[-1]
    group_w = plot_w / len(labels)
    bar_w = max(2.0, group_w * 0.8 / len(series))
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    for v in ticks:
        y = top + plot_h - plot_h * v / vmax
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt(v)}{unit}</text>'
        )
    for i, label in enumerate(labels):
        gx = left + i * group_w + group_w * 0.1
        for j, (name, colour, vals) in enumerate(series):
            v = vals[i]
            h = plot_h * v / vmax
            parts.append(
                f'<rect x="{gx + j * bar_w:.1f}" y="{top + plot_h - h:.1f}" '
                f'width="{bar_w - 1:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{escape(name)} {escape(label)}: {_fmt(v)}{unit}</title></rect>"
            )
            if len(labels) <= 12 and v:
                parts.append(
                    f'<text x="{gx + j * bar_w + bar_w / 2:.1f}" y="{top + plot_h - h - 3:.1f}" '
                    f'text-anchor="middle" style="font-size:10px">{_fmt(v)}</text>'
                )
        if len(labels) <= 16 or i % max(1, len(labels) // 12) == 0:
            parts.append(
                f'<text x="{left + i * group_w + group_w / 2:.1f}" y="{top + plot_h + 14}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        f'stroke="#999"/>'
    )
    legend_y = height - 8
    lx = left
    for name, colour, _ in series:
        parts.append(
            f'<rect x="{lx}" y="{legend_y - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{lx + 14}" y="{legend_y}">{escape(name)}</text>'
        )
        lx += 16 + 7 * len(name) + 20
    parts.append("</svg>")
    return "".join(parts)


def _fmt(v: float) -> str:
    if v >= 10_000:
        return f"{v / 1000:.0f}k"
    if v >= 100 or float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.1f}"


def latency_svg(report: dict[str, Any]) -> str:
    hist = report.get("latency", {}).get("histogram", [])
    if not report.get("latency", {}).get("count"):
        return "<p>No deliveries.</p>"
    labels = [f"<{_fmt(hi)}" if hi is not None else f"≥{_fmt(lo)}" for lo, hi, _ in hist]
    return bars_svg(
        labels, [("deliveries", "#4e79a7", [n for _, _, n in hist])], unit="", integer=True
    )


def faults_svg(report: dict[str, Any]) -> str:
    f = report.get("faults", {})
    kinds = sorted(f.get("injected", {}))
    if not kinds:
        return "<p>No fault was injected in this run.</p>"
    return bars_svg(
        kinds,
        [
            ("injected", "#e15759", [f["injected"].get(k, 0) for k in kinds]),
            ("detected by clients", "#59a14f", [f.get("detected", {}).get(k, 0) for k in kinds]),
            (
                "survived (no effect shown)",
                "#76b7b2",
                [
                    f["injected"].get(k, 0)
                    if str(f.get("outcome", {}).get(k, "")).startswith("survived")
                    else 0
                    for k in kinds
                ],
            ),
        ],
        integer=True,
    )


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {plain(v)}" for k, v in params.items()) or "none"


def _attack_colour(outcome: str) -> str:
    status = "passed" if outcome == "held" else "failed"
    return STATUS_COLOURS.get(status, "#333")


def render_html(report: dict[str, Any]) -> str:
    r = report
    checks = [
        [
            f'<span class="st" style="color:{STATUS_COLOURS.get(c["status"], "#333")}">'
            f"{escape(c['status'])}</span>",
            escape(c["name"]),
            escape(summary(c, r))
            + (f"<br><i>{escape(c['reason'])}</i>" if c.get("reason") else "")
            + (f"<br><span class='why'>{escape(why(c, r))}</span>" if why(c, r) else ""),
        ]
        for c in r["checks"]
    ]
    lat = r.get("latency", {})
    msgs = r.get("messages", {})
    kpis = [
        (f"{msgs.get('delivered', 0)}/{msgs.get('expected_deliveries', 0)}", "deliveries"),
        (f"{lat.get('p50_ms', 0):.0f} ms", "latency p50"),
        (f"{lat.get('p95_ms', 0):.0f} ms", "latency p95"),
        (str(sum(r.get("faults", {}).get("injected", {}).values())), "faults injected"),
        (f"{r['duration_s']:.1f} s", "run time"),
    ]
    kpi_html = "".join(f'<div class="kpi"><b>{v}</b><span>{k}</span></div>' for v, k in kpis)
    f = r.get("faults", {})
    fault_rows = [
        [
            escape(k),
            str(n),
            str(f.get("detected", {}).get(k, 0)),
            escape(f.get("outcome", {}).get(k, "")),
            escape(f.get("claims", {}).get(k, "")),
        ]
        for k, n in sorted(f.get("injected", {}).items())
    ]
    relay_rows = []
    for rl in r.get("relays", []):
        t = rl["traffic"]
        faults = (
            ", ".join(
                f"{x['kind']}" + (f" {x['rate']}" if x.get("rate", 1) != 1 else "")
                for x in rl["faults"]
            )
            or "none (honest)"
        )
        relay_rows.append(
            [
                escape(rl["name"]),
                escape(rl["kind"] + (" (killed)" if rl.get("killed") else "")),
                escape(faults),
                str(t["connections"]),
                str(t["posts"]),
                str(t["delivers_out"]),
                str(t["blob_chunks"]),
                escape(plain({k: v for k, v in t["repeats"].items() if v})),
            ]
        )
    action_rows = [
        [
            f"{a['t']:.2f} s",
            escape(a["do"]),
            f"{a['took']:.2f} s",
            escape(a.get("detail", "")),
            f"<b style='color:#c62828'>{escape(a['error'])}</b>" if a.get("error") else "",
        ]
        for a in r.get("actions", [])
    ]
    sections = [
        f"<h1>{escape(r['scenario'])} {_badge(r['result'])}</h1>",
        f"<p>{escape(r.get('description', ''))}</p>",
        f"<p class='meta'>{escape(r['started'])} · mode {escape(r['mode'])} · seed {r['seed']} · "
        f"params {escape(_params(r.get('params', {})))}"
        f"{' · ' + escape(r['file']) if r.get('file') else ''}</p>",
        f"<div class='card'>{kpi_html}</div>",
    ]
    if r.get("error"):
        sections.append(f"<p style='color:#c62828'><b>Error:</b> {escape(r['error'])}</p>")
    sections += [
        "<h2>Checks</h2>",
        _table(["status", "check", "result"], checks),
        "<h2>Delivery timeline per member</h2>",
        "<p class='meta'>Each dot is one message as the member's client showed it, coloured by "
        "sender; the small numbered marks are the epochs each client moved to, in the order it "
        "applied the commits (red: a branch of a fork); a member left on a fork's smaller "
        "branch is marked <i>forked</i>. Dashed lines mark the scenario's actions; the lower "
        "rows are the faults each malicious relay injected.</p>",
        f"<div class='card'>{timeline_svg(r)}</div>",
        "<div class='grid'>",
        f"<div><h2>Latency histogram (ms)</h2><div class='card'>{latency_svg(r)}</div></div>",
        f"<div><h2>Faults injected vs detected</h2><div class='card'>{faults_svg(r)}</div></div>",
        "</div>",
    ]
    if fault_rows:
        sections += [
            "<h2>Fault model outcome</h2>",
            _table(["fault", "injected", "detected", "outcome", "what SPEC claims"], fault_rows),
        ]
    attack_rows = [
        [
            f'<span class="st" style="color:{_attack_colour(x["outcome"])}">'
            f"{escape(x['outcome'])}</span>",
            escape(x["kind"]),
            escape(f"{x['attacker']} → {x['victim']}"),
            escape(x["attempted"]),
            escape(x["observed"]),
            escape(x["promise"]),
        ]
        for x in r.get("attacks", [])
    ]
    if attack_rows:
        sections += [
            "<h2>Hostile member</h2>",
            "<p class='meta'>Attacks made by a member or ex-member with the keys it held; "
            "<i>held</i> means the promise held (the attack was refused).</p>",
            _table(
                ["outcome", "attack", "who", "attempted", "what the clients did", "promise"],
                attack_rows,
            ),
        ]
    mls = r.get("mls")
    if mls:
        commits = mls["commits"]
        labels = [str(c["epoch"]) for c in commits]
        sections += [
            "<h2>Group operations (scale mode)</h2>",
            f"<p class='meta'>{mls['members']} members at the end, {len(commits)} commits, "
            f"{mls['connections']} reader connections. Join: Welcome posted → group usable "
            f"p50 {mls['join_ms']['p50_ms']:.0f} ms, p95 {mls['join_ms']['p95_ms']:.0f} ms; "
            f"Group.join CPU p50 {mls['join_cpu_ms']['p50_ms']:.0f} ms.</p>",
            "<div class='grid'><div class='card'>",
            bars_svg(
                labels,
                [
                    ("commit bytes", "#4e79a7", [c["commit_bytes"] for c in commits]),
                    ("Welcome bytes", "#f28e2b", [c["welcome_bytes"] for c in commits]),
                ],
                unit="",
            ),
            "<p class='meta'>by epoch</p></div><div class='card'>",
            bars_svg(
                labels,
                [
                    ("build ms", "#59a14f", [c["build_ms"] for c in commits]),
                    ("all applied ms", "#b07aa1", [c["all_applied_ms"] for c in commits]),
                ],
            ),
            "<p class='meta'>commit build time and time until every member applied it "
            "(all members share one process: this is total CPU, not one member's wait)</p>",
            "</div></div>",
        ]
    sections += [
        "<h2>Relays</h2>",
        _table(
            ["relay", "kind", "faults", "conns", "posts", "delivered", "blob chunks", "repeats"],
            relay_rows,
        ),
        "<h2>Actions</h2>",
        _table(["at", "action", "took", "detail", "error"], action_rows),
    ]
    warn = {k: v for k, v in r.get("notices", {}).items() if v}
    if warn:
        items = "".join(
            f"<li><b>{escape(k)}</b>: {escape(v[-1])} ({len(v)} warning(s))</li>"
            for k, v in warn.items()
        )
        sections += ["<h2>Client warnings (last per member)</h2>", f"<ul>{items}</ul>"]
    body = "\n".join(sections)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{escape(r['scenario'])} — samizdat-harness</title><style>{CSS}</style>"
        f"</head><body>{body}</body></html>"
    )
