"""Group operations scale linearly in the group size (issue 12).

No timing is asserted (the machine is shared): the tests count work instead.
Python function calls while building an add-all commit, joining, and
processing a remove grow at most ~2.2x per doubling of the group (a
quadratic path, such as walking the tree once per joiner or the member list
once per added leaf, shows up as ~4x); the encrypted GroupInfo a Welcome
binds into every joiner's HPKE context is hashed once per commit, not once
per joiner; and each added KeyPackage's signatures are checked once.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytest

from protocol.mls.crypto import CipherSuite, get_suite
from protocol.mls.group import Group
from protocol.mls.hpke import Kdf
from protocol.mls.key_package import KeyPackageBundle, SigningIdentity, create_key_package

NOW = 1_700_000_000
SUITE = get_suite(1)
DOUBLING_LIMIT = 2.2


def rng(n: int) -> bytes:
    return os.urandom(n)


def _bundles(n: int) -> tuple[SigningIdentity, list[KeyPackageBundle]]:
    ids = [SigningIdentity.generate(SUITE, f"m{i}".encode(), rng) for i in range(n)]
    return ids[0], [create_key_package(SUITE, i, NOW, rng) for i in ids[1:]]


def _calls(fn: Callable[[], object]) -> int:
    """Python and C function calls made by ``fn()``."""
    count = 0

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count


def _work(n: int) -> dict[str, int]:
    creator_id, bundles = _bundles(n)
    creator = Group.create(1, b"g" * 16, creator_id, rng, NOW)
    out: dict[str, Any] = {}

    def add_all() -> None:
        out["result"] = creator.commit(rng, NOW, add=bundles, path=False)

    work = {"add-all commit": _calls(add_all)}
    creator.merge_pending_commit()
    welcome = out["result"].welcome

    def join() -> None:
        out["receiver"] = Group.join(welcome, bundles[0])

    work["join"] = _calls(join)
    commit = creator.commit(rng, NOW, remove=[n - 1]).commit
    creator.merge_pending_commit()
    work["process remove"] = _calls(lambda: out["receiver"].process(commit, now=NOW))
    assert out["receiver"].epoch_authenticator == creator.epoch_authenticator
    return work


def test_group_operations_do_linear_work() -> None:
    sizes = (32, 64, 128)
    work = {n: _work(n) for n in sizes}
    for op in work[sizes[0]]:
        for small, big in itertools.pairwise(sizes):
            ratio = work[big][op] / work[small][op]
            assert ratio <= DOUBLING_LIMIT, f"{op}: {ratio:.2f}x the work from N={small} to {big}"


@contextmanager
def _counting(cls: type, name: str, keep: Callable[..., bool]) -> Iterator[list[int]]:
    seen = [0]
    original = getattr(cls, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if keep(*args, **kwargs):
            seen[0] += 1
        return original(*args, **kwargs)

    setattr(cls, name, wrapper)
    try:
        yield seen
    finally:
        setattr(cls, name, original)


def test_welcome_hashes_the_encrypted_group_info_once() -> None:
    """RFC 9180 §5.1: the HPKE key schedule hashes ``info``, which for a
    Welcome (RFC 9420 §12.4.3.1) holds the whole encrypted GroupInfo; it is
    the same for every joiner, so one commit hashes it once."""
    creator_id, bundles = _bundles(9)
    creator = Group.create(1, b"g" * 16, creator_id, rng, NOW)

    def big_info(self: Kdf, suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bool:
        return label == b"info_hash" and len(ikm) > 1024

    with _counting(Kdf, "labeled_extract", big_info) as seen:
        result = creator.commit(rng, NOW, add=bundles)
    assert seen[0] == 1
    assert result.welcome is not None
    for bundle in bundles:  # and every joiner still opens it
        assert Group.join(result.welcome, bundle).epoch == 1


@pytest.mark.parametrize("cached", [False, True])
def test_each_key_package_is_verified_once_per_commit(cached: bool) -> None:
    """Two signatures per KeyPackage (KeyPackageTBS, LeafNodeTBS; RFC 9420
    §10.1), checked once when the commit is built.  With a cached proposal to
    screen, the committer's own Adds are checked alone (their errors are the
    caller's) and then with the whole list: twice, no more."""
    creator_id, bundles = _bundles(8)
    creator = Group.create(1, b"g" * 16, creator_id, rng, NOW)
    extra, rounds = 0, 1
    if cached:  # bob's Update, cached by the creator, goes into the commit
        result = creator.commit(rng, NOW, add=bundles[:1])
        creator.merge_pending_commit()
        assert result.welcome is not None
        bob = Group.join(result.welcome, bundles[0])
        creator.process(bob.propose_update(rng), now=NOW)
        extra, rounds = 2, 2  # bob's leaf signature: screened alone, then with the list
    bundles = bundles[1:]

    def any_call(*args: Any, **kwargs: Any) -> bool:
        return True

    with _counting(CipherSuite, "verify_with_label", any_call) as seen:
        result = creator.commit(rng, NOW, add=bundles)
    assert seen[0] == rounds * 2 * len(bundles) + extra
    if cached:
        creator.merge_pending_commit()
        bob.process(result.commit, now=NOW)
        assert bob.epoch_authenticator == creator.epoch_authenticator
