"""Problem detectors: what is wrong although no expectation names it (ARCHITECTURE.md §2).

Every detector looks at one host and what sits on it, so after a step the planner re-detects only the
hosts the step touched. A problem is reported only when a step could act on it (a failing device
with nothing on it is a hardware alert, not a plan): the planner's goal is "no problem left".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.models import HostStatus, LvmAllocation
from .state import SNAPSHOT_INDEXES, Layer, OperationalState

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
    """A disk's storage on a capability whose device, or one of whose PVs (a VG of several: issue 18
    item 7), is on a disk whose SMART health failed."""
    dyn = state.host_dyn.get(host_id)
    if dyn is None or not dyn.failing_devices:
        return []
    bad_caps = {c.id: failing for c in state.capabilities(host_id)
                if (failing := state.failing_device(host_id, c.id)) is not None}
    out = []
    for disk_id in state.disks_on(host_id):
        for alloc in state.allocations(disk_id):
            if alloc.host_id == host_id and alloc.capability_id in bad_caps:
                out.append(Problem("allocation-on-failing-device", host_id, disk_id, alloc.capability_id,
                                   f"disk {state.disk_name(disk_id)} on {state.host_name(host_id)} sits on failing "
                                   f"{bad_caps[alloc.capability_id]}"))
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
    away = {state.hosts[h].address for h in state.host_ids() if not state.host_up(h)}
    for export in sorted(config.exports, key=lambda e: (e.path, e.clients)):
        if not _disk_used_elsewhere(state, export.disk_id, host_id):
            out.append(Problem("unused-export", host_id, export.disk_id or "", export.path,
                               f"{name} exports {export.path}, which no running VM uses"))
        elif (export.clients != "*" and export.clients not in away and export.disk_id is not None
              and len([e for e in config.exports if e.path == export.path]) > 1
              and not any((h := state.vm_host(v)) is not None and h in state.hosts
                          and state.hosts[h].address == export.clients for v in state.disk_users(export.disk_id))):
            # still read elsewhere (a VM moved): the client it left is taken out (one that is away: once back)
            out.append(Problem("unused-export-client", host_id, export.disk_id, f"{export.clients} {export.path}",
                               f"{name} exports {export.path} to {export.clients}, where no VM reads it"))
    for target in sorted(config.iscsi_targets, key=lambda t: t.tid):
        if not _disk_used_elsewhere(state, target.disk_id, host_id):
            out.append(Problem("unused-iscsi-target", host_id, target.disk_id or "", str(target.tid),
                               f"{name} shares {target.iqn} over iSCSI, which no running VM uses"))
        elif len(target.initiators) > 1:  # still read: a host its ACL names where no VM reads it any more
            reading = {state.hosts[h].address for v in state.disk_users(target.disk_id or "")
                       if (h := state.vm_host(v)) is not None and h in state.hosts}
            # a host that is away (failed: its VMs restart elsewhere) is taken out once it is back, in a tidy
            # plan of its own, not in the restart (which a restart policy approves only without a deletion)
            away = {state.hosts[h].address for h in state.host_ids() if not state.host_up(h)}
            for address in target.initiators:
                if address not in reading and address not in away:
                    out.append(Problem("unused-iscsi-initiator", host_id, target.disk_id or "",
                                       f"{target.tid} {address}",
                                       f"{name} lets {address} log in to {target.iqn}, where no VM reads it"))
    for mount in sorted(config.mounts, key=lambda m: m.target):
        if not _disk_used_here(state, mount.disk_id, host_id):
            out.append(Problem("unused-mount", host_id, mount.disk_id or "", mount.target,
                               f"{name} mounts {mount.source} on {mount.target}, which no VM there uses"))
    if config.iscsi_secrets:  # a libvirt secret of a target no VM here reads any more (it stopped, or moved)
        from ..hosts.iscsi import secret_usage
        from .steps.base import iscsi_readings

        used = {secret_usage(server, t.iqn) for v in state.vms_on(host_id)
                for server, t in iscsi_readings(state, v, host_id)}
        for secret in sorted(config.iscsi_secrets, key=lambda s: s.usage):
            if secret.usage not in used:
                out.append(Problem("unused-iscsi-secret", host_id, "", secret.usage,
                                   f"{name} holds the CHAP secret {secret.usage} of iSCSI target {secret.tid} on "
                                   f"{state.host_name(secret.server)}, with which no VM there reads"))
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


# The detectors ``quiet`` knows: a detector added without teaching ``quiet`` what it reads makes every
# host be checked (slower, never wrong); tests/unit/planner/test_indexes.py names the ones left out.
QUIET_KNOWS = frozenset({"recycling", "end-of-life", "failing-device", "overheat", "thin-pool", "unused-share",
                         "unused-seed", "host-down", "undersized-allocation"})
_LOST = (HostStatus.down, HostStatus.unreachable)


def quiet(state: OperationalState, host_id: str) -> bool:
    """Whether no detector can report anything on this host, from a few fields: not flagged (recycling,
    end of life), no storage of a disk, no device failing, not hot, not down, nothing configured (shares,
    mounts, thin pools, seeds). Most hosts of a fleet, so the full evaluation skips them."""
    return DETECTORS.keys() == QUIET_KNOWS and _quiet(host_id, state.static.hosts_flagged, state.host_disks.get,
                                                      state.host_dyn.get, state.host_config.get)


def _quiet(host_id: str, flagged: frozenset[str], disks: Any, dyns: Any, configs: Any) -> bool:
    if host_id in flagged or disks(host_id):
        return False
    dyn = dyns(host_id)
    if dyn is not None and (dyn.failing_devices or dyn.status in _LOST or (
            dyn.cpu_temperature is not None and dyn.cpu_temperature >= OVERHEAT_CELSIUS)):
        return False
    config = configs(host_id)
    return config is None or not (config.exports or config.iscsi_targets or config.mounts or config.thin_pools
                                  or config.seeds or config.iscsi_secrets)


def hosts_to_check(state: OperationalState) -> list[str]:
    """The hosts, in order, where a detector may report something (``quiet`` says not). Kept for the
    base of the layers ``quiet`` reads, in the snapshot's static index, and adjusted for the hosts
    changed since: a derived state's answer costs its changes, not the fleet."""
    if DETECTORS.keys() != QUIET_KNOWS:
        return list(state.host_ids())
    layers: tuple[Layer[str, Any], ...] = (state.host_disks, state.host_dyn, state.host_config)
    flagged = state.static.hosts_flagged
    cached = state.static.cache.get("noisy-hosts")
    if cached is None or any(c is not layer._base for c, layer in zip(cached[0], layers, strict=True)):
        disks, dyns, configs = (layer._base.get for layer in layers)
        noisy: frozenset[str] = frozenset(h for h in state.host_ids() if not _quiet(h, flagged, disks, dyns, configs))
        order = {h: n for n, h in enumerate(state.host_ids())}
        cached = (tuple(layer._base for layer in layers), noisy, order)
        state.static.cache["noisy-hosts"] = cached
    _, noisy, order = cached
    changed = {h for layer in layers for h in layer._delta if h in order}
    if changed:
        now = [layer.get for layer in layers]
        noisy = (noisy - changed) | {h for h in changed if not _quiet(h, flagged, *now)}
    return sorted(noisy, key=order.__getitem__)


SNAPSHOT_INDEXES.append(hosts_to_check)


def host_problems(state: OperationalState, host_id: str) -> list[Problem]:
    if quiet(state, host_id):
        return []
    return _detected(state, host_id)


def _detected(state: OperationalState, host_id: str) -> list[Problem]:
    out: list[Problem] = []
    for name in sorted(DETECTORS):
        out.extend(DETECTORS[name](state, host_id))
    return sorted(out)


def all_problems(state: OperationalState) -> list[Problem]:
    out: list[Problem] = []
    for host_id in hosts_to_check(state):
        out.extend(_detected(state, host_id))
    return out
