"""The simulated machine's shell and libvirt operations, through kerub-tui's real builders and parsers.

Every command is written by the hosts builders the planner's steps use, and every answer is read back
with the parsers that read real hosts' output (lvm.parse_lvs/parse_vgs, fileimage.parse_qemu_img_info,
ksm.parse_ksm, facts.read_storage): if the simulator drifts from the tools' formats, these fail.
Refusals are checked as a host gives them (non-zero exit, one stderr line, nothing changed); timing
and faults with Timing(scale=0) (nothing waits) or a small scale where a command must be in flight.
"""

from __future__ import annotations

import asyncio
import random
import shlex

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kerub_tui.core.models import VirtualMachine
from kerub_tui.hosts import facts, fileimage, ksm, kvm, lvm, spice
from kerub_tui.hosts.facts import IMAGES_DIR, Output
from kerub_tui.hosts.operations import OperationResult
from kerub_tui.sim import Machine, Timing, profile
from kerub_tui.sim.machine import EXIT_UNREACHABLE, EXTENT

GIB = 1 << 30
PROFILE = profile("mini")
VG = PROFILE.vg
IMAGE = f"{IMAGES_DIR}/web.qcow2"


def new_machine(*, scale: float = 0.0, failure_rate: float = 0.0, profile_name: str = "mini") -> Machine:
    return Machine("kvm01", profile(profile_name).capabilities("kvm01"),
                   timing=Timing(scale=scale, failure_rate=failure_rate), rng=random.Random(7))


async def ok(machine: Machine, command: str) -> OperationResult:
    result = await machine.shell(command)
    assert result.exit_code == 0, (command, result)
    return result


async def lvs(machine: Machine, vg: str | None = None) -> dict[str, lvm.LogicalVolume]:
    return {lv.name: lv for lv in lvm.parse_lvs((await ok(machine, lvm.lvs_json_command(vg))).stdout)}


async def vg_free(machine: Machine) -> int:
    [group] = lvm.parse_vgs((await ok(machine, lvm.vgs_json_command())).stdout)
    assert group.name == VG
    return group.free_bytes


async def image(machine: Machine, path: str) -> fileimage.QemuImgInfo:
    return fileimage.parse_qemu_img_info((await ok(machine, fileimage.qemu_img_info(path))).stdout)


async def snapshot(machine: Machine) -> tuple:
    """Everything the builders' reads report: LVs, VG free space, images, KSM."""
    images = {path: await image(machine, path) for path in sorted(machine.images)}
    return (await lvs(machine), await vg_free(machine), images,
            ksm.parse_ksm((await ok(machine, ksm.ksm_read_command())).stdout))


def domain_xml(name: str, memory: int, cpus: int = 2) -> tuple[VirtualMachine, str]:
    vm = VirtualMachine(name=name, cpus=cpus, memory_min=memory, memory_max=memory)
    return vm, kvm.domain_xml(vm, {}, spice.new_spice_password())


def one_line(text: str) -> bool:
    return bool(text.strip()) and "\n" not in text.strip()


# --- LVM ---------------------------------------------------------------------------------------


async def test_a_linear_lv_is_created_extended_and_removed_as_lvs_and_vgs_report_it():
    machine = new_machine()
    [group] = lvm.parse_vgs((await ok(machine, lvm.vgs_json_command())).stdout)
    assert group.size_bytes == group.free_bytes == PROFILE.capabilities("kvm01").storage[0].size_bytes
    assert group.extent_size == EXTENT and group.lv_count == 0

    created = await ok(machine, lvm.lvcreate(VG, "disk1", 10 * GIB + 1))  # rounds up to whole extents
    assert "disk1" in created.stdout
    [lv] = (await lvs(machine)).values()
    assert (lv.vg, lv.name, lv.layout, lv.segtypes) == (VG, "disk1", "linear", ("linear",))
    assert lv.size_bytes == 10 * GIB + EXTENT and not lv.is_thin and not lv.is_thin_pool
    assert lv.devices and lv.path == f"/dev/{VG}/disk1"
    assert await vg_free(machine) == group.size_bytes - lv.size_bytes

    await ok(machine, lvm.lvextend(VG, "disk1", 20 * GIB))
    assert (await lvs(machine, VG))["disk1"].size_bytes == 20 * GIB
    assert await vg_free(machine) == group.size_bytes - 20 * GIB

    await ok(machine, lvm.lvremove(VG, "disk1"))
    assert await lvs(machine) == {} and await vg_free(machine) == group.size_bytes


