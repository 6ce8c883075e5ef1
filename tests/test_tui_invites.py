"""The terminal app's /invite N, /invite list and /invite revoke ID against
real relays and engines (GitHub issue 11, item 2)."""

from __future__ import annotations

import time

import pytest

from client.engine import Engine, EngineError
from client.tui.app import SamizdatApp
from client.tui.dialogs.invite import InviteDialog
from tests.test_tui import SIZE, people, relays, type_line  # noqa: F401  (fixtures)
from tests.tui_support import screen_text, wait_for

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:Image.Image.getdata is deprecated:DeprecationWarning"),
]


def notes(app: SamizdatApp) -> str:
    """The text of the notifications (toasts) shown so far."""
    return "\n".join(n.message for n in app._notifications)


async def test_invite_for_two_list_and_revoke(people: dict[str, Engine]) -> None:  # noqa: F811
    alice, bob = people["Alice"], people["Bob"]
    app = SamizdatApp(engine=alice, inline_images=False)
    async with app.run_test(size=SIZE) as pilot:
        await type_line(pilot, "/invite 2")
        await wait_for(pilot, lambda: isinstance(app.screen, InviteDialog), what="the dialog")
        # the dialog is pushed before it is drawn: wait for its text (a loaded machine)
        await wait_for(pilot, lambda: "for 2 people" in screen_text(app), what="'for 2 people'")
        dialog = app.screen
        assert isinstance(dialog, InviteDialog)
        link = dialog.link
        await pilot.press("escape")
        [record] = alice.invites()
        assert record.max_uses == 2 and record.current_state(int(time.time() * 1000)) == "active"
        await type_line(pilot, "/invite list")
        await wait_for(pilot, lambda: record.invite_id.hex() in notes(app), what="the list")
        await type_line(pilot, f"/invite revoke {record.invite_id.hex()[:6]}")
        await wait_for(pilot, lambda: alice.invites()[0].deleted, what="the revocation")
        assert alice.invites()[0].state == "revoked"
        with pytest.raises(EngineError, match="no longer valid"):
            await bob.accept(link)
        await type_line(pilot, "/invite revoke nothing-like-it")
        await wait_for(pilot, lambda: "no invite 'nothing-like-it'" in notes(app), what="error")
        await pilot.press("ctrl+q")
