"""Sharing steps: NFS exports and mounts, iSCSI targets.

The six share steps have one shape, written once here: each adds an entry to, or removes one from, a
list of the host's configuration (``HostConfiguration.exports``, ``mounts``, ``iscsi_targets``) and
reserves that share while it runs. An add is blocked while an equal entry is there (or a prerequisite
is missing) and needs a usable host; a remove is blocked while the entry is missing (or something
still uses it) and needs the host up. A subclass says which entry it means, and its words.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ...core.models import IscsiTarget, Mount, NfsExport
from ..checkers import host_usable
from ..state import OperationalState, Reservation
from .base import (
    Operation,
    ShellOp,
    Step,
    Touched,
    _config_list,
    _host_config,
    _host_down,
    step_type,
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
        return host_usable(state, self.host)

    def take(self, state: OperationalState) -> OperationalState:
        return self.with_entries(state, [*self.entries(state), self.entry(state)])

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

    def inverse(self) -> Step:
        return UnexportNfs(self.host, self.path, self.clients, self.server)

    def already(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} already exports {self.path} to {self.clients}"

    def entry(self, state: OperationalState) -> Any:
        return NfsExport(path=self.path, clients=self.clients, options=self.options, server=self.server,
                         disk_id=self.disk)

    def describe(self, state: OperationalState) -> str:
        return f"export {self.path} over NFS from {state.host_name(self.host)} to {self.clients}"

    def effect(self, state: OperationalState) -> str:
        return f"{self.path} is exported by {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import nfs

        if self.server == "ganesha":
            return [ShellOp(self.host, nfs.ganesha_add_export(ganesha_export_id(self.path), self.path,
                                                              clients=self.clients))]
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

    def inverse(self) -> Step:
        return ExportNfs(self.host, self.path, self.clients, server=self.server)

    def missing(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} does not export {self.path} to {self.clients}"

    def in_use(self, state: OperationalState) -> str | None:
        address = state.hosts[self.host].address if self.host in state.hosts else ""
        for other in state.host_ids():
            for mount in _config_list(state, other, "mounts"):
                if mount.source == f"{address}:{self.path}":
                    return f"{state.host_name(other)} still mounts {mount.source}: unmount it first"
        return None

    def describe(self, state: OperationalState) -> str:
        return f"stop exporting {self.path} from {state.host_name(self.host)} to {self.clients}"

    def effect(self, state: OperationalState) -> str:
        return f"{self.path} is no longer exported by {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import nfs

        if self.server == "ganesha":
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

    def inverse(self) -> Step:
        return UnshareIscsi(self.host, self.tid)

    def already(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} already has iSCSI target {self.tid}"

    def entry(self, state: OperationalState) -> Any:
        return IscsiTarget(iqn=self.iqn, tid=self.tid, lun_path=self.lun_path, disk_id=self.disk)

    def describe(self, state: OperationalState) -> str:
        return f"share {self.lun_path} over iSCSI as {self.iqn} (target {self.tid}) on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"{self.iqn} is shared by {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import iscsi

        return [ShellOp(self.host, iscsi.iscsi_share(tid=self.tid, iqn=self.iqn, lun_path=self.lun_path,
                                                     chap_user=None, chap_password_file=None))]


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

    def describe(self, state: OperationalState) -> str:
        return f"remove iSCSI target {self.tid} on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"iSCSI target {self.tid} is gone from {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import iscsi

        return [ShellOp(self.host, iscsi.iscsi_unshare(tid=self.tid))]
