"""Expectation checkers: one per expectation type the models accept, each a plain verdict with a reason.

A VM checker answers two questions: is the expectation met in this state (``check``), and would it be
met if the VM ran on that host (``host_fit``, used for placement and for "why not h3"). A disk
checker answers ``check`` and ``capability_fit`` (would a new allocation there help or hurt).
The registry covers every type in core.expectations; ``ensure_checkable`` refuses any other, so an
expectation is never accepted and then silently ignored.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.expectations import DISK_EXPECTATION_TYPES, VM_EXPECTATION_TYPES, Expectation, Level
from ..core.models import (
    HostStatus,
    LvmAllocation,
    StorageTechnology,
    VirtualMachine,
    VirtualStorageDevice,
    VmStatus,
)
from ..core.sizes import format_size
from .state import OperationalState, vm_memory

# --- verdicts ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Satisfied:
    ok: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Violated:
    reason: str
    ok: ClassVar[bool] = False


SATISFIED = Satisfied()
Verdict = Satisfied | Violated


@dataclass(frozen=True, order=True, slots=True)
class Violation:
    """An expectation not met in a state. ``key`` identifies it across states (subject, position)."""

    subject_kind: str  # "vm" or "disk"
    subject_id: str
    index: int  # position in the subject's expectation list
    type: str
    level: Level
    reason: str
    subject_name: str = ""

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.subject_kind, self.subject_id, self.index)

    @property
    def hard(self) -> bool:
        return self.level is Level.dealbreaker

    def describe(self) -> str:
        what = "VM" if self.subject_kind == "vm" else "disk"
        return f"{what} {self.subject_name or self.subject_id[:8]}: {self.type}@{self.level.value}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a host (or a storage capability) is not a place for a VM (or an allocation).

    ``level`` None means a hard fact (capacity, host down): no expectation level can override it.
    """

    checker: str
    level: Level | None
    reason: str

    @property
    def hard(self) -> bool:
        return self.level is None or self.level is Level.dealbreaker


# --- helpers -------------------------------------------------------------------------------------


def _caps(state: OperationalState, host_id: str) -> Any:
    host = state.hosts.get(host_id)
    return host.capabilities if host is not None else None


def _dmi(state: OperationalState, host_id: str) -> Any:
    caps = _caps(state, host_id)
    return caps.dmi if caps is not None else None


def _same_maker(actual: str, wanted: str) -> bool:
    """'Dell Inc.' matches 'Dell' and 'dell inc.': a case-insensitive whole-word prefix."""
    a, w = actual.strip().casefold(), wanted.strip().casefold()
    return a == w or (a.startswith(w) and not a[len(w)].isalnum())


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def _threads(state: OperationalState, host_id: str) -> str:
    """' (16 threads)' on an SMT host, where the logical CPUs outnumber the cores; else ''."""
    logical = state.cpu_count(host_id)
    return f" ({logical} threads)" if logical > state.core_count(host_id) else ""


# --- VM checkers ---------------------------------------------------------------------------------


class VmChecker(abc.ABC):
    type: ClassVar[str]
    placement: ClassVar[bool] = True  # met or not depending on which host the VM runs on

    def check(self, state: OperationalState, vm: VirtualMachine, exp: Any) -> str | None:
        """None when met, else the reason. Placement expectations are judged on the VM's host."""
        host_id = state.vm_host(vm.id)
        if host_id is None:
            return None  # not on any host: nothing to judge (availability says whether it should be)
        return self.host_fit(state, vm, exp, host_id)

    @abc.abstractmethod
    def host_fit(self, state: OperationalState, vm: VirtualMachine, exp: Any, host_id: str) -> str | None:
        """None when ``host_id`` meets the expectation for ``vm``, else the reason it does not."""


class AvailabilityChecker(VmChecker):
    type = "availability"
    placement = False

    def check(self, state: OperationalState, vm: VirtualMachine, exp: Any) -> str | None:
        host_id, status = state.vm_placement(vm.id)
        if exp.up:
            if state.vm_running(vm.id):
                return None
            if exp.paused and host_id is not None and status is VmStatus.paused and state.host_up(host_id):
                return None  # paused by the admin (vm pause): left paused until vm resume
            if host_id is None:
                return "not running"
            if state.host_status(host_id) is HostStatus.connecting:
                # The controller has just started and not heard from the host yet: what it reported
                # last stands. Calling this a violation would flash every VM red at each start, and
                # a plan made on it could start a second copy of a VM that is running.
                return None
            if not state.host_up(host_id):
                return f"its host {state.host_name(host_id)} is {state.host_status(host_id).value}"
            return f"{status.value} on {state.host_name(host_id)}"
        if host_id is None:
            return None
        return f"{status.value} on {state.host_name(host_id)}"

    def host_fit(self, state: OperationalState, vm: VirtualMachine, exp: Any, host_id: str) -> str | None:
        return None if exp.up else f"{state.host_name(host_id)}: the VM is expected down"


