"""--readonly on a damaged store: the console shows what reads and says the store is damaged."""

from __future__ import annotations

from kerub_tui.app import KerubApp
from kerub_tui.controller import Controller

from .fleet_data import build_fleet
from .helpers import settle


async def test_readonly_console_on_a_damaged_store_says_so(tmp_path):
    data_dir = tmp_path / "data"
    build_fleet(data_dir).store.close()
    path = data_dir / "kerub.unqlite"
    data = path.read_bytes()
    at = data.index(b"doc/vm/") + 60  # inside a VM's record: its checksum fails
    path.write_bytes(data[:at] + bytes([data[at] ^ 0x20]) + data[at + 1:])
    controller = Controller(data_dir, readonly=True)
    controller.open_store()
    await controller.start(connect_hosts=False)
    app = KerubApp(controller)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        notices = [str(n.message) for n in app._notifications]
        assert any("the store is damaged" in n and "check --repair" in n for n in notices), notices
        assert app.screen.table("hosts").shown_ids()  # what reads is shown
    await controller.stop()
