"""``invite``, ``accept``, ``contacts`` and ``verify``: meeting people."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from client.cli.common import (
    EXIT_QUEUED,
    UsageError,
    Work,
    parse_duration,
    print_json,
    print_qr,
    run_offline,
    run_online,
    ts,
)
from protocol.errors import DecodeError

if TYPE_CHECKING:
    from client.engine import Engine


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
    from client.invites import LEGACY, MAX_INVITE_USES

    if args.action == "list":
        return run_offline(args, lambda engine: _invite_list(engine, args))
    if args.action == "revoke":
        if not args.id:
            raise UsageError("which invite? 'samizdat invite revoke ID' (see 'invite list')")

        def plan_revoke(engine: Engine) -> Work:
            if args.id.strip().lower() == LEGACY:
                if not engine.legacy_inbox_relays():
                    raise UsageError(
                        "there is no legacy inbox to revoke: no link of yours carries it"
                    )
            else:
                engine.find_invite(args.id)  # an unknown id fails before connecting

            async def revoke() -> int:
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

            return revoke

        return run_online(args, plan_revoke)
    if args.id:
        raise UsageError(f"unknown invite action {args.id!r}: use list or revoke ID")
    uses = 1 if args.uses is None else args.uses
    lifetime = parse_duration(args.expires)
    if not 1 <= uses <= MAX_INVITE_USES:
        raise UsageError(f"an invite is good for 1 to {MAX_INVITE_USES} uses")
    from client.suites import chosen_suite

    suite = chosen_suite(args.pq, args.suite)  # a bad suite name fails before connecting

    def plan(engine: Engine) -> Work:
        if not engine.identity.relays:
            raise UsageError("no relays configured")

        async def work() -> int:
            record, link = await engine.create_invite(uses=uses, lifetime_ms=lifetime, suite=suite)
            if args.json:
                print_json({"link": link, **invite_json(engine, record)})
            else:
                print(link)
                print_qr(link)
                n = "once" if uses == 1 else f"{uses} times"
                print(
                    f"invite {record.invite_id.hex()}: works {n}, until "
                    f"{ts(record.expires_at_ms)}; "
                    f"'samizdat invite revoke {record.invite_id.hex()}' cancels it",
                    file=sys.stderr,
                )
            return 0

        return work

    # the invite's mailboxes go on our own relays; nothing needs reading
    return run_online(args, plan, settle=0, only_relays=lambda engine: engine.identity.relays)


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


def check_invite_link(link: str) -> None:
    """A link that cannot be an invite fails here, before any connection:
    a short link's form, or a long link's whole content (signature, expiry)."""
    from protocol.app.invite import is_short_invite_link, parse_invite_link, parse_short_invite_link

    try:
        if is_short_invite_link(link):
            parse_short_invite_link(link)
        else:
            parse_invite_link(link, int(time.time() * 1000))
    except DecodeError as exc:
        raise UsageError(str(exc)) from None


def cmd_accept(args: argparse.Namespace) -> int:
    check_invite_link(args.link)

    def plan(engine: Engine) -> Work:
        async def work() -> int:
            from client.engine import AcceptQueued

            try:
                conv = await engine.accept(args.link)
            except AcceptQueued as exc:
                print(
                    f"queued: {exc.reason}. The link is kept (in the encrypted store) and accepted "
                    "by the next 'samizdat sync' that reaches its relay (or the app); "
                    "nothing was sent yet",
                    file=sys.stderr,
                )
                return EXIT_QUEUED
            print(f"contact request sent; conversation {conv.group_id.hex()[:8]}")
            return 0

        return work

    # Only our relays (the invite's are reached when written to), no mailbox
    # read: accepting only writes, and the reply comes when the inviter is
    # online ('sync' or the app receive it), so nothing is waited for either.
    return run_online(args, plan, settle=0, only_relays=lambda engine: engine.identity.relays)


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
