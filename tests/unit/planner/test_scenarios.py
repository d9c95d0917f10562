"""Scenarios as readable tables: hosts, VMs, disks, expectations -> the shape of the plan.

Each scenario lists the plans the planner proposes (kind, then one line per step, as the admin reads
them) and what it reports as not met. Step lines are matched with shell-style wildcards.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

import pytest

from kerub_tui.core.models import Host
from kerub_tui.planner.planning import plan_all

from .fleet import Fleet, from_tables


@dataclass
class Scenario:
    name: str
    hosts: str
    vms: str = ""
    disks: str = ""
    policies: dict = field(default_factory=dict)
    plans: list[tuple[str, list[str]]] = field(default_factory=list)  # (kind, step lines)
    unsatisfied: list[str] = field(default_factory=list)
    # also planned with the hosts renamed (their name order reversed) and under both placement policies
    # (spread, and pack as power saving does): the same plan, host for host
    robust: bool = False


SCENARIOS = [
    Scenario(
        "a VM must run and one host fits",
        hosts="""
            name  memory  cpus
            h1    4G      2
            h2    32G     8
        """,
        vms="""
            name  memory  cpus  on  expect
            web   8G      4     -   availability:up@dealbreaker
        """,
        plans=[("start", ["start web on h2"])],
    ),
    Scenario(
        "not-same-host forces two hosts",
        hosts="""
            name  memory
            h1    32G
            h2    32G
        """,
        vms="""
            name  memory  on  expect
            db    4G      h1  availability:up@dealbreaker
            web   4G      -   availability:up@dealbreaker not-same-host:db@dealbreaker
        """,
        plans=[("start", ["start web on h2"])],
    ),
    Scenario(
        "not-same-host between two pending VMs",
        hosts="""
            name  memory
            h1    32G
            h2    32G
        """,
        vms="""
            name  memory  expect
            a     4G      availability:up@dealbreaker not-same-host:b@dealbreaker
            b     4G      availability:up@dealbreaker
        """,
        plans=[("start", ["start a on h?", "start b on h?"])],
    ),
    Scenario(
        "cpu-architecture excludes a host",
        hosts="""
            name  memory  arch
            arm1  64G     aarch64
            x1    8G      x86_64
        """,
        vms="""
            name  memory  expect
            web   2G      availability:up@dealbreaker cpu-architecture:x86_64@dealbreaker
        """,
        plans=[("start", ["start web on x1"])],
    ),
    Scenario(
        "a VM that needs a new disk gets its LV first",
        hosts="""
            name  memory
            h1    16G
        """,
        vms="""
            name  memory  disks  expect
            db    2G      data   availability:up@dealbreaker
        """,
        disks="""
            name  size
            data  20G
        """,
        plans=[("start", ["create LV vg0/kerub-data (20.0G) on h1 for disk data", "start db on h1"])],
    ),
    Scenario(
        "evacuation of a host in maintenance",
        hosts="""
            name  memory  options
            h1    32G     recycling
            h2    32G     -
        """,
        vms="""
            name  memory  on  expect
            web   2G      h1  availability:up@dealbreaker
            db    4G      h1  -
        """,
        plans=[("evacuate", ["live-migrate db from h1 to h2", "live-migrate web from h1 to h2"])],
    ),
    Scenario(
        "evacuation moves a VM with its storage",
        hosts="""
            name  memory  options
            h1    32G     recycling
            h2    32G     -
        """,
        vms="""
            name  memory  on  disks  expect
            db    4G      h1  data   availability:up@dealbreaker
        """,
        disks="""
            name  size  on
            data  10G   h1
        """,
        plans=[("evacuate", [
            "create LV vg0/kerub-data (10.0G) on h2 for disk data",
            "live-migrate db with its storage from h1 to h2",
            "remove LV vg0/kerub-data of disk data on h1",
        ])],
    ),
    Scenario(
        "storage redundancy 2 out-of-box",
        hosts="""
            name  memory
            h1    16G
            h2    16G
            h3    16G
        """,
        disks="""
            name  size  on  expect
            data  10G   h1  storage-redundancy:2,out-of-box@dealbreaker
        """,
        plans=[("redundancy", ["let h1 reach h? over SSH", "copy disk data from h1 lvm:vg0 to h? lvm:vg0"])],
    ),
    Scenario(
        "a want that cannot be met is reported while the dealbreakers are still planned",
        hosts="""
            name  memory  flags
            h1    16G     sse4_2
        """,
        vms="""
            name  memory  expect
            web   2G      availability:up@dealbreaker cpu-flags:avx512f@want
        """,
        plans=[("start", ["start web on h1"])],
        unsatisfied=["accepted: VM web: cpu-flags@want: h1: no avx512f flag"],
    ),
    Scenario(
        "a want is bought with a migration when it can be",
        hosts="""
            name  memory  flags
            h1    16G     sse4_2
            h2    16G     avx512f
        """,
        vms="""
            name  memory  on  expect
            web   2G      h1  availability:up@dealbreaker cpu-flags:avx512f@want
        """,
        plans=[("placement", ["live-migrate web from h1 to h2"])],
    ),
    Scenario(
        "a dealbreaker that cannot be met is reported, nothing else is invented",
        hosts="""
            name  memory
            h1    4G
        """,
        vms="""
            name  memory  expect
            huge  64G     availability:up@dealbreaker
        """,
        plans=[],
    ),
    Scenario(
        "dependencies start first",
        hosts="""
            name  memory
            h1    16G
        """,
        vms="""
            name  memory  expect
            app   2G      availability:up@dealbreaker vm-dependency:db@dealbreaker
            db    2G      availability:up@dealbreaker
        """,
        plans=[("start", ["start db on h1", "start app on h1"])],
    ),
    Scenario(
        "a VM expected down is stopped; a paused one expected up is resumed",
        hosts="""
            name  memory
            h1    16G
        """,
        vms="""
            name  memory  on  status  expect
            old   2G      h1  up      availability:down@dealbreaker
            nap   2G      h1  paused  availability:up@dealbreaker
        """,
        # two independent wishes of the admin: two proposals, each approved or rejected on its own
        plans=[("start", ["resume nap on h1"]), ("stop", ["stop old on h1 (forced after 120 s)"])],
    ),
    Scenario(
        "a lost VM restarts elsewhere when its disk-less, once its host is fenced",
        hosts="""
            name  memory  status  options
            h1    16G     down    fenced=admin
            h2    16G     up      -
        """,
        vms="""
            name  memory  on  expect
            web   2G      h1  availability:up@dealbreaker
        """,
        plans=[("restart", ["start web on h2"])],
    ),
    Scenario(
        "a failing device: the disk moves off it",
        hosts="""
            name  memory  options
            h1    16G     failing=sda
            h2    16G     -
        """,
        disks="""
            name  size  on
            data  10G   h1
        """,
        plans=[("evacuate", ["let h1 reach h2 over SSH", "move disk data from h1 lvm:vg0 to h2 lvm:vg0"])],
    ),
    Scenario(
        "an overheating host gives some load away",
        hosts="""
            name  memory  cpus  options
            h1    32G     4     temp=95
            h2    32G     4     -
        """,
        vms="""
            name  memory  cpus  on
            a     2G      2     h1
            b     2G      1     h1
        """,
        plans=[("overheat", ["live-migrate a from h1 to h2"])],
    ),
    Scenario(
        "no proposal when all is satisfied and optimisation is off",
        hosts="""
            name  memory  options
            h1    32G     dedicated wol
            h2    32G     dedicated
        """,
        vms="""
            name  memory  on  expect
            web   2G      h1  availability:up@dealbreaker
            db    2G      h2  availability:up@want
        """,
        plans=[],
    ),
    Scenario(
        "power saving drains the least loaded dedicated host and powers it down",
        hosts="""
            name  memory  options
            h1    32G     dedicated wol
            h2    32G     dedicated wol=52:54:00:00:00:02
        """,
        vms="""
            name  memory  on  expect
            web   8G      h1  availability:up@dealbreaker
            db    2G      h2  availability:up@dealbreaker
        """,
        policies={"power_saving": True},
        plans=[("power-saving", ["live-migrate db from h2 to h1", "power down h2"])],
    ),
    # --- issue 18 item 4: power saving never powers down a host that cannot be woken again ---------
    Scenario(
        "power saving leaves a host without wake-on-LAN or IPMI up, and drains one that can be woken",
        hosts="""
            name  memory  options
            h1    32G     dedicated ipmi=10.0.0.11
            h2    32G     dedicated
        """,
        vms="""
            name  memory  on  expect
            web   4G      h1  availability:up@dealbreaker
            db    2G      h2  availability:up@dealbreaker
        """,
        policies={"power_saving": True},
        plans=[("power-saving", ["live-migrate web from h1 to h2", "power down h1"])],
        robust=True,
    ),
    # equally loaded candidates: the one whose guests cost least to move goes down (h1's guest would take its
    # disk with it), whatever the hosts are called
    Scenario(
        "power saving: of two equally loaded hosts, the one whose guests cost least to move is powered down",
        hosts="""
            name  memory  options
            h1    32G     dedicated wol
            h2    32G     dedicated wol
        """,
        vms="""
            name  memory  on  disks  expect
            db    4G      h1  data   availability:up@dealbreaker
            web   4G      h2  -      availability:up@dealbreaker
        """,
        disks="""
            name  size  on
            data  5G    h1
        """,
        policies={"power_saving": True},
        plans=[("power-saving", ["live-migrate web from h2 to h1", "power down h2"])],
        robust=True,
    ),
    Scenario(  # all else equal, the host's id decides (stable under renames), never its name
        "power saving: of two hosts alike in every way, the same one is powered down whatever their names",
        hosts="""
            name  memory  options
            h1    32G     dedicated wol
            h2    32G     dedicated wol
        """,
        vms="""
            name  memory  on  expect
            a     4G      h1  availability:up@dealbreaker
            b     4G      h2  availability:up@dealbreaker
        """,
        policies={"power_saving": True},
        plans=[("power-saving", ["live-migrate a from h1 to h2", "power down h1"])],
        robust=True,
    ),
    Scenario(
        "power saving powers nothing down where no host could be woken again",
        hosts="""
            name  memory  options
            h1    32G     dedicated
            h2    32G     dedicated
        """,
        vms="""
            name  memory  on  expect
            web   8G      h1  availability:up@dealbreaker
            db    2G      h2  availability:up@dealbreaker
        """,
        policies={"power_saving": True},
        plans=[],
    ),
    Scenario(
        "KSM proposed only when it pays",
        hosts="""
            name    memory  options
            tight   16G     used=15G ksm=off,0,0
            waste   16G     ksm=on,5,100
            roomy   16G     used=4G ksm=off,0,0
            paying  16G     used=15G ksm=on,5,200000
            tried   16G     used=15G ksm=off,4,10
        """,
        vms="""
            name  memory  on
            a     2G      tight
            b     2G      tight
            c     2G      waste
            d     2G      roomy
            e     2G      roomy
            f     2G      paying
            g     2G      paying
            h     2G      tried
            i     2G      tried
        """,
        policies={"ksm": True},
        plans=[("ksm", ["enable KSM on tight", "disable KSM on waste"])],
    ),
    # --- issue 18 item 1: a full fleet that could be rearranged makes room ----------------------------
    Scenario(
        "memory pressure: a small VM moves to make room",
        hosts="""
            name  memory
            h1    32G
            h2    32G
        """,
        vms="""
            name  memory  on  expect
            a     12G     h1  availability:up@dealbreaker
            b     8G      h1  availability:up@dealbreaker
            c     20G     h2  availability:up@dealbreaker
            d     16G     -   availability:up@dealbreaker
        """,
        plans=[("start+placement", ["live-migrate b from h1 to h2 to make room for d", "start d on h1"])],
        robust=True,
    ),
    Scenario(
        "not-same-host: the other VM moves first",
        hosts="""
            name  memory
            h1    32G
            h2    32G
        """,
        vms="""
            name   memory  on  expect
            db     4G      h1  availability:up@dealbreaker
            cache  20G     h2  availability:up@dealbreaker
            web    16G     -   availability:up@dealbreaker not-same-host:db@dealbreaker
        """,
        plans=[("start+placement", ["live-migrate db from h1 to h2 to make room for web", "start web on h1"])],
        robust=True,
    ),
    Scenario(
        "ECC: a VM without the expectation makes way",
        hosts="""
            name   memory  options
            ecc1   32G     -
            plain  32G     noecc
        """,
        vms="""
            name    memory  on    expect
            bulk    24G     ecc1  availability:up@dealbreaker
            ledger  16G     -     availability:up@dealbreaker ecc-memory@dealbreaker
        """,
        plans=[("start+placement", ["live-migrate bulk from ecc1 to plain to make room for ledger", "start ledger on ecc1"])],
        robust=True,
    ),
    Scenario(
        "no-migration: the movable VM is the one to move",
        hosts="""
            name  memory
            h1    32G
            h2    32G
        """,
        vms="""
            name    memory  on  expect
            pinned  6G      h1  availability:up@dealbreaker no-migration@dealbreaker
            mover   8G      h1  availability:up@dealbreaker
            big     18G     h2  availability:up@dealbreaker
            new     20G     -   availability:up@dealbreaker
        """,
        plans=[("start+placement", ["live-migrate mover from h1 to h2 to make room for new", "start new on h1"])],
        robust=True,
    ),
    # --- issue 18 item 3: a fleet entirely down is woken by the controller itself ---------------------
    Scenario(
        "a fleet entirely down: the controller wakes a host that can be woken",
        hosts="""
            name  memory  status  options
            h1    32G     down    wol
            h2    32G     down    -
        """,
        vms="""
            name  memory  expect
            web   4G      availability:up@dealbreaker
        """,
        plans=[("start", ["wake h1 (from the controller: wake-on-LAN)", "start web on h1"])],
        robust=True,
    ),
    Scenario(
        "a powered-down host is woken by a running neighbour when one is up",
        hosts="""
            name  memory  status  options
            h1    32G     down    ipmi=10.0.0.11
            h2    4G      up      -
        """,
        vms="""
            name  memory  expect
            web   8G      availability:up@dealbreaker
        """,
        plans=[("start", ["wake h1 (from h2: IPMI)", "start web on h1"])],
        robust=True,
    ),
    # --- issue 18 item 8: memory ranges: placed by the maximum where it fits, else ballooned -----------
    Scenario(  # a guard: the policy places by the maximum where it fits, as before the fix (the next one is new)
        "memory range: the maximum where a host has room for it",
        hosts="""
            name  memory
            h1    8G
            h2    16G
        """,
        vms="""
            name  memory  expect
            app   2G:12G  availability:up@dealbreaker
        """,
        plans=[("start", ["start app on h2"])],
        robust=True,
    ),
    Scenario(
        "memory range: no host has room for the maximum, so it starts ballooned where the minimum fits",
        hosts="""
            name  memory
            h1    8G
            h2    16G
        """,
        vms="""
            name  memory  on  expect
            big   8G      h2  availability:up@dealbreaker
            app   4G:24G  -   availability:up@dealbreaker
        """,
        plans=[("start", ["start app on h1 with 7.2G of its 24.0G (the balloon holds it there: no host has room "
                          "for its maximum)"])],
        robust=True,
    ),
    Scenario(
        "memory range: a ballooned VM holds what it was given, and moves with it",
        hosts="""
            name  memory  options
            h1    16G     recycling
            h2    8G      -
        """,
        vms="""
            name  memory     on  expect
            app   4G:24G=6G  h1  availability:up@dealbreaker
        """,
        plans=[("evacuate", ["live-migrate app from h1 to h2"])],
        robust=True,
    ),
    # --- issue 18 item 2: core dedication counts physical cores, not hyper-threads ------------------
    Scenario(
        "core dedication: an SMT host's threads are not cores of their own",
        hosts="""
            name  memory  cpus  options
            big   64G     16    smt=2
            small 16G     12    -
        """,
        vms="""
            name  memory  cpus  expect
            rt    4G      10    availability:up@dealbreaker core-dedication@dealbreaker
        """,
        plans=[("start", ["start rt on small"])],
        robust=True,
    ),
    Scenario(
        "core dedication: a VM with dedicated cores keeps an SMT host's other threads free",
        hosts="""
            name  memory  cpus  options
            big   64G     8     smt=2
            small 16G     8     -
        """,
        vms="""
            name  memory  cpus  on   expect
            rt    4G      4     big  availability:up@dealbreaker core-dedication@dealbreaker
            web   2G      2     -    availability:up@dealbreaker
        """,
        plans=[("start", ["start web on small"])],
        robust=True,
    ),
]


def _renamed(fleet: Fleet) -> dict[str, str]:
    """Rename the fleet's hosts so their name order is reversed (ids unchanged): new name -> old name."""
    hosts = sorted((doc for doc in fleet.documents() if isinstance(doc, Host)), key=lambda h: h.name)
    back = {}
    for i, host in enumerate(hosts):
        new = f"{chr(ord('z') - i)}{host.name}"
        back[new] = host.name
        fleet.put(host.evolve(name=new))
    return back


