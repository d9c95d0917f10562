"""Remote disks in plans (issue 16 item 1): a VM on one host reading its disk from another over iSCSI (an LV,
a ZFS or gvinum volume: tgtd's target, qemu's own initiator) or NFS (a file: its directory exported to that
host only, qemu's own NFS client), instead of a copy of the disk.

The planner weighs the two with its one cost model (``cost.SHARE_SETUP_SECONDS``, ``cost.REMOTE_IO_SECONDS``
against the copy's size over the network): the share where it costs less, or where no copy can be made on
the VM's host; the copy otherwise. The step chosen says why (its ``reason``), and ``explain.storage_notes``
says it again for ``vm show``. A share nothing reads any more is an ``unused-*`` problem, removed by a tidy
plan (``problems.unused_shares``). Every name that reaches tgtadm, ganesha or the domain XML is checked by
the builders; a disk whose path or name they refuse is never shared (the refusal says why).
"""

from __future__ import annotations

import dataclasses
import posixpath
from dataclasses import dataclass

from ..core.models import FileAllocation
from ..core.sizes import format_size
from .checkers import host_usable
from .cost import REMOTE_IO_SECONDS, scalar
from .state import OperationalState
from .steps import AllowIscsiInitiator, CopyAllocation, ExportNfs, RekeyIscsi, ShareIscsi, Step, UnexportNfs
from .steps.base import remote_share, storage_refused
from .steps.sharing import _reads_there, all_fenced


@dataclass(frozen=True, slots=True)
class ShareOption:
    """How a host would read a disk it has no copy of: the steps that share it (none where a share is
    there already), the protocol, and the host that serves it."""

    steps: tuple[Step, ...]
    protocol: str  # "iSCSI" or "NFS"
    server: str  # host id


def free_tid(state: OperationalState, host_id: str) -> int:
    """The smallest iSCSI target id no target of the host's configuration has (tgtd's 0 is its own)."""
    config = state.host_config.get(host_id)
    taken = {t.tid for t in (config.iscsi_targets if config is not None else [])}
    return next(tid for tid in range(1, 65536) if tid not in taken)


def _tool_missing(state: OperationalState, host_id: str, tools: tuple[str, ...]) -> str | None:
    """A tool discovery says the host does not have (a tool discovery did not report is not held against it)."""
    host = state.hosts.get(host_id)
    found = host.capabilities.tools if host is not None and host.capabilities is not None else {}
    if tools and all(found.get(tool) is False for tool in tools):
        return f"{state.host_name(host_id)} has no {' nor '.join(tools)}"
    return None


def share_option(state: OperationalState, disk_id: str, host_id: str) -> ShareOption | str:
    """How ``host_id`` could read the disk over the network, or why it cannot (a line for the admin)."""
    disk = state.disks.get(disk_id)
    if disk is None:
        return f"no disk {disk_id}"
    found = remote_share(state, disk_id, host_id)
    if found is not None:
        return ShareOption((), found[0], found[1].host_id)
    if any(a.host_id == host_id for a in state.allocations(disk_id)):
        return f"{state.host_name(host_id)} has disk {disk.name} itself"
    if disk.image is not None:
        return f"disk {disk.name} is an image: its copies are checked, not shared"
    dyn = state.disk_dyn.get(disk_id)
    why: list[str] = []
    for alloc in sorted(state.allocations(disk_id), key=lambda a: (a.host_id, a.capability_id)):
        if alloc.copied_at is not None:
            continue  # an older copy taken for redundancy is never read as the disk
        if (busy := host_usable(state, alloc.host_id)) is not None:
            why.append(busy)
            continue
        if (refused := storage_refused(state, disk_id, alloc.host_id, alloc.capability_id)) is not None:
            # Quoting would keep the shell safe, but a path on storage a host named so (a VG LVM itself
            # refuses, or "mapper": /dev/mapper/...) may not be the disk at all: nothing reads it.
            why.append(f"disk {disk.name} cannot be shared from {refused}")
            continue
        address = state.hosts[alloc.host_id].address
        step: Step
        handed: tuple[Step, ...] = ()
        try:
            if isinstance(alloc, FileAllocation):
                if dyn is not None and dyn.cloned_from is not None:
                    why.append(f"disk {disk.name} is an overlay on {state.host_name(alloc.host_id)}'s image")
                    continue
                if (missing := _tool_missing(state, alloc.host_id, ("ganesha.nfsd", "exportfs"))) is not None:
                    why.append(missing)
                    continue
                tools = state.hosts[alloc.host_id].capabilities.tools  # type: ignore[union-attr]
                directory = posixpath.dirname(alloc.path)
                config = state.host_config.get(alloc.host_id)
                other = next((e for e in (config.exports if config is not None else []) if e.path == directory), None)
                if other is not None and all_fenced(state, other.clients):
                    # its reader failed and is fenced (high availability): the export goes to the new reader
                    handed = (UnexportNfs(alloc.host_id, directory, other.clients, other.server, fenced=True),)
                elif other is not None and not (other.clients != "*" and _reads_there(state, disk_id, other.clients)):
                    # ganesha keeps one export per directory: widened only for the VM reading this disk over it
                    # as it moves (both hosts read while it migrates; the old one is taken out after)
                    why.append(f"{state.host_name(alloc.host_id)} exports {directory} to {other.clients} already")
                    continue
                kernel = tools.get("ganesha.nfsd") is False and tools.get("exportfs")
                # only to the host that reads it: the directory holds other disks' files too
                step = ExportNfs(alloc.host_id, directory, state.hosts[host_id].address, disk=disk_id,
                                 server=other.server if other is not None and not handed else
                                 "kernel" if kernel else "ganesha")
                from ..hosts.nfs import NfsDiskSource

                NfsDiskSource(server=address, export_path=directory, file_name=posixpath.basename(alloc.path),
                              format=alloc.format)
                protocol = "NFS"
            else:
                if (missing := _tool_missing(state, alloc.host_id, ("tgtadm",))) is not None:
                    why.append(missing)
                    continue
                from ..hosts.iscsi import IscsiDiskSource, disk_iqn

                iqn = disk_iqn(disk_id)
                reader = state.hosts[host_id].address
                config = state.host_config.get(alloc.host_id)
                target = next((t for t in (config.iscsi_targets if config is not None else [])
                               if t.disk_id == disk_id and t.lun_path == alloc.path), None)
                if target is not None and not target.keyed:
                    # kerub-tui lost its CHAP secret (an export holds none): a new one first, while nothing reads it
                    step = RekeyIscsi(alloc.host_id, target.tid)
                    if target.initiators and reader not in target.initiators:
                        handed, step = (step,), AllowIscsiInitiator(alloc.host_id, target.tid, reader)
                elif target is not None:  # shared to another host already: this one may log in too
                    step = AllowIscsiInitiator(alloc.host_id, target.tid, reader)
                else:  # only the host that reads it may log in (tgtd's ACL)
                    step = ShareIscsi(alloc.host_id, free_tid(state, alloc.host_id), iqn, alloc.path, disk=disk_id,
                                      initiator=reader)
                IscsiDiskSource(portal=address, iqn=iqn)
                protocol = "iSCSI"
            step.operations(state)  # the builders check every value that reaches the host's shell
        except ValueError as error:
            why.append(f"disk {disk.name} cannot be shared from {state.host_name(alloc.host_id)}: {error}")
            continue
        after, blocked = state, None
        for prior in handed:  # an export handed on from a fenced reader first
            if (blocked := prior.blocked(after)) is not None:
                break
            after = prior.take(after)
        blocked = blocked or step.blocked(after)
        if blocked is not None:
            why.append(blocked)
            continue
        return ShareOption((*handed, step), protocol, alloc.host_id)
    return "; ".join(why) or f"disk {disk.name} has no storage to share"


