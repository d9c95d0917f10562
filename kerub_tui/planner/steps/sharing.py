"""Sharing steps: NFS exports and mounts, iSCSI targets.

The six share steps have one shape, written once here: each adds an entry to, or removes one from, a
list of the host's configuration (``HostConfiguration.exports``, ``mounts``, ``iscsi_targets``) and
reserves that share while it runs. An add is blocked while an equal entry is there (or a prerequisite
is missing) and needs a usable host; a remove is blocked while the entry is missing (or something
still uses it) and needs the host up. A subclass says which entry it means, and its words.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import SecretStr

from ...core.models import REDACTED, Cost, IscsiTarget, Mount, NfsExport
from ..checkers import host_usable
from ..cost import SHARE_SETUP_SECONDS
from ..state import OperationalState, Reservation
from .base import (
    Operation,
    ShellOp,
    Step,
    Touched,
    _config_list,
    _host_config,
    _host_down,
    _libvirt,
    iscsi_readings,
    remote_share,
    step_type,
    storage_refused,
)


def ganesha_export_id(path: str) -> int:
    """A stable nfs-ganesha export id for a path (ids 1 and 0 are ganesha's own)."""
    import zlib

    return 100 + zlib.crc32(path.encode()) % 60000


# --- the share pattern ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _ShareStep(Step):
    """A step on one entry of a list of the host's configuration."""

    config_field: ClassVar[str] = ""  # the HostConfiguration list: exports, mounts, iscsi_targets
    match_fields: ClassVar[tuple[str, ...]] = ()  # an entry is this step's when these fields are equal
    share: ClassVar[str] = ""  # what it reserves on its host while it runs, formatted with its parameters
    host: str

    def matches(self, entry: Any) -> bool:
        """Whether ``entry`` of the list is the one this step adds or removes."""
        return all(getattr(entry, name) == getattr(self, name) for name in self.match_fields)

    def share_key(self) -> str:
        return self.share.format(**self.params())

    def entries(self, state: OperationalState) -> list[Any]:
        return _config_list(state, self.host, self.config_field)

    def present(self, state: OperationalState) -> bool:
        return any(self.matches(entry) for entry in self.entries(state))

    def with_entries(self, state: OperationalState, entries: list[Any]) -> OperationalState:
        return state.apply([_host_config(state, self.host, **{self.config_field: entries})])

    def reservations(self) -> list[Reservation]:
        return [Reservation("share", f"{self.host}:{self.share_key()}")]


@dataclass(frozen=True)
class _AddShare(_ShareStep):
    """Adds an entry; ``disk`` is the disk it shares, if any."""

    @abc.abstractmethod
    def entry(self, state: OperationalState) -> Any:
        """The configuration entry this step adds."""

    @abc.abstractmethod
    def already(self, state: OperationalState) -> str:
        """Why it is blocked when the entry is there already."""

    def prerequisite(self, state: OperationalState) -> str | None:
        """What is missing elsewhere, checked first (None: nothing)."""
        return None

    def peers(self) -> frozenset[str]:
        """Other hosts the share involves."""
        return frozenset()

    def shared_disk(self) -> str | None:
        disk = getattr(self, "disk", None)
        return disk if isinstance(disk, str) else None

    def blocked(self, state: OperationalState) -> str | None:
        missing = self.prerequisite(state)
        if missing is not None:
            return missing
        if self.present(state):
            return self.already(state)
        disk = self.shared_disk()
        if disk is not None and (refused := storage_refused(state, disk, self.host)):
            return refused  # its path or LV is a name no command of kerub-tui's carries
        return host_usable(state, self.host)

    def take(self, state: OperationalState) -> OperationalState:
        return self.with_entries(state, [*self.entries(state), self.entry(state)])

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=SHARE_SETUP_SECONDS)

    def why(self) -> str:
        """Why the planner shares rather than copies (said after the step's words), or nothing."""
        reason = getattr(self, "reason", "")
        return f": {reason}" if isinstance(reason, str) and reason else ""

    def touched(self) -> Touched:
        disk = self.shared_disk()
        return Touched(disks=frozenset({disk} if disk else ()), hosts=frozenset({self.host}) | self.peers())


