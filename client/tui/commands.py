"""The composer's ``/commands`` and the command palette's provider.

Each command names a ``cmd_<name>`` method of ``MainScreen``; parsing is
pure so it is tested without an app.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from functools import partial
from typing import Any

from textual.command import DiscoveryHit, Hit, Hits, Provider


@dataclass(frozen=True)
class SlashCommand:
    name: str
    usage: str
    help: str


SLASH_COMMANDS: tuple[SlashCommand, ...] = (
    SlashCommand(
        "invite", "/invite [--pq] [N]", "show an invite link and QR code (--pq: post-quantum chat)"
    ),
    SlashCommand("accept", "/accept LINK", "accept someone's invite link"),
    SlashCommand("verify", "/verify NAME", "compare safety numbers with a contact"),
    SlashCommand("group", "/group create [--pq] NAME", "create a group (--pq: post-quantum)"),
    SlashCommand("add", "/add NAME...", "add contacts to this group"),
    SlashCommand("remove", "/remove NAME", "remove a member from this group"),
    SlashCommand("members", "/members", "list the members of this conversation"),
    SlashCommand("leave", "/leave", "leave this conversation"),
    SlashCommand("file", "/file PATH", "send a file or photo"),
    SlashCommand("article", "/article [PATH]", "write an article, or send a Markdown file"),
    SlashCommand("disappear", "/disappear SECONDS", "disappearing messages (0: off)"),
    SlashCommand("relays", "/relays", "relay status; add, remove or move relays"),
    SlashCommand("theme", "/theme", "switch between the light and dark theme"),
    SlashCommand("help", "/help", "keys and commands"),
)
BY_NAME = {c.name: c for c in SLASH_COMMANDS}


class CommandError(ValueError):
    """A /command the composer cannot run (unknown, or bad arguments)."""


def parse(text: str) -> tuple[str, list[str]]:
    """``"/add Bob Carol"`` -> ``("add", ["Bob", "Carol"])``."""
    body = text.strip()[1:]
    try:
        words = shlex.split(body)
    except ValueError:
        words = body.split()
    if not words:
        raise CommandError("empty command: try /help")
    name = words[0].lower()
    if name not in BY_NAME:
        raise CommandError(f"unknown command /{name}: try /help")
    return name, words[1:]


# (title, help, slash text or action) for the palette; the action runs on
# the main screen as if typed in the composer.
PALETTE: tuple[tuple[str, str, str], ...] = (
    ("Invite a contact", "show your invite link and QR code", "/invite"),
    ("Accept an invite", "paste someone's invite link", "accept-dialog"),
    ("New group", "create a group", "group-dialog"),
    ("Members", "members of this conversation; add or remove", "/members"),
    ("Verify contact", "compare safety numbers with this contact", "verify-current"),
    ("Write an article", "a long text rendered as Markdown", "/article"),
    ("Send a file", "send a file or photo", "file-dialog"),
    ("Relays", "relay status; add, remove or move relays", "/relays"),
    ("Leave conversation", "leave this conversation", "/leave"),
    ("Toggle theme", "light or dark", "/theme"),
    ("Help", "keys and commands", "/help"),
)


class SamizdatCommands(Provider):
    """Samizdat's actions in Textual's command palette (ctrl+p)."""

    def _run(self, action: str) -> None:
        from client.tui.screens.main import MainScreen

        screen = next((s for s in self.app.screen_stack if isinstance(s, MainScreen)), None)
        if screen is not None:
            screen.run_palette_action(action)

    async def discover(self) -> Hits:
        for title, help_text, action in PALETTE:
            yield DiscoveryHit(title, partial(self._run, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, action in PALETTE:
            score = matcher.match(title)
            if score > 0:
                yield Hit(
                    score, matcher.highlight(title), partial(self._run, action), help=help_text
                )


def _main_screen(provider: Provider):  # type: ignore[no-untyped-def]
    from client.tui.screens.main import MainScreen

    return next((s for s in provider.app.screen_stack if isinstance(s, MainScreen)), None)


def switch_targets(engine: object) -> list[tuple[str, str, bytes]]:
    """(name, help, conversation id) for every open conversation, and for each
    contact without a direct conversation the first group they are in."""
    from client.tui.format import conversation_title

    eng: Any = engine
    convs = [c for c in eng.conversations() if not c.left]
    targets = []
    for conv in reversed(convs):  # newest first
        kind = "group" if conv.kind == "group" else "direct conversation"
        targets.append((conversation_title(eng, conv), kind, conv.group_id))
    direct = {c.group_id for c in convs if c.kind == "direct"}
    for contact in eng.contacts():
        if not contact.name or contact.conversation in direct:
            continue  # reachable under its own name already
        group = next((c for c in convs if contact.identity_key in eng.members(c.group_id)), None)
        if group is not None:
            where = conversation_title(eng, group)
            targets.append((contact.name, f"contact, in {where}", group.group_id))
    return targets


class ConversationSwitcher(Provider):
    """Conversations and contacts by name (ctrl+k, and in ctrl+p)."""

    def _targets(self) -> list[tuple[str, str, bytes]]:
        screen = _main_screen(self)
        return switch_targets(screen.engine) if screen is not None else []

    def _go(self, conv_id: bytes) -> None:
        screen = _main_screen(self)
        if screen is not None:
            screen.go_to(conv_id)

    async def discover(self) -> Hits:
        for name, help_text, conv_id in self._targets():
            yield DiscoveryHit(name, partial(self._go, conv_id), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, conv_id in self._targets():
            score = matcher.match(name)
            if score > 0:
                yield Hit(
                    score, matcher.highlight(name), partial(self._go, conv_id), help=help_text
                )
