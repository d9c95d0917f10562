"""Explanations: why a VM runs where it runs, why each other host was rejected."""

from __future__ import annotations

from kerub_tui.core.store import Store
from kerub_tui.planner.explain import explain, explain_text

from .fleet import from_tables, full_until_b_moves

FLEET = dict(hosts="""
    name memory arch    flags status
    h1   16G    x86_64  vmx   up
    h2   16G    x86_64  svm   up
    h3   16G    aarch64 vmx   up
    h4   2G     x86_64  vmx   up
    h5   16G    x86_64  vmx   down
""", vms="""
    name memory on expect
    web  4G     h1 availability:up@dealbreaker cpu-flags:vmx@want not-same-host:db@dealbreaker
    db   1G     h4 -
    idle 1G     -  cpu-flags:avx2@wish
""")


def test_structured_explanation() -> None:
    state = from_tables(**FLEET).state()
    e = explain(state, "vm-web")
    assert (e.status, e.host_name) == ("up", "h1")
    assert [(v.spec, v.met) for v in e.expectations] == [
        ("availability:up@dealbreaker", True), ("cpu-flags:vmx@want", True), ("not-same-host:db@dealbreaker", True)]
    by_name = {h.host_name: h for h in e.hosts}
    assert by_name["h1"].current and by_name["h1"].fits
    assert by_name["h2"].fits and [(r.checker, r.level, r.text) for r in by_name["h2"].reasons] == [
        ("cpu-flags", "want", "h2: no vmx flag")]
    assert not by_name["h3"].fits and by_name["h3"].reasons[0].text == "h3: cannot run x86_64 guests"
    assert [(r.checker, r.level) for r in by_name["h4"].reasons] == [("capacity", "hard"), ("not-same-host", "dealbreaker")]
    assert by_name["h5"].reasons[0].text == "h5: is down"
    assert e.as_dict()["hosts"][0]["host_name"] == "h1"


def test_text_rendering_and_a_vm_that_is_not_running(tmp_path) -> None:
    fleet = from_tables(**FLEET)
    text = explain_text(fleet.state(), "vm-web")
    assert text.splitlines()[:3] == [
        "  placement: up on h1",
        "    meets availability:up@dealbreaker, cpu-flags:vmx@want, not-same-host:db@dealbreaker",
        "  other hosts:",
    ]
    assert "    h2: fits, but: cpu-flags@want: no vmx flag" in text
    assert "    h4: rejected: capacity: 819.2M free memory, needs 4.0G; not-same-host@dealbreaker: also runs db" in text
    with Store.open(tmp_path) as store:
        store.put_many(fleet.documents())
        idle = explain_text(store, "vm-idle")
    assert idle.splitlines()[0] == "  placement: not on any host"
    assert "    h1: fits, but: cpu-flags@wish: no avx2 flag" in idle


def test_long_host_lists_are_counted() -> None:
    rows = "\n".join(f"    n{i:03d} 16G" for i in range(30))
    fleet = from_tables(hosts=f"name memory\n{rows}", vms="name memory on\n web 1G n000")
    text = explain_text(fleet.state(), "vm-web")
    assert "    ... 17 more hosts (17 fit)" in text.splitlines()
    assert text.splitlines()[-2:] == ["    n004: score 57 = steps 57; 93% memory free",  # the 5 best of "why here"
                                      "    ... 12 more ranked below"]


def test_why_this_host_over_the_others_that_fit_with_the_terms_compared() -> None:
    """Issue 13 item 13: not only which hosts fit, but why this one was chosen over them."""
    text = explain_text(from_tables(**FLEET).state(), "vm-web")
    lines = text.splitlines()
    start = lines.index("  why h1 over the others that fit (lowest score wins, then most memory free):")
    assert lines[start + 2] == "    h1 (here): score 0 = no steps (it runs here); 73% memory free"
    assert lines[start + 3] == "    h2: score 3721 = steps 121 + broken cpu-flags@want 3600; 73% memory free"
    assert all("h3" not in line and "h4" not in line for line in lines[start:])  # they do not fit
    scores = explain(from_tables(**FLEET).state(), "vm-web").scores
    assert [(s.host_name, s.current, s.broken) for s in scores] == [("h1", True, []), ("h2", False, ["cpu-flags@want"])]


