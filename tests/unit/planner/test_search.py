"""The search itself: pruning of inverse pairs and unneeded steps, bounds, partial plans, incremental
evaluation agreeing with a full one."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from kerub_tui.planner.planning import repair_draft
from kerub_tui.planner.search import Evaluation, _touched_all, prune, search
from kerub_tui.planner.steps import CreateLv, StartVm, StopVm

from .fleet import GIB, from_tables


def pending(n: int, hosts: int = 2, memory: str = "2G"):
    rows = "\n".join(f"h{i} 16G" for i in range(1, hosts + 1))
    vms = "\n".join(f"v{i} {memory} availability:up@dealbreaker" for i in range(n))
    return from_tables(hosts=f"name memory\n{rows}", vms=f"name memory expect\n{vms}")


def test_prune_drops_inverse_pairs_and_steps_nothing_needs() -> None:
    f = pending(1)
    f.disk("spare", size=GIB)
    s = f.state()
    root = Evaluation.full(s)
    steps = (StartVm("vm-v0", "host-h2"), StopVm("vm-v0", "host-h2"),
             CreateLv("disk-spare", "host-h1", "lvm:vg0", "vg0", "kerub-spare", GIB), StartVm("vm-v0", "host-h1"))
    assert prune(s, steps, root) == (StartVm("vm-v0", "host-h1"),)


def test_node_budget_gives_a_partial_plan_that_says_so() -> None:
    s = pending(3).state()
    result = search(s, max_nodes=1)
    assert len(result.steps) == 1 and not result.complete
    assert "node budget of 1 reached" in result.method
    assert [i.subject_id for i in result.remaining] == ["vm-v1", "vm-v2"]


def test_time_limit_is_a_safety_net() -> None:
    s = pending(2).state()
    ticks = itertools.count(0, 100)
    result = search(s, max_seconds=50, clock=lambda: float(next(ticks)))
    assert "time limit of 50 s reached" in result.method


def test_what_cannot_be_fixed_is_reported_and_the_rest_is_planned() -> None:
    f = from_tables(hosts="name memory\n h1 8G", vms="""
        name memory expect
        huge 64G    availability:up@dealbreaker
        ok   1G     availability:up@dealbreaker
    """)
    draft = repair_draft(f.state())
    assert [s.describe(st) for s, st in zip(draft.steps, draft.states)] == ["start ok on h1"]
    assert draft.unsatisfied == ["could not fix: VM huge: availability@dealbreaker: not running"]
    assert draft.method.endswith("1 dealbreakers or problems left open")


def test_many_pending_vms_use_the_greedy_search_and_say_so() -> None:
    draft = repair_draft(pending(10, hosts=4).state())
    assert draft.method.startswith("greedy best-first")
    assert len(draft.steps) == 10 and not draft.unsatisfied


def test_oversubscribed_fleet_places_as_many_as_fit() -> None:
    f = from_tables(hosts="name memory\n h1 10G", vms="""
        name memory expect
        big  8G     availability:up@dealbreaker
        a    2G     availability:up@dealbreaker
        b    2G     availability:up@dealbreaker
        c    2G     availability:up@dealbreaker
        d    2G     availability:up@dealbreaker
        e    2G     availability:up@dealbreaker
        f    2G     availability:up@dealbreaker
        g    2G     availability:up@dealbreaker
    """)
    draft = repair_draft(f.state())
    # 9 GiB of room: four small VMs beat one big one
    assert sorted(s.vm for s in draft.steps) == ["vm-a", "vm-b", "vm-c", "vm-d"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 3)), min_size=1, max_size=6))
def test_incremental_evaluation_matches_a_full_one(moves: list[tuple[int, int]]) -> None:
    """Start or move VMs at random; the search's incremental evaluation must equal a fresh one."""
    f = from_tables(hosts="""
        name memory cpus
        h1   16G    4
        h2   16G    4
        h3   16G    4
    """, vms="""
        name memory cpus expect
        v0   2G     2    availability:up@dealbreaker not-same-host:v1@dealbreaker
        v1   2G     2    availability:up@want core-dedication@want
        v2   2G     1    vm-dependency:v0@wish
        v3   2G     1    not-same-host:v2@want
        v4   2G     3    -
        v5   2G     1    availability:down@want
    """)
    state = f.state()
    ev = Evaluation.full(state)
    for vm_index, host_index in moves:
        vm_id, host_id = f"vm-v{vm_index}", f"host-h{host_index}"
        step = StartVm(vm_id, host_id) if state.vm_host(vm_id) is None else StopVm(vm_id, state.vm_host(vm_id))
        if step.blocked(state) is not None:
            continue
        after = step.take(state)
        ev = ev.update(state, after, _touched_all([step]))
        state = after
        fresh = Evaluation.full(state)
        assert ev.keys() == fresh.keys()
        assert (ev.hard, round(ev.penalty, 6)) == (fresh.hard, round(fresh.penalty, 6))
