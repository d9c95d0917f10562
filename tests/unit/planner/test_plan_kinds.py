"""Plans say what they are for and are proposed apart (issue 13 items 6 and 7): independent problems are
independent proposals; a rejected one stays out of the others and comes back when the admin asks again;
kinds are purposes, not "repair"; an auto-approve policy never covers a step that deletes data unless it
says so; a stored policy of the old kind "repair" still reads."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from kerub_tui.core.models import (
    LEGACY_REPAIR_KINDS,
    AutoApprovePolicy,
    Plan,
    PlanStatus,
    Settings,
)
from kerub_tui.core.store import EXPORT_FORMAT, Store
from kerub_tui.planner.commitments import build_state
from kerub_tui.planner.replanner import Replanner, approve, ask_again, deletes_data, not_covered, reject

from .fleet import NOW, from_tables


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    with Store.open(tmp_path / "data") as s:
        yield s


def proposed(store: Store) -> dict[str, Plan]:
    """The open proposals by kind."""
    plans = [p for p in store.list(Plan) if p.status is PlanStatus.proposed]
    by_kind = {p.plan_kind: p for p in plans}
    assert len(by_kind) == len(plans), [p.plan_kind for p in plans]
    return by_kind


def steps(plan: Plan) -> list[str]:
    return [s.description for s in plan.steps]


def maintenance_and_a_pending_start(store: Store) -> None:
    """h1 goes into maintenance (its VM a must move) while the admin asked for s1 to start."""
    store.put_many(from_tables(hosts="""
        name memory options
        h1   16G    recycling
        h2   16G
    """, vms="""
        name memory on expect
        a    2G     h1 availability:up@dealbreaker
        s1   2G     -  availability:up@dealbreaker
    """).documents())


def test_an_evacuation_and_a_start_are_two_proposals(store: Store) -> None:
    maintenance_and_a_pending_start(store)
    Replanner(store, clock=lambda: NOW).replan()
    plans = proposed(store)
    assert sorted(plans) == ["evacuate", "start"]
    assert steps(plans["evacuate"]) == ["live-migrate a from h1 to h2"]
    assert steps(plans["start"]) == ["start s1 on h2"]
    assert plans["evacuate"].trigger == ["a runs on h1, which is being recycled (maintenance)"]
    assert plans["start"].trigger == ["VM s1: availability@dealbreaker: not running"]


def test_a_rejected_start_stays_out_of_the_evacuation_which_is_approved_alone(store: Store) -> None:
    maintenance_and_a_pending_start(store)
    replanner = Replanner(store, clock=lambda: NOW)
    replanner.replan()
    start = proposed(store)["start"]
    reject(store, start.id, "admin")
    report = replanner.replan()
    assert report.proposed == []  # the start does not come back, alone or inside another plan
    [evacuation] = proposed(store).values()
    assert steps(evacuation) == ["live-migrate a from h1 to h2"]
    assert approve(store, evacuation.id, "admin").status is PlanStatus.approved


def test_a_rejected_plan_is_proposed_again_when_the_admin_asks_again(store: Store) -> None:
    maintenance_and_a_pending_start(store)
    replanner = Replanner(store, clock=lambda: NOW)
    replanner.replan()
    start = proposed(store)["start"]
    reject(store, start.id, "admin")
    assert replanner.replan().proposed == []
    [asked] = ask_again(store, "vm-s1", "admin")
    assert asked.id == start.id and asked.status is PlanStatus.rejected and asked.asked_again_by == "admin"
    [again] = replanner.replan().proposed
    assert again.plan_kind == "start" and steps(again) == ["start s1 on h2"] and again.id != start.id
    assert ask_again(store, "vm-s1", "admin") == []  # asked once: nothing left to ask for


def test_the_service_re_plans_when_a_rejected_plan_is_asked_for_again() -> None:
    from kerub_tui.core.bus import Change
    from kerub_tui.planner.replanner import relevant

    rejected = Plan(id="p1", plan_kind="start", status=PlanStatus.rejected)
    asked = rejected.evolve(asked_again_by="admin")
    assert relevant(Change("plan", "p1", rejected, asked))


def test_kinds_say_what_each_plan_is_for(store: Store) -> None:
    store.put_many(from_tables(hosts="""
        name memory status options
        h1   16G    down   fenced=admin
        h2   16G    up     -
    """, vms="""
        name memory on expect
        lost 2G     h1 availability:up@dealbreaker
        old  1G     h2 availability:down@dealbreaker
    """).documents())
    Replanner(store, clock=lambda: NOW).replan()
    plans = proposed(store)
    assert sorted(plans) == ["restart", "stop"]
    assert steps(plans["restart"]) == ["start lost on h2"]


# --- auto-approve and deletions ----------------------------------------------------------------------


def evacuation_with_local_storage(store: Store) -> None:
    """VM a on h1 (maintenance) with its disk on h1: moving it removes the disk's LV on h1."""
    store.put_many(from_tables(hosts="""
        name memory options
        h1   16G    recycling
        h2   16G
    """, vms="""
        name memory on disks expect
        a    2G     h1 d     availability:up@dealbreaker
    """, disks="""
        name size on
        d    10G  h1
    """).documents())


