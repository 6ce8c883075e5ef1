"""The command line as a person meets it: ids to save by, pipes, URLs,
flags named right, help for every option (real processes where it matters)."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from client.cli import build_parser
from tests.client_support import ROOT, RelayProcess, env_without_proxy, free_port, make_engine

pytestmark = pytest.mark.timeout(240)


def cli(
    home: Path, *args: str, env_extra: dict[str, str] | None = None, **kw: object
) -> subprocess.CompletedProcess[str]:
    env = env_without_proxy()
    env["SAMIZDAT_PASSPHRASE"] = "test passphrase"
    env["PYTHONPATH"] = str(ROOT)
    env.update(env_extra or {})
    return subprocess.run(  # type: ignore[call-overload,no-any-return]
        [sys.executable, "-m", "client.cli", "--home", str(home), *args],
        cwd=kw.pop("cwd", ROOT),
        env=env,
        text=True,
        timeout=120,
        **({} if "stdout" in kw else {"capture_output": True}),
        **kw,
    )


def test_init_refuses_a_relay_that_is_not_a_url(tmp_path: Path) -> None:
    for bad in ("notaurl", "ftp://relay.example", "https://", "relay.example:8480"):
        out = cli(tmp_path / "home", "init", "--name", "A", "--relay", bad)
        assert out.returncode == 2, (bad, out.stdout, out.stderr)
        assert "not a relay URL" in out.stderr and bad in out.stderr
        assert not (tmp_path / "home").exists()  # nothing created


def test_init_reports_an_unreachable_relay_but_succeeds(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    out = cli(tmp_path / "home", "init", "--name", "A", "--relay", down)
    assert out.returncode == 0, out.stderr
    assert "identity created" in out.stdout
    assert f"warning: relay {down} is not reachable now" in out.stderr


def test_export_without_a_backup_passphrase_names_the_right_flag(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_engine(home, "A", ["http://127.0.0.1:9"]).store.close()
    out = cli(home, "export", str(tmp_path / "b.backup"), stdin=subprocess.DEVNULL)
    assert out.returncode == 1
    assert "--backup-passphrase-file" in out.stderr
    assert "SAMIZDAT_BACKUP_PASSPHRASE" in out.stderr
    assert "--passphrase-file" not in out.stderr.replace("--backup-passphrase-file", "")


def test_a_closed_pipe_ends_quietly_like_unix_tools(tmp_path: Path) -> None:
    """``samizdat relays | head -0``: no "error: Broken pipe", the status a
    shell reports for a tool stopped by SIGPIPE (128 + 13).  (An offline
    command that always prints: making an invite now needs a relay.)"""
    home = tmp_path / "home"
    make_engine(home, "A", ["http://127.0.0.1:9"]).store.close()
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        out = cli(home, "relays", stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert out.stderr == "", out.stderr
    assert out.returncode == 141


def test_history_shows_ids_and_save_takes_last_or_a_name(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "relay").start()
    try:
        alice = make_engine(tmp_path / "alice", "Alice", [relay.url])
        bob = make_engine(tmp_path / "bob", "Bob", [relay.url])

        async def exchange() -> None:
            from tests.client_support import befriend, eventually

            await alice.connect()
            await bob.connect()
            conv = await befriend(alice, bob)
            for name, data in (("one.txt", b"first"), ("two.txt", b"second")):
                path = tmp_path / name
                path.write_bytes(data)
                await bob.send_file(conv, path)
            alice_conv = alice.find_conversation("Bob").group_id
            await eventually(lambda: len(alice.history(alice_conv)) >= 2)
            await alice.close()
            await bob.close()

        asyncio.run(exchange())
        home = tmp_path / "alice"
        history = cli(home, "history", "Bob")
        assert history.returncode == 0, history.stderr
        lines = [ln for ln in history.stdout.splitlines() if "one.txt" in ln]
        ids = re.findall(r"\b[0-9a-f]{8}\b", lines[0])
        assert ids, history.stdout
        work = tmp_path / "work"
        work.mkdir()
        by_id = cli(home, "save", "Bob", ids[0], cwd=work)
        assert by_id.returncode == 0, by_id.stderr
        assert (work / "one.txt").read_bytes() == b"first"
        last = cli(home, "save", "Bob", "last", "-o", str(work / "latest"), cwd=work)
        assert last.returncode == 0, last.stderr
        assert (work / "latest").read_bytes() == b"second"
        named = cli(home, "save", "Bob", "two.txt", "-o", str(work / "named"), cwd=work)
        assert named.returncode == 0, named.stderr
        assert (work / "named").read_bytes() == b"second"
        nothing = cli(home, "save", "Bob", "three.txt", cwd=work)
        assert nothing.returncode == 1 and "no file" in nothing.stderr
    finally:
        relay.stop()


def _walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            helped = {a.dest for a in action._choices_actions if a.help}
            for name, sub in action.choices.items():
                if name not in helped:
                    missing.append(f"{path} {name}")
                missing += _walk(sub, f"{path} {name}")
            continue
        if not action.help:
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_option_and_subcommand_has_help() -> None:
    from relay.cli import _parser as relay_parser

    assert _walk(build_parser(), "samizdat") == []
    assert _walk(relay_parser(), "samizdat-relay") == []


def test_relay_help_has_no_rest_markup() -> None:
    from relay.cli import _parser as relay_parser

    text = relay_parser().format_help()
    assert "``" not in text and ":class:" not in text
