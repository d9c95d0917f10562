"""iSCSI shares with CHAP (issue 16: "tgtd with CHAP read by qemu's own initiator"), on simulated hosts.

The planner's share step makes a secret per target when it runs (never when planned: plans are shown and
stored), gives it to tgtadm on the command's standard input only, and keeps it with the target's document;
before a VM starts or arrives on a host reading the target, that host gets a libvirt secret (usage type
iscsi) with it, and its domain names the user and the secret's usage. The simulated tgtd asks the reader
for the target's account: a start or a migration without the secret fails, as qemu's login would. The
secret is in no plan, command shown, JSON, export, log line or audit entry."""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from kerub_tui.core.models import (
    REDACTED,
    AuditEntry,
    HostConfiguration,
    IscsiSecret,
    IscsiTarget,
    Plan,
    PlanStatus,
    VirtualMachineDynamic,
    secret_value,
)
from kerub_tui.core.store import Store
from kerub_tui.hosts import iscsi
from kerub_tui.planner.commitments import build_state
from kerub_tui.planner.executor import Executor
from kerub_tui.planner.planning import repair_draft
from kerub_tui.planner.problems import all_problems
from kerub_tui.planner.replanner import approve
from kerub_tui.planner.steps import MigrateVm, RekeyIscsi, RemoveIscsiSecret, ShareIscsi, StartVm, UnshareIscsi

from .fleet import NOW, Fleet, from_tables
from .simulator import FleetSimulator

pytest.importorskip("kerub_tui.hosts.kvm")

IQN = iscsi.disk_iqn("disk-root")
USER = "kerub-disk-root"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "data") as s:
        yield s


def fleet(*, target: IscsiTarget | None = None, web_on: str | None = None) -> Fleet:
    """h1 holds a 300G disk it can't run the VM of (too little memory), h2 and h3 can: it is read over iSCSI."""
    f = from_tables(hosts="""
        name  memory
        h1    4G
        h2    32G
        h3    32G
    """, vms="""
        name  memory  disks  expect
        web   8G      root   availability:up@dealbreaker
    """, disks="""
        name  size  on
        root  300G  h1
    """)
    if target is not None:
        f.put(HostConfiguration(id="host-h1", iscsi_targets=[target]))
    if web_on is not None:
        f.put(VirtualMachineDynamic(id="vm-web", host_id=f"host-{web_on}", status="up"))
    return f


async def carry_out(store: Store, sim: FleetSimulator) -> Plan:
    draft = repair_draft(build_state(store, now=NOW))
    assert draft is not None
    plan = draft.to_plan()
    store.put(plan)
    approve(store, plan.id, "admin")
    done = await Executor(store, sim).execute(plan.id)
    assert done.status is PlanStatus.done, (done.status_reason, [s.description for s in done.steps])
    return done


def target_of(store: Store) -> IscsiTarget:
    [target] = store.require(HostConfiguration, "host-h1").iscsi_targets
    return target


def everything_shown(store: Store) -> str:
    """Every document as the JSON outputs, the control socket and exports give it, and the audit log."""
    docs = [d.model_dump(mode="json") for d in store.all_documents()]
    docs += [d.model_dump(mode="json") for d in store.list(AuditEntry)]
    return json.dumps(docs) + json.dumps(store.export_data())