@dataclass(frozen=True)
class _RemoveShare(_ShareStep):
    """Removes an entry."""

    @abc.abstractmethod
    def missing(self, state: OperationalState) -> str:
        """Why it is blocked when there is no such entry."""

    def in_use(self, state: OperationalState) -> str | None:
        """Who still uses the entry (None: nobody)."""
        return None

    def deletes_data(self) -> bool:
        # no data goes, but what reads it over the share loses it: a cleanup an auto-approve policy covers
        # only where it covers deletions (issue 16)
        return True

    def blocked(self, state: OperationalState) -> str | None:
        if not self.present(state):
            return self.missing(state)
        return self.in_use(state) or _host_down(state, self.host)

    def take(self, state: OperationalState) -> OperationalState:
        return self.with_entries(state, [e for e in self.entries(state) if not self.matches(e)])


# --- NFS -----------------------------------------------------------------------------------------


@step_type
@dataclass(frozen=True)
class ExportNfs(_AddShare):
    type: ClassVar[str] = "nfs-export"
    config_field: ClassVar[str] = "exports"
    match_fields: ClassVar[tuple[str, ...]] = ("path", "clients")
    share: ClassVar[str] = "{path}"
    host: str
    path: str
    clients: str
    disk: str | None = None
    options: str = "rw,no_root_squash"
    server: Literal["kernel", "ganesha"] = "kernel"  # ganesha: userspace, where there is no kernel nfsd
    reason: str = field(default="", compare=False)  # why the planner shares it (said to the admin)

    def inverse(self) -> Step:
        return UnexportNfs(self.host, self.path, self.clients, self.server)

    def blocked(self, state: OperationalState) -> str | None:
        if (reason := super().blocked(state)) is not None:
            return reason
        for other in self.entries(state):
            if other.path != self.path or other.clients == self.clients:
                continue
            # ganesha keeps one export per directory, never widened behind its back: only for a VM reading this
            # disk over it that moves (a live migration: both hosts read it while it moves, the old one is
            # taken out after, as a tidy), and never beside an export to every client
            if not (self.disk is not None and other.server == self.server and other.clients != "*"
                    and self.clients != "*" and _reads_there(state, self.disk, other.clients)):
                return f"{state.host_name(self.host)} exports {self.path} to {other.clients} already"
        return None

    def _clients(self, state: OperationalState) -> list[str]:
        """Every client of the directory's export once this step is done (one CLIENT line for ganesha)."""
        return sorted({e.clients for e in self.entries(state) if e.path == self.path} | {self.clients})

    def already(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} already exports {self.path} to {self.clients}"

    def entry(self, state: OperationalState) -> Any:
        return NfsExport(path=self.path, clients=self.clients, options=self.options, server=self.server,
                         disk_id=self.disk)

    def describe(self, state: OperationalState) -> str:
        return f"export {self.path} over NFS from {state.host_name(self.host)} to {self.clients}{self.why()}"

    def effect(self, state: OperationalState) -> str:
        return f"{self.path} is exported by {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import nfs

        if self.server == "ganesha":
            return [ShellOp(self.host, nfs.ganesha_add_export(ganesha_export_id(self.path), self.path,
                                                              clients=self._clients(state)))]
        return [ShellOp(self.host, nfs.nfs_export(path=self.path, clients=self.clients, options=self.options))]


