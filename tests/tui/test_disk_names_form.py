"""A disk name LVM reserves (x_tmeta: LVM refuses kerub-x_tmeta) is refused in the console's forms next to
the field, in one line, and nothing is saved: the disk editor (new and rename) and a VM's new disk row. One
console for all three (a console start is the cost of this file)."""

from __future__ import annotations

from textual.widgets import Input, Static

from kerub_tui.core.models import VirtualMachine, VirtualStorageDevice
from kerub_tui.screens.forms import FormField
from kerub_tui.screens.main import MainScreen

from .fleet_data import D_SHARED
from .helpers import plain, running, settle

MESSAGE = "disk name 'x_tmeta' contains '_tmeta', which LVM reserves for its hidden volumes (lvm(8)): choose another name"


async def test_the_forms_refuse_a_name_lvm_reserves_and_save_nothing(tmp_path):
    async with running(tmp_path, (120, 60)) as (controller, app, pilot):
        disks = controller.db.count(VirtualStorageDevice)
        # a new disk
        await pilot.press("3", "n")
        editor = app.screen
        editor.query_one("#name", Input).value = "x_tmeta"
        editor.query_one("#size", Input).value = "1G"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert app.screen is editor
        assert editor.query_one("#field-name", FormField).error == MESSAGE
        assert controller.db.count(VirtualStorageDevice) == disks
        await pilot.press("escape")
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        # a rename of an existing disk
        shared = controller.db.get(VirtualStorageDevice, D_SHARED)
        app.push_screen(type(editor)(D_SHARED))
        await settle(app, pilot)
        renamer = app.screen
        renamer.query_one("#name", Input).value = "x_tmeta"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert app.screen is renamer
        assert renamer.query_one("#field-name", FormField).error == MESSAGE
        assert controller.db.get(VirtualStorageDevice, D_SHARED).name == shared.name
        await pilot.press("escape")
        await settle(app, pilot)
        # a VM's new disk
        await pilot.press("2", "n")
        vm_editor = app.screen
        vm_editor.query_one("#name", Input).value = "app9"
        vm_editor.query_one("#memory_min", Input).value = "1G"
        await pilot.pause()
        await pilot.click("#add-new-disk")
        row = vm_editor.query_one("DiskRow")
        row.query_one(".disk-name", Input).value = "x_tmeta"
        row.query_one(".disk-size", Input).value = "1G"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert app.screen is vm_editor
        assert plain(row.query_one(".row-error", Static)) == MESSAGE
        assert controller.db.find_by_name(VirtualMachine, "app9") is None
        assert controller.db.count(VirtualStorageDevice) == disks


def test_the_host_detail_marks_storage_no_command_carries_unusable_with_why(tmp_path):
    """The host detail's facts (capabilities_table, the console's `host show`) as the admin reads them."""
    import io

    from rich.console import Console

    from kerub_tui.core.models import Host, HostCapabilities, StorageCapability, StorageTechnology
    from kerub_tui.core.store import Store
    from kerub_tui.queries import StoreView
    from kerub_tui.screens.hosts import capabilities_table

    storage = [StorageCapability(id=f"lvm:{vg}", technology=StorageTechnology.lvm, name=vg, size_bytes=1 << 30,
                                 free_bytes=1 << 30) for vg in ("vg0;x", "vg1")]
    host = Host(id="host-h1", name="h1", address="127.0.0.2", capabilities=HostCapabilities(storage=storage))
    console = Console(file=io.StringIO(), width=300, color_system=None)
    with Store.open(tmp_path) as store:
        store.put(host)
        console.print(capabilities_table(host, StoreView(store)))
    lines = [" ".join(line.split()) for line in console.file.getvalue().splitlines()]
    at = lines.index("storage lvm:vg0;x: 1.0G free of 1.0G")
    assert lines[at + 1] == ("unusable, takes no new disks: volume group name 'vg0;x' contains ';', which is not "
                             "allowed: use letters, digits, '.', '_' and '-' (kerub-tui puts no such name in a "
                             "command)")
    assert lines[at + 2] == "storage lvm:vg1: 1.0G free of 1.0G"
