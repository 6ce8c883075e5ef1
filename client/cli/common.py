"""What every ``samizdat`` command shares: passphrases, relay URLs, output
helpers, and opening the store offline or online."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client import agent
from client.store import Store
from client.urls import check_relay_url
from protocol.errors import LocalError

if TYPE_CHECKING:  # imported when a store is opened (see _open): it is most of the start-up
    from client.engine import Engine

EXIT_ERROR = 1
EXIT_QUEUED = 3


class UsageError(LocalError):
    """A request the CLI refuses before doing anything with it (bad input,
    no identity...): one line on stderr, exit status 1."""

    code = 50


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
        raise UsageError(f"no {label}: use a terminal, {env_name} or {flag}")
    prompt = f"{what or 'Passphrase'} for {args.home}: "
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat it: ") != first:
        raise UsageError("the passphrases do not match")
    if not first:
        raise UsageError("an empty passphrase is not allowed")
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


def relay_url(text: str) -> str:
    """argparse type of ``--relay``: client/urls.py's check (the app uses it too)."""
    try:
        return check_relay_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def _import_engine() -> None:
    import client.engine  # noqa: F401


def _open(args: argparse.Namespace) -> Engine:
    """The engine of ``--home``.  The store's master key comes from the
    local key agent if one holds it (client/agent.py, SPEC.md §9, "Local key agent");
    otherwise from the passphrase, and an agent is started with it.  The
    key derivation (Argon2id at its full cost, in C without the GIL) runs
    while another thread imports the engine's modules, so a command pays
    about the larger of the two rather than their sum where a second core
    is free."""
    home = Path(args.home)
    if not Store.exists(home):
        raise UsageError(f"no identity in {home}: run 'samizdat init --name NAME --relay URL'")
    use_agent = agent.idle_setting() is not None
    if not use_agent:
        passphrase = read_passphrase(args)  # before the loader: a prompt fails fast
    loader = threading.Thread(target=_import_engine, name="import engine", daemon=True)
    loader.start()
    try:
        if use_agent:
            store = Store.open(
                home,
                lambda: read_passphrase(args),
                cached_key=lambda store_id: agent.fetch_key(home, store_id),
            )
        else:
            store = Store.open(home, passphrase)
    finally:
        loader.join()
    if use_agent:
        remember_key(home, store)
    from client.engine import Engine

    engine = Engine.from_store(store, home, proxy=args.proxy)
    engine.relay_timeouts = cli_relay_timeouts(engine.proxy)
    return engine


def remember_key(home: Path, store: Store) -> None:
    """After an unlock with the passphrase, hand the master key to a new
    agent (replacing any agent with a stale or wrong key), unless
    ``SAMIZDAT_AGENT=off``.  Failing to start one is not an error: the next
    command asks for the passphrase again."""
    if store.unlocked_by_passphrase and agent.idle_setting() is not None:
        agent.start(home, *store.cacheable_key())


#: A direct connection to a relay that answers takes well under a second;
#: one that is silent (a censor dropping packets) is given up after this long
#: and what was to be posted stays queued.  Through a proxy (Tor circuits)
#: the engine's longer defaults apply.
CLI_CONNECT_TIMEOUT = 3.0
CLI_REQUEST_TIMEOUT = 10.0


def cli_relay_timeouts(proxy: str | None) -> tuple[float, float] | None:
    return None if proxy else (CLI_CONNECT_TIMEOUT, CLI_REQUEST_TIMEOUT)


Work = Callable[[], Awaitable[int]]


def run_online(
    args: argparse.Namespace,
    plan: Callable[[Engine], Work],
    *,
    settle: float = 1.0,
    only_relays: Callable[[Engine], list[str]] | None = None,
) -> int:
    """Open the store, check the request offline, connect, run it, give
    replies ``settle`` seconds, post what is still queued, close.

    ``plan`` runs before any connection: it resolves names and checks the
    input (bad input fails there, and no relay ever sees the attempt), and
    returns the work to do once connected.  ``only_relays`` names the relays
    of a command that only posts or downloads (``send``, ``save``): only
    those are connected, and no mailbox is subscribed, instead of connecting to every relay and
    subscribing to every mailbox.  A relay that refuses the connection fails
    at once: what was to be posted stays queued in the store's outbox and
    goes out with the next command that connects (or the app)."""
    engine = _open(args)
    try:
        work = plan(engine)
    except BaseException:
        asyncio.run(engine.close())
        raise

    async def main() -> int:
        try:
            if only_relays is None:
                await engine.connect()
            else:
                await engine.reach(only_relays(engine))
            code = await work()
            if settle:
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
        raise UsageError(f"bad duration {text!r}: use e.g. 90s, 30m, 12h, 7d or 2w")
    return int(number) * (unit or 1) * 1000
