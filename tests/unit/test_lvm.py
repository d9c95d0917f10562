"""LVM builders: hostile names refused, words quoted, and the commands run against a real VG.

The real VG lives on a loop device seen through a private lvm.conf (LVM_SYSTEM_DIR): a device
filter accepting only that loop device, and activation off because this kernel has no
device-mapper (ARCHITECTURE.md §7). Metadata operations are then real; LVM refuses what needs
device-mapper (thin, raid1) only after it parsed the command and found every named object,
which is what those tests check.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kerub_tui.hosts import lvm
from kerub_tui.hosts.facts import physical_volumes
from kerub_tui.hosts.results import OperationResult
from kerub_tui.planner.executor import _verify_mirror, _verify_pv_empty, _verify_pv_out
from kerub_tui.planner.steps import ConvertLvToMirror, MovePvExtents, RemovePvFromVg

HOSTILE = [
    "x; rm -rf /", "$(reboot)", "`reboot`", "a'b", 'a"b', "a\nb", "a b", "-rf", "--help", "..", ".", "",
    "vg/lv", "ñame", "名前", "a\x00b", "a|b", "a&b", "*", "~root", "a" * 64, "\u202eexe",
]  # fmt: skip


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused_by_every_builder(name):
    builders = [
        lambda: lvm.lvcreate(name, "lv", 1 << 20),
        lambda: lvm.lvcreate("vg", name, 1 << 20),
        lambda: lvm.lvcreate_thin(name, "pool", "lv", 1 << 20),
        lambda: lvm.lvcreate_thin("vg", name, "lv", 1 << 20),
        lambda: lvm.lvcreate_thin("vg", "pool", name, 1 << 20),
        lambda: lvm.thin_pool_create(name, "pool", 1 << 20),
        lambda: lvm.thin_pool_create("vg", name, 1 << 20),
        lambda: lvm.lvextend(name, "lv", 1 << 20),
        lambda: lvm.lvextend("vg", name, 1 << 20),
        lambda: lvm.lvremove(name, "lv"),
        lambda: lvm.lvremove("vg", name),
        lambda: lvm.lvcreate_mirror(name, "lv", 1 << 20, 1),
        lambda: lvm.lvcreate_mirror("vg", name, 1 << 20, 1),
        lambda: lvm.lvs_json_command(name),
        lambda: lvm.lvconvert_mirror(name, "lv", 1),
        lambda: lvm.lvconvert_mirror("vg", name, 1),
        lambda: lvm.vgreduce(name, "/dev/sdb"),
        lambda: lvm.vgreduce("vg", name),
        lambda: lvm.pvmove(name),
        lambda: lvm.pvmove("/dev/sdb", [name]),
    ]
    for build in builders:
        with pytest.raises(ValueError):
            build()


HOSTILE_PVS = [
    "/dev/sdb; reboot", "/dev/$(reboot)", "/dev/`reboot`", "/dev/../etc/shadow", "/dev/sdb/..", "/dev/sdb\n",
    "/dev/", "/dev/a b", "/dev/-rf", "/dev//sdb", "sdb", "-v", "/dev/sd\x00b", "/dev/\u202eb", "/dev/" + "a" * 300,
]  # fmt: skip


@pytest.mark.parametrize("pv", HOSTILE_PVS)
def test_hostile_pv_paths_are_refused(pv):
    for build in (lambda: lvm.vgreduce("vg0", pv), lambda: lvm.pvmove(pv), lambda: lvm.pvmove("/dev/sda", [pv])):
        with pytest.raises(ValueError):
            build()


def test_pv_commands_are_exact_words():
    assert shlex.split(lvm.lvconvert_mirror("vg0", "kerub-d", 2)) == [
        "lvconvert", "--yes", "--type", "raid1", "--mirrors", "2", "vg0/kerub-d"]
    assert shlex.split(lvm.pvmove("/dev/sdb", ["/dev/sda", "/dev/nvme0n1p1"])) == [
        "pvmove", "--interval", "30", "/dev/sdb", "/dev/sda", "/dev/nvme0n1p1"]
    assert shlex.split(lvm.vgreduce("vg0", "/dev/disk/by-id/ata-X_1:2")) == ["vgreduce", "vg0", "/dev/disk/by-id/ata-X_1:2"]
    with pytest.raises(ValueError, match="onto itself"):
        lvm.pvmove("/dev/sdb", ["/dev/sdb"])
    for mirrors in (0, 64, True, "1"):
        with pytest.raises(ValueError):
            lvm.lvconvert_mirror("vg0", "kerub-d", mirrors)


@pytest.mark.parametrize("name", ["snapshot", "snapshot2", "pvmove0", "disk_tmeta", "a_rimage_0", "x_pmspare"])
def test_names_lvm_reserves_are_refused_with_the_reason(name):
    with pytest.raises(ValueError, match="LVM reserves"):
        lvm.lvcreate("vg", name, 1 << 20)


def test_vg_named_like_a_dev_directory_is_refused():
    with pytest.raises(ValueError, match="/dev"):
        lvm.lvcreate("mapper", "lv", 1 << 20)


@pytest.mark.parametrize("size", [0, -1, True, 1.5, "1G", None, 1 << 71])
def test_bad_sizes_are_refused(size):
    with pytest.raises(ValueError):
        lvm.lvcreate("vg", "lv", size)


@pytest.mark.parametrize("mirrors", [0, -1, 64, True, 1.0, "2"])
def test_bad_mirror_counts_are_refused(mirrors):
    with pytest.raises(ValueError):
        lvm.lvcreate_mirror("vg", "lv", 1 << 20, mirrors)


def test_commands_are_exact_words():
    assert shlex.split(lvm.lvcreate("vg0", "web-1.disk_0", 64 << 20)) == [
        "lvcreate", "--yes", "--name", "web-1.disk_0", "--size", "67108864b", "vg0",
    ]  # fmt: skip
    assert shlex.split(lvm.lvcreate_thin("vg0", "pool0", "t1", 1 << 30)) == [
        "lvcreate", "--yes", "--type", "thin", "--name", "t1", "--virtualsize", "1073741824b", "--thinpool", "pool0", "vg0",
    ]  # fmt: skip
    assert shlex.split(lvm.lvextend("vg0", "t1", 2 << 30)) == ["lvextend", "--size", "2147483648b", "vg0/t1"]
    assert shlex.split(lvm.lvremove("vg0", "t1")) == ["lvremove", "--yes", "vg0/t1"]
    assert shlex.split(lvm.lvcreate_mirror("vg0", "m", 1 << 20, 2))[3:6] == ["raid1", "--mirrors", "2"]
    assert lvm.lvs_json_command("vg0").endswith(" vg0") and "--reportformat json" in lvm.vgs_json_command()


def test_sizes_round_up_to_whole_sectors():
    assert "--size 1024b" in lvm.lvcreate("vg", "lv", 1000)
    assert "--size 512b" in lvm.lvcreate("vg", "lv", 1)


# --- against a real VG -------------------------------------------------------------------------------


def _run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=60)


def _add_thin_pool(vg: str, pv: str, env: dict[str, str], tmp: Path) -> None:
    """LVM cannot create a thin pool without device-mapper: write one into the VG's metadata instead."""
    backup = tmp / "vg.backup"
    subprocess.run(["vgcfgbackup", "-f", str(backup), vg], env=env, check=True, capture_output=True)
    text = backup.read_text()
    pv_id = re.search(r'(pv\d+) \{\s*id = "[^"]+"\s*device = "' + re.escape(pv), text)
    assert pv_id, text

    def lv(name: str, status: str, segment: str) -> str:
        ident = secrets.token_hex(16)
        lvm_id = "-".join([ident[:6], ident[6:10], ident[10:14], ident[14:18], ident[18:22], ident[22:26], ident[26:32]])
        return (
            f"{name} {{\nid = \"{lvm_id}\"\nstatus = [{status}]\nflags = []\nsegment_count = 1\n"
            f"segment1 {{\nstart_extent = 0\n{segment}\n}}\n}}\n"
        )

    striped = 'extent_count = {n}\ntype = "striped"\nstripe_count = 1\nstripes = ["' + pv_id[1] + '", {at}]'
    volumes = (
        lv("lvol0_pmspare", '"READ", "WRITE"', striped.format(n=1, at=40))
        + lv("pool9", '"READ", "WRITE", "VISIBLE"',
             'extent_count = 8\ntype = "thin-pool"\nmetadata = "pool9_tmeta"\npool = "pool9_tdata"\n'
             'transaction_id = 0\nchunk_size = 128\ndiscards = "passdown"\nzero_new_blocks = 1')
        + lv("pool9_tmeta", '"READ", "WRITE"', striped.format(n=1, at=41))
        + lv("pool9_tdata", '"READ", "WRITE"', striped.format(n=8, at=42))
    )  # fmt: skip
    if "logical_volumes {" in text:
        text = text.replace("logical_volumes {", "logical_volumes {\n" + volumes, 1)
    else:
        # a VG without LVs has no logical_volumes section: add one after physical_volumes
        text = re.sub(r"\n\t\}\n\s*\n\}\s*\Z", lambda _: "\n\t}\n\n\tlogical_volumes {\n" + volumes + "\t}\n\n}\n", text)
    assert "pool9_tdata" in text, "the thin pool was not added to the metadata"
    backup.write_text(text)
    restored = subprocess.run(
        ["vgcfgrestore", "--force", "-f", str(backup), vg], env=env, capture_output=True, text=True
    )
    assert restored.returncode == 0, restored.stderr


