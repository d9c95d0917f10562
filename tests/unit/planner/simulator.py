"""Simulated hosts for executor tests: each host of a fleet is a :class:`kerub_tui.sim.machine.Machine`,
the demo's simulated host, which really runs the commands the executor sends (lvcreate, qemu-img,
the KSM files, the peer key, copies) and the libvirt operations, against its own state.

A host's state changes by what its commands do, never by the step's prediction (its ``take``): after
a plan, :meth:`FleetSimulator.divergence` compares what the machines have (domains, LVs, thin pools,
image files, KSM) with what the executor wrote into the documents from the steps' predictions, so a
step that predicts wrong is caught. The machines answer the executor's read-backs in the formats the
real tools print, so its verification code and parsers run as they do on hosts. Real host I/O is
tested by the lab suites (tests/integration).
"""

from __future__ import annotations

import random
import re
import shlex
from collections.abc import Callable
from typing import Any

from kerub_tui.core.models import (
    FileAllocation,
    HostConfiguration,
    HostDynamic,
    LvmAllocation,
    VirtualMachineDynamic,
    VirtualStorageDeviceDynamic,
    VmStatus,
)
from kerub_tui.core.sizes import format_size
from kerub_tui.core.store import Store
from kerub_tui.hosts.results import OperationResult, ProgressReport
from kerub_tui.planner.state import OperationalState
from kerub_tui.sim.machine import EXTENT, Machine, Timing, migrate

AT_ONCE = Timing(scale=0.0, connect=0.0, boot=0.0)  # simulated work takes no time in tests

# The one command with standard input the executor sends: a cloud-init seed written to a temporary file,
# then moved into place (hosts/cloudinit.write_seed_command). The machine keeps no such files: this does.
SEED_WRITE = re.compile(r"^mkdir -p -- .* && mv -f -- \S+ (\S+) \|\| ")