def _lines(drafts: list, back: dict[str, str]) -> list[tuple[str, list[str]]]:
    def restore(line: str) -> str:
        return re.sub(r"\b(" + "|".join(map(re.escape, back)) + r")\b", lambda m: back[m.group(1)], line) \
            if back else line

    return [(d.kind, [restore(s.describe(st)) for s, st in zip(d.steps, d.states)]) for d in drafts]


VARIANTS = [("as written", False, None), ("hosts renamed", True, None), ("spread", False, False),
            ("pack", False, True), ("renamed, pack", True, True)]


def _cases() -> list:
    out = []
    for scenario in SCENARIOS:
        variants = VARIANTS if scenario.robust else VARIANTS[:1]
        if "power_saving" in scenario.policies:  # the policy is the scenario's own: only renamed
            variants = [v for v in variants if v[2] is None]
        for label, rename, pack in variants:
            out.append(pytest.param(scenario, rename, pack, id=scenario.name + ("" if label == "as written"
                                                                                 else f" [{label}]")))
    return out


@pytest.mark.parametrize(("scenario", "rename", "pack"), _cases())
def test_scenario(scenario: Scenario, rename: bool, pack: bool | None) -> None:
    fleet = from_tables(scenario.hosts, scenario.vms, scenario.disks)
    back = _renamed(fleet) if rename else {}
    policies = dict(scenario.policies)
    if pack is not None:
        policies["power_saving"] = pack
    state = fleet.state(**policies)
    drafts = [d for d in plan_all(state) if pack is None or d.kind != "power-saving"]
    got = _lines(drafts, back)
    assert len(got) == len(scenario.plans), got
    for (kind, lines), (want_kind, patterns) in zip(got, scenario.plans):
        assert kind == want_kind, got
        assert len(lines) == len(patterns), got
        for line, pattern in zip(lines, patterns):
            assert fnmatch.fnmatchcase(line, pattern), (line, pattern)
    unsatisfied = [u for d in drafts for u in d.unsatisfied]
    if not back:
        assert unsatisfied == scenario.unsatisfied
    for draft in drafts:
        assert draft.final.vms == state.vms  # nothing static changes
        assert draft.to_plan().steps  # storable


