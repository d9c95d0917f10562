"""The planner's indexes and shortcuts give the answers of a plain scan, on random fleets and on every
state derived from them (issue 15 item 1): an index that goes stale is a wrong plan.

Each answer the planner finds from its indexes (which VMs and hosts the full evaluation looks at, the
running VMs per host, the best hosts for a start found without trying every host) is compared with the
same answer computed the slow way: every VM's every expectation checked, every host's every detector
run, every host tried. Fleets are random (hosts up, down, flagged, hot, configured; VMs with mixed
expectations, placed, paused, migrating, on hosts nobody knows; disks), then changed document by
document and by planned steps, past the point where the state's layers fold their deltas.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kerub_tui.core.models import (
    HostConfiguration,
    HostDynamic,
    HostStatus,
    IscsiTarget,
    LvmAllocation,
    SeedFile,
    ThinPool,
    VirtualMachineDynamic,
    VirtualStorageDeviceDynamic,
    VmStatus,
)
from kerub_tui.planner import problems
from kerub_tui.planner.checkers import DISK_CHECKERS, VM_CHECKERS, Violation, all_violations, capacity_rejection
from kerub_tui.planner.factories import (
    MAX_CANDIDATES,
    _start_on,
    candidates,
    fitting_starts,
    migration_to,
    placement_candidates,
    relocation_candidates,
)
from kerub_tui.planner.problems import DETECTORS, all_problems
from kerub_tui.planner.search import Evaluation, search
from kerub_tui.planner.state import OperationalState
from kerub_tui.planner.steps import Touched

from .fleet import GIB, NOW, Fleet, host_id, vm_id

EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_VM_EXPECTATIONS = [
    "availability:up@dealbreaker", "availability:up@dealbreaker", "availability:up@want", "availability:down",
    "availability:up,paused@dealbreaker", "cpu-flags:avx512f@dealbreaker", "cpu-flags:avx512f@wish",
    "core-dedication@want", "no-migration@wish", "ecc-memory@want", "ha@dealbreaker", "ha@want",
]


def random_fleet(rng: random.Random) -> Fleet:
    """A small fleet where anything the indexes track may happen."""
    fleet = Fleet()
    hosts = [f"h{i}" for i in range(rng.randint(1, 7))]
    for n, name in enumerate(hosts):
        config = None
        if rng.random() < 0.2:
            config = HostConfiguration(id="x", seeds=[SeedFile(vm_id=vm_id(f"v{rng.randint(0, 20)}"),
                                                               path=f"/var/lib/kerub/seed-{n}.iso", digest="d")])
        elif rng.random() < 0.15:  # a disk shared over iSCSI, its ACL naming some hosts (by address)
            config = HostConfiguration(id="x", iscsi_targets=[IscsiTarget(
                tid=1, iqn=f"iqn.2025-01.kerub:d{n}", lun_path="/dev/vg0/kerub-d0", disk_id="disk-d0",
                initiators=[f"127.0.0.{i + 2}" for i in range(len(hosts)) if rng.random() < 0.5])])
        elif rng.random() < 0.1:
            config = HostConfiguration(id="x", thin_pools=[ThinPool(vg="vg0", name="kerub--thin",
                                                                    size_bytes=rng.choice([0, 10 * GIB]))])
        fleet.host(name, memory=rng.choice([4, 8, 16]) * GIB, cpus=rng.choice([1, 2, 4, 8]),
                   flags=rng.choice([("vmx",), ("vmx", "avx512f")]),
                   status=rng.choice([HostStatus.up] * 5 + [HostStatus.down, HostStatus.unreachable,
                                                            HostStatus.connecting]),
                   recycling=rng.random() < 0.1,
                   end_of_life=rng.choice([None] * 8 + [dt.date(2020, 1, 1), dt.date(2030, 1, 1)]),
                   temperature=rng.choice([None] * 6 + [50.0, 95.0]),
                   failing=["/dev/sda"] if rng.random() < 0.05 else None, config=config,
                   wol_mac=rng.choice([None, "52:54:00:00:00:01"]), noecc=rng.random() < 0.2)
    names = [f"v{i}" for i in range(rng.randint(0, 14))]
    disks = [f"d{i}" for i in range(rng.randint(0, 3))]
    for name in disks:
        on = rng.sample(hosts, k=min(len(hosts), rng.choice([0, 0, 1, 2])))
        expect = rng.choice([[], ["storage-availability:up@dealbreaker"], ["storage-redundancy:2,out-of-box@want"]])
        fleet.disk(name, size=rng.choice([1, 5]) * GIB, on=on, expect=expect)
    for name in names:
        expect = rng.sample(_VM_EXPECTATIONS, k=rng.choice([0, 1, 1, 1, 2, 3]))
        if {"availability:up@dealbreaker", "availability:down"} <= set(expect) or (
                "availability:down" in expect and "availability:up,paused@dealbreaker" in expect):
            expect.remove("availability:down")  # both a hard up and down: the models allow it, keep it simple
        if names and rng.random() < 0.2:
            expect.append(f"not-same-host:{rng.choice(names)}@{rng.choice(['dealbreaker', 'want'])}")
        where = rng.choice([None, None, *hosts, "nowhere"])  # "nowhere": a host id no Host document has
        fleet.vm(name, cpus=rng.choice([1, 2, 4]), memory=rng.choice([1, 2, 4]) * GIB, on=where,
                 status=rng.choice([VmStatus.up] * 4 + [VmStatus.paused, VmStatus.migrating, VmStatus.down]),
                 expect=expect, disks=rng.sample(disks, k=min(len(disks), rng.choice([0, 1]))),
                 memory_given=rng.choice([None, None, 1 * GIB]))
    return fleet


# --- the slow answers --------------------------------------------------------------------------------


def scanned_violations(state: OperationalState) -> list[Violation]:
    """Every VM's and disk's every expectation checked."""
    out = []
    for vid in sorted(state.vms):
        vm = state.vms[vid]
        for index, exp in enumerate(vm.expectations):
            reason = VM_CHECKERS[exp.type].check(state, vm, exp)
            if reason is not None:
                out.append(Violation("vm", vid, index, exp.type, exp.level, reason, vm.name))
    for did in sorted(state.disks):
        disk = state.disks[did]
        for index, exp in enumerate(disk.expectations):
            reason = DISK_CHECKERS[exp.type].check(state, disk, exp)
            if reason is not None:
                out.append(Violation("disk", did, index, exp.type, exp.level, reason, disk.name))
    return out


def scanned_problems(state: OperationalState) -> list[problems.Problem]:
    """Every detector run on every host."""
    out = []
    for hid in state.host_ids():
        out.extend(sorted(p for name in sorted(DETECTORS) for p in DETECTORS[name](state, hid)))
    return out


def tried_everywhere(state: OperationalState, vid: str, limit: int, exclude: str | None) -> list[Any]:
    """Every host tried for a start, the best ``limit`` kept."""
    vm = state.vms[vid]
    out = []
    for hid in state.host_ids():
        if hid == exclude or capacity_rejection(state, vm, hid) is not None:
            continue
        candidate = _start_on(state, vm, hid, [])
        if candidate is not None:
            out.append(candidate)
    out.sort(key=lambda c: c.rank)
    return out[:limit]


def moved_everywhere(state: OperationalState, vid: str, limit: int, avoid: str | None) -> list[Any]:
    """Every host tried for a VM's migration, the best ``limit`` kept."""
    vm, source = state.vms[vid], state.vm_host(vid)
    out = [c for hid in state.host_ids() if hid not in (source, avoid)
           and (c := migration_to(state, vm, source, hid)) is not None]  # type: ignore[arg-type]
    out.sort(key=lambda c: c.rank)
    return out[:limit]