@pytest.fixture(scope="module")
def real_vg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    if os.geteuid() != 0:
        pytest.skip("needs root: losetup and LVM on a loop device")
    for tool in ("losetup", "lvm", "vgcfgbackup"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (lvm2, util-linux)")
    tmp = tmp_path_factory.mktemp("lvm")
    image = tmp / "pv.img"
    with image.open("wb") as f:
        f.truncate(256 << 20)
    attached = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True)
    if attached.returncode != 0:
        pytest.skip(f"no loop device: {attached.stderr.strip()}")
    loop = attached.stdout.strip()
    conf = tmp / "etc"
    conf.mkdir()
    (conf / "lvm.conf").write_text(
        f'devices {{ filter = [ "a|^{loop}$|", "r|.*|" ] use_devicesfile = 0 obtain_device_list_from_udev = 0 }}\n'
        f'global {{ activation = 0 locking_dir = "{tmp}/lock" }}\n'
        "activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }\n"
        f'backup {{ backup = 0 archive = 0 backup_dir = "{tmp}/backup" archive_dir = "{tmp}/archive" }}\n'
    )
    env = {**os.environ, "LVM_SYSTEM_DIR": str(conf), "LVM_SUPPRESS_FD_WARNINGS": "1"}
    vg = "kt" + secrets.token_hex(4)
    try:
        for command in (["pvcreate", "-q", loop], ["vgcreate", "-q", "-s", "4m", vg, loop]):
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        _add_thin_pool(vg, loop, env, tmp)
        yield vg, env
    finally:
        subprocess.run(["vgremove", "-ff", "-y", vg], env=env, capture_output=True)
        subprocess.run(["losetup", "-d", loop], capture_output=True)


