"""Run reports: a terminal summary, machine-readable JSON and a
self-contained HTML page with inline SVG charts (SPEC.md §10.4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.report.html import render_html
from harness.report.terminal import render_terminal

__all__ = ["render_html", "render_terminal", "write_reports"]


def write_reports(report: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """Write ``<scenario>.json`` and ``<scenario>.html`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = str(report.get("scenario", "report")).replace("/", "_")
    js = directory / f"{stem}.json"
    js.write_text(json.dumps(report, indent=1, sort_keys=False, default=str))
    html = directory / f"{stem}.html"
    html.write_text(render_html(report))
    return js, html
