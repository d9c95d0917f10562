"""A VM reading its disk over NFS migrates without moving disk data (issue 16): ganesha keeps one export per
directory, exported to the VM's host alone, so the export is widened to the new host first (both read while the
VM moves: ganesha's CLIENT line names both), the VM migrates, and the old host is taken out (the export is
rewritten for the new host alone, not removed). Run on simulated machines and compared with the documents."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kerub_tui.core.models import HostConfiguration, PlanStatus, VirtualMachineDynamic, VirtualStorageDeviceDynamic
from kerub_tui.core.store import Store
from kerub_tui.planner.commitments import build_state
from kerub_tui.planner.executor import Executor
from kerub_tui.planner.planning import repair_draft
from kerub_tui.planner.replanner import approve
from kerub_tui.planner.steps import ExportNfs, UnexportNfs

from .fleet import NOW, Fleet, from_tables
from .simulator import FleetSimulator


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    with Store.open(tmp_path) as s:
        yield s


def reader_on_a_recycled_host() -> Fleet:
    return from_tables(hosts="""
        name  memory  options
        h1    4G      vg=400G nfs=root@h2
        h2    32G     recycling
        h3    32G     vg=100G
    """, vms="""
        name  memory  on  disks  expect
        web   8G      h2  root   availability:up@dealbreaker
    """, disks="""
        name  size  on  file
        root  300G  h1  yes
    """)


async def test_the_export_is_widened_then_handed_on_and_no_disk_data_moves(store: Store) -> None:
    fleet = reader_on_a_recycled_host()
    h2, h3 = (fleet.docs[("host", h)].address for h in ("host-h2", "host-h3"))
    store.put_many(fleet.documents())
    draft = repair_draft(build_state(store, now=NOW))
    assert draft is not None
    plan = draft.to_plan()
    assert [s.type for s in plan.steps] == ["nfs-export", "migrate-vm", "nfs-unexport"]
    commands = [c.command for s in plan.steps for c in s.commands]
    assert f"Clients = {h2}, {h3};" in commands[0]  # both read while it moves
    assert f"Clients = {h3};" in commands[-1] and "rm -f" not in commands[-1]  # rewritten for h3 alone
    store.put(plan)
    approve(store, plan.id, "admin")
    sim = FleetSimulator(fleet.state())
    done = await Executor(store, sim).execute(plan.id)
    assert done.status is PlanStatus.done, done.status_reason
    assert sim.divergence(store) == []
    assert store.get(VirtualMachineDynamic, "vm-web").host_id == "host-h3"
    [alloc] = store.get(VirtualStorageDeviceDynamic, "disk-root").allocations
    assert alloc.host_id == "host-h1"  # no disk data moved
    [export] = store.get(HostConfiguration, "host-h1").exports
    assert (export.path, export.clients) == ("/var/lib/kerub", h3)
    assert repair_draft(build_state(store, now=NOW)) is None  # nothing left to tidy


def test_the_old_reader_is_not_taken_out_while_the_vm_still_reads_there() -> None:
    fleet = reader_on_a_recycled_host()
    h2, h3 = (fleet.docs[("host", h)].address for h in ("host-h2", "host-h3"))
    state = fleet.state()
    widened = ExportNfs("host-h1", "/var/lib/kerub", h3, disk="disk-root", server="ganesha")
    assert widened.blocked(state) is None
    both = widened.take(state)
    # web still runs on h2: taking h2 out is refused; taking h3 out (no VM reads there) is not
    assert UnexportNfs("host-h1", "/var/lib/kerub", h2, "ganesha").blocked(both) == (
        "web read disk root over it: move or stop them first")
    assert UnexportNfs("host-h1", "/var/lib/kerub", h3, "ganesha").blocked(both) is None
    # while one client reads nothing of it (h3, no VM there yet), it is widened for no one else
    third = ExportNfs("host-h1", "/var/lib/kerub", "10.9.9.9", disk="disk-root", server="ganesha")
    assert third.blocked(both) == f"h1 exports /var/lib/kerub to {h3} already"
    # nor for another disk of the directory: h2 reads root there, not disk-other
    stranger = ExportNfs("host-h1", "/var/lib/kerub", h3, disk="disk-other", server="ganesha")
    assert stranger.blocked(state) == f"h1 exports /var/lib/kerub to {h2} already"
