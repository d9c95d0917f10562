"""Row sources: how each kind of document becomes a table row, and which rows a change touches."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..core.bus import Change
from ..core.models import (
    AuditEntry,
    Event,
    Host,
    HostDynamic,
    HostStatus,
    Plan,
    PlanStatus,
    StepOutcome,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
)
from ..core.sizes import format_size
from .format import (
    Cell,
    figure_with_spark,
    one_line,
    short_id,
    size_cell,
    status_cell,
    time_cell,
)
from .history import cpu_busy, memory_used_percent
from .live import Column
from .overview import VIOLATION, VIOLATION_CLEARED, Overview

SIMULATED_STYLE = "magenta"  # the mark of a simulated host (kerub_tui.sim), wherever one is shown
SIM_TAG = "sim"
SPARK_WIDTH = 10
SPARK_BUCKETS_PER_CHAR = 3  # 10 chars x 3 buckets x 10 s = the last five minutes


def downsample(values: Sequence[float | None], width: int, per_char: int) -> list[float | None]:
    """Group the newest ``width * per_char`` values into ``width`` means (None where empty)."""
    values = list(values)[-width * per_char:]
    # Align groups on the newest value, so the right edge is always one full group.
    offset = len(values) % per_char
    out: list[float | None] = []
    if offset:
        head = [v for v in values[:offset] if v is not None]
        out.append(sum(head) / len(head) if head else None)
    for start in range(offset, len(values), per_char):
        group = [v for v in values[start:start + per_char] if v is not None]
        out.append(sum(group) / len(group) if group else None)
    return out[-width:]


def alloc_path(alloc: object) -> str:
    return str(getattr(alloc, "path", "") or "")


class HostRows:
    title = "Hosts"
    kinds = frozenset({"host", "host-dynamic", "vm-dynamic"})
    default_sort = "name"
    default_reverse = False
    columns = (
        Column("name", "Name"),
        Column("address", "Address"),
        Column("status", "Status"),
        Column("cpu", "CPU", 15),
        Column("mem", "Memory", 15),
        Column("vms", "VMs"),
        Column("ksm", "KSM"),
        Column("free", "Free"),
    )

    def __init__(self, overview: Overview) -> None:
        self.overview = overview
        self.api = overview.api

    def ids(self) -> Iterable[str]:
        return [h.id for h in self.api.documents(Host)]

    def affected(self, change: Change) -> Iterable[str]:
        if change.kind == "vm-dynamic":
            return {d.host_id for d in (change.old, change.new)
                    if isinstance(d, VirtualMachineDynamic) and d.host_id}
        return (change.id,)

    def cells(self, doc_id: str) -> Sequence[Cell] | None:
        host: Host | None = self.api.get(Host, doc_id)
        if host is None:
            return None
        dyn: HostDynamic | None = self.api.get(HostDynamic, doc_id)
        history = self.overview.history
        cpu_hist = downsample(history.series(doc_id, "cpu", SPARK_WIDTH * SPARK_BUCKETS_PER_CHAR),
                              SPARK_WIDTH, SPARK_BUCKETS_PER_CHAR)
        mem_hist = downsample(history.series(doc_id, "mem", SPARK_WIDTH * SPARK_BUCKETS_PER_CHAR),
                              SPARK_WIDTH, SPARK_BUCKETS_PER_CHAR)
        total = host.capabilities.memory_bytes if host.capabilities else None
        address = host.address if host.port == 22 else f"{host.address}:{host.port}"
        if dyn is None:
            status = status_cell("recycling" if host.recycling else "-")
            cpu = mem = None
            ksm = Cell("-")
            free = size_cell(None)
        else:
            status = status_cell(dyn.status.value)
            if host.recycling:
                status.append(" maint", style="magenta")
            if host.capabilities is not None and host.capabilities.stale:
                status.append(" stale", style="yellow")  # facts not read by the last discovery: see the detail
            # A host not up has no current figures: its last ones would pass for live ones.
            live = dyn.status is HostStatus.up
            cpu = cpu_busy(dyn) if live else None
            mem = memory_used_percent(dyn, total) if live else None
            if not dyn.ksm.available:
                ksm = Cell("n/a", "dim", sort=-1)
            elif dyn.ksm.run:
                saved = dyn.ksm.pages_sharing * 4096
                ksm = Cell(f"on {format_size(saved)}", "green", sort=saved)
            else:
                ksm = Cell("off", sort=0)
            free = size_cell(sum(dyn.storage_free.values()) if dyn.storage_free else None)
        name = Cell(host.name, "bold")
        if host.simulated:  # a simulated host says so: nothing real runs there
            name.append(f" {SIM_TAG}", style=f"italic {SIMULATED_STYLE}")
        return (
            name,
            Cell(address),
            status,
            figure_with_spark(cpu, cpu_hist, SPARK_WIDTH),
            figure_with_spark(mem, mem_hist, SPARK_WIDTH),
            Cell(str(len(self.api.vms_on_host(doc_id))), sort=len(self.api.vms_on_host(doc_id))),
            ksm,
            free,
        )


def expectation_badge(overview: Overview, doc_id: str, count: int) -> Cell:
    """✓N when every expectation holds, ✗k/N when k are violated now, - when there are none."""
    violated = len(overview.violations.get(doc_id, ()))
    if count == 0 and not violated:
        return Cell("-", "dim", sort=(0, 0))
    if violated:
        return Cell(f"✗{violated}/{max(count, violated)}", "bold red", sort=(2, violated))
    return Cell(f"✓{count}", "green", sort=(1, count))


class VmRows:
    title = "VMs"
    kinds = frozenset({"vm", "vm-dynamic", "host", "event"})
    default_sort = "name"
    default_reverse = False
    columns = (
        Column("name", "Name"),
        Column("status", "Status"),
        Column("host", "Host"),
        Column("cpus", "vCPU"),
        Column("memory", "Mem used/max"),
        Column("expect", "Expect"),
    )

    def __init__(self, overview: Overview) -> None:
        self.overview = overview
        self.api = overview.api

    def ids(self) -> Iterable[str]:
        return [v.id for v in self.api.documents(VirtualMachine)]

    def affected(self, change: Change) -> Iterable[str]:
        if change.kind == "host":
            return self.api.vms_on_host(change.id)
        if change.kind == "event":
            event = change.new or change.old
            if isinstance(event, Event) and event.target and event.type in (VIOLATION, VIOLATION_CLEARED):
                return (event.target,) if self.api.get(VirtualMachine, event.target) is not None else ()
            return ()
        return (change.id,)

    def cells(self, doc_id: str) -> Sequence[Cell] | None:
        vm: VirtualMachine | None = self.api.get(VirtualMachine, doc_id)
        if vm is None:
            return None
        dyn: VirtualMachineDynamic | None = self.api.get(VirtualMachineDynamic, doc_id)
        status = dyn.status.value if dyn else "down"
        used = dyn.memory_used if dyn else None
        return (
            Cell(vm.name, "bold"),
            status_cell(status),
            Cell(self.overview.host_name(dyn.host_id) if dyn else "-"),
            Cell(str(vm.cpus), sort=vm.cpus),
            Cell(f"{format_size(used) if used else '-'}/{format_size(vm.memory_max)}", sort=used or 0),
            expectation_badge(self.overview, doc_id, len(vm.expectations)),
        )


class DiskRows:
    title = "Storage"
    kinds = frozenset({"disk", "disk-dynamic", "host", "host-config", "event"})
    default_sort = "name"
    default_reverse = False
    columns = (
        Column("name", "Name"),
        Column("size", "Size"),
        Column("allocations", "Allocations (host:tech:path)"),
        Column("sharing", "Sharing"),
        Column("redundancy", "Copies"),
        Column("expect", "Expect"),
    )

    def __init__(self, overview: Overview) -> None:
        self.overview = overview
        self.api = overview.api

    def ids(self) -> Iterable[str]:
        return [d.id for d in self.api.documents(VirtualStorageDevice)]

    def affected(self, change: Change) -> Iterable[str]:
        if change.kind == "host":
            return self.api.disks_on_host(change.id)
        if change.kind == "host-config":
            disks: set[str] = set()
            for config in (change.old, change.new):
                if config is not None:
                    disks |= {e.disk_id for e in config.exports if e.disk_id}  # type: ignore[attr-defined]
                    disks |= {t.disk_id for t in config.iscsi_targets if t.disk_id}  # type: ignore[attr-defined]
                    disks |= {m.disk_id for m in config.mounts if m.disk_id}  # type: ignore[attr-defined]
            return disks
        if change.kind == "event":
            event = change.new or change.old
            if isinstance(event, Event) and event.target and event.type in (VIOLATION, VIOLATION_CLEARED):
                return (event.target,) if self.api.get(VirtualStorageDevice, event.target) is not None else ()
            return ()
        return (change.id,)

    def cells(self, doc_id: str) -> Sequence[Cell] | None:
        disk: VirtualStorageDevice | None = self.api.get(VirtualStorageDevice, doc_id)
        if disk is None:
            return None
        dyn: VirtualStorageDeviceDynamic | None = self.api.get(VirtualStorageDeviceDynamic, doc_id)
        allocations = list(dyn.allocations) if dyn else []
        if allocations:
            first = allocations[0]
            text = f"{self.overview.host_name(first.host_id)}:{first.type}:{alloc_path(first)}"
            if len(allocations) > 1:
                text += f" +{len(allocations) - 1}"
            alloc_cell = Cell(text, sort=text)
        else:
            alloc_cell = Cell("none", "dim", sort="")
        shares = sorted(self.overview.sharing.get(doc_id, ()), key=lambda s: (s[1], s[0]))
        sharing = " ".join(f"{how}@{self.overview.host_name(host)}" for host, how in shares) or "-"
        return (
            Cell(disk.name, "bold"),
            size_cell(disk.size),
            alloc_cell,
            Cell(sharing, "" if shares else "dim"),
            redundancy_cell(disk, allocations),
            expectation_badge(self.overview, doc_id, len(disk.expectations)),
        )


def redundancy_cell(disk: VirtualStorageDevice, allocations: list) -> Cell:
    """Copies held against copies wanted (storage-redundancy), counting hosts when out-of-box."""
    wanted = next((e for e in disk.expectations if e.type == "storage-redundancy"), None)
    if wanted is None:
        return Cell(str(len(allocations)), sort=len(allocations))
    have = len({a.host_id for a in allocations}) if wanted.out_of_box else len(allocations)
    need = wanted.copies
    ok = have >= need
    return Cell(f"{have}/{need} {'✓' if ok else '✗'}", "green" if ok else "bold red", sort=(have - need, have))


def plan_progress(plan: Plan) -> str:
    if not plan.steps:
        return "-"
    done = sum(1 for r in plan.records if r.outcome is StepOutcome.done)
    if plan.status is PlanStatus.running:
        return f"{done}/{len(plan.steps)} ⟳"
    if plan.status in (PlanStatus.done, PlanStatus.failed, PlanStatus.interrupted):
        return f"{done}/{len(plan.steps)}"
    return f"{len(plan.steps)} steps"


class PlanRows:
    title = "Plans"
    kinds = frozenset({"plan"})
    default_sort = "created"
    default_reverse = True
    columns = (
        Column("id", "Id"),
        Column("status", "Status"),
        Column("kind", "Kind"),
        Column("progress", "Steps"),
        Column("created", "Created (UTC)"),
        Column("trigger", "Because"),
    )

    def __init__(self, overview: Overview) -> None:
        self.overview = overview
        self.api = overview.api

    def ids(self) -> Iterable[str]:
        return [p.id for p in self.api.documents(Plan)]

    def affected(self, change: Change) -> Iterable[str]:
        return (change.id,)

    def cells(self, doc_id: str) -> Sequence[Cell] | None:
        plan: Plan | None = self.api.get(Plan, doc_id)
        if plan is None:
            return None
        # Open proposals first, then running, then the rest: the admin's queue on top.
        rank = {PlanStatus.proposed: 0, PlanStatus.running: 1, PlanStatus.approved: 2}.get(plan.status, 3)
        status = status_cell(plan.status.value)
        status.sort = (rank, plan.status.value)
        return (
            Cell(short_id(plan.id), "bold"),
            status,
            Cell(plan.plan_kind),
            Cell(plan_progress(plan)),
            time_cell(plan.created_at),
            Cell(one_line("; ".join(plan.trigger), 120) or "-"),
        )


class AuditRows:
    title = "Audit"
    kinds = frozenset({"audit"})
    default_sort = "time"
    default_reverse = True
    columns = (
        Column("time", "Time (UTC)"),
        Column("user", "User"),
        Column("action", "Action"),
        Column("target", "Target"),
        Column("host", "Host"),
        Column("exit", "Exit"),
        Column("duration", "Took"),
        Column("outcome", "Command / outcome"),
    )

    def __init__(self, overview: Overview) -> None:
        self.overview = overview
        self.api = overview.api

    def ids(self) -> Iterable[str]:
        return [a.id for a in self.api.documents(AuditEntry)]

    def affected(self, change: Change) -> Iterable[str]:
        return (change.id,)

    def cells(self, doc_id: str) -> Sequence[Cell] | None:
        entry: AuditEntry | None = self.api.get(AuditEntry, doc_id)
        if entry is None:
            return None
        exit_style = "" if entry.exit_code in (None, 0) else "bold red"
        exit_text = "-" if entry.exit_code is None else str(entry.exit_code)
        took = "-" if entry.duration_seconds is None else f"{entry.duration_seconds:.1f}s"
        detail = entry.command or entry.outcome
        if entry.output_tail and entry.exit_code not in (None, 0):
            detail = f"{detail} → {entry.output_tail}" if detail else entry.output_tail
        return (
            time_cell(entry.time),
            Cell(entry.os_user or "-"),
            Cell(entry.action, "bold"),
            Cell(entry.target or "-"),
            Cell(self.overview.host_name(entry.host_id) if entry.host_id else "-"),
            Cell(exit_text, exit_style, sort=entry.exit_code if entry.exit_code is not None else -1),
            Cell(took, sort=entry.duration_seconds or 0.0),
            Cell(one_line(detail, 120) or "-"),
        )


class EventRows:
    title = "Events"
    kinds = frozenset({"event"})
    default_sort = "time"
    default_reverse = True
    columns = (
        Column("time", "Time (UTC)"),
        Column("severity", "Level"),
        Column("type", "Type"),
        Column("host", "Host"),
        Column("message", "Message"),
    )

    def __init__(self, overview: Overview, host_id: str | None = None) -> None:
        self.overview = overview
        self.api = overview.api
        self.host_id = host_id

    def ids(self) -> Iterable[str]:
        return [e.id for e in self.api.documents(Event) if self.host_id is None or e.host_id == self.host_id]

    def affected(self, change: Change) -> Iterable[str]:
        return (change.id,)

    def cells(self, doc_id: str) -> Sequence[Cell] | None:
        event: Event | None = self.api.get(Event, doc_id)
        if event is None or (self.host_id is not None and event.host_id != self.host_id):
            return None
        return (
            time_cell(event.time),
            status_cell(event.severity.value),
            Cell(event.type, "bold"),
            Cell(self.overview.host_name(event.host_id) if event.host_id else "-"),
            Cell(one_line(event.message, 160)),
        )
