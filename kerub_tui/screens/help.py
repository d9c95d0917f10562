"""``?``: every key of the current screen (after the keymap), with its binding id for keymap.toml."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import Static


@dataclass(frozen=True)
class KeyRow:
    where: str
    keys: str
    description: str
    binding_id: str
    action: str


def section_name(node: DOMNode) -> str:
    label = getattr(node, "help_section", None)
    if label:
        return str(label)
    if isinstance(node, App):
        return "Everywhere"
    return type(node).__name__


def iter_bindings() -> Iterator[Binding]:
    """Every Binding declared by a kerub-tui class, keys as declared (for the keymap's known ids)."""
    for cls in _subclasses(DOMNode):
        if cls.__module__.startswith("kerub_tui"):
            for binding in cls.__dict__.get("BINDINGS", []):
                if isinstance(binding, Binding):
                    yield binding


def all_binding_ids() -> set[str]:
    return {b.id for b in iter_bindings() if b.id}


def _subclasses(cls: type) -> Iterator[type]:
    sub: type
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def declared_keys() -> dict[str, str]:
    """Binding id -> its keys as declared (Textual splits 'q,ctrl+q' into one binding per key)."""
    return {b.id: b.key for b in iter_bindings() if b.id}


def effective_key(app: App, binding: Binding, declared: dict[str, str] | None = None) -> str:
    """The key(s) a binding answers to now: the keymap's, else as declared."""
    keymap = getattr(app, "_keymap", {}) or {}
    if not binding.id:
        return binding.key
    return keymap.get(binding.id) or (declared or {}).get(binding.id, binding.key)


def key_display(app: App, keys: str) -> str:
    return " ".join(app.get_key_display(Binding(key.strip(), "")) for key in keys.split(","))


def screen_keys(screen: Screen) -> list[KeyRow]:
    """Every kerub-tui binding reachable on ``screen``: its own, its widgets', then the app's."""
    app = screen.app
    declared = declared_keys()
    rows: dict[tuple[str, str], KeyRow] = {}
    nodes: list[DOMNode] = [screen, *screen.walk_children(with_self=False), app]
    for node in nodes:
        if not type(node).__module__.startswith("kerub_tui"):
            continue
        where = section_name(node)
        for binding in _bindings_of(node):
            ident = (where, binding.id or binding.action)
            if binding.system or ident in rows:
                continue
            keys = key_display(app, effective_key(app, binding, declared))
            rows[ident] = KeyRow(where, keys, binding.description or binding.action, binding.id or "-",
                                 binding.action)
    return list(rows.values())


def _bindings_of(node: DOMNode) -> list[Binding]:
    out: list[Binding] = []
    seen: set[int] = set()
    for bindings in node._bindings.key_to_bindings.values():
        for binding in bindings:
            if id(binding) not in seen:
                seen.add(id(binding))
                out.append(binding)
    return out


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "close", "Close", id="help.close")]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 100; max-width: 100%; height: 90%; border: round $accent;
        background: $surface; padding: 0 1; }
    """

    def __init__(self, of_screen: Screen) -> None:
        super().__init__()
        self.of_screen = of_screen
        self.rows = screen_keys(of_screen)

    def compose(self) -> ComposeResult:
        table = Table(box=None, expand=True, show_edge=False, pad_edge=False)
        table.add_column("Key", style="bold cyan", no_wrap=True)
        table.add_column("Action")
        table.add_column("Id (keymap.toml)", style="dim", no_wrap=True)
        current = None
        for row in self.rows:
            if row.where != current:
                current = row.where
                table.add_row(Text(row.where, style="bold underline"), "", "")
            table.add_row(row.keys, row.description, row.binding_id)
        sorting = Text("\nIn a table, shift and a letter sorts by the column whose name starts with it (again: the "
                       "other way), unless that key is an action there.", style="dim")
        scroll = VerticalScroll(Static(table), Static(sorting, id="help-sorting"), id="help-keys")
        scroll.border_title = f"Keys: {section_name(self.of_screen)}"
        scroll.border_subtitle = "esc closes · remap in keymap.toml"
        yield scroll

    def action_close(self) -> None:
        self.dismiss(None)
