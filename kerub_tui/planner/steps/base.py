"""The operations a step runs, the Step base class and its registry, and the helpers every domain shares."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from ...core.models import (
    Cost,
    FileAllocation,
    HostCommand,
    HostConfiguration,
    HostDynamic,
    PlannedStep,
    VirtualMachineDynamic,
    VirtualStorageDeviceDynamic,
    VmStatus,
)
from ..state import OperationalState, Reservation

PEER_KEY = "/root/.ssh/kerub_peer_ed25519"  # the key a host uses to reach its peers (copies, migration)


PEER_KNOWN_HOSTS = "/root/.ssh/kerub_known_hosts"  # the peers' host keys, as the controller accepted them


NFS_MOUNT_ROOT = "/var/lib/kerub/nfs"


STOP_TIMEOUT_SECONDS = 120


@dataclass(frozen=True, slots=True)
class ShellOp:
    host_id: str
    command: str
    privileged: bool = True
    # what the command reads on its standard input, made when it runs (a cloud-init seed): never
    # part of the command line, so never in the plan or the audit log
    input: Callable[[], bytes] | None = None
    # the bytes the command copies, when its standard error carries GNU dd's status=progress reports:
    # the step's progress, shown while it runs
    progress_total: int | None = None
    # its standard input is the secret the step makes when it runs (Step.makes_secret): the executor gives it,
    # no plan, display or audit entry holds it
    secret: bool = False


@dataclass(frozen=True, slots=True)
class LibvirtOp:
    """A libvirt RPC through the host's tunnel: ``op`` with keyword ``args``; ``display`` for the admin."""

    host_id: str
    op: str
    args: tuple[tuple[str, Any], ...]
    display: str
    # the host tells how far it got while it runs (a migration's job statistics): the step's progress,
    # shown while it runs (the executor passes the host operations an ``on_progress``)
    progress: bool = False

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


@dataclass(frozen=True, slots=True)
class ControllerOp:
    """Work the controller's own process does for a host (``action``: "wake", the magic packet or
    ipmitool sent from the controller when no host is up to send it); ``display`` for the admin."""

    host_id: str
    action: str
    display: str


Operation = ShellOp | LibvirtOp | DeferredShellOp | ControllerOp


def _libvirt(host_id: str, op: str, display: str, *, progress: bool = False, **args: Any) -> LibvirtOp:
    return LibvirtOp(host_id, op, tuple(sorted(args.items())), display, progress)


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

    def deletes_data(self) -> bool:
        """Whether this step destroys data on a host (an LV, an image, a seed removed): an auto-approve
        policy covers such a step only when it says so (AutoApprovePolicy.deletes)."""
        return False

    # A step that makes a secret when it runs, never when it is planned (plans are shown and stored): an iSCSI
    # target's CHAP password. The executor makes it, records it before the step's commands run, gives it to
    # the operations marked ``ShellOp.secret`` on their standard input, and writes the documents from
    # ``keyed``: the prediction (whose ``take`` holds the REDACTED marker, a secret to be made) with it.
    makes_secret: ClassVar[bool] = False

    def keyed(self, state: OperationalState, secret: Any) -> OperationalState:
        """``state`` (this step's prediction) with the secret it made (a SecretStr) where it goes."""
        return state

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
            elif isinstance(op, ControllerOp):
                out.append(HostCommand(host_id=op.host_id, command=f"controller: {op.display}", privileged=False))
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
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    # a parameter added later with a default may be missing from a plan stored before it existed
    if not required <= set(planned.params) <= names:
        raise UnknownStep(f"step {planned.type}: parameters {sorted(planned.params)} do not match {sorted(names)}")
    return cls(**planned.params)


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
        base.update(host_id=None, spice_address=None, spice_port=None, vnc_address=None, vnc_port=None,
                    memory_used=None, cpu_percent=None, memory_given=None)
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
    """A local allocation, an NFS mount of the disk's export, or a share qemu reads itself."""
    if any(a.host_id == host_id for a in state.allocations(disk_id)):
        return True
    config = state.host_config.get(host_id)
    if config is not None and any(m.disk_id == disk_id for m in config.mounts):
        return True
    return remote_share(state, disk_id, host_id) is not None


