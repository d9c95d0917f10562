"""Optimisation policies: power saving, load balancing with hysteresis, KSM by benefit; no flip-flop."""

from __future__ import annotations

import datetime as dt

from kerub_tui.core.models import HostStatus
from kerub_tui.planner.optimise import ksm_decision, load_balancing_draft, optimisation_drafts, power_saving_draft
from kerub_tui.planner.planning import plan_all
from kerub_tui.planner.state import OperationalState
from kerub_tui.planner.steps import MigrateVm, PowerDownHost, StartVm, WakeHost

from .fleet import GIB, NOW, Fleet, from_tables


def test_all_policies_off_by_default() -> None:
    f = from_tables(hosts="""
        name memory options
        h1   32G    dedicated
        h2   32G    dedicated ksm=on,9,1
    """, vms="""
        name memory on
        a    30G    h1
        b    1G     h2
    """)
    assert optimisation_drafts(f.state()) == []


def test_power_saving_keeps_one_host_and_respects_non_dedicated_hosts() -> None:
    f = from_tables(hosts="""
        name memory options
        h1   32G    -
        h2   32G    dedicated wol
    """, vms="""
        name memory on
        a    1G     h1
        b    1G     h2
    """)
    draft = power_saving_draft(f.state(power_saving=True))
    assert [type(s).__name__ for s in draft.steps] == ["MigrateVm", "PowerDownHost"]
    assert draft.steps[-1] == PowerDownHost("host-h2")
    f2 = from_tables(hosts="""
        name memory options
        h1   32G    dedicated
    """, vms="""
        name memory on
        a    1G     h1
    """)
    assert power_saving_draft(f2.state(power_saving=True)) is None


def test_power_saving_does_not_fill_targets_above_the_balancing_threshold() -> None:
    f = from_tables(hosts="""
        name memory options
        h1   20G    dedicated wol=52:54:00:00:00:01
        h2   20G    dedicated wol=52:54:00:00:00:02
    """, vms="""
        name memory on
        a    14G    h1
        b    3G     h2
    """)
    # h1 would reach (14+3)/19 = 89 % > 80 %: draining h2 would only invite load balancing back
    assert power_saving_draft(f.state(power_saving=True, power_saving_threshold=0.3)) is None
    assert power_saving_draft(f.state(power_saving=True, power_saving_threshold=0.3,
                                      load_balancing_threshold=0.95)) is not None


def test_power_saving_never_breaks_an_expectation() -> None:
    f = from_tables(hosts="""
        name memory options
        h1   32G    dedicated
        h2   32G    dedicated
    """, vms="""
        name memory on expect
        a    8G     h1 -
        b    1G     h2 not-same-host:a@wish
    """)
    assert power_saving_draft(f.state(power_saving=True)) is None


def test_load_balancing_waits_for_the_hold_time_and_needs_a_gain() -> None:
    f = from_tables(hosts="""
        name memory
        h1   20G
        h2   20G
    """, vms="""
        name memory on
        a    8G     h1
        b    8G     h1
        c    1G     h2
    """)
    state = f.state(load_balancing=True, load_balancing_hold_seconds=300)
    assert load_balancing_draft(state) is None  # over the threshold, but not known for how long
    recent = state.with_context(overloaded_since={"host-h1": NOW - dt.timedelta(seconds=60)})
    assert load_balancing_draft(recent) is None
    held = state.with_context(overloaded_since={"host-h1": NOW - dt.timedelta(seconds=600)})
    draft = load_balancing_draft(held)
    assert draft.steps == (MigrateVm("vm-a", "host-h1", "host-h2"),)
    assert draft.final.memory_load("host-h1") < 0.5 and draft.final.memory_load("host-h2") < 0.8
    # a big minimum gain: no move is worth it
    big_gain = f.state(load_balancing=True, load_balancing_hold_seconds=0, load_balancing_min_gain=0.6)
    assert load_balancing_draft(big_gain) is None


