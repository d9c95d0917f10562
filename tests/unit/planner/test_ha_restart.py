"""High availability over shares (issue 16 item 2), run on simulated hosts: a VM with ``ha`` lost with its host
restarts on another reading the same disk, over iSCSI (the target's ACL lets the new host in) or NFS (the
directory's export, which named the fenced host alone, is handed to the new one: ganesha keeps one export per
directory). No disk data moves, nothing of it is deleted, and nothing happens before the lost host is fenced."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kerub_tui.core.models import (
    AutoApprovePolicy,
    HostConfiguration,
    IscsiTarget,
    NfsExport,
    PlanStatus,
    Settings,
    VirtualMachineDynamic,
    VirtualStorageDeviceDynamic,
)
from kerub_tui.core.store import Store
from kerub_tui.hosts.iscsi import disk_iqn
from kerub_tui.planner.commitments import build_state
from kerub_tui.planner.executor import Executor
from kerub_tui.planner.planning import plan_all
from kerub_tui.planner.replanner import approve, not_covered
from kerub_tui.planner.steps import StartVm

from .fleet import NOW, Fleet, from_tables
from .simulator import FleetSimulator

pytest.importorskip("kerub_tui.hosts.kvm")


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    with Store.open(tmp_path) as s:
        yield s


def lost_reader(fenced: bool, *, nfs: bool) -> Fleet:
    """web (ha) ran on h2, reading its disk from h1 over a share only h2 may use; h2 is down."""
    fleet = from_tables(hosts=f"""
        name  memory  status  options
        h1    4G      up      vg=400G
        h2    32G     down    {"fenced=admin" if fenced else "-"}
        h3    32G     up      -
    """, vms="""
        name  memory  on  disks  expect
        web   8G      h2  root   availability:up@dealbreaker ha@dealbreaker
    """)
    fleet.disk("root", size=300 << 30, on=["h1"], file=nfs)
    h2 = fleet.docs[("host", "host-h2")].address
    if nfs:
        config = HostConfiguration(id="host-h1", exports=[NfsExport(path="/var/lib/kerub", clients=h2,
                                                                    server="ganesha", disk_id="disk-root")])
    else:
        config = HostConfiguration(id="host-h1", iscsi_targets=[IscsiTarget(
            iqn=disk_iqn("disk-root"), tid=1, lun_path="/dev/vg0/kerub-root", disk_id="disk-root",
            initiators=[h2])])
    fleet.put(config)
    return fleet


def steps_of(state) -> list[tuple[str, list[str]]]:
    return [(d.kind, [s.describe(st) for s, st in zip(d.steps, d.states)]) for d in plan_all(state)]


@pytest.mark.parametrize("nfs", [False, True], ids=["iscsi", "nfs"])
def test_nothing_restarts_over_the_share_before_the_lost_host_is_fenced(nfs: bool) -> None:
    state = lost_reader(False, nfs=nfs).state()
    assert not [s for d in plan_all(state) for s in d.steps if isinstance(s, StartVm)]


@pytest.mark.parametrize("nfs", [False, True], ids=["iscsi", "nfs"])
async def test_once_fenced_the_vm_restarts_reading_the_same_share_and_nothing_is_deleted(store: Store,
                                                                                       nfs: bool) -> None:
    fleet = lost_reader(True, nfs=nfs)
    h3 = fleet.docs[("host", "host-h3")].address
    h2 = fleet.docs[("host", "host-h2")].address
    [(kind, lines)] = steps_of(fleet.state())
    assert kind == "restart"
    if nfs:
        assert lines == [f"stop exporting /var/lib/kerub from h1 to {h2}",
                         f"export /var/lib/kerub over NFS from h1 to {h3}: for web on h3, where no copy can be made",
                         "start web on h3"]
    else:
        assert lines == ["let h3 log in to iSCSI target 1 on h1: for web on h3, where no copy can be made",
                         "start web on h3"]
    store.put_many(fleet.documents())
    store.put(Settings(auto_approve=[AutoApprovePolicy(plan_kind="restart")]))
    [draft] = plan_all(build_state(store, now=NOW))
    plan = draft.to_plan()
    # handing the export of a fenced reader on deletes nothing: the restart policy covers the plan
    assert not_covered(store.get(Settings, "settings"), plan) is None
    store.put(plan)
    approve(store, plan.id, "admin")
    sim = FleetSimulator(fleet.state())
    done = await Executor(store, sim).execute(plan.id)
    assert done.status is PlanStatus.done, done.status_reason
    assert store.get(VirtualMachineDynamic, "vm-web").host_id == "host-h3"
    [alloc] = store.get(VirtualStorageDeviceDynamic, "disk-root").allocations
    assert alloc.host_id == "host-h1" and alloc.copied_at is None  # no data moved, none deleted
    config = store.get(HostConfiguration, "host-h1")
    if nfs:
        assert [(e.path, e.clients) for e in config.exports] == [("/var/lib/kerub", h3)]
    else:
        assert config.iscsi_targets[0].initiators == [h2, h3]


def test_the_narrator_tells_a_restart_once_however_often_it_is_proposed_again(store: Store) -> None:
    """A restart plan withdrawn and proposed again (its premises moved) is not news: one restart-planned per
    VM and target; its end is told once, and a consent it needs is a warning of its own."""
    from kerub_tui.core.bus import Change
    from kerub_tui.planner.ha import HaNarrator

    fleet = lost_reader(True, nfs=False)
    store.put_many(fleet.documents())
    [draft] = plan_all(build_state(store, now=NOW))
    first = draft.to_plan()
    again = draft.to_plan()  # another id, the same steps
    narrator = HaNarrator(store)
    told = narrator.events_for(Change("plan", first.id, None, first))
    assert [(e.type, e.target, e.host_id) for e in told] == [("restart-planned", "vm-web", "host-h2")]
    assert told[0].message == f"restart of web planned (plan {first.id[:8]}): start it on h3"
    assert narrator.events_for(Change("plan", again.id, None, again)) == []
    done = again.evolve(status=PlanStatus.done)
    [restarted] = narrator.events_for(Change("plan", again.id, again, done))
    assert (restarted.type, restarted.message) == ("vm-restarted", f"web restarted on h3 after h2 failed "
                                                                   f"(plan {again.id[:8]})")
    asking = draft.to_plan().evolve(consent=["web starts on h3 from the copy of disk root taken ..."])
    told = narrator.events_for(Change("plan", asking.id, None, asking))
    assert [e.type for e in told] == ["restart-planned", "restart-needs-consent"]
    assert told[1].severity.value == "warning" and told[1].message.startswith(f"plan {asking.id[:8]} waits for")


def test_the_narrator_judges_a_host_going_away_as_it_went_even_when_it_is_fenced_by_the_time_it_looks(
        store: Store) -> None:
    """The narrator reads the change feed after the fact: a host fenced a moment after it went down still
    has its VMs told as waiting for the fence (the story in its order), judged on the change's own document."""
    from kerub_tui.core.bus import Change
    from kerub_tui.core.models import HostDynamic, HostStatus
    from kerub_tui.planner.ha import HaNarrator

    store.put_many(lost_reader(True, nfs=False).documents())  # h2 fenced in the store already
    went = store.get(HostDynamic, "host-h2")
    was_up = went.evolve(status=HostStatus.up, fence=None)
    told = HaNarrator(store).events_for(Change("host-dynamic", "host-h2", was_up, went.evolve(fence=None)))
    assert [(e.type, e.target) for e in told] == [("restart-waits-fence", "vm-web")]
    assert told[0].message.startswith("web may still run on h2 (down): it restarts elsewhere once h2 is fenced")
