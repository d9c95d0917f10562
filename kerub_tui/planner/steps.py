"""Steps: one action each, a small frozen dataclass of plain parameters.

Every step offers
- ``take(state) -> state``: the pure prediction of its effect (the executor writes the same documents
  after the step succeeded, so prediction and record cannot drift apart);
- ``blocked(state) -> reason | None``: whether it can be taken in that state;
- ``reservations()``, ``cost(state)``, ``touched()`` (what to re-check after it);
- ``operations(state)``: what the executor runs, shell text from the hosts builders or a libvirt RPC,
  and ``commands(state)`` the same as the admin sees it;
- ``describe(state)``, ``effect(state)``, ``to_planned(state)`` and back with ``step_from_planned``.

Builders are imported inside ``operations`` so predictions never depend on them.
"""

from __future__ import annotations

import abc
import dataclasses
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from ..core.models import (
    Cost,
    FileAllocation,
    GvinumAllocation,
    HostCommand,
    HostConfiguration,
    HostDynamic,
    HostStatus,
    IscsiTarget,
    LvmAllocation,
    Mount,
    NfsExport,
    PlannedStep,
    StorageCapability,
    StorageTechnology,
    ThinPool,
    VirtualMachineDynamic,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
    VmStatus,
    ZfsAllocation,
)
from ..core.sizes import format_size
from .checkers import allocation_rejections, capacity_rejection, host_usable
from .cost import IO_BYTES_PER_SECOND, NETWORK_BYTES_PER_SECOND
from .state import OperationalState, Reservation, vm_memory

PEER_KEY = "/root/.ssh/kerub_peer_ed25519"  # the key a host uses to reach its peers (copies, migration)
PEER_KNOWN_HOSTS = "/root/.ssh/kerub_known_hosts"  # the peers' host keys, as the controller accepted them
NFS_MOUNT_ROOT = "/var/lib/kerub/nfs"
STOP_TIMEOUT_SECONDS = 120


# --- operations ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShellOp:
    host_id: str
    command: str
    privileged: bool = True
    # what the command reads on its standard input, made when it runs (a cloud-init seed): never
    # part of the command line, so never in the plan or the audit log
    input: Callable[[], bytes] | None = None


@dataclass(frozen=True, slots=True)
class LibvirtOp:
    """A libvirt RPC through the host's tunnel: ``op`` with keyword ``args``; ``display`` for the admin."""

    host_id: str
    op: str
    args: tuple[tuple[str, Any], ...]
    display: str

    def kwargs(self) -> dict[str, Any]:
        return dict(self.args)


@dataclass(frozen=True, slots=True)
class DeferredShellOp:
    """Shell text that needs a value read from a host by the previous operation (a public key).

    ``build`` names a function of this module that turns that output into the command; the admin sees
    ``display``, the audit log the exact command that ran.
    """

    host_id: str
    build: str
    display: str
    privileged: bool = True


Operation = ShellOp | LibvirtOp | DeferredShellOp


def _libvirt(host_id: str, op: str, display: str, **args: Any) -> LibvirtOp:
    return LibvirtOp(host_id, op, tuple(sorted(args.items())), display)


# --- the base ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Touched:
    vms: frozenset[str] = frozenset()
    disks: frozenset[str] = frozenset()
    hosts: frozenset[str] = frozenset()


STEP_TYPES: dict[str, type[Step]] = {}


def step_type(cls: type[Step]) -> type[Step]:
    STEP_TYPES[cls.type] = cls
    return cls


@dataclass(frozen=True)
class Step(abc.ABC):
    type: ClassVar[str] = ""

    # identity -------------------------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def sort_key(self) -> tuple[Any, ...]:
        return (self.type, tuple(str(v) for v in dataclasses.astuple(self)))

    @property
    def host_id(self) -> str | None:
        return getattr(self, "host", None)

    def inverse(self) -> Step | None:
        """The step that undoes this one, when there is one (the search never plans both)."""
        return None

    # prediction -----------------------------------------------------------------------------------

    def blocked(self, state: OperationalState) -> str | None:
        return None

    @abc.abstractmethod
    def take(self, state: OperationalState) -> OperationalState:
        """The state after this step: a pure prediction; nothing touches a host."""

    def touched(self) -> Touched:
        return Touched(hosts=frozenset(h for h in [self.host_id] if h))

    def reservations(self) -> list[Reservation]:
        return []

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=2.0)

    # presentation ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def describe(self, state: OperationalState) -> str:
        """One line for the admin: what this step does, with names rather than ids."""

    def effect(self, state: OperationalState) -> str:
        return ""

    @abc.abstractmethod
    def operations(self, state: OperationalState) -> list[Operation]:
        """What the executor runs, in order: shell text from the hosts' builders, libvirt calls."""

    def commands(self, state: OperationalState) -> list[HostCommand]:
        out = []
        for op in self.operations(state):
            if isinstance(op, LibvirtOp):
                out.append(HostCommand(host_id=op.host_id, command=f"libvirt: {op.display}", privileged=False))
            elif isinstance(op, DeferredShellOp):
                out.append(HostCommand(host_id=op.host_id, command=op.display, privileged=op.privileged))
            else:
                out.append(HostCommand(host_id=op.host_id, command=op.command, privileged=op.privileged))
        return out

    def to_planned(self, state: OperationalState) -> PlannedStep:
        return PlannedStep(
            type=self.type,
            params=self.params(),
            description=self.describe(state),
            host_id=self.host_id,
            effect=self.effect(state),
            cost=self.cost(state),
            commands=self.commands(state),
        )


class UnknownStep(ValueError):
    pass


