"""Under the console the terminal is Textual's: a log.exception must land in the data dir's log file."""

from __future__ import annotations

from kerub_tui import cli
from kerub_tui.core import logs

from .helpers import running, settle


async def test_an_exception_in_a_console_action_lands_in_the_log_file(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("KERUB_TUI_DATA", str(data))
    cli._log_to_file(cli.build_parser().parse_args([]))  # as `kerub-tui` starting the console does

    async def broken() -> None:
        raise RuntimeError("the widget fell over (42)")

    async with running(tmp_path, (80, 24)) as (_controller, app, pilot):
        app.perform("frobnicate", broken, action="explain")  # an action that changes nothing
        await settle(app, pilot)
    text = (data / logs.LOG_FILE).read_text()
    assert "ERROR kerub_tui.app [-] frobnicate failed" in text, text
    assert "Traceback (most recent call last)" in text and "RuntimeError: the widget fell over (42)" in text
