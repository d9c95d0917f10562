"""The log screens (audit, events) and the editors are complete by construction."""

import pytest

from kerub_tui.screens.logs import AuditScreen, EventsScreen, LogScreen


def test_a_log_screen_without_its_rows_or_detail_is_refused_when_defined():
    with pytest.raises(TypeError, match="must define rows, detail"):
        class Incomplete(LogScreen):
            table_id = "x"

    for screen in (AuditScreen, EventsScreen):
        assert screen.rows and screen.table_id and callable(screen.detail)


def test_an_editor_without_its_form_or_save_is_refused_when_defined():
    from kerub_tui.screens.disks import DiskEditorScreen
    from kerub_tui.screens.forms import EditorScreen
    from kerub_tui.screens.vms import VmEditorScreen

    with pytest.raises(TypeError, match="must define read_form, saver"):
        class Incomplete(EditorScreen):
            what = "x"

    for editor in (DiskEditorScreen, VmEditorScreen):
        assert editor.what and callable(editor.read_form) and callable(editor.saver)
