"""README's commands, run: every command line in README's code blocks is run
here (or, for the few that are interactive or install things, checked) with
local relay processes in place of the example URLs and temporary homes, so a
README change that breaks a command fails CI.  A command line this file does
not know fails the test too: a new README command needs a line here.

The three lanes (the person's commands, the relay's, the harness's) run side
by side to keep the test well under a minute."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from client.cli import build_parser
from harness.relay_process import RelayProcess, free_port
from tests.client_support import ROOT, env_without_proxy

pytestmark = pytest.mark.timeout(240)
README = ROOT / "README.md"
VECTORS = Path(os.environ.get("MLS_TEST_VECTORS", ROOT.parent / "shared" / "mls-vectors"))
MODULES = {
    "samizdat": "client.cli",
    "samizdat-relay": "relay.cli",
    "samizdat-harness": "harness.cli",
}


def readme_commands(text: str) -> list[str]:
    """Each command of README's code blocks (indented or fenced), comments
    dropped, ``a && b`` split in two."""
    commands: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not (fenced or line.startswith("    ")) or not line.strip():
            continue
        words = shlex.split(line, comments=True)
        command: list[str] = []
        for w in [*words, "&&"]:
            if w == "&&":
                if command:
                    commands.append(shlex.join(command))
                command = []
            else:
                command.append(w)
    return commands


class Lab:
    """Temporary homes, local relays, and the example URLs mapped onto them."""

    def __init__(self, tmp: Path, relays: list[RelayProcess]) -> None:
        self.tmp = tmp
        self.relays = relays
        self.urls: dict[str, str] = {}
        self.env = env_without_proxy() | {
            "HOME": str(tmp / "home"),
            "XDG_DATA_HOME": str(tmp / "xdg"),
            "SAMIZDAT_PASSPHRASE": "readme passphrase",
            "SAMIZDAT_BACKUP_PASSPHRASE": "readme backup",
            "PYTHONPATH": str(ROOT),
        }
        self.link = ""

    def url(self, example: str) -> str:
        """The local relay standing for ``https://relay-one.example`` etc."""
        if example not in self.urls:
            self.urls[example] = self.relays[len(self.urls)].url
        return self.urls[example]

    def subst(self, argv: list[str]) -> list[str]:
        out = []
        for a in argv:
            if re.fullmatch(r"https://relay-[a-z]+\.example", a):
                a = self.url(a)
            elif a == "http://127.0.0.1:8480":  # the implementer's own relay
                a = self.relays[0].url
            elif a.startswith(("samizdat:i/", "samizdat:invite/")):
                a = self.link
            out.append(a)
        return out

    def run(
        self,
        argv: list[str],
        *,
        who: str = "Ada",
        check: bool = True,
        timeout: float = 90,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        program, *rest = argv
        cmd = [sys.executable, "-m", MODULES[program]]
        if program == "samizdat":
            cmd += ["--home", str(self.tmp / who)]
        out = subprocess.run(
            [*cmd, *rest],
            cwd=cwd or self.tmp,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check:
            assert out.returncode == 0, f"{shlex.join(argv)}:\n{out.stdout}\n{out.stderr}"
        return out

    def serve(self, argv: list[str], ready: str, timeout: float = 30) -> str:
        """Start a long-running command, wait for ``ready`` on its stdout,
        stop it with SIGTERM; returns what it printed."""
        program, *rest = argv
        proc = subprocess.Popen(
            [sys.executable, "-m", MODULES[program], *rest],
            cwd=self.tmp,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        seen = ""
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + timeout
            while ready not in seen and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line and proc.poll() is not None:
                    break
                seen += line
            assert ready in seen, f"{shlex.join(argv)} never said {ready!r}:\n{seen}"
        finally:
            proc.send_signal(signal.SIGTERM)
            rest_out, _ = proc.communicate(timeout=30)
            seen += rest_out or ""
        assert proc.returncode == 0, f"{shlex.join(argv)} exited {proc.returncode}:\n{seen}"
        return seen


# -- the person's lane: Ada (the README's "you"), her friends Grace and Linus --------------


def person_lane(lab: Lab, commands: list[list[str]]) -> None:
    made_friends = False
    for argv in commands:
        sub = argv[1] if len(argv) > 1 else ""
        if argv == ["samizdat"]:
            args = build_parser().parse_args([])  # the terminal app: interactive
            assert getattr(args, "func", None) is None
        elif sub == "demo":
            build_parser().parse_args(argv[1:])  # run for real in tests/test_tui_tmux.py
        elif sub == "init":
            lab.run(lab.subst(argv))
            relay = lab.subst(["https://relay-one.example"])[0]
            for friend in ("Grace", "Linus"):
                lab.run(["samizdat", "init", "--name", friend, "--relay", relay], who=friend)
        elif sub == "invite" and len(argv) > 2 and not argv[2].startswith("-"):
            lab.run(argv)  # invite list / revoke ID: listing and managing, no new link
        elif sub == "invite":
            lab.link = lab.run(argv).stdout.split()[0]
            assert lab.link.startswith("samizdat:i/")  # the short link (SPEC §8.5)
        elif sub == "accept":
            lab.run(lab.subst(argv), who="Grace")  # Grace accepts Ada's link
            second = lab.run(["samizdat", "invite"]).stdout.split()[0]
            lab.run(["samizdat", "accept", second], who="Linus")
            lab.run(["samizdat", "sync", "--wait", "2"])  # Ada answers both
            for friend in ("Grace", "Linus"):
                lab.run(["samizdat", "sync", "--wait", "1"], who=friend)
            made_friends = True
        elif sub == "history":
            out = lab.run(argv).stdout
            assert "Ada: hello" in out, out
        elif sub == "export":
            lab.run(argv)
            assert (lab.tmp / argv[-1]).stat().st_size > 0
        elif sub in ("send", "sync", "group", "verify", "relays", "chats", "contacts"):
            assert made_friends or sub not in ("send", "group", "verify"), "README order"
            lab.run(lab.subst(argv))
        else:
            raise AssertionError(f"README command not covered by tests/test_readme.py: {argv}")


# -- the operator's lane ------------------------------------------------------------------


def self_signed(tmp: Path) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def spec_relay_toml(tmp: Path) -> str:
    """SPEC §7.13's relay.toml example, its decoy site made real."""
    spec = (ROOT / "SPEC.md").read_text()
    block = re.search(r"```toml\n# relay\.toml\n(.*?)```", spec, re.S)
    assert block, "SPEC.md §7.13 lost its relay.toml example"
    site = tmp / "site"
    site.mkdir(exist_ok=True)
    (site / "index.html").write_text("<p>hello</p>")
    text = block.group(1).replace('"/srv/www/site"', f'"{site}"')
    tomllib.loads(text)
    return text


def relay_lane(lab: Lab, commands: list[list[str]]) -> None:
    for argv in commands:
        args = lab.subst(argv)
        port = ["--port", str(free_port()), "--data-dir", str(lab.tmp / f"relay-{free_port()}")]
        if args[1:2] == ["check-config"]:
            (lab.tmp / "relay.toml").write_text(spec_relay_toml(lab.tmp))
            lab.run(args)
        elif "--tls-cert" in args:
            self_signed(lab.tmp)
            # listen on loopback only here (the README's 0.0.0.0 is the operator's case)
            args = ["127.0.0.1" if a == "0.0.0.0" else a for a in args]
            out = lab.serve([*args, *port], "listening on https://")
            assert "/s3cret-path" in out
        elif "--backend" in args and "nats" in args:
            from tests.nats_fixtures import NatsServer

            nats = NatsServer(lab.tmp / "nats").start()
            try:
                args = [nats.url if a.startswith("nats://") else a for a in args]
                lab.serve([*args, *port], "listening on http://")
            finally:
                nats.stop()
        elif args == ["samizdat-relay"]:
            lab.serve([*args, "--port", str(free_port())], "listening on http://")
            assert (lab.tmp / "xdg" / "samizdat-relay").is_dir()  # the per-user data dir
        else:
            raise AssertionError(f"README command not covered by tests/test_readme.py: {argv}")


# -- the implementer's lane ------------------------------------------------------------------


def harness_lane(lab: Lab, commands: list[list[str]]) -> None:
    for argv in commands:
        args = lab.subst(argv)
        what = args[1]
        if what == "vectors":
            # the same command on a few of the official files (the full set runs in pytest)
            subset = lab.tmp / "vectors"
            subset.mkdir()
            for name in ("crypto-basics.json", "tree-math.json", "serialization.json"):
                if (VECTORS / name).exists():
                    shutil.copy(VECTORS / name, subset / name)
            if not any(subset.iterdir()):
                from tests.required import missing

                missing(f"MLS vectors not found in {VECTORS}")
            out = lab.run([*args[:2], str(subset)])
            assert " 0 failed" in out.stdout, out.stdout
        elif what == "relay-conformance":
            lab.run(args, timeout=120)
        elif what == "malicious-relay":
            listen = ["--listen", f"127.0.0.1:{free_port()}", "--duration", "2"]
            lab.run([*args, *listen])
        elif what == "scenario":
            reports = ["--report-dir", str(lab.tmp / "reports")]
            out = lab.run([*args, *reports], timeout=150, cwd=ROOT)  # paths from the checkout
            assert "PASSED" in out.stdout or "KNOWN" in out.stdout.upper(), out.stdout
        elif what == "spy":
            # exit 1 while the audit finds violations (tests/test_harness_spy.py says which)
            small = ["--messages", "1", "--file-chunks", "0", "--out", str(lab.tmp / "spy")]
            out = lab.run([*args, *small], check=False, timeout=150)
            assert out.returncode in (0, 1), out.stderr
            assert "posts attributed" in out.stdout, out.stdout
        else:
            raise AssertionError(f"README command not covered by tests/test_readme.py: {argv}")


def checked_only(commands: list[list[str]]) -> None:
    """pip and pytest: installing or running the suite is not this test's job;
    what they name must exist."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for argv in commands:
        if argv[:2] == ["pip", "install"]:
            target = argv[-1]
            extra = re.search(r"\[(\w+)\]", target)
            if extra:
                assert extra.group(1) in project["optional-dependencies"], argv
            assert target.split("[")[0].strip('"') == "."
        elif argv[0] == "pytest":
            assert (ROOT / "tests").is_dir()
        else:
            raise AssertionError(f"README command not covered by tests/test_readme.py: {argv}")


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[list[RelayProcess]]:
    procs = [RelayProcess(tmp_path / f"relay{i}").start() for i in range(3)]
    yield procs
    for p in procs:
        p.stop()


def test_readme_commands_run(tmp_path: Path, relays: list[RelayProcess]) -> None:
    commands = [shlex.split(c) for c in readme_commands(README.read_text())]
    assert len(commands) >= 20, commands
    lanes: dict[str, list[list[str]]] = {"person": [], "relay": [], "harness": [], "other": []}
    for argv in commands:
        lane = {"samizdat": "person", "samizdat-relay": "relay", "samizdat-harness": "harness"}
        lanes[lane.get(argv[0], "other")].append(argv)
    lab = Lab(tmp_path, relays)
    (tmp_path / "home").mkdir()
    checked_only(lanes["other"])
    # the person's lane maps relay-one/two/three first: map them before the lanes start
    for argv in lanes["person"]:
        lab.subst(argv)
    jobs: list[tuple[Callable[[Lab, list[list[str]]], None], list[list[str]]]] = [
        (person_lane, lanes["person"]),
        (relay_lane, lanes["relay"]),
        (harness_lane, lanes["harness"]),
    ]
    started = time.monotonic()

    def timed(fn: Callable[[Lab, list[list[str]]], None], cmds: list[list[str]]) -> float:
        t0 = time.monotonic()
        fn(lab, cmds)
        return time.monotonic() - t0

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(timed, fn, cmds) for fn, cmds in jobs]
        took = [f.result() for f in futures]
    print(
        f"\nREADME: {len(commands)} commands in {time.monotonic() - started:.0f} s "
        f"(lanes: {', '.join(f'{t:.0f} s' for t in took)})"
    )


def test_readme_parsing() -> None:
    text = "intro\n\n    samizdat a 'b c'   # note\n    x && y z\n\n```\nq\n```\n"
    assert readme_commands(text) == ["samizdat a 'b c'", "x", "y z", "q"]
