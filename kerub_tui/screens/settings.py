"""Settings: auto-approve policies (listed, revocable), optimisation policies, how long the history is kept,
high availability's restarts from older copies, read-only, the keymap."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Footer, Input, Static, Switch

from ..core.bus import Change
from ..core.models import HaPolicy, HistoryRetention, OptimisationPolicies, Settings, kind_text
from .base import KerubScreen
from .format import Cell, time_cell
from .forms import FormField, pydantic_errors, reveal_first_error
from .live import Column, LiveTable

SWITCHES = ("power_saving", "load_balancing", "ksm", "thin_overcommit")
NUMBERS = ("power_saving_threshold", "load_balancing_threshold", "load_balancing_hold_seconds",
           "load_balancing_min_gain", "thin_overcommit_ratio")
RETENTION = {"audit_days": "days of audit entries kept (older ones go)", "event_days": "days of events kept"}
HA_AGE = "copy_max_age_minutes"
HA_STALE = "restart_from_stale_copies"


class PolicyRows:
    title = "Auto-approve policies"
    kinds = frozenset({"settings"})
    default_sort = "kind"
    default_reverse = False
    columns = (Column("kind", "Plan kind"), Column("deletes", "Deletes data"), Column("by", "Set by"),
               Column("at", "Since (UTC)"), Column("for", "For"))

    def __init__(self, controller: Any) -> None:
        self.controller = controller

    def _policies(self) -> dict[str, Any]:
        return {p.plan_kind: p for p in self.controller.settings().auto_approve}

    def ids(self) -> Iterable[str]:
        return list(self._policies())

    def affected(self, change: Change) -> Iterable[str]:
        kinds = set()
        for settings in (change.old, change.new):
            if isinstance(settings, Settings):
                kinds |= {p.plan_kind for p in settings.auto_approve}
        return kinds

    def cells(self, kind: str) -> Sequence[Cell] | None:
        policy = self._policies().get(kind)
        if policy is None:
            return None
        deletes = Cell("yes", "bold red") if policy.deletes else Cell("asks", "dim")
        return (Cell(policy.plan_kind, "bold"), deletes, Cell(policy.created_by or "-"),
                time_cell(policy.created_at), Cell(kind_text(policy.plan_kind), "dim"))


class SettingsScreen(KerubScreen, inherit_bindings=False):
    view = "settings"
    help_section = "Settings"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="screen.back"),
        Binding("tab", "app.focus_next", "Next", show=False, id="screen.focus_next"),
        Binding("shift+tab", "app.focus_previous", "Previous", show=False, id="screen.focus_previous"),
        Binding("ctrl+d", "revoke", "Revoke policy", id="settings.revoke"),
        Binding("d", "deletions", "Deletes data?", id="settings.deletions"),
        Binding("ctrl+s", "save", "Save", id="settings.save"),
    ]

    DEFAULT_CSS = """
    SettingsScreen VerticalScroll { padding: 0 1; }
    SettingsScreen .panel { height: auto; border: round $panel-lighten-2; padding: 0 1; }
    SettingsScreen #policies { height: auto; max-height: 10; }
    SettingsScreen #optimisation-buttons, SettingsScreen #retention-buttons, SettingsScreen #ha-buttons {
        height: auto; align: right middle;
    }
    SettingsScreen #optimisation-error, SettingsScreen #retention-error, SettingsScreen #ha-error { color: $error; }
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
            with Vertical(classes="panel", id="retention"):
                for name, help_ in RETENTION.items():
                    yield FormField(name.replace("_", " "), Input(str(getattr(settings.history, name)), id=name),
                                    key=name, help=help_)
                yield Static("", id="retention-error", markup=False)
                with Horizontal(id="retention-buttons"):
                    yield Button("Save history [^s]", id="save-retention", variant="primary", compact=True)
            with Vertical(classes="panel", id="ha"):
                yield FormField("copy max age", Input(str(settings.ha.copy_max_age_minutes), id=HA_AGE), key=HA_AGE,
                                help="minutes: a restart from a younger copy taken for redundancy does not ask "
                                     "(0: every copy asks)")
                yield FormField("stale copies", Switch(settings.ha.restart_from_stale_copies, id=HA_STALE),
                                key=HA_STALE)
                yield Static("", id="ha-error", markup=False)
                with Horizontal(id="ha-buttons"):
                    yield Button("Save high availability [^s]", id="save-ha", variant="primary", compact=True)
            yield Static("", id="keymap", classes="panel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#mode").border_title = "Mode"
        self.query_one("#optimisation").border_title = "Planner policies (placement, optimisation, thin over-commit)"
        self.query_one("#retention").border_title = "History kept (audit and events)"
        self.query_one("#ha").border_title = "High availability: restarts from copies taken for redundancy"
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

    def action_deletions(self) -> None:
        """Whether the policy under the cursor also covers plans that delete data (never unless said)."""
        kind = self.query_one("#policies", LiveTable).cursor_id
        policy = next((p for p in self.kerub.controller.settings().auto_approve if p.plan_kind == kind), None)
        if policy is not None:
            self.kerub.actions.auto_approve_deletions(policy.plan_kind, not policy.deletes)

    def action_revoke(self) -> None:
        kind = self.query_one("#policies", LiveTable).cursor_id
        if kind is not None:
            self.kerub.actions.revoke_auto_approve(kind)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save-optimisation":
            event.stop()
            self.save_optimisation()
        elif event.button.id == "save-retention":
            event.stop()
            self.save_retention()
        elif event.button.id == "save-ha":
            event.stop()
            self.save_ha()

    def action_save(self) -> None:
        """ctrl+s saves the panel the focus is in (the optimisation policies unless it is the history's)."""
        focused = self.app.focused
        if focused is not None and any(node.id == "retention" for node in focused.ancestors_with_self):
            self.save_retention()
        elif focused is not None and any(node.id == "ha" for node in focused.ancestors_with_self):
            self.save_ha()
        else:
            self.save_optimisation()

    def save_ha(self) -> None:
        if self.kerub.refuse_readonly("high availability", "set_ha_policy"):
            return
        changes: dict[str, Any] = {HA_STALE: self.query_one(f"#{HA_STALE}", Switch).value}
        problems: dict[str, str] = {}
        text = self.query_one(f"#field-{HA_AGE}", FormField).value
        try:
            changes[HA_AGE] = int(text)
        except ValueError:
            problems[HA_AGE] = f"{text!r} is not a whole number of minutes"
        if not problems:
            problems = _model_problems(HaPolicy, changes)
        self._send((HA_AGE,), "#ha-error", problems, "high availability", "set_ha_policy",
                   self.kerub.controller.set_ha_policy, changes, "high availability policy saved")

    def save_retention(self) -> None:
        if self.kerub.refuse_readonly("history retention", "set_retention"):
            return
        changes: dict[str, int] = {}
        problems: dict[str, str] = {}
        for name in RETENTION:
            text = self.query_one(f"#field-{name}", FormField).value
            try:
                changes[name] = int(text)
            except ValueError:
                problems[name] = f"{text!r} is not a whole number of days"
        if not problems:
            problems = _model_problems(HistoryRetention, changes)
        self._send(RETENTION, "#retention-error", problems, "history retention", "set_retention",
                   self.kerub.controller.set_retention, changes, "history retention saved")

    def save_optimisation(self) -> None:
        if self.kerub.refuse_readonly("optimisation", "set_optimisation"):
            return
        changes: dict[str, Any] = {name: self.query_one(f"#{name}", Switch).value for name in SWITCHES}
        problems: dict[str, str] = {}
        for name in NUMBERS:
            text = self.query_one(f"#field-{name}", FormField).value
            try:
                annotation = OptimisationPolicies.model_fields[name].annotation
                changes[name] = int(text) if annotation is int else float(text)
            except ValueError:
                problems[name] = f"{text!r} is not a number"
        if not problems:  # the bounds, said next to their field before anything is sent
            current = self.kerub.controller.settings().optimisation.model_dump()
            problems = _model_problems(OptimisationPolicies, current | changes)
        self._send(NUMBERS, "#optimisation-error", problems, "optimisation", "set_optimisation",
                   self.kerub.controller.set_optimisation, changes, "optimisation policies saved")

    def _send(self, fields: Iterable[str], error_id: str, problems: dict[str, str], what: str, action: str,
              setter: Callable[..., Awaitable[Any]], changes: dict[str, Any], saved: str) -> None:
        """Each problem next to its field (the first one shown), or the changes sent to the controller."""
        error = self.query_one(error_id, Static)
        for name in fields:
            self.query_one(f"#field-{name}", FormField).set_error(problems.get(name))
        if problems:
            error.update("fix the fields marked in red")
            reveal_first_error(self)
            return
        error.update("")

        def failed(message: str) -> None:
            error.update(f"✗ {message}")
            error.scroll_visible(animate=False)

        async def save() -> Any:
            return await setter(**changes)

        self.kerub.perform(what, save, action=action, done_message=lambda _: saved, on_error=failed)


def _model_problems(model: type[BaseModel], values: dict[str, Any]) -> dict[str, str]:
    """The model's objections to the values, by field, in the user's words."""
    try:
        model.model_validate(values)
    except ValidationError as invalid:
        return {str(loc[0]): message for loc, message in pydantic_errors(invalid) if loc}
    return {}


def _describe(name: str) -> str:
    return {
        "power_saving_threshold": "drain dedicated hosts loaded below this (0..1)",
        "load_balancing_threshold": "move VMs off hosts loaded above this (0..1)",
        "load_balancing_hold_seconds": "the load must stay high this long first",
        "load_balancing_min_gain": "and the move must gain at least this (0..1)",
        "thin_overcommit_ratio": "a thin pool's thin LVs add up to at most this many times its size (1..100)",
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
