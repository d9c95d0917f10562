"""Host operations on the lab, through the real Controller (issue 6's "done when"): the proposal for a
VM with a new disk, its approval creating the LV and starting the domain, not-same-host, evacuation by
live migration, a graceful stop through the availability expectation, disk removal, KSM, and a step
that fails on the host.

Every check reads the truth on the lab host (lvs, virsh, /sys) as well as the documents. Waits have
generous deadlines and assert what happened, never how fast.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kerub_tui.controller import ActionError, Controller
from kerub_tui.core.models import (
    AuditEntry,
    DiskLink,
    Host,
    HostDynamic,
    Plan,
    PlanStatus,
    VirtualMachineDynamic,
    VirtualStorageDeviceDynamic,
    VmStatus,
)

pytestmark = pytest.mark.lab

MIB = 1 << 20
DEADLINE = 90.0  # generous: the waits assert what happens, not how fast
KSM_DIR = Path("/sys/kernel/mm/ksm")

# A stand-in guest OS: a boot sector that powers the VM off when the ACPI power button is pressed
# (a graceful shutdown needs a guest that listens; with an empty disk libvirt's request goes unheard).
# Assembled with `as --32` from:
#   cli; xor ax,ax; mov ds,ax; mov ss,ax; mov sp,0x7c00
#   mov eax,0x80000b40; mov dx,0xcf8; out dx,eax     ; PCI 00:01.3 (PIIX4 PM) register 0x40: PMBASE
#   mov dx,0xcfc; in eax,dx; and ax,0xffc0; mov bx,ax
#   lea dx,[bx+2]; mov ax,0x100; out dx,ax            ; PM1a_EN: power button enabled
#   sti
# wait: hlt                                           ; woken by the BIOS timer tick
#   mov dx,bx; in ax,dx; test ax,0x100; jz wait       ; PM1a_STS: power button pressed?
#   lea dx,[bx+4]; mov ax,0x2000; out dx,ax           ; PM1a_CNT: SLP_TYP 0 (S5) | SLP_EN
#   cli; stop: hlt; jmp stop
#   .org 510; .word 0xaa55
_GUEST_CODE = bytes.fromhex(
    "fa31c08ed88ed0bc007c66b8400b0080baf80c66efbafc0c66ed83e0c089"
    "c38d5702b80001effbf489daeda9000174f78d5704b80020effaf4ebfd"
)
POWER_BUTTON_GUEST = _GUEST_CODE + bytes(510 - len(_GUEST_CODE)) + b"\x55\xaa"
GUEST_LOOP = range(0x7C27, 0x7C30)  # the instruction pointer while the guest waits for the button


# --- helpers -------------------------------------------------------------------------------------


async def until(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE,
                detail: Callable[[], Any] | None = None) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}" + (f": {detail()}" if detail else ""))
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def controller_on(lab, tmp_path: Path, hosts: int = 3):
    c = Controller(tmp_path / "data")
    await c.start()
    try:
        for h in lab.hosts[:hosts]:
            await c.add_host(name=h.name, address=h.address, port=h.port, user="root",
                             identity=str(h.client_key), fingerprint=h.host_key_fingerprint)
        yield c
    finally:
        await c.stop()


def step_types(plan: Plan) -> list[str]:
    return [s.type for s in plan.steps]


def commands(plan: Plan) -> list[str]:
    return [cmd.command for s in plan.steps for cmd in s.commands]


async def proposal(c: Controller, wanted: Callable[[Plan], bool], what: str) -> Plan:
    def find() -> Plan | None:
        return next((p for p in c.db.list(Plan) if p.status is PlanStatus.proposed and wanted(p)), None)

    return await until(find, f"a proposal with {what} (plans: "
                       f"{[(step_types(p), p.status.value) for p in c.db.list(Plan)]})")


async def carry_out(c: Controller, plan: Plan) -> Plan:
    await c.decide_plan(plan.id, approve=True)
    finished = (PlanStatus.done, PlanStatus.failed, PlanStatus.interrupted)
    return await until(lambda: (p := c.db.get(Plan, plan.id)) is not None and p.status in finished and p,
                       f"plan {plan.id[:8]} ({step_types(plan)}) to finish")


def lab_host(lab, c: Controller, host_id: str):
    name = c.db.require(Host, host_id).name
    return next(h for h in lab.hosts if h.name == name)


def domstate(labhost, name: str) -> str:
    result = labhost.virsh(["domstate", name])
    return result.stdout.strip() if result.returncode == 0 else ""


def lvs(labhost) -> dict[str, int]:
    out = labhost.run(f"lvs --reportformat json --units b --nosuffix -o lv_name,lv_size {labhost.vg}",
                      check=True).stdout
    return {lv["lv_name"]: int(lv["lv_size"]) for lv in json.loads(out)["report"][0]["lv"]}


def vm_dyn(c: Controller, vm_id: str) -> VirtualMachineDynamic | None:
    return c.db.get(VirtualMachineDynamic, vm_id)


def guest_waits_for_the_button(labhost, name: str) -> bool:
    regs = labhost.virsh(["qemu-monitor-command", name, "--hmp", "info registers"]).stdout
    eip = next((w.split("=")[1] for w in regs.split() if w.startswith("EIP=")), None)
    return eip is not None and int(eip, 16) in GUEST_LOOP


# --- a VM with a new disk: proposal, approval, stop, disk removal ----------------------------------


async def test_vm_with_a_new_disk_runs_stops_gracefully_and_its_disk_goes(clean_lab, tmp_path):
    async with controller_on(clean_lab, tmp_path) as c:
        disk = await c.create_disk("boot", size=64 * MIB)
        vm = await c.create_vm("web", memory_min=64 * MIB, disks=[DiskLink(disk_id=disk.id)],
                               expectations=["availability:up"])
        plan = await proposal(c, lambda p: "start-vm" in step_types(p), "the start of web")

        # The proposal shows the LV creation, then the definition and start of the domain.
        assert step_types(plan) == ["create-lv", "start-vm"]
        host_id = plan.steps[1].host_id
        assert plan.steps[0].host_id == host_id
        labhost = lab_host(clean_lab, c, host_id)
        lvcreate, start = commands(plan)
        assert lvcreate == f"lvcreate --yes --name kerub-boot --size {64 * MIB}b {labhost.vg}"
        assert start == "libvirt: virsh start web (after virsh define web.xml)"

        done = await carry_out(c, plan)
        assert done.status is PlanStatus.done, done.status_reason
        assert lvs(labhost)["kerub-boot"] == 64 * MIB
        assert domstate(labhost, "web") == "running"
        assert [domstate(h, "web") for h in clean_lab.hosts if h is not labhost] == ["", ""]
        await until(lambda: (d := vm_dyn(c, vm.id)) and d.host_id == host_id and d.status is VmStatus.up
                    and d.spice_port, "web's dynamic document to say it runs there", detail=lambda: vm_dyn(c, vm.id))
        [alloc] = c.db.require(VirtualStorageDeviceDynamic, disk.id).allocations
        assert (alloc.host_id, alloc.vg, alloc.lv) == (host_id, labhost.vg, "kerub-boot")

        # The guest gets an OS that answers the power button: write it to the new LV, reboot into it.
        code = base64.b64encode(POWER_BUTTON_GUEST).decode()
        labhost.run(f"base64 -d | dd of=/dev/{labhost.vg}/kerub-boot conv=notrunc,fsync status=none",
                    input=code, check=True)
        labhost.virsh(["reset", "web"], check=True)
        await until(lambda: guest_waits_for_the_button(labhost, "web"), "the guest to boot into its loop",
                    detail=lambda: labhost.virsh(["qemu-monitor-command", "web", "--hmp", "info registers"]))

        # Stopping is setting the availability expectation: a plan shuts the domain down.
        await c.set_vm_availability("web", up=False)
        stop = await proposal(c, lambda p: step_types(p) == ["stop-vm"], "the stop of web")
        assert commands(stop)[0].startswith("libvirt: virsh shutdown web")
        done = await carry_out(c, stop)
        assert done.status is PlanStatus.done, done.status_reason
        shutdown, destroy, undefine, verify = done.records[0].commands
        assert (shutdown.exit_code, shutdown.stdout_tail) == (0, "shut off")  # graceful: the guest obeyed
        assert destroy.stdout_tail == "not running"
        assert undefine.stdout_tail == "undefined"
        assert (verify.command, verify.stdout_tail) == ("libvirt: domain-state web", "")  # read back: gone
        assert domstate(labhost, "web") == ""
        assert "web" not in labhost.virsh(["list", "--all", "--name"]).stdout
        await until(lambda: (d := vm_dyn(c, vm.id)) and d.status is VmStatus.down, "web's document: down")

        # Deleting the disk: its storage goes first, by a plan, then the disk itself.
        await c.delete_vm("web", disks="keep")
        with pytest.raises(ActionError, match="will be removed by a plan"):
            await c.delete_disk("boot")
        remove = await proposal(c, lambda p: step_types(p) == ["remove-lv"], "the removal of kerub-boot")
        assert commands(remove) == [f"lvremove --yes {labhost.vg}/kerub-boot"]
        done = await carry_out(c, remove)
        assert done.status is PlanStatus.done, done.status_reason
        assert "kerub-boot" not in lvs(labhost)
        await c.delete_disk("boot")
        assert c.db.find_by_name(type(disk), "boot") is None


# --- not-same-host ---------------------------------------------------------------------------------


async def test_not_same_host_puts_two_vms_on_different_hosts(clean_lab, tmp_path):
    async with controller_on(clean_lab, tmp_path) as c:
        a = await c.create_vm("alpha", memory_min=64 * MIB, expectations=["availability:up"])
        first = await proposal(c, lambda p: "start-vm" in step_types(p), "the start of alpha")
        assert (await carry_out(c, first)).status is PlanStatus.done
        a_host = vm_dyn(c, a.id).host_id

        b = await c.create_vm("beta", memory_min=64 * MIB, expectations=["availability:up", "not-same-host:alpha"])
        second = await proposal(c, lambda p: "start-vm" in step_types(p), "the start of beta")
        done = await carry_out(c, second)
        assert done.status is PlanStatus.done, done.status_reason
        b_host = vm_dyn(c, b.id).host_id
        assert b_host is not None and b_host != a_host
        assert domstate(lab_host(clean_lab, c, a_host), "alpha") == "running"
        assert domstate(lab_host(clean_lab, c, b_host), "beta") == "running"
        assert domstate(lab_host(clean_lab, c, a_host), "beta") == ""


# --- evacuation: live migration with the VM's disk -------------------------------------------------


async def test_evacuate_live_migrates_a_running_vm_with_its_disk(clean_lab, tmp_path):
    async with controller_on(clean_lab, tmp_path) as c:
        disk = await c.create_disk("data", size=64 * MIB)
        vm = await c.create_vm("mover", memory_min=64 * MIB, disks=[DiskLink(disk_id=disk.id)],
                               expectations=["availability:up"])
        start = await proposal(c, lambda p: "start-vm" in step_types(p), "the start of mover")
        started = await carry_out(c, start)
        assert started.status is PlanStatus.done, started.status_reason
        source_id = vm_dyn(c, vm.id).host_id
        source = lab_host(clean_lab, c, source_id)
        marker = b"kerub-migration-check"
        source.run(f"printf %s {marker.decode()} | dd of=/dev/{source.vg}/kerub-data bs=1M seek=1 "
                   "conv=notrunc,fsync status=none", check=True)

        await c.evacuate_host(source.name)
        move = await proposal(c, lambda p: "migrate-vm" in step_types(p), "the migration of mover")
        assert step_types(move) == ["create-lv", "migrate-vm", "remove-lv"]
        target_id = move.steps[1].params["target"]
        target = lab_host(clean_lab, c, target_id)
        assert target is not source and move.steps[1].params["copy_storage"] is True
        assert commands(move)[1].startswith("libvirt: virsh migrate --live")

        done = await carry_out(c, move)
        assert done.status is PlanStatus.done, done.status_reason
        assert domstate(target, "mover") == "running"
        assert "mover" not in source.virsh(["list", "--all", "--name"]).stdout
        assert "kerub-data" not in lvs(source)
        assert lvs(target)["kerub-data"] == 64 * MIB
        # qemu copied the disk's blocks: the marker written on the source is on the target's LV.
        copied = target.run(f"dd if=/dev/{target.vg}/kerub-data bs=1M skip=1 count=1 status=none | "
                            f"head -c {len(marker)}", check=True).stdout
        assert copied == marker.decode()
        # The target's persistent definition points at the target's own LV.
        inactive = target.virsh(["dumpxml", "--inactive", "mover"], check=True).stdout
        assert f"/dev/{target.vg}/kerub-data" in inactive and source.vg not in inactive
        await until(lambda: (d := vm_dyn(c, vm.id)) and d.host_id == target_id and d.status is VmStatus.up,
                    "mover's document to say it runs on the target")
        [alloc] = c.db.require(VirtualStorageDeviceDynamic, disk.id).allocations
        assert alloc.host_id == target_id


# --- KSM ---------------------------------------------------------------------------------------------


@pytest.fixture
def ksm_restored():
    """/sys/kernel/mm/ksm is the machine's one KSM, shared by every lab host: put it back after."""
    names = ("run", "pages_to_scan", "sleep_millisecs")
    saved = {n: (KSM_DIR / n).read_text().strip() for n in names}
    try:
        yield saved
    finally:
        for n in ("pages_to_scan", "sleep_millisecs", "run"):
            (KSM_DIR / n).write_text(saved[n] + "\n")