def step_from_planned(planned: PlannedStep) -> Step:
    cls = STEP_TYPES.get(planned.type)
    if cls is None:
        raise UnknownStep(f"unknown step type {planned.type!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    if set(planned.params) != names:
        raise UnknownStep(f"step {planned.type}: parameters {sorted(planned.params)} do not match {sorted(names)}")
    return cls(**planned.params)


# --- helpers -------------------------------------------------------------------------------------


_T = TypeVar("_T")


def _taken(value: _T | None, what: str) -> _T:
    """What ``blocked`` made sure of, where a step is taken or carried out (a blocked step never is)."""
    if value is None:
        raise RuntimeError(f"a blocked step was taken: {what} is missing")
    return value


def _vm_dyn(state: OperationalState, vm_id: str, **changes: Any) -> VirtualMachineDynamic:
    old = state.vm_dyn.get(vm_id)
    base: dict[str, Any] = old.model_dump() if old is not None else {"id": vm_id}
    base.update(changes)
    if changes.get("status") is VmStatus.down:
        base.update(host_id=None, spice_address=None, spice_port=None, memory_used=None, cpu_percent=None)
    return VirtualMachineDynamic.model_validate(base)


def _disk_dyn(
    state: OperationalState, disk_id: str, allocations: list[Any], **changes: Any
) -> VirtualStorageDeviceDynamic:
    old = state.disk_dyn.get(disk_id)
    cloned_from = changes.get("cloned_from", old.cloned_from if old is not None else None)
    return VirtualStorageDeviceDynamic(id=disk_id, allocations=allocations, cloned_from=cloned_from)


def _host_dyn(state: OperationalState, host_id: str, **changes: Any) -> HostDynamic:
    old = state.host_dyn.get(host_id) or HostDynamic(id=host_id)
    return old.evolve(**changes)


def _host_config(state: OperationalState, host_id: str, **changes: Any) -> HostConfiguration:
    old = state.host_config.get(host_id) or HostConfiguration(id=host_id)
    return old.evolve(**changes)


def _vm_name(state: OperationalState, vm_id: str) -> str:
    return state.vm_name(vm_id)


def _disk_accessible(state: OperationalState, disk_id: str, host_id: str) -> bool:
    """A local allocation, or an NFS mount of the disk's export."""
    if any(a.host_id == host_id for a in state.allocations(disk_id)):
        return True
    config = state.host_config.get(host_id)
    return config is not None and any(m.disk_id == disk_id for m in config.mounts)


def vm_disks_missing(state: OperationalState, vm_id: str, host_id: str) -> list[str]:
    vm = state.vms.get(vm_id)
    if vm is None:
        return []
    return [link.disk_id for link in vm.disks if not _disk_accessible(state, link.disk_id, host_id)]


def _dealbreaker_dependencies_down(state: OperationalState, vm_id: str) -> list[str]:
    vm = state.vms[vm_id]
    down = []
    for exp in vm.expectations:
        if exp.type == "vm-dependency" and exp.level.rank == 2:
            for ref in exp.vms:
                target = state.resolve_vm(ref)
                if target is None or not state.vm_running(target):
                    down.append(state.vm_name(target) if target else ref)
    return sorted(down)


def _running_dependants(state: OperationalState, vm_id: str) -> list[str]:
    out = []
    for other in state.static.vm_referrers.get(vm_id, ()):
        if other == vm_id or not state.vm_running(other):
            continue
        for exp in state.vms[other].expectations:
            if exp.type == "vm-dependency" and exp.level.rank == 2 and vm_id in {state.resolve_vm(r) for r in exp.vms}:
                out.append(state.vm_name(other))
    return sorted(set(out))


def _host_down(state: OperationalState, host_id: str) -> str | None:
    """Why a host cannot be reached (it is not up), or None."""
    return None if state.host_up(host_id) else f"{state.host_name(host_id)} is {state.host_status(host_id).value}"


def _locked_vm(state: OperationalState, vm_id: str) -> str | None:
    return f"{state.vm_name(vm_id)} is held by another plan" if state.locked("vm", vm_id) else None


def _locked_disk(state: OperationalState, disk_id: str) -> str | None:
    return f"disk {state.disk_name(disk_id)} is held by another plan" if state.locked("disk", disk_id) else None


# --- VM steps ------------------------------------------------------------------------------------


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
        from .image_steps import seed_missing

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
        from ..hosts import kvm

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
        from ..hosts import kvm

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
        from ..hosts import kvm

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
        from ..hosts import kvm

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
        from .image_steps import seed_missing

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
        from ..hosts import kvm

        target = state.hosts[self.target]
        display = kvm.describe_migrate(state.vm_name(self.vm), target.address)
        return [_libvirt(self.host, "migrate", display, vm_id=self.vm, target_host_id=self.target,
                         target_address=target.address, copy_storage=self.copy_storage)]


# --- storage steps -------------------------------------------------------------------------------


def allocation_name(disk: VirtualStorageDevice) -> str:
    return f"kerub-{disk.name}"


def _find_allocation(state: OperationalState, disk_id: str, host_id: str, capability_id: str) -> Any:
    for alloc in state.allocations(disk_id):
        if alloc.host_id == host_id and alloc.capability_id == capability_id:
            return alloc
    return None


def _add_allocation(state: OperationalState, disk_id: str, alloc: Any, **changes: Any) -> OperationalState:
    allocs = [a for a in state.allocations(disk_id)
              if not (a.host_id == alloc.host_id and a.capability_id == alloc.capability_id)]
    return state.apply([_disk_dyn(state, disk_id, [*allocs, alloc], **changes)])


def _drop_allocation(state: OperationalState, disk_id: str, host_id: str, capability_id: str) -> OperationalState:
    allocs = [a for a in state.allocations(disk_id) if not (a.host_id == host_id and a.capability_id == capability_id)]
    return state.apply([_disk_dyn(state, disk_id, allocs)])


class _CreateAllocation(Step):
    """Shared behaviour of the steps that create a disk's storage on a host."""

    disk: str
    host: str
    capability: str
    size: int

    @abc.abstractmethod
    def allocation(self) -> Any:
        """The allocation this step creates."""

    def inverse(self) -> Step:
        return remove_step(self.disk, self.allocation())

    def blocked(self, state: OperationalState) -> str | None:
        disk = state.disks.get(self.disk)
        if disk is None:
            return f"no disk {self.disk}"
        hard = [r.reason for r in allocation_rejections(state, disk, self.host, self.capability, self._space())
                if r.level is None]
        return hard[0] if hard else _locked_disk(state, self.disk)

    def _space(self) -> int:
        return self.size

    def take(self, state: OperationalState) -> OperationalState:
        return _add_allocation(state, self.disk, self.allocation())

    def touched(self) -> Touched:
        return Touched(disks=frozenset({self.disk}), hosts=frozenset({self.host}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("disk", self.disk), Reservation("storage", f"{self.host}/{self.capability}", self._space())]

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=2.0)

    def effect(self, state: OperationalState) -> str:
        return f"disk {state.disk_name(self.disk)} has storage on {state.host_name(self.host)}"


class _RemoveAllocation(Step):
    disk: str
    host: str
    capability: str

    def blocked(self, state: OperationalState) -> str | None:
        if _find_allocation(state, self.disk, self.host, self.capability) is None:
            return f"disk {state.disk_name(self.disk)} has no storage on {state.host_name(self.host)} {self.capability}"
        if down := _host_down(state, self.host):
            return down
        users = [state.vm_name(v) for v in state.disk_users(self.disk) if state.vm_host(v) == self.host]
        if users:
            used_by = ", ".join(sorted(users))
            return f"disk {state.disk_name(self.disk)} is in use by {used_by} on {state.host_name(self.host)}"
        config = state.host_config.get(self.host)
        if (config is not None and any(e.disk_id == self.disk for e in config.exports)) or \
                (config is not None and any(t.disk_id == self.disk for t in config.iscsi_targets)):
            return f"disk {state.disk_name(self.disk)} is shared from {state.host_name(self.host)}: unshare it first"
        from .image_steps import backing_blocks_removal

        return backing_blocks_removal(state, self.disk, self.host) or _locked_disk(state, self.disk)

    def take(self, state: OperationalState) -> OperationalState:
        return _drop_allocation(state, self.disk, self.host, self.capability)

    def touched(self) -> Touched:
        return Touched(disks=frozenset({self.disk}), hosts=frozenset({self.host}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("disk", self.disk)]

    def cost(self, state: OperationalState) -> Cost:
        # Data goes away for good: a little risk, so that keeping a copy wins a tie.
        return Cost(time_seconds=2.0, risk=0.05)

    def effect(self, state: OperationalState) -> str:
        return f"disk {state.disk_name(self.disk)} has no storage on {state.host_name(self.host)} {self.capability}"


@step_type
@dataclass(frozen=True)
class CreateLv(_CreateAllocation):
    type: ClassVar[str] = "create-lv"
    disk: str
    host: str
    capability: str
    vg: str
    lv: str
    size: int

    def allocation(self) -> Any:
        return LvmAllocation(host_id=self.host, capability_id=self.capability, vg=self.vg, lv=self.lv,
                             actual_size=self.size)

    def describe(self, state: OperationalState) -> str:
        return (f"create LV {self.vg}/{self.lv} ({format_size(self.size)}) on {state.host_name(self.host)} "
                f"for disk {state.disk_name(self.disk)}")

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import lvm

        return [ShellOp(self.host, lvm.lvcreate(vg=self.vg, lv=self.lv, size=self.size))]


@step_type
@dataclass(frozen=True)
class CreateThinLv(_CreateAllocation):
    type: ClassVar[str] = "create-thin-lv"
    disk: str
    host: str
    capability: str
    vg: str
    pool: str
    lv: str
    size: int

    def _space(self) -> int:
        return 0  # comes out of the pool, not the volume group

    def blocked(self, state: OperationalState) -> str | None:
        if state.thin_pool(self.host, self.vg, self.pool) is None:
            return f"{state.host_name(self.host)} has no thin pool {self.vg}/{self.pool}"
        return super().blocked(state)

    def allocation(self) -> Any:
        return LvmAllocation(host_id=self.host, capability_id=self.capability, vg=self.vg, lv=self.lv,
                             thin_pool=self.pool, actual_size=self.size)

    def describe(self, state: OperationalState) -> str:
        return (f"create thin LV {self.vg}/{self.lv} ({format_size(self.size)}) in pool {self.pool} on "
                f"{state.host_name(self.host)} for disk {state.disk_name(self.disk)}")

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import lvm

        return [ShellOp(self.host, lvm.lvcreate_thin(vg=self.vg, pool=self.pool, lv=self.lv, size=self.size))]


@step_type
@dataclass(frozen=True)
class CreateMirrorLv(_CreateAllocation):
    type: ClassVar[str] = "create-mirror-lv"
    disk: str
    host: str
    capability: str
    vg: str
    lv: str
    size: int
    mirrors: int

    def _space(self) -> int:
        return self.size * (1 + self.mirrors)

    def allocation(self) -> Any:
        return LvmAllocation(host_id=self.host, capability_id=self.capability, vg=self.vg, lv=self.lv,
                             mirrors=self.mirrors, actual_size=self.size)

    def cost(self, state: OperationalState) -> Cost:
        io = self.size * self.mirrors  # the initial sync
        return Cost(io_bytes=io, time_seconds=2.0 + io / IO_BYTES_PER_SECOND)

    def describe(self, state: OperationalState) -> str:
        return (f"create LV {self.vg}/{self.lv} ({format_size(self.size)}, {self.mirrors + 1} copies) on "
                f"{state.host_name(self.host)} for disk {state.disk_name(self.disk)}")

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import lvm

        return [ShellOp(self.host, lvm.lvcreate_mirror(vg=self.vg, lv=self.lv, size=self.size, mirrors=self.mirrors))]


@step_type
@dataclass(frozen=True)
class RemoveLv(_RemoveAllocation):
    type: ClassVar[str] = "remove-lv"
    disk: str
    host: str
    capability: str
    vg: str
    lv: str

    def describe(self, state: OperationalState) -> str:
        return f"remove LV {self.vg}/{self.lv} of disk {state.disk_name(self.disk)} on {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import lvm

        return [ShellOp(self.host, lvm.lvremove(vg=self.vg, lv=self.lv))]


@step_type
@dataclass(frozen=True)
class ExtendLv(Step):
    type: ClassVar[str] = "extend-lv"
    disk: str
    host: str
    capability: str
    vg: str
    lv: str
    size: int  # the new total size

    def blocked(self, state: OperationalState) -> str | None:
        alloc = _find_allocation(state, self.disk, self.host, self.capability)
        if not isinstance(alloc, LvmAllocation) or alloc.lv != self.lv:
            return f"no LV {self.vg}/{self.lv} of disk {state.disk_name(self.disk)} on {state.host_name(self.host)}"
        grow = self.size - (alloc.actual_size or 0)
        if grow <= 0:
            return f"LV {self.vg}/{self.lv} is already {format_size(alloc.actual_size)}"
        if not alloc.thin_pool and state.free_storage(self.host, self.capability) < grow:
            return (
                f"{state.host_name(self.host)} {self.capability}: not enough free space to grow by {format_size(grow)}"
            )
        return host_usable(state, self.host) or _locked_disk(state, self.disk)

    def take(self, state: OperationalState) -> OperationalState:
        alloc = _find_allocation(state, self.disk, self.host, self.capability)
        return _add_allocation(state, self.disk, alloc.evolve(actual_size=self.size))

    def touched(self) -> Touched:
        return Touched(disks=frozenset({self.disk}), hosts=frozenset({self.host}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("disk", self.disk), Reservation("storage", f"{self.host}/{self.capability}", self.size)]

    def describe(self, state: OperationalState) -> str:
        return f"extend LV {self.vg}/{self.lv} to {format_size(self.size)} on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"disk {state.disk_name(self.disk)} is {format_size(self.size)} on {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import lvm

        return [ShellOp(self.host, lvm.lvextend(vg=self.vg, lv=self.lv, size=self.size))]


@step_type
@dataclass(frozen=True)
class CreateThinPool(Step):
    type: ClassVar[str] = "create-thin-pool"
    host: str
    capability: str
    vg: str
    pool: str
    size: int

    def blocked(self, state: OperationalState) -> str | None:
        if state.thin_pool(self.host, self.vg, self.pool) is not None:
            return f"{state.host_name(self.host)} already has thin pool {self.vg}/{self.pool}"
        if state.free_storage(self.host, self.capability) < self.size:
            where = f"{state.host_name(self.host)} {self.capability}"
            return f"{where}: not enough free space for a {format_size(self.size)} pool"
        return host_usable(state, self.host)

    def take(self, state: OperationalState) -> OperationalState:
        pools = [*list(state.thin_pools(self.host)), ThinPool(vg=self.vg, name=self.pool, size_bytes=self.size)]
        state = state.apply([_host_config(state, self.host, thin_pools=pools)])
        return state.consume_storage(self.host, self.capability, self.size)

    def reservations(self) -> list[Reservation]:
        return [Reservation("pool", f"{self.host}/{self.vg}/{self.pool}"),
                Reservation("storage", f"{self.host}/{self.capability}", self.size)]

    def describe(self, state: OperationalState) -> str:
        return f"create thin pool {self.vg}/{self.pool} ({format_size(self.size)}) on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} has thin pool {self.vg}/{self.pool}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import lvm

        return [ShellOp(self.host, lvm.thin_pool_create(vg=self.vg, pool=self.pool, size=self.size))]


@step_type
@dataclass(frozen=True)
class ExtendThinPool(Step):
    type: ClassVar[str] = "extend-thin-pool"
    host: str
    capability: str
    vg: str
    pool: str
    size: int  # the new total size

    def _current(self, state: OperationalState) -> ThinPool | None:
        return state.thin_pool(self.host, self.vg, self.pool)

    def blocked(self, state: OperationalState) -> str | None:
        pool = self._current(state)
        if pool is None:
            return f"{state.host_name(self.host)} has no thin pool {self.vg}/{self.pool}"
        grow = self.size - pool.size_bytes
        if grow <= 0:
            return f"thin pool {self.vg}/{self.pool} is already {format_size(pool.size_bytes)}"
        if state.free_storage(self.host, self.capability) < grow:
            where = f"{state.host_name(self.host)} {self.capability}"
            return f"{where}: not enough free space to grow the pool by {format_size(grow)}"
        return host_usable(state, self.host) or (
            "the thin pool is held by another plan"
            if state.locked("pool", f"{self.host}/{self.vg}/{self.pool}")
            else None
        )

    def take(self, state: OperationalState) -> OperationalState:
        pool = _taken(self._current(state), "the thin pool")
        grow = self.size - pool.size_bytes
        pools = [
            p.evolve(size_bytes=self.size) if p == pool else p for p in state.thin_pools(self.host)
        ]
        state = state.apply([_host_config(state, self.host, thin_pools=pools)])
        return state.consume_storage(self.host, self.capability, grow)

    def reservations(self) -> list[Reservation]:
        return [Reservation("pool", f"{self.host}/{self.vg}/{self.pool}"),
                Reservation("storage", f"{self.host}/{self.capability}", self.size)]

    def describe(self, state: OperationalState) -> str:
        return f"extend thin pool {self.vg}/{self.pool} to {format_size(self.size)} on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"thin pool {self.vg}/{self.pool} is {format_size(self.size)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import lvm

        return [ShellOp(self.host, lvm.lvextend(vg=self.vg, lv=self.pool, size=self.size))]


@step_type
@dataclass(frozen=True)
class CreateFileImage(_CreateAllocation):
    type: ClassVar[str] = "create-file-image"
    disk: str
    host: str
    capability: str
    path: str
    size: int
    format: Literal["raw", "qcow2"] = "qcow2"

    def allocation(self) -> Any:
        return FileAllocation(host_id=self.host, capability_id=self.capability, path=self.path,
                              format=self.format, actual_size=self.size)

    def describe(self, state: OperationalState) -> str:
        return (f"create {self.format} image {self.path} ({format_size(self.size)}) on {state.host_name(self.host)} "
                f"for disk {state.disk_name(self.disk)}")

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import fileimage

        return [ShellOp(self.host, fileimage.qemu_img_create(path=self.path, size=self.size, fmt=self.format))]


@step_type
@dataclass(frozen=True)
class RemoveFileImage(_RemoveAllocation):
    type: ClassVar[str] = "remove-file-image"
    disk: str
    host: str
    capability: str
    path: str

    def describe(self, state: OperationalState) -> str:
        return f"remove image {self.path} of disk {state.disk_name(self.disk)} on {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import fileimage

        return [ShellOp(self.host, fileimage.file_remove(path=self.path))]


@step_type
@dataclass(frozen=True)
class ExtendFileImage(Step):
    type: ClassVar[str] = "extend-file-image"
    disk: str
    host: str
    capability: str
    path: str
    size: int

    def blocked(self, state: OperationalState) -> str | None:
        alloc = _find_allocation(state, self.disk, self.host, self.capability)
        if not isinstance(alloc, FileAllocation) or alloc.path != self.path:
            return f"no image {self.path} of disk {state.disk_name(self.disk)} on {state.host_name(self.host)}"
        if (alloc.actual_size or 0) >= self.size:
            return f"image {self.path} is already {format_size(alloc.actual_size)}"
        users = [state.vm_name(v) for v in state.disk_users(self.disk) if state.vm_host(v) is not None]
        if users:
            return (
                f"disk {state.disk_name(self.disk)} is in use by {', '.join(sorted(users))}: qemu-img cannot resize it"
            )
        return host_usable(state, self.host) or _locked_disk(state, self.disk)

    def take(self, state: OperationalState) -> OperationalState:
        alloc = _find_allocation(state, self.disk, self.host, self.capability)
        return _add_allocation(state, self.disk, alloc.evolve(actual_size=self.size))

    def touched(self) -> Touched:
        return Touched(disks=frozenset({self.disk}), hosts=frozenset({self.host}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("disk", self.disk)]

    def describe(self, state: OperationalState) -> str:
        return f"resize image {self.path} to {format_size(self.size)} on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"disk {state.disk_name(self.disk)} is {format_size(self.size)} on {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import fileimage

        alloc = _find_allocation(state, self.disk, self.host, self.capability)
        fmt = alloc.format if alloc is not None else None
        return [ShellOp(self.host, fileimage.qemu_img_resize(path=self.path, size=self.size, fmt=fmt))]


@step_type
@dataclass(frozen=True)
class CreateZfsVolume(_CreateAllocation):
    type: ClassVar[str] = "create-zfs-volume"
    disk: str
    host: str
    capability: str
    pool: str
    volume: str
    size: int

    def allocation(self) -> Any:
        return ZfsAllocation(host_id=self.host, capability_id=self.capability, pool=self.pool, volume=self.volume,
                             actual_size=self.size)

    def describe(self, state: OperationalState) -> str:
        return (f"create ZFS volume {self.pool}/{self.volume} ({format_size(self.size)}) on "
                f"{state.host_name(self.host)} for disk {state.disk_name(self.disk)}")

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import zfs

        return [ShellOp(self.host, zfs.zfs_create_volume(pool=self.pool, name=self.volume, size=self.size))]


@step_type
@dataclass(frozen=True)
class RemoveZfsVolume(_RemoveAllocation):
    type: ClassVar[str] = "remove-zfs-volume"
    disk: str
    host: str
    capability: str
    pool: str
    volume: str

    def describe(self, state: OperationalState) -> str:
        disk, host = state.disk_name(self.disk), state.host_name(self.host)
        return f"destroy ZFS volume {self.pool}/{self.volume} of disk {disk} on {host}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import zfs

        return [ShellOp(self.host, zfs.zfs_destroy_volume(pool=self.pool, name=self.volume))]


@step_type
@dataclass(frozen=True)
class CreateGvinumVolume(_CreateAllocation):
    type: ClassVar[str] = "create-gvinum-volume"
    disk: str
    host: str
    capability: str
    drive: str
    volume: str
    size: int

    def allocation(self) -> Any:
        return GvinumAllocation(host_id=self.host, capability_id=self.capability, volume=self.volume,
                                actual_size=self.size)

    def describe(self, state: OperationalState) -> str:
        return (f"create gvinum volume {self.volume} ({format_size(self.size)}) on drive {self.drive} of "
                f"{state.host_name(self.host)} for disk {state.disk_name(self.disk)}")

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import gvinum

        return [ShellOp(self.host, gvinum.gvinum_create_volume(name=self.volume, drive=self.drive, size=self.size))]


@step_type
@dataclass(frozen=True)
class RemoveGvinumVolume(_RemoveAllocation):
    type: ClassVar[str] = "remove-gvinum-volume"
    disk: str
    host: str
    capability: str
    volume: str

    def describe(self, state: OperationalState) -> str:
        return (
            f"remove gvinum volume {self.volume} of disk {state.disk_name(self.disk)} on {state.host_name(self.host)}"
        )

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import gvinum

        return [ShellOp(self.host, gvinum.gvinum_remove_volume(name=self.volume))]


def create_step(state: OperationalState, disk: VirtualStorageDevice, host_id: str, cap: StorageCapability, *,
                thin_pool: str | None = None, mirrors: int = 0, size: int | None = None) -> _CreateAllocation:
    """The step creating ``disk``'s storage on a capability, named after the disk."""
    name = allocation_name(disk)
    size = disk.size if size is None else size
    if cap.technology is StorageTechnology.lvm:
        if thin_pool:
            return CreateThinLv(disk.id, host_id, cap.id, cap.name, thin_pool, name, size)
        if mirrors:
            return CreateMirrorLv(disk.id, host_id, cap.id, cap.name, name, size, mirrors)
        return CreateLv(disk.id, host_id, cap.id, cap.name, name, size)
    if cap.technology is StorageTechnology.file:
        if disk.image is not None:  # a copy of an image keeps its kind: the copy step writes it byte for byte
            from ..hosts.images import image_extension, image_file_name

            path = f"{cap.name.rstrip('/')}/{image_file_name(disk.name, disk.id, image_extension(disk.image.format))}"
            return CreateFileImage(disk.id, host_id, cap.id, path, size,
                                   "qcow2" if disk.image.format == "qcow2" else "raw")
        return CreateFileImage(disk.id, host_id, cap.id, f"{cap.name.rstrip('/')}/{name}.qcow2", size, "qcow2")
    if cap.technology is StorageTechnology.zfs:
        return CreateZfsVolume(disk.id, host_id, cap.id, cap.name, name, size)
    return CreateGvinumVolume(disk.id, host_id, cap.id, cap.name, name, size)


def remove_step(disk_id: str, alloc: Any) -> Step:
    if isinstance(alloc, LvmAllocation):
        return RemoveLv(disk_id, alloc.host_id, alloc.capability_id, alloc.vg, alloc.lv)
    if isinstance(alloc, FileAllocation):
        return RemoveFileImage(disk_id, alloc.host_id, alloc.capability_id, alloc.path)
    if isinstance(alloc, ZfsAllocation):
        return RemoveZfsVolume(disk_id, alloc.host_id, alloc.capability_id, alloc.pool, alloc.volume)
    return RemoveGvinumVolume(disk_id, alloc.host_id, alloc.capability_id, alloc.volume)


@step_type
@dataclass(frozen=True)
class CopyAllocation(Step):
    """Copy a disk's storage to another host over SSH (checksummed); ``move`` removes the source after.

    With ``source_disk`` set to another disk, this creates ``disk`` as a clone of that disk."""

    type: ClassVar[str] = "copy-allocation"
    disk: str
    host: str  # the source host
    capability: str  # the source capability
    target: str
    target_capability: str
    move: bool = False
    source_disk: str | None = None

    def _source_disk(self) -> str:
        return self.source_disk or self.disk

    def _creator(self, state: OperationalState) -> _CreateAllocation | None:
        disk = state.disks.get(self.disk)
        cap = state.capability(self.target, self.target_capability)
        if disk is None or cap is None:
            return None
        return create_step(state, disk, self.target, cap)

    def blocked(self, state: OperationalState) -> str | None:
        source = _find_allocation(state, self._source_disk(), self.host, self.capability)
        if source is None:
            disk = state.disk_name(self._source_disk())
            return f"disk {disk} has no storage on {state.host_name(self.host)} {self.capability}"
        if down := _host_down(state, self.host):
            return down
        creator = self._creator(state)
        if creator is None:
            return f"{state.host_name(self.target)} has no storage {self.target_capability}"
        reason = creator.blocked(state)
        if reason:
            return reason
        src = state.disks.get(self._source_disk())
        running = [state.vm_name(v) for v in state.disk_users(self._source_disk()) if state.vm_running(v)]
        if running and src is not None and not src.read_only:
            return (f"disk {src.name} is in use by {', '.join(sorted(running))}: a copy taken now would not be "
                    "consistent")
        config = state.host_config.get(self.target)
        if self.host != self.target and (config is None or self.host not in config.ssh_trust):
            return f"{state.host_name(self.target)} does not trust {state.host_name(self.host)} yet"
        if self.move:
            remover = remove_step(self.disk, source)
            return remover.blocked(state)
        return None

    def take(self, state: OperationalState) -> OperationalState:
        creator = _taken(self._creator(state), "the target storage")
        changes = {"cloned_from": self.source_disk} if self.source_disk else {}
        state = _add_allocation(state, self.disk, creator.allocation(), **changes)
        if self.move:
            state = _drop_allocation(state, self.disk, self.host, self.capability)
        return state

    def touched(self) -> Touched:
        return Touched(disks=frozenset({self.disk, self._source_disk()}), hosts=frozenset({self.host, self.target}))

    def reservations(self) -> list[Reservation]:
        out = [Reservation("disk", self.disk), Reservation("storage", f"{self.target}/{self.target_capability}", 0)]
        if self.source_disk:
            out.append(Reservation("disk", self.source_disk))
        return out

    def cost(self, state: OperationalState) -> Cost:
        disk = state.disks.get(self._source_disk())
        size = disk.size if disk is not None else 0
        network = 0 if self.host == self.target else size
        seconds = size / NETWORK_BYTES_PER_SECOND if network else 2 * size / IO_BYTES_PER_SECOND
        return Cost(network_bytes=network, io_bytes=2 * size, cpu_seconds=size / 500e6,
                    time_seconds=5.0 + seconds, risk=0.05 if self.move else 0.0)

    def describe(self, state: OperationalState) -> str:
        verb = "move" if self.move else "copy"
        what = f"disk {state.disk_name(self.disk)}"
        if self.source_disk:
            verb, what = "clone", f"disk {state.disk_name(self.source_disk)} into {state.disk_name(self.disk)}"
        return (f"{verb} {what} from {state.host_name(self.host)} {self.capability} to "
                f"{state.host_name(self.target)} {self.target_capability}")

    def effect(self, state: OperationalState) -> str:
        return f"disk {state.disk_name(self.disk)} has storage on {state.host_name(self.target)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import copy

        source = _find_allocation(state, self._source_disk(), self.host, self.capability)
        creator = _taken(self._creator(state), "the target storage")
        target = state.hosts[self.target]
        disk = state.disks[self._source_disk()]
        # an image's copy is made by the copy itself (nothing to create first), and checked against the
        # image's own sha256 once there
        ops: list[Operation] = [] if disk.image is not None else list(creator.operations(state))
        destination = creator.allocation()
        if self.host == self.target:
            from ..hosts import fileimage

            # on one host qemu-img copies directly (and converts between raw and qcow2)
            ops.append(ShellOp(self.host, fileimage.qemu_img_convert(
                source.path, destination.path, fmt=destination.format, src_fmt=source.format)))
        else:
            ops.append(ShellOp(self.host, copy.copy_allocation_pipeline(
                source.path, target.address, destination.path, disk.size, dst_port=target.port,
                dst_user=target.user, identity_file=PEER_KEY, known_hosts_file=PEER_KNOWN_HOSTS)))
        if disk.image is not None:
            from ..hosts import images

            ops.append(ShellOp(self.target, images.verify_command(destination.path, disk.image.sha256)))
        if self.move:
            ops.extend(remove_step(self.disk, source).operations(state))
        return ops


# --- sharing -------------------------------------------------------------------------------------


def ganesha_export_id(path: str) -> int:
    """A stable nfs-ganesha export id for a path (ids 1 and 0 are ganesha's own)."""
    import zlib

    return 100 + zlib.crc32(path.encode()) % 60000


def _config_list(state: OperationalState, host: str, name: str) -> list[Any]:
    config = state.host_config.get(host)
    return list(getattr(config, name)) if config is not None else []


@step_type
@dataclass(frozen=True)
class ExportNfs(Step):
    type: ClassVar[str] = "nfs-export"
    host: str
    path: str
    clients: str
    disk: str | None = None
    options: str = "rw,no_root_squash"
    server: Literal["kernel", "ganesha"] = "kernel"  # ganesha: userspace, where there is no kernel nfsd

    def inverse(self) -> Step:
        return UnexportNfs(self.host, self.path, self.clients, self.server)

    def blocked(self, state: OperationalState) -> str | None:
        if any(e.path == self.path and e.clients == self.clients for e in _config_list(state, self.host, "exports")):
            return f"{state.host_name(self.host)} already exports {self.path} to {self.clients}"
        return host_usable(state, self.host)

    def take(self, state: OperationalState) -> OperationalState:
        exports = [
            *_config_list(state, self.host, "exports"),
            NfsExport(
                path=self.path, clients=self.clients, options=self.options, server=self.server, disk_id=self.disk
            ),
        ]
        return state.apply([_host_config(state, self.host, exports=exports)])

    def touched(self) -> Touched:
        return Touched(disks=frozenset(d for d in [self.disk] if d), hosts=frozenset({self.host}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("share", f"{self.host}:{self.path}")]

    def describe(self, state: OperationalState) -> str:
        return f"export {self.path} over NFS from {state.host_name(self.host)} to {self.clients}"

    def effect(self, state: OperationalState) -> str:
        return f"{self.path} is exported by {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import nfs

        if self.server == "ganesha":
            return [ShellOp(self.host, nfs.ganesha_add_export(ganesha_export_id(self.path), self.path,
                                                              clients=self.clients))]
        return [ShellOp(self.host, nfs.nfs_export(path=self.path, clients=self.clients, options=self.options))]


@step_type
@dataclass(frozen=True)
class UnexportNfs(Step):
    type: ClassVar[str] = "nfs-unexport"
    host: str
    path: str
    clients: str
    server: Literal["kernel", "ganesha"] = "kernel"

    def inverse(self) -> Step:
        return ExportNfs(self.host, self.path, self.clients, server=self.server)

    def blocked(self, state: OperationalState) -> str | None:
        if not any(
            e.path == self.path and e.clients == self.clients for e in _config_list(state, self.host, "exports")
        ):
            return f"{state.host_name(self.host)} does not export {self.path} to {self.clients}"
        address = state.hosts[self.host].address if self.host in state.hosts else ""
        for other in state.host_ids():
            for mount in _config_list(state, other, "mounts"):
                if mount.source == f"{address}:{self.path}":
                    return f"{state.host_name(other)} still mounts {mount.source}: unmount it first"
        return _host_down(state, self.host)

    def take(self, state: OperationalState) -> OperationalState:
        exports = [e for e in _config_list(state, self.host, "exports")
                   if not (e.path == self.path and e.clients == self.clients)]
        return state.apply([_host_config(state, self.host, exports=exports)])

    def reservations(self) -> list[Reservation]:
        return [Reservation("share", f"{self.host}:{self.path}")]

    def describe(self, state: OperationalState) -> str:
        return f"stop exporting {self.path} from {state.host_name(self.host)} to {self.clients}"

    def effect(self, state: OperationalState) -> str:
        return f"{self.path} is no longer exported by {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import nfs

        if self.server == "ganesha":
            return [ShellOp(self.host, nfs.ganesha_remove_export(ganesha_export_id(self.path)))]
        return [ShellOp(self.host, nfs.nfs_unexport(path=self.path, clients=self.clients))]


@step_type
@dataclass(frozen=True)
class MountNfs(Step):
    type: ClassVar[str] = "nfs-mount"
    host: str
    server: str  # host id of the NFS server
    remote_path: str
    target: str
    disk: str | None = None

    def inverse(self) -> Step:
        return UnmountNfs(self.host, self.target)

    def _source(self, state: OperationalState) -> str:
        return f"{state.hosts[self.server].address}:{self.remote_path}"

    def blocked(self, state: OperationalState) -> str | None:
        if self.server not in state.hosts:
            return f"no host {self.server}"
        if not any(e.path == self.remote_path for e in _config_list(state, self.server, "exports")):
            return f"{state.host_name(self.server)} does not export {self.remote_path}"
        if any(m.target == self.target for m in _config_list(state, self.host, "mounts")):
            return f"{state.host_name(self.host)} already has a mount on {self.target}"
        return host_usable(state, self.host)

    def take(self, state: OperationalState) -> OperationalState:
        mounts = [
            *_config_list(state, self.host, "mounts"),
            Mount(source=self._source(state), target=self.target, fstype="nfs", disk_id=self.disk),
        ]
        return state.apply([_host_config(state, self.host, mounts=mounts)])

    def touched(self) -> Touched:
        return Touched(disks=frozenset(d for d in [self.disk] if d), hosts=frozenset({self.host, self.server}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("share", f"{self.host}:{self.target}")]

    def describe(self, state: OperationalState) -> str:
        return f"mount {self._source(state)} on {self.target} on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} sees {self.remote_path} of {state.host_name(self.server)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import nfs

        return [ShellOp(self.host, nfs.nfs_mount(server=state.hosts[self.server].address,
                                                 remote_path=self.remote_path, target=self.target))]


@step_type
@dataclass(frozen=True)
class UnmountNfs(Step):
    type: ClassVar[str] = "nfs-unmount"
    host: str
    target: str

    def blocked(self, state: OperationalState) -> str | None:
        mount = next((m for m in _config_list(state, self.host, "mounts") if m.target == self.target), None)
        if mount is None:
            return f"{state.host_name(self.host)} has no mount on {self.target}"
        if mount.disk_id is not None:
            users = [state.vm_name(v) for v in state.disk_users(mount.disk_id) if state.vm_host(v) == self.host]
            if users:
                return f"{', '.join(sorted(users))} on {state.host_name(self.host)} use {self.target}"
        return _host_down(state, self.host)

    def take(self, state: OperationalState) -> OperationalState:
        mounts = [m for m in _config_list(state, self.host, "mounts") if m.target != self.target]
        return state.apply([_host_config(state, self.host, mounts=mounts)])

    def reservations(self) -> list[Reservation]:
        return [Reservation("share", f"{self.host}:{self.target}")]

    def describe(self, state: OperationalState) -> str:
        return f"unmount {self.target} on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"{self.target} is unmounted on {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import nfs

        return [ShellOp(self.host, nfs.nfs_unmount(target=self.target))]


@step_type
@dataclass(frozen=True)
class ShareIscsi(Step):
    type: ClassVar[str] = "iscsi-share"
    host: str
    tid: int
    iqn: str
    lun_path: str
    disk: str | None = None

    def inverse(self) -> Step:
        return UnshareIscsi(self.host, self.tid)

    def blocked(self, state: OperationalState) -> str | None:
        if any(t.tid == self.tid for t in _config_list(state, self.host, "iscsi_targets")):
            return f"{state.host_name(self.host)} already has iSCSI target {self.tid}"
        return host_usable(state, self.host)

    def take(self, state: OperationalState) -> OperationalState:
        targets = [
            *_config_list(state, self.host, "iscsi_targets"),
            IscsiTarget(iqn=self.iqn, tid=self.tid, lun_path=self.lun_path, disk_id=self.disk),
        ]
        return state.apply([_host_config(state, self.host, iscsi_targets=targets)])

    def touched(self) -> Touched:
        return Touched(disks=frozenset(d for d in [self.disk] if d), hosts=frozenset({self.host}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("share", f"{self.host}:iscsi:{self.tid}")]

    def describe(self, state: OperationalState) -> str:
        return f"share {self.lun_path} over iSCSI as {self.iqn} (target {self.tid}) on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"{self.iqn} is shared by {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import iscsi

        return [ShellOp(self.host, iscsi.iscsi_share(tid=self.tid, iqn=self.iqn, lun_path=self.lun_path,
                                                     chap_user=None, chap_password_file=None))]


@step_type
@dataclass(frozen=True)
class UnshareIscsi(Step):
    type: ClassVar[str] = "iscsi-unshare"
    host: str
    tid: int

    def blocked(self, state: OperationalState) -> str | None:
        if not any(t.tid == self.tid for t in _config_list(state, self.host, "iscsi_targets")):
            return f"{state.host_name(self.host)} has no iSCSI target {self.tid}"
        return _host_down(state, self.host)

    def take(self, state: OperationalState) -> OperationalState:
        targets = [t for t in _config_list(state, self.host, "iscsi_targets") if t.tid != self.tid]
        return state.apply([_host_config(state, self.host, iscsi_targets=targets)])

    def reservations(self) -> list[Reservation]:
        return [Reservation("share", f"{self.host}:iscsi:{self.tid}")]

    def describe(self, state: OperationalState) -> str:
        return f"remove iSCSI target {self.tid} on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"iSCSI target {self.tid} is gone from {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import iscsi

        return [ShellOp(self.host, iscsi.iscsi_unshare(tid=self.tid))]


# --- host steps ----------------------------------------------------------------------------------


@step_type
@dataclass(frozen=True)
class SetKsm(Step):
    """KSM on, off, or tuned (``None`` leaves a setting as it is)."""

    type: ClassVar[str] = "ksm"
    host: str
    run: bool | None = None
    pages_to_scan: int | None = None
    sleep_millisecs: int | None = None

    def inverse(self) -> Step | None:
        if self.run is None:
            return None
        return SetKsm(self.host, not self.run, self.pages_to_scan, self.sleep_millisecs)

    def blocked(self, state: OperationalState) -> str | None:
        if down := _host_down(state, self.host):
            return down
        dyn = state.host_dyn.get(self.host)
        if dyn is not None and not dyn.ksm.available:
            return f"{state.host_name(self.host)} has no KSM"
        if state.locked("host", self.host):
            return f"{state.host_name(self.host)} is held by another plan"
        return None

    def take(self, state: OperationalState) -> OperationalState:
        dyn = state.host_dyn.get(self.host)
        ksm = dyn.ksm if dyn is not None else None
        changes = {k: v for k, v in (("run", self.run), ("pages_to_scan", self.pages_to_scan),
                                     ("sleep_millisecs", self.sleep_millisecs)) if v is not None}
        new_ksm = ksm.evolve(**changes) if ksm is not None else None
        return state.apply([_host_dyn(state, self.host, ksm=new_ksm)]) if new_ksm is not None else state

    def reservations(self) -> list[Reservation]:
        return [Reservation("ksm", self.host)]

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=1.0)

    def describe(self, state: OperationalState) -> str:
        name = state.host_name(self.host)
        if self.run is True:
            what = "enable KSM"
        elif self.run is False:
            what = "disable KSM"
        else:
            what = "tune KSM"
        tune = [f"{k}={v}" for k, v in (("pages_to_scan", self.pages_to_scan),
                                        ("sleep_millisecs", self.sleep_millisecs)) if v is not None]
        return f"{what} on {name}" + (f" ({', '.join(tune)})" if tune else "")

    def effect(self, state: OperationalState) -> str:
        if self.run is None:
            return f"KSM scan rate changed on {state.host_name(self.host)}"
        return f"KSM {'runs' if self.run else 'stopped'} on {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import ksm

        return [ShellOp(self.host, ksm.ksm_set(run=self.run, pages_to_scan=self.pages_to_scan,
                                               sleep_millisecs=self.sleep_millisecs))]


@step_type
@dataclass(frozen=True)
class PowerDownHost(Step):
    type: ClassVar[str] = "power-down"
    host: str

    def inverse(self) -> Step:
        return WakeHost(self.host, "")

    def blocked(self, state: OperationalState) -> str | None:
        host = state.hosts.get(self.host)
        if host is None:
            return f"no host {self.host}"
        if not host.dedicated:
            return f"{host.name} is not dedicated to kerub: it may run other workloads"
        if not state.host_up(self.host):
            return f"{host.name} is {state.host_status(self.host).value}"
        if state.vms_on(self.host):
            return f"{host.name} still runs {', '.join(state.vm_name(v) for v in state.vms_on(self.host))}"
        exports = _config_list(state, self.host, "exports") + _config_list(state, self.host, "iscsi_targets")
        if exports:
            return f"{host.name} still shares storage"
        if state.locked("host", self.host):
            return f"{host.name} is held by another plan"
        return None

    def take(self, state: OperationalState) -> OperationalState:
        return state.apply([_host_dyn(state, self.host, status=HostStatus.down, status_reason="powered down by kerub")])

    def reservations(self) -> list[Reservation]:
        return [Reservation("host", self.host)]

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=60.0, risk=0.05)

    def describe(self, state: OperationalState) -> str:
        return f"power down {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} is off"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import power

        caps = state.hosts[self.host].capabilities
        system = "freebsd" if caps is not None and caps.os.id.casefold() == "freebsd" else "linux"
        return [ShellOp(self.host, power.power_off(system=system))]


@step_type
@dataclass(frozen=True)
class WakeHost(Step):
    """Wake-on-LAN sent by a running neighbour (``via``), or IPMI from it when the host has a BMC."""

    type: ClassVar[str] = "wake-host"
    host: str
    via: str

    def inverse(self) -> Step:
        return PowerDownHost(self.host)

    def blocked(self, state: OperationalState) -> str | None:
        host = state.hosts.get(self.host)
        if host is None:
            return f"no host {self.host}"
        if state.host_up(self.host):
            return f"{host.name} is already up"
        if host.power.wol_mac is None and host.power.ipmi_address is None:
            return f"{host.name} has no wake-on-LAN address and no IPMI"
        if host.recycling:
            return f"{host.name} is being recycled"
        if self.via not in state.hosts or not state.host_up(self.via):
            return f"the neighbour {state.host_name(self.via)} is not up to send the wake-up"
        if state.locked("host", self.host):
            return f"{host.name} is held by another plan"
        return None

    def take(self, state: OperationalState) -> OperationalState:
        return state.apply([_host_dyn(state, self.host, status=HostStatus.up, status_reason=None)])

    def touched(self) -> Touched:
        return Touched(hosts=frozenset({self.host, self.via}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("host", self.host)]

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=180.0)

    def describe(self, state: OperationalState) -> str:
        return f"wake {state.host_name(self.host)} (from {state.host_name(self.via)})"

    def effect(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} is up"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import power

        host = state.hosts[self.host]
        if host.power.wol_mac is not None:
            return [ShellOp(self.via, power.wake_on_lan(mac=host.power.wol_mac), privileged=False)]
        address = _taken(host.power.ipmi_address, "the host's IPMI address")
        return [ShellOp(self.via, power.ipmi_power(address=address, user=host.power.ipmi_user or "root",
                                                   action="on"), privileged=False)]


def peer_key_command() -> str:
    """On the source host: make its peer key once, then print the public half."""
    key = shlex.quote(PEER_KEY)
    return (f"umask 077 && mkdir -p /root/.ssh && {{ test -f {key} || ssh-keygen -q -t ed25519 -N '' "
            f"-C kerub-peer -f {key}; }} && cat {shlex.quote(PEER_KEY + '.pub')}")


def known_host_command(address: str, port: int, host_key: str) -> str:
    """On the source host: remember the target's accepted host key for the peer connections."""
    from ..hosts.trust import parse_public_key

    key = parse_public_key(host_key)
    name = address if port == 22 else f"[{address}]:{port}"
    line = f"{name} {key.identity}"
    path = shlex.quote(PEER_KNOWN_HOSTS)
    return (f"umask 077 && touch {path} && {{ grep -qxF -e {shlex.quote(line)} {path} || "
            f"printf '%s\\n' {shlex.quote(line)} >> {path}; }}")


def trust_command_from_key(output: str) -> str:
    """The target's command, built from the public key the source printed."""
    from ..hosts.trust import ssh_trust

    return ssh_trust(output.strip().splitlines()[-1] if output.strip() else "")


@step_type
@dataclass(frozen=True)
class TrustHost(Step):
    """Let ``host`` reach ``target`` over SSH (storage copies, peer-to-peer migration)."""

    type: ClassVar[str] = "ssh-trust"
    host: str  # the source, whose key is trusted
    target: str

    def blocked(self, state: OperationalState) -> str | None:
        config = state.host_config.get(self.target)
        if config is not None and self.host in config.ssh_trust:
            return f"{state.host_name(self.target)} already trusts {state.host_name(self.host)}"
        return _host_down(state, self.host) or _host_down(state, self.target)

    def take(self, state: OperationalState) -> OperationalState:
        trust = sorted(set(_config_list(state, self.target, "ssh_trust")) | {self.host})
        return state.apply([_host_config(state, self.target, ssh_trust=trust)])

    def touched(self) -> Touched:
        return Touched(hosts=frozenset({self.host, self.target}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("trust", f"{self.host}>{self.target}")]

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=2.0)

    def describe(self, state: OperationalState) -> str:
        return f"let {state.host_name(self.host)} reach {state.host_name(self.target)} over SSH"

    def effect(self, state: OperationalState) -> str:
        return f"{state.host_name(self.target)} trusts {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        target = state.hosts[self.target]
        ops: list[Operation] = [ShellOp(self.host, peer_key_command())]
        if target.host_key:
            ops.insert(0, ShellOp(self.host, known_host_command(target.address, target.port, target.host_key)))
        ops.append(DeferredShellOp(
            self.target, "trust_command_from_key",
            f"append {state.host_name(self.host)}'s key {PEER_KEY}.pub (printed above) to /root/.ssh/authorized_keys"))
        return ops


DEFERRED_BUILDERS = {"trust_command_from_key": trust_command_from_key}


def order_key(step: Step) -> tuple[Any, ...]:
    return step.sort_key()


from . import image_steps as _image_steps  # noqa: E402,F401  (registers its step types with step_type)
