"""The app at 80x24 and 160x45 with a fixed fake engine (no network, fast):
focus and regions, the conversation switcher, dialogs that fit, small
wording fixes, quitting and an ordered shutdown."""

from __future__ import annotations

import asyncio

import pytest
from textual.widgets import Button

from client.store.errors import StoreClosed
from client.tui.app import SamizdatApp
from client.tui.dialogs.invite import InviteDialog
from client.tui.dialogs.prompt import ConfirmDialog, PromptDialog
from client.tui.dialogs.verify import VerifyDialog
from client.tui.screens.main import MainScreen
from client.tui.widgets.composer import Composer
from client.tui.widgets.message_view import MessageItem, MessageView
from client.tui.widgets.sidebar import Sidebar
from tests.tui_support import T0, FakeEngine, screen_text, wait_for

pytestmark = [pytest.mark.timeout(120)]
SIZES = [(80, 24), (160, 45)]


def make_app(engine: FakeEngine | None = None) -> SamizdatApp:
    return SamizdatApp(engine=engine or FakeEngine(), connect=False, inline_images=False)


async def opened(pilot, app: SamizdatApp) -> MainScreen:  # type: ignore[no-untyped-def]
    await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), what="main screen")
    screen = app.screen
    assert isinstance(screen, MainScreen)
    await wait_for(pilot, lambda: bool(screen.query_one(MessageView).items), what="messages")
    return screen


def region(screen: MainScreen) -> str:
    focused = screen.focused
    if isinstance(focused, Composer):
        return "composer"
    if isinstance(focused, Sidebar):
        return "sidebar"
    if isinstance(focused, (MessageItem, MessageView)):
        return "messages"
    return repr(focused)


@pytest.mark.parametrize("size", SIZES)
async def test_focus_returns_to_the_composer_after_a_new_group(size: tuple[int, int]) -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=size) as pilot:
        screen = await opened(pilot, app)
        screen.query_one(MessageView).items[-1].focus()
        await pilot.pause()
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: isinstance(app.screen, PromptDialog), what="prompt")
        await pilot.press(*"Book club", "enter")
        await wait_for(pilot, lambda: screen.conv_id == bytes([22]) * 16, what="new group open")
        await pilot.pause(0.2)
        await pilot.press(*"hello")
        assert screen.query_one(Composer).text == "hello"
        # "1 member", not "1 members"
        await wait_for(pilot, lambda: "1 member " in screen_text(app) + " ", what="1 member")
        assert "1 members" not in screen_text(app)


@pytest.mark.parametrize("size", SIZES)
async def test_tab_moves_between_regions_not_messages(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        screen = await opened(pilot, app)
        assert region(screen) == "composer"
        seen = []
        for _ in range(3):
            await pilot.press("tab")
            await pilot.pause()
            seen.append(region(screen))
        assert seen == ["sidebar", "messages", "composer"]
        for _ in range(3):
            await pilot.press("shift+tab")
            await pilot.pause()
            seen.append(region(screen))
        assert seen[3:] == ["messages", "sidebar", "composer"]
        # in the messages region, Up/Down walk the messages; the newest comes first
        await pilot.press("shift+tab")
        await pilot.pause()
        items = screen.query_one(MessageView).items
        assert screen.focused is items[-1]
        await pilot.press("up")
        await pilot.pause()
        assert screen.focused is items[-2]
        await pilot.press("down")
        await pilot.pause()
        assert screen.focused is items[-1]


async def test_the_focused_message_is_clearly_marked() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await opened(pilot, app)
        items = screen.query_one(MessageView).items
        items[-1].focus()
        await pilot.pause()
        focused, other = items[-1], items[-2]
        # a visible bar beside the focused message, not only a faint background
        assert focused.styles.border_left[0] not in ("", "none", "blank", "hidden")
        assert other.styles.border_left[0] in ("", "none", "blank", "hidden")
        assert focused.styles.background != other.styles.background


@pytest.mark.parametrize("size", SIZES)
async def test_switcher_finds_conversations_and_contacts(size: tuple[int, int]) -> None:
    engine = FakeEngine()
    app = make_app(engine)
    async with app.run_test(size=size) as pilot:
        screen = await opened(pilot, app)
        assert screen.conv_id == engine.group
        await pilot.press("ctrl+k")
        await pilot.pause(0.2)
        await pilot.press(*"bob")
        await wait_for(pilot, lambda: "Bob" in screen_text(app), what="Bob in the switcher")
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.conv_id == engine.direct, what="Bob opened")
        await wait_for(pilot, lambda: region(screen) == "composer", what="composer focus")
        # the command palette finds conversations by name too
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"readers")
        await wait_for(pilot, lambda: "Readers" in screen_text(app), what="Readers hit")
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.conv_id == engine.group, what="Readers opened")


