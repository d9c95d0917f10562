"""Problem detectors: what is wrong although no expectation names it (ARCHITECTURE.md §2).

Every detector looks at one host and what sits on it, so after a step the planner re-detects only the
hosts the step touched. A problem is reported only when a step could act on it (a failing device
with nothing on it is a hardware alert, not a plan): the planner's goal is "no problem left".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from ..core.models import HostStatus, LvmAllocation
from .state import OperationalState

OVERHEAT_CELSIUS = 85.0  # hottest sensor at or above this: move load away
OVERHEAT_RELIEF = 0.25  # predicted relieved once this share of the host's vCPUs has moved off
THIN_POOL_FULL = 0.80  # a thin pool this full gets extended before it stops every thin LV in it
THIN_POOL_GROWTH = 0.25  # extend by this share of its size (at least what brings it under the mark)


@dataclass(frozen=True, order=True, slots=True)
class Problem:
    type: str
    host_id: str
    subject_id: str = ""  # the VM or disk concerned, "" for the host itself
    detail: str = ""  # capability id, export path, mount target, target tid, thin pool "vg/pool"
    reason: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.type, self.host_id, self.subject_id, self.detail)

    def describe(self) -> str:
        return self.reason


Detector = Callable[[OperationalState, str], list[Problem]]

DETECTORS: dict[str, Detector] = {}


def detector(name: str) -> Callable[[Detector], Detector]:
    def register(fn: Detector) -> Detector:
        DETECTORS[name] = fn
        return fn

    return register


def _leaving(state: OperationalState, host_id: str, why: str, vm_type: str, alloc_type: str) -> list[Problem]:
    name = state.host_name(host_id)
    out = [Problem(vm_type, host_id, vm_id, "", f"{state.vm_name(vm_id)} runs on {name}, {why}")
           for vm_id in state.vms_on(host_id)]
    for disk_id in state.disks_on(host_id):
        for alloc in state.allocations(disk_id):
            if alloc.host_id == host_id:
                out.append(Problem(alloc_type, host_id, disk_id, alloc.capability_id,
                                   f"disk {state.disk_name(disk_id)} has storage on {name} "
                                   f"({alloc.capability_id}), {why}"))
    return out


@detector("recycling")
def host_recycling(state: OperationalState, host_id: str) -> list[Problem]:
    host = state.hosts.get(host_id)
    if host is None or not host.recycling:
        return []
    return _leaving(state, host_id, "which is being recycled (maintenance)",
                    "vm-on-recycling-host", "allocation-on-recycling-host")


@detector("end-of-life")
def host_end_of_life(state: OperationalState, host_id: str) -> list[Problem]:
    host = state.hosts.get(host_id)
    today: dt.date = state.now.date()
    if host is None or host.recycling or host.end_of_life is None or host.end_of_life >= today:
        return []
    return _leaving(state, host_id, f"which is past its end of life ({host.end_of_life.isoformat()})",
                    "vm-on-end-of-life-host", "allocation-on-end-of-life-host")


@detector("failing-device")
def failing_device(state: OperationalState, host_id: str) -> list[Problem]:
    dyn = state.host_dyn.get(host_id)
    if dyn is None or not dyn.failing_devices:
        return []
    failing = {d.rsplit("/", 1)[-1] for d in dyn.failing_devices}
    bad_caps = {c.id: c.device for c in state.capabilities(host_id)
                if c.device and c.device.rsplit("/", 1)[-1] in failing}
    out = []
    for disk_id in state.disks_on(host_id):
        for alloc in state.allocations(disk_id):
            if alloc.host_id == host_id and alloc.capability_id in bad_caps:
                out.append(Problem("allocation-on-failing-device", host_id, disk_id, alloc.capability_id,
                                   f"disk {state.disk_name(disk_id)} on {state.host_name(host_id)} sits on failing "
                                   f"device {bad_caps[alloc.capability_id]}"))
    return out


@detector("overheat")
def cpu_overheat(state: OperationalState, host_id: str) -> list[Problem]:
    dyn = state.host_dyn.get(host_id)
    if dyn is None or dyn.cpu_temperature is None or dyn.cpu_temperature < OVERHEAT_CELSIUS:
        return []
    vms = state.vms_on(host_id)
    if not vms:
        return []
    # Temperature cannot be predicted; moving a share of the load away is predicted to relieve it,
    # and the next reading tells (a new reading re-plans).
    baseline = state.static.initial_vcpus.get(host_id, 0)
    if baseline and state.vcpus_used.get(host_id, 0) <= baseline * (1 - OVERHEAT_RELIEF):
        return []
    return [Problem("cpu-overheat", host_id, "", "",
                    f"{state.host_name(host_id)} CPU at {dyn.cpu_temperature:.0f}°C with {len(vms)} VMs: "
                    f"move some load away")]


@detector("thin-pool")
def thin_pool_almost_full(state: OperationalState, host_id: str) -> list[Problem]:
    out = []
    for pool in state.thin_pools(host_id):
        if pool.size_bytes <= 0:
            continue
        used = state.thin_pool_used(host_id, pool.vg, pool.name)
        if used >= pool.size_bytes * THIN_POOL_FULL:
            out.append(Problem("thin-pool-almost-full", host_id, "", f"{pool.vg}/{pool.name}",
                               f"thin pool {pool.vg}/{pool.name} on {state.host_name(host_id)} is "
                               f"{100 * used / pool.size_bytes:.0f}% full"))
    return out


def _disk_used_elsewhere(state: OperationalState, disk_id: str | None, host_id: str) -> bool:
    if disk_id is None:
        return False
    return any((h := state.vm_host(vm_id)) is not None and h != host_id for vm_id in state.disk_users(disk_id))


def _disk_used_here(state: OperationalState, disk_id: str | None, host_id: str) -> bool:
    if disk_id is None:
        return False
    return any(state.vm_host(vm_id) == host_id for vm_id in state.disk_users(disk_id))


@detector("unused-share")
def unused_shares(state: OperationalState, host_id: str) -> list[Problem]:
    config = state.host_config.get(host_id)
    if config is None or not state.host_up(host_id):
        return []
    name = state.host_name(host_id)
    out = []
    for export in sorted(config.exports, key=lambda e: (e.path, e.clients)):
        if not _disk_used_elsewhere(state, export.disk_id, host_id):
            out.append(Problem("unused-export", host_id, export.disk_id or "", export.path,
                               f"{name} exports {export.path}, which no running VM uses"))
    for target in sorted(config.iscsi_targets, key=lambda t: t.tid):
        if not _disk_used_elsewhere(state, target.disk_id, host_id):
            out.append(Problem("unused-iscsi-target", host_id, target.disk_id or "", str(target.tid),
                               f"{name} shares {target.iqn} over iSCSI, which no running VM uses"))
    for mount in sorted(config.mounts, key=lambda m: m.target):
        if not _disk_used_here(state, mount.disk_id, host_id):
            out.append(Problem("unused-mount", host_id, mount.disk_id or "", mount.target,
                               f"{name} mounts {mount.source} on {mount.target}, which no VM there uses"))
    return out


@detector("unused-seed")
def unused_seed(state: OperationalState, host_id: str) -> list[Problem]:
    """A cloud-init seed left on a host that no VM will boot with (its VM deleted, or without
    cloud-init now): it holds the VM's user data, which can hold secrets."""
    from .image_steps import unused_seeds

    if not state.host_up(host_id):
        return []
    name = state.host_name(host_id)
    return [Problem("unused-seed", host_id, seed.vm_id, seed.path,
                    f"{name} keeps the cloud-init seed {seed.path} {why}")
            for seed, why in sorted(unused_seeds(state, host_id), key=lambda item: item[0].path)]