class NotSameHostChecker(VmChecker):
    type = "not-same-host"

    def host_fit(self, state: OperationalState, vm: VirtualMachine, exp: Any, host_id: str) -> str | None:
        here = state.host_vms.get(host_id, frozenset())
        clash = sorted(state.vm_name(v) for ref in exp.vms if (v := state.resolve_vm(ref)) in here and v != vm.id)
        if clash:
            return f"{state.host_name(host_id)}: also runs {', '.join(clash)}"
        return None


class CpuArchitectureChecker(VmChecker):
    type = "cpu-architecture"

    def host_fit(self, state: OperationalState, vm: VirtualMachine, exp: Any, host_id: str) -> str | None:
        caps = _caps(state, host_id)
        if caps is None or not caps.cpu.architecture:
            return f"{state.host_name(host_id)}: CPU architecture unknown"
        if caps.cpu.architecture != exp.architecture:
            return f"{state.host_name(host_id)}: architecture {caps.cpu.architecture}, not {exp.architecture}"
        return None


class CpuFlagsChecker(VmChecker):
    type = "cpu-flags"

    def host_fit(self, state: OperationalState, vm: VirtualMachine, exp: Any, host_id: str) -> str | None:
        caps = _caps(state, host_id)
        if caps is None or not caps.cpu.flags:
            return f"{state.host_name(host_id)}: CPU flags unknown"
        have = set(caps.cpu.flags)
        missing = [f for f in exp.flags if f not in have]
        if missing:
            return f"{state.host_name(host_id)}: no {', '.join(missing)} flag" + ("s" if len(missing) > 1 else "")
        return None


class CpuClockChecker(VmChecker):
    type = "cpu-clock-frequency"

    def host_fit(self, state: OperationalState, vm: VirtualMachine, exp: Any, host_id: str) -> str | None:
        caps = _caps(state, host_id)
        if caps is None or caps.cpu.max_mhz is None:
            return f"{state.host_name(host_id)}: CPU clock unknown"
        if caps.cpu.max_mhz < exp.min_mhz:
            return f"{state.host_name(host_id)}: CPU max {caps.cpu.max_mhz:.0f} MHz, below {exp.min_mhz}"
        return None


class MemoryClockChecker(VmChecker):
    type = "memory-clock-frequency"

    def host_fit(self, state: OperationalState, vm: VirtualMachine, exp: Any, host_id: str) -> str | None:
        dmi = _dmi(state, host_id)
        modules = [m for m in (dmi.memory_devices if dmi else []) if m.size_bytes > 0]
        if not modules or any(m.speed_mts is None for m in modules):
            return f"{state.host_name(host_id)}: memory speed unknown"
        slowest = min(m.speed_mts for m in modules)
        if slowest < exp.min_mhz:
            return f"{state.host_name(host_id)}: memory at {slowest} MT/s, below {exp.min_mhz}"
        return None


class CacheSizeChecker(VmChecker):
    type = "cache-size"

    def host_fit(self, state: OperationalState, vm: VirtualMachine, exp: Any, host_id: str) -> str | None:
        caps = _caps(state, host_id)
        caches = [c for c in (caps.cpu.caches if caps else []) if c.name.casefold() == exp.cache.casefold()]
        if not caches:
            return f"{state.host_name(host_id)}: no {exp.cache} cache reported"
        size = max(c.size_kib for c in caches)
        if size < exp.min_kib:
            return f"{state.host_name(host_id)}: {exp.cache} cache {size} KiB, below {exp.min_kib}"
        return None


class _ManufacturerChecker(VmChecker):
    field: ClassVar[str]
    what: ClassVar[str]

    def host_fit(self, state: OperationalState, vm: VirtualMachine, exp: Any, host_id: str) -> str | None:
        dmi = _dmi(state, host_id)
        actual = getattr(dmi, self.field, None) if dmi is not None else None
        if not actual:
            return f"{state.host_name(host_id)}: {self.what} manufacturer unknown"
        if not _same_maker(actual, exp.manufacturer):
            return f"{state.host_name(host_id)}: {self.what} by {actual}, not {exp.manufacturer}"
        return None


