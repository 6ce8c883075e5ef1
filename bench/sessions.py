"""What isolated sessions cost (issue 15 item 1): file descriptors, memory
and connections of a client reading N mailboxes on one relay, and of the
relay serving it.

Usage: ``python -m bench.sessions [--mailboxes 300] [--readers 16]``

A real relay process (debug log on, to check isolation from its side) and a
:class:`client.sessions.RelaySessions` in this process: N mailboxes are
created and a separate writer posts one message to each, then the client
subscribes to all N (a client starting up with a backlog everywhere) and
the run waits until all N are delivered: the first ``--readers`` over held
connections, the rest by polls (first ones within ``--first-poll`` s).
Printed: the client's and the relay's descriptors and resident memory
before and at the end, the most connections the client held at once, how
many it opened in all, how long delivery took, and what the relay's log
shows (connections that read more than one mailbox, posts on a reading
connection: both must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from client.relay_client import RelayClient
from client.sessions import RelaySessions, SessionPolicy
from harness.relay_process import RelayProcess
from protocol.padding import pad

# the relay's debug log: "auth-read of MAILBOX on connection N", "post to MAILBOX on connection N"
_LINE = re.compile(r"(auth-read|auth-write|post) (?:of|to) ([0-9a-f]{64}) on connection (\d+)")


def fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _noop(url: str, mailbox_id: bytes, seq: int, envelope: bytes) -> None:
    return None


async def run(n: int, policy: SessionPolicy, workdir: Path, timeout: float) -> dict[str, float]:
    relay = RelayProcess(workdir / "relay", settings={"debug_log": True}).start()
    assert relay.proc is not None
    pid = relay.proc.pid
    out: dict[str, float] = {"mailboxes": n, "max_readers": policy.max_readers}
    got: set[bytes] = set()
    sessions: RelaySessions | None = None
    writer = RelayClient(relay.url, _noop)
    try:
        await asyncio.sleep(0.5)
        out["client_fds_before"], out["client_rss_kib_before"] = fds(), rss_kib()
        out["relay_fds_before"], out["relay_rss_kib_before"] = fds(pid), rss_kib(pid)

        async def deliver(url: str, mailbox_id: bytes, seq: int, envelope: bytes) -> None:
            got.add(mailbox_id)

        sessions = RelaySessions(relay.url, deliver, policy=policy)
        boxes = [(os.urandom(32), os.urandom(32), os.urandom(32)) for _ in range(n)]
        writer.start()
        for start in range(0, n, 50):
            await asyncio.gather(
                *(
                    writer.create_mailbox(m, r, w, shared=True)
                    for m, r, w in boxes[start : start + 50]
                )
            )
        for start in range(0, n, 50):
            await asyncio.gather(
                *(
                    writer.post(m, w, os.urandom(16), pad(b"x"))
                    for m, _, w in boxes[start : start + 50]
                )
            )
        await writer.close()
        began = time.monotonic()
        for m, r, w in boxes:
            await sessions.subscribe(m, r, 0, write_seed=w, shared=True)
        peak = 0
        deadline = began + timeout
        while len(got) < n and time.monotonic() < deadline:
            peak = max(peak, sessions.open_connections())
            await asyncio.sleep(0.05)
        out["delivered"] = len(got)
        out["seconds_to_deliver_all"] = round(time.monotonic() - began, 1)
        out["client_peak_connections"] = peak
        out["client_connections_opened"] = sessions.opened
        out["client_fds"], out["client_rss_kib"] = fds(), rss_kib()
        out["relay_fds"], out["relay_rss_kib"] = fds(pid), rss_kib(pid)
    finally:
        if sessions is not None:
            await sessions.close()
        await writer.close()
        relay.stop()
    reads: dict[int, set[str]] = defaultdict(set)
    posts: list[int] = []
    for match in _LINE.finditer(relay.log_path.read_text(errors="replace")):
        if match[1] == "auth-read":
            reads[int(match[3])].add(match[2])
        elif match[1] == "post":
            posts.append(int(match[3]))
    out["relay_conns_reading_2+_mailboxes"] = sum(1 for b in reads.values() if len(b) > 1)
    out["relay_posts_on_reader_conns"] = sum(1 for c in posts if c in reads)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mailboxes", type=int, default=300)
    parser.add_argument("--readers", type=int, default=SessionPolicy().max_readers)
    parser.add_argument("--polls", type=int, default=SessionPolicy().max_polls)
    parser.add_argument(
        "--first-poll", type=float, default=20.0, help="cold mailboxes are first polled within"
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    policy = replace(
        SessionPolicy(),
        max_readers=args.readers,
        max_polls=args.polls,
        first_poll=(0.1, args.first_poll),
    )
    with tempfile.TemporaryDirectory(prefix="bench-sessions-") as tmp:
        result = asyncio.run(run(args.mailboxes, policy, Path(tmp), args.timeout))
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value:g}")
    ok = (
        result["delivered"] == args.mailboxes
        and result["relay_conns_reading_2+_mailboxes"] == 0
        and result["relay_posts_on_reader_conns"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
