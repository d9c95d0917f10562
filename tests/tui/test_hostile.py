"""Text a host reports is data: markup, terminal escapes, control characters and huge strings in
the documents (host facts, events, audit, plans, ...) are shown as they are in every screen that
shows host data, never crash the console, never take effect as markup or reach the terminal raw."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from textual.geometry import Region
from textual.widgets import Static

from kerub_tui.app import KerubApp
from kerub_tui.core.models import (
    AuditEntry,
    BlockDevice,
    CommandRecord,
    DmiInfo,
    Event,
    EventSeverity,
    FileAllocation,
    Host,
    HostConfiguration,
    HostDynamic,
    NfsExport,
    Plan,
    StaleFacts,
    StepOutcome,
    StepRecord,
    StorageCapability,
    StorageTechnology,
    VirtualStorageDeviceDynamic,
)
from kerub_tui.core.text import is_printable
from kerub_tui.screens.live import LiveTable

from .fleet_data import D_SHARED, H1, H2, H3, P_START, T0, WEB1, ident
from .helpers import plain, running, settle

LINK = "[link=https://evil.example/]click me[/link]"
# What hosts were seen (or could be expected) to print: Rich/Textual markup, ANSI and OSC escape
# sequences (colours, clear screen, window title, hyperlinks), C0/C1 controls, bidi overrides.
HOSTILE = [
    "Intel(R) Xeon(R) [/] CPU",
    LINK,
    "[@click=app.quit]quit[/]",
    "[bold red]loud [on blue]",
    "[/bold] [not a tag",
    "\x1b[2J\x1b[H\x1b[31mred\x1b[0m",
    "\x1b]8;;https://evil.example/\x07hyperlink\x1b]8;;\x07",
    "\x1b]0;pwned title\x07\x1bP+q\x1b\\",
    "\x9b31m C1 CSI \x9d0;x\x9c",
    "bell\x07 backspace\x08 cr\r vt\x0b ff\x0c del\x7f nul\x00",
    "\u202eevil\u202c \u2066isolate\u2069 zero\u200bwidth \ufeffbom \u2028line sep",
    "multi\nline\r\noutput\ttab",
    "\\[escaped] \\\\[twice]",
    "[" * 50 + "]" * 50,
]
HUGE = "[/]\x1b[31m" * 250_000  # 2 MB of markup and escapes in one field

FIELDS = 40  # how many distinct text fields the documents below take hostile values in


def hostile_documents(values: list[str]) -> list:
    """The fixture fleet's documents with ``values`` (cycled) in every host-reported text field."""
    v = [values[i % len(values)] for i in range(FIELDS)]
    when = T0 + dt.timedelta(minutes=30)
    from .fleet_data import fleet_documents

    docs = {(d.kind, d.id): d for d in fleet_documents()}
    h1: Host = docs[("host", H1)]
    caps = h1.capabilities
    caps = caps.model_copy(update={
        "cpu": caps.cpu.model_copy(update={"model": v[0], "vendor": v[1], "architecture": v[2], "flags": [v[3], "vmx"]}),
        "os": caps.os.model_copy(update={"pretty_name": v[4], "kernel": v[5], "hostname": v[6], "id": v[7],
                                         "version_id": v[8]}),
        "hypervisor": caps.hypervisor.model_copy(update={"libvirt_version": v[9]}),
        "dmi": DmiInfo(system_manufacturer=v[10], system_product=v[11], chassis_type=v[12]),
        "block_devices": [BlockDevice(name=v[13], path=v[14], type="disk", size_bytes=1, model=v[15])],
        "storage": [*caps.storage, StorageCapability(id=v[16], technology=StorageTechnology.file, name=v[17], size_bytes=1 << 30, free_bytes=1 << 29, device=v[18])],
        "tools": {v[19]: True, "lvm": True},
        "stale": [StaleFacts(section="cpu", since=when, read_at=T0, reason=v[20])],
    })
    docs[("host", H1)] = h1.model_copy(update={"capabilities": caps})
    h2: Host = docs[("host", H2)]
    docs[("host", H2)] = h2.model_copy(update={"capabilities": h2.capabilities.model_copy(update={
        "hypervisor": h2.capabilities.hypervisor.model_copy(update={"kvm": False, "domain_types": [],
                                                                    "reason": v[21]})})})
    dyn1: HostDynamic = docs[("host-dynamic", H1)]
    docs[("host-dynamic", H1)] = dyn1.model_copy(update={"failing_devices": [v[22]],
                                                         "storage_free": {**dyn1.storage_free, v[16]: 1 << 29}})
    dyn3: HostDynamic = docs[("host-dynamic", H3)]
    docs[("host-dynamic", H3)] = dyn3.model_copy(update={"status_reason": v[23]})
    docs[("host-config", H2)] = HostConfiguration(id=H2, exports=[NfsExport(path=v[24], clients=v[25],
                                                                           disk_id=D_SHARED)])
    docs[("disk-dynamic", D_SHARED)] = VirtualStorageDeviceDynamic(id=D_SHARED, allocations=[FileAllocation(
        host_id=H2, capability_id=v[26], path="/srv/kerub/shared-data.qcow2", format="qcow2")])
    plan: Plan = docs[("plan", P_START)]
    step = plan.steps[0]
    step = step.model_copy(update={"description": v[27], "effect": v[28], "commands": [
        step.commands[0].model_copy(update={"command": v[29]})]})
    docs[("plan", P_START)] = plan.model_copy(update={
        "trigger": [v[30]], "steps": [step, *plan.steps[1:]], "effects": [v[31]], "unsatisfied": [v[32]],
        "status_reason": v[33],
        "records": [StepRecord(step_index=0, host_id=H1, outcome=StepOutcome.failed, error=v[34], commands=[
            CommandRecord(host_id=H1, command=v[29], exit_code=1, stdout_tail=v[35], stderr_tail=v[36])])]})
    hostile_event = Event(id=ident("event666", 1), time=when, type="discovery-problem",
                          severity=EventSeverity.warning, host_id=H1, target=v[37], message=v[38])
    hostile_audit = AuditEntry(id=ident("audit666", 1), time=when, os_user="kerub", action="command",
                               target="discovery", host_id=H1, command=v[29], exit_code=1, duration_seconds=0.5,
                               output_tail=v[39], outcome=v[38])
    return [*docs.values(), hostile_event, hostile_audit]