def _lvs(vg: str, env: dict[str, str]) -> dict[str, lvm.LogicalVolume]:
    done = _run(lvm.lvs_json_command(vg), env)
    assert done.returncode == 0, done.stderr
    return {lv.name: lv for lv in lvm.parse_lvs(done.stdout)}


def test_lvcreate_lvextend_lvremove_for_real(real_vg):
    vg, env = real_vg
    created = _run(lvm.lvcreate(vg, "disk-1", 10 << 20), env)
    assert created.returncode == 0, created.stderr
    disk = _lvs(vg, env)["disk-1"]
    assert disk.size_bytes == 12 << 20  # rounded up to whole 4 MiB extents
    assert disk.segtypes == ("linear",) and disk.layout == "linear"

    extended = _run(lvm.lvextend(vg, "disk-1", 20 << 20), env)
    assert extended.returncode == 0, extended.stderr
    assert _lvs(vg, env)["disk-1"].size_bytes == 20 << 20

    removed = _run(lvm.lvremove(vg, "disk-1"), env)
    assert removed.returncode == 0, removed.stderr
    assert "disk-1" not in _lvs(vg, env)


def test_odd_byte_size_is_accepted_by_lvm(real_vg):
    vg, env = real_vg
    created = _run(lvm.lvcreate(vg, "odd", 1000), env)
    assert created.returncode == 0, created.stderr
    assert _lvs(vg, env)["odd"].size_bytes == 4 << 20
    assert _run(lvm.lvremove(vg, "odd"), env).returncode == 0


