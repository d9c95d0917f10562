"""The execution engine, against the fleet simulator: steps in order, commands audited, documents
updated from the steps' predictions, stop at the first failure, reservations released, interruption."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from kerub_tui.core.models import (
    AuditEntry,
    HostDynamic,
    LvmAllocation,
    Plan,
    PlanStatus,
    StepOutcome,
    VirtualMachineDynamic,
    VirtualStorageDeviceDynamic,
    VmStatus,
)
from kerub_tui.core.store import Store
from kerub_tui.hosts.results import OperationResult
from kerub_tui.planner.commitments import build_state, lock_holders
from kerub_tui.planner.executor import Executor
from kerub_tui.planner.planning import repair_draft
from kerub_tui.planner.replanner import approve, recover_interrupted

from .fleet import GIB, NOW, Fleet, from_tables, full_until_b_moves
from .simulator import FleetSimulator

pytest.importorskip("kerub_tui.hosts.kvm")


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    with Store.open(tmp_path) as s:
        yield s


def vm_with_new_disk() -> Fleet:
    return from_tables(hosts="""
        name memory
        h1   16G
    """, vms="""
        name memory disks expect
        db   2G     data  availability:up@dealbreaker
    """, disks="""
        name size
        data 10G
    """)


def proposed(store: Store, fleet: Fleet) -> Plan:
    store.put_many(fleet.documents())
    draft = repair_draft(build_state(store, now=NOW))
    plan = draft.to_plan()
    store.put(plan)
    return plan


async def test_an_approved_plan_creates_the_lv_and_starts_the_vm(store: Store) -> None:
    fleet = vm_with_new_disk()
    plan = proposed(store, fleet)
    assert [s.type for s in plan.steps] == ["create-lv", "start-vm"]
    approve(store, plan.id, "admin")
    sim = FleetSimulator(fleet.state())
    done = await Executor(store, sim).execute(plan.id)
    assert done.status is PlanStatus.done, done.status_reason
    assert sim.divergence(store) == []  # the hosts have what the documents say
    assert [r.outcome for r in done.records] == [StepOutcome.done, StepOutcome.done]
    assert done.records[0].commands[0].command.startswith("lvcreate")
    assert done.records[1].commands[0].command.startswith("libvirt: virsh start db")
    # the documents say what was done, before monitoring reports it
    assert store.get(VirtualMachineDynamic, "vm-db").host_id == "host-h1"
    assert store.get(VirtualMachineDynamic, "vm-db").status is VmStatus.up
    [alloc] = store.get(VirtualStorageDeviceDynamic, "disk-data").allocations
    assert (alloc.vg, alloc.lv) == ("vg0", "kerub-data")
    # perform and verify (read back): every command in the step records and in the audit log
    ran = [c for r in done.records for c in r.commands]
    assert [" ".join(c.command.split()[:2]) for c in ran] == [
        "lvcreate --yes", "lvs --reportformat", "libvirt: virsh", "libvirt: domain-state"]
    audit = [a for a in store.list(AuditEntry) if a.plan_id == plan.id]
    assert sorted(a.action for a in audit) == ["plan approve", "plan done", "plan start"] + ["step command"] * 4
    commands = [a for a in audit if a.action == "step command"]
    assert sorted(a.command for a in commands) == sorted(c.command for c in ran)
    assert all(a.host_id == "host-h1" and a.exit_code == 0 for a in commands)
    # the start's commands are found by its VM in the history (the LV's step acts on no VM)
    assert sorted(a.command.split()[1] for a in store.history.query("audit", subject="vm-db")) == [
        "domain-state", "virsh"]
    assert [h for h, _ in sim.log][:1] == ["host-h1"]
    # nothing is left to do
    assert repair_draft(build_state(store, now=NOW)) is None


async def test_a_step_that_predicts_wrong_is_caught_by_what_the_hosts_have(store: Store, monkeypatch) -> None:
    """The executor writes each step's prediction (its ``take``) into the documents; the simulated hosts
    change only by the commands they run. A prediction that is wrong (here: the LV half its size, the VM
    paused) passes the executor's read-backs, which check the step's own parameters, but not the
    comparison with the hosts. (A simulator that moved its hosts by ``take`` would have agreed with it.)"""
    from kerub_tui.planner.steps import CreateLv, StartVm

    fleet = vm_with_new_disk()
    plan = proposed(store, fleet)
    approve(store, plan.id, "admin")
    right_allocation, right_take = CreateLv.allocation, StartVm.take
    monkeypatch.setattr(CreateLv, "allocation",
                        lambda step: right_allocation(step).evolve(actual_size=step.size // 2))
    monkeypatch.setattr(StartVm, "take", lambda step, state: state.apply(
        [right_take(step, state).vm_dyn[step.vm].evolve(status=VmStatus.paused)]))
    sim = FleetSimulator(fleet.state())
    done = await Executor(store, sim).execute(plan.id)
    assert done.status is PlanStatus.done, done.status_reason  # nothing the executor reads back disagrees
    assert sim.divergence(store) == [
        "h1: VM vm-db is paused in the documents, up on the host",
        "h1: LV vg0/kerub-data is 5.0G in the documents, 10.0G on the host",
    ]


async def test_stop_at_the_first_failure_and_release_the_reservations(store: Store) -> None:
    fleet = vm_with_new_disk()
    plan = proposed(store, fleet)
    approve(store, plan.id, "admin")
    assert lock_holders(store)  # approved: it holds the VM and the disk
    sim = FleetSimulator(fleet.state(), fail=lambda host, command:
                         "Volume group \"vg0\" has insufficient free space" if command.startswith("lvcreate") else None)
    failed = await Executor(store, sim).execute(plan.id)
    assert failed.status is PlanStatus.failed
    assert failed.status_reason.startswith("step 1 (create LV vg0/kerub-data (10.0G) on h1 for disk data): lvcreate")
    assert "insufficient free space" in failed.status_reason
    assert [r.outcome for r in failed.records] == [StepOutcome.failed]
    assert not any("libvirt" in c for _, c in sim.log)  # the VM was not started
    assert lock_holders(store) == {}
    assert store.get(VirtualMachineDynamic, "vm-db") is None
    # the next plan starts again from what is true
    assert [s.type for s in repair_draft(build_state(store, now=NOW)).steps] == ["create-lv", "start-vm"]


async def test_a_step_that_no_longer_applies_fails_in_prepare(store: Store) -> None:
    fleet = vm_with_new_disk()
    plan = proposed(store, fleet)
    approve(store, plan.id, "admin")
    # meanwhile the VM was started by someone else on the host (monitoring reports it)
    store.put(VirtualMachineDynamic(id="vm-db", host_id="host-h1", status=VmStatus.up))
    sim = FleetSimulator(fleet.state())
    failed = await Executor(store, sim).execute(plan.id)
    assert failed.status is PlanStatus.failed
    assert "step 2 (start db on h1): prepare: db is already up on h1" in failed.status_reason


async def test_verification_catches_a_step_that_did_not_happen(store: Store) -> None:
    fleet = vm_with_new_disk()
    plan = proposed(store, fleet)
    approve(store, plan.id, "admin")

    class Forgetful(FleetSimulator):
        """Says yes to lvcreate but does not create anything."""

        async def run(self, host_id, command, *, privileged=True):
            if command.startswith("lvcreate"):
                return OperationResult(0)
            return await super().run(host_id, command, privileged=privileged)

    sim = Forgetful(fleet.state())
    failed = await Executor(store, sim).execute(plan.id)
    assert failed.status_reason.endswith("verify: LV vg0/kerub-data is not there")


async def test_migration_and_ksm_read_back(store: Store) -> None:
    fleet = from_tables(hosts="""
        name memory options
        h1   16G    recycling
        h2   16G    used=15G ksm=off,0,0
    """, vms="""
        name memory on
        a    2G     h1
        b    2G     h2
    """)
    plan = proposed(store, fleet)
    assert plan.plan_kind == "evacuate"
    approve(store, plan.id, "admin")
    sim = FleetSimulator(fleet.state())
    done = await Executor(store, sim).execute(plan.id)
    assert done.status is PlanStatus.done, done.status_reason
    assert sim.divergence(store) == []  # the hosts have what the documents say
    assert store.get(VirtualMachineDynamic, "vm-a").host_id == "host-h2"


async def test_a_plan_that_makes_room_runs_on_the_hosts(store: Store) -> None:
    """Issue 18 item 1: a VM moves away to make room, then the new one starts where it was; the stored
    plan says why the move is made, and the simulated hosts end as the documents say."""
    fleet = full_until_b_moves()
    plan = proposed(store, fleet)
    assert [s.description for s in plan.steps] == ["live-migrate b from h1 to h2 to make room for d", "start d on h1"]
    assert plan.steps[0].effect == "b runs on h2; h1 has room for d"
    approve(store, plan.id, "admin")
    sim = FleetSimulator(fleet.state())
    done = await Executor(store, sim).execute(plan.id)
    assert done.status is PlanStatus.done, done.status_reason
    assert sim.divergence(store) == []  # the hosts have what the documents say
    assert store.get(VirtualMachineDynamic, "vm-b").host_id == "host-h2"
    assert store.get(VirtualMachineDynamic, "vm-d").host_id == "host-h1"
    assert repair_draft(build_state(store, now=NOW)) is None


async def test_a_fleet_entirely_down_is_woken_by_the_controllers_own_packet(store: Store, tmp_path) -> None:
    """Issue 18 item 3: no host is up to send the wake-up, so the controller's process sends the magic
    packet itself (caught here on loopback's broadcast address), then the VM starts on the woken host."""
    import socket

    from kerub_tui.core.models import Host, PowerManagement
    from kerub_tui.hosts.power import magic_packet, wake_from_controller

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("", 0))
        receiver.settimeout(20)
        port = receiver.getsockname()[1]
        fleet = from_tables(hosts="""
            name memory status
            h1   32G    down
            h2   32G    down
        """, vms="""
            name memory expect
            web  4G     availability:up@dealbreaker
        """)
        h1 = fleet.docs[("host", "host-h1")]
        assert isinstance(h1, Host)
        fleet.put(h1.evolve(power=PowerManagement(wol_mac="52:54:00:00:00:07", wol_broadcast="127.255.255.255",
                                                  wol_port=port)))
        plan = proposed(store, fleet)
        assert [s.description for s in plan.steps] == ["wake h1 (from the controller: wake-on-LAN)", "start web on h1"]
        assert plan.steps[0].commands[0].command == (
            f"controller: wake-on-LAN magic packet for 52:54:00:00:00:07 to 127.255.255.255 port {port} "
            "(UDP, from this process)")
        approve(store, plan.id, "admin")

        class Woken(FleetSimulator):
            async def wake(self, host_id: str):  # what the controller's HostPool does for a real host
                host = store.get(Host, host_id)
                return await wake_from_controller(host.power, host.name)

        sim = Woken(fleet.state())
        done = await Executor(store, sim).execute(plan.id)
        data, _ = receiver.recvfrom(2048)
    assert done.status is PlanStatus.done, done.status_reason
    assert data == magic_packet("52:54:00:00:00:07")
    [wake] = done.records[0].commands
    assert wake.host_id == "host-h1" and wake.exit_code == 0
    assert wake.stdout_tail == f"magic packet for 52:54:00:00:00:07 sent to 127.255.255.255:{port} (102 bytes)"
    assert store.get(VirtualMachineDynamic, "vm-web").host_id == "host-h1"
    assert sim.divergence(store) == []
    # host operations that cannot wake from the controller fail the step in one line
    with Store.open(tmp_path / "again") as other:
        again = proposed(other, fleet)
        approve(other, again.id, "admin")
        failed = await Executor(other, FleetSimulator(fleet.state())).execute(again.id)
    assert failed.status is PlanStatus.failed
    assert "these host operations cannot wake a host from the controller" in failed.status_reason