@pytest.mark.parametrize("rename", [False, True], ids=["as written", "hosts renamed"])
def test_power_saving_powers_down_the_host_plans_left_alone_longest(rename: bool) -> None:
    """Two hosts alike in load and in what their guests cost to move: the one a plan touched most recently
    (h1 woken 6 hours ago, past the hold time) stays up; the one left alone longer is powered down."""
    import datetime as dt

    from .fleet import NOW, host_id

    fleet = from_tables("""
        name  memory  options
        h1    32G     dedicated wol
        h2    32G     dedicated wol
    """, """
        name  memory  on  expect
        a     4G      h1  availability:up@dealbreaker
        b     4G      h2  availability:up@dealbreaker
    """)
    back = _renamed(fleet) if rename else {}
    state = fleet.state(power_saving=True).with_context(history={host_id("h1"): NOW - dt.timedelta(hours=6)})
    assert _lines(plan_all(state), back) == [("power-saving", ["live-migrate b from h2 to h1", "power down h2"])]


LOAD_BALANCING_FLEET = ("""
    name  memory
    h1    16G
    h2    16G
    h3    32G
    h4    32G
""", """
    name  memory  on
    a     8G      h1
    b     6G      h1
    c     8G      h2
    d     6G      h2
""")


@pytest.mark.parametrize("rename", [False, True], ids=["as written", "hosts renamed"])
def test_load_balancing_never_chooses_source_or_target_by_name(rename: bool) -> None:
    """Two hosts equally overloaded, two empty targets alike: the same moves whatever the hosts are called
    (by id, and the second move to the target left with more room); a host overloaded longer goes first."""
    import datetime as dt

    from .fleet import NOW, host_id

    fleet = from_tables(*LOAD_BALANCING_FLEET)
    back = _renamed(fleet) if rename else {}
    state = fleet.state(load_balancing=True, load_balancing_hold_seconds=0)
    assert _lines(plan_all(state), back) == [
        ("load-balancing", ["live-migrate a from h1 to h3", "live-migrate c from h2 to h4"])]
    held = fleet.state(load_balancing=True, load_balancing_hold_seconds=300).with_context(overloaded_since={
        host_id("h1"): NOW - dt.timedelta(minutes=10), host_id("h2"): NOW - dt.timedelta(minutes=30)})
    assert _lines(plan_all(held), back) == [
        ("load-balancing", ["live-migrate c from h2 to h3", "live-migrate a from h1 to h4"])]


# --- issue 18 items 6 and 7 (helper `mirror`): mirrors where redundancy asks, PVs per VG, failing PVs ----
# Hosts' `pvs=SIZE[/USED],...` puts vg0 on those PVs (/dev/sda, /dev/sdb, ...); `failing=` names failing disks.

