"""The terminal app's new-group dialog offers a post-quantum group (SPEC §4.1.1)."""

from __future__ import annotations

import pytest
from textual.widgets import Checkbox

from client.suites import DEFAULT_SUITE
from client.tui.app import SamizdatApp
from client.tui.dialogs.prompt import PromptDialog
from client.tui.screens.main import MainScreen
from protocol.mls.crypto import MLKEM768X25519_SUITE
from tests.tui_support import FakeEngine, wait_for

pytestmark = [pytest.mark.timeout(120)]


async def _new_group(pq: bool) -> list[tuple[object, ...]]:
    engine = FakeEngine()
    app = SamizdatApp(engine=engine, connect=False, inline_images=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), what="main screen")
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: isinstance(app.screen, PromptDialog), what="dialog")
        if pq:
            app.screen.query_one(Checkbox).value = True
            await pilot.pause()
        app.screen.query_one("#prompt-input").focus()
        await pilot.press(*"Quantum club", "enter")
        await wait_for(
            pilot,
            lambda: any(c[0] == "create_group" for c in engine.calls),
            what="group created",
        )
    return [c for c in engine.calls if c[0] == "create_group"]


async def test_new_group_dialog_creates_a_post_quantum_group() -> None:
    assert await _new_group(pq=True) == [("create_group", "Quantum club", MLKEM768X25519_SUITE)]


async def test_new_group_dialog_stays_classic_by_default() -> None:
    assert await _new_group(pq=False) == [("create_group", "Quantum club")]


async def test_slash_group_create_pq() -> None:
    engine = FakeEngine()
    app = SamizdatApp(engine=engine, connect=False, inline_images=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), what="main screen")
        screen = app.screen
        assert isinstance(screen, MainScreen)
        screen.cmd_group(["create", "--pq", "Quantum", "club"])
        await wait_for(
            pilot,
            lambda: any(c[0] == "create_group" for c in engine.calls),
            what="group created",
        )
    assert [c for c in engine.calls if c[0] == "create_group"] == [
        ("create_group", "Quantum club", MLKEM768X25519_SUITE)
    ]


@pytest.mark.parametrize(("args", "suite"), [([], None), (["--pq"], MLKEM768X25519_SUITE)])
async def test_slash_invite_pq_makes_a_post_quantum_invite(
    args: list[str], suite: int | None
) -> None:
    """``/invite --pq``: the 1:1 chat the invite opens is post-quantum."""
    engine = FakeEngine()
    app = SamizdatApp(engine=engine, connect=False, inline_images=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), what="main screen")
        screen = app.screen
        assert isinstance(screen, MainScreen)
        screen.cmd_invite(args)
        await wait_for(pilot, lambda: bool(engine.invite_suites), what="invite made")
    assert engine.invite_suites == [suite or DEFAULT_SUITE]
