"""What the command line says of storage (issue 18 items 6 and 7): a host's PVs, a failing one marked;
a disk's mirror kept in sync by LVM, a copy taken for redundancy with its age. Real processes on a data
dir holding a small fleet's documents."""

from __future__ import annotations

import datetime as dt
import os

from kerub_tui.controller import Controller
from kerub_tui.core.models import LvmAllocation, VirtualStorageDeviceDynamic, utcnow
from tests import cliproc

from .planner.fleet import from_tables


def test_host_show_lists_pvs_and_disk_show_says_how_copies_are_kept(tmp_path):
    env = dict(os.environ, KERUB_TUI_DATA=str(tmp_path / "data"), KERUB_TUI_CONFIG=str(tmp_path / "config"))
    fleet = from_tables(hosts="""
        name  memory  options
        h1    16G     pvs=100G/20G,100G/30G failing=/dev/sdb
        h2    16G     -
    """, disks="""
        name  size
        data  30G
        db    10G
    """)
    taken = utcnow() - dt.timedelta(hours=3, minutes=5)
    fleet.put(VirtualStorageDeviceDynamic(id="disk-data", allocations=[
        LvmAllocation(host_id="host-h1", capability_id="lvm:vg0", vg="vg0", lv="kerub-data"),
        LvmAllocation(host_id="host-h2", capability_id="lvm:vg0", vg="vg0", lv="kerub-data", copied_at=taken)]))
    fleet.put(VirtualStorageDeviceDynamic(id="disk-db", allocations=[
        LvmAllocation(host_id="host-h1", capability_id="lvm:vg0", vg="vg0", lv="kerub-db", mirrors=1)]))
    store = Controller(tmp_path / "data").open_store()
    store.put_many(fleet.documents())
    store.close()

    def kerub(*argv: str) -> str:
        result = cliproc.kerub(argv, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "    PVs /dev/sda 80.0G free of 100.0G, /dev/sdb 70.0G free of 100.0G FAILING\n" in kerub("host", "show", "h1")
    data = kerub("disk", "show", "data")
    assert "allocation lvm on h1: /dev/vg0/kerub-data\n" in data
    assert (f"allocation lvm on h2: /dev/vg0/kerub-data (a copy taken 3h ago, {taken:%Y-%m-%d %H:%M} UTC: "
            "not kept in sync)") in data
    assert "allocation lvm on h1: /dev/vg0/kerub-db (2 copies in its VG, kept in sync by LVM)" in kerub(
        "disk", "show", "db")
