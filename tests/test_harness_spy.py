"""The spy-relay audit (issue 15 item 8, SPEC.md §7.1.1, §10.8).

A compelled relay logs everything its process sees; the audit says what
that lets it infer and whether SPEC admits it.  The scenario test runs two
real spy relay processes and three members through a local SOCKS5 proxy,
and checks the audit's inferences against the scenario's ground truth (who
really read which mailbox, who really posted which msg_id).  The log tests
feed the analysis a compelled relay's view of known bad and known good
clients, and run the ``samizdat-harness spy`` command on them.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.spy.analysis import VIOLATION, analyse, load_logs
from harness.spy.audit import audit_scenario
from harness.spy.report import render_page
from harness.spy.scenario import SpyOptions

ROOT = Path(__file__).resolve().parent.parent

# The lead sets this to True once session isolation (issue 15 item 1, the
# ``isolate`` branch) is merged: from then on the audit of the standard
# scenario must find no violation at all.  Until then the test asserts that
# the violations are exactly the two that isolation removes, so it fails
# (rather than passing silently) the moment they disappear or others appear.
SPY_AUDIT_EXPECTS_NO_VIOLATION = True
PENDING_ISOLATION = {"co_read", "attribution"}

pytestmark = pytest.mark.timeout(300)


def _by(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["finding"]: f for f in result["findings"]}


def test_spy_audit_of_a_group_matches_ground_truth(tmp_path: Path) -> None:
    options = SpyOptions(members=3, relays=2, messages=1, file_chunks=1, proxy=True)
    result, run = audit_scenario(options, tmp_path / "work")
    truth, gt, by = run.truth, result["ground_truth"], _by(result)

    # the run itself: every connection went through the proxy, and the relays
    # logged every post the clients really sent (the truth is complete)
    assert run.proxy_connects, "no client connection went through the SOCKS5 proxy"
    assert gt["frames_outside_a_member"] == 0
    assert gt["posts_sent"] > 3 and gt["posts_seen_by_relays"] == gt["posts_sent"]
    # (a post retried after its answer was lost counts once: result["posts"];
    # the relays saw result["post_frames"] Post frames in all)
    assert result["posts"] == gt["posts_sent"] <= result["post_frames"]
    assert set(gt["posts_by_member"]) == {"Alice", "Bob", "Carol"}
    assert result["chunks"] >= 2  # one chunk, a copy on each relay

    # attribution against the truth: never the wrong person, every count adds up
    att = by["attribution"]
    score = att["score"]
    assert score["to_someone_else"] == 0 and score["unknown"] == 0
    assert score["to_sender"] + score["to_several_people"] == att["count"] <= gt["posts_sent"]
    # a post on a connection that reads is pinned on its sender iff the sender
    # is the only member who reads every mailbox that connection read
    conns = load_logs(run.logs).conns
    pinned = sum(
        1
        for c in conns
        for p in c.posts
        if c.reads
        and [m for m in truth.members if all(m in truth.readers.get(x, ()) for x in c.reads)]
        == [truth.posts[p["msg_id"]][0]]
    )
    assert score["to_sender"] == pinned
    # contact graph: a linked member is one whose own inbox shares a connection
    # with a conversation mailbox they read
    assert 0 <= gt["members_linked_to_a_conversation"] <= 3
    if by["co_read"]["count"] == 0 and att["count"] == 0:
        assert gt["members_linked_to_a_conversation"] == 0
    assert by["co_read"].get("true_edges", 0) == by["co_read"]["edges"]  # each link is real

    # nothing shared across relays (per-copy ids, per-relay chunk copies: on main)
    for key in ("shared_msg_id", "shared_envelope", "shared_chunk"):
        assert by[key]["count"] == 0, by[key]["words"]

    # classes follow SPEC, and the plain-words report says it
    for f in result["findings"]:
        assert f["class"] == (VIOLATION if f["forbidden"] and f["count"] else "admitted by SPEC")
    page = html.unescape(render_page(result))
    assert 'id="spy-audit"' in page and "members' inboxes" in page
    assert "posts attributed" in page

    if SPY_AUDIT_EXPECTS_NO_VIOLATION:
        assert result["violations"] == [], [by[v]["words"] for v in result["violations"]]
        assert att["count"] == 0 and by["co_read"]["count"] == 0
        assert gt["members_linked_to_a_conversation"] == 0
    else:
        # one WebSocket per relay per client (main before isolation): every
        # member's inbox is linked to the group and every post attributed
        assert set(result["violations"]) == PENDING_ISOLATION, (
            "the audit's violations changed: if isolation has merged, set "
            f"SPY_AUDIT_EXPECTS_NO_VIOLATION = True ({result['violations']})"
        )
        assert gt["members_linked_to_a_conversation"] == 3
        assert att["count"] == gt["posts_sent"] and score["to_sender"] == att["count"]


# ---------------------------------------------------------------- known logs


def _write_log(path: Path, events: list[dict[str, Any]]) -> Path:
    t = 1_000_000.0
    lines = []
    for i, ev in enumerate(events):
        lines.append(json.dumps({"time": t + i * 0.01} | ev))
    path.write_text("\n".join(lines) + "\n")
    return path


def _open(conn: int, port: int) -> dict[str, Any]:
    return {"ev": "open", "conn": conn, "peer": f"10.0.0.{conn}:{port}", "ip": f"10.0.0.{conn}"}


def _read(conn: int, mailbox: str) -> dict[str, Any]:
    return {"ev": "frame", "conn": conn, "type": "AuthRead", "mailbox": mailbox, "ok": True}


def _post(conn: int, mailbox: str, msg_id: str, sha: str) -> dict[str, Any]:
    return {
        "ev": "frame",
        "conn": conn,
        "type": "Post",
        "mailbox": mailbox,
        "msg_id": msg_id,
        "size": 512,
        "sha256": sha,
    }


def _chunk(sha: str, blocks: list[str]) -> dict[str, Any]:
    return {"ev": "chunk", "peer": "10.0.0.9:1", "blob": "b", "index": 0, "size": 8192,
            "sha256": sha, "blocks": blocks}  # fmt: skip


def _naive_logs(tmp_path: Path) -> list[Path]:
    """A client that reads two mailboxes and posts on one connection, and
    sends the same msg_id and chunk bytes to both relays."""
    a = _write_log(
        tmp_path / "a.jsonl",
        [_open(1, 5000), _read(1, "aa" * 32), _read(1, "bb" * 32),
         _post(1, "bb" * 32, "01" * 16, "e1"), _chunk("c1", ["k1", "k2"])],
    )  # fmt: skip
    b = _write_log(
        tmp_path / "b.jsonl",
        [_open(1, 6000), _post(1, "cc" * 32, "01" * 16, "e2"), _chunk("c2", ["k9", "k2"])],
    )
    return [a, b]


def _isolated_logs(tmp_path: Path) -> list[Path]:
    """One mailbox per reading connection, posts on read-less connections,
    nothing in common across relays."""
    a = _write_log(
        tmp_path / "a.jsonl",
        [_open(1, 5000), _read(1, "aa" * 32), _open(2, 5001), _read(2, "bb" * 32),
         _open(3, 5002), _post(3, "bb" * 32, "01" * 16, "e1"), _chunk("c1", ["k1"])],
    )  # fmt: skip
    b = _write_log(
        tmp_path / "b.jsonl",
        [_open(1, 6000), _read(1, "dd" * 32), _open(2, 6001),
         _post(2, "cc" * 32, "02" * 16, "e2"), _chunk("c2", ["k2"])],
    )  # fmt: skip
    return [a, b]


def test_analysis_flags_each_forbidden_link_in_known_logs(tmp_path: Path) -> None:
    by = _by(analyse(load_logs(_naive_logs(tmp_path))))
    assert by["co_read"]["count"] == 1 and by["co_read"]["edges"] == 1
    assert by["attribution"]["count"] == 1
    assert by["shared_msg_id"]["count"] == 1
    assert by["shared_chunk"]["identical_blocks"] == 1  # a 4 KiB block, not the whole chunk
    assert by["shared_envelope"]["count"] == 0
    assert all(by[k]["class"] == VIOLATION for k in ("co_read", "attribution", "shared_chunk"))


def test_analysis_admits_isolated_clients(tmp_path: Path) -> None:
    result = analyse(load_logs(_isolated_logs(tmp_path)))
    assert result["violations"] == []
    assert "0 of 2 posts attributed" in _by(result)["attribution"]["words"]


def _cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(tmp_path / "cache"))
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "spy", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_spy_command_exit_code_and_report_dir(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    proc = _cli(["--logs", *map(str, _naive_logs(bad))], tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "VIOLATION" in proc.stdout
    # default report dir: the user's cache, never the working tree
    reports = tmp_path / "cache" / "samizdat-harness" / "reports"
    result = json.loads((reports / "spy-audit.json").read_text())
    assert set(result["violations"]) >= {"co_read", "attribution", "shared_msg_id"}
    assert "VIOLATION" in (reports / "spy-audit.html").read_text()
    assert not list(tmp_path.glob("spy-audit.*"))

    good = tmp_path / "good"
    good.mkdir()
    out = tmp_path / "out"
    proc = _cli(["--logs", *map(str, _isolated_logs(good)), "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Every finding is admitted by SPEC" in proc.stdout
    assert (out / "spy-audit.html").is_file()

    proc = _cli(["--logs", str(tmp_path / "absent.jsonl")], tmp_path)
    assert proc.returncode == 2 and "cannot read spy log" in proc.stderr


def test_the_production_relay_has_no_spy_mode() -> None:
    """The logging lives in the harness: nothing under relay/ knows of it."""
    for path in (ROOT / "relay").rglob("*.py"):
        assert "harness" not in path.read_text(), path


def test_a_retried_post_counts_once(tmp_path: Path) -> None:
    """A client that did not get a post's answer sends it again (same msg_id,
    stored once): the audit counts one post, and keeps the frame count."""
    post = {
        "ev": "frame",
        "conn": 1,
        "type": "Post",
        "mailbox": "aa" * 32,
        "size": 2048,
        "sha256": "bb" * 32,
    }
    events = [
        {"ev": "open", "time": 1.0, "conn": 1, "peer": "127.0.0.1:1", "ip": "127.0.0.1"},
        {
            "ev": "frame",
            "time": 1.1,
            "conn": 1,
            "type": "AuthWrite",
            "mailbox": "aa" * 32,
            "ok": True,
        },
        post | {"time": 1.2, "msg_id": "01" * 16},
        post | {"time": 3.3, "msg_id": "01" * 16},
        post | {"time": 3.4, "msg_id": "02" * 16},
        {"ev": "close", "time": 4.0, "conn": 1, "peer": "127.0.0.1:1"},
    ]
    log = tmp_path / "spy-relay0.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    result = analyse(load_logs([log]))
    assert (result["posts"], result["post_frames"]) == (2, 3)
