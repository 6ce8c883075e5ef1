"""What a compelled relay can infer from its spy log (SPEC.md §7.1.1).

Input: the JSON-lines logs of ``harness.spy.relay`` (one per relay), and
optionally the scenario's ground truth to score the inferences.  Each
inference becomes a *finding*, classed against SPEC.md §2/§7.1:

=====================  ==========================================  ===========
finding                what the relay learns                        class
=====================  ==========================================  ===========
``co_read``            one connection proved the read keys of two   VIOLATION
                       or more mailboxes: they have one reader
``attribution``        a post came on a connection that proved a    VIOLATION
                       read key: its sender is that mailbox's
                       reader
``shared_msg_id``      the same msg_id was posted to two relays     VIOLATION
``shared_envelope``    the same envelope bytes on two relays        VIOLATION
``shared_chunk``       a chunk (or 4 KiB block) identical on two    VIOLATION
                       relays
``co_write``           one connection without read keys posted to   admitted
                       or created several mailboxes
``address``            mailboxes read from one address within a     admitted
                       time window (no proxy, or one exit)
``timing``             posts of one size on two relays within Δ:    admitted
                       a guessed pairing of their mailboxes
``per_mailbox``        readers, posts, sizes and times per mailbox  admitted
=====================  ==========================================  ===========
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.spy.ground import GroundTruth

ADMITTED = "admitted by SPEC"
VIOLATION = "VIOLATION"
ADDRESS_WINDOW = 60.0  # s: reads from one address this close are linked
TIMING_DELTA = 1.0  # s: a post on another relay of the same size this close
TIMING_MIN_MATCHES = 2  # matched posts needed to link two mailboxes by timing

# What SPEC.md admits, or forbids, for each kind of finding (§2, §7.1).
SPEC_TEXT = {
    "co_read": (VIOLATION, "§2, §7.1.1: each mailbox is read over its own connection"),
    "attribution": (VIOLATION, "§2: the relay learns no sender within a group"),
    "shared_msg_id": (VIOLATION, "§7.1 Across relays, Ids: each copy has its own msg_id"),
    "shared_envelope": (VIOLATION, "§7.1 Across relays, Envelopes: each copy sealed per mailbox"),
    "shared_chunk": (VIOLATION, "§7.1 Across relays, Attachments: chunks encrypted per relay"),
    "co_write": (ADMITTED, "§7.1.1: a posting connection may carry posts to several mailboxes"),
    "address": (ADMITTED, "§7.1: the relay sees each connection's source address"),
    "timing": (ADMITTED, "§7.1 Across relays, Timing: coarse timing and size buckets remain"),
    "per_mailbox": (ADMITTED, "§7.1: per mailbox, its readers, sizes and arrival times"),
}


@dataclass
class Conn:
    relay: int
    conn: int
    peer: str
    ip: str
    opened: float
    closed: float | None = None
    reads: dict[str, float] = field(default_factory=dict)  # mailbox -> first proof
    writes: set[str] = field(default_factory=set)  # AuthWrite accepted
    creates: set[str] = field(default_factory=set)
    acks: set[str] = field(default_factory=set)
    posts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"relay{self.relay}/conn{self.conn}"

    def written(self) -> set[str]:
        return self.writes | self.creates | {p["mailbox"] for p in self.posts}


@dataclass
class SpyLogs:
    conns: list[Conn]
    chunks: list[dict[str, Any]]  # each with "relay"
    http: list[dict[str, Any]]
    malformed: int = 0


class LogError(ValueError):
    """A spy log that cannot be read."""


def load_logs(paths: Iterable[Path]) -> SpyLogs:
    conns: list[Conn] = []
    chunks: list[dict[str, Any]] = []
    http: list[dict[str, Any]] = []
    bad = 0
    for relay, path in enumerate(paths):
        open_conns: dict[int, Conn] = {}
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise LogError(f"cannot read spy log {path}: {exc}") from exc
        for n, line in enumerate(lines, 1):
            try:
                ev = json.loads(line)
                kind = ev["ev"]
            except (ValueError, KeyError, TypeError):
                if n == len(lines):
                    continue  # a relay killed mid-line
                raise LogError(f"{path}:{n}: not a spy log record") from None
            if kind == "open":
                c = Conn(relay, ev["conn"], ev["peer"], ev["ip"], ev["time"])
                open_conns[c.conn] = c
                conns.append(c)
            elif kind == "close":
                if ev["conn"] in open_conns:
                    open_conns[ev["conn"]].closed = ev["time"]
            elif kind == "chunk":
                chunks.append(ev | {"relay": relay})
            elif kind == "http":
                http.append(ev | {"relay": relay})
            elif kind == "frame":
                c2 = open_conns.get(ev["conn"])
                if c2 is None:
                    continue
                _add_frame(c2, ev)
                bad += ev["type"] == "malformed"
    return SpyLogs(conns, chunks, http, bad)


def _add_frame(c: Conn, ev: dict[str, Any]) -> None:
    t, mailbox = ev["type"], ev.get("mailbox")
    if mailbox is None:
        return
    if t == "AuthRead" and ev.get("ok"):
        c.reads.setdefault(mailbox, ev["time"])
    elif t == "AuthWrite" and ev.get("ok"):
        c.writes.add(mailbox)
    elif t == "Create":
        c.creates.add(mailbox)
    elif t == "Ack":
        c.acks.add(mailbox)
    elif t in ("Post", "PostSigned"):
        c.posts.append(ev)


def _finding(key: str, count: int, words: str, **details: Any) -> dict[str, Any]:
    cls, spec = SPEC_TEXT[key]
    violated = cls == VIOLATION and count > 0
    return {
        "finding": key,
        "class": VIOLATION if violated else ADMITTED,
        "forbidden": cls == VIOLATION,  # SPEC forbids any such finding
        "violated": violated,
        "spec": spec,
        "count": count,
        "words": words,
        **details,
    }


def _plural(n: int, word: str, plural: str = "") -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def analyse(
    logs: SpyLogs,
    truth: GroundTruth | None = None,
    *,
    address_window: float = ADDRESS_WINDOW,
    timing_delta: float = TIMING_DELTA,
) -> dict[str, Any]:
    """Every inference, classed, with ground-truth scores when given."""
    conns = logs.conns
    frames = [(c, p) for c in conns for p in c.posts]
    # A retry of a post whose answer the client did not get (same msg_id, so
    # the relay stores it once) is one post, not two, in every inference.
    seen: set[tuple[int, str]] = set()
    posts = []
    for c, p in frames:
        key = (c.relay, p.get("msg_id", ""))
        if key[1] and key in seen:
            continue
        seen.add(key)
        posts.append((c, p))
    findings = [
        _co_read(conns, truth),
        _attribution(posts, truth),
        *_shared(posts, logs.chunks),
        _co_write(conns),
        _address(conns, address_window, truth),
        _timing(posts, timing_delta, truth),
        _per_mailbox(conns, posts),
    ]
    out: dict[str, Any] = {
        "relays": len({c.relay for c in conns} | {ch["relay"] for ch in logs.chunks}),
        "connections": len(conns),
        "posts": len(posts),
        "post_frames": len(frames),
        "chunks": len(logs.chunks),
        "malformed_frames": logs.malformed,
        "findings": findings,
        "violations": [f["finding"] for f in findings if f["violated"]],
    }
    if truth is not None:
        out["ground_truth"] = _truth_summary(conns, posts, truth)
    return out


# ---------------------------------------------------------------- findings


def _co_read(conns: list[Conn], truth: GroundTruth | None) -> dict[str, Any]:
    linking = [c for c in conns if len(c.reads) >= 2]
    edges = {(c.relay, a, b) for c in linking for a in c.reads for b in c.reads if a < b}
    most = max((len(c.reads) for c in conns), default=0)
    words = (
        f"{_plural(len(linking), 'connection')} read more than one mailbox "
        f"(up to {most} on one), linking {_plural(len(edges), 'pair')} of mailboxes "
        "to a common reader."
        if linking
        else "No connection read more than one mailbox."
    )
    details: dict[str, Any] = {"edges": len(edges), "most_on_one_connection": most}
    if truth is not None:
        details["true_edges"] = sum(1 for _, a, b in edges if _share_reader(truth, a, b))
    return _finding("co_read", len(linking), words, **details)


def _attribution(
    posts: list[tuple[Conn, dict[str, Any]]], truth: GroundTruth | None
) -> dict[str, Any]:
    attributed = [(c, p) for c, p in posts if c.reads]
    words = (
        f"{len(attributed)} of {_plural(len(posts), 'post')} came on a connection that also "
        "read a mailbox, so the relay attributes each to that mailbox's reader."
        if attributed
        else f"0 of {_plural(len(posts), 'post')} attributed: no post came on a connection "
        "that read a mailbox."
    )
    details: dict[str, Any] = {"posts": len(posts)}
    if truth is not None:
        score = {"to_sender": 0, "to_someone_else": 0, "to_several_people": 0, "unknown": 0}
        for c, p in attributed:
            sender = truth.posts.get(p["msg_id"], ("", "", 0))[0]
            who = _readers_of_all(truth, c.reads)
            if not sender or who is None:
                score["unknown"] += 1
            elif len(who) == 1:
                score["to_sender" if who == {sender} else "to_someone_else"] += 1
            else:
                score["to_several_people"] += 1
        details["score"] = score
        words += (
            f" Checked against the scenario: {score['to_sender']} pinned on their real "
            f"sender, {score['to_someone_else']} on the wrong person, "
            f"{score['to_several_people']} on a set of people."
            if attributed
            else ""
        )
    return _finding("attribution", len(attributed), words, **details)


def _shared(
    posts: list[tuple[Conn, dict[str, Any]]], chunks: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    by_id: dict[str, set[int]] = defaultdict(set)
    by_env: dict[str, set[int]] = defaultdict(set)
    for c, p in posts:
        by_id[p["msg_id"]].add(c.relay)
        by_env[p["sha256"]].add(c.relay)
    ids = sum(1 for r in by_id.values() if len(r) > 1)
    envs = sum(1 for r in by_env.values() if len(r) > 1)
    by_chunk: dict[str, set[int]] = defaultdict(set)
    by_block: dict[str, set[int]] = defaultdict(set)
    for ch in chunks:
        by_chunk[ch["sha256"]].add(ch["relay"])
        for b in ch.get("blocks", []):
            by_block[b].add(ch["relay"])
    same_chunks = sum(1 for r in by_chunk.values() if len(r) > 1)
    same_blocks = sum(1 for r in by_block.values() if len(r) > 1)
    return [
        _finding(
            "shared_msg_id",
            ids,
            f"{ids} of {_plural(len(by_id), 'msg_id')} reached more than one relay.",
            distinct=len(by_id),
        ),
        _finding(
            "shared_envelope",
            envs,
            f"{envs} of {_plural(len(by_env), 'envelope')} were byte-identical on two relays.",
            distinct=len(by_env),
        ),
        _finding(
            "shared_chunk",
            same_chunks + same_blocks,
            f"{same_chunks} of {_plural(len(chunks), 'chunk upload')} and {same_blocks} "
            f"4 KiB blocks were identical on two relays.",
            chunks=len(chunks),
            identical_chunks=same_chunks,
            identical_blocks=same_blocks,
        ),
    ]


def _co_write(conns: list[Conn]) -> dict[str, Any]:
    writers = [c for c in conns if not c.reads and len(c.written()) >= 2]
    words = (
        f"{_plural(len(writers), 'connection')} that read nothing wrote to several "
        "mailboxes: those mailboxes have a common writer at that moment, who is not named."
        if writers
        else "No read-less connection wrote to more than one mailbox."
    )
    return _finding("co_write", len(writers), words)


def _address(conns: list[Conn], window: float, truth: GroundTruth | None) -> dict[str, Any]:
    reads = sorted((t, c.relay, c.ip, c.conn, m) for c in conns for m, t in c.reads.items())
    edges: set[tuple[int, str, str]] = set()
    for i, (t, relay, ip, conn, m) in enumerate(reads):
        for t2, relay2, ip2, conn2, m2 in reads[i + 1 :]:
            if t2 - t > window:
                break
            if relay2 == relay and ip2 == ip and conn2 != conn and m2 != m:
                edges.add((relay, min(m, m2), max(m, m2)))
    addresses = sorted({c.ip for c in conns})
    words = (
        f"Reads from one address within {window:.0f} s link {_plural(len(edges), 'pair')} "
        f"of mailboxes; the relay saw {_plural(len(addresses), 'address')} "
        f"({', '.join(addresses[:4])}{', ...' if len(addresses) > 4 else ''})."
    )
    details: dict[str, Any] = {"edges": len(edges), "addresses": len(addresses)}
    if truth is not None and edges:
        true = sum(1 for _, a, b in edges if _share_reader(truth, a, b))
        details["true_edges"] = true
        words += f" {true} of them are true (here every client shares the test's address)."
    return _finding("address", len(edges), words, **details)


def _timing(
    posts: list[tuple[Conn, dict[str, Any]]], delta: float, truth: GroundTruth | None
) -> dict[str, Any]:
    timeline = sorted((p["time"], c.relay, p["size"], p["mailbox"]) for c, p in posts)
    pairs: dict[tuple[str, str], int] = defaultdict(int)
    followed = 0  # posts followed within delta by one of the same size on another relay
    for i, (t, relay, size, mb) in enumerate(timeline):
        hit = False
        for t2, relay2, size2, mb2 in timeline[i + 1 :]:
            if t2 - t > delta:
                break
            if relay2 != relay and size2 == size:
                pairs[(min(mb, mb2), max(mb, mb2))] += 1
                hit = True
        followed += hit
    links = sorted(k for k, n in pairs.items() if n >= TIMING_MIN_MATCHES)
    words = (
        f"{followed} of {_plural(len(timeline), 'post')} were followed within {delta:g} s by "
        "a post of the same size on another relay. "
        f"Posts of one size on two relays within {delta:g} s link "
        f"{_plural(len(links), 'pair')} of mailboxes across relays (at least "
        f"{TIMING_MIN_MATCHES} matching posts each)."
    )
    details: dict[str, Any] = {"linked_pairs": len(links), "followed_posts": followed}
    if truth is not None and links:
        true = sum(1 for a, b in links if _same_conversation(truth, a, b))
        details["true_pairs"] = true
        words += f" {true} of these guesses are right."
    return _finding("timing", len(links), words, **details)


def _per_mailbox(conns: list[Conn], posts: list[tuple[Conn, dict[str, Any]]]) -> dict[str, Any]:
    readers: dict[str, set[str]] = defaultdict(set)
    for c in conns:
        for m in c.reads:
            readers[m].add(c.label)
    counts: dict[str, int] = defaultdict(int)
    sizes: dict[int, int] = defaultdict(int)
    for _, p in posts:
        counts[p["mailbox"]] += 1
        sizes[p["size"]] += 1
    mailboxes = set(readers) | set(counts)
    words = (
        f"{_plural(len(mailboxes), 'mailbox', 'mailboxes')} seen; envelope sizes by bucket: "
        + ", ".join(f"{s} B x{n}" for s, n in sorted(sizes.items()))
        + "."
    )
    return _finding(
        "per_mailbox",
        len(mailboxes),
        words,
        sizes={str(s): n for s, n in sorted(sizes.items())},
        most_reader_connections=max((len(v) for v in readers.values()), default=0),
    )


# ---------------------------------------------------------------- ground truth


def _share_reader(truth: GroundTruth, a: str, b: str) -> bool:
    return bool(truth.readers.get(a, set()) & truth.readers.get(b, set()))


def _readers_of_all(truth: GroundTruth, mailboxes: Iterable[str]) -> set[str] | None:
    sets = [truth.readers.get(m) for m in mailboxes]
    if not sets or any(s is None for s in sets):
        return None
    out = set(sets[0] or ())
    for s in sets[1:]:
        out &= s or set()
    return out


def _same_conversation(truth: GroundTruth, a: str, b: str) -> bool:
    ka, kb = truth.kinds.get(a), truth.kinds.get(b)
    if ka is not None and ka == kb and ka.startswith("conversation:"):
        return True
    ra, rb = truth.readers.get(a), truth.readers.get(b)
    return ka == kb == "personal" and bool(ra) and ra == rb


def _truth_summary(
    conns: list[Conn], posts: list[tuple[Conn, dict[str, Any]]], truth: GroundTruth
) -> dict[str, Any]:
    """The headline numbers, checked against what really happened."""
    seen = {p["msg_id"] for _, p in posts}
    personal = {
        m: next(iter(r)) for m, r in truth.readers.items() if len(r) == 1
    }  # a mailbox only one person reads
    linked: set[str] = set()
    for c in conns:
        touched = set(c.reads) | (c.written() if c.reads else set())
        for m in touched:
            who = personal.get(m)
            if who is None:
                continue
            for other in touched - {m}:
                kind = truth.kinds.get(other, "")
                if kind.startswith("conversation:") and who in truth.readers.get(other, set()):
                    linked.add(who)
    senders: dict[str, int] = defaultdict(int)
    for sender, _, _ in truth.posts.values():
        senders[sender] += 1
    return {
        "members": len(truth.members),
        "members_linked_to_a_conversation": len(linked),
        "posts_sent": len(truth.posts),
        "posts_seen_by_relays": len(seen & set(truth.posts)),
        "posts_by_member": dict(sorted(senders.items())),
        "frames_outside_a_member": truth.unattributed_frames,
    }


def headline(result: dict[str, Any]) -> list[str]:
    """The report's first lines, in plain words."""
    lines = []
    gt = result.get("ground_truth")
    by = {f["finding"]: f for f in result["findings"]}
    if gt is not None:
        lines.append(
            f"The relays could link {gt['members_linked_to_a_conversation']} of "
            f"{gt['members']} members' inboxes to a conversation they are in."
        )
    att = by["attribution"]
    if att["count"]:
        score = att.get("score", {})
        extra = f" ({score['to_sender']} to their real sender)" if score else ""
        lines.append(f"{att['count']} of {att['posts']} posts attributed to a reader{extra}.")
    else:
        lines.append("0 posts attributed.")
    shared = sum(by[k]["count"] for k in ("shared_msg_id", "shared_envelope", "shared_chunk"))
    lines.append(
        f"{shared} ids, envelopes or chunk blocks shared across relays."
        if shared
        else "Nothing shared across relays (ids, envelopes, chunk bytes)."
    )
    v = result["violations"]
    lines.append(
        f"VIOLATIONS of SPEC: {', '.join(v)}." if v else "Every finding is admitted by SPEC."
    )
    return lines