class FleetSimulator:
    """The executor's ``HostOperations`` over one simulated machine per host of ``state``, each taking
    up what the state says the host has (its guests, allocations, thin pools, KSM).

    ``fail(host_id, command)`` returning a message makes that command fail with it (exit 1), before
    it reaches the machine; ``log`` lists every (host id, command) sent, libvirt operations as
    ``libvirt OP VM_ID``; ``inputs`` every (command, standard input)."""

    def __init__(self, state: OperationalState,
                 fail: Callable[[str, str], str | None] = lambda host, command: None) -> None:
        self.fail = fail
        self.log: list[tuple[str, str]] = []
        self.inputs: list[tuple[str, bytes]] = []
        self.files: dict[tuple[str, str], bytes] = {}
        self.machines: dict[str, Machine] = {}
        self.names: dict[str, str] = {}
        self.addresses: dict[str, str] = {}
        self.add(state)

    def add(self, state: OperationalState) -> None:
        """Machines for the hosts of ``state`` not simulated yet (a test's fleet grew)."""
        for host_id in sorted(state.hosts):
            host = state.hosts[host_id]
            if host_id in self.machines or host.capabilities is None:
                continue
            machine = Machine(host.name, host.capabilities, timing=AT_ONCE, rng=random.Random(host_id))
            machine.address, machine.peer = host.address, self._machine_at
            config = state.host_config.get(host_id)
            dyn = state.host_dyn.get(host_id)
            machine.restore(host_id, guests=[(state.vms[i], state.vm_dyn[i]) for i in state.vm_dyn if i in state.vms],
                            disks=[state.disk_dyn[d] for d in state.disk_dyn],
                            thin_pools=config.thin_pools if config is not None else [],
                            ksm=dyn.ksm if dyn is not None else None)
            if config is not None:
                from kerub_tui.planner.steps.sharing import ganesha_export_id

                machine.restore_shares({t.tid: (t.iqn, t.lun_path) for t in config.iscsi_targets},
                                       {ganesha_export_id(e.path): e.path for e in config.exports
                                        if e.server == "ganesha"},
                                       [e.path for e in config.exports if e.server == "kernel"],
                                       {t.tid: list(t.initiators) or ["ALL"] for t in config.iscsi_targets},
                                       {t.tid: (t.chap_user, t.chap_secret.get_secret_value())
                                        for t in config.iscsi_targets if t.chap_user and t.chap_secret})
            self.machines[host_id] = machine
            self.names[host_id] = host.name
            self.addresses[host_id] = host.address

    def machine(self, host_id: str) -> Machine:
        return self.machines[host_id]

    def _machine_at(self, address: str) -> Machine | None:
        return next((self.machines[h] for h, a in self.addresses.items() if a == address), None)

    # --- the executor's HostOperations ---------------------------------------------------------------

    async def run(self, host_id: str, command: str, *, privileged: bool = True,
                  input: bytes | None = None, on_stderr: Callable[[bytes], None] | None = None) -> OperationResult:
        self.log.append((host_id, command))
        failure = self.fail(host_id, command)
        if failure is not None:
            return OperationResult(1, "", failure)
        if input is not None:
            self.inputs.append((command, input))
            written = SEED_WRITE.match(command)
            if written is not None:
                self.files[(host_id, shlex.split(written.group(1))[0])] = input
                return OperationResult(0)
            return await self.machines[host_id].shell(command, on_stderr, input)  # a CHAP secret
        return await self.machines[host_id].shell(command, on_stderr)

    async def libvirt(self, host_id: str, op: str, *, on_progress: ProgressReport | None = None,
                      **kwargs: Any) -> OperationResult:
        self.log.append((host_id, f"libvirt {op} {kwargs.get('vm_id', '')}"))
        failure = self.fail(host_id, f"libvirt {op}")
        if failure is not None:
            return OperationResult(1, "", failure)
        if op == "start":
            assert kwargs["xml"].startswith("<domain"), "the executor hands libvirt the domain XML"
            unreachable = self.unreachable_disks(kwargs["xml"], self.addresses.get(host_id, ""))
            if unreachable:  # qemu's own client could not open it: the domain does not start
                return OperationResult(1, "", f"internal error: qemu unexpectedly closed the monitor: {unreachable}")
        if op == "migrate":
            return await migrate(self.machines[host_id], self.machines[kwargs["target_host_id"]],
                                 kwargs["vm_id"], bool(kwargs.get("copy_storage")), on_progress)
        return await self.machines[host_id].libvirt(op, **kwargs)

    def unreachable_disks(self, xml: str, reader: str = "") -> str:
        """What a domain's network disks (qemu's iSCSI and NFS clients) would not find on the simulated hosts."""
        import xml.etree.ElementTree as ET

        by_address = {address: self.machines[h] for h, address in self.addresses.items()}
        for source in ET.fromstring(xml).iterfind("devices/disk[@type='network']/source"):
            server = by_address.get(source.find("host").get("name", ""))  # type: ignore[union-attr]
            name = source.get("name", "")
            if source.get("protocol") == "iscsi":
                iqn = name.rpartition("/")[0]
                tid = next((t for t, (i, path) in (server.iscsi_targets.items() if server else []) if i == iqn and path),
                           None)
                if server is None or tid is None:
                    return f"iSCSI: no target {iqn} with a LUN at that portal"
                if reader not in server.iscsi_acl.get(tid, []) and "ALL" not in server.iscsi_acl.get(tid, []):
                    return f"iSCSI: target {iqn} does not let {reader} log in"
            elif source.get("protocol") == "nfs":
                directory = name.rpartition("/")[0]
                if server is None or directory not in {*server.ganesha_exports.values(), *server.kernel_exports}:
                    return f"NFS: {directory} is not exported by that server"
                if name not in server.images:
                    return f"NFS: no file {name}"
        return ""

    # --- what the hosts have, against what the documents say -------------------------------------------

    def divergence(self, store: Store) -> list[str]:
        """Where the documents (as the executor left them, from the steps' predictions) and the hosts
        (as their commands left them) disagree, one line each; empty when they agree."""
        out: list[str] = []
        vm_dyns = store.list(VirtualMachineDynamic)
        allocations = [a for d in store.list(VirtualStorageDeviceDynamic) for a in d.allocations]
        for host_id, machine in sorted(self.machines.items()):
            name = self.names[host_id]
            # guests: running or paused, where and how the documents say
            said = {d.id: d.status for d in vm_dyns
                    if d.host_id == host_id and d.status in (VmStatus.up, VmStatus.paused)}
            has = {vm_id: d.vm_status for vm_id, d in machine.domains.items() if d.status != "shut off"}
            for vm_id in sorted(set(said) | set(has)):
                if said.get(vm_id) != has.get(vm_id):
                    out.append(f"{name}: VM {vm_id} is {_status(said.get(vm_id))} in the documents, "
                               f"{_status(has.get(vm_id))} on the host")
            # logical volumes: the allocations on this host, then thin pools, against lvs
            config = store.get(HostConfiguration, host_id)
            lvs = {(a.vg, a.lv): a.actual_size or 0 for a in allocations
                   if isinstance(a, LvmAllocation) and a.host_id == host_id}
            lvs |= {(p.vg, p.name): p.size_bytes for p in (config.thin_pools if config is not None else [])}
            on_host = {(vg, lv): volume.size for vg, volumes in machine.volumes.items()
                       for lv, volume in volumes.items()}
            for key in sorted(set(lvs) | set(on_host)):
                if key not in on_host:
                    out.append(f"{name}: LV {'/'.join(key)} is in the documents, not on the host")
                elif key not in lvs:
                    out.append(f"{name}: LV {'/'.join(key)} is on the host, in no document")
                elif _extents(lvs[key]) != on_host[key]:
                    out.append(f"{name}: LV {'/'.join(key)} is {format_size(lvs[key])} in the documents, "
                               f"{format_size(on_host[key])} on the host")
            # mirrors: the copies each LV keeps
            for a in allocations:
                volume = machine.volumes.get(a.vg, {}).get(a.lv) if isinstance(a, LvmAllocation) else None
                if volume is not None and a.host_id == host_id and a.mirrors != volume.mirrors:
                    out.append(f"{name}: LV {a.vg}/{a.lv} keeps {a.mirrors + 1} copies in the documents, "
                               f"{volume.mirrors + 1} on the host")
            # PVs: each VG's, where the documents list them
            dyn_pvs = (store.get(HostDynamic, host_id) or HostDynamic(id=host_id)).storage_pvs
            for cap_id, pvs in sorted(dyn_pvs.items()):
                said_pvs, has_pvs = sorted(p.name for p in pvs), sorted(machine.pvs.get(cap_id.partition(":")[2], {}))
                if said_pvs != has_pvs:
                    out.append(f"{name}: {cap_id} is on PVs {', '.join(said_pvs)} in the documents, "
                               f"{', '.join(has_pvs)} on the host")
            # image files
            files = {a.path: a for a in allocations if isinstance(a, FileAllocation) and a.host_id == host_id}
            for path in sorted(set(files) | set(machine.images)):
                image = machine.images.get(path)
                if image is None:
                    out.append(f"{name}: file {path} is in the documents, not on the host")
                elif path not in files:
                    out.append(f"{name}: file {path} is on the host, in no document")
                elif files[path].format != image.format:
                    out.append(f"{name}: file {path} is {files[path].format} in the documents, "
                               f"{image.format} on the host")
            # shares: iSCSI targets (tid, IQN, backing store) and NFS exports
            said_targets = {t.tid: (t.iqn, t.lun_path) for t in (config.iscsi_targets if config is not None else [])}
            said_acl = {t.tid: sorted(t.initiators) or ["ALL"] for t in (config.iscsi_targets if config else [])}
            has_acl = {tid: sorted(acl) for tid, acl in machine.iscsi_acl.items()}
            if said_acl != has_acl:
                out.append(f"{name}: iSCSI ACLs {sorted(said_acl.items())} in the documents, "
                           f"{sorted(has_acl.items())} on the host")
            if said_targets != machine.iscsi_targets:
                out.append(f"{name}: iSCSI targets {sorted(said_targets.items())} in the documents, "
                           f"{sorted(machine.iscsi_targets.items())} on the host")
            # CHAP: each target's account and its password, the libvirt secrets a reader holds
            for t in config.iscsi_targets if config is not None else []:
                bound = machine.iscsi_bound.get(t.tid, [])
                if ([t.chap_user] if t.chap_user else []) != bound:
                    out.append(f"{name}: iSCSI target {t.tid} asks for CHAP {t.chap_user} in the documents, "
                               f"{bound} on the host")
                elif t.chap_user and t.chap_secret is not None and \
                        machine.iscsi_accounts.get(t.chap_user) != t.chap_secret.get_secret_value():
                    out.append(f"{name}: iSCSI target {t.tid}'s CHAP secret differs in the documents and on the host")
            said_secrets = sorted(s.usage for s in (config.iscsi_secrets if config is not None else []))
            if said_secrets != sorted(machine.libvirt_secrets):
                out.append(f"{name}: iSCSI secrets {said_secrets} in the documents, {sorted(machine.libvirt_secrets)} "
                           "on the host")
            said_exports = sorted(e.path for e in (config.exports if config is not None else []))
            has_exports = sorted([*machine.ganesha_exports.values(), *machine.kernel_exports])
            if said_exports != has_exports:
                out.append(f"{name}: NFS exports {said_exports} in the documents, {has_exports} on the host")
            # KSM
            dyn = store.get(HostDynamic, host_id)
            if dyn is not None and bool(dyn.ksm.run) != bool(machine.ksm["run"]):
                out.append(f"{name}: KSM is {'on' if dyn.ksm.run else 'off'} in the documents, "
                           f"{'on' if machine.ksm['run'] else 'off'} on the host")
        return out


def _status(status: VmStatus | None) -> str:
    return status.value if status is not None else "not running"


def _extents(size: int) -> int:
    """A size as LVM allocates it: whole extents."""
    return -(-size // EXTENT) * EXTENT if size else EXTENT
