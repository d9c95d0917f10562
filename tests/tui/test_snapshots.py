"""Snapshots of the main screens at 80x24 and 120x40: fixed fleet, frozen clock, no cursor blink.

Update them with ``pytest tests/tui/test_snapshots.py --snapshot-update`` and look at every SVG
under ``__snapshots__`` before committing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import time_machine
from textual.widgets import Input

from kerub_tui.app import KerubApp
from kerub_tui.core.models import Host
from kerub_tui.sim import ADDRESS_DOMAIN, profile

from .fleet_data import DB1, H1, H2, H3, NOW, P_START, T0, build_fleet, host_dynamic, ident, sample_series
from .helpers import settle

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]
# The status bar shows the data dir: show a fixed, typical one rather than the test's temp dir.
SHOWN_DATA_DIR = Path("/var/lib/kerub-tui")
SIM = ident("host0004", 4)


@pytest.fixture
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


def fleet_app(tmp_path: Path) -> KerubApp:
    controller = build_fleet(tmp_path / "data")
    asyncio.run(controller.start(connect_hosts=False))  # the fixture hosts are never contacted
    controller.data_dir = SHOWN_DATA_DIR
    return KerubApp(controller)


def before(*keys: str, then=None):
    """run_before for snap_compare: live figures for two hosts, then keys, then a still screen."""

    async def run(pilot) -> None:
        app = pilot.app
        await settle(app, pilot)
        for doc in sample_series(H1, 64) + sample_series(H2, 32):
            app.controller.db.put(doc)
        await settle(app, pilot)
        if keys:
            await pilot.press(*keys)
        if then is not None:
            await then(pilot)
        await settle(app, pilot)
        for widget in app.screen.query(Input):
            widget.cursor_blink = False
        await pilot.pause()

    return run


@pytest.mark.parametrize("size", SIZES)
def test_main_screen(snap_compare, tmp_path, frozen_clock, size):
    assert snap_compare(fleet_app(tmp_path), terminal_size=size, run_before=before())


def with_simulated_host(app: KerubApp) -> KerubApp:
    """The fixture fleet and one simulated host (kerub_tui.sim), up: how the console labels it."""
    host = Host(id=SIM, name="sim1", address=f"sim1.{ADDRESS_DOMAIN}", simulated=True,
                capabilities=profile("mini").capabilities("sim1"))
    app.controller.db.put_many([host, host_dynamic(SIM, 95.0, 3, 64)])
    return app


@pytest.mark.parametrize("size", [pytest.param((80, 24), id="80x24")])
def test_main_screen_with_a_simulated_host(snap_compare, tmp_path, frozen_clock, size):
    assert snap_compare(with_simulated_host(fleet_app(tmp_path)), terminal_size=size, run_before=before())


def with_metrics(app: KerubApp, data_dir: Path) -> KerubApp:
    """A fixed hour of metrics history for the fixture hosts, ending at the frozen NOW: up for 25 minutes,
    down for 10 (a gap), up again (the graphs of the host detail)."""
    from kerub_tui.core.metrics import Recorder

    end = NOW.timestamp()
    recorder = Recorder(data_dir)
    for n, host in enumerate((H1, H2, H3)):
        for minute in range(60):
            at = end - (60 - minute) * 60
            values = None if 25 <= minute < 35 else (float((minute * 7 + n * 13) % 90 + 5), float((4 + minute % 5) << 30))
            recorder.observe([("host", host, at, values)], at)
    recorder.close(end)
    return app


@pytest.mark.parametrize("size", SIZES)
def test_host_detail(snap_compare, tmp_path, frozen_clock, size):
    assert snap_compare(with_metrics(fleet_app(tmp_path), tmp_path / "data"), terminal_size=size,
                        run_before=before("enter"))


async def _editor_with_errors(pilot) -> None:
    screen = pilot.app.screen
    screen.query_one("#name", Input).value = "app 1"
    screen.query_one("#cpus", Input).value = "0"
    screen.query_one("#memory_min", Input).value = "1G"
    await pilot.pause()
    await pilot.press("ctrl+s")
    await pilot.pause()
    screen.query_one("#name", Input).focus()


@pytest.mark.parametrize("size", SIZES)
def test_vm_editor(snap_compare, tmp_path, frozen_clock, size):
    assert snap_compare(fleet_app(tmp_path), terminal_size=size,
                        run_before=before("2", "n", then=_editor_with_errors))


@pytest.mark.parametrize("size", SIZES)
def test_proposals(snap_compare, tmp_path, frozen_clock, size):
    assert snap_compare(fleet_app(tmp_path), terminal_size=size, run_before=before("colon", *"plans", "enter"))


@pytest.mark.parametrize("size", SIZES)
def test_audit(snap_compare, tmp_path, frozen_clock, size):
    assert snap_compare(fleet_app(tmp_path), terminal_size=size, run_before=before("colon", *"audit", "enter"))


@pytest.mark.parametrize("size", SIZES)
def test_events(snap_compare, tmp_path, frozen_clock, size):
    """Each event says what it is about (its VM by name, else its host) before the message: at 80
    columns too (issue 13 item 8)."""
    assert snap_compare(fleet_app(tmp_path), terminal_size=size, run_before=before("colon", *"events", "enter"))


async def _lost_and_waiting(pilot) -> None:
    """web3 ran on h3, which is unreachable now: lost, no memory figure, h3 runs none; db1's start is
    a proposal waiting for approval (issue 13 item 4)."""
    from kerub_tui.core.models import Plan, PlannedStep, VirtualMachine, VirtualMachineDynamic, VmStatus

    db = pilot.app.controller.db
    web3 = ident("vm000004", 4)
    db.put_many([VirtualMachine(id=web3, name="web3", cpus=1, memory_min=1 << 30, memory_max=1 << 30),
                 VirtualMachineDynamic(id=web3, host_id=H3, status=VmStatus.up, memory_used=700 << 20,
                                       updated_at=T0)])
    plan = db.get(Plan, P_START)
    start = PlannedStep(type="start-vm", params={"vm": DB1, "host": H1}, description="start db1 on h1", host_id=H1)
    db.put(plan.evolve(steps=[plan.steps[0], start]))


@pytest.mark.parametrize("size", SIZES)
def test_vms_lost_and_waiting(snap_compare, tmp_path, frozen_clock, size):
    assert snap_compare(fleet_app(tmp_path), terminal_size=size, run_before=before("2", then=_lost_and_waiting))


@pytest.mark.parametrize("size", SIZES)
def test_jump_prompt(snap_compare, tmp_path, frozen_clock, size):
    """`:` with a prefix typed: one visible line, its completion and where enter goes, over the screen."""
    assert snap_compare(fleet_app(tmp_path), terminal_size=size, run_before=before("colon", *"pl"))


@pytest.mark.parametrize("size", SIZES)
def test_filter_prompt(snap_compare, tmp_path, frozen_clock, size):
    """`/` while typing: the table behind already filtered, and how many rows show."""
    assert snap_compare(fleet_app(tmp_path), terminal_size=size, run_before=before("slash", *"h2"))


# The fixture hosts are not real, so the VM detail's screen comes from a stand-in for the API's
# screenshot: a PNG captured from a real guest on the lab (grub-rescue-pc's ISO booting, 720x400).
SCREEN_CAPTURE = Path(__file__).resolve().parents[1] / "captures" / "screens" / "grub-rescue-720x400.png"


def with_captured_screen(app: KerubApp) -> KerubApp:
    png = SCREEN_CAPTURE.read_bytes()

    async def captured_screenshot(vm_ref: str, *, connect: bool = True) -> bytes:
        return png

    app.controller.screenshot = captured_screenshot  # type: ignore[method-assign]
    return app


# What tesseract read on that capture, fixed here: the snapshot must not change with tesseract's version
# (tests/unit/test_picture.py reads the capture with the real one).
CAPTURE_TEXT = ("SeaBIOS (version 1.16.2-debian-1.16.2-1)\nMachine UUID a95dad0a-4b15-4dbd-a840-b0745fec5502\n"
                "Booting from DVD/CD...\nWelcome to GRUB!")


@pytest.mark.parametrize("size", SIZES)
def test_vm_detail_with_its_screen(snap_compare, tmp_path, frozen_clock, size, monkeypatch):
    monkeypatch.setattr("kerub_tui.screens.preview.read_text", lambda picture: CAPTURE_TEXT)
    # v takes the screen again and brings it into view (at 80x24 it is below the VM's summary)
    assert snap_compare(with_captured_screen(fleet_app(tmp_path)), terminal_size=size,
                        run_before=before("2", "slash", *"web1", "enter", "enter", "v", then=_screen_revealed))


async def _screen_revealed(pilot) -> None:
    """The preview read and scrolled into view: its scroll happens after a refresh, so wait until the
    panel's text is in and its container has stopped moving for a few frames (CI once took the picture
    before the scroll had been painted)."""
    from kerub_tui.screens.preview import ScreenPreview

    preview = pilot.app.screen.query_one(ScreenPreview)
    container = preview.parent
    seen: list[float] = []
    for _ in range(200):
        await pilot.pause()
        seen.append(container.scroll_y)
        if preview.text is not None and len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]:
            break
    else:
        raise AssertionError(f"the screen preview never settled: text {preview.text!r}, scroll {seen[-5:]}")
    # Panels above it (the figures, the graph) may have grown after its own scroll into view (a helper's
    # loaded run showed the picture one row off): bring it into view again on the final layout.
    preview.scroll_visible(animate=False)
    for _ in range(3):
        await pilot.pause()
