"""ZFS and GVinum builders and parsers.

Neither can run here (no zfs kernel module for this kernel; gvinum is FreeBSD only). The parsers are
tested on HAND-WRITTEN samples of the documented formats (tests/captures/ops/*.SAMPLE.txt, see
SAMPLES.md there), and the shell logic around the tools (idempotent destroy, refusal to shrink, the
temporary config file) is run for real by sh against small stand-in ``zfs``/``gvinum`` scripts that
record their arguments: stand-ins, named as such, because the real tools cannot exist here.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerub_tui.hosts.gvinum import (
    GvinumObject,
    gvinum_config,
    gvinum_create_volume,
    gvinum_remove_volume,
    parse_gvinum_list,
    parse_gvinum_printconfig,
    volume_size,
)
from kerub_tui.hosts.zfs import (
    ZfsDataset,
    parse_zfs_list,
    parse_zpool_list,
    zfs_create_volume,
    zfs_destroy_volume,
    zfs_list_command,
    zfs_resize_volume,
    zpool_list_command,
    zvol_size,
)

CAPTURES = Path(__file__).parent.parent / "captures" / "ops"
MIB = 1 << 20


def stand_in(tmp_path: Path, name: str, body: str) -> dict[str, str]:
    """Put a stand-in tool first on PATH; it appends its arguments to calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    tool.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls.log\n{body}\n')
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}


def sh(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=30)


# --- zfs -----------------------------------------------------------------------------------------


def test_zfs_builders() -> None:
    assert zfs_create_volume("tank", "disk-1", 64 * MIB) == "zfs create -s -V 67108864 tank/disk-1"
    assert zfs_create_volume("tank", "disk-1", 1000, sparse=False) == "zfs create -V 131072 tank/disk-1"
    assert zvol_size(128 * 1024 + 1) == 256 * 1024
    assert zfs_list_command("tank") == "zfs list -Hp -o name,used,avail,volsize,type -t filesystem,volume -r tank"
    assert zpool_list_command() == "zpool list -Hp -o name,size,alloc,free,health"


@pytest.mark.parametrize(
    "call",
    [
        lambda: zfs_create_volume("tank", "a/b", MIB),
        lambda: zfs_create_volume("tank", "x; zfs destroy -r tank", MIB),
        lambda: zfs_create_volume("mirror", "x", MIB),
        lambda: zfs_create_volume("1tank", "x", MIB),
        lambda: zfs_create_volume("tank", "x", 0),
        lambda: zfs_destroy_volume("tank", "-r"),
        lambda: zfs_list_command("tank pool"),
    ],
)
def test_zfs_refuses_bad_values(call) -> None:
    with pytest.raises(ValueError):
        call()


def test_zfs_destroy_is_idempotent_against_a_stand_in(tmp_path: Path) -> None:
    # the stand-in knows one dataset, tank/disk-1: `zfs list` fails for any other
    env = stand_in(tmp_path, "zfs", '[ "$1" = list ] && [ "$5" != tank/disk-1 ] && exit 1; exit 0')
    assert sh(zfs_destroy_volume("tank", "disk-1"), env).returncode == 0
    assert sh(zfs_destroy_volume("tank", "gone"), env).returncode == 0
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls == ["list -H -o name tank/disk-1", "destroy tank/disk-1", "list -H -o name tank/gone"]


def test_zfs_resize_refuses_to_shrink_against_a_stand_in(tmp_path: Path) -> None:
    env = stand_in(tmp_path, "zfs", f'[ "$1" = get ] && echo {64 * MIB}; exit 0')
    grown = sh(zfs_resize_volume("tank", "disk-1", 128 * MIB), env)
    assert grown.returncode == 0
    shrunk = sh(zfs_resize_volume("tank", "disk-1", 32 * MIB), env)
    assert shrunk.returncode != 0 and "refusing to shrink tank/disk-1" in shrunk.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls == [
        "get -Hp -o value volsize tank/disk-1",
        f"set volsize={128 * MIB} tank/disk-1",
        "get -Hp -o value volsize tank/disk-1",
    ]


def test_parse_zfs_samples() -> None:
    """On hand-written samples of the documented -Hp format (see captures/ops/SAMPLES.md)."""
    datasets = parse_zfs_list((CAPTURES / "zfs-list.SAMPLE.txt").read_text())
    assert [d.name for d in datasets] == ["tank", "tank/kerub", "tank/kerub/disk-1", "tank/kerub/disk-2"]
    assert datasets[2] == ZfsDataset("tank/kerub/disk-1", 69632, 51539607552, 67108864, "volume")
    assert datasets[0].volsize is None and datasets[0].type == "filesystem" and datasets[3].pool == "tank"
    pools = parse_zpool_list((CAPTURES / "zpool-list.SAMPLE.txt").read_text())
    assert [(p.name, p.size, p.free, p.health) for p in pools] == [
        ("tank", 107374182400, 105226567680, "ONLINE"),
        ("backup", 53687091200, 53687091200, "DEGRADED"),
    ]
    assert parse_zfs_list("") == [] and parse_zpool_list("\n") == []


