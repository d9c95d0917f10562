"""A disk's editor (name, size, read-only, expectations) and detail (allocations, sharing, users)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

from pydantic import ValidationError
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Footer, Input, Static, Switch

from ..core.bus import Change
from ..core.models import (
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
)
from ..core.names import InvalidName, check_disk_name, check_name
from ..core.sizes import format_size
from .base import KerubScreen
from .expectations import ExpectationEditor
from .format import DataGrid, data
from .forms import EditorScreen, FieldError, FormField, pydantic_errors, size_value
from .rows import alloc_path, redundancy_cell
from .vms import _EDITOR_BINDINGS, EDITOR_CSS, expectation_states


class DiskEditorScreen(EditorScreen, inherit_bindings=False):
    what = "disk"

    @property
    def action(self) -> str:
        """The API action saving does."""
        return "update_disk" if self.disk_id else "create_disk"
    view = "disk-editor"
    help_section = "Disk editor"
    BINDINGS: ClassVar[list[BindingType]] = list(_EDITOR_BINDINGS)
    DEFAULT_CSS = EDITOR_CSS.format(name="DiskEditorScreen")

    def __init__(self, disk_id: str | None = None) -> None:
        super().__init__()
        self.disk_id = disk_id

    @property
    def disk(self) -> VirtualStorageDevice | None:
        return self.kerub.controller.get(VirtualStorageDevice, self.disk_id) if self.disk_id else None

    def compose(self) -> ComposeResult:
        disk = self.disk
        with VerticalScroll():
            yield Static(f"Edit disk {disk.name}" if disk else "New disk", classes="editor-title")
            yield FormField("Name", Input(disk.name if disk else "", placeholder="data1", id="name"), key="name")
            yield FormField("Size", Input(format_size(disk.size) if disk else "", placeholder="10G", id="size"),
                            key="size", help="can grow, never shrink" if disk else "")
            yield FormField("Read-only", Switch(disk.read_only if disk else False, id="read_only"), key="read_only")
            yield ExpectationEditor("disk", disk.expectations if disk else [], self.kerub.controller,
                                    id="expectations")
            yield Static("", id="editor-error", markup=False)
            with Horizontal(id="editor-buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Save [^s]", id="save", variant="primary", compact=True)
        yield Footer()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            event.stop()
            self.action_save()
        elif event.button.id == "cancel":
            event.stop()
            self.app.pop_screen()

    def read_form(self) -> dict[str, Any] | None:
        problems: dict[str, str] = {}
        values: dict[str, Any] = {}
        try:
            current_name = self.disk.name if self.disk is not None else None
            typed = self._field("name").value
            # a disk named before the rule keeps its name; a new name holds nothing LVM reserves
            values["name"] = check_name(typed, "disk name") if typed == current_name else check_disk_name(typed)
            other = self.kerub.controller.find_by_name(VirtualStorageDevice, values["name"])
            if other is not None and other.id != self.disk_id:
                problems["name"] = f"a disk named {values['name']!r} already exists"
        except InvalidName as error:
            problems["name"] = str(error)
        try:
            values["size"] = size_value(self._field("size").value, "size", "size")
        except FieldError as error:
            problems["size"] = str(error)
        current = self.disk
        if current is not None and "size" in values and values["size"] < current.size:
            problems["size"] = (f"shrinking ({format_size(current.size)} -> {format_size(values['size'])}) "
                                "loses data: a disk can only grow")
        values["read_only"] = bool(self._field("read_only").value)
        values["expectations"] = list(self.query_one(ExpectationEditor).expectations)
        if not problems:
            try:
                VirtualStorageDevice(**values)
            except (ValidationError, InvalidName) as error:
                for loc, message in pydantic_errors(error):
                    problems[str(loc[0]) if loc and loc[0] in ("name", "size") else "size"] = message
        for key in ("name", "size", "read_only"):
            self._field(key).set_error(problems.get(key))
        if problems:
            self._error("fix the fields marked in red")
            return None
        self._error(None)
        return values

    def saver(self, values: dict[str, Any]) -> Callable[[], Awaitable[VirtualStorageDevice]]:
        controller = self.kerub.controller
        disk_id = self.disk_id

        async def save() -> VirtualStorageDevice:
            if disk_id is None:
                fields = dict(values)
                name = fields.pop("name")
                return await controller.create_disk(name, **fields)
            return await controller.update_disk(disk_id, **values)

        return save


class DiskDetailScreen(KerubScreen, inherit_bindings=False):
    view = "disk"
    help_section = "Disk detail"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="screen.back"),
        Binding("e", "edit", "Edit", id="disk.edit"),
        Binding("ctrl+d", "delete", "Delete", id="disk.delete"),
    ]
    DEFAULT_CSS = """
    DiskDetailScreen VerticalScroll { padding: 0 1; }
    DiskDetailScreen .panel { height: auto; border: round $panel-lighten-2; padding: 0 1; }
    """

    def __init__(self, disk_id: str) -> None:
        super().__init__()
        self.disk_id = disk_id

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static("", id="disk-summary", classes="panel")
            yield Static("", id="disk-allocations", classes="panel")
            yield Static("", id="disk-expectations", classes="panel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#disk-summary").border_title = "Disk"
        self.query_one("#disk-allocations").border_title = "Allocations"
        self.query_one("#disk-expectations").border_title = "Expectations"
        self.repaint()

    def on_changes(self, changes: Sequence[Change]) -> None:
        if any(c.id == self.disk_id or c.kind in ("event", "host-config", "vm") for c in changes):
            if self.kerub.controller.get(VirtualStorageDevice, self.disk_id) is None:
                if self.app.screen is self:
                    self.notify("this disk was deleted", severity="warning")
                    self.app.pop_screen()
                return
            self.repaint()

    def repaint(self) -> None:
        api = self.kerub.controller
        overview = self.kerub.overview
        disk: VirtualStorageDevice | None = api.get(VirtualStorageDevice, self.disk_id)
        if disk is None:
            return
        dyn: VirtualStorageDeviceDynamic | None = api.get(VirtualStorageDeviceDynamic, self.disk_id)
        allocations = list(dyn.allocations) if dyn else []
        table = DataGrid.grid(padding=(0, 2))
        table.add_column(style="dim")
        table.add_column()
        table.add_row("name", data(disk.name, style="bold"))
        table.add_row("size", format_size(disk.size) + (", read-only" if disk.read_only else ""))
        users = api.disk_users(disk.id)
        table.add_row("used by", ", ".join(users) or "no VM")
        shares = sorted(overview.sharing.get(disk.id, ()), key=lambda s: (s[1], s[0]))
        table.add_row("sharing", ", ".join(f"{how} from {overview.host_name(h)}" for h, how in shares) or "not shared")
        table.add_row("copies", redundancy_cell(disk, allocations))
        if dyn is not None and dyn.cloned_from:
            table.add_row("cloned from", overview.name_of("disk", dyn.cloned_from))
        table.add_row("id", Text(disk.id, style="dim"))
        self.query_one("#disk-summary", Static).update(table)
        allocs = DataGrid(box=None, expand=True, pad_edge=False)
        for column in ("host", "tech", "path", "size", "format"):
            allocs.add_column(column, style="bold" if column == "host" else "")
        for a in allocations:
            allocs.add_row(overview.host_name(a.host_id), a.type, alloc_path(a), format_size(a.actual_size), a.format)
        self.query_one("#disk-allocations", Static).update(allocs if allocations else Text("none", style="dim"))
        verdicts = api.verdicts("disk", disk.id)
        self.query_one("#disk-expectations", Static).update(
            expectation_states(disk.expectations, disk.id, overview, verdicts))

    def action_edit(self) -> None:
        self.kerub.open_disk_editor(self.disk_id)

    def action_delete(self) -> None:
        self.kerub.actions.delete_disks([self.disk_id])
