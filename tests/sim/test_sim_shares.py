"""The simulated fleet shares disks (issue 16): the storage server's profile has tgtd and nfs-ganesha, as one
would, so the planner may read a disk from it over iSCSI where the VM can't run there, and the demo's fleet can
show a share plan. Through the whole controller, on simulated hosts; waits are for a state, never a duration."""

from __future__ import annotations

from pathlib import Path

import pytest

from kerub_tui.controller import Controller
from kerub_tui.core.models import HostConfiguration, Plan, VirtualStorageDeviceDynamic, VmStatus, secret_value
from kerub_tui.hosts import iscsi
from kerub_tui.sim import Timing
from kerub_tui.sim.profiles import profile
from tests.sim._support import CEILING, until
from tests.sim.test_faults import approve_all, placement, proposals

TIB = 1 << 40


@pytest.fixture
async def controller(tmp_path: Path):
    controller = Controller(tmp_path / "data", sim_timing=Timing(scale=0.0, connect=0.0, boot=0.0), sim_seed=11)
    await controller.start()
    yield controller
    await controller.stop()


def test_only_the_storage_server_serves_shares() -> None:
    tools = {name: profile(name).capabilities("h").tools for name in ("storage", "r640", "mini")}
    assert {k: tools["storage"][k] for k in ("tgtd", "tgtadm", "ganesha.nfsd")} == {
        "tgtd": True, "tgtadm": True, "ganesha.nfsd": True}
    assert not any(tools[n][k] for n in ("r640", "mini") for k in ("tgtd", "tgtadm", "ganesha.nfsd"))


async def test_an_arm_vm_reads_its_big_disk_from_the_storage_server_over_iscsi(controller: Controller) -> None:
    ids = {}
    for name, kind in (("stor01", "storage"), ("arm01", "arm")):
        ids[name] = (await controller.add_simulated_host(name, kind)).id
        await controller.hosts.wait_up(ids[name], timeout=CEILING)
    # 10 TiB fits only the storage server's VG: the disk is made there first (a disk of its own)
    disk = await controller.create_disk("ci-cache", size=10 * TIB, expectations=["storage-availability:up@dealbreaker"])
    await until(lambda: proposals(controller), "the disk's proposal")
    await approve_all(controller)
    [alloc] = controller.db.get(VirtualStorageDeviceDynamic, disk.id).allocations
    assert alloc.host_id == ids["stor01"]
    # the VM is aarch64: only arm01 runs it, and no copy of 10 TiB fits there
    vm = await controller.create_vm("ci-arm", cpus=4, memory_min=16 << 30, architecture="aarch64",
                                    disks=[{"disk_id": disk.id}],
                                    expectations=["availability:up@dealbreaker", "cpu-architecture:aarch64@dealbreaker"])
    [plan] = await until(lambda: proposals(controller), "a start proposal")
    lines = [s.description for s in plan.steps]
    assert any(line.startswith("share ") and "over iSCSI" in line and "on stor01" in line for line in lines), lines
    assert lines[-1] == "start ci-arm on arm01", lines
    await approve_all(controller)
    await until(lambda: placement(controller, vm.id) == (ids["arm01"], VmStatus.up), "ci-arm up on arm01")
    [target] = controller.db.get(HostConfiguration, ids["stor01"]).iscsi_targets
    [alloc] = controller.db.get(VirtualStorageDeviceDynamic, target.disk_id).allocations
    assert alloc.host_id == ids["stor01"]  # the disk stays where it is; arm01 reads it over the network
    # with CHAP: the storage server's tgtd asks for the target's own account, whose secret the store keeps and
    # arm01 holds in a libvirt secret; the domain could not have started without it (the machine checks)
    secret = secret_value(target.chap_secret)
    assert secret is not None and target.chap_user == iscsi.chap_user(target.iqn)
    server = controller.hosts.simulated.machine(ids["stor01"])
    reader = controller.hosts.simulated.machine(ids["arm01"])
    assert server.iscsi_bound == {target.tid: [target.chap_user]}
    assert server.iscsi_accounts == {target.chap_user: secret}
    usage = iscsi.secret_usage(ids["stor01"], target.iqn)
    assert reader.libvirt_secrets == {usage: secret}
    xml = reader.domains[vm.id].xml or ""
    assert reader.iscsi_refusal(xml) is None and secret not in xml
    reader.libvirt_secrets[usage] = "not-the-secret-0"
    assert "Authorization failure" in (reader.iscsi_refusal(xml) or "")
    reader.libvirt_secrets[usage] = secret
    # nothing an admin or a script sees holds it: the plan, its records, the audit log, the documents as JSON
    shown = [p.model_dump_json() for p in controller.db.list(Plan)]
    shown += [d.model_dump_json() for d in controller.db.all_documents()]
    shown += [a.model_dump_json() for a in controller.audit_log()]
    assert not [text for text in shown if secret in text]
