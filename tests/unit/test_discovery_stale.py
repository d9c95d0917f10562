"""A failed or partial discovery keeps the last good facts, per section, marked stale; the planner
takes no new guests on such a host and says why. Outputs are the real captured ones
(tests/captures/discovery), with a login banner, garbage or a broken tool put in front."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kerub_tui.core.models import (
    Event,
    Host,
    HostCapabilities,
    HostStatus,
    StaleFacts,
    VirtualMachine,
)
from kerub_tui.core.text import is_printable
from kerub_tui.hosts.facts import (
    LIST_LIMIT,
    MAX_OUTPUT,
    SECTION_FIELDS,
    TEXT_LIMIT,
    Output,
    assemble_discovery,
    merge_facts,
    stale_summary,
)
from kerub_tui.hosts.fleet import stale_event
from kerub_tui.planner.checkers import capacity_rejection, host_usable
from kerub_tui.planner.explain import explain, render

from .planner.fleet import Fleet, host_id

CAPTURES = Path(__file__).resolve().parents[1] / "captures" / "discovery"
T0 = dt.datetime(2026, 1, 2, 10, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(hours=1)
T2 = T1 + dt.timedelta(hours=1)
BANNER = "Welcome to kvm1!\nAuthorised use only. All activity is logged.\n"


def captured(name: str = "vm-lab") -> dict[str, Output]:
    manifest = json.loads((CAPTURES / name / "manifest.json").read_text())
    return {n: Output(e["exit_code"], (CAPTURES / name / f"{n}.out").read_text(), e["stderr"])
            for n, e in manifest.items()}


def with_banner(outputs: dict[str, Output], banner: str) -> dict[str, Output]:
    """What every command prints when the login shell prints ``banner`` first (a ~/.bashrc echo)."""
    return {n: Output(o.exit_code, banner + o.stdout, o.stderr) for n, o in outputs.items()}


def good(now: dt.datetime = T0) -> HostCapabilities:
    assembled = assemble_discovery(captured(), now=now)
    assert assembled.problems == [] and assembled.failed == {}
    return merge_facts(None, assembled.capabilities, assembled.failed)


def section(caps: HostCapabilities, name: str) -> tuple:
    return tuple(getattr(caps, f) for f in SECTION_FIELDS[name])


# --- merging ------------------------------------------------------------------------------------


def test_a_login_banner_keeps_the_last_good_facts_and_marks_them_stale():
    before = good()
    assembled = assemble_discovery(with_banner(captured(), BANNER), now=T1)
    assert {"cpu", "memory", "os", "storage", "tools", "ksm"} <= set(assembled.failed)
    after = merge_facts(before, assembled.capabilities, assembled.failed)
    # the facts the planner relies on are the last good ones, not an empty host
    assert after.cpu == before.cpu and after.cpu.cpus == 2
    assert after.memory_bytes == before.memory_bytes > 1 << 30
    assert after.storage == before.storage and {s.id for s in after.storage} >= {"lvm:capvg", "lvm:smallvg"}
    assert after.tools == before.tools and after.os == before.os
    assert after.discovered_at == T1
    stale = {s.section: s for s in after.stale}
    assert set(stale) == set(assembled.failed)
    assert all(s.since == T1 and s.read_at == T0 for s in stale.values())
    assert "lscpu" in stale["cpu"].reason and "Welcome" in stale["cpu"].reason
    # every section either is the fresh reading or was kept from before
    for name in HostCapabilities.SECTIONS:
        expected = before if name in stale else assembled.capabilities
        assert section(after, name) == section(expected, name), name
    assert "cpu (kept from 2026-01-02 10:00:00; not read since 2026-01-02 11:00:00" in stale_summary(after)


def test_a_broken_lscpu_stales_only_the_cpu():
    before = good()
    outputs = captured()
    outputs["lscpu"] = Output(139, "", "Segmentation fault (core dumped)\n")
    assembled = assemble_discovery(outputs, now=T1)
    assert set(assembled.failed) == {"cpu"}
    after = merge_facts(before, assembled.capabilities, assembled.failed)
    assert after.cpu == before.cpu
    assert [(s.section, s.since, s.read_at) for s in after.stale] == [("cpu", T1, T0)]
    assert "exit status 139: Segmentation fault" in after.stale[0].reason
    assert after.memory_bytes == before.memory_bytes and not after.stale_section("memory")


def test_stale_since_holds_across_failures_and_a_good_reading_clears_it():
    before = good()
    outputs = captured()
    outputs["meminfo"] = Output(0, "MemTotal: lots\n")
    first = assemble_discovery(outputs, now=T1)
    once = merge_facts(before, first.capabilities, first.failed)
    again = assemble_discovery(outputs, now=T2)
    twice = merge_facts(once, again.capabilities, again.failed)
    assert twice.memory_bytes == before.memory_bytes
    assert [(s.section, s.since, s.read_at) for s in twice.stale] == [("memory", T1, T0)]
    fresh = assemble_discovery(captured(), now=T2 + dt.timedelta(hours=1))
    healed = merge_facts(twice, fresh.capabilities, fresh.failed)
    assert healed.stale == [] and healed.memory_bytes == before.memory_bytes


def test_a_first_discovery_that_fails_is_stale_and_never_read():
    outputs = captured()
    outputs["lscpu"] = Output(0, "garbage\n")
    assembled = assemble_discovery(outputs, now=T0)
    caps = merge_facts(None, assembled.capabilities, assembled.failed)
    assert caps.cpu.cpus == 0
    assert [(s.section, s.since, s.read_at) for s in caps.stale] == [("cpu", T0, None)]
    assert "cpu (never read" in stale_summary(caps)


def test_an_output_too_big_is_not_read_nor_stored():
    before = good()
    outputs = captured()
    huge = outputs["lsblk"].stdout + " " * (MAX_OUTPUT + 1)
    outputs["lsblk"] = Output(0, huge)  # still valid JSON: size alone must keep it out
    outputs["findmnt"] = type("Cut", (), {"exit_code": 0, "stdout": outputs["findmnt"].stdout[:100],
                                           "stderr": "", "stdout_truncated": True})()
    assembled = assemble_discovery(outputs, now=T1)
    assert set(assembled.failed) == {"block_devices", "filesystems"}
    assert "printed more than 4096 KiB" in assembled.failed["block_devices"]
    after = merge_facts(before, assembled.capabilities, assembled.failed)
    assert after.block_devices == before.block_devices and after.filesystems == before.filesystems


def test_hostile_text_from_a_host_is_stored_bounded_and_without_control_characters():
    outputs = captured()
    lscpu = json.loads(outputs["lscpu"].stdout)
    model = "[/] [link=https://evil.example/]x\x1b]8;;https://evil.example/\x07\x1b[2J\u202e" + "A" * 100_000
    for entry in lscpu["lscpu"]:
        if entry["field"] == "Model name:":
            entry["data"] = model
        if entry["field"] == "Flags:":
            entry["data"] = " ".join(f"f{i}" for i in range(LIST_LIMIT * 3))
    outputs["lscpu"] = Output(0, json.dumps(lscpu))
    assembled = assemble_discovery(outputs, now=T0)
    assert assembled.failed == {}
    cpu = assembled.capabilities.cpu
    assert cpu.model.startswith("[/] [link=https://evil.example/]x\\x1b]8;;https://evil.example/\\x07\\x1b[2J\\u202e")
    assert is_printable(cpu.model) and len(cpu.model) < TEXT_LIMIT + 100
    assert cpu.model.endswith("more characters]")
    assert len(cpu.flags) == LIST_LIMIT
    assert HostCapabilities.model_validate_json(assembled.capabilities.model_dump_json()) == assembled.capabilities


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(banner=st.text(min_size=1, max_size=300).filter(lambda b: b.strip() != ""),
       newline=st.booleans())
def test_any_banner_never_empties_a_section(banner, newline):
    """Whatever a login shell prints first: every section is the reading of the banner-prefixed
    output (never an empty placeholder of a section that was read before) or the last good one."""
    before = good()
    if newline:
        banner += "\n"
    assembled = assemble_discovery(with_banner(captured(), banner), now=T1)
    after = merge_facts(before, assembled.capabilities, assembled.failed)
    for name in HostCapabilities.SECTIONS:
        if name in assembled.failed:
            assert section(after, name) == section(before, name)
            assert after.stale_section(name).read_at == T0
        else:
            assert section(after, name) == section(assembled.capabilities, name)
    assert after.cpu.cpus > 0 and after.memory_bytes > 0 and after.storage
    assert all(is_printable(s.reason) for s in after.stale)


# --- events -------------------------------------------------------------------------------------


def test_an_event_says_when_facts_become_stale_and_when_they_are_read_again():
    host = Host(name="kvm1", address="10.0.0.1", capabilities=good())
    assembled = assemble_discovery(with_banner(captured(), BANNER), now=T1)
    stale = merge_facts(host.capabilities, assembled.capabilities, assembled.failed)
    event = stale_event(host, stale)
    assert isinstance(event, Event) and event.type == "facts-stale" and event.severity.value == "warning"
    assert event.host_id == host.id
    assert "kvm1: discovery could not read" in event.message and "cpu" in event.message
    assert "no new guests" in event.message
    # the same sections stale again: no new event
    assert stale_event(host.model_copy(update={"capabilities": stale}), stale) is None
    healed = good(T2)
    event = stale_event(host.model_copy(update={"capabilities": stale}), healed)
    assert event is not None and event.type == "facts-current"


# --- the planner --------------------------------------------------------------------------------


def _stale_fleet(sections: tuple[str, ...]) -> tuple[Fleet, str]:
    fleet = Fleet()
    fleet.host("h1", cpus=8)
    fleet.host("h2", cpus=8)
    doc = fleet.docs[("host", host_id("h1"))]
    stale = [StaleFacts(section=s, since=T1, read_at=T0, reason=f"{s}: garbage") for s in sections]
    fleet.put(doc.model_copy(update={"capabilities": doc.capabilities.model_copy(update={"stale": stale})}))
    return fleet, host_id("h1")


def test_the_planner_places_no_new_guest_on_a_host_with_stale_facts_and_says_why():
    fleet, h1 = _stale_fleet(("cpu", "memory"))
    vid = fleet.vm("web1", expect=["availability:up"])
    state = fleet.state()
    reason = host_usable(state, h1)
    assert reason is not None and "facts not current (cpu, memory not read since" in reason
    assert "takes no new guests" in reason
    assert host_usable(state, host_id("h2")) is None
    vm = state.vms[vid]
    assert capacity_rejection(state, vm, h1) == reason
    text = render(explain(state, vid))
    assert "facts not current" in text


def test_a_stale_hypervisor_keeps_guests_off_but_storage_may_still_go_there():
    fleet, h1 = _stale_fleet(("hypervisor",))
    vid = fleet.vm("web1")
    state = fleet.state()
    assert host_usable(state, h1) is None
    reason = capacity_rejection(state, state.vms[vid], h1)
    assert reason is not None and "hypervisor not read since" in reason


def test_a_current_host_is_unaffected():
    fleet, h1 = _stale_fleet(())
    vid = fleet.vm("web1")
    state = fleet.state()
    assert host_usable(state, h1) is None and capacity_rejection(state, state.vms[vid], h1) is None
    assert isinstance(state.vms[vid], VirtualMachine) and state.host_status(h1) is HostStatus.up


# --- the command line ---------------------------------------------------------------------------


def test_host_show_says_what_is_stale_and_prints_no_escape_sequence(tmp_path, monkeypatch, capsys):
    from kerub_tui.cli import main
    from kerub_tui.controller import Controller

    data = tmp_path / "data"
    monkeypatch.setenv("KERUB_TUI_DATA", str(data))
    caps = good()
    hostile = "\x1b]8;;https://evil.example/\x07EPYC\x1b[2J\x9b31m [/]"
    caps = caps.model_copy(update={
        "cpu": caps.cpu.model_copy(update={"model": hostile}),
        "os": caps.os.model_copy(update={"hostname": "kvm1\x1b]0;pwned\x07"}),
        "stale": [StaleFacts(section="memory", since=T1, read_at=T0, reason="meminfo: line 'x\x1b[31m' is odd")],
    })
    writer = Controller(data)
    store = writer.open_store()
    store.put(Host(name="kvm1", address="10.0.0.1", capabilities=caps))
    store.close()
    assert main(["host", "show", "kvm1"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "\\x1b]8;;https://evil.example/\\x07EPYC\\x1b[2J\\x9b31m [/]" in out
    assert "stale memory: last good reading 2026-01-02 10:00:00; not read since 2026-01-02 11:00:00" in out
    assert main(["host", "show", "kvm1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["host"]["capabilities"]["cpu"]["model"] == hostile  # JSON keeps the data exactly, escaped
