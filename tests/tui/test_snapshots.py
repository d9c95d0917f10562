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

from .fleet_data import H1, H2, NOW, build_fleet, host_dynamic, ident, sample_series
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


@pytest.mark.parametrize("size", SIZES)
def test_host_detail(snap_compare, tmp_path, frozen_clock, size):
    assert snap_compare(fleet_app(tmp_path), terminal_size=size, run_before=before("enter"))


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
