"""The :images view: every image (name, format, virtual size, copies on hosts, sha256, users), its
detail, importing a file from this machine (a small form, with progress while it runs) and deleting."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Static

from ..core.bus import Change
from ..core.models import (
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
)
from ..core.sizes import format_size
from .base import KerubScreen
from .confirm import ConfirmScreen
from .format import Cell
from .live import Column, LiveTable
from .overview import Overview


class ImageRows:
    title = "Images"
    kinds = frozenset({"disk", "disk-dynamic", "vm", "host"})
    default_sort = "name"
    default_reverse = False
    columns = (
        Column("name", "Name"),
        Column("format", "Format"),
        Column("virtual", "Virtual"),
        Column("copies", "Copies on"),
        Column("sha256", "sha256"),
        Column("vms", "VMs"),
    )

    def __init__(self, overview: Overview) -> None:
        self.overview = overview
        self.api = overview.api

    def ids(self) -> Iterable[str]:
        return [d.id for d in self.api.documents(VirtualStorageDevice) if d.image is not None]

    def affected(self, change: Change) -> Iterable[str]:
        if change.kind in ("vm", "host"):
            return list(self.ids())  # users and host names: few images, cheap
        return (change.id,)

    def cells(self, doc_id: str) -> Sequence[Cell] | None:
        disk: VirtualStorageDevice | None = self.api.get(VirtualStorageDevice, doc_id)
        if disk is None or disk.image is None:
            return None
        dyn: VirtualStorageDeviceDynamic | None = self.api.get(VirtualStorageDeviceDynamic, doc_id)
        hosts = sorted(self.overview.host_name(a.host_id) for a in (dyn.allocations if dyn else []))
        users = self.api.image_users(doc_id)
        return (
            Cell(disk.name, "bold"),
            Cell(disk.image.format),
            Cell(format_size(disk.image.virtual_size), sort=disk.image.virtual_size),
            Cell(", ".join(hosts) or "none", "" if hosts else "red"),
            Cell(disk.image.sha256[:12], "dim"),
            Cell(str(len(users)), sort=len(users)),
        )


class ImportImageScreen(ModalScreen[tuple[str, str] | None]):
    """Ask for the file on this machine and the image's name (empty: from the file name)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="image-import.cancel")]
    DEFAULT_CSS = """
    ImportImageScreen { align: center middle; }
    ImportImageScreen > Vertical { width: 72; max-width: 100%; height: auto; border: thick $accent;
        background: $surface; padding: 0 1; }
    ImportImageScreen Label { padding-top: 1; }
    ImportImageScreen #image-import-error { color: $error; height: auto; }
    ImportImageScreen Horizontal { height: auto; align: right middle; padding-top: 1; }
    ImportImageScreen Button { margin-left: 2; }
    """

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Import an image (an ISO or a disk image on this machine)", markup=False)
            yield Label("File")
            yield Input(placeholder="/srv/iso/debian-12.iso", id="image-path")
            yield Label("Name (empty: the file name without its extension)")
            yield Input(placeholder="debian-12", id="image-name")
            yield Static("", id="image-import-error", markup=False)
            with Horizontal():
                yield Button("Cancel", id="image-import-cancel")
                yield Button("Import", id="image-import-ok", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#image-path", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "image-path":
            self.query_one("#image-name", Input).focus()
        else:
            self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "image-import-ok":
            self._submit()
        else:
            self.dismiss(None)

    def _submit(self) -> None:
        path = self.query_one("#image-path", Input).value.strip()
        if not path:
            self.query_one("#image-import-error", Static).update("give the file to import")
            return
        self.dismiss((path, self.query_one("#image-name", Input).value.strip()))

    def action_cancel(self) -> None:
        self.dismiss(None)


class ImagesScreen(KerubScreen, inherit_bindings=False):
    view = "images"
    help_section = "Images"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="screen.back"),
        Binding("i", "import_image", "Import", id="images.import"),
        Binding("ctrl+d", "delete", "Delete", id="images.delete"),
    ]
    DEFAULT_CSS = """
    ImagesScreen LiveTable { height: 1fr; }
    ImagesScreen #images-progress { height: auto; padding: 0 1; color: $accent; }
    ImagesScreen #images-detail { height: auto; max-height: 10; border: round $panel-lighten-2; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        table = LiveTable(ImageRows(self.kerub.overview), id="images")
        table.prompt_filter = self.kerub.prompt_filter
        yield table
        yield Static("", id="images-progress", markup=False)
        yield Static("", id="images-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(LiveTable).focus()
        self.show_detail()

    def on_live_table_row_highlighted(self, event: LiveTable.RowHighlighted) -> None:
        self.show_detail()

    def on_live_table_opened(self, event: LiveTable.Opened) -> None:
        event.stop()
        self.show_detail()

    def on_changes(self, changes: Sequence[Change]) -> None:
        self.show_detail()

    def show_detail(self) -> None:
        api = self.kerub.controller
        doc_id = self.query_one(LiveTable).cursor_id
        detail = self.query_one("#images-detail", Static)
        disk = api.get(VirtualStorageDevice, doc_id) if doc_id else None
        if disk is None or disk.image is None:
            detail.update(Text(f"no image yet: {self.kerub.key_for('images.import')} imports one", style="dim"))
            return
        dyn = api.get(VirtualStorageDeviceDynamic, disk.id)
        table = Table.grid(padding=(0, 2))
        table.add_column(style="dim", no_wrap=True)
        table.add_column()
        info = disk.image
        table.add_row("image", Text(f"{disk.name}: {info.format}, virtual {format_size(info.virtual_size)}, "
                                    f"file {format_size(info.file_size)}"))
        table.add_row("sha256", Text(info.sha256))
        table.add_row("from", Text(f"{info.source} ({info.imported_at:%Y-%m-%d %H:%M} UTC)"))
        for alloc in dyn.allocations if dyn else []:
            table.add_row("copy", Text(f"{self.kerub.overview.host_name(alloc.host_id)}: {alloc.path}"))
        table.add_row("used by", Text(", ".join(api.image_users(disk.id)) or "no VM"))
        detail.update(table)

    def show_progress(self, progress: Any) -> None:
        """A progress report of the running import (a Progress, or a line from a remote controller)."""
        line = progress.describe() if hasattr(progress, "describe") else str(progress)
        self.query_one("#images-progress", Static).update(f"importing: {line}")

    def action_import_image(self) -> None:
        if self.kerub.refuse_readonly("import image", "import_image"):
            return

        def chosen(answer: tuple[str, str] | None) -> None:
            if answer is None:
                return
            path, name = answer
            progress = self.query_one("#images-progress", Static)
            progress.update("importing: connecting to the host")
            controller = self.kerub.controller

            async def run() -> Any:
                return await controller.import_image(path, name=name or None, progress=self.show_progress)

            def finished(_result: Any) -> None:
                progress.update("")

            def failed(message: str) -> None:
                progress.update("")
                self.notify(message, title="import image", severity="error", timeout=10)

            self.kerub.perform("import image", run, action="import_image", after=finished, on_error=failed,
                               done_message=lambda image: f"image {image.name} imported ({image.image.format})",
                               group="image-import")

        self.app.push_screen(ImportImageScreen(), chosen)

    def action_delete(self) -> None:
        if self.kerub.refuse_readonly("delete image", "delete_image"):
            return
        api = self.kerub.controller
        doc_id = self.query_one(LiveTable).cursor_id
        disk = api.get(VirtualStorageDevice, doc_id) if doc_id else None
        if disk is None or disk.image is None:
            return
        impact = api.impact("delete image", [disk.id])
        controller = self.kerub.controller

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.kerub.perform("delete image", lambda: controller.delete_image(disk.id), action="delete_image",
                                   done_message=lambda _r: f"image {disk.name} deleted")

        self.app.push_screen(ConfirmScreen(f"Delete image {disk.name}?", impact, confirm_label="Delete"), confirmed)
