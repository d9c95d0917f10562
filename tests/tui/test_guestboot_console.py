"""The console's side of booting real guests (issue 11 items 2 and 4): the VM editor offers the boot
order, CD-ROMs and cloud-init; the VM detail shows them and ejects the CD-ROM."""

from __future__ import annotations

from textual.widgets import Input, Select, Static

from kerub_tui.core.models import AuditEntry, ImageInfo, VirtualMachine, VirtualStorageDevice
from kerub_tui.screens.confirm import ConfirmScreen
from kerub_tui.screens.forms import FormField

from .helpers import plain, running, settle

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGr7Qq0n0eQm2E4Oq2m3ZbW8u2Kq0x8mRk8o1m8p2hXw admin@jump"
SECRET = "hunter2-Sup3r-s3cret"


def field_error(screen, key: str) -> str | None:
    return screen.query_one(f"#field-{key}", FormField).error


async def fill(pilot, selector: str, text: str) -> None:
    pilot.app.screen.query_one(selector, Input).value = text
    await pilot.pause()


async def test_editor_boot_order_cdrom_and_cloud_init_then_eject_from_the_detail(tmp_path):
    key_file, user_data = tmp_path / "k.pub", tmp_path / "user-data"
    key_file.write_text(KEY + "\n")
    user_data.write_text(f"#cloud-config\npassword: {SECRET}\n")
    async with running(tmp_path, (120, 60)) as (controller, app, pilot):
        iso = VirtualStorageDevice(name="debian-iso", size=5 << 20, read_only=True, image=ImageInfo(
            format="iso", virtual_size=5 << 20, file_size=5 << 20, sha256="0" * 64))
        controller.db.put(iso)
        await pilot.press("2", "n")
        screen = app.screen
        await fill(pilot, "#name", "inst1")
        await fill(pilot, "#boot", "cdrom,floppy")
        await fill(pilot, "#ssh_keys", str(tmp_path / "missing.pub"))
        await pilot.press("ctrl+s")
        assert "No such file" in field_error(screen, "ssh_keys")
        await fill(pilot, "#ssh_keys", str(key_file))
        await pilot.press("ctrl+s")
        assert field_error(screen, "boot") is not None and controller.db.find_by_name(VirtualMachine, "inst1") is None
        await fill(pilot, "#boot", "cdrom,hd")
        await fill(pilot, "#user_data", str(user_data))
        await pilot.click("#add-existing-disk")
        row = screen.query_one("DiskRow")
        row.query_one(".disk-existing", Select).value = iso.id
        row.query_one(".disk-device", Select).value = "cdrom"
        row.query_one(".disk-bus", Select).value = "sata"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        vm = controller.db.find_by_name(VirtualMachine, "inst1")
        assert vm is not None, plain(screen.query_one("#editor-error", Static))
        assert vm.boot == ["cdrom", "hd"]
        assert [(link.disk_id, link.device, link.bus, link.read_only) for link in vm.disks] == [
            (iso.id, "cdrom", "sata", True)]
        assert vm.cloud_init.ssh_keys == [KEY] and SECRET in vm.cloud_init.user_data
        assert all(SECRET not in a.model_dump_json() for a in controller.db.list(AuditEntry))

        # editing keeps what is set when the cloud-init fields stay empty, and keeps the CD-ROM a CD-ROM
        app.open_vm_editor(vm.id)
        await settle(app, pilot)
        await fill(pilot, "#cpus", "2")
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        vm = controller.db.get(VirtualMachine, vm.id)
        assert vm.cpus == 2 and vm.cloud_init.ssh_keys == [KEY] and vm.disks[0].device == "cdrom"

        # the detail shows them, and j ejects after a confirmation
        from kerub_tui.screens.vms import VmDetailScreen

        app.push_screen(VmDetailScreen(vm.id))
        await settle(app, pilot)
        text = plain(app.screen.query_one("#vm-summary", Static))
        assert "boot" in text and "cdrom,hd" in text and "CD-ROM" in text and "debian-iso" in text
        assert "cloud-init  1 ssh key(s), user data (" in text and SECRET not in text
        await pilot.press("j")
        await settle(app, pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(app, pilot)
        assert controller.db.get(VirtualMachine, vm.id).disks == []
