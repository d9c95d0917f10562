"""Explanations: why a VM runs where it runs, why each other host was rejected."""

from __future__ import annotations

from kerub_tui.core.store import Store
from kerub_tui.planner.explain import explain, explain_text

from .fleet import from_tables

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
    assert text.splitlines()[-1] == "    ... 17 more hosts (17 fit)"