def rendered_segments(app: KerubApp):
    """Every segment the current screen would write to the terminal, and every line of each Static
    in full (also the parts scrolled out of view)."""
    for strip in app.screen._compositor.render_strips():
        yield from strip
    for widget in app.screen.query(Static):
        width, height = widget.size
        if width and height:
            for strip in widget.render_lines(Region(0, 0, width, height)):
                yield from strip


def assert_safe(app: KerubApp, where: str) -> str:
    """The console still runs, shows no control character and no markup effect; returns the text."""
    assert app.is_running and app.return_code is None, f"{where}: the console exited"
    text = []
    for segment in rendered_segments(app):
        if segment.control:
            continue
        assert is_printable(segment.text), f"{where}: {segment.text[:80]!r} reaches the terminal"
        style = segment.style
        if style is not None:
            assert not style.link, f"{where}: a hyperlink to {style.link!r} from host text"
            assert not any("@click" in str(k) or "click" in str(val) for k, val in (style.meta or {}).items()), \
                f"{where}: an action from host text"
        text.append(segment.text)
    for table in app.screen.query(LiveTable):
        for row in range(table.row_count):
            for cell in table.get_row_at(row):
                plain_text = getattr(cell, "plain", str(cell))
                assert is_printable(plain_text), f"{where}: table cell {plain_text[:80]!r}"
                assert not any(getattr(span.style, "link", None) for span in getattr(cell, "spans", [])
                               if not isinstance(span.style, str)), where
    return "".join(text)