def _indexes(state: OperationalState) -> dict[str, dict[Any, Any]]:
    """The indexes a derivation keeps, without the empty entries a removal leaves."""
    return {name: {k: v for k, v in getattr(state, name).items() if v}
            for name in ("host_vms", "host_running", "mem_used", "vcpus_used", "host_disks", "thin_used")}


def rebuilt(state: OperationalState) -> OperationalState:
    """The same documents made into a state from scratch."""
    docs: list[Any] = []
    for name in ("hosts", "host_dyn", "host_config", "vms", "vm_dyn", "disks", "disk_dyn"):
        docs.extend(getattr(state, name).values())
    return OperationalState.from_documents(docs, now=state.now, settings=state.settings)


def assert_same_answers(state: OperationalState, rng: random.Random) -> None:
    assert _indexes(state) == _indexes(rebuilt(state))
    # what the evaluation looks at: exactly the VMs and hosts the plain tests name, no fewer and no more
    assert state.idle_up_vms() == {v for v in state.static.vms_only_up if not state.vm_running(v)}
    assert problems.hosts_to_check(state) == [h for h in state.host_ids() if not problems.quiet(state, h)]
    assert all_violations(state) == scanned_violations(state)
    assert all_problems(state) == scanned_problems(state)
    full = Evaluation.full(state)
    assert sorted(full.items(), key=repr) == sorted([*scanned_violations(state), *scanned_problems(state)], key=repr)
    for item in full.items():  # a caller trying the first few gets the first few of the whole list
        wanted = rng.choice([1, 2, 4])
        assert candidates(state, item, wanted=wanted)[:wanted] == candidates(state, item)[:wanted]
    for vid in sorted(state.vms):
        if state.vm_running(vid):
            continue
        limit = rng.choice([1, 2, 3, MAX_CANDIDATES])
        exclude = rng.choice([None, *state.host_ids()])
        assert fitting_starts(state, state.vms[vid], limit=limit, exclude=exclude) == \
            tried_everywhere(state, vid, limit, exclude), vid
    for vid in sorted(state.vms):
        source = state.vm_host(vid)
        if source is None or not state.host_up(source) or any(
                e.type == "no-migration" and e.level.value == "dealbreaker" for e in state.vms[vid].expectations):
            continue
        limit = rng.choice([1, 2, 4, MAX_CANDIDATES])
        avoid = rng.choice([None, *state.host_ids()])
        assert relocation_candidates(state, vid, limit=limit, avoid=lambda h, a=avoid: h == a) == \
            moved_everywhere(state, vid, limit, avoid), vid


