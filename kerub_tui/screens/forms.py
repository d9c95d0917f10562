"""Form pieces shared by the editors: a labelled field that shows its own validation error."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Input, Label, Select, Static, Switch

from ..core.sizes import parse_size
from ..core.validation import reason
from .base import KerubScreen


class FormField(Vertical):
    """``label  [widget]`` with an error line under it, shown only while the value is wrong."""

    DEFAULT_CSS = """
    FormField { height: auto; margin: 0 0 1 0; }
    FormField > Horizontal { height: auto; }
    FormField .field-label { width: 16; padding: 0 1 0 0; text-align: right; color: $text-muted; }
    FormField .field-help { color: $text-muted; padding: 0 0 0 16; }
    FormField .field-error { color: $error; padding: 0 0 0 16; display: none; }
    FormField.-invalid .field-error { display: block; }
    FormField.-invalid Input { background: $error 25%; }
    FormField.-invalid .field-label { color: $error; text-style: bold; }
    FormField Input, FormField Select { width: 1fr; }
    FormField Switch { border: none; height: 1; padding: 0; }
    """

    def __init__(self, label: str, widget: Widget, *, key: str, help: str = "") -> None:
        super().__init__(id=f"field-{key}", classes="form-field")
        if isinstance(widget, (Input, Select)):
            widget.compact = True  # one line per field: a whole form fits 80x24
        self.label = label
        self.widget = widget
        self.key = key
        self.help = help

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label(self.label, classes="field-label")
            yield self.widget
        if self.help:
            yield Static(self.help, classes="field-help", markup=False)
        yield Static("", classes="field-error", markup=False)

    def set_error(self, message: str | None) -> None:
        self.set_class(bool(message), "-invalid")
        self.query_one(".field-error", Static).update(message or "")

    @property
    def error(self) -> str | None:
        return str(self.query_one(".field-error", Static).render()) if self.has_class("-invalid") else None

    @property
    def value(self) -> Any:
        widget = self.widget
        if isinstance(widget, Input):
            return widget.value.strip()
        if isinstance(widget, Switch):
            return widget.value
        if isinstance(widget, Select):
            return None if widget.value is Select.NULL else widget.value
        raise TypeError(f"no value for {type(widget).__name__}")


class FieldError(ValueError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def int_value(text: str, key: str, what: str, *, minimum: int | None = None,
              maximum: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise FieldError(key, f"{what} must be a whole number, not {text!r}") from None
    if minimum is not None and value < minimum:
        raise FieldError(key, f"{what} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise FieldError(key, f"{what} must be at most {maximum}")
    return value


def size_value(text: str, key: str, what: str) -> int:
    if not text:
        raise FieldError(key, f"{what} is needed (e.g. 512M, 2G)")
    try:
        return parse_size(text)
    except ValueError as error:
        raise FieldError(key, str(error)) from None


def pydantic_errors(error: Exception) -> list[tuple[tuple[Any, ...], str]]:
    """(location, message) pairs from a pydantic ValidationError, each message in the admin's words
    ("must be at most 1, not 2", not "Input should be less than or equal to 1"): core.validation's."""
    items = getattr(error, "errors", None)
    if not callable(items):
        return [((), str(error))]
    return [(tuple(item.get("loc", ())), reason(item)) for item in items()]


def reveal_first_error(screen: Widget | Screen[Any]) -> bool:
    """Scroll to the first field marked wrong and focus it (a form taller than the terminal would hide
    it); False when no field is marked."""
    for field in screen.query(".-invalid").results():
        field.scroll_visible(animate=False)
        if isinstance(field, FormField):
            target: Widget | None = field.widget
        else:
            inputs = field.query(Input)
            target = inputs.first() if inputs else None
        if target is not None and target.focusable:
            target.focus(scroll_visible=False)
        return True
    return False


class EditorScreen(KerubScreen, inherit_bindings=False):
    """A document editor: ctrl+s reads the form, saves once at a time, and leaves when the save is done;
    a failure shows on the editor's error line."""

    # Each editor says what it edits, how its form reads, and which controller call saves it. A Screen
    # cannot be an ABC (its metaclass is Textual's), so an incomplete editor is refused when defined.
    what: ClassVar[str]  # "disk", "VM": in the action's label and the saved message

    @abstractmethod
    def read_form(self) -> dict[str, Any] | None:
        """The validated values of the form, or None with each problem shown where it is."""

    @abstractmethod
    def saver(self, values: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
        """The API call that saves ``values``."""

    @property
    @abstractmethod
    def action(self) -> str:
        """The API action saving does (kerub_tui.api.ACTIONS): read-only mode refuses it."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        missing = [name for name in ("what",) if not hasattr(cls, name)]
        missing += [name for name in ("read_form", "saver", "action")
                    if getattr(cls, name) is getattr(EditorScreen, name)]
        if missing:
            raise TypeError(f"{cls.__name__} must define {', '.join(missing)}")

    def __init__(self) -> None:
        super().__init__()
        self.saving = False

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()

    def _field(self, key: str) -> FormField:
        return self.query_one(f"#field-{key}", FormField)

    def _error(self, message: str | None) -> None:
        """The editor's own error line, under the form: brought into view, unless a field marked wrong
        (scrolled to and focused instead) says more."""
        widget = self.query_one("#editor-error", Static)
        widget.set_class(bool(message), "-shown")
        widget.update(f"✗ {message}" if message else "")
        if message and not reveal_first_error(self):
            widget.scroll_visible(animate=False)

    def action_save(self) -> None:
        label = f"save {self.what}"
        if self.saving or self.kerub.refuse_readonly(label, self.action):
            return
        values = self.read_form()
        if values is None:
            return
        self.saving = True

        def saved(doc: Any) -> None:
            self.saving = False
            self.notify(f"{self.what} {doc.name} saved", title=self.what)
            if self.app.screen is self:
                self.app.pop_screen()

        def failed(message: str) -> None:
            self.saving = False
            self._error(message)

        self.kerub.perform(label, self.saver(values), action=self.action, after=saved, on_error=failed)
