"""The first-run form refuses what the CLI refuses: a relay URL is checked by
the same function as ``samizdat init --relay`` (client/urls.py), the error is
shown inline, and nothing is created.  No relay is needed: nothing connects."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input

from client.tui.app import SamizdatApp
from client.tui.screens.main import MainScreen
from client.tui.screens.relays import RelaysScreen
from client.tui.screens.setup import SetupScreen
from client.urls import check_relay_url
from tests.client_support import make_engine
from tests.tui_support import screen_text, wait_for

pytestmark = pytest.mark.timeout(120)

BAD_RELAYS = ["https://", "notaurl", "https://relay.example:99999", "ftp://relay.example"]


@pytest.mark.parametrize("size", [(80, 24), (160, 45)])
async def test_setup_refuses_a_relay_url_without_a_host(
    tmp_path: Path, size: tuple[int, int]
) -> None:
    home = tmp_path / "home"
    app = SamizdatApp(home, fast_kdf=True, default_relays="", connect=False)
    async with app.run_test(size=size) as pilot:
        assert isinstance(app.screen, SetupScreen)
        form = app.screen
        form.query_one("#name", Input).value = "Dana"
        form.query_one("#pass1", Input).value = "correct horse"
        form.query_one("#pass2", Input).value = "correct horse"
        for bad in BAD_RELAYS:
            with pytest.raises(ValueError):
                check_relay_url(bad)
            form.query_one("#relays", Input).value = f"https://relay-one.example {bad}"
            form.query_one("#relays", Input).focus()
            await pilot.press("enter")  # Enter in the last field submits the form
            await wait_for(
                pilot, lambda bad=bad: f"{bad!r} is not a relay URL" in screen_text(app),
                what=f"the inline error for {bad!r}",
            )  # fmt: skip
            assert app.screen is form and not isinstance(app.screen, MainScreen)
            assert not home.exists() or not any(home.iterdir()), "an identity was created"
        # the form still works once the URL is fixed
        form.query_one("#relays", Input).value = "https://relay-one.example wss://relay-two.example"
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), what="main screen")
        assert app.engine.identity.relays == [
            "https://relay-one.example",
            "wss://relay-two.example",
        ]
        await pilot.press("ctrl+q")


async def test_relays_screen_refuses_a_relay_url_without_a_host(tmp_path: Path) -> None:
    engine = make_engine(tmp_path / "alice", "Alice", ["https://relay-one.example"])
    app = SamizdatApp(engine=engine, connect=False, inline_images=False)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), what="main screen")
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: isinstance(app.screen, RelaysScreen), what="relays")
            app.screen.query_one("#relay-url", Input).value = "https://"
            app.screen.query_one("#relay-url", Input).focus()
            await pilot.press("enter")  # Add
            # a toast (wrapped on screen): read the app's notifications
            await wait_for(
                pilot,
                lambda: any(
                    "'https://' is not a relay URL" in n.message for n in app._notifications
                ),
                what="the error for 'https://'",
            )
            assert engine.identity.relays == ["https://relay-one.example"]
            await pilot.press("escape", "ctrl+q")
    finally:
        if not engine._closing:
            await engine.close()