def remote_share(state: OperationalState, disk_id: str, host_id: str) -> tuple[str, Any] | None:
    """How ``host_id``, with no copy of the disk, reads it over the network with qemu's own client (issue 16):
    ("iSCSI", the allocation) where another host that is up shares the disk's live storage as an iSCSI
    target, ("NFS", the allocation) where it exports the directory of the disk's file to ``host_id`` (or to
    every client); None otherwise."""
    import posixpath

    if any(a.host_id == host_id for a in state.allocations(disk_id)):
        return None
    for alloc in sorted(state.allocations(disk_id), key=lambda a: (a.host_id, a.capability_id)):
        if alloc.copied_at is not None or not state.host_up(alloc.host_id):
            continue  # an older copy taken for redundancy is never read as the disk; a host down serves nothing
        config = state.host_config.get(alloc.host_id)
        if config is None:
            continue
        reader = state.hosts[host_id].address if host_id in state.hosts else None
        if any(t.disk_id == disk_id and t.lun_path == alloc.path and (not t.initiators or reader in t.initiators)
               and (t.keyed or _reads_now(state, disk_id, host_id)) for t in config.iscsi_targets):
            return "iSCSI", alloc
        if isinstance(alloc, FileAllocation) and any(
                e.path == posixpath.dirname(alloc.path) and e.clients in ("*", reader) for e in config.exports):
            return "NFS", alloc
    return None


def _reads_now(state: OperationalState, disk_id: str, host_id: str) -> bool:
    """Whether a VM using the disk runs on the host now: it logged in to its target already (a target whose
    CHAP secret kerub-tui lost serves it; a new reader waits for the target to be re-keyed)."""
    return any(state.vm_host(v) == host_id for v in state.disk_users(disk_id))


def unkeyed_target(state: OperationalState, disk_id: str, host_id: str) -> Any | None:
    """(the sharing host's id, the target) of an iSCSI target of the disk's live storage that would let the host
    log in but whose CHAP secret kerub-tui does not know; None without one."""
    reader = state.hosts[host_id].address if host_id in state.hosts else None
    for alloc in state.allocations(disk_id):
        config = state.host_config.get(alloc.host_id)
        if alloc.copied_at is not None or config is None or alloc.host_id == host_id:
            continue
        for t in config.iscsi_targets:
            if (t.disk_id == disk_id and t.lun_path == alloc.path and not t.keyed
                    and (not t.initiators or reader in t.initiators)):
                return alloc.host_id, t
    return None


def iscsi_readings(state: OperationalState, vm_id: str, host_id: str) -> list[tuple[str, Any]]:
    """(the sharing host's id, the target) of each CHAP-guarded iSCSI target the VM's disks are read over from
    ``host_id``: those whose password the host needs in a libvirt secret before the domain runs there."""
    vm = state.vms.get(vm_id)
    out: list[tuple[str, Any]] = []
    for link in vm.disks if vm is not None else []:
        found = remote_share(state, link.disk_id, host_id)
        if found is None or found[0] != "iSCSI":
            continue
        served = found[1]
        target = next((t for t in state.host_config[served.host_id].iscsi_targets
                       if t.disk_id == link.disk_id and t.lun_path == served.path), None)
        if target is not None and target.chap_user is not None and (served.host_id, target) not in out:
            out.append((served.host_id, target))
    return out


def disks_missing_reason(state: OperationalState, host_id: str, missing: list[str]) -> str:
    """Why the host cannot reach these disks of a VM (vm_disks_missing), in one line."""
    unkeyed = [(d, found) for d in missing if (found := unkeyed_target(state, d, host_id)) is not None]
    if unkeyed:
        disk_id, (server, target) = unkeyed[0]
        return (f"disk {state.disk_name(disk_id)} is shared by {state.host_name(server)} over iSCSI target "
                f"{target.tid}, whose CHAP secret kerub-tui does not know: it is re-keyed before "
                f"{state.host_name(host_id)} logs in")
    return f"{state.host_name(host_id)} has no copy of disk " + ", ".join(state.disk_name(d) for d in missing)


