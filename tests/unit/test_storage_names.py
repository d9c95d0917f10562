"""A volume group a host names ``vg0;x`` (lvs/vgs print any printable word; discovery keeps what the host
said) from discovery's real parsers through to the admin: the planner never puts it in a command nor
crashes, the admin is told once (an event when it appears) and `host show` marks it unusable with why.
Captured outputs of the lab host (tests/captures/discovery/vm-lab) with its VG renamed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kerub_tui.core.models import Host, HostDynamic, HostStatus, StorageTechnology, VirtualStorageDevice
from kerub_tui.core.store import Store
from kerub_tui.hosts.facts import Output, assemble_discovery, merge_facts
from kerub_tui.hosts.fleet import unusable_storage_events
from kerub_tui.planner.planning import plan_all
from kerub_tui.planner.state import OperationalState

from ._cli import run
from .planner.fleet import NOW

CAPTURES = Path(__file__).resolve().parents[1] / "captures" / "discovery" / "vm-lab"


def discovered(vg: str):
    """The lab host's capabilities as discovery reads them, its VG capvg called ``vg`` by the host."""
    manifest = json.loads((CAPTURES / "manifest.json").read_text())
    outputs = {}
    for name, entry in manifest.items():
        text = (CAPTURES / f"{name}.out").read_text()
        if name in ("vgs", "lvs", "pvs"):
            text = text.replace('"capvg"', json.dumps(vg))
        outputs[name] = Output(entry["exit_code"], text, entry["stderr"])
    assembled = assemble_discovery(outputs, now=NOW)
    assert assembled.problems == [] and assembled.failed == {}
    return merge_facts(None, assembled.capabilities, assembled.failed)


@pytest.mark.parametrize("vg", ["vg0;x", "$(reboot)", "-x"])
def test_a_discovered_volume_group_no_command_carries_is_told_once_and_never_planned_on(vg: str) -> None:
    caps = discovered(vg)
    assert f"lvm:{vg}" in {s.id for s in caps.storage}  # kept as the host said it
    host = Host(id="host-h1", name="h1", address="127.0.0.2")
    [event] = unusable_storage_events(host, caps)
    assert event.type == "storage-unusable" and event.target == f"lvm:{vg}" and event.host_id == "host-h1"
    assert event.message.startswith(f"h1: storage lvm:{vg} takes no new disks: volume group name {vg!r}")
    assert unusable_storage_events(host.evolve(capabilities=caps), caps) == []  # once: not at each discovery
    # its LVM only (the lab's file storage aside): the hostile VG has the most room, smallvg room enough
    lvm_only = caps.evolve(storage=[s for s in caps.storage if s.technology is StorageTechnology.lvm])
    documents = [host.evolve(capabilities=lvm_only), HostDynamic(id="host-h1", status=HostStatus.up),
                 VirtualStorageDevice(id="disk-data", name="data", size=100 << 20,
                                      expectations=[{"type": "storage-availability"}])]
    drafts = plan_all(OperationalState.from_documents(documents, now=NOW))
    done = [c.command for d in drafts for step in d.to_plan().steps for c in step.commands]
    assert not any(vg in c for c in done)
    assert done == ["lvcreate --yes --name kerub-data --size 104857600b smallvg"]  # the proper VG beside it


def test_host_show_marks_it_unusable_with_why(data_dir, capsys) -> None:
    caps = discovered("vg0;x")
    with Store.open(data_dir) as store:
        store.put(Host(id="host-h1", name="h1", address="127.0.0.2", capabilities=caps))
    code, out, _ = run("host", "show", "h1", capsys=capsys)
    assert code == 0
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  storage lvm:vg0;x:"))
    assert lines[at + 1] == (
        "    unusable, takes no new disks: volume group name 'vg0;x' contains ';', which is not allowed: use "
        "letters, digits, '.', '_' and '-' (kerub-tui puts no such name in a command)")
    assert not any(line.startswith("  storage lvm:smallvg") and "unusable" in line for line in lines)