# --- random changes --------------------------------------------------------------------------------


def random_change(state: OperationalState, rng: random.Random) -> tuple[Any, Touched]:
    """One document changed as monitoring or a step might: a VM placed, moved, paused or stopped; a host
    up or down, hot or cool; a host's configuration; a disk's storage."""
    hosts = [*state.host_ids(), "host-nowhere"]
    kind = rng.choice(["vm", "vm", "vm", "host", "config", "disk"])
    if kind == "vm" and state.vms:
        vid = rng.choice(sorted(state.vms))
        doc = VirtualMachineDynamic(id=vid, host_id=rng.choice([None, *hosts]),
                                    status=rng.choice(list(VmStatus)),
                                    memory_given=rng.choice([None, None, 1 * GIB]))
        return doc, Touched(vms=frozenset({vid}))
    if kind == "host":
        hid = rng.choice(state.host_ids())
        old = state.host_dyn.get(hid) or HostDynamic(id=hid)
        doc = old.evolve(status=rng.choice(list(HostStatus)), cpu_temperature=rng.choice([None, 40.0, 99.0]),
                         failing_devices=rng.choice([[], [], ["/dev/sda"]]))
        return doc, Touched(hosts=frozenset({hid}))
    if kind == "config":
        hid = rng.choice(state.host_ids())
        seeds = [SeedFile(vm_id=rng.choice([*sorted(state.vms), "vm-gone"]), path="/var/lib/kerub/s.iso", digest="d")]
        doc = HostConfiguration(id=hid, seeds=rng.choice([[], seeds]))
        return doc, Touched(hosts=frozenset({hid}))
    if state.disks:
        did = rng.choice(sorted(state.disks))
        allocs = [LvmAllocation(host_id=h, capability_id="lvm:vg0", vg="vg0", lv=f"kerub-{did}")
                  for h in rng.sample(state.host_ids(), k=rng.choice([0, 1]))]
        return VirtualStorageDeviceDynamic(id=did, allocations=allocs), Touched(disks=frozenset({did}))
    return None, Touched()


