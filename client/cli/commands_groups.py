"""``group``: create a group, change its members, admins and timer."""

from __future__ import annotations

import argparse

from client.cli.commands_chats import conv_json
from client.cli.common import print_json, run_offline, run_online
from client.engine import Engine
from client.suites import DEFAULT_SUITE, chosen_suite, describe_suite


def cmd_group(args: argparse.Namespace) -> int:
    if args.group_cmd == "create":

        async def create(engine: Engine) -> int:
            suite = chosen_suite(args.pq, args.suite)
            conv = await engine.create_group(args.name, suite)
            print(f"group {args.name!r} created ({conv.group_id.hex()[:8]})")
            if suite != DEFAULT_SUITE:
                print(f"cipher suite {describe_suite(suite)}")
            return 0

        return run_online(args, create)
    if args.group_cmd == "info":

        def info(engine: Engine) -> int:
            conv = engine.find_conversation(args.group)
            data = conv_json(engine, conv)
            data["relays"] = list(engine._meta(conv.group_id).relay_urls)
            data["epoch"] = engine.groups[conv.group_id].epoch
            data["suite"] = f"{engine.conversation_suite(conv.group_id):#06x}"
            if args.json:
                print_json(data)
            else:
                print(f"{data['name']} ({data['kind']}), epoch {data['epoch']}")
                print("members: " + ", ".join(data["members"]))
                print("admins:  " + ", ".join(data["admins"]))
                print("relays:  " + ", ".join(data["relays"]))
                print("suite:   " + describe_suite(int(data["suite"], 16)))
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
