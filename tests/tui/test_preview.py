"""The console's serial console key and the VM detail's screen, on the fixture fleet (no host is ever
contacted): `t` refuses a VM that is not running; on a running one it asks the API for the serial
console, view-only in read-only mode, and hands the terminal over (App.suspend): a headless test has
no terminal to hand over, which is said in one line and the stream is closed. (Attaching in a real
terminal is tests/integration/test_guest_os.py's; here a headless driver that suspends and a pair of
pipes stand in for the terminal, to see the same screen come back.) The VM detail's screen says why
there is none, and is taken only while the detail shows, and on a key (screenshots counted)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from rich.console import Console
from textual.widgets import Static

from kerub_tui.app import KerubApp
from kerub_tui.core.picture import Picture
from kerub_tui.screens.preview import HalfBlocks, ScreenPreview, fit

from .fleet_data import build_fleet
from .helpers import Recorder, running, settle


class StandInStream:
    """What the API's open_serial returns, without a host: records that it was closed."""

    description = "serial console of web1 on h1 (stand-in)"

    def __init__(self, view_only: bool) -> None:
        self.view_only = view_only
        self.closed = False

    async def read(self) -> bytes:
        return b""

    async def write(self, data: bytes) -> None:
        raise AssertionError("nothing is typed in a headless test")

    async def close(self) -> None:
        self.closed = True


def stand_in_serial(controller, calls: list):
    async def open_serial(vm_ref: str, *, view_only: bool = False, force: bool = False):
        stream = StandInStream(view_only)
        calls.append((vm_ref, view_only, stream))
        return stream

    controller.open_serial = open_serial


async def test_t_refuses_a_stopped_vm_and_hands_the_terminal_over_for_a_running_one(tmp_path):
    recorder = Recorder()
    async with running(tmp_path, (120, 40), message_hook=recorder) as (controller, app, pilot):
        calls: list = []
        stand_in_serial(controller, calls)
        await pilot.press("2", "slash", *"db1", "enter", "t")
        await settle(app, pilot)
        refused = recorder.of(KerubApp.ActionRefused)
        assert refused and "db1 is not running" in refused[-1].reason and not calls
        await pilot.press("escape", "slash", *"web1", "enter", "t")
        await settle(app, pilot)
        assert [(vm, ro) for vm, ro, _s in calls] == [(calls[0][0], False)]
        failed = recorder.of(KerubApp.ActionFailed)
        assert failed and "cannot be handed over" in failed[-1].error
        assert "kerub-tui console web1 --serial" in failed[-1].error
        assert calls[0][2].closed


async def test_read_only_asks_for_a_view_only_serial_console(tmp_path):
    controller = build_fleet(tmp_path / "data", readonly=True)
    await controller.start(connect_hosts=False)
    calls: list = []
    stand_in_serial(controller, calls)
    app = KerubApp(controller)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("2", "slash", *"web1", "enter", "enter", "t")  # from the VM detail this time
        await settle(app, pilot)
        assert len(calls) == 1 and calls[0][1] is True


async def test_the_vm_detail_says_why_it_shows_no_screen(tmp_path):
    async with running(tmp_path, (120, 40)) as (_controller, app, pilot):
        await pilot.press("2", "slash", *"db1", "enter", "enter")
        await settle(app, pilot)
        assert "no screen: the VM is down" in str(app.screen.query_one(ScreenPreview).render())
        await pilot.press("escape", "escape", "slash", *"web1", "enter", "enter")
        await settle(app, pilot)
        # the console's hosts are not connected here: opening the detail connects nothing
        shown = str(app.screen.query_one(ScreenPreview).render())
        assert "no screen: the hosts are not connected here" in shown
        assert isinstance(app.screen.query_one("#vm-summary"), Static)


def test_half_blocks_draw_two_pixels_per_cell():
    picture = Picture(2, 2, bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255]))
    console = Console(width=10, color_system="truecolor", record=True)
    console.print(HalfBlocks(picture))
    segments = list(HalfBlocks(picture).__rich_console__(console, console.options))
    cells = [s for s in segments if s.text == "▀"]
    assert len(cells) == 2
    assert cells[0].style.color.triplet == (255, 0, 0) and cells[0].style.bgcolor.triplet == (0, 0, 255)
    assert cells[1].style.color.triplet == (0, 255, 0) and cells[1].style.bgcolor.triplet == (255, 255, 255)
    small = fit(Picture(720, 400, bytes(720 * 400 * 3)), 76)
    assert (small.width, small.height) == (76, 42)  # 21 rows of cells, square pixels


async def test_the_vm_editor_sets_the_graphics_protocol(tmp_path):
    from textual.widgets import Select

    from kerub_tui.core.models import VirtualMachine

    from .fleet_data import WEB1

    async with running(tmp_path, (120, 40)) as (controller, app, pilot):
        await pilot.press("2", "slash", *"web1", "enter", "e")
        await settle(app, pilot)
        app.screen.query_one("#graphics", Select).value = "vnc"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert controller.get(VirtualMachine, WEB1).graphics == "vnc"