MIRROR_SCENARIOS = [
    Scenario(
        "availability and in-box redundancy on one disk: one mirrored LV, not a plain LV copied to another host",
        hosts="""
            name  memory  options
            h1    16G     pvs=400G,400G
            h2    16G     pvs=900G
        """,
        disks="""
            name  size  expect
            data  300G  storage-availability:up@dealbreaker storage-redundancy:2,in-box@dealbreaker
        """,
        plans=[("storage", ["create LV vg0/kerub-data (300.0G, 2 copies) on h1 for disk data"])],
        robust=True,
    ),
    Scenario(
        "in-box redundancy for an LV that holds data: lvconvert in its VG, not a copy to another host",
        hosts="""
            name  memory  options
            h1    16G     pvs=400G/100G,400G
            h2    16G     pvs=900G
        """,
        disks="""
            name  size  on  expect
            data  100G  h1  storage-redundancy:2,in-box@dealbreaker
        """,
        plans=[("redundancy", ["mirror LV vg0/kerub-data of disk data to 2 copies on h1"])],
        robust=True,
    ),
    Scenario(  # the roomier single-PV host comes first by name: before the fix it got a "mirror" on one PV
        "a VM's new disk with in-box redundancy is created mirrored before the VM starts",
        hosts="""
            name  memory  options
            h1    16G     pvs=900G
            h2    16G     pvs=200G,200G
        """,
        vms="""
            name  memory  disks  expect
            db    2G      data   availability:up@dealbreaker
        """,
        disks="""
            name  size  expect
            data  100G  storage-redundancy:2,in-box@dealbreaker
        """,
        plans=[("start+redundancy", ["create LV vg0/kerub-data (100.0G, 2 copies) on h2 for disk data",
                                      "start db on h2"])],
        robust=True,
    ),
    Scenario(
        "eight new disks with in-box redundancy (a greedy search): eight mirrors where the PVs hold them all",
        hosts="""
            name  memory  options
            h1    16G     pvs=900G,900G
            h2    16G     pvs=1T
            h3    16G     pvs=1T
        """,
        disks="""
            name  size  expect
            d0    100G  storage-availability:up@dealbreaker storage-redundancy:2,in-box@dealbreaker
            d1    100G  storage-availability:up@dealbreaker storage-redundancy:2,in-box@dealbreaker
            d2    100G  storage-availability:up@dealbreaker storage-redundancy:2,in-box@dealbreaker
            d3    100G  storage-availability:up@dealbreaker storage-redundancy:2,in-box@dealbreaker
            d4    100G  storage-availability:up@dealbreaker storage-redundancy:2,in-box@dealbreaker
            d5    100G  storage-availability:up@dealbreaker storage-redundancy:2,in-box@dealbreaker
            d6    100G  storage-availability:up@dealbreaker storage-redundancy:2,in-box@dealbreaker
            d7    100G  storage-availability:up@dealbreaker storage-redundancy:2,in-box@dealbreaker
        """,
        plans=[("storage", [f"create LV vg0/kerub-d{i} (100.0G, 2 copies) on h1 for disk d{i}" for i in range(8)])],
        robust=True,
    ),
    Scenario(
        "a 3-copy mirror goes to a VG with 3 PVs, not to a roomier VG with 2",
        hosts="""
            name  memory  options
            h1    16G     pvs=500G,500G
            h2    16G     pvs=200G,200G,200G
        """,
        disks="""
            name   size  expect
            fresh  100G  storage-redundancy:3,in-box@dealbreaker
        """,
        plans=[("redundancy", ["create LV vg0/kerub-fresh (100.0G, 3 copies) on h2 for disk fresh"])],
        robust=True,
    ),
    Scenario(
        "in-box redundancy as a want a mirror pays for: one mirrored LV, not a plain LV copied to another host",
        hosts="""
            name  memory  options
            h1    16G     pvs=400G,400G
            h2    16G     pvs=900G
        """,
        disks="""
            name  size  expect
            data  100G  storage-availability:up@dealbreaker storage-redundancy:2,in-box@want
        """,
        plans=[("storage", ["create LV vg0/kerub-data (100.0G, 2 copies) on h1 for disk data"])],
        robust=True,
    ),
    Scenario(  # a guard, the want above's other side: before the fix too a plain LV (no mirror was ever weighed)
        "in-box redundancy as a want on a disk whose sync costs more than the want: a plain LV",
        hosts="""
            name  memory  options
            h1    16G     pvs=3T,3T
        """,
        disks="""
            name  size  expect
            huge  2T    storage-availability:up@dealbreaker storage-redundancy:2,in-box@want
        """,
        plans=[("storage", ["create LV vg0/kerub-huge (2.0T) on h1 for disk huge"])],
        unsatisfied=["disk huge: storage-redundancy@want: 1 copy (h1), needs 2 on different devices"],
        robust=True,
    ),
    Scenario(
        "a VM starts where its disk's live storage is, not on an older copy taken for redundancy",
        hosts="""
            name  memory
            h1    16G
            h2    64G
        """,
        vms="""
            name  memory  disks  expect
            db    2G      data   availability:up@dealbreaker
        """,
        disks="""
            name  size  on
            data  10G   h1,h2*
        """,
        plans=[("start", ["start db on h1"])],
        robust=True,
    ),
    Scenario(
        "a VM whose host is down restarts on the copy taken for redundancy, saying how old its data is",
        hosts="""
            name  memory  status  options
            h1    16G     down    fenced=admin
            h2    16G     up      -
        """,
        vms="""
            name  memory  on  disks  expect
            db    2G      h1  data   availability:up@dealbreaker
        """,
        disks="""
            name  size  on
            data  10G   h1,h2*
        """,
        plans=[("restart", ["start db on h2 (disk data from its copy of 2025-05-31 12:00 UTC: newer writes are on h1)"])],
        robust=True,
    ),
    Scenario(
        "a failing PV in a VG of several: pvmove onto the healthy PVs, then vgreduce",
        hosts="""
            name  memory  options
            h1    16G     pvs=100G/20G,100G/30G failing=/dev/sdb
            h2    16G     -
        """,
        vms="""
            name  memory  on  disks  expect
            web   2G      h1  data   availability:up@dealbreaker
        """,
        disks="""
            name  size  on
            data  30G   h1
        """,
        plans=[("evacuate", ["move every extent (30.0G) off PV /dev/sdb of vg0 on h1",
                             "take PV /dev/sdb out of vg0 on h1"])],
        robust=True,
    ),
    Scenario(
        "a failing PV whose VG has no room for what it holds: the disk moves to another host",
        hosts="""
            name  memory  options
            h1    16G     pvs=100G/60G,100G/90G failing=/dev/sdb
            h2    16G     -
        """,
        disks="""
            name  size  on
            data  90G   h1
        """,
        plans=[("evacuate", ["let h1 reach h2 over SSH", "move disk data from h1 lvm:vg0 to h2 lvm:vg0"])],
        robust=True,
    ),
    Scenario(
        "no new disk on a VG with a failing PV, however much room it has",
        hosts="""
            name  memory  options
            h1    16G     pvs=500G,500G failing=/dev/sdb
            h2    16G     vg=100G
        """,
        disks="""
            name  size  expect
            new   50G   storage-availability:up@dealbreaker
        """,
        plans=[("storage", ["create LV vg0/kerub-new (50.0G) on h2 for disk new"])],
        robust=True,
    ),
]


def _mirror_cases() -> list:
    out = []
    for scenario in MIRROR_SCENARIOS:
        for label, rename, pack in VARIANTS if scenario.robust else VARIANTS[:1]:
            out.append(pytest.param(scenario, rename, pack, id=scenario.name + ("" if label == "as written"
                                                                                 else f" [{label}]")))
    return out


@pytest.mark.parametrize(("scenario", "rename", "pack"), _mirror_cases())
def test_mirror_scenario(scenario: Scenario, rename: bool, pack: bool | None) -> None:
    test_scenario(scenario, rename, pack)


# --- issue 18 item 5: thin provisioning under the admin's over-commit policy (helper `thin`) ------------
# Off (the default) a disk that fits no plain LV gets no plan, and the reason says so; on, it gets a thin
# LV in a pool made (or grown) on its VG, never past the over-commit ratio (10x unless the admin says).

THIN_ON = {"thin_overcommit": True}

