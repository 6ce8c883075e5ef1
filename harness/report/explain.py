"""Words for the report: why each check came out as it did, values without
Python reprs, round axis ticks, and which member ended on a forked branch.

Shared by the HTML page and the terminal summary; it reads only the report
dict (each check's ``data`` as :mod:`harness.scenario.checks` records it).
"""

from __future__ import annotations

import ast
import math
from typing import Any


def plain(value: Any) -> str:
    """A value as a person writes it: ``{'g': 2}`` -> ``g: 2``, lists joined
    by commas, nested tables in parentheses."""
    if isinstance(value, dict):
        parts = []
        for k, v in value.items():
            if isinstance(v, dict):
                parts.append(f"{k} ({plain(v)})")
            else:
                parts.append(f"{k}: {plain(v)}")
        return ", ".join(parts) if parts else "none"
    if isinstance(value, list | tuple | set):
        return ", ".join(plain(v) for v in value) if value else "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def plain_text(text: str) -> str:
    """Replace every Python literal (``{...}``, ``[...]``) inside ``text``
    by its :func:`plain` form; anything that does not parse stays as it is."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch in "{[":
            end = _closing(text, i)
            if end is not None:
                try:
                    value = ast.literal_eval(text[i : end + 1])
                except (ValueError, SyntaxError):
                    value = None
                if value is not None:
                    out.append(plain(value))
                    i = end + 1
                    continue
        out.append(ch)
        i += 1
    return "".join(out)


def _closing(text: str, start: int) -> int | None:
    pairs = {"{": "}", "[": "]"}
    stack = []
    quote = ""
    for j in range(start, len(text)):
        c = text[j]
        if quote:
            if c == quote:
                quote = ""
            continue
        if c in "'\"":
            quote = c
        elif c in pairs:
            stack.append(pairs[c])
        elif stack and c == stack[-1]:
            stack.pop()
            if not stack:
                return j
    return None


# -- forks and epochs ---------------------------------------------------------------


def _branches(report: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """label -> {"epoch N AUTH": [member, ...]} from the convergence check
    (engine mode; other modes record other shapes, which have no branches)."""
    conv = next((c for c in report.get("checks", []) if c.get("name") == "convergence"), None)
    groups = (conv or {}).get("data", {}).get("groups", {})
    if not isinstance(groups, dict):
        return {}
    return {
        str(label): {str(k): [str(n) for n in v] for k, v in buckets.items()}
        for label, buckets in groups.items()
        if isinstance(buckets, dict) and all(isinstance(v, list) for v in buckets.values())
    }


def member_states(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    """member -> {"epoch": "epoch 3" (per group, joined), "forked": "g" or ""}.

    A member is on a forked branch when its group's members ended on more
    than one epoch authenticator and it is not on the largest branch (on a
    tie, the branch with the first member in name order is the main one)."""
    states: dict[str, dict[str, str]] = {}
    for label, buckets in _branches(report).items():
        real = {k: v for k, v in buckets.items() if k != "(not joined)"}
        main = min(real, key=lambda k: (-len(real[k]), sorted(real[k]))) if real else None
        for key, names in buckets.items():
            epoch = " ".join(key.split()[:2]) if key.startswith("epoch") else "not joined"
            for name in names:
                st = states.setdefault(name, {"epoch": "", "forked": ""})
                here = epoch if len(_branches(report)) == 1 else f"{label} {epoch}"
                st["epoch"] = ", ".join(x for x in (st["epoch"], here) if x)
                if len(real) > 1 and key in real and key != main:
                    st["forked"] = ", ".join(x for x in (st["forked"], label) if x)
    return states


def fork_lines(report: dict[str, Any]) -> list[str]:
    """One line per forked group: its branches, each with its members."""
    lines = []
    for label, buckets in _branches(report).items():
        real = {k: v for k, v in buckets.items() if k != "(not joined)"}
        if len(real) < 2:
            continue
        parts = [f"{_short(k)}: {', '.join(v)}" for k, v in real.items()]
        lines.append(f"{label}: {len(real)} branches ({'; '.join(parts)})")
    return lines


def _short(bucket: str) -> str:
    words = bucket.split()
    if len(words) == 3 and words[0] == "epoch":
        return f"epoch {words[1]} {words[2][:8]}…"
    return bucket


# -- why a check passed (or did not) ---------------------------------------------------


def summary(check: dict[str, Any], report: dict[str, Any]) -> str:
    """The check's one-line result without reprs; a fork names its branches."""
    if check.get("name") == "convergence":
        forks = fork_lines(report)
        text = str(check.get("summary", ""))
        if "{" in text:
            head, _, tail = text.partition("{")
            inner, _, rest = tail.partition("}")
            if not forks:  # e.g. a member that never joined: "g: 2 branches"
                try:
                    counts = ast.literal_eval("{" + inner + "}")
                    forks = [f"{k}: {v} branches" for k, v in counts.items()]
                except (ValueError, SyntaxError, AttributeError):
                    return plain_text(text)
            return f"{head}{'; '.join(forks)}{rest}"
    return plain_text(str(check.get("summary", "")))