class ChassisManufacturerChecker(_ManufacturerChecker):
    type = "chassis-manufacturer"
    field = "chassis_manufacturer"
    what = "chassis"


class SystemManufacturerChecker(_ManufacturerChecker):
    type = "system-manufacturer"
    field = "system_manufacturer"
    what = "system"


class EccMemoryChecker(VmChecker):
    type = "ecc-memory"

    def host_fit(self, state: OperationalState, vm: VirtualMachine, exp: Any, host_id: str) -> str | None:
        dmi = _dmi(state, host_id)
        if dmi is None:
            return f"{state.host_name(host_id)}: memory type unknown"
        ecc = dmi.ecc
        modules = [m for m in dmi.memory_devices if m.size_bytes > 0]
        if ecc is None and modules and all(m.ecc is not None for m in modules):
            ecc = all(m.ecc for m in modules)
        if ecc is None:
            return f"{state.host_name(host_id)}: memory type unknown"
        return None if ecc else f"{state.host_name(host_id)}: no ECC memory"


class CoreDedicationChecker(VmChecker):
    type = "core-dedication"

    def host_fit(self, state: OperationalState, vm: VirtualMachine, exp: Any, host_id: str) -> str | None:
        cores = state.core_count(host_id)  # physical cores: hyper-threads share a core
        used = state.vcpus_used.get(host_id, 0)
        if vm.id not in state.host_vms.get(host_id, frozenset()):
            used += vm.cpus
        if used > cores:
            return (f"{state.host_name(host_id)}: {_plural(used, 'vCPU')} would share "
                    f"{_plural(cores, 'core')}{_threads(state, host_id)}")
        return None


class NoMigrationChecker(VmChecker):
    type = "no-migration"

    def check(self, state: OperationalState, vm: VirtualMachine, exp: Any) -> str | None:
        was = state.static.initial_vm_host.get(vm.id)
        now = state.vm_host(vm.id)
        if was is not None and now is not None and now != was:
            return f"moved from {state.host_name(was)} to {state.host_name(now)}"
        return None

    def host_fit(self, state: OperationalState, vm: VirtualMachine, exp: Any, host_id: str) -> str | None:
        was = state.static.initial_vm_host.get(vm.id)
        if was is not None and was != host_id and state.vm_host(vm.id) == was:
            return f"{state.host_name(host_id)}: would move it off {state.host_name(was)}"
        return None


class HostOsChecker(VmChecker):
    type = "host-os"

    def host_fit(self, state: OperationalState, vm: VirtualMachine, exp: Any, host_id: str) -> str | None:
        caps = _caps(state, host_id)
        if caps is None or not caps.os.id:
            return f"{state.host_name(host_id)}: operating system unknown"
        os_id, version = caps.os.id, caps.os.version_id
        wanted = exp.os + (f" {exp.version}" if exp.version else "")
        if os_id.casefold() != exp.os.casefold():
            return f"{state.host_name(host_id)}: runs {os_id} {version}".rstrip() + f", not {wanted}"
        if exp.version and not (version == exp.version or version.startswith(exp.version + ".")):
            return f"{state.host_name(host_id)}: runs {os_id} {version or '(no version)'}, not {wanted}"
        return None


class PowerRedundancyChecker(VmChecker):
    type = "power-redundancy"

    def host_fit(self, state: OperationalState, vm: VirtualMachine, exp: Any, host_id: str) -> str | None:
        dmi = _dmi(state, host_id)
        supplies = dmi.power_supplies if dmi is not None else None
        if supplies is None:
            return f"{state.host_name(host_id)}: power supplies unknown"
        if supplies < exp.min_power_supplies:
            have = _plural(supplies, "power supply", "power supplies")
            return f"{state.host_name(host_id)}: {have}, needs {exp.min_power_supplies}"
        return None


class VmDependencyChecker(VmChecker):
    type = "vm-dependency"
    placement = False

    def check(self, state: OperationalState, vm: VirtualMachine, exp: Any) -> str | None:
        if not state.vm_running(vm.id):
            return None
        missing = []
        for ref in exp.vms:
            target = state.resolve_vm(ref)
            if target is None:
                missing.append(f"{ref} (no such VM)")
            elif not state.vm_running(target):
                missing.append(state.vm_name(target))
        if missing:
            return f"depends on {', '.join(sorted(missing))}, not running"
        return None

    def host_fit(self, state: OperationalState, vm: VirtualMachine, exp: Any, host_id: str) -> str | None:
        return None