async def test_a_share_makes_its_secret_when_it_runs_and_gives_it_to_tgtadm_on_stdin_only(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    f = fleet()
    store.put_many(f.documents())
    sim = FleetSimulator(f.state())
    plan = await carry_out(store, sim)
    share, start = plan.steps
    assert (share.type, start.type) == ("iscsi-share", "start-vm")
    target = target_of(store)
    secret = secret_value(target.chap_secret)
    assert secret is not None and len(secret) >= 12 and target.chap_user == USER
    # the plan said how, never what: tgtadm reads the file the command wrote from its standard input
    [shown] = share.commands
    assert '--user kerub-disk-root --password "$(cat -- "$f")"' in shown.command
    assert shown.command.startswith("f=$(umask 077 && mktemp /run/kerub-chap.XXXXXXXX) && trap 'rm -f -- \"$f\"' EXIT")
    assert "secret" not in json.dumps(share.params)
    [(command, given)] = [(c, i) for c, i in sim.inputs if "tgtadm" in c]
    assert command == shown.command and given == secret.encode()
    # the simulated tgtd asks for that account, with that secret
    server = sim.machine("host-h1")
    assert server.iscsi_bound == {1: [USER]} and server.iscsi_accounts == {USER: secret}
    # the reader holds it in a libvirt secret defined before the start, and its domain names user and usage
    usage = iscsi.secret_usage("host-h1", IQN)
    assert [c.command for c in start.commands] == [
        f"libvirt: virsh secret-define {usage}.xml && virsh secret-set-value (from stdin)",
        "libvirt: virsh start web (after virsh define web.xml)"]
    reader = sim.machine("host-h2")
    assert reader.libvirt_secrets == {usage: secret}
    xml = reader.domains["vm-web"].xml or ""
    auth = ET.fromstring(xml).find("devices/disk[@type='network']/source[@protocol='iscsi']/auth")
    assert auth is not None and auth.get("username") == USER
    assert [(s.get("type"), s.get("usage")) for s in auth] == [("iscsi", usage)]
    assert secret not in xml
    assert store.require(HostConfiguration, "host-h2").iscsi_secrets == [IscsiSecret(usage=usage, server="host-h1",
                                                                                     tid=1)]
    assert sim.divergence(store) == []
    # in the store's file (a restart keeps it); in no JSON, export, audit entry, step record or log line
    done = store.require(Plan, plan.id)
    assert all(r.secret is None for r in done.records)
    shown_all = everything_shown(store)
    assert secret not in shown_all and REDACTED in shown_all
    assert secret not in caplog.text
    assert repr(secret) not in repr(target) and "**********" in repr(target)


async def test_the_secret_survives_a_restart_of_kerub_tui(tmp_path: Path) -> None:
    f = fleet()
    with Store.open(tmp_path / "data") as store:
        store.put_many(f.documents())
        await carry_out(store, FleetSimulator(f.state()))
        secret = secret_value(target_of(store).chap_secret)
    with Store.open(tmp_path / "data") as store:
        assert secret is not None and secret_value(target_of(store).chap_secret) == secret


async def test_the_simulated_tgtd_refuses_a_reader_without_the_secret(store: Store) -> None:
    f = fleet()
    store.put_many(f.documents())
    sim = FleetSimulator(f.state())
    await carry_out(store, sim)
    reader = sim.machine("host-h2")
    xml = reader.domains["vm-web"].xml or ""
    usage = iscsi.secret_usage("host-h1", IQN)
    other = sim.machine("host-h3")
    other.address = reader.address  # the ACL lets it in: only CHAP stands in the way
    assert f"no secret with matching usage '{usage}'" in (other.iscsi_refusal(xml) or "")  # no secret there
    other.libvirt_secrets[usage] = "not-the-secret-0"
    assert "Authorization failure" in (other.iscsi_refusal(xml) or "")
    other.libvirt_secrets[usage] = reader.libvirt_secrets[usage]
    assert other.iscsi_refusal(xml) is None
    # and a domain that names no secret at all is refused by a target with CHAP
    assert "Authorization failure" in (other.iscsi_refusal(xml.replace("<auth", "<x").replace("</auth>", "</x>"))
                                       or "")


async def test_a_migration_gives_the_target_host_the_secret_first_and_a_tidy_takes_it_from_the_source(
        store: Store) -> None:
    f = fleet()
    store.put_many(f.documents())
    sim = FleetSimulator(f.state())
    await carry_out(store, sim)
    state = build_state(store, now=NOW)
    usage = iscsi.secret_usage("host-h1", IQN)
    move = MigrateVm("vm-web", "host-h2", "host-h3")
    assert move.blocked(state) == "h3 has no copy of disk root"  # h1's ACL lets h2 alone in
    from kerub_tui.planner.steps import AllowIscsiInitiator

    allow = AllowIscsiInitiator("host-h1", 1, "127.0.0.4")
    after = allow.take(state)
    assert move.blocked(after) is None
    assert next(c.command for c in move.commands(after)) == (
        f"libvirt: virsh secret-define {usage}.xml && virsh secret-set-value (from stdin)")
    plan = Plan(steps=[allow.to_planned(state), move.to_planned(after)])
    store.put(plan)
    approve(store, plan.id, "admin")
    # without the define op the arriving qemu could not log in: the sim refuses such a migration
    h3 = sim.machine("host-h3")
    done = await Executor(store, sim).execute(plan.id)
    assert done.status is PlanStatus.done, done.status_reason
    assert h3.libvirt_secrets == {usage: secret_value(target_of(store).chap_secret)}
    assert "vm-web" in h3.domains and store.require(VirtualMachineDynamic, "vm-web").host_id == "host-h3"
    # h2 reads nothing now: its secret is a tidy's (and its ACL entry)
    problems = {(p.type, p.host_id, p.detail) for p in all_problems(build_state(store, now=NOW))}
    assert ("unused-iscsi-secret", "host-h2", usage) in problems
    tidy = await carry_out(store, sim)
    assert "iscsi-secret-remove" in [s.type for s in tidy.steps]
    assert sim.machine("host-h2").libvirt_secrets == {}
    assert store.require(HostConfiguration, "host-h2").iscsi_secrets == []
    assert sim.divergence(store) == []


async def test_a_migration_without_the_secret_on_the_target_fails_in_the_simulator(store: Store) -> None:
    f = fleet()
    store.put_many(f.documents())
    sim = FleetSimulator(f.state())
    await carry_out(store, sim)
    from kerub_tui.sim.machine import migrate

    sim.machine("host-h1").iscsi_acl[1].append(sim.machine("host-h3").address)
    result = await migrate(sim.machine("host-h2"), sim.machine("host-h3"), "vm-web", False)
    assert result.exit_code != 0 and "no secret with matching usage" in result.stderr
    assert "vm-web" in sim.machine("host-h2").domains  # it stays where it was


async def test_a_target_shared_before_chap_keeps_working_without_a_secret(store: Store) -> None:
    legacy = IscsiTarget(iqn=IQN, tid=1, lun_path="/dev/vg0/kerub-root", disk_id="disk-root", initiators=["127.0.0.3"])
    f = fleet(target=legacy)
    store.put_many(f.documents())
    sim = FleetSimulator(f.state())
    plan = await carry_out(store, sim)
    assert [s.type for s in plan.steps] == ["start-vm"]
    assert [c.command for c in plan.steps[0].commands] == ["libvirt: virsh start web (after virsh define web.xml)"]
    xml = sim.machine("host-h2").domains["vm-web"].xml or ""
    assert "protocol=\"iscsi\"" in xml and "<auth" not in xml
    assert target_of(store) == legacy and store.require(HostConfiguration, "host-h2").iscsi_secrets == []


async def test_a_target_whose_secret_kerub_tui_lost_is_rekeyed_before_a_new_reader(store: Store) -> None:
    lost = IscsiTarget(iqn=IQN, tid=1, lun_path="/dev/vg0/kerub-root", disk_id="disk-root", chap_user=USER,
                       initiators=["127.0.0.3"])
    f = fleet(target=lost)
    state = f.state()
    assert StartVm("vm-web", "host-h2").blocked(state) == (
        "disk root is shared by h1 over iSCSI target 1, whose CHAP secret kerub-tui does not know: it is re-keyed "
        "before h2 logs in")
    store.put_many(f.documents())
    sim = FleetSimulator(state)
    sim.machine("host-h1").iscsi_accounts[USER] = "the-old-lost-secret"
    sim.machine("host-h1").iscsi_bound[1] = [USER]
    plan = await carry_out(store, sim)
    assert [s.type for s in plan.steps] == ["iscsi-rekey", "start-vm"]
    assert plan.steps[0].description.startswith(
        "give iSCSI target 1 (CHAP user kerub-disk-root) on h1 a new CHAP secret, as kerub-tui does not know its "
        "secret")
    secret = secret_value(target_of(store).chap_secret)
    assert secret is not None and sim.machine("host-h1").iscsi_accounts == {USER: secret}
    assert sim.machine("host-h2").libvirt_secrets == {iscsi.secret_usage("host-h1", IQN): secret}
    assert sim.divergence(store) == []


def test_a_lost_secret_is_never_rekeyed_under_a_vm_reading_it() -> None:
    lost = IscsiTarget(iqn=IQN, tid=1, lun_path="/dev/vg0/kerub-root", disk_id="disk-root", chap_user=USER,
                       initiators=["127.0.0.3"])
    state = fleet(target=lost, web_on="h2").state()
    assert RekeyIscsi("host-h1", 1).blocked(state) == (
        "web reads disk root over iSCSI target 1 on h1, logged in with a CHAP secret kerub-tui does not know: a new "
        "secret would lock it out at its next login (the target is re-keyed once nothing reads it)")
    # the VM that reads it goes on reading it (it logged in already); a move to a new reader is refused, saying why
    assert all_problems(state) == []
    assert MigrateVm("vm-web", "host-h2", "host-h3").blocked(
        state.apply([HostConfiguration(id="host-h1", iscsi_targets=[lost.evolve(initiators=["127.0.0.3", "127.0.0.4"])])])
    ) == ("disk root is shared by h1 over iSCSI target 1, whose CHAP secret kerub-tui does not know: it is re-keyed "
          "before h3 logs in")


async def test_unsharing_a_target_removes_its_chap_account(store: Store) -> None:
    f = fleet()
    store.put_many(f.documents())
    sim = FleetSimulator(f.state())
    await carry_out(store, sim)
    state = build_state(store, now=NOW)
    [command] = [c.command for c in UnshareIscsi("host-h1", 1).commands(state)]
    assert command == iscsi.iscsi_unshare(1, USER)
    result = await sim.machine("host-h1").shell(command)
    assert result.exit_code == 0 and sim.machine("host-h1").iscsi_accounts == {}


def test_the_plan_holds_no_secret_and_its_prediction_holds_the_marker() -> None:
    state = fleet().state()
    share = ShareIscsi("host-h1", 1, IQN, "/dev/vg0/kerub-root", disk="disk-root", initiator="127.0.0.3")
    after = share.take(state)
    [target] = after.host_config["host-h1"].iscsi_targets
    assert target.chap_user == USER and target.chap_secret == SecretStr(REDACTED) and target.keyed
    assert secret_value(target.chap_secret) is None  # a secret to be made, not one to use
    planned = share.to_planned(state)
    assert json.loads(planned.model_dump_json())["params"] == {
        "host": "host-h1", "tid": 1, "iqn": IQN, "lun_path": "/dev/vg0/kerub-root", "disk": "disk-root",
        "initiator": "127.0.0.3", "reason": ""}
    [op] = share.operations(state)
    assert op.secret and op.input is None  # type: ignore[union-attr]
    # the start after it defines the secret on the reader, the executor filling the value in when it runs
    start = StartVm("vm-web", "host-h2")
    secret_op, _start_op = start.operations(after)
    assert secret_op.op == "define-iscsi-secret" and "value" not in secret_op.kwargs()  # type: ignore[union-attr]
    assert start.take(after).host_config["host-h2"].iscsi_secrets == [
        IscsiSecret(usage=iscsi.secret_usage("host-h1", IQN), server="host-h1", tid=1)]
    # a tidy never removes a secret a VM on the host reads with
    usage = iscsi.secret_usage("host-h1", IQN)
    running = start.take(after)
    assert RemoveIscsiSecret("host-h2", usage).blocked(running) == "web on h2 reads with it"


async def test_an_executor_without_the_secret_in_the_store_fails_the_start_saying_why(store: Store) -> None:
    """A document read from JSON (an attached console's mirror) holds the marker: never given to libvirt."""
    marker = IscsiTarget(iqn=IQN, tid=1, lun_path="/dev/vg0/kerub-root", disk_id="disk-root", chap_user=USER,
                         chap_secret=REDACTED, initiators=["127.0.0.3"])
    f = fleet(target=marker)
    store.put_many(f.documents())
    sim = FleetSimulator(f.state())
    start = StartVm("vm-web", "host-h2")
    plan = Plan(steps=[start.to_planned(f.state())])
    store.put(plan)
    approve(store, plan.id, "admin")
    done = await Executor(store, sim).execute(plan.id)
    assert done.status is PlanStatus.failed
    assert "kerub-tui does not know the CHAP secret of iSCSI target 1 on h1" in (done.status_reason or "")
    assert sim.machine("host-h2").libvirt_secrets == {}


def test_export_and_import_hold_no_secret(store: Store, tmp_path: Path) -> None:
    target = IscsiTarget(iqn=IQN, tid=1, lun_path="/dev/vg0/kerub-root", disk_id="disk-root", chap_user=USER,
                         chap_secret="Abcdef0123456789")
    store.put(HostConfiguration(id="host-h1", iscsi_targets=[target]))
    path = tmp_path / "export.json"
    store.export_file(path)
    text = path.read_text()
    assert "Abcdef0123456789" not in text and REDACTED in text
    with Store.open(tmp_path / "other") as other:
        other.import_file(path)
        [back] = other.require(HostConfiguration, "host-h1").iscsi_targets
        # the export held no secret: the target's is unknown after a restore, so it is re-keyed when needed
        assert back.chap_user == USER and back.chap_secret is None and not back.keyed


def test_the_control_socket_and_json_outputs_redact_it() -> None:
    from kerub_tui import cli, control

    target = IscsiTarget(iqn=IQN, tid=1, lun_path="/dev/vg0/kerub-root", chap_user=USER,
                         chap_secret="Abcdef0123456789")
    config = HostConfiguration(id="host-h1", iscsi_targets=[target])
    wire = json.dumps(control._encode(config))
    for text in (wire, cli._json(config), cli._json([config])):
        assert "Abcdef0123456789" not in text and REDACTED in text
    mirrored = control._decode(json.loads(wire))
    assert mirrored.iscsi_targets[0].keyed  # an attached console knows there is one, not what it is
    assert secret_value(mirrored.iscsi_targets[0].chap_secret) is None

