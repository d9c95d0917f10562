"""Figures nothing monitors are never shown as live (issue 13 item 10): a read-only console, on a data dir
no controller runs on, says when the hosts were last seen and dims their figures; so does a console
attached to a read-only `serve`."""

from __future__ import annotations

import re

from kerub_tui.app import KerubApp
from kerub_tui.cli import run_in_controller
from kerub_tui.control import ControlServer, RemoteController
from kerub_tui.screens.live import LiveTable
from kerub_tui.screens.main import StatusBar

from .fleet_data import H1, WEB1
from .helpers import plain, running, settle, started_controller


def _dim(cell) -> bool:
    return any("dim" in str(span.style) for span in cell.spans) or "dim" in str(cell.style)


async def test_a_readonly_console_shows_the_figures_as_last_seen(tmp_path):
    controller = await started_controller(tmp_path / "data", readonly=True)
    app = KerubApp(controller)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        status = plain(app.screen.query_one(StatusBar))
        assert re.search(r"hosts 2/3 up, seen \d+d ago", status), status
        hosts = app.screen.query_one("#hosts", LiveTable)
        _mark, _name, _address, state, cpu, memory, *_ = hosts.get_row(H1)
        assert re.fullmatch(r"up \d+d ago", state.plain) and _dim(state)
        assert cpu.plain.startswith(" 30%") and _dim(cpu) and _dim(memory)  # the last figures, dimmed
        vms = app.screen.query_one("#vms", LiveTable)
        _mark, _name, vm_state, _host, _cpus, vm_memory, _expect = vms.get_row(WEB1)
        assert vm_state.plain == "up" and _dim(vm_state) and _dim(vm_memory)


async def test_a_console_of_a_monitoring_controller_shows_them_live(tmp_path):
    async with running(tmp_path, (120, 40)) as (_controller, app, _pilot):
        status = plain(app.screen.query_one(StatusBar))
        assert "hosts 2/3 up │" in status and "seen" not in status
        _mark, _name, _address, state, cpu, *_ = app.screen.query_one("#hosts", LiveTable).get_row(H1)
        assert state.plain == "up" and not _dim(state) and not _dim(cpu)


async def test_a_console_attached_to_a_readonly_serve_knows_nothing_monitors(tmp_path):
    await (await started_controller(tmp_path / "data")).stop()  # the fixture fleet, stored
    controller = await started_controller(tmp_path / "data", readonly=True)
    server = ControlServer(controller, run_in_controller)
    await server.start()
    remote = RemoteController(controller.data_dir)
    try:
        await remote.start()
        assert remote.readonly and not remote.live
    finally:
        await remote.stop()
        await server.stop()
        await controller.stop()