async def test_thin_volumes_take_space_from_their_pool_not_from_the_vg():
    machine = new_machine()
    free = await vg_free(machine)
    await ok(machine, lvm.thin_pool_create(VG, "pool0", 20 * GIB))
    await ok(machine, lvm.lvcreate_thin(VG, "pool0", "thin1", 50 * GIB))  # over-provisioned, as thin allows
    volumes = await lvs(machine)
    pool, thin = volumes["pool0"], volumes["thin1"]
    assert pool.is_thin_pool and pool.data_percent == 0.0  # a new thin LV holds nothing yet
    assert thin.is_thin and thin.pool == "pool0" and thin.size_bytes == 50 * GIB
    machine.restore_volume(VG, "thin0", 10 * GIB, "pool0")  # one that was there: its data fills the pool
    assert 0 < (await lvs(machine))["pool0"].data_percent <= 100
    assert await vg_free(machine) == free - 20 * GIB

    await ok(machine, lvm.lvextend(VG, "pool0", 30 * GIB))  # the planner's ExtendThinPool
    assert (await lvs(machine))["pool0"].size_bytes == 30 * GIB
    assert await vg_free(machine) == free - 30 * GIB

    reading = facts.read_storage({
        "vgs": await machine.shell(lvm.vgs_json_command()),
        "lvs": await machine.shell(lvm.lvs_json_command()),
        "images_fs": Output(0, machine.findmnt_json()),
    })
    assert reading.problems == []
    assert [p.name for p in reading.thin_pools] == ["pool0"]
    assert 0 < reading.free[facts.thin_pool_free_key(VG, "pool0")] < 30 * GIB


async def test_a_raid1_lv_takes_both_copies_from_the_vg():
    machine = new_machine()
    free = await vg_free(machine)
    await ok(machine, lvm.lvcreate_mirror(VG, "safe", 4 * GIB, 1))
    safe = (await lvs(machine))["safe"]
    assert safe.segtypes == ("raid1",) and safe.size_bytes == 4 * GIB
    assert await vg_free(machine) == free - 2 * 4 * GIB


async def test_a_raid1_lv_with_two_mirrors_takes_three_copies_from_the_vg():
    machine = new_machine()
    free = await vg_free(machine)
    await ok(machine, lvm.lvcreate_mirror(VG, "safer", 4 * GIB, 2))
    assert await vg_free(machine) == free - 3 * 4 * GIB


def _on_pvs(*sizes: int) -> Machine:
    """A machine whose VG discovery listed on these PVs (/dev/sda, /dev/sdb, ...): raid1 and pvmove per PV."""
    from kerub_tui.core.models import PhysicalVolumeInfo

    caps = profile("mini").capabilities("kvm01")
    pvs = [PhysicalVolumeInfo(name=f"/dev/sd{chr(97 + i)}", size_bytes=size, free_bytes=size)
           for i, size in enumerate(sizes)]
    storage = [s.evolve(pvs=pvs, size_bytes=sum(sizes), free_bytes=sum(sizes)) if s.name == VG else s
               for s in caps.storage]
    return Machine("kvm01", caps.evolve(storage=storage), timing=Timing(scale=0.0), rng=random.Random(7))