async def test_ksm_enable_and_disable_reach_the_host_and_its_document(clean_lab, tmp_path, ksm_restored):
    from kerub_tui.planner.commitments import build_state
    from kerub_tui.planner.steps import SetKsm

    async with controller_on(clean_lab, tmp_path, hosts=1) as c:
        host_id = c.db.find_by_name(Host, clean_lab.hosts[0].name).id
        labhost = clean_lab.hosts[0]
        await until(lambda: (d := c.db.get(HostDynamic, host_id)) and d.ksm.available, "KSM figures from the host")
        scan = int(ksm_restored["pages_to_scan"]) + 7
        for run in (True, False):
            step = SetKsm(host_id, run=run, pages_to_scan=scan)
            plan = Plan(plan_kind="ksm", steps=[step.to_planned(build_state(c.db))], status=PlanStatus.approved)
            c.db.put(plan)
            done = await until(lambda: (p := c.db.get(Plan, plan.id)) and p.status in (PlanStatus.done,
                               PlanStatus.failed) and p, "the KSM plan to finish")
            assert done.status is PlanStatus.done, done.status_reason
            assert labhost.run(f"cat {KSM_DIR}/run {KSM_DIR}/pages_to_scan").stdout.split() == [str(int(run)),
                                                                                               str(scan)]
            # monitoring reads the host again and feeds the counters back
            await until(lambda: (d := c.db.get(HostDynamic, host_id)) and d.ksm.run is run
                        and d.ksm.pages_to_scan == scan and d.ksm.full_scans >= 0,
                        f"HostDynamic to show KSM run={run}")


