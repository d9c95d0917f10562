"""Running the console on a fixture fleet in tests: no host is ever contacted."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from textual.message import Message

from kerub_tui.app import KerubApp
from kerub_tui.controller import Controller

from .fleet_data import build_fleet


async def started_controller(data_dir: Path, *, readonly: bool = False, empty: bool = False) -> Controller:
    controller = build_fleet(data_dir, readonly=readonly, empty=empty)
    # The app starts a controller that is not started yet, which would also connect its hosts:
    # the fixture hosts are not real, so start it here without connecting anything.
    await controller.start(connect_hosts=False)
    return controller


@asynccontextmanager
async def running(tmp_path: Path, size: tuple[int, int], *, empty: bool = False,
                  message_hook: Callable[[Message], None] | None = None,
                  notifications: bool = False) -> AsyncIterator[tuple]:
    """The console on the fixture fleet (stored under tmp_path/data), settled: (controller, app, pilot).
    ``notifications``: show toasts (Textual's tests leave them out)."""
    controller = await started_controller(tmp_path / "data", empty=empty)
    app = KerubApp(controller)
    async with app.run_test(size=size, message_hook=message_hook, notifications=notifications) as pilot:
        await settle(app, pilot)
        yield controller, app, pilot


class Recorder:
    """Collects the messages the app and its widgets post (App.run_test's message_hook)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def __call__(self, message: Message) -> None:
        self.messages.append(message)

    def of(self, kind: type) -> list:
        return [m for m in self.messages if isinstance(m, kind)]

    def clear(self) -> None:
        self.messages.clear()


async def settle(app: KerubApp, pilot) -> None:
    """Let published changes reach the screens, then let the screen repaint and workers finish."""
    await app.settle()
    await pilot.pause()
    busy = [w for w in app.workers if w.group != "feed"]
    if busy:  # (an empty list would mean "every worker", the endless change feed included)
        await app.workers.wait_for_complete(busy)
    await app.settle()
    await pilot.pause()


def plain(widget) -> str:
    """The text a Static shows (rich renderables included), without styles."""
    import io

    from rich.console import Console

    content = widget.content
    if isinstance(content, str):
        return content
    console = Console(width=200, file=io.StringIO(), color_system=None, legacy_windows=False)
    with console.capture() as capture:
        console.print(content)
    return capture.get()
