"""FleetOperations and the console without the lab: what is refused before anything reaches a host
(hostile names, addresses, ids, XML), how failures become one-line results, the migration's disk
retargeting, and the console's ssh -L line and viewer command.

``RecordingFleet`` stands in for the Fleet where a test must show that nothing was sent: it records
every call and answers with what the test gives it. libvirt errors come from libvirt itself (the
``test:///default`` driver), not from hand-made exceptions. Real hosts are in tests/integration.
"""

from __future__ import annotations

import asyncio
import shlex
import xml.etree.ElementTree as ET
from typing import Any

import libvirt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kerub_tui.core.models import (
    FileAllocation,
    Host,
    LvmAllocation,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDevice,
    VmStatus,
)
from kerub_tui.core.names import InvalidName
from kerub_tui.core.store import Store
from kerub_tui.hosts import kvm, spice
from kerub_tui.hosts.console import (
    ConsoleError,
    ConsoleTarget,
    NoViewer,
    _forward_target,
    _read_graphics,
    console_vm,
    ssh_forward_command,
    viewer_argv,
)
from kerub_tui.hosts.operations import (
    FleetOperations,
    OperationError,
    OperationResult,
    check_start,
    connection_lost,
    disk_alias,
    libvirt_message,
    migration_progress,
    retarget_disks,
    spice_password_of,
    target_disk_source,
)
from kerub_tui.ssh import CommandResult, CommandTimeout, NotConnected

MIB = 1 << 20
HOSTILE_NAMES = ["a;b", "$(reboot)", "`id`", "../etc", "x y", "-rf", "x\nb", "", "é", "a" * 64, "<x>", "a'b", None, 7]
HOSTILE_ADDRESSES = ["lab2; reboot", "-oProxyCommand=sh", "a b", "", "x\n", "$(id)", "[::1]", "a" * 254, None]


