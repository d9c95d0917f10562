"""A VM that still runs on a host that is up, reading its disk over a share from a host that went away, has
lost its storage (issue 16 item 4: "host B, the storage, dies → its VMs are reported with lost storage"):
its status says so with the disk and the host (queries.vm_state: `storage-lost`), and the re-planner's HA
narrator tells it once, as the host goes (a `vm-storage-lost` event). A copy taken for redundancy is no
live storage: the guest cannot read it. The lab test (tests/integration/test_shared_storage_lab.py) powers
a real storage host off under running guests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from kerub_tui.core.bus import Change
from kerub_tui.core.models import HostDynamic, HostStatus, VirtualStorageDeviceDynamic
from kerub_tui.core.store import Store
from kerub_tui.planner.ha import HaNarrator, unreadable_disks
from kerub_tui.queries import StoreQueries
from tests.unit.planner.fleet import Fleet, from_tables


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    with Store.open(tmp_path) as s:
        yield s


class Queries(StoreQueries):
    def __init__(self, db: Store) -> None:
        self._db = db

    @property
    def db(self) -> Store:
        return self._db


def shared_fleet() -> Fleet:
    """web runs on h2 reading its disk over iSCSI from h1; app runs on h2 from a disk of its own."""
    return from_tables(hosts="""
        name  memory  options
        h1    4G      vg=400G iscsi=root
        h2    32G     vg=1T
        h3    32G     vg=1T
    """, vms="""
        name  memory  on  disks
        web   8G      h2  root
        app   2G      h2  own
    """, disks="""
        name  size  on
        root  300G  h1
        own   10G   h2
    """)


def go_down(store: Store, host_id: str) -> Change:
    old = store.require(HostDynamic, host_id)
    new = store.put(old.evolve(status=HostStatus.down))
    return Change("host-dynamic", host_id, old, new)


def test_a_vm_reading_its_disk_from_a_host_that_went_down_has_lost_its_storage(store: Store) -> None:
    store.put_many(shared_fleet().documents())
    q = Queries(store)
    assert (q.vm_state("vm-web").status, q.vm_state("vm-app").status) == ("up", "up")
    narrator = HaNarrator(store)
    events = narrator.events_for(go_down(store, "host-h1"))
    state = q.vm_state("vm-web")
    assert (state.status, state.host_id) == ("storage-lost", "host-h2")
    assert state.reason == "disk root's storage is on h1 (down): its guest cannot read it"
    assert state.live  # it still runs there: its figures are current
    assert q.vm_state("vm-app").status == "up"  # its disk is on its own host
    assert [(e.type, e.target, e.host_id) for e in events] == [("vm-storage-lost", "vm-web", "host-h1")]
    assert events[0].message == ("web on h2 lost its storage with h1: disk root is on h1 alone, which is down; "
                                 "its guest cannot read it")
    # told once, as the host goes; not again for another change of it while it stays down
    old = store.require(HostDynamic, "host-h1")
    again = narrator.events_for(Change("host-dynamic", "host-h1", old, store.put(old.evolve(status_reason="x"))))
    assert again == []
    store.put(store.require(HostDynamic, "host-h1").evolve(status=HostStatus.up))
    assert q.vm_state("vm-web").status == "up"


def test_a_copy_taken_for_redundancy_is_no_storage_the_guest_reads(store: Store) -> None:
    fleet = shared_fleet()
    store.put_many(fleet.documents())
    [live] = store.require(VirtualStorageDeviceDynamic, "disk-root").allocations
    copy = live.evolve(host_id="host-h3", copied_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    store.put(store.require(VirtualStorageDeviceDynamic, "disk-root").evolve(allocations=[live, copy]))
    go_down(store, "host-h1")
    assert Queries(store).vm_state("vm-web").status == "storage-lost"
    # the rule itself: live storage only, every host of it not up
    up = {"host-h2", "host-h3"}.__contains__
    assert unreadable_disks(["disk-root"], lambda d: [live, copy], up) == [("disk-root", ["host-h1"])]
    assert unreadable_disks(["disk-root"], lambda d: [live], lambda h: True) == []
    assert unreadable_disks(["disk-new"], lambda d: [], up) == []  # a disk not made yet is made where it starts
