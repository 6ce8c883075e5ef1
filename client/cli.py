"""``samizdat``: the command-line interface, for people and scripts.

Every listing command takes ``--json`` and prints one JSON document whose
shape SPEC.md §8.6 documents.  Errors are one line on stderr and a non-zero
exit status; a message that could not reach any relay stays queued in the
encrypted store and goes out with the next command that connects.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from client.engine import Engine, EngineError
from client.files import DestinationExists, OutsideRelay, safe_file_name
from client.store import Store
from client.urls import check_relay_url
from protocol.app.messages import File
from protocol.errors import SamizdatError

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


# -- commands ------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    home = Path(args.home)
    if Store.exists(home):
        raise EngineError(f"{home} already holds an identity")
    passphrase = read_passphrase(args, confirm=True)
    engine = Engine.create(home, passphrase, args.name, args.relay or [], proxy=args.proxy)

    async def setup() -> dict[str, str]:
        try:
            await engine.connect()
            await asyncio.sleep(0.5)
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


def invite_json(engine: Engine, record: Any) -> dict[str, Any]:
    return {
        "id": record.invite_id.hex(),
        "state": record.current_state(int(time.time() * 1000)),
        "uses": record.uses,
        "max_uses": record.max_uses,
        "created_at": record.created_ms,
        "expires_at": record.expires_at_ms,
        "relays": [m.relay_url for m in record.mailboxes],
        "deleted_on_relays": record.deleted,
        "accepted_by": [engine.display_name(k) for k in record.accepted],
    }


def cmd_invite(args: argparse.Namespace) -> int:
    if args.action == "list":
        return run_offline(args, lambda engine: _invite_list(engine, args))
    if args.action == "revoke":
        if not args.id:
            raise EngineError("which invite? 'samizdat invite revoke ID' (see 'invite list')")

        async def revoke(engine: Engine) -> int:
            record = await engine.revoke_invite(args.id)
            if record is None:
                out = {"id": "legacy", "state": "revoked", "deleted_on_relays": True}
            else:
                out = invite_json(engine, record)
            if args.json:
                print_json(out)
            else:
                where = (
                    "deleted on the relays"
                    if out["deleted_on_relays"]
                    else ("its relays get the deletion on the next connection")
                )
                print(f"invite {out['id']} is {out['state']}; {where}")
            return 0

        return run_online(args, revoke)
    if args.id:
        raise EngineError(f"unknown invite action {args.id!r}: use list or revoke ID")
    uses = 1 if args.uses is None else args.uses
    lifetime = parse_duration(args.expires)

    async def work(engine: Engine) -> int:
        record, link = await engine.create_invite(uses=uses, lifetime_ms=lifetime)
        if args.json:
            print_json({"link": link, **invite_json(engine, record)})
        else:
            print(link)
            print_qr(link)
            n = "once" if uses == 1 else f"{uses} times"
            print(
                f"invite {record.invite_id.hex()}: works {n}, until {ts(record.expires_at_ms)}; "
                f"'samizdat invite revoke {record.invite_id.hex()}' cancels it",
                file=sys.stderr,
            )
        return 0

    return run_online(args, work)


def _invite_list(engine: Engine, args: argparse.Namespace) -> int:
    records = [invite_json(engine, r) for r in engine.invites()]
    legacy = engine.legacy_inbox_relays()
    if args.json:
        print_json({"invites": records, "legacy_inbox_relays": legacy})
        return 0
    if not records:
        print("no invites yet: 'samizdat invite' makes one")
    for r in records:
        by = f" by {', '.join(r['accepted_by'])}" if r["accepted_by"] else ""
        print(
            f"{r['id']}  {r['state']:8} used {r['uses']}/{r['max_uses']}{by}  "
            f"expires {ts(r['expires_at'])}"
        )
    if legacy:
        print(
            "legacy   the identity inbox links of older versions carry is still open; "
            "'samizdat invite revoke legacy' closes it"
        )
    return 0


def cmd_accept(args: argparse.Namespace) -> int:
    async def work(engine: Engine) -> int:
        conv = await engine.accept(args.link)
        print(f"contact request sent; conversation {conv.group_id.hex()[:8]}")
        return 0

    return run_online(args, work)


def contact_json(engine: Engine, c: Any) -> dict[str, Any]:
    return {
        "key": c.identity_key.hex(),
        "name": c.name,
        "verified": c.verified,
        "key_changed": c.key_changed,
        "conversation": c.conversation.hex(),
        "relays": [i.relay_url for i in c.inboxes],
        "key_packages": len(c.key_packages),
    }


def cmd_contacts(args: argparse.Namespace) -> int:
    def work(engine: Engine) -> int:
        contacts = [contact_json(engine, c) for c in engine.contacts()]
        if args.json:
            print_json({"contacts": contacts})
            return 0
        if not contacts:
            print("no contacts yet: share 'samizdat invite' or run 'samizdat accept LINK'")
        for n, c in enumerate(contacts, 1):
            flag = " (verified)" if c["verified"] else ""
            if c["key_changed"]:
                flag = " (KEY CHANGED: verify again)"
            print(f"{n:3} {c['name'] or '(no name yet)'}{flag}  {c['key'][:16]}")
        return 0

    return run_offline(args, work)


def cmd_verify(args: argparse.Namespace) -> int:
    def work(engine: Engine) -> int:
        contact = engine.find_contact(args.contact)
        number = engine.safety_number(contact)
        if args.json:
            print_json(
                {
                    "contact": contact.name,
                    "safety_number": number,
                    "verified": contact.verified or args.confirm,
                }
            )
        else:
            if contact.key_changed:
                print("WARNING: this contact's key changed since you last saw it.")
            print(f"Safety number with {contact.name or contact.identity_key.hex()[:8]}:")
            groups = number.split()
            for i in range(0, len(groups), 4):
                print("  " + "  ".join(groups[i : i + 4]))
            print_qr(number)
            print("Compare it with your contact (in person or on a call).")
        if args.confirm:
            engine.verify(contact)
            if not args.json:
                print("marked as verified")
        elif not args.json:
            print("If it matches, run this again with --confirm.")
        return 0

    return run_offline(args, work)


def conv_json(engine: Engine, conv: Any) -> dict[str, Any]:
    missing = engine.missing(conv)
    return {
        "id": conv.group_id.hex(),
        "name": conv.name or _direct_name(engine, conv),
        "kind": conv.kind,
        "unread": conv.unread,
        "members": [engine.display_name(k) for k in engine.members(conv.group_id)],
        "left": conv.left,
        "removed_by": engine.display_name(conv.removed_by) if conv.removed_by else "",
        "admins": [engine.display_name(k) for k in engine.admins(conv.group_id)],
        "disappearing_seconds": conv.disappearing_ms // 1000,
        "missing": {engine.display_name(k): n for k, n in missing.items()},
        "warnings": conv.events[-5:],
    }


def _direct_name(engine: Engine, conv: Any) -> str:
    others = [k for k in engine.members(conv.group_id) if k != engine.identity.signature_pub]
    return engine.display_name(others[0]) if others else "(pending)"


def cmd_chats(args: argparse.Namespace) -> int:
    def work(engine: Engine) -> int:
        chats = [conv_json(engine, c) for c in engine.conversations()]
        if args.json:
            print_json({"chats": chats})
            return 0
        if not chats:
            print("no conversations yet")
        for n, c in enumerate(chats, 1):
            extra = f" [{c['unread']} new]" if c["unread"] else ""
            missing = sum(c["missing"].values())
            if missing:
                extra += f" [{missing} missing]"
            left = " (left)" if c["left"] else ""
            print(f"{n:3} {c['name']}{left} ({c['kind']}, {len(c['members'])} members){extra}")
        return 0

    return run_offline(args, work)


def cmd_send(args: argparse.Namespace) -> int:
    async def work(engine: Engine) -> int:
        conv = engine.find_conversation(args.chat)
        if args.file:

            def progress(done: int, total: int) -> None:
                if sys.stderr.isatty():
                    print(f"\ruploading {done}/{total} chunks", end="", file=sys.stderr)

            mid = await engine.send_file(conv.group_id, Path(args.file), progress)
            if sys.stderr.isatty():
                print(file=sys.stderr)
        elif args.article:
            path = Path(args.article)
            text = path.read_text(encoding="utf-8")
            title = args.title or _article_title(text, path)
            mid = await engine.send_article(conv.group_id, title, text)
        else:
            if not args.text:
                raise EngineError("nothing to send: give TEXT, --file or --article")
            mid = await engine.send_text(conv.group_id, " ".join(args.text))
        status = engine.status(mid)
        stored = len(status.relays_stored) if status else 0
        if args.json:
            print_json({"message_id": mid.hex(), "relays_stored": stored})
        elif stored:
            print(f"sent (stored on {stored} relay{'s' if stored > 1 else ''})")
        if not stored:
            print(
                "queued: no relay reachable now; it will be sent by the next 'samizdat sync'",
                file=sys.stderr,
            )
            return EXIT_QUEUED
        return 0

    return run_online(args, work, settle=0.3)


def _article_title(text: str, path: Path) -> str:
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return path.stem


def cmd_sync(args: argparse.Namespace) -> int:
    engine = _open(args)

    async def main() -> tuple[int, dict[str, str]]:
        try:
            queued = await engine.sync(wait=args.wait)
            return queued, engine.relay_states()
        finally:
            await engine.close()

    queued, states = asyncio.run(main())
    if args.json:
        print_json({"queued": queued, "relays": states})
    else:
        for url, state in states.items():
            print(f"{state:10} {url}")
        if queued:
            print(f"{queued} envelope(s) still queued")
    return EXIT_QUEUED if queued else 0


def cmd_history(args: argparse.Namespace) -> int:
    def work(engine: Engine) -> int:
        conv = engine.find_conversation(args.chat)
        entries = engine.history(conv.group_id, limit=args.limit)
        engine.mark_read(conv.group_id)
        rows: list[dict[str, Any]] = []
        for e in entries:
            status = engine.status(e.message_id) if e.outgoing else None
            rows.append(
                {
                    "id": e.message_id.hex(),
                    "from": engine.display_name(e.sender),
                    "outgoing": e.outgoing,
                    "kind": e.kind,
                    "sent_at": e.sent_at_ms,
                    "text": e.text,
                    "title": e.title,
                    "file": {k: v for k, v in e.file.items() if k != "descriptor"},
                    "relays_stored": len(status.relays_stored) if status else None,
                    "delivered_to": len(status.delivered_to) if status else None,
                    "recipients": status.recipients if status else None,
                }
            )
        if args.json:
            print_json({"chat": conv.group_id.hex(), "messages": rows})
            return 0
        for r in rows:
            state = ""
            if r["outgoing"]:
                state = (
                    f"  [{'on relay' if r['relays_stored'] else 'queued'}, delivered "
                    f"{r['delivered_to']}/{r['recipients']}]"
                )
            if r["kind"] == "article":
                body = f"[article] {r['title']}"
            elif r["kind"] == "file":
                body = f"[file] {r['file'].get('name')} ({r['file'].get('size')} bytes)"
            else:
                body = r["text"]
            print(f"{ts(r['sent_at'])} [{r['id'][:8]}] {r['from']}: {body}{state}")
        for key, n in engine.missing(conv).items():
            print(f"! {n} message(s) from {engine.display_name(key)} are missing")
        return 0

    return run_offline(args, work)


def save_path(output: str | None, received_name: str) -> Path:
    """Where ``save`` writes: ``-o`` as given if it names a file, else the
    received name made safe (:func:`safe_file_name`) inside ``-o`` or the
    current directory.  A received name never chooses the directory."""
    name = safe_file_name(received_name)
    if output is None:
        return Path.cwd() / name
    out = Path(output).expanduser()
    return out / name if out.is_dir() else out


def pick_file(entries: list[Any], which: str) -> Any:
    """The file message ``save`` means: ``last`` (the newest file), an id
    (prefix, as ``history`` prints it) or a received file name (the newest
    file of that name)."""
    files = [e for e in entries if e.kind == "file"]
    if not files:
        raise EngineError("no file in this conversation")
    if which == "last":
        return files[-1]
    query = which.lower()
    by_id = [e for e in files if len(query) >= 4 and e.message_id.hex().startswith(query)]
    if len(by_id) > 1:
        raise EngineError(f"{which!r} matches {len(by_id)} files: give more of the id")
    if by_id:
        return by_id[0]
    by_name = [e for e in files if e.file.get("name") == which]
    if by_name:
        return by_name[-1]
    raise EngineError(f"no file {which!r} here: see the ids in 'samizdat history'")


def cmd_save(args: argparse.Namespace) -> int:
    async def work(engine: Engine) -> int:
        conv = engine.find_conversation(args.chat)
        entry = pick_file(engine.history(conv.group_id), args.message)
        body = File.from_bytes(bytes.fromhex(entry.file["descriptor"]))
        dest = save_path(args.output, body.name)
        try:
            await engine.fetch_file(
                conv.group_id,
                body,
                dest,
                allow_relays=args.allow_relay or (),
                overwrite=args.force,
            )
        except DestinationExists as exc:
            raise EngineError(f"{exc.path} already exists; use --force to replace it") from None
        except OutsideRelay as exc:
            flags = " ".join(f"--allow-relay {url}" for url in exc.urls)
            raise EngineError(f"{exc}; to download anyway, add {flags}") from None
        print(f"saved {dest}")
        return 0

    return run_online(args, work, settle=0)


def cmd_group(args: argparse.Namespace) -> int:
    if args.group_cmd == "create":

        async def create(engine: Engine) -> int:
            conv = await engine.create_group(args.name)
            print(f"group {args.name!r} created ({conv.group_id.hex()[:8]})")
            return 0

        return run_online(args, create)
    if args.group_cmd == "info":

        def info(engine: Engine) -> int:
            conv = engine.find_conversation(args.group)
            data = conv_json(engine, conv)
            data["relays"] = list(engine._meta(conv.group_id).relay_urls)
            data["epoch"] = engine.groups[conv.group_id].epoch
            if args.json:
                print_json(data)
            else:
                print(f"{data['name']} ({data['kind']}), epoch {data['epoch']}")
                print("members: " + ", ".join(data["members"]))
                print("admins:  " + ", ".join(data["admins"]))
                print("relays:  " + ", ".join(data["relays"]))
                for w in data["warnings"]:
                    print(f"  note: {w}")
            return 0

        return run_offline(args, info)

    async def change(engine: Engine) -> int:
        conv = engine.find_conversation(args.group)
        if args.group_cmd == "add":
            contacts = [engine.find_contact(c) for c in args.contact]
            await engine.add_members(conv.group_id, contacts)
            print(f"added {', '.join(c.name for c in contacts)} to {args.group}")
        elif args.group_cmd == "remove":
            contact = engine.find_contact(args.contact)
            await engine.remove_member(conv.group_id, contact.identity_key)
            print(f"removed {contact.name} from {args.group}")
        elif args.group_cmd == "leave":
            await engine.leave(conv.group_id)
            print(f"you left {args.group}")
        elif args.group_cmd == "admin":
            contact = engine.find_contact(args.contact)
            await engine.set_admin(conv.group_id, contact.identity_key, not args.revoke)
            state = "is no longer" if args.revoke else "is now"
            print(f"{contact.name or 'they'} {state} an admin of {args.group}")
        elif args.group_cmd == "disappear":
            await engine.set_disappearing(conv.group_id, int(args.seconds) * 1000)
            after = f"after {args.seconds} s" if int(args.seconds) else "off"
            print(f"disappearing messages in {args.group}: {after}")
        return 0

    return run_online(args, change)


def cmd_relays(args: argparse.Namespace) -> int:
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
                    else {"relays": relays, "proxy": proxy}
                )
                return 0
            for url in relays:
                print(url)
            if proxy or args.relays_cmd == "proxy":
                print(f"proxy: {proxy or 'none (direct connections)'}")
            return 0

        return run_offline(args, offline)

    async def change(engine: Engine) -> int:
        if args.relays_cmd == "add":
            await engine.add_relay(args.url)
        elif args.relays_cmd == "remove":
            await engine.remove_relay(args.url)
        elif args.relays_cmd == "move":
            await engine.move_relay(args.old, args.new)
        print("relays: " + ", ".join(engine.identity.relays))
        return 0

    return run_online(args, change)


def cmd_export(args: argparse.Namespace) -> int:
    def work(engine: Engine) -> int:
        engine.export_backup(Path(args.file), backup_passphrase(args, confirm=True))
        print(f"encrypted backup written to {args.file}")
        return 0

    return run_offline(args, work)


def cmd_import(args: argparse.Namespace) -> int:
    home = Path(args.home)
    if Store.exists(home):
        raise EngineError(f"{home} already holds an identity; import into an empty --home")
    secret = backup_passphrase(args, confirm=False)
    passphrase = read_passphrase(args, confirm=True)
    store = Store.import_backup(Path(args.file), secret, home, passphrase)
    store.close()
    print(f"restored into {home}")
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    try:
        from client.tui.app import run_app
    except ImportError as exc:
        raise EngineError(f"the terminal app is unavailable: {exc}") from None
    return int(run_app(args))


def cmd_demo(args: argparse.Namespace) -> int:
    from client.demo import main as demo_main

    return demo_main(args)


# -- parser ------------------------------------------------------------------------------

JSON_HELP = "print one JSON document (shapes: SPEC.md §8.6)"
CHAT_HELP = "a conversation: a group's name or a contact's name"
GROUP_HELP = "the group's name"
CONTACT_HELP = "a contact's name (or the start of their key)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samizdat",
        description="Samizdat: end-to-end encrypted group chat over relays that cannot read it.",
    )
    parser.add_argument("--home", default=str(default_home()), help="data directory")
    parser.add_argument("--passphrase-file", help="read the store passphrase from this file")
    proxy_help = (
        "SOCKS5 proxy for all relay traffic (socks5://127.0.0.1:9050); saved, 'none' clears"
    )
    parser.add_argument("--proxy", help=proxy_help)
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("init", help="create your identity")
    p.add_argument(
        "--name", required=True, help="display name (sent only inside encrypted messages)"
    )
    p.add_argument(
        "--relay",
        action="append",
        metavar="URL",
        type=relay_url,
        help="a relay URL, e.g. https://relay.example (repeat for several)",
    )
    p.add_argument("--proxy", default=argparse.SUPPRESS, help=proxy_help)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser(
        "invite",
        help="make an invite link (and QR code); 'invite list', 'invite revoke ID'",
        description="Make an invite link with its own capability (one person by default), "
        "list invites and their state, or revoke one (its mailboxes are deleted).",
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=["new", "list", "revoke"],
        default="new",
        help="new (the default): make a link; list: every invite and its state; revoke ID",
    )
    p.add_argument("id", nargs="?", help="the invite to revoke ('legacy': the old inbox)")
    uses = p.add_mutually_exclusive_group()
    uses.add_argument(
        "--once", dest="uses", action="store_const", const=1, help="one person (the default)"
    )
    uses.add_argument("--uses", type=int, metavar="N", help="up to N people")
    p.add_argument("--expires", default="30d", metavar="DURATION", help="e.g. 1h, 7d (default 30d)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_invite)

    p = sub.add_parser("accept", help="accept an invite link: start a 1:1 conversation")
    p.add_argument("link", help="the samizdat:invite/... link you were given")
    p.set_defaults(func=cmd_accept)

    p = sub.add_parser("contacts", help="list contacts")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_contacts)

    p = sub.add_parser("verify", help="show a contact's safety number")
    p.add_argument("contact", help=CONTACT_HELP)
    p.add_argument("--confirm", action="store_true", help="mark the contact verified")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("chats", help="list conversations")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_chats)

    p = sub.add_parser("send", help="send a message, a file or an article")
    p.add_argument("chat", help=CHAT_HELP)
    p.add_argument("text", nargs="*", help="the message (words are joined by spaces)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--file", metavar="PATH", help="send this file or photo")
    group.add_argument("--article", metavar="FILE.md", help="send this Markdown file as an article")
    p.add_argument("--title", help="article title (default: its first heading)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("sync", help="connect, exchange pending messages, exit")
    p.add_argument(
        "--wait",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="how long to listen for incoming messages (default: 3)",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("history", help="show a conversation (with message ids)")
    p.add_argument("chat", help=CHAT_HELP)
    p.add_argument("--limit", type=int, metavar="N", help="only the newest N messages")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("save", help="download a received file")
    p.add_argument("chat", help=CHAT_HELP)
    p.add_argument(
        "message",
        help="which file: its id (as 'history' prints it), 'last', or the received file name",
    )
    p.add_argument("-o", "--output", help="directory to save into (default: here), or a file name")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.add_argument(
        "--allow-relay",
        action="append",
        metavar="URL",
        help="also download from this relay, which is not one of the conversation's",
    )
    p.set_defaults(func=cmd_save)

    p = sub.add_parser("group", help="create and manage groups")
    gsub = p.add_subparsers(dest="group_cmd", required=True)
    g = gsub.add_parser("create", help="create a group (you are its first member)")
    g.add_argument("name", help="the group's name (only members see it)")
    g = gsub.add_parser("add", help="add contacts to a group")
    g.add_argument("group", help=GROUP_HELP)
    g.add_argument("contact", nargs="+", help=CONTACT_HELP)
    g = gsub.add_parser("remove", help="remove a member from a group")
    g.add_argument("group", help=GROUP_HELP)
    g.add_argument("contact", help=CONTACT_HELP)
    g = gsub.add_parser("leave", help="leave a group")
    g.add_argument("group", help=GROUP_HELP)
    g = gsub.add_parser("admin", help="make a member an admin (admins only)")
    g.add_argument("group", help=GROUP_HELP)
    g.add_argument("contact", help=CONTACT_HELP)
    g.add_argument("--revoke", action="store_true", help="stop them being an admin")
    g = gsub.add_parser("info", help="members, relays and epoch of a group")
    g.add_argument("group", help=GROUP_HELP)
    g.add_argument("--json", action="store_true", help=JSON_HELP)
    g = gsub.add_parser("disappear", help="set the disappearing-message timer (0: off)")
    g.add_argument("group", help=GROUP_HELP)
    g.add_argument("seconds", type=int, help="seconds until messages disappear; 0 turns it off")
    p.set_defaults(func=cmd_group)

    p = sub.add_parser("relays", help="list, add, remove or move relays; show or set the proxy")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    rsub = p.add_subparsers(dest="relays_cmd")
    r = rsub.add_parser("list", help="list your relays (the default)")
    r.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)
    r = rsub.add_parser("add", help="add a relay (your contacts learn it)")
    r.add_argument("url", type=relay_url, help="the relay's URL")
    r = rsub.add_parser("remove", help="stop using a relay")
    r.add_argument("url", help="the relay's URL")
    r = rsub.add_parser("move", help="replace a relay by another everywhere")
    r.add_argument("old", help="the relay's URL now")
    r.add_argument("new", type=relay_url, help="the URL to use instead")
    r = rsub.add_parser("proxy", help=proxy_help)
    r.add_argument(
        "setting",
        nargs="?",
        metavar="socks5://HOST:PORT|off",
        help="the SOCKS5 proxy every connection goes through, or off; none: show it",
    )
    r.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)
    p.set_defaults(func=cmd_relays)

    p = sub.add_parser(
        "demo", help="try Samizdat: local relays, two contacts and a group, in the app"
    )
    p.add_argument("--keep", metavar="DIR", help="keep the demo's data in DIR (default: delete)")
    p.set_defaults(func=cmd_demo)

    for name, func, helptext in (
        ("export", cmd_export, "write an encrypted backup"),
        ("import", cmd_import, "restore an encrypted backup into --home"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("file", help="the backup file")
        p.add_argument(
            "--backup-passphrase-file",
            metavar="FILE",
            help="read the backup's passphrase from FILE (else SAMIZDAT_BACKUP_PASSPHRASE "
            "or a prompt)",
        )
        p.set_defaults(func=func)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", cmd_app)
    try:
        code = int(func(args))
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _stdout_closed()
    except SamizdatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(
            f"error: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return EXIT_ERROR


def _stdout_closed() -> int:
    """The reader of our output went away (``samizdat history X | head``):
    stop quietly, with the status a shell shows for a tool that SIGPIPE
    ended (128 + 13), as Unix tools do.  Output still buffered is dropped:
    stdout now points to /dev/null, so the interpreter's final flush cannot
    fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
