"""The VM actions of an incident on the lab (issue 12 items 3 and 5): each changes the domain as libvirt
on the lab host reports it (`virsh domstate`, and qemu's own events read with `virsh qemu-monitor-event`
on the host), through the command line served by a running controller's control socket and through a
console attached to it; read-only refuses each, in both; the planner does not start a VM forced off.

The guest has no OS (no disk: SeaBIOS finds nothing to boot and waits), so what a reboot or a graceful
power off asks of the guest is checked where it lands: qemu reports the ACPI power button press
(POWERDOWN) that libvirt's reboot and shutdown send, and no OS answers it, so the domain stays running.
SeaBIOS itself answers ctrl+alt+del by resetting the machine (a RESET the guest made), which is what
send-keys is checked by; a reset is qemu's system_reset (a RESET the host made)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import threading

import pytest

from kerub_tui.app import KerubApp
from kerub_tui.cli import serve_socket
from kerub_tui.control import RemoteController
from kerub_tui.controller import Controller
from kerub_tui.core.models import AuditEntry, Plan, PlanStatus, VirtualMachine, VirtualMachineDynamic, VmStatus
from kerub_tui.screens.confirm import ConfirmScreen
from tests.lab.lab import HOST_ENV, _binary
from tests.tui.helpers import Recorder, plain, settle

from ._support import kerub
from .test_host_ops import MIB, carry_out, domstate, proposal, step_types, until

pytestmark = pytest.mark.lab

ACTIONS = [["reboot", "web"], ["reset", "web"], ["poweroff", "web"], ["poweroff", "--force", "web"],
           ["pause", "web"], ["resume", "web"], ["send-keys", "web", "ctrl+alt+del"]]
KEYS = ("ctrl+k", "p", "r", "R", "z", "Z", "x")


class QemuEvents:
    """`virsh qemu-monitor-event --loop` on a lab host, its lines collected as they come."""

    def __init__(self, labhost) -> None:
        argv = [_binary("nsenter"), "-t", str(labhost.init_pid), "-m", "-u", "-p", "--", "stdbuf", "-oL",
                "virsh", "-c", "qemu:///system", "qemu-monitor-event", "--loop", "--timestamp"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=HOST_ENV,
                                     start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def count(self, pattern: str) -> int:
        return sum(1 for line in self.lines if re.search(pattern, line))

    async def seen(self, pattern: str, times: int = 1) -> None:
        await until(lambda: self.count(pattern) >= times, f"qemu event {pattern!r} x{times} (seen: {self.lines})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


@pytest.fixture
async def served(clean_lab, tmp_path):
    """A controller with its control socket, on the lab's first host; the command line's environment."""
    labhost = clean_lab.hosts[0]
    c = Controller(tmp_path / "data", serve=serve_socket)
    await c.start()
    events = QemuEvents(labhost)
    try:
        await c.add_host(name=labhost.name, address=labhost.address, port=labhost.port, user="root",
                         identity=str(labhost.client_key), fingerprint=labhost.host_key_fingerprint)
        env = dict(os.environ, KERUB_TUI_DATA=str(tmp_path / "data"), KERUB_TUI_CONFIG=str(tmp_path / "config"))
        for name in ("DISPLAY", "WAYLAND_DISPLAY"):
            env.pop(name, None)
        yield c, labhost, env, events
    finally:
        events.stop()
        await c.stop()


async def cli(env, *argv: str) -> subprocess.CompletedProcess[str]:
    """The command line in its own process, served by the test's controller (off this loop, which serves it)."""
    return await asyncio.to_thread(kerub, *argv, env=env)


def status(c: Controller, vm: VirtualMachine) -> VmStatus | None:
    dyn = c.db.get(VirtualMachineDynamic, vm.id)
    return dyn.status if dyn is not None else None


def availability(c: Controller, vm: VirtualMachine) -> str:
    return next(e.spec() for e in c.db.require(VirtualMachine, vm.id).expectations if e.type == "availability")


def open_plans(c: Controller) -> list[Plan]:
    return [p for p in c.db.list(Plan) if p.status in (PlanStatus.proposed, PlanStatus.approved, PlanStatus.running)]


