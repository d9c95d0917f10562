"""The console's tables are virtualised (issue 15): only the rows on screen are computed and drawn, the
cursor keeps its document while rows above it come and go, and a burst of changes is taken in once
per frame. These tests count the work (rows computed, rows drawn, batches taken in); speed is
bench/console.py's."""

from __future__ import annotations

from textual.geometry import Region

from kerub_tui.app import KerubApp
from kerub_tui.core.bus import Change
from kerub_tui.core.models import VirtualMachine, VirtualMachineDynamic
from kerub_tui.screens.live import LiveTable

from .fleet_data import WEB1, WEB2, ident
from .helpers import settle, started_controller

MIB = 1 << 20


def many_vms(count: int, prefix: str = "x", tag: str = "vm000100") -> list[VirtualMachine]:
    return [VirtualMachine(id=ident(tag, n), name=f"{prefix}{n:03d}", memory_min=256 * MIB, memory_max=256 * MIB)
            for n in range(count)]


def on_screen(table: LiveTable) -> list[str]:
    """The names the table shows, top to bottom: the first word of each row line below the header, as
    Textual's line cache has them (a line the table did not mark for repainting keeps what it showed)."""
    region = table.region
    lines = table.render_lines(Region(0, 0, region.width, region.height))
    rows = [strip.text.strip("│╭╮╰╯─ ").split() for strip in lines[2:-1]]  # the border, the header
    return [words[0] for words in rows if words]


def counting(table: LiveTable) -> list[str]:
    """Record every row whose cells the table asks its source for from now on."""
    asked: list[str] = []
    cells = table.source.cells
    table.source.cells = lambda doc_id: asked.append(doc_id) or cells(doc_id)  # type: ignore[method-assign]
    return asked


async def vms_pane(tmp_path, extra: list[VirtualMachine]):
    controller = await started_controller(tmp_path / "data")
    controller.db.put_many(extra)
    return controller, KerubApp(controller)


async def test_scrolling_draws_the_rows_there_and_computes_only_those(tmp_path):
    many = many_vms(300)
    controller, app = await vms_pane(tmp_path, many)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await settle(app, pilot)
        table: LiveTable = app.screen.table("vms")
        names = [controller.db.get(VirtualMachine, i).name for i in table.shown_ids()]
        assert len(names) == 303 and names == sorted(names)  # db1, web1, web2, x000...
        visible = table.size.height - 1  # below the header
        assert on_screen(table) == names[:visible]
        # 303 rows, sorted by name: only the rows on screen had their cells computed.
        assert table.computed == visible
        await pilot.press("pagedown")
        await settle(app, pilot)
        top = int(table.scroll_y)
        assert top > 0 and on_screen(table) == names[top:top + visible]
        assert table.cursor_id == table.shown_ids()[table.cursor_row]
        assert names[table.cursor_row] in on_screen(table)
        await pilot.press("end")
        await settle(app, pilot)
        assert on_screen(table)[-1] == "x299" and table.cursor_id == many[-1].id
        assert on_screen(table) == names[-visible:]
        assert table.computed <= 3 * visible  # the three screens seen, never the 303 rows
        await pilot.press("home")
        await settle(app, pilot)
        assert on_screen(table) == names[:visible] and table.cursor_row == 0
        # A click puts the cursor on the row under the mouse (the border, the header, then rows).
        await pilot.click("#vms", offset=(6, 4))
        assert table.cursor_id == WEB2 and table.cursor_row == 2


async def test_the_cursor_stays_on_its_vm_when_rows_above_it_change(tmp_path):
    many = many_vms(200)
    controller, app = await vms_pane(tmp_path, many)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await settle(app, pilot)
        table: LiveTable = app.screen.table("vms")
        target = many[150]
        table.move_cursor(row=table.get_row_index(target.id))
        await settle(app, pilot)
        row = table.cursor_row
        assert target.name in on_screen(table)
        # Above it: 8 VMs appear (their names sort first), 5 go, one is renamed past it, and every
        # other row above it changes its figures.
        controller.db.put_many(many_vms(8, prefix="a", tag="vm000200"))
        for vm in many[:5]:
            controller.db.delete(VirtualMachine, vm.id)
        controller.db.put(many[10].evolve(name="zzz"))
        controller.db.put_many([VirtualMachineDynamic(id=vm.id, memory_used=n * MIB) for n, vm in enumerate(many[11:150])])
        await settle(app, pilot)
        assert table.cursor_id == target.id
        assert table.cursor_row == row + 8 - 5 - 1
        assert target.name in on_screen(table)  # still in view, where the cursor is drawn
        assert table.shown_ids()[table.cursor_row] == target.id
        assert table.total == 203 + 8 - 5
        # A row above it renamed to sort just below it (as wide: no column grows, nothing else repaints
        # the whole table): the rows between move up a line on screen.
        row, visible = table.cursor_row, table.size.height - 1
        controller.db.put(many[20].evolve(name="x15a"))
        await settle(app, pilot)
        assert table.cursor_id == target.id and table.cursor_row == row - 1
        names = [controller.db.get(VirtualMachine, i).name for i in table.shown_ids()]
        top = int(table.scroll_y)
        assert on_screen(table) == names[top:top + visible]
        assert names.index("x15a") > names.index(target.name)


async def test_a_burst_of_changes_is_taken_in_once_per_frame(tmp_path):
    controller, app = await vms_pane(tmp_path, many_vms(50))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        table: LiveTable = app.screen.table("vms")
        assert "web1" in on_screen(table)
        asked = counting(table)
        applied, drawn = table.updates_applied, table.rows_drawn
        # Ten changes of one VM on screen, in batches that all arrive before the next frame.
        dyn = VirtualMachineDynamic(id=WEB1, memory_used=MIB)
        for n in range(10):
            new = dyn.evolve(memory_used=(n + 2) * MIB)
            table.apply_changes([Change("vm-dynamic", WEB1, dyn, new)])
            dyn = new
        await pilot.pause()
        assert table.updates_applied == applied + 1  # taken in once
        assert asked.count(WEB1) == 1  # its cells computed once
        assert table.rows_drawn == drawn + 1  # its line drawn once; no other row drawn again
        # The same through the change feed: ten writes of one VM are one batch, one row computed.
        applied = table.updates_applied
        running = controller.db.get(VirtualMachineDynamic, WEB1)
        for n in range(10):
            controller.db.put(running.evolve(memory_used=(n + 20) * MIB))
        await settle(app, pilot)
        assert table.updates_applied == applied + 1
        assert asked.count(WEB1) == 2
        assert table.cells_of(WEB1)[4].plain.startswith("29")  # the last of them
