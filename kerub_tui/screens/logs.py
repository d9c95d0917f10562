"""Audit (every executed command and every admin action) and events, filterable, newest first."""

from __future__ import annotations

import datetime as dt
from abc import abstractmethod
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Static

from ..core.models import DOCUMENT_TYPES, AuditEntry, Event, utcnow
from .base import KerubScreen
from .format import DataGrid, data, timestamp
from .live import LiveTable
from .rows import AuditRows, EventRows


class LogScreen(KerubScreen, inherit_bindings=False):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="screen.back"),
        Binding("t", "window", "Last hour / day / all", id="logs.window"),
    ]

    # t cycles through these: what changed in the last hour is four keys from anywhere (: a enter t).
    WINDOWS: ClassVar[tuple[tuple[dt.timedelta | None, str], ...]] = (
        (dt.timedelta(hours=1), "last hour"), (dt.timedelta(days=1), "last day"), (None, ""))
    DEFAULT_CSS = """
    LogScreen LiveTable { height: 1fr; }
    LogScreen .log-detail { height: auto; max-height: 10; border: round $panel-lighten-2; padding: 0 1; }
    """
    # Each log screen says what it lists and how one entry reads. A Screen cannot be an ABC (its
    # metaclass is Textual's), so an incomplete subclass is refused when it is defined instead.
    table_id: ClassVar[str]
    rows: ClassVar[type[AuditRows] | type[EventRows]]

    @abstractmethod
    def detail(self, doc_id: str) -> Any:
        """What the panel under the table shows of the document ``doc_id``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        missing = [name for name in ("table_id", "rows") if not hasattr(cls, name)]
        if cls.detail is LogScreen.detail:
            missing.append("detail")
        if missing:
            raise TypeError(f"{cls.__name__} must define {', '.join(missing)}")

    def compose(self) -> ComposeResult:
        table = LiveTable(self.rows(self.kerub.overview), id=self.table_id)
        table.prompt_filter = self.kerub.prompt_filter
        yield table
        yield Static("", id=f"{self.table_id}-detail", classes="log-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(LiveTable).focus()
        self.show_detail()

    def action_window(self) -> None:
        table = self.query_one(LiveTable)
        labels = [label for _, label in self.WINDOWS]
        at = labels.index(table.since_label) if table.since_label in labels else len(labels) - 1
        window, label = self.WINDOWS[(at + 1) % len(self.WINDOWS)]
        table.set_since(utcnow() - window if window is not None else None, label)
        self.show_detail()

    def on_live_table_row_highlighted(self, event: LiveTable.RowHighlighted) -> None:
        self.show_detail()

    def on_live_table_opened(self, event: LiveTable.Opened) -> None:
        event.stop()
        self.show_detail()

    def on_changes(self, changes: Any) -> None:
        cursor = self.query_one(LiveTable).cursor_id
        if any(c.id == cursor for c in changes):
            self.show_detail()

    def show_detail(self) -> None:
        doc_id = self.query_one(LiveTable).cursor_id
        detail = self.query_one(f"#{self.table_id}-detail", Static)
        detail.update(self.detail(doc_id) if doc_id else Text("nothing recorded yet", style="dim"))


def _grid() -> DataGrid:
    table = DataGrid.grid(padding=(0, 2))
    table.add_column(style="dim", no_wrap=True)
    table.add_column()
    return table


class AuditScreen(LogScreen):
    view = "audit"
    help_section = "Audit"
    table_id = "audit"
    rows = AuditRows

    def detail(self, doc_id: str) -> Any:
        entry: AuditEntry | None = self.kerub.controller.get(AuditEntry, doc_id)
        if entry is None:
            return Text("")
        table = _grid()
        table.add_row("when", f"{timestamp(entry.time)} UTC by {entry.os_user or '?'}")
        table.add_row("action", f"{entry.action} {entry.target}".strip()
                      + (f" → {entry.outcome}" if entry.outcome else ""))
        if entry.host_id:
            table.add_row("host", self.kerub.overview.host_name(entry.host_id))
        if entry.command:
            table.add_row("command", data(entry.command, style="green"))
        if entry.exit_code is not None:
            table.add_row("exit", Text(str(entry.exit_code), style="" if entry.exit_code == 0 else "bold red")
                          + Text(f" after {entry.duration_seconds:.2f}s" if entry.duration_seconds is not None else ""))
        if entry.output_tail:
            table.add_row("output", data(entry.output_tail))
        if entry.plan_id:
            table.add_row("plan", entry.plan_id)
        return table


class EventsScreen(LogScreen):
    view = "events"
    help_section = "Events"
    table_id = "events"
    rows = EventRows

    def detail(self, doc_id: str) -> Any:
        event: Event | None = self.kerub.controller.get(Event, doc_id)
        if event is None:
            return Text("")
        table = _grid()
        table.add_row("when", f"{timestamp(event.time)} UTC")
        table.add_row("type", f"{event.type} ({event.severity.value})")
        if event.host_id:
            table.add_row("host", self.kerub.overview.host_name(event.host_id))
        if event.target:
            target = next((self.kerub.overview.name_of(kind, event.target) for kind in ("vm", "disk", "host")
                           if self.kerub.controller.get(DOCUMENT_TYPES[kind], event.target) is not None), event.target)
            table.add_row("about", target)
        table.add_row("message", data(event.message))
        return table