async def started(c: Controller, labhost, vm: VirtualMachine) -> None:
    plan = await proposal(c, lambda p: "start-vm" in step_types(p), f"the start of {vm.name}")
    assert (await carry_out(c, plan)).status is PlanStatus.done
    await until(lambda: domstate(labhost, vm.name) == "running", f"{vm.name} running on the host")
    await until(lambda: status(c, vm) is VmStatus.up, f"{vm.name} up in its document")
    await c.replanner.wait_idle()


async def test_each_action_changes_the_domain_as_the_hosts_libvirt_reports_it(served):
    c, labhost, env, events = served
    vm = await c.create_vm("web", memory_min=64 * MIB, expectations=["availability:up@dealbreaker"])
    await started(c, labhost, vm)

    # Read-only refuses each, through the socket too; nothing reaches the host.
    for argv in ACTIONS:
        refused = await cli(env, "--readonly", "vm", *argv)
        assert refused.returncode != 0 and "read-only mode" in refused.stderr, (argv, refused.stderr)
    # A hostile name is no VM; nothing runs anywhere.
    for name in ("web;virsh destroy web", "$(virsh destroy web)", "web\n"):
        refused = await cli(env, "vm", "poweroff", "--force", "--", name)
        assert refused.returncode != 0 and "no vm named" in refused.stderr
    assert domstate(labhost, "web") == "running" and events.count("STOP|RESET|POWERDOWN") == 0

    done = await cli(env, "vm", "pause", "web")
    assert done.stdout.strip() == f"web: paused on {labhost.name}; expectation up -> up,paused", done.stderr
    await until(lambda: domstate(labhost, "web") == "paused", "web paused on the host")
    await events.seen("event STOP for domain 'web'")
    await until(lambda: status(c, vm) is VmStatus.paused, "web paused in its document (libvirt's event)")
    await c.replanner.wait_idle()
    assert not open_plans(c), "the planner would resume a VM the admin paused"

    done = await cli(env, "vm", "resume", "web")
    assert done.returncode == 0, done.stderr
    await until(lambda: domstate(labhost, "web") == "running", "web running again")
    await events.seen("event RESUME for domain 'web'")
    assert availability(c, vm) == "availability:up@dealbreaker"

    # ctrl+alt+del on the guest's keyboard: SeaBIOS, idle with nothing to boot, resets the machine (a reset
    # the guest made). Before the reset below: right after one, SeaBIOS is busy starting and reads no key.
    # (SeaBIOS does not retry a failed boot by itself: qemu's reboot-timeout is -1 by default, so a reset the
    # guest made comes from the keys.)
    assert events.count("event RESET for domain 'web'") == 0
    done = await cli(env, "vm", "send-keys", "web", "ctrl+alt+del")
    assert done.stdout.strip() == f"web: sent ctrl+alt+delete on {labhost.name}", done.stderr
    await events.seen("event RESET for domain 'web': .*\"guest\":true")
    bad = await cli(env, "vm", "send-keys", "web", "ctrl+alt+del;reboot")
    assert bad.returncode != 0 and "unknown key 'del;reboot'" in bad.stderr

    # Reboot asks the guest through its ACPI power button: qemu reports the press; no OS answers it.
    done = await cli(env, "vm", "reboot", "web")
    assert done.stdout.strip() == f"web: reboot requested (ACPI) on {labhost.name}", done.stderr
    await events.seen("event POWERDOWN for domain 'web'")
    assert domstate(labhost, "web") == "running"

    done = await cli(env, "vm", "reset", "web")
    assert done.returncode == 0, done.stderr
    await events.seen("event RESET for domain 'web': .*host-qmp-system-reset")
    assert domstate(labhost, "web") == "running"

    actions = {a.action: a for a in c.db.list(AuditEntry) if a.action.startswith("vm ")}
    for action in ("vm pause", "vm resume", "vm reboot", "vm reset", "vm send-keys"):
        assert actions[action].host_id == c.db.require(VirtualMachineDynamic, vm.id).host_id, action


