"""The log screens (audit, events) are complete by construction."""

import pytest

from kerub_tui.screens.logs import AuditScreen, EventsScreen, LogScreen


def test_a_log_screen_without_its_rows_or_detail_is_refused_when_defined():
    with pytest.raises(TypeError, match="must define rows, detail"):
        class Incomplete(LogScreen):
            table_id = "x"

    for screen in (AuditScreen, EventsScreen):
        assert screen.rows and screen.table_id and callable(screen.detail)
