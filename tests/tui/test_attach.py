"""A console attached to a running controller through the control socket shows the same live state,
acts through it, and leaves it running when it quits."""

from __future__ import annotations

from kerub_tui.app import KerubApp
from kerub_tui.cli import run_in_controller
from kerub_tui.control import ControlServer, RemoteController, controller_running
from kerub_tui.core.models import VirtualMachine, VirtualMachineDynamic

from .fleet_data import DB1, H1, WEB2
from .helpers import Recorder, settle, started_controller
from .test_main import status_text


async def until(pilot, predicate, tries: int = 500) -> None:
    """Wait (bounded) for something that crosses the socket; fail saying so if it never does."""
    for _ in range(tries):
        if predicate():
            return
        await pilot.pause(0.01)
    raise AssertionError("the attached console never showed the change")


async def test_attached_console_shows_and_changes_the_same_state(tmp_path):
    controller = await started_controller(tmp_path / "data")
    server = ControlServer(controller, run_in_controller)
    await server.start()
    try:
        record = Recorder()
        app = KerubApp(RemoteController(controller.data_dir))
        async with app.run_test(size=(120, 40), message_hook=record) as pilot:
            await settle(app, pilot)
            assert app.attached
            assert "attached" in status_text(app)
            main = app.screen
            assert len(main.table("hosts").shown_ids()) == 3
            vms = main.table("vms")
            # A change in the serving controller reaches the attached console's table in place.
            dyn = controller.db.get(VirtualMachineDynamic, WEB2)
            controller.db.put(dyn.evolve(host_id=H1))
            await until(pilot, lambda: vms.cells_of(WEB2)[2].plain == "h1")
            # An action from the attached console runs in the serving controller.
            await pilot.press("2")
            vms.move_cursor(row=vms.get_row_index(DB1))
            await pilot.press("s")
            await until(pilot, lambda: any(e.type == "availability" and e.up for e in
                                           controller.db.get(VirtualMachine, DB1).expectations))
            await until(pilot, lambda: bool(record.of(KerubApp.ActionDone)))
        # Quitting the console leaves the controller serving.
        assert controller_running(controller.data_dir)
        assert controller.started
    finally:
        await server.stop()
        await controller.stop()
