"""Snapshot tests: the main screens at 110x32, dark and light, with fixed
data (a fake engine: fixed names, keys and timestamps, TZ=UTC)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from textual.pilot import Pilot

from client.tui.app import SamizdatApp
from client.tui.screens.setup import SetupScreen
from tests.tui_support import FakeEngine

SIZE = (110, 32)


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def app(theme: str = "textual-dark") -> SamizdatApp:
    return SamizdatApp(engine=FakeEngine(), connect=False, inline_images=False, theme=theme)


async def settle(pilot: Pilot[object]) -> None:
    """Let the app settle, with every cursor steady: a blinking cursor (0.5 s)
    would make the image depend on when it is taken."""
    await pilot.pause(0.3)
    for screen in pilot.app.screen_stack:
        for widget in screen.query("Input, TextArea"):
            widget.cursor_blink = False  # type: ignore[attr-defined]
    await pilot.pause(0.1)


def test_main_screen_dark(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(app(), terminal_size=SIZE, run_before=settle)


def test_main_screen_light(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(app("textual-light"), terminal_size=SIZE, run_before=settle)


def test_invite_dialog(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def run(pilot: Pilot[object]) -> None:
        await settle(pilot)
        await pilot.press("ctrl+o")
        await settle(pilot)

    assert snap_compare(app(), terminal_size=(110, 48), run_before=run)


def test_verify_dialog_key_changed(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def run(pilot: Pilot[object]) -> None:
        await settle(pilot)
        await pilot.press(*"/verify Carol", "enter")
        await settle(pilot)

    assert snap_compare(app(), terminal_size=(110, 40), run_before=run)


def test_relays_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def run(pilot: Pilot[object]) -> None:
        await settle(pilot)
        await pilot.press("ctrl+r")
        await settle(pilot)

    assert snap_compare(app(), terminal_size=SIZE, run_before=run)


def test_help_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def run(pilot: Pilot[object]) -> None:
        await settle(pilot)
        await pilot.press("f1")
        await settle(pilot)

    assert snap_compare(app(), terminal_size=SIZE, run_before=run)


def test_setup_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """First run (no identity yet): one setup screen, relays prefilled."""
    relays = "https://relay-a.example https://relay-b.example"
    first_run = SamizdatApp(default_relays=relays)

    async def run(pilot: Pilot[object]) -> None:
        await settle(pilot)
        setups = [s for s in pilot.app.screen_stack if isinstance(s, SetupScreen)]
        assert len(setups) == 1
        assert pilot.app.screen.query_one("#relays").value == relays  # type: ignore[attr-defined]

    assert snap_compare(first_run, terminal_size=(110, 36), run_before=run)
