"""Pilot tests: the app driven like a person would, against real relay
processes on 127.0.0.1 (tests/client_support.py).  Every wait is bounded."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Button

from client.engine import Engine
from client.model import HistoryEntry, history_ns
from client.tui.app import SamizdatApp
from client.tui.commands import CommandError, parse
from client.tui.dialogs.file import FileDialog
from client.tui.dialogs.members import MembersDialog
from client.tui.dialogs.verify import VerifyDialog
from client.tui.screens.article import ArticleScreen
from client.tui.screens.help import HelpScreen
from client.tui.screens.main import MainScreen
from client.tui.screens.relays import RelaysScreen
from client.tui.screens.setup import SetupScreen
from client.tui.screens.unlock import UnlockScreen
from client.tui.widgets.composer import Composer
from client.tui.widgets.message_view import MessageItem, MessageView
from tests.client_support import RelayProcess, befriend, eventually, make_engine
from tests.tui_support import screen_text, wait_for

pytestmark = [
    pytest.mark.timeout(120),
    # textual-image 0.12 still calls a Pillow API that Pillow 12 deprecates
    pytest.mark.filterwarnings("ignore:Image.Image.getdata is deprecated:DeprecationWarning"),
]
SIZE = (120, 40)


@pytest.fixture(scope="module")
def relays(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RelayProcess]]:
    base = tmp_path_factory.mktemp("relays")
    procs = [RelayProcess(base / f"relay{i}").start() for i in range(2)]
    yield procs
    for p in procs:
        p.stop()


@pytest.fixture
async def people(tmp_path: Path, relays: list[RelayProcess]) -> AsyncIterator[dict[str, Engine]]:
    urls = [r.url for r in relays]
    engines = {n: make_engine(tmp_path / n, n, urls) for n in ("Alice", "Bob", "Carol")}
    for name in ("Bob", "Carol"):
        await engines[name].connect()
    yield engines
    for e in engines.values():
        if not e._closing:
            await e.close()


def texts(engine: Engine, conv_id: bytes) -> list[str]:
    return [e.text for e in engine.history(conv_id) if e.kind == "text"]


async def type_line(pilot, text: str) -> None:  # type: ignore[no-untyped-def]
    composer = pilot.app.screen.query_one(Composer)
    composer.focus()
    composer.text = text
    await pilot.press("enter")


async def press_button(pilot, selector: str) -> None:  # type: ignore[no-untyped-def]
    """Activate a button as Enter on it would (clicks can miss on a loaded machine)."""
    await pilot.pause()
    pilot.app.screen.query_one(selector, Button).press()
    await pilot.pause()


# -- pure parts ----------------------------------------------------------------------


def test_slash_command_parsing() -> None:
    assert parse("/add Bob Carol") == ("add", ["Bob", "Carol"])
    assert parse('/group create "Book club"') == ("group", ["create", "Book club"])
    with pytest.raises(CommandError):
        parse("/nonsense")
    with pytest.raises(CommandError):
        parse("/")


# -- first run and unlock ---------------------------------------------------------------


async def test_first_run_then_unlock(tmp_path: Path, relays: list[RelayProcess]) -> None:
    home = tmp_path / "new"
    app = SamizdatApp(home, fast_kdf=True, default_relays=relays[0].url, connect=False)
    async with app.run_test(size=SIZE) as pilot:
        assert isinstance(app.screen, SetupScreen)
        app.screen.query_one("#name").value = "Dana"  # type: ignore[attr-defined]
        app.screen.query_one("#pass1").value = "correct horse"  # type: ignore[attr-defined]
        app.screen.query_one("#pass2").value = "wrong horse"  # type: ignore[attr-defined]
        await press_button(pilot, "#create")
        await wait_for(pilot, lambda: "do not match" in screen_text(app), what="mismatch error")
        app.screen.query_one("#pass2").value = "correct horse"  # type: ignore[attr-defined]
        app.screen.query_one("#relays").focus()
        await pilot.press("enter")  # Enter in the last field creates the identity
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), what="main screen")
        assert "Dana: conversations" in screen_text(app)
        await pilot.press("ctrl+q")
    app = SamizdatApp(home, connect=False)
    async with app.run_test(size=SIZE) as pilot:
        assert isinstance(app.screen, UnlockScreen)
        await pilot.press(*"not it", "enter")
        await wait_for(pilot, lambda: "Wrong passphrase" in screen_text(app), what="wrong pass")
        assert isinstance(app.screen, UnlockScreen)
        await pilot.press(*"correct horse", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), what="unlocked")
        assert app.engine.identity.name == "Dana"
        await pilot.press("ctrl+q")


# -- contacts ------------------------------------------------------------------------------


async def test_invite_accept_chat_and_verify(people: dict[str, Engine]) -> None:
    alice, bob = people["Alice"], people["Bob"]
    app = SamizdatApp(engine=alice, inline_images=False)
    async with app.run_test(size=SIZE) as pilot:
        await type_line(pilot, "/accept " + await bob.invite())
        await wait_for(pilot, lambda: "Bob" in screen_text(app), what="Bob in the sidebar")
        # Bob knows Alice by name once her Profile arrived (up to POST_JITTER after her Welcome)
        await eventually(lambda: getattr(bob.contact(alice.identity.signature_pub), "name", ""))
        bob_conv = bob.contact(alice.identity.signature_pub).conversation  # type: ignore[union-attr]
        await eventually(lambda: bob.find_conversation("Alice") is not None)
        await bob.send_text(bob_conv, "hi alice, this is bob")
        await wait_for(pilot, lambda: "hi alice, this is bob" in screen_text(app), what="text in")
        await type_line(pilot, "hello bob\nsecond line")
        await eventually(lambda: "hello bob\nsecond line" in texts(bob, bob_conv), what="bob got")
        await wait_for(pilot, lambda: "delivered 1 of 1" in screen_text(app), what="receipt")
        # input history: Up brings the last message back
        composer = app.screen.query_one(Composer)
        composer.focus()
        await pilot.press("up")
        assert composer.text == "hello bob\nsecond line"
        composer.clear()
        # invite dialog with QR code
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: "Your invite" in screen_text(app), what="invite dialog")
        assert "▀" in screen_text(app)  # the QR code's half blocks
        await pilot.press("escape")
        # verify: side by side, confirm
        await type_line(pilot, "/verify Bob")
        await wait_for(pilot, lambda: isinstance(app.screen, VerifyDialog), what="verify dialog")
        number = alice.safety_number(alice.find_contact("Bob"))
        assert number.split()[0] in screen_text(app)
        await press_button(pilot, "#confirm")
        await wait_for(pilot, lambda: alice.find_contact("Bob").verified, what="verified")
        await pilot.press("ctrl+q")


async def test_key_changed_banner(people: dict[str, Engine]) -> None:
    alice, bob = people["Alice"], people["Bob"]
    await alice.connect()
    await befriend(alice, bob)
    contact = alice.find_contact("Bob")
    contact.key_changed = True
    alice._save_contact(contact)  # what the engine does when a peer's key changes
    app = SamizdatApp(engine=alice, inline_images=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "SAFETY NUMBER WITH BOB CHANGED" in screen_text(app))
        await type_line(pilot, "/verify Bob")
        await wait_for(pilot, lambda: "KEY CHANGED" in screen_text(app), what="dialog warning")
        await press_button(pilot, "#confirm")
        await wait_for(pilot, lambda: "SAFETY NUMBER" not in screen_text(app), what="cleared")
        await pilot.press("ctrl+q")


# -- groups -----------------------------------------------------------------------------------


async def test_group_create_add_remove(people: dict[str, Engine]) -> None:
    alice, bob, carol = people["Alice"], people["Bob"], people["Carol"]
    await alice.connect()
    await befriend(alice, bob)
    await befriend(alice, carol)
    app = SamizdatApp(engine=alice, inline_images=False)
    async with app.run_test(size=SIZE) as pilot:
        await type_line(pilot, "/group create Book club")
        await wait_for(pilot, lambda: "Book club" in screen_text(app), what="group shown")
        await wait_for(
            pilot, lambda: "Book club  |  1 member  |" in screen_text(app), what="group opened"
        )
        await type_line(pilot, "/add Bob Carol")
        await wait_for(pilot, lambda: "3 members" in screen_text(app), what="3 members")
        for other in (bob, carol):
            await eventually(
                lambda o=other: any(c.name == "Book club" for c in o.conversations()),
                what=f"{other.identity.name} joined",
            )
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: isinstance(app.screen, MembersDialog), what="members")
        listing = screen_text(app)
        assert "Members of Book club (3)" in listing
        assert "Alice (you)" in listing and "Bob" in listing and "Carol" in listing
        await pilot.press("escape")
        gid = carol.find_conversation("Book club").group_id
        await type_line(pilot, "/remove Carol")
        await wait_for(pilot, lambda: "2 members" in screen_text(app), what="2 members")
        await eventually(lambda: not carol.groups[gid].active, what="carol removed")
        await pilot.press("ctrl+q")


# -- files, photos, articles -----------------------------------------------------------------


PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c4944415408d763f8cfc000000301010018dd8db00000000049454e44ae426082"
)


async def test_file_photo_and_article(
    people: dict[str, Engine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the save dialog proposes the working directory
    alice, bob = people["Alice"], people["Bob"]
    await alice.connect()
    bob_conv = await befriend(alice, bob)
    doc = tmp_path / "notes.bin"
    doc.write_bytes(b"x" * 300_000)  # two chunks: the progress bar moves
    article = tmp_path / "essay.md"
    article.write_text("# Manuscripts\n\nThey **do not** burn.\n", encoding="utf-8")
    app = SamizdatApp(engine=alice, inline_images=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "Bob" in screen_text(app))
        await type_line(pilot, f"/file {doc}")
        await eventually(
            lambda: any(e.kind == "file" for e in bob.history(bob_conv)), what="file at bob"
        )
        await wait_for(pilot, lambda: "notes.bin" in screen_text(app), what="file entry")
        await type_line(pilot, f"/article {article}")
        await eventually(
            lambda: any(e.kind == "article" for e in bob.history(bob_conv)), what="article"
        )
        entry = next(e for e in bob.history(bob_conv) if e.kind == "article")
        assert entry.title == "Manuscripts" and "burn" in entry.text
        # a photo from Bob: shown inline once fetched, and savable
        photo = tmp_path / "dot.png"
        photo.write_bytes(PNG)
        await bob.send_file(bob_conv, photo)
        await wait_for(pilot, lambda: "dot.png" in screen_text(app), what="photo entry")
        view = app.screen.query_one(MessageView)
        item = next(i for i in view.items if i.entry.file.get("name") == "dot.png")
        await wait_for(pilot, lambda: bool(item.query(".photo")), what="inline photo")
        item.focus()
        await pilot.pause()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, FileDialog), what="file dialog")
        dest = tmp_path / "saved.png"
        app.screen.query_one("#save-path").value = str(dest)  # type: ignore[attr-defined]
        await press_button(pilot, "#save")
        await wait_for(pilot, lambda: dest.exists(), what="saved photo")
        assert dest.read_bytes() == PNG
        # reading an article: Markdown full screen
        await bob.send_article(bob_conv, "Samizdat", "# Samizdat\n\nCopied *by hand*.")
        await wait_for(
            pilot, lambda: any(i.entry.title == "Samizdat" for i in view.items), what="article"
        )
        item = next(i for i in view.items if i.entry.title == "Samizdat")
        item.focus()
        await pilot.pause()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ArticleScreen), what="reader")
        await wait_for(pilot, lambda: "Copied by hand" in screen_text(app), what="markdown")
        await pilot.press("escape")
        await pilot.press("ctrl+q")


async def test_article_editor_and_disappearing(people: dict[str, Engine]) -> None:
    alice, bob = people["Alice"], people["Bob"]
    await alice.connect()
    bob_conv = await befriend(alice, bob)
    app = SamizdatApp(engine=alice, inline_images=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "Bob" in screen_text(app))
        await type_line(pilot, "/article")
        await wait_for(pilot, lambda: "Write an article" in screen_text(app), what="editor")
        app.screen.query_one("#article-title").value = "Field notes"  # type: ignore[attr-defined]
        app.screen.query_one("#article-body").text = "# Field notes\n\nLong text."  # type: ignore[attr-defined]
        await pilot.press("ctrl+s")
        await eventually(
            lambda: any(e.title == "Field notes" for e in bob.history(bob_conv)), what="article"
        )
        await type_line(pilot, "/disappear 3600")
        await wait_for(pilot, lambda: "disappear after 1h" in screen_text(app), what="timer")
        await type_line(pilot, "short-lived")
        await wait_for(pilot, lambda: "disappears in" in screen_text(app), what="countdown")
        await pilot.press("ctrl+q")


# -- relays -------------------------------------------------------------------------------------


async def test_relay_failover_shown(tmp_path: Path) -> None:
    own = [RelayProcess(tmp_path / f"r{i}").start() for i in range(2)]
    urls = [r.url for r in own]
    alice = make_engine(tmp_path / "alice", "Alice", urls)
    bob = make_engine(tmp_path / "bob", "Bob", urls)
    try:
        await alice.connect()
        await bob.connect()
        bob_conv = await befriend(alice, bob)
        app = SamizdatApp(engine=alice, inline_images=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: "relays 2/2 connected" in screen_text(app))
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: isinstance(app.screen, RelaysScreen), what="relays")
            await wait_for(pilot, lambda: screen_text(app).count("connected") == 2)
            own[0].kill()
            await wait_for(pilot, lambda: "FAILED" in screen_text(app), what="failure shown")
            await pilot.press("escape")
            await wait_for(pilot, lambda: "relays 1/2 connected" in screen_text(app))
            # the conversation goes on over the other relay
            await bob.send_text(bob_conv, "still here via relay 2")
            await wait_for(pilot, lambda: "still here via relay 2" in screen_text(app))
            await pilot.press("ctrl+q")
    finally:
        for e in (alice, bob):
            if not e._closing:
                await e.close()
        for r in own:
            r.stop()


# -- screens, palette, themes -----------------------------------------------------------------


async def test_help_palette_and_theme(people: dict[str, Engine]) -> None:
    app = SamizdatApp(engine=people["Alice"], connect=False, inline_images=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        await wait_for(pilot, lambda: "command palette" in screen_text(app), what="keys")
        await pilot.press("escape")
        assert app.theme == "textual-dark"
        await pilot.press("ctrl+t")
        assert app.theme == "textual-light"
        await pilot.press("ctrl+p")
        await pilot.press(*"relays")
        await wait_for(pilot, lambda: "relay status" in screen_text(app), what="palette hit")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RelaysScreen), what="palette ran")
        await pilot.press("escape")
        await pilot.press("ctrl+q")


# -- 10,000 messages ------------------------------------------------------------------------------


async def test_ten_thousand_messages_stay_paged(
    people: dict[str, Engine], relays: list[RelayProcess]
) -> None:
    alice, bob = people["Alice"], people["Bob"]
    await alice.connect()
    conv = await befriend(alice, bob)
    alice_conv = alice.find_conversation("Bob").group_id
    ns = history_ns(alice_conv)
    with alice.store.transaction():  # a long history, written straight into the store
        for i in range(10_000):
            entry = HistoryEntry(
                i.to_bytes(8, "big"),
                bob.identity.signature_pub,
                "text",
                1_000 + i,
                1_000 + i,
                text=f"message number {i}",
            )
            alice.store.append(ns, entry.to_json())
    # The work done, not the time taken (a loaded machine makes any time
    # limit flaky): count the history entries read from the store.
    rows_read = 0
    read_log = alice.store.read_log

    def counting_read_log(ns: str, **kw: Any) -> list[tuple[int, bytes]]:
        nonlocal rows_read
        rows = read_log(ns, **kw)
        if ns == ns_history:
            rows_read += len(rows)
        return rows

    ns_history = ns
    alice.store.read_log = counting_read_log  # type: ignore[method-assign]
    app = SamizdatApp(engine=alice, inline_images=False)
    async with app.run_test(size=SIZE) as pilot:
        view = app.screen.query_one(MessageView)
        started = time.perf_counter()
        app.screen.open_conversation(alice_conv)  # type: ignore[attr-defined]
        await wait_for(pilot, lambda: "message number 9999" in screen_text(app), what="newest")
        opened = time.perf_counter() - started
        print(
            f"\nopening a conversation of 10,000 messages: {opened * 1000:.0f} ms, "
            f"{rows_read} entries read"
        )
        assert len(view.items) <= MessageView.WINDOW
        assert rows_read <= 2 * MessageView.WINDOW  # a page, not the whole history
        # scroll up ten pages: older messages load, the widget count stays bounded
        for _ in range(10):
            first = view.items[0].entry.text
            await wait_for(pilot, lambda: view.scroll_y > 0 and not view.paging, what="settled")
            view.scroll_home(animate=False, immediate=True)
            await wait_for(pilot, lambda f=first: view.items[0].entry.text != f, what="older")
            await wait_for(pilot, lambda: not view.paging, what="page done")
            assert len(view.items) <= MessageView.WINDOW
        assert view.items[0].entry.text == f"message number {10_000 - 100 - 10 * 50}"
        assert len(list(app.screen.query(MessageItem))) <= MessageView.WINDOW
        # live messages still arrive; Ctrl+L jumps back to them
        await bob.send_text(conv, "live one")
        await wait_for(pilot, lambda: "newer message" in screen_text(app), what="hint")
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: "live one" in screen_text(app), what="back at the end")
        await pilot.press("ctrl+q")