@step_type
@dataclass(frozen=True)
class UnexportNfs(_RemoveShare):
    type: ClassVar[str] = "nfs-unexport"
    config_field: ClassVar[str] = "exports"
    match_fields: ClassVar[tuple[str, ...]] = ("path", "clients")
    share: ClassVar[str] = "{path}"
    host: str
    path: str
    clients: str
    server: Literal["kernel", "ganesha"] = "kernel"
    # high availability (issue 16): the export's reader is a host that failed and is fenced, so nothing reads
    # over it any more; the directory is handed to the host its VM restarts on (not part of the identity)
    fenced: bool = field(default=False, compare=False)

    def inverse(self) -> Step:
        return ExportNfs(self.host, self.path, self.clients, server=self.server)

    def deletes_data(self) -> bool:
        return not self.fenced  # its only reader is fenced: no one loses the disk

    def blocked(self, state: OperationalState) -> str | None:
        if self.fenced and not all_fenced(state, self.clients):
            return f"{self.clients} is not a fenced host: its export of {self.path} is not handed on"
        return super().blocked(state)

    def missing(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} does not export {self.path} to {self.clients}"

    def in_use(self, state: OperationalState) -> str | None:
        address = state.hosts[self.host].address if self.host in state.hosts else ""
        for other in state.host_ids():
            for mount in _config_list(state, other, "mounts"):
                if mount.source == f"{address}:{self.path}":
                    return f"{state.host_name(other)} still mounts {mount.source}: unmount it first"
        # who reads a disk over this export and would not over what is left of it (another client's entry)
        after = self.take(state)
        for disk_id in {e.disk_id for e in self.entries(state) if self.matches(e) and e.disk_id is not None}:
            users = sorted(state.vm_name(v) for v in state.disk_users(disk_id)
                           if (h := state.vm_host(v)) is not None and h != self.host and not state.host_fenced(h)
                           and (found := remote_share(state, disk_id, h)) is not None
                           and found[1].host_id == self.host and remote_share(after, disk_id, h) is None)
            if users:
                return f"{', '.join(users)} read disk {state.disk_name(disk_id)} over it: move or stop them first"
        return None

    def describe(self, state: OperationalState) -> str:
        return f"stop exporting {self.path} from {state.host_name(self.host)} to {self.clients}"

    def effect(self, state: OperationalState) -> str:
        return f"{self.path} is no longer exported by {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import nfs

        if self.server == "ganesha":
            left = sorted({e.clients for e in self.entries(state) if e.path == self.path and e.clients != self.clients})
            if left:  # the directory's export stays for its other clients: rewritten without this one
                return [ShellOp(self.host, nfs.ganesha_add_export(ganesha_export_id(self.path), self.path,
                                                                  clients=left))]
            return [ShellOp(self.host, nfs.ganesha_remove_export(ganesha_export_id(self.path)))]
        return [ShellOp(self.host, nfs.nfs_unexport(path=self.path, clients=self.clients))]


@step_type
@dataclass(frozen=True)
class MountNfs(_AddShare):
    type: ClassVar[str] = "nfs-mount"
    config_field: ClassVar[str] = "mounts"
    match_fields: ClassVar[tuple[str, ...]] = ("target",)
    share: ClassVar[str] = "{target}"
    host: str
    server: str  # host id of the NFS server
    remote_path: str
    target: str
    disk: str | None = None

    def peers(self) -> frozenset[str]:
        return frozenset({self.server})

    def inverse(self) -> Step:
        return UnmountNfs(self.host, self.target)

    def _source(self, state: OperationalState) -> str:
        return f"{state.hosts[self.server].address}:{self.remote_path}"

    def prerequisite(self, state: OperationalState) -> str | None:
        if self.server not in state.hosts:
            return f"no host {self.server}"
        if not any(e.path == self.remote_path for e in _config_list(state, self.server, "exports")):
            return f"{state.host_name(self.server)} does not export {self.remote_path}"
        return None

    def already(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} already has a mount on {self.target}"

    def entry(self, state: OperationalState) -> Any:
        return Mount(source=self._source(state), target=self.target, fstype="nfs", disk_id=self.disk)

    def describe(self, state: OperationalState) -> str:
        return f"mount {self._source(state)} on {self.target} on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} sees {self.remote_path} of {state.host_name(self.server)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import nfs

        return [ShellOp(self.host, nfs.nfs_mount(server=state.hosts[self.server].address,
                                                 remote_path=self.remote_path, target=self.target))]


