"""The operational state: an immutable snapshot of everything the planner reasons about.

Built once from the store (or from plain lists of documents in tests and benchmarks), then derived
cheaply: a step's ``take`` returns a new state that shares every unchanged document and index entry
with its parent. Each mapping is a ``Layer``: a shared base dict plus a small private delta, so a
derived state costs O(changes), not O(fleet), which keeps a search over 1,000 hosts fast.

Indexes kept up to date on every derivation: VMs per host, memory and vCPUs reserved per host,
storage consumed per (host, capability) by predicted steps, thin pool usage, disks per host.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Generic, TypeVar, overload

from ..core.models import (
    Document,
    Host,
    HostConfiguration,
    HostDynamic,
    HostStatus,
    LvmAllocation,
    Settings,
    StorageCapability,
    ThinPool,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
    VmStatus,
    utcnow,
)

K = TypeVar("K")
V = TypeVar("V")
_T = TypeVar("_T")

_DELETED: Any = object()
_FLATTEN_AT = 512  # a delta this big is folded into a fresh base (amortised O(1) per change)

GIB = 1 << 30
MIB = 1 << 20

# Statuses in which a VM occupies a host (its memory and vCPUs are taken there).
PLACED_STATUSES = frozenset({VmStatus.up, VmStatus.paused, VmStatus.migrating})


class Layer(Mapping[K, V], Generic[K, V]):
    """An immutable mapping: shared base plus private delta. ``set``/``update`` return new layers."""

    __slots__ = ("_base", "_delta", "_len")

    def __init__(self, base: dict[K, V] | None = None, _delta: dict[K, Any] | None = None,
                 _len: int | None = None) -> None:
        self._base: dict[K, V] = base if base is not None else {}
        self._delta: dict[K, Any] = _delta or {}
        self._len = len(self._base) if _len is None else _len

    def __getitem__(self, key: K) -> V:
        delta = self._delta
        if key in delta:
            value = delta[key]
            if value is _DELETED:
                raise KeyError(key)
            return value  # type: ignore[no-any-return]  # the delta holds V or the _DELETED marker
        return self._base[key]

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, default: V | _T, /) -> V | _T: ...
    def get(self, key: K, default: Any = None, /) -> Any:
        delta = self._delta
        if key in delta:
            value = delta[key]
            return default if value is _DELETED else value
        return self._base.get(key, default)

    def __contains__(self, key: object) -> bool:
        delta = self._delta
        if key in delta:
            return delta[key] is not _DELETED
        return key in self._base

    def __iter__(self) -> Iterator[K]:
        delta = self._delta
        for key in self._base:
            if key not in delta:
                yield key
        for key, value in delta.items():
            if value is not _DELETED:
                yield key

    def __len__(self) -> int:
        return self._len

    def update(self, items: Iterable[tuple[K, V]]) -> Layer[K, V]:
        base = self._base
        delta = dict(self._delta)
        length = self._len
        for key, value in items:
            before = (delta[key] is not _DELETED) if key in delta else (key in base)
            after = value is not _DELETED
            if not after and key not in base:
                delta.pop(key, None)
            else:
                delta[key] = value
            length += int(after) - int(before)
        if len(delta) > _FLATTEN_AT:
            merged = {k: v for k, v in base.items() if k not in delta}
            merged.update((k, v) for k, v in delta.items() if v is not _DELETED)
            return Layer(merged)
        return Layer(base, delta, length)

    def set(self, key: K, value: V) -> Layer[K, V]:
        return self.update(((key, value),))

    def remove(self, key: K) -> Layer[K, V]:
        if key not in self:
            return self
        return self.update(((key, _DELETED),))

    def changed_keys(self) -> list[K]:
        """Keys set or removed since the base: what a derived state changed."""
        return list(self._delta)


# --- reservations ------------------------------------------------------------------------------


@dataclass(frozen=True, order=True, slots=True)
class Reservation:
    """What a step holds while its plan is approved or running.

    Most kinds are exclusive (one plan at a time operates on that VM, disk, host, pool, share...);
    ``memory``, ``cores`` and ``storage`` are capacity taken on a host (``target`` is the host id, or
    ``host_id/capability_id`` for storage), checked by simulating the plans one after another.
    """

    kind: str
    target: str
    amount: int = 0

    CAPACITY: ClassVar[tuple[str, ...]] = ("memory", "cores", "storage")

    @property
    def exclusive(self) -> bool:
        """Exclusive kinds (vm, disk, host, pool, share, ksm, trust): one plan at a time."""
        return self.kind not in self.CAPACITY

    def lock_key(self) -> str:
        return f"{self.kind}:{self.target}"


# --- the state ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StaticIndex:
    """Facts that no step changes: shared by every state derived from one snapshot."""

    vm_by_name: dict[str, str]
    disk_by_name: dict[str, str]
    disk_users: dict[str, tuple[str, ...]]  # disk id -> ids of VMs that attach it
    vm_referrers: dict[str, tuple[str, ...]]  # vm id -> ids of VMs whose expectations name it
    disk_referrers: dict[str, tuple[str, ...]]  # disk id -> ids of disks whose expectations name it
    initial_vm_host: dict[str, str]  # vm id -> host it ran on at snapshot time (for no-migration)
    sorted_host_ids: tuple[str, ...]  # hosts ordered by name, id: the deterministic iteration order
    initial_thin_used: dict[tuple[str, str, str], int]  # thin pool allotments at snapshot time
    initial_vcpus: dict[str, int]  # host id -> vCPUs placed there at snapshot time


@dataclass(frozen=True, slots=True)
class OperationalState:
    now: dt.datetime
    settings: Settings
    hosts: Layer[str, Host]
    host_dyn: Layer[str, HostDynamic]
    host_config: Layer[str, HostConfiguration]
    vms: Layer[str, VirtualMachine]
    vm_dyn: Layer[str, VirtualMachineDynamic]
    disks: Layer[str, VirtualStorageDevice]
    disk_dyn: Layer[str, VirtualStorageDeviceDynamic]
    # indexes
    host_vms: Layer[str, frozenset[str]]
    mem_used: Layer[str, int]
    vcpus_used: Layer[str, int]
    storage_used: Layer[tuple[str, str], int]  # bytes taken by predicted steps on (host, capability)
    thin_used: Layer[tuple[str, str, str], int]  # (host, vg, pool) -> bytes allotted to thin LVs
    host_disks: Layer[str, frozenset[str]]
    static: StaticIndex
    locks: frozenset[str] = frozenset()  # "vm:ID", "disk:ID", "host:ID" held by approved/running plans
    history: Mapping[str, dt.datetime] = field(default_factory=dict)  # host id -> last plan that touched it
    overloaded_since: Mapping[str, dt.datetime] = field(default_factory=dict)

    # --- construction --------------------------------------------------------------------------

    @classmethod
    def from_documents(cls, docs: Iterable[Document], *, now: dt.datetime | None = None,
                       settings: Settings | None = None) -> OperationalState:
        hosts: dict[str, Host] = {}
        host_dyn: dict[str, HostDynamic] = {}
        host_config: dict[str, HostConfiguration] = {}
        vms: dict[str, VirtualMachine] = {}
        vm_dyn: dict[str, VirtualMachineDynamic] = {}
        disks: dict[str, VirtualStorageDevice] = {}
        disk_dyn: dict[str, VirtualStorageDeviceDynamic] = {}
        for doc in docs:
            if isinstance(doc, Host):
                hosts[doc.id] = doc
            elif isinstance(doc, HostDynamic):
                host_dyn[doc.id] = doc
            elif isinstance(doc, HostConfiguration):
                host_config[doc.id] = doc
            elif isinstance(doc, VirtualMachine):
                vms[doc.id] = doc
            elif isinstance(doc, VirtualMachineDynamic):
                vm_dyn[doc.id] = doc
            elif isinstance(doc, VirtualStorageDevice):
                disks[doc.id] = doc
            elif isinstance(doc, VirtualStorageDeviceDynamic):
                disk_dyn[doc.id] = doc
            elif isinstance(doc, Settings):
                settings = settings or doc
        host_vms: dict[str, set[str]] = {h: set() for h in hosts}
        mem_used: dict[str, int] = {h: 0 for h in hosts}
        vcpus_used: dict[str, int] = {h: 0 for h in hosts}
        initial_vm_host: dict[str, str] = {}
        for vm_id in sorted(vm_dyn):
            dyn = vm_dyn[vm_id]
            vm = vms.get(vm_id)
            if vm is None or dyn.host_id is None or dyn.status not in PLACED_STATUSES:
                continue
            host_vms.setdefault(dyn.host_id, set()).add(vm_id)
            mem_used[dyn.host_id] = mem_used.get(dyn.host_id, 0) + vm_memory(vm)
            vcpus_used[dyn.host_id] = vcpus_used.get(dyn.host_id, 0) + vm.cpus
            initial_vm_host[vm_id] = dyn.host_id
        host_disks: dict[str, set[str]] = {h: set() for h in hosts}
        thin_used: dict[tuple[str, str, str], int] = {}
        for disk_id in sorted(disk_dyn):
            size = disks[disk_id].size if disk_id in disks else 0
            for alloc in disk_dyn[disk_id].allocations:
                host_disks.setdefault(alloc.host_id, set()).add(disk_id)
                if isinstance(alloc, LvmAllocation) and alloc.thin_pool:
                    key = (alloc.host_id, alloc.vg, alloc.thin_pool)
                    thin_used[key] = thin_used.get(key, 0) + (alloc.actual_size or size)
        disk_users: dict[str, list[str]] = {}
        vm_referrers: dict[str, list[str]] = {}
        vm_by_name = {vm.name: vm.id for vm in sorted(vms.values(), key=lambda v: v.id)}
        disk_by_name = {d.name: d.id for d in sorted(disks.values(), key=lambda d: d.id)}
        for vm_id in sorted(vms):
            vm = vms[vm_id]
            for link in vm.disks:
                disk_users.setdefault(link.disk_id, []).append(vm_id)
            for exp in vm.expectations:
                for ref in getattr(exp, "vms", ()):
                    target = ref if ref in vms else vm_by_name.get(ref)
                    if target is not None:
                        vm_referrers.setdefault(target, []).append(vm_id)
        disk_referrers: dict[str, list[str]] = {}
        for disk_id in sorted(disks):
            for disk_exp in disks[disk_id].expectations:
                refs = list(getattr(disk_exp, "disks", ())) + ([disk_exp.disk] if hasattr(disk_exp, "disk") else [])
                for ref in refs:
                    target = ref if ref in disks else disk_by_name.get(ref)
                    if target is not None:
                        disk_referrers.setdefault(target, []).append(disk_id)
        static = StaticIndex(
            vm_by_name=vm_by_name,
            disk_by_name=disk_by_name,
            disk_users={k: tuple(v) for k, v in disk_users.items()},
            vm_referrers={k: tuple(sorted(set(v))) for k, v in vm_referrers.items()},
            disk_referrers={k: tuple(sorted(set(v))) for k, v in disk_referrers.items()},
            initial_vm_host=initial_vm_host,
            sorted_host_ids=tuple(h.id for h in sorted(hosts.values(), key=lambda h: (h.name, h.id))),
            initial_thin_used=dict(thin_used),
            initial_vcpus=dict(vcpus_used),
        )
        return cls(
            now=now or utcnow(),
            settings=settings or Settings(),
            hosts=Layer(hosts),
            host_dyn=Layer(host_dyn),
            host_config=Layer(host_config),
            vms=Layer(vms),
            vm_dyn=Layer(vm_dyn),
            disks=Layer(disks),
            disk_dyn=Layer(disk_dyn),
            host_vms=Layer({k: frozenset(v) for k, v in host_vms.items()}),
            mem_used=Layer(mem_used),
            vcpus_used=Layer(vcpus_used),
            storage_used=Layer({}),
            thin_used=Layer(thin_used),
            host_disks=Layer({k: frozenset(v) for k, v in host_disks.items()}),
            static=static,
        )

    @classmethod
    def from_store(cls, store: Any, *, now: dt.datetime | None = None) -> OperationalState:
        """A snapshot of the store's planning documents (plans' commitments are applied by the replanner)."""
        docs: list[Document] = []
        for kind in ("host", "host-dynamic", "host-config", "vm", "vm-dynamic", "disk", "disk-dynamic"):
            docs.extend(store.list(kind))
        settings = store.get("settings", "settings")
        return cls.from_documents(docs, now=now, settings=settings)

    def with_context(self, **changes: Any) -> OperationalState:
        """The same facts with other context (locks, history, overloaded_since, now, settings)."""
        return replace(self, **changes)

    # --- derivation ----------------------------------------------------------------------------

    def apply(self, docs: Iterable[Document]) -> OperationalState:
        """A new state with these documents replacing the ones with the same kind and id."""
        state = self
        changes: dict[str, Any] = {}
        for doc in docs:
            if isinstance(doc, VirtualMachineDynamic):
                state = state._put_vm_dyn(doc, changes)
            elif isinstance(doc, VirtualStorageDeviceDynamic):
                state = state._put_disk_dyn(doc, changes)
            elif isinstance(doc, HostDynamic):
                changes["host_dyn"] = changes.get("host_dyn", state.host_dyn).set(doc.id, doc)
            elif isinstance(doc, HostConfiguration):
                changes["host_config"] = changes.get("host_config", state.host_config).set(doc.id, doc)
            else:
                raise TypeError(f"a step cannot change a {doc.kind} document")
        return replace(self, **changes) if changes else self

    def _put_vm_dyn(self, doc: VirtualMachineDynamic, changes: dict[str, Any]) -> OperationalState:
        vm_dyn = changes.get("vm_dyn", self.vm_dyn)
        host_vms = changes.get("host_vms", self.host_vms)
        mem_used = changes.get("mem_used", self.mem_used)
        vcpus_used = changes.get("vcpus_used", self.vcpus_used)
        vm = self.vms.get(doc.id)
        old = vm_dyn.get(doc.id)
        if vm is not None:
            if old is not None and old.host_id is not None and old.status in PLACED_STATUSES:
                h = old.host_id
                host_vms = host_vms.set(h, host_vms.get(h, frozenset()) - {doc.id})
                mem_used = mem_used.set(h, mem_used.get(h, 0) - vm_memory(vm))
                vcpus_used = vcpus_used.set(h, vcpus_used.get(h, 0) - vm.cpus)
            if doc.host_id is not None and doc.status in PLACED_STATUSES:
                h = doc.host_id
                host_vms = host_vms.set(h, host_vms.get(h, frozenset()) | {doc.id})
                mem_used = mem_used.set(h, mem_used.get(h, 0) + vm_memory(vm))
                vcpus_used = vcpus_used.set(h, vcpus_used.get(h, 0) + vm.cpus)
        changes.update(vm_dyn=vm_dyn.set(doc.id, doc), host_vms=host_vms, mem_used=mem_used,
                       vcpus_used=vcpus_used)
        return self

    def _put_disk_dyn(self, doc: VirtualStorageDeviceDynamic, changes: dict[str, Any]) -> OperationalState:
        disk_dyn = changes.get("disk_dyn", self.disk_dyn)
        host_disks = changes.get("host_disks", self.host_disks)
        storage_used = changes.get("storage_used", self.storage_used)
        thin_used = changes.get("thin_used", self.thin_used)
        disk = self.disks.get(doc.id)
        size = disk.size if disk is not None else 0
        old = disk_dyn.get(doc.id)
        old_allocs = list(old.allocations) if old is not None else []
        new_allocs = list(doc.allocations)
        removed = [a for a in old_allocs if a not in new_allocs]
        added = [a for a in new_allocs if a not in old_allocs]
        for alloc, sign in [(a, -1) for a in removed] + [(a, 1) for a in added]:
            used = alloc.actual_size or size
            if isinstance(alloc, LvmAllocation) and alloc.thin_pool:
                key3 = (alloc.host_id, alloc.vg, alloc.thin_pool)
                thin_used = thin_used.set(key3, thin_used.get(key3, 0) + sign * used)
            else:
                key = (alloc.host_id, alloc.capability_id)
                copies = 1 + (alloc.mirrors if isinstance(alloc, LvmAllocation) else 0)
                storage_used = storage_used.set(key, storage_used.get(key, 0) + sign * used * copies)
        old_hosts = {a.host_id for a in old_allocs}
        new_hosts = {a.host_id for a in new_allocs}
        for h in sorted(old_hosts - new_hosts):
            host_disks = host_disks.set(h, host_disks.get(h, frozenset()) - {doc.id})
        for h in sorted(new_hosts - old_hosts):
            host_disks = host_disks.set(h, host_disks.get(h, frozenset()) | {doc.id})
        changes.update(disk_dyn=disk_dyn.set(doc.id, doc), host_disks=host_disks,
                       storage_used=storage_used, thin_used=thin_used)
        return self

    def consume_storage(self, host_id: str, capability_id: str, amount: int) -> OperationalState:
        """Space taken (or, negative, given back) on a capability by something that is not a disk."""
        key = (host_id, capability_id)
        return replace(self, storage_used=self.storage_used.set(key, self.storage_used.get(key, 0) + amount))

    def changed_documents(self, before: OperationalState) -> list[Document]:
        """The documents that differ from ``before`` (which this state derives from), in a stable order."""
        out: list[Document] = []
        for name in ("host_dyn", "host_config", "vm_dyn", "disk_dyn"):
            mine: Layer[str, Any] = getattr(self, name)
            theirs: Layer[str, Any] = getattr(before, name)
            keys = sorted(set(mine.changed_keys()) | set(theirs.changed_keys()))
            for key in keys:
                doc = mine.get(key)
                if doc is not None and doc != theirs.get(key):
                    out.append(doc)
        return out

    # --- lookups -------------------------------------------------------------------------------

    def host_ids(self) -> tuple[str, ...]:
        return self.static.sorted_host_ids

    def host_name(self, host_id: str | None) -> str:
        if host_id is None:
            return "-"
        host = self.hosts.get(host_id)
        return host.name if host is not None else host_id[:8]

    def vm_name(self, vm_id: str) -> str:
        vm = self.vms.get(vm_id)
        return vm.name if vm is not None else vm_id[:8]

    def disk_name(self, disk_id: str) -> str:
        disk = self.disks.get(disk_id)
        return disk.name if disk is not None else disk_id[:8]

    def resolve_vm(self, ref: str) -> str | None:
        """A VM id from an expectation's reference (an id, or a name when written without a resolver)."""
        if ref in self.vms:
            return ref
        return self.static.vm_by_name.get(ref)

    def resolve_disk(self, ref: str) -> str | None:
        if ref in self.disks:
            return ref
        return self.static.disk_by_name.get(ref)

    def host_status(self, host_id: str) -> HostStatus:
        dyn = self.host_dyn.get(host_id)
        return dyn.status if dyn is not None else HostStatus.connecting

    def host_up(self, host_id: str) -> bool:
        return self.host_status(host_id) is HostStatus.up

    def vm_placement(self, vm_id: str) -> tuple[str | None, VmStatus]:
        """(host id, status) as the dynamic document says: host None when not placed."""
        dyn = self.vm_dyn.get(vm_id)
        if dyn is None:
            return None, VmStatus.down
        if dyn.host_id is None or dyn.status not in PLACED_STATUSES:
            return None, VmStatus.down
        return dyn.host_id, dyn.status

    def vm_host(self, vm_id: str) -> str | None:
        """The host a VM occupies (up, paused or migrating), whatever that host's own status."""
        return self.vm_placement(vm_id)[0]

    def vm_running(self, vm_id: str) -> bool:
        """Up on a host that is itself up: a VM on a down host is not counted as running."""
        host_id, status = self.vm_placement(vm_id)
        return host_id is not None and status is VmStatus.up and self.host_up(host_id)

    def vms_on(self, host_id: str) -> list[str]:
        return sorted(self.host_vms.get(host_id, ()))

    def disks_on(self, host_id: str) -> list[str]:
        return sorted(self.host_disks.get(host_id, ()))

    def allocations(self, disk_id: str) -> list[Any]:
        dyn = self.disk_dyn.get(disk_id)
        return list(dyn.allocations) if dyn is not None else []

    def disk_users(self, disk_id: str) -> tuple[str, ...]:
        return self.static.disk_users.get(disk_id, ())

    # --- capacity ------------------------------------------------------------------------------

    def memory_capacity(self, host_id: str) -> int:
        """Memory the host offers VMs: its RAM less a reserve for the host itself."""
        host = self.hosts.get(host_id)
        if host is None or host.capabilities is None:
            return 0
        total = host.capabilities.memory_bytes
        return max(0, total - host_memory_reserve(total))

    def free_memory(self, host_id: str) -> int:
        return self.memory_capacity(host_id) - self.mem_used.get(host_id, 0)

    def cpu_count(self, host_id: str) -> int:
        host = self.hosts.get(host_id)
        return host.capabilities.cpu.cpus if host is not None and host.capabilities is not None else 0

    def free_cores(self, host_id: str) -> int:
        return self.cpu_count(host_id) - self.vcpus_used.get(host_id, 0)

    def memory_load(self, host_id: str) -> float:
        capacity = self.memory_capacity(host_id)
        if capacity <= 0:
            return 1.0
        return self.mem_used.get(host_id, 0) / capacity

    def capabilities(self, host_id: str) -> list[StorageCapability]:
        host = self.hosts.get(host_id)
        if host is None or host.capabilities is None:
            return []
        return sorted(host.capabilities.storage, key=lambda s: s.id)

    def capability(self, host_id: str, capability_id: str) -> StorageCapability | None:
        host = self.hosts.get(host_id)
        if host is None or host.capabilities is None:
            return None
        return host.capabilities.storage_by_id(capability_id)

    def free_storage(self, host_id: str, capability_id: str) -> int:
        """Free bytes on a capability: what monitoring last saw, less what predicted steps took."""
        cap = self.capability(host_id, capability_id)
        if cap is None:
            return 0
        dyn = self.host_dyn.get(host_id)
        seen = dyn.storage_free.get(capability_id, cap.free_bytes) if dyn is not None else cap.free_bytes
        return seen - self.storage_used.get((host_id, capability_id), 0)

    def thin_pools(self, host_id: str) -> list[ThinPool]:
        config = self.host_config.get(host_id)
        return sorted(config.thin_pools, key=lambda p: (p.vg, p.name)) if config is not None else []

    def thin_pool(self, host_id: str, vg: str, name: str) -> ThinPool | None:
        """The thin pool ``vg/name`` of a host, or None."""
        config = self.host_config.get(host_id)
        pools = config.thin_pools if config is not None else []
        return next((p for p in pools if p.vg == vg and p.name == name), None)

    def thin_pool_used(self, host_id: str, vg: str, pool: str) -> int:
        """Bytes of the pool in use: monitoring's figure when it has one, else what thin LVs were given."""
        dyn = self.host_dyn.get(host_id)
        key = thin_pool_key(vg, pool)
        size = p.size_bytes if (p := self.thin_pool(host_id, vg, pool)) is not None else 0
        allotted = self.thin_used.get((host_id, vg, pool), 0)
        if dyn is not None and key in dyn.storage_free:
            # monitoring saw the pool's free bytes; predicted thin LVs add to that
            base_used = size - dyn.storage_free[key]
            base_allotted = self.static.initial_thin_used.get((host_id, vg, pool), 0)
            return base_used + (allotted - base_allotted)
        return allotted

    def locked(self, kind: str, target: str) -> bool:
        return f"{kind}:{target}" in self.locks


def thin_pool_key(vg: str, pool: str) -> str:
    """The HostDynamic.storage_free key under which monitoring reports a thin pool's free bytes."""
    return f"thin:{vg}/{pool}"


def vm_memory(vm: VirtualMachine) -> int:
    """Memory a VM takes on its host: its maximum (the balloon may give it all; no overcommit)."""
    return vm.memory_max


def host_memory_reserve(total: int) -> int:
    """Memory kept for the host's own kernel, libvirt and qemu overhead: 10 %, at most 1 GiB."""
    return min(GIB, total // 10)