class RecordingFleet:
    """Stands in for the Fleet: records calls; ``answer`` gives the result or raises."""

    def __init__(self, answer: Any = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.answer = answer

    def _reply(self) -> Any:
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer

    async def run(self, host_id: str, command: str, **kwargs: Any) -> Any:
        self.calls.append((host_id, command))
        return self._reply()

    async def libvirt(self, host_id: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((host_id, getattr(fn, "__name__", "fn")))
        return self._reply()


def real_libvirt_error() -> libvirt.libvirtError:
    conn = libvirt.open("test:///default")
    try:
        conn.lookupByName("kerub-no-such-domain")
    except libvirt.libvirtError as error:
        return error
    finally:
        conn.close()
    raise AssertionError("the test driver found a domain that does not exist")


def a_domain(name: str = "web") -> tuple[VirtualMachine, str, str]:
    vm = VirtualMachine(name=name, memory_min=64 * MIB)
    password = spice.new_spice_password()
    return vm, kvm.domain_xml(vm, {}, password), password


# --- refused before anything reaches the host -------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE_NAMES)
async def test_hostile_vm_names_never_reach_libvirt(name) -> None:
    fleet = RecordingFleet()
    vm, xml, _ = a_domain()
    result = await FleetOperations(fleet).libvirt("h1", "start", vm_id=vm.id, vm_name=name, xml=xml)
    assert result.exit_code == 1 and result.stderr.startswith("libvirt start: ") and "\n" not in result.stderr
    assert fleet.calls == []


@pytest.mark.parametrize("address", HOSTILE_ADDRESSES)
async def test_hostile_migration_addresses_never_reach_libvirt(address) -> None:
    fleet = RecordingFleet()
    result = await FleetOperations(fleet).libvirt("h1", "migrate", vm_id="vm-1", target_host_id="h2",
                                                  target_address=address)
    assert result.exit_code == 1 and result.stderr.startswith("libvirt migrate: ")
    assert fleet.calls == []


@pytest.mark.parametrize("vm_id", [None, 7, "", "x" * 201, ["vm"]])
@pytest.mark.parametrize("op", ["domain-state", "pause", "resume", "undefine", "destroy-if-running"])
async def test_hostile_vm_ids_are_refused(op, vm_id) -> None:
    fleet = RecordingFleet()
    result = await FleetOperations(fleet).libvirt("h1", op, vm_id=vm_id)
    assert result.exit_code == 1 and "is not a VM id" in result.stderr
    assert fleet.calls == []


@pytest.mark.parametrize("timeout", [0, -1, True, "5", None, -0.5])
async def test_a_shutdown_timeout_must_be_positive_seconds(timeout) -> None:
    fleet = RecordingFleet()
    result = await FleetOperations(fleet).libvirt("h1", "shutdown", vm_id="vm-1", timeout=timeout)
    assert result.exit_code == 1 and "positive number of seconds" in result.stderr
    assert fleet.calls == []


async def test_the_start_xml_must_be_the_named_vms_own() -> None:
    fleet = RecordingFleet()
    ops = FleetOperations(fleet)
    vm, xml, password = a_domain("web")
    other, _other_xml, _ = a_domain("web")
    for kwargs in ({"vm_id": vm.id, "vm_name": "db", "xml": xml},  # another name
                   {"vm_id": other.id, "vm_name": "web", "xml": xml},  # another VM's UUID
                   {"vm_id": vm.id, "vm_name": "web", "xml": "<domain"},  # not XML
                   {"vm_id": vm.id, "vm_name": "web", "xml": 42}):
        result = await ops.libvirt("h1", "start", **kwargs)
        assert result.exit_code == 1 and password not in result.stderr, kwargs
    entity = '<!DOCTYPE d [<!ENTITY e "x">]><domain><name>web</name></domain>'
    assert (await ops.libvirt("h1", "start", vm_id=vm.id, vm_name="web", xml=entity)).exit_code == 1
    assert (await ops.libvirt("h1", "start", vm_id=vm.id)).exit_code == 1  # arguments missing
    assert fleet.calls == []
    check_start(vm.id, "web", xml)  # the right one passes


async def test_unknown_operations_are_refused() -> None:
    fleet = RecordingFleet()
    result = await FleetOperations(fleet).libvirt("h1", "reboot; rm -rf /", vm_id="vm-1")
    assert result == OperationResult(1, "", "libvirt reboot; rm -rf /: unknown libvirt operation 'reboot; rm -rf /'")
    assert fleet.calls == []


# --- how failures come back ------------------------------------------------------------------------


def ssh_result(exit_code: int | None, stdout: str = "", stderr: str = "", signal: str | None = None) -> CommandResult:
    return CommandResult(command="x", exit_code=exit_code, stdout=stdout, stderr=stderr, duration=0.1, signal=signal)


async def test_shell_results_and_failures_become_exit_codes() -> None:
    cases = [
        (ssh_result(3, "out", "err"), OperationResult(3, "out", "err")),
        (ssh_result(None, "half", "", signal="KILL"), OperationResult(255, "half", "killed by signal KILL")),
        (ssh_result(None), OperationResult(255, "", "no exit status came back")),
        (CommandTimeout("h1: 'sleep' did not finish within 2 s; stopped", ssh_result(None, "so far", "e")),
         OperationResult(124, "so far", "e\nh1: 'sleep' did not finish within 2 s; stopped")),
        (NotConnected("h1 is not connected (down)"), OperationResult(255, "", "h1 is not connected (down)")),
        (OSError("network is unreachable"), OperationResult(255, "", "network is unreachable")),
    ]
    for answer, expected in cases:
        assert await FleetOperations(RecordingFleet(answer)).run("h1", "true") == expected


async def test_libvirt_failures_are_one_line_and_never_raise() -> None:
    error = real_libvirt_error()
    assert error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN and not connection_lost(error)
    result = await FleetOperations(RecordingFleet(error)).libvirt("h1", "domain-state", vm_id="vm-1")
    assert result.exit_code == 1 and result.stderr.startswith("libvirt domain-state: ")
    assert result.stderr == "libvirt domain-state: Domain not found"  # libvirt's own words, one line
    assert libvirt_message(OperationError("a\nb   c")) == "a b c"
    timed_out = await FleetOperations(RecordingFleet(TimeoutError())).libvirt("h1", "pause", vm_id="vm-1")
    assert timed_out == OperationResult(124, "", "libvirt pause: no answer from the host in time")
    gone = await FleetOperations(RecordingFleet(NotConnected("h1 is not connected"))).libvirt("h1", "pause",
                                                                                              vm_id="vm-1")
    assert gone == OperationResult(255, "", "libvirt pause: h1 is not connected")


async def test_the_spice_password_is_scrubbed_from_errors() -> None:
    vm, xml, password = a_domain()
    assert spice_password_of(xml) == password
    assert spice_password_of("<domain passwd='abc'") == "abc"  # even from XML that does not parse
    echoed = OperationError(f"XML error: bad attribute passwd='{password}'")
    result = await FleetOperations(RecordingFleet(echoed)).libvirt("h1", "start", vm_id=vm.id, vm_name="web", xml=xml)
    assert result.exit_code == 1 and password not in result.stderr and "(secret)" in result.stderr


# --- migration: the target's own disks ---------------------------------------------------------------


def test_retarget_disks_points_each_kerub_disk_at_the_target_allocation() -> None:
    boot = VirtualStorageDevice(name="boot", size=64 * MIB)
    data = VirtualStorageDevice(name="data", size=64 * MIB)
    vm = VirtualMachine(name="web", memory_min=64 * MIB, disks=[{"disk_id": boot.id}, {"disk_id": data.id}])
    source = {boot.id: (boot, LvmAllocation(host_id="h1", capability_id="lvm:vg1", vg="vg1", lv="kerub-boot")),
              data.id: (data, FileAllocation(host_id="h1", capability_id="fs", path="/srv/data.qcow2", format="qcow2"))}
    xml = kvm.domain_xml(vm, source, spice.new_spice_password())
    paths = {disk_alias(boot.id): target_disk_source(FileAllocation(host_id="h2", capability_id="fs",
                                                                    path="/var/lib/kerub/boot.img")),
             disk_alias(data.id): target_disk_source(LvmAllocation(host_id="h2", capability_id="lvm:vg2",
                                                                   vg="vg2", lv="kerub-data", format="qcow2"))}
    out = ET.fromstring(retarget_disks(xml, paths))
    disks = out.findall("./devices/disk")
    assert [(d.get("type"), d.find("source").attrib, d.find("driver").get("type")) for d in disks] == [
        ("file", {"file": "/var/lib/kerub/boot.img"}, "raw"),
        ("block", {"dev": "/dev/vg2/kerub-data"}, "qcow2"),
    ]
    assert disks[0].find("driver").get("io") is None  # native AIO is for block devices
    assert [d.find("target").get("dev") for d in disks] == ["vda", "vdb"]  # the guest sees the same disks
    assert out.find("./devices/graphics").get("passwd") == ET.fromstring(xml).find("./devices/graphics").get("passwd")
    # a disk not in the map (a CD-ROM kerub-tui did not attach) keeps its source
    assert retarget_disks(xml, {}) == ET.tostring(ET.fromstring(xml), encoding="unicode")


@pytest.mark.parametrize("vg, lv", [("../etc", "x"), ("vg", "a;b"), ("vg", "$(id)"), ("-vg", "x"), ("vg", "")])
def test_hostile_target_allocation_names_are_refused(vg, lv) -> None:
    with pytest.raises(InvalidName):
        target_disk_source(LvmAllocation.model_construct(host_id="h2", capability_id="c", vg=vg, lv=lv, format="raw"))


@pytest.mark.parametrize("path", ["relative.img", "/a/../b", "/x\nrm", "", "/a\0b"])
def test_hostile_target_paths_are_refused(path) -> None:
    with pytest.raises(ValueError):
        target_disk_source(FileAllocation.model_construct(host_id="h2", capability_id="c", path=path, format="raw"))
    with pytest.raises(OperationError):
        target_disk_source(FileAllocation.model_construct(host_id="h2", capability_id="c", path="/ok", format="vmdk"))


@given(st.text(max_size=40))
def test_retargeted_paths_are_escaped_by_construction(text) -> None:
    boot = VirtualStorageDevice(name="boot", size=MIB)
    vm = VirtualMachine(name="web", memory_min=64 * MIB, disks=[{"disk_id": boot.id}])
    xml = kvm.domain_xml(vm, {boot.id: (boot, FileAllocation(host_id="h", capability_id="fs", path="/a.img"))},
                         spice.new_spice_password())
    path = "/" + "".join(c for c in text if c.isprintable() and c not in "/")
    out = ET.fromstring(retarget_disks(xml, {disk_alias(boot.id): ("file", path, "raw")}))
    assert out.find("./devices/disk/source").get("file") == path
    assert len(out.findall("./devices/disk")) == 1


# --- the console's pieces --------------------------------------------------------------------------


def a_host(**changes: Any) -> Host:
    return Host(name="kvm1", address="10.0.0.5", **changes)


def test_the_ssh_forward_line() -> None:
    assert ssh_forward_command(a_host(), 5901) == \
        "ssh -N -o ExitOnForwardFailure=yes -L 5901:127.0.0.1:5901 root@10.0.0.5"
    line = ssh_forward_command(a_host(port=2222, user="admin"), 5902, local_port=15902, spice_address="::1")
    assert shlex.split(line) == ["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-L", "15902:[::1]:5902",
                                 "-p", "2222", "admin@10.0.0.5"]


@pytest.mark.parametrize("address", ["-oProxyCommand=sh", "a;b", "$(id)", "a b"])
def test_hostile_host_addresses_never_make_an_ssh_line(address) -> None:
    with pytest.raises(InvalidName):
        ssh_forward_command(Host.model_construct(name="h", address=address, port=22, user="root"), 5900)


@pytest.mark.parametrize("user", ["root;id", "-oX", "a b", "$(id)", ""])
def test_hostile_users_never_make_an_ssh_line(user) -> None:
    with pytest.raises(InvalidName):
        ssh_forward_command(Host.model_construct(name="h", address="10.0.0.5", port=22, user=user), 5900)


@pytest.mark.parametrize("port", [0, 65536, True, "5900", None])
def test_ports_must_be_tcp_ports(port) -> None:
    with pytest.raises(ValueError):
        ssh_forward_command(a_host(), port)


def test_the_viewer_command_is_words_not_shell() -> None:
    assert viewer_argv(None) == ["remote-viewer"] == viewer_argv("  ")
    assert viewer_argv("remote-viewer --full-screen") == ["remote-viewer", "--full-screen"]
    assert viewer_argv("my-viewer '$(reboot); x'") == ["my-viewer", "$(reboot); x"]  # a literal argument
    for bad in ("viewer 'unclosed", "viewer\nrm -rf /", "viewer \0"):
        with pytest.raises(ConsoleError):
            viewer_argv(bad)


def test_the_forward_target_is_an_ip_on_the_host() -> None:
    assert _forward_target(None) == "127.0.0.1" == _forward_target("0.0.0.0")
    assert _forward_target("::") == "::1"
    assert _forward_target("127.0.0.1") == "127.0.0.1"
    for bad in ("example.com", "127.0.0.1; id", "-L"):
        with pytest.raises(ConsoleError):
            _forward_target(bad)


def test_no_viewer_says_why_and_how_without_the_password() -> None:
    target = ConsoleTarget("vm-1", "web", a_host(), "127.0.0.1", 5903)
    error = NoViewer("no display here (neither DISPLAY nor WAYLAND_DISPLAY is set)", target)
    text = str(error)
    assert "\n" not in text and text.startswith("no display here")
    assert "ssh -N -o ExitOnForwardFailure=yes -L 5903:127.0.0.1:5903 root@10.0.0.5" in text
    assert "spice://127.0.0.1:5903" in text and "password" in text
    assert error.ssh_command.endswith("root@10.0.0.5") and error.local_port == 5903


def test_reading_the_spice_server_of_a_domain_that_is_not_there() -> None:
    conn = libvirt.open("test:///default")
    try:
        assert _read_graphics(conn, "vm-that-is-not-defined") == ("spice", None, None, None)
    finally:
        conn.close()


def test_console_vm_needs_a_running_vm_on_a_known_host(tmp_path) -> None:
    with Store.open(tmp_path) as store:
        with pytest.raises(ConsoleError, match="no VM named 'web'"):
            console_vm(store, "web")
        vm = VirtualMachine(name="web", memory_min=64 * MIB)
        store.put(vm)
        with pytest.raises(ConsoleError, match="VM web is down"):
            console_vm(store, "web")
        store.put(VirtualMachineDynamic(id=vm.id, host_id="h-gone", status=VmStatus.up))
        with pytest.raises(ConsoleError, match="runs on host h-gone, which is not in the store"):
            console_vm(store, vm.id)
        host = a_host()
        store.put(host)
        store.put(VirtualMachineDynamic(id=vm.id, host_id=host.id, status=VmStatus.paused))
        assert console_vm(store, "web")[2].id == host.id


# --- a migration's progress, from its job statistics -------------------------------------------------


def test_a_migrations_progress_is_read_from_its_job_statistics_as_virsh_reads_it() -> None:
    gib = 1 << 30
    running = {"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "operation": libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT,
               "time_elapsed": 2100, "data_total": 4 * gib, "data_processed": 3 * gib // 2,
               "data_remaining": 5 * gib // 2, "memory_total": 4 * gib, "memory_processed": 3 * gib // 2,
               "memory_remaining": 5 * gib // 2, "memory_bps": 117_000_000}
    assert migration_progress(running) == (3 * gib // 2, 4 * gib)
    # memory dirtied again: the total grows, done is what the total leaves out of what remains
    assert migration_progress(running | {"data_total": 5 * gib, "data_remaining": gib}) == (4 * gib, 5 * gib)
    # no data figures (an older libvirt): memory's
    memory_only = {k: v for k, v in running.items() if not k.startswith("data_")}
    assert migration_progress(memory_only) == (3 * gib // 2, 4 * gib)
    # nothing known yet, no job, a finished job, figures that are not whole numbers: nothing to tell
    assert migration_progress(running | {"data_total": 0, "memory_total": 0}) is None
    assert migration_progress({"type": libvirt.VIR_DOMAIN_JOB_NONE}) is None
    assert migration_progress(running | {"type": libvirt.VIR_DOMAIN_JOB_COMPLETED}) is None
    assert migration_progress(running | {"data_total": "4G", "memory_total": None}) is None
    assert migration_progress(None) is None
    # never more than all of it, never less than nothing
    assert migration_progress(running | {"data_remaining": 9 * gib}) == (0, 4 * gib)
    assert migration_progress(running | {"data_remaining": -1}) == (4 * gib, 4 * gib)


def test_job_statistics_that_cannot_be_read_report_no_progress() -> None:
    """A domain gone (it has just left) and a driver that cannot tell (libvirt's own test driver has no
    job statistics): no reading, no error; the migration itself says how it ended."""
    from kerub_tui.hosts.operations import _job_progress

    conn = libvirt.open("test:///default")
    try:
        running = conn.lookupByName("test")
        with pytest.raises(libvirt.libvirtError):
            running.jobStats()
        assert _job_progress(conn, running.UUIDString()) is None
        assert _job_progress(conn, "vm-that-is-not-defined") is None
    finally:
        conn.close()


class SilentFleet:
    """Stands in for the Fleet as a host that never answers: each libvirt call but the target's
    connection and the abort waits until it is cancelled. Records what started and what was cancelled."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.cancelled: list[str] = []

    async def libvirt(self, host_id: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        name = getattr(fn, "__name__", "fn")
        self.started.append(name)
        if name in ("<lambda>", "abort"):  # the target's connection; the abort a cancelled migration sends
            return None
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append(name)
            raise


async def test_a_followed_migration_cancelled_is_aborted_and_its_progress_reading_stops_with_it() -> None:
    fleet = SilentFleet()
    ops = FleetOperations(fleet, progress_seconds=0)
    task = asyncio.create_task(ops.libvirt("h1", "migrate", vm_id="vm-1", target_host_id="h2",
                                           target_address="127.0.0.3", on_progress=lambda done, total: None))
    async with asyncio.timeout(30):
        while "_job_progress" not in fleet.started:
            await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(fleet.cancelled) == ["_job_progress", "migrate"]  # nothing left waiting on the host
    assert fleet.started[-1] == "abort"