@EXAMPLES
@given(st.integers(min_value=0, max_value=2**32 - 1))
@example(seed=107)  # a host a down ha VM's disk lives on went away: that VM's restart verdict changes too
def test_indexed_answers_equal_the_plain_scan_on_random_fleets_and_their_changes(seed: int) -> None:
    rng = random.Random(seed)
    state = random_fleet(rng).state(power_saving=rng.random() < 0.5)
    assert_same_answers(state, rng)
    ev = Evaluation.full(state)
    for _ in range(12):
        doc, touched = random_change(state, rng)
        if doc is None:
            continue
        after = state.apply([doc])
        ev = ev.update(state, after, touched)
        state = after
        # the evaluation carried from change to change is the one computed afresh
        assert sorted(ev.items(), key=repr) == sorted(Evaluation.full(state).items(), key=repr)
        assert (ev.hard, ev.penalty) == (Evaluation.full(state).hard, Evaluation.full(state).penalty)
    assert_same_answers(state, rng)


@EXAMPLES
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_indexes_hold_along_a_planned_sequence(seed: int) -> None:
    """The states a search walks through (steps' predictions, not documents set by hand)."""
    rng = random.Random(seed)
    state = random_fleet(rng).state(power_saving=rng.random() < 0.5)
    result = search(state, max_nodes=200)
    for step_state in result.states:
        assert_same_answers(step_state, rng)


def test_indexes_hold_when_the_layers_fold_their_deltas() -> None:
    """Past 512 changed keys a layer folds its delta into a new base (VMs, hosts' status, configuration,
    running VMs and memory per host): what the indexes keep per base is built again, nothing is lost."""
    rng = random.Random(7)
    fleet = Fleet()
    for i in range(600):
        fleet.host(f"h{i}", memory=8 * GIB, cpus=8)
    for i in range(600):
        fleet.vm(f"v{i}", expect=[rng.choice(["availability:up@dealbreaker", "availability:down"])],
                 on=f"h{i}" if i % 3 else None)
    first = fleet.state()
    state = first
    for i in range(600):
        hid = host_id(f"h{(i * 11) % 600}")
        state = state.apply([
            VirtualMachineDynamic(id=vm_id(f"v{i}"), host_id=host_id(f"h{(i * 7) % 600}"),
                                  status=rng.choice([VmStatus.up] * 4 + [VmStatus.down, VmStatus.paused])),
            state.host_dyn[host_id(f"h{i}")].evolve(status=rng.choice([HostStatus.up] * 3 + [HostStatus.down]),
                                                    cpu_temperature=rng.choice([None, 99.0])),
            HostConfiguration(id=hid, seeds=rng.choice([[], [SeedFile(vm_id="vm-gone", path="/s.iso", digest="d")]])),
        ])
        if i in (100, 550):  # answers asked of the state between folds keep the indexes per base in use
            assert state.idle_up_vms() == {v for v in state.static.vms_only_up if not state.vm_running(v)}
            assert all_problems(state) == scanned_problems(state)
            assert all_violations(state) == scanned_violations(state)
    for name in ("vm_dyn", "host_dyn", "host_config", "host_running", "mem_used"):
        assert getattr(state, name)._base is not getattr(first, name)._base, name  # folded
    assert _indexes(state) == _indexes(rebuilt(state))
    assert all_violations(state) == scanned_violations(state)
    assert all_problems(state) == scanned_problems(state)
    for vid in sorted(state.vms)[:20]:
        if not state.vm_running(vid):
            assert fitting_starts(state, state.vms[vid], limit=3) == tried_everywhere(state, vid, 3, None)


