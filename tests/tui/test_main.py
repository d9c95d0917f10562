"""The main screen: live panes, status bar, first run, keyboard (jump, filter, marks, bulk, help, palette)."""

from __future__ import annotations

import datetime as dt

from textual.widgets import Static

from kerub_tui.app import KerubApp, all_binding_ids
from kerub_tui.core.models import VirtualMachine, VirtualMachineDynamic, VmStatus
from kerub_tui.screens.confirm import ConfirmScreen
from kerub_tui.screens.help import HelpScreen
from kerub_tui.screens.live import LiveTable
from kerub_tui.screens.logs import AuditScreen
from kerub_tui.screens.main import FirstRun, MainScreen, StatusBar
from kerub_tui.screens.plans import ProposalsScreen

from .fleet_data import DB1, H1, H2, T0, WEB1, WEB2, ident
from .helpers import Recorder, plain, running, settle, started_controller


def status_text(app: KerubApp) -> str:
    return str(app.screen.query_one(StatusBar).render())


async def test_three_live_panes_and_status(tmp_path):
    async with running(tmp_path, (120, 40)) as (controller, app, _pilot):
        screen = app.screen
        assert isinstance(screen, MainScreen)
        assert screen.table("hosts").shown_ids() == [H1, H2, ident("host0003", 3)]
        assert {screen.table("vms").cells_of(i)[0].plain for i in screen.table("vms").shown_ids()} == \
            {"web1", "web2", "db1"}
        assert len(screen.table("disks").shown_ids()) == 3
        status = status_text(app)
        assert "hosts 2/3 up" in status
        assert "1 proposal" in status
        assert "running ksm 1/2" in status
        assert str(controller.data_dir) in status
        assert "READ-ONLY" not in status
        assert not screen.query_one(FirstRun).has_class("-shown")
        # The VM badge says which expectations are violated now (db1 has an open violation).
        vms = screen.table("vms")
        assert vms.cells_of(DB1)[5].plain == "✗1/2"
        assert vms.cells_of(WEB1)[5].plain == "✓2"


async def test_first_run_says_what_to_do(tmp_path):
    async with running(tmp_path, (80, 24), empty=True) as (_controller, app, pilot):
        first_run = app.screen.query_one(FirstRun)
        assert first_run.has_class("-shown") and first_run.display
        text = str(first_run.render())
        assert "No hosts yet" in text
        assert "Press a to add your first host" in text
        assert "kerub-tui host add ADDRESS[:PORT] --user root" in text
        assert "hosts 0/0 up" in status_text(app)
        # The key it names is the key that works.
        await pilot.press("a")
        assert type(app.screen).__name__ == "AddHostScreen"


async def test_first_run_names_the_remapped_key(tmp_path, private_dirs):
    config, _ = private_dirs
    (config / "keymap.toml").write_text('"main.add_host" = "plus"\n')
    async with running(tmp_path, (80, 24), empty=True) as (_controller, app, pilot):
        assert "Press + to add your first host" in str(app.screen.query_one(FirstRun).render())
        await pilot.press("a")
        assert isinstance(app.screen, MainScreen)
        await pilot.press("plus")
        assert type(app.screen).__name__ == "AddHostScreen"


async def test_rows_update_in_place_and_the_cursor_stays(tmp_path):
    async with running(tmp_path, (120, 40)) as (controller, app, pilot):
        await pilot.press("2")
        vms: LiveTable = app.screen.table("vms")
        assert vms.has_focus
        vms.move_cursor(row=vms.get_row_index(WEB2))
        assert vms.cursor_id == WEB2
        # A figure of another row changes: only that cell changes, the cursor does not move.
        dyn = controller.db.get(VirtualMachineDynamic, WEB1)
        controller.db.put(dyn.evolve(memory_used=2 * 1024**3 - 1))
        await settle(app, pilot)
        assert vms.get_row(WEB1)[5].plain.startswith("2.0G/")
        assert vms.cursor_id == WEB2
        # A new VM sorts in above the cursor: the cursor stays on web2.
        controller.db.put(VirtualMachine(id=ident("vm000009", 9), name="aaa", memory_min=256 << 20,
                                         memory_max=256 << 20))
        await settle(app, pilot)
        assert vms.shown_ids()[0] == ident("vm000009", 9)
        assert vms.cursor_id == WEB2
        # The row above the cursor goes away: still on web2.
        controller.db.delete(VirtualMachine, ident("vm000009", 9))
        controller.db.delete(VirtualMachine, DB1)
        await settle(app, pilot)
        assert vms.shown_ids() == [WEB1, WEB2]
        assert vms.cursor_id == WEB2


