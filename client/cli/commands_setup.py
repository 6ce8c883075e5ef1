"""``init``, ``relays``, ``export``, ``import``, the app and the demo: the
identity, its relays and its backups."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from client.cli.common import (
    UsageError,
    Work,
    backup_passphrase,
    cli_relay_timeouts,
    print_json,
    read_passphrase,
    remember_key,
    run_offline,
    run_online,
)
from client.store import Store

if TYPE_CHECKING:
    from client.engine import Engine


def cmd_init(args: argparse.Namespace) -> int:
    home = Path(args.home)
    if Store.exists(home):
        raise UsageError(f"{home} already holds an identity")
    passphrase = read_passphrase(args, confirm=True)
    from client.engine import Engine

    engine = Engine.create(home, passphrase, args.name, args.relay or [], proxy=args.proxy)
    engine.relay_timeouts = cli_relay_timeouts(engine.proxy)
    remember_key(home, engine.store)

    async def setup() -> dict[str, str]:
        try:
            await engine.connect()
            # until each relay is connected or has failed its first attempt
            # (a refused connection fails at once): the states are then settled
            await engine.reach(engine.identity.relays)
            return engine.relay_states()
        finally:
            await engine.close()

    states = asyncio.run(setup())
    print(f"identity created in {home}")
    print(f"your key: {engine.identity.signature_pub.hex()}")
    for url in engine.identity.relays:
        if states.get(url) != "connected":
            print(
                f"warning: relay {url} is not reachable now ({states.get(url, 'no answer')}); "
                "your invites name it, so check the URL, or add another with "
                "'samizdat relays add URL'",
                file=sys.stderr,
            )
    return 0


def cmd_relays(args: argparse.Namespace) -> int:
    if args.relays_cmd == "forward":
        return run_offline(args, lambda engine: _relays_forward(args, engine))
    if args.relays_cmd in (None, "list", "proxy"):

        def offline(engine: Engine) -> int:
            if args.relays_cmd == "proxy" and args.setting is not None:
                engine.set_proxy(args.setting)
            proxy = engine.identity.proxy
            relays = [] if args.relays_cmd == "proxy" else engine.identity.relays
            if args.json:
                print_json(
                    {"proxy": proxy}
                    if args.relays_cmd == "proxy"
                    else {"relays": relays, "proxy": proxy, **_forward_json(engine)}
                )
                return 0
            for url in relays:
                print(url)
            if proxy or args.relays_cmd == "proxy":
                print(f"proxy: {proxy or 'none (direct connections)'}")
            if args.relays_cmd != "proxy" and engine.identity.forwarder:
                print(_forward_line(engine))
            return 0

        return run_offline(args, offline)

    def plan(engine: Engine) -> Work:
        # what the engine would refuse is refused here, before any connection
        ours = engine.identity.relays
        if args.relays_cmd == "add" and args.url.rstrip("/") in ours:
            raise UsageError(f"{args.url.rstrip('/')} is already one of your relays")
        if args.relays_cmd in ("remove", "move"):
            old = (args.url if args.relays_cmd == "remove" else args.old).rstrip("/")
            if old not in ours:
                raise UsageError(f"{old} is not one of your relays")
            if args.relays_cmd == "remove" and ours == [old]:
                raise UsageError("you would have no relay left; add one first")

        async def change() -> int:
            if args.relays_cmd == "add":
                await engine.add_relay(args.url)
            elif args.relays_cmd == "remove":
                await engine.remove_relay(args.url)
            elif args.relays_cmd == "move":
                await engine.move_relay(args.old, args.new)
            print("relays: " + ", ".join(engine.identity.relays))
            return 0

        return change

    return run_online(args, plan)


def _forward_json(engine: Engine) -> dict[str, object]:
    return {
        "forwarder": engine.identity.forwarder,
        "forward_fallback": engine.identity.forward_fallback,
    }


def _forward_line(engine: Engine) -> str:
    ident = engine.identity
    if not ident.forwarder:
        return "forward: off (posts go directly to each relay)"
    then = "post directly" if ident.forward_fallback else "wait (no direct post)"
    return f"forward: posts to other relays go through {ident.forwarder}; if it fails: {then}"


def _relays_forward(args: argparse.Namespace, engine: Engine) -> int:
    """``relays forward [URL|off] [--fallback|--no-fallback]`` (SPEC.md §7.14)."""
    if args.setting is not None or args.fallback is not None:
        engine.set_forwarder(
            args.setting if args.setting is not None else engine.identity.forwarder or "off",
            args.fallback,
        )
    if args.json:
        print_json(_forward_json(engine))
    else:
        print(_forward_line(engine))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    def work(engine: Engine) -> int:
        engine.export_backup(Path(args.file), backup_passphrase(args, confirm=True))
        print(f"encrypted backup written to {args.file}")
        return 0

    return run_offline(args, work)


def cmd_import(args: argparse.Namespace) -> int:
    home = Path(args.home)
    if Store.exists(home):
        raise UsageError(f"{home} already holds an identity; import into an empty --home")
    secret = backup_passphrase(args, confirm=False)
    passphrase = read_passphrase(args, confirm=True)
    store = Store.import_backup(Path(args.file), secret, home, passphrase)
    store.close()
    print(f"restored into {home}")
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    """``samizdat lock``: end the key agent of ``--home`` (SPEC.md §9, "Local key agent");
    the next command asks for the passphrase again."""
    from client import agent

    if agent.stop(Path(args.home)):
        print("locked: the key agent has stopped; the next command asks for the passphrase")
    else:
        print("no agent was running: the store is locked")
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    try:
        from client.tui.app import run_app
    except ImportError as exc:
        raise UsageError(f"the terminal app is unavailable: {exc}") from None
    return int(run_app(args))


def cmd_demo(args: argparse.Namespace) -> int:
    from client.demo import main as demo_main

    return demo_main(args)