THIN_SCENARIOS = [
    Scenario(
        "thin over-commit on: a 1 TB disk on a VG with 200 GB free gets a thin pool and a thin LV",
        hosts="""
            name  memory  options
            h1    16G     vg=200G
            h2    16G     vg=50G
        """,
        disks="""
            name  size  expect
            data  1T    storage-availability@dealbreaker
        """,
        policies=THIN_ON,
        plans=[("storage", ["create thin pool vg0/kerub--thin (102.4G) on h1",
                            "create thin LV vg0/kerub-data (1.0T) in pool kerub--thin on h1 for disk data, "
                            "the pool over-committed 10.0x (at most 10x)"])],
        robust=True,
    ),
    Scenario(
        "thin over-commit on: a VM whose disk fits no plain LV starts where a pool can hold it",
        hosts="""
            name  memory  options
            h1    16G     vg=50G
            h2    16G     vg=300G
        """,
        vms="""
            name  memory  disks  expect
            web   2G      data   availability:up@dealbreaker
        """,
        disks="""
            name  size
            data  2T
        """,
        policies=THIN_ON,
        plans=[("start", ["create thin pool vg0/kerub--thin (204.8G) on h2",
                                  "create thin LV vg0/kerub-data (2.0T) in pool kerub--thin on h2 for disk data, "
                                  "the pool over-committed 10.0x (at most 10x)",
                                  "start web on h2"])],
        robust=True,
    ),
    Scenario(  # a guard: thin is for what fits no plain LV (it fails before the fix only for the missing setting)
        "thin over-commit on: a plain LV still wins where one fits",
        hosts="""
            name  memory  options
            h1    16G     vg=2T
            h2    16G     vg=200G pool=kerub--thin:150G
        """,
        disks="""
            name  size  expect
            data  1T    storage-availability@dealbreaker
        """,
        policies=THIN_ON,
        plans=[("storage", ["create LV vg0/kerub-data (1.0T) on h1 for disk data"])],
        robust=True,
    ),
    Scenario(
        "thin: a pool within the ratio takes the new thin LV as it is",
        hosts="""
            name  memory  options
            h1    16G     vg=20G pool=kerub--thin:100G:30G
            h2    16G     vg=200G
        """,
        disks="""
            name  size  on               expect
            old   400G  h1:kerub--thin   -
            data  300G  -                storage-availability@dealbreaker
        """,
        policies=THIN_ON,
        plans=[("storage", ["create thin LV vg0/kerub-data (300.0G) in pool kerub--thin on h1 for disk data, "
                            "the pool over-committed 7.0x (at most 10x)"])],
        robust=True,
    ),
    Scenario(
        "thin: a pool the new disk would over-commit past the ratio is extended first",
        hosts="""
            name  memory  options
            h1    16G     vg=100G pool=kerub--thin:50G:10G
            h2    16G     vg=200G
        """,
        disks="""
            name  size  on               expect
            old   400G  h1:kerub--thin   -
            data  300G  -                storage-availability@dealbreaker
        """,
        policies=THIN_ON,
        plans=[("storage", ["extend thin pool vg0/kerub--thin to 70.0G on h1",
                            "create thin LV vg0/kerub-data (300.0G) in pool kerub--thin on h1 for disk data, "
                            "the pool over-committed 10.0x (at most 10x)"])],
        robust=True,
    ),
    Scenario(
        "thin: the admin's ratio caps over-commit (at 4x h1's pool cannot grow enough for 1.3 TB, a new pool on h2 can)",
        hosts="""
            name  memory  options
            h1    16G     vg=200G pool=kerub--thin:100G:20G
            h2    16G     vg=300G
        """,
        disks="""
            name  size  on               expect
            old   300G  h1:kerub--thin   -
            data  1T    -                storage-availability@dealbreaker
        """,
        policies={**THIN_ON, "thin_overcommit_ratio": 4.0},
        plans=[("storage", ["create thin pool vg0/kerub--thin (256.0G) on h2",
                            "create thin LV vg0/kerub-data (1.0T) in pool kerub--thin on h2 for disk data, "
                            "the pool over-committed 4.0x (at most 4x)"])],
        robust=True,
    ),
    Scenario(
        "thin: at the default 10x the same disk goes into h1's pool, grown (reusing beats a new pool)",
        hosts="""
            name  memory  options
            h1    16G     vg=200G pool=kerub--thin:100G:20G
            h2    16G     vg=300G
        """,
        disks="""
            name  size  on               expect
            old   300G  h1:kerub--thin   -
            data  1T    -                storage-availability@dealbreaker
        """,
        policies=THIN_ON,
        plans=[("storage", ["extend thin pool vg0/kerub--thin to 132.4G on h1",
                            "create thin LV vg0/kerub-data (1.0T) in pool kerub--thin on h1 for disk data, "
                            "the pool over-committed 10.0x (at most 10x)"])],
        robust=True,
    ),
    Scenario(
        "thin: a nearly full pool raises its problem; the thin LV goes in once it is extended",
        hosts="""
            name  memory  options
            h1    16G     vg=100G pool=kerub--thin:100G:85G
        """,
        disks="""
            name  size  on               expect
            old   200G  h1:kerub--thin   -
            data  300G  -                storage-availability@dealbreaker
        """,
        policies=THIN_ON,
        plans=[("storage", ["extend thin pool vg0/kerub--thin to 125.0G on h1",
                                 "create thin LV vg0/kerub-data (300.0G) in pool kerub--thin on h1 for disk data, "
                                 "the pool over-committed 4.0x (at most 10x)"])],
        robust=True,
    ),
    Scenario(
        "thin: a nearly full pool is extended, and the prediction keeps its data (no endless growth)",
        hosts="""
            name  memory  options
            h1    16G     vg=100G pool=kerub--thin:10G:9G
        """,
        disks="""
            name  size  on
            old   40G   h1:kerub--thin
        """,
        plans=[("storage", ["extend thin pool vg0/kerub--thin to 12.5G on h1"])],
        robust=True,
    ),
    Scenario(
        "thin: two new disks of one VM share one pool, made at once for both",
        hosts="""
            name  memory  options
            h1    16G     vg=200G
        """,
        vms="""
            name  memory  disks  expect
            db    2G      a,b    availability:up@dealbreaker
        """,
        disks="""
            name  size
            a     600G
            b     600G
        """,
        policies=THIN_ON,
        plans=[("start", ["create thin pool vg0/kerub--thin (120.0G) on h1",
                          "create thin LV vg0/kerub-a (600.0G) in pool kerub--thin on h1 for disk a, "
                          "the pool over-committed 5.0x (at most 10x)",
                          "create thin LV vg0/kerub-b (600.0G) in pool kerub--thin on h1 for disk b, "
                          "the pool over-committed 10.0x (at most 10x)",
                          "start db on h1"])],
        robust=True,
    ),
]


def _thin_cases() -> list:
    out = []
    for scenario in THIN_SCENARIOS:
        for label, rename, pack in VARIANTS if scenario.robust else VARIANTS[:1]:
            out.append(pytest.param(scenario, rename, pack, id=scenario.name + ("" if label == "as written"
                                                                                 else f" [{label}]")))
    return out


@pytest.mark.parametrize(("scenario", "rename", "pack"), _thin_cases())
def test_thin_scenario(scenario: Scenario, rename: bool, pack: bool | None) -> None:
    test_scenario(scenario, rename, pack)


THIN_OFF_DISK = Scenario(
    "thin over-commit off: a 1 TB disk on a VG with 200 GB free gets no plan, as before",
    hosts="""
        name  memory  options
        h1    16G     vg=200G
    """,
    vms="""
        name  memory  disks  expect
        web   2G      data   availability:up@dealbreaker
    """,
    disks="""
        name  size  expect
        data  1T    storage-availability@dealbreaker
    """,
    plans=[],
    robust=True,
)


@pytest.mark.parametrize(("rename", "pack"), [v[1:] for v in VARIANTS], ids=[v[0] for v in VARIANTS])
def test_thin_off_plans_nothing(rename: bool, pack: bool | None) -> None:
    assert THIN_OFF_DISK.robust
    test_scenario(THIN_OFF_DISK, rename, pack)


