"""The main screen: conversations, messages, composer.

Engine events arrive as :class:`EngineBridge.Changed` messages and are
batched: the screen notes what changed and redraws at most every
``REDRAW_DELAY`` seconds, so a burst of 1,000 deliveries costs a few redraws.
Every engine call that touches the network runs in a worker; failures are
shown with ``notify``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, OptionList, ProgressBar, Static

from client.model import Conversation
from client.suites import DEFAULT_SUITE, PQ_DEFAULT_SUITE
from client.tui.bridge import EngineBridge
from client.tui.commands import BY_NAME, CommandError, parse
from client.tui.dialogs.article import ArticleEditor
from client.tui.dialogs.file import FileDialog
from client.tui.dialogs.invite import InviteDialog
from client.tui.dialogs.members import MembersDialog
from client.tui.dialogs.new_group import NewGroupDialog
from client.tui.dialogs.prompt import ConfirmDialog, PromptDialog
from client.tui.dialogs.verify import VerifyDialog
from client.tui.format import (
    conversation_title,
    duration,
    plural,
    relay_health,
)
from client.tui.screens.article import ArticleScreen
from client.tui.screens.help import HelpScreen
from client.tui.screens.relays import RelaysScreen
from client.tui.widgets.composer import Composer
from client.tui.widgets.message_view import MessageItem, MessageView
from client.tui.widgets.sidebar import Sidebar
from protocol.app.messages import File
from protocol.errors import SamizdatError

REDRAW_DELAY = 0.1
PHOTO_MAX_BYTES = 16 * 1024 * 1024  # larger photos are not fetched for inline display
PHOTO_CACHE = 64  # photos kept in memory for redisplay (at most 1 GiB, usually far less)


def now_ms() -> int:
    return int(time.time() * 1000)


class MainScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+o", "invite", "Invite"),
        Binding("ctrl+n", "new_group", "New group"),
        Binding("ctrl+g", "members", "Members"),
        Binding("ctrl+r", "relays", "Relays"),
        Binding("ctrl+t", "app.toggle_dark", "Theme"),
        Binding("f1", "help", "Help"),
        Binding("ctrl+k", "switch", "Go to", priority=True),
        Binding("ctrl+l", "latest", "Latest", show=False),
        # Tab moves between the three regions, not through every message
        Binding("tab", "region(1)", "Next region", show=False),
        Binding("shift+tab", "region(-1)", "Previous region", show=False),
    ]
    REGIONS = ("sidebar", "messages", "composer")

    def __init__(self, engine: Any, *, inline_images: bool = True) -> None:
        super().__init__()
        self.engine = engine
        self.inline_images = inline_images
        self.bridge = EngineBridge(engine, self)
        self.conv_id: bytes | None = None
        self._dirty: set[tuple[str, bytes | None]] = set()
        self._redraw_pending = False
        self._last_notice: object | None = engine.notices[-1] if engine.notices else None
        # photos fetched for display, decrypted in memory only (never on disk)
        self._photos: dict[bytes, bytes] = {}
        self.closing = False  # set by shutdown(): the engine may be closed any moment

    # -- layout -----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="banner", classes="banner")
        with Horizontal(id="main"):
            with Vertical(id="sidebar-box"):
                yield Label(self._me(), id="me")
                yield Sidebar(id="sidebar")
            with Vertical(id="chat"):
                yield Static("", id="chat-title")
                yield Static("", id="warnings")
                yield MessageView(id="messages")
                yield ProgressBar(id="upload", show_eta=False)
                yield Composer(id="composer", placeholder="Message  (/help for commands)")
        yield Footer()

    def _me(self) -> str:
        return f"{self.engine.identity.name}: conversations"

    def on_mount(self) -> None:
        self.sub_title = self.engine.identity.name
        self.query_one("#upload", ProgressBar).display = False
        self.bridge.attach()
        self.query_one(Sidebar).refresh_from(self.engine)
        self._refresh_banner()
        convs = [c for c in self.engine.conversations() if not c.left]
        if convs:
            self.open_conversation(convs[-1].group_id)
        else:
            self._show_title(None)
        self.query_one(Composer).focus()
        self._ticker = self.set_interval(1.0, self._tick)

    def on_unmount(self) -> None:
        self.shutdown()
        self._photos.clear()

    def shutdown(self) -> None:
        """Stop everything that reads the engine (events, timers, workers):
        the app calls this before it closes the engine, so nothing touches
        a closed store while the close is under way."""
        self.closing = True
        self.bridge.detach()
        ticker = getattr(self, "_ticker", None)
        if ticker is not None:
            ticker.stop()
        self.app.workers.cancel_node(self)
        for view in self.query(MessageView):
            self.app.workers.cancel_node(view)

    # -- engine events ----------------------------------------------------------------

    @on(EngineBridge.Changed)
    def _changed(self, event: EngineBridge.Changed) -> None:
        if self.closing:
            return
        self._dirty.add((event.what, event.conv_id))
        if not self._redraw_pending:
            self._redraw_pending = True
            self.set_timer(REDRAW_DELAY, self._redraw)

    async def _redraw(self) -> None:
        self._redraw_pending = False
        dirty, self._dirty = self._dirty, set()
        whats = {w for w, _ in dirty}
        convs = {c for _, c in dirty}
        if not self.is_attached or self.closing or self.engine.closed:
            return  # a redraw timer can fire after the app closed the engine
        self.query_one(Sidebar).refresh_from(self.engine)
        self._refresh_banner()
        if "notice" in whats:
            self._show_notices()
        if self.conv_id is not None and (self.conv_id in convs or "relay" in whats):
            view = self.query_one(MessageView)
            if "message" in whats or "conversation" in whats:
                new = await view.append_new(now_ms())
                if new and self.screen is self.app.screen:
                    self.engine.mark_read(self.conv_id)
                    self.query_one(Sidebar).refresh_from(self.engine)
            view.refresh_states(now_ms())
            conv = self.engine.conversation(self.conv_id)
            self._show_title(conv)
        if self.conv_id is None:
            convs_now = [c for c in self.engine.conversations() if not c.left]
            if convs_now:
                self.open_conversation(convs_now[-1].group_id)

    def _show_notices(self) -> None:
        notices = self.engine.notices
        start = 0
        for i in range(len(notices) - 1, -1, -1):
            if notices[i] is self._last_notice:
                start = i + 1
                break
        for notice in notices[start:]:
            self.notify(
                notice.text,
                title="Warning" if notice.warning else "Samizdat",
                severity="warning" if notice.warning else "information",
                timeout=8 if notice.warning else 4,
            )
        if notices:
            self._last_notice = notices[-1]

    def _tick(self) -> None:
        """Once a second: disappearing-message timers."""
        if not self.closing and self.conv_id is not None:
            self.query_one(MessageView).refresh_states(now_ms())

    def _refresh_banner(self) -> None:
        changed = [c for c in self.engine.contacts() if c.key_changed]
        banner = self.query_one("#banner", Static)
        banner.display = bool(changed)
        if changed:
            names = ", ".join((c.name or c.identity_key.hex()[:8]) for c in changed)
            banner.update(
                f"WARNING: THE SAFETY NUMBER WITH {names.upper()} CHANGED. Their key is not "
                f"the one you knew: someone may be impersonating them. "
                f"Verify with /verify {changed[0].name or changed[0].identity_key.hex()[:8]} "
                "before trusting the conversation."
            )

    def _show_title(self, conv: Conversation | None) -> None:
        title = self.query_one("#chat-title", Static)
        warnings = self.query_one("#warnings", Static)
        if conv is None:
            title.update("No conversation yet. /invite to invite someone, /accept LINK to join.")
            warnings.display = False
            return
        name = conversation_title(self.engine, conv)
        members = self.engine.members(conv.group_id)
        up, total = relay_health(self.engine, conv.group_id)
        parts = [name, plural(len(members), "member") if conv.kind == "group" else "direct"]
        parts.append(f"relays {up}/{total} connected")
        if conv.disappearing_ms:
            parts.append(f"messages disappear after {duration(conv.disappearing_ms // 1000)}")
        if conv.removed_by:
            parts.append(f"removed (per {self.engine.display_name(conv.removed_by)})")
        elif conv.left:
            parts.append("you left")
        title.update("  |  ".join(parts))
        lines = [
            f"{n} message(s) from {self.engine.display_name(k)} missing "
            "(a relay dropped or delays them)"
            for k, n in self.engine.missing(conv).items()
        ]
        warnings.update("\n".join(lines))
        warnings.display = bool(lines)

    # -- conversations ----------------------------------------------------------------

    @on(OptionList.OptionSelected, "#sidebar")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.open_conversation(bytes.fromhex(event.option.id))

    @work(group="open", exclusive=True)
    async def open_conversation(self, conv_id: bytes) -> None:
        """Show a conversation; typing goes to its composer again (the
        focused message, if any, belongs to the conversation left behind)."""
        conv = self.engine.conversation(conv_id)
        if conv is None or self.closing:
            return
        self.query_one(Composer).focus()
        self.conv_id = conv_id
        await self.query_one(MessageView).open(self.engine, conv_id, now_ms())
        self.engine.mark_read(conv_id)
        sidebar = self.query_one(Sidebar)
        sidebar.refresh_from(self.engine)
        with contextlib.suppress(Exception):
            sidebar.highlighted = sidebar.get_option_index(conv_id.hex())
        self._show_title(self.engine.conversation(conv_id))

    def current(self) -> Conversation | None:
        return self.engine.conversation(self.conv_id) if self.conv_id else None

    def action_region(self, step: int) -> None:
        """Focus the next (or previous) region: sidebar, messages, composer.
        The messages region is entered at its newest message."""
        focused = self.focused
        if isinstance(focused, Sidebar):
            here = 0
        elif isinstance(focused, (MessageItem, MessageView)):
            here = 1
        else:
            here = 2
        target = self.REGIONS[(here + step) % len(self.REGIONS)]
        if target == "sidebar":
            self.query_one(Sidebar).focus()
        elif target == "composer":
            self.query_one(Composer).focus()
        else:
            view = self.query_one(MessageView)
            items = view.items
            if items:
                items[-1].focus()
            else:
                view.focus()

    def action_switch(self) -> None:
        """Ctrl+K: go to a conversation or contact by name."""
        from textual.command import CommandPalette

        from client.tui.commands import ConversationSwitcher

        self.app.push_screen(
            CommandPalette(
                providers=[ConversationSwitcher],
                placeholder="Go to a conversation or contact...",
            )
        )

    def go_to(self, conv_id: bytes) -> None:
        """Open a conversation chosen in the switcher or the palette."""
        self.open_conversation(conv_id)

    async def action_latest(self) -> None:
        await self.query_one(MessageView).jump_to_latest()

    # -- workers ------------------------------------------------------------------------

    def run_engine(self, work: Awaitable[object], what: str, done: str = "") -> None:
        """Run an engine coroutine in a worker; notify on failure or success."""

        async def guarded() -> None:
            try:
                await work
            except (SamizdatError, OSError) as exc:
                self.notify(f"{what} failed: {exc}", severity="error", timeout=8)
                return
            if done:
                self.notify(done)
            self._changed(EngineBridge.Changed("conversation", self.conv_id))

        self.run_worker(guarded(), group="engine")

    # -- the composer -------------------------------------------------------------------

    @on(Composer.Submitted)
    def _submitted(self, event: Composer.Submitted) -> None:
        text = event.text
        if text.startswith("/") and not text.startswith("//"):
            try:
                name, args = parse(text)
                getattr(self, f"cmd_{name}")(args)
            except CommandError as exc:
                self.notify(str(exc), severity="warning")
            return
        if text.startswith("//"):
            text = text[1:]
        conv = self.current()
        if conv is None:
            self.notify("no conversation: /invite someone or /accept a link", severity="warning")
            return
        self.run_engine(self.engine.send_text(conv.group_id, text), "sending")

    def _need_conv(self, kind: str | None = None) -> Conversation | None:
        conv = self.current()
        if conv is None:
            self.notify("open a conversation first", severity="warning")
            return None
        if kind is not None and conv.kind != kind:
            self.notify(f"this works in a {kind} conversation", severity="warning")
            return None
        return conv

    def _usage(self, name: str) -> None:
        self.notify(f"usage: {BY_NAME[name].usage}", severity="warning")

    def cmd_help(self, args: list[str]) -> None:
        self.app.push_screen(HelpScreen())

    def cmd_theme(self, args: list[str]) -> None:
        self.app.action_toggle_dark()

    def cmd_relays(self, args: list[str]) -> None:
        self.app.push_screen(RelaysScreen(self.engine))

    def cmd_invite(self, args: list[str]) -> None:
        """``/invite`` (one person), ``/invite N``, ``/invite list``, ``/invite revoke ID``;
        ``--pq`` makes the 1:1 chat it opens post-quantum (SPEC.md §4.1.1)."""
        pq = "--pq" in args
        args = [a for a in args if a != "--pq"]
        action = args[0].lower() if args else ""
        if action == "list":
            self._list_invites()
            return
        if action == "revoke":
            if len(args) != 2:
                self.notify("usage: /invite revoke ID (see /invite list)", severity="warning")
                return

            async def revoke() -> None:
                await self.engine.revoke_invite(args[1])

            self.run_engine(revoke(), "revoking the invite", f"invite {args[1]} revoked")
            return
        if action and not (action.isdigit() and int(action) >= 1):
            self.notify("usage: /invite [--pq] [N | list | revoke ID]", severity="warning")
            return
        uses = int(action) if action else 1
        suite = PQ_DEFAULT_SUITE if pq else DEFAULT_SUITE

        async def make() -> None:
            link = await self.engine.invite(uses=uses, suite=suite)
            self.app.push_screen(InviteDialog(link, uses))

        self.run_engine(make(), "making an invite")

    def _list_invites(self) -> None:
        now = int(time.time() * 1000)
        lines = [
            f"{r.invite_id.hex()}  {r.current_state(now)}  used {r.uses}/{r.max_uses}"
            for r in self.engine.invites()
        ]
        self.notify("\n".join(lines) or "no invites yet: /invite makes one", timeout=12)

    def cmd_accept(self, args: list[str]) -> None:
        if len(args) != 1:
            self._usage("accept")
            return
        self.accept(args[0])

    def accept(self, link: str) -> None:
        async def go() -> None:
            conv = await self.engine.accept(link.strip())
            self.open_conversation(conv.group_id)

        self.run_engine(go(), "accepting the invite", "invite accepted: waiting for them to reply")

    def cmd_verify(self, args: list[str]) -> None:
        try:
            if args:
                contact = self.engine.find_contact(" ".join(args))
            else:
                conv = self._need_conv("direct")
                if conv is None:
                    return
                contact = next(c for c in self.engine.contacts() if c.conversation == conv.group_id)
        except (SamizdatError, StopIteration) as exc:
            self.notify(f"verify: {exc or 'no contact here'}", severity="warning")
            return
        number = self.engine.safety_number(contact)

        def confirmed(ok: bool | None) -> None:
            if ok:
                fresh = self.engine.contact(contact.identity_key) or contact
                self.engine.verify(fresh)
                self.notify(f"{fresh.name or 'contact'} is verified")
                self._refresh_banner()
                self.query_one(Sidebar).refresh_from(self.engine)

        self.app.push_screen(VerifyDialog(contact, number, self.engine.identity.name), confirmed)

    def cmd_group(self, args: list[str]) -> None:
        pq = len(args) > 1 and args[1] == "--pq"  # /group create --pq NAME
        if len(args) < 2 + pq or args[0] != "create":
            self._usage("group")
            return
        self.create_group(" ".join(args[1 + pq :]), PQ_DEFAULT_SUITE if pq else DEFAULT_SUITE)

    def create_group(self, name: str, suite: int = DEFAULT_SUITE) -> None:
        async def go() -> None:
            conv = await self.engine.create_group(name, suite)
            self.open_conversation(conv.group_id)

        self.run_engine(go(), "creating the group", f"group {name!r} created: /add people")

    def cmd_add(self, args: list[str]) -> None:
        conv = self._need_conv("group")
        if conv is None:
            return
        if not args:
            self._usage("add")
            return
        try:
            contacts = [self.engine.find_contact(name) for name in args]
        except SamizdatError as exc:
            self.notify(str(exc), severity="warning")
            return
        names = ", ".join(c.name for c in contacts)
        self.run_engine(
            self.engine.add_members(conv.group_id, contacts), f"adding {names}", f"added {names}"
        )

    def cmd_remove(self, args: list[str]) -> None:
        conv = self._need_conv("group")
        if conv is None:
            return
        if not args:
            self._usage("remove")
            return
        query = " ".join(args)
        key = self._member_key(conv.group_id, query)
        if key is None:
            self.notify(f"no member {query!r} here", severity="warning")
            return
        name = self.engine.display_name(key)
        self.run_engine(
            self.engine.remove_member(conv.group_id, key), f"removing {name}", f"removed {name}"
        )

    def _member_key(self, conv_id: bytes, query: str) -> bytes | None:
        q = query.strip().lower()
        members: list[bytes] = self.engine.members(conv_id)
        for key in members:
            if self.engine.display_name(key).lower() == q or (
                len(q) >= 4 and key.hex().startswith(q)
            ):
                return key
        return None

    def cmd_members(self, args: list[str]) -> None:
        conv = self._need_conv()
        if conv is None:
            return

        def chosen(result: tuple[str, str] | None) -> None:
            if result is None:
                return
            what, value = result
            if what == "add":
                self.cmd_add(value.replace(",", " ").split())
            else:
                self.cmd_remove([value])

        title = conversation_title(self.engine, conv)
        self.app.push_screen(MembersDialog(self.engine, conv.group_id, title), chosen)

    def cmd_leave(self, args: list[str]) -> None:
        conv = self._need_conv()
        if conv is None:
            return

        async def go() -> None:
            await self.engine.leave(conv.group_id)
            self.conv_id = None
            self.query_one(Sidebar).refresh_from(self.engine)

        self.run_engine(go(), "leaving", f"you left {conversation_title(self.engine, conv)}")

    def cmd_disappear(self, args: list[str]) -> None:
        conv = self._need_conv()
        if conv is None:
            return
        if len(args) != 1 or not args[0].isdigit():
            self._usage("disappear")
            return
        seconds = int(args[0])
        done = f"messages now disappear after {duration(seconds)}" if seconds else "timer off"
        self.run_engine(self.engine.set_disappearing(conv.group_id, seconds * 1000), "timer", done)

    def cmd_file(self, args: list[str]) -> None:
        conv = self._need_conv()
        if conv is None:
            return
        if not args:
            self._usage("file")
            return
        path = Path(" ".join(args)).expanduser()
        if not path.is_file():
            self.notify(f"{path} is not a readable file", severity="warning")
            return
        self.send_file(conv.group_id, path)

    def send_file(self, conv_id: bytes, path: Path) -> None:
        bar = self.query_one("#upload", ProgressBar)

        def progress(done: int, total: int) -> None:
            bar.update(total=total, progress=done)

        async def go() -> None:
            bar.update(total=None, progress=0)
            bar.display = True
            try:
                await self.engine.send_file(conv_id, path, progress)
            finally:
                bar.display = False

        self.run_engine(go(), f"sending {path.name}", f"{path.name} sent")

    def cmd_article(self, args: list[str]) -> None:
        conv = self._need_conv()
        if conv is None:
            return
        if args:
            path = Path(" ".join(args)).expanduser()
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                self.notify(f"cannot read {path}: {exc}", severity="warning")
                return
            heading = next((ln for ln in text.splitlines() if ln.startswith("#")), "")
            title = heading.lstrip("#").strip() or path.stem
            self.run_engine(
                self.engine.send_article(conv.group_id, title, text), "sending the article"
            )
            return

        def written(result: tuple[str, str] | None) -> None:
            if result is not None:
                title, body = result
                self.run_engine(
                    self.engine.send_article(conv.group_id, title, body), "sending the article"
                )

        self.app.push_screen(ArticleEditor(), written)

    # -- opening messages ---------------------------------------------------------------

    @on(MessageItem.Opened)
    def _open_message(self, event: MessageItem.Opened) -> None:
        entry = event.entry
        if entry.kind == "article":
            author = self.engine.display_name(entry.sender)
            self.app.push_screen(ArticleScreen(entry.title, author, entry.text))
        elif entry.kind == "file":
            preview = self._photos.get(entry.message_id)
            conv_id = self.conv_id

            def save(dest: Path | None) -> None:
                if dest is not None and conv_id is not None:
                    body = File.from_bytes(bytes.fromhex(entry.file["descriptor"]))
                    self._confirm_and_save(conv_id, body, dest)

            self.app.push_screen(FileDialog(entry, preview, Path.cwd()), save)

    @work(group="save")
    async def _confirm_and_save(self, conv_id: bytes, body: File, dest: Path) -> None:
        """Save a received file, asking first before contacting a relay that
        is not the conversation's (SPEC §8.7) or replacing a file."""
        try:
            outside = self.engine.outside_relays(conv_id, body)
        except SamizdatError as exc:
            self.notify(f"cannot save: {exc}", severity="error")
            return
        if outside and not await self.app.push_screen_wait(
            ConfirmDialog(
                "Download from an outside relay?",
                f"This file is stored only on {', '.join(outside)}, which is not a relay "
                "of this conversation. Whoever runs it would learn your address.",
                "Download",
            )
        ):
            return
        overwrite = dest.exists()
        if overwrite and not await self.app.push_screen_wait(
            ConfirmDialog("Replace the file?", f"{dest} already exists.", "Replace")
        ):
            return
        self.run_engine(
            self.engine.fetch_file(conv_id, body, dest, allow_relays=outside, overwrite=overwrite),
            f"saving {body.name}",
            f"saved {dest}",
        )

    @on(MessageView.PhotoWanted)
    def _photo_wanted(self, event: MessageView.PhotoWanted) -> None:
        if not self.inline_images:
            return
        entry = event.item.entry
        cached = self._photos.get(entry.message_id)
        if cached is not None:
            self.query_one(MessageView).photo_ready(event.item, cached)
            return
        self._fetch_photo(event.item)

    @work(group="photos")
    async def _fetch_photo(self, item: MessageItem) -> None:
        """Fetch a photo for inline display: into memory only, at most
        ``PHOTO_MAX_BYTES``, and only from the conversation's relays (an
        automatic fetch never asks, so it never goes elsewhere)."""
        entry, conv_id = item.entry, self.conv_id
        if conv_id is None:
            return
        try:
            body = File.from_bytes(bytes.fromhex(entry.file["descriptor"]))
            if self.engine.outside_relays(conv_id, body):
                return  # the placeholder stays; "view or save" asks the user
            data = await self.engine.fetch_bytes(conv_id, body, max_size=PHOTO_MAX_BYTES)
        except SamizdatError:
            return  # the placeholder stays; "view or save" retries
        self._photos[entry.message_id] = data
        for evicted in list(self._photos)[:-PHOTO_CACHE]:
            del self._photos[evicted]
        if item.is_attached:
            self.query_one(MessageView).photo_ready(item, data)

    # -- actions and the palette ----------------------------------------------------------

    def action_invite(self) -> None:
        self.cmd_invite([])

    def action_new_group(self) -> None:
        dialog = NewGroupDialog()

        def named(name: str | None) -> None:
            if name:
                self.create_group(name, dialog.suite)

        self.app.push_screen(dialog, named)

    def action_members(self) -> None:
        self.cmd_members([])

    def action_relays(self) -> None:
        self.cmd_relays([])

    def action_help(self) -> None:
        self.cmd_help([])

    def run_palette_action(self, action: str) -> None:
        if action.startswith("/"):
            name, args = parse(action)
            getattr(self, f"cmd_{name}")(args)
        elif action == "accept-dialog":
            self.app.push_screen(
                PromptDialog(
                    "Accept an invite", "Paste the invite link you were given.", "samizdat:..."
                ),
                lambda link: self.accept(link) if link else None,
            )
        elif action == "group-dialog":
            self.action_new_group()
        elif action == "verify-current":
            self.cmd_verify([])
        elif action == "file-dialog":
            self.app.push_screen(
                PromptDialog("Send a file", "Path of the file or photo to send.", "~/photo.jpg"),
                lambda path: self.cmd_file([path]) if path else None,
            )
