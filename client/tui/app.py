"""The Samizdat app and ``run_app`` (what ``samizdat`` runs without a subcommand).

The engine lives on the app's event loop (Textual runs on asyncio): opening
or creating the store (Argon2id, slow on purpose) runs in a thread worker,
``connect`` in an async worker, and :class:`~client.tui.bridge.EngineBridge`
turns engine callbacks into messages for the main screen.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import App
from textual.binding import Binding, BindingType

from client.tui.commands import ConversationSwitcher, SamizdatCommands
from client.tui.dialogs.prompt import ConfirmDialog
from client.tui.screens.loading import LoadingScreen
from client.tui.screens.main import MainScreen
from client.tui.screens.setup import SetupScreen
from client.tui.screens.unlock import UnlockScreen
from protocol.errors import SamizdatError

# A demo (or a test) prepares an engine on the app's loop, reporting steps.
Prepare = Callable[[Callable[[str], None]], Awaitable[Any]]


class SamizdatApp(App[int]):
    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "Samizdat"
    COMMANDS = App.COMMANDS | {SamizdatCommands, ConversationSwitcher}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("ctrl+c", "ask_quit", "Quit", show=False, priority=True),
    ]
    # short terminals (80x24) get compact dialogs (app.tcss: .-short)
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]  # noqa: RUF012 (as Textual)
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]  # noqa: RUF012

    def __init__(
        self,
        home: Path | None = None,
        *,
        engine: Any = None,
        prepare: Prepare | None = None,
        cleanup: Callable[[], Awaitable[None]] | None = None,
        passphrase: str | None = None,
        proxy: str | None = None,
        default_relays: str = "",
        connect: bool = True,
        inline_images: bool = True,
        fast_kdf: bool = False,
        theme: str = "textual-dark",
    ) -> None:
        super().__init__()
        self.home = home
        self.engine: Any = engine
        self.prepare = prepare
        self.cleanup = cleanup
        self.passphrase = passphrase
        self.proxy = proxy
        self.default_relays = default_relays
        self.connect_engine = connect
        self.inline_images = inline_images
        self.fast_kdf = fast_kdf
        self.theme = theme
        self.main: MainScreen | None = None

    def on_mount(self) -> None:
        if self.engine is not None:
            self.start(self.engine)
        elif self.prepare is not None:
            loading = LoadingScreen("Starting the Samizdat demo")
            self.push_screen(loading)
            self._prepare(loading)
        elif self.home is not None and _store_exists(self.home):
            self.push_screen(UnlockScreen(str(self.home)))
            if self.passphrase:
                self._unlock(self.passphrase)
        else:
            self.push_screen(SetupScreen(self.default_relays))

    def start(self, engine: Any) -> None:
        """Show the main screen for an open engine and connect it."""
        self.engine = engine
        self.main = MainScreen(engine, inline_images=self.inline_images)
        if len(self.screen_stack) > 1:
            self.switch_screen(self.main)
        else:
            self.push_screen(self.main)
        if self.connect_engine:
            self._connect()

    @work(group="engine", exclusive=True)
    async def _connect(self) -> None:
        try:
            await self.engine.connect()
        except (SamizdatError, OSError) as exc:
            self.notify(f"could not connect: {exc}", severity="error")

    @work(group="prepare")
    async def _prepare(self, loading: LoadingScreen) -> None:
        assert self.prepare is not None
        try:
            engine = await self.prepare(loading.step)
        except Exception as exc:
            loading.step(f"failed: {exc}")
            self.notify(f"could not start: {exc}", severity="error", timeout=30)
            return
        self.connect_engine = False  # prepared engines are connected already
        self.start(engine)

    # -- unlock and first run -------------------------------------------------------

    @on(UnlockScreen.Submitted)
    def _unlock_submitted(self, event: UnlockScreen.Submitted) -> None:
        self._unlock(event.passphrase)

    @work(group="unlock", exclusive=True, thread=True)
    def _unlock(self, passphrase: str) -> None:
        from client.engine import Engine
        from client.store.errors import StoreLocked, WrongPassphrase

        assert self.home is not None
        try:
            engine = Engine.open(self.home, passphrase.encode(), proxy=self.proxy)
        except WrongPassphrase:
            self.call_from_thread(self._unlock_failed, "Wrong passphrase. Try again.")
            return
        except StoreLocked:
            self.call_from_thread(
                self._unlock_failed, "This identity is open in another Samizdat; close it first."
            )
            return
        except (SamizdatError, OSError) as exc:
            self.call_from_thread(self._unlock_failed, f"Cannot open {self.home}: {exc}")
            return
        self.call_from_thread(self.start, engine)

    def _unlock_failed(self, text: str) -> None:
        if isinstance(self.screen, UnlockScreen):
            self.screen.failed(text)
        self.notify(text, severity="error")

    @on(SetupScreen.Completed)
    def _setup_completed(self, event: SetupScreen.Completed) -> None:
        self._create(event.name, event.passphrase, event.relays)

    @work(group="unlock", exclusive=True, thread=True)
    def _create(self, name: str, passphrase: str, relays: list[str]) -> None:
        from client.engine import Engine

        assert self.home is not None
        try:
            engine = Engine.create(
                self.home,
                passphrase.encode(),
                name,
                relays,
                proxy=self.proxy,
                fast_kdf=self.fast_kdf,
            )
        except (SamizdatError, OSError) as exc:
            self.call_from_thread(self._create_failed, str(exc))
            return
        self.call_from_thread(self.start, engine)

    def _create_failed(self, text: str) -> None:
        if isinstance(self.screen, SetupScreen):
            self.screen.failed(f"Could not create the identity: {text}")
        self.notify(text, severity="error")

    # -- themes and shutdown ----------------------------------------------------------

    def get_system_commands(self, screen: Any) -> Any:
        """Textual's palette entries, without "Screenshot": it would write the
        open conversation in clear to an SVG file outside the encrypted store."""
        for command in super().get_system_commands(screen):
            if command.title != "Screenshot":
                yield command

    async def action_ask_quit(self) -> None:
        """Ctrl+C: ask first (a second Ctrl+C, or Enter on "Quit", quits)."""
        if isinstance(self.screen, ConfirmDialog) and self.screen.id == "quit-dialog":
            await self.action_quit()
            return

        async def answered(yes: bool | None) -> None:
            if yes:
                await self.action_quit()

        dialog = ConfirmDialog("Quit Samizdat?", "Close the app (ctrl+q quits at once).", "Quit")
        dialog.id = "quit-dialog"
        self.push_screen(dialog, answered)

    def action_toggle_dark(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    async def action_quit(self) -> None:
        await self.close_engine()
        self.exit(0)

    async def close_engine(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            if self.main is not None:
                self.main.shutdown()  # nothing reads the engine while it closes
            try:
                await engine.close()
            except Exception as exc:  # closing must never hang the exit
                self.log.error(f"closing the engine: {exc}")
        cleanup, self.cleanup = self.cleanup, None
        if cleanup is not None:
            await cleanup()

    async def on_unmount(self) -> None:
        await self.close_engine()


def _store_exists(home: Path) -> bool:
    from client.store import Store

    return Store.exists(home)


def run_app(args: argparse.Namespace) -> int:
    """``samizdat`` with no subcommand."""
    home = Path(args.home)
    passphrase = None
    if getattr(args, "passphrase_file", None):
        passphrase = Path(args.passphrase_file).read_text().rstrip("\r\n")
    elif os.environ.get("SAMIZDAT_PASSPHRASE") is not None:
        passphrase = os.environ["SAMIZDAT_PASSPHRASE"]
    app = SamizdatApp(
        home,
        passphrase=passphrase,
        proxy=getattr(args, "proxy", None),
        default_relays=os.environ.get("SAMIZDAT_RELAYS", ""),
    )
    return int(app.run() or 0)