def test_thin_off_says_why() -> None:
    from kerub_tui.planner.explain import explain_text, no_host_reason

    state = from_tables(THIN_OFF_DISK.hosts, THIN_OFF_DISK.vms, THIN_OFF_DISK.disks).state()
    assert no_host_reason(state, "vm-web") == (
        "no host fits: h1: disk data: lvm:vg0: 200.0G free, needs 1.0T; thin over-commit is off (settings)")
    assert "disk data (1.0T) fits no plain LV on any host, nor a thin LV: h1: thin over-commit is off (settings)" \
        in explain_text(state, "vm-web")
    capped = from_tables(THIN_OFF_DISK.hosts, THIN_OFF_DISK.vms, THIN_OFF_DISK.disks).state(
        **THIN_ON, thin_overcommit_ratio=4.0)
    assert no_host_reason(capped, "vm-web") == (
        "no host fits: h1: disk data: lvm:vg0: 200.0G free, needs 1.0T; a thin pool for it would need 256.0G at "
        "4x over-commit (and its metadata), vg0 has 200.0G free")


def test_thin_on_vm_show_says_what_a_start_does_and_what_a_thin_lv_holds() -> None:
    from kerub_tui.planner.explain import explain_text

    fleet = from_tables(THIN_OFF_DISK.hosts, THIN_OFF_DISK.vms, THIN_OFF_DISK.disks)
    assert ("disk data (1.0T) fits no plain LV on any host: a start would create thin pool vg0/kerub--thin "
            "(102.4G) on h1; then create thin LV vg0/kerub-data (1.0T) in pool kerub--thin on h1 for disk data, "
            "the pool over-committed 10.0x (at most 10x)") in explain_text(fleet.state(**THIN_ON), "vm-web")
    placed = from_tables("""
        name  memory  options
        h1    16G     vg=100G pool=kerub--thin:100G:42G
    """, """
        name  memory  on  disks
        web   2G      h1  data
    """, """
        name  size  on
        data  1T    h1:kerub--thin
    """)
    assert ("disk data: thin LV vg0/kerub-data in pool vg0/kerub--thin on h1: the pool's 100.0G hold 1.0T of thin "
            "LVs (10.2x, at most 10x), 42% of it in use (extended from 80%)") in explain_text(
        placed.state(**THIN_ON), "vm-web")


# --- issue 16 item 1 (helper `share16`): remote disks in plans -------------------------------------------
# A VM may run on one host reading its disk from another over iSCSI (an LV) or NFS (a file), where that costs
# less than a copy (cost.SHARE_SETUP_SECONDS + cost.REMOTE_IO_SECONDS against the copy's size over the
# network), where no copy can be made, or where the disk's host can't run the VM; the step chosen says why.
# A live migration of a VM whose disk is shared moves no disk data. Hosts' `iscsi=DISK[:TID]` shares DISK's LV.

SHARE_SCENARIOS = [
    Scenario(
        "remote disk: the disk's host has too little memory and no host has room for a copy: read over iSCSI",
        hosts="""
            name  memory  options
            h1    4G      vg=400G
            h2    32G     vg=100G
        """,
        vms="""
            name  memory  disks  expect
            web   8G      root   availability:up@dealbreaker
        """,
        disks="""
            name  size  on
            root  300G  h1
        """,
        plans=[("start", ["share /dev/vg0/kerub-root over iSCSI as iqn.2024-01.org.kerub:disk-root (target 1) on h1: "
                          "for web on h2, where no copy can be made", "start web on h2"])],
        robust=True,
    ),
    Scenario(
        "remote disk: reading a 300G disk over iSCSI is cheaper than copying it to the host that runs the VM",
        hosts="""
            name  memory  options
            h1    4G      vg=400G
            h2    32G     vg=1T
        """,
        vms="""
            name  memory  disks  expect
            web   8G      root   availability:up@dealbreaker
        """,
        disks="""
            name  size  on
            root  300G  h1
        """,
        plans=[("start", ["share /dev/vg0/kerub-root over iSCSI as iqn.2024-01.org.kerub:disk-root (target 1) on h1: "
                          "for web on h2, cheaper than copying 300.0G (305 s vs *,* s)", "start web on h2"])],
        robust=True,
    ),
    Scenario(
        "remote disk: a 5G disk is copied, cheaper than reading it over iSCSI (the copy says so)",
        hosts="""
            name  memory  options
            h1    4G      vg=400G
            h2    32G     vg=1T
        """,
        vms="""
            name  memory  disks  expect
            web   8G      root   availability:up@dealbreaker
        """,
        disks="""
            name  size  on
            root  5G    h1
        """,
        plans=[("start", ["let h1 reach h2 over SSH",
                          "move disk root from h1 lvm:vg0 to h2 lvm:vg0: cheaper than reading it over iSCSI from h1 "
                          "(* s vs 305 s)", "start web on h2"])],
        robust=True,
    ),
    Scenario(
        "remote disk: the VM's expectation rules out the disk's host (cpu-architecture): read over iSCSI there",
        hosts="""
            name  memory  arch     options
            arm1  64G     aarch64  vg=1T
            x1    16G     x86_64   vg=1T
        """,
        vms="""
            name  memory  disks  expect
            web   4G      root   availability:up@dealbreaker cpu-architecture:x86_64@dealbreaker
        """,
        disks="""
            name  size  on
            root  200G  arm1
        """,
        plans=[("start", ["share /dev/vg0/kerub-root over iSCSI as iqn.2024-01.org.kerub:disk-root (target 1) on arm1: "
                          "for web on x1, cheaper than copying 200.0G (305 s vs *,* s)", "start web on x1"])],
        robust=True,
    ),
    Scenario(
        "remote disk: a second disk shared by the same host gets the next target id",
        hosts="""
            name  memory  options
            h1    4G      vg=900G iscsi=old:1
            h2    32G     vg=100G
        """,
        vms="""
            name  memory  on  disks  expect
            app   2G      h2  old    -
            web   8G      -   root   availability:up@dealbreaker
        """,
        disks="""
            name  size  on
            old   100G  h1
            root  300G  h1
        """,
        plans=[("start", ["share /dev/vg0/kerub-root over iSCSI as iqn.2024-01.org.kerub:disk-root (target 2) on h1: "
                          "for web on h2, where no copy can be made", "start web on h2"])],
        robust=True,
    ),
    Scenario(
        "remote disk: evacuating the host that runs a VM reading its disk over iSCSI moves no disk data",
        hosts="""
            name  memory  options
            h1    4G      vg=400G iscsi=root
            h2    32G     recycling
            h3    32G     vg=100G
        """,
        vms="""
            name  memory  on  disks  expect
            web   8G      h2  root   availability:up@dealbreaker
        """,
        disks="""
            name  size  on
            root  300G  h1
        """,
        plans=[("evacuate", ["live-migrate web from h2 to h3"])],
        robust=True,
    ),
    Scenario(
        "remote disk: a VM moved for a want reads its 300G disk from where it was rather than copy it",
        hosts="""
            name  memory  flags          options
            h1    16G     sse4_2         vg=400G
            h2    16G     sse4_2,avx2    vg=1T
        """,
        vms="""
            name  memory  on  disks  expect
            web   2G      h1  root   availability:up@dealbreaker cpu-flags:avx2@want
        """,
        disks="""
            name  size  on
            root  300G  h1
        """,
        plans=[("placement", ["share /dev/vg0/kerub-root over iSCSI as iqn.2024-01.org.kerub:disk-root (target 1) on "
                              "h1: for web on h2, cheaper than copying 300.0G (305 s vs *,* s)",
                              "live-migrate web from h1 to h2"])],
        robust=True,
    ),
]


def _share_cases() -> list:
    out = []
    for scenario in SHARE_SCENARIOS:
        for label, rename, pack in VARIANTS if scenario.robust else VARIANTS[:1]:
            out.append(pytest.param(scenario, rename, pack, id=scenario.name + ("" if label == "as written"
                                                                                 else f" [{label}]")))
    return out


