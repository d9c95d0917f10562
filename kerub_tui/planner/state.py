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
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Generic, TypeVar, overload

from ..core.models import (
    Document,
    Host,
    HostConfiguration,
    HostDynamic,
    HostStatus,
    LvmAllocation,
    PhysicalVolumeInfo,
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
from ..core.sizes import format_size

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

    def getter(self) -> Any:
        """``get`` for a loop over many keys: the base dict's own while nothing changed since it."""
        return self._base.get if not self._delta else self.get

    def pairs(self) -> Iterable[tuple[K, V]]:
        """(key, value) for a loop over all: the base dict's own items while nothing changed since it."""
        return self._base.items() if not self._delta else ((k, self[k]) for k in self)

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

# Indexes other planner modules keep per snapshot base (in StaticIndex.cache), built with the snapshot
# like its own (problems.hosts_to_check registers itself here).
SNAPSHOT_INDEXES: list[Callable[[OperationalState], object]] = []


@dataclass(frozen=True, slots=True)
class MemoryClass:
    """Hosts of one memory capacity, sorted by (free memory, name, id) (OperationalState.memory_order)."""

    capacity: int
    free: list[int]  # each host's free memory, ascending (to bisect)
    hosts: list[tuple[int, str, str]]  # (free memory, name, id)


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
    initial_thin_data: dict[tuple[str, str, str], int]  # thin pool data in use as monitoring saw it then
    initial_vcpus: dict[str, int]  # host id -> vCPUs placed there at snapshot time
    # What the full evaluation need not look at (documents no step changes, so these hold for every
    # state derived from the snapshot; checkers.vms_to_check and problems.hosts_to_check read them):
    vms_only_up: frozenset[str] = frozenset()  # VMs whose every expectation (one at least) is availability up
    vms_only_down: frozenset[str] = frozenset()  # VMs with no expectation but availability down, or none
    vms_expecting_more: frozenset[str] = frozenset()  # the other VMs
    disks_expecting: tuple[str, ...] = ()  # disks with an expectation, sorted
    hosts_flagged: frozenset[str] = frozenset()  # hosts being recycled or with an end of life
    memory_capacity: dict[str, int] = field(default_factory=dict)  # host id -> memory_capacity
    # indexes built on first use from a base dict of the states derived from this snapshot, with that
    # base, so a layer that folds its changes into a new base gets them built again (memory_order)
    cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


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
    # predicted LVs' bytes per PV, (host, capability, pv) -> bytes, as LVM would place them (raid1: a copy per
    # PV, the roomiest; linear: the PVs in order), and each predicted allocation's placement, to give it back
    pv_taken: Layer[tuple[str, str, str], int] = field(default_factory=lambda: Layer({}))
    pv_placed: Layer[tuple[str, str, str], tuple[tuple[str, int], ...]] = field(default_factory=lambda: Layer({}))
    # host id -> VMs running there (status up; host_vms also holds the paused and migrating ones)
    host_running: Layer[str, frozenset[str]] = field(default_factory=lambda: Layer({}))

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
        by_type: dict[type, dict[str, Any]] = {Host: hosts, HostDynamic: host_dyn, HostConfiguration: host_config,
                                               VirtualMachine: vms, VirtualMachineDynamic: vm_dyn,
                                               VirtualStorageDevice: disks, VirtualStorageDeviceDynamic: disk_dyn}
        for doc in docs:
            into = by_type.get(type(doc))
            if into is not None:
                into[doc.id] = doc
            elif isinstance(doc, Settings):
                settings = settings or doc
            else:  # a subclass of a document type: as isinstance sorts it
                for kind, bucket in by_type.items():
                    if isinstance(doc, kind):
                        bucket[doc.id] = doc
                        break
        host_vms: dict[str, set[str]] = {h: set() for h in hosts}
        host_running: dict[str, set[str]] = {h: set() for h in hosts}
        mem_used: dict[str, int] = {h: 0 for h in hosts}
        vcpus_used: dict[str, int] = {h: 0 for h in hosts}
        initial_vm_host: dict[str, str] = {}
        for vm_id in sorted(vm_dyn):
            dyn = vm_dyn[vm_id]
            vm = vms.get(vm_id)
            if vm is None or dyn.host_id is None or dyn.status not in PLACED_STATUSES:
                continue
            host_vms.setdefault(dyn.host_id, set()).add(vm_id)
            if dyn.status is VmStatus.up:
                host_running.setdefault(dyn.host_id, set()).add(vm_id)
            mem_used[dyn.host_id] = mem_used.get(dyn.host_id, 0) + placed_memory(vm, dyn)
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
        only_up: list[str] = []
        only_down: list[str] = []
        for vm_id in sorted(vms):
            vm = vms[vm_id]
            if all(e.type == "availability" for e in vm.expectations):
                ups = {getattr(e, "up", None) for e in vm.expectations}
                if ups == {True}:
                    only_up.append(vm_id)
                elif ups <= {False}:
                    only_down.append(vm_id)
            for link in vm.disks:
                disk_users.setdefault(link.disk_id, []).append(vm_id)
            for exp in vm.expectations:
                for ref in exp.vms if "vms" in type(exp).model_fields else ():  # type: ignore[union-attr]
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
            initial_thin_data=_thin_data_seen(host_config, host_dyn),
            initial_vcpus=dict(vcpus_used),
            vms_only_up=frozenset(only_up),
            vms_only_down=frozenset(only_down),
            vms_expecting_more=frozenset(vms.keys() - set(only_up) - set(only_down)),
            disks_expecting=tuple(d for d in sorted(disks) if disks[d].expectations),
            hosts_flagged=frozenset(h for h, host in hosts.items() if host.recycling or host.end_of_life is not None),
            memory_capacity={h: _memory_capacity(host) for h, host in hosts.items()},
        )
        state = cls(
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
            host_running=Layer({k: frozenset(v) for k, v in host_running.items()}),
        )
        state.memory_order()  # the indexes kept per base, built with the snapshot like the others
        state.idle_up_vms()
        for build in SNAPSHOT_INDEXES:
            build(state)
        return state

    @classmethod
    def from_store(cls, store: Any, *, now: dt.datetime | None = None) -> OperationalState:
        """A snapshot of the store's planning documents (plans' commitments are applied by the replanner)."""
        docs: list[Document] = []
        for kind in ("host", "host-dynamic", "host-config", "vm", "vm-dynamic", "disk", "disk-dynamic"):
            docs.extend(store.list(kind))
        settings = store.get("settings", "settings")
        return cls.from_documents(docs, now=now, settings=settings)

    _CONTEXT: ClassVar[frozenset[str]] = frozenset({"locks", "history", "overloaded_since", "now", "settings"})

    def with_context(self, **changes: Any) -> OperationalState:
        """The same facts with other context (locks, history, overloaded_since, now, settings). Documents
        change only through ``apply``, which keeps the indexes true."""
        if not changes.keys() <= self._CONTEXT:
            raise TypeError(f"not context: {', '.join(sorted(changes.keys() - self._CONTEXT))}")
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
        host_running = changes.get("host_running", self.host_running)
        vm = self.vms.get(doc.id)
        old = vm_dyn.get(doc.id)
        if vm is not None:
            if old is not None and old.host_id is not None and old.status in PLACED_STATUSES:
                h = old.host_id
                host_vms = host_vms.set(h, host_vms.get(h, frozenset()) - {doc.id})
                mem_used = mem_used.set(h, mem_used.get(h, 0) - placed_memory(vm, old))
                vcpus_used = vcpus_used.set(h, vcpus_used.get(h, 0) - vm.cpus)
                if old.status is VmStatus.up:
                    host_running = host_running.set(h, host_running.get(h, frozenset()) - {doc.id})
            if doc.host_id is not None and doc.status in PLACED_STATUSES:
                h = doc.host_id
                host_vms = host_vms.set(h, host_vms.get(h, frozenset()) | {doc.id})
                mem_used = mem_used.set(h, mem_used.get(h, 0) + placed_memory(vm, doc))
                vcpus_used = vcpus_used.set(h, vcpus_used.get(h, 0) + vm.cpus)
                if doc.status is VmStatus.up:
                    host_running = host_running.set(h, host_running.get(h, frozenset()) | {doc.id})
        changes.update(vm_dyn=vm_dyn.set(doc.id, doc), host_vms=host_vms, mem_used=mem_used,
                       vcpus_used=vcpus_used, host_running=host_running)
        return self

    def _put_disk_dyn(self, doc: VirtualStorageDeviceDynamic, changes: dict[str, Any]) -> OperationalState:
        disk_dyn = changes.get("disk_dyn", self.disk_dyn)
        host_disks = changes.get("host_disks", self.host_disks)
        storage_used = changes.get("storage_used", self.storage_used)
        thin_used = changes.get("thin_used", self.thin_used)
        pv_taken = changes.get("pv_taken", self.pv_taken)
        pv_placed = changes.get("pv_placed", self.pv_placed)
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
                if isinstance(alloc, LvmAllocation):
                    where = (doc.id, alloc.host_id, alloc.capability_id)
                    placed = pv_placed.get(where) if sign < 0 else self._placement(
                        alloc.host_id, alloc.capability_id, used, copies, pv_taken)
                    for pv, amount in placed or ():
                        k3 = (alloc.host_id, alloc.capability_id, pv)
                        pv_taken = pv_taken.set(k3, pv_taken.get(k3, 0) + sign * amount)
                    if sign < 0 and placed is not None:
                        pv_placed = pv_placed.remove(where)
                    elif sign > 0 and placed:
                        pv_placed = pv_placed.set(where, placed)
        old_hosts = {a.host_id for a in old_allocs}
        new_hosts = {a.host_id for a in new_allocs}
        for h in sorted(old_hosts - new_hosts):
            host_disks = host_disks.set(h, host_disks.get(h, frozenset()) - {doc.id})
        for h in sorted(new_hosts - old_hosts):
            host_disks = host_disks.set(h, host_disks.get(h, frozenset()) | {doc.id})
        changes.update(disk_dyn=disk_dyn.set(doc.id, doc), host_disks=host_disks,
                       storage_used=storage_used, thin_used=thin_used, pv_taken=pv_taken, pv_placed=pv_placed)
        return self

    def _placement(self, host_id: str, capability_id: str, size: int, copies: int,
                   pv_taken: Layer[tuple[str, str, str], int]) -> tuple[tuple[str, int], ...]:
        """Where LVM would put a new LV's ``copies`` of ``size`` bytes on the VG's healthy PVs: each copy of
        a raid1 on a PV of its own, the roomiest first; a linear LV over the PVs in order. () when the PVs
        are not known or it does not fit (the VG-wide figure still counts it)."""
        failing = {p.name for p in self.failing_pvs(host_id, capability_id)}
        room = {p.name: p.free_bytes - pv_taken.get((host_id, capability_id, p.name), 0)
                for p in self.pvs(host_id, capability_id) if p.name not in failing}
        if copies > 1:
            roomy = sorted(room, key=lambda name: (-room[name], name))[:copies]
            return tuple((name, size) for name in roomy) if len(roomy) == copies else ()
        out, left = [], size
        for name in sorted(room):
            take = min(left, max(room[name], 0))
            if take:
                out.append((name, take))
                left -= take
        return tuple(out) if left <= 0 else ()

    def take_pv(self, host_id: str, capability_id: str, pv: str, amount: int) -> OperationalState:
        """Space of the VG that a step took from (or, negative, gave back to) one PV by name."""
        key = (host_id, capability_id, pv)
        return replace(self, pv_taken=self.pv_taken.set(key, self.pv_taken.get(key, 0) + amount))

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

    def host_fenced(self, host_id: str) -> bool:
        """A host that is not up and is known to run no guest (HostDynamic.fence: high availability)."""
        dyn = self.host_dyn.get(host_id)
        return dyn is not None and dyn.fence is not None and dyn.status is not HostStatus.up

    def unfenced_holder(self, vm_id: str) -> str | None:
        """The host a VM may still run on though the controller cannot see it (it is not up and not
        fenced): the VM is never started elsewhere meanwhile, nor is a disk it writes. None otherwise."""
        host_id = self.vm_host(vm_id)
        if host_id is None or self.host_up(host_id) or self.host_fenced(host_id):
            return None
        return host_id

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

    def older_copy(self, disk_id: str, host_id: str) -> Any:
        """The disk's allocation on the host when it is a copy taken for redundancy (``copied_at``) while
        the disk's live storage, the one its VM writes, is elsewhere; None otherwise."""
        allocs = self.allocations(disk_id)
        here = next((a for a in allocs if a.host_id == host_id), None)
        if here is None or here.copied_at is None:
            return None
        return here if any(a.copied_at is None for a in allocs if a.host_id != host_id) else None

    def live_copy_reachable(self, disk_id: str, host_id: str) -> bool:
        """Whether the host holds an older copy of the disk while its live storage is on a host that is up."""
        return self.older_copy(disk_id, host_id) is not None and any(
            a.copied_at is None and self.host_up(a.host_id) for a in self.allocations(disk_id) if a.host_id != host_id)

    def disk_users(self, disk_id: str) -> tuple[str, ...]:
        return self.static.disk_users.get(disk_id, ())

    # --- capacity ------------------------------------------------------------------------------

    def memory_capacity(self, host_id: str) -> int:
        """Memory the host offers VMs: its RAM less a reserve for the host itself."""
        return self.static.memory_capacity.get(host_id, 0)

    def free_memory(self, host_id: str) -> int:
        return self.static.memory_capacity.get(host_id, 0) - self.mem_used.get(host_id, 0)

    def memory_order(self) -> tuple[list[MemoryClass], frozenset[str]]:
        """The hosts by free memory, for a placement that does not try every host (factories.fitting_starts):
        per memory capacity, its hosts sorted by (free memory, name, id) as the base of ``mem_used`` has
        them; and the hosts whose figure may differ from that base now (the layer's changes), to be
        judged on their own. Built once per base and kept in the snapshot's static index: every state
        derived from the snapshot shares it until the layer folds its changes into a new base."""
        base = self.mem_used._base
        cached = self.static.cache.get("memory-order")
        if cached is None or cached[0] is not base:
            capacity = self.static.memory_capacity
            rows: dict[int, list[tuple[int, str, str]]] = {}
            for host_id in self.static.sorted_host_ids:
                cap = capacity.get(host_id, 0)
                rows.setdefault(cap, []).append((cap - base.get(host_id, 0), self.host_name(host_id), host_id))
            classes = []
            for cap in sorted(rows):
                ordered = sorted(rows[cap])
                classes.append(MemoryClass(cap, [r[0] for r in ordered], ordered))
            cached = (base, classes)
            self.static.cache["memory-order"] = cached
        return cached[1], frozenset(self.mem_used.changed_keys())

    def idle_up_vms(self) -> set[str]:
        """The VMs that only expect to be up (``static.vms_only_up``) and are not running: the ones of
        them the full evaluation checks (checkers.vms_to_check). Kept for the base of ``host_running`` and
        ``host_dyn`` (built with the snapshot) and adjusted for the hosts whose running VMs or status
        changed since, so a derived state's answer costs its changes, not the fleet."""
        only_up = self.static.vms_only_up
        if not only_up:
            return set()
        running, dyns = self.host_running, self.host_dyn
        cached = self.static.cache.get("idle-up")
        if cached is None or cached[0] is not running._base or cached[1] is not dyns._base:
            ran: set[str] = set()
            for host_id, vms in running._base.items():
                dyn = dyns._base.get(host_id)
                if vms and dyn is not None and dyn.status is HostStatus.up:
                    ran |= vms
            cached = (running._base, dyns._base, only_up - ran)
            self.static.cache["idle-up"] = cached
        idle = set(cached[2])
        changed = running._delta.keys() | dyns._delta.keys()
        for host_id in changed:  # what ran there at the base is judged again...
            dyn = dyns._base.get(host_id)
            if dyn is not None and dyn.status is HostStatus.up:
                idle |= only_up & running._base.get(host_id, frozenset())
        for host_id in changed:  # ...and what runs there now is not idle
            if self.host_up(host_id):
                idle -= running.get(host_id, frozenset())
        return idle

    def cpu_count(self, host_id: str) -> int:
        host = self.hosts.get(host_id)
        return host.capabilities.cpu.cpus if host is not None and host.capabilities is not None else 0

    def core_count(self, host_id: str) -> int:
        """Physical cores (sockets x cores per socket, as lscpu counts them): a hyper-thread is not a core
        of its own, so core dedication counts these. The logical CPU count when lscpu gave no topology."""
        host = self.hosts.get(host_id)
        if host is None or host.capabilities is None:
            return 0
        cpu = host.capabilities.cpu
        if cpu.sockets > 0 and cpu.cores_per_socket > 0:
            return min(cpu.sockets * cpu.cores_per_socket, cpu.cpus) if cpu.cpus else cpu.sockets * cpu.cores_per_socket
        if cpu.threads_per_core > 1:
            return max(cpu.cpus // cpu.threads_per_core, 1)
        return cpu.cpus

    def vm_reserved(self, vm_id: str) -> int:
        """Memory the VM holds where it is placed (what it was started with), else what a start asks."""
        vm = self.vms[vm_id]
        return placed_memory(vm, self.vm_dyn.get(vm_id)) if self.vm_host(vm_id) is not None else vm_memory(vm)

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

    def pvs(self, host_id: str, capability_id: str) -> list[PhysicalVolumeInfo]:
        """An LVM capability's physical volumes: what monitoring last saw (with the whole disks discovery
        found), else discovery's; a VG discovered before PVs were read, with one backing device, counts
        that one; [] when nothing is known (not LVM, or an old document)."""
        cap = self.capability(host_id, capability_id)
        if cap is None or cap.technology.value != "lvm":
            return []
        dyn = self.host_dyn.get(host_id)
        seen = dyn.storage_pvs.get(capability_id) if dyn is not None else None
        if seen is not None:
            disks = {p.name: p.disk for p in cap.pvs}
            return [p if p.disk is not None or p.name not in disks else p.evolve(disk=disks[p.name]) for p in seen]
        if cap.pvs:
            return list(cap.pvs)
        if cap.device:
            return [PhysicalVolumeInfo(name=cap.device, size_bytes=cap.size_bytes, free_bytes=cap.free_bytes)]
        return []

    def failing_pvs(self, host_id: str, capability_id: str) -> list[PhysicalVolumeInfo]:
        """The capability's PVs on a disk whose SMART health failed (by the PV or its whole disk)."""
        dyn = self.host_dyn.get(host_id)
        if dyn is None or not dyn.failing_devices:
            return []
        bad = dyn.failing_devices
        return [p for p in self.pvs(host_id, capability_id)
                if device_failing(p.name, bad) or (p.disk is not None and device_failing(p.disk, bad))]

    def failing_device(self, host_id: str, capability_id: str) -> str | None:
        """What of a capability is failing, in words ("PV /dev/sdb", "device /dev/sda"), or None."""
        bad = self.failing_pvs(host_id, capability_id)
        if bad and len(self.pvs(host_id, capability_id)) == 1:
            return f"device {bad[0].name}"
        if bad:
            names = ", ".join(p.name if not p.disk or p.disk == p.name else f"{p.name} (disk {p.disk})" for p in bad)
            return f"PV {names} of {capability_id}"
        cap = self.capability(host_id, capability_id)
        dyn = self.host_dyn.get(host_id)
        if cap is not None and cap.device and dyn is not None and device_failing(cap.device, dyn.failing_devices):
            return f"device {cap.device}"
        return None

    def mirror_room(self, host_id: str, capability_id: str, size: int, copies: int, *, existing: int = 0) -> str | None:
        """Why a raid1 of ``copies`` copies of ``size`` bytes does not fit this VG (None when it does):
        raid1 puts each copy on a PV of its own, so the VG needs that many healthy PVs, and ``copies -
        existing`` of them with ``size`` free (``existing``: copies already made). Space other predicted
        steps took on the VG is counted against every PV, as LVM may have put it anywhere."""
        where = f"{self.host_name(host_id)} {capability_id}"
        pvs = self.pvs(host_id, capability_id)
        if not pvs:
            return f"{where}: its physical volumes are not known (discovery has not read them)"
        failing = {p.name for p in self.failing_pvs(host_id, capability_id)}
        healthy = [p for p in pvs if p.name not in failing]
        if len(healthy) < copies:
            have = f"{len(pvs)} PV{'s' if len(pvs) != 1 else ''}" + (f", {len(healthy)} healthy" if failing else "")
            return f"{where}: {have}; {copies} copies need {copies} PVs"
        # what predicted steps put on each PV; what they took from the VG without saying where counts
        # against every PV, as LVM may have put it anywhere
        attributed = {p.name: self.pv_taken.get((host_id, capability_id, p.name), 0) for p in pvs}
        gone = sum(amount for (h, c, pv), amount in self._pv_taken_items(host_id, capability_id)
                   if pv not in attributed)
        anywhere = max(self.storage_used.get((host_id, capability_id), 0) - sum(attributed.values()) - gone, 0)
        room = sorted((p.free_bytes - attributed[p.name] - anywhere for p in healthy), reverse=True)
        new = copies - existing
        if new > 0 and room[new - 1] < size:
            return f"{where}: fewer than {new} PVs with {format_size(size)} free"
        return None

    def _pv_taken_items(self, host_id: str, capability_id: str) -> list[tuple[tuple[str, str, str], int]]:
        return [(k, v) for k in self.pv_taken.changed_keys() if k[0] == host_id and k[1] == capability_id
                and (v := self.pv_taken.get(k, 0))]

    def thin_pools(self, host_id: str) -> list[ThinPool]:
        config = self.host_config.get(host_id)
        return sorted(config.thin_pools, key=lambda p: (p.vg, p.name)) if config is not None else []

    def thin_pool(self, host_id: str, vg: str, name: str) -> ThinPool | None:
        """The thin pool ``vg/name`` of a host, or None."""
        config = self.host_config.get(host_id)
        pools = config.thin_pools if config is not None else []
        return next((p for p in pools if p.vg == vg and p.name == name), None)

    def thin_overcommit_limit(self) -> float:
        """How many times its size a thin pool's thin LVs may add up to: the admin's over-commit ratio
        while thin over-commit is on (settings), else 1 (thin LVs, but never more than the pool holds)."""
        policy = self.settings.optimisation
        return policy.thin_overcommit_ratio if policy.thin_overcommit else 1.0

    def thin_allotted(self, host_id: str, vg: str, pool: str) -> int:
        """The virtual sizes of the pool's thin LVs together (what over-commit compares with its size)."""
        return self.thin_used.get((host_id, vg, pool), 0)

    def thin_pool_used(self, host_id: str, vg: str, pool: str) -> int:
        """Bytes of the pool's data space in use: monitoring's figure when it has one, else (pessimistic)
        the virtual sizes of the thin LVs it held at snapshot time. A thin LV a plan creates is predicted
        to hold nothing yet (it is empty until its VM writes; the next reading says how much); one a plan
        removes is predicted to give back at most its virtual size."""
        base_allotted = self.static.initial_thin_used.get((host_id, vg, pool), 0)
        given_back = min(self.thin_allotted(host_id, vg, pool) - base_allotted, 0)
        base_used = self.static.initial_thin_data.get((host_id, vg, pool), base_allotted)
        return max(base_used + given_back, 0)

    def locked(self, kind: str, target: str) -> bool:
        return f"{kind}:{target}" in self.locks


def device_failing(device: str, failing: Iterable[str]) -> bool:
    """Whether a device path is among the failing ones (by path, or by name under /dev)."""
    name = device.rsplit("/", 1)[-1]
    return any(f == device or f.rsplit("/", 1)[-1] == name for f in failing)


def _thin_data_seen(configs: Mapping[str, HostConfiguration],
                    dyns: Mapping[str, HostDynamic]) -> dict[tuple[str, str, str], int]:
    """(host, vg, pool) -> data bytes in use, for the pools monitoring reports (their size less their free
    bytes, at snapshot time: a pool a plan extends keeps its data)."""
    out = {}
    for host_id, config in configs.items():
        dyn = dyns.get(host_id)
        for pool in config.thin_pools:
            free = dyn.storage_free.get(thin_pool_key(pool.vg, pool.name)) if dyn is not None else None
            if free is not None:
                out[(host_id, pool.vg, pool.name)] = max(pool.size_bytes - free, 0)
    return out


def thin_pool_key(vg: str, pool: str) -> str:
    """The HostDynamic.storage_free key under which monitoring reports a thin pool's free bytes."""
    return f"thin:{vg}/{pool}"


def vm_memory(vm: VirtualMachine) -> int:
    """Memory a VM asks of a host it starts on: its maximum (the balloon may give it all; no overcommit).

    The policy for a memory range (ARCHITECTURE.md, memory ranges): a VM is placed by its maximum where a
    host has room for it; only where none has (even after making room or waking a host) does it start
    with less, as much as the host has free and at least its minimum, the balloon holding it there.
    What a placed VM holds is :func:`placed_memory`."""
    return vm.memory_max


def placed_memory(vm: VirtualMachine, dyn: VirtualMachineDynamic | None) -> int:
    """Memory a placed VM holds on its host: what it was started with (``memory_given``, kept within
    its range), else its maximum. Migration carries it to the target."""
    given = dyn.memory_given if dyn is not None else None
    if given is None:
        return vm.memory_max
    return max(vm.memory_min, min(given, vm.memory_max))


def _memory_capacity(host: Host) -> int:
    if host.capabilities is None:
        return 0
    total = host.capabilities.memory_bytes
    return max(0, total - host_memory_reserve(total))


def host_memory_reserve(total: int) -> int:
    """Memory kept for the host's own kernel, libvirt and qemu overhead: 10 %, at most 1 GiB."""
    return min(GIB, total // 10)
