"""Settings: auto-approve policies (listed, revocable), optimisation policies, read-only, the keymap."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Footer, Input, Static, Switch

from ..core.bus import Change
from ..core.models import OptimisationPolicies
from .base import KerubScreen
from .format import Cell, time_cell
from .forms import FieldError, FormField
from .live import Column, LiveTable

SWITCHES = ("power_saving", "load_balancing", "ksm")
NUMBERS = ("power_saving_threshold", "load_balancing_threshold", "load_balancing_hold_seconds",
           "load_balancing_min_gain")


class PolicyRows:
    title = "Auto-approve policies"
    kinds = frozenset({"settings"})
    default_sort = "kind"
    default_reverse = False
    columns = (Column("kind", "Plan kind"), Column("by", "Set by"), Column("at", "Since (UTC)"))

    def __init__(self, controller: Any) -> None:
        self.controller = controller

    def _policies(self) -> dict[str, Any]:
        return {p.plan_kind: p for p in self.controller.settings().auto_approve}

    def ids(self) -> Iterable[str]:
        return list(self._policies())

    def affected(self, change: Change) -> Iterable[str]:
        kinds = set()
        for settings in (change.old, change.new):
            if settings is not None:
                kinds |= {p.plan_kind for p in settings.auto_approve}  # type: ignore[attr-defined]
        return kinds

    def cells(self, kind: str) -> Sequence[Cell] | None:
        policy = self._policies().get(kind)
        if policy is None:
            return None
        return (Cell(policy.plan_kind, "bold"), Cell(policy.created_by or "-"), time_cell(policy.created_at))


class SettingsScreen(KerubScreen, inherit_bindings=False):
    view = "settings"
    help_section = "Settings"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="screen.back"),
        Binding("tab", "app.focus_next", "Next", show=False, id="screen.focus_next"),
        Binding("shift+tab", "app.focus_previous", "Previous", show=False, id="screen.focus_previous"),
        Binding("ctrl+d", "revoke", "Revoke policy", id="settings.revoke"),
        Binding("ctrl+s", "save", "Save optimisation", id="settings.save"),
    ]

    DEFAULT_CSS = """
    SettingsScreen VerticalScroll { padding: 0 1; }
    SettingsScreen .panel { height: auto; border: round $panel-lighten-2; padding: 0 1; }
    SettingsScreen #policies { height: auto; max-height: 10; }
    SettingsScreen #optimisation-buttons { height: auto; align: right middle; }
    SettingsScreen #optimisation-error { color: $error; }
    """

    def compose(self) -> ComposeResult:
        settings = self.kerub.controller.settings()
        with VerticalScroll():
            yield Static("", id="mode", classes="panel")
            policies = LiveTable(PolicyRows(self.kerub.controller), id="policies")
            policies.prompt_filter = self.kerub.prompt_filter
            yield policies
            with Vertical(classes="panel", id="optimisation"):
                opt = settings.optimisation
                for name in SWITCHES:
                    yield FormField(name.replace("_", " "), Switch(getattr(opt, name), id=name), key=name)
                for name in NUMBERS:
                    yield FormField(name.replace("_", " ").replace("load balancing ", "balance "),
                                    Input(str(getattr(opt, name)), id=name), key=name,
                                    help=_describe(name))
                yield Static("", id="optimisation-error", markup=False)
                with Horizontal(id="optimisation-buttons"):
                    yield Button("Save optimisation [^s]", id="save-optimisation", variant="primary", compact=True)
            yield Static("", id="keymap", classes="panel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#mode").border_title = "Mode"
        self.query_one("#optimisation").border_title = "Optimisation policies (when nothing is wrong)"
        self.query_one("#keymap").border_title = "Keymap in force"
        self.repaint()
        self.query_one("#policies", LiveTable).focus()

    def on_changes(self, changes: Sequence[Change]) -> None:
        if any(c.kind == "settings" for c in changes):
            self.repaint()

    def repaint(self) -> None:
        controller = self.kerub.controller
        mode = Table.grid(padding=(0, 2))
        mode.add_column(style="dim")
        mode.add_column()
        if controller.readonly:
            mode.add_row("mode", Text(" READ-ONLY ", style="bold white on red")
                         + Text("  nothing can be changed from this console (--readonly)"))
        else:
            mode.add_row("mode", "read-write")
        mode.add_row("controller", "attached to a running kerub-tui serve" if self.kerub.attached
                     else "embedded in this console")
        mode.add_row("data dir", str(controller.data_dir))
        self.query_one("#mode", Static).update(mode)
        self.query_one("#keymap", Static).update(keymap_table(self.kerub))

    def action_revoke(self) -> None:
        kind = self.query_one("#policies", LiveTable).cursor_id
        if kind is not None:
            self.kerub.actions.revoke_auto_approve(kind)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save-optimisation":
            event.stop()
            self.action_save()

    def action_save(self) -> None:
        if self.kerub.refuse_readonly("optimisation", "set_optimisation"):
            return
        changes: dict[str, Any] = {name: self.query_one(f"#{name}", Switch).value for name in SWITCHES}
        error = self.query_one("#optimisation-error", Static)
        problems = False
        for name in NUMBERS:
            field = self.query_one(f"#field-{name}", FormField)
            text = field.value
            try:
                annotation = OptimisationPolicies.model_fields[name].annotation
                changes[name] = int(text) if annotation is int else float(text)
                field.set_error(None)
            except ValueError:
                field.set_error(FieldError(name, f"{text!r} is not a number").args[0])
                problems = True
        if problems:
            error.update("fix the fields marked in red")
            return
        error.update("")

        async def save() -> Any:
            return await self.kerub.controller.set_optimisation(**changes)

        self.kerub.perform("optimisation", save, action="set_optimisation",
                           done_message=lambda _: "optimisation policies saved",
                           on_error=lambda message: error.update(f"✗ {message}"))


def _describe(name: str) -> str:
    return {
        "power_saving_threshold": "drain dedicated hosts loaded below this (0..1)",
        "load_balancing_threshold": "move VMs off hosts loaded above this (0..1)",
        "load_balancing_hold_seconds": "the load must stay high this long first",
        "load_balancing_min_gain": "and the move must gain at least this (0..1)",
    }.get(name, "")


def keymap_table(app: Any) -> Any:
    from .help import iter_bindings, key_display

    keymap = app.keymap
    table = Table(box=None, expand=True, pad_edge=False)
    table.add_column("binding id", style="dim", no_wrap=True)
    table.add_column("key", style="bold cyan", no_wrap=True)
    table.add_column("action")
    table.add_column("")
    overrides = keymap.bindings if keymap is not None else {}
    seen = set()
    for binding in sorted(iter_bindings(), key=lambda b: b.id or ""):
        if not binding.id or binding.id in seen:
            continue
        seen.add(binding.id)
        key = overrides.get(binding.id, binding.key)
        table.add_row(binding.id, key_display(app, key), binding.description or binding.action,
                      Text("from keymap.toml", style="yellow") if binding.id in overrides else "")
    header = Text()
    if keymap is not None:
        header.append(f"{keymap.path}" + ("" if keymap.found else " (not present: default keys)") + "\n",
                      style="dim")
        for problem in keymap.problems:
            header.append(f"✗ {problem}\n", style="red")
    from rich.console import Group

    return Group(header, table)
