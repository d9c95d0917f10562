"""What every kerub-tui screen shares: esc goes back, live tables follow the change feed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, cast

from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen

from ..core.bus import Change
from .live import LiveTable

if TYPE_CHECKING:
    from ..app import KerubApp


class KerubScreen(Screen[None], inherit_bindings=False):
    """A full screen of the console. ``view`` names it for ``:`` jumps and the help."""

    view: ClassVar[str] = ""
    help_section: ClassVar[str] = ""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="screen.back"),
        Binding("tab", "app.focus_next", "Next pane", show=False, id="screen.focus_next"),
        Binding("shift+tab", "app.focus_previous", "Previous pane", show=False, id="screen.focus_previous"),
    ]

    # The fields of the screen as it opened (after its first refresh): what quitting would lose is
    # measured against it (``unsaved``).
    _form_at_open: tuple[tuple[str, str], ...] | None = None

    @property
    def kerub(self) -> KerubApp:
        return cast("KerubApp", self.app)

    def on_mount(self) -> None:
        # Runs after the screen's own on_mount (Textual calls each class's handler); the values a
        # screen fills in on mount are in place once it has refreshed.
        self.call_after_refresh(self._remember_form)

    def _remember_form(self) -> None:
        self._form_at_open = self.form_state()

    def form_state(self) -> tuple[tuple[str, str], ...]:
        """The values of the screen's fields (inputs, selects, check boxes, expectation lists)."""
        values = []
        for widget in self.query("Input, Select, Checkbox, Switch, TextArea, ExpectationEditor"):
            value = getattr(widget, "expectations", None)
            if value is None:
                value = getattr(widget, "value", getattr(widget, "text", None))
            values.append((str(widget.id), repr(value)))
        return tuple(values)

    def unsaved(self) -> str | None:
        """What quitting now would lose on this screen: None unless a field changed since it opened."""
        if self._form_at_open is None or self._form_at_open == self.form_state():
            return None
        title = getattr(self, "what", None)
        return f"the {title} editor: changes not saved" if title else f"{self.view or 'a form'}: changes not saved"

    def live_tables(self) -> list[LiveTable]:
        return list(self.query(LiveTable))

    def apply_changes(self, changes: Sequence[Change]) -> None:
        """Called by the app with each coalesced batch of document changes."""
        for table in self.live_tables():
            table.apply_changes(changes)
        self.on_changes(changes)

    def on_changes(self, changes: Sequence[Change]) -> None:
        """Screens showing more than tables refresh it here."""

    def focused_table(self) -> LiveTable | None:
        focused = self.focused
        return focused if isinstance(focused, LiveTable) else None

    def action_back(self) -> None:
        """Esc: clear the focused table's filter, else its marks, else leave the screen."""
        table = self.focused_table()
        if table is not None and table.row_filter.text:
            table.set_filter("")
            return
        if table is not None and table.marked:
            table.clear_marks()
            return
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()


class DetailBody(VerticalScroll):
    """A detail's scrolling body (a host's, a plan's): focused, it scrolls with the tables' keys (j/k, g/G too)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # The tables' ids: a keymap that moves the tables' keys moves these with them.
        Binding("k", "scroll_up", "Scroll up", show=False, id="table.up"),
        Binding("j", "scroll_down", "Scroll down", show=False, id="table.down"),
        Binding("g", "scroll_home", "Top", show=False, id="table.first"),
        Binding("G", "scroll_end", "Bottom", show=False, id="table.last"),
    ]
