"""Clones of an image and the cloud-init seed in the planner (planner/image_steps.py): what the
factories propose, each step's pure take(), what blocks it, its exact commands, and through the
executor: the seed goes to the host on standard input and its user data nowhere else."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator

import pytest

from kerub_tui.core.models import (
    AuditEntry,
    CloudInit,
    DiskLink,
    Event,
    FileAllocation,
    ImageInfo,
    Plan,
    PlanStatus,
    SeedFile,
    StorageCapability,
    StorageTechnology,
    VirtualMachine,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
)
from kerub_tui.core.store import Store
from kerub_tui.hosts.cloudinit import read_seed, seed_digest, seed_path
from kerub_tui.planner.commitments import build_state
from kerub_tui.planner.executor import Executor
from kerub_tui.planner.image_steps import (
    CloneImageOverlay,
    CloneImageToLv,
    WriteSeed,
    overlay_users,
    seed_missing,
)
from kerub_tui.planner.planning import repair_draft
from kerub_tui.planner.replanner import approve
from kerub_tui.planner.steps import RemoveFileImage, StartVm, step_from_planned

from .fleet import GIB, NOW, Fleet, disk_id, host_id, vm_id
from .simulator import FleetSimulator

IMAGE_PATH = "/var/lib/kerub/images/debian 12 $(reboot).qcow2"  # hostile on purpose: quoted everywhere
SECRET = "hunter2-Sup3r-s3cret"
USER_DATA = f"#cloud-config\npassword: {SECRET}\n"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGr7Qq0n0eQm2E4Oq2m3ZbW8u2Kq0x8mRk8o1m8p2hXw admin@jump"
FILE_CAP = StorageCapability(id="file:/var/lib/kerub/images", technology=StorageTechnology.file,
                             name="/var/lib/kerub/images", size_bytes=500 * GIB, free_bytes=500 * GIB)
LVM_CAP = StorageCapability(id="lvm:vg0", technology=StorageTechnology.lvm, name="vg0", size_bytes=100 * GIB,
                            free_bytes=100 * GIB)


def fleet(storage: list[StorageCapability], *, size: int = 20 * GIB, cloud_init: CloudInit | None = None,
          clone: bool = True) -> Fleet:
    f = Fleet()
    f.host("h1", storage=storage)
    f.put(VirtualStorageDevice(id=disk_id("deb"), name="deb", size=2 * GIB, read_only=True, image=ImageInfo(
        format="qcow2", virtual_size=2 * GIB, file_size=300 << 20, sha256="a" * 64)))
    f.put(VirtualStorageDeviceDynamic(id=disk_id("deb"), allocations=[FileAllocation(
        host_id=host_id("h1"), capability_id=FILE_CAP.id, path=IMAGE_PATH, format="qcow2")]))
    links = []
    if clone:
        f.disk("web-disk0", size=size, expect=["clone-of:deb"])
        links = [DiskLink(disk_id=disk_id("web-disk0"))]
    f.put(VirtualMachine(id=vm_id("web"), name="web", memory_min=GIB, memory_max=GIB, disks=links,
                         expectations=[], cloud_init=cloud_init))
    vm = f.docs[("vm", vm_id("web"))]
    from kerub_tui.core.expectations import parse_spec

    f.put(vm.model_copy(update={"expectations": [parse_spec("availability:up@dealbreaker", "vm")]}))
    return f


def plan_steps(state):
    draft = repair_draft(state)
    assert draft is not None
    return [step_from_planned(s) for s in draft.to_plan().steps], draft.to_plan()


def test_file_storage_clones_as_an_overlay_of_the_hosts_copy():
    state = fleet([FILE_CAP]).state()
    steps, plan = plan_steps(state)
    assert [s.type for s in steps] == ["clone-image-overlay", "start-vm"]
    clone = steps[0]
    assert isinstance(clone, CloneImageOverlay) and clone.image_path == IMAGE_PATH and clone.size == 20 * GIB
    [command] = plan.steps[0].commands
    words = shlex.split(command.command)
    assert words == ["qemu-img", "create", "-q", "-f", "qcow2", "-b", IMAGE_PATH, "-F", "qcow2",
                     "/var/lib/kerub/images/kerub-web-disk0.qcow2", str(20 * GIB)]
    after = clone.take(state)
    [alloc] = after.allocations(disk_id("web-disk0"))
    assert (alloc.backing, alloc.format, after.disk_dyn[disk_id("web-disk0")].cloned_from) == (
        disk_id("deb"), "qcow2", disk_id("deb"))
    assert overlay_users(after, disk_id("deb"), host_id("h1")) == [disk_id("web-disk0")]
    # the image's copy under the overlay cannot go while the overlay uses it
    remove = RemoveFileImage(disk_id("deb"), host_id("h1"), FILE_CAP.id, IMAGE_PATH)
    assert remove.blocked(state) is None
    assert "is the backing file of web-disk0" in remove.blocked(after)


def test_lvm_clones_as_a_full_copy_into_the_lv():
    f = fleet([LVM_CAP])
    state = f.state()
    steps, plan = plan_steps(state)
    assert [s.type for s in steps] == ["clone-image-lv", "start-vm"]
    assert isinstance(steps[0], CloneImageToLv)
    create, convert = (shlex.split(c.command) for c in plan.steps[0].commands)
    assert create[:2] == ["lvcreate", "--yes"] and "kerub-web-disk0" in create
    assert convert == ["qemu-img", "convert", "-q", "-n", "-f", "qcow2", "-O", "raw", IMAGE_PATH,
                       "/dev/vg0/kerub-web-disk0"]
    after = steps[0].take(state)
    [alloc] = after.allocations(disk_id("web-disk0"))
    assert (alloc.lv, alloc.actual_size) == ("kerub-web-disk0", 20 * GIB)
    assert after.disk_dyn[disk_id("web-disk0")].cloned_from == disk_id("deb")
    assert steps[0].cost(state).io_bytes == 4 * GIB


def test_a_clone_smaller_than_the_image_is_blocked():
    state = fleet([FILE_CAP], size=GIB).state()
    step = CloneImageOverlay(disk_id("web-disk0"), host_id("h1"), FILE_CAP.id, "/var/lib/kerub/images/x.qcow2",
                             GIB, disk_id("deb"), IMAGE_PATH, "qcow2")
    assert "is smaller than image deb" in step.blocked(state)
    elsewhere = CloneImageOverlay(disk_id("web-disk0"), host_id("h1"), FILE_CAP.id, "/var/lib/kerub/images/x.qcow2",
                                  3 * GIB, disk_id("deb"), "/elsewhere.qcow2", "qcow2")
    assert "has no copy of image deb at /elsewhere.qcow2" in elsewhere.blocked(state)


def test_a_vm_with_cloud_init_gets_its_seed_written_before_it_starts():
    ci = CloudInit(ssh_keys=[KEY], user_data=USER_DATA)
    f = fleet([FILE_CAP], cloud_init=ci, clone=False)
    state = f.state()
    vm = state.vms[vm_id("web")]
    assert seed_missing(state, vm.id, host_id("h1")) == "h1 has no current cloud-init seed of web"
    assert "no current cloud-init seed" in StartVm(vm.id, host_id("h1")).blocked(state)
    steps, plan = plan_steps(state)
    assert [s.type for s in steps] == ["write-seed", "start-vm"]
    seed = steps[0]
    digest = seed_digest(vm)
    assert isinstance(seed, WriteSeed) and seed.path == seed_path(vm.id, digest)
    shown = json.dumps(plan.model_dump(mode="json"))
    assert SECRET not in shown and KEY.split()[1] not in shown  # the plan shows no seed content
    [op] = seed.operations(state)
    assert SECRET not in op.command and op.input is not None
    assert read_seed(op.input())[1]["user-data"] == USER_DATA
    after = seed.take(state)
    assert after.host_config[host_id("h1")].seeds == [SeedFile(vm_id=vm.id, path=seed.path, digest=digest)]
    assert StartVm(vm.id, host_id("h1")).blocked(after) is None
    assert "already has this seed" in seed.blocked(after)
    # changed user data: a new seed, and the step planned for the old one no longer applies
    f.put(after.host_config[host_id("h1")])
    f.put(vm.evolve(cloud_init=CloudInit(ssh_keys=[KEY], user_data=USER_DATA + "#\n")))
    changed = f.state()
    assert "changed since this step was planned" in seed.blocked(changed)
    assert "no current cloud-init seed" in StartVm(vm.id, host_id("h1")).blocked(changed)
    steps, _ = plan_steps(changed)
    assert [s.type for s in steps] == ["write-seed", "start-vm"] and steps[0].path != seed.path


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    with Store.open(tmp_path) as s:
        yield s


async def test_executor_sends_the_seed_on_stdin_and_keeps_its_secret_out_of_records(store):
    f = fleet([FILE_CAP], cloud_init=CloudInit(ssh_keys=[KEY], user_data=USER_DATA))
    store.put_many(f.documents())
    plan = repair_draft(build_state(store, now=NOW)).to_plan()
    store.put(plan)
    approve(store, plan.id, "admin")
    sim = FleetSimulator(f.state())
    done = await Executor(store, sim).execute(plan.id)
    assert done.status is PlanStatus.done, done.status_reason
    assert sim.divergence(store) == []  # the hosts have what the documents say
    assert [s.type for s in done.steps] == ["clone-image-overlay", "write-seed", "start-vm"]
    [(command, data)] = sim.inputs
    assert command.startswith("mkdir -p -- /var/lib/kerub-tui/seeds")
    volume, files = read_seed(data)
    assert volume == "cidata" and SECRET in files["user-data"]
    assert json.loads(files["meta-data"])["public-keys"] == [KEY]
    # the seed's path in the host's configuration; the domain XML named it (the start succeeded)
    state = build_state(store, now=NOW)
    assert state.host_config[host_id("h1")].seeds[0].path == done.steps[1].params["path"]
    # no secret in the plan, its records, the audit log or an event
    for doc in [*store.list(Plan), *store.list(AuditEntry), *store.list(Event)]:
        assert SECRET not in doc.model_dump_json()


def test_an_image_copy_smaller_than_its_virtual_size_is_no_undersized_allocation():
    from kerub_tui.planner.problems import all_problems

    f = fleet([FILE_CAP], clone=False)
    f.put(VirtualStorageDeviceDynamic(id=disk_id("deb"), allocations=[FileAllocation(
        host_id=host_id("h1"), capability_id=FILE_CAP.id, path=IMAGE_PATH, format="qcow2", actual_size=300 << 20)]))
    assert [p for p in all_problems(f.state()) if p.type == "undersized-allocation"] == []


def test_a_seed_no_vm_will_boot_with_is_removed_from_its_host_by_a_plan():
    """A deleted VM's seed (its user data can hold secrets) and the seed of a VM whose cloud-init
    settings were taken away, while it does not run there: a plan removes each file and forgets it; the
    seed of a VM that still has cloud-init settings stays."""
    from kerub_tui.core.models import HostConfiguration
    from kerub_tui.hosts.cloudinit import SEED_DIR, remove_seed_command
    from kerub_tui.planner.image_steps import RemoveSeed, unused_seeds
    from kerub_tui.planner.problems import all_problems

    gone = SeedFile(vm_id="vm-deleted-0001", path=f"{SEED_DIR}/kerub-seed-vm-deleted-0001-{'1' * 16}.iso",
                    digest="1" * 64)
    f = fleet([FILE_CAP], cloud_init=CloudInit(ssh_keys=[KEY]), clone=False)
    vm = f.docs[("vm", vm_id("web"))]
    kept = SeedFile(vm_id=vm.id, path=seed_path(vm.id, seed_digest(vm)), digest=seed_digest(vm))
    f.put(HostConfiguration(id=host_id("h1"), seeds=[gone, kept]))
    state = f.state()
    assert [(s, why) for s, why in unused_seeds(state, host_id("h1"))] == [(gone, "of a VM that was deleted")]
    [problem] = [p for p in all_problems(state) if p.type == "unused-seed"]
    assert problem.detail == gone.path and "was deleted" in problem.reason
    steps, _plan = plan_steps(state)
    assert sorted(s.type for s in steps) == ["remove-seed", "start-vm"]  # web starts with the seed it has
    [remove] = [s for s in steps if s.type == "remove-seed"]
    assert isinstance(remove, RemoveSeed) and remove.path == gone.path
    [op] = remove.operations(state)
    assert op.command == f"rm -f -- {gone.path}" == remove_seed_command(gone.path)
    after = remove.take(state)
    assert after.host_config[host_id("h1")].seeds == [kept]
    assert "keeps no seed" in remove.blocked(after)
    # web's cloud-init settings taken away while it is down: its seed goes too
    f.put(after.host_config[host_id("h1")])
    f.put(vm.evolve(cloud_init=None))
    state = f.state()
    assert [s for s, _ in unused_seeds(state, host_id("h1"))] == [kept]
    assert "runs on h1" in RemoveSeed(vm.id, host_id("h1"), kept.path).blocked(_running_on_h1(f, vm.id))
    for bad in ("/etc/passwd", f"{SEED_DIR}/../x.iso", f"{SEED_DIR}/kerub-seed-x-$(reboot).iso"):
        with pytest.raises(ValueError):
            remove_seed_command(bad)


def _running_on_h1(f: Fleet, vm: str):
    from kerub_tui.core.models import VirtualMachineDynamic, VmStatus

    f.put(VirtualMachineDynamic(id=vm, status=VmStatus.up, host_id=host_id("h1")))
    return f.state()
