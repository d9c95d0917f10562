"""Row sources: how each kind of document becomes a table row, and which rows a change touches."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ..core.bus import Change
from ..core.models import (
    AuditEntry,
    Event,
    Host,
    HostConfiguration,
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
    STATUS_STYLES,
    Cell,
    ago,
    figure_with_spark,
    one_line,
    short_id,
    size_cell,
    status_cell,
    time_cell,
)
from .history import cpu_busy, memory_used_percent
from .live import MISSING, UNKNOWN, Column
from .overview import VIOLATION, VIOLATION_CLEARED, Overview

if TYPE_CHECKING:
    from ..api import VmState


def plan_vm_ids(plan: Plan) -> set[str]:
    """The VMs a plan's steps act on, from the steps' parameters (the console reads no planner)."""
    return {v for step in plan.steps for key in ("vm", "vm_id") if isinstance(v := step.params.get(key), str)}

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

    def sort_value(self, doc_id: str, column: str) -> object:
        """A host's name without its cells (a table of 1,000 hosts sorts by name at once)."""
        host: Host | None = self.api.get(Host, doc_id)
        if host is None:
            return MISSING
        return host.name if column == "name" else UNKNOWN

    def sort_values(self, column: str) -> dict[str, object] | None:
        return {d.id: d.name for d in self.api.documents(Host)} if column == "name" else None

    def affected(self, change: Change) -> Iterable[str]:
        if change.kind == "vm-dynamic":  # a host's VM count: only where a VM came, went or changed state
            old, new = change.old, change.new
            if (isinstance(old, VirtualMachineDynamic) and isinstance(new, VirtualMachineDynamic)
                    and old.host_id == new.host_id and old.status is new.status):
                return ()  # its figures (memory, CPU) are the VM's row, not the host's
            return {d.host_id for d in (old, new) if isinstance(d, VirtualMachineDynamic) and d.host_id}
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
            if dyn.fence is not None and dyn.status is not HostStatus.up:
                status.append(" fenced", style="bold")  # known to run no guest: its VMs with ha restart elsewhere
            # A host not up has no current figures: its last ones would pass for live ones.
            live = dyn.status is HostStatus.up
            cpu = cpu_busy(dyn) if live else None
            mem = memory_used_percent(dyn, total) if live else None
            if not self.api.live:  # nothing monitors it: what was last seen, dimmed, and when
                status.stylize("dim")
                status.append(f" {ago(dyn.last_seen)} ago" if dyn.last_seen else " never seen", style="yellow")
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
        figures = [figure_with_spark(cpu, cpu_hist, SPARK_WIDTH), figure_with_spark(mem, mem_hist, SPARK_WIDTH)]
        if not self.api.live:
            for figure in figures:
                figure.stylize("dim")
        return (
            name,
            Cell(address),
            status,
            *figures,
            vm_count_cell(*self.api.host_vm_counts(doc_id)),
            ksm,
            free,
        )


def vm_count_cell(running: int, lost: int) -> Cell:
    """A host's VMs: those running there; a host that went down runs none, its VMs are lost."""
    cell = Cell(str(running), sort=running)
    if lost:
        cell.append(f" ({lost} lost)", style="bold red")
    return cell