def share_or_copy(state: OperationalState, vm_id: str, disk_id: str, host_id: str,
                  copy: tuple[list[Step], float] | None) -> tuple[list[Step], float] | None:
    """The cheaper of a copy of the disk on ``host_id`` (``copy``: its steps and penalty, None where none can
    be made) and reading it over a share, by the cost model; the step chosen says why."""
    if copy is not None and not copy[0]:
        return copy  # the host has it: nothing to weigh
    vm_name = state.vm_name(vm_id)
    if state.unfenced_holder(vm_id) is not None:
        return copy  # the VM may still run on a host that is not up: it never gets a second writer over a share
    option = share_option(state, disk_id, host_id)
    if isinstance(option, str):
        return copy
    disk = state.disks[disk_id]
    host = state.host_name(host_id)
    served = f"{option.protocol} from {state.host_name(option.server)}"
    share_cost = _cost(state, option.steps) + REMOTE_IO_SECONDS
    if copy is None:
        return with_reason(option.steps, f"for {vm_name} on {host}, where no copy can be made"), 0.0
    copy_cost = _cost(state, copy[0]) + copy[1]
    if share_cost < copy_cost:
        reason = (f"for {vm_name} on {host}, cheaper than copying {format_size(disk.size)} "
                  f"({share_cost:,.0f} s vs {copy_cost:,.0f} s)")
        return with_reason(option.steps, reason), 0.0
    reason = (f"cheaper than reading it over {served} ({copy_cost:,.0f} s vs {share_cost:,.0f} s)")
    return [dataclasses.replace(s, reason=reason) if isinstance(s, CopyAllocation) else s for s in copy[0]], copy[1]


def with_reason(steps: tuple[Step, ...], reason: str) -> list[Step]:
    return [dataclasses.replace(s, reason=reason)
            if isinstance(s, ShareIscsi | ExportNfs | AllowIscsiInitiator | RekeyIscsi) else s for s in steps]


def _cost(state: OperationalState, steps: tuple[Step, ...] | list[Step]) -> float:
    total = 0.0
    for step in steps:
        total += scalar(step.cost(state))
        state = step.take(state)
    return total


def share_note(state: OperationalState, vm_id: str, disk_id: str, host_id: str) -> str | None:
    """For ``vm show``: how the VM on ``host_id`` reads a disk over the network, and why not a copy."""
    found = remote_share(state, disk_id, host_id)
    if found is None:
        return None
    protocol, alloc = found
    disk = state.disks[disk_id]
    head = f"disk {disk.name} read over {protocol} from {state.host_name(alloc.host_id)}"
    from .factories import bring_disk

    copy = bring_disk(state, disk_id, host_id, move=False)
    if copy is None:
        return f"{head}: no copy can be made on {state.host_name(host_id)}"
    copy_cost = _cost(state, copy[0]) + copy[1]
    if copy_cost > REMOTE_IO_SECONDS:
        return (f"{head}: cheaper than copying {format_size(disk.size)} "
                f"({REMOTE_IO_SECONDS:,.0f} s vs {copy_cost:,.0f} s)")
    return f"{head}: a copy would now cost less ({copy_cost:,.0f} s vs {REMOTE_IO_SECONDS:,.0f} s)"


__all__ = ["ShareOption", "free_tid", "share_note", "share_option", "share_or_copy", "with_reason"]
