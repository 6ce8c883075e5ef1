"""Every shipped scenario runs at its small (CI) size and passes, or fails
only on checks it lists as known failures, each with its reason; the
scenario format and the reports behave as SPEC.md §10 says."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.cli import main
from harness.report import render_terminal, write_reports
from harness.scenario import ScenarioError, load
from harness.scenario.format import from_dict
from harness.scenario.runner import run

pytestmark = pytest.mark.timeout(240)

SCENARIOS = sorted(
    (Path(__file__).resolve().parent.parent / "harness" / "scenarios").glob("*.toml")
)
REQUIRED = {
    "baseline",
    "lossy",
    "relay_ban",
    "fork",
    "replay_tamper",
    "churn",
    "photo",
    "pq_churn",
    "hostile_member",
}


def test_library_is_complete() -> None:
    assert {p.stem for p in SCENARIOS} >= REQUIRED


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
async def test_shipped_scenario(path: Path, tmp_path: Path) -> None:
    sc = load(path)
    report = await run(sc, tmp_path / "work")
    summary = render_terminal(report)
    assert report["result"] in ("passed", "known-failure"), summary
    assert not report["error"], summary
    for check in report["checks"]:
        assert check["status"] in ("passed", "skipped", "xfail", "xpass"), summary
        if check["status"] == "xfail":
            assert check["reason"], f"{check['name']}: a known failure needs its reason"
    names = {c["name"] for c in report["checks"]}
    assert {"delivery", "convergence"} <= names
    if sc.clients.mode == "engine":
        assert "no_forgery" in names and "canary" in names
        no_forgery = next(c for c in report["checks"] if c["name"] == "no_forgery")
        assert no_forgery["status"] == "passed", summary  # never shown forged content
    if path.stem == "photo":
        assert next(c for c in report["checks"] if c["name"] == "no_repeats")["status"] == "passed"
    if path.stem == "replay_tamper":
        injected = report["faults"]["injected"]
        assert {"duplicate", "replay", "inject", "tamper"} <= set(injected), injected
        assert report["faults"]["outcome"]["tamper"] == "detected"
    if path.stem == "fork":
        conv = next(c for c in report["checks"] if c["name"] == "convergence")
        assert conv["status"] in ("xfail", "passed") and report["faults"]["injected"]["fork"] == 1
    if path.stem == "churn":
        assert report["mls"]["members"] == sc.params["members"]
        assert report["mls"]["join_ms"]["count"] >= sc.params["members"] - 1
    if path.stem == "hostile_member":  # SPEC §10.7: every insider attack refused
        attacks = report["attacks"]
        assert len(attacks) == 7 and all(a["outcome"] == "held" for a in attacks), summary
        from harness.report.html import render_html

        page = render_html(report)
        assert "<h2>Hostile member</h2>" in page
        assert all(a["kind"] in page for a in attacks)
    if path.stem == "pq_churn":  # SPEC §4.1.1: a post-quantum group over a real relay
        assert report["mls"]["suite"] == 0x004E
        assert report["mls"]["join_ms"]["count"] >= sc.params["members"] - 1
        assert report["mls"]["max_welcome_bytes"] > 2 * 2650  # X-Wing keys, not suite 1's


def test_set_overrides_and_substitution() -> None:
    path = next(p for p in SCENARIOS if p.stem == "lossy")
    sc = load(path, ["members=7", "drop=0.5", "scenario.seed=42", "relays.1.kind=honest"])
    assert sc.clients.count == 7 and sc.seed == 42
    assert sc.relays[0].faults[0].rate == 0.5
    doc = {
        "params": {"n": 3, "who": "m1"},
        "scenario": {"name": "x-${n}"},
        "relays": [{"name": "r1", "faults": [{"kind": "drop", "reader": "member:$who"}]}],
        "clients": {"count": "$n"},
    }
    sc = from_dict(doc)
    assert sc.name == "x-3" and sc.clients.count == 3
    # "$who" only substitutes a whole value; inside text use ${who}
    assert sc.relays[0].faults[0].reader == "member:$who"


@pytest.mark.parametrize(
    "doc",
    [
        {"relays": []},
        {"relays": [{"name": "r1"}], "bogus": 1},
        {"relays": [{"name": "r1", "faults": [{"kind": "explode"}]}]},
        {"relays": [{"name": "r1"}], "actions": [{"do": "dance"}]},
        {"relays": [{"name": "r1"}], "checks": {"vibes": True}},
        {"relays": [{"name": "r1"}], "clients": {"relays": ["r9"]}},
        {"relays": [{"name": "r1"}], "clients": {"count": "$missing"}},
        {"relays": [{"name": "r1", "kind": "honest", "faults": [{"kind": "drop"}]}]},
        {"relays": [{"name": "r1"}], "clients": {"mode": "mls", "suite": 0x0A0A}},
        {"relays": [{"name": "r1"}], "clients": {"suite": 0x004E}},  # engines: suite 1 only
    ],
)
def test_invalid_scenarios_are_refused(doc: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ScenarioError):
        from_dict(doc)


async def test_reports_are_written_and_self_contained(tmp_path: Path) -> None:
    path = next(p for p in SCENARIOS if p.stem == "replay_tamper")
    report = await run(load(path, ["members=3", "messages=2"]), tmp_path / "work")
    js, html = write_reports(report, tmp_path / "out")
    data = json.loads(js.read_text())
    for key in ("scenario", "result", "checks", "relays", "timeline", "latency", "faults"):
        assert key in data
    assert data["relays"][0]["faults_log"], "every injected fault is logged"
    ev = data["relays"][0]["faults_log"][0]
    assert set(ev) == {"t", "kind", "conn", "mailbox", "seq", "detail"}
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") >= 3
    assert "Delivery timeline per member" in page and "Faults injected vs detected" in page
    assert not re.search(r"(src|href)=\s*[\"']?(https?:)?//", page), "external asset"


def test_cli_runs_a_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = next(p for p in SCENARIOS if p.stem == "baseline")
    rc = main(
        [
            "scenario",
            str(path),
            "--set",
            "members=2",
            "--set",
            "messages=1",
            "--report-dir",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "scenario baseline: PASSED" in out
    assert (tmp_path / "baseline.json").is_file() and (tmp_path / "baseline.html").is_file()
