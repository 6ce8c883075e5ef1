"""Recognise MLS vector files by content and run their cases.

A file's kind is decided by the field names of its cases, not by its name: the
interop project distributes the same kinds under several file names (e.g.
``passive-client-random.json``).  Every kind named in FORMAT.md is known here;
a kind whose verifier module does not exist yet is reported as not
implemented rather than passed over in silence.
"""

from __future__ import annotations

import importlib
import json
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from protocol.errors import UnsupportedError

# kind -> (verifier module under harness.conformance, identifying field names)
KINDS: dict[str, tuple[str, frozenset[str]]] = {
    "tree-math": (
        "tree_math",
        frozenset({"n_leaves", "n_nodes", "root", "left", "right", "parent", "sibling"}),
    ),
    "crypto-basics": (
        "crypto_basics",
        frozenset({"ref_hash", "expand_with_label", "derive_secret", "sign_with_label"}),
    ),
    "secret-tree": ("secret_tree", frozenset({"sender_data", "encryption_secret", "leaves"})),
    "message-protection": (
        "message_protection",
        frozenset({"membership_key", "proposal_pub", "commit_priv", "application_priv"}),
    ),
    "key-schedule": ("key_schedule", frozenset({"initial_init_secret", "epochs", "group_id"})),
    "psk-secret": ("psk_secret", frozenset({"psks", "psk_secret"})),
    "transcript-hashes": (
        "transcript_hashes",
        frozenset({"authenticated_content", "interim_transcript_hash_before"}),
    ),
    "welcome": ("welcome", frozenset({"init_priv", "signer_pub", "key_package", "welcome"})),
    "messages": (
        "messages",
        frozenset({"mls_welcome", "mls_group_info", "mls_key_package", "private_message"}),
    ),
    "deserialization": ("deserialization", frozenset({"vlbytes_header", "length"})),
    "tree-operations": (
        "tree_operations",
        frozenset({"tree_before", "proposal", "proposal_sender", "tree_after"}),
    ),
    "tree-validation": (
        "tree_validation",
        frozenset({"tree", "group_id", "resolutions", "tree_hashes"}),
    ),
    "treekem": ("treekem", frozenset({"leaves_private", "update_paths", "ratchet_tree"})),
    "passive-client": (
        "passive_client",
        frozenset({"key_package", "init_priv", "welcome", "initial_epoch_authenticator"}),
    ),
}


def detect_kind(cases: Any) -> str | None:
    """The kind whose identifying fields the first case has (most specific wins)."""
    if not isinstance(cases, list) or not cases or not isinstance(cases[0], dict):
        return None
    keys = set(cases[0])
    best: tuple[int, str] | None = None
    for kind, (_, fields) in KINDS.items():
        if fields <= keys and (best is None or len(fields) > best[0]):
            best = (len(fields), kind)
    return best[1] if best else None


def load_verifier(kind: str) -> ModuleType | None:
    module_name = KINDS[kind][0]
    try:
        return importlib.import_module(f"harness.conformance.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"harness.conformance.{module_name}":
            return None
        raise


@dataclass
class Outcome:
    """Result of one vector case."""

    index: int
    suite: int | None
    status: str  # "passed" | "failed" | "skipped"
    reason: str = ""


@dataclass
class FileReport:
    path: Path
    kind: str | None
    implemented: bool
    outcomes: list[Outcome] = field(default_factory=list)
    error: str = ""

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


def case_id(kind: str, index: int, case: dict[str, Any]) -> str:
    """A readable id for a case: ``suite-1-case-3``, ``n_leaves-8``."""
    if "cipher_suite" in case:
        return f"suite-{case['cipher_suite']}-case-{index}"
    if "n_leaves" in case:
        return f"n_leaves-{case['n_leaves']}"
    return f"case-{index}"


def run_case(verifier: ModuleType, index: int, case: dict[str, Any]) -> Outcome:
    suite = case.get("cipher_suite")
    try:
        verifier.run(case)
    except UnsupportedError as exc:
        return Outcome(index, suite, "skipped", str(exc))
    except Exception as exc:  # a vector failure or a bug: both are failures
        detail = "".join(traceback.format_exception_only(exc)).strip()
        return Outcome(index, suite, "failed", detail)
    return Outcome(index, suite, "passed")


def iter_vector_files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.suffix == ".json")
        else:
            yield path


def run_file(path: Path) -> FileReport:
    try:
        cases = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return FileReport(path, None, False, error=f"cannot read: {exc}")
    kind = detect_kind(cases)
    if kind is None:
        return FileReport(path, None, False, error="not an MLS test-vector file of a known kind")
    verifier = load_verifier(kind)
    if verifier is None:
        return FileReport(path, kind, False)
    report = FileReport(path, kind, True)
    for index, case in enumerate(cases):
        report.outcomes.append(run_case(verifier, index, case))
    return report