async def test_filter_regex_invert_and_esc(tmp_path):
    record = Recorder()
    async with running(tmp_path, (120, 40), message_hook=record) as (_controller, app, pilot):
        await pilot.press("2", "slash", *"^web[12]$", "enter")
        vms: LiveTable = app.screen.table("vms")
        assert vms.shown_ids() == [WEB1, WEB2]
        changed = record.of(LiveTable.FilterChanged)[-1]
        assert changed.filter.text == "^web[12]$" and changed.shown == 2 and changed.filter.error is None
        assert "/^web[12]$" in str(vms.border_title)
        await pilot.press("slash", *["backspace"] * 10, *"!web", "enter")
        assert vms.shown_ids() == [DB1]
        # Not a regex: matched as plain text, and the admin is told.
        await pilot.press("slash", *["backspace"] * 10, *"web[", "enter")
        assert vms.shown_ids() == []
        assert "not a regular expression" in record.of(LiveTable.FilterChanged)[-1].filter.error
        await pilot.press("escape")
        assert len(vms.shown_ids()) == 3 and vms.row_filter.text == ""


async def test_filter_and_sort_survive_updates(tmp_path):
    async with running(tmp_path, (120, 40)) as (controller, app, pilot):
        await pilot.press("2", "slash", *"^h1$", "enter")  # VMs whose host column is h1
        vms: LiveTable = app.screen.table("vms")
        assert vms.shown_ids() == [WEB1]
        dyn = controller.db.get(VirtualMachineDynamic, WEB2)
        controller.db.put(dyn.evolve(host_id=H1))  # web2 migrates to h1: it now matches
        await settle(app, pilot)
        assert vms.shown_ids() == [WEB1, WEB2]
        controller.db.put(dyn)  # and back: it does not
        await settle(app, pilot)
        assert vms.shown_ids() == [WEB1]
        await pilot.press("escape")
        # Sort by status, then a status change re-sorts without moving the cursor off its VM.
        await pilot.press("o")
        assert vms.sort_column == "status"
        vms.move_cursor(row=vms.get_row_index(WEB2))
        assert [vms.cells_of(i)[1].plain for i in vms.shown_ids()] == ["down", "up", "up"]
        controller.db.put(VirtualMachineDynamic(id=DB1, host_id=H2, status=VmStatus.up, updated_at=T0))
        controller.db.put(controller.db.get(VirtualMachineDynamic, WEB1).evolve(status=VmStatus.paused))
        await settle(app, pilot)
        assert [vms.cells_of(i)[1].plain for i in vms.shown_ids()] == ["paused", "up", "up"]
        assert vms.shown_ids()[0] == WEB1
        assert vms.cursor_id == WEB2
        await pilot.press("O")
        assert vms.shown_ids()[-1] == WEB1 and vms.cursor_id == WEB2


async def test_marks_and_bulk_actions(tmp_path):
    record = Recorder()
    async with running(tmp_path, (120, 40), message_hook=record) as (controller, app, pilot):
        await pilot.press("2")
        vms: LiveTable = app.screen.table("vms")
        assert vms.shown_ids() == [DB1, WEB1, WEB2]
        await pilot.press("space")  # marks db1, moves down
        assert vms.marked == {DB1} and vms.cursor_id == WEB1
        assert record.of(LiveTable.MarksChanged)[-1].marked == frozenset({DB1})
        await pilot.press("space")
        assert vms.selected_ids() == [DB1, WEB1]
        # Bulk stop: the confirmation states the impact, per VM.
        await pilot.press("S")
        assert isinstance(app.screen, ConfirmScreen)
        impact = str(app.screen.query_one("#confirm-impact", Static).render())
        assert "web1: up on h1" in impact and "db1: not running" in impact
        await pilot.press("y")
        await settle(app, pilot)
        for vm_id in (DB1, WEB1):
            availability = [e for e in controller.db.get(VirtualMachine, vm_id).expectations
                             if e.type == "availability"]
            assert [e.up for e in availability] == [False]
        assert controller.db.get(VirtualMachine, WEB2).expectations[0].up is True
        assert record.of(KerubApp.ActionDone)[-1].action == "stop"
        # ctrl+a marks every row the filter shows, and only those.
        await pilot.press("escape")  # clears the marks
        assert vms.marked == set()
        await pilot.press("slash", *"web", "enter", "ctrl+a")
        assert vms.marked == {WEB1, WEB2}
        await pilot.press("s")
        await settle(app, pilot)
        for vm_id in (WEB1, WEB2):
            assert [e.up for e in controller.db.get(VirtualMachine, vm_id).expectations
                    if e.type == "availability"] == [True]
        assert [e.up for e in controller.db.get(VirtualMachine, DB1).expectations
                if e.type == "availability"] == [False]
        # Bulk delete asks first; "n" deletes nothing.
        await pilot.press("ctrl+d")
        assert isinstance(app.screen, ConfirmScreen)
        assert "refused until it is stopped" in str(app.screen.query_one("#confirm-impact", Static).render())
        await pilot.press("n")
        await settle(app, pilot)
        assert controller.db.get(VirtualMachine, WEB1) is not None
        # ctrl+a again with everything shown marked: unmarks them.
        await pilot.press("ctrl+a")
        assert vms.marked == set()


