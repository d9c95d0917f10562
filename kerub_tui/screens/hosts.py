"""Adding a host (key shown and accepted, progress followed live) and a host's detail screen."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Footer, Input, Sparkline, Static

from ..api import ConsoleQueries
from ..core.bus import Change
from ..core.models import (
    Event,
    Host,
    HostConfiguration,
    HostDynamic,
    VirtualStorageDevice,
)
from ..core.names import InvalidName, check_address, check_name, check_user
from ..core.sizes import format_size
from .base import DetailBody, KerubScreen
from .format import STATUS_STYLES, DataGrid, ago, data, percent, safe, timestamp
from .forms import FieldError, FormField, int_value
from .graph import MetricsPanel
from .history import BUCKETS, cpu_busy, memory_used_percent
from .live import MISSING, LiveTable
from .rows import SIMULATED_STYLE, DiskRows, EventRows, VmRows


class AddHostScreen(KerubScreen, inherit_bindings=False):
    """Address, port, user and key; then the host's key to accept; then connection and discovery."""

    view = "add-host"
    help_section = "Add host"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="screen.back"),
        Binding("tab", "app.focus_next", "Next field", show=False, id="screen.focus_next"),
        Binding("shift+tab", "app.focus_previous", "Previous field", show=False, id="screen.focus_previous"),
        Binding("ctrl+s", "connect", "Fetch key", id="addhost.connect"),
        Binding("ctrl+y", "accept", "Accept key and add", id="addhost.accept"),
    ]

    DEFAULT_CSS = """
    AddHostScreen VerticalScroll { padding: 0 1; }
    AddHostScreen #addhost-title { text-style: bold; padding: 1 0 0 0; }
    AddHostScreen #addhost-key { display: none; border: round $warning; padding: 0 1; height: auto; }
    AddHostScreen #addhost-key.-shown { display: block; }
    AddHostScreen #addhost-key Horizontal { height: auto; align: right middle; }
    AddHostScreen #addhost-key Button { margin-left: 2; }
    AddHostScreen #addhost-error { color: $error; text-style: bold; display: none; height: auto; }
    AddHostScreen #addhost-error.-shown { display: block; }
    AddHostScreen #addhost-progress { height: auto; color: $text; }
    AddHostScreen #addhost-buttons { height: auto; padding: 1 0 0 16; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.fetched: tuple[str, str] | None = None  # (public key line, fingerprint)
        self.params: dict[str, Any] | None = None
        self.host_id: str | None = None
        self.progress: list[str] = []
        self.busy = False

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static("Add a host", id="addhost-title")
            yield FormField("Address", Input(placeholder="10.0.0.11 or kvm1.example.net", id="address"),
                            key="address")
            yield FormField("Port", Input("22", type="integer", id="port"), key="port")
            yield FormField("User", Input("root", id="user"), key="user")
            yield FormField("Key file", Input(placeholder="empty: kerub-tui's own key and the ssh agent",
                                              id="identity"), key="identity")
            yield FormField("Name", Input(placeholder="empty: the address", id="name"), key="name")
            with Horizontal(id="addhost-buttons"):
                yield Button("Fetch host key [^s]", id="connect", variant="primary", compact=True)
            yield Static("", id="addhost-error", markup=False)
            with Vertical(id="addhost-key"):
                yield Static("", id="addhost-key-text", markup=False)
                with Horizontal():
                    yield Button("Cancel", id="reject", compact=True)
                    yield Button("Accept and add [^y]", id="accept", variant="warning", compact=True)
            yield Static("", id="addhost-progress", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#address", Input).focus()

    # --- step 1: the form ---------------------------------------------------------------------

    def _field(self, key: str) -> FormField:
        return self.query_one(f"#field-{key}", FormField)

    def read_form(self) -> dict[str, Any] | None:
        """The validated form, or None with every problem shown next to its field."""
        values: dict[str, Any] = {}
        problems: dict[str, str] = {}
        address = self._field("address").value
        try:
            values["address"] = check_address(address)
        except InvalidName as error:
            problems["address"] = str(error)
        try:
            values["port"] = int_value(self._field("port").value or "22", "port", "port", minimum=1, maximum=65535)
        except FieldError as error:
            problems["port"] = str(error)
        try:
            values["user"] = check_user(self._field("user").value or "root")
        except InvalidName as error:
            problems["user"] = str(error)
        identity = self._field("identity").value
        if identity:
            path = Path(identity).expanduser()
            if not path.is_file():
                problems["identity"] = f"no key file at {path}"
            values["identity"] = str(path)
        else:
            values["identity"] = None
        name = self._field("name").value or (address.split(".")[0] if address and not address[0].isdigit() else address)
        try:
            values["name"] = check_name(name.replace(":", "-"), "host name") if name else None
        except InvalidName as error:
            problems["name"] = str(error)
        for key in ("address", "port", "user", "identity", "name"):
            self._field(key).set_error(problems.get(key))
        return None if problems else values

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_connect()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "connect":
            self.action_connect()
        elif event.button.id == "accept":
            self.action_accept()
        elif event.button.id == "reject":
            self._show_key(None)
            self._say("Key not accepted: nothing was added.")

    def action_connect(self) -> None:
        if self.busy or self.kerub.refuse_readonly("add host", "add_host"):
            return
        params = self.read_form()
        if params is None:
            return
        self.params = params
        self._error(None)
        self._show_key(None)
        self.progress = []
        self._say(f"Connecting to {params['address']}:{params['port']} for its host key…")
        self.busy = True

        async def fetch() -> tuple[str, str]:
            return await self.kerub.controller.fetch_host_key(params["address"], params["port"])

        def fetched(result: tuple[str, str]) -> None:
            self.busy = False
            self.fetched = (str(result[0]), str(result[1]))
            self._show_key(self.fetched)

        self.kerub.perform("fetch host key", fetch, action="fetch_host_key", after=fetched,
                           on_error=self._failed_step, group="add-host")

    # --- step 2: the key ----------------------------------------------------------------------

    def _show_key(self, fetched: tuple[str, str] | None) -> None:
        box = self.query_one("#addhost-key")
        box.set_class(fetched is not None, "-shown")
        if fetched is None:
            self.fetched = None
            return
        key_line, fingerprint = fetched
        assert self.params is not None
        kind = key_line.split(" ", 1)[0]
        self.query_one("#addhost-key-text", Static).update(safe(
            f"{self.params['address']}:{self.params['port']} presents this {kind} host key:\n\n"
            f"  {fingerprint}\n\n"
            "Compare it with the host's own (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub on its console)\n"
            "before you accept it: kerub-tui will refuse this host if the key ever changes."
        ))
        self.query_one("#accept", Button).focus()

    def action_accept(self) -> None:
        if self.fetched is None or self.params is None or self.busy:
            return
        if self.kerub.refuse_readonly("add host", "add_host"):
            return
        params = dict(self.params, fingerprint=self.fetched[1])
        self._show_key(None)
        self._say(f"Key {params['fingerprint']} accepted. Adding {params['name']}…")
        self.busy = True

        async def add() -> Host:
            return await self.kerub.controller.add_host(**params)

        def added(host: Host) -> None:
            self.busy = False
            self.host_id = host.id
            self._say(f"Added {host.name}. Its status and discovery continue to show below; esc goes back.")
            self._follow(host.id)

        self.kerub.perform(f"add host {params['name']}", add, action="add_host", after=added,
                           on_error=self._failed_step,
                           group="add-host")

    # --- step 3: progress ---------------------------------------------------------------------

    def _failed_step(self, message: str) -> None:
        self.busy = False
        self._error(message)
        self._say("Nothing was added." if self.host_id is None else "")

    def _error(self, message: str | None) -> None:
        widget = self.query_one("#addhost-error", Static)
        widget.set_class(bool(message), "-shown")
        widget.update(f"✗ {safe(message)}" if message else "")

    def _say(self, line: str) -> None:
        if line:
            self.progress.append(safe(line, limit=1000).replace("\n", " "))
        self.query_one("#addhost-progress", Static).update("\n".join(self.progress[-12:]))

    def _follow(self, host_id: str) -> None:
        api = self.kerub.controller
        dyn = api.get(HostDynamic, host_id)
        if dyn is not None:
            self._say(f"status: {dyn.status.value}" + (f" ({dyn.status_reason})" if dyn.status_reason else ""))
        host = api.get(Host, host_id)
        if host is not None and host.capabilities is not None:
            self._say(discovery_summary(host))

    def on_changes(self, changes: Sequence[Change]) -> None:
        if self.params is None:
            return
        for change in changes:
            new = change.new
            if self.host_id is None and change.kind == "host" and isinstance(new, Host) \
                    and new.name == self.params.get("name"):
                self.host_id = new.id
            if self.host_id is None or (change.id != self.host_id and not (
                    isinstance(new, Event) and new.host_id == self.host_id)):
                continue
            if change.kind == "host-dynamic" and isinstance(new, HostDynamic):
                if not isinstance(change.old, HostDynamic) or change.old.status != new.status:
                    self._say(f"status: {new.status.value}"
                              + (f" ({new.status_reason})" if new.status_reason else ""))
            elif change.kind == "host" and isinstance(new, Host) and new.capabilities is not None and (
                    not isinstance(change.old, Host) or change.old.capabilities is None):
                self._say(discovery_summary(new))
            elif isinstance(new, Event) and change.old is None:
                self._say(f"{new.type}: {new.message}")


def discovery_summary(host: Host) -> str:
    caps = host.capabilities
    if caps is None:
        return "discovery: not yet"
    storage = ", ".join(f"{s.id} {format_size(s.free_bytes)} free" for s in caps.storage) or "no storage found"
    kvm = "KVM" if caps.hypervisor.kvm else f"no KVM ({caps.hypervisor.reason or 'unknown'})"
    return (f"discovered: {caps.os.pretty_name or caps.os.id}, {caps.cpu.cpus} CPUs, "
            f"{format_size(caps.memory_bytes)} memory, {kvm}; {storage}")


# --- host detail -----------------------------------------------------------------------------


class HostVmRows(VmRows):
    title = "VMs on this host"
    kinds = frozenset({"vm", "vm-dynamic", "event", "host-dynamic", "plan"})

    def __init__(self, overview: Any, host_id: str) -> None:
        super().__init__(overview)
        self.host_id = host_id

    def ids(self) -> Iterable[str]:
        return sorted(self.api.vms_on_host(self.host_id))

    def affected(self, change: Change) -> Iterable[str]:
        return super().affected(change) if change.kind != "host" else ()

    def cells(self, doc_id: str) -> Any:
        if self.api.host_of_vm(doc_id) != self.host_id:
            return None
        return super().cells(doc_id)

    def sort_value(self, doc_id: str, column: str) -> object:
        return super().sort_value(doc_id, column) if self.api.host_of_vm(doc_id) == self.host_id else MISSING

    def sort_values(self, column: str) -> dict[str, object] | None:
        return None  # this host's VMs only: row by row (a few)


class HostDiskRows(DiskRows):
    title = "Storage on this host"

    def __init__(self, overview: Any, host_id: str) -> None:
        super().__init__(overview)
        self.host_id = host_id

    def ids(self) -> Iterable[str]:
        return sorted(self.api.disks_on_host(self.host_id))

    def cells(self, doc_id: str) -> Any:
        if doc_id not in self.api.disks_on_host(self.host_id):
            return None
        return super().cells(doc_id)

    def sort_value(self, doc_id: str, column: str) -> object:
        return super().sort_value(doc_id, column) if doc_id in self.api.disks_on_host(self.host_id) else MISSING

    def sort_values(self, column: str) -> dict[str, object] | None:
        return None  # this host's disks only: row by row (a few)


class HostDetailScreen(KerubScreen, inherit_bindings=False):
    view = "host"
    help_section = "Host detail"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="screen.back"),
        Binding("tab", "app.focus_next", "Next table", show=False, id="screen.focus_next"),
        Binding("shift+tab", "app.focus_previous", "Previous table", show=False, id="screen.focus_previous"),
        Binding("E", "evacuate", "Evacuate", id="host.evacuate"),
        Binding("ctrl+d", "remove", "Remove", id="host.remove"),
        Binding("K", "rekey", "Accept new key", show=False, id="host.rekey"),
        Binding("R", "rediscover", "Rediscover", show=False, id="host.rediscover"),
        Binding("ctrl+k", "fence", "Fence (it is off)", show=False, id="host.fence"),
        Binding("m", "metrics_range", "Graph range", id="host.metrics_range"),
    ]

    DEFAULT_CSS = """
    HostDetailScreen #host-title { height: 1; background: $panel; padding: 0 1; }
    HostDetailScreen #host-body { height: 1fr; }
    HostDetailScreen .column { width: 1fr; height: auto; }
    HostDetailScreen #host-columns { height: auto; }
    HostDetailScreen .panel { border: round $panel-lighten-2; height: auto; padding: 0 1; }
    HostDetailScreen Sparkline { height: 2; margin: 0 0 1 0; }
    HostDetailScreen LiveTable { height: auto; max-height: 12; }
    HostDetailScreen.-narrow #host-columns { layout: vertical; }
    """

    def __init__(self, host_id: str) -> None:
        super().__init__()
        self.host_id = host_id

    def compose(self) -> ComposeResult:
        overview = self.kerub.overview
        yield Static("", id="host-title")
        with DetailBody(id="host-body"):
            with Horizontal(id="host-columns"):
                with Vertical(classes="column"):
                    figures = Vertical(Static("", id="host-figures"),
                                       Static("CPU busy, last 10 minutes", classes="spark-label"),
                                       Sparkline([], id="cpu-spark"),
                                       Static("Memory used, last 10 minutes", classes="spark-label"),
                                       Sparkline([], id="mem-spark"),
                                       classes="panel", id="host-live")
                    figures.border_title = "Live"
                    yield figures
                    host = self.kerub.controller.get(Host, self.host_id)
                    facts = host.capabilities if host is not None else None
                    yield MetricsPanel("host", self.host_id, id="host-history",
                                       memory_top=float(facts.memory_bytes) if facts and facts.memory_bytes else None)
                    services = Static("", id="host-services", classes="panel")
                    services.border_title = "Services set up by kerub-tui"
                    yield services
                with Vertical(classes="column"):
                    caps = Static("", id="host-capabilities", classes="panel")
                    caps.border_title = "Capabilities"
                    yield caps
            vms = LiveTable(HostVmRows(overview, self.host_id), id="host-vms")
            disks = LiveTable(HostDiskRows(overview, self.host_id), id="host-disks")
            events = LiveTable(EventRows(overview, self.host_id), id="host-events")
            for table in (vms, disks, events):
                table.prompt_filter = self.kerub.prompt_filter
                yield table
        yield Footer()

    def on_mount(self) -> None:
        self.set_class(self.app.size.width < 110, "-narrow")
        self.repaint()
        self.call_after_refresh(self._open_at_top)

    def _open_at_top(self) -> None:
        """Open at the top, the Live panel in view; focus the VM table if it shows there too, else the
        body (tab reaches the tables, each scrolled into view; shift+tab comes back to the body)."""
        body = self.query_one("#host-body", DetailBody)
        body.scroll_home(animate=False, immediate=True)
        vms = self.query_one("#host-vms", LiveTable)
        fits = vms.region.y + min(vms.region.height, 3) <= body.region.bottom
        (vms if fits else body).focus(scroll_visible=False)

    def on_resize(self, event: Any) -> None:
        self.set_class(event.size.width < 110, "-narrow")

    def action_metrics_range(self) -> None:
        self.query_one("#host-history", MetricsPanel).next_range()

    def on_changes(self, changes: Sequence[Change]) -> None:
        if any(c.id == self.host_id for c in changes):
            if self.kerub.controller.get(Host, self.host_id) is None:
                self.notify("this host was removed", severity="warning")
                if self.app.screen is self:
                    self.app.pop_screen()
                return
            self.repaint()

    def repaint(self) -> None:
        api = self.kerub.controller
        host: Host | None = api.get(Host, self.host_id)
        if host is None:
            return
        dyn: HostDynamic | None = api.get(HostDynamic, self.host_id)
        title = Text()
        title.append_text(data(f"Host {host.name}", style="bold"))
        title.append_text(data(f"  {host.user}@{host.address}:{host.port}  "))
        status = dyn.status.value if dyn else "unknown"
        title.append(status, style=STATUS_STYLES.get(status, ""))
        if host.recycling:
            title.append("  maintenance (evacuating)", style="bold magenta")
        if host.simulated:
            title.append("  simulated host", style=f"bold {SIMULATED_STYLE}")
        if host.fingerprint:
            title.append_text(data(f"  {host.fingerprint}", style="dim"))
        if host.capabilities is not None and host.capabilities.stale:
            title.append("  facts stale", style="bold yellow")
        self.query_one("#host-title", Static).update(title)
        self.query_one("#host-figures", Static).update(live_figures(host, dyn))
        history = self.kerub.overview.history
        self.query_one("#cpu-spark", Sparkline).data = [v or 0.0 for v in history.series(self.host_id, "cpu", BUCKETS)]
        self.query_one("#mem-spark", Sparkline).data = [v or 0.0 for v in history.series(self.host_id, "mem", BUCKETS)]
        self.query_one("#host-capabilities", Static).update(capabilities_table(host, api))
        self.query_one("#host-services", Static).update(services_text(api.get(HostConfiguration, self.host_id), api))

    def action_evacuate(self) -> None:
        self.kerub.actions.evacuate_hosts([self.host_id])

    def action_remove(self) -> None:
        self.kerub.actions.remove_hosts([self.host_id])

    def action_rediscover(self) -> None:
        self.kerub.actions.rediscover_host(self.host_id)

    def action_rekey(self) -> None:
        self.kerub.actions.rekey_host(self.host_id)

    def action_fence(self) -> None:
        self.kerub.actions.fence_host(self.host_id)

    def on_live_table_opened(self, event: LiveTable.Opened) -> None:
        event.stop()
        if event.table.id == "host-vms":
            self.kerub.open_vm(event.doc_id)
        elif event.table.id == "host-disks":
            self.kerub.open_disk(event.doc_id)


def live_figures(host: Host, dyn: HostDynamic | None) -> DataGrid:
    table = DataGrid.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column()
    if dyn is None:
        table.add_row("status", "no report from this host yet")
        return table
    total = host.capabilities.memory_bytes if host.capabilities else None
    table.add_row("status", f"{dyn.status.value}" + (f" — {dyn.status_reason}" if dyn.status_reason else ""))
    table.add_row("last report", f"{timestamp(dyn.last_seen)} ({ago(dyn.last_seen)} ago)" if dyn.last_seen else "-")
    table.add_row("CPU busy", f"{percent(cpu_busy(dyn))}  (user {percent(dyn.cpu_user)}, "
                              f"system {percent(dyn.cpu_system)})")
    used = memory_used_percent(dyn, total)
    table.add_row("memory", f"{format_size(dyn.memory_used)} used of {format_size(total)} ({percent(used)}), "
                            f"swap {format_size(dyn.swap_used)}")
    ksm = dyn.ksm
    if ksm.available:
        table.add_row("KSM", f"{'on' if ksm.run else 'off'}, {format_size(ksm.pages_sharing * 4096)} saved, "
                             f"{ksm.full_scans} full scans")
    else:
        table.add_row("KSM", "not available")
    if dyn.cpu_temperature is not None:
        table.add_row("temperature", f"{dyn.cpu_temperature:.0f} °C")
    for capability, free in sorted(dyn.storage_free.items()):
        table.add_row("free", f"{capability}: {format_size(free)}")
    for capability, pvs in sorted(dyn.storage_pvs.items()):
        if len(pvs) > 1:  # a VG of several disks: each one's free space (a failing one is listed below)
            table.add_row("PVs", data(f"{capability}: " + ", ".join(f"{p.name} {format_size(p.free_bytes)} free"
                                                                  for p in pvs)))
    if dyn.failing_devices:
        table.add_row("failing", data(", ".join(dyn.failing_devices), style="bold red"))
    return table


def capabilities_table(host: Host, api: ConsoleQueries) -> DataGrid:
    table = DataGrid.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column()
    caps = host.capabilities
    if caps is None:
        table.add_row("discovery", "not done yet")
        return table
    for entry in caps.stale:
        kept = f"last good reading of {timestamp(entry.read_at)}" if entry.read_at else "never read"
        table.add_row(Text("stale", style="bold yellow"),
                      data(f"{entry.section}: {kept}; could not be read since {timestamp(entry.since)}: "
                           f"{entry.reason}", style="yellow"))
    cpu = caps.cpu
    table.add_row("system", f"{caps.os.pretty_name or caps.os.id} {caps.os.version_id}".strip())
    table.add_row("kernel", caps.os.kernel or "-")
    table.add_row("CPU", f"{cpu.model or '-'} ({cpu.architecture})")
    table.add_row("", f"{cpu.cpus} CPUs = {cpu.sockets} socket(s) × {cpu.cores_per_socket} cores × "  # noqa: RUF001
                      f"{cpu.threads_per_core} threads" + (f", up to {cpu.max_mhz:.0f} MHz" if cpu.max_mhz else ""))
    virt = [f for f in ("vmx", "svm") if f in cpu.flags]
    table.add_row("", f"{len(cpu.flags)} flags" + (f", {' '.join(virt)}" if virt else ", no vmx/svm"))
    table.add_row("memory", format_size(caps.memory_bytes))
    hv = caps.hypervisor
    table.add_row("hypervisor", f"libvirt {hv.libvirt_version or '-'}, "
                                + ("KVM" if hv.kvm else f"no KVM ({hv.reason or 'unknown'})"))
    accel = api.accelerator(host.id)
    if accel is not None:
        table.add_row("accelerator", data(f"{accel.name} ({accel.why})",  # why quotes host text
                                          style="yellow" if accel.forced_tcg else ""))
    if caps.dmi is not None:
        dmi = caps.dmi
        table.add_row("system", f"{dmi.system_manufacturer or '-'} {dmi.system_product or ''}".strip())
        extras = []
        if dmi.power_supplies is not None:
            extras.append(f"{dmi.power_supplies} power supplies")
        if dmi.ecc is not None:
            extras.append("ECC memory" if dmi.ecc else "no ECC")
        if extras:
            table.add_row("", ", ".join(extras))
    unusable = api.unusable_storage(host.id)
    for storage in caps.storage:
        table.add_row("storage", f"{storage.id}: {format_size(storage.free_bytes)} free of "
                                 f"{format_size(storage.size_bytes)}")
        if storage.id in unusable:
            table.add_row("", data(f"unusable, takes no new disks: {unusable[storage.id]}", style="red"))
    tools = sorted(name for name, present in caps.tools.items() if present)
    if tools:
        table.add_row("tools", " ".join(tools))
    table.add_row("discovered", timestamp(caps.discovered_at))
    if host.simulated:
        table.add_row("simulated", Text("yes: kerub-tui's simulator answers for this machine; nothing real runs",
                                        style=SIMULATED_STYLE))
    return table


def services_text(config: HostConfiguration | None, api: ConsoleQueries) -> Text:
    text = Text()
    if config is None or not (config.exports or config.iscsi_targets or config.mounts or config.thin_pools
                              or config.ssh_trust):
        text.append("none", style="dim")
        return text

    def disk(disk_id: str | None) -> str:
        doc = api.get(VirtualStorageDevice, disk_id) if disk_id else None
        return f" (disk {doc.name})" if doc is not None else ""

    lines = []
    lines += [f"NFS export {e.path} to {e.clients} via {e.server}{disk(e.disk_id)}" for e in config.exports]
    lines += [f"iSCSI target {t.iqn} lun {t.lun_path}{disk(t.disk_id)}" for t in config.iscsi_targets]
    lines += [f"mount {m.source} on {m.target} ({m.fstype}){disk(m.disk_id)}" for m in config.mounts]
    lines += [f"thin pool {p.vg}/{p.name} {format_size(p.size_bytes)}" for p in config.thin_pools]
    for host_id in config.ssh_trust:
        host = api.get(Host, host_id)
        lines.append(f"accepts SSH from {host.name if host else host_id[:8]}")
    text.append_text(data("\n".join(lines)))
    return text
