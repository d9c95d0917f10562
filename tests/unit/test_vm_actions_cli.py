"""`kerub-tui vm reboot|reset|poweroff [--force]|pause|resume|send-keys`: in this process on the data dir,
and inside a running controller through its control socket (the command line and an attached console),
read-only refusing each. The hosts are simulated (the stand-in here; the lab test runs them on libvirt)."""

from __future__ import annotations

import asyncio
import json

import pytest

from kerub_tui.cli import run_in_controller
from kerub_tui.control import ControlServer, RemoteController, run_cli_remote
from kerub_tui.controller import ActionError, Controller
from kerub_tui.core.models import Plan, PlanStatus, VirtualMachine, VirtualMachineDynamic, VmStatus
from kerub_tui.sim import Timing
from tests.sim._support import CEILING, until

from ._cli import run

GIB = 1 << 30
ACTIONS = [["reboot", "web"], ["reset", "web"], ["poweroff", "web"], ["poweroff", "--force", "web"],
           ["pause", "web"], ["resume", "web"], ["send-keys", "web", "ctrl+alt+del"]]


def one_line(err: str) -> str:
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.mark.parametrize("argv", ACTIONS)
def test_each_action_is_refused_read_only_in_one_line(data_dir, capsys, argv):
    assert run("vm", "create", "web", "--memory", "256M", "--expect", "availability:up", capsys=capsys)[0] == 0
    code, out, err = run("--readonly", "vm", *argv, capsys=capsys)
    assert code != 0 and out == ""
    assert "read-only mode" in one_line(err)
    code, out, _ = run("vm", "show", "web", "--json", capsys=capsys)
    assert [e["up"] for e in json.loads(out)["vm"]["expectations"]] == [True]


@pytest.mark.parametrize("name", ["web;reboot", "$(id)", "../x", "-", "x" * 300])
def test_hostile_names_are_one_line_and_nothing_happens(data_dir, capsys, name):
    for argv in (["reboot", "--", name], ["poweroff", "--force", "--", name], ["send-keys", "--", name, "enter"]):
        code, out, err = run("vm", *argv, capsys=capsys)
        assert code != 0 and out == ""
        assert "no vm named" in one_line(err)


@pytest.mark.parametrize(("keys", "message"), [
    ("ctrl+alt+del;reboot", "unknown key 'del;reboot'"),
    ("ctrl++", "empty key name"),
    ("ctrl+\x1b[2J", "unknown key"),
])
def test_bad_keys_are_one_line(data_dir, capsys, keys, message):
    run("vm", "create", "web", "--memory", "256M", capsys=capsys)
    code, _out, err = run("vm", "send-keys", "web", keys, capsys=capsys)
    assert code != 0 and message in one_line(err) and "\x1b" not in err


def test_poweroff_of_a_vm_that_is_off_expects_it_down(data_dir, capsys):
    run("vm", "create", "web", "--memory", "256M", "--expect", "availability:up@want", capsys=capsys)
    code, out, err = run("vm", "poweroff", "--force", "web", capsys=capsys)
    assert code == 0, err
    assert out.splitlines()[0] == "web is not running; expectation up -> down"
    code, out, _ = run("vm", "list", capsys=capsys)
    assert "availability:down@want" in out


def test_several_vms_each_said_and_the_refused_ones_fail_the_command(data_dir, capsys):
    run("vm", "create", "a", "--memory", "256M", capsys=capsys)
    code, out, err = run("vm", "poweroff", "a", "nosuch", capsys=capsys)
    assert code != 0
    assert out.splitlines()[0] == "a is not running; expectation none -> down"
    assert "1 of 2 refused: no vm named 'nosuch'" in one_line(err)


def test_every_action_has_help(capsys):
    for action in ("reboot", "reset", "poweroff", "pause", "resume", "send-keys"):
        code, out, _err = run("vm", action, "--help", capsys=capsys)
        assert code == 0 and "usage:" in out and "the VM" in out, action
    assert "pull the plug" in run("vm", "poweroff", "--help", capsys=capsys)[1]
    assert "ctrl+alt+del" in run("vm", "--help", capsys=capsys)[1]


# --- through a running controller's control socket ---------------------------------------------------


@pytest.fixture
async def served(tmp_path):
    controller = Controller(tmp_path / "data", sim_timing=Timing(scale=0))
    await controller.start()
    server = ControlServer(controller, run_in_controller)
    await server.start()
    host = await controller.add_simulated_host("kvm01", "mini")
    await controller.hosts.wait_up(host.id, timeout=CEILING)
    vm = await controller.create_vm("web", memory_min=GIB, expectations=["availability:up@dealbreaker"])
    plan = await until(lambda: next((p for p in controller.db.list(Plan) if p.status is PlanStatus.proposed), None),
                       "a plan to start web")
    await controller.decide_plan(plan.id, True)
    await until(lambda: status(controller, vm) is VmStatus.up, "web up")
    yield controller, vm
    await server.stop()
    await controller.stop()


def status(c: Controller, vm: VirtualMachine) -> VmStatus | None:
    dyn = c.db.get(VirtualMachineDynamic, vm.id)
    return dyn.status if dyn is not None else None


async def test_the_command_line_runs_each_action_inside_the_running_controller(served):
    controller, vm = served

    async def cli(*argv: str, readonly: bool = False) -> tuple[int, str, str]:
        return await asyncio.to_thread(run_cli_remote, controller.data_dir, list(argv), readonly)

    for argv in ACTIONS[:-1]:
        code, _out, err = await cli("vm", *argv, readonly=True)
        assert code != 0 and "read-only mode" in err
    assert status(controller, vm) is VmStatus.up

    code, out, err = await cli("vm", "pause", "web")
    assert (code, out.strip()) == (0, "web: paused on kvm01; expectation up -> up,paused"), err
    await until(lambda: status(controller, vm) is VmStatus.paused, "web paused")
    code, out, err = await cli("vm", "resume", "web")
    assert code == 0, err
    await until(lambda: status(controller, vm) is VmStatus.up, "web resumed")
    code, out, err = await cli("vm", "send-keys", "web", "ctrl+alt+f2", "enter")
    assert (code, out.strip()) == (0, "web: sent ctrl+alt+f2 enter on kvm01"), err
    code, out, err = await cli("vm", "poweroff", "--force", "web")
    assert (code, out.strip()) == (0, "web: forced off on kvm01; expectation up -> down"), err
    await until(lambda: status(controller, vm) is VmStatus.down, "web off")


async def test_an_attached_console_acts_through_the_socket_and_read_only_refuses(served):
    controller, vm = served
    remote = RemoteController(controller.data_dir, readonly=True)
    await remote.start()
    try:
        for call in (remote.reboot_vm("web"), remote.reset_vm("web"), remote.pause_vm("web"),
                     remote.resume_vm("web"), remote.poweroff_vm("web", force=True),
                     remote.send_keys("web", ["ctrl+alt+del"])):
            with pytest.raises(ActionError, match="read-only"):
                await call
    finally:
        await remote.stop()
    remote = RemoteController(controller.data_dir)
    await remote.start()
    try:
        assert await remote.reboot_vm("web") == "web: reboot requested (ACPI) on kvm01"
        with pytest.raises(ActionError, match="unknown key"):
            await remote.send_keys("web", ["ctrl+alt+del;x"])
        assert await remote.poweroff_vm("web", force=True) == "web: forced off on kvm01; expectation up -> down"
        await until(lambda: status(controller, vm) is VmStatus.down, "web off")
    finally:
        await remote.stop()