@pytest.mark.parametrize(("scenario", "rename", "pack"), _share_cases())
def test_share_scenario(scenario: Scenario, rename: bool, pack: bool | None) -> None:
    test_scenario(scenario, rename, pack)


# --- issue 16 item 2 (helper `ha16`): high availability — fence the lost host, then restart elsewhere ---------
# Hosts' `fenced=admin|ipmi|no-guest` marks a host that is not up as known to run no guest; `ipmi=ADDRESS` gives
# it a BMC the restart plan powers off first. A VM with `ha` is never started elsewhere while its lost host is
# not fenced, nor is any VM writing a disk such a VM writes.

HA_SCENARIOS = [
    Scenario(
        "ha: the lost host has IPMI: the restart plan powers it off first, then starts the VM elsewhere",
        hosts="""
            name  memory  status  options
            h1    16G     down    ipmi=10.0.0.9
            h2    16G     up      -
        """,
        vms="""
            name  memory  on  expect
            web   2G      h1  availability:up@dealbreaker ha@dealbreaker
        """,
        plans=[("restart", ["fence h1 (down): power it off through IPMI, so none of its guests still runs",
                            "start web on h2"])],
        robust=True,
    ),
    Scenario(
        "ha: a lost host without IPMI: nothing restarts until it is fenced (the admin confirms it off)",
        hosts="""
            name  memory  status       options
            h1    16G     unreachable  -
            h2    16G     up           -
        """,
        vms="""
            name  memory  on  expect
            web   2G      h1  availability:up@dealbreaker ha@dealbreaker
        """,
        plans=[],
    ),
    Scenario(
        "ha: the admin confirmed the lost host off: the VM restarts elsewhere with no fencing step",
        hosts="""
            name  memory  status  options
            h1    16G     down    ipmi=10.0.0.9 fenced=admin
            h2    16G     up      -
        """,
        vms="""
            name  memory  on  expect
            web   2G      h1  availability:up@dealbreaker ha@dealbreaker
        """,
        plans=[("restart", ["start web on h2"])],
        robust=True,
    ),
    Scenario(
        "ha: a VM whose disk is shared over iSCSI from a host that is up restarts reading the same share",
        hosts="""
            name  memory  status  options
            h1    16G     down    ipmi=10.0.0.9
            h2    16G     up      -
            h3    2G      up      vg=400G iscsi=root
        """,
        vms="""
            name  memory  on  disks  expect
            web   4G      h1  root   availability:up@dealbreaker ha@dealbreaker
        """,
        disks="""
            name  size  on
            root  300G  h3
        """,
        plans=[("restart", ["fence h1 (down): power it off through IPMI, so none of its guests still runs",
                            "start web on h2"])],  # the target lets any initiator in: no ACL to change
    ),
    Scenario(
        "ha: a VM whose only storage was on the lost host has lost it: nothing restarts it, even fenced",
        hosts="""
            name  memory  status  options
            h1    16G     down    fenced=admin
            h2    16G     up      -
        """,
        vms="""
            name  memory  on  disks  expect
            db    2G      h1  data   availability:up@dealbreaker ha@dealbreaker
        """,
        disks="""
            name  size  on
            data  10G   h1
        """,
        plans=[],
    ),
    Scenario(
        "ha: fencing one lost host brings back every VM with ha it ran; a VM without ha waits for the admin",
        hosts="""
            name  memory  status  options
            h1    16G     down    ipmi=10.0.0.9
            h2    16G     up      -
        """,
        vms="""
            name  memory  on  expect
            a     2G      h1  availability:up@dealbreaker ha@dealbreaker
            b     2G      h1  availability:up@dealbreaker ha@want
        """,
        plans=[("restart", ["fence h1 (down): power it off through IPMI, so none of its guests still runs",
                            "start ? on h2", "start ? on h2"])],
    ),
]


HA_SCENARIOS += [
    Scenario(
        "ha: a failed host, fenced through its BMC, is not woken to make room for another VM",
        hosts="""
            name  memory  status  options
            h1    64G     down    ipmi=10.0.0.9 fenced=ipmi
            h2    4G      up      -
        """,
        vms="""
            name  memory  on  expect
            big   16G     -   availability:up@dealbreaker
        """,
        plans=[],
    ),
    Scenario(
        "ha: a host powered down by power saving (no VM on it, not fenced) is still woken for a VM",
        hosts="""
            name  memory  status  options
            h1    64G     down    ipmi=10.0.0.9
            h2    4G      up      -
        """,
        vms="""
            name  memory  on  expect
            big   16G     -   availability:up@dealbreaker
        """,
        plans=[("start", ["wake h1 (from h2: *)", "start big on h1"])],
    ),
]


def test_ha_no_plan_powers_hosts_off_when_most_of_the_fleet_is_away_at_once() -> None:
    """The controller's own network may be what failed: with more hosts away than up there is no quorum, and
    no plan powers any of them off; the admin still can (host fence), and says so."""
    from kerub_tui.planner.ha import restart_wait
    from kerub_tui.planner.steps import FenceHost

    fleet = from_tables(hosts="""
        name  memory  status  options
        h1    16G     down    ipmi=10.0.0.9
        h2    16G     down    ipmi=10.0.0.8
        h3    16G     up      -
    """, vms="""
        name  memory  on  expect
        web   2G      h1  availability:up@dealbreaker ha@dealbreaker
    """)
    state = fleet.state()
    assert plan_all(state) == []
    assert FenceHost("host-h1").blocked(state) == (
        "2 hosts are away and 1 up: the controller itself may be cut off, so no plan powers h1 off "
        "(kerub-tui host fence h1 does, if you are sure)")
    assert restart_wait(state, "vm-web") == ("restart-waits-fence", (
        "web may still run on h1 (down): it restarts elsewhere once h1 is fenced (2 hosts are away and 1 up: the "
        "controller itself may be cut off, so no plan powers h1 off (kerub-tui host fence h1 does, if you are "
        "sure); or confirm it is off: kerub-tui host fence h1 --confirm-off; or bring it back)"))


def test_ha_a_host_not_seen_yet_is_never_fenced() -> None:
    from kerub_tui.planner.steps import FenceHost

    state = from_tables(hosts="""
        name  memory  status      options
        h1    16G     connecting  ipmi=10.0.0.9
        h2    16G     down        ipmi=10.0.0.8 fenced=admin
        h3    16G     down        -
    """).state()
    assert FenceHost("host-h1").blocked(state) == "h1 is connecting: only a host that went away is fenced"
    assert FenceHost("host-h2").blocked(state) == "h2 is already fenced"
    assert FenceHost("host-h3").blocked(state) == ("h3 has no IPMI to power it off: confirm it is off "
                                                   "(kerub-tui host fence h3 --confirm-off)")


def _ha_cases() -> list:
    out = []
    for scenario in HA_SCENARIOS:
        for label, rename, pack in VARIANTS if scenario.robust else VARIANTS[:1]:
            out.append(pytest.param(scenario, rename, pack, id=scenario.name + ("" if label == "as written"
                                                                                 else f" [{label}]")))
    return out


@pytest.mark.parametrize(("scenario", "rename", "pack"), _ha_cases())
def test_ha_scenario(scenario: Scenario, rename: bool, pack: bool | None) -> None:
    test_scenario(scenario, rename, pack)


