"""What every ``samizdat`` command shares: passphrases, relay URLs, output
helpers, and opening the store offline or online."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from client.engine import Engine, EngineError
from client.store import Store

EXIT_ERROR = 1
EXIT_QUEUED = 3


def default_home() -> Path:
    env = os.environ.get("SAMIZDAT_HOME")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("samizdat", appauthor=False))


def read_passphrase(
    args: argparse.Namespace,
    *,
    confirm: bool = False,
    what: str = "",
    env_name: str = "SAMIZDAT_PASSPHRASE",
    flag: str = "--passphrase-file",
) -> bytes:
    """From the file given with ``flag``, the ``env_name`` variable, or a
    prompt; the error names the flag and variable of *this* passphrase."""
    if getattr(args, "passphrase_file", None):
        return Path(args.passphrase_file).read_bytes().rstrip(b"\r\n")
    env = os.environ.get(env_name)
    if env is not None:
        return env.encode()
    if not sys.stdin.isatty():
        label = (what or "passphrase").lower()
        raise EngineError(f"no {label}: use a terminal, {env_name} or {flag}")
    prompt = f"{what or 'Passphrase'} for {args.home}: "
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat it: ") != first:
        raise EngineError("the passphrases do not match")
    if not first:
        raise EngineError("an empty passphrase is not allowed")
    return first.encode()


def backup_passphrase(args: argparse.Namespace, *, confirm: bool) -> bytes:
    """The backup's own passphrase: never the store's (SAMIZDAT_PASSPHRASE)."""
    return read_passphrase(
        argparse.Namespace(home=args.file, passphrase_file=args.backup_passphrase_file),
        confirm=confirm,
        what="Backup passphrase",
        env_name="SAMIZDAT_BACKUP_PASSPHRASE",
        flag="--backup-passphrase-file",
    )


RELAY_SCHEMES = ("http", "https", "ws", "wss")


def relay_url(text: str) -> str:
    """argparse type of ``--relay``: an http(s) or ws(s) URL with a host."""
    parts = urllib.parse.urlsplit(text.strip())
    if parts.scheme not in RELAY_SCHEMES or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a relay URL (expected https://HOST[:PORT][/PREFIX])"
        )
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a relay URL (bad port)") from None
    return text.strip()


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def print_qr(text: str) -> None:
    """A QR code in the terminal, when stdout is one."""
    if not sys.stdout.isatty():
        return
    try:
        import qrcode
    except ImportError:
        return
    qr = qrcode.QRCode(border=1)
    qr.add_data(text)
    qr.print_ascii(invert=True)


def ts(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ms / 1000))


def _open(args: argparse.Namespace) -> Engine:
    home = Path(args.home)
    if not Store.exists(home):
        raise EngineError(f"no identity in {home}: run 'samizdat init --name NAME --relay URL'")
    return Engine.open(home, read_passphrase(args), proxy=args.proxy)


def run_online(
    args: argparse.Namespace, work: Callable[[Engine], Awaitable[int]], *, settle: float = 1.0
) -> int:
    """Open, connect, run ``work``, give replies ``settle`` seconds, close."""
    engine = _open(args)

    async def main() -> int:
        try:
            await engine.connect()
            code = await work(engine)
            await asyncio.sleep(settle)
            await engine.flush_outbox()
            return code
        finally:
            await engine.close()

    return asyncio.run(main())


def run_offline(args: argparse.Namespace, work: Callable[[Engine], int]) -> int:
    engine = _open(args)
    try:
        return work(engine)
    finally:
        asyncio.run(engine.close())


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` (or bare seconds) in milliseconds."""
    t = text.strip().lower()
    unit = _UNITS.get(t[-1:], 0)
    number = t[:-1] if unit else t
    if not number.isdigit() or int(number) == 0:
        raise EngineError(f"bad duration {text!r}: use e.g. 90s, 30m, 12h, 7d or 2w")
    return int(number) * (unit or 1) * 1000
