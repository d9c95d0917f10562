"""A VM's editor (create and edit: sizes, disks new or existing, NICs, expectations) and detail."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

from pydantic import ValidationError
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Footer, Input, Select, Static

from ..api import ConsoleQueries, NewDisk, VmPlans, cloud_init_summary
from ..core.bus import Change
from ..core.models import (
    DiskLink,
    Nic,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDevice,
    VmStatus,
)
from ..core.names import InvalidName, check_disk_name, check_name
from ..core.sizes import format_size
from .actions import incident_bindings
from .base import KerubScreen
from .expectations import ExpectationEditor, display_spec
from .format import STATUS_STYLES, DataGrid, data, percent
from .forms import (
    EditorScreen,
    FieldError,
    FormField,
    int_value,
    pydantic_errors,
    size_value,
)
from .graph import MetricsPanel
from .preview import ScreenPreview, attach_serial

BUSES = ("virtio", "scsi", "sata", "ide")
NIC_MODELS = ("virtio", "e1000", "rtl8139")

_EDITOR_BINDINGS: list[BindingType] = [
    Binding("escape", "back", "Cancel", id="screen.back"),
    Binding("tab", "app.focus_next", "Next field", show=False, id="screen.focus_next"),
    Binding("shift+tab", "app.focus_previous", "Previous field", show=False, id="screen.focus_previous"),
    Binding("ctrl+s", "save", "Save", id="editor.save"),
]

EDITOR_CSS = """
{name} VerticalScroll {{ padding: 0 1; }}
{name} .editor-title {{ text-style: bold; padding: 1 0 0 0; }}
{name} .section {{ height: auto; border: round $panel-lighten-2; padding: 0 1; }}
{name} .row {{ height: auto; margin-bottom: 1; }}
{name} .row Select {{ width: 1fr; }}
{name} .row Input {{ width: 1fr; }}
{name} .row Button {{ min-width: 5; width: 5; }}
{name} .row-error {{ color: $error; display: none; }}
{name} .row-error.-shown {{ display: block; }}
{name} .add-buttons {{ height: auto; }}
{name} .add-buttons Button {{ margin-right: 1; }}
{name} #editor-error {{ color: $error; text-style: bold; display: none; height: auto; }}
{name} #editor-error.-shown {{ display: block; }}
{name} #editor-buttons {{ height: auto; align: right middle; padding: 1 0; }}
{name} #editor-buttons Button {{ margin-left: 2; }}
"""


class DiskRow(Vertical):
    """One disk of the VM: an existing disk, or a new one (name and size) created on save."""

    DEFAULT_CSS = "DiskRow { height: auto; }"

    def __init__(self, api: ConsoleQueries, *, link: DiskLink | None = None, new: bool = False) -> None:
        super().__init__(classes="disk-row")
        self.api = api
        self.link = link
        self.new = new

    def compose(self) -> ComposeResult:
        with Horizontal(classes="row"):
            if self.new:
                yield Input(placeholder="new disk name", classes="disk-name", compact=True)
                yield Input(placeholder="size, e.g. 10G", classes="disk-size", compact=True)
            else:
                disks = sorted(self.api.documents(VirtualStorageDevice), key=lambda d: d.name)
                options = [(f"{d.name} ({format_size(d.size)})", d.id) for d in disks]
                yield Select(options, value=self.link.disk_id if self.link else Select.NULL,
                             prompt="existing disk…", classes="disk-existing", compact=True)
                yield Select([("disk", "disk"), ("CD-ROM", "cdrom")], value=self.link.device if self.link else "disk",
                             allow_blank=False, classes="disk-device", compact=True)
            yield Select([(b, b) for b in BUSES], value=self.link.bus if self.link else "virtio",
                         allow_blank=False, classes="disk-bus", compact=True)
            yield Button("✕", classes="remove-row", tooltip="remove this disk from the VM", compact=True)
        yield Static("", classes="row-error", markup=False)

    def set_error(self, message: str | None) -> None:
        self.set_class(bool(message), "-invalid")  # the editor scrolls to the first one marked
        error = self.query_one(".row-error", Static)
        error.set_class(bool(message), "-shown")
        error.update(message or "")


class NicRow(Vertical):
    DEFAULT_CSS = "NicRow { height: auto; }"

    def __init__(self, nic: Nic | None = None) -> None:
        super().__init__(classes="nic-row")
        self.nic = nic

    def compose(self) -> ComposeResult:
        nic = self.nic
        source = "bridge" if nic is not None and nic.bridge else "network"
        with Horizontal(classes="row"):
            yield Select([("network", "network"), ("bridge", "bridge")], value=source, allow_blank=False,
                         classes="nic-source", compact=True)
            yield Input((nic.network or nic.bridge or "") if nic else "default", placeholder="name",
                        classes="nic-name", compact=True)
            yield Select([(m, m) for m in NIC_MODELS], value=nic.model if nic else "virtio", allow_blank=False,
                         classes="nic-model", compact=True)
            yield Input((nic.mac or "") if nic else "", placeholder="MAC (optional)", classes="nic-mac", compact=True)
            yield Button("✕", classes="remove-row", tooltip="remove this NIC", compact=True)
        yield Static("", classes="row-error", markup=False)

    def set_error(self, message: str | None) -> None:
        self.set_class(bool(message), "-invalid")  # the editor scrolls to the first one marked
        error = self.query_one(".row-error", Static)
        error.set_class(bool(message), "-shown")
        error.update(message or "")


class VmEditorScreen(EditorScreen, inherit_bindings=False):
    what = "VM"

    @property
    def action(self) -> str:
        """The API action saving does."""
        return "update_vm" if self.vm_id else "create_vm"
    view = "vm-editor"
    help_section = "VM editor"
    BINDINGS: ClassVar[list[BindingType]] = list(_EDITOR_BINDINGS)
    DEFAULT_CSS = EDITOR_CSS.format(name="VmEditorScreen")

    def __init__(self, vm_id: str | None = None) -> None:
        super().__init__()
        self.vm_id = vm_id

    @property
    def vm(self) -> VirtualMachine | None:
        return self.kerub.controller.get(VirtualMachine, self.vm_id) if self.vm_id else None

    def compose(self) -> ComposeResult:
        vm = self.vm
        api = self.kerub.controller
        with VerticalScroll():
            yield Static(f"Edit VM {vm.name}" if vm else "New VM", classes="editor-title")
            yield FormField("Name", Input(vm.name if vm else "", placeholder="web1", id="name"), key="name")
            yield FormField("vCPUs", Input(str(vm.cpus) if vm else "1", type="integer", id="cpus"), key="cpus")
            yield FormField("Memory min", Input(format_size(vm.memory_min) if vm else "512M", id="memory_min"),
                            key="memory_min", help="guaranteed; the host must have it free")
            yield FormField("Memory max", Input(format_size(vm.memory_max) if vm else "", id="memory_max",
                                                placeholder="empty: same as min"), key="memory_max")
            yield FormField("Architecture", Input(vm.architecture if vm else "x86_64", id="architecture"),
                            key="architecture")
            yield FormField("Boot order", Input(",".join(vm.boot) if vm else "hd", id="boot"), key="boot",
                            help="hd, cdrom, network: comma-separated, the first that boots wins")
            yield FormField("Graphics", Select([("SPICE", "spice"), ("VNC", "vnc")], allow_blank=False,
                                               value=vm.graphics if vm else "spice", id="graphics"),
                            key="graphics", help="the protocol of its screen for a viewer (from its next start)")
            current = vm.cloud_init if vm else None
            keep = " (empty: keep what is set)" if current is not None else ""
            yield FormField("SSH key files", Input("", id="ssh_keys", placeholder="~/.ssh/id_ed25519.pub ..."),
                            key="ssh_keys", help=f"cloud-init: public key files, space-separated{keep}"
                            + (f"; now {len(current.ssh_keys)} key(s)" if current is not None else ""))
            yield FormField("User data file", Input("", id="user_data", placeholder="user-data.yaml"),
                            key="user_data", help=f"cloud-init user data, sent as given, never logged{keep}")
            yield FormField("Network config file", Input("", id="network_config", placeholder="network-config.yaml"),
                            key="network_config", help=f"cloud-init network config{keep}")
            with Vertical(classes="section", id="disks-section") as disks:
                disks.border_title = "Disks"
                for link in vm.disks if vm else []:
                    yield DiskRow(api, link=link)
                with Horizontal(classes="add-buttons"):
                    yield Button("+ existing disk", id="add-existing-disk", compact=True)
                    yield Button("+ new disk", id="add-new-disk", compact=True)
            with Vertical(classes="section", id="nics-section") as nics:
                nics.border_title = "NICs"
                for nic in vm.nics if vm else []:
                    yield NicRow(nic)
                with Horizontal(classes="add-buttons"):
                    yield Button("+ NIC", id="add-nic", compact=True)
            yield ExpectationEditor("vm", vm.expectations if vm else [], api, id="expectations")
            yield Static("", id="editor-error", markup=False)
            with Horizontal(id="editor-buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Save [^s]", id="save", variant="primary", compact=True)
        yield Footer()

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        button = event.button
        if button.id == "save":
            event.stop()
            self.action_save()
        elif button.id == "cancel":
            event.stop()
            self.app.pop_screen()
        elif button.id in ("add-existing-disk", "add-new-disk"):
            event.stop()
            disk_row = DiskRow(self.kerub.controller, new=button.id == "add-new-disk")
            await self.query_one("#disks-section").mount(disk_row, before=self.query_one("#disks-section .add-buttons"))
            disk_row.query(".disk-name, .disk-existing").first().focus()
        elif button.id == "add-nic":
            event.stop()
            nic_row = NicRow()
            await self.query_one("#nics-section").mount(nic_row, before=self.query_one("#nics-section .add-buttons"))
            nic_row.query_one(".nic-name", Input).focus()
        elif button.has_class("remove-row"):
            event.stop()
            parent = button.parent.parent if button.parent is not None else None
            if isinstance(parent, (DiskRow, NicRow)):
                parent.remove()

    def read_form(self) -> dict[str, Any] | None:
        """Everything the form says, validated; None with each problem shown where it is."""
        api = self.kerub.controller
        problems: dict[str, str] = {}
        values: dict[str, Any] = {}
        for key in ("name", "cpus", "memory_min", "memory_max", "architecture", "boot", "ssh_keys", "user_data",
                    "network_config"):
            self._field(key).set_error(None)
        try:
            values["name"] = check_name(self._field("name").value, "VM name")
            other = api.find_by_name(VirtualMachine, values["name"])
            if other is not None and other.id != self.vm_id:  # said here: the controller's refusal sits below
                problems["name"] = f"a VM named {values['name']!r} already exists"
        except InvalidName as error:
            problems["name"] = str(error)
        try:
            values["cpus"] = int_value(self._field("cpus").value, "cpus", "vCPUs", minimum=1, maximum=512)
        except FieldError as error:
            problems["cpus"] = str(error)
        try:
            values["memory_min"] = size_value(self._field("memory_min").value, "memory_min", "minimum memory")
        except FieldError as error:
            problems["memory_min"] = str(error)
        max_text = self._field("memory_max").value
        try:
            values["memory_max"] = size_value(max_text, "memory_max", "maximum memory") if max_text \
                else values.get("memory_min")
        except FieldError as error:
            problems["memory_max"] = str(error)
        values["architecture"] = self._field("architecture").value or "x86_64"
        values["boot"] = [d.strip() for d in str(self._field("boot").value or "hd").split(",") if d.strip()]
        values["graphics"] = self.query_one("#graphics", Select).value
        cloud_init = self._cloud_init(problems)
        if cloud_init is not None:
            values["cloud_init"] = cloud_init
        # disks
        links: list[DiskLink] = []
        new_disks: list[tuple[str, int, str]] = []
        row_problems = False
        for row in self.query(DiskRow).results(DiskRow):
            row.set_error(None)
            bus = row.query_one(".disk-bus", Select).value
            if row.new:
                name = row.query_one(".disk-name", Input).value.strip()
                size_text = row.query_one(".disk-size", Input).value.strip()
                try:
                    check_disk_name(name)
                    size = size_value(size_text, "disk", "disk size")
                    if api.find_by_name(VirtualStorageDevice, name) is not None:
                        raise FieldError("disk", f"a disk named {name!r} already exists: add it as an existing disk")
                except (InvalidName, FieldError) as error:
                    row.set_error(str(error))
                    row_problems = True
                    continue
                new_disks.append((name, size, str(bus)))
            else:
                disk_id = row.query_one(".disk-existing", Select).value
                if disk_id is Select.NULL:
                    row.set_error("pick a disk, or remove this row")
                    row_problems = True
                    continue
                device = row.query_one(".disk-device", Select).value
                read_only = device == "cdrom" or bool(row.link and row.link.read_only)
                links.append(DiskLink.model_validate({"disk_id": str(disk_id), "bus": bus, "device": device,
                                                      "read_only": read_only}))
        ids = [link.disk_id for link in links]
        if len(set(ids)) != len(ids):
            self._error("the same disk is attached twice")
            row_problems = True
        # NICs
        nics: list[Nic] = []
        for nic_row in self.query(NicRow).results(NicRow):
            nic_row.set_error(None)
            source = nic_row.query_one(".nic-source", Select).value
            name = nic_row.query_one(".nic-name", Input).value.strip()
            mac = nic_row.query_one(".nic-mac", Input).value.strip() or None
            try:
                nics.append(Nic.model_validate({str(source): name, "mac": mac,
                                                "model": nic_row.query_one(".nic-model", Select).value}))
            except (ValidationError, InvalidName) as error:
                nic_row.set_error("; ".join(m for _, m in pydantic_errors(error)))
                row_problems = True
        values["disks"] = links
        values["nics"] = nics
        values["new_disks"] = new_disks
        values["expectations"] = list(self.query_one(ExpectationEditor).expectations)
        if not problems:
            try:
                VirtualMachine(**{k: v for k, v in values.items() if k != "new_disks"})
            except (ValidationError, InvalidName) as error:
                for loc, message in pydantic_errors(error):
                    key = str(loc[0]) if loc else "memory_max"
                    if key == "cloud_init":
                        key = "ssh_keys" if "ssh_keys" in map(str, loc) else "user_data"
                    problems[key if key in ("name", "cpus", "memory_min", "memory_max", "architecture", "boot",
                                            "ssh_keys", "user_data")
                             else "memory_max"] = message
        for key, message in problems.items():
            self._field(key).set_error(message)
        if problems or row_problems:
            if not row_problems or problems:
                self._error("fix the fields marked in red")
            return None
        self._error(None)
        return values

    def _cloud_init(self, problems: dict[str, str]) -> dict[str, Any] | None:
        """The cloud-init settings after this form: the files named read here (the console's side, as
        the command line does), what is not named kept; None when nothing changes."""
        import os

        from ..core.localfile import read_local_text

        vm = self.vm
        current = vm.cloud_init.model_dump() if vm is not None and vm.cloud_init is not None else None
        out = dict(current or {"ssh_keys": [], "user_data": None, "network_config": None})
        changed = False
        key_files = str(self._field("ssh_keys").value or "").split()
        if key_files:
            keys: list[str] = []
            for path in key_files:
                try:
                    text = read_local_text(os.path.expanduser(path), "ssh key file")
                except ValueError as error:
                    problems["ssh_keys"] = str(error)
                    return None
                keys += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
            out["ssh_keys"], changed = keys, True
        for key, what in (("user_data", "user data file"), ("network_config", "network config file")):
            path = str(self._field(key).value or "").strip()
            if path:
                try:
                    out[key] = read_local_text(os.path.expanduser(path), what)
                    changed = True
                except ValueError as error:
                    problems[key] = str(error)
                    return None
        return out if changed else None

    def saver(self, values: dict[str, Any]) -> Callable[[], Awaitable[VirtualMachine]]:
        controller = self.kerub.controller
        vm_id = self.vm_id

        async def save() -> VirtualMachine:
            # The controller's use case: the VM and its new disks are stored together, or nothing is.
            new_disks = [NewDisk(name=name, size=size, bus=bus) for name, size, bus in values["new_disks"]]
            fields: dict[str, Any] = dict(
                cpus=values["cpus"], memory_min=values["memory_min"], memory_max=values["memory_max"],
                architecture=values["architecture"], disks=list(values["disks"]), nics=values["nics"],
                expectations=values["expectations"], boot=values["boot"], graphics=values["graphics"])
            if "cloud_init" in values:
                fields["cloud_init"] = values["cloud_init"]
            if vm_id is None:
                return await controller.create_vm(values["name"], new_disks=new_disks, **fields)
            return await controller.update_vm(vm_id, name=values["name"], new_disks=new_disks, **fields)

        return save


class VmDetailScreen(KerubScreen, inherit_bindings=False):
    view = "vm"
    help_section = "VM detail"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="screen.back"),
        Binding("e", "edit", "Edit", id="vm.edit"),
        Binding("s", "start", "Start", id="vm.start"),
        Binding("S", "stop", "Stop", id="vm.stop"),
        Binding("c", "console", "Console", id="vm.console"),
        Binding("t", "serial", "Serial console", id="vm.serial"),
        Binding("v", "screen", "Take screen", id="vm.screen"),
        Binding("j", "eject", "Eject CD", id="vm.eject"),
        Binding("ctrl+d", "delete", "Delete", id="vm.delete"),
        Binding("m", "metrics_range", "Graph range", id="vm.metrics_range"),
        *incident_bindings("vm"),
    ]
    DEFAULT_CSS = """
    VmDetailScreen VerticalScroll { padding: 0 1; }
    VmDetailScreen .panel { height: auto; border: round $panel-lighten-2; padding: 0 1; }
    """

    def __init__(self, vm_id: str) -> None:
        super().__init__()
        self.vm_id = vm_id
        self._status: str | None = None  # the VM's status the screen was last taken at
        self._handed_over = False  # the terminal is the guest's serial console (App.suspend): nothing shows

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static("", id="vm-summary", classes="panel")
            vm = self.kerub.controller.get(VirtualMachine, self.vm_id)
            yield MetricsPanel("vm", self.vm_id, id="vm-history",
                               memory_top=float(vm.memory_max) if vm is not None else None)
            yield ScreenPreview(self.vm_id, id="vm-screen", classes="panel")
            yield Static("", id="vm-expectations", classes="panel")
            yield Static("", id="vm-explain", classes="panel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#vm-summary").border_title = "VM"
        self.query_one("#vm-expectations").border_title = "Expectations"
        self.query_one("#vm-explain").border_title = "Why it runs where it runs"
        self.repaint()
        self._status = self._vm_status()
        # its screen is taken when it is shown (on_screen_resume), which opening it is too
        self.app.app_suspend_signal.subscribe(self, self._terminal_handed_over, immediate=True)
        self.app.app_resume_signal.subscribe(self, self._terminal_back, immediate=True)

    def action_metrics_range(self) -> None:
        self.query_one("#vm-history", MetricsPanel).next_range()

    def on_screen_resume(self) -> None:
        # shown: opened, or back in view (a dialog or another screen closed): its screen as it is now
        if self.is_mounted:
            self.query_one(ScreenPreview).take()

    def _shown(self) -> bool:
        return self.app.screen is self and not self._handed_over

    def _terminal_handed_over(self, _app: object) -> None:
        self._handed_over = True

    def _terminal_back(self, _app: object) -> None:
        # back from the serial console: what the guest shows has likely changed meanwhile
        self._handed_over = False
        if self.is_mounted and self._shown():
            self.query_one(ScreenPreview).take()

    def _vm_status(self) -> str:
        dyn = self.kerub.controller.get(VirtualMachineDynamic, self.vm_id)
        return dyn.status.value if dyn is not None else "down"

    def on_changes(self, changes: Sequence[Change]) -> None:
        # Not on every host figure: the verdicts are rebuilt from a snapshot of the whole store.
        # A plan (waiting, rejected) and a host going down (lost) change what its status says.
        if any(c.id == self.vm_id or c.kind in ("event", "host", "disk", "disk-dynamic", "plan")
               or (c.kind == "host-dynamic" and getattr(c.old, "status", None) != getattr(c.new, "status", None))
               for c in changes):
            if self.kerub.controller.get(VirtualMachine, self.vm_id) is None:
                if self.app.screen is self:
                    self.notify("this VM was deleted", severity="warning")
                    self.app.pop_screen()
                return
            self.repaint()
            status = self._vm_status()
            if status != self._status and self._shown():
                self.query_one(ScreenPreview).take()  # started, stopped, paused: the screen changed
            self._status = status

    def repaint(self) -> None:
        api = self.kerub.controller
        vm: VirtualMachine | None = api.get(VirtualMachine, self.vm_id)
        if vm is None:
            return
        dyn: VirtualMachineDynamic | None = api.get(VirtualMachineDynamic, self.vm_id)
        overview = self.kerub.overview
        table = DataGrid.grid(padding=(0, 2))
        table.add_column(style="dim")
        table.add_column()
        table.add_row("name", data(vm.name, style="bold"))
        state = api.vm_state(vm.id)
        table.add_row("status", Text(state.label, style="dim" if state.stale else STATUS_STYLES.get(state.status, ""))
                      + data(f" on {overview.host_name(state.host_id)}" if state.host_id else ""))
        if state.reason:
            why = state.status in ("lost", "storage-lost", "unplaced") or state.stale
            table.add_row("why" if why else "", data(state.reason))
        table.add_row("size", f"{vm.cpus} vCPU, memory {format_size(vm.memory_min)}..{format_size(vm.memory_max)},"
                              f" {vm.architecture}")
        if dyn is not None and state.live:
            table.add_row("now", f"memory used {format_size(dyn.memory_used)}, CPU {percent(dyn.cpu_percent)}")
            if dyn.status is not VmStatus.down:
                graphical = (f"SPICE on {dyn.spice_address or '?'}:{dyn.spice_port}" if dyn.spice_port
                             else f"VNC on {dyn.vnc_address or '?'}:{dyn.vnc_port}" if dyn.vnc_port
                             else vm.graphics.upper())
                table.add_row("console", f"{graphical} (c opens it), serial (t attaches it)")
        elif dyn is not None and state.stale:  # its host is connecting: the figures as last seen
            table.add_row("last seen", Text(f"memory used {format_size(dyn.memory_used)}, CPU "
                                            f"{percent(dyn.cpu_percent)}", style="dim"))
        table.add_row("boot", ",".join(vm.boot))
        for link in vm.disks:
            disk = api.get(VirtualStorageDevice, link.disk_id)
            table.add_row("CD-ROM" if link.device == "cdrom" else "disk",
                          f"{disk.name if disk else link.disk_id} {format_size(disk.size) if disk else ''}"
                          f" ({link.bus}{', read-only' if link.read_only else ''})"
                          + (" (j ejects it)" if link.device == "cdrom" else ""))
        if vm.cloud_init is not None:
            table.add_row("cloud-init", cloud_init_summary(vm.cloud_init))
        for nic in vm.nics:
            table.add_row("NIC", f"{'network' if nic.network else 'bridge'} {nic.network or nic.bridge} "
                                 f"({nic.model}{', ' + nic.mac if nic.mac else ''})")
        for line in plan_lines(state.plans):
            table.add_row("plan", data(line))
        table.add_row("id", Text(vm.id, style="dim"))
        self.query_one("#vm-summary", Static).update(table)
        verdicts = api.verdicts("vm", vm.id)
        self.query_one("#vm-expectations", Static).update(
            expectation_states(vm.expectations, vm.id, overview, verdicts))
        self.run_worker(self._explain(vm.id), name="explain", group="explain", exclusive=True)

    async def _explain(self, vm_id: str) -> None:
        try:
            explanation = await self.kerub.controller.explain(vm_id)
        except Exception as error:  # the explanation is a help, never a reason to lose the screen
            explanation = f"no explanation available: {error}"
        if self.is_mounted:
            self.query_one("#vm-explain", Static).update(data(str(explanation)))

    def action_edit(self) -> None:
        self.kerub.open_vm_editor(self.vm_id)

    def action_start(self) -> None:
        self.kerub.actions.start_vms([self.vm_id])

    def action_stop(self) -> None:
        self.kerub.actions.stop_vms([self.vm_id])

    def action_console(self) -> None:
        self.kerub.actions.open_console(self.vm_id)

    def action_serial(self) -> None:
        attach_serial(self.kerub, self.vm_id)

    def action_screen(self) -> None:
        self.query_one(ScreenPreview).take(connect=True, reveal=True)

    def action_delete(self) -> None:
        self.kerub.actions.delete_vms([self.vm_id])

    def action_eject(self) -> None:
        self.kerub.actions.eject_vm(self.vm_id)

    def action_force_off(self) -> None:
        self.kerub.actions.force_off_vms([self.vm_id])

    def action_poweroff(self) -> None:
        self.kerub.actions.poweroff_vms([self.vm_id])

    def action_reboot(self) -> None:
        self.kerub.actions.reboot_vms([self.vm_id])

    def action_reset(self) -> None:
        self.kerub.actions.reset_vms([self.vm_id])

    def action_pause(self) -> None:
        self.kerub.actions.pause_vms([self.vm_id])

    def action_resume(self) -> None:
        self.kerub.actions.resume_vms([self.vm_id])

    def action_send_keys(self) -> None:
        self.kerub.actions.send_keys(self.vm_id)


def plan_lines(plans: VmPlans) -> list[str]:
    """The plans about a VM, one line each: waiting, running, and the last one the admin rejected."""
    lines = [f"{p.id[:8]} ({p.plan_kind}) awaits approval: :plans to approve or reject it" for p in plans.proposed]
    lines += [f"{p.id[:8]} ({p.plan_kind}) is {p.status.value}" for p in plans.active]
    if plans.rejected is not None:
        p = plans.rejected
        lines.append(f"{p.id[:8]} ({p.plan_kind}) was rejected by {p.decided_by or 'the admin'}; "
                     f"s (or vm start) asks for it again")
    return lines


def expectation_states(expectations: Sequence[Any], target_id: str, overview: Any,
                       verdicts: dict[int, str] | str | None = None) -> Text:
    """Each expectation, satisfied or violated with the reason: the planner's verdict when given,
    else the open violation events."""
    text = Text()
    if not expectations:
        text.append("none: the planner leaves this alone", style="dim")
        return text
    open_ = overview.open_violations(target_id)
    if isinstance(verdicts, str):
        text.append_text(data(verdicts + "\n", style="yellow"))
        verdicts = None
    for index, exp in enumerate(expectations):
        shown = display_spec(exp, overview.name_of)
        if verdicts is not None:
            reason = verdicts.get(index)
        else:
            spec = exp.spec()
            reason = open_.get(spec) or open_.get(shown) or next(
                (m for k, m in open_.items() if k.split(":")[0].split("@")[0] == exp.type), None)
        if reason is not None:
            text.append("✗ ", style="bold red")
            text.append_text(data(shown, style="bold"))
            text.append_text(data(f"\n    {reason}\n", style="red"))
        else:
            text.append("✓ ", style="green")
            text.append_text(data(f"{shown}\n"))
    text.rstrip()
    return text