async def test_bulk_delete_reports_refusals(tmp_path):
    record = Recorder()
    async with running(tmp_path, (120, 40), message_hook=record) as (controller, app, pilot):
        await pilot.press("2", "ctrl+a", "ctrl+d", "y")
        await settle(app, pilot)
        # db1 is down: deleted; web1 and web2 run: refused by the controller, and said so.
        assert controller.db.get(VirtualMachine, DB1) is None
        assert controller.db.get(VirtualMachine, WEB1) is not None
        failed = record.of(KerubApp.ActionFailed)[-1]
        assert "web1" in failed.error and "stop it first" in failed.error and "done: db1" in failed.error
        assert app.screen.table("vms").marked == {WEB1, WEB2}


async def test_jump_to_views(tmp_path):
    record = Recorder()
    async with running(tmp_path, (80, 24), message_hook=record) as (_controller, app, pilot):
        await pilot.press("colon", *"plans", "enter")
        assert isinstance(app.screen, ProposalsScreen)
        await pilot.press("colon", *"audit", "enter")
        assert isinstance(app.screen, AuditScreen)
        assert len(app.screen_stack) == 3  # a jump replaces the view, it does not pile them up
        await pilot.press("colon", *"vms", "enter")
        assert isinstance(app.screen, MainScreen)
        assert app.screen.active_pane == "vms" and app.screen.table("vms").display
        assert not app.screen.table("hosts").display  # 80x24: one pane at a time
        assert [m.view for m in record.of(KerubApp.Jumped)] == ["plans", "audit", "vms"]
        await pilot.press("colon", *"nowhere", "enter")
        assert isinstance(app.screen, MainScreen)
        await pilot.press("colon", "escape")
        assert isinstance(app.screen, MainScreen)
        await pilot.press("3")
        assert app.screen.active_pane == "disks"
        await pilot.press("tab")
        assert app.screen.active_pane == "hosts"
        await pilot.press("enter")
        assert type(app.screen).__name__ == "HostDetailScreen"
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_help_lists_every_key_of_the_screen(tmp_path, private_dirs):
    config, _ = private_dirs
    (config / "keymap.toml").write_text('"vms.start" = "ctrl+s"\n')
    async with running(tmp_path, (120, 40)) as (controller, app, pilot):
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        listed = {row.binding_id: row for row in app.screen.rows}
        expected = {"app.quit", "app.jump", "app.help", "app.palette", "main.add_host", "main.hosts",
                    "table.filter", "table.mark", "table.mark_all", "table.open", "hosts.evacuate",
                    "hosts.remove", "vms.new", "vms.edit", "vms.start", "vms.stop", "vms.console", "vms.delete",
                    "disks.new", "disks.edit", "disks.delete", "screen.back"}
        assert expected <= set(listed)
        assert listed["vms.start"].keys == "^s"
        assert listed["app.quit"].keys == "q ^q"
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)
        await pilot.press("2", "ctrl+s")  # the remapped key works
        await settle(app, pilot)
        assert [e.up for e in controller.db.get(VirtualMachine, DB1).expectations if e.type == "availability"] \
            == [True]


async def test_every_binding_has_an_id_and_the_palette_offers_them(tmp_path):
    from kerub_tui.app import iter_bindings

    assert all(b.id for b in iter_bindings())
    ids = all_binding_ids()
    assert len(ids) > 40
    async with running(tmp_path, (120, 40)) as (controller, app, pilot):
        titles = {c.title: c for c in app.get_system_commands(app.screen)}
        helps = " ".join(c.help for c in titles.values())
        for binding_id in ("vms.start", "vms.delete", "hosts.evacuate", "disks.new", "main.add_host",
                           "table.filter", "table.mark_all", "app.jump"):
            assert binding_id in helps
        assert "Go to plans" in titles
        await pilot.press("ctrl+p", *"Go to plans")
        await pilot.pause(0.3)  # the palette searches in the background
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, ProposalsScreen)
        # A table action from the palette acts on that table.
        await pilot.press("colon", *"vms", "enter")
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        await commands["VMs pane: Start"].callback()
        await settle(app, pilot)
        assert [e.up for e in controller.db.get(VirtualMachine, DB1).expectations if e.type == "availability"] \
            == [True]


