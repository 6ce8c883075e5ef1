"""What an operator meets: the start-up and shutdown lines, check-config
listing every mistake at once, and the shipped systemd unit."""

from __future__ import annotations

import configparser
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_relay_process import ROOT, RelayProcess

pytestmark = pytest.mark.timeout(120)
UNIT = ROOT / "docs" / "samizdat-relay.service"


def test_start_up_names_the_prefix_and_shutdown_is_logged(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "data", "--prefix", "k3y-test").start()
    assert relay.proc is not None and relay.proc.stdout is not None
    first = relay.proc.stdout.readline().decode()  # the readiness line
    relay.proc.send_signal(signal.SIGTERM)
    out, err = (b.decode() for b in relay.proc.communicate(timeout=30))
    out = first + out
    # the URL clients use, prefix included, on stdout; the prefix in the log
    assert f"http://127.0.0.1:{relay.port}/k3y-test" in out, out
    assert f"port {relay.port} under prefix /k3y-test" in err, err
    assert "samizdat-relay stopped" in err, err
    assert relay.proc.returncode == 0


def test_check_config_reports_every_error_at_once(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(
        'port = 70000\nnats_replicas = 2\ncolour = "blue"\n'
        f'decoy_dir = "{tmp_path / "no-such-site"}"\n[limits]\nmax_ttl = -1\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "relay.cli", "check-config", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    for problem in ("port", "nats_replicas", "colour", "decoy_dir", "limits.max_ttl"):
        assert problem in out.stderr, (problem, out.stderr)
    assert "no-such-site" in out.stderr
    assert out.stderr.count("\n") >= 5  # one line each


def test_the_systemd_unit_is_hardened_and_runs_the_relay() -> None:
    from relay.cli import _parser

    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    service = parser["Service"]
    assert service["DynamicUser"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"
    for hardening in ("ProtectHome", "PrivateTmp", "PrivateDevices", "RestrictAddressFamilies"):
        assert service.get(hardening), hardening
    assert service["StateDirectory"] == "samizdat-relay"
    assert int(service["LimitNOFILE"]) >= 4096
    command = shlex.split(service["ExecStart"])
    assert Path(command[0]).name == "samizdat-relay"
    args = _parser().parse_args(command[1:])
    assert str(args.data_dir) == "/var/lib/samizdat-relay"  # the StateDirectory
    assert parser["Install"]["WantedBy"] == "multi-user.target"