def test_a_vm_not_running_says_where_a_start_would_put_it_and_why() -> None:
    fleet = from_tables(hosts="""
        name memory
        big  32G
        small 4G
    """, vms="""
        name memory expect
        app  2G     availability:up@dealbreaker
    """)
    text = explain_text(fleet.state(), "vm-app")
    assert "  where a start would put it (lowest score wins, then most memory free):" in text
    assert "    a start would put it on big" in text
    power = explain_text(fleet.state(power_saving=True), "vm-app")
    assert "then least memory free: power saving packs" in power and "    a start would put it on small" in power


def test_pending_and_rejected_plans_for_the_vm_are_mentioned(tmp_path) -> None:
    from kerub_tui.core.models import PlanStatus
    from kerub_tui.planner.replanner import Replanner, reject

    fleet = from_tables(hosts="""
        name memory
        h1   16G
    """, vms="""
        name memory expect
        app  2G     availability:up@dealbreaker
    """)
    with Store.open(tmp_path) as store:
        store.put_many(fleet.documents())
        [plan] = Replanner(store).replan().proposed
        assert f"    plan {plan.id[:8]} (start) awaits approval (:plans, or plan approve)" in explain_text(store, "vm-app")
        reject(store, plan.id, "admin")
        text = explain_text(store, "vm-app")
        assert text.splitlines()[-2:] == [
            "  plans for it:",
            f"    plan {plan.id[:8]} (start) was rejected by admin: start it again (s, or vm start) to have it "
            "proposed again"]
        assert store.get("plan", plan.id).status is PlanStatus.rejected



def test_why_says_where_room_is_made(tmp_path) -> None:
    """Issue 18 item 1: vm show says which VM moves to make room for it, and the moved VM says why."""
    from kerub_tui.planner.commitments import build_state
    from kerub_tui.planner.planning import repair_draft

    from .fleet import NOW

    fleet = full_until_b_moves()
    with Store.open(tmp_path) as store:
        store.put_many(fleet.documents())
        assert "room:" not in explain_text(store, "vm-d")
        plan = repair_draft(build_state(store, now=NOW)).to_plan()
        store.put(plan)
        line = f"    room: live-migrate b from h1 to h2 to make room for d (plan {plan.id[:8]}, proposed)"
        d, b, a = (explain_text(store, f"vm-{n}") for n in "dba")
    assert d.splitlines()[-1] == line
    assert "    h1: rejected: capacity: 11.0G free memory, needs 16.0G" in d  # what the move changes
    assert b.splitlines()[-1] == line
    assert "room:" not in a


def test_the_memory_range_policy_is_said() -> None:
    """Issue 18 item 8: vm show says how a memory range is placed, and what a ballooned VM holds."""
    fleet = from_tables(hosts="""
        name memory
        h1   16G
    """, vms="""
        name  memory     on  expect
        fixed 2G         h1  -
        range 2G:8G      -   -
        tight 4G:24G=6G  h1  -
    """)
    state = fleet.state()
    assert explain_text(state, "vm-range").splitlines()[1] == (
        "    memory: placed by its maximum 8.0G where a host has room for it; where none has, it starts with what "
        "a host has free, at least its minimum 2.0G, the balloon holding it there")
    assert explain_text(state, "vm-tight").splitlines()[1] == (
        "    memory: started with 6.0G of its 24.0G (no host had room for its maximum): the balloon holds it "
        "there, and 6.0G is what it holds on its host")
    assert "memory:" not in explain_text(state, "vm-fixed")
    assert state.mem_used["host-h1"] == 8 * (1 << 30)  # 2G + the 6G the ballooned VM holds