async def test_a_vg_of_listed_pvs_puts_each_raid1_copy_on_a_pv_and_moves_extents_off_one():
    machine = _on_pvs(10 * GIB, 10 * GIB)
    refused = await machine.shell(lvm.lvcreate_mirror(VG, "three", GIB, 2))
    assert refused.exit_code == 5 and "Insufficient suitable allocatable extents" in refused.stderr
    await ok(machine, lvm.lvcreate(VG, "plain", 2 * GIB))
    pvs = {p.name: p for p in lvm.parse_pvs((await ok(machine, lvm.pvs_json_command())).stdout)}
    assert pvs["/dev/sda"].free_bytes == 8 * GIB and pvs["/dev/sdb"].free_bytes == 10 * GIB
    await ok(machine, lvm.lvconvert_mirror(VG, "plain", 1))
    assert (await lvs(machine))["plain"].devices == ("plain_rimage_0(0)", "plain_rimage_1(0)")
    await ok(machine, lvm.lvremove(VG, "plain"))
    await ok(machine, lvm.lvcreate(VG, "data", 3 * GIB))  # on /dev/sda, the first PV
    still = await machine.shell(lvm.vgreduce(VG, "/dev/sda"))
    assert still.exit_code == 5 and "still in use" in still.stderr
    await ok(machine, lvm.pvmove("/dev/sda", ["/dev/sdb"]))
    await ok(machine, lvm.vgreduce(VG, "/dev/sda"))
    assert [p.name for p in lvm.parse_pvs((await ok(machine, lvm.pvs_json_command())).stdout)] == ["/dev/sdb"]
    assert machine.pv_free(VG, "/dev/sdb") == 7 * GIB


async def test_growing_a_raid1_lv_needs_the_growth_once_per_copy():
    machine = new_machine()
    await ok(machine, lvm.lvcreate_mirror(VG, "safe", 4 * GIB, 1))
    await ok(machine, lvm.lvcreate(VG, "filler", await vg_free(machine) - 6 * GIB))
    before = await snapshot(machine)
    # 4 GiB more per copy = 8 GiB; only 6 GiB are free
    result = await machine.shell(lvm.lvextend(VG, "safe", 8 * GIB))
    assert result.exit_code != 0 and one_line(result.stderr)
    assert await snapshot(machine) == before


# --- refusals, as a host refuses -----------------------------------------------------------------


async def _prepared() -> Machine:
    machine = new_machine()
    await ok(machine, lvm.lvcreate(VG, "disk1", 4 * GIB))
    await ok(machine, fileimage.qemu_img_create(IMAGE, 2 * GIB, "qcow2"))
    return machine


