"""VM steps: start, stop, pause, resume, migrate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ...core.models import (
    Cost,
    VirtualMachine,
    VmStatus,
)
from ...core.sizes import format_size
from ..checkers import capacity_rejection
from ..cost import NETWORK_BYTES_PER_SECOND, REMOTE_IO_SECONDS
from ..state import OperationalState, Reservation, vm_memory
from .base import (
    STOP_TIMEOUT_SECONDS,
    Operation,
    Step,
    Touched,
    _dealbreaker_dependencies_down,
    _disk_dyn,
    _libvirt,
    _locked_vm,
    _running_dependants,
    _vm_dyn,
    disks_missing_reason,
    iscsi_secret_ops,
    remote_disks,
    step_type,
    storage_refused,
    vm_disks_missing,
    with_iscsi_secrets,
)


@step_type
@dataclass(frozen=True)
class StartVm(Step):
    type: ClassVar[str] = "start-vm"
    vm: str
    host: str
    memory: int = 0  # bytes it starts with (the balloon holds it there); 0: its maximum

    def inverse(self) -> Step:
        return StopVm(self.vm, self.host)

    def blocked(self, state: OperationalState) -> str | None:
        vm = state.vms.get(self.vm)
        if vm is None:
            return f"no VM {self.vm}"
        placed = state.vm_host(self.vm)
        if placed is not None and state.host_up(placed):
            return f"{vm.name} is already {state.vm_placement(self.vm)[1].value} on {state.host_name(placed)}"
        if self.memory and not vm.memory_min <= self.memory <= vm.memory_max:
            return f"{vm.name} cannot start with {format_size(self.memory)}: its memory is " \
                   f"{format_size(vm.memory_min)}..{format_size(vm.memory_max)}"
        reason = capacity_rejection(state, vm, self.host, self.memory or vm_memory(vm)) or _locked_vm(state, self.vm)
        if reason:
            return reason
        missing = vm_disks_missing(state, self.vm, self.host)
        if missing:
            return disks_missing_reason(state, self.host, missing)
        if held := unfenced_writer(state, self.vm):
            return held
        for link in vm.disks:  # its domain names each disk's storage there
            if refused := storage_refused(state, link.disk_id, self.host):
                return refused
        deps = _dealbreaker_dependencies_down(state, self.vm)
        if deps:
            return f"{vm.name} depends on {', '.join(deps)}, not running yet"
        from ..image_steps import seed_missing

        return seed_missing(state, self.vm, self.host)

    def take(self, state: OperationalState) -> OperationalState:
        given = self.memory if self.memory and self.memory < state.vms[self.vm].memory_max else None
        after = state.apply([_vm_dyn(state, self.vm, host_id=self.host, status=VmStatus.up, spice_address=None,
                                     spice_port=None, vnc_address=None, vnc_port=None, memory_used=None,
                                     cpu_percent=None, memory_given=given)])
        return with_iscsi_secrets(state, _live_copies_here(after, self.vm, self.host), self.vm, self.host)

    def touched(self) -> Touched:
        return Touched(vms=frozenset({self.vm}), hosts=frozenset({self.host}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("vm", self.vm)]

    def cost(self, state: OperationalState) -> Cost:
        remote = REMOTE_IO_SECONDS * len(remote_disks(state, self.vm, self.host))  # its IO over the network
        return start_cost(state.vms.get(self.vm), self.memory, remote)

    def describe(self, state: OperationalState) -> str:
        vm = state.vms.get(self.vm)
        if self.memory and vm is not None and self.memory < vm.memory_max:
            return (f"start {vm.name} on {state.host_name(self.host)} with {format_size(self.memory)} of its "
                    f"{format_size(vm.memory_max)} (the balloon holds it there: no host has room for its maximum)")
        return f"start {state.vm_name(self.vm)} on {state.host_name(self.host)}" + _older_copies_note(
            state, self.vm, self.host)

    def effect(self, state: OperationalState) -> str:
        return f"{state.vm_name(self.vm)} runs on {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import kvm

        name = state.vm_name(self.vm)
        # the start op defines the domain from the XML generated for this host, then starts it; the CHAP
        # passwords of the iSCSI targets its disks are read over are in libvirt secrets there first
        display = f"{kvm.describe_start(name)} (after {kvm.describe_define(name)})"
        return [*iscsi_secret_ops(state, self.vm, self.host), _libvirt(self.host, "start", display, vm_id=self.vm)]


def start_cost(vm: VirtualMachine | None, memory: int = 0, remote: float = 0.0) -> Cost:
    """What starting a VM costs (StartVm.cost): ``memory`` it starts with (0: its maximum), ``remote`` the
    seconds its disks' IO over the network is priced at. With ``remote`` 0, the least any start of the VM
    with that memory costs: the bound the placement search orders hosts by (factories.best_by_bound)."""
    gib = (memory or vm_memory(vm)) / (1 << 30) if vm else 1
    # a ballooned start: each byte withheld from its maximum is priced like a byte moved over the
    # network, so making room or waking a host for the maximum wins where it costs less
    withheld = max(vm.memory_max - memory, 0) if vm is not None and memory else 0
    return Cost(time_seconds=10.0 + 0.5 * gib + withheld / NETWORK_BYTES_PER_SECOND + remote, cpu_seconds=5.0)


def migrate_cost(memory: int, disks: int = 0, remote: float = 0.0) -> Cost:
    """What a live migration costs (MigrateVm.cost): ``memory`` the VM holds, ``disks`` bytes of local
    storage copied with it, ``remote`` the seconds its disks' IO over the network is priced at. With no
    disk copied and ``remote`` 0, the least any migration of the VM costs: the bound the placement search
    orders hosts by (factories.best_by_bound)."""
    network = memory + disks
    return Cost(network_bytes=network, io_bytes=2 * disks, cpu_seconds=2.0,
                time_seconds=5.0 + network / NETWORK_BYTES_PER_SECOND + remote, risk=0.05)


@step_type
@dataclass(frozen=True)
class StopVm(Step):
    """Graceful shutdown; the domain is destroyed if it has not stopped after ``timeout`` seconds."""

    type: ClassVar[str] = "stop-vm"
    vm: str
    host: str
    timeout: int = STOP_TIMEOUT_SECONDS

    def inverse(self) -> Step:
        return StartVm(self.vm, self.host)

    def blocked(self, state: OperationalState) -> str | None:
        if state.vm_host(self.vm) != self.host:
            return f"{state.vm_name(self.vm)} is not on {state.host_name(self.host)}"
        if not state.host_up(self.host):
            return (
                f"{state.host_name(self.host)} is {state.host_status(self.host).value}: cannot reach it to stop the VM"
            )
        dependants = _running_dependants(state, self.vm)
        if dependants:
            return f"{', '.join(dependants)} depend on {state.vm_name(self.vm)}: stop them first"
        return _locked_vm(state, self.vm)

    def take(self, state: OperationalState) -> OperationalState:
        return state.apply([_vm_dyn(state, self.vm, status=VmStatus.down)])

    def touched(self) -> Touched:
        return Touched(vms=frozenset({self.vm}), hosts=frozenset({self.host}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("vm", self.vm)]

    def cost(self, state: OperationalState) -> Cost:
        # Stopping interrupts whatever the VM was doing: the planner prefers plans that keep VMs up.
        return Cost(time_seconds=30.0, risk=0.5)

    def describe(self, state: OperationalState) -> str:
        return f"stop {state.vm_name(self.vm)} on {state.host_name(self.host)} (forced after {self.timeout} s)"

    def effect(self, state: OperationalState) -> str:
        return f"{state.vm_name(self.vm)} is down"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import kvm

        name = state.vm_name(self.vm)
        return [
            _libvirt(self.host, "shutdown", kvm.describe_shutdown(name, self.timeout), vm_id=self.vm,
                     timeout=self.timeout),
            _libvirt(self.host, "destroy-if-running", kvm.describe_destroy(name), vm_id=self.vm),
            _libvirt(self.host, "undefine", kvm.describe_undefine(name), vm_id=self.vm),
        ]


@step_type
@dataclass(frozen=True)
class PauseVm(Step):
    type: ClassVar[str] = "pause-vm"
    vm: str
    host: str

    def inverse(self) -> Step:
        return ResumeVm(self.vm, self.host)

    def blocked(self, state: OperationalState) -> str | None:
        host, status = state.vm_placement(self.vm)
        if host != self.host or status is not VmStatus.up or not state.host_up(self.host):
            return f"{state.vm_name(self.vm)} is not running on {state.host_name(self.host)}"
        return _locked_vm(state, self.vm)

    def take(self, state: OperationalState) -> OperationalState:
        return state.apply([_vm_dyn(state, self.vm, status=VmStatus.paused)])

    def touched(self) -> Touched:
        return Touched(vms=frozenset({self.vm}), hosts=frozenset({self.host}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("vm", self.vm)]

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=1.0, risk=0.1)

    def describe(self, state: OperationalState) -> str:
        return f"pause {state.vm_name(self.vm)} on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"{state.vm_name(self.vm)} is paused"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import kvm

        return [_libvirt(self.host, "pause", kvm.describe_pause(state.vm_name(self.vm)), vm_id=self.vm)]


@step_type
@dataclass(frozen=True)
class ResumeVm(Step):
    type: ClassVar[str] = "resume-vm"
    vm: str
    host: str

    def inverse(self) -> Step:
        return PauseVm(self.vm, self.host)

    def blocked(self, state: OperationalState) -> str | None:
        host, status = state.vm_placement(self.vm)
        if host != self.host or status is not VmStatus.paused or not state.host_up(self.host):
            return f"{state.vm_name(self.vm)} is not paused on {state.host_name(self.host)}"
        return _locked_vm(state, self.vm)

    def take(self, state: OperationalState) -> OperationalState:
        return state.apply([_vm_dyn(state, self.vm, status=VmStatus.up)])

    def touched(self) -> Touched:
        return Touched(vms=frozenset({self.vm}), hosts=frozenset({self.host}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("vm", self.vm)]

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=1.0)

    def describe(self, state: OperationalState) -> str:
        return f"resume {state.vm_name(self.vm)} on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"{state.vm_name(self.vm)} runs on {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import kvm

        return [_libvirt(self.host, "resume", kvm.describe_resume(state.vm_name(self.vm)), vm_id=self.vm)]


@step_type
@dataclass(frozen=True)
class MigrateVm(Step):
    """Live migration. With ``copy_storage`` qemu copies the disks into allocations already created on
    the target (the factory plans those before, and the removal of the source copies after)."""

    type: ClassVar[str] = "migrate-vm"
    vm: str
    host: str  # the source
    target: str
    copy_storage: bool = False
    # the VM this move makes room for on the source (said to the admin); not part of the step's identity
    room_for: str = field(default="", compare=False)

    def inverse(self) -> Step:
        return MigrateVm(self.vm, self.target, self.host, self.copy_storage)

    def blocked(self, state: OperationalState) -> str | None:
        vm = state.vms.get(self.vm)
        if vm is None:
            return f"no VM {self.vm}"
        host, status = state.vm_placement(self.vm)
        if host != self.host or status not in (VmStatus.up, VmStatus.paused) or not state.host_up(self.host):
            return f"{vm.name} is not running on {state.host_name(self.host)}"
        reason = capacity_rejection(state, vm, self.target) or _locked_vm(state, self.vm)
        if reason:
            return reason
        missing = vm_disks_missing(state, self.vm, self.target)
        if missing:
            return disks_missing_reason(state, self.target, missing)
        from ..image_steps import seed_missing

        return seed_missing(state, self.vm, self.target)

    def take(self, state: OperationalState) -> OperationalState:
        after = state.apply([_vm_dyn(state, self.vm, host_id=self.target, spice_address=None, spice_port=None,
                                     vnc_address=None, vnc_port=None)])
        return with_iscsi_secrets(state, after, self.vm, self.target)

    def touched(self) -> Touched:
        return Touched(vms=frozenset({self.vm}), hosts=frozenset({self.host, self.target}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("vm", self.vm)]

    def cost(self, state: OperationalState) -> Cost:
        vm = state.vms.get(self.vm)
        memory = state.vm_reserved(self.vm) if vm else 0
        disks = sum(state.disks[link.disk_id].size for link in vm.disks if link.disk_id in state.disks
                    and any(a.host_id == self.host for a in state.allocations(link.disk_id))) \
            if vm is not None and self.copy_storage else 0  # a disk read over the network is not copied
        # a disk read over the network where it lands: its IO crosses the network from then on (no data moves now)
        remote = REMOTE_IO_SECONDS * len(remote_disks(state, self.vm, self.target))
        return migrate_cost(memory, disks, remote)

    def describe(self, state: OperationalState) -> str:
        storage = " with its storage" if self.copy_storage else ""
        why = f" to make room for {state.vm_name(self.room_for)}" if self.room_for else ""
        return (f"live-migrate {state.vm_name(self.vm)}{storage} from {state.host_name(self.host)} "
                f"to {state.host_name(self.target)}{why}")

    def effect(self, state: OperationalState) -> str:
        if self.room_for:
            return (f"{state.vm_name(self.vm)} runs on {state.host_name(self.target)}; "
                    f"{state.host_name(self.host)} has room for {state.vm_name(self.room_for)}")
        return f"{state.vm_name(self.vm)} runs on {state.host_name(self.target)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import kvm

        target = state.hosts[self.target]
        display = kvm.describe_migrate(state.vm_name(self.vm), target.address)
        # the domain arrives with its disks' <auth>: the target holds their CHAP passwords first
        return [*iscsi_secret_ops(state, self.vm, self.target),
                _libvirt(self.host, "migrate", display, progress=True, vm_id=self.vm, target_host_id=self.target,
                         target_address=target.address, copy_storage=self.copy_storage)]


def unfenced_writer(state: OperationalState, vm_id: str) -> str | None:
    """Why the VM may not start anywhere now: it, or another VM writing one of its disks, may still run on a
    host that went away and is not fenced (high availability, issue 16): two copies of one VM never write
    the same disk. None when nothing may still run."""
    vm = state.vms.get(vm_id)
    if vm is None:
        return None
    holders = [(vm_id, h)] if (h := state.unfenced_holder(vm_id)) else []
    for link in vm.disks:
        if link.read_only or link.device == "cdrom":
            continue
        holders.extend((other, h) for other in state.disk_users(link.disk_id)
                       if other != vm_id and (h := state.unfenced_holder(other)))
    if not holders:
        return None
    other, host = holders[0]
    who = vm.name if other == vm_id else f"{state.vm_name(other)}, which writes a disk of {vm.name},"
    name = state.host_name(host)
    return (f"{who} may still run on {name} ({state.host_status(host).value}): {vm.name} is not started "
            f"elsewhere until {name} is fenced (powered off through IPMI, seen to run no guest, or "
            f"confirmed off: kerub-tui host fence {name} --confirm-off)")


def _older_copies_note(state: OperationalState, vm_id: str, host_id: str) -> str:
    """What a start on older copies taken for redundancy runs with: each disk's copy and its date, and
    where the newer writes are (a host that is down: else the planner would not start it here)."""
    vm = state.vms.get(vm_id)
    notes = []
    for link in vm.disks if vm is not None else []:
        older = state.older_copy(link.disk_id, host_id)
        if older is None:
            continue
        newer = sorted({state.host_name(a.host_id) for a in state.allocations(link.disk_id) if a.copied_at is None})
        notes.append(f"disk {state.disk_name(link.disk_id)} from its copy of {older.copied_at:%Y-%m-%d %H:%M} UTC: "
                     f"newer writes are on {', '.join(newer)}")
    return f" ({'; '.join(notes)})" if notes else ""


def _live_copies_here(state: OperationalState, vm_id: str, host_id: str) -> OperationalState:
    """A VM started on older copies writes there from now on: those become its disks' live storage, and
    the storage it wrote before is a point in time as of now."""
    vm = state.vms.get(vm_id)
    docs = []
    for link in vm.disks if vm is not None else []:
        if state.older_copy(link.disk_id, host_id) is None:
            continue
        allocs = [a.evolve(copied_at=None) if a.host_id == host_id
                  else a.evolve(copied_at=state.now) if a.copied_at is None else a
                  for a in state.allocations(link.disk_id)]
        docs.append(_disk_dyn(state, link.disk_id, allocs))
    return state.apply(docs) if docs else state
