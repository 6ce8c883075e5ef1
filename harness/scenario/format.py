"""The scenario file format (TOML, read with ``tomllib``); SPEC.md §10.2
documents every key.

A scenario is loaded in three steps: parse the file; apply ``--set key=value``
overrides (a bare key sets ``params.key``, a dotted key any path, list items
by index: ``relays.0.faults.0.rate=0.5``); then substitute parameters — a
string value ``"$name"`` becomes ``params.name`` (keeping its type) and
``"${name}"`` inside a longer string is replaced by its text.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.malicious import Fault, FaultError
from protocol.mls.crypto import SUPPORTED_SUITES

ACTIONS = {
    # engine mode
    "befriend",
    "create_group",
    "add_members",
    "remove_member",
    "send",
    "send_file",
    "commit_race",
    "move_relay",
    "kill_relay",
    "block_relay",
    "unblock_relay",
    "restart_client",
    "export_import",
    "wait",
    "settle",
    "join",
    "arm_fault",
    "set_admin",
    "attack",  # a hostile member (harness/hostile)
    # mls mode (in-process MLS groups over a real relay, for scale)
    "mls_grow",
    "mls_churn",
    "mls_send",
}
CHECKS = {
    "delivery",  # "reported" (delivered or visibly missing) | "all" | false
    "no_forgery",
    "convergence",
    "canary",
    "fault_detection",
    "no_repeats",
    "latency",
    "insider",  # every hostile-member attack was refused
}
DEFAULT_CHECKS: dict[str, Any] = {
    "delivery": "reported",
    "no_forgery": True,
    "convergence": True,
    "canary": True,
    "fault_detection": True,
    "no_repeats": False,
    "latency": True,
    "insider": True,
}


class ScenarioError(ValueError):
    """An invalid scenario file or override."""


@dataclass
class RelaySpec:
    name: str
    kind: str = "honest"  # honest | malicious
    process: bool = False  # run samizdat-relay as a separate process
    faults: list[Fault] = field(default_factory=list)
    limits: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClientSpec:
    count: int = 3
    relays: list[str] = field(default_factory=list)
    mode: str = "engine"  # engine | mls
    connections: int = 16  # mls mode: reader connections shared by the members
    suite: int = 1  # mls mode: the group's cipher suite (0x004E/0x004F: post-quantum)


@dataclass
class Scenario:
    name: str
    description: str
    path: Path | None
    seed: int
    timeout: float
    settle: float
    params: dict[str, Any]
    relays: list[RelaySpec]
    clients: ClientSpec
    actions: list[dict[str, Any]]
    checks: dict[str, Any]
    known_failures: dict[str, str]
    raw: dict[str, Any]


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal if it parses as one, else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_set(doc: dict[str, Any], assignment: str) -> None:
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise ScenarioError(f"--set expects key=value, got {assignment!r}")
    parts = key.strip().split(".")
    if len(parts) == 1:
        parts = ["params", parts[0]]
    node: Any = doc
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(node, list):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                raise ScenarioError(f"--set {key}: no item {part}") from None
        else:
            node = node.setdefault(part, [] if nxt.isdigit() else {})
    last = parts[-1]
    if isinstance(node, list):
        try:
            node[int(last)] = parse_value(value)
        except (ValueError, IndexError):
            raise ScenarioError(f"--set {key}: no item {last}") from None
    else:
        node[last] = parse_value(value)


_REF = re.compile(r"\$\{(\w+)\}")


def substitute(value: Any, params: dict[str, Any]) -> Any:
    if isinstance(value, str):
        if value.startswith("$") and value[1:].isidentifier():
            if value[1:] not in params:
                raise ScenarioError(f"unknown parameter {value}")
            return params[value[1:]]

        def repl(m: re.Match[str]) -> str:
            if m.group(1) not in params:
                raise ScenarioError(f"unknown parameter ${{{m.group(1)}}}")
            return str(params[m.group(1)])

        return _REF.sub(repl, value)
    if isinstance(value, list):
        return [substitute(v, params) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, params) for k, v in value.items()}
    return value


def load(path: Path | str, sets: list[str] | None = None) -> Scenario:
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"cannot read {path}: {exc}") from exc
    return from_dict(doc, sets, path)


def from_dict(
    doc: dict[str, Any], sets: list[str] | None = None, path: Path | None = None
) -> Scenario:
    for assignment in sets or []:
        apply_set(doc, assignment)
    params = dict(doc.get("params", {}))
    doc = substitute({k: v for k, v in doc.items() if k != "params"}, params)
    unknown = set(doc) - {"scenario", "relays", "clients", "actions", "checks", "known_failures"}
    if unknown:
        raise ScenarioError(f"unknown top-level key(s): {', '.join(sorted(unknown))}")
    head = doc.get("scenario", {})
    _only(head, {"name", "description", "seed", "timeout", "settle"}, "[scenario]")
    relays = []
    for raw in doc.get("relays", []):
        _only(raw, {"name", "kind", "process", "faults", "limits"}, "[[relays]]")
        try:
            faults = [Fault.from_dict(dict(f)) for f in raw.get("faults", [])]
        except FaultError as exc:
            raise ScenarioError(f"relay {raw.get('name')}: {exc}") from None
        kind = raw.get("kind", "malicious" if faults else "honest")
        if kind not in ("honest", "malicious"):
            raise ScenarioError(f"relay kind must be honest or malicious, not {kind!r}")
        if kind == "honest" and faults:
            raise ScenarioError(f"honest relay {raw.get('name')} has faults")
        relays.append(
            RelaySpec(
                raw["name"],
                kind,
                bool(raw.get("process", False)),
                faults,
                dict(raw.get("limits", {})),
            )
        )
    if not relays:
        raise ScenarioError("a scenario needs at least one relay")
    names = [r.name for r in relays]
    if len(set(names)) != len(names):
        raise ScenarioError("relay names must be unique")
    craw = doc.get("clients", {})
    _only(craw, {"count", "relays", "mode", "connections", "suite"}, "[clients]")
    clients = ClientSpec(
        int(craw.get("count", 3)),
        list(craw.get("relays", names[:2])),
        craw.get("mode", "engine"),
        int(craw.get("connections", 16)),
        int(craw.get("suite", 1)),
    )
    if clients.mode not in ("engine", "mls"):
        raise ScenarioError("clients.mode must be engine or mls")
    if clients.suite not in SUPPORTED_SUITES:
        raise ScenarioError(f"clients.suite {clients.suite} is not a supported cipher suite")
    if clients.mode == "engine" and clients.suite != 1:
        raise ScenarioError("clients.suite: engine clients use suite 1; other suites need mls mode")
    if clients.count < 1:
        raise ScenarioError("clients.count must be at least 1")
    for r in clients.relays:
        if r not in names:
            raise ScenarioError(f"clients.relays names an unknown relay {r!r}")
    actions = [dict(a) for a in doc.get("actions", [])]
    for a in actions:
        if a.get("do") not in ACTIONS:
            raise ScenarioError(f"unknown action {a.get('do')!r}")
    checks = dict(DEFAULT_CHECKS)
    checks.update(doc.get("checks", {}))
    unknown = set(checks) - CHECKS
    if unknown:
        raise ScenarioError(f"unknown check(s): {', '.join(sorted(unknown))}")
    known = {str(k): str(v) for k, v in doc.get("known_failures", {}).items()}
    for k in known:
        if k not in CHECKS:
            raise ScenarioError(f"known_failures names an unknown check {k!r}")
    return Scenario(
        name=str(head.get("name", path.stem if path else "scenario")),
        description=str(head.get("description", "")),
        path=path,
        seed=int(head.get("seed", 1)),
        timeout=float(head.get("timeout", 300)),
        settle=float(head.get("settle", 20)),
        params=params,
        relays=relays,
        clients=clients,
        actions=actions,
        checks=checks,
        known_failures=known,
        raw=doc,
    )


def _only(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
