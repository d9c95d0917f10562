"""Scenarios as readable tables: hosts, VMs, disks, expectations -> the shape of the plan.

Each scenario lists the plans the planner proposes (kind, then one line per step, as the admin reads
them) and what it reports as not met. Step lines are matched with shell-style wildcards.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import pytest

from kerub_tui.planner.planning import plan_all

from .fleet import from_tables


@dataclass
class Scenario:
    name: str
    hosts: str
    vms: str = ""
    disks: str = ""
    policies: dict = field(default_factory=dict)
    plans: list[tuple[str, list[str]]] = field(default_factory=list)  # (kind, step lines)
    unsatisfied: list[str] = field(default_factory=list)


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
        plans=[("repair", ["start web on h2"])],
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
        plans=[("repair", ["start web on h2"])],
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
        plans=[("repair", ["start a on h?", "start b on h?"])],
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
        plans=[("repair", ["start web on x1"])],
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
        plans=[("repair", ["create LV vg0/kerub-data (20.0G) on h1 for disk data", "start db on h1"])],
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
        plans=[("repair", ["let h1 reach h? over SSH", "copy disk data from h1 lvm:vg0 to h? lvm:vg0"])],
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
        plans=[("repair", ["start web on h1"])],
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
        plans=[("repair", ["live-migrate web from h1 to h2"])],
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
        plans=[("repair", ["start db on h1", "start app on h1"])],
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
        plans=[("repair", ["resume nap on h1", "stop old on h1 (forced after 120 s)"])],
    ),
    Scenario(
        "a lost VM restarts elsewhere when its disk-less",
        hosts="""
            name  memory  status
            h1    16G     down
            h2    16G     up
        """,
        vms="""
            name  memory  on  expect
            web   2G      h1  availability:up@dealbreaker
        """,
        plans=[("repair", ["start web on h2"])],
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
        plans=[("repair", ["let h1 reach h2 over SSH", "move disk data from h1 lvm:vg0 to h2 lvm:vg0"])],
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
        plans=[("repair", ["live-migrate a from h1 to h2"])],
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
            h1    32G     dedicated
            h2    32G     dedicated
        """,
        vms="""
            name  memory  on  expect
            web   8G      h1  availability:up@dealbreaker
            db    2G      h2  availability:up@dealbreaker
        """,
        policies={"power_saving": True},
        plans=[("power-saving", ["live-migrate db from h2 to h1", "power down h2"])],
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
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_scenario(scenario: Scenario) -> None:
    fleet = from_tables(scenario.hosts, scenario.vms, scenario.disks)
    state = fleet.state(**scenario.policies)
    drafts = plan_all(state)
    got = [(d.kind, [s.describe(st) for s, st in zip(d.steps, d.states)]) for d in drafts]
    assert len(got) == len(scenario.plans), got
    for (kind, lines), (want_kind, patterns) in zip(got, scenario.plans):
        assert kind == want_kind, got
        assert len(lines) == len(patterns), got
        for line, pattern in zip(lines, patterns):
            assert fnmatch.fnmatchcase(line, pattern), (line, pattern)
    unsatisfied = [u for d in drafts for u in d.unsatisfied]
    assert unsatisfied == scenario.unsatisfied
    for draft in drafts:
        assert draft.final.vms == state.vms  # nothing static changes
        assert draft.to_plan().steps  # storable