class HighAvailabilityChecker(VmChecker):
    """``ha``: met while the VM runs, or is not wanted up; violated while the host it ran on is away
    (down or unreachable), with what its restart waits for (planner/ha.py)."""

    type = "ha"
    placement = False

    def check(self, state: OperationalState, vm: VirtualMachine, exp: Any) -> str | None:
        from .ha import lost_host, restart_wait, wants_up

        host_id = lost_host(state, vm.id)
        if host_id is None or not wants_up(state, vm.id):
            return None
        waiting = restart_wait(state, vm.id)
        if waiting is not None:
            return waiting[1]
        dyn = state.host_dyn.get(host_id)
        fenced = f", fenced ({dyn.fence.describe()})" if dyn is not None and dyn.fence is not None else ""
        return (f"its host {state.host_name(host_id)} is {state.host_status(host_id).value}{fenced}: it restarts "
                "elsewhere")

    def host_fit(self, state: OperationalState, vm: VirtualMachine, exp: Any, host_id: str) -> str | None:
        return None


# --- disk checkers -------------------------------------------------------------------------------


class DiskChecker(abc.ABC):
    type: ClassVar[str]

    @abc.abstractmethod
    def check(self, state: OperationalState, disk: VirtualStorageDevice, exp: Any) -> str | None:
        """None when the disk's allocations meet the expectation, else the reason."""

    def capability_fit(self, state: OperationalState, disk: VirtualStorageDevice, exp: Any, host_id: str,
                       capability_id: str) -> str | None:
        """Would a new allocation of ``disk`` on this capability meet (or help meet) the expectation."""
        return None


def _where(state: OperationalState, alloc: Any) -> str:
    return f"{state.host_name(alloc.host_id)} {alloc.capability_id}"


class StorageAvailabilityChecker(DiskChecker):
    type = "storage-availability"

    def check(self, state: OperationalState, disk: VirtualStorageDevice, exp: Any) -> str | None:
        allocs = state.allocations(disk.id)
        if exp.up:
            if not allocs:
                return "not allocated on any host"
            if not any(state.host_up(a.host_id) for a in allocs):
                return "every host holding it is down: " + ", ".join(sorted(_where(state, a) for a in allocs))
            return None
        if allocs:
            return "still allocated on " + ", ".join(sorted(_where(state, a) for a in allocs))
        return None

    def capability_fit(self, state: OperationalState, disk: VirtualStorageDevice, exp: Any, host_id: str,
                       capability_id: str) -> str | None:
        return None if exp.up else "the disk is expected down"


def _device(state: OperationalState, alloc: Any) -> tuple[str, str]:
    cap = state.capability(alloc.host_id, alloc.capability_id)
    return (alloc.host_id, cap.device if cap is not None and cap.device else alloc.capability_id)


def redundancy_copies(state: OperationalState, allocs: list[Any], out_of_box: bool) -> int:
    if out_of_box:
        return len({a.host_id for a in allocs})
    mirrors = sum(a.mirrors for a in allocs if isinstance(a, LvmAllocation))
    return len({_device(state, a) for a in allocs}) + mirrors


class StorageRedundancyChecker(DiskChecker):
    type = "storage-redundancy"

    def check(self, state: OperationalState, disk: VirtualStorageDevice, exp: Any) -> str | None:
        allocs = state.allocations(disk.id)
        copies = redundancy_copies(state, allocs, exp.out_of_box)
        if copies >= exp.copies:
            return None
        where = "different hosts" if exp.out_of_box else "different devices"
        hosts = sorted({state.host_name(a.host_id) for a in allocs})
        on = f" ({', '.join(hosts)})" if hosts else ""
        return f"{_plural(copies, 'copy', 'copies')}{on}, needs {exp.copies} on {where}"

    def capability_fit(self, state: OperationalState, disk: VirtualStorageDevice, exp: Any, host_id: str,
                       capability_id: str) -> str | None:
        allocs = state.allocations(disk.id)
        if exp.out_of_box:
            if any(a.host_id == host_id for a in allocs):
                return f"{state.host_name(host_id)}: already holds a copy"
            return None
        cap = state.capability(host_id, capability_id)
        device = (host_id, cap.device if cap is not None and cap.device else capability_id)
        if any(_device(state, a) == device for a in allocs):
            return f"{state.host_name(host_id)} {capability_id}: same device as a copy"
        return None