async def test_a_ballooned_start_gives_the_domain_what_was_planned(store: Store) -> None:
    """Issue 18 item 8: no host has room for the VM's maximum: it starts with what the host has free,
    the domain's currentMemory says so, and the documents reserve that much (not its maximum)."""
    fleet = from_tables(hosts="""
        name memory
        h1   8G
    """, vms="""
        name memory expect
        app  2G:16G availability:up@dealbreaker
    """)
    plan = proposed(store, fleet)
    assert [s.description for s in plan.steps] == [
        "start app on h1 with 7.2G of its 16.0G (the balloon holds it there: no host has room for its maximum)"]
    approve(store, plan.id, "admin")
    xml: list[str] = []

    class Watched(FleetSimulator):
        async def libvirt(self, host_id: str, op: str, **kwargs):
            if op == "start":
                xml.append(kwargs["xml"])
            return await super().libvirt(host_id, op, **kwargs)

    sim = Watched(fleet.state())
    done = await Executor(store, sim).execute(plan.id)
    assert done.status is PlanStatus.done, done.status_reason
    given = store.get(VirtualMachineDynamic, "vm-app").memory_given
    assert given == 7372 * (1 << 20)  # 7.2G, whole MiB
    assert f"<currentMemory unit=\"KiB\">{given // 1024}</currentMemory>" in xml[0]
    assert "<memory unit=\"KiB\">16777216</memory>" in xml[0]
    state = build_state(store, now=NOW)
    assert state.mem_used["host-h1"] == given
    assert repair_draft(state) is None