def test_vgs_and_pvs_commands_for_real(real_vg):
    vg, env = real_vg
    groups = {g.name: g for g in lvm.parse_vgs(_run(lvm.vgs_json_command(), env).stdout)}
    assert groups[vg].extent_size == 4 << 20 and groups[vg].pv_count == 1
    (pv,) = [p for p in lvm.parse_pvs(_run(lvm.pvs_json_command(), env).stdout) if p.vg == vg]
    assert pv.name.startswith("/dev/loop") and pv.dev_size_bytes == 256 << 20


def test_the_thin_pool_written_into_metadata_is_seen(real_vg):
    vg, env = real_vg
    pool = _lvs(vg, env)["pool9"]
    assert pool.is_thin_pool and pool.size_bytes == 32 << 20


def test_thin_and_raid1_commands_reach_lvm_intact(real_vg):
    """Without device-mapper LVM refuses these, but only after parsing every word and finding the pool."""
    vg, env = real_vg
    thin = _run(lvm.lvcreate_thin(vg, "pool9", "thin-1", 64 << 20), env)
    assert thin.returncode != 0 and "Can't create thin without using device-mapper" in thin.stderr, thin.stderr
    no_pool = _run(lvm.lvcreate_thin(vg, "nopool", "thin-1", 64 << 20), env)
    assert "Pool nopool not found" in no_pool.stderr, no_pool.stderr
    pool = _run(lvm.thin_pool_create(vg, "pool8", 16 << 20), env)
    assert "Can't create thin-pool without using device-mapper" in pool.stderr, pool.stderr
    mirror = _run(lvm.lvcreate_mirror(vg, "m1", 8 << 20, 1), env)
    assert "Can't create raid1 without using device-mapper" in mirror.stderr, mirror.stderr
    # refused, and nothing half-made is left behind
    assert set(_lvs(vg, env)) == {"pool9"}


def test_the_planners_thin_pool_name_and_a_pool_extension_reach_lvm_intact(real_vg):
    """Issue 18 item 5: the pool kerub-tui makes on a VG (planner/thin.py) is a name LVM takes, and
    extending a pool is LVM's resize of it; without device-mapper LVM refuses both only for that."""
    from kerub_tui.planner.thin import THIN_POOL_NAME

    vg, env = real_vg
    pool = _run(lvm.thin_pool_create(vg, THIN_POOL_NAME, 16 << 20), env)
    assert "Can't create thin-pool without using device-mapper" in pool.stderr, pool.stderr
    thin = _run(lvm.lvcreate_thin(vg, THIN_POOL_NAME, "kerub-data", 64 << 20), env)
    assert f"Pool {THIN_POOL_NAME} not found" in thin.stderr, thin.stderr
    grown = _run(lvm.lvextend(vg, "pool9", 48 << 20), env)
    assert f"Cannot resize {vg}/pool9 without using device-mapper" in grown.stderr, grown.stderr
    assert set(_lvs(vg, env)) == {"pool9"} and _lvs(vg, env)["pool9"].size_bytes == 32 << 20


# --- a VG of three PVs: lvconvert -m, pvmove, vgreduce (issue 18 items 6 and 7) ----------------------


@pytest.fixture(scope="module")
def three_pvs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str], dict[str, str]]]:
    """A real VG on three loop-device PVs (a lab host has one PV, and its lvm wrapper maps one: the
    commands these tests run are metadata operations, or refused for want of device-mapper)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: losetup and LVM on loop devices")
    for tool in ("losetup", "lvm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (lvm2, util-linux)")
    tmp = tmp_path_factory.mktemp("lvm3")
    loops: list[str] = []
    try:
        for i in range(3):
            image = tmp / f"pv{i}.img"
            with image.open("wb") as f:
                f.truncate(64 << 20)
            attached = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True)
            if attached.returncode != 0:
                pytest.skip(f"no loop device: {attached.stderr.strip()}")
            loops.append(attached.stdout.strip())
        conf = tmp / "etc"
        conf.mkdir()
        accept = ", ".join(f'"a|^{loop}$|"' for loop in loops)
        (conf / "lvm.conf").write_text(
            f'devices {{ filter = [ {accept}, "r|.*|" ] use_devicesfile = 0 obtain_device_list_from_udev = 0 }}\n'
            f'global {{ activation = 0 locking_dir = "{tmp}/lock" use_lvmpolld = 0 }}\n'
            "activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }\n"
            f'backup {{ backup = 0 archive = 0 backup_dir = "{tmp}/backup" archive_dir = "{tmp}/archive" }}\n'
        )
        env = {**os.environ, "LVM_SYSTEM_DIR": str(conf), "LVM_SUPPRESS_FD_WARNINGS": "1"}
        vg = "kt" + secrets.token_hex(4)
        for command in (["pvcreate", "-q", *loops], ["vgcreate", "-q", "-s", "4m", vg, *loops]):
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        yield vg, loops, env
    finally:
        if loops:
            env = {**os.environ, "LVM_SYSTEM_DIR": str(tmp / "etc"), "LVM_SUPPRESS_FD_WARNINGS": "1"}
            subprocess.run(["vgremove", "-ff", "-y", vg], env=env, capture_output=True)
        for loop in loops:
            subprocess.run(["losetup", "-d", loop], capture_output=True)


class _Here:
    """The executor's host operations, run on this machine against the private lvm.conf: the
    verifiers read what real LVM says."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    async def run(self, host_id: str, command: str, **_: object) -> OperationResult:
        done = _run(command, self.env)
        return OperationResult(done.returncode, done.stdout, done.stderr)