class NotSameStorageChecker(DiskChecker):
    type = "not-same-storage"

    def _others(
        self, state: OperationalState, disk: VirtualStorageDevice, exp: Any
    ) -> dict[tuple[str, str], list[str]]:
        places: dict[tuple[str, str], list[str]] = {}
        for ref in exp.disks:
            other = state.resolve_disk(ref)
            if other is None or other == disk.id:
                continue
            for alloc in state.allocations(other):
                places.setdefault((alloc.host_id, alloc.capability_id), []).append(state.disk_name(other))
        return places

    def check(self, state: OperationalState, disk: VirtualStorageDevice, exp: Any) -> str | None:
        places = self._others(state, disk, exp)
        clashes = []
        for alloc in state.allocations(disk.id):
            names = places.get((alloc.host_id, alloc.capability_id))
            if names:
                clashes.append(f"shares {_where(state, alloc)} with {', '.join(sorted(set(names)))}")
        return "; ".join(sorted(clashes)) or None

    def capability_fit(self, state: OperationalState, disk: VirtualStorageDevice, exp: Any, host_id: str,
                       capability_id: str) -> str | None:
        names = self._others(state, disk, exp).get((host_id, capability_id))
        if names:
            return f"{state.host_name(host_id)} {capability_id}: holds {', '.join(sorted(set(names)))}"
        return None


class _PerformanceChecker(DiskChecker):
    field: ClassVar[str]
    verb: ClassVar[str]

    def _fit(self, state: OperationalState, exp: Any, host_id: str, capability_id: str) -> str | None:
        cap = state.capability(host_id, capability_id)
        speed = getattr(cap, self.field, None) if cap is not None else None
        where = f"{state.host_name(host_id)} {capability_id}"
        if speed is None:
            return f"{where}: {self.verb} speed unknown"
        if speed < exp.min_mbps:
            return f"{where}: {self.verb}s {speed} MB/s, below {exp.min_mbps}"
        return None

    def check(self, state: OperationalState, disk: VirtualStorageDevice, exp: Any) -> str | None:
        reasons = [r for a in state.allocations(disk.id) if (r := self._fit(state, exp, a.host_id, a.capability_id))]
        return "; ".join(sorted(reasons)) or None

    def capability_fit(self, state: OperationalState, disk: VirtualStorageDevice, exp: Any, host_id: str,
                       capability_id: str) -> str | None:
        return self._fit(state, exp, host_id, capability_id)


class ReadPerformanceChecker(_PerformanceChecker):
    type = "read-performance"
    field = "read_mbps"
    verb = "read"


class WritePerformanceChecker(_PerformanceChecker):
    type = "write-performance"
    field = "write_mbps"
    verb = "write"


class CloneOfChecker(DiskChecker):
    type = "clone-of"

    def check(self, state: OperationalState, disk: VirtualStorageDevice, exp: Any) -> str | None:
        allocs = state.allocations(disk.id)
        if not allocs:
            return None  # not created yet: the allocation step clones it when it is created
        source = state.resolve_disk(exp.disk)
        if source is None:
            return f"the source disk {exp.disk} does not exist"
        dyn = state.disk_dyn.get(disk.id)
        if dyn is None or dyn.cloned_from != source:
            return f"was not created as a copy of {state.disk_name(source)}"
        return None


# --- registry ------------------------------------------------------------------------------------

VM_CHECKERS: dict[str, VmChecker] = {
    c.type: c()
    for c in (
        AvailabilityChecker, NotSameHostChecker, CpuArchitectureChecker, CpuFlagsChecker, CpuClockChecker,
        MemoryClockChecker, CacheSizeChecker, ChassisManufacturerChecker, SystemManufacturerChecker,
        EccMemoryChecker, CoreDedicationChecker, NoMigrationChecker, HostOsChecker, PowerRedundancyChecker,
        VmDependencyChecker, HighAvailabilityChecker,
    )
}

DISK_CHECKERS: dict[str, DiskChecker] = {
    c.type: c()
    for c in (
        StorageAvailabilityChecker, StorageRedundancyChecker, NotSameStorageChecker, ReadPerformanceChecker,
        WritePerformanceChecker, CloneOfChecker,
    )
}


class UncheckableExpectation(ValueError):
    """An expectation type the planner has no checker for: refused when it is added."""


