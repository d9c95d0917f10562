"""Shares left by a crash (issue 16): a controller killed between a share step's command and its record
leaves an iSCSI target or a ganesha export that no document explains. Reconcile reads the shares a host has
(tgtadm's show from a real tgtd in a private namespace; the export files kerub-tui wrote, listed by the real
command), proposes removing what no document records, and adopts what an interrupted plan's step made."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerub_tui.core import models as m
from kerub_tui.core.store import Store
from kerub_tui.hosts import iscsi, nfs
from kerub_tui.hosts.results import OperationResult
from kerub_tui.planner import reconcile as rc
from kerub_tui.planner.state import OperationalState
from kerub_tui.planner.steps.sharing import ShareIscsi
from tests.unit.test_ops_iscsi import tgtd  # noqa: F401 (fixture)
from tests.unit.test_ops_netns import (  # noqa: F401 (private_ns is a fixture)
    GANESHA_CORE,
    PrivateNamespace,
    private_ns,
    start_ganesha,
    wait_until,
)

CAPTURES = Path(__file__).parent.parent / "captures" / "ops"
MIB = 1 << 20


# --- the ganesha export files: parser ---------------------------------------------------------------


def test_parse_captured_ganesha_exports() -> None:
    """Listed by the real command over files kerub-tui's builder wrote (capture_ganesha_exports.py); the
    hand-edited file whose Export_Id disagrees with its name is skipped, never trusted."""
    exports = nfs.parse_ganesha_exports((CAPTURES / "ganesha-exports.txt").read_text())
    assert exports == [nfs.GaneshaExport(222, "/srv/nfs/it's $(x) a dir", None),
                       nfs.GaneshaExport(4711, "/var/lib/kerub-tui/images/kerub-disk-1", "10.77.0.11")]
    assert nfs.parse_ganesha_exports("") == []


def test_hostile_ganesha_export_files_are_skipped() -> None:
    hostile = [
        '== export-5.conf\nEXPORT {\n Export_Id = 5;\n Path = "relative/dir";\n}\n',
        '== export-6.conf\nEXPORT {\n Export_Id = 6;\n Path = "/a";\n Path = "/b";\n}\n',
        '== export-7.conf\nEXPORT {\n Export_Id = 7;\n Path = "/a";\n CLIENT { Clients = 1.2.3.4 rw; }\n}\n',
        '== export-0.conf\nEXPORT {\n Export_Id = 0;\n Path = "/root";\n}\n',
        '== export-8.conf\nEXPORT {\n Export_Id = 8;\n Path = "/x\x07y";\n}\n',
    ]
    for text in hostile:
        assert nfs.parse_ganesha_exports(text) == [], text


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=60), st.sampled_from([
    "== export-12.conf", "EXPORT {", "    Export_Id = 12;", '    Path = "/srv/x";', "}",
    "    CLIENT { Clients = 10.0.0.1; Access_Type = RW; }", "== export-13.conf", '    Path = "/srv/$(reboot)";']))))
def test_parse_ganesha_exports_never_crashes(lines: list[str]) -> None:
    for export in nfs.parse_ganesha_exports("\n".join(lines)):
        assert 1 <= export.export_id <= 65535 and export.path.startswith("/")
        nfs.ganesha_remove_export(export.export_id)  # what a cleanup would run builds
        if export.clients is not None:
            nfs.check_clients(export.clients)


def test_the_listing_command_over_a_hostile_directory_name_is_refused() -> None:
    for bad in ("/etc/ganesha/k b", "/etc/$(reboot)", "relative"):
        try:
            nfs.ganesha_exports_command(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


# --- reconcile, pure ----------------------------------------------------------------------------------


def _host(store: Store, name: str = "b") -> m.Host:
    host = m.Host(name=name, address="10.0.0.2")
    store.put_many([host, m.HostDynamic(id=host.id, status=m.HostStatus.up)])
    return host


def test_an_unrecorded_target_and_export_are_offered_for_cleanup(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    try:
        host = _host(store)
        store.put(m.HostConfiguration(id=host.id, iscsi_targets=[m.IscsiTarget(
            iqn=iscsi.disk_iqn("known"), tid=1, lun_path="/dev/vg0/kerub-known")], exports=[m.NfsExport(
                path="/srv/known", clients="10.0.0.3", server="ganesha")]))
        report = rc.HostReport(host.id, targets=(
            rc.SeenObject("iscsi", iscsi.disk_iqn("known"), share_id=1),
            rc.SeenObject("iscsi", iscsi.disk_iqn("left"), share_id=7)), exports=(
            rc.SeenObject("export", "/srv/known", share_id=300),
            rc.SeenObject("export", "/srv/left behind", share_id=301)))
        outcome = rc.reconcile(report, disks=[], disk_dyns=[], configs=store.list(m.HostConfiguration),
                               plans=[])
        assert sorted(o.seen.label() for o in outcome.orphans) == [
            "NFS export /srv/left behind", f"iSCSI target 7 ({iscsi.disk_iqn('left')})"]
        applied = rc.apply(store, outcome)
        assert applied.cleanup is not None
        assert [s.type for s in applied.cleanup.steps] == ["remove-orphan-iscsi", "remove-orphan-export"]
        commands = [c for s in applied.cleanup.steps for c in s.commands]
        assert any("--tid 7" in c.command for c in commands)
        assert any("export-301.conf" in c.command for c in commands)
        # asked once: a second reconcile proposes nothing new
        again = rc.reconcile(report, disks=[], disk_dyns=[], configs=store.list(m.HostConfiguration),
                             plans=store.list(m.Plan))
        assert rc.apply(store, again).cleanup is None
    finally:
        store.close()


def test_a_share_an_interrupted_plan_made_is_adopted(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    try:
        host = _host(store)
        state = OperationalState.from_store(store)
        step = ShareIscsi(host.id, tid=4, iqn=iscsi.disk_iqn("d1"), lun_path="/dev/vg0/kerub-d1")
        plan = m.Plan(plan_kind="start", steps=[step.to_planned(state)], status=m.PlanStatus.interrupted,
                      records=[m.StepRecord(step_index=0, outcome=m.StepOutcome.interrupted)])
        store.put(plan)
        report = rc.HostReport(host.id, targets=(rc.SeenObject("iscsi", iscsi.disk_iqn("d1"), share_id=4),))
        outcome = rc.reconcile(report, disks=[], disk_dyns=[], configs=[], plans=store.list(m.Plan))
        assert outcome.orphans == [] and [s.share_id for _p, _i, s in outcome.adopted_shares] == [4]
        applied = rc.apply(store, outcome)
        assert applied.cleanup is None and applied.adopted == [f"iSCSI target 4 ({iscsi.disk_iqn('d1')})"]
        [target] = store.get(m.HostConfiguration, host.id).iscsi_targets
        assert (target.tid, target.iqn, target.lun_path) == (4, iscsi.disk_iqn("d1"), "/dev/vg0/kerub-d1")
        # another IQN under that tid is not the step's: an orphan
        other = rc.HostReport(host.id, targets=(rc.SeenObject("iscsi", iscsi.disk_iqn("zz"), share_id=5),))
        assert [o.seen.share_id for o in rc.reconcile(other, disks=[], disk_dyns=[], configs=[],
                                                        plans=store.list(m.Plan)).orphans] == [5]
    finally:
        store.close()


def test_a_chap_target_a_cut_off_share_made_is_adopted_with_the_secret_its_record_kept(tmp_path: Path) -> None:
    """The executor commits the secret a share makes into the step's record before tgtadm runs: a controller
    killed in between finds the target on restart and adopts it with that secret (the record lets go of it)."""
    from pydantic import SecretStr

    store = Store.open(tmp_path)
    try:
        host = _host(store)
        state = OperationalState.from_store(store)
        step = ShareIscsi(host.id, tid=4, iqn=iscsi.disk_iqn("d1"), lun_path="/dev/vg0/kerub-d1", initiator="10.0.0.3")
        made = SecretStr("Made0123456789ab")
        plan = m.Plan(plan_kind="start", steps=[step.to_planned(state)], status=m.PlanStatus.interrupted,
                      records=[m.StepRecord(step_index=0, outcome=m.StepOutcome.interrupted, secret=made)])
        store.put(plan)
        assert "Made0123456789ab" not in plan.model_dump_json() and m.REDACTED in plan.model_dump_json()
        seen = rc.SeenObject("iscsi", iscsi.disk_iqn("d1"), share_id=4, users=("kerub-d1",))
        outcome = rc.reconcile(rc.HostReport(host.id, targets=(seen,)), disks=[], disk_dyns=[], configs=[],
                               plans=store.list(m.Plan))
        assert outcome.orphans == [] and [s.share_id for _p, _i, s in outcome.adopted_shares] == [4]
        rc.apply(store, outcome)
        [target] = store.require(m.HostConfiguration, host.id).iscsi_targets
        assert (target.chap_user, m.secret_value(target.chap_secret), target.initiators) == (
            "kerub-d1", "Made0123456789ab", ["10.0.0.3"])
        assert store.require(m.Plan, plan.id).records[0].secret is None
        # cut off before its account was bound (and its ACL, bound after it): half made, never adopted
        store.put(m.HostConfiguration(id=host.id))
        store.put(plan)
        bare = rc.SeenObject("iscsi", iscsi.disk_iqn("d1"), share_id=4)
        outcome = rc.reconcile(rc.HostReport(host.id, targets=(bare,)), disks=[], disk_dyns=[], configs=[],
                               plans=store.list(m.Plan))
        assert outcome.adopted_shares == [] and [o.seen.share_id for o in outcome.orphans] == [4]
    finally:
        store.close()


def test_a_recorded_target_asking_for_another_account_has_its_secret_forgotten(tmp_path: Path) -> None:
    """Discovery reads which account a target asks for: not the recorded one (an admin changed it, tgtd was
    restarted by hand...) and the secret kerub-tui holds is not the target's: forgotten and told, so the
    planner re-keys the target before a new reader logs in."""
    store = Store.open(tmp_path)
    try:
        host = _host(store)
        target = m.IscsiTarget(iqn=iscsi.disk_iqn("d1"), tid=1, lun_path="/dev/vg0/kerub-d1", chap_user="kerub-d1",
                               chap_secret="Kept0123456789ab", disk_id="disk-d1")
        store.put(m.HostConfiguration(id=host.id, iscsi_targets=[target]))
        same = rc.SeenObject("iscsi", target.iqn, share_id=1, users=("kerub-d1",))
        outcome = rc.reconcile(rc.HostReport(host.id, targets=(same,)), disks=[], disk_dyns=[],
                               configs=store.list(m.HostConfiguration), plans=[])
        assert outcome.unkeyed == []
        for users in ((), ("$(reboot)",), ("kerub-d1", "someone")):  # what tgtd prints: any word, told, never run
            changed = rc.SeenObject("iscsi", target.iqn, share_id=1, users=users)
            outcome = rc.reconcile(rc.HostReport(host.id, targets=(changed,)), disks=[], disk_dyns=[],
                                   configs=store.list(m.HostConfiguration), plans=[])
            assert outcome.unkeyed == [(host.id, 1, ", ".join(users) or "none")]
        rc.apply(store, outcome)
        [forgotten] = store.require(m.HostConfiguration, host.id).iscsi_targets
        assert forgotten == target.evolve(chap_secret=None) and not forgotten.keyed
        [event] = [e for e in store.list(m.Event) if e.type == "iscsi-secret-lost"]
        assert "asks for CHAP account(s) kerub-d1, someone, not kerub-d1 as recorded" in event.message
        assert "Kept0123456789ab" not in event.message
    finally:
        store.close()


def test_a_libvirt_secret_no_document_records_is_recorded_where_a_vm_reads_with_it_else_offered(
        tmp_path: Path) -> None:
    """A controller cut off between a start's define-iscsi-secret and its record leaves a libvirt secret on the
    reader: reconcile records it where a VM there reads with it, and offers the others for cleanup."""
    store = Store.open(tmp_path)
    try:
        server = m.Host(name="a", address="10.0.0.2")
        reader = m.Host(name="b", address="10.0.0.3")
        disk = m.VirtualStorageDevice(name="d1", size=MIB)
        vm = m.VirtualMachine(name="web", memory_min=64 * MIB, memory_max=64 * MIB, disks=[m.DiskLink(disk_id=disk.id)])
        iqn = iscsi.disk_iqn(disk.id)
        store.put_many([
            server, reader, disk, vm,
            *(m.HostDynamic(id=h.id, status=m.HostStatus.up) for h in (server, reader)),
            m.VirtualStorageDeviceDynamic(id=disk.id, allocations=[m.LvmAllocation(
                host_id=server.id, capability_id="lvm:vg0", vg="vg0", lv="kerub-d1")]),
            m.HostConfiguration(id=server.id, iscsi_targets=[m.IscsiTarget(
                iqn=iqn, tid=1, lun_path="/dev/vg0/kerub-d1", disk_id=disk.id, chap_user="kerub-d1",
                chap_secret="Kept0123456789ab", initiators=[reader.address])]),
            m.VirtualMachineDynamic(id=vm.id, host_id=reader.id, status=m.VmStatus.up)])
        used = iscsi.secret_usage(server.id, iqn)
        report = rc.HostReport(reader.id, secrets=(rc.SeenObject("iscsi-secret", used),
                                                   rc.SeenObject("iscsi-secret", "kerub-iscsi-stray")))
        # a plan of this process placing a VM there now: its secrets are being defined, nothing is concluded
        placing = m.Plan(plan_kind="start", status=m.PlanStatus.running, steps=[m.PlannedStep(
            type="start-vm", params={"vm": vm.id, "host": reader.id}, description="start web on b")])
        assert rc.reconcile(report, disks=[], disk_dyns=[], configs=store.list(m.HostConfiguration),
                            plans=[placing]).unrecorded_secrets == []
        outcome = rc.reconcile(report, disks=[], disk_dyns=[], configs=store.list(m.HostConfiguration), plans=[])
        assert [o.seen.name for o in outcome.unrecorded_secrets] == [used, "kerub-iscsi-stray"]
        applied = rc.apply(store, outcome)
        assert applied.adopted == [f"iSCSI CHAP secret {used} in libvirt"]
        assert store.require(m.HostConfiguration, reader.id).iscsi_secrets == [
            m.IscsiSecret(usage=used, server=server.id, tid=1)]
        assert applied.cleanup is not None
        [step] = applied.cleanup.steps
        assert (step.type, step.params) == ("remove-orphan-iscsi-secret",
                                            {"host": reader.id, "usage": "kerub-iscsi-stray"})
        assert [c.command for c in step.commands] == [
            "libvirt: virsh secret-undefine (the iscsi secret kerub-iscsi-stray)"]
        # recorded now: a second pass finds nothing
        again = rc.reconcile(report, disks=[], disk_dyns=[], configs=store.list(m.HostConfiguration),
                             plans=store.list(m.Plan))
        assert [o.seen.name for o in again.unrecorded_secrets] == ["kerub-iscsi-stray"]
        assert rc.apply(store, again).cleanup is None  # offered once
    finally:
        store.close()


async def test_read_secrets_through_the_libvirt_operation() -> None:
    class Ops:
        def __init__(self, result: OperationResult) -> None:
            self.result = result

        async def libvirt(self, host_id: str, op: str, **_kw: object) -> OperationResult:
            assert op == "iscsi-secrets"
            return self.result

    seen = await rc.read_secrets(Ops(OperationResult(0, "kerub-iscsi-ab12\nkerub-iscsi-$(x)\n")), "h")
    assert seen == (rc.SeenObject("iscsi-secret", "kerub-iscsi-ab12"),)  # a name no command takes is skipped
    assert await rc.read_secrets(Ops(OperationResult(1, "", "libvirt down")), "h") is None
    assert await rc.read_secrets(object(), "h") is None  # host operations without libvirt: unread


def test_an_acl_entry_no_document_lets_in_is_offered_or_adopted(tmp_path: Path) -> None:
    from kerub_tui.planner.steps.sharing import AllowIscsiInitiator

    store = Store.open(tmp_path)
    try:
        host = _host(store)
        store.put(m.HostConfiguration(id=host.id, iscsi_targets=[m.IscsiTarget(
            iqn=iscsi.disk_iqn("d1"), tid=1, lun_path="/dev/vg0/kerub-d1", initiators=["10.0.0.3"])]))
        report = rc.HostReport(host.id, targets=(
            rc.SeenObject("iscsi", iscsi.disk_iqn("d1"), share_id=1),
            rc.SeenObject("iscsi-acl", "10.0.0.3", share_id=1), rc.SeenObject("iscsi-acl", "10.0.0.4", share_id=1),
            rc.SeenObject("iscsi-acl", "10.0.0.9", share_id=1)))
        state = OperationalState.from_store(store)
        allow = AllowIscsiInitiator(host.id, 1, "10.0.0.4")
        plan = m.Plan(plan_kind="evacuate", steps=[allow.to_planned(state)], status=m.PlanStatus.interrupted,
                      records=[m.StepRecord(step_index=0, outcome=m.StepOutcome.interrupted)])
        store.put(plan)
        outcome = rc.reconcile(report, disks=[], disk_dyns=[], configs=store.list(m.HostConfiguration),
                               plans=store.list(m.Plan))
        applied = rc.apply(store, outcome)
        assert applied.adopted == ["10.0.0.4 in the ACL of iSCSI target 1"]  # the interrupted plan's bind
        [target] = store.get(m.HostConfiguration, host.id).iscsi_targets
        assert target.initiators == ["10.0.0.3", "10.0.0.4"]
        assert applied.cleanup is not None
        [step] = applied.cleanup.steps
        assert step.type == "remove-orphan-iscsi-acl"
        [command] = step.commands
        assert "--op unbind --tid 1 --initiator-address 10.0.0.9" in command.command
    finally:
        store.close()


# --- read from a real tgtd, cleaned up with the plan's own command -------------------------------------


class _NsOps:
    """Runs the reconciler's commands in the private namespace, as a host's runner would over SSH."""

    def __init__(self, ns: PrivateNamespace) -> None:
        self.ns = ns

    async def run(self, host_id: str, command: str, **_kw: object) -> OperationResult:
        done = await asyncio.to_thread(self.ns.run, command, check=False)
        return OperationResult(done.returncode, done.stdout, done.stderr)


async def test_read_shares_from_a_real_tgtd_and_remove_the_orphan(tgtd: PrivateNamespace, tmp_path: Path) -> None:
    lun = tmp_path / "lun.img"
    with lun.open("wb") as f:
        f.truncate(4 * MIB)
    tgtd.run(iscsi.iscsi_share(2, iscsi.disk_iqn("kept"), str(lun), None, None, initiator_address="127.0.0.1"))
    tgtd.run(iscsi.iscsi_share(3, iscsi.disk_iqn("left"), str(lun), None, None, initiator_address="127.0.0.1"))
    tgtd.run(iscsi.iscsi_share(4, "iqn.2001-04.com.example:theirs", str(lun), None, None))
    tgtd.run(iscsi.iscsi_acl_bind(2, "127.0.0.5"))  # bound, then the controller was killed before recording it
    tgtd.run(iscsi.iscsi_share_chap(5, iscsi.disk_iqn("chap"), str(lun), "kerub-chap"), input=b"Chap0123456789ab")
    export_dir = tmp_path / "ganesha"
    export_dir.mkdir()
    (export_dir / "export-140.conf").write_text(nfs.ganesha_export_block(140, "/srv/left"))
    ops = _NsOps(tgtd)
    targets, exports = await rc.read_shares(ops, "h", export_dir=str(export_dir))
    assert targets is not None and sorted((t.share_id, t.name, t.users) for t in targets if t.kind == "iscsi") == [
        (2, iscsi.disk_iqn("kept"), ()), (3, iscsi.disk_iqn("left"), ()),
        (5, iscsi.disk_iqn("chap"), ("kerub-chap",))]  # not the admin's own target 4; whether one asks for CHAP
    targets = tuple(t for t in targets if t.share_id != 5)
    assert exports == (rc.SeenObject("export", "/srv/left", share_id=140),)
    store = Store.open(tmp_path / "store")
    try:
        host = _host(store)
        store.put(m.HostConfiguration(id=host.id, iscsi_targets=[m.IscsiTarget(
            iqn=iscsi.disk_iqn("kept"), tid=2, lun_path=str(lun), initiators=["127.0.0.1"])]))
        report = rc.HostReport(host.id, targets=tuple(targets))
        outcome = rc.reconcile(report, disks=[], disk_dyns=[], configs=store.list(m.HostConfiguration), plans=[])
        # target 3 (its ACL goes with it) and 127.0.0.5 in recorded target 2's ACL; 127.0.0.1 is recorded
        assert sorted(o.seen.label() for o in outcome.orphans) == [
            "127.0.0.5 in the ACL of iSCSI target 2", f"iSCSI target 3 ({iscsi.disk_iqn('left')})"]
        state = OperationalState.from_store(store)
        for orphan in outcome.orphans:
            step = rc.removal_step(orphan)
            assert step.blocked(state) is None
            for op in step.operations(state):
                tgtd.run(op.command)
    finally:
        store.close()
    left = {t.tid: t.acl for t in iscsi.parse_tgtadm_show(tgtd.run(iscsi.iscsi_show_command()).stdout)}
    assert left == {2: ("127.0.0.1",), 4: ("ALL",), 5: ("ALL",)}


async def test_a_host_without_tgtd_is_unread_not_empty(tmp_path: Path) -> None:
    class Local:
        async def run(self, host_id: str, command: str, **_kw: object) -> OperationResult:
            done = subprocess.run(["/bin/sh", "-c", f"PATH=/nonexistent; {command}"], capture_output=True, text=True)
            return OperationResult(done.returncode, done.stdout, done.stderr)

    targets, exports = await rc.read_shares(Local(), "h", export_dir=str(tmp_path / "none"))
    assert targets is None  # tgtadm not there: nothing concluded, nothing removed
    assert exports == ()  # no export directory: kerub-tui exported nothing with ganesha there


# --- a real ganesha: an export to two clients (a VM's reader and the host it migrates to) ------------------


def test_ganesha_serves_an_export_to_two_clients_then_to_one(private_ns: PrivateNamespace, tmp_path: Path) -> None:
    if shutil.which("qemu-img") is None or shutil.which("showmount") is None:
        pytest.skip("qemu-img and showmount (nfs-common) are needed")
    config = tmp_path / "ganesha.conf"
    config.write_text(GANESHA_CORE)
    start_ganesha(private_ns, config)
    export = tmp_path / "images"
    export.mkdir()
    (export / "kerub-root.img").write_bytes(b"\0" * MIB)
    url = nfs.nfs_qemu_url("127.0.0.1", str(export), "kerub-root.img")
    export_dir = str(tmp_path / "kerub")

    def add(clients: list[str]) -> None:
        private_ns.run(nfs.ganesha_add_export(43, str(export), clients=clients, config=str(config),
                                              export_dir=export_dir, pid_file=nfs.GANESHA_PID_FILE))

    def listed() -> list[str] | None:
        return nfs.parse_showmount_exports(private_ns.run(nfs.nfs_exports_command()).stdout).get(str(export))

    add(["127.0.0.1", "127.0.0.2"])
    wait_until(lambda: listed() == ["127.0.0.1/32", "127.0.0.2/32"], "the export to both clients")
    assert private_ns.run(f"qemu-img info {url}", check=False).returncode == 0
    shown = private_ns.run(nfs.ganesha_exports_command(export_dir)).stdout
    assert nfs.parse_ganesha_exports(shown) == [nfs.GaneshaExport(43, str(export), "127.0.0.1, 127.0.0.2")]
    add(["127.0.0.2"])  # the reader that moved away is taken out: the export stays for the other
    wait_until(lambda: listed() in (None, ["127.0.0.2/32"]), "the export for 127.0.0.2 alone")
    assert private_ns.run(f"qemu-img info {url}", check=False).returncode != 0
    for hostile in (["127.0.0.1", "a; b"], ["127.0.0.1, 10.0.0.0/8"], []):
        with pytest.raises(ValueError):
            nfs.ganesha_export_block(43, str(export), clients=hostile)