async def test_readonly_refuses_every_change_and_shows_it(tmp_path):
    await (await started_controller(tmp_path / "data")).stop()  # create the store file
    controller = await started_controller(tmp_path / "data", readonly=True)
    before = {d.id: d for d in controller.db.all_documents()}
    record = Recorder()
    app = KerubApp(controller)
    async with app.run_test(size=(120, 40), message_hook=record) as pilot:
        await settle(app, pilot)
        assert "READ-ONLY" in status_text(app)
        await pilot.press("2", "s", "S", "n", "e", "ctrl+d", "a", "3", "n", "ctrl+d", "1", "E", "ctrl+d")
        await pilot.press("colon", *"plans", "enter", "a", "r", "A")
        await settle(app, pilot)
        refused = record.of(KerubApp.ActionRefused)
        assert {r.action for r in refused} >= {"start", "stop", "new VM", "edit VM", "delete VMs", "add host",
                                              "new disk", "delete disks", "evacuate", "remove hosts",
                                              "approve", "reject", "always approve"}
        assert all("read-only" in r.reason for r in refused)
        assert not any(isinstance(s, ConfirmScreen) for s in app.screen_stack)
        assert {d.id: d for d in controller.db.all_documents()} == before
        await pilot.press("colon", *"settings", "enter")
        assert "READ-ONLY" in plain(app.screen.query_one("#mode", Static))


async def test_console_needs_a_running_vm(tmp_path):
    record = Recorder()
    async with running(tmp_path, (120, 40), message_hook=record) as (_controller, _app, pilot):
        await pilot.press("2", "c")  # db1 is down
        refused = record.of(KerubApp.ActionRefused)
        assert refused and "db1 is not running" in refused[-1].reason


async def test_changes_reach_every_open_screen(tmp_path):
    async with running(tmp_path, (120, 40)) as (controller, app, pilot):
        await pilot.press("colon", *"audit", "enter")
        from kerub_tui.core.models import AuditEntry

        controller.db.put(AuditEntry(id=ident("audit009", 9), time=T0 + dt.timedelta(hours=1), os_user="x",
                                     action="vm create", target="new1"))
        await settle(app, pilot)
        table = app.screen.query_one(LiveTable)
        assert table.shown_ids()[0] == ident("audit009", 9)  # newest first
        controller.db.put(VirtualMachine(id=ident("vm000009", 9), name="new1", memory_min=256 << 20,
                                         memory_max=256 << 20))
        await settle(app, pilot)
        await pilot.press("escape")
        assert ident("vm000009", 9) in app.screen.table("vms").shown_ids()


async def test_rows_out_of_view_cost_nothing_until_they_scroll_in(tmp_path):
    controller = await started_controller(tmp_path / "data")
    many = [VirtualMachine(id=ident("vm000100", n), name=f"x{n:03d}", memory_min=256 << 20, memory_max=256 << 20)
            for n in range(100)]
    controller.db.put_many(many)
    app = KerubApp(controller)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        vms: LiveTable = app.screen.table("vms")
        computed: list[str] = []
        cells_of = vms.source.cells
        vms.source.cells = lambda doc_id: computed.append(doc_id) or cells_of(doc_id)  # type: ignore[method-assign]
        last = many[-1].id
        assert not vms._in_view(last)
        controller.db.put(VirtualMachineDynamic(id=last, host_id=H1, status=VmStatus.up, updated_at=T0))
        await settle(app, pilot)
        await pilot.pause()
        # Out of view: taken in (it keeps its place: sorted by name, known without its cells), never drawn.
        assert last not in computed and vms.is_shown(last)
        await pilot.press("end")
        await settle(app, pilot)
        await pilot.pause()
        assert vms._in_view(last) and vms.cursor_id == last
        assert computed.count(last) == 1  # drawn once it scrolled in, with what it is now
        assert vms.get_row(last)[2].plain == "up"
        # A sort by another column than the name needs every row's cells.
        first = many[0].id
        controller.db.put(VirtualMachineDynamic(id=first, host_id=H1, status=VmStatus.paused, updated_at=T0))
        await settle(app, pilot)
        await pilot.press("o")  # by status
        statuses = [vms.cells_of(i)[1].plain for i in vms.shown_ids()]
        assert statuses == sorted(statuses) and statuses.count("paused") == 1
        assert [vms.get_row(i)[2].plain for i in vms.shown_ids()] == statuses
