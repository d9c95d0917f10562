"""Names kerub-tui would not put in a command never crash the planner (a host's output must never crash
it): a volume group, ZFS pool or file storage path a host printed, and a disk name LVM reserves that a
document carries (made before such names were refused at input, or imported). Such storage takes no new
data (the reason is said where the admin looks: vm show, the replanner's event, host show), and a step
that would need the name of existing data there is refused saying why. The PV side is in test_steps.py
(test_a_pv_named_by_a_hostile_host_never_reaches_a_command)."""

from __future__ import annotations

import shlex

import pytest

from kerub_tui.core.models import (
    Event,
    FileAllocation,
    LvmAllocation,
    StorageCapability,
    StorageTechnology,
    VirtualStorageDeviceDynamic,
    ZfsAllocation,
)
from kerub_tui.core.store import Store
from kerub_tui.planner.explain import no_host_reason, no_storage_reason
from kerub_tui.planner.planning import plan_all
from kerub_tui.planner.replanner import Replanner
from kerub_tui.planner.steps import (
    ConvertLvToMirror,
    CopyAllocation,
    CreateLv,
    ExtendLv,
    RemoveFileImage,
    RemoveLv,
    RemoveZfsVolume,
    StartVm,
)

from .fleet import GIB, NOW, Fleet

# printable ASCII without spaces: what discovery's lvs/vgs parser accepts, and check_vg refuses
HOSTILE_VGS = ["vg0;x", "$(id)", "x`id`", "-x", "a..b", "vg|x", "v>g", "mapper"]
LVM_RESERVED = ["x_tmeta", "a_mlog", "b_rimage_0", "c_cdata", "d_pmspare"]


def lvm(vg: str, free: int = 900 * GIB) -> StorageCapability:
    return StorageCapability(id=f"lvm:{vg}", technology=StorageTechnology.lvm, name=vg, size_bytes=free,
                             free_bytes=free, device="/dev/sda")


def commands(drafts) -> list[str]:
    """Every command of every proposal, as the replanner renders them (to_plan): a crash here is the bug."""
    return [c.command for draft in drafts for step in draft.to_plan().steps for c in step.commands]


def on_hostile(vg: str, *, size: int = 10 * GIB, disk_expect: list[str] = (), vm_expect: list[str] = (),
               actual: int | None = None) -> Fleet:
    """h1 has only the hostile VG and holds disk data there (an LV made before, or by hand); h2 a good one.
    VM web uses the disk and is down."""
    f = Fleet()
    f.host("h1", storage=[lvm(vg)])
    f.host("h2", vg_free=200 * GIB)
    f.disk("data", size=size, expect=list(disk_expect))
    f.put(VirtualStorageDeviceDynamic(id="disk-data", allocations=[LvmAllocation(
        host_id="host-h1", capability_id=f"lvm:{vg}", vg=vg, lv="kerub-data", actual_size=actual)]))
    f.vm("web", disks=["data"], expect=list(vm_expect))
    return f


@pytest.mark.parametrize("vg", HOSTILE_VGS)
def test_a_new_disk_never_goes_on_a_volume_group_no_command_carries(vg: str) -> None:
    """The hostile VG has the most room; the disk goes on the proper one, every word quoted."""
    f = Fleet()
    f.host("h1", storage=[lvm(vg)])
    f.host("h2", vg_free=100 * GIB)
    f.disk("data", size=10 * GIB, expect=["storage-availability@dealbreaker"])
    done = commands(plan_all(f.state()))
    assert done == ["lvcreate --yes --name kerub-data --size 10737418240b vg0"]
    assert all(shlex.join(shlex.split(c)) == c for c in done)