@step_type
@dataclass(frozen=True)
class UnmountNfs(_RemoveShare):
    type: ClassVar[str] = "nfs-unmount"
    config_field: ClassVar[str] = "mounts"
    match_fields: ClassVar[tuple[str, ...]] = ("target",)
    share: ClassVar[str] = "{target}"
    host: str
    target: str

    def missing(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} has no mount on {self.target}"

    def in_use(self, state: OperationalState) -> str | None:
        mount = next(m for m in self.entries(state) if self.matches(m))
        if mount.disk_id is not None:
            users = [state.vm_name(v) for v in state.disk_users(mount.disk_id) if state.vm_host(v) == self.host]
            if users:
                return f"{', '.join(sorted(users))} on {state.host_name(self.host)} use {self.target}"
        return None

    def describe(self, state: OperationalState) -> str:
        return f"unmount {self.target} on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"{self.target} is unmounted on {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import nfs

        return [ShellOp(self.host, nfs.nfs_unmount(target=self.target))]


# --- iSCSI ---------------------------------------------------------------------------------------


@step_type
@dataclass(frozen=True)
class ShareIscsi(_AddShare):
    type: ClassVar[str] = "iscsi-share"
    config_field: ClassVar[str] = "iscsi_targets"
    match_fields: ClassVar[tuple[str, ...]] = ("tid",)
    share: ClassVar[str] = "iscsi:{tid}"
    host: str
    tid: int
    iqn: str
    lun_path: str
    disk: str | None = None
    initiator: str = "ALL"  # the address allowed to log in (the host that reads it); ALL: any
    reason: str = field(default="", compare=False)  # why the planner shares it (said to the admin)

    # CHAP: the target's own account (hosts/iscsi.chap_user) with a secret made when the step runs (never when
    # planned: plans are shown and stored), given to the command on its standard input
    makes_secret: ClassVar[bool] = True

    def inverse(self) -> Step:
        return UnshareIscsi(self.host, self.tid)

    def already(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} already has iSCSI target {self.tid}"

    def chap_user(self) -> str:
        from ...hosts.iscsi import chap_user

        return chap_user(self.iqn)

    def entry(self, state: OperationalState) -> Any:
        # the secret is made when the step runs: the prediction holds the marker of a secret kerub-tui will hold
        return IscsiTarget(iqn=self.iqn, tid=self.tid, lun_path=self.lun_path, disk_id=self.disk,
                           chap_user=self.chap_user(), chap_secret=SecretStr(REDACTED),
                           initiators=[] if self.initiator == "ALL" else [self.initiator])

    def keyed(self, state: OperationalState, secret: Any) -> OperationalState:
        return _with_secret(state, self.host, self.tid, secret)

    def describe(self, state: OperationalState) -> str:
        return (f"share {self.lun_path} over iSCSI as {self.iqn} (target {self.tid}) on "
                f"{state.host_name(self.host)}{self.why()}")

    def effect(self, state: OperationalState) -> str:
        return f"{self.iqn} is shared by {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import iscsi

        return [ShellOp(self.host, iscsi.iscsi_share_chap(self.tid, self.iqn, self.lun_path, self.chap_user(),
                                                          initiator_address=self.initiator), secret=True)]


def _with_secret(state: OperationalState, host: str, tid: int, secret: Any) -> OperationalState:
    """The host's target ``tid`` holding ``secret`` (what a share or a re-key made when it ran)."""
    targets = [t.evolve(chap_secret=secret) if t.tid == tid else t for t in _config_list(state, host, "iscsi_targets")]
    return state.apply([_host_config(state, host, iscsi_targets=targets)])


def _iscsi_target(state: OperationalState, host: str, tid: int) -> IscsiTarget | None:
    return next((t for t in _config_list(state, host, "iscsi_targets") if t.tid == tid), None)


@step_type
@dataclass(frozen=True)
class RekeyIscsi(Step):
    """Gives a target's CHAP account a new secret, made when the step runs: a target whose secret kerub-tui does
    not know (restored from an export, which holds no secret; found changed on the host) before a new reader
    logs in. Never while a VM reads it: its qemu logged in with the old secret, and would be locked out at its
    next login."""

    type: ClassVar[str] = "iscsi-rekey"
    makes_secret: ClassVar[bool] = True
    host: str
    tid: int
    reason: str = field(default="", compare=False)

    def blocked(self, state: OperationalState) -> str | None:
        target = _iscsi_target(state, self.host, self.tid)
        if target is None:
            return f"{state.host_name(self.host)} has no iSCSI target {self.tid}"
        if target.chap_user is None:
            return f"iSCSI target {self.tid} on {state.host_name(self.host)} has no CHAP account"
        if target.chap_secret is not None:
            return f"kerub-tui knows the CHAP secret of iSCSI target {self.tid} on {state.host_name(self.host)}"
        readers = sorted(state.vm_name(v) for v in state.disk_users(target.disk_id or "")
                         if (h := state.vm_host(v)) is not None and h != self.host and not state.host_fenced(h))
        if readers:
            return (f"{', '.join(readers)} read{'s' if len(readers) == 1 else ''} disk "
                    f"{state.disk_name(target.disk_id or '')} over iSCSI target {self.tid} on "
                    f"{state.host_name(self.host)}, logged in with a CHAP secret kerub-tui does not know: a new secret "
                    "would lock it out at its next login (the target is re-keyed once nothing reads it)")
        return _host_down(state, self.host)

    def take(self, state: OperationalState) -> OperationalState:
        return _with_secret(state, self.host, self.tid, SecretStr(REDACTED))

    def keyed(self, state: OperationalState, secret: Any) -> OperationalState:
        return _with_secret(state, self.host, self.tid, secret)

    def reservations(self) -> list[Reservation]:
        return [Reservation("share", f"{self.host}:iscsi:{self.tid}")]

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=SHARE_SETUP_SECONDS)

    def describe(self, state: OperationalState) -> str:
        target = _iscsi_target(state, self.host, self.tid)
        user = f" (CHAP user {target.chap_user})" if target is not None and target.chap_user else ""
        why = f": {self.reason}" if self.reason else ""
        return (f"give iSCSI target {self.tid}{user} on {state.host_name(self.host)} a new CHAP secret, as kerub-tui "
                f"does not know its secret{why}")

    def effect(self, state: OperationalState) -> str:
        return f"kerub-tui knows the CHAP secret of iSCSI target {self.tid} on {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import iscsi

        target = _iscsi_target(state, self.host, self.tid)
        if target is None or target.chap_user is None:
            raise ValueError(f"iSCSI target {self.tid} has no CHAP account to re-key")
        return [ShellOp(self.host, iscsi.iscsi_rekey(self.tid, target.chap_user), secret=True)]


