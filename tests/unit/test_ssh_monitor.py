"""The monitor's pieces that need no host: the on-change watch loop (run by this machine's sh), the
domain stats awk (run by this machine's awk on /proc-shaped input), their parsers (fuzzed), the VM
document rules for lifecycle events, and write coalescing on a real store."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import time
import uuid as uuid_module
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerub_tui.core.models import HostDynamic, VirtualMachineDynamic, VmStatus
from kerub_tui.core.store import Store
from kerub_tui.hosts import monitor
from kerub_tui.hosts.libvirt_link import DomainEvent, DomainState, graphics_of, spice_of, status_of_event
from kerub_tui.hosts.monitor import (
    DocumentWriter,
    WatchParser,
    apply_domain_state,
    parse_domain_stats,
    watch_command,
)
from kerub_tui.hosts.parse import ParseError

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
A, B = "host-a", "host-b"
VM = "6f1c8c1e-9a55-4c59-8d0b-2d2f1f7f0a01"


# --- the watch loop -------------------------------------------------------------------------------


def test_watch_prints_only_when_something_changed(tmp_path):
    value = tmp_path / "value"
    value.write_text("1\n")
    command = watch_command({"value": f"cat {value}", "failing": "exit 3"}, 1)
    proc = subprocess.Popen(["sh", "-c", command], stdout=subprocess.PIPE, text=True)
    parser = WatchParser()
    batches = []
    try:
        def next_batch():
            while True:
                batch = parser.feed(proc.stdout.readline().rstrip("\n"))
                if batch is not None:
                    return batch

        batches.append(next_batch())
        time.sleep(1.3)  # another round with nothing changed: nothing printed
        value.write_text("2\n")
        batches.append(next_batch())
    finally:
        proc.kill()
        proc.wait()
    assert batches[0]["value"].stdout == "1\n" and batches[0]["value"].exit_code == 0
    assert batches[0]["failing"].exit_code == 3
    assert batches[1]["value"].stdout == "2\n"
    assert len(batches) == 2


def test_a_slow_section_runs_once_and_its_output_stands_in(tmp_path):
    slow, fast = tmp_path / "slow", tmp_path / "fast"
    slow.write_text("s1\n")
    fast.write_text("f1\n")
    command = watch_command({"slow": f"cat {slow}", "fast": f"cat {fast}"}, 1, {"slow": 1000})
    proc = subprocess.Popen(["sh", "-c", command], stdout=subprocess.PIPE, text=True)
    parser = WatchParser()
    try:
        def next_batch():
            while True:
                batch = parser.feed(proc.stdout.readline().rstrip("\n"))
                if batch is not None:
                    return batch

        first = next_batch()
        slow.write_text("s2\n")  # not read again for 1000 rounds: no batch for this
        time.sleep(1.3)
        fast.write_text("f2\n")
        second = next_batch()
    finally:
        proc.kill()
        proc.wait()
    assert (first["slow"].stdout, first["fast"].stdout) == ("s1\n", "f1\n")
    assert (second["slow"].stdout, second["fast"].stdout) == ("s1\n", "f2\n")


@pytest.mark.parametrize("interval", [0, -1, 86401, True, 1.5])
def test_watch_interval_is_validated(interval):
    with pytest.raises(ValueError):
        watch_command({"a": "true"}, interval)


def test_watch_section_names_are_validated():
    with pytest.raises(ValueError):
        watch_command({"a b; rm -rf /": "true"}, 1)
    with pytest.raises(ValueError):
        watch_command({}, 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=60), max_size=40))
def test_watch_parser_never_crashes_on_garbage(lines):
    parser = WatchParser()
    for line in lines:
        batch = parser.feed(line)
        assert batch is None or isinstance(batch, dict)


def test_watch_parser_reads_sections_and_statuses():
    parser = WatchParser()
    lines = ["@@kerub:section vgs", '{"report": []}', "@@kerub:status 0", "@@kerub:section lvs",
             "@@kerub:status 5", "@@kerub:section cut", "partial", "@@kerub:end"]
    results = [parser.feed(line) for line in lines]
    batch = results[-1]
    assert results[:-1] == [None] * (len(lines) - 1)
    assert batch["vgs"].stdout == '{"report": []}\n' and batch["vgs"].exit_code == 0
    assert batch["lvs"].exit_code == 5
    assert batch["cut"].exit_code is None  # no status line: treated as failed by the readers


# --- domain stats ------------------------------------------------------------------------------------


def _stat_line(uuid: str, pid: int, ticks: int, rss_pages: int) -> str:
    fields = ["S"] + ["0"] * 21  # /proc/PID/stat from its 3rd field (after "pid (comm)")
    fields[14 - 3] = str(ticks)  # utime
    fields[15 - 3] = "0"  # stime
    fields[24 - 3] = str(rss_pages)
    return f"{uuid} {pid} {' '.join(fields)}"


def _run_awk(frames: list[str]) -> list[str]:
    result = subprocess.run(
        ["awk", "-v", "hz=100", "-v", "page=4096", monitor._DOMSTATS_AWK],
        input="".join(line + "\n" for line in frames), capture_output=True, text=True, timeout=30, check=True,
    )
    return result.stdout.splitlines()


def test_domain_stats_awk_prints_changes_only():
    mib = 256  # pages of 4 KiB per MiB
    frames = [
        "@ 100.00", _stat_line(VM, 10, 1000, 100 * mib), ".",
        "@ 101.00", _stat_line(VM, 10, 1050, 100 * mib), ".",  # 50 ticks in 1 s at 100 Hz: 50 %
        "@ 102.00", _stat_line(VM, 10, 1100, 100 * mib + 3), ".",  # same %, same MiB: silent
        "@ 103.00", _stat_line(VM, 10, 1100, 100 * mib), ".",  # idle: 0 %
        "@ 104.00", ".",  # the qemu process went away
    ]
    assert _run_awk(frames) == [
        f"vm {VM} - {100 * 1048576}",
        f"vm {VM} 50 {100 * 1048576}",
        f"vm {VM} 0 {100 * 1048576}",
        f"gone {VM}",
    ]


def test_domain_stats_lines_parse():
    assert parse_domain_stats(f"vm {VM} 12 1048576") == monitor.DomainStats(VM, 12.0, 1048576)
    assert parse_domain_stats(f"vm {VM.upper()} - 4096").cpu_percent is None
    assert parse_domain_stats(f"gone {VM}").gone


@pytest.mark.parametrize("line", ["", "vm", f"vm {VM} x 1", "vm not-a-uuid 1 1", f"vm {VM} 1 -5",
                                  f"gone {VM} extra", "vm " + VM + " 1 " + "9" * 30, "\x00\x01"])
def test_bad_domain_stats_lines_are_parse_errors(line):
    with pytest.raises(ParseError):
        parse_domain_stats(line)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_domain_stats_parser_raises_only_parse_errors(line):
    try:
        stats = parse_domain_stats(line)
    except ParseError:
        return
    assert stats.uuid == str(uuid_module.UUID(stats.uuid))


# --- VM documents from lifecycle events -----------------------------------------------------------


def state(event: DomainEvent, status: VmStatus | None, *, migrating: bool = False, port: int | None = None):
    return DomainState(VM, "web1", event, status, migrating, "127.0.0.1" if port else None, port)


def test_a_started_domain_is_up_on_its_host_with_its_spice_port():
    doc = apply_domain_state(None, A, state(DomainEvent.started, VmStatus.up, port=5901), managed=True, now=NOW)
    assert (doc.id, doc.host_id, doc.status, doc.spice_port) == (VM, A, VmStatus.up, 5901)


def test_a_stopped_managed_vm_is_down_and_nowhere():
    up = VirtualMachineDynamic(id=VM, host_id=A, status=VmStatus.up, memory_used=1 << 30, cpu_percent=5.0)
    doc = apply_domain_state(up, A, state(DomainEvent.stopped, VmStatus.down), managed=True, now=NOW)
    assert (doc.host_id, doc.status, doc.memory_used, doc.cpu_percent) == (None, VmStatus.down, None, None)


def test_a_stopped_unmanaged_domain_has_no_document():
    up = VirtualMachineDynamic(id=VM, host_id=A, status=VmStatus.up)
    assert apply_domain_state(up, A, state(DomainEvent.stopped, VmStatus.down), managed=False, now=NOW) is None
    assert apply_domain_state(up, A, state(DomainEvent.undefined, None), managed=False, now=NOW) is None


@pytest.mark.parametrize("target_first", [True, False])
def test_migration_ends_on_the_target_whatever_order_the_hosts_report(target_first):
    """Source A reports suspended+stopped (migrated); target B reports started+resumed (migrated)."""
    source = [state(DomainEvent.suspended, VmStatus.migrating, migrating=True),
              state(DomainEvent.stopped, VmStatus.down, migrating=True)]
    target = [state(DomainEvent.started, VmStatus.up, migrating=True),
              state(DomainEvent.resumed, VmStatus.up, migrating=True)]
    events = [(B, e) for e in target] + [(A, e) for e in source] if target_first else \
        [(A, e) for e in source] + [(B, e) for e in target]
    doc = VirtualMachineDynamic(id=VM, host_id=A, status=VmStatus.up)
    for host, event in events:
        doc = apply_domain_state(doc, host, event, managed=True, now=NOW)
    assert (doc.host_id, doc.status) == (B, VmStatus.up)


def test_a_late_stop_from_another_host_does_not_down_the_vm():
    on_b = VirtualMachineDynamic(id=VM, host_id=B, status=VmStatus.up)
    assert apply_domain_state(on_b, A, state(DomainEvent.stopped, VmStatus.down), managed=True, now=NOW) is on_b


@pytest.mark.parametrize(
    "event, detail, expected",
    [
        (DomainEvent.started, 0, (VmStatus.up, False)),
        (DomainEvent.suspended, 0, (VmStatus.paused, False)),
        (DomainEvent.stopped, 0, (VmStatus.down, False)),
        (DomainEvent.undefined, 0, (None, False)),
        (DomainEvent.shutdown, 0, (VmStatus.up, False)),
    ],
)
def test_lifecycle_events_map_to_statuses(event, detail, expected):
    assert status_of_event(event, detail) == expected


def test_migration_details_are_recognised():
    import libvirt

    assert status_of_event(DomainEvent.suspended, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED) == (VmStatus.migrating, True)
    assert status_of_event(DomainEvent.stopped, libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED) == (VmStatus.down, True)


def test_spice_port_from_domain_xml():
    xml = ("<domain><devices><graphics type='vnc' port='5900'/><graphics type='spice' port='5901' "
           "autoport='yes' listen='127.0.0.2'><listen type='address' address='127.0.0.3'/></graphics>"
           "</devices></domain>")
    assert spice_of(xml) == ("127.0.0.3", 5901)
    assert spice_of("<domain><devices><graphics type='spice' port='-1'/></devices></domain>") == (None, None)
    assert spice_of("not xml <") == (None, None)



def test_vnc_port_from_the_captured_domain_xml_reaches_the_vm_document():
    """A VNC VM's live XML as libvirt returned it on the lab (tests/captures/ops): the monitor reads where
    its VNC server listens into the VM's document, and a stop takes it away, as SPICE's."""
    xml = (Path(__file__).resolve().parents[1] / "captures" / "ops" / "libvirt-live-domain-vnc.xml").read_text()
    assert graphics_of(xml, "vnc") == ("127.0.0.1", 5900) and spice_of(xml) == (None, None)
    started = DomainState(VM, "vncdesk", DomainEvent.started, VmStatus.up, vnc_address="127.0.0.1", vnc_port=5900)
    doc = apply_domain_state(None, A, started, managed=True, now=NOW)
    assert (doc.vnc_address, doc.vnc_port, doc.spice_port) == ("127.0.0.1", 5900, None)
    resumed = apply_domain_state(doc, A, state(DomainEvent.resumed, VmStatus.up), managed=True, now=NOW)
    assert resumed.vnc_port == 5900  # an event without it keeps what is known
    doc = apply_domain_state(resumed, A, state(DomainEvent.stopped, VmStatus.down), managed=True, now=NOW)
    assert (doc.vnc_address, doc.vnc_port) == (None, None)

# --- coalesced writes ---------------------------------------------------------------------------------


async def test_a_host_value_that_does_not_fit_the_document_is_one_event_and_nothing_written(tmp_path):
    store = Store.open(tmp_path)
    try:
        events = []
        writer = DocumentWriter(store, interval=0.3)
        mon = monitor.HostMonitor(A, "h1", None, writer, lambda: None, event=events.append, streams=False)
        mon.update_host(memory_free=1024, urgent=True)
        await writer.drained()
        assert store.get(HostDynamic, A).memory_free == 1024
        for _ in range(3):
            mon.update_host(memory_free="lots", urgent=True)
        await writer.drained()
        assert store.get(HostDynamic, A).memory_free == 1024 and writer.current(HostDynamic, A).memory_free == 1024
        assert [(e.type, e.severity.value) for e in events] == [("parse-error", "warning")]
        assert "memory_free" in events[0].message and "h1" in events[0].message
        writer.close()
    finally:
        store.close()


async def test_writes_are_coalesced_and_unchanged_documents_not_written(tmp_path):
    store = Store.open(tmp_path)
    try:
        changes = []
        store.feed.add_listener(changes.append)
        writer = DocumentWriter(store, interval=0.3)
        for cpu in range(20):
            writer.put(HostDynamic(id=A, cpu_user=float(cpu)))
        assert writer.current(HostDynamic, A).cpu_user == 19.0  # readers see the pending version
        await asyncio.sleep(0.5)
        assert [c.new.cpu_user for c in changes] == [19.0]
        writer.put(HostDynamic(id=A, cpu_user=19.0))  # the same again: no write
        await asyncio.sleep(0.5)
        assert len(changes) == 1
        writer.put(HostDynamic(id=A, cpu_user=1.0), urgent=True)
        await writer.drained()
        assert store.get(HostDynamic, A).cpu_user == 1.0
        writer.delete(HostDynamic, A)
        await writer.drained()
        assert store.get(HostDynamic, A) is None
        writer.close()
    finally:
        store.close()