async def test_a_console_forces_a_runaway_vm_off_and_the_planner_leaves_it_off(served):
    """From an attached console with no X display: read-only refuses each key; then the done-when's keys
    force the VM off; libvirt on the host says shut off, and once the planner has re-planned on it,
    nothing proposes starting it again. A graceful power off later asks the guest (ACPI)."""
    c, labhost, env, events = served
    vm = await c.create_vm("web", memory_min=64 * MIB, expectations=["availability:up@dealbreaker"])
    await started(c, labhost, vm)

    record = Recorder()
    app = KerubApp(RemoteController(c.data_dir, readonly=True))
    async with app.run_test(size=(80, 24), message_hook=record) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await settle(app, pilot)
        for key in KEYS:
            record.clear()
            await pilot.press(key)
            await settle(app, pilot)
            assert ["read-only mode" in r.reason for r in record.of(KerubApp.ActionRefused)] == [True], key
    assert domstate(labhost, "web") == "running"

    app = KerubApp(RemoteController(c.data_dir))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("2", "slash", *"web", "enter", "ctrl+k")
        await settle(app, pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert (f"Force off web on {labhost.name}: the guest loses unsaved data; its expectation changes from up "
                "to down") in plain(app.screen.query_one("#confirm-impact"))
        await pilot.press("y")
        await until(lambda: domstate(labhost, "web") == "shut off", "web shut off on the host")
        await until(lambda: status(c, vm) is VmStatus.down, "web down in its document (libvirt's event)")

        def row() -> str:
            return " ".join(cell.plain for cell in app.screen.query_one("#vms").cells_of(vm.id) or [])

        for _ in range(500):  # the attached console's table follows the change feed through the socket
            await settle(app, pilot)
            if "down" in row():
                break
            await pilot.pause(0.02)
        assert "down" in row()
    assert availability(c, vm) == "availability:down@dealbreaker"
    await c.replanner.wait_idle()
    assert not [p for p in c.db.list(Plan) if "start-vm" in step_types(p) and p.status is not PlanStatus.done], \
        [(step_types(p), p.status.value) for p in c.db.list(Plan)]
    assert domstate(labhost, "web") == "shut off"
    [entry] = [a for a in c.db.list(AuditEntry) if a.action == "vm poweroff --force"]
    assert entry.outcome == f"web: forced off on {labhost.name}; expectation up -> down"

    # Expected up again, started; a graceful power off presses the power button and expects it down.
    started_again = await cli(env, "vm", "start", "web")
    assert started_again.returncode == 0, started_again.stderr
    await started(c, labhost, vm)
    done = await cli(env, "vm", "poweroff", "web")
    assert done.stdout.strip() == f"web: power off requested (ACPI) on {labhost.name}; expectation up -> down"
    await events.seen("event POWERDOWN for domain 'web'")
    assert availability(c, vm) == "availability:down@dealbreaker"
    # No OS answers the button: the domain runs on, and the planner proposes its stop (forced after a while).
    assert domstate(labhost, "web") == "running"
    await proposal(c, lambda p: "stop-vm" in step_types(p), "the stop of web, which ignored the button")



async def test_force_off_from_a_one_shot_command_with_no_controller_running(clean_lab, tmp_path):
    """No controller runs on the data dir: the command line connects the VM's host itself, pulls the plug,
    and its one re-planning pass proposes nothing (the VM is expected down and libvirt says it is off)."""
    labhost = clean_lab.hosts[0]
    c = Controller(tmp_path / "data")
    await c.start()
    try:
        await c.add_host(name=labhost.name, address=labhost.address, port=labhost.port, user="root",
                         identity=str(labhost.client_key), fingerprint=labhost.host_key_fingerprint)
        vm = await c.create_vm("web", memory_min=64 * MIB, expectations=["availability:up@dealbreaker"])
        await started(c, labhost, vm)
    finally:
        await c.stop()  # the VM runs on; nothing watches it now
    env = dict(os.environ, KERUB_TUI_DATA=str(tmp_path / "data"), KERUB_TUI_CONFIG=str(tmp_path / "config"))
    done = await cli(env, "vm", "poweroff", "--force", "web")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"web: forced off on {labhost.name}; expectation up -> down"]
    assert domstate(labhost, "web") == "shut off"
    shown = json.loads((await cli(env, "vm", "show", "web", "--json")).stdout)
    assert [e["up"] for e in shown["vm"]["expectations"]] == [False]
    plans = json.loads((await cli(env, "plan", "list", "--json")).stdout)
    assert [p for p in plans if p["status"] == "proposed"] == []