@step_type
@dataclass(frozen=True)
class AllowIscsiInitiator(Step):
    """Lets one more host log in to a target (tgtadm's ACL bind): a VM reading the disk moves there."""

    type: ClassVar[str] = "iscsi-allow"
    host: str
    tid: int
    initiator: str  # the reading host's address
    reason: str = field(default="", compare=False)

    def _target(self, state: OperationalState) -> IscsiTarget | None:
        return next((t for t in _config_list(state, self.host, "iscsi_targets") if t.tid == self.tid), None)

    def blocked(self, state: OperationalState) -> str | None:
        target = self._target(state)
        if target is None:
            return f"{state.host_name(self.host)} has no iSCSI target {self.tid}"
        if not target.initiators or self.initiator in target.initiators:
            return f"{self.initiator} may log in to iSCSI target {self.tid} already"
        return _host_down(state, self.host)

    def take(self, state: OperationalState) -> OperationalState:
        targets = [t.evolve(initiators=[*t.initiators, self.initiator]) if t.tid == self.tid else t
                   for t in _config_list(state, self.host, "iscsi_targets")]
        return state.apply([_host_config(state, self.host, iscsi_targets=targets)])

    def reservations(self) -> list[Reservation]:
        return [Reservation("share", f"{self.host}:iscsi:{self.tid}")]

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=SHARE_SETUP_SECONDS)

    def describe(self, state: OperationalState) -> str:
        reader = _host_named_by_address(state, self.initiator)
        why = f": {self.reason}" if self.reason else ""
        return f"let {reader} log in to iSCSI target {self.tid} on {state.host_name(self.host)}{why}"

    def effect(self, state: OperationalState) -> str:
        return f"{self.initiator} may read iSCSI target {self.tid} of {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import iscsi

        return [ShellOp(self.host, iscsi.iscsi_acl_bind(self.tid, self.initiator))]