def test_a_start_tries_few_hosts_and_finds_the_best_of_all() -> None:
    """At 60 hosts with room, a start of one VM judges about as many hosts as it keeps candidates, and
    they are the ones trying every host finds."""
    fleet = Fleet()
    for i in range(60):
        fleet.host(f"h{i:02d}", memory=(8 + i % 7) * GIB, cpus=8)
    fleet.vm("new", memory=2 * GIB, expect=["availability:up@dealbreaker"])
    for power_saving in (False, True):
        state = fleet.state(power_saving=power_saving)
        judged: list[str] = []
        real = capacity_rejection

        def counting(state: OperationalState, vm: Any, hid: str, memory: int | None = None) -> str | None:
            judged.append(hid)
            return real(state, vm, hid, memory)

        import kerub_tui.planner.factories as factories

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(factories, "capacity_rejection", counting)
            found = placement_candidates(state, vm_id("new"), limit=4)
        assert found == tried_everywhere(state, vm_id("new"), 4, None)
        assert len(judged) <= 8  # not 60


def test_a_detector_quiet_does_not_know_makes_every_host_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A detector added without teaching problems.quiet what it reads is run on every host: slower,
    never a problem missed."""
    fleet = Fleet()
    fleet.host("h1")
    state = fleet.state()
    assert problems.quiet(state, host_id("h1"))

    def always(state: OperationalState, hid: str) -> list[problems.Problem]:
        return [problems.Problem("cpu-overheat", hid, "", "", "new detector")]

    monkeypatch.setitem(DETECTORS, "zz-new", always)
    assert not problems.quiet(state, host_id("h1"))
    assert [p.reason for p in all_problems(state)] == ["new detector"]


def test_documents_change_only_through_apply() -> None:
    """with_context sets context; documents go through apply, which keeps the indexes true."""
    state = Fleet().state()
    with pytest.raises(TypeError, match="not context: vm_dyn"):
        state.with_context(vm_dyn=state.vm_dyn)
    assert state.with_context(now=NOW).now == NOW


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_a_greedy_search_asking_for_fewer_candidates_plans_the_same(seed: int) -> None:
    """With many VMs to start the search is greedy and tries the first few candidates of each item; the
    factories, told so, stop there. The plan is the one made from their full lists."""
    import kerub_tui.planner.search as search_module

    rng = random.Random(seed)
    fleet = random_fleet(rng)
    for i in range(rng.randint(7, 14)):  # more open dealbreakers than the exact search takes on
        fleet.vm(f"new{i}", memory=rng.choice([1, 2, 4]) * GIB, cpus=rng.choice([1, 2]),
                 expect=["availability:up@dealbreaker", *rng.choice([[], ["cpu-flags:avx512f@dealbreaker"]])])
    state = fleet.state(power_saving=rng.random() < 0.5)
    told = search(state, max_nodes=300)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search_module, "candidates", lambda state, item, wanted=None: candidates(state, item))
        untold = search(state, max_nodes=300)
    assert told.method.startswith("greedy")
    assert told.steps == untold.steps


def test_a_host_going_away_is_reevaluated_where_an_acl_names_it() -> None:
    """An unused-iscsi-initiator problem on the target's host depends on the named host being up (an away
    host keeps its place in the ACL until it is back): the evaluation carried from state to state looks at
    the target's host again when that host goes away, as the full evaluation does."""
    from kerub_tui.core.models import IscsiTarget

    fleet = Fleet()
    fleet.host("b", address="127.0.0.3")
    fleet.host("c", address="127.0.0.4")
    fleet.disk("d", on=["a"])
    fleet.host("a", address="127.0.0.2", config=HostConfiguration(id="x", iscsi_targets=[IscsiTarget(
        tid=1, iqn="iqn.2025-01.kerub:d", lun_path="/dev/vg0/kerub-d", disk_id="disk-d",
        initiators=["127.0.0.3", "127.0.0.4"])]))
    fleet.vm("v", on="c", disks=["d"], expect=["availability:up@dealbreaker"])
    state = fleet.state()
    before = Evaluation.full(state)
    assert [p.type for p in before.items()] == ["unused-iscsi-initiator"]
    for status in (HostStatus.down, HostStatus.up):
        after = state.apply([state.host_dyn[host_id("b")].evolve(status=status)])
        carried = before.update(state, after, Touched(hosts=frozenset({host_id("b")})))
        assert carried.items() == Evaluation.full(after).items()
        state, before = after, carried
