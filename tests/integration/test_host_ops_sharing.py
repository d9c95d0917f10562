"""iSCSI sharing steps carried out by the executor on a lab host running tgtd, read from another lab
host with qemu's own initiator (no kernel iSCSI here). The planner does not plan shares yet, so the
steps are handed to the executor as an approved plan, as the replanner would.

NFS is not run on the lab: nfs-ganesha needs rpcbind and the NFS ports of the one network namespace
all lab hosts share; its builders run end to end in a private network namespace in
tests/unit/test_ops_nfs.py.
"""

from __future__ import annotations

import shutil

import pytest

from kerub_tui.core.models import Host, HostConfiguration, Plan, PlanStatus
from kerub_tui.hosts import iscsi
from kerub_tui.planner.commitments import build_state
from kerub_tui.planner.steps import ShareIscsi, UnshareIscsi

from .test_host_ops import controller_on, until

pytestmark = pytest.mark.lab

MARKER = "KerubIscsiLabCheck"  # letters only: qemu-io shows other bytes as dots


def start_tgtd(labhost) -> None:
    # The lab hosts share one network namespace: this tgtd listens on its host's own address only.
    labhost.run(f"mkdir -p /run/tgtd && tgtd --iscsi portal={labhost.address}:3260", check=True)


def stop_tgtd(labhost) -> None:
    labhost.run("tgtadm --lld iscsi --mode target --op show | sed -n 's/^Target \\([0-9]*\\):.*/\\1/p' | "
                "while read t; do tgtadm --lld iscsi --mode target --op delete --force --tid $t; done; "
                "tgtadm --op delete --mode system")


async def run_steps(c, *steps) -> Plan:
    state = build_state(c.db)
    plan = Plan(plan_kind="share", steps=[s.to_planned(state) for s in steps], status=PlanStatus.approved)
    c.db.put(plan)
    return await until(lambda: (p := c.db.get(Plan, plan.id)) and p.status in (PlanStatus.done, PlanStatus.failed)
                       and p, "the sharing plan to finish")


def qemu_read(labhost, url: str):
    return labhost.run(["qemu-io", "-r", "-f", "raw", "-c", f"read -v 0 {len(MARKER)}", url])


async def test_an_lv_shared_over_iscsi_is_read_by_qemu_on_another_host(clean_lab, tmp_path):
    if shutil.which("tgtd") is None or shutil.which("qemu-io") is None:
        pytest.skip("tgt (tgtd) or qemu-io (qemu-utils) is not installed")
    server, client = clean_lab.hosts[:2]
    server.run(f"lvcreate -qq --yes --name kerub-shared --size 4m {server.vg} && "
               f"printf %s {MARKER} | dd of=/dev/{server.vg}/kerub-shared conv=notrunc,fsync status=none",
               check=True)
    start_tgtd(server)
    try:
        async with controller_on(clean_lab, tmp_path, hosts=2) as c:
            host_id = c.db.find_by_name(Host, server.name).id
            iqn = iscsi.disk_iqn("shared-disk")
            url = f"iscsi://{server.address}/{iqn}/1"
            share = ShareIscsi(host_id, 1, iqn, f"/dev/{server.vg}/kerub-shared")
            done = await run_steps(c, share)
            assert done.status is PlanStatus.done, done.status_reason
            assert done.records[0].commands[0].command == iscsi.iscsi_share(1, iqn, share.lun_path, None, None)
            [target] = c.db.require(HostConfiguration, host_id).iscsi_targets
            assert (target.tid, target.iqn) == (1, iqn)

            read = qemu_read(client, url)  # qemu's own initiator, on the other lab host
            assert read.returncode == 0, read.stderr
            assert MARKER in "".join(line.split("  ")[-1] for line in read.stdout.splitlines())

            done = await run_steps(c, UnshareIscsi(host_id, 1))
            assert done.status is PlanStatus.done, done.status_reason
            assert c.db.require(HostConfiguration, host_id).iscsi_targets == []
            assert qemu_read(client, url).returncode != 0
            assert iscsi.parse_tgtadm_show(server.run(iscsi.iscsi_show_command(), check=True).stdout) == []

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
    finally:
        stop_tgtd(server)