def test_ksm_decisions_read_the_counters() -> None:
    f = from_tables(hosts="""
        name   memory options
        tight  16G    used=15G ksm=off,0,0
        alone  16G    used=15G ksm=off,0,0
        waste  16G    ksm=on,5,100
        young  16G    ksm=on,1,100
    """, vms="""
        name memory on
        a    2G     tight
        b    2G     tight
        c    2G     alone
        d    2G     waste
        e    2G     young
    """)
    s = f.state(ksm=True)
    assert ksm_decision(s, "host-tight")[1] == "memory on tight is tight with 2 VMs: KSM can merge their identical pages"
    assert ksm_decision(s, "host-alone") is None  # one guest: nothing to merge with
    step, why = ksm_decision(s, "host-waste")
    assert step.run is False and why.startswith("KSM on waste saved 0 MiB after 5 full scans")
    assert ksm_decision(s, "host-young") is None  # too early to judge


def _apply(state: OperationalState, drafts) -> OperationalState:
    for draft in drafts:
        for step in draft.steps:
            assert step.blocked(state) is None
            state = step.take(state)
    return state


def test_consolidation_with_hysteresis_does_not_flip_flop() -> None:
    """Re-plan many times, applying every proposal: the fleet settles, no VM goes back to a host it left,
    no host is powered down and then woken, and nothing is proposed once settled."""
    f = Fleet()
    for i in range(1, 7):
        f.host(f"h{i}", memory=32 * GIB, dedicated=True, wol_mac=f"52:54:00:00:00:0{i}")
    loads = {"h1": [6, 5], "h2": [4], "h3": [2, 1], "h4": [1], "h5": [3, 3, 3], "h6": [1, 1]}
    n = 0
    for host, sizes in loads.items():
        for size in sizes:
            n += 1
            f.vm(f"v{n}", memory=size * GIB, on=host, expect=["availability:up@dealbreaker"])
    state = f.state(power_saving=True, power_saving_threshold=0.25, load_balancing=True,
                    load_balancing_hold_seconds=0, load_balancing_min_gain=0.05)
    left: dict[str, set[str]] = {}
    powered_down: set[str] = set()
    rounds_with_plans = 0
    for round_ in range(12):
        now = NOW + dt.timedelta(minutes=10 * round_)
        state = state.with_context(now=now)
        drafts = plan_all(state)
        if not drafts:
            continue
        rounds_with_plans += 1
        for draft in drafts:
            for step in draft.steps:
                if isinstance(step, MigrateVm):
                    assert step.target not in left.get(step.vm, set()), f"{step.vm} went back to {step.target}"
                    left.setdefault(step.vm, set()).add(step.host)
                if isinstance(step, PowerDownHost):
                    powered_down.add(step.host)
                assert not (isinstance(step, WakeHost) and step.host in powered_down)
        state = _apply(state, drafts)
    assert rounds_with_plans <= 3
    assert plan_all(state) == []
    up = [h for h in state.host_ids() if state.host_up(h)]
    assert all(state.memory_load(h) <= 0.8 for h in up)
    assert len(up) < 6 and powered_down


def test_a_woken_host_is_not_drained_while_it_is_needed() -> None:
    f = Fleet()
    f.host("h1", memory=8 * GIB, dedicated=True)
    f.host("h2", memory=8 * GIB, dedicated=True, wol_mac="52:54:00:00:00:02", status=HostStatus.down)
    f.vm("a", memory=6 * GIB, on="h1", expect=["availability:up@dealbreaker"])
    f.vm("b", memory=2 * GIB, expect=["availability:up@dealbreaker"])  # does not fit on h1 any more
    state = f.state(power_saving=True)
    [draft] = plan_all(state)
    assert draft.steps == (WakeHost("host-h2", "host-h1"), StartVm("vm-b", "host-h2"))
    state = _apply(state, [draft])
    for _ in range(3):
        assert plan_all(state) == []  # h2 is lightly loaded, but b cannot go back to h1
