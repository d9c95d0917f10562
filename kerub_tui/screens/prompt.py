"""The one-line prompt at the bottom of the screen: ``:`` to jump to a view, ``/`` to filter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Label


class PromptScreen(ModalScreen[str | None]):
    """Ask for one line; dismiss with the text on enter, None on escape."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="prompt.cancel")]

    DEFAULT_CSS = """
    PromptScreen { align: left bottom; background: $background 0%; }
    PromptScreen > Horizontal { height: 3; width: 100%; background: $panel; border-top: solid $accent; }
    PromptScreen Label { padding: 0 0 0 1; width: auto; color: $accent; text-style: bold; }
    PromptScreen Input { border: none; height: 1; width: 1fr; padding: 0 1; background: $panel; }
    PromptScreen #prompt-hint { color: $text-muted; padding: 0 1; width: auto; }
    """

    def __init__(self, prefix: str, value: str = "", *, suggestions: Sequence[str] = (), hint: str = "",
                 prompt_id: str = "") -> None:
        super().__init__(id=prompt_id or None)
        self.prefix = prefix
        self.value = value
        self.suggestions = list(suggestions)
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label(self.prefix)
            suggester = SuggestFromList(self.suggestions, case_sensitive=False) if self.suggestions else None
            yield Input(self.value, suggester=suggester, id="prompt-input", select_on_focus=False)
            if self.hint:
                yield Label(self.hint, id="prompt-hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
