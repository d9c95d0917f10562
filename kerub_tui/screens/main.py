"""The main screen: hosts, VMs and storage, live, with a status bar.

At 80x24 the panes become tabs (one shown, a tab bar above, ``tab`` or 1/2/3 switch); from 100x30 they
stack; from 160x45 hosts span the top and VMs and storage share the bottom.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container
from textual.widgets import Footer, Static

from ..core.bus import Change
from ..core.models import Host, HostDynamic, HostStatus, Plan, PlanStatus
from .actions import actions_of, incident_bindings
from .base import KerubScreen
from .format import ago
from .live import LiveTable
from .preview import attach_serial
from .rows import SIMULATED_STYLE, DiskRows, HostRows, VmRows, plan_progress

COMPACT_WIDTH = 100
COMPACT_HEIGHT = 30
WIDE_WIDTH = 160
WIDE_HEIGHT = 45

STATUS_KINDS = frozenset({"host", "plan"})
STALE_REFRESH = 60.0  # seconds between repaints of how long ago figures nothing monitors were seen
DEMO_LABEL = "demo: simulated fleet"


class HostTable(LiveTable):
    help_section = "Hosts pane"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("E", "evacuate", "Evacuate", id="hosts.evacuate"),
        Binding("ctrl+d", "remove", "Remove", id="hosts.remove"),
        Binding("K", "rekey", "Accept new key", show=False, id="hosts.rekey"),
        Binding("R", "rediscover", "Rediscover", show=False, id="hosts.rediscover"),
        Binding("ctrl+k", "fence", "Fence (it is off)", show=False, id="hosts.fence"),
    ]

    def action_evacuate(self) -> None:
        actions_of(self).evacuate_hosts(self.selected_ids(), hidden=self.hidden_marks())

    def action_remove(self) -> None:
        actions_of(self).remove_hosts(self.selected_ids(), hidden=self.hidden_marks())

    def action_rediscover(self) -> None:
        actions_of(self).rediscover_host(self.cursor_id)

    def action_rekey(self) -> None:
        actions_of(self).rekey_host(self.cursor_id)

    def action_fence(self) -> None:
        actions_of(self).fence_host(self.cursor_id)


class VmTable(LiveTable):
    help_section = "VMs pane"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new", "New VM", id="vms.new"),
        Binding("e", "edit", "Edit", id="vms.edit"),
        Binding("s", "start", "Start", id="vms.start"),
        Binding("S", "stop", "Stop", id="vms.stop"),
        Binding("c", "console", "Console", id="vms.console"),
        Binding("t", "serial", "Serial console", id="vms.serial"),
        Binding("ctrl+d", "delete", "Delete", id="vms.delete"),
        # An incident's actions, on the running domain at once (bulk on marks, like start and stop).
        *incident_bindings("vms"),
    ]

    def action_new(self) -> None:
        actions_of(self).edit_vm(None)

    def action_edit(self) -> None:
        if self.cursor_id is not None:
            actions_of(self).edit_vm(self.cursor_id)

    def action_start(self) -> None:
        actions_of(self).start_vms(self.selected_ids(), hidden=self.hidden_marks())

    def action_stop(self) -> None:
        actions_of(self).stop_vms(self.selected_ids(), hidden=self.hidden_marks())

    def action_console(self) -> None:
        actions_of(self).open_console(self.cursor_id)

    def action_serial(self) -> None:
        attach_serial(actions_of(self).app, self.cursor_id)

    def action_delete(self) -> None:
        actions_of(self).delete_vms(self.selected_ids(), hidden=self.hidden_marks())

    def action_force_off(self) -> None:
        actions_of(self).force_off_vms(self.selected_ids(), hidden=self.hidden_marks())

    def action_poweroff(self) -> None:
        actions_of(self).poweroff_vms(self.selected_ids(), hidden=self.hidden_marks())

    def action_reboot(self) -> None:
        actions_of(self).reboot_vms(self.selected_ids(), hidden=self.hidden_marks())

    def action_reset(self) -> None:
        actions_of(self).reset_vms(self.selected_ids(), hidden=self.hidden_marks())

    def action_pause(self) -> None:
        actions_of(self).pause_vms(self.selected_ids(), hidden=self.hidden_marks())

    def action_resume(self) -> None:
        actions_of(self).resume_vms(self.selected_ids(), hidden=self.hidden_marks())

    def action_send_keys(self) -> None:
        actions_of(self).send_keys(self.cursor_id)


class DiskTable(LiveTable):
    help_section = "Storage pane"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new", "New disk", id="disks.new"),
        Binding("e", "edit", "Edit", id="disks.edit"),
        Binding("ctrl+d", "delete", "Delete", id="disks.delete"),
    ]

    def action_new(self) -> None:
        actions_of(self).edit_disk(None)

    def action_edit(self) -> None:
        if self.cursor_id is not None:
            actions_of(self).edit_disk(self.cursor_id)

    def action_delete(self) -> None:
        actions_of(self).delete_disks(self.selected_ids(), hidden=self.hidden_marks())


class Line(Static):
    """A one-line Static that repaints only when its text changes (an update relayouts the screen)."""

    _shown: Text | None = None

    def show(self, text: Text) -> None:
        if text != self._shown:
            self._shown = text
            self.update(text)


class StatusBar(Line):
    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $text; padding: 0 1; }
    """