class StandInGuest(StandInStream):
    """A serial console that says one line, then ends (the VM stopped): the console comes back by itself."""

    def __init__(self, view_only: bool) -> None:
        super().__init__(view_only)
        self.said = [b"web2 login: "]

    async def read(self) -> bytes:
        return self.said.pop(0) if self.said else b""


def a_terminal(app: KerubApp, monkeypatch) -> tuple[list[str], tuple[int, int, int, int]]:
    """The headless driver made to suspend as a terminal's does (each suspend and resume recorded), and
    the serial console attached to a pair of pipes in place of the terminal: (what the driver did,
    (keys_in, keyboard, shown, screen_out)), the descriptors for the test to close."""
    from kerub_tui.core import terminal
    from kerub_tui.screens import preview

    keys_in, keyboard = os.pipe()  # nothing is typed: the stream ends the session
    shown, screen_out = os.pipe()
    suspended: list[str] = []

    class Terminal(type(app._driver)):  # type: ignore[misc]
        can_suspend = True

        def suspend_application_mode(self) -> None:
            suspended.append("suspend")

        def resume_application_mode(self) -> None:
            suspended.append("resume")

    app._driver.__class__ = Terminal

    async def attach(stream, **kwargs):
        return await terminal.attach(stream, stdin_fd=keys_in, stdout_fd=screen_out, **kwargs)

    monkeypatch.setattr(preview, "attach", attach)
    return suspended, (keys_in, keyboard, shown, screen_out)


async def test_t_hands_the_terminal_over_and_the_same_screen_comes_back(tmp_path, monkeypatch):
    """`t` in a terminal: the app suspends (its driver lets go of the terminal), the guest's bytes go to
    the terminal, and once the console ends the same screen is back: the VMs pane, its filter, the
    cursor on the row it was on. (The headless driver is told it can suspend, as a terminal's can; the
    terminal is a pair of pipes.)"""
    from kerub_tui.screens.main import VmTable

    from .fleet_data import WEB1, WEB2

    recorder = Recorder()
    async with running(tmp_path, (120, 40), message_hook=recorder) as (controller, app, pilot):
        calls: list = []

        async def open_serial(vm_ref: str, *, view_only: bool = False, force: bool = False):
            stream = StandInGuest(view_only)
            calls.append((vm_ref, view_only, stream))
            return stream

        controller.open_serial = open_serial
        suspended, (keys_in, keyboard, shown, screen_out) = a_terminal(app, monkeypatch)
        await pilot.press("2", "slash", *"web", "enter", "down")
        await settle(app, pilot)
        before = app.screen
        table = before.query_one(VmTable)
        assert (table.row_filter.text, table.cursor_row, table.cursor_id) == ("web", 1, WEB2)
        await pilot.press("t")
        await settle(app, pilot)
        try:
            assert [vm for vm, _ro, _s in calls] == [WEB2] and suspended == ["suspend", "resume"]
            said = os.read(shown, 4096)
            assert said.startswith(b"kerub-tui: serial console of web1 on h1 (stand-in); ctrl+] comes back")
            assert said.endswith(b"web2 login: ")
        finally:
            for fd in (keys_in, keyboard, shown, screen_out):
                os.close(fd)
        assert calls[0][2].closed
        assert not recorder.of(KerubApp.ActionFailed)
        # the same screen, its filter and its cursor
        assert app.screen is before and app.screen.focused is table
        assert (table.row_filter.text, table.cursor_row, table.cursor_id) == ("web", 1, WEB2)
        assert table.shown_ids() == [WEB1, WEB2]
        done = recorder.of(KerubApp.ActionDone)
        assert done and done[-1].result.startswith("the console stream ended")


SCREEN_PNG = Path(__file__).resolve().parents[1] / "captures" / "screens" / "grub-rescue-720x400.png"