def vm_status_cell(state: VmState) -> Cell:
    return Cell(state.label, STATUS_STYLES.get(state.status, ""), sort=state.label)


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
    kinds = frozenset({"vm", "vm-dynamic", "host", "host-dynamic", "event", "plan"})
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

    def sort_value(self, doc_id: str, column: str) -> object:
        """A VM's name without its cells (10,000 VMs sort by name, and take changes, at once)."""
        vm: VirtualMachine | None = self.api.get(VirtualMachine, doc_id)
        if vm is None:
            return MISSING
        return vm.name if column == "name" else UNKNOWN

    def sort_values(self, column: str) -> dict[str, object] | None:
        return {d.id: d.name for d in self.api.documents(VirtualMachine)} if column == "name" else None

    def affected(self, change: Change) -> Iterable[str]:
        if change.kind == "host":
            return self.api.vms_on_host(change.id)
        if change.kind == "host-dynamic":  # a host going down loses its VMs: only its status matters
            statuses = {d.status for d in (change.old, change.new) if isinstance(d, HostDynamic)}
            return self.api.vms_on_host(change.id) if len(statuses) != 1 or change.old is None else ()
        if change.kind == "plan":  # waiting for approval, starting, stopping, rejected
            return {vm for p in (change.old, change.new) if isinstance(p, Plan) for vm in plan_vm_ids(p)}
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
        state = self.api.vm_state(doc_id)
        # a lost VM's last figure is not news; one on a host that is connecting is the last seen, dimmed
        used = dyn.memory_used if dyn and (state.live or state.stale) else None
        status_text = vm_status_cell(state)
        memory = Cell(f"{format_size(used) if used else '-'}/{format_size(vm.memory_max)}", sort=used or 0)
        if not self.api.live or state.stale:  # nothing monitors the host (yet): the VM as last seen, dimmed
            status_text.stylize("dim")
            memory.stylize("dim")
        host = Cell(self.overview.host_name(state.host_id) if state.host_id else "-",
                    "dim" if state.status == "lost" else "")
        return (
            Cell(vm.name, "bold"),
            status_text,
            host,
            Cell(str(vm.cpus), sort=vm.cpus),
            memory,
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

    def sort_value(self, doc_id: str, column: str) -> object:
        """A disk's name without its cells."""
        disk: VirtualStorageDevice | None = self.api.get(VirtualStorageDevice, doc_id)
        if disk is None:
            return MISSING
        return disk.name if column == "name" else UNKNOWN

    def sort_values(self, column: str) -> dict[str, object] | None:
        return {d.id: d.name for d in self.api.documents(VirtualStorageDevice)} if column == "name" else None

    def affected(self, change: Change) -> Iterable[str]:
        if change.kind == "host":
            return self.api.disks_on_host(change.id)
        if change.kind == "host-config":
            disks: set[str] = set()
            for config in (change.old, change.new):
                if isinstance(config, HostConfiguration):
                    disks |= {e.disk_id for e in config.exports if e.disk_id}
                    disks |= {t.disk_id for t in config.iscsi_targets if t.disk_id}
                    disks |= {m.disk_id for m in config.mounts if m.disk_id}
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
        # the running step's own progress where it knows it (a copy, a migration)
        step = next((r for r in plan.records if r.outcome is StepOutcome.running), None)
        if step is not None and step.progress_done is not None and step.progress_total:
            return f"{done}/{len(plan.steps)} ⟳ {step.progress_done * 100 // step.progress_total}%"
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


# The rows a log view loads: the newest of the history (a year at 1,000 hosts is millions).
LOG_ROWS = 2000


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
        self._loaded: dict[str, AuditEntry] = {}

    def ids(self) -> Iterable[str]:
        # The newest LOG_ROWS of the history (a year is millions: `kerub-tui audit --since` reads further).
        entries = self.api.audit_log(limit=LOG_ROWS)
        self._loaded = {a.id: a for a in entries}
        return list(self._loaded)

    def affected(self, change: Change) -> Iterable[str]:
        if isinstance(change.new, AuditEntry):
            self._loaded[change.id] = change.new
        return (change.id,)

    def cells(self, doc_id: str) -> Sequence[Cell] | None:
        entry: AuditEntry | None = self._loaded.pop(doc_id, None) or self.api.get(AuditEntry, doc_id)
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
    # What the event is about (its VM, disk or host) comes before the message, so that even at 80
    # columns a glance says which VM a violation names (issue 13 item 8).
    columns = (
        Column("time", "Time (UTC)"),
        Column("severity", "Level"),
        Column("type", "Type"),
        Column("about", "About"),
        Column("message", "Message"),
    )

    def __init__(self, overview: Overview, host_id: str | None = None) -> None:
        self.overview = overview
        self.api = overview.api
        self.host_id = host_id
        self._loaded: dict[str, Event] = {}

    def ids(self) -> Iterable[str]:
        # The newest LOG_ROWS of the history (of this host: its index), as the audit's.
        events = self.api.event_log(host_id=self.host_id, limit=LOG_ROWS)
        self._loaded = {e.id: e for e in events}
        return list(self._loaded)

    def affected(self, change: Change) -> Iterable[str]:
        if isinstance(change.new, Event):
            self._loaded[change.id] = change.new
        return (change.id,)

    def cells(self, doc_id: str) -> Sequence[Cell] | None:
        event: Event | None = self._loaded.pop(doc_id, None) or self.api.get(Event, doc_id)
        if event is None or (self.host_id is not None and event.host_id != self.host_id):
            return None
        return (
            time_cell(event.time),
            status_cell(event.severity.value),
            Cell(event.type, "bold"),
            Cell(one_line(self.about(event), 24)),
            Cell(one_line(event.message, 160)),
        )

    def about(self, event: Event) -> str:
        """The VM, disk or plan an event names (by name), else its host, else "-"."""
        if event.target:
            vm = self.api.get(VirtualMachine, event.target)
            disk = self.api.get(VirtualStorageDevice, event.target) if vm is None else None
            if vm is not None or disk is not None:
                return vm.name if vm is not None else disk.name if disk is not None else "-"
            if self.api.get(Plan, event.target) is not None:
                return f"plan {short_id(event.target)}"
        if event.host_id:
            return self.overview.host_name(event.host_id)
        return event.target[:24] if event.target else "-"
