"""A VM's status on the command line says what is known (issue 13 item 4), and a rejected plan is asked
for again with `vm start` (item 6): real processes on a data dir holding a small fleet's documents; and
starting, migrating and stopping through a running controller of simulated hosts, each held where it lasts."""

from __future__ import annotations

import asyncio
import json
import os
import re

import pytest

from kerub_tui.cli import run_in_controller
from kerub_tui.control import ControlServer, run_cli_remote
from kerub_tui.controller import Controller
from kerub_tui.core.models import Plan
from kerub_tui.sim import Timing
from tests import cliproc
from tests.sim.held import HeldOperations, fleet_of_two, stored_fleet, through_passing_states

from .planner.fleet import from_tables


def fleet(tmp_path, hosts: str, vms: str) -> None:
    store = Controller(tmp_path / "data").open_store()
    store.put_many(from_tables(hosts=hosts, vms=vms).documents())
    store.close()


def test_vms_of_a_host_that_is_down_are_lost_and_it_runs_none(cli_ok, tmp_path):
    fleet(tmp_path, hosts="""
        name memory status
        h1   16G    down
        h2   4G     up
    """, vms="""
        name memory on expect
        web  2G     h1 availability:up@want
        big  8G     -  availability:up@dealbreaker
    """)
    listed = {v["name"]: v for v in json.loads(cli_ok("vm", "list", "--json"))}
    assert listed["web"]["status"] == "lost" and listed["web"]["host"] == "h1"
    assert "its host h1 is down" in listed["web"]["status_reason"]
    # big fits nowhere that is up: it cannot be placed, and the reason is given
    assert listed["big"]["status"] == "unplaced"
    assert listed["big"]["status_reason"].startswith("no host fits: h1: is down; h2: ")
    table = cli_ok("vm", "list")
    assert re.search(r"^web\s+lost\s+h1\s", table, re.M), table
    assert re.search(r"^big\s+can't place\s+-\s", table, re.M), table
    assert "status lost on h1: its host h1 is down" in cli_ok("vm", "show", "web")
    hosts = cli_ok("host", "list")
    assert re.search(r"^h1\s.*\s0 \(1 lost\)\s", hosts, re.M), hosts
    assert "lost web" in cli_ok("host", "show", "h1")


def test_a_rejected_start_is_asked_for_again_with_vm_start(cli_ok, tmp_path):
    fleet(tmp_path, hosts="""
        name memory
        h1   16G
    """, vms="""
        name memory expect
        app  2G     -
    """)
    out = cli_ok("vm", "start", "app")
    plan = re.search(r"proposal ([0-9a-f]{8}) \(start, 1 steps\)", out)
    assert plan, out
    [listed] = json.loads(cli_ok("vm", "list", "--json"))
    assert listed["status"] == "waiting" and plan[1] in listed["status_reason"]
    cli_ok("plan", "reject", plan[1])
    shown = cli_ok("vm", "show", "app")
    assert f"plan {plan[1]} for it was rejected" in shown and "vm start" in shown
    again = cli_ok("vm", "start", "app")
    assert f"asked again for plan {plan[1]}" in again
    proposal = re.search(r"proposal ([0-9a-f]{8}) \(start, 1 steps\)", again)
    assert proposal and proposal[1] != plan[1], again
    # Any rejected plan, by its id: plan ask-again.
    cli_ok("plan", "reject", proposal[1])
    asked = cli_ok("plan", "ask-again", proposal[1])
    assert f"plan {proposal[1]}: asked again" in asked
    third = re.search(r"proposal ([0-9a-f]{8}) \(start, 1 steps\)", asked)
    assert third and third[1] not in (plan[1], proposal[1]), asked


def test_plan_ask_again_refuses_a_plan_that_was_not_rejected_in_one_line(cli_ok, tmp_path):
    fleet(tmp_path, hosts="""
        name memory
        h1   16G
    """, vms="""
        name memory expect
        app  2G     -
    """)
    plan = re.search(r"proposal ([0-9a-f]{8})", cli_ok("vm", "start", "app"))
    assert plan
    env = dict(os.environ, KERUB_TUI_DATA=str(tmp_path / "data"), KERUB_TUI_CONFIG=str(tmp_path / "config"))
    result = cliproc.kerub(["plan", "ask-again", plan[1]], env=env, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"kerub-tui: plan {plan[1]} is proposed, not rejected: nothing to ask again for"


# --- through a running controller: the command line as it runs while one does (its control socket) -----


@pytest.fixture
async def served(tmp_path, monkeypatch):
    """A controller of two simulated hosts serving its control socket, its libvirt operations held on
    demand; and ``kerub(*argv)``: a command line run in it, as `kerub-tui ARGV` does while it runs."""
    controller = Controller(tmp_path / "data", sim_timing=Timing(scale=0))
    await controller.start()
    server = ControlServer(controller, run_in_controller)
    await server.start()

    async def kerub(*argv: str) -> str:
        code, out, err = await asyncio.to_thread(run_cli_remote, controller.data_dir, list(argv))
        assert code == 0, err
        return out

    try:
        await fleet_of_two(controller)
        yield controller, HeldOperations(controller, monkeypatch), kerub
    finally:
        await server.stop()
        await controller.stop()


async def test_vm_list_and_show_say_starting_migrating_and_stopping(served):
    controller, holds, kerub = served
    seen = []

    async def look(status: str, host: str, plan: Plan) -> None:
        table = await kerub("vm", "list")
        assert re.search(rf"^web\s+{status}\s+{host}\s", table, re.M), table
        [listed] = json.loads(await kerub("vm", "list", "--json"))
        assert listed["status"] == status and listed["host"] == (None if host == "-" else host), listed
        shown = await kerub("vm", "show", "web")
        where = "" if host == "-" else f" on {host}"
        doing = {"starting": f": plan {plan.id[:8]} starts it", "stopping": f": plan {plan.id[:8]} stops it"}
        assert f"  status {status}{where}{doing.get(status, '')}\n" in shown, shown
        seen.append(status)

    await through_passing_states(controller, holds, look)
    assert seen == ["starting", "migrating", "stopping"]


async def test_vms_on_hosts_a_new_controller_is_still_connecting_are_said_as_last_seen(tmp_path):
    """Issue 13 item 10: a controller started on a data dir whose hosts were last seen up is connecting
    them (here: for an hour); until they answer, their VMs are not said to be up."""
    await stored_fleet(tmp_path / "data")
    controller = Controller(tmp_path / "data", sim_timing=Timing(scale=1.0, connect=3600.0))
    await controller.start()
    server = ControlServer(controller, run_in_controller)
    await server.start()
    try:
        def kerub(*argv: str) -> str:
            code, out, err = run_cli_remote(controller.data_dir, list(argv))
            assert code == 0, err
            return out

        assert re.search(r"^kvm01\s+\S+\s+connecting\s", await asyncio.to_thread(kerub, "host", "list"), re.M)
        table = await asyncio.to_thread(kerub, "vm", "list")
        assert re.search(r"^web\s+up\?\s+kvm01\s", table, re.M), table
        [listed] = json.loads(await asyncio.to_thread(kerub, "vm", "list", "--json"))
        assert (listed["status"], listed["host"]) == ("up?", "kvm01")
        assert re.fullmatch(r"its host kvm01 is connecting: last seen up \d+s ago", listed["status_reason"])
        shown = await asyncio.to_thread(kerub, "vm", "show", "web")
        assert re.search(r"^  status up\? on kvm01: its host kvm01 is connecting: last seen up \d+s ago$", shown,
                         re.M), shown
    finally:
        await server.stop()
        await controller.stop()
