"""Fencing through IPMI from the controller (high availability, issue 16 item 2). No BMC can exist here: a
stand-in ``ipmitool`` (a named fake, a script first on PATH) records the argv it is run with and answers as
ipmitool does, so what reaches it is checked exactly, hostile values included."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from kerub_tui.cli import main
from kerub_tui.core.models import PowerManagement
from kerub_tui.hosts.power import fence_from_controller

FAKE_IPMITOOL = """#!/bin/sh
# stand-in for ipmitool (no BMC exists here): records its argv, answers like a BMC that is {state}
printf '%s\\n' "$@" >> "{log}"
printf -- '--\\n' >> "{log}"
case "$*" in
  *"chassis power off") echo "Chassis Power Control: Down/Off" ;;
  *"chassis power status") echo "Chassis Power is {state}" ;;
  *) echo "unexpected: $*" >&2; exit 1 ;;
esac
"""


def fake_ipmitool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "argv.log"
    script = bin_dir / "ipmitool"
    script.write_text(FAKE_IPMITOOL.format(state=state, log=log))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}")
    return log


def calls(log: Path) -> list[list[str]]:
    return [chunk.strip("\n").split("\n") for chunk in log.read_text().split("--\n") if chunk.strip()]


async def test_fencing_powers_off_then_reads_the_power_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = fake_ipmitool(tmp_path, monkeypatch, "off")
    result = await fence_from_controller(PowerManagement(ipmi_address="bmc-1.example", ipmi_user="admin"), "h1")
    assert result.exit_code == 0, result.stderr
    assert "Chassis Power is off" in result.stdout
    base = ["-I", "lanplus", "-H", "bmc-1.example", "-U", "admin", "-E", "chassis", "power"]
    assert calls(log) == [[*base, "off"], [*base, "status"]]  # argv, no shell: nothing to inject into


async def test_a_bmc_that_still_says_on_has_fenced_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ipmitool(tmp_path, monkeypatch, "on")
    result = await fence_from_controller(PowerManagement(ipmi_address="10.0.0.9"), "h1")
    assert (result.exit_code, result.stderr) == (1, "the BMC of h1 still says its power is on")
    none = await fence_from_controller(PowerManagement(), "h1")
    assert (none.exit_code, none.stderr) == (1, "h1 has no IPMI: it cannot be powered off from the controller")


async def test_without_ipmitool_the_fence_fails_saying_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = await fence_from_controller(PowerManagement(ipmi_address="10.0.0.9"), "h1")
    assert (result.exit_code, result.stderr) == (127, "ipmitool is not installed on the controller: it cannot "
                                                       "power h1 off")


@pytest.mark.parametrize("argv", [
    ["--ipmi", "10.0.0.9; reboot"],
    ["--ipmi", "$(reboot)"],
    ["--ipmi", "10.0.0.9", "--ipmi-user", "root -P secret"],
    ["--ipmi", "10.0.0.9", "--ipmi-user", "x`id`"],
])
def test_hostile_bmc_settings_never_reach_the_host_document(argv: list[str], tmp_path: Path, capsys) -> None:
    """What the fence runs takes its address and user from the host's PowerManagement: a hostile value is
    refused there, with one line, and nothing is stored."""
    from kerub_tui.core.models import Host
    from kerub_tui.core.store import Store

    data = tmp_path / "data"
    store = Store.open(data)
    store.put(Host(name="h1", address="127.0.0.2"))
    store.close()
    code = main(["--data-dir", str(data), "host", "set", "h1", *argv])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and err.startswith("kerub-tui: "), err
    store = Store.open(data)
    try:
        assert store.find_by_name(Host, "h1").power == PowerManagement()
    finally:
        store.close()


def test_fence_refusals_are_one_line(tmp_path: Path, capsys) -> None:
    from kerub_tui.core.models import Host, HostDynamic, HostStatus
    from kerub_tui.core.store import Store

    data = tmp_path / "data"
    store = Store.open(data)
    up = Host(name="up1", address="127.0.0.2")
    store.put(up)
    store.put(HostDynamic(id=up.id, status=HostStatus.up))
    rekeyed = Host(name="rekeyed", address="127.0.0.3")
    store.put(rekeyed)
    store.put(HostDynamic(id=rekeyed.id, status=HostStatus.key_mismatch))
    store.close()
    for argv, message in ((["host", "fence", "up1", "--confirm-off"],
                           "kerub-tui: host up1 is up: only a host that is down or unreachable is fenced"),
                          (["host", "fence", "rekeyed", "--confirm-off"],
                           "kerub-tui: host rekeyed answers with another host key: it is not fenced (check it, "
                           "then kerub-tui host rekey rekeyed)"),
                          (["host", "fence", "nosuch", "--confirm-off"], None)):
        code = main(["--data-dir", str(data), *argv])
        err = capsys.readouterr().err
        assert code != 0 and err.count("\n") == 1, err
        if message:
            assert err.strip() == message


def test_the_admin_fences_a_lost_host_from_the_command_line_and_the_restart_is_proposed(tmp_path: Path,
                                                                                       capsys) -> None:
    """No controller runs on the data dir: the one-shot command records the fence (audited), re-plans once,
    and says the restart proposal; `host show` and `vm list` say what happened."""
    from kerub_tui.core.models import AuditEntry, Event, HostDynamic, Plan
    from kerub_tui.core.store import Store
    from tests.unit.planner.fleet import from_tables

    data = tmp_path / "data"
    store = Store.open(data)
    store.put_many(from_tables(hosts="""
        name  memory  status
        h1    16G     down
        h2    16G     up
    """, vms="""
        name  memory  on  expect
        web   2G      h1  availability:up@dealbreaker ha@dealbreaker
    """).documents())
    store.close()
    assert main(["--data-dir", str(data), "vm", "list"]) == 0
    listed = capsys.readouterr().out
    assert "restarts elsewhere once h1 is fenced" not in listed  # the table shows the status, vm show the why
    assert main(["--data-dir", str(data), "host", "fence", "h1", "--confirm-off"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    first, second = out.splitlines()
    assert first.startswith("host h1 fenced: confirmed off by ") and first.endswith(
        "its VMs with ha restart elsewhere (kerub-tui plan list)"), first
    assert second.startswith("proposal ") and "(restart, 1 steps): web must run, but its host h1 is down" in second
    assert main(["--data-dir", str(data), "host", "show", "h1"]) == 0
    assert "  fenced: confirmed off by " in capsys.readouterr().out
    assert main(["--data-dir", str(data), "host", "list"]) == 0
    assert "down (never seen) (fenced)" in capsys.readouterr().out
    assert main(["--data-dir", str(data), "ha", "show"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[1] == "VMs with ha: web"
    assert shown[2].startswith("host h1 is down: fenced, confirmed off by ")
    assert shown[3].startswith("  web (ha): lost (its host h1 is down; fenced: confirmed off by ")
    assert shown[3].endswith("to restart it awaits approval)"), shown[3]
    assert main(["--data-dir", str(data), "ha", "show", "--json"]) == 0
    away = json.loads(capsys.readouterr().out)["hosts_away"]
    assert [(h["host"], [v["name"] for v in h["vms"] if v["ha"]]) for h in away] == [("h1", ["web"])]
    store = Store.open(data)
    try:
        fence = store.get(HostDynamic, "host-h1").fence
        assert fence is not None and fence.method == "admin"
        assert [a.action for a in store.list(AuditEntry)] == ["host fence"]
        assert [e.type for e in store.list(Event) if e.type != "violation"] == ["host-fenced"]
        assert [p.plan_kind for p in store.list(Plan)] == ["restart"]
    finally:
        store.close()


def test_a_restart_from_an_older_copy_asks_consent_even_under_a_restart_policy(tmp_path: Path, capsys) -> None:
    from kerub_tui.core.models import AutoApprovePolicy, Plan, PlanStatus, Settings
    from kerub_tui.core.store import Store
    from tests.unit.planner.fleet import from_tables

    data = tmp_path / "data"
    store = Store.open(data)
    store.put_many(from_tables(hosts="""
        name  memory  status
        h1    16G     down
        h2    16G     up
    """, vms="""
        name  memory  on  disks  expect
        db    2G      h1  data   availability:up@dealbreaker ha@dealbreaker
    """, disks="""
        name  size  on
        data  10G   h1,h2*
    """).documents())
    store.put(Settings(auto_approve=[AutoApprovePolicy(plan_kind="restart")]))
    store.close()
    assert main(["--data-dir", str(data), "host", "fence", "h1", "--confirm-off"]) == 0
    capsys.readouterr()
    store = Store.open(data)
    try:
        [plan] = store.list(Plan)
    finally:
        store.close()
    assert plan.status is PlanStatus.proposed, "never approved by the policy"
    assert plan.status_reason is not None and plan.status_reason.startswith(
        "not auto-approved: it needs the admin's consent: db starts on h2 from the copy of disk data taken ")
    assert main(["--data-dir", str(data), "plan", "show", plan.id[:8]]) == 0
    shown = capsys.readouterr().out
    assert "  needs your consent: db starts on h2 from the copy of disk data taken " in shown
    assert "writes since then are on h1, and are lost" in shown
    assert main(["--data-dir", str(data), "vm", "list", "--json"]) == 0
    [vm] = json.loads(capsys.readouterr().out)
    assert vm["status"] == "lost" and "awaits approval (your consent: db starts on h2 from the copy" in \
        vm["status_reason"]


async def test_the_admins_fence_survives_a_status_monitoring_still_had_pending(tmp_path: Path) -> None:
    """Monitoring coalesces its writes: a host's status it had not flushed yet when the admin fenced the host
    is flushed after the fence, and must not write over it."""
    import asyncio

    from kerub_tui.controller import Controller
    from kerub_tui.core.models import Host, HostDynamic, HostStatus

    controller = Controller(tmp_path / "data")
    await controller.start(connect_hosts=False)
    try:
        host = Host(name="h1", address="127.0.0.2")
        controller.db.put(host)
        controller.db.put(HostDynamic(id=host.id, status=HostStatus.down))
        assert controller.fleet is not None
        pending = HostDynamic(id=host.id, status=HostStatus.down, status_reason="connection lost: reset")
        controller.fleet.writer.put(pending)  # not flushed yet
        await controller.fence_host("h1", confirm_off=True)
        for _ in range(3):
            await asyncio.sleep(0)  # the writer flushes
        controller.fleet.writer.flush()
        dyn = controller.db.get(HostDynamic, host.id)
        assert dyn.fence is not None and dyn.fence.method == "admin"
        assert dyn.status_reason == "connection lost: reset"  # monitoring's news kept too
    finally:
        await controller.stop()