def ensure_checkable(expectation: Expectation) -> None:
    """Raise UncheckableExpectation unless the planner checks this expectation's type."""
    kind = getattr(expectation, "type", None)
    if kind in VM_EXPECTATION_TYPES and isinstance(expectation, VM_EXPECTATION_TYPES[kind]):
        if kind in VM_CHECKERS:
            return
    elif kind in DISK_EXPECTATION_TYPES and isinstance(expectation, DISK_EXPECTATION_TYPES[kind]):  # noqa: SIM102
        if kind in DISK_CHECKERS:
            return
    raise UncheckableExpectation(
        f"{kind!r}: the planner cannot check this expectation type, so it is refused rather than ignored"
    )


# --- evaluation ----------------------------------------------------------------------------------


def check_vm_expectation(state: OperationalState, vm: VirtualMachine, exp: Any) -> Verdict:
    reason = VM_CHECKERS[exp.type].check(state, vm, exp)
    return SATISFIED if reason is None else Violated(reason)


def check_disk_expectation(state: OperationalState, disk: VirtualStorageDevice, exp: Any) -> Verdict:
    reason = DISK_CHECKERS[exp.type].check(state, disk, exp)
    return SATISFIED if reason is None else Violated(reason)


def vm_violations(state: OperationalState, vm_id: str) -> list[Violation]:
    if vm_id in state.static.vms_only_up and state.vm_running(vm_id):
        return []  # only "up", and up: nothing to check (the common case, 10k times at 1,000 hosts)
    vm = state.vms.get(vm_id)
    if vm is None:
        return []
    out = []
    for index, exp in enumerate(vm.expectations):
        reason = VM_CHECKERS[exp.type].check(state, vm, exp)
        if reason is not None:
            out.append(Violation("vm", vm.id, index, exp.type, exp.level, reason, vm.name))
    return out


def disk_violations(state: OperationalState, disk_id: str) -> list[Violation]:
    disk = state.disks.get(disk_id)
    if disk is None:
        return []
    out = []
    for index, exp in enumerate(disk.expectations):
        reason = DISK_CHECKERS[exp.type].check(state, disk, exp)
        if reason is not None:
            out.append(Violation("disk", disk.id, index, exp.type, exp.level, reason, disk.name))
    return out


def vms_to_check(state: OperationalState) -> set[str]:
    """The VMs whose expectations may be violated: all but those that only expect to be up and run, and
    those that only expect to be down (or expect nothing) and are placed nowhere. Found from the
    state's indexes (VMs running per host) with set operations, not by checking each VM: the answer
    equals checking every VM (tests/unit/planner/test_indexes.py compares them on random fleets)."""
    static = state.static
    out = set(static.vms_expecting_more) | state.idle_up_vms()
    if static.vms_only_down:
        placed: set[str] = set()
        for _, vms in state.host_vms.pairs():
            placed |= vms
        out |= static.vms_only_down & placed
    return out


def all_violations(state: OperationalState) -> list[Violation]:
    out: list[Violation] = []
    for vm_id in sorted(vms_to_check(state)):
        out.extend(vm_violations(state, vm_id))
    for disk_id in state.static.disks_expecting:  # a disk without expectations violates none
        out.extend(disk_violations(state, disk_id))
    return out


# --- placement -----------------------------------------------------------------------------------


FLAP_DROPS = 3  # connection losses within FLAP_WINDOW that make a host "flapping"
FLAP_WINDOW = dt.timedelta(minutes=10)
FLAP_CALM = dt.timedelta(minutes=5)  # up this long since its last loss, it may take guests again


def flap_calm_at(state: OperationalState, host_id: str) -> dt.datetime | None:
    """When a flapping host may take guests again; None if it is not flapping.

    A host that keeps losing its connection would pull guests back only to lose them again: plans
    would move VMs to it and away from it in turn. Until it has stayed up for FLAP_CALM, nothing new
    is placed there."""
    recent = recent_drops(state, host_id)
    if len(recent) < FLAP_DROPS:
        return None
    calm_at = max(recent) + FLAP_CALM
    return calm_at if state.now < calm_at else None


def recent_drops(state: OperationalState, host_id: str) -> list[dt.datetime]:
    dyn = state.host_dyn.get(host_id)
    return [t for t in dyn.drops if state.now - t <= FLAP_WINDOW] if dyn is not None else []


def stale_facts(capabilities: Any, exclude: tuple[str, ...] = ()) -> str | None:
    """Why a host's facts cannot be trusted for new placements (a section discovery could not read:
    its last good values are kept, but they may be out of date), or None."""
    stale = [s for s in capabilities.stale if s.section not in exclude]
    if not stale:
        return None
    first = min(s.since for s in stale)
    return (f"facts not current ({', '.join(s.section for s in stale)} not read since {first:%H:%M:%S}: "
            f"{stale[0].reason[:160]}); takes no new guests until discovery reads them again")


