"""The ``samizdat`` argument parser: every command, option and help text."""

from __future__ import annotations

import argparse

from client.cli.commands_chats import cmd_chats, cmd_history, cmd_save, cmd_send, cmd_sync
from client.cli.commands_contacts import cmd_accept, cmd_contacts, cmd_invite, cmd_verify
from client.cli.commands_groups import cmd_group
from client.cli.commands_setup import (
    cmd_demo,
    cmd_export,
    cmd_import,
    cmd_init,
    cmd_lock,
    cmd_relays,
)
from client.cli.common import default_home, relay_url
from client.suites import SUITE_HELP

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
    _suite_args(p, "the 1:1 conversation it opens")
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
    _suite_args(g, "the group")
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
    r = rsub.add_parser(
        "forward", help="post to your relays through one of them (private routing); none: show"
    )
    r.add_argument(
        "setting",
        nargs="?",
        metavar="URL|off",
        help="one of your relays: posts to the others go through it, so they never see "
        "your address; off: post directly",
    )
    r.add_argument(
        "--fallback",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="if the forwarding relay fails, post directly (shows your address); default: wait",
    )
    r.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)
    p.set_defaults(func=cmd_relays)

    p = sub.add_parser(
        "lock",
        help="forget the unlocked store key (stop the key agent)",
        description="Stop the key agent that keeps the store's key for a while after a "
        "command unlocked it, so that the next command asks for the passphrase. "
        "SAMIZDAT_AGENT=off never starts it; SAMIZDAT_AGENT=5m sets its idle timeout "
        "(default 10m).",
    )
    p.set_defaults(func=cmd_lock)

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


def _suite_args(p: argparse.ArgumentParser, what: str) -> None:
    """``--pq`` / ``--suite NAME``: the cipher suite of a new conversation (SPEC §4.1.1)."""
    suite = p.add_mutually_exclusive_group()
    suite.add_argument(
        "--pq", action="store_true", help=f"make {what} post-quantum (ML-KEM-768 + X25519)"
    )
    suite.add_argument("--suite", metavar="NAME", help=SUITE_HELP)