@detector("host-down")
def host_down_with_vms(state: OperationalState, host_id: str) -> list[Problem]:
    status = state.host_status(host_id)
    if status not in (HostStatus.down, HostStatus.unreachable):
        return []
    out = []
    for vm_id in state.vms_on(host_id):
        vm = state.vms.get(vm_id)
        if vm is not None and any(e.type == "availability" and e.up for e in vm.expectations):
            out.append(Problem("vm-lost-with-host", host_id, vm_id, "",
                               f"{vm.name} must run, but its host {state.host_name(host_id)} is {status.value}"))
    return out


@detector("undersized-allocation")
def undersized_allocation(state: OperationalState, host_id: str) -> list[Problem]:
    """A disk grown by the admin whose storage on this host is still the old size."""
    out = []
    for disk_id in state.disks_on(host_id):
        disk = state.disks.get(disk_id)
        if disk is None or disk.image is not None:
            continue  # an image's copy is its file as imported (a qcow2 is smaller than what it holds)
        for alloc in state.allocations(disk_id):
            if alloc.host_id == host_id and alloc.actual_size is not None and alloc.actual_size < disk.size:
                if isinstance(alloc, LvmAllocation) and alloc.mirrors:
                    continue  # a mirror is extended by re-creating it; not planned automatically
                out.append(Problem("undersized-allocation", host_id, disk_id, alloc.capability_id,
                                   f"disk {disk.name} on {state.host_name(host_id)} is {alloc.actual_size} bytes, "
                                   f"the disk is {disk.size}"))
    return out


def host_problems(state: OperationalState, host_id: str) -> list[Problem]:
    out: list[Problem] = []
    for name in sorted(DETECTORS):
        out.extend(DETECTORS[name](state, host_id))
    return sorted(out)


def all_problems(state: OperationalState) -> list[Problem]:
    out: list[Problem] = []
    for host_id in state.host_ids():
        out.extend(host_problems(state, host_id))
    return out
