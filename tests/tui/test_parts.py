"""The console's pure parts: keymap loading, row filters, the figure ring, sparklines, cells."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from kerub_tui.core.models import HostDynamic
from kerub_tui.screens.format import Cell, ago, sort_key, sparkline
from kerub_tui.screens.history import BUCKET_SECONDS, BUCKETS, FigureHistory, memory_used_percent
from kerub_tui.screens.keymap import load_keymap
from kerub_tui.screens.live import RowFilter
from kerub_tui.screens.rows import downsample

T0 = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)


def test_keymap_uses_what_it_can_and_reports_the_rest(tmp_path):
    path = tmp_path / "keymap.toml"
    path.write_text('"vms.start" = "ctrl+s"\n"app.jump" = ["colon", "ctrl+g"]\n"vms.stop" = 3\n'
                    '"nope" = "x"\n"vms.new" = "ctrl+ +"\n')
    keymap = load_keymap(path, known_ids={"vms.start", "app.jump", "vms.stop", "vms.new"})
    assert keymap.found
    assert keymap.bindings == {"vms.start": "ctrl+s", "app.jump": "colon,ctrl+g"}
    problems = "\n".join(keymap.problems)
    assert "vms.stop: expected a key" in problems
    assert "no binding with id 'nope'" in problems
    assert "vms.new: 'ctrl+ +' is not a key" in problems


def test_keymap_missing_or_broken_file_keeps_the_defaults(tmp_path):
    missing = load_keymap(tmp_path / "none.toml")
    assert (missing.found, missing.bindings, missing.problems) == (False, {}, [])
    broken = tmp_path / "keymap.toml"
    broken.write_bytes(b'"vms.start" = \n\xff')
    keymap = load_keymap(broken)
    assert keymap.bindings == {} and "default keys in use" in keymap.problems[0]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_keymap_never_crashes_on_garbage(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("keymap") / "keymap.toml"
    path.write_bytes(data)
    keymap = load_keymap(path, known_ids={"vms.start"})
    assert set(keymap.bindings) <= {"vms.start"}


def test_row_filter():
    assert RowFilter.parse("")(["anything"])
    web = RowFilter.parse("^web[0-9]$")
    assert web(["web1", "up"]) and not web(["db1", "web"])
    inverted = RowFilter.parse("!^web")
    assert inverted(["db1"]) and not inverted(["web1"])
    plain = RowFilter.parse("a[b")
    assert plain.error and plain(["xa[by"]) and not plain(["ab"])
    assert RowFilter.parse("UP")(["up"])  # case-insensitive


@given(st.text(max_size=40), st.lists(st.text(max_size=20), max_size=5))
def test_row_filter_accepts_any_text(text, fields):
    row_filter = RowFilter.parse(text)
    assert row_filter(fields) in (True, False)


def test_figure_ring_is_bounded_and_moves_forward():
    history = FigureHistory()
    for n in range(BUCKETS * 3):
        when = T0 + dt.timedelta(seconds=BUCKET_SECONDS * n)
        history.record(HostDynamic(id="h", cpu_idle=100.0 - n % 100, memory_used=1, memory_free=3, last_seen=when))
    figures = history.hosts["h"]
    assert len(figures.buckets) == BUCKETS
    series = history.series("h", "cpu")
    assert len(series) == BUCKETS and series[-1] == (BUCKETS * 3 - 1) % 100
    assert history.series("h", "mem")[-1] == 25.0
    # An older sample than the newest bucket is ignored; one without a time is not a figure.
    history.record(HostDynamic(id="h", cpu_idle=0.0, last_seen=T0))
    history.record(HostDynamic(id="h", cpu_idle=0.0))
    assert history.series("h", "cpu") == series
    # A gap shows as a gap, and the right edge is the newest sample, not the clock.
    later = T0 + dt.timedelta(seconds=BUCKET_SECONDS * (BUCKETS * 3 + 5))
    history.record(HostDynamic(id="h", cpu_idle=50.0, last_seen=later))
    series = history.series("h", "cpu")
    assert series[-1] == 50.0 and series[-6:-1] == [None] * 5
    history.forget("h")
    assert history.series("h", "cpu") == []


def test_memory_percent_and_sparkline():
    dyn = HostDynamic(id="h", memory_used=1 << 30, memory_free=3 << 30)
    assert memory_used_percent(dyn) == 25.0
    assert memory_used_percent(dyn, total=2 << 30) == 50.0
    assert memory_used_percent(HostDynamic(id="h")) is None
    assert sparkline([0, 50, 100, None], 6) == "  ▁▅█ "
    assert downsample([1.0, 3.0, None, None, 10.0, 20.0], 3, 2) == [2.0, None, 15.0]
    assert downsample([5.0], 3, 2) == [5.0]


def test_cells_sort_by_value():
    small, big, missing = Cell("512.0M", sort=512 << 20), Cell("2.0G", sort=2 << 30), Cell("-", sort=None)
    assert sorted([missing, big, small], key=sort_key) == [small, big, missing]
    assert sort_key(Cell("Web")) < sort_key(Cell("x"))
    assert ago(T0, T0 + dt.timedelta(seconds=75)) == "1m" and ago(None) == "-"


def test_a_host_that_is_not_up_shows_no_figures_as_if_they_were_live(tmp_path):
    from kerub_tui.core.models import Host, HostStatus
    from kerub_tui.core.store import Store
    from kerub_tui.queries import StoreView
    from kerub_tui.screens.overview import Overview
    from kerub_tui.screens.rows import HostRows

    with Store.open(tmp_path) as store:
        store.put(Host(id="h", name="kvm1", address="10.0.0.1"))
        figures = {"cpu_user": 70.0, "cpu_system": 10.0, "cpu_idle": 20.0, "memory_used": 3 << 30, "memory_free": 1 << 30}
        store.put(HostDynamic(id="h", status=HostStatus.up, **figures))
        rows = HostRows(Overview(StoreView(store)))
        assert "80" in str(rows.cells("h")[3])
        store.put(HostDynamic(id="h", status=HostStatus.down, **figures))
        cpu, mem = rows.cells("h")[3:5]
        assert "80" not in str(cpu) and "75" not in str(mem)


def test_a_host_detail_lists_the_pvs_of_a_vg_of_several_disks():
    """Issue 18 item 7: a VG of several PVs shows each one's free space; a VG of one shows no PV row."""
    from rich.console import Console

    from kerub_tui.core.models import Host, PhysicalVolumeInfo
    from kerub_tui.screens.hosts import live_figures

    def pv(name: str, free: int) -> PhysicalVolumeInfo:
        return PhysicalVolumeInfo(name=name, size_bytes=10 << 30, free_bytes=free << 30)

    dyn = HostDynamic(id="h", failing_devices=["/dev/sdb"], storage_pvs={
        "lvm:vg0": [pv("/dev/sda", 1), pv("/dev/sdb", 2)], "lvm:solo": [pv("/dev/sdc", 3)]})
    console = Console(width=120, record=True)
    console.print(live_figures(Host(id="h", name="h1", address="127.0.0.2"), dyn))
    shown = console.export_text()
    assert "PVs          lvm:vg0: /dev/sda 1.0G free, /dev/sdb 2.0G free" in shown
    assert "failing      /dev/sdb" in shown and "lvm:solo" not in shown