@pytest.mark.parametrize("vg", HOSTILE_VGS)
def test_a_host_with_only_such_a_volume_group_gets_nothing_and_says_why(vg: str) -> None:
    f = Fleet()
    f.host("h1", storage=[lvm(vg)])
    f.disk("data", size=10 * GIB, expect=["storage-availability@dealbreaker"])
    f.vm("web", disks=["data"], expect=["availability:up@dealbreaker"])
    s = f.state()
    assert not any(vg in c for c in commands(plan_all(s)))
    why = no_storage_reason(s, "disk-data") or ""
    assert why.startswith(f"h1: lvm:{vg}: volume group name {vg!r}") and "(kerub-tui puts no such name in a command)" in why, why
    text = no_host_reason(s, "vm-web") or ""  # vm show, vm list: why it cannot be placed
    assert text.startswith(f"no host fits: h1: disk data: lvm:{vg}: volume group name {vg!r}"), text


def test_the_replanner_says_so_once_and_proposes_nothing_on_it(tmp_path) -> None:
    f = Fleet()
    f.host("h1", storage=[lvm("vg0;x")])
    f.disk("data", size=10 * GIB, expect=["storage-availability@dealbreaker"])
    with Store.open(tmp_path) as store:
        store.put_many(f.documents())
        replanner = Replanner(store, clock=lambda: NOW)
        for _ in range(2):
            assert replanner.replan().proposed == []
        [event] = [e.message for e in store.list(Event) if e.type == "unsatisfiable"]
        assert event == (
            "no plan can fix: disk data: storage-availability@dealbreaker: not allocated on any host (h1: "
            "lvm:vg0;x: volume group name 'vg0;x' contains ';', which is not allowed: use letters, digits, '.', '_' "
            "and '-' (kerub-tui puts no such name in a command))")


@pytest.mark.parametrize("vg", HOSTILE_VGS)
def test_existing_data_on_such_a_volume_group_never_crashes_a_plan(vg: str) -> None:
    """Whatever the planner wants of the disk there (start its VM, grow it, copy it, remove it, evacuate
    the host, share it), it never puts the VG's name in a command: those steps are refused saying why."""
    situations = [
        on_hostile(vg, vm_expect=["availability:up@dealbreaker"]),
        on_hostile(vg, disk_expect=["storage-redundancy:2@dealbreaker"]),
        on_hostile(vg, disk_expect=["storage-availability:down@dealbreaker"]),
        on_hostile(vg, size=20 * GIB, actual=10 * GIB),  # undersized: grown by lvextend
    ]
    recycled = on_hostile(vg)
    recycled.put(recycled.docs[("host", "host-h1")].evolve(recycling=True))
    situations.append(recycled)
    for f in situations:
        assert not any(vg in c for c in commands(plan_all(f.state())))  # not even a share of the LV's path
    s = situations[0].state()
    for step in [StartVm("vm-web", "host-h1"), RemoveLv("disk-data", "host-h1", f"lvm:{vg}", vg, "kerub-data"),
                 ExtendLv("disk-data", "host-h1", f"lvm:{vg}", vg, "kerub-data", 20 * GIB),
                 ConvertLvToMirror("disk-data", "host-h1", f"lvm:{vg}", vg, "kerub-data", 1),
                 CopyAllocation("disk-data", "host-h1", f"lvm:{vg}", "host-h2", "lvm:vg0")]:
        assert f"volume group name {vg!r}" in (step.blocked(s) or ""), step


@pytest.mark.parametrize("name", LVM_RESERVED)
def test_a_disk_named_as_lvm_reserves_gets_no_lv_and_goes_on_file_storage(name: str) -> None:
    """A document from before such names were refused: no LV is planned for it (LVM would refuse
    kerub-NAME), a file image is, and where LVM is all there is, the reason says so."""
    f = Fleet()
    f.host("h1", storage=[lvm("vg0"), StorageCapability(
        id="file:/var/lib/kerub", technology=StorageTechnology.file, name="/var/lib/kerub", size_bytes=50 * GIB,
        free_bytes=50 * GIB)])
    f.disk(name, size=GIB, expect=["storage-availability@dealbreaker"])
    assert commands(plan_all(f.state())) == [
        f"qemu-img create -q -f qcow2 /var/lib/kerub/kerub-{name}.qcow2 1073741824"]
    g = Fleet()
    g.host("h1")
    g.disk(name, size=GIB, expect=["storage-availability@dealbreaker"])
    g.vm("web", disks=[name], expect=["availability:up@dealbreaker"])
    s = g.state()
    assert commands(plan_all(s)) == []
    assert "which LVM reserves" in (no_storage_reason(s, f"disk-{name}") or "")
    assert "which LVM reserves" in (no_host_reason(s, "vm-web") or "")
    assert "which LVM reserves" in (CreateLv(f"disk-{name}", "host-h1", "lvm:vg0", "vg0", f"kerub-{name}", GIB)
                                    .blocked(s) or "")


