"""Remote disks in plans (issue 16 item 1), run on simulated hosts: a VM started on one host reading its disk
over iSCSI (an LV) or NFS (a file) from another, the share made by the plan and read by the domain's own
network disk; compared with the documents afterwards (FleetSimulator.divergence). Hostile names in what a
share would put in a command are never shared. The planner's choices themselves are the scenario tables
of test_scenarios.py (section "issue 16 item 1")."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kerub_tui.core.models import (
    FileAllocation,
    HostConfiguration,
    LvmAllocation,
    PlanStatus,
    VirtualMachineDynamic,
    VirtualStorageDeviceDynamic,
)
from kerub_tui.core.store import Store
from kerub_tui.hosts.results import OperationResult
from kerub_tui.planner.commitments import build_state
from kerub_tui.planner.executor import Executor
from kerub_tui.planner.planning import repair_draft
from kerub_tui.planner.replanner import approve

from .fleet import NOW, Fleet, from_tables
from .simulator import FleetSimulator

pytest.importorskip("kerub_tui.hosts.kvm")


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    with Store.open(tmp_path) as s:
        yield s


def big_disk_on_a_small_host() -> Fleet:
    return from_tables(hosts="""
        name  memory
        h1    4G
        h2    32G
    """, vms="""
        name  memory  disks  expect
        web   8G      root   availability:up@dealbreaker
    """, disks="""
        name  size  on
        root  300G  h1
    """)


async def run(store: Store, fleet: Fleet) -> tuple[list[str], FleetSimulator]:
    store.put_many(fleet.documents())
    draft = repair_draft(build_state(store, now=NOW))
    assert draft is not None
    plan = draft.to_plan()
    store.put(plan)
    approve(store, plan.id, "admin")
    sim = FleetSimulator(fleet.state())
    done = await Executor(store, sim).execute(plan.id)
    assert done.status is PlanStatus.done, done.status_reason
    return [s.description for s in plan.steps], sim


async def test_a_vm_starts_on_one_host_reading_its_lv_over_iscsi_from_another(store: Store) -> None:
    steps, sim = await run(store, big_disk_on_a_small_host())
    assert steps == ["share /dev/vg0/kerub-root over iSCSI as iqn.2024-01.org.kerub:disk-root (target 1) on h1: "
                     "for web on h2, where no copy can be made", "start web on h2"]
    assert sim.divergence(store) == []  # the target is on h1 as the documents say, the guest runs on h2
    assert sim.machine("host-h1").iscsi_targets == {1: ("iqn.2024-01.org.kerub:disk-root", "/dev/vg0/kerub-root")}
    assert store.get(VirtualMachineDynamic, "vm-web").host_id == "host-h2"
    [alloc] = store.get(VirtualStorageDeviceDynamic, "disk-root").allocations
    assert alloc.host_id == "host-h1"  # no data moved
    assert not any(command.startswith("s=$(mktemp)") for _, command in sim.log)  # no copy
    assert repair_draft(build_state(store, now=NOW)) is None  # the share is in use: nothing to tidy


async def test_the_simulated_start_fails_without_the_share(store: Store) -> None:
    """The check above is real: a domain whose iSCSI target is not on the portal does not start."""
    fleet = big_disk_on_a_small_host()
    sim = FleetSimulator(fleet.state())
    from kerub_tui.planner.executor import disk_backings
    from kerub_tui.planner.steps import ShareIscsi

    state = ShareIscsi("host-h1", 1, "iqn.2024-01.org.kerub:disk-root", "/dev/vg0/kerub-root",
                       disk="disk-root").take(fleet.state())
    from kerub_tui.hosts import kvm

    xml = kvm.domain_xml(state.vms["vm-web"], disk_backings(state, "vm-web", "host-h2"), "secret12")
    assert "protocol=\"iscsi\"" in xml
    assert sim.unreachable_disks(xml) == "iSCSI: no target iqn.2024-01.org.kerub:disk-root with a LUN at that portal"


async def test_a_vm_starts_on_one_host_reading_its_file_over_nfs_from_another(store: Store) -> None:
    fleet = big_disk_on_a_small_host()
    fleet.disk("root", size=300 << 30, on=["h1"], file=True)
    steps, sim = await run(store, fleet)
    # to h2 alone: the directory holds other disks' files too
    assert steps == ["export /var/lib/kerub over NFS from h1 to 127.0.0.3: for web on h2, where no copy can be made",
                     "start web on h2"]
    assert sim.divergence(store) == []
    assert list(sim.machine("host-h1").ganesha_exports.values()) == ["/var/lib/kerub"]
    [alloc] = store.get(VirtualStorageDeviceDynamic, "disk-root").allocations
    assert isinstance(alloc, FileAllocation) and alloc.host_id == "host-h1"


def test_vm_show_says_which_disk_is_read_over_a_share_from_where_and_why() -> None:
    from kerub_tui.planner.explain import explain_text

    fleet = big_disk_on_a_small_host()
    fleet.host("h2", memory=32 << 30, vg_free=1 << 40)  # room for a copy: the share wins on cost
    text = explain_text(fleet.state(), "vm-web")
    assert ("disk root: a start would share /dev/vg0/kerub-root over iSCSI as iqn.2024-01.org.kerub:disk-root "
            "(target 1) on h1: for web on h2, cheaper than copying 300.0G (305 s vs 9,830 s)") in text
    running = from_tables(hosts="""
        name  memory  options
        h1    4G      vg=400G iscsi=root
        h2    32G     vg=1T
    """, vms="""
        name  memory  on  disks
        web   8G      h2  root
    """, disks="""
        name  size  on
        root  300G  h1
    """)
    assert "disk root read over iSCSI from h1: cheaper than copying 300.0G (300 s vs 9,800 s)" in explain_text(
        running.state(), "vm-web")


# --- hostile names: what a share would put in a command is refused or reaches it quoted ----------------


def _with_allocation(alloc) -> Fleet:
    fleet = big_disk_on_a_small_host()
    fleet.put(VirtualStorageDeviceDynamic(id="disk-root", allocations=[alloc]))
    return fleet


@pytest.mark.parametrize("vg", ["it's $(reboot)", "vg0; rm -rf x", "`id`", "-vg", "vg 0 && halt", "mapper"])
def test_a_vg_name_no_command_of_kerub_tuis_carries_is_never_shared(vg: str) -> None:
    """Quoting would keep the shell safe, but such a VG is one LVM itself refuses (or "mapper": its
    /dev/mapper/... path is a device-mapper node, not the LV): the path may not be the disk, so nothing
    reads it (hosts/storage_names.py, the rule every other step on such storage follows)."""
    from kerub_tui.planner.planning import plan_all
    from kerub_tui.planner.remote import share_option
    from kerub_tui.planner.steps import ShareIscsi

    fleet = _with_allocation(LvmAllocation(host_id="host-h1", capability_id="lvm:vg0", vg=vg, lv="kerub-root"))
    state = fleet.state()
    option = share_option(state, "disk-root", "host-h2")
    assert isinstance(option, str) and "disk root cannot be shared from h1" in option, option
    assert "kerub-tui puts no such name in a command" in option or "no such name" in option, option
    assert not [s for d in plan_all(state) for s in d.steps if s.type == "iscsi-share"]
    step = ShareIscsi(host="host-h1", tid=1, iqn="iqn.2024-01.tui.kerub:disk-root", lun_path=f"/dev/{vg}/kerub-root",
                      disk="disk-root", initiator="10.0.0.2")
    assert step.blocked(state) is not None


@pytest.mark.parametrize(("vg", "why"), [
    ("vg0,x", "contains ','"),  # LVM refuses it; tgtd too (it splits its parameters at ',')
    ("vg0\nreboot", "contains the control character"),
])
def test_a_vg_name_tgtd_or_a_line_cannot_take_is_never_shared(vg: str, why: str) -> None:
    from kerub_tui.planner.planning import plan_all
    from kerub_tui.planner.remote import share_option

    fleet = _with_allocation(LvmAllocation(host_id="host-h1", capability_id="lvm:vg0", vg=vg, lv="kerub-root"))
    state = fleet.state()
    option = share_option(state, "disk-root", "host-h2")
    assert isinstance(option, str) and "disk root cannot be shared from h1" in option and why in option
    assert not [s for d in plan_all(state) for s in d.steps if s.type == "iscsi-share"]


@pytest.mark.parametrize("directory", ["/var/lib/kerub/it's $(reboot)", '/var/lib/kerub/a"b', "/srv/x;y",
                                       "/srv/{a}", "/srv/a b"])
def test_a_hostile_directory_is_never_exported(directory: str) -> None:
    from kerub_tui.planner.remote import share_option

    fleet = _with_allocation(FileAllocation(host_id="host-h1", capability_id="file:/var/lib/kerub",
                                            path=f"{directory}/root.qcow2", format="qcow2"))
    option = share_option(fleet.state(), "disk-root", "host-h2")
    assert isinstance(option, str) and "disk root cannot be shared from h1" in option, option


def test_an_iqn_from_a_hostile_disk_id_keeps_to_what_an_iqn_may_hold() -> None:
    import re

    from kerub_tui.hosts.iscsi import check_iqn, disk_iqn

    iqn = disk_iqn("Disk-1; $(reboot) `id` 'x'")
    assert check_iqn(iqn) == iqn and re.fullmatch(r"[a-z0-9.:-]+", iqn)


@pytest.mark.parametrize("address", ["127.0.0.3; reboot", "$(id)", "ALL", "-x", "a b"])
def test_an_acl_address_that_is_no_address_never_reaches_tgtadm(address: str) -> None:
    from kerub_tui.hosts.iscsi import iscsi_acl_bind, iscsi_acl_unbind

    with pytest.raises(ValueError):
        iscsi_acl_unbind(1, address)
    if address != "ALL":
        with pytest.raises(ValueError):
            iscsi_acl_bind(1, address)


# --- cleanup: a share nothing reads any more ----------------------------------------------------------


def test_a_share_nothing_reads_is_removed_by_a_tidy_plan_an_auto_approve_covers_only_with_deletes() -> None:
    from kerub_tui.core.models import AutoApprovePolicy, Settings
    from kerub_tui.planner.planning import plan_all
    from kerub_tui.planner.replanner import not_covered
    from kerub_tui.planner.steps import UnshareIscsi

    tables = ("""
        name  memory  options
        h1    32G     vg=400G iscsi=root
        h2    32G     -
    """, """
        name  memory  on  disks
        web   8G      {on}  root
    """, """
        name  size  on
        root  300G  h1
    """)
    back_home = from_tables(tables[0], tables[1].format(on="h1"), tables[2]).state()  # web moved to h1
    [draft] = plan_all(back_home)
    assert (draft.kind, [s.describe(back_home) for s in draft.steps]) == ("tidy", ["remove iSCSI target 1 on h1"])
    plan = draft.to_plan()
    tidy = Settings(auto_approve=[AutoApprovePolicy(plan_kind="tidy")])
    assert not_covered(tidy, plan) == "it deletes data and the tidy policy does not cover deletions"
    assert not_covered(Settings(auto_approve=[AutoApprovePolicy(plan_kind="tidy", deletes=True)]), plan) is None
    # while web reads it from h2 the target is in use: no tidy plan, and the step itself refuses
    reading = from_tables(tables[0], tables[1].format(on="h2"), tables[2]).state()
    assert plan_all(reading) == []
    assert UnshareIscsi("host-h1", 1).blocked(reading) == "web read disk root over it: move or stop them first"


# --- migration and cleanup on the simulated hosts ---------------------------------------------------------


async def test_evacuating_a_vm_that_reads_its_disk_over_iscsi_moves_no_disk_data(store: Store) -> None:
    fleet = from_tables(hosts="""
        name  memory  options
        h1    4G      vg=400G iscsi=root
        h2    32G     recycling
        h3    32G     vg=100G
    """, vms="""
        name  memory  on  disks  expect
        web   8G      h2  root   availability:up@dealbreaker
    """, disks="""
        name  size  on
        root  300G  h1
    """)
    steps, sim = await run(store, fleet)
    assert steps == ["live-migrate web from h2 to h3"]
    assert sim.divergence(store) == []
    assert store.get(VirtualMachineDynamic, "vm-web").host_id == "host-h3"
    assert [c for _, c in sim.log] == ["libvirt migrate vm-web", "libvirt domain-state vm-web"]  # no copy, no LV
    assert sim.machine("host-h1").iscsi_targets  # the same share serves it on h3


async def test_a_move_for_a_want_shares_the_disk_then_migrates_without_its_storage(store: Store) -> None:
    fleet = from_tables(hosts="""
        name  memory  flags        options
        h1    16G     sse4_2       vg=400G
        h2    16G     sse4_2,avx2  vg=1T
    """, vms="""
        name  memory  on  disks  expect
        web   2G      h1  root   availability:up@dealbreaker cpu-flags:avx2@want
    """, disks="""
        name  size  on
        root  300G  h1
    """)
    steps, sim = await run(store, fleet)
    assert [s.split(":")[0] for s in steps] == ["share /dev/vg0/kerub-root over iSCSI as iqn.2024-01.org.kerub",
                                                "live-migrate web from h1 to h2"]
    assert sim.divergence(store) == []
    assert store.get(VirtualMachineDynamic, "vm-web").host_id == "host-h2"


async def test_the_tidy_plan_removes_the_unused_target_on_the_host(store: Store) -> None:
    fleet = from_tables(hosts="""
        name  memory  options
        h1    32G     vg=400G iscsi=root
        h2    32G     -
    """, vms="""
        name  memory  on  disks
        web   8G      h1  root
    """, disks="""
        name  size  on
        root  300G  h1
    """)
    steps, sim = await run(store, fleet)
    assert steps == ["remove iSCSI target 1 on h1"]
    assert sim.divergence(store) == []
    assert sim.machine("host-h1").iscsi_targets == {}


def test_a_vm_whose_host_is_down_is_never_started_elsewhere_on_the_same_shared_disk() -> None:
    """Its host may still run it, writing the disk over the share: a second writer would corrupt it, until the
    lost host is fenced (issue 16 item 2: tests/unit/planner/test_scenarios.py's HA section)."""
    from kerub_tui.planner.planning import plan_all
    from kerub_tui.planner.steps import StartVm

    state = from_tables(hosts="""
        name  memory  status  options
        h1    4G      up      vg=400G iscsi=root
        h2    32G     down    -
        h3    32G     up      vg=100G
    """, vms="""
        name  memory  on  disks  expect
        web   8G      h2  root   availability:up@dealbreaker
    """, disks="""
        name  size  on
        root  300G  h1
    """).state()
    assert StartVm("vm-web", "host-h3").blocked(state) == (
        "web may still run on h2 (down): web is not started elsewhere until h2 is fenced (powered off through IPMI, "
        "seen to run no guest, or confirmed off: kerub-tui host fence h2 --confirm-off)")
    assert not [s for d in plan_all(state) for s in d.steps if isinstance(s, StartVm)]


async def test_a_share_tgtd_does_not_show_afterwards_fails_the_plan_before_the_vm_starts(store: Store) -> None:
    """The executor reads tgtd's targets back (tgtadm --op show): a share command that exits 0 having made
    nothing stops the plan there."""

    class Silent(FleetSimulator):
        async def run(self, host_id, command, **kwargs):
            if "--op new" in command:
                self.log.append((host_id, command))
                return OperationResult(0)
            return await super().run(host_id, command, **kwargs)

    fleet = big_disk_on_a_small_host()
    store.put_many(fleet.documents())
    plan = repair_draft(build_state(store, now=NOW)).to_plan()
    store.put(plan)
    approve(store, plan.id, "admin")
    failed = await Executor(store, Silent(fleet.state())).execute(plan.id)
    assert failed.status is PlanStatus.failed
    assert failed.status_reason.endswith("verify: iSCSI target 1 (iqn.2024-01.org.kerub:disk-root) is not there")
    assert store.get(VirtualMachineDynamic, "vm-web") is None  # never started


def test_a_directory_exported_to_one_host_is_not_widened_for_another() -> None:
    """ganesha keeps one export per directory, and the directory holds other disks' files: a second reader
    elsewhere is refused a share (it gets a copy, or nothing), never the first export rewritten."""
    from kerub_tui.planner.remote import share_option

    fleet = big_disk_on_a_small_host()
    fleet.host("h3", memory=32 << 30)
    fleet.disk("root", size=300 << 30, on=["h1"], file=True)
    state = fleet.state()
    option = share_option(state, "disk-root", "host-h2")
    assert not isinstance(option, str)
    [export] = option.steps
    shared = export.take(state)
    assert share_option(shared, "disk-root", "host-h2").steps == ()  # h2 reads it already
    assert share_option(shared, "disk-root", "host-h3") == "h1 exports /var/lib/kerub to 127.0.0.3 already"


# --- who may log in: tgtd's ACL names the host that reads the disk ----------------------------------------


async def test_only_the_host_that_reads_the_disk_may_log_in_and_a_migration_lets_its_new_host_in(store: Store) -> None:
    _, sim = await run(store, big_disk_on_a_small_host())
    [share] = [s for s in store.list(HostConfiguration) if s.iscsi_targets]
    assert [t.initiators for t in share.iscsi_targets] == [["127.0.0.3"]]  # h2 alone
    assert sim.machine("host-h1").iscsi_acl == {1: ["127.0.0.3"]}
    assert any("--initiator-address 127.0.0.3" in command for _, command in sim.log)
    # h2 goes into maintenance: web moves to h3, which is let in first; no disk data moves
    fleet = from_tables(hosts="""
        name  memory  options
        h1    4G      vg=400G
        h2    32G     recycling
        h3    32G     vg=100G
    """, vms="""
        name  memory  on  disks  expect
        web   8G      h2  root   availability:up@dealbreaker
    """, disks="""
        name  size  on
        root  300G  h1
    """)
    fleet.put(share)
    store.put_many(fleet.documents())
    plan = repair_draft(build_state(store, now=NOW)).to_plan()
    # then h2 reads it no more: taken out of the ACL in the same plan (a tidy part, a deletion to auto-approve)
    assert (plan.plan_kind, [s.description for s in plan.steps]) == ("evacuate+tidy", [
        "let h3 log in to iSCSI target 1 on h1: for web on h3, which reads the same share",
        "live-migrate web from h2 to h3", "stop letting h2 log in to iSCSI target 1 on h1"])
    store.put(plan)
    approve(store, plan.id, "admin")
    moved = FleetSimulator(fleet.state())
    done = await Executor(store, moved).execute(plan.id)
    assert done.status is PlanStatus.done, done.status_reason
    assert moved.divergence(store) == []
    assert moved.machine("host-h1").iscsi_acl == {1: ["127.0.0.4"]}
    assert repair_draft(build_state(store, now=NOW)) is None  # never the last one: that is the target's removal


def test_the_last_host_a_target_lets_in_is_never_taken_out_of_its_acl() -> None:
    from kerub_tui.planner.steps import DisallowIscsiInitiator, ShareIscsi

    state = ShareIscsi("host-h1", 1, "iqn.2024-01.org.kerub:disk-root", "/dev/vg0/kerub-root", disk="disk-root",
                       initiator="127.0.0.3").take(big_disk_on_a_small_host().state())
    assert DisallowIscsiInitiator("host-h1", 1, "127.0.0.3").blocked(state) == (
        "127.0.0.3 is the last host iSCSI target 1 lets in: remove the target instead")


def test_a_host_the_acl_does_not_name_cannot_open_the_disk() -> None:
    from kerub_tui.hosts import kvm
    from kerub_tui.planner.executor import disk_backings
    from kerub_tui.planner.steps import ShareIscsi

    fleet = big_disk_on_a_small_host()
    sim = FleetSimulator(fleet.state())
    sim.machine("host-h1").restore_shares({1: ("iqn.2024-01.org.kerub:disk-root", "/dev/vg0/kerub-root")}, {},
                                          acl={1: ["127.0.0.9"]})
    state = ShareIscsi("host-h1", 1, "iqn.2024-01.org.kerub:disk-root", "/dev/vg0/kerub-root", disk="disk-root",
                       initiator="127.0.0.3").take(fleet.state())
    xml = kvm.domain_xml(state.vms["vm-web"], disk_backings(state, "vm-web", "host-h2"), "secret12")
    assert sim.unreachable_disks(xml, "127.0.0.3") == (
        "iSCSI: target iqn.2024-01.org.kerub:disk-root does not let 127.0.0.3 log in")
