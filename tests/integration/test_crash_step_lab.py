"""SIGKILL of a real controller at each point of a CreateLv step, then a restart (issue 17 item 5).

A lab host's lvm wrapper sleeps before and after the real `lvcreate` (LabHost.delay_lvm) and says
which phase it is in, so the controller — a one-shot `kerub-tui plan approve`, which carries the plan
out in its own process — is killed at a known point:

- before the command: the step's intent is recorded, lvcreate has not run (the wrapper is killed too,
  as a command that never started);
- after the command ran on the host but before its result reached the controller (so before anything
  was recorded about it);
- after the step was recorded done, while the next step runs.

`kerub-tui serve` itself is killed too, after lvcreate ran and before it ran (then restarted at
once). Then a restart — `kerub-tui serve` (which reconciles the host when it connects) or more one-shot
commands (whose executor adopts its own earlier work when lvcreate says "already exists") — and the
host and the documents agree: every kerub LV on the host is exactly the allocation of a disk, the
killed plan is interrupted with a reason, a re-plan succeeds, and the VM runs with each disk once.
An LV named like kerub-tui's that no document knows becomes an event and a cleanup proposal, and is
removed only once that is approved.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kerub_tui.core.models import (
    Event,
    HostDynamic,
    HostStatus,
    Plan,
    PlanStatus,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
)
from kerub_tui.core.store import Store, StoreError
from tests.lab import Lab, missing_prerequisites

from ._support import kerub

pytestmark = [pytest.mark.lab, pytest.mark.slow]

DEADLINE = 120.0  # generous: waits assert what happens and in which order, not how fast


@pytest.fixture(scope="module")
def host() -> Iterator:
    reason = missing_prerequisites(False)
    if reason:
        pytest.skip(f"lab: {reason}")
    lab = Lab.up(1)
    try:
        yield lab.hosts[0]
    finally:
        lab.down()


@pytest.fixture
def env(tmp_path: Path, host) -> Iterator[dict[str, str]]:
    host.reset()
    environment = dict(os.environ, KERUB_TUI_DATA=str(tmp_path / "data"), KERUB_TUI_CONFIG=str(tmp_path / "config"),
                       PYTHONUNBUFFERED="1")
    yield environment
    host.delay_lvm(None)
    host.reset()



def ok(*argv: str, env: dict[str, str]) -> str:
    done = kerub(*argv, env=env)
    assert done.returncode == 0, f"kerub-tui {' '.join(argv)}: {done.stderr}"
    return done.stdout


def snapshot(env: dict[str, str]) -> Store | None:
    """The documents as the writer last committed them (a read-only snapshot, never blocking it)."""
    try:
        return Store.open(env["KERUB_TUI_DATA"], readonly=True)
    except StoreError:
        return None  # mid-write by a killed writer: the next writer rolls it back


def wait_for(predicate: Callable[[], object], what: str, timeout: float = DEADLINE) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def kerub_lvs(host) -> dict[str, int]:
    out = host.run(f"lvs --reportformat json --units b --nosuffix -o lv_name,lv_size {host.vg}", check=True).stdout
    return {lv["lv_name"]: int(lv["lv_size"]) for lv in json.loads(out)["report"][0]["lv"]
            if lv["lv_name"].startswith("kerub-")}


def join(host, env: dict[str, str]) -> None:
    ok("host", "add", host.address, "--name", host.name, "--identity", str(host.client_key),
       "--accept-fingerprint", host.host_key_fingerprint, env=env)


def new_vm(env: dict[str, str], name: str = "crash", disks: int = 1) -> str:
    """A VM with new disks that must be up; returns the id of the proposal that makes it so."""
    out = ok("vm", "create", name, "--memory", "64M", *[a for _ in range(disks) for a in ("--disk", "32M")],
             "--expect", "availability:up@dealbreaker", env=env)
    match = re.search(r"proposal ([0-9a-f]{8}) \(start, (\d+) steps\)", out)
    assert match, out
    assert int(match[2]) == disks + 1, out  # create-lv per disk, start-vm
    return match[1]


def kill_at(host, env: dict[str, str], plan_ref: str, point: Callable[[], bool], *, stop_wrapper: bool) -> None:
    """`plan approve` in its own process, SIGKILLed once ``point()`` holds."""
    proc = subprocess.Popen([sys.executable, "-m", "kerub_tui", "plan", "approve", plan_ref], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: point() or proc.poll() is not None, "the kill point")
        assert proc.poll() is None, f"the plan ended before the kill point: {proc.communicate()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    settle_host(host, stop_wrapper=stop_wrapper)


def settle_host(host, *, stop_wrapper: bool) -> None:
    phase = host.lvm_phase()
    if stop_wrapper and phase is not None and phase[0] == "before":
        # The command never started: the wrapper (this test's own delay) is killed before lvcreate.
        host.run(f"pkill -KILL -P {phase[1]}; kill -KILL {phase[1]}")
    host.delay_lvm(None)
    # whatever still runs on the host finishes before the restart looks
    wait_for(lambda: "lvcreate" not in host.run("ps -eo args").stdout, "the host's lvcreate to end")


def phase_is(host, wanted: str, count: int = 1) -> Callable[[], bool]:
    """The delayed lvcreate number ``count`` of this run is in phase ``wanted``."""
    seen: list[int] = []

    def check() -> bool:
        phase = host.lvm_phase()
        if phase is None:
            return False
        if phase[1] not in seen:
            seen.append(phase[1])
        return len(seen) == count and phase[0] == wanted

    return check


def step_done(env: dict[str, str], plan_prefix: str, index: int) -> Callable[[], bool]:
    def check() -> bool:
        store = snapshot(env)
        if store is None:
            return False
        with store:
            plan = next((p for p in store.list(Plan) if p.id.startswith(plan_prefix)), None)
            return plan is not None and any(r.step_index == index and r.outcome.value == "done" for r in plan.records)

    return check


def documents(env: dict[str, str]) -> tuple[list[Plan], dict[str, list], list[Event]]:
    store = wait_for(lambda: snapshot(env), "a readable store")
    with store:  # type: ignore[union-attr]
        disks = {}
        for disk in store.list(VirtualStorageDevice):
            dyn = store.get(VirtualStorageDeviceDynamic, disk.id)
            disks[disk.name] = list(dyn.allocations) if dyn else []
        return store.list(Plan), disks, store.list(Event)


def assert_agree(host, env: dict[str, str]) -> None:
    """Every kerub LV on the host is exactly one disk's allocation, and every allocation is there."""
    _, disks, _ = documents(env)
    recorded = sorted(a.lv for allocs in disks.values() for a in allocs)
    assert sorted(kerub_lvs(host)) == recorded, (kerub_lvs(host), disks)
    assert len(set(recorded)) == len(recorded)


