"""Coverage floors, checked when the whole suite runs (``pytest`` as README and
CI run it): at least 90% of all measured lines, and each important module at
least 75%.  pytest-cov measures (pyproject.toml: ``--cov``, with coverage's
``patch = ["subprocess"]`` so relay and CLI processes count) and prints the
table; this adds the floors.  A run of some files only is not judged: its
coverage says nothing about the suite's.  Under ``CI=true`` a whole-suite run
without coverage (``--no-cov``) fails, as every required check does there.

Important: the code an attack or a user's data goes through.  The MLS core and
the app layer's wire formats (protocol/), the client's engine, store, invites
and CLI, and the relay's connection handling, limits and storage.  The harness
and the terminal app's widgets are measured and count towards the total but
have no floor of their own.
"""

from __future__ import annotations

import io
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

TOTAL_FLOOR = 90.0
MODULE_FLOOR = 75.0
# paths relative to the checkout; a directory stands for every module under it
IMPORTANT = [
    "protocol/codec.py",
    "protocol/padding.py",
    "protocol/relay_frames.py",
    "protocol/app",
    "protocol/mls",
    "client/cli",
    "client/core.py",
    "client/engine.py",
    "client/conversations.py",
    "client/inbound.py",
    "client/outbound.py",
    "client/delivery.py",
    "client/invites.py",
    "client/files.py",
    "client/relay_client.py",
    "client/store",
    "client/urls.py",
    "relay/app.py",
    "relay/connection.py",
    "relay/subscriptions.py",
    "relay/config.py",
    "relay/limits.py",
    "relay/blobs.py",
    "relay/storage",
]


def whole_suite(config: pytest.Config) -> bool:
    """The run is README's ``pytest``: the configured test paths, nothing
    selected away."""
    opt = config.option
    return (
        config.args_source == pytest.Config.ArgsSource.TESTPATHS
        and not opt.keyword
        and not opt.markexpr
        and not getattr(opt, "deselect", None)
        and not getattr(opt, "lf", False)
        and not getattr(opt, "exitfirst", False)
    )


def _important_files(cov: Any) -> list[Path]:
    measured = {Path(f) for f in cov.get_data().measured_files()}
    source = {p for pkg in ("protocol", "relay", "client") for p in (ROOT / pkg).rglob("*.py")}
    files = []
    for entry in IMPORTANT:
        path = ROOT / entry
        found = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        files += [f for f in found if f in source or f in measured]
    return files


def module_percent(cov: Any, path: Path) -> float | None:
    """Statement coverage of one file; None if it has no statements."""
    _, statements, _, missing, _ = cov.analysis2(str(path))
    if not statements:
        return None
    return 100.0 * (len(statements) - len(missing)) / len(statements)


def check(session: pytest.Session) -> list[str]:
    """Lines for the terminal; marks the session failed below a floor."""
    plugin = session.config.pluginmanager.getplugin("_cov")
    controller = getattr(plugin, "cov_controller", None)
    if controller is None or getattr(plugin, "_disabled", True):
        if IN_CI:
            session.testsfailed += 1
            return ["FAIL coverage: the whole suite ran without it under CI=true"]
        return []
    cov = controller.cov
    total = plugin.cov_total
    if total is None:  # pytest-cov reports nothing when asked for no report
        total = cov.report(file=io.StringIO())
    lines = []
    failed = total < TOTAL_FLOOR
    lines.append(
        f"{'FAIL ' if failed else ''}total coverage {total:.1f}% (floor {TOTAL_FLOOR:.0f}%)"
    )
    low = []
    for path in _important_files(cov):
        pct = module_percent(cov, path)
        if pct is not None and pct < MODULE_FLOOR:
            low.append(f"  {path.relative_to(ROOT)}: {pct:.1f}%")
    if low:
        failed = True
        lines.append(f"FAIL important modules under {MODULE_FLOOR:.0f}%:")
        lines += low
    else:
        lines.append(f"every important module is at {MODULE_FLOOR:.0f}% or more")
    if failed:
        session.testsfailed += 1
    return lines


_LINES = pytest.StashKey[list[str]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, object, object]:
    # registered after pytest-cov's plugin, so this wraps it: by the time it
    # resumes, the data of every process is combined and the total is known
    result = yield
    config = session.config
    if not hasattr(config, "workerinput") and whole_suite(config):
        config.stash[_LINES] = check(session)
    return result


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(_LINES, [])
    if lines:
        terminalreporter.write_sep("=", "coverage floors")
        for line in lines:
            terminalreporter.write_line(line, red=line.startswith("FAIL"))