async def visit_every_screen(app: KerubApp, pilot, check=assert_safe) -> dict[str, str]:
    """Hosts, VMs and storage panes, host, VM and disk details, plans (each), events and audit
    (each entry's detail); ``check`` after each. Returns what each screen showed."""
    shown: dict[str, str] = {}

    async def look(where: str) -> None:
        await settle(app, pilot)
        shown[where] = check(app, where)

    await look("hosts")
    for pane in ("2", "3", "1"):
        await pilot.press(pane)
        await look(f"pane {pane}")
    hosts = app.screen.table("hosts")
    for host in (H1, H2, H3):
        hosts.move_cursor(row=hosts.get_row_index(host))
        await pilot.press("enter")
        await look(f"host {host}")
        shown[f"host {host} capabilities"] = plain(app.screen.query_one("#host-capabilities", Static))
        await pilot.press("escape")
    await pilot.press("2")
    vms = app.screen.table("vms")
    vms.move_cursor(row=vms.get_row_index(WEB1))
    await pilot.press("enter")
    await look("vm web1")
    await pilot.press("escape", "3")
    disks = app.screen.table("disks")
    disks.move_cursor(row=disks.get_row_index(D_SHARED))
    await pilot.press("enter")
    await look("disk shared")
    await pilot.press("escape")
    for view in ("plans", "events", "audit"):
        await pilot.press("colon", *view, "enter")
        table = app.screen.query_one(LiveTable)
        for row in range(table.row_count):
            table.move_cursor(row=row)
            await look(f"{view} row {row}")
        await pilot.press("escape")
    # errors a host caused reach the admin as notifications
    for value in {v for v in HOSTILE_SEEN}:
        app.notify(value, title=value[:40], severity="error")
    await look("notifications")
    return shown


HOSTILE_SEEN: list[str] = []


async def tour(tmp_path: Path, values: list[str]) -> dict[str, str]:
    from kerub_tui.controller import Controller

    data = tmp_path / "data"
    writer = Controller(data)
    store = writer.open_store()
    store.put_many(hostile_documents(values))
    store.close()
    controller = Controller(data)
    controller.open_store()
    await controller.start(connect_hosts=False)
    HOSTILE_SEEN[:] = values[:8]
    app = KerubApp(controller)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        return await visit_every_screen(app, pilot)


async def test_known_hostile_strings_are_shown_as_data_in_every_screen(tmp_path):
    shown = await tour(tmp_path, [*HOSTILE, HUGE])
    caps = shown[f"host {H1} capabilities"]
    # the markup is shown, not obeyed; the escapes are shown, not sent
    assert "Intel(R) Xeon(R) [/] CPU" in caps
    assert LINK in shown[f"host {H1}"] or LINK in caps
    assert "\\x1b[2J\\x1b[H\\x1b[31mred" in caps
    assert "stale" in caps  # the stale cpu section says so
    # a 2 MB field (a plan's trigger, among others) is cut, with a marker
    assert any("more characters]" in text for text in shown.values())
    assert any("[@click=app.quit]quit[/]" in text for text in shown.values())


async def test_the_hosts_list_marks_a_host_with_stale_facts(tmp_path):
    async with running(tmp_path, (120, 30)) as (controller, app, pilot):
        host = controller.db.get(Host, H1)
        stale = [StaleFacts(section="memory", since=T0, read_at=T0, reason="meminfo: garbage")]
        controller.db.put(host.model_copy(update={"capabilities": host.capabilities.model_copy(
            update={"stale": stale})}))
        await settle(app, pilot)
        table = app.screen.table("hosts")
        row = [cell.plain for cell in table.get_row_at(table.get_row_index(H1))]
        assert any(cell.startswith("up") and cell.endswith("stale") for cell in row), row
        await pilot.press("enter")
        await settle(app, pilot)
        assert "facts stale" in plain(app.screen.query_one("#host-title", Static))
        assert "memory: last good reading of" in plain(app.screen.query_one("#host-capabilities", Static))


# Pieces hypothesis combines: markup brackets and tags, escape introducers, controls, plain words.
PIECES = ["[", "]", "[/]", "[/", "[link=", "[@click=", "=", "\\", "\x1b", "\x1b[", "\x1b]", "\x07", "\x9b",
          "\x00", "\r", "\n", "\t", "\u202e", "\u200b", "bold", "red", "app.quit", "http://x/", " ", "é", "漢"]
hostile_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(PIECES) | st.text(max_size=5), max_size=60).map("".join),
    st.sampled_from(HOSTILE),
    st.tuples(st.sampled_from(PIECES), st.integers(1_000, 300_000)).map(lambda t: t[0] * t[1]),
)


# Three fleets: each is a full tour of every screen (~25 CPU s); the curated strings above tour once more.
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(values=st.lists(hostile_text, min_size=FIELDS, max_size=FIELDS))
def test_generated_hostile_strings_never_crash_nor_take_effect(tmp_path_factory, values):
    """hypothesis: 3 fleets, each with 40 generated hostile strings across host facts, dynamic
    state, storage, exports, plans, events and audit, shown in every screen."""
    asyncio.run(tour(tmp_path_factory.mktemp("hostile"), values))
