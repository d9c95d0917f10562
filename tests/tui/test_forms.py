"""Form errors (issue 13 item 9): next to their field, in the admin's words, and in view at 80x24 — the
form scrolls to the first one and focuses it."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field, ValidationError
from textual.containers import VerticalScroll
from textual.widgets import Input, Static

from kerub_tui.api import ActionError
from kerub_tui.core.models import VirtualMachine
from kerub_tui.screens.forms import FormField, pydantic_errors

from .helpers import running, settle


def in_view(screen, widget) -> bool:
    body = screen.query_one(VerticalScroll)
    return body.region.y <= widget.region.y and widget.region.bottom <= body.region.bottom and widget.region.height


async def save_new_vm(app, pilot, *, name: str, memory: str, focus: str):
    """The VMs pane's new-VM editor with a name and memory, ctrl+s pressed from the field ``focus``."""
    await pilot.press("2", "n")
    editor = app.screen
    editor.query_one("#name", Input).value = name
    editor.query_one("#memory_min", Input).value = memory
    editor.query_one(focus).focus()
    await pilot.pause()
    await pilot.press("ctrl+s")
    await settle(app, pilot)
    return editor


async def test_a_vm_name_in_use_shows_next_to_the_name_field_at_80x24(tmp_path):
    async with running(tmp_path, (80, 24)) as (controller, app, pilot):
        editor = await save_new_vm(app, pilot, name="web1", memory="1G", focus="#cpus")
        assert app.screen is editor  # not saved
        field = editor.query_one("#field-name", FormField)
        assert field.error == "a VM named 'web1' already exists"
        assert in_view(editor, field) and app.focused is editor.query_one("#name", Input)
        assert [vm.name for vm in controller.documents(VirtualMachine)].count("web1") == 1


async def test_the_first_wrong_field_is_scrolled_to_and_focused(tmp_path):
    async with running(tmp_path, (80, 24)) as (_controller, app, pilot):
        # ctrl+s from the save button, at the bottom of the form: the memory field is far above
        editor = await save_new_vm(app, pilot, name="app1", memory="lots", focus="#save")
        field = editor.query_one("#field-memory_min", FormField)
        assert field.error and in_view(editor, field)
        assert app.focused is editor.query_one("#memory_min", Input)


async def test_a_refusal_from_the_controller_is_brought_into_view(tmp_path, monkeypatch):
    async with running(tmp_path, (80, 24)) as (controller, app, pilot):
        async def refuse(*_args, **_kwargs):
            raise ActionError("the store refused: the data dir is full")

        monkeypatch.setattr(controller, "create_vm", refuse)
        editor = await save_new_vm(app, pilot, name="app1", memory="1G", focus="#name")
        line = editor.query_one("#editor-error", Static)
        assert "the data dir is full" in str(line.render())
        assert in_view(editor, line)


async def test_settings_out_of_range_say_so_in_words_next_to_the_field(tmp_path):
    async with running(tmp_path, (80, 24)) as (controller, app, pilot):
        await pilot.press("colon", *"settings", "enter")
        screen = app.screen
        screen.query_one("#load_balancing_min_gain", Input).value = "2"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        field = screen.query_one("#field-load_balancing_min_gain", FormField)
        assert field.error == "must be at most 1, not 2.0"
        assert in_view(screen, field) and app.focused is screen.query_one("#load_balancing_min_gain", Input)
        assert controller.settings().optimisation.load_balancing_min_gain == 0.1  # nothing saved


async def test_thin_over_commit_is_set_in_settings_and_its_ratio_bounded(tmp_path):
    """Issue 18 item 5: the thin over-commit policy (off by default) and its ratio are planner policies."""
    from textual.widgets import Switch

    async with running(tmp_path, (80, 24)) as (controller, app, pilot):
        assert controller.settings().optimisation.thin_overcommit is False
        await pilot.press("colon", *"settings", "enter")
        screen = app.screen
        screen.query_one("#thin_overcommit", Switch).value = True
        screen.query_one("#thin_overcommit_ratio", Input).value = "0.5"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        field = screen.query_one("#field-thin_overcommit_ratio", FormField)
        assert field.error == "must be at least 1, not 0.5"
        assert in_view(screen, field)
        assert controller.settings().optimisation.thin_overcommit is False  # nothing saved
        screen.query_one("#thin_overcommit_ratio", Input).value = "4"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        policy = controller.settings().optimisation
        assert policy.thin_overcommit is True and policy.thin_overcommit_ratio == 4.0


class Sample(BaseModel):
    share: float = Field(ge=0, le=1)
    count: int = Field(gt=0, lt=10)
    name: str = Field(min_length=2, max_length=4)


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"share": 2}, "share", "must be at most 1, not 2"),
    ({"share": -1}, "share", "must be at least 0, not -1"),
    ({"share": "half"}, "share", "must be a number, not 'half'"),
    ({"count": 0}, "count", "must be more than 0, not 0"),
    ({"count": 10}, "count", "must be less than 10, not 10"),
    ({"count": "x"}, "count", "must be a whole number, not 'x'"),
    ({"name": "a"}, "name", "needs at least 2 characters"),
    ({"name": "abcde"}, "name", "must be at most 4 characters long"),
    ({}, "share", "is missing"),
])
def test_pydantic_errors_in_the_admins_words(data, field, message):
    base = {"share": 0.5, "count": 1, "name": "ab"}
    with pytest.raises(ValidationError) as caught:
        Sample.model_validate(({} if not data else base) | data)
    found = dict((str(loc[0]), text) for loc, text in pydantic_errors(caught.value))
    assert found[field] == message
    assert not any("Input should" in text for text in found.values())
