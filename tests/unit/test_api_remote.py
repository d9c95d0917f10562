"""The console API as the command line uses it, answered by an attached console's RemoteController too
(issue 14): the queries over its mirror, export through the socket, import and execute_now refused in
one line each."""

from __future__ import annotations

import json

import pytest

from kerub_tui.api import ActionError
from kerub_tui.cli import run_in_controller
from kerub_tui.control import ControlServer, RemoteController
from kerub_tui.controller import Controller
from kerub_tui.core.models import Plan, VirtualStorageDevice


@pytest.fixture
async def attached(tmp_path):
    controller = Controller(tmp_path / "data")
    await controller.start(connect_hosts=False)
    server = ControlServer(controller, run_in_controller)
    await server.start()
    await controller.create_disk("d1", size=1 << 20)
    controller.db.put(Plan(id="abcdef12-0000-0000-0000-000000000000", plan_kind="repair"))
    remote = RemoteController(controller.data_dir)
    await remote.start()
    yield controller, remote
    await remote.stop()
    await server.stop()
    await controller.stop()


async def test_the_queries_the_command_line_asks_answer_from_the_mirror(attached) -> None:
    _controller, remote = attached
    assert remote.resolve(VirtualStorageDevice, "d1").name == "d1"
    with pytest.raises(ActionError, match="no disk named 'nope'"):
        remote.resolve(VirtualStorageDevice, "nope")
    assert remote.plan("abcdef").id.startswith("abcdef12")
    with pytest.raises(ActionError, match="d1 is a disk, not an image"):
        remote.image("d1")
    assert remote.images() == []
    assert [(a.action, a.target) for a in remote.audit_log()] == [("disk create", "d1")]
    assert remote.runs_plans and remote.live


async def test_export_goes_through_the_socket_import_and_execute_now_are_refused(attached, tmp_path) -> None:
    _controller, remote = attached
    target = tmp_path / "export.json"
    count = await remote.export_documents(str(target))
    assert count == len(json.loads(target.read_text())["documents"]) and count >= 3
    with pytest.raises(ActionError, match="import needs the controller stopped"):
        await remote.import_documents(str(target))
    with pytest.raises(ActionError, match="runs approved plans by itself"):
        await remote.execute_now("abcdef12-0000-0000-0000-000000000000")


async def test_an_attached_console_reads_the_metrics_history(attached) -> None:
    """The metrics query of an attached console reads the controller's metrics file (read-only)."""
    import time

    from kerub_tui.core.metrics import Recorder

    controller, remote = attached
    now = time.time()
    recorder = Recorder(controller.db.data_dir)
    recorder.observe([("vm", "v1", now - 300, (25.0, 2.0**30))], now - 300)
    recorder.close(now)
    for api in (controller, remote):
        points = [p for p in api.metrics("vm", "v1", "1h").points if p.cpu is not None]
        assert points and all(p.cpu == 25.0 for p in points)
    with pytest.raises(ActionError, match="unknown range '2w'"):
        remote.metrics("vm", "v1", "2w")


async def test_a_hosts_detail_queries_answer_alike_locally_and_from_the_mirror(attached) -> None:
    """What the host detail and `host show` say of a host (its accelerator, its storage that takes no new
    disks, its PVs on a failing disk) comes from the API's queries, the same for an attached console."""
    import asyncio

    from kerub_tui.core.models import (
        Host,
        HostCapabilities,
        HostDynamic,
        HypervisorInfo,
        PhysicalVolumeInfo,
        StorageCapability,
        StorageTechnology,
    )

    controller, remote = attached
    pvs = [PhysicalVolumeInfo(name="/dev/sdb1", disk="/dev/sdb"), PhysicalVolumeInfo(name="/dev/sdc1")]
    storage = [StorageCapability(id="lvm:vg0;x", technology=StorageTechnology.lvm, name="vg0;x"),
               StorageCapability(id="lvm:vg1", technology=StorageTechnology.lvm, name="vg1", pvs=pvs)]
    host = Host(id="host-h1", name="h1", address="127.0.0.2", accel="tcg",
                capabilities=HostCapabilities(storage=storage, hypervisor=HypervisorInfo(kvm=True)))
    seen = [PhysicalVolumeInfo(name="/dev/sdb1"), PhysicalVolumeInfo(name="/dev/sdc1")]  # monitoring knows no disk
    controller.db.put(host)
    controller.db.put(HostDynamic(id="host-h1", failing_devices=["sdb"], storage_pvs={"lvm:vg1": seen}))
    for _ in range(500):
        if remote.get(HostDynamic, "host-h1") is not None:
            break
        await asyncio.sleep(0.01)
    for api in (controller, remote):
        accel = api.accelerator("host-h1")
        assert accel is not None and (accel.name, accel.why, accel.forced_tcg) == \
            ("tcg", "set by the admin; kvm is available", True)
        assert api.accelerator("nope") is None
        assert list(api.unusable_storage("host-h1")) == ["lvm:vg0;x"]
        assert "contains ';'" in api.unusable_storage("host-h1")["lvm:vg0;x"]
        assert api.failing_pvs("host-h1", "lvm:vg1") == {"/dev/sdb1"}  # by its disk, as discovered
        assert api.failing_pvs("host-h1", "lvm:vg0;x") == set()
        assert api.unusable_storage("nope") == {} and api.failing_pvs("nope", "lvm:vg1") == set()
