"""The Textual application: the console."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, Static

from .controller import Controller


class KerubApp(App[None]):
    TITLE = "kerub-tui"
    BINDINGS = [Binding("q", "quit", "Quit", id="app.quit")]

    def __init__(self, controller: Controller) -> None:
        super().__init__()
        self.controller = controller

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(
            "No hosts yet.\n\nAdd your first host from a shell:\n"
            "  kerub-tui host add ADDRESS[:PORT] --user root\n",
            id="first-run",
        )
        yield Footer()

    async def on_mount(self) -> None:
        self.sub_title = str(self.controller.data_dir)

    async def on_unmount(self) -> None:
        await self.controller.stop()