def _ha_state(fenced: str = "", copy_age_days: float = 1.0, **ha: object):
    """db (ha) ran on h1, now down; its disk's live storage was on h1, a copy taken for redundancy on h2."""
    import datetime as dt

    from kerub_tui.core.models import LvmAllocation, VirtualStorageDeviceDynamic

    from .fleet import NOW

    fleet = from_tables(hosts=f"""
        name  memory  status  options
        h1    16G     down    {f"fenced={fenced}" if fenced else "-"}
        h2    16G     up      -
    """, vms="""
        name  memory  on  disks  expect
        db    2G      h1  data   availability:up@dealbreaker ha@dealbreaker
    """, disks="""
        name  size  on
        data  10G   h1,h2*
    """)
    copied = NOW - dt.timedelta(days=copy_age_days)
    fleet.put(VirtualStorageDeviceDynamic(id="disk-data", allocations=[
        LvmAllocation(host_id="host-h1", capability_id="lvm:vg0", vg="vg0", lv="kerub-data"),
        LvmAllocation(host_id="host-h2", capability_id="lvm:vg0", vg="vg0", lv="kerub-data", copied_at=copied)]))
    if ha:
        fleet.settings = fleet.settings.evolve(ha={**fleet.settings.ha.model_dump(), **ha})
    return fleet.state()


def test_ha_two_copies_of_one_vm_never_write_the_same_disk() -> None:
    """Try to start a VM whose host went away, unfenced, on the copy of its disk elsewhere: by a plan the
    planner proposes, by a step built by hand, by replaying it (what an approval and the executor's prepare
    do), and through a second VM attached to the same disk. Each is refused while the lost host may still
    run it."""
    from kerub_tui.core.models import DiskLink
    from kerub_tui.planner.search import replay
    from kerub_tui.planner.steps import StartVm

    state = _ha_state()
    assert not [s for d in plan_all(state) for s in d.steps if isinstance(s, StartVm)]
    why = StartVm("vm-db", "host-h2").blocked(state)
    assert why is not None and why.startswith("db may still run on h1 (down): db is not started elsewhere until h1 "
                                              "is fenced"), why
    assert replay(state, [StartVm("vm-db", "host-h2")])[1].endswith(": " + why)
    # a second VM attached to the same disk: it would write what db may still write on h1
    twin = state.vms["vm-db"].evolve(id="vm-twin", name="twin", expectations=[])
    docs = [*state.hosts.values(), *state.host_dyn.values(), *state.vms.values(), twin, *state.vm_dyn.values(),
            *state.disks.values(), *state.disk_dyn.values()]
    from kerub_tui.planner.state import OperationalState

    both = OperationalState.from_documents(docs, now=state.now, settings=state.settings)
    assert twin.disks == [DiskLink(disk_id="disk-data")]
    refused = StartVm("vm-twin", "host-h2").blocked(both)
    assert refused is not None and refused.startswith("db, which writes a disk of twin, may still run on h1"), refused
    # once h1 is fenced, both are free to go (the restart plan is proposed, asking consent for the copy)
    fenced = _ha_state(fenced="admin")
    assert StartVm("vm-db", "host-h2").blocked(fenced) is None


def test_ha_restart_from_a_copy_asks_consent_with_its_age_unless_the_policy_allows_it() -> None:
    drafts = plan_all(_ha_state(fenced="admin"))
    assert [(d.kind, [s.describe(st) for s, st in zip(d.steps, d.states)]) for d in drafts] == [
        ("restart", ["start db on h2 (disk data from its copy of 2025-05-31 12:00 UTC: newer writes are on h1)"])]
    plan = drafts[0].to_plan()
    assert plan.consent == ["db starts on h2 from the copy of disk data taken 2025-05-31 12:00 UTC (1d old, the HA "
                            "policy asks for every copy): writes since then are on h1, and are lost"]
    # a copy younger than the policy's limit: no consent asked
    assert plan_all(_ha_state(fenced="admin", copy_age_days=0.01, copy_max_age_minutes=60))[0].to_plan().consent == []
    # older than the limit: asked, saying the limit
    older = plan_all(_ha_state(fenced="admin", copy_age_days=0.5, copy_max_age_minutes=60))[0].to_plan().consent
    assert older and "(12h old, older than the 60 min the HA policy allows)" in older[0], older
    # the policy allows any copy
    assert plan_all(_ha_state(fenced="admin", restart_from_stale_copies=True))[0].to_plan().consent == []


def test_ha_restart_policy_never_auto_approves_consent_or_deletions() -> None:
    from kerub_tui.core.models import AutoApprovePolicy, Plan, PlannedStep, Settings
    from kerub_tui.planner.replanner import not_covered

    restart = Settings(auto_approve=[AutoApprovePolicy(plan_kind="restart", deletes=True)])
    plan = plan_all(_ha_state(fenced="admin"))[0].to_plan()
    assert not_covered(restart, plan) == f"it needs the admin's consent: {plan.consent[0]}"
    assert not_covered(restart, plan.evolve(consent=[])) is None
    # a restart plan with a step deleting data: never, even where the policy says it covers deletions
    deleting = Plan(plan_kind="restart", steps=[PlannedStep(
        type="remove-lv", description="remove", params={"disk": "disk-data", "host": "host-h1",
                                                        "capability": "lvm:vg0", "vg": "vg0", "lv": "kerub-data"})])
    assert not_covered(restart, deleting) == "it deletes data, and a restart plan is never auto-approved with a deletion"


def test_ha_says_what_a_lost_vm_waits_for() -> None:
    from kerub_tui.planner.ha import restart_wait

    waiting = restart_wait(_ha_state(), "vm-db")
    assert waiting == ("restart-waits-fence", "db may still run on h1 (down): it restarts elsewhere once h1 is fenced "
                       "(confirm it is off: kerub-tui host fence h1 --confirm-off; or bring it back)")
    assert restart_wait(_ha_state(fenced="admin"), "vm-db") is None
    lost = from_tables(hosts="""
        name  memory  status  options
        h1    16G     down    fenced=admin
        h2    16G     up      -
    """, vms="""
        name  memory  on  disks  expect
        db    2G      h1  data   availability:up@dealbreaker ha@dealbreaker
    """, disks="""
        name  size  on
        data  10G   h1
    """).state()
    assert restart_wait(lost, "vm-db") == (
        "vm-storage-lost", "db lost its storage with h1: disk data has no copy on a host that is up, so nothing "
                           "restarts it")


# --- issue 16 (helper `share16b`): a VM reading its disk over NFS migrates without moving disk data ----------
# Hosts' `nfs=DISK@READER` exports DISK's directory (/var/lib/kerub, with ganesha) to READER alone; disks'
# `file` column (yes) puts the disk in a file there. ganesha keeps one export per directory: it is widened for
# the moving VM's new host first (both read while it migrates), and the old host is taken out after (a tidy).

NFS_MOVE_SCENARIOS = [
    Scenario(
        "nfs: evacuating the host of a VM that reads its disk over NFS hands the export on, no disk data moves",
        hosts="""
            name  memory  options
            h1    4G      vg=400G nfs=root@h2
            h2    32G     recycling
            h3    32G     vg=100G
        """,
        vms="""
            name  memory  on  disks  expect
            web   8G      h2  root   availability:up@dealbreaker
        """,
        disks="""
            name  size  on  file
            root  300G  h1  yes
        """,
        plans=[("evacuate+tidy", ["export /var/lib/kerub over NFS from h1 to 127.0.0.*: for web on h3, which reads "
                                  "the same share", "live-migrate web from h2 to h3",
                                  "stop exporting /var/lib/kerub from h1 to 127.0.0.*"])],
    ),
    Scenario(
        "nfs: a VM starts where its disk's directory is exported already: no new share, no copy",
        hosts="""
            name  memory  options
            h1    4G      vg=400G nfs=root@h3
            h2    32G     -
            h3    32G     -
        """,
        vms="""
            name  memory  disks  expect
            web   8G      root   availability:up@dealbreaker
        """,
        disks="""
            name  size  on  file
            root  300G  h1  yes
        """,
        plans=[("start", ["start web on h3"])],
    ),
]


@pytest.mark.parametrize("scenario", NFS_MOVE_SCENARIOS, ids=lambda s: s.name)
def test_nfs_move_scenario(scenario: Scenario) -> None:
    test_scenario(scenario, False, None)