def _host_named_by_address(state: OperationalState, address: str) -> str:
    """The name of the host an ACL's address is, or the address where no host has it."""
    return next((state.host_name(h) for h in state.host_ids() if state.hosts[h].address == address), address)


@step_type
@dataclass(frozen=True)
class DisallowIscsiInitiator(Step):
    """Takes a host no VM reads the target from any more out of its ACL (tgtadm's unbind); never the
    last one (an empty ACL would mean any host to kerub-tui's documents: the whole target is removed then)."""

    type: ClassVar[str] = "iscsi-disallow"
    host: str
    tid: int
    initiator: str

    def deletes_data(self) -> bool:
        return True  # like a share's removal: what reads over it loses the disk

    def _target(self, state: OperationalState) -> IscsiTarget | None:
        return next((t for t in _config_list(state, self.host, "iscsi_targets") if t.tid == self.tid), None)

    def blocked(self, state: OperationalState) -> str | None:
        target = self._target(state)
        if target is None:
            return f"{state.host_name(self.host)} has no iSCSI target {self.tid}"
        if self.initiator not in target.initiators:
            return f"iSCSI target {self.tid} does not let {self.initiator} log in"
        if target.initiators == [self.initiator]:
            return f"{self.initiator} is the last host iSCSI target {self.tid} lets in: remove the target instead"
        readers = [h for h in state.host_ids() if state.hosts[h].address == self.initiator]
        users = sorted(state.vm_name(v) for v in state.disk_users(target.disk_id or "")
                       if state.vm_host(v) in readers)
        if users:
            return f"{', '.join(users)} read disk {state.disk_name(target.disk_id or '')} over it from {self.initiator}"
        return _host_down(state, self.host)

    def take(self, state: OperationalState) -> OperationalState:
        targets = [t.evolve(initiators=[i for i in t.initiators if i != self.initiator]) if t.tid == self.tid else t
                   for t in _config_list(state, self.host, "iscsi_targets")]
        return state.apply([_host_config(state, self.host, iscsi_targets=targets)])

    def reservations(self) -> list[Reservation]:
        return [Reservation("share", f"{self.host}:iscsi:{self.tid}")]

    def describe(self, state: OperationalState) -> str:
        reader = _host_named_by_address(state, self.initiator)
        return f"stop letting {reader} log in to iSCSI target {self.tid} on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"{self.initiator} may no longer read iSCSI target {self.tid} of {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import iscsi

        return [ShellOp(self.host, iscsi.iscsi_acl_unbind(self.tid, self.initiator))]


@step_type
@dataclass(frozen=True)
class UnshareIscsi(_RemoveShare):
    type: ClassVar[str] = "iscsi-unshare"
    config_field: ClassVar[str] = "iscsi_targets"
    match_fields: ClassVar[tuple[str, ...]] = ("tid",)
    share: ClassVar[str] = "iscsi:{tid}"
    host: str
    tid: int

    def missing(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} has no iSCSI target {self.tid}"

    def in_use(self, state: OperationalState) -> str | None:
        return _read_remotely(state, self.host, [t.disk_id for t in self.entries(state) if self.matches(t)])

    def describe(self, state: OperationalState) -> str:
        return f"remove iSCSI target {self.tid} on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"iSCSI target {self.tid} is gone from {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import iscsi

        target = _iscsi_target(state, self.host, self.tid)  # its CHAP account goes with it
        return [ShellOp(self.host, iscsi.iscsi_unshare(self.tid, target.chap_user if target is not None else None))]


@step_type
@dataclass(frozen=True)
class RemoveIscsiSecret(Step):
    """Removes a libvirt secret holding an iSCSI target's CHAP password from a host where no VM reads that target
    any more (a VM that reads it there again gets it defined again when it starts or arrives)."""

    type: ClassVar[str] = "iscsi-secret-remove"
    host: str
    usage: str

    def _recorded(self, state: OperationalState) -> bool:
        return any(s.usage == self.usage for s in _config_list(state, self.host, "iscsi_secrets"))

    def blocked(self, state: OperationalState) -> str | None:
        if not self._recorded(state):
            return f"{state.host_name(self.host)} has no iSCSI secret {self.usage}"
        users = sorted(state.vm_name(v) for v in state.vms_on(self.host)
                       if any(_secret_usage(server, t) == self.usage
                              for server, t in iscsi_readings(state, v, self.host)))
        if users:
            return f"{', '.join(users)} on {state.host_name(self.host)} read{'s' if len(users) == 1 else ''} with it"
        return _host_down(state, self.host)

    def take(self, state: OperationalState) -> OperationalState:
        kept = [s for s in _config_list(state, self.host, "iscsi_secrets") if s.usage != self.usage]
        return state.apply([_host_config(state, self.host, iscsi_secrets=kept)])

    def reservations(self) -> list[Reservation]:
        return [Reservation("share", f"{self.host}:secret:{self.usage}")]

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=1.0)

    def describe(self, state: OperationalState) -> str:
        return f"remove the iSCSI CHAP secret {self.usage} from {state.host_name(self.host)}, where no VM reads with it"

    def effect(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} no longer holds the iSCSI secret {self.usage}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import kvm

        return [_libvirt(self.host, "undefine-iscsi-secret", kvm.describe_undefine_secret(self.usage),
                         usage=self.usage)]


def _secret_usage(server: str, target: IscsiTarget) -> str:
    from ...hosts.iscsi import secret_usage

    return secret_usage(server, target.iqn)


def _reads_there(state: OperationalState, disk_id: str, address: str) -> bool:
    """Whether a VM using the disk runs on the up host with this address (the export's current reader; a host
    that went away reads nothing: its export is handed on once it is fenced, never widened)."""
    return any((h := state.vm_host(v)) is not None and h in state.hosts and state.hosts[h].address == address
               and state.host_up(h) for v in state.disk_users(disk_id))


def all_fenced(state: OperationalState, clients: str) -> bool:
    """Whether an export's clients (an address) are hosts that failed and are fenced, every one of them."""
    hosts = [h for h in state.host_ids() if state.hosts[h].address == clients]
    return bool(hosts) and all(state.host_fenced(h) for h in hosts)


def _read_remotely(state: OperationalState, host_id: str, disks: list[str | None]) -> str | None:
    """Who runs elsewhere reading one of these disks over a share of ``host_id`` (None: nobody). A VM lost
    with a fenced host reads nothing: that host is known to run no guest."""
    for disk_id in disks:
        if disk_id is None:
            continue
        users = sorted(state.vm_name(v) for v in state.disk_users(disk_id)
                       if (h := state.vm_host(v)) is not None and h != host_id and not state.host_fenced(h)
                       and (found := remote_share(state, disk_id, h)) is not None and found[1].host_id == host_id)
        if users:
            return f"{', '.join(users)} read disk {state.disk_name(disk_id)} over it: move or stop them first"
    return None