@pytest.mark.parametrize("name", LVM_RESERVED)
def test_a_disk_named_as_lvm_reserves_with_an_lv_already_is_never_a_crash(name: str) -> None:
    f = Fleet()
    f.host("h1", recycling=True)
    f.host("h2")
    f.disk(name, size=GIB, on=["h1"], expect=["storage-redundancy:2@dealbreaker"])
    f.vm("web", disks=[name], expect=["availability:up@dealbreaker"])
    s = f.state()
    commands(plan_all(s))
    assert "which LVM reserves" in (
        RemoveLv(f"disk-{name}", "host-h1", "lvm:vg0", "vg0", f"kerub-{name}").blocked(s) or "")


@pytest.mark.parametrize("path", ["relative/dir", "/a/../b", "/x\ny", "//srv", "/srv/./x"])
def test_file_storage_at_a_path_no_command_carries(path: str) -> None:
    f = Fleet()
    f.host("h1", storage=[StorageCapability(id=f"file:{path}", technology=StorageTechnology.file, name=path,
                                            size_bytes=900 * GIB, free_bytes=900 * GIB)])
    f.host("h2", vg_free=100 * GIB)
    f.disk("data", size=GIB, expect=["storage-availability@dealbreaker"])
    assert commands(plan_all(f.state())) == ["lvcreate --yes --name kerub-data --size 1073741824b vg0"]


@pytest.mark.parametrize("path", ["//srv/kerub-data.qcow2", "/srv/./kerub-data.qcow2"])
def test_an_image_at_a_path_no_command_carries_is_never_a_crash(path: str) -> None:
    """The document's own rules let these through (absolute, no '..'); qemu-img's builder does not."""
    f = Fleet()
    f.host("h1", storage=[StorageCapability(id="file:/srv", technology=StorageTechnology.file, name="/srv",
                                            size_bytes=900 * GIB, free_bytes=900 * GIB)])
    f.disk("data", size=GIB, expect=["storage-availability:down@dealbreaker"])
    f.put(VirtualStorageDeviceDynamic(id="disk-data", allocations=[FileAllocation(
        host_id="host-h1", capability_id="file:/srv", path=path)]))
    s = f.state()
    assert commands(plan_all(s)) == []
    assert "must be normalised" in (RemoveFileImage("disk-data", "host-h1", "file:/srv", path).blocked(s) or "")


@pytest.mark.parametrize("pool", ["p;x", "mirror", "c0", "1pool", "-p"])
def test_a_zfs_pool_no_command_carries(pool: str) -> None:
    f = Fleet()
    tools = {"lvm": True, "qemu-img": True, "zfs": True, "gvinum": False}
    f.host("h1", tools=tools, storage=[StorageCapability(id=f"zfs:{pool}", technology=StorageTechnology.zfs,
                                                         name=pool, size_bytes=900 * GIB, free_bytes=900 * GIB)])
    f.host("h2", vg_free=100 * GIB)
    f.disk("data", size=GIB, expect=["storage-availability@dealbreaker"])
    assert commands(plan_all(f.state())) == ["lvcreate --yes --name kerub-data --size 1073741824b vg0"]
    f.disk("data", size=GIB, expect=["storage-availability:down@dealbreaker"])
    f.put(VirtualStorageDeviceDynamic(id="disk-data", allocations=[ZfsAllocation(
        host_id="host-h1", capability_id=f"zfs:{pool}", pool=pool, volume="kerub-data")]))
    s = f.state()
    commands(plan_all(s))
    assert RemoveZfsVolume("disk-data", "host-h1", f"zfs:{pool}", pool, "kerub-data").blocked(s)