def host_usable(state: OperationalState, host_id: str, today: dt.date | None = None) -> str | None:
    """Why nothing new may be placed on this host (down, maintenance, end of life, locked), or None."""
    host = state.hosts.get(host_id)
    if host is None:
        return f"{host_id[:8]}: no such host"
    name = host.name
    status = state.host_status(host_id)
    if status is not HostStatus.up:
        return f"{name}: is {status.value}"
    if host.recycling:
        return f"{name}: in maintenance (being recycled)"
    today = today or state.now.date()
    if host.end_of_life is not None and host.end_of_life < today:
        return f"{name}: past its end of life ({host.end_of_life.isoformat()})"
    if host.capabilities is None:
        return f"{name}: not discovered yet"
    stale = stale_facts(host.capabilities, exclude=("hypervisor",))
    if stale is not None:
        return f"{name}: {stale}"
    calm_at = flap_calm_at(state, host_id)
    if calm_at is not None:
        return (
            f"{name}: flapping (lost {len(recent_drops(state, host_id))} times "
            f"in {int(FLAP_WINDOW.total_seconds() // 60)} min); "
            f"takes guests again from {calm_at:%H:%M:%S} if it stays up"
        )
    if state.locked("host", host_id):
        return f"{name}: held by another plan"
    return None


def capacity_rejection(state: OperationalState, vm: VirtualMachine, host_id: str,
                       memory: int | None = None) -> str | None:
    """Hard facts that keep a VM off a host: usability, hypervisor, architecture, memory, CPUs.

    Memory: what a placed VM holds (a migration carries it), else its maximum; ``memory`` asks for a
    start with that much instead (a ballooned start, between its minimum and maximum)."""
    unusable = host_usable(state, host_id)
    if unusable is not None:
        return unusable
    name = state.host_name(host_id)
    caps = state.hosts[host_id].capabilities
    if caps is None:  # host_usable said so already; for the type checker
        return f"{name}: not discovered yet"
    stale = stale_facts(caps) if caps.stale_section("hypervisor") is not None else None
    if stale is not None:
        return f"{name}: {stale}"
    hyper = caps.hypervisor
    if not hyper.kvm and not hyper.domain_types:
        return f"{name}: no usable hypervisor" + (f" ({hyper.reason})" if hyper.reason else "")
    if hyper.guest_arches and vm.architecture not in hyper.guest_arches:
        return f"{name}: cannot run {vm.architecture} guests"
    if vm.cpus > state.cpu_count(host_id):
        return f"{name}: {_plural(state.cpu_count(host_id), 'CPU')}, the VM has {vm.cpus} vCPUs"
    already_here = vm.id in state.host_vms.get(host_id, frozenset())
    held = state.vm_reserved(vm.id) if vm.id in state.vms else vm_memory(vm)
    need = memory if memory is not None else held
    free = state.free_memory(host_id) + (held if already_here else 0)
    if free < need:
        return f"{name}: {format_size(max(free, 0))} free memory, needs {format_size(need)}"
    return None


def placement_rejections(state: OperationalState, vm: VirtualMachine, host_id: str,
                         *, capacity: bool = True) -> list[Rejection]:
    """Every reason against running ``vm`` on ``host_id``: capacity, its own expectations, and the
    expectations of VMs already there (not-same-host naming it, core dedication)."""
    out: list[Rejection] = []
    if capacity:
        reason = capacity_rejection(state, vm, host_id)
        if reason is not None:
            out.append(Rejection("capacity", None, reason))
    for exp in vm.expectations:
        checker = VM_CHECKERS[exp.type]
        if checker.placement or exp.type == "availability":
            reason = checker.host_fit(state, vm, exp, host_id)
            if reason is not None:
                out.append(Rejection(exp.type, exp.level, reason))
    here = state.host_vms.get(host_id, frozenset())
    for other_id in state.static.vm_referrers.get(vm.id, ()):
        if other_id not in here or other_id == vm.id:
            continue
        other = state.vms[other_id]
        for exp in other.expectations:
            if exp.type == "not-same-host" and vm.id in {state.resolve_vm(r) for r in exp.vms}:
                out.append(Rejection("not-same-host", exp.level,
                                     f"{state.host_name(host_id)}: runs {other.name}, which must not share a host "
                                     f"with {vm.name}"))
    if vm.id not in here:
        cores = state.core_count(host_id)
        used = state.vcpus_used.get(host_id, 0) + vm.cpus
        if used > cores:
            for other_id in sorted(here):
                other_vm = state.vms.get(other_id)
                if other_vm is None:
                    continue
                for exp in other_vm.expectations:
                    if exp.type == "core-dedication":
                        out.append(Rejection("core-dedication", exp.level,
                                             f"{state.host_name(host_id)}: {other_vm.name} has dedicated cores "
                                             f"({_plural(used, 'vCPU')} on "
                                             f"{_plural(cores, 'core')}{_threads(state, host_id)})"))
    return out


