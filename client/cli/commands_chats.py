"""``chats``, ``send``, ``sync``, ``history`` and ``save``: conversations."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client.cli.common import (
    EXIT_QUEUED,
    UsageError,
    Work,
    _open,
    print_json,
    run_offline,
    run_online,
    ts,
)

if TYPE_CHECKING:
    from client.engine import Engine


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


def find_chat(engine: Engine, query: str) -> Any:
    """``engine.find_conversation``, whose error says to run ``sync`` when a
    contact may be missing only because its name has not arrived yet: short
    links carry no name, the contact's introduction does (issue 12)."""
    from client.engine import EngineError

    try:
        return engine.find_conversation(query)
    except EngineError as exc:
        pending = engine.pending_introductions()
        why = []
        if pending["queued_accepts"]:
            why.append(f"{pending['queued_accepts']} accepted invite(s) wait for their relay")
        if pending["unnamed_contacts"]:
            why.append(f"{pending['unnamed_contacts']} contact(s) have not sent their name yet")
        if pending["open_invites"]:
            why.append(f"{pending['open_invites']} invite(s) of yours may have been accepted")
        if not why:
            raise
        raise UsageError(
            f"{exc}; {', '.join(why)}: run 'samizdat sync' (when the contact has been "
            "online), then 'samizdat chats'"
        ) from None


def cmd_send(args: argparse.Namespace) -> int:
    def plan(engine: Engine) -> Work:
        conv = find_chat(engine, args.chat)
        if args.file:
            path = Path(args.file)
            if not path.is_file():
                raise UsageError(f"{path} is not a readable file")
            path.open("rb").close()  # unreadable: the OSError is the one-line error

            def progress(done: int, total: int) -> None:
                if sys.stderr.isatty():
                    print(f"\ruploading {done}/{total} chunks", end="", file=sys.stderr)

            async def send() -> bytes:
                mid = await engine.send_file(conv.group_id, path, progress)
                if sys.stderr.isatty():
                    print(file=sys.stderr)
                return mid
        elif args.article:
            path = Path(args.article)
            text = path.read_text(encoding="utf-8")
            title = args.title or _article_title(text, path)

            async def send() -> bytes:
                return await engine.send_article(conv.group_id, title, text)
        else:
            if not args.text:
                raise UsageError("nothing to send: give TEXT, --file or --article")

            async def send() -> bytes:
                return await engine.send_text(conv.group_id, " ".join(args.text))

        async def work() -> int:
            mid = await send()
            status = engine.status(mid)
            stored = len(status.relays_stored) if status else 0
            if args.json:
                print_json({"message_id": mid.hex(), "relays_stored": stored})
            elif stored:
                print(f"sent (stored on {stored} relay{'s' if stored > 1 else ''})")
            if not stored:
                print(
                    "queued: no relay reachable now; the message is kept and goes out with "
                    "the next command that reaches a relay (e.g. 'samizdat sync') or the app",
                    file=sys.stderr,
                )
                return EXIT_QUEUED
            return 0

        return work

    # Only the conversation's relays, no subscriptions: sending needs nothing
    # else, and 'sync' (or the app) is what receives.
    return run_online(
        args,
        plan,
        settle=0,
        only_relays=lambda engine: engine.conversation_relays(
            engine.find_conversation(args.chat).group_id
        ),
    )


def _article_title(text: str, path: Path) -> str:
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return path.stem


def cmd_sync(args: argparse.Namespace) -> int:
    engine = _open(args)

    async def main() -> tuple[int, dict[str, str], int]:
        try:
            queued = await engine.sync(wait=args.wait)
            return queued, engine.relay_states(), len(engine.queued_accepts())
        finally:
            await engine.close()

    queued, states, waiting = asyncio.run(main())
    for line in engine.accept_log:  # links 'accept' queued, now settled
        print(line, file=sys.stderr)
    if args.json:
        print_json({"queued": queued, "relays": states})
    else:
        for url, state in states.items():
            print(f"{state:10} {url}")
        if queued:
            print(f"{queued} envelope(s) still queued")
    if waiting:
        print(
            f"{waiting} accepted invite link(s) still wait for their relay",
            file=sys.stderr,
        )
    return EXIT_QUEUED if queued or waiting else 0


def cmd_history(args: argparse.Namespace) -> int:
    def work(engine: Engine) -> int:
        conv = find_chat(engine, args.chat)
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
    from client.files import safe_file_name

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
        raise UsageError("no file in this conversation")
    if which == "last":
        return files[-1]
    query = which.lower()
    by_id = [e for e in files if len(query) >= 4 and e.message_id.hex().startswith(query)]
    if len(by_id) > 1:
        raise UsageError(f"{which!r} matches {len(by_id)} files: give more of the id")
    if by_id:
        return by_id[0]
    by_name = [e for e in files if e.file.get("name") == which]
    if by_name:
        return by_name[-1]
    raise UsageError(f"no file {which!r} here: see the ids in 'samizdat history'")


def cmd_save(args: argparse.Namespace) -> int:
    from client.files import DestinationExists, OutsideRelay
    from protocol.app.messages import File

    def plan(engine: Engine) -> Work:
        conv = engine.find_conversation(args.chat)
        entry = pick_file(engine.history(conv.group_id), args.message)
        body = File.from_bytes(bytes.fromhex(entry.file["descriptor"]))
        dest = save_path(args.output, body.name)
        if not args.force and (dest.exists() or dest.is_symlink()):
            raise UsageError(f"{dest} already exists; use --force to replace it")

        async def work() -> int:
            try:
                await engine.fetch_file(
                    conv.group_id,
                    body,
                    dest,
                    allow_relays=args.allow_relay or (),
                    overwrite=args.force,
                )
            except DestinationExists as exc:
                raise UsageError(f"{exc.path} already exists; use --force to replace it") from None
            except OutsideRelay as exc:
                flags = " ".join(f"--allow-relay {url}" for url in exc.urls)
                raise UsageError(f"{exc}; to download anyway, add {flags}") from None
            print(f"saved {dest}")
            return 0

        return work

    # downloads open their own connections; no mailbox needs reading
    return run_online(args, plan, settle=0, only_relays=lambda engine: [])
