"""VM steps: start, stop, pause, resume, migrate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...core.models import (
    Cost,
    VmStatus,
)
from ..checkers import capacity_rejection
from ..cost import NETWORK_BYTES_PER_SECOND
from ..state import OperationalState, Reservation, vm_memory
from .base import (
    STOP_TIMEOUT_SECONDS,
    Operation,
    Step,
    Touched,
    _dealbreaker_dependencies_down,
    _libvirt,
    _locked_vm,
    _running_dependants,
    _vm_dyn,
    step_type,
    vm_disks_missing,
)


@step_type
@dataclass(frozen=True)
class StartVm(Step):
    type: ClassVar[str] = "start-vm"
    vm: str
    host: str

    def inverse(self) -> Step:
        return StopVm(self.vm, self.host)

    def blocked(self, state: OperationalState) -> str | None:
        vm = state.vms.get(self.vm)
        if vm is None:
            return f"no VM {self.vm}"
        placed = state.vm_host(self.vm)
        if placed is not None and state.host_up(placed):
            return f"{vm.name} is already {state.vm_placement(self.vm)[1].value} on {state.host_name(placed)}"
        reason = capacity_rejection(state, vm, self.host) or _locked_vm(state, self.vm)
        if reason:
            return reason
        missing = vm_disks_missing(state, self.vm, self.host)
        if missing:
            return f"{state.host_name(self.host)} has no copy of disk " + ", ".join(state.disk_name(d) for d in missing)
        deps = _dealbreaker_dependencies_down(state, self.vm)
        if deps:
            return f"{vm.name} depends on {', '.join(deps)}, not running yet"
        from ..image_steps import seed_missing

        return seed_missing(state, self.vm, self.host)

    def take(self, state: OperationalState) -> OperationalState:
        return state.apply([_vm_dyn(state, self.vm, host_id=self.host, status=VmStatus.up, spice_address=None,
                                    spice_port=None, memory_used=None, cpu_percent=None)])

    def touched(self) -> Touched:
        return Touched(vms=frozenset({self.vm}), hosts=frozenset({self.host}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("vm", self.vm)]

    def cost(self, state: OperationalState) -> Cost:
        vm = state.vms.get(self.vm)
        gib = vm_memory(vm) / (1 << 30) if vm else 1
        return Cost(time_seconds=10.0 + 0.5 * gib, cpu_seconds=5.0)

    def describe(self, state: OperationalState) -> str:
        return f"start {state.vm_name(self.vm)} on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"{state.vm_name(self.vm)} runs on {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import kvm

        name = state.vm_name(self.vm)
        # the start op defines the domain from the XML generated for this host, then starts it
        display = f"{kvm.describe_start(name)} (after {kvm.describe_define(name)})"
        return [_libvirt(self.host, "start", display, vm_id=self.vm)]


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
            return f"{state.host_name(self.target)} has no copy of disk " + ", ".join(
                state.disk_name(d) for d in missing
            )
        from ..image_steps import seed_missing

        return seed_missing(state, self.vm, self.target)

    def take(self, state: OperationalState) -> OperationalState:
        return state.apply([_vm_dyn(state, self.vm, host_id=self.target, spice_address=None, spice_port=None)])

    def touched(self) -> Touched:
        return Touched(vms=frozenset({self.vm}), hosts=frozenset({self.host, self.target}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("vm", self.vm)]

    def cost(self, state: OperationalState) -> Cost:
        vm = state.vms.get(self.vm)
        memory = vm_memory(vm) if vm else 0
        disks = sum(state.disks[link.disk_id].size for link in vm.disks if link.disk_id in state.disks) \
            if vm is not None and self.copy_storage else 0
        network = memory + disks
        return Cost(network_bytes=network, io_bytes=2 * disks, cpu_seconds=2.0,
                    time_seconds=5.0 + network / NETWORK_BYTES_PER_SECOND, risk=0.05)

    def describe(self, state: OperationalState) -> str:
        storage = " with its storage" if self.copy_storage else ""
        return (f"live-migrate {state.vm_name(self.vm)}{storage} from {state.host_name(self.host)} "
                f"to {state.host_name(self.target)}")

    def effect(self, state: OperationalState) -> str:
        return f"{state.vm_name(self.vm)} runs on {state.host_name(self.target)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import kvm

        target = state.hosts[self.target]
        display = kvm.describe_migrate(state.vm_name(self.vm), target.address)
        return [_libvirt(self.host, "migrate", display, vm_id=self.vm, target_host_id=self.target,
                         target_address=target.address, copy_storage=self.copy_storage)]