async def test_the_palette_offers_no_screenshot() -> None:
    """A screenshot would write the conversation in clear to a file."""
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot, app)
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"screensh")
        await pilot.pause(0.5)
        assert "Screenshot" not in screen_text(app)


def fully_visible(app: SamizdatApp, selector: str) -> bool:
    widget = app.screen.query_one(selector)
    return app.screen.region.contains_region(widget.region) and widget.region.height > 0


@pytest.mark.parametrize("size", SIZES)
async def test_invite_and_verify_dialogs_fit(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await opened(pilot, app)
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, InviteDialog), what="invite")
        await pilot.pause(0.2)
        assert fully_visible(app, "#close") and fully_visible(app, "#copy")
        box = app.screen.query_one("#invite-qr-box")
        qr = app.screen.query_one("#invite-qr")
        # the whole code is on screen, or its box scrolls to every row of it
        assert box.region.height > 0
        assert qr.region.height <= box.region.height or box.max_scroll_y >= (
            qr.virtual_region.height - box.scrollable_content_region.height
        )
        assert app.screen.region.contains_region(box.region)
        await pilot.press("escape")
        await pilot.pause()
        composer = app.screen.query_one(Composer)
        composer.focus()
        composer.text = "/verify Carol"
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, VerifyDialog), what="verify")
        await pilot.pause(0.2)
        assert fully_visible(app, "#confirm") and fully_visible(app, "#cancel")
        assert fully_visible(app, "#safety-number")
        assert "12345" in screen_text(app)


async def test_article_previews_show_no_markdown_and_verified_contacts_are_marked() -> None:
    from client.model import HistoryEntry

    engine = FakeEngine()
    engine._history[engine.group].append(
        HistoryEntry(
            b"g6",
            engine.carol,
            "article",
            T0 + 300_000,
            T0,
            title="Notes",
            text="# Notes\n\nWords **must** not be _silenced_, see [this](https://x.example).",
        )
    )
    app = make_app(engine)
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await opened(pilot, app)
        await wait_for(pilot, lambda: "Words must not be silenced, see this." in screen_text(app))
        assert "**" not in screen_text(app)
        sidebar = screen.query_one(Sidebar)
        labels = [str(sidebar.get_option_at_index(i).prompt) for i in range(sidebar.option_count)]
        bob = next(label for label in labels if "Bob" in label)
        assert "✓" in bob  # Bob is verified in the fake engine
        assert not any("✓" in label for label in labels if "Readers" in label)


@pytest.mark.parametrize("size", SIZES)
async def test_ctrl_c_asks_then_quits(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await opened(pilot, app)
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="quit?")
        await pilot.press("escape")  # no: still running
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), what="back")
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="quit?")
        app.screen.query_one("#yes", Button).press()
        await wait_for(pilot, lambda: app.return_code is not None, what="exit")
    assert app.return_code == 0


class SlowClosingEngine(FakeEngine):
    """Closing takes a while (a loaded machine); a closed store raises."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    async def close(self) -> None:
        self.closed = True
        await asyncio.sleep(2.5)

    def _check(self) -> None:
        if self.closed:
            raise StoreClosed("the store is closed")

    def history(self, conv_id: bytes, limit: int | None = None):  # type: ignore[no-untyped-def]
        self._check()
        return super().history(conv_id, limit)

    def status(self, message_id: bytes):  # type: ignore[no-untyped-def]
        self._check()
        return super().status(message_id)

    def conversations(self):  # type: ignore[no-untyped-def]
        self._check()
        return super().conversations()


async def test_quitting_stops_the_screen_before_closing_the_engine() -> None:
    engine = SlowClosingEngine()
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot, app)
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: app.return_code is not None, what="exit")
    assert engine.closed and app.return_code == 0
