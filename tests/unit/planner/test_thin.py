"""Thin provisioning's parts (issue 18 item 5): the over-commit limit, pool sizes, what blocks a thin LV,
and hostile volume group names. The situations as the admin meets them are the thin scenarios at the end
of test_scenarios.py."""

from __future__ import annotations

import shlex

import pytest

from kerub_tui.core.models import (
    HostConfiguration,
    LvmAllocation,
    StorageCapability,
    StorageTechnology,
    ThinPool,
    VirtualStorageDeviceDynamic,
)
from kerub_tui.planner.planning import plan_all
from kerub_tui.planner.steps import CreateThinLv, CreateThinPool, ExtendLv
from kerub_tui.planner.steps.lvm import thin_pool_overhead
from kerub_tui.planner.thin import pool_size_for, thin_steps

from .fleet import GIB, MIB, Fleet

ON = {"thin_overcommit": True}


def pooled(used: int | None = None) -> Fleet:
    """h1: vg0 with 100G free and a 10G pool holding a 40G thin LV (``used``: as monitoring saw it)."""
    f = Fleet()
    f.host("h1", config=HostConfiguration(thin_pools=[ThinPool(vg="vg0", name="kerub--thin", size_bytes=10 * GIB)]),
           storage_free={} if used is None else {"thin:vg0/kerub--thin": 10 * GIB - used})
    f.disk("old", size=40 * GIB)
    f.put(VirtualStorageDeviceDynamic(id="disk-old", allocations=[LvmAllocation(
        host_id="host-h1", capability_id="lvm:vg0", vg="vg0", lv="kerub-old", thin_pool="kerub--thin")]))
    f.disk("new", size=50 * GIB)
    return f


def test_the_over_commit_limit_is_the_ratio_only_while_the_policy_is_on() -> None:
    f = pooled(used=1 * GIB)
    assert f.state().thin_overcommit_limit() == 1.0
    assert f.state(**ON).thin_overcommit_limit() == 10.0
    assert f.state(**ON, thin_overcommit_ratio=2.5).thin_overcommit_limit() == 2.5
    step = CreateThinLv("disk-new", "host-h1", "lvm:vg0", "vg0", "kerub--thin", "kerub-new", 50 * GIB)
    assert step.blocked(f.state(**ON)) is None  # 90G in 10G: 9x of 10x
    assert step.blocked(f.state(**ON, thin_overcommit_ratio=8)) == (
        "thin pool vg0/kerub--thin on h1 (10.0G) would hold 90.0G of thin LVs, 9.0x its size: thin over-commit "
        "allows at most 8x")
    assert step.blocked(f.state()) == (
        "thin pool vg0/kerub--thin on h1 (10.0G) would hold 90.0G of thin LVs, 9.0x its size: thin over-commit "
        "is off")


def test_a_nearly_full_pool_takes_no_new_thin_lv_and_a_thin_lv_grows_within_the_ratio_only() -> None:
    step = CreateThinLv("disk-new", "host-h1", "lvm:vg0", "vg0", "kerub--thin", "kerub-new", GIB)
    assert step.blocked(pooled(used=int(8.5 * GIB)).state(**ON)) == (
        "thin pool vg0/kerub--thin on h1 is 85% full: extend it first")
    # without monitoring's figure the pool's data is taken as its thin LVs' sizes (pessimistic)
    assert "% full" in (step.blocked(pooled().state(**ON)) or "")
    grow = ExtendLv("disk-old", "host-h1", "lvm:vg0", "vg0", "kerub-old", 120 * GIB)
    assert grow.blocked(pooled(used=GIB).state(**ON)) == (
        "thin pool vg0/kerub--thin on h1 (10.0G) would hold 120.0G of thin LVs, 12.0x its size: thin over-commit "
        "allows at most 10x")
    assert ExtendLv("disk-old", "host-h1", "lvm:vg0", "vg0", "kerub-old", 90 * GIB).blocked(
        pooled(used=GIB).state(**ON)) is None


def test_pool_sizes_are_whole_extents_within_the_ratio_and_a_new_pool_pays_for_its_metadata() -> None:
    assert pool_size_for(1 << 40, 10) == 109953679360  # 102.4G, rounded up to 4 MiB extents
    assert pool_size_for(GIB, 3) % (4 * MIB) == 0 and pool_size_for(GIB, 3) * 3 >= GIB
    assert thin_pool_overhead(GIB) == 2 * 4 * MIB  # LVM's smallest metadata LV, and its spare
    assert thin_pool_overhead(100 * GIB) == 2 * 100 * MIB
    assert thin_pool_overhead(10 << 40) == 2 * 128 * MIB  # LVM grows the chunk past that
    f = Fleet()
    f.host("h1", vg_free=10 * GIB)
    s = f.state(**ON)
    pool = CreateThinPool("host-h1", "lvm:vg0", "vg0", "kerub--thin", 10 * GIB)
    assert pool.blocked(s) == "h1 lvm:vg0: not enough free space for a 10.0G pool and its metadata"
    smaller = CreateThinPool("host-h1", "lvm:vg0", "vg0", "kerub--thin", 9 * GIB)
    after = smaller.take(s)
    assert after.free_storage("host-h1", "lvm:vg0") == GIB - thin_pool_overhead(9 * GIB)
    assert after.host_dyn["host-h1"].storage_free["thin:vg0/kerub--thin"] == 9 * GIB  # empty: as monitored
    assert after.thin_pool_used("host-h1", "vg0", "kerub--thin") == 0