# each refusal, and what its one line names (None: the tool names nothing there, as lvextend on a shrink)
REFUSED = {
    "no space in the VG": (lambda: lvm.lvcreate(VG, "huge", 100 * (1 << 40)), VG),
    "no space for a mirror": (lambda: lvm.lvcreate_mirror(VG, "huge", 400 * GIB, 1), VG),
    "LV exists": (lambda: lvm.lvcreate(VG, "disk1", GIB), "disk1"),
    "thin LV in a missing pool": (lambda: lvm.lvcreate_thin(VG, "nopool", "thin1", GIB), "nopool"),
    "no such VG": (lambda: lvm.lvcreate("othervg", "disk2", GIB), "othervg"),
    "remove a missing LV": (lambda: lvm.lvremove(VG, "ghost"), f"{VG}/ghost"),
    "extend a missing LV": (lambda: lvm.lvextend(VG, "ghost", GIB), f"{VG}/ghost"),
    "shrink an LV": (lambda: lvm.lvextend(VG, "disk1", 2 * GIB), None),
    "grow an LV past the VG": (lambda: lvm.lvextend(VG, "disk1", 100 * (1 << 40)), None),
    "info of a missing image": (lambda: fileimage.qemu_img_info(f"{IMAGES_DIR}/ghost.qcow2"), "ghost.qcow2"),
    "resize a missing image": (lambda: fileimage.qemu_img_resize(f"{IMAGES_DIR}/ghost.qcow2", GIB), "ghost.qcow2"),
    "shrink an image": (lambda: fileimage.qemu_img_resize(IMAGE, GIB, "qcow2"), None),
    "image outside the image directory": (lambda: fileimage.qemu_img_create("/srv/elsewhere.qcow2", GIB),
                                          "/srv/elsewhere.qcow2"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_a_refused_command_exits_non_zero_with_one_stderr_line_and_changes_nothing(case):
    machine = await _prepared()
    before = await snapshot(machine)
    build, named = REFUSED[case]
    result = await machine.shell(build())
    assert result.exit_code not in (0, 127, EXIT_UNREACHABLE), result
    assert result.stdout == ""
    if case != "no such VG":  # there lvm prints two lines
        assert one_line(result.stderr), result.stderr
    assert named is None or named in result.stderr
    assert await snapshot(machine) == before


async def test_a_guest_that_does_not_fit_in_memory_is_refused_and_nothing_runs():
    machine = new_machine()  # 64 GiB, of which the host keeps 1 GiB
    heard = []
    machine.on_domain = heard.append
    vm, xml = domain_xml("big", 64 * GIB)
    result = await machine.start(vm.id, vm.name, xml)
    assert result.exit_code != 0 and one_line(result.stderr)
    assert machine.domain_state(vm.id) == "" and heard == []

    small, small_xml = domain_xml("small", 40 * GIB)
    assert (await machine.start(small.id, small.name, small_xml)).exit_code == 0
    other, other_xml = domain_xml("other", 30 * GIB)  # fits alone, not next to the first
    result = await machine.start(other.id, other.name, other_xml)
    assert result.exit_code != 0 and one_line(result.stderr)
    assert machine.domain_state(other.id) == "" and machine.domain_state(small.id) == "running"


async def test_a_guest_goes_through_its_lifecycle_as_libvirt_reports_it():
    machine = new_machine()
    heard = []
    machine.on_domain = heard.append
    vm, xml = domain_xml("web", 2 * GIB)
    assert (await machine.start(vm.id, vm.name, xml)).exit_code == 0
    assert machine.domain_state(vm.id) == "running"
    assert (await machine.start(vm.id, vm.name, xml)).exit_code != 0  # already running
    assert (await machine.set_paused(vm.id, True)).exit_code == 0 and machine.domain_state(vm.id) == "paused"
    assert (await machine.set_paused(vm.id, False)).exit_code == 0 and machine.domain_state(vm.id) == "running"
    refused = await machine.undefine(vm.id)
    assert refused.exit_code != 0 and machine.domain_state(vm.id) == "running"
    assert (await machine.shutdown(vm.id, timeout=600)).exit_code == 0
    assert machine.domain_state(vm.id) == "shut off"
    assert (await machine.set_paused(vm.id, True)).exit_code != 0  # not running
    assert (await machine.undefine(vm.id)).exit_code == 0 and machine.domain_state(vm.id) == ""
    assert [(s.uuid, s.status.value if s.status else None) for s in heard] == [
        (vm.id, "up"), (vm.id, "paused"), (vm.id, "up"), (vm.id, "down"), (vm.id, None)]
    assert heard[0].memory_max == 2 * GIB


async def test_a_shutdown_that_outlasts_its_timeout_leaves_the_guest_running_for_destroy():
    machine = new_machine()
    vm, xml = domain_xml("web", 2 * GIB)
    await machine.start(vm.id, vm.name, xml)
    assert (await machine.shutdown(vm.id, timeout=0.5)).exit_code == 0  # guests take 3 to 8 seconds
    assert machine.domain_state(vm.id) == "running"
    assert (await machine.destroy(vm.id)).exit_code == 0 and machine.domain_state(vm.id) == "shut off"
    assert (await machine.destroy(vm.id)).exit_code == 0  # destroy-if-running: nothing to do


# --- file images and KSM -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
async def test_an_image_is_created_read_grown_and_removed(fmt):
    machine = new_machine()
    path = f"{IMAGES_DIR}/disk1.{fmt}"
    assert (await machine.shell(f"test ! -e {shlex.quote(path)}")).exit_code == 0
    await ok(machine, fileimage.qemu_img_create(path, 3 * GIB, fmt))
    info = await image(machine, path)
    assert (info.filename, info.format, info.virtual_size) == (path, fmt, 3 * GIB)
    assert info.actual_size is not None and info.actual_size <= info.virtual_size
    assert (info.cluster_size is not None) == (fmt == "qcow2")
    assert (await machine.shell(f"test ! -e {shlex.quote(path)}")).exit_code == 1

    await ok(machine, fileimage.qemu_img_resize(path, 5 * GIB, fmt))
    assert (await image(machine, path)).virtual_size == 5 * GIB

    await ok(machine, fileimage.file_remove(path))
    assert (await machine.shell(f"test ! -e {shlex.quote(path)}")).exit_code == 0
    assert (await machine.shell(fileimage.qemu_img_info(path))).exit_code != 0
    await ok(machine, fileimage.file_remove(path))  # rm -f: already gone is fine


async def test_ksm_settings_are_written_and_read_back_as_sysfs_prints_them():
    machine = new_machine()
    state = ksm.parse_ksm((await ok(machine, ksm.ksm_read_command())).stdout)
    assert state.available and not state.run
    await ok(machine, ksm.ksm_set(run=True, pages_to_scan=1250, sleep_millisecs=50))
    state = ksm.parse_ksm((await ok(machine, ksm.ksm_read_command())).stdout)
    assert (state.run, state.pages_to_scan, state.sleep_millisecs) == (True, 1250, 50)
    await ok(machine, ksm.ksm_set(run=False))
    state = ksm.parse_ksm((await ok(machine, ksm.ksm_read_command())).stdout)
    assert (state.run, state.pages_to_scan) == (False, 1250)


async def test_ksm_merges_pages_of_similar_guests_while_it_runs():
    machine = new_machine()
    for n in range(3):
        vm, xml = domain_xml(f"web{n}", 8 * GIB)
        await machine.start(vm.id, vm.name, xml)
    used = machine.used_memory()
    await ok(machine, ksm.ksm_set(run=True, pages_to_scan=10000))
    for _ in range(20):
        machine.ksm_tick()
    state = ksm.parse_ksm(machine.ksm_text())
    assert state.pages_sharing > 0 and state.full_scans == 20
    assert machine.used_memory() < used


async def test_the_state_batch_reads_as_the_monitor_reads_a_real_hosts():
    """The outputs the fleet hands the monitor (vgs, lvs, findmnt) through facts.read_storage."""
    machine = new_machine()
    capabilities = machine.capabilities
    assert machine.lvs_json() == (await ok(machine, lvm.lvs_json_command())).stdout
    assert machine.vgs_json() == (await ok(machine, lvm.vgs_json_command())).stdout

    def reading() -> facts.StorageReading:
        return facts.read_storage({"vgs": Output(0, machine.vgs_json()), "lvs": Output(0, machine.lvs_json()),
                                   "images_fs": Output(0, machine.findmnt_json())})

    first = reading()
    assert first.problems == []
    assert first.free == {s.id: s.size_bytes for s in capabilities.storage}
    await ok(machine, lvm.lvcreate(VG, "disk1", 10 * GIB))
    await ok(machine, fileimage.qemu_img_create(f"{IMAGES_DIR}/a.raw", 3 * GIB, "raw"))
    second = reading()
    assert second.problems == []
    assert second.free[f"lvm:{VG}"] == first.free[f"lvm:{VG}"] - 10 * GIB
    assert second.free[f"file:{IMAGES_DIR}"] == first.free[f"file:{IMAGES_DIR}"] - 3 * GIB


async def test_qemu_img_convert_copies_an_image_into_a_new_format():
    machine = new_machine()
    await ok(machine, fileimage.qemu_img_create(f"{IMAGES_DIR}/a.raw", 3 * GIB, "raw"))
    await ok(machine, fileimage.qemu_img_convert(f"{IMAGES_DIR}/a.raw", f"{IMAGES_DIR}/b.qcow2", "qcow2"))
    copy = await image(machine, f"{IMAGES_DIR}/b.qcow2")
    assert (copy.format, copy.virtual_size) == ("qcow2", 3 * GIB)
    missing = await machine.shell(fileimage.qemu_img_convert(f"{IMAGES_DIR}/none.raw", f"{IMAGES_DIR}/c.raw", "raw"))
    assert missing.exit_code == 1 and "No such file" in missing.stderr


# --- what the simulator does not model ------------------------------------------------------------


@pytest.mark.parametrize("command", [
    "virsh list --all",
    "zfs create tank/disk1",
    "targetcli ls",  # tgtadm and exportfs are simulated (issue 16's shares); targetcli is not
    "showmount --no-headers -e 127.0.0.1",
    "zfs send tank/disk1@copy",
])
async def test_a_command_the_simulator_does_not_model_exits_127_naming_the_simulator(command):
    machine = new_machine()
    result = await machine.shell(command)
    assert result.exit_code == 127 and result.stdout == ""
    assert "simulator" in result.stderr and one_line(result.stderr)


# --- hostile names -----------------------------------------------------------------------------

HOSTILE = ["a'b", 'a"b', "a;reboot", "$(touch pwned)", "`id`", "a\nb", "a b", "ünïcödé", "-rf", "a|b", "a&&b",
           "x\x00y", "..", "a>b"]


@pytest.mark.parametrize("name", HOSTILE)
def test_lvm_builders_refuse_hostile_names(name):
    for build in (lambda: lvm.lvcreate(VG, name, GIB), lambda: lvm.lvcreate(name, "disk1", GIB),
                  lambda: lvm.thin_pool_create(VG, name, GIB), lambda: lvm.lvcreate_thin(VG, name, "t", GIB),
                  lambda: lvm.lvcreate_thin(VG, "pool", name, GIB), lambda: lvm.lvcreate_mirror(VG, name, GIB, 1),
                  lambda: lvm.lvextend(VG, name, GIB), lambda: lvm.lvremove(VG, name),
                  lambda: lvm.lvs_json_command(name)):
        with pytest.raises(ValueError):
            build()


@pytest.mark.parametrize("name", HOSTILE)
async def test_a_hostile_image_name_is_refused_or_reaches_the_machine_as_the_literal_name(name, tmp_path):
    machine = new_machine()
    path = f"{IMAGES_DIR}/{name.replace('$(touch pwned)', f'$(touch {tmp_path}/pwned)')}.qcow2"
    try:
        command = fileimage.qemu_img_create(path, GIB, "qcow2")
    except ValueError:
        assert any(not c.isprintable() for c in name)
        return
    assert shlex.split(command)[-2] == path  # the quoting round-trips
    await ok(machine, command)
    assert list(machine.images) == [path]
    assert (await image(machine, path)).filename == path
    await ok(machine, fileimage.qemu_img_resize(path, 2 * GIB, "qcow2"))
    assert (await image(machine, path)).virtual_size == 2 * GIB
    await ok(machine, fileimage.file_remove(path))
    assert machine.images == {}
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("build", [
    lambda: ksm.ksm_set(pages_to_scan="1; reboot"),  # type: ignore[arg-type]
    lambda: ksm.ksm_set(run="1"),  # type: ignore[arg-type]
    lambda: ksm.ksm_set(sleep_millisecs=-1),
    lambda: lvm.lvcreate(VG, "disk1", -GIB),
    lambda: lvm.lvcreate_mirror(VG, "disk1", GIB, 0),
    lambda: fileimage.qemu_img_create("relative.qcow2", GIB),
    lambda: fileimage.qemu_img_create(f"{IMAGES_DIR}/../etc/passwd", GIB),
    lambda: fileimage.qemu_img_create(IMAGE, GIB, "vmdk; reboot"),
])
def test_builders_refuse_hostile_values(build):
    with pytest.raises(ValueError):
        build()


# --- the shell never breaks ------------------------------------------------------------------

_PREFIXES = ["", "lvcreate ", "lvcreate --yes --type thin --thinpool ", "lvcreate --mirrors ", "lvextend --size ",
             "lvremove ", "lvs ", "vgs ", "qemu-img ", "qemu-img create ", "qemu-img create -f raw /var/lib/kerub-tui/"
             "images/x ", "qemu-img resize ", "qemu-img info ", "rm ", "test ", "test ! -e ", "poweroff",
             "echo 1 > /sys/kernel/mm/ksm/", "echo ", "if [ -r /sys/kernel/mm/ksm/run ]",
             "pvs ", "lvconvert --yes --type raid1 --mirrors ", "pvmove --interval ", "vgreduce "]
_WORDS = st.one_of(st.text(max_size=12), st.sampled_from(["--size", "--name", "--type", "--virtualsize", "thin",
                                                         "raid1", "thin-pool", VG, f"{VG}/disk1", "1b", "4096b",
                                                         "-f", "qcow2", IMAGE, "99999999999999999999", "²", "&&",
                                                         "/dev/sda3", "/dev/sdb"]))
COMMANDS = st.one_of(
    st.text(),
    st.builds(lambda prefix, rest: prefix + rest, st.sampled_from(_PREFIXES), st.text()),
    st.builds(lambda prefix, words: prefix + shlex.join(words), st.sampled_from(_PREFIXES), st.lists(_WORDS)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands=st.lists(COMMANDS, min_size=1, max_size=5), failure_rate=st.sampled_from([0.0, 0.5, 1.0]),
       up=st.booleans())
def test_the_shell_answers_anything_with_an_exit_code_and_text(commands, failure_rate, up):
    machine = new_machine(failure_rate=failure_rate)
    machine.up = up

    async def run_all() -> list[OperationResult]:
        return [await machine.shell(command) for command in commands]

    for result in asyncio.run(run_all()):
        assert isinstance(result.exit_code, int) and 0 <= result.exit_code <= 255
        assert isinstance(result.stdout, str) and isinstance(result.stderr, str)
        if result.exit_code != 0:
            assert result.stderr.strip() or result.exit_code == 1  # `test` says no by its exit code alone
    # whatever happened, what the machine reports still parses
    machine.up = True
    machine.timing.failure_rate = 0.0
    assert {lv.vg for lv in lvm.parse_lvs(machine.lvs_json())} <= {VG}
    lvm.parse_vgs(machine.vgs_json())


# --- timing and failures ---------------------------------------------------------------------


def finish_without_waiting(coroutine):
    """The coroutine's result if it completes without ever giving the loop a turn, else AssertionError."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise AssertionError("the coroutine waited")


def test_at_scale_0_commands_and_libvirt_operations_never_wait():
    machine = new_machine(scale=0)
    assert finish_without_waiting(machine.shell(lvm.lvcreate(VG, "disk1", GIB))).exit_code == 0
    assert finish_without_waiting(machine.shell(lvm.lvcreate_mirror(VG, "safe", GIB, 1))).exit_code == 0
    assert finish_without_waiting(machine.shell(fileimage.qemu_img_create(IMAGE, GIB))).exit_code == 0
    assert finish_without_waiting(machine.shell(lvm.lvs_json_command())).exit_code == 0
    vm, xml = domain_xml("web", 2 * GIB)
    assert finish_without_waiting(machine.start(vm.id, vm.name, xml)).exit_code == 0
    assert finish_without_waiting(machine.shutdown(vm.id, 600)).exit_code == 0
    assert machine.domain_state(vm.id) == "shut off"


async def test_at_a_positive_scale_a_command_takes_its_time():
    machine = new_machine(scale=0.01)
    with pytest.raises(AssertionError, match="waited"):
        finish_without_waiting(machine.shell(lvm.lvcreate(VG, "disk1", GIB)))


CHANGING = {
    "lvcreate": lambda: lvm.lvcreate(VG, "disk2", GIB),
    "lvcreate_thin": lambda: lvm.lvcreate_thin(VG, "pool0", "thin2", GIB),
    "thin_pool_create": lambda: lvm.thin_pool_create(VG, "pool1", GIB),
    "lvcreate_mirror": lambda: lvm.lvcreate_mirror(VG, "safe", GIB, 1),
    "lvextend": lambda: lvm.lvextend(VG, "disk1", 8 * GIB),
    "lvextend of a pool": lambda: lvm.lvextend(VG, "pool0", 8 * GIB),
    "lvremove": lambda: lvm.lvremove(VG, "disk1"),
    "qemu_img_create": lambda: fileimage.qemu_img_create(f"{IMAGES_DIR}/new.qcow2", GIB),
    "qemu_img_resize": lambda: fileimage.qemu_img_resize(IMAGE, 8 * GIB, "qcow2"),
    "file_remove": lambda: fileimage.file_remove(IMAGE),
    "ksm_set": lambda: ksm.ksm_set(run=True, pages_to_scan=500),
}


async def _storage_machine() -> Machine:
    machine = await _prepared()
    await ok(machine, lvm.thin_pool_create(VG, "pool0", 4 * GIB))
    return machine


@pytest.mark.parametrize("case", sorted(CHANGING))
async def test_with_failure_rate_1_a_changing_command_fails_realistically_and_changes_nothing(case):
    machine = await _storage_machine()
    before = await snapshot(machine)
    machine.timing.failure_rate = 1.0
    result = await machine.shell(CHANGING[case]())
    assert result.exit_code not in (0, 127, EXIT_UNREACHABLE), result
    assert result.stderr.strip() and "simulat" not in result.stderr  # the tools' words, not ours
    machine.timing.failure_rate = 0.0
    assert await snapshot(machine) == before


async def test_with_failure_rate_1_a_start_fails_and_nothing_runs():
    machine = new_machine(failure_rate=1.0)
    vm, xml = domain_xml("web", 2 * GIB)
    result = await machine.start(vm.id, vm.name, xml)
    assert result.exit_code != 0 and "qemu" in result.stderr
    assert machine.domain_state(vm.id) == "" and machine.running() == []


async def test_with_failure_rate_1_reads_still_answer():
    machine = await _storage_machine()
    machine.timing.failure_rate = 1.0
    for command in (lvm.lvs_json_command(), lvm.lvs_json_command(VG), lvm.vgs_json_command(),
                    fileimage.qemu_img_info(IMAGE), ksm.ksm_read_command(), f"test ! -e {shlex.quote(IMAGE)}"):
        for _ in range(5):
            result = await machine.shell(command)
            assert result.exit_code in (0, 1) and not result.stderr, (command, result)
    assert "disk1" in await lvs(machine)


@pytest.mark.parametrize("power_cycle", [False, True], ids=["stays-down", "boots-again-at-once"])
async def test_a_machine_that_crashes_under_a_command_answers_255_and_does_not_apply_it(power_cycle):
    machine = new_machine(scale=0.01)
    command = asyncio.create_task(machine.shell(lvm.lvcreate(VG, "disk1", GIB)))
    vm, xml = domain_xml("web", 2 * GIB)
    start = asyncio.create_task(machine.start(vm.id, vm.name, xml))
    await asyncio.sleep(0)  # both are under way, waiting out their duration
    assert not command.done() and not start.done()
    machine.crash()
    if power_cycle:
        machine.boot()  # back before the command's time is up: the work began before the crash still dies
    for result in (await command, await start):
        assert result.exit_code == EXIT_UNREACHABLE and one_line(result.stderr)
    machine.boot()
    machine.timing.scale = 0
    assert await lvs(machine) == {}
    assert machine.domain_state(vm.id) == "" and machine.running() == []


async def test_a_crash_downs_the_guests_and_a_down_machine_answers_nothing():
    machine = new_machine()
    vm, xml = domain_xml("web", 2 * GIB)
    await machine.start(vm.id, vm.name, xml)
    await ok(machine, ksm.ksm_set(run=True))
    machine.crash()
    assert machine.domain_state(vm.id) == "shut off"  # the definition stays, as on a real host
    result = await machine.shell(lvm.lvs_json_command())
    assert result.exit_code == EXIT_UNREACHABLE and "closed by remote host" in result.stderr
    assert (await machine.start(vm.id, vm.name, xml)).exit_code == EXIT_UNREACHABLE
    machine.boot()
    assert not ksm.parse_ksm((await ok(machine, ksm.ksm_read_command())).stdout).run
    assert (await machine.start(vm.id, vm.name, xml)).exit_code == 0


# --- host-to-host trust and copies ------------------------------------------------------------------


async def test_the_copy_pipeline_streams_an_existing_allocation_and_reports_its_sum():
    from kerub_tui.hosts import copy

    machine = new_machine()
    await ok(machine, lvm.lvcreate(VG, "kerub-d1", 1 * GIB))
    pipeline = copy.copy_allocation_pipeline(f"/dev/{VG}/kerub-d1", "kvm2.sim.invalid", f"/dev/{VG}/kerub-d1", GIB)
    result = await ok(machine, pipeline)
    assert copy.parse_copy_sum(result.stdout)
    hostile = copy.copy_allocation_pipeline(f"/dev/{VG}/it's $(reboot)", "kvm2.sim.invalid", "/dev/x", 5)
    refused = await machine.shell(hostile)
    assert refused.exit_code == 1 and f"cannot read /dev/{VG}/it's $(reboot)" in refused.stderr


async def test_the_trust_step_s_commands_make_a_peer_key_once_and_install_keys():
    from kerub_tui.hosts import trust
    from kerub_tui.planner.steps import known_host_command, peer_key_command

    machine = new_machine()
    first = await ok(machine, peer_key_command())
    again = await ok(machine, peer_key_command())
    assert first.stdout == again.stdout
    assert trust.parse_public_key(first.stdout.strip()).identity
    await ok(machine, trust.ssh_trust(first.stdout.strip()))
    await ok(machine, known_host_command("kvm2.sim.invalid", 22, first.stdout.strip()))