def why(check: dict[str, Any], report: dict[str, Any]) -> str:
    """Why the check has its status, in words ('' when the summary says it)."""
    name, status = check.get("name", ""), check.get("status", "")
    data = check.get("data") or {}
    if status in ("xfail", "xpass"):
        return ""  # the known failure's reason is shown instead
    if status == "skipped":
        return f"skipped because {plain_text(str(check.get('summary', '')))}"
    explain = _WHY.get(name)
    return explain(status, data, report) if explain is not None else ""


def _why_delivery(status: str, data: dict[str, Any], report: dict[str, Any]) -> str:
    o = data.get("outcomes", {})
    expected, delivered = data.get("expected", 0), o.get("delivered", 0)
    not_stored = data.get("not_stored_on_any_relay", 0)
    if status == "passed":
        if delivered == expected and not not_stored:
            return "passed because every expected delivery arrived"
        return (
            f"passed because no undelivered message was silent: of {expected - delivered} "
            f"undelivered, {o.get('reported_missing', 0)} were reported missing by the reader "
            f"and {o.get('visible_to_sender', 0)} showed as undelivered to the sender (mode "
            f"{report.get('mode', '?')} accepts loss that a client shows)"
        )
    if o.get("silent"):
        return (
            f"failed because {o['silent']} undelivered message(s) were silent: neither "
            "reported missing by the reader nor visible to the sender"
        )
    if not_stored:
        return f"failed because {not_stored} message(s) reached no relay"
    return f"failed because {expected - delivered} of {expected} deliveries did not arrive"


def _why_convergence(status: str, data: dict[str, Any], report: dict[str, Any]) -> str:
    forks = fork_lines(report)
    notices = len(data.get("fork_notices", []))
    if status == "passed" and not forks:
        return "passed because every member of every group ended on the same epoch authenticator"
    if status == "passed":
        return (
            f"passed because every fork was reported: {notices} client notice(s) named it "
            "(a fork is detected, not prevented: SPEC.md §8.11)"
        )
    return "failed because members diverged and no client reported a fork"


def _why_simple(passed: str, failed: str) -> Any:
    def explain(status: str, data: dict[str, Any], report: dict[str, Any]) -> str:
        return passed if status == "passed" else failed

    return explain


_WHY = {
    "delivery": _why_delivery,
    "convergence": _why_convergence,
    "no_forgery": _why_simple(
        "passed because every message shown matches one that was sent, by its sender, once",
        "failed because a client showed a message that was not sent as shown",
    ),
    "canary": _why_simple(
        "passed because no canary string appears in any relay's stored files",
        "failed because a canary string was found in a relay's stored files",
    ),
    "no_repeats": _why_simple(
        "passed because no relay saw the same ciphertext or blob id twice",
        "failed because a relay saw the same ciphertext or blob id twice (a resend or replay)",
    ),
    "fault_detection": _why_simple(
        "passed because each injected fault was survived or detected as SPEC.md §2 claims",
        "failed because a fault had an effect that no client showed",
    ),
}


# -- axis ticks --------------------------------------------------------------------------


def nice_ticks(vmax: float, *, most: int = 8, integer: bool = False) -> list[float]:
    """Ticks 0, s, 2s, ... covering ``vmax`` with a round step s (1, 2 or 5
    times a power of ten; whole numbers when ``integer``), at most ``most``
    intervals."""
    vmax = max(vmax, 1.0 if integer else 1e-9)
    raw = vmax / most
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    if integer:
        step = max(1.0, float(math.ceil(step)))
    n = math.ceil(vmax / step - 1e-9)
    return [round(k * step, 10) for k in range(n + 1)]


def seconds_label(t: float) -> str:
    return f"{t:.0f} s" if float(t).is_integer() else f"{t:g} s"
