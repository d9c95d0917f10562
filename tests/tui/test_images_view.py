"""The :images view on the fixture fleet: images listed with their facts, the import form (a refusal is
shown and registers nothing), the delete confirmation."""

from __future__ import annotations

from kerub_tui.core.models import (
    DiskLink,
    FileAllocation,
    ImageInfo,
    VirtualMachine,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
)
from kerub_tui.screens.images import ImagesScreen, ImportImageScreen
from kerub_tui.screens.live import LiveTable

from .helpers import running, settle


def put_image(controller, name: str, host_id: str) -> VirtualStorageDevice:
    disk = VirtualStorageDevice(name=name, size=5 << 20, read_only=True,
                                image=ImageInfo(format="iso", virtual_size=5 << 20, file_size=5 << 20,
                                                sha256="ab" * 32, source="/srv/iso/x.iso"))
    controller.db.put(disk)
    controller.db.put(VirtualStorageDeviceDynamic(id=disk.id, allocations=[FileAllocation(
        host_id=host_id, capability_id="file:/var/lib/kerub-tui/images",
        path=f"/var/lib/kerub-tui/images/kerub-image-{name}-1.iso")]))
    return disk


def cells(app) -> list[list[str]]:
    table = app.screen.query_one(LiveTable)
    return [[c.plain for c in table.cells_of(doc_id)] for doc_id in table.shown_ids()]


async def test_the_images_view_lists_images_and_refuses_a_bad_import(tmp_path):
    async with running(tmp_path, (100, 30)) as (controller, app, pilot):
        host = sorted(controller.db.list("host"), key=lambda h: h.name)[0]
        image = put_image(controller, "grub-rescue", host.id)
        controller.db.put(VirtualMachine(name="installer", disks=[DiskLink(disk_id=image.id, device="cdrom",
                                                                           read_only=True)]))
        assert app.jump("images")
        await settle(app, pilot)
        assert isinstance(app.screen, ImagesScreen)
        (row,) = cells(app)
        assert row[:2] == ["grub-rescue", "iso"] and row[4] == "abababababab"
        assert row[3] == host.name and row[5] == "1"

        await pilot.press("i")
        await settle(app, pilot)
        assert isinstance(app.screen, ImportImageScreen)
        await pilot.click("#image-path")
        await pilot.press(*str(tmp_path / "absent.iso"))
        await pilot.press("enter", "enter")
        await settle(app, pilot)
        assert isinstance(app.screen, ImagesScreen)
        assert any("cannot read" in n.message for n in app._notifications)
        assert [d.name for d in controller.db.list(VirtualStorageDevice) if d.image] == ["grub-rescue"]

        await pilot.press("ctrl+d")
        await settle(app, pilot)
        await pilot.press("y")
        await settle(app, pilot)
        assert any("used by installer" in n.message for n in app._notifications)
        assert controller.db.get(VirtualStorageDevice, image.id) is not None
