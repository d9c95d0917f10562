"""The expectation editor: every type the models accept, its form built from the pydantic fields.

References to other VMs or disks are typed as names and stored as ids (as the command line does);
the list shows them by name. Errors are shown next to the field they are about.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import ValidationError
from pydantic_core import PydanticUndefined
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Input, Label, OptionList, Select, Static, Switch
from textual.widgets.option_list import Option

from ..api import ConsoleQueries
from ..core.expectations import (
    DISK_EXPECTATION_TYPES,
    REFERENCE_FIELDS,
    VM_EXPECTATION_TYPES,
    Expectation,
    Level,
    StorageAvailability,
    VmAvailability,
    display_spec,
)
from ..core.models import DOCUMENT_TYPES
from .forms import FormField, pydantic_errors

# Types of which a document has at most one: adding another replaces it.
SINGLE_TYPES: tuple[type[Expectation], ...] = (VmAvailability, StorageAvailability)
LEVEL_STYLES = {"wish": "dim", "want": "", "dealbreaker": "bold"}


def _origin(annotation: Any) -> Any:
    return typing.get_origin(annotation)


def field_kind(annotation: Any) -> str:
    """bool, int, choice, list, or text: which widget edits a field of this type."""
    origin = _origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return field_kind(args[0]) if len(args) == 1 else "text"
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if origin is Literal:
        return "choice"
    if origin is list:
        return "list"
    return "text"


def field_label(name: str) -> str:
    return name.replace("_", " ")


def field_help(name: str, kind: str, required: bool) -> str:
    if name in ("vms",):
        return "VM names, separated by commas"
    if name == "disks":
        return "disk names, separated by commas"
    if name == "disk":
        return "a disk name"
    if kind == "list":
        return "separated by commas"
    return "" if required else "optional"


class ExpectationEditor(Vertical):
    """A list of expectations and a form to add one; ``delete`` removes the highlighted one."""

    help_section = "Expectations"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+n", "add", "Add expectation", id="expect.add"),
        Binding("delete,ctrl+x", "remove", "Remove expectation", id="expect.remove"),
    ]

    DEFAULT_CSS = """
    ExpectationEditor { height: auto; border: round $panel-lighten-2; padding: 0 1; }
    ExpectationEditor OptionList { height: auto; max-height: 8; border: none; }
    ExpectationEditor #expect-choose { height: auto; margin: 1 0; }
    ExpectationEditor #expect-type { width: 2fr; }
    ExpectationEditor #expect-level { width: 1fr; }
    ExpectationEditor #expect-summary { color: $text-muted; padding: 0 1; }
    ExpectationEditor #expect-fields { height: auto; }
    ExpectationEditor #expect-error { color: $error; display: none; }
    ExpectationEditor #expect-error.-shown { display: block; }
    ExpectationEditor #expect-add-row { height: auto; align: right middle; }
    """

    class Changed(Message):
        def __init__(self, editor: ExpectationEditor) -> None:
            super().__init__()
            self.editor = editor

    class Invalid(Message):
        def __init__(self, editor: ExpectationEditor, errors: dict[str, str]) -> None:
            super().__init__()
            self.editor = editor
            self.errors = errors

    def __init__(self, target: Literal["vm", "disk"], expectations: Sequence[Expectation], api: ConsoleQueries,
                 *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.target = target
        self.types = VM_EXPECTATION_TYPES if target == "vm" else DISK_EXPECTATION_TYPES
        self.expectations: list[Expectation] = list(expectations)
        self.api = api
        self.border_title = f"Expectations ({'VM' if target == 'vm' else 'disk'})"
        self.border_subtitle = "ctrl+n adds · delete removes"

    def compose(self) -> ComposeResult:
        yield OptionList(id="expect-list")
        with Horizontal(id="expect-choose"):
            yield Select([(name, name) for name in sorted(self.types)], prompt="add an expectation of type…",
                         id="expect-type", compact=True)
            yield Select([(level.value, level.value) for level in Level], value=Level.want.value,
                         allow_blank=False, id="expect-level", compact=True)
        yield Static("", id="expect-summary", markup=False)
        yield Vertical(id="expect-fields")
        yield Static("", id="expect-error", markup=False)
        with Horizontal(id="expect-add-row"):
            yield Button("Add expectation [^n]", id="expect-add", compact=True)

    def on_mount(self) -> None:
        self._refresh_list()

    # --- the list -----------------------------------------------------------------------------

    def name_of(self, kind: str, doc_id: str) -> str:
        doc = self.api.get(DOCUMENT_TYPES[kind], doc_id)
        return getattr(doc, "name", None) or doc_id

    def _refresh_list(self) -> None:
        options = self.query_one("#expect-list", OptionList)
        options.clear_options()
        if not self.expectations:
            options.add_option(Option(Text("none yet: pick a type below", style="dim"), disabled=True))
            return
        for index, exp in enumerate(self.expectations):
            text = Text()
            text.append(f"{exp.level.value:<12}", style=LEVEL_STYLES.get(exp.level.value, ""))
            text.append(display_spec(exp, self.name_of))
            summary = type(exp).summary
            if summary:
                text.append(f"  — {summary}", style="dim")
            options.add_option(Option(text, id=str(index)))

    def action_remove(self) -> None:
        options = self.query_one("#expect-list", OptionList)
        index = options.highlighted
        if index is None or not self.expectations or index >= len(self.expectations):
            return
        del self.expectations[index]
        self._refresh_list()
        self.post_message(self.Changed(self))

    # --- the form -----------------------------------------------------------------------------

    async def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id != "expect-type":
            return
        event.stop()
        await self.build_form(None if event.value is Select.NULL else str(event.value))

    async def build_form(self, type_name: str | None) -> None:
        container = self.query_one("#expect-fields", Vertical)
        await container.remove_children()
        self._error(None)
        if type_name is None:
            self.query_one("#expect-summary", Static).update("")
            return
        cls = self.types[type_name]
        self.query_one("#expect-summary", Static).update(cls.summary)
        fields: list[Widget] = []
        for name, info in cls.model_fields.items():
            if name in ("type", "level"):
                continue
            kind = field_kind(info.annotation)
            required = info.is_required()
            default = None if info.default is PydanticUndefined else info.default
            widget: Any
            if kind == "bool":
                widget = Switch(value=bool(default) if default is not None else False, id=f"expect-{name}")
            elif kind == "choice":
                choices = typing.get_args(info.annotation)
                widget = Select([(str(c), c) for c in choices], value=default if default is not None else choices[0],
                                allow_blank=False, id=f"expect-{name}")
            else:
                value = "" if default is None or isinstance(default, list) else str(default)
                widget = Input(value, type="integer" if kind == "int" else "text", id=f"expect-{name}",
                               placeholder="required" if required else "optional")
            fields.append(FormField(field_label(name), widget, key=f"expect-{name}",
                                    help=field_help(name, kind, required)))
        if not fields:
            fields.append(Label("(no fields: only the level)", classes="field-help"))
        await container.mount_all(fields)

    def _error(self, message: str | None) -> None:
        widget = self.query_one("#expect-error", Static)
        widget.set_class(bool(message), "-shown")
        widget.update(message or "")

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "expect-add":
            event.stop()
            await self.action_add()

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id and event.input.id.startswith("expect-"):
            event.stop()
            await self.action_add()

    def read_form(self) -> Expectation | None:
        """The expectation the form describes, or None with the errors shown where they belong."""
        type_select = self.query_one("#expect-type", Select)
        if type_select.value is Select.NULL:
            self._error("pick an expectation type first")
            self.post_message(self.Invalid(self, {"type": "pick an expectation type first"}))
            return None
        type_name = str(type_select.value)
        cls = self.types[type_name]
        data: dict[str, Any] = {"type": type_name, "level": self.query_one("#expect-level", Select).value}
        errors: dict[str, str] = {}
        for form_field in self.query("#expect-fields FormField").results(FormField):
            name = form_field.key.removeprefix("expect-")
            form_field.set_error(None)
            value = form_field.value
            kind = field_kind(cls.model_fields[name].annotation)
            if kind in ("text", "int", "list") and value == "":
                continue
            if kind == "list":
                value = [v.strip() for v in str(value).split(",") if v.strip()]
            if name in REFERENCE_FIELDS:
                value, problem = self._resolve(REFERENCE_FIELDS[name], value)
                if problem:
                    errors[name] = problem
                    continue
            data[name] = value
        if not errors:
            try:
                expectation = cls.model_validate(data)
            except ValidationError as error:
                for loc, message in pydantic_errors(error):
                    errors[str(loc[0]) if loc else "type"] = message
            else:
                self._error(None)
                return expectation
        for name, message in errors.items():
            fields = self.query(f"#field-expect-{name}").results(FormField)
            for form_field in fields:
                form_field.set_error(message)
        self._error(f"{type_name}: " + "; ".join(f"{field_label(k)}: {v}" for k, v in errors.items()))
        self.post_message(self.Invalid(self, errors))
        return None

    def _resolve(self, kind: str, value: Any) -> tuple[Any, str | None]:
        names = value if isinstance(value, list) else [value]
        ids = []
        for name in names:
            cls = DOCUMENT_TYPES[kind]
            doc = self.api.get(cls, name) or self.api.find_by_name(cls, name)
            if doc is None:
                return value, f"no {'VM' if kind == 'vm' else 'disk'} named {name!r}"
            ids.append(doc.id)
        return (ids if isinstance(value, list) else ids[0]), None

    async def action_add(self) -> None:
        expectation = self.read_form()
        if expectation is None:
            return
        if isinstance(expectation, SINGLE_TYPES):
            self.expectations = [e for e in self.expectations if type(e) is not type(expectation)]
        self.expectations.append(expectation)
        self._refresh_list()
        await self.build_form(str(self.query_one("#expect-type", Select).value))
        self.post_message(self.Changed(self))
