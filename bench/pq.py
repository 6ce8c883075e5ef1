"""The cost of post-quantum groups: suite 1 against each PQ hybrid suite (SPEC §4.1.1).

    python bench/pq.py [--sizes 2,100,500,1000] [--suites 1,0x4f,0x4e] [--json FILE]

For each suite and group size N it measures:

* ``kp``: the size of one published KeyPackage (an encoded MLSMessage),
* ``add_all``: the time for the creator to add N-1 members in one commit
  (KeyPackages made beforehand; the commit and the Welcome are built),
* ``welcome``: the size of that Welcome (one EncryptedGroupSecrets per joiner;
  the GroupInfo carries the ratchet tree, which is where N matters most),
* ``join``: the time for one joiner to process that Welcome (decapsulate,
  decrypt the GroupInfo, verify the tree: every leaf signature, parent hashes),
* ``commit``: the size of the first path commit by the last joiner afterwards
  (an UpdatePath whose copath resolutions are mostly single leaves: the tree's
  parents are blank after one add-all commit, so this is the worst case),
* ``commit_t``: the time to build it,
* the mitigation for large groups (SPEC §4.1.1): ``to_joiners`` is what the
  committer posts today, the whole Welcome to each of the N-1 joiners' inboxes;
  ``split`` is the same commit built with ``welcome_tree=False`` and cut by
  ``split_welcome`` into one single-entry Welcome per joiner, plus the ratchet
  tree once (to be fetched by all joiners); ``per_joiner`` is one such Welcome.

Sizes are bytes, times seconds (one run each: the machine is shared; the big
differences are what to read, not the third digit).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol.mls.crypto import SUITE_NAMES, get_suite
from protocol.mls.group import Group
from protocol.mls.key_package import SigningIdentity, create_key_package
from protocol.mls.welcome import split_welcome

NOW = 1_790_000_000


def rng(n: int) -> bytes:
    return os.urandom(n)


def measure(suite_id: int, n: int) -> dict[str, float | int]:
    suite = get_suite(suite_id)
    ids = [SigningIdentity.generate(suite, f"member-{i}".encode(), rng) for i in range(n)]
    creator = Group.create(suite_id, os.urandom(16), ids[0], rng, NOW)
    bundles = [create_key_package(suite, ident, NOW, rng) for ident in ids[1:]]
    kp = len(bundles[0].key_package_bytes())

    start = time.perf_counter()
    result = creator.commit(rng, NOW, add=bundles)
    add_all = time.perf_counter() - start
    creator.merge_pending_commit()
    assert result.welcome is not None

    start = time.perf_counter()
    last = Group.join(result.welcome, bundles[-1])
    join = time.perf_counter() - start

    start = time.perf_counter()
    commit = last.commit(rng, NOW)
    commit_t = time.perf_counter() - start
    creator.process(commit.commit)  # one receiver of the path, for a sanity check
    last.merge_pending_commit()
    assert creator.epoch_authenticator == last.epoch_authenticator

    # The mitigation: the same add-all, tree left out of the Welcome, Welcome split.
    other = Group.create(suite_id, os.urandom(16), ids[0], rng, NOW)
    lean = other.commit(rng, NOW, add=bundles, welcome_tree=False)
    assert lean.welcome is not None
    parts = split_welcome(lean.welcome)
    joined = Group.join(parts[-1][1], bundles[-1], ratchet_tree=lean.ratchet_tree)
    other.merge_pending_commit()
    assert joined.epoch_authenticator == other.epoch_authenticator
    return {
        "suite": suite_id,
        "members": n,
        "kp": kp,
        "add_all": round(add_all, 3),
        "welcome": len(result.welcome),
        "join": round(join, 3),
        "commit": len(commit.commit),
        "commit_t": round(commit_t, 3),
        "to_joiners": (n - 1) * len(result.welcome),
        "split": sum(len(w) for _, w in parts) + len(lean.ratchet_tree),
        "per_joiner": max(len(w) for _, w in parts),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2,100,500,1000")
    parser.add_argument("--suites", default="1,0x4f,0x4e")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    suites = [int(x, 0) for x in args.suites.split(",")]
    rows = []
    print(
        "| suite | N | KeyPackage B | Welcome B | commit B | add-all s | join s | commit s "
        "| to joiners B | split + tree B | per joiner B |"
    )
    print("| --- " * 11 + "|")
    for n in sizes:
        for suite_id in suites:
            row = measure(suite_id, n)
            rows.append(row)
            print(
                f"| {suite_id:#06x} | {n} | {row['kp']:,} | {row['welcome']:,} | "
                f"{row['commit']:,} | {row['add_all']} | {row['join']} | {row['commit_t']} | "
                f"{row['to_joiners']:,} | {row['split']:,} | {row['per_joiner']:,} |",
                flush=True,
            )
    print()
    for suite_id in suites:
        print(f"{suite_id:#06x} = {SUITE_NAMES[suite_id]}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