def _pvs(env: dict[str, str]) -> dict[str, lvm.PhysicalVolume]:
    return {p.name: p for p in lvm.parse_pvs(_run(lvm.pvs_json_command(), env).stdout)}


def test_a_vg_of_three_pvs_is_read_pv_by_pv(three_pvs):
    vg, loops, env = three_pvs
    groups = lvm.parse_vgs(_run(lvm.vgs_json_command(), env).stdout)
    volumes = lvm.parse_pvs(_run(lvm.pvs_json_command(), env).stdout)
    pvs = physical_volumes(groups, volumes)[f"lvm:{vg}"]
    assert sorted(p.name for p in pvs) == sorted(loops)
    assert all(p.size_bytes == 60 << 20 and p.free_bytes == p.size_bytes for p in pvs)  # 64 MiB less metadata


def test_lvconvert_pvmove_and_vgreduce_for_real(three_pvs):
    vg, loops, env = three_pvs
    here = _Here(env)
    assert _run(lvm.lvcreate(vg, "kerub-d", 8 << 20), env).returncode == 0
    holding = next(name for name, pv in _pvs(env).items() if pv.free_bytes < pv.size_bytes)
    empty = [loop for loop in loops if loop != holding]
    # lvconvert -m: LVM parses every word and finds the LV, then wants device-mapper to sync the copy
    converted = _run(lvm.lvconvert_mirror(vg, "kerub-d", 2), env)
    assert converted.returncode != 0 and f"{vg}/kerub-d must be active" in converted.stderr, converted.stderr
    convert = ConvertLvToMirror("disk-d", "h", f"lvm:{vg}", vg, "kerub-d", 2)
    assert asyncio.run(_verify_mirror(here, convert, None)) == (
        f"LV {vg}/kerub-d is linear with 0 images, not raid1 with 3")
    # pvmove: without device-mapper LVM records the move and stops ("Interrupted"), exit status 0;
    # the verifier reads back that nothing moved, so the step fails rather than claiming the disk empty
    moved = _run(lvm.pvmove(holding, empty), env)
    move = MovePvExtents("h", f"lvm:{vg}", vg, holding)
    problem = asyncio.run(_verify_pv_empty(here, move, None))
    assert problem is not None and (problem.startswith(f"PV {holding} still holds") or "pvmove" in problem), (
        moved, problem)
    _run(f"pvmove --abort {shlex.quote(holding)}", env)
    # vgreduce: refused for the PV that holds the LV, done for an empty one
    refused = _run(lvm.vgreduce(vg, holding), env)
    assert refused.returncode != 0 and "still in use" in refused.stderr, refused.stderr
    reduce_held = RemovePvFromVg("h", f"lvm:{vg}", vg, holding)
    assert asyncio.run(_verify_pv_out(here, reduce_held, None)) == f"PV {holding} is still in {vg}"
    reduced = _run(lvm.vgreduce(vg, empty[-1]), env)
    assert reduced.returncode == 0, reduced.stderr
    assert asyncio.run(_verify_pv_out(here, RemovePvFromVg("h", f"lvm:{vg}", vg, empty[-1]), None)) is None
    assert _pvs(env)[empty[-1]].vg is None  # an orphan PV now: the disk can be replaced
    assert [lv for lv in _lvs(vg, env)] == ["kerub-d"]  # nothing half-made left behind