def hard_fit(rejections: Iterable[Rejection]) -> bool:
    return not any(r.hard for r in rejections)


def soft_penalty_levels(rejections: Iterable[Rejection]) -> list[Level]:
    return [r.level for r in rejections if r.level is not None and r.level is not Level.dealbreaker]


def allocation_rejections(state: OperationalState, disk: VirtualStorageDevice, host_id: str,
                          capability_id: str, size: int | None = None) -> list[Rejection]:
    """Every reason against a new allocation of ``disk`` on this capability."""
    out: list[Rejection] = []
    unusable = host_usable(state, host_id)
    cap = state.capability(host_id, capability_id)
    if unusable is not None:
        out.append(Rejection("capacity", None, unusable))
    elif cap is None:
        out.append(Rejection("capacity", None, f"{state.host_name(host_id)}: no storage {capability_id}"))
    else:
        need = disk.size if size is None else size
        free = state.free_storage(host_id, capability_id)
        where = f"{state.host_name(host_id)} {capability_id}"
        refused = _name_refusal(disk, cap)
        if refused is not None:  # a name a host printed, or a disk name, that no command of kerub-tui's carries
            out.append(Rejection("capacity", None, f"{where}: {refused}"))
        if free < need:
            out.append(Rejection("capacity", None,
                                 f"{where}: {format_size(max(free, 0))} free, needs {format_size(need)}"))
        failing = state.failing_device(host_id, capability_id)
        if failing is not None:  # never new data on a failing disk, whichever PV LVM would pick
            out.append(Rejection("capacity", None, f"{where}: {failing} is failing"))
        missing_tool = _missing_tool(state, host_id, cap.technology)
        if missing_tool:
            out.append(Rejection("capacity", None, f"{where}: {missing_tool} is not installed"))
        if any(a.host_id == host_id and a.capability_id == capability_id for a in state.allocations(disk.id)):
            out.append(Rejection("capacity", None, f"{where}: already holds this disk"))
    for exp in disk.expectations:
        reason = DISK_CHECKERS[exp.type].capability_fit(state, disk, exp, host_id, capability_id)
        if reason is not None:
            out.append(Rejection(exp.type, exp.level, reason))
    for other_id in state.static.disk_referrers.get(disk.id, ()):
        other = state.disks.get(other_id)
        if other is None:
            continue
        for exp in other.expectations:
            if (
                exp.type == "not-same-storage"
                and disk.id in {state.resolve_disk(r) for r in exp.disks}
                and any(a.host_id == host_id and a.capability_id == capability_id for a in state.allocations(other_id))
            ):
                out.append(Rejection("not-same-storage", exp.level,
                                     f"{state.host_name(host_id)} {capability_id}: holds {other.name}, which "
                                     f"must not share storage with {disk.name}"))
    return out


def _name_refusal(disk: VirtualStorageDevice, cap: Any) -> str | None:
    from ..hosts.storage_names import new_allocation_refusal
    from .steps.storage import new_allocation_name

    return new_allocation_refusal(cap.technology, cap.name, new_allocation_name(disk, cap))


# The tool each storage technology needs on the host, as discovery names it in capabilities.tools.
_TECHNOLOGY_TOOL = {
    StorageTechnology.lvm: "lvm",
    StorageTechnology.file: "qemu-img",
    StorageTechnology.zfs: "zfs",
    StorageTechnology.gvinum: "gvinum",
}


def _missing_tool(state: OperationalState, host_id: str, technology: StorageTechnology) -> str | None:
    caps = _caps(state, host_id)
    tool = _TECHNOLOGY_TOOL[technology]
    # Only a tool discovery looked for and did not find counts as missing.
    if caps is not None and caps.tools.get(tool) is False:
        return tool
    return None


def vm_status_text(state: OperationalState, vm_id: str) -> str:
    host_id, status = state.vm_placement(vm_id)
    if host_id is None:
        return VmStatus.down.value
    return f"{status.value} on {state.host_name(host_id)}"
