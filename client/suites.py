"""The cipher suites a Samizdat client offers, and KeyPackages by suite.

Theory of operation (SPEC.md §4.1.1)
------------------------------------
A conversation is one MLS group, and an MLS group has one cipher suite for
its whole life (RFC 9420 §11: a suite change needs a new group).  The user
picks it when the conversation is created: ``classic`` (suite 1, the
default), or a post-quantum hybrid, ``mlkem768x25519`` (0x004E, what
``--pq`` means) or ``xwing`` (0x004F).  Everyone added later must bring a
KeyPackage of that suite (RFC 9420 §12.1.1), so a client publishes
KeyPackages of every suite it supports to each contact (``KeyPackages`` in
the 1:1 conversation) and keeps the ones it receives apart by suite.  There
is no silent downgrade: adding a contact who has no KeyPackage of the
group's suite fails with an error naming that contact, and nothing is
consumed.  A 1:1 conversation takes the suite of the invite's KeyPackage,
which the inviter chose.
"""

from __future__ import annotations

from collections.abc import Iterable

from protocol.errors import DecodeError, LocalError
from protocol.mls.crypto import MLKEM768X25519_SUITE, PQ_SUITES, SUITE_NAMES, XWING_SUITE
from protocol.mls.messages import MLSMessage

CLASSIC_SUITE = 1
#: Every suite this client creates groups in and publishes KeyPackages for,
#: the default first.
CLIENT_SUITES: tuple[int, ...] = (CLASSIC_SUITE, MLKEM768X25519_SUITE, XWING_SUITE)
#: The suite of a new conversation unless the user asks for another.
DEFAULT_SUITE = CLASSIC_SUITE
#: What ``--pq`` (and the terminal app's "post-quantum" choice) means.
PQ_DEFAULT_SUITE = MLKEM768X25519_SUITE
#: The names the command line and the terminal app accept.
SUITE_CHOICES: dict[str, int] = {
    "classic": CLASSIC_SUITE,
    "mlkem768x25519": MLKEM768X25519_SUITE,
    "xwing": XWING_SUITE,
}


class SuiteError(LocalError):
    """A suite this client does not offer, or no KeyPackage for it."""

    code = 50


def parse_suite(text: str) -> int:
    """A suite from its name (``classic``, ``mlkem768x25519``, ``xwing``,
    ``pq``) or its number (``1``, ``0x004E``...), among :data:`CLIENT_SUITES`."""
    t = text.strip().lower()
    if t == "pq":
        return PQ_DEFAULT_SUITE
    if t in SUITE_CHOICES:
        return SUITE_CHOICES[t]
    try:
        suite = int(t, 0)
    except ValueError:
        suite = -1
    if suite not in CLIENT_SUITES:
        raise SuiteError(f"unknown cipher suite {text!r}: choose one of {', '.join(SUITE_CHOICES)}")
    return suite


def chosen_suite(pq: bool, name: str | None) -> int:
    """The suite of ``--pq`` / ``--suite NAME`` (the default if neither)."""
    if name:
        return parse_suite(name)
    return PQ_DEFAULT_SUITE if pq else DEFAULT_SUITE


SUITE_HELP = (
    "cipher suite: classic (default), mlkem768x25519 (post-quantum, what --pq means) "
    "or xwing (post-quantum, draft-mahy-mls-xwing)"
)


def check_suite(suite: int) -> int:
    if suite not in CLIENT_SUITES:
        raise SuiteError(
            f"cipher suite {suite:#06x} is not one this client offers "
            f"({', '.join(f'{s:#06x}' for s in CLIENT_SUITES)})"
        )
    return suite


def describe_suite(suite: int) -> str:
    """``0x004e MLS_128_MLKEM768X25519_AES256GCM_SHA384_Ed25519 (post-quantum)``."""
    kind = "post-quantum" if suite in PQ_SUITES else "classic"
    return f"{suite:#06x} {SUITE_NAMES.get(suite, 'unknown')} ({kind})"


def key_package_suite(kp: bytes) -> int | None:
    """The cipher suite of an encoded ``MLSMessage(KeyPackage)`` (None if it is not one)."""
    try:
        parsed = MLSMessage.from_bytes(kp).key_package
    except (DecodeError, LocalError):
        return None
    return None if parsed is None else parsed.cipher_suite


def keep_per_suite(kps: Iterable[bytes], limit: int) -> list[bytes]:
    """The newest ``limit`` KeyPackages of each suite (oldest first): a
    contact's stock of one suite never crowds out another's."""
    kept: list[bytes] = []
    counts: dict[int | None, int] = {}
    for kp in reversed(list(kps)):
        suite = key_package_suite(kp)
        if suite not in CLIENT_SUITES or counts.get(suite, 0) >= limit:
            continue
        counts[suite] = counts.get(suite, 0) + 1
        kept.append(kp)
    kept.reverse()
    return kept


def find_key_package(kps: list[bytes], suite: int) -> int | None:
    """The index of the oldest KeyPackage of ``suite`` in ``kps``, or None."""
    return next((i for i, kp in enumerate(kps) if key_package_suite(kp) == suite), None)