# --- a step that fails on the host -----------------------------------------------------------------


async def test_a_step_failing_on_the_host_fails_the_plan_with_a_clear_record(clean_lab, tmp_path):
    async with controller_on(clean_lab, tmp_path) as c:
        disk = await c.create_disk("full", size=64 * MIB)
        vm = await c.create_vm("nospace", memory_min=64 * MIB, disks=[DiskLink(disk_id=disk.id)],
                               expectations=["availability:up"])
        plan = await proposal(c, lambda p: "start-vm" in step_types(p), "the start of nospace")
        labhost = lab_host(clean_lab, c, plan.steps[0].host_id)
        pv = labhost.pv_loop
        # The VG refuses new extents behind the planner's back (its free space still shows): lvcreate
        # fails on the host the way it does on a full VG.
        labhost.run(f"pvchange -qq -x n {pv}", check=True)
        try:
            done = await carry_out(c, plan)
        finally:
            labhost.run(f"pvchange -qq -x y {pv}", check=True)
        assert done.status is PlanStatus.failed
        assert done.status_reason.startswith("step 1 (create LV")
        assert "lvcreate" in done.status_reason and "exited 5" in done.status_reason
        record = done.records[0]
        assert record.outcome.value == "failed"
        # the failed lvcreate, then the read-back that looked for an LV an earlier cut-off step made
        command, *read_back = record.commands
        assert command.command.startswith("lvcreate") and command.exit_code == 5
        assert "free" in command.stderr_tail.lower() or "extents" in command.stderr_tail.lower()
        assert [r.command.split()[0] for r in read_back] == ["lvs"], read_back
        audit = [a for a in c.db.list(AuditEntry) if a.plan_id == plan.id and a.action == "step command"]
        assert next((a.command, a.exit_code) for a in audit) == (command.command, 5)
        assert audit[0].output_tail.strip().endswith(command.stderr_tail.strip().splitlines()[-1].strip())
        # Nothing half-made: no LV, no domain, no allocation recorded; the start never ran.
        assert "kerub-full" not in lvs(labhost)
        assert all(domstate(h, "nospace") == "" for h in clean_lab.hosts)
        dyn = c.db.get(VirtualStorageDeviceDynamic, disk.id)
        assert dyn is None or dyn.allocations == []
        assert len(done.records) == 1
        assert (vm_dyn(c, vm.id) is None) or vm_dyn(c, vm.id).host_id is None