async def test_ssh_trust_builds_the_target_command_from_the_key_read_on_the_source(store: Store) -> None:
    fleet = from_tables(hosts="""
        name memory
        h1   16G
        h2   16G
    """, disks="""
        name size on expect
        data 1G   h1 storage-redundancy:2,out-of-box@dealbreaker
    """)
    plan = proposed(store, fleet)
    assert [s.type for s in plan.steps] == ["ssh-trust", "copy-allocation"]
    assert "(printed above)" in plan.steps[0].commands[-1].command
    approve(store, plan.id, "admin")
    sim = FleetSimulator(fleet.state())
    done = await Executor(store, sim).execute(plan.id)
    assert done.status is PlanStatus.done, done.status_reason
    assert sim.divergence(store) == []  # the hosts have what the documents say
    ran = done.records[0].commands[-1].command
    assert "authorized_keys" in ran and "AAAAC3NzaC1lZDI1NTE5" in ran
    assert store.get("host-config", "host-h2").ssh_trust == ["host-h1"]
    assert len(store.get(VirtualStorageDeviceDynamic, "disk-data").allocations) == 2


async def test_a_copy_reports_its_progress_in_the_step_record_as_the_host_reports_it(store: Store) -> None:
    fleet = from_tables(hosts="""
        name memory
        h1   16G
        h2   16G
    """, disks="""
        name size on expect
        data 1G   h1 storage-redundancy:2,out-of-box@dealbreaker
    """)
    plan = proposed(store, fleet)
    approve(store, plan.id, "admin")
    seen: list[tuple[int, int | None, int | None]] = []

    def watch(change) -> None:
        if change.kind == "plan" and change.new is not None:
            seen.extend((r.step_index, r.progress_done, r.progress_total) for r in change.new.records
                        if r.step_index == 1 and r.progress_done is not None)

    remove = store.feed.add_listener(watch)
    try:
        done = await Executor(store, FleetSimulator(fleet.state())).execute(plan.id)
    finally:
        remove()
    assert done.status is PlanStatus.done, done.status_reason
    size = 1 << 30
    # The simulated destination's dd reports a quarter at a time; each new percent is written once.
    assert sorted({done_ for _, done_, _ in seen}) == [size // 4, size // 2, size * 3 // 4, size]
    assert {total for _, _, total in seen} == {size}
    assert done.records[1].progress_done == size and done.records[1].outcome is StepOutcome.done


async def test_a_migration_reports_its_progress_in_the_step_record_as_the_host_reports_it(store: Store) -> None:
    """Issue 13 item 14: a live migration's progress (the host's job statistics; the simulated host's a
    quarter at a time) reaches the step record the way a copy's does, and only while the step runs."""
    fleet = full_until_b_moves()
    plan = proposed(store, fleet)
    assert [s.type for s in plan.steps] == ["migrate-vm", "start-vm"]
    approve(store, plan.id, "admin")
    seen: list[tuple[int, int | None, int | None, StepOutcome]] = []

    def watch(change) -> None:
        if change.kind == "plan" and change.new is not None:
            seen.extend((r.step_index, r.progress_done, r.progress_total, r.outcome) for r in change.new.records
                        if r.progress_done is not None)

    remove = store.feed.add_listener(watch)
    try:
        done = await Executor(store, FleetSimulator(fleet.state())).execute(plan.id)
    finally:
        remove()
    assert done.status is PlanStatus.done, done.status_reason
    memory = 8 << 30
    running = [(index, got, total) for index, got, total, outcome in seen if outcome is StepOutcome.running]
    assert sorted(set(running)) == [(0, memory * q // 4, memory) for q in range(1, 5)]
    assert done.records[0].progress_done == memory and done.records[0].outcome is StepOutcome.done
    assert done.records[1].progress_done is None  # a start reports nothing


async def test_cancellation_marks_the_plan_interrupted_and_restart_recovers(store: Store) -> None:
    fleet = vm_with_new_disk()
    plan = proposed(store, fleet)
    approve(store, plan.id, "admin")
    gate = asyncio.Event()

    class Slow(FleetSimulator):
        async def run(self, host_id, command, *, privileged=True):
            await gate.wait()
            return await super().run(host_id, command, privileged=privileged)

    sim = Slow(fleet.state())
    task = asyncio.create_task(Executor(store, sim).execute(plan.id))
    while store.get(Plan, plan.id).status is not PlanStatus.running:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    interrupted = store.get(Plan, plan.id)
    assert interrupted.status is PlanStatus.interrupted
    assert interrupted.records[0].outcome is StepOutcome.interrupted


def test_recover_interrupted_on_start(store: Store) -> None:
    fleet = vm_with_new_disk()
    plan = proposed(store, fleet)
    from kerub_tui.core.models import StepRecord

    store.put(plan.evolve(status=PlanStatus.running, records=[StepRecord(step_index=0).model_dump()]))
    [recovered] = recover_interrupted(store)
    assert recovered.status is PlanStatus.interrupted
    assert recovered.records[0].outcome is StepOutcome.interrupted
    assert lock_holders(store) == {}


async def test_a_thin_plan_creates_the_pool_and_the_thin_lv_on_the_hosts(store: Store) -> None:
    """Issue 18 item 5: with thin over-commit on, a 1 TB disk on a VG with 200 GB free gets a thin pool
    and a thin LV; both are read back, the simulated host ends as the documents say, and the new pool is
    recorded empty (as monitoring will report it), so the next plan sees no pool almost full."""
    from kerub_tui.core.models import HostConfiguration, HostDynamic, Settings

    fleet = from_tables(hosts="""
        name memory options
        h1   16G    vg=200G
    """, vms="""
        name memory disks expect
        db   2G     data  availability:up@dealbreaker
    """, disks="""
        name size
        data 1T
    """)
    store.put(Settings().evolve(optimisation={"thin_overcommit": True}))
    plan = proposed(store, fleet)
    assert [s.type for s in plan.steps] == ["create-thin-pool", "create-thin-lv", "start-vm"]
    assert [c.command for s in plan.steps[:2] for c in s.commands] == [
        "lvcreate --yes --type thin-pool --name kerub--thin --size 109953679360b vg0",
        "lvcreate --yes --type thin --name kerub-data --virtualsize 1099511627776b --thinpool kerub--thin vg0"]
    approve(store, plan.id, "admin")

    def monitoring(host_id: str, command: str) -> None:  # the VG's free space reported while the pool is made
        if "thin-pool" in command:
            dyn = store.get(HostDynamic, host_id)
            store.put(dyn.evolve(storage_free={**dyn.storage_free, "lvm:vg0": 97 << 30}))

    sim = FleetSimulator(fleet.state(), fail=lambda host, command: monitoring(host, command))
    done = await Executor(store, sim).execute(plan.id)
    assert done.status is PlanStatus.done, done.status_reason
    assert sim.divergence(store) == []
    # the executor records the pool's free bytes key by key: monitoring's fresher VG figure stays
    assert store.get(HostDynamic, "host-h1").storage_free["lvm:vg0"] == 97 << 30
    assert [" ".join(c.command.split()[:2]) for r in done.records[:2] for c in r.commands] == [
        "lvcreate --yes", "lvs --reportformat", "lvcreate --yes", "lvs --reportformat"]
    [pool] = store.get(HostConfiguration, "host-h1").thin_pools
    assert (pool.vg, pool.name, pool.size_bytes) == ("vg0", "kerub--thin", 109953679360)
    assert store.get(HostDynamic, "host-h1").storage_free["thin:vg0/kerub--thin"] == pool.size_bytes
    [alloc] = store.get(VirtualStorageDeviceDynamic, "disk-data").allocations
    assert (alloc.lv, alloc.thin_pool, alloc.actual_size) == ("kerub-data", "kerub--thin", 1 << 40)
    assert repair_draft(build_state(store, now=NOW)) is None


async def test_a_failing_pv_is_emptied_and_taken_out_of_its_vg_on_the_hosts(store: Store) -> None:
    """Issue 18 item 7: pvmove then vgreduce, run by the simulated host, read back (pvs, lvs) and written."""
    fleet = from_tables(hosts="""
        name memory options
        h1   16G    pvs=100G/20G,100G/30G failing=/dev/sdb
        h2   16G    -
    """, vms="""
        name memory on disks expect
        web  2G     h1 data  availability:up@dealbreaker
    """, disks="""
        name size
        data 30G
    """)
    fleet.put(VirtualStorageDeviceDynamic(id="disk-data", allocations=[LvmAllocation(
        host_id="host-h1", capability_id="lvm:vg0", vg="vg0", lv="kerub-data", actual_size=30 * GIB)]))
    plan = proposed(store, fleet)
    assert [s.type for s in plan.steps] == ["move-pv-extents", "remove-pv-from-vg"]
    assert [c.command for s in plan.steps for c in s.commands] == [
        "pvmove --interval 30 /dev/sdb /dev/sda", "vgreduce vg0 /dev/sdb"]
    approve(store, plan.id, "admin")
    sim = FleetSimulator(fleet.state())
    assert sim.machine("host-h1").pv_free("vg0", "/dev/sdb") == 70 * GIB  # the disk's LV is on the failing PV
    done = await Executor(store, sim).execute(plan.id)
    assert done.status is PlanStatus.done, done.status_reason
    assert sim.divergence(store) == []
    assert sorted(sim.machine("host-h1").pvs["vg0"]) == ["/dev/sda"]
    assert [p.name for p in store.get(HostDynamic, "host-h1").storage_pvs["lvm:vg0"]] == ["/dev/sda"]
    assert repair_draft(build_state(store, now=NOW)) is None  # nothing left on the failing disk


async def test_an_lv_holding_data_is_mirrored_in_place_on_the_hosts(store: Store) -> None:
    """Issue 18 item 6: lvconvert -m on the simulated host, read back as a raid1 with its images."""
    fleet = from_tables(hosts="""
        name memory options
        h1   16G    pvs=400G/100G,400G
        h2   16G    pvs=900G
    """, disks="""
        name size expect
        data 100G storage-redundancy:2,in-box@dealbreaker
    """)
    fleet.put(VirtualStorageDeviceDynamic(id="disk-data", allocations=[LvmAllocation(
        host_id="host-h1", capability_id="lvm:vg0", vg="vg0", lv="kerub-data", actual_size=100 * GIB)]))
    plan = proposed(store, fleet)
    assert [c.command for s in plan.steps for c in s.commands] == [
        "lvconvert --yes --type raid1 --mirrors 1 vg0/kerub-data"]
    approve(store, plan.id, "admin")
    sim = FleetSimulator(fleet.state())
    done = await Executor(store, sim).execute(plan.id)
    assert done.status is PlanStatus.done, done.status_reason
    assert sim.divergence(store) == []
    assert store.get(VirtualStorageDeviceDynamic, "disk-data").allocations[0].mirrors == 1
    volume = sim.machine("host-h1").volumes["vg0"]["kerub-data"]
    assert volume.kind == "raid1" and sorted(volume.on) == ["/dev/sda", "/dev/sdb"]  # a copy on each PV
    assert repair_draft(build_state(store, now=NOW)) is None
