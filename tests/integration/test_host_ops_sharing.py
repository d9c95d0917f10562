"""Sharing steps carried out by the executor on a lab host, read from another lab host with qemu's own
clients (no kernel iSCSI or NFS here): an LV over iSCSI (the host's tgtd), a directory over NFS (the host's
rpcbind and nfs-ganesha). Each full lab host has its own network namespace on the lab's bridge, and runs
its own tgtd, rpcbind and ganesha there (tests/lab), so the reader reaches the server's address as a
real host would. The steps are handed to the executor as an approved plan, as the replanner would.
"""

from __future__ import annotations

import shutil

import pytest

from kerub_tui.core.models import Host, HostConfiguration, Plan, PlanStatus, secret_value
from kerub_tui.hosts import iscsi, nfs
from kerub_tui.planner.commitments import build_state
from kerub_tui.planner.steps import ExportNfs, ShareIscsi, UnexportNfs, UnshareIscsi
from kerub_tui.planner.steps.sharing import ganesha_export_id

from .test_host_ops import controller_on, until

pytestmark = pytest.mark.lab

MARKER = "KerubIscsiLabCheck"  # letters only: qemu-io shows other bytes as dots


async def run_steps(c, *steps) -> Plan:
    state = build_state(c.db)
    plan = Plan(plan_kind="share", steps=[s.to_planned(state) for s in steps], status=PlanStatus.approved)
    c.db.put(plan)
    return await until(lambda: (p := c.db.get(Plan, plan.id)) and p.status in (PlanStatus.done, PlanStatus.failed)
                       and p, "the sharing plan to finish")


def qemu_read(labhost, url: str):
    return labhost.run(["qemu-io", "-r", "-f", "raw", "-c", f"read -v 0 {len(MARKER)}", url])


def read_marker(labhost, url: str) -> bool:
    read = qemu_read(labhost, url)
    assert read.returncode == 0, read.stderr
    return MARKER in "".join(line.split("  ")[-1] for line in read.stdout.splitlines())


async def test_an_lv_shared_over_iscsi_is_read_by_qemu_on_another_host(clean_lab, tmp_path):
    if shutil.which("tgtd") is None or shutil.which("qemu-io") is None:
        pytest.skip("tgt (tgtd) or qemu-io (qemu-utils) is not installed")
    server, client = clean_lab.hosts[:2]
    server.run(f"lvcreate -qq --yes --name kerub-shared --size 4m {server.vg} && "
               f"printf %s {MARKER} | dd of=/dev/{server.vg}/kerub-shared conv=notrunc,fsync status=none",
               check=True)
    async with controller_on(clean_lab, tmp_path, hosts=2) as c:
        host_id = c.db.find_by_name(Host, server.name).id
        iqn = iscsi.disk_iqn("shared-disk")
        url = f"iscsi://{server.address}/{iqn}/1"
        share = ShareIscsi(host_id, 1, iqn, f"/dev/{server.vg}/kerub-shared")
        done = await run_steps(c, share)
        assert done.status is PlanStatus.done, done.status_reason
        user = iscsi.chap_user(iqn)
        assert done.records[0].commands[0].command == iscsi.iscsi_share_chap(1, iqn, share.lun_path, user)
        [target] = c.db.require(HostConfiguration, host_id).iscsi_targets
        assert (target.tid, target.iqn, target.chap_user) == (1, iqn, user)
        secret = secret_value(target.chap_secret)
        assert secret is not None and secret not in done.model_dump_json()
        [shown] = iscsi.parse_tgtadm_show(server.run(iscsi.iscsi_show_command(), check=True).stdout)
        assert shown.incoming_users == (user,)  # the server's real tgtd asks for the target's own account

        # qemu's own initiator, on the other lab host: with the secret (in a URL here, a test's shortcut: the
        # product gives it to libvirt), and refused without it
        authed = f"iscsi://{user}%{secret}@{server.address}/{iqn}/1"
        assert read_marker(client, authed)
        assert qemu_read(client, url).returncode != 0

        done = await run_steps(c, UnshareIscsi(host_id, 1))
        assert done.status is PlanStatus.done, done.status_reason
        assert c.db.require(HostConfiguration, host_id).iscsi_targets == []
        assert qemu_read(client, authed).returncode != 0
        assert iscsi.parse_tgtadm_show(server.run(iscsi.iscsi_show_command(), check=True).stdout) == []
        # its account went with it
        assert iscsi.parse_tgtadm_accounts(server.run(iscsi.iscsi_accounts_command(), check=True).stdout) == []

        # The same target twice: tgtd refuses, the plan fails with tgtadm's words.
        first = await run_steps(c, share)
        assert first.status is PlanStatus.done
        again = Plan(plan_kind="share", status=PlanStatus.approved,
                     steps=[ShareIscsi(host_id, 2, iqn, share.lun_path).to_planned(build_state(c.db))])
        c.db.put(again)
        failed = await until(lambda: (p := c.db.get(Plan, again.id)) and p.status in (PlanStatus.done,
                             PlanStatus.failed) and p, "the second share to finish")
        assert failed.status is PlanStatus.failed
        assert "tgtadm" in failed.status_reason and "exited" in failed.status_reason


async def test_a_directory_exported_over_nfs_by_ganesha_is_read_by_qemu_on_that_host_alone(clean_lab, tmp_path):
    if shutil.which("ganesha.nfsd") is None or shutil.which("qemu-io") is None:
        pytest.skip("nfs-ganesha or qemu-io (qemu-utils) is not installed")
    server, client, other = clean_lab.hosts
    directory = "/tmp/kerub-exported"  # in the server's own /tmp (each lab host has its own)
    server.run(f"mkdir -p {directory} && printf %s {MARKER} > {directory}/disk.img && "
               f"truncate -s 1M {directory}/disk.img", check=True)
    url = nfs.nfs_qemu_url(server.address, directory, "disk.img")
    async with controller_on(clean_lab, tmp_path, hosts=2) as c:
        host_id = c.db.find_by_name(Host, server.name).id
        export = ExportNfs(host_id, directory, client.address, server="ganesha")
        done = await run_steps(c, export)
        assert done.status is PlanStatus.done, done.status_reason
        assert done.records[0].commands[0].command == nfs.ganesha_add_export(
            ganesha_export_id(directory), directory, clients=client.address)
        [entry] = c.db.require(HostConfiguration, host_id).exports
        assert (entry.path, entry.clients, entry.server) == (directory, client.address, "ganesha")

        # qemu's own NFS client on the host the export names, over the lab's network (ganesha's
        # reload on SIGHUP is its own: the read is retried until the export is there)
        await until(lambda: qemu_read(client, url).returncode == 0, "the export to be read from the client")
        assert read_marker(client, url)
        refused = qemu_read(other, url)  # a third host is not among the export's clients
        assert refused.returncode != 0

        done = await run_steps(c, UnexportNfs(host_id, directory, client.address, server="ganesha"))
        assert done.status is PlanStatus.done, done.status_reason
        assert c.db.require(HostConfiguration, host_id).exports == []
        await until(lambda: qemu_read(client, url).returncode != 0, "the export to go")