async def test_the_screen_is_taken_only_while_the_vm_detail_shows_and_on_a_key(tmp_path):
    """Screenshots are counted: one when the detail opens, none while another screen hides it (the
    editor, a dialog) even when the VM's state changes meanwhile, one when it is back in view, one on
    `v`, one when the state changes in view, and none on a timer."""
    from kerub_tui.core.models import VirtualMachineDynamic, VmStatus
    from kerub_tui.screens.vms import VmDetailScreen

    from .fleet_data import WEB1

    png = SCREEN_PNG.read_bytes()
    async with running(tmp_path, (120, 40)) as (controller, app, pilot):
        taken: list[bool] = []

        async def screenshot(vm_ref: str, *, connect: bool = True) -> bytes:
            assert vm_ref == WEB1
            taken.append(connect)
            return png

        controller.screenshot = screenshot

        async def waited(seconds: float = 0.0) -> list[bool]:
            await settle(app, pilot)
            if seconds:
                await pilot.pause(seconds)
                await settle(app, pilot)
            return taken

        def state(status: VmStatus) -> None:
            controller.db.put(controller.db.get(VirtualMachineDynamic, WEB1).evolve(status=status))

        await pilot.press("2", "slash", *"web1", "enter", "enter")
        assert await waited() == [False]  # opening it connects nothing
        detail = app.screen
        assert isinstance(detail, VmDetailScreen)
        preview = detail.query_one(ScreenPreview)
        assert preview.picture is not None and preview.picture.width == 720

        await pilot.press("e")  # the editor on top: the detail is not shown
        await waited()
        assert app.screen is not detail
        state(VmStatus.paused)
        assert await waited(1.0) == [False]
        await pilot.press("escape")  # back in view: the screen as it is now
        assert app.screen is detail and await waited() == [False, False]

        await pilot.press("S")  # a dialog over it
        await waited()
        assert app.screen is not detail
        state(VmStatus.up)
        assert await waited(0.5) == [False, False]
        await pilot.press("escape")
        assert app.screen is detail and await waited() == [False, False, False]

        await pilot.press("v")  # the key: connects the VM's host if this console has not
        assert await waited() == [False, False, False, True]
        state(VmStatus.paused)  # in view, its state changed: its screen changed
        assert await waited() == [False, False, False, True, False]
        # no timer: nothing more comes while nothing happens, and none is set
        assert await waited(2.0) == [False, False, False, True, False]
        timers = [t for node in (detail, *detail.query("*")) for t in node._timers]
        assert not preview._timers and all(getattr(t._callback, "__self__", None) is not preview for t in timers)


class HeldGuest(StandInStream):
    """A serial console that lasts until the test lets it end (``end``)."""

    def __init__(self, view_only: bool) -> None:
        super().__init__(view_only)
        self.end = asyncio.Event()

    async def read(self) -> bytes:
        await self.end.wait()
        return b""


async def test_no_screen_is_taken_while_the_terminal_is_the_serial_consoles(tmp_path, monkeypatch):
    """`t` from the VM detail: while the terminal is the guest's serial console the detail is not shown,
    so a change of the VM's state takes no screenshot; back from it, one is taken (the guest's screen
    has likely changed meanwhile)."""
    from kerub_tui.core.models import VirtualMachineDynamic, VmStatus

    from .fleet_data import WEB1

    png = SCREEN_PNG.read_bytes()
    async with running(tmp_path, (120, 40)) as (controller, app, pilot):
        taken: list[bool] = []
        streams: list[HeldGuest] = []

        async def screenshot(vm_ref: str, *, connect: bool = True) -> bytes:
            taken.append(connect)
            return png

        async def open_serial(vm_ref: str, *, view_only: bool = False, force: bool = False):
            streams.append(HeldGuest(view_only))
            return streams[-1]

        controller.screenshot, controller.open_serial = screenshot, open_serial
        suspended, fds = a_terminal(app, monkeypatch)
        try:
            await pilot.press("2", "slash", *"web1", "enter", "enter")
            await settle(app, pilot)
            detail = app.screen
            assert taken == [False]
            await pilot.press("t")
            for _ in range(200):
                if suspended:
                    break
                await pilot.pause(0.01)
            assert suspended == ["suspend"] and len(streams) == 1
            controller.db.put(controller.db.get(VirtualMachineDynamic, WEB1).evolve(status=VmStatus.paused))
            await app.settle()
            await pilot.pause(0.3)
            assert suspended == ["suspend"] and taken == [False]  # still the guest's terminal: none taken
            streams[0].end.set()
            await settle(app, pilot)
            assert suspended == ["suspend", "resume"] and app.screen is detail
            assert taken == [False, False]  # back in view: its screen as it is now
        finally:
            for fd in fds:
                os.close(fd)


async def test_the_vm_detail_says_where_a_vnc_console_listens_as_a_spice_one(tmp_path):
    from kerub_tui.core.models import VirtualMachine, VirtualMachineDynamic

    from .fleet_data import WEB2
    from .helpers import plain

    async with running(tmp_path, (120, 40)) as (controller, app, pilot):
        controller.db.put(controller.db.get(VirtualMachine, WEB2).evolve(graphics="vnc"))
        controller.db.put(controller.db.get(VirtualMachineDynamic, WEB2).evolve(vnc_address="127.0.0.1",
                                                                                vnc_port=5901))
        await pilot.press("2", "slash", *"web", "enter", "down", "enter")
        await settle(app, pilot)
        summary = plain(app.screen.query_one("#vm-summary", Static))
        assert "VNC on 127.0.0.1:5901 (c opens it), serial (t attaches it)" in summary
        await pilot.press("escape", "up", "enter")
        await settle(app, pilot)
        assert "SPICE on 127.0.0.1:5900 (c opens it)" in plain(app.screen.query_one("#vm-summary", Static))
