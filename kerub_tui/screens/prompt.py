"""The one-line prompt at the bottom of the screen: ``:`` to jump to a view, ``/`` to filter.

k9s' model: the line is always visible over the screen it acts on, the screen behind stays in view (a
filter applies as it is typed, escape puts the old one back), Tab completes, up and down walk the
prompt's history.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Label

# What a prompt says about the text typed so far ("→ plans", "3 of 12 shown"), on every change.
Preview = Callable[[str], str]
# The candidates Tab completes the text typed so far to.
Completions = Callable[[str], Sequence[str]]

HISTORY_LIMIT = 50


def common_prefix(words: Sequence[str]) -> str:
    if not words:
        return ""
    first, last = min(words), max(words)
    size = 0
    while size < min(len(first), len(last)) and first[size] == last[size]:
        size += 1
    return first[:size]


class PromptScreen(ModalScreen[str | None]):
    """Ask for one line; dismiss with the text on enter, None on escape."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="prompt.cancel"),
        Binding("tab", "complete", "Complete", id="prompt.complete"),
        Binding("up", "history(-1)", "Previous entry", id="prompt.history_back"),
        Binding("down", "history(1)", "Next entry", id="prompt.history_forward"),
    ]

    DEFAULT_CSS = """
    PromptScreen { align: left bottom; background: transparent; }
    PromptScreen > Horizontal { height: 1; width: 100%; background: $panel; }
    PromptScreen Label { width: auto; height: 1; }
    PromptScreen #prompt-prefix { padding: 0 0 0 1; color: $accent; text-style: bold; }
    PromptScreen Input, PromptScreen Input:focus { border: none; height: 1; width: 1fr; padding: 0 1;
        background: $boost; }
    PromptScreen #prompt-status { color: $text-muted; padding: 0 1; max-width: 60%; }
    """

    def __init__(self, prefix: str, value: str = "", *, suggestions: Sequence[str] = (), hint: str = "",
                 prompt_id: str = "", preview: Preview | None = None, completions: Completions | None = None,
                 history: list[str] | None = None) -> None:
        super().__init__(id=prompt_id or None)
        self.prefix = prefix
        self.value = value
        self.suggestions = list(suggestions)
        self.hint = hint
        self.preview = preview
        self.completions = completions
        # The caller's list, so that entries outlive this prompt; the newest is last.
        self.history = history if history is not None else []
        self._history_at = len(self.history)
        self._typed = value  # what was typed before walking the history, to come back to

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label(self.prefix, id="prompt-prefix")
            suggester = SuggestFromList(self.suggestions, case_sensitive=False) if self.suggestions else None
            # The old text selected: typing replaces it, an arrow key keeps it to edit.
            yield Input(self.value, suggester=suggester, id="prompt-input", select_on_focus=True)
            yield Label(self.hint, id="prompt-status", markup=False)

    def on_mount(self) -> None:
        self.query_one(Input).focus()
        if self.value:
            self._show(self.value)

    @property
    def input(self) -> Input:
        return self.query_one("#prompt-input", Input)

    def _show(self, text: str) -> None:
        status = self.preview(text) if self.preview is not None else ""
        self.query_one("#prompt-status", Label).update(status or self.hint)

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._show(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        if text:
            if text in self.history:
                self.history.remove(text)
            self.history.append(text)
            del self.history[:-HISTORY_LIMIT]
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_complete(self) -> None:
        """Tab: the one candidate, or as far as all candidates agree (shown in the status)."""
        if self.completions is None:
            return
        field = self.input
        candidates = list(self.completions(field.value))
        completed = candidates[0] if len(candidates) == 1 else common_prefix(candidates)
        if len(completed) > len(field.value.strip()):
            field.value = completed
            field.cursor_position = len(completed)

    def action_history(self, step: int) -> None:
        if not self.history:
            return
        field = self.input
        if self._history_at == len(self.history):
            self._typed = field.value
        self._history_at = max(0, min(len(self.history), self._history_at + step))
        text = self.history[self._history_at] if self._history_at < len(self.history) else self._typed
        field.value = text
        field.cursor_position = len(text)