def interrupted(env: dict[str, str], prefix: str) -> Plan:
    plans, _, events = documents(env)
    plan = next(p for p in plans if p.id.startswith(prefix))
    assert plan.status is PlanStatus.interrupted, (plan.status, plan.status_reason)
    assert "gone" in plan.status_reason and "pid" in plan.status_reason
    assert any(e.type == "plan-interrupted" and e.target == plan.id for e in events)
    return plan


def vm_running(host, name: str = "crash") -> bool:
    return host.virsh(["domstate", name]).stdout.strip() == "running"


def replan_one_shot(env: dict[str, str], name: str = "crash") -> str:
    """With no controller running: stop and start the VM again, which re-plans once."""
    ok("vm", "stop", name, env=env)
    out = ok("vm", "start", name, env=env)
    match = re.search(r"proposal ([0-9a-f]{8}) \(start", out)
    assert match, out
    return match[1]


class Serve:
    """`kerub-tui serve` on the data dir; commands go through its control socket."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.started = dt.datetime.now(dt.UTC)
        self.log = Path(env["KERUB_TUI_CONFIG"]).parent / f"serve-{time.monotonic_ns()}.log"
        with open(self.log, "w") as log:  # a file, not a pipe nobody reads: serve never blocks on it
            self.proc = subprocess.Popen([sys.executable, "-m", "kerub_tui", "serve"], env=env,
                                         stdout=subprocess.DEVNULL, stderr=log, text=True)
        wait_for(lambda: "serving" in self.log.read_text() or self.proc.poll() is not None, "serve to start")
        assert self.proc.poll() is None, self.log.read_text()
        # Its hosts connected before a plan goes through it: a plan approved while its host is still
        # connecting is withdrawn (the host cannot carry it out now), which is not what these tests test.
        wait_for(lambda: self.hosts_up() or self.proc.poll() is not None, "serve's hosts to be up")

    def hosts_up(self) -> bool:
        store = snapshot(self.env)
        if store is None:
            return False
        try:
            # up as this serve saw them: the store still says "up" from the controller before it (CI
            # approved a plan while this one's host was still connecting)
            return all(d.status is HostStatus.up and d.last_seen is not None and d.last_seen >= self.started
                       for d in store.list(HostDynamic))
        finally:
            store.close()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def plans(self) -> list[dict]:
        done = kerub("plan", "list", "--json", env=self.env, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def show(self, kind: str, name: str) -> dict:
        return json.loads(ok(kind, "show", name, "--json", env=self.env))

    def proposal(self, wanted: Callable[[dict], bool], what: str) -> dict:
        def find() -> dict | None:
            return next((p for p in self.plans() if p["status"] == "proposed" and wanted(p)), None)

        return wait_for(find, what)  # type: ignore[return-value]

    def carry_out(self, plan_id: str) -> dict:
        ok("plan", "approve", plan_id[:8], env=self.env)

        def finished() -> dict | None:
            plan = next(p for p in self.plans() if p["id"] == plan_id)
            return plan if plan["status"] in ("done", "failed", "interrupted") else None

        return wait_for(finished, f"plan {plan_id[:8]} to finish")  # type: ignore[return-value]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            assert self.proc.wait(timeout=60) == 0
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def types(plan: dict) -> list[str]:
    return [s["type"] for s in plan["steps"]]


# --- the kill points --------------------------------------------------------------------------------


def test_killed_before_lvcreate_ran_then_serve(host, env) -> None:
    join(host, env)
    ref = new_vm(env)
    host.delay_lvm("lvcreate", before=600)
    kill_at(host, env, ref, phase_is(host, "before"), stop_wrapper=True)
    assert kerub_lvs(host) == {}  # never made
    serve = Serve(env)
    try:
        plan = interrupted(env, ref)
        assert plan.records[0].intent is not None and plan.records[0].intent.allocation.lv == "kerub-crash-disk0"
        fresh = serve.proposal(lambda p: types(p) == ["create-lv", "start-vm"], "a new plan making the disk")
        assert serve.carry_out(fresh["id"])["status"] == "done"
        assert vm_running(host)
        assert_agree(host, env)
        assert list(kerub_lvs(host)) == ["kerub-crash-disk0"]
        settled = next(p for p in serve.plans() if p["id"] == plan.id)
        assert settled["records"][0]["intent"]["resolution"] == "absent"
    finally:
        serve.stop()


def test_killed_after_lvcreate_ran_before_its_result_was_recorded_then_serve_adopts(host, env) -> None:
    join(host, env)
    ref = new_vm(env)
    host.delay_lvm("lvcreate", after=600)
    kill_at(host, env, ref, phase_is(host, "after"), stop_wrapper=False)
    assert list(kerub_lvs(host)) == ["kerub-crash-disk0"]  # on the host, in no document
    _, disks, _ = documents(env)
    assert disks == {"crash-disk0": []}
    serve = Serve(env)
    try:
        interrupted(env, ref)
        # reconciled when the host connected: the LV is the disk's, the re-plan only starts the VM
        wait_for(lambda: serve.show("disk", "crash-disk0")["dynamic"], "the LV adopted")
        fresh = serve.proposal(lambda p: types(p) == ["start-vm"], "a plan only starting the VM")
        assert serve.carry_out(fresh["id"])["status"] == "done"
        assert vm_running(host)
        assert_agree(host, env)
        assert list(kerub_lvs(host)) == ["kerub-crash-disk0"]
        _, _, events = documents(env)
        assert any(e.type == "storage-adopted" for e in events)
        assert not any(e.type == "orphan-storage" for e in events)
    finally:
        serve.stop()


def test_killed_after_lvcreate_ran_then_one_shot_commands_adopt_it(host, env) -> None:
    join(host, env)
    ref = new_vm(env)
    host.delay_lvm("lvcreate", after=600)
    kill_at(host, env, ref, phase_is(host, "after"), stop_wrapper=False)
    # the next command that opens the store marks the killed plan interrupted
    listed = json.loads(ok("plan", "list", "--json", env=env))
    assert next(p for p in listed if p["id"].startswith(ref))["status"] == "interrupted"
    interrupted(env, ref)
    # no controller reconciles here: the planner proposes the LV again, and the one-shot executor
    # finds it made by the killed step (its intent) instead of failing on "already exists"
    again = replan_one_shot(env)
    approved = kerub("plan", "approve", again, env=env)
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert "done" in approved.stdout.splitlines()[-1]
    assert vm_running(host)
    assert_agree(host, env)
    assert list(kerub_lvs(host)) == ["kerub-crash-disk0"]


def test_killed_after_the_step_was_recorded_then_serve(host, env) -> None:
    join(host, env)
    ref = new_vm(env, disks=2)
    host.delay_lvm("lvcreate", before=600, skip=1)  # the second lvcreate waits: the first is recorded by then
    first_done = step_done(env, ref, 0)
    second_waits = phase_is(host, "before")
    kill_at(host, env, ref, lambda: second_waits() and first_done(), stop_wrapper=True)
    assert list(kerub_lvs(host)) == ["kerub-crash-disk0"]
    _, disks, _ = documents(env)
    assert [a.lv for a in disks["crash-disk0"]] == ["kerub-crash-disk0"] and disks["crash-disk1"] == []
    serve = Serve(env)
    try:
        plan = interrupted(env, ref)
        assert [r.outcome.value for r in plan.records] == ["done", "interrupted"]
        fresh = serve.proposal(lambda p: types(p) == ["create-lv", "start-vm"], "a plan making the second disk")
        assert "kerub-crash-disk1" in fresh["steps"][0]["description"]
        assert serve.carry_out(fresh["id"])["status"] == "done"
        assert vm_running(host)
        assert_agree(host, env)
        assert sorted(kerub_lvs(host)) == ["kerub-crash-disk0", "kerub-crash-disk1"]
    finally:
        serve.stop()


def test_a_kerub_named_lv_no_document_knows_is_removed_only_through_an_approved_cleanup(host, env) -> None:
    join(host, env)
    host.run(f"lvcreate --yes --name kerub-stray --size 8m {host.vg}", check=True)
    serve = Serve(env)
    try:
        cleanup = serve.proposal(lambda p: p["plan_kind"] == "cleanup", "a cleanup proposal")
        assert types(cleanup) == ["remove-orphan-lv"]
        assert f"lvremove --yes {host.vg}/kerub-stray" in cleanup["steps"][0]["commands"][0]["command"]
        _, _, events = documents(env)
        [event] = [e for e in events if e.type == "orphan-storage"]
        assert "kerub-stray" in event.message and cleanup["id"][:8] in event.message
        assert "kerub-stray" in kerub_lvs(host)  # nothing deleted without approval
        assert serve.carry_out(cleanup["id"])["status"] == "done"
        assert kerub_lvs(host) == {}
    finally:
        serve.stop()


def test_serve_killed_after_lvcreate_ran_then_serve_again_adopts(host, env) -> None:
    join(host, env)
    ref = new_vm(env)
    serve = Serve(env)
    try:
        host.delay_lvm("lvcreate", after=600)
        ok("plan", "approve", ref, env=env)  # through the socket: serve carries it out
        wait_for(phase_is(host, "after"), "lvcreate to have run")
        serve.kill()
    finally:
        if serve.proc.poll() is None:
            serve.kill()
    settle_host(host, stop_wrapper=False)
    assert list(kerub_lvs(host)) == ["kerub-crash-disk0"]
    serve = Serve(env)
    try:
        interrupted(env, ref)
        wait_for(lambda: serve.show("disk", "crash-disk0")["dynamic"], "the LV adopted")
        fresh = serve.proposal(lambda p: types(p) == ["start-vm"], "a plan only starting the VM")
        assert serve.carry_out(fresh["id"])["status"] == "done"
        assert vm_running(host)
        assert_agree(host, env)
    finally:
        serve.stop()


def test_serve_killed_while_lvcreate_waits_and_restarted_at_once(host, env) -> None:
    """Killed before lvcreate ran, with the wrapper left alone and the new controller started at once:
    the command is tied to its SSH channel (ssh/commands.py), so it dies with the killed controller;
    whatever the host did, the LV ends up the disk's, once."""
    join(host, env)
    ref = new_vm(env)
    serve = Serve(env)
    try:
        host.delay_lvm("lvcreate", before=4)
        ok("plan", "approve", ref, env=env)
        wait_for(phase_is(host, "before"), "lvcreate to wait")
        serve.kill()
    finally:
        if serve.proc.poll() is None:
            serve.kill()
    serve = Serve(env)  # at once: lvcreate has not run yet
    try:
        interrupted(env, ref)
        host.delay_lvm(None)
        wait_for(lambda: "lvcreate" not in host.run("ps -eo args").stdout, "no lvcreate left on the host")

        def started() -> bool:
            if vm_running(host):
                return True
            for plan in serve.plans():
                if plan["status"] == "proposed" and "start-vm" in types(plan):
                    serve.carry_out(plan["id"])
            return False

        wait_for(started, "the VM to run")
        assert_agree(host, env)
        assert list(kerub_lvs(host)) == ["kerub-crash-disk0"]
    finally:
        serve.stop()