@pytest.mark.parametrize(
    "text",
    [
        "tank 1 2 - filesystem",  # spaces: -H was not given
        "tank\t1.5G\t2\t-\tfilesystem",  # human sizes: -p was not given
        "tank\t1\t2\t-\tzvol",
        "cannot open 'tank': dataset does not exist",
    ],
)
def test_zfs_parser_refuses_other_formats(text: str) -> None:
    with pytest.raises(ValueError):
        parse_zfs_list(text)


# --- gvinum --------------------------------------------------------------------------------------


def test_gvinum_config_and_builders() -> None:
    assert gvinum_config("kerub-disk-1", "a", 64 * MIB) == "volume kerub-disk-1\n  plex org concat\n    sd length 65536k drive a\n"
    assert "sd length 1k" in gvinum_config("v", "a", 1)  # rounded up to whole kilobytes
    assert gvinum_remove_volume("v") == (
        "if gvinum lv | awk -v n=v '$1 == \"V\" && $2 == n { found = 1 } END { exit !found }'; then gvinum rm -r v; fi"
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda: gvinum_create_volume("my.vol", "a", MIB),
        lambda: gvinum_create_volume("v\nvolume evil", "a", MIB),
        lambda: gvinum_create_volume("v", "a drive b", MIB),
        lambda: gvinum_create_volume("v", "a", -1),
        lambda: gvinum_remove_volume("-r"),
    ],
)
def test_gvinum_refuses_bad_values(call) -> None:
    with pytest.raises(ValueError):
        call()


def test_gvinum_create_writes_the_config_file_and_removes_it(tmp_path: Path) -> None:
    # the stand-in copies the config file it is given, so the test sees what gvinum would read
    env = stand_in(tmp_path, "gvinum", f'cp "$2" {tmp_path}/seen.conf; [ "$1" = create ]')
    env["TMPDIR"] = str(tmp_path / "tmp")
    os.mkdir(env["TMPDIR"])
    result = sh(gvinum_create_volume("kerub-disk-1", "a", 64 * MIB), env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "seen.conf").read_text() == gvinum_config("kerub-disk-1", "a", 64 * MIB)
    assert os.listdir(env["TMPDIR"]) == []  # the temporary file is gone
    # a failing create fails the command, and still removes the file
    failing = stand_in(tmp_path, "gvinum", "exit 3")
    failing["TMPDIR"] = env["TMPDIR"]
    assert sh(gvinum_create_volume("kerub-disk-1", "a", MIB), failing).returncode != 0
    assert os.listdir(env["TMPDIR"]) == []


def test_gvinum_remove_is_idempotent_against_a_stand_in(tmp_path: Path) -> None:
    listing = (CAPTURES / "gvinum-list.SAMPLE.txt").read_text()
    (tmp_path / "lv.txt").write_text("\n".join(line for line in listing.splitlines() if line.startswith("V ")))
    env = stand_in(tmp_path, "gvinum", f'[ "$1" = lv ] && cat {tmp_path}/lv.txt; exit 0')
    assert sh(gvinum_remove_volume("kerub-disk-1"), env).returncode == 0
    assert sh(gvinum_remove_volume("kerub-disk"), env).returncode == 0  # a prefix is not a match
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls == ["lv", "rm -r kerub-disk-1", "lv"]


def test_parse_gvinum_samples() -> None:
    """On hand-written samples of the formats in gvinum(8) and the Handbook (see SAMPLES.md)."""
    objects = parse_gvinum_list((CAPTURES / "gvinum-list.SAMPLE.txt").read_text())
    assert [o.kind for o in objects].count("subdisk") == 3
    assert objects[0] == GvinumObject("drive", "a", "up", 2063 * MIB, "/dev/da3h", 35 * MIB)
    volume = next(o for o in objects if o.name == "kerub-disk-1" and o.kind == "volume")
    assert (volume.state, volume.size_bytes) == ("up", 64 * MIB)
    subdisk = next(o for o in objects if o.name == "kerub-disk-1.p0.s0")
    assert subdisk.device == "a"
    config = parse_gvinum_printconfig((CAPTURES / "gvinum-printconfig.SAMPLE.txt").read_text())
    assert set(config) == {"myvol", "kerub-disk-1"}
    assert volume_size(config["kerub-disk-1"]) == 64 * MIB
    assert volume_size(config["myvol"]) == 1024 * MIB  # two plexes mirror: the size of one
    assert config["myvol"][1].drive == "b"


@pytest.mark.parametrize(
    "text",
    ["X z State: up", "gvinum: command not found", "V v State: up Size: 12 parsecs"],
)
def test_gvinum_list_refuses_other_formats(text: str) -> None:
    with pytest.raises(ValueError):
        parse_gvinum_list(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parsers_never_crash(text: str) -> None:
    for parser in (parse_zfs_list, parse_zpool_list, parse_gvinum_list, parse_gvinum_printconfig):
        try:
            parser(text)
        except ValueError:
            pass