class PaneBar(Line):
    DEFAULT_CSS = """
    PaneBar { height: 1; padding: 0 1; display: none; }
    """


class FirstRun(Line):
    DEFAULT_CSS = """
    FirstRun { height: auto; border: round $warning; padding: 0 1; margin: 0 0; display: none; }
    FirstRun.-shown { display: block; }
    """


PANES = ("hosts", "vms", "disks")


class MainScreen(KerubScreen, inherit_bindings=False):
    view = "hosts"
    help_section = "Main screen"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Clear", show=False, id="screen.back"),
        Binding("a", "add_host", "Add host", id="main.add_host"),
        Binding("1", "pane('hosts')", "Hosts", show=False, id="main.hosts"),
        Binding("2", "pane('vms')", "VMs", show=False, id="main.vms"),
        Binding("3", "pane('disks')", "Storage", show=False, id="main.disks"),
        Binding("tab", "next_pane(1)", "Next pane", show=False, id="main.next_pane"),
        Binding("shift+tab", "next_pane(-1)", "Previous pane", show=False, id="main.previous_pane"),
    ]

    DEFAULT_CSS = """
    MainScreen #panes { height: 1fr; layout: vertical; }
    MainScreen.-wide #panes { layout: grid; grid-size: 2 2; grid-columns: 2fr 3fr; grid-rows: 2fr 3fr; }
    MainScreen.-wide #hosts { column-span: 2; }
    MainScreen.-compact PaneBar { display: block; }
    MainScreen.-compact LiveTable { display: none; }
    MainScreen.-compact LiveTable.-active { display: block; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.active_pane = "hosts"

    def compose(self) -> ComposeResult:
        overview = self.kerub.overview
        yield StatusBar(id="status")
        yield PaneBar(id="panebar")
        yield FirstRun(id="first-run")
        with Container(id="panes"):
            for table in (HostTable(HostRows(overview), id="hosts"), VmTable(VmRows(overview), id="vms"),
                          DiskTable(DiskRows(overview), id="disks")):
                table.prompt_filter = self.kerub.prompt_filter
                yield table
        yield Footer()

    def on_mount(self) -> None:
        self._layout(self.app.size.width, self.app.size.height)
        self.show_pane("hosts")
        self.refresh_status()
        if not self.kerub.controller.live:  # "seen 3h ago" grows older while nothing changes
            self.set_interval(STALE_REFRESH, self.refresh_status)

    def on_resize(self, event: events.Resize) -> None:
        self._layout(event.size.width, event.size.height)

    def _layout(self, width: int, height: int) -> None:
        compact = width < COMPACT_WIDTH or height < COMPACT_HEIGHT
        self.set_class(compact, "-compact")
        self.set_class(not compact and width >= WIDE_WIDTH and height >= WIDE_HEIGHT, "-wide")
        if self.is_mounted:
            self._paint_panebar()

    # --- panes --------------------------------------------------------------------------------

    def table(self, pane: str) -> LiveTable:
        return self.query_one(f"#{pane}", LiveTable)

    def show_pane(self, pane: str) -> None:
        self.active_pane = pane
        for name in PANES:
            self.table(name).set_class(name == pane, "-active")
        self.table(pane).focus()
        self._paint_panebar()

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        widget = event.widget
        if isinstance(widget, LiveTable) and widget.id in PANES and widget.id != self.active_pane:
            self.active_pane = widget.id
            for name in PANES:
                self.table(name).set_class(name == widget.id, "-active")
            self._paint_panebar()

    def _paint_panebar(self) -> None:
        if not self.has_class("-compact"):  # the pane bar shows only when the panes are tabs
            return
        text = Text()
        for n, name in enumerate(PANES, 1):
            table = self.table(name)
            label = f" {n} {table.source.title} {table.row_count} "
            text.append(label, style="bold reverse" if name == self.active_pane else "")
            text.append(" ")
        self.query_one(PaneBar).show(text)

    def action_pane(self, pane: str) -> None:
        self.show_pane(pane)

    def action_next_pane(self, step: int) -> None:
        index = PANES.index(self.active_pane)
        self.show_pane(PANES[(index + step) % len(PANES)])

    def action_add_host(self) -> None:
        self.kerub.open_add_host()

    def on_live_table_opened(self, event: LiveTable.Opened) -> None:
        event.stop()
        if event.table.id == "hosts":
            self.kerub.open_host(event.doc_id)
        elif event.table.id == "vms":
            self.kerub.open_vm(event.doc_id)
        elif event.table.id == "disks":
            self.kerub.open_disk(event.doc_id)

    # --- live status --------------------------------------------------------------------------

    def on_changes(self, changes: Sequence[Change]) -> None:
        if any(self._tells_status(c) for c in changes):
            self.refresh_status()
        self._paint_panebar()

    def _tells_status(self, change: Change) -> bool:
        """Does the change alter the status bar? Hosts and plans do; a host's monitoring figures (most of
        the changes at 1,000 hosts) only when its status changes, or when the bar says when it was seen."""
        if change.kind in STATUS_KINDS:
            return True
        if change.kind != "host-dynamic":
            return False
        old, new = change.old, change.new
        if not isinstance(old, HostDynamic) or not isinstance(new, HostDynamic):
            return True
        return old.status is not new.status or not self.kerub.controller.live

    def refresh_status(self) -> None:
        api = self.kerub.controller
        hosts = api.documents(Host)
        up = sum(1 for h in hosts if (d := api.get(HostDynamic, h.id)) is not None and d.status is HostStatus.up)
        plans = api.documents(Plan)
        proposed = sum(1 for p in plans if p.status is PlanStatus.proposed)
        running = [p for p in plans if p.status is PlanStatus.running]
        text = Text()
        text.append("kerub-tui", style="bold")
        if api.live:
            text.append(f" │ hosts {up}/{len(hosts)} up", style="" if up == len(hosts) else "bold yellow")
        else:  # nothing monitors the hosts (read-only): the figures are as last seen, and say when
            text.append(f" │ hosts {up}/{len(hosts)} up", style="dim")
            seen = max((d.last_seen for h in hosts if (d := api.get(HostDynamic, h.id)) and d.last_seen),
                       default=None)
            if hosts:
                text.append(f", seen {ago(seen)} ago" if seen else ", never seen", style="bold yellow")
        simulated = sum(1 for h in hosts if h.simulated)
        if simulated and not self.kerub.demo:
            text.append(f", {simulated} simulated", style=SIMULATED_STYLE)
        text.append(" │ ")
        text.append(f"{proposed} proposal{'s' if proposed != 1 else ''}",
                    style="bold yellow" if proposed else "")
        if running:
            plan = running[0]
            text.append(f" │ running {plan.plan_kind} {plan_progress(plan)}", style="bold cyan")
            if len(running) > 1:
                text.append(f" +{len(running) - 1}", style="cyan")
        if self.kerub.demo:
            text.append(" │ ")
            text.append(DEMO_LABEL, style=f"bold {SIMULATED_STYLE}")
        if self.kerub.controller.readonly:
            text.append(" │ ")
            text.append(" READ-ONLY ", style="bold white on red")
        if self.kerub.attached:
            text.append(" │ attached", style="cyan")
        text.append(f" │ {self.kerub.controller.data_dir}", style="dim")
        self.query_one(StatusBar).show(text)
        first_run = self.query_one(FirstRun)
        if not hosts:
            key = self.kerub.key_for("main.add_host")
            first_run.show(Text.assemble(
                ("No hosts yet. ", "bold"), "Press ", (key, "bold reverse"),
                " to add your first host, or from a shell:\n",
                ("  kerub-tui host add ADDRESS[:PORT] --user root", "bold cyan"),
                "\nThen create VMs (", (self.kerub.key_for("vms.new"), "bold"), " in the VMs pane) and approve "
                "the planner's proposals (", (":plans", "bold"), ").  ", (self.kerub.key_for("app.help"), "bold"),
                " lists every key.  No hosts at hand? ", ("kerub-tui --demo", "bold cyan"),
                " tours a simulated fleet.",
            ))
        first_run.set_class(not hosts, "-shown")
