"""Discovery commands run for real, their captured outputs assembled into HostCapabilities, and the
stream wrapper that makes a remote stream die with its channel."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kerub_tui.core.models import HostCapabilities, StorageTechnology
from kerub_tui.hosts.facts import (
    ABSENT_MARKER,
    DISCOVERY_COMMANDS,
    MISSING_MARKER,
    Output,
    _needs,
    assemble_capabilities,
    images_fs_command,
    read_storage,
    read_temperature,
    smart_devices,
    smart_health_command,
    storage_monitor_commands,
    stream_wrapper,
    vmstat_stream_command,
    whole_disk,
)
from kerub_tui.hosts.parse import VmstatParser, parse_findmnt, parse_lsblk

CAPTURES = Path(__file__).resolve().parents[1] / "captures"
NOW = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)


def captured(directory: Path) -> dict[str, Output]:
    manifest = json.loads((directory / "manifest.json").read_text())
    return {
        name: Output(entry["exit_code"], (directory / f"{name}.out").read_text(), entry["stderr"])
        for name, entry in manifest.items()
    }


def sh(command: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60, **kwargs)


# --- assembling captured outputs ---------------------------------------------------------------------


def test_captures_were_made_with_todays_commands():
    """A changed command must be re-captured (tests/captures/discovery/capture.py)."""
    for directory in ("vm-plain", "vm-lab"):
        manifest = json.loads((CAPTURES / "discovery" / directory / "manifest.json").read_text())
        assert {name: entry["command"] for name, entry in manifest.items()} == {
            c.name: c.command for c in DISCOVERY_COMMANDS
        }


def test_assemble_the_lab_vm():
    capabilities, problems = assemble_capabilities(captured(CAPTURES / "discovery" / "vm-lab"), now=NOW)
    assert problems == []
    assert HostCapabilities.model_validate(capabilities.model_dump()) == capabilities
    assert capabilities.discovered_at == NOW
    assert capabilities.os.id == "debian" and capabilities.cpu.cpus == 2
    assert capabilities.memory_bytes > 1 << 30
    assert capabilities.dmi is None  # no DMI table in this VM: a fact
    assert capabilities.hypervisor.kvm and capabilities.hypervisor.libvirt_version == "9.0.0"
    assert capabilities.ksm and capabilities.tools["lvm"] and not capabilities.tools["zfs"]
    assert all(f.size_bytes > 0 for f in capabilities.filesystems)  # proc, sysfs, cgroup left out
    storage = {s.id: s for s in capabilities.storage}
    assert set(storage) == {"lvm:capvg", "lvm:smallvg", "file:/var/lib/kerub-tui/images"}
    assert storage["lvm:capvg"].technology is StorageTechnology.lvm
    assert (storage["lvm:capvg"].size_bytes, storage["lvm:capvg"].free_bytes) == (1602224128, 200 << 20)
    assert storage["lvm:capvg"].device is None  # two PVs: no single backing device
    assert storage["lvm:smallvg"].device == "/dev/loop2"
    # every PV of a VG is known (issue 18 item 7): a failing one in a multi-PV VG is no longer invisible
    assert [(p.name, p.size_bytes, p.free_bytes, p.disk) for p in storage["lvm:capvg"].pvs] == [
        ("/dev/loop0", 1069547520, 0, "/dev/loop0"), ("/dev/loop1", 532676608, 200 << 20, "/dev/loop1")]
    assert [p.name for p in storage["lvm:smallvg"].pvs] == ["/dev/loop2"]  # the orphan loop3 is in no VG
    assert storage["lvm:capvg"].pvs[1].used_bytes == 532676608 - (200 << 20)
    images = storage["file:/var/lib/kerub-tui/images"]
    assert images.technology is StorageTechnology.file and images.device == "/dev/vda"
    assert 0 < images.free_bytes < images.size_bytes
    assert smart_devices(capabilities) == ["/dev/vda"]


def test_assemble_the_plain_vm_reports_the_missing_libvirtd():
    capabilities, problems = assemble_capabilities(captured(CAPTURES / "discovery" / "vm-plain"))
    assert len(problems) == 1 and problems[0].startswith("virsh_capabilities: exit status 1")
    assert "libvirt-sock" in problems[0]
    assert not capabilities.hypervisor.kvm and "libvirt-sock" in (capabilities.hypervisor.reason or "")
    assert capabilities.storage == []  # no VG, no image directory
    assert capabilities.cpu.architecture == "x86_64"


def test_missing_tools_are_facts_not_problems():
    outputs = captured(CAPTURES / "discovery" / "vm-lab")
    for name, tool in (("dmidecode", "dmidecode"), ("pvs", "lvm"), ("vgs", "lvm"), ("lvs", "lvm"),
                       ("virsh_version", "virsh"), ("virsh_capabilities", "virsh"),
                       ("virsh_domcapabilities", "virsh"), ("lscpu_caches", "lscpu -C"), ("ksm", "ksm")):  # fmt: skip
        outputs[name] = Output(0, f"{MISSING_MARKER} {tool}\n")
    outputs["images_fs"] = Output(0, f"{ABSENT_MARKER} /var/lib/kerub-tui/images\n")
    capabilities, problems = assemble_capabilities(outputs)
    assert problems == []
    assert capabilities.storage == [] and capabilities.dmi is None and not capabilities.ksm
    assert capabilities.hypervisor.reason == "virsh is not installed"
    assert [c.size_kib for c in capabilities.cpu.caches] == [48, 32, 1024, 32768]  # from the summary


def test_garbage_becomes_problems_and_the_rest_is_still_read():
    outputs = captured(CAPTURES / "discovery" / "vm-lab")
    outputs["lscpu"] = Output(0, '{"lscpu": "nope"}')
    outputs["vgs"] = Output(0, "garbage")
    outputs["virsh_capabilities"] = Output(0, "<capabilities><oops")
    outputs["tools"] = Output(0, "lvm perhaps\n")
    del outputs["meminfo"]
    outputs["kernel"] = Output(127, "", "sh: 1: uname: not found\n")
    capabilities, problems = assemble_capabilities(outputs)
    assert any(p.startswith("lscpu:") for p in problems)
    assert any(p.startswith("vgs:") for p in problems)
    assert any(p.startswith("virsh capabilities:") for p in problems)
    assert any(p.startswith("command -v:") for p in problems)
    assert "meminfo: not run" in problems
    assert "kernel: exit status 127: sh: 1: uname: not found" in problems
    assert capabilities.cpu.cpus == 0 and capabilities.memory_bytes == 0 and capabilities.tools == {}
    assert not capabilities.hypervisor.kvm and capabilities.hypervisor.reason
    assert [s.id for s in capabilities.storage] == ["file:/var/lib/kerub-tui/images"]  # the image dir still counts
    assert capabilities.os.id == ""  # os needs all three of its outputs
    assert capabilities.block_devices  # untouched outputs are read as usual


def test_a_bad_cache_detail_falls_back_to_the_summary():
    outputs = captured(CAPTURES / "discovery" / "vm-lab")
    outputs["lscpu_caches"] = Output(0, '{"caches": [{"name": "L1d", "one-size": "huge"}]}')
    capabilities, problems = assemble_capabilities(outputs)
    assert len(problems) == 1 and problems[0].startswith("lscpu -C:")
    assert [c.size_kib for c in capabilities.cpu.caches] == [48, 32, 1024, 32768]


def test_read_storage_of_the_lab_vm():
    outputs = captured(CAPTURES / "monitor" / "storage")
    reading = read_storage(outputs)
    assert reading.problems == []
    assert reading.free["lvm:capvg"] == 200 << 20 and reading.free["lvm:smallvg"] == 159383552
    assert reading.free["file:/var/lib/kerub-tui/images"] > 0
    assert [p.name for p in reading.thin_pools] == ["pool0"]
    assert reading.pvs is not None and [p.name for p in reading.pvs["lvm:capvg"]] == ["/dev/loop0", "/dev/loop1"]
    assert reading.pvs["lvm:capvg"][1].free_bytes == 200 << 20 and reading.pvs["lvm:capvg"][1].disk is None
    manifest = json.loads((CAPTURES / "monitor" / "storage" / "manifest.json").read_text())
    assert {n: e["command"] for n, e in manifest.items()} == storage_monitor_commands()


def test_read_temperature():
    sample = (CAPTURES / "monitor" / "thermal" / "thermal-server.SAMPLE.txt").read_text()
    assert read_temperature(Output(0, sample)) == (63.0, [])
    assert read_temperature(Output(0, "")) == (None, [])
    value, problems = read_temperature(Output(0, "garbage\n"))
    assert value is None and len(problems) == 1


# --- the commands, run here ---------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="discovery runs privileged commands (dmidecode, lvm, virsh)")
def test_every_discovery_command_runs_here_and_assembles():
    outputs = {}
    for command in DISCOVERY_COMMANDS:
        done = sh(command.command)
        outputs[command.name] = Output(done.returncode, done.stdout, done.stderr)
        # a missing tool or a missing libvirtd is not a shell failure, except virsh's own exit status
        if not command.name.startswith("virsh"):
            assert done.returncode == 0, (command.name, done.stderr)
    capabilities, problems = assemble_capabilities(outputs)
    assert all(p.startswith("virsh") for p in problems), problems
    assert capabilities.cpu.cpus == os.cpu_count()
    assert capabilities.os.kernel == os.uname().release
    assert capabilities.tools["dmidecode"] is True


def test_needs_prints_the_marker_for_a_missing_tool():
    done = sh(_needs("kerub-tui-no-such-tool", "echo ran"))
    assert (done.returncode, done.stdout) == (0, f"{MISSING_MARKER} kerub-tui-no-such-tool\n")
    assert sh(_needs("sh", "echo ran")).stdout == "ran\n"


def test_images_fs_command_here(tmp_path):
    (holding,) = parse_findmnt(sh(images_fs_command(str(tmp_path))).stdout)
    assert str(tmp_path).startswith(holding.mountpoint)
    absent = tmp_path / "absent"
    assert sh(images_fs_command(str(absent))).stdout == f"{ABSENT_MARKER} {absent}\n"


def test_images_fs_command_quotes_a_hostile_directory(tmp_path):
    victim = tmp_path / "pwned"
    hostile = f"{tmp_path}/x; touch {victim}; $(touch {victim}) `touch {victim}`"
    done = sh(images_fs_command(hostile))
    assert done.returncode == 0 and done.stdout.startswith(ABSENT_MARKER)
    assert not victim.exists()


@pytest.mark.parametrize(
    "device", ["sda", "/dev/sda; reboot", "/dev/$(reboot)", "/dev/../etc/shadow", "/dev/sda\n", "/dev/", "", None, "-d"]
)
def test_smart_health_command_refuses_odd_devices(device):
    with pytest.raises(ValueError):
        smart_health_command(device)


def test_smart_health_command_text():
    assert "smartctl -H -j /dev/nvme0n1" in smart_health_command("/dev/nvme0n1")
    assert "smartctl -H -j /dev/disk/by-id/ata-ST500DM002-1BD14_Z2A" in smart_health_command(
        "/dev/disk/by-id/ata-ST500DM002-1BD14_Z2A"
    )


# --- stream_wrapper ---------------------------------------------------------------------------------


def _group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry.name))
    return alive


def _wait_group_gone(pgid: int) -> list[int]:
    """Bounded wait for the group to die (killed processes take a moment to be reaped); its survivors."""
    for _ in range(100):
        alive = _group_alive(pgid)
        if not alive:
            return []
        time.sleep(0.05)
    return _group_alive(pgid)


def _start(command: str) -> tuple[subprocess.Popen[str], int]:
    """The wrapped command in its own session; returns it and the inner command's pid (its first line)."""
    wrapper = subprocess.Popen(
        ["sh", "-c", stream_wrapper(command)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert wrapper.stdout is not None
    inner = int(wrapper.stdout.readline())
    return wrapper, inner


def test_stream_dies_when_stdin_closes():
    wrapper, inner = _start("sh -c 'echo $$; exec sleep 600'")
    os.kill(inner, 0)  # running
    assert wrapper.stdin is not None
    wrapper.stdin.close()  # what a closed SSH channel looks like to the remote command
    assert wrapper.wait(timeout=30) != 0
    assert _wait_group_gone(wrapper.pid) == []
    assert wrapper.stderr is not None and wrapper.stderr.read() == ""  # no "Terminated" noise in the stream


@pytest.mark.parametrize("round_", range(5))
def test_stream_ending_at_once_leaves_no_watcher(round_):
    """The command may end before the wrapper has set itself up: nothing may be left behind."""
    wrapper, _inner = _start("sh -c 'echo $$'")
    assert wrapper.wait(timeout=30) == 0
    assert _wait_group_gone(wrapper.pid) == []
    assert wrapper.stdin is not None
    wrapper.stdin.close()


def test_stream_dies_on_hangup():
    wrapper, _inner = _start("sh -c 'echo $$; exec sleep 600'")
    os.kill(wrapper.pid, signal.SIGHUP)
    assert wrapper.wait(timeout=30) != 0
    assert _wait_group_gone(wrapper.pid) == []
    assert wrapper.stdin is not None
    wrapper.stdin.close()


def test_stream_that_ends_by_itself_ends_the_wrapper_with_its_status():
    wrapper, _inner = _start("sh -c 'echo $$; exit 3'")
    assert wrapper.wait(timeout=30) == 3  # stdin is still open: the watcher must not keep it alive
    assert _wait_group_gone(wrapper.pid) == []
    assert wrapper.stdin is not None
    wrapper.stdin.close()


def test_stdin_lines_do_not_stop_the_stream():
    wrapper, inner = _start("sh -c 'echo $$; exec sleep 600'")
    assert wrapper.stdin is not None
    wrapper.stdin.write("keepalive\n" * 3)
    wrapper.stdin.flush()
    os.kill(inner, 0)
    wrapper.stdin.close()
    wrapper.wait(timeout=30)
    assert _wait_group_gone(wrapper.pid) == []


def test_vmstat_stream_feeds_the_parser():
    wrapper = subprocess.Popen(
        ["sh", "-c", vmstat_stream_command(1)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    assert wrapper.stdout is not None and wrapper.stdin is not None
    parser = VmstatParser(memory_total=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    samples = []
    while len(samples) < 2:
        sample = parser.feed(wrapper.stdout.readline())
        if sample is not None:
            samples.append(sample)
    wrapper.stdin.close()
    wrapper.wait(timeout=30)
    assert _wait_group_gone(wrapper.pid) == []
    assert samples[0].since_boot and not samples[1].since_boot
    assert samples[1].memory_free > 0 and samples[1].memory_used is not None and samples[1].memory_used > 0


@pytest.mark.parametrize("command", ["", "   ", "a\nb", None])
def test_stream_wrapper_refuses_odd_commands(command):
    with pytest.raises(ValueError):
        stream_wrapper(command)


@pytest.mark.parametrize("interval", [0, -1, 3601, True, 1.5, "1"])
def test_vmstat_interval_is_checked(interval):
    with pytest.raises(ValueError):
        vmstat_stream_command(interval)


def test_the_first_storage_reading_comes_from_discovery_outputs():
    reading = read_storage(captured(CAPTURES / "discovery" / "vm-lab"))
    assert reading.problems == []
    assert set(reading.free) == {"lvm:capvg", "lvm:smallvg", "file:/var/lib/kerub-tui/images"}
    assert [p.name for p in reading.thin_pools] == ["pool0"]


def test_thin_pool_free_space_under_the_key_the_planner_reads():
    lvs = (CAPTURES / "discovery" / "samples" / "lvs-thin-usage.SAMPLE.json").read_text()
    reading = read_storage({"vgs": Output(0, '{"report": [{"vg": []}]}'), "lvs": Output(0, lvs)})
    # 100 GiB pool, 91.37 % used; the planner looks it up as thin:VG/POOL
    assert reading.free == {"thin:vg0/pool0": int(107374182400 * 8.63 / 100)}
    assert reading.problems == []


def test_a_pv_on_a_partition_belongs_to_its_disk():
    """SMART watches whole disks; LVM names the partition: a PV's disk comes from lsblk's tree."""
    devices = parse_lsblk((CAPTURES / "discovery" / "samples" / "lsblk-partitions.SAMPLE.json").read_text())
    assert {d.name: d.parent for d in devices}["vg0-root"] == "sda2"
    assert whole_disk("/dev/sda2", devices) == "/dev/sda"
    assert whole_disk("/dev/nvme0n1p1", devices) == "/dev/nvme0n1"
    assert whole_disk("/dev/sdb", devices) == "/dev/sdb"
    assert whole_disk("/dev/sdz", devices) is None  # lsblk does not know it: no guess


def test_storage_readings_without_pvs_or_with_a_broken_pvs():
    outputs = captured(CAPTURES / "monitor" / "storage")
    assert read_storage({k: v for k, v in outputs.items() if k != "pvs"}).pvs is None  # not read: nothing claimed
    broken = read_storage({**outputs, "pvs": Output(0, '{"report": [{"pv": [{"pv_name": "/dev/a b"}]}]}')})
    assert broken.pvs is None and len(broken.problems) == 1 and broken.problems[0].startswith("pvs")
    assert broken.free["lvm:capvg"] == 200 << 20  # the rest of the reading stands
