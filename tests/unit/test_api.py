"""The console API (kerub_tui.api): actions declared once, read-only refused in one place, and the
controller's use cases the console, the command line and the demo share."""

import pytest

from kerub_tui.api import ACTIONS, REMOTE_ACTIONS, ReadOnlyMode, guarded, refusal
from kerub_tui.cli import run_in_controller
from kerub_tui.control import ControlServer, RemoteController
from kerub_tui.controller import ActionError, Controller
from kerub_tui.core.models import (
    AuditEntry,
    Host,
    Plan,
    Settings,
    VirtualMachine,
    VirtualStorageDevice,
)

GIB = 1 << 30


@pytest.fixture
async def controller(tmp_path):
    controller = Controller(tmp_path / "data")
    await controller.start(connect_hosts=False)
    yield controller
    await controller.stop()


def test_every_public_action_of_both_controllers_is_declared_once():
    for cls in (Controller, RemoteController):
        for name in dir(cls):
            member = getattr(cls, name)
            if name.startswith("_") or name in ("start", "stop") or not callable(member):
                continue
            if getattr(member, "__code__", None) is not None and member.__code__.co_flags & 0x80:  # async
                assert name in ACTIONS, f"{cls.__name__}.{name} is not declared in kerub_tui.api.ACTIONS"
    # What the socket serves is what an attached console calls.
    for name in REMOTE_ACTIONS:
        assert callable(getattr(RemoteController, name)), name


def test_an_undeclared_action_is_refused_when_its_class_is_defined():
    with pytest.raises(TypeError, match="not declared"):
        @guarded
        class Sloppy:
            readonly = False

            async def wipe_everything(self) -> None:
                pass


def test_refusal_is_the_one_read_only_check():
    assert refusal(False, "delete_vm") is None
    assert refusal(True, "delete_vm") is not None
    assert refusal(True, "explain") is None  # reads are allowed
    assert refusal(True, "open_console") is None
    assert refusal(True, "no_such_action") is not None  # unknown: assumed to change something


async def test_read_only_controller_refuses_every_changing_action_before_it_runs(tmp_path):
    writer = Controller(tmp_path / "data")
    await writer.start(connect_hosts=False)
    await writer.create_disk("kept", size=GIB)
    vm = await writer.create_vm("kept-vm", memory_min=GIB)
    await writer.stop()
    reader = Controller(tmp_path / "data", readonly=True)
    await reader.start(connect_hosts=False)
    try:
        with pytest.raises(ReadOnlyMode):
            await reader.create_disk("new", size=GIB)
        with pytest.raises(ReadOnlyMode):
            await reader.delete_disk("kept")
        with pytest.raises(ReadOnlyMode):
            await reader.import_documents(str(tmp_path / "nothing.json"))
        with pytest.raises(ReadOnlyMode):  # refused before it asks for a rejected plan again
            await reader.set_vm_availability("kept-vm", True)
        assert reader.get(VirtualMachine, vm.id) == vm
        assert [d.name for d in reader.documents(VirtualStorageDevice)] == ["kept"]
        assert await reader.export_documents(str(tmp_path / "out.json")) >= 1  # exporting changes nothing
    finally:
        await reader.stop()


async def test_create_vm_makes_its_new_disks_in_the_same_transaction(controller):
    existing = await controller.create_disk("shared", size=GIB)
    vm = await controller.create_vm(
        "web", memory_min=GIB, disks=[{"disk_id": existing.id}],
        new_disks=[{"name": "web-data", "size": 2 * GIB, "bus": "scsi", "expectations": ["storage-redundancy:2"]}])
    data = controller.find_by_name(VirtualStorageDevice, "web-data")
    assert data is not None and data.size == 2 * GIB
    assert [e.type for e in data.expectations] == ["storage-redundancy"]
    assert [(link.disk_id, link.bus) for link in vm.disks] == [(existing.id, "virtio"), (data.id, "scsi")]
    audit = [(a.action, a.target) for a in sorted(controller.documents(AuditEntry), key=lambda a: a.time)]
    assert ("disk create", "web-data") in audit and ("vm create", "web") in audit


async def test_a_refused_vm_leaves_none_of_its_new_disks(controller):
    await controller.create_disk("taken", size=GIB)
    with pytest.raises(ActionError, match="already exists"):
        await controller.create_vm("db", memory_min=GIB, new_disks=[{"name": "db-data", "size": GIB},
                                                                    {"name": "taken", "size": GIB}])
    with pytest.raises(ActionError, match="made twice"):
        await controller.create_vm("db", memory_min=GIB, new_disks=[{"name": "a", "size": GIB},
                                                                    {"name": "a", "size": GIB}])
    with pytest.raises(ActionError):
        await controller.create_vm("db", memory_min=0, new_disks=[{"name": "db-data", "size": GIB}])
    assert controller.find_by_name(VirtualStorageDevice, "db-data") is None
    assert controller.find_by_name(VirtualStorageDevice, "a") is None
    assert controller.documents(VirtualMachine) == []


async def test_update_vm_adds_new_disks_after_its_own(controller):
    vm = await controller.create_vm("app", memory_min=GIB, disk_sizes=[GIB])
    updated = await controller.update_vm(vm.id, cpus=2, new_disks=[{"name": "app-logs", "size": GIB}])
    logs = controller.find_by_name(VirtualStorageDevice, "app-logs")
    assert logs is not None
    assert updated.cpus == 2
    assert [link.disk_id for link in updated.disks] == [vm.disks[0].disk_id, logs.id]


async def test_impact_states_what_a_confirmation_says(controller):
    disk = await controller.create_disk("scratch", size=GIB)
    vm = await controller.create_vm("batch", memory_min=GIB, cpus=2, disks=[{"disk_id": disk.id}])
    assert controller.impact("delete VMs", [vm.id]) == [
        "batch: 2 vCPU, 1.0G; its disk(s) scratch kept, with their data",
        "The VMs are deleted; the disks named above stay in Storage (delete them there, or use "
        "vm delete --with-disks on the command line).",
    ]
    assert controller.impact("delete disks", [disk.id]) == ["scratch: 1.0G; attached to batch: refused until detached"]
    assert controller.impact("stop VMs", [vm.id])[0] == "batch: not running; stays down"
    with pytest.raises(ValueError, match="no impact"):
        controller.impact("format the disks", [disk.id])


async def test_queries_are_the_same_on_an_attached_console(controller):
    server = ControlServer(controller, run_in_controller)
    await server.start()
    remote = RemoteController(controller.data_dir)
    await remote.start()
    try:
        vm = await remote.create_vm("remote-vm", memory_min=GIB, new_disks=[{"name": "remote-vm-data", "size": GIB}])
        assert controller.find_by_name(VirtualStorageDevice, "remote-vm-data") is not None
        assert vm.name == "remote-vm"
        assert remote.settings() == controller.settings() == Settings()
        assert remote.documents(Host) == [] and remote.documents(Plan) == []
        assert isinstance(remote.verdicts("vm", vm.id), dict)
        # An argument called like the call's own name goes through (it did not: "multiple values for name").
        with pytest.raises(ActionError, match="contains ';'"):
            await remote.add_host(name="a;b", address="127.0.0.1", fingerprint="SHA256:" + "A" * 43)
    finally:
        await remote.stop()
        await server.stop()
