"""The guest's screen in the terminal (issue 12): a picture drawn with half blocks, and the serial
console attached in place of the console (``App.suspend``).

The picture is libvirt's screenshot through the host's tunnel (the API's ``screenshot``, a PNG),
scaled to the panel's width and drawn with "▀": each cell shows two pixels, the upper one in the
foreground colour and the lower one in the background colour, so square pixels stay square in
terminal cells about twice as high as wide. It is taken when the VM detail opens or comes back into
view, when the VM's state changes, and on a key: never on a timer, and never while the detail is not shown
(another screen over it, or the terminal handed to the guest's serial console).
Where this machine has tesseract, the text the screen reads is said under it (core/ocr.py): half blocks
show a text screen's layout, not its words.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, cast

from rich.color import Color
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import SuspendNotSupported
from textual.widgets import Static

from ..api import ActionError
from ..core.models import VirtualMachine, VirtualMachineDynamic, VmStatus
from ..core.ocr import read_text
from ..core.picture import Picture, PictureError, from_png
from ..core.terminal import ESCAPE_NAME, attach
from .format import data

if TYPE_CHECKING:
    from ..app import KerubApp

log = logging.getLogger(__name__)

UPPER_HALF = "▀"


class HalfBlocks:
    """A rich renderable: ``picture`` (its height even) as width x height/2 cells of "▀"."""

    def __init__(self, picture: Picture) -> None:
        self.picture = picture

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        picture = self.picture
        styles: dict[tuple[int, int, int, int, int, int], Style] = {}
        for y in range(0, picture.height - 1, 2):
            for x in range(picture.width):
                key = picture.pixel(x, y) + picture.pixel(x, y + 1)
                style = styles.get(key)
                if style is None:
                    style = styles[key] = Style(color=Color.from_rgb(*key[:3]), bgcolor=Color.from_rgb(*key[3:]))
                yield Segment(UPPER_HALF, style)
            yield Segment.line()

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(self.picture.width, self.picture.width)


def fit(picture: Picture, columns: int, max_rows: int | None = None) -> Picture:
    """``picture`` scaled to at most ``columns`` cells wide (and ``max_rows`` high), its aspect kept,
    with an even number of pixel rows (two per cell)."""
    columns = max(1, min(columns, picture.width))
    rows = max(1, round(columns * picture.height / picture.width / 2))
    if max_rows is not None and rows > max_rows:
        rows = max(1, max_rows)
        columns = max(1, min(columns, round(rows * 2 * picture.width / picture.height)))
    return picture.scaled(columns, rows * 2)


class ScreenPreview(Static):
    """The screen of one VM, taken when asked (``take``), drawn to the panel's width."""

    DEFAULT_CSS = """
    ScreenPreview { height: auto; }
    """

    def __init__(self, vm_id: str, **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self.vm_id = vm_id
        self._reveal = False
        self.picture: Picture | None = None
        self.message = ""
        self.text: str | None = None  # what tesseract reads on it, where there is tesseract

    @property
    def kerub(self) -> KerubApp:
        return cast("KerubApp", self.app)

    def on_mount(self) -> None:
        self.border_title = "Screen"
        self.border_subtitle = "v takes it again"

    def take(self, *, connect: bool = False, reveal: bool = False) -> None:
        """Take the screen now, in a worker (a newer request replaces one still running). ``connect``:
        connect the hosts if this console has not (a key asked for it), else only say so. ``reveal``:
        scroll the panel into view once it is drawn (and again once its words are read)."""
        self._reveal = reveal
        api = self.kerub.controller
        dyn = api.get(VirtualMachineDynamic, self.vm_id)
        if dyn is None or dyn.status not in (VmStatus.up, VmStatus.paused, VmStatus.migrating):
            self.picture = None
            self._show(f"no screen: the VM is {dyn.status.value if dyn else 'down'}")
            return
        self.run_worker(self._take(connect), group="screen", exclusive=True, exit_on_error=False)

    async def _take(self, connect: bool) -> None:
        if self.picture is None:
            self._show("taking the screen…")
        try:
            png = await self.kerub.controller.screenshot(self.vm_id, connect=connect)
            picture = await asyncio.to_thread(from_png, png)
        except (ActionError, PictureError) as error:
            self.picture = None
            self._show(f"no screen: {error}")
            return
        except Exception as error:  # a lost connection must not take the detail down
            log.warning("screenshot of %s failed: %s", self.vm_id, error)
            self.picture = None
            self._show(f"no screen: {type(error).__name__}: {error}")
            return
        self.picture = picture
        self.message = ""
        self.text = None
        self.border_subtitle = f"{picture.width}x{picture.height} · v takes it again"
        self._draw()
        text = await asyncio.to_thread(read_text, picture)
        if self.picture is picture and text is not None:
            self.text = text or "(no text)"
            self._draw()

    def _show(self, message: str) -> None:
        self.message = message
        if self.is_mounted:
            self.update(Text(message, style="dim"))
            self._scroll_into_view()

    def _scroll_into_view(self) -> None:
        if self._reveal:  # after the new content's layout, so where it ends up does not depend on timing
            self.call_after_refresh(self.scroll_visible, animate=False)

    def _draw(self, scroll: bool = True) -> None:
        if self.picture is None or not self.is_mounted:
            return
        columns = self.content_size.width or (self.size.width - 4) or 76
        blocks = HalfBlocks(fit(self.picture, columns))
        if self.text is None:
            self.update(blocks)
            if scroll:
                self._scroll_into_view()
            return
        # the words first: at 80x24 they are what shows of the panel without scrolling
        said = Text("it reads (tesseract):\n", style="dim")
        said.append_text(data(self.text))  # what the guest shows is data: never markup, control characters visible
        said.append("\n")
        self.update(Group(said, blocks))
        if scroll:
            self._scroll_into_view()

    def on_resize(self, event: events.Resize) -> None:
        self._draw(scroll=False)


def attach_serial(app: KerubApp, vm_id: str | None) -> None:
    """Suspend the console, attach the terminal to the VM's serial console until ctrl+], come back to
    the same screen. View-only in read-only mode (said on attach)."""
    if vm_id is None:
        return
    api = app.controller
    vm = api.get(VirtualMachine, vm_id)
    name = vm.name if vm is not None else vm_id
    dyn = api.get(VirtualMachineDynamic, vm_id)
    if dyn is None or dyn.status not in (VmStatus.up, VmStatus.paused, VmStatus.migrating):
        app.refuse("serial console", f"VM {name} is not running: its serial console opens once it is up")
        return
    view_only = api.readonly

    async def run() -> str:
        stream = await api.open_serial(vm_id, view_only=view_only)
        shown = bool(getattr(stream, "view_only", view_only))
        banner = (f"kerub-tui: {stream.description}; {ESCAPE_NAME} comes back to the console"
                  + ("; view-only (read-only mode): what you type is not sent" if shown else ""))
        try:
            with app.batch_update(), app.suspend():  # nothing is drawn while the terminal is the guest's
                return await attach(stream, view_only=shown, banner=banner)
        except SuspendNotSupported:
            await stream.close()
            raise ActionError("this terminal cannot be handed over (the console runs without one): "
                              f"kerub-tui console {name} --serial attaches one") from None

    app.perform(f"serial console {name}", run, action="open_serial", done_message=str)


__all__ = ["HalfBlocks", "ScreenPreview", "attach_serial", "fit"]