@pytest.mark.parametrize(("vg", "name"), [("vg0;x", "kerub-lost"), ("mapper", "kerub-lost"),
                                          ("vg0", "kerub-x;reboot"), ("vg0", "kerub-a_tmeta")])
def test_a_kerub_named_lv_no_command_carries_is_never_offered_for_cleanup(tmp_path, vg: str, name: str) -> None:
    """Reconcile reads lvs after a restart: a kerub-named LV nobody knows on a VG (or with a name) the
    builders refuse is left alone, not a cleanup whose rendering crashes; one beside it is offered."""
    from kerub_tui.core.models import HostConfiguration, Plan, VirtualStorageDevice
    from kerub_tui.planner import reconcile as rc

    f = Fleet()
    f.host("h1")
    report = rc.HostReport("host-h1", lvs=(rc.SeenObject("lv", name, GIB, vg, None),
                                           rc.SeenObject("lv", "kerub-old", GIB, "vg0", None)), files=())
    with Store.open(tmp_path) as store:
        store.put_many(f.documents())
        outcome = rc.reconcile(report, disks=[d.id for d in store.list(VirtualStorageDevice)],
                               disk_dyns=store.list(VirtualStorageDeviceDynamic),
                               configs=store.list(HostConfiguration), plans=store.list(Plan))
        plan = rc.apply(store, outcome, now=NOW).cleanup
        assert [c.command for s in plan.steps for c in s.commands] == ["lvremove --yes vg0/kerub-old"]


# --- iSCSI CHAP: the account and the libvirt secret's usage name of a target a document holds ------------


@pytest.mark.parametrize("user", ["x;reboot", "$(id)", "a b", "-x", "", "x" * 65, "x\ny"])
def test_a_chap_user_no_command_carries_is_refused_at_the_document(user: str) -> None:
    """The account reaches tgtadm and the domain XML: a document (an import) cannot hold one no builder takes."""
    from pydantic import ValidationError

    from kerub_tui.core.models import IscsiTarget

    with pytest.raises(ValidationError, match="CHAP user"):
        IscsiTarget(iqn="iqn.2024-01.org.kerub:d", tid=1, lun_path="/dev/vg0/kerub-d", chap_user=user)


@pytest.mark.parametrize("iqn", ["iqn.2024-01.org.kerub:a'b;reboot", "$(id)", "IQN WITH SPACES", "x" * 300])
def test_a_target_with_an_iqn_no_command_carries_never_crashes_the_planner(iqn: str) -> None:
    """An imported target with an IQN the builders refuse: the planner plans around it (the secret's usage is a
    digest of it), the reader's start names no such IQN anywhere, a tidy of it still renders."""
    from kerub_tui.core.models import HostConfiguration, IscsiTarget, VirtualMachineDynamic
    from kerub_tui.planner.problems import all_problems

    f = Fleet()
    f.host("h1", memory=4 * GIB)
    f.host("h2", memory=32 * GIB)
    f.disk("root", size=300 * GIB, on=["h1"])
    f.vm("web", memory=8 * GIB, disks=["root"], expect=["availability:up@dealbreaker"])
    target = IscsiTarget(iqn=iqn, tid=1, lun_path="/dev/vg0/kerub-root", disk_id="disk-root", chap_user="kerub-d",
                         chap_secret="Abcdef0123456789", initiators=["127.0.0.3"])
    f.put(HostConfiguration(id="host-h1", iscsi_targets=[target]))
    state = f.state()
    start = StartVm("vm-web", "host-h2")
    for command in (c.command for c in start.commands(state)):
        assert iqn not in command and "Abcdef0123456789" not in command
    after = start.take(state)
    [secret] = after.host_config["host-h2"].iscsi_secrets
    assert secret.usage.startswith("kerub-iscsi-") and shlex.split(secret.usage) == [secret.usage]
    commands(plan_all(state))
    running = f.state().apply([VirtualMachineDynamic(id="vm-web", host_id="host-h2", status="up")])
    all_problems(running)
    commands(plan_all(f.state().apply([HostConfiguration(id="host-h2", iscsi_secrets=[secret])])))
