"""Thin provisioning on the command line (issue 18 item 5): a VM whose disk fits no plain LV says why it
cannot be placed while thin over-commit is off, and once the admin allows it the proposal creates a thin
pool and a thin LV, explained in `vm show` and `plan show`. Real processes on a data dir holding a small
fleet's documents."""

from __future__ import annotations

import json
import re

from kerub_tui.controller import Controller
from kerub_tui.core.models import Settings

from .planner.fleet import from_tables


def test_a_disk_bigger_than_the_free_space_waits_for_thin_over_commit(cli_ok, tmp_path):
    store = Controller(tmp_path / "data").open_store()
    store.put_many(from_tables(hosts="""
        name memory options
        h1   16G    vg=200G
    """, vms="""
        name memory disks expect
        web  2G     data  availability:up@dealbreaker
    """, disks="""
        name size
        data 1T
    """).documents())
    store.close()
    [listed] = json.loads(cli_ok("vm", "list", "--json"))
    assert listed["status"] == "unplaced"
    assert listed["status_reason"] == ("no host fits: h1: disk data: lvm:vg0: 200.0G free, needs 1.0T; "
                                       "thin over-commit is off (settings)")
    assert "disk data (1.0T) fits no plain LV on any host, nor a thin LV: h1: thin over-commit is off" \
        in cli_ok("vm", "show", "web")

    store = Controller(tmp_path / "data").open_store()  # what the console's :settings saves
    store.put(Settings().evolve(optimisation={"thin_overcommit": True}))
    store.close()
    shown = cli_ok("vm", "show", "web")
    assert "a start would create thin pool vg0/kerub--thin (102.4G) on h1; then create thin LV" in shown
    cli_ok("vm", "stop", "web")  # a change, so this one-shot command plans: the start asked again
    out = cli_ok("vm", "start", "web")
    plan = re.search(r"proposal ([0-9a-f]{8}) \(start, 3 steps\)", out)
    assert plan, out
    detail = cli_ok("plan", "show", plan[1])
    assert "create thin pool vg0/kerub--thin (102.4G) on h1" in detail
    assert ("create thin LV vg0/kerub-data (1.0T) in pool kerub--thin on h1 for disk data, the pool "
            "over-committed 10.0x (at most 10x)") in detail
    assert "lvcreate --yes --type thin --name kerub-data --virtualsize 1099511627776b --thinpool kerub--thin vg0" \
        in detail