def test_a_new_pool_gets_at_least_a_gib_where_the_vg_has_it() -> None:
    f = Fleet()
    f.host("h1", vg_free=4 * GIB)
    f.disk("data", size=5 * GIB)
    steps, _ = thin_steps(f.state(**ON), f.state(**ON).disks["disk-data"], "host-h1") or ([], 0.0)
    assert [s.describe(f.state(**ON)) for s in steps[:1]] == ["create thin pool vg0/kerub--thin (1.0G) on h1"]
    assert thin_steps(f.state(), f.state().disks["disk-data"], "host-h1") is None  # the policy off: nothing


HOSTILE_VGS = ["vg0; touch /tmp/kerub-pwned", "$(reboot)", "`id`", "a b", "-rf", "x\ny", "mapper"]


@pytest.mark.parametrize("vg", HOSTILE_VGS)
def test_a_hostile_volume_group_name_never_gets_a_thin_pool(vg: str) -> None:
    """A host may report any VG name LVM prints; one kerub-tui's builders refuse is never planned on,
    and a proper VG next to it is used, every word of its commands quoted."""
    f = Fleet()
    f.host("h1", storage=[
        StorageCapability(id=f"lvm:{vg}", technology=StorageTechnology.lvm, name=vg, size_bytes=900 * GIB,
                          free_bytes=900 * GIB, device="/dev/sda"),
        StorageCapability(id="lvm:vg-1.x_y", technology=StorageTechnology.lvm, name="vg-1.x_y",
                          size_bytes=200 * GIB, free_bytes=200 * GIB, device="/dev/sdb")])
    f.disk("data", size=1 << 40, expect=["storage-availability@dealbreaker"])
    [draft] = plan_all(f.state(**ON))
    commands = [c.command for step in draft.to_plan().steps for c in step.commands]
    assert commands == [
        "lvcreate --yes --type thin-pool --name kerub--thin --size 109953679360b vg-1.x_y",
        "lvcreate --yes --type thin --name kerub-data --virtualsize 1099511627776b --thinpool kerub--thin vg-1.x_y"]
    assert all(vg not in c for c in commands)
    assert all(shlex.join(shlex.split(c)) == c for c in commands)


@pytest.mark.parametrize("name", ["p; reboot", "$(id)", "a b", "x_tmeta"])
def test_a_pool_with_a_name_no_command_carries_is_not_reused(name: str) -> None:
    f = Fleet()
    f.host("h1", vg_free=200 * GIB, config=HostConfiguration(thin_pools=[ThinPool(vg="vg0", name=name,
                                                                                  size_bytes=100 * GIB)]))
    f.disk("data", size=1 << 40)
    s = f.state(**ON)
    steps, _ = thin_steps(s, s.disks["disk-data"], "host-h1") or ([], 0.0)
    assert [type(step).__name__ for step in steps] == ["CreateThinPool", "CreateThinLv"]
    assert all(name not in c.command for step in steps for c in step.commands(s))


def test_a_disk_no_host_can_hold_is_reported_with_why(tmp_path) -> None:
    """With thin over-commit off, a 1 TB disk on a VG with 200 GB free gets no plan, and the warning says
    why: the free space, and that the policy is off; allowed, it is planned."""
    from kerub_tui.core.models import Event, Settings
    from kerub_tui.core.store import Store
    from kerub_tui.planner.replanner import Replanner

    from .fleet import NOW, from_tables

    fleet = from_tables(hosts="""
        name memory options
        h1   16G    vg=200G
    """, disks="""
        name size expect
        data 1T   storage-availability@dealbreaker
    """)
    with Store.open(tmp_path) as store:
        store.put_many(fleet.documents())
        report = Replanner(store, clock=lambda: NOW).replan()
        assert report.proposed == []
        [event] = [e.message for e in store.list(Event) if e.type == "unsatisfiable"]
        assert event == ("no plan can fix: disk data: storage-availability@dealbreaker: not allocated on any host "
                         "(h1: lvm:vg0: 200.0G free, needs 1.0T; thin over-commit is off (settings))")
        store.put(Settings().evolve(optimisation={"thin_overcommit": True}))
        report = Replanner(store, clock=lambda: NOW).replan()
        assert len(report.proposed) == 1 and report.unfixable == []
