"""The ``:`` and ``/`` prompts (issue 13 item 1): one visible line over a screen that stays in view, a filter
that applies as it is typed, Tab completion, unambiguous prefixes, history."""

from __future__ import annotations

import pytest
from textual.widgets import Input, Label

from kerub_tui import app as app_module
from kerub_tui.app import resolve_view
from kerub_tui.screens.main import MainScreen
from kerub_tui.screens.plans import ProposalsScreen
from kerub_tui.screens.prompt import PromptScreen, common_prefix

from .helpers import running


def status(app) -> str:
    return str(app.screen.query_one("#prompt-status", Label).content)


async def test_the_jump_prompt_shows_what_is_typed_over_the_screen_it_came_from(tmp_path):
    async with running(tmp_path, (80, 24)) as (_controller, app, pilot):
        await pilot.press("colon", *"pl")
        prompt = app.screen
        assert isinstance(prompt, PromptScreen)
        field = prompt.query_one(Input)
        # One line that shows the text: the input used to have no height (only its border bars showed).
        assert field.region.height == 1 and field.content_region.height == 1
        assert field.value == "pl" and field.region.width > 20
        assert status(app) == "→ plans  ⏎"
        # The screen behind stays in view: the prompt is see-through, nothing above it is opaque but the main
        # screen, and the main screen's hosts are in the picture.
        assert prompt.styles.background.a == 0
        assert isinstance(app._background_screens[-1], MainScreen)
        assert "10.0.0.12:2222" in app.export_screenshot()


async def test_an_unambiguous_prefix_jumps_and_tab_completes_it(tmp_path):
    async with running(tmp_path, (80, 24)) as (_controller, app, pilot):
        await pilot.press("colon", *"pl", "tab")
        assert app.screen.query_one(Input).value == "plans"
        await pilot.press("enter")
        assert isinstance(app.screen, ProposalsScreen)
        await pilot.press("colon", *"ev", "enter")  # a prefix, without Tab
        assert type(app.screen).__name__ == "EventsScreen"
        await pilot.press("colon", *"nowhere")
        assert status(app) == "no such view"
        await pilot.press("escape")


async def test_up_and_down_walk_the_prompts_history(tmp_path):
    async with running(tmp_path, (120, 40)) as (_controller, app, pilot):
        await pilot.press("colon", *"audit", "enter", "colon", *"vms", "enter")
        await pilot.press("colon", *"ho", "up")
        field = app.screen.query_one(Input)
        assert field.value == "vms"
        await pilot.press("up")
        assert field.value == "audit"
        await pilot.press("up")  # the oldest stays
        assert field.value == "audit"
        await pilot.press("down", "down")  # past the newest: back to what was typed
        assert field.value == "ho"
        await pilot.press("escape", "slash", *"h1", "enter", "slash", "up")
        assert app.screen.query_one(Input).value == "h1"  # the filter prompt has its own history


async def test_the_filter_applies_as_it_is_typed_and_escape_puts_the_old_one_back(tmp_path):
    async with running(tmp_path, (80, 24)) as (_controller, app, pilot):
        table = app.screen.table("hosts")
        assert table.row_count == 3
        await pilot.press("slash", *"h2")
        assert table.row_count == 1 and status(app) == "1 of 3 shown"
        await pilot.press("escape")
        assert table.row_count == 3 and table.row_filter.text == ""
        await pilot.press("slash", *"h[13]", "enter")
        assert table.row_count == 2
        # The old filter shows, selected: typing replaces it instead of appending to an invisible regex.
        await pilot.press("slash")
        field = app.screen.query_one(Input)
        assert field.value == "h[13]" and field.selection.start == 0 and field.selection.end == len("h[13]")
        await pilot.press(*"h3")
        assert field.value == "h3" and table.row_count == 1
        await pilot.press(*"[")
        assert status(app).startswith("not a regular expression")
        await pilot.press("escape")
        assert table.row_filter.text == "h[13]" and table.row_count == 2


def test_prefixes_resolve_to_one_view_or_say_what_they_could_be(monkeypatch):
    assert resolve_view(":pl") == ("plans", ["plans"])
    assert resolve_view("h") == ("hosts", ["hosts"])  # an alias wins over the prefix of "help"
    assert resolve_view("he") == ("help", ["help"])
    assert resolve_view("zz") == (None, [])
    monkeypatch.setitem(app_module.VIEWS, "hypervisors", "hosts")
    assert resolve_view("hy") == ("hosts", ["hosts"])
    assert resolve_view("ho") == ("hosts", ["hosts"])
    monkeypatch.setitem(app_module.VIEWS, "helpdesk", "help")
    assert resolve_view("hel") == ("help", ["help"])
    monkeypatch.setitem(app_module.VIEWS, "hex", "hosts")
    assert resolve_view("he") == (None, ["hosts", "help"])


@pytest.mark.parametrize(("words", "prefix"), [((), ""), (("plans",), "plans"), (("hosts", "help"), "h"),
                                               (("audit", "vms"), "")])
def test_common_prefix(words, prefix):
    assert common_prefix(words) == prefix
