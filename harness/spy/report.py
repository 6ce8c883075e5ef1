"""The spy audit's outputs: ``spy-audit.json`` and ``spy-audit.html`` (a
self-contained page whose ``<section id="spy-audit">`` can also be
embedded in another report), and the terminal summary."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from harness.spy.analysis import VIOLATION, headline

STYLE = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.3rem .5rem;
text-align:left;vertical-align:top}.violation{background:#fde2e1;font-weight:bold}
.admitted{background:#e6f4e6}.headline li{margin:.2rem 0}
"""


def render_section(result: dict[str, Any]) -> str:
    """The audit as an HTML section, in plain words first, then the table."""
    rows = []
    for f in result["findings"]:
        cls = "violation" if f["class"] == VIOLATION else "admitted"
        rows.append(
            f'<tr class="{cls}"><td>{escape(f["finding"])}</td><td>{escape(f["class"])}</td>'
            f"<td>{escape(f['words'])}</td><td>{escape(f['spec'])}</td></tr>"
        )
    lines = "".join(f"<li>{escape(line)}</li>" for line in headline(result))
    setup = result.get("scenario", {})
    what = ""
    if setup:
        via = "direct connections"
        if setup.get("proxy"):
            via = (
                f"through a SOCKS5 proxy ({setup.get('proxy_connects', 0)} proxied connections, "
                f"{setup.get('proxy_usernames', 0)} with their own circuit credentials)"
            )
        what = f"{setup['members']} members, {setup['relays']} relays, {via}; "
    return (
        '<section id="spy-audit"><h2>Spy-relay audit: what a compelled relay learns</h2>'
        f"<p>{escape(what)}{result['connections']} connections, {result['posts']} posts, "
        f"{result['chunks']} chunk uploads logged by the relays.</p>"
        f'<ul class="headline">{lines}</ul>'
        "<table><tr><th>finding</th><th>class</th><th>what the relay can tell</th>"
        f"<th>SPEC</th></tr>{''.join(rows)}</table></section>"
    )


def render_page(result: dict[str, Any]) -> str:
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>Samizdat spy-relay audit"
        f"</title><style>{STYLE}</style></head><body>{render_section(result)}</body></html>"
    )


def render_terminal(result: dict[str, Any]) -> str:
    out = ["spy-relay audit:"]
    out += [f"  {line}" for line in headline(result)]
    for f in result["findings"]:
        out.append(f"  [{f['class']}] {f['finding']}: {f['words']}")
    return "\n".join(out)


def write_audit(result: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    js = directory / "spy-audit.json"
    js.write_text(json.dumps(result, indent=1, default=str))
    html = directory / "spy-audit.html"
    html.write_text(render_page(result))
    return js, html
