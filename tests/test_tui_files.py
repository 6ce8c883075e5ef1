"""The terminal app and received files: photos are shown from memory only,
never fetched from a server the sender chose, and saved under a safe name."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from client.engine import Engine
from client.tui.app import SamizdatApp
from client.tui.dialogs.file import FileDialog
from client.tui.dialogs.prompt import ConfirmDialog
from client.tui.widgets.message_view import MessageView
from protocol.app import attachments
from protocol.app.messages import BlobRef, ChunkRef, File
from tests.client_support import RelayProcess, befriend, make_engine, scan_for
from tests.hostile_blob import hostile_blob_server
from tests.tui_support import screen_text, wait_for

pytestmark = [
    pytest.mark.timeout(120),
    # textual-image 0.12 still calls a Pillow API that Pillow 12 deprecates
    pytest.mark.filterwarnings("ignore:Image.Image.getdata is deprecated:DeprecationWarning"),
]
SIZE = (120, 40)
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c4944415408d763f8cfc000000301010018dd8db00000000049454e44ae426082"
)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    proc = RelayProcess(tmp_path / "relay").start()
    yield proc
    proc.stop()


@pytest.fixture
async def pair(tmp_path: Path, relay: RelayProcess) -> AsyncIterator[tuple[Engine, Engine]]:
    alice = make_engine(tmp_path / "alice", "Alice", [relay.url])
    bob = make_engine(tmp_path / "bob", "Bob", [relay.url])
    await bob.connect()
    yield alice, bob
    for e in (alice, bob):
        if not e.closed:
            await e.close()


async def test_photos_stay_in_memory_and_on_the_conversations_relays(
    pair: tuple[Engine, Engine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = pair
    scratch = tmp_path / "tmp"  # where any temporary file of the app would go
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    await alice.connect()
    conv = await befriend(alice, bob)
    app = SamizdatApp(engine=alice, inline_images=True)
    async with hostile_blob_server() as server, app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "Bob" in screen_text(app))
        photo = tmp_path / "dot.png"
        photo.write_bytes(PNG)
        await bob.send_file(conv, photo)
        await wait_for(pilot, lambda: "dot.png" in screen_text(app), what="photo entry")
        view = app.screen.query_one(MessageView)
        item = next(i for i in view.items if i.entry.file.get("name") == "dot.png")
        await wait_for(pilot, lambda: bool(item.query(".photo")), what="inline photo")
        assert scan_for([scratch, work], [PNG]) == [], "a photo was written in plaintext"

        # a "photo" whose chunk is on a server of the sender's choosing
        enc = attachments.encrypt_file(PNG, lambda n: bytes(n))
        ref = ChunkRef((BlobRef(server.url, bytes(16), bytes(32)),))
        body = File(
            "../../.bashrc",
            "image/png",
            enc.size,
            attachments.CHUNK_PLAINTEXT_SIZE,
            enc.key,
            (ref,),
            enc.ciphertext_digest,
        )
        await bob._send_app(conv, body)
        await wait_for(pilot, lambda: "bashrc" in screen_text(app), what="hostile photo")
        bad = next(i for i in view.items if "bashrc" in i.entry.file.get("name", ""))
        view.scroll_end(animate=False)
        await pilot.pause(0.5)
        assert server.requests == [], "an inline photo was fetched from the sender's server"

        bad.focus()
        await pilot.pause()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, FileDialog), what="file dialog")
        proposed = Path(app.screen.query_one("#save-path").value)  # type: ignore[attr-defined]
        assert proposed == work / "bashrc"
        await pilot.click("#save")
        # the user is asked before the outside relay is contacted, and says no
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="confirm")
        assert server.url in screen_text(app)
        await pilot.click("#no")
        await pilot.pause(0.3)
        assert server.requests == [] and not proposed.exists()
        # asked again, the user agrees: one download, cut off at one chunk
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, FileDialog), what="dialog")
        await pilot.click("#save")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="confirm")
        await pilot.click("#yes")
        await wait_for(pilot, lambda: len(server.requests) == 1, what="the allowed download")
        await wait_for(
            pilot,
            lambda: not [w for w in app.workers if w.group == "engine" and w.is_running],
            what="the download to end",
        )
        assert server.finished == 0 and not proposed.exists()
        assert server.url not in alice.relays