def iscsi_secret_ops(state: OperationalState, vm_id: str, host_id: str) -> list[Operation]:
    """The libvirt secrets the host needs before the VM's domain runs there: the CHAP password of each target
    its disks are read over, defined (or set again) on the host; the executor fills in the value when it runs."""
    from ...hosts import iscsi, kvm

    out: list[Operation] = []
    for server, target in iscsi_readings(state, vm_id, host_id):
        usage = iscsi.secret_usage(server, target.iqn)
        out.append(_libvirt(host_id, "define-iscsi-secret", kvm.describe_secret(usage), usage=usage, server=server,
                            tid=target.tid))
    return out


def with_iscsi_secrets(before: OperationalState, after: OperationalState, vm_id: str,
                       host_id: str) -> OperationalState:
    """``after`` with the host's configuration recording the libvirt secrets ``iscsi_secret_ops`` defines there
    (read in ``before``): a tidy removes each once no VM on the host reads with it."""
    from ...core.models import IscsiSecret
    from ...hosts.iscsi import secret_usage

    readings = iscsi_readings(before, vm_id, host_id)
    if not readings:
        return after
    wanted = {secret_usage(server, t.iqn): IscsiSecret(usage=secret_usage(server, t.iqn), server=server, tid=t.tid)
              for server, t in readings}
    have = _config_list(after, host_id, "iscsi_secrets")
    if all(wanted[s.usage] == s for s in have if s.usage in wanted) and set(wanted) <= {s.usage for s in have}:
        return after
    kept = [s for s in have if s.usage not in wanted]
    return after.apply([_host_config(after, host_id, iscsi_secrets=[*kept, *wanted.values()])])


def remote_disks(state: OperationalState, vm_id: str, host_id: str) -> list[str]:
    """The VM's disks ``host_id`` would read over the network (each priced REMOTE_IO_SECONDS)."""
    vm = state.vms.get(vm_id)
    if vm is None:
        return []
    return [link.disk_id for link in vm.disks if remote_share(state, link.disk_id, host_id) is not None]


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


def names_refused(state: OperationalState, host: str, capability: str, names: Iterable[tuple[str, str]]) -> str | None:
    """Why a step's command cannot carry one of its names (``(kind, name)``, see hosts/storage_names.py), or None."""
    from ...hosts.storage_names import refusal

    for kind, name in names:
        if (why := refusal(kind, name)) is not None:
            return f"{state.host_name(host)} {capability}: {why}"
    return None


def storage_refused(state: OperationalState, disk_id: str, host_id: str, capability: str | None = None) -> str | None:
    """Why no command can name the disk's storage on this host (on this capability): a VG, pool or path a host
    printed, or a disk name LVM reserves, that kerub-tui puts in no command; None where every name will do."""
    from ...hosts.storage_names import allocation_refusal

    for alloc in state.allocations(disk_id):
        if alloc.host_id == host_id and capability in (None, alloc.capability_id):
            why = allocation_refusal(alloc)
            if why is not None:
                return f"{state.host_name(host_id)} {alloc.capability_id}: {why}"
    return None


def _locked_vm(state: OperationalState, vm_id: str) -> str | None:
    return f"{state.vm_name(vm_id)} is held by another plan" if state.locked("vm", vm_id) else None


def _locked_disk(state: OperationalState, disk_id: str) -> str | None:
    return f"disk {state.disk_name(disk_id)} is held by another plan" if state.locked("disk", disk_id) else None


def _config_list(state: OperationalState, host: str, name: str) -> list[Any]:
    config = state.host_config.get(host)
    return list(getattr(config, name)) if config is not None else []
