"""The host-output parsers on real captured output (tests/captures/, see the READMEs there)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kerub_tui.core.models import CpuCache, KsmState
from kerub_tui.hosts.ksm import parse_ksm
from kerub_tui.hosts.lvm import parse_lvs, parse_pvs, parse_vgs
from kerub_tui.hosts.parse import (
    ParseError,
    VmstatParser,
    parse_dmidecode,
    parse_findmnt,
    parse_hypervisor,
    parse_libvirt_version,
    parse_lsblk,
    parse_lscpu,
    parse_meminfo,
    parse_os_info,
    parse_os_release,
    parse_smart_health,
    parse_thermal,
    parse_tools,
)

CAPTURES = Path(__file__).resolve().parents[1] / "captures"
DISCOVERY = CAPTURES / "discovery"
MONITOR = CAPTURES / "monitor"


def read(path: str) -> str:
    return (CAPTURES / path).read_text()


# --- lscpu --------------------------------------------------------------------------------------


def test_lscpu_json_of_this_vm_with_cache_detail():
    cpu = parse_lscpu(read("discovery/vm-lab/lscpu.out"), read("discovery/vm-lab/lscpu_caches.out"))
    assert cpu.architecture == "x86_64"
    assert cpu.vendor == "AuthenticAMD" and cpu.model == "AMD EPYC"
    assert (cpu.cpus, cpu.sockets, cpu.cores_per_socket, cpu.threads_per_core) == (2, 1, 2, 1)
    assert cpu.max_mhz is None  # this VM's lscpu shows neither max nor current MHz
    assert "avx2" in cpu.flags and "svm" not in cpu.flags
    # -C -B gives per-instance sizes in bytes: 49152 B L1d is 48 KiB
    assert cpu.caches == [
        CpuCache(name="L1d", size_kib=48),
        CpuCache(name="L1i", size_kib=32),
        CpuCache(name="L2", size_kib=1024),
        CpuCache(name="L3", size_kib=32768),
    ]


def test_lscpu_summary_sizes_are_divided_by_their_instances():
    # "96 KiB (2 instances)" is the sum: per instance it is what -C says, 48 KiB
    from_summary = parse_lscpu(read("discovery/vm-lab/lscpu.out"))
    with_detail = parse_lscpu(read("discovery/vm-lab/lscpu.out"), read("discovery/vm-lab/lscpu_caches.out"))
    assert from_summary.caches == with_detail.caches


def test_lscpu_cache_detail_without_bytes_flag():
    cpu = parse_lscpu(read("discovery/vm-lab/lscpu.out"), read("discovery/variants/lscpu-C-human.json"))
    assert [c.size_kib for c in cpu.caches] == [48, 32, 1024, 32768]


def test_lscpu_plain_text_reads_like_json():
    assert parse_lscpu(read("discovery/variants/lscpu-plain.txt")) == parse_lscpu(read("discovery/vm-lab/lscpu.out"))


def test_lscpu_translated_output_is_refused_with_the_reason():
    for name in ("lscpu-LANG-de_DE.json", "lscpu-LANG-de_DE.txt"):
        with pytest.raises(ParseError, match="LC_ALL=C"):
            parse_lscpu(read(f"discovery/variants/{name}"))
    assert parse_lscpu(read("discovery/variants/lscpu-LANG-de_DE-LC_ALL-C.json")).architecture == "x86_64"


def test_lscpu_hierarchical_format_of_util_linux_2_39():
    cpu = parse_lscpu(read("discovery/samples/lscpu-2.39-hierarchic-server.SAMPLE.json"))
    assert cpu.model.startswith("Intel(R) Xeon(R) Gold 6338")
    assert (cpu.cpus, cpu.sockets, cpu.cores_per_socket, cpu.threads_per_core) == (64, 2, 16, 2)
    assert cpu.max_mhz == 3200.0
    assert "vmx" in cpu.flags
    assert {c.name: c.size_kib for c in cpu.caches} == {"L1d": 48, "L1i": 32, "L2": 1280, "L3": 24576}


def test_lscpu_old_flat_format_with_per_instance_sizes():
    cpu = parse_lscpu(read("discovery/samples/lscpu-2.32-flat-strings.SAMPLE.json"))
    assert cpu.max_mhz == 1550.0  # no "CPU max MHz": the current clock is the best there is
    assert "svm" in cpu.flags
    assert {c.name: c.size_kib for c in cpu.caches} == {"L1d": 32, "L1i": 64, "L2": 512, "L3": 8192}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{}",
        '{"lscpu": {}}',
        '{"lscpu": [{"field": "Architecture:", "data": "x86_64"}]}',  # no CPU(s)
        '{"lscpu": [{"field": "Architecture:", "data": "x86_64"}, {"field": "CPU(s):", "data": "-2"}]}',
        '{"lscpu": [{"field": "Architecture:", "data": "x86 64"}, {"field": "CPU(s):", "data": "2"}]}',
        '{"lscpu": [{"field": "Architecture:", "data": "x86_64"}, {"field": "CPU(s):", "data": "2"},'
        ' {"field": "CPU max MHz:", "data": "NaN"}]}',
        '{"lscpu": [{"field": "Architecture:", "data": "x86_64"}, {"field": "CPU(s):", "data": "2"},'
        ' {"field": "L2 cache:", "data": "lots"}]}',
        "Architecture x86_64\n",
    ],
)
def test_lscpu_garbage_is_a_parse_error(text):
    with pytest.raises(ParseError) as caught:
        parse_lscpu(text)
    assert str(caught.value).startswith("lscpu")


# --- meminfo, os ------------------------------------------------------------------------------------


def test_meminfo_in_bytes():
    mem = parse_meminfo(read("discovery/vm-lab/meminfo.out"))
    first = read("discovery/vm-lab/meminfo.out").splitlines()[0]
    assert first.startswith("MemTotal:") and mem.total == int(first.split()[1]) * 1024
    assert 0 < mem.free <= mem.total and mem.available is not None
    assert mem.swap_total == 0 and mem.swap_used == 0


@pytest.mark.parametrize(
    "text", ["", "MemTotal: 10 kB\n", "MemTotal: -10 kB\nMemFree: 1 kB\n", "MemTotal: 10 MB\nMemFree: 1 kB\n",
             "MemTotal: 10 kB\nMemFree: 11 kB\n", "MemTotal 10 kB\nMemFree: 1 kB\n"]
)  # fmt: skip
def test_meminfo_garbage(text):
    with pytest.raises(ParseError, match="meminfo"):
        parse_meminfo(text)


def test_os_info_of_this_vm():
    os_info = parse_os_info(
        read("discovery/vm-lab/os_release.out"), read("discovery/vm-lab/kernel.out"), read("discovery/vm-lab/hostname.out")
    )
    assert (os_info.id, os_info.version_id) == ("debian", "12")
    assert os_info.pretty_name == "Debian GNU/Linux 12 (bookworm)"
    assert os_info.kernel == read("discovery/vm-lab/kernel.out").strip()
    assert os_info.hostname == "vm"


def test_os_release_quoting_and_comments():
    values = parse_os_release("# comment\nNAME='Alpine Linux'\nID=alpine\nPRETTY_NAME=\"Alpine \\\"edge\\\"\"\n\n")
    assert values == {"NAME": "Alpine Linux", "ID": "alpine", "PRETTY_NAME": 'Alpine "edge"'}


@pytest.mark.parametrize("text", ["", "ID=\n", "just words\n", "ID=a b\n", "ID='unterminated\n", "id=lower\n"])
def test_os_release_garbage(text):
    with pytest.raises(ParseError):
        parse_os_release(text)


@pytest.mark.parametrize("kernel,hostname", [("", "vm"), ("6.1.0", "two words"), ("6.1\x1b[0m", "vm")])
def test_os_info_refuses_odd_kernel_or_hostname(kernel, hostname):
    with pytest.raises(ParseError):
        parse_os_info("ID=debian\n", kernel, hostname)


# --- dmidecode ---------------------------------------------------------------------------------------


def test_dmidecode_without_a_table_is_not_available_not_an_error():
    assert parse_dmidecode(read("discovery/vm-lab/dmidecode.out")) is None
    assert parse_dmidecode("# dmidecode 3.4\n# No SMBIOS nor DMI entry point found, sorry.\n") is None
    assert parse_dmidecode("kerub-tui: missing tool: dmidecode\n") is None


def test_dmidecode_server_sample():
    dmi = parse_dmidecode(read("discovery/samples/dmidecode-server.SAMPLE.txt"))
    assert dmi is not None
    assert (dmi.system_manufacturer, dmi.system_product) == ("Dell Inc.", "PowerEdge R740")
    assert (dmi.chassis_manufacturer, dmi.chassis_type) == ("Dell Inc.", "Rack Mount Chassis")
    assert dmi.power_supplies == 2
    assert dmi.ecc is True
    assert [(m.locator, m.size_bytes, m.speed_mts, m.type, m.ecc) for m in dmi.memory_devices] == [
        ("A1", 32 << 30, 2666, "DDR4", True),  # the configured speed, not the module's rating
        ("A2", 32 << 30, 2666, "DDR4", True),
    ]  # the empty slot A3 is not a memory device


def test_dmidecode_non_ecc_desktop_with_old_units():
    text = (
        "# dmidecode 2.12\nSMBIOS 2.7 present.\n\n"
        "Handle 0x0001, DMI type 1, 27 bytes\nSystem Information\n\tManufacturer: To Be Filled By O.E.M.\n"
        "\tProduct Name: B450M\n\n"
        "Handle 0x0010, DMI type 16, 23 bytes\nPhysical Memory Array\n\tUse: System Memory\n"
        "\tError Correction Type: None\n\n"
        "Handle 0x0011, DMI type 17, 40 bytes\nMemory Device\n\tTotal Width: 64 bits\n\tData Width: 64 bits\n"
        "\tSize: 8192 MB\n\tLocator: DIMM 0\n\tType: DDR4\n\tSpeed: 2400 MHz\n\tConfigured Clock Speed: 2133 MHz\n"
    )
    dmi = parse_dmidecode(text)
    assert dmi is not None
    assert dmi.system_manufacturer is None and dmi.system_product == "B450M"
    assert dmi.ecc is False and dmi.power_supplies is None  # no type 39 record: unknown, not zero
    assert [(m.size_bytes, m.speed_mts, m.ecc) for m in dmi.memory_devices] == [(8 << 30, 2133, False)]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello\n",
        "\tManufacturer: x\n",
        "Handle 0x0011, DMI type 17, 40 bytes\nMemory Device\n\tSize: lots\n",
        "Handle 0x0011, DMI type 17, 40 bytes\nMemory Device\n\tSize: 8 GB\n\tSpeed: fast\n",
        "Handle 0x0011, DMI type 17, 40 bytes\nMemory Device\n\tno colon here\n",
    ],
)
def test_dmidecode_garbage(text):
    with pytest.raises(ParseError, match="dmidecode"):
        parse_dmidecode(text)


# --- lsblk, findmnt ----------------------------------------------------------------------------------


def test_lsblk_of_this_vm_with_loop_devices():
    devices = {d.name: d for d in parse_lsblk(read("discovery/vm-lab/lsblk.out"))}
    assert devices["vda"].path == "/dev/vda" and devices["vda"].type == "disk"
    assert devices["vda"].size_bytes == 274877906944 and devices["vda"].mountpoint == "/"
    assert devices["zram0"].rotational is False and devices["zram0"].model is None
    assert {n for n, d in devices.items() if d.type == "loop"} >= {"loop0", "loop1", "loop2", "loop3"}


def test_lsblk_children_flattened_and_old_string_values():
    text = json.dumps(
        {
            "blockdevices": [
                {"name": "sda", "type": "disk", "size": "500107862016", "rota": "1", "model": "ST500DM002-1BD14 ",
                 "mountpoint": None, "fstype": None, "children": [
                     {"name": "sda1", "type": "part", "size": "536870912", "rota": "1", "model": None,
                      "mountpoints": [None, "/boot/efi"], "fstype": "vfat"}]}
            ]
        }
    )  # fmt: skip
    sda, sda1 = parse_lsblk(text)
    assert (sda.path, sda.size_bytes, sda.rotational, sda.model) == ("/dev/sda", 500107862016, True, "ST500DM002-1BD14")
    assert (sda1.name, sda1.mountpoint, sda1.fstype) == ("sda1", "/boot/efi", "vfat")


@pytest.mark.parametrize(
    "text",
    ['{"blockdevices": {}}', '{"blockdevices": [{"name": "a", "size": -1}]}', '{"blockdevices": [{"size": 1}]}',
     '{"blockdevices": [{"name": "../etc"}]}', '{"blockdevices": [{"name": "a", "rota": "maybe"}]}', "[]"],
)  # fmt: skip
def test_lsblk_garbage(text):
    with pytest.raises(ParseError, match="lsblk"):
        parse_lsblk(text)


def test_findmnt_tree_flattened():
    filesystems = {f.mountpoint: f for f in parse_findmnt(read("discovery/vm-lab/findmnt.out"))}
    root = filesystems["/"]
    assert root.source == "/dev/vda" and root.fstype == "ext4"
    assert 0 < root.free_bytes < root.size_bytes
    assert filesystems["/proc"].size_bytes == 0
    assert len(filesystems) > 5


def test_findmnt_of_the_image_directory():
    (holding,) = parse_findmnt(read("discovery/vm-lab/images_fs.out"))
    assert holding.mountpoint == "/" and holding.size_bytes == 270553174016


# --- LVM -------------------------------------------------------------------------------------------


def test_pvs_with_two_vgs_and_an_orphan():
    pvs = {pv.name: pv for pv in parse_pvs(read("discovery/vm-lab/pvs.out"))}
    assert pvs["/dev/loop0"].vg == "capvg" and pvs["/dev/loop0"].pe_start == 1 << 20
    assert pvs["/dev/loop1"].free_bytes == 200 << 20
    assert pvs["/dev/loop3"].vg is None  # a PV in no VG
    assert pvs["/dev/loop2"].dev_size_bytes == 256 << 20


def test_vgs_sizes_in_bytes():
    vgs = {vg.name: vg for vg in parse_vgs(read("discovery/vm-lab/vgs.out"))}
    assert vgs["capvg"].size_bytes == 1602224128 and vgs["capvg"].free_bytes == 200 << 20
    assert vgs["capvg"].extent_size == 4 << 20 and vgs["capvg"].pv_count == 2
    assert vgs["smallvg"].lv_count == 1


def test_lvs_segments_merged_and_thin_pool_recognised():
    lvs = {lv.name: lv for lv in parse_lvs(read("discovery/vm-lab/lvs.out"))}
    assert lvs["big1"].segtypes == ("linear", "linear")
    assert lvs["big1"].devices == ("/dev/loop0(82)", "/dev/loop1(0)")
    assert lvs["pool0"].is_thin_pool and not lvs["pool0"].is_thin
    assert lvs["thin1"].is_thin and lvs["thin1"].pool == "pool0" and lvs["thin1"].size_bytes == 1 << 30
    assert lvs["lin1"].data_percent is None  # no device-mapper: LVM does not know
    assert lvs["disk-a"].path == "/dev/smallvg/disk-a"


def test_lvs_thin_usage():
    lvs = {lv.name: lv for lv in parse_lvs(read("discovery/samples/lvs-thin-usage.SAMPLE.json"))}
    assert lvs["pool0"].data_percent == 91.37 and lvs["pool0"].metadata_percent == 12.5
    assert lvs["vm-web1-disk0"].data_percent == 98.12 and lvs["root"].data_percent is None


def test_lvm_reports_without_lvm_installed_are_empty():
    marker = "kerub-tui: missing tool: lvm\n"
    assert parse_pvs(marker) == [] and parse_vgs(marker) == [] and parse_lvs(marker) == []
    assert parse_vgs(read("discovery/vm-plain/vgs.out")) == []


@pytest.mark.parametrize(
    "text",
    ['{"report": [{"lv": [{"lv_name": "a", "vg_name": "v", "data_percent": "101"}]}]}',
     '{"report": [{"lv": [{"lv_name": "a", "vg_name": "v", "lv_size": "-5"}]}]}',
     '{"report": [{"lv": [{"lv_name": "a b", "vg_name": "v"}]}]}',
     '{"report": [{"lv": [{"vg_name": "v"}]}]}',
     '{"report": [{"vg": []}]}', '{"report": {}}', ""],
)  # fmt: skip
def test_lvs_garbage(text):
    with pytest.raises(ParseError, match="lvs"):
        parse_lvs(text)


def test_vgs_free_more_than_size_is_garbage():
    with pytest.raises(ParseError, match="vgs"):
        parse_vgs('{"report": [{"vg": [{"vg_name": "v", "vg_size": "10", "vg_free": "11"}]}]}')


# --- vmstat ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vmstat-n-w.out", "vmstat-narrow.out", "vmstat-repeated-headers.out"])
def test_vmstat_stream_in_every_layout(name):
    lines = read(f"monitor/{name}").splitlines()
    parser = VmstatParser(memory_total=24 << 30)
    samples = [s for s in (parser.feed(line) for line in lines) if s is not None]
    headers = sum(1 for line in lines if "free" in line)
    assert len(samples) == len(lines) - 2 * headers
    assert samples[0].since_boot and not any(s.since_boot for s in samples[1:])
    first = lines[2].split()
    columns = lines[1].split()
    assert samples[0].memory_free == int(first[columns.index("free")]) * 1024
    assert samples[0].cpu_idle == float(first[columns.index("id")])
    for sample in samples:
        assert 0 <= sample.cpu_user + sample.cpu_system <= 100
        assert sample.memory_used == (24 << 30) - sample.memory_free - sample.buffers - sample.cache


def test_vmstat_other_units():
    lines = read("monitor/vmstat-w-S-M.out").splitlines()
    parser = VmstatParser(unit=1 << 20)
    sample = [parser.feed(line) for line in lines][2]
    assert sample is not None and sample.memory_free == 23599 << 20 and sample.memory_used is None


def test_vmstat_garbage_line_raises_and_the_stream_goes_on():
    parser = VmstatParser()
    lines = read("monitor/vmstat-n-w.out").splitlines()
    assert parser.feed(lines[0]) is None and parser.feed(lines[1]) is None
    for garbage in ("vmstat: interrupted", "1 2 3", lines[2] + " 7", lines[2].replace("0", "-1", 1), "\x00"):
        with pytest.raises(ParseError, match="vmstat"):
            parser.feed(garbage)
    assert parser.feed(lines[2]) is not None and parser.feed(lines[3]) is not None


def test_vmstat_data_before_header_and_odd_headers():
    with pytest.raises(ParseError, match="before any header"):
        VmstatParser().feed(" 1  0      0 24398744   2736 198504    0    0   681   259   89  185  2  1 97  0  0")
    for header in ("r b free us sy id", "r b swpd free buff cache us sy id id", "r b swpd fr€e buff cache us sy id"):
        with pytest.raises(ParseError):
            VmstatParser().feed(header)
    parser = VmstatParser()
    parser.feed("r b swpd free buff cache us sy id")
    with pytest.raises(ParseError, match="more than 100"):
        parser.feed("0 0 0 1 1 1 101 0 0")


# --- KSM, tools, thermal, SMART ----------------------------------------------------------------------


def test_ksm_stopped_and_running():
    assert parse_ksm(read("monitor/ksm-stopped.out")) == KsmState(
        available=True, run=False, pages_to_scan=100, sleep_millisecs=20
    )
    running = parse_ksm(read("monitor/ksm-running.out"))
    assert running.run and running.pages_to_scan == 5000 and running.sleep_millisecs == 10
    assert running.pages_sharing > running.pages_shared > 0 and running.full_scans >= 2


def test_ksm_absent():
    assert parse_ksm("kerub-tui: missing tool: ksm\n") == KsmState(available=False)


@pytest.mark.parametrize(
    "text", ["", "/sys/kernel/mm/ksm/run:3\n", "/sys/kernel/mm/ksm/run:yes\n", "run:1\n",
             "/sys/kernel/mm/ksm/pages_shared:5\n", "/sys/kernel/mm/ksm/run:1\n/sys/kernel/mm/ksm/full_scans:-1\n"]
)  # fmt: skip
def test_ksm_garbage(text):
    with pytest.raises(ParseError, match="ksm"):
        parse_ksm(text)


def test_tools_of_this_vm():
    tools = parse_tools(read("discovery/vm-lab/tools.out"))
    assert tools["lvm"] and tools["qemu-img"] and tools["virsh"] and tools["tgtd"]
    assert not tools["zfs"] and not tools["gvinum"]


@pytest.mark.parametrize("text", ["", "lvm\n", "lvm maybe\n", "lvm yes\nlvm no\n", "; yes\n"])
def test_tools_garbage(text):
    with pytest.raises(ParseError):
        parse_tools(text)


def test_thermal():
    assert parse_thermal(read("monitor/thermal/thermal-vm.out")) is None
    # the broken sensor at -273.15 °C is left out; the hottest real one wins
    assert parse_thermal(read("monitor/thermal/thermal-server.SAMPLE.txt")) == 63.0
    with pytest.raises(ParseError):
        parse_thermal("/sys/class/thermal/thermal_zone0/temp:hot\n")
    with pytest.raises(ParseError):
        parse_thermal("45000\n")


def test_smart_health():
    vda = parse_smart_health(read("monitor/smart/smartctl-vda.out"))
    assert vda.device == "/dev/vda" and vda.passed is None and not vda.failing
    assert "Unable to detect device type" in vda.message
    failing = parse_smart_health(read("monitor/smart/smartctl-failing-sata.SAMPLE.json"))
    assert failing.device == "/dev/sdb" and failing.failing
    passing = parse_smart_health(read("monitor/smart/smartctl-passing-nvme.SAMPLE.json"))
    assert passing.passed is True
    assert parse_smart_health("kerub-tui: missing tool: smartctl\n").passed is None
    for garbage in ("", "{}", '{"smartctl": {}, "smart_status": {"passed": "no"}}', '{"smartctl": {"exit_status": -1}}'):
        with pytest.raises(ParseError, match="smartctl"):
            parse_smart_health(garbage)


def test_smart_exit_status_failing_bit_wins():
    text = json.dumps({"smartctl": {"exit_status": 8}, "device": {"name": "/dev/sda"}, "smart_status": {"passed": True}})
    assert parse_smart_health(text).failing


# --- libvirt ----------------------------------------------------------------------------------------


def test_hypervisor_of_this_vm():
    info = parse_hypervisor(
        read("discovery/vm-lab/virsh_capabilities.out"),
        read("discovery/vm-lab/virsh_domcapabilities.out"),
        read("discovery/vm-lab/virsh_version.out"),
    )
    assert info.kvm and info.reason is None
    assert info.domain_types == ["qemu", "kvm"]
    assert info.guest_arches == ["i686", "x86_64"]
    assert info.emulator == "/usr/bin/qemu-system-x86_64"
    assert info.libvirt_version == "9.0.0"


def test_hypervisor_without_kvm_says_why():
    caps = read("discovery/vm-lab/virsh_capabilities.out").replace("<domain type='kvm'/>", "")
    info = parse_hypervisor(caps)
    assert not info.kvm and info.domain_types == ["qemu"] and "/dev/kvm" in (info.reason or "")


def test_libvirt_version_falls_back_to_the_library():
    assert parse_libvirt_version("Compiled against library: libvirt 9.0.0\nUsing library: libvirt 8.0.0\n") == "8.0.0"
    with pytest.raises(ParseError, match="virsh version"):
        parse_libvirt_version("nothing here\n")


@pytest.mark.parametrize(
    "xml",
    [
        "",
        "<capabilities>",
        "<domain/>",
        "<capabilities><host><cpu><arch>x 86</arch></cpu></host></capabilities>",
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><capabilities>&lol;</capabilities>',
        "<capabilities><host><cpu><arch>x86_64</arch></cpu></host><guest><os_type>hvm</os_type></guest></capabilities>",
        "<capabilities><host><cpu><arch>x86_64</arch></cpu></host><guest><os_type>hvm</os_type>"
        "<arch name='x86_64'><emulator>qemu; reboot</emulator></arch></guest></capabilities>",
    ],
)
def test_hypervisor_garbage(xml):
    with pytest.raises(ParseError, match="virsh"):
        parse_hypervisor(xml)