def test_an_auto_approve_policy_never_covers_a_step_that_deletes_data(store: Store) -> None:
    evacuation_with_local_storage(store)
    store.put(Settings(auto_approve=[AutoApprovePolicy(plan_kind="evacuate", created_by="admin")]))
    report = Replanner(store, clock=lambda: NOW).replan()
    [plan] = report.proposed
    assert plan.plan_kind == "evacuate" and deletes_data(plan)
    assert "remove LV vg0/kerub-d of disk d on h1" in steps(plan)
    assert report.approved == [] and store.get(Plan, plan.id).status is PlanStatus.proposed
    assert store.get(Plan, plan.id).status_reason == (
        "not auto-approved: it deletes data and the evacuate policy does not cover deletions")
    assert not_covered(store.get(Settings, "settings"), plan) == (
        "it deletes data and the evacuate policy does not cover deletions")


def test_a_policy_that_says_it_covers_deletions_approves_them(store: Store) -> None:
    evacuation_with_local_storage(store)
    store.put(Settings(auto_approve=[AutoApprovePolicy(plan_kind="evacuate", created_by="admin", deletes=True)]))
    [plan] = Replanner(store, clock=lambda: NOW).replan().approved
    assert plan.status is PlanStatus.approved and deletes_data(plan)


def test_a_plan_of_two_kinds_needs_a_policy_for_each() -> None:
    plan = Plan(plan_kind="restart+start")
    assert not_covered(Settings(auto_approve=[AutoApprovePolicy(plan_kind="restart")]), plan) == (
        "no auto-approve policy for start plans")
    both = Settings(auto_approve=[AutoApprovePolicy(plan_kind="restart"), AutoApprovePolicy(plan_kind="start")])
    assert not_covered(both, plan) is None


def test_a_stored_repair_policy_reads_as_the_kinds_it_covered_without_deletions(tmp_path) -> None:
    """Settings and plans written before kinds said what a plan is for load, and keep loading."""
    legacy = {"format": EXPORT_FORMAT, "schema_version": 1, "documents": [
        {"kind": "settings", "id": "settings", "schema_version": 1,
         "auto_approve": [{"plan_kind": "repair", "created_by": "admin", "created_at": None},
                          {"plan_kind": "ksm", "created_by": "admin", "created_at": None}]},
        {"kind": "plan", "id": "old-plan", "schema_version": 1, "plan_kind": "repair", "status": "done"},
    ]}
    path = tmp_path / "export.json"
    path.write_text(json.dumps(legacy))
    with Store.open(tmp_path / "data") as store:
        store.import_file(path)
    with Store.open(tmp_path / "data") as store:  # as written: read again from the file
        settings = store.get(Settings, "settings")
        kinds = [p.plan_kind for p in settings.auto_approve]
        assert kinds == [*LEGACY_REPAIR_KINDS, "ksm"]
        assert not any(p.deletes for p in settings.auto_approve)
        assert all(p.created_by == "admin" for p in settings.auto_approve)
        assert store.get(Plan, "old-plan").plan_kind == "repair"  # history keeps its word
        assert "evacuate" not in kinds  # "repair" never covered evacuations


def test_the_plans_of_the_state_replay_after_the_split(store: Store) -> None:
    """Each proposal of a split stands alone: it replays on the current state by itself."""
    from kerub_tui.planner.replanner import validate

    maintenance_and_a_pending_start(store)
    Replanner(store, clock=lambda: NOW).replan()
    for plan in proposed(store).values():
        assert validate(store, plan, now=NOW) is None
    assert build_state(store, now=NOW).vms
