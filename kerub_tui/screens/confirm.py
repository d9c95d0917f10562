"""A small confirmation modal that states the impact of a destructive action before it runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from .format import safe


class ConfirmScreen(ModalScreen[bool]):
    """Title, what will happen (one line per fact), and two buttons; ``y``/``n`` answer too."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
        Binding("left,right", "switch", "Switch button", show=False, id="confirm.switch"),
    ]

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 72; max-width: 100%; height: auto; max-height: 90%;
        border: thick $error; background: $surface; padding: 0 1; }
    ConfirmScreen #confirm-title { text-style: bold; padding-bottom: 1; }
    ConfirmScreen #confirm-impact { height: auto; max-height: 14; overflow-y: auto; }
    ConfirmScreen Horizontal { height: auto; align: right middle; padding-top: 1; }
    ConfirmScreen Button { margin-left: 2; min-width: 10; }
    /* Toasts go above the dialog, in its top third: they never cover the answers (bottom right, where
       Textual puts them, is where the buttons are). */
    ConfirmScreen ToastRack { dock: top; align: right top; max-height: 30%; margin-bottom: 0; }
    """

    def __init__(self, title: str, impact: Sequence[str], *, confirm_label: str = "Yes",
                 danger: bool = True) -> None:
        super().__init__()
        self.title_text = title
        self.impact = list(impact)
        self.confirm_label = confirm_label
        self.danger = danger
        self.quitting = False  # the console's "Quit?" (a second ctrl+c then quits)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(safe(self.title_text, limit=500), id="confirm-title", markup=False)
            yield Static("\n".join(f"• {safe(line, limit=1000)}" for line in self.impact), id="confirm-impact",
                         markup=False)
            with Horizontal():
                # Content, not markup: "[n]" and "[y]" would be read as style tags and vanish.
                yield Button(Content("No [n]"), id="confirm-no")
                yield Button(Content(f"{self.confirm_label} [y]"), id="confirm-yes",
                             variant="error" if self.danger else "primary")

    def on_mount(self) -> None:
        self.query_one("#confirm-no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    def action_switch(self) -> None:
        self.focus_next(Button)
