"""FleetOperations against the lab's real libvirt and sshd, one operation at a time: what the executor
gets back (exit code, stdout, one-line stderr) for success, idempotent repeats and failures, and
that a failed start leaves no definition behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from kerub_tui.core.models import FileAllocation, Host, VirtualMachine, VirtualStorageDevice
from kerub_tui.hosts import kvm, spice
from kerub_tui.hosts.operations import FleetOperations, OperationResult

from .test_host_ops import MIB, controller_on, domstate

pytestmark = pytest.mark.lab

DOMAIN_TYPE = "kvm" if Path("/dev/kvm").exists() else "qemu"


def domain(name: str, disks: dict | None = None, vm: VirtualMachine | None = None) -> tuple[VirtualMachine, str, str]:
    vm = vm or VirtualMachine(name=name, memory_min=64 * MIB, memory_max=64 * MIB)
    password = spice.new_spice_password()
    return vm, kvm.domain_xml(vm, disks or {}, password, domain_type=DOMAIN_TYPE), password


def host_id(c, labhost) -> str:
    return c.db.find_by_name(Host, labhost.name).id


async def test_domain_lifecycle_operations_and_their_results(clean_lab, tmp_path):
    lab1 = clean_lab.hosts[0]
    async with controller_on(clean_lab, tmp_path, hosts=1) as c:
        ops = FleetOperations(c.fleet)
        h = host_id(c, lab1)
        vm, xml, password = domain("life")

        started = await ops.libvirt(h, "start", vm_id=vm.id, vm_name="life", xml=xml)
        assert started == OperationResult(0, "life defined and started")
        assert domstate(lab1, "life") == "running"
        assert (await ops.libvirt(h, "start", vm_id=vm.id, vm_name="life", xml=xml)).stdout == "life is already running"
        assert (await ops.libvirt(h, "domain-state", vm_id=vm.id)).stdout == "running"
        # the password went to the host's definition, not into any result
        assert f"passwd='{password}'" in lab1.virsh(["dumpxml", "--security-info", "life"]).stdout

        assert (await ops.libvirt(h, "pause", vm_id=vm.id)).stdout == "paused"
        assert (await ops.libvirt(h, "pause", vm_id=vm.id)).stdout == "already paused"
        assert (await ops.libvirt(h, "domain-state", vm_id=vm.id)).stdout == "paused"
        refused = await ops.libvirt(h, "start", vm_id=vm.id, vm_name="life", xml=xml)
        assert refused.exit_code == 1 and "already here and paused" in refused.stderr
        assert (await ops.libvirt(h, "resume", vm_id=vm.id)).stdout == "resumed"
        assert (await ops.libvirt(h, "resume", vm_id=vm.id)).stdout == "already running"

        # No guest OS listens for the power button: the graceful stop gives up after its timeout and
        # says so; the step's next operation destroys the domain.
        waited = await ops.libvirt(h, "shutdown", vm_id=vm.id, timeout=1)
        assert waited == OperationResult(0, "still running after 1 s")
        assert (await ops.libvirt(h, "destroy-if-running", vm_id=vm.id)).stdout == "destroyed"
        assert (await ops.libvirt(h, "destroy-if-running", vm_id=vm.id)).stdout == "not running"
        assert (await ops.libvirt(h, "shutdown", vm_id=vm.id, timeout=1)).stdout == "not running"
        assert (await ops.libvirt(h, "domain-state", vm_id=vm.id)).stdout == "shut off"
        assert (await ops.libvirt(h, "pause", vm_id=vm.id)).stderr == "libvirt pause: the domain is shut off, not running"
        assert (await ops.libvirt(h, "undefine", vm_id=vm.id)).stdout == "undefined"
        assert (await ops.libvirt(h, "undefine", vm_id=vm.id)).stdout == "no such domain here"
        assert (await ops.libvirt(h, "domain-state", vm_id=vm.id)).stdout == ""
        assert domstate(lab1, "life") == ""


async def test_a_failed_start_leaves_no_definition_and_says_why(clean_lab, tmp_path):
    lab1 = clean_lab.hosts[0]
    async with controller_on(clean_lab, tmp_path, hosts=1) as c:
        ops = FleetOperations(c.fleet)
        h = host_id(c, lab1)
        disk = VirtualStorageDevice(name="gone", size=64 * MIB)
        alloc = FileAllocation(host_id=h, capability_id="fs", path="/var/lib/libvirt/images/no-such-image.img")
        vm = VirtualMachine(name="broken", memory_min=64 * MIB, disks=[{"disk_id": disk.id}])
        vm, xml, password = domain("broken", {disk.id: (disk, alloc)}, vm)

        failed = await ops.libvirt(h, "start", vm_id=vm.id, vm_name="broken", xml=xml)
        assert failed.exit_code == 1
        assert failed.stderr.startswith("libvirt start: ") and "no-such-image.img" in failed.stderr
        assert "\n" not in failed.stderr and password not in failed.stderr
        assert "broken" not in lab1.virsh(["list", "--all", "--name"]).stdout

        # Another domain of the same name, not this VM's: refused, and left alone.
        other, other_xml, _ = domain("broken")
        lab1.run("cat > /tmp/other.xml", input=other_xml, check=True)
        lab1.virsh(["define", "/tmp/other.xml"], check=True)
        ok_vm, ok_xml, _ = domain("broken")
        clash = await ops.libvirt(h, "start", vm_id=ok_vm.id, vm_name="broken", xml=ok_xml)
        assert clash.exit_code == 1 and "already has another domain named broken" in clash.stderr
        assert lab1.virsh(["domuuid", "broken"]).stdout.strip() == kvm.domain_uuid(other.id)

        # The XML must be the one of the VM named: a mix-up is refused before anything is defined.
        mixed = await ops.libvirt(h, "start", vm_id=vm.id, vm_name="other-name", xml=ok_xml)
        assert mixed.exit_code == 1 and "not 'other-name'" in mixed.stderr
        unknown = await ops.libvirt(h, "teleport", vm_id=vm.id)
        assert (unknown.exit_code, unknown.stderr) == (1, "libvirt teleport: unknown libvirt operation 'teleport'")
        missing = await ops.libvirt(h, "pause", vm_id=vm.id)
        assert (missing.exit_code, missing.stderr) == (1, "libvirt pause: no such domain on this host")


async def test_shell_commands_and_unreachable_hosts(clean_lab, tmp_path):
    lab1 = clean_lab.hosts[0]
    async with controller_on(clean_lab, tmp_path, hosts=1) as c:
        ops = FleetOperations(c.fleet, command_timeout=2, connect_wait=1)
        h = host_id(c, lab1)
        result = await ops.run(h, "echo out; echo err >&2; exit 3")
        assert result == OperationResult(3, "out\n", "err\n")
        assert (await ops.run(h, "hostname", privileged=False)).stdout.strip() == lab1.name
        slow = await ops.run(h, "echo started; sleep 30")
        assert slow.exit_code == 124 and slow.stdout == "started\n" and "did not finish within 2 s" in slow.stderr
        nobody = await ops.run("no-such-host", "true")
        assert nobody.exit_code == 255 and "no host with id no-such-host" in nobody.stderr
        assert (await ops.libvirt("no-such-host", "domain-state", vm_id="x")).exit_code == 255

        lab1.stop_sshd(sessions=True)
        try:
            down = await ops.run(h, "true")
            # "not connected", or "connection closed" when the drop is not noticed yet: one line either way
            assert down.exit_code == 255 and down.stderr.startswith(f"{lab1.name}: ") and "\n" not in down.stderr
            gone = await ops.libvirt(h, "domain-state", vm_id="x")
            assert gone.exit_code == 255 and gone.stderr.startswith("libvirt domain-state: ")
        finally:
            lab1.start_sshd()


async def test_direct_live_migration_between_two_hosts(clean_lab, tmp_path):
    lab1, lab2 = clean_lab.hosts[:2]
    async with controller_on(clean_lab, tmp_path, hosts=2) as c:
        ops = FleetOperations(c.fleet)
        h1, h2 = host_id(c, lab1), host_id(c, lab2)
        vm, xml, password = domain("traveller")
        assert (await ops.libvirt(h1, "start", vm_id=vm.id, vm_name="traveller", xml=xml)).exit_code == 0

        same = await ops.libvirt(h1, "migrate", vm_id=vm.id, target_host_id=h1, target_address=lab1.address)
        assert (same.exit_code, same.stderr) == (1, "libvirt migrate: the target is the source host")
        bad = await ops.libvirt(h1, "migrate", vm_id=vm.id, target_host_id=h2, target_address="lab2; reboot")
        assert bad.exit_code == 1 and "lab2; reboot" in bad.stderr and domstate(lab1, "traveller") == "running"

        # How far it got, from the source's job statistics while it runs (read often here; the plans
        # screen shows it). At 1 MiB/s (migrate-setspeed's least) even this small guest's non-zero pages
        # (firmware, option ROMs: about 0.6 MB) take half a second or more, whatever the machine's
        # speed (qemu's rate limit), so the job is seen under way.
        lab1.virsh(["migrate-setspeed", "traveller", "1"], check=True)
        reports: list[tuple[int, int]] = []
        following = FleetOperations(c.fleet, progress_seconds=0.05)
        moved = await following.libvirt(h1, "migrate", vm_id=vm.id, target_host_id=h2, target_address=lab2.address,
                                        on_progress=lambda done, total: reports.append((done, total)))
        assert moved == OperationResult(0, "migrated")
        assert reports, "no progress was reported while the migration ran"
        assert all(0 <= done <= total for done, total in reports)
        # the guest's memory (64 MiB, and the video card's) is what the job counts
        assert all(total >= 64 * MIB for _, total in reports), reports
        assert domstate(lab2, "traveller") == "running"
        assert "traveller" not in lab1.virsh(["list", "--all", "--name"]).stdout  # source undefined
        # the SPICE password travels with the live domain only, never into the target's persistent definition
        assert f"passwd='{password}'" in lab2.virsh(["dumpxml", "--security-info", "traveller"]).stdout
        assert password not in lab2.virsh(["dumpxml", "--security-info", "--inactive", "traveller"]).stdout
        assert (await ops.libvirt(h2, "domain-state", vm_id=vm.id)).stdout == "running"
        again = await ops.libvirt(h1, "migrate", vm_id=vm.id, target_host_id=h2, target_address=lab2.address)
        assert (again.exit_code, again.stderr) == (1, "libvirt migrate: no such domain on this host")


def test_closing_a_link_while_a_domain_read_is_pending_leaves_the_loop_free(clean_lab, tmp_path):
    """A domain read still pending (a lifecycle event's refresh) when its link closes holds a domain
    object, and with it the connection. Dropped on the loop after close, that last reference disposes
    the connection there: a remote call whose answer the blocked loop itself must carry through the SSH
    tunnel, so the loop hung for good (seen as `plan approve` never returning). The scenario runs on a
    loop of its own in a thread, so a hang fails this test instead of freezing the worker."""
    import asyncio
    import threading

    from kerub_tui.hosts.libvirt_link import DomainEvent, LibvirtLink, socket_dir

    lab1 = clean_lab.hosts[0]
    ended: list[str] = []

    async def scenario() -> None:
        async with controller_on(clean_lab, tmp_path, hosts=1) as c:
            link = LibvirtLink("pending-read", c.fleet.connection(host_id(c, lab1)), socket_dir(tmp_path / "data"))
            await link.open()
            _vm, xml, _password = domain("pending")
            dom = await link.call(lambda conn: conn.defineXML(xml))
            for _ in range(3):  # reads no RPC has answered yet when close() comes
                link._spawn(link._refresh(dom, DomainEvent.started, False, 1))
            del dom
            await link.close()
            await asyncio.sleep(0.5)  # the cancelled reads end, and their domain objects go
            ended.append("closed")

    thread = threading.Thread(target=lambda: asyncio.run(scenario()), daemon=True)
    thread.start()
    thread.join(timeout=240)  # a hang guard: the scenario itself takes a few seconds
    assert ended == ["closed"], "the loop hung disposing a closed libvirt connection"
    lab1.virsh(["undefine", "pending"])


async def test_a_monitor_cancelled_while_its_link_opens_leaves_no_tunnel_behind(clean_lab, tmp_path):
    """A monitor's link open cancelled after the tunnel is up (a stop, or the connection dropping
    while a stream's failure cancels its task group) closed neither the libvirt connection nor the
    tunnel: its socket file stayed in the data dir (seen as test_fleet's key-mismatch test failing
    one run in four)."""
    import asyncio

    from kerub_tui.hosts.libvirt_link import LibvirtLink
    from kerub_tui.hosts.monitor import HostMonitor

    lab1 = clean_lab.hosts[0]
    syncing = asyncio.Event()

    class SlowSync(LibvirtLink):
        async def sync(self):
            syncing.set()
            await asyncio.Event().wait()  # the libvirt reads of a busy host: cancelled before they answer
            return []

    async with controller_on(clean_lab, tmp_path, hosts=1) as c:
        sockets = tmp_path / "monitor-sockets"
        sockets.mkdir(mode=0o700)
        connection = c.fleet.connection(host_id(c, lab1))
        links: list[LibvirtLink] = []

        def factory() -> LibvirtLink:
            links.append(SlowSync("cancelled-open", connection, sockets))
            return links[-1]

        monitor = HostMonitor("cancelled-open", lab1.name, connection, c.fleet.writer, factory, streams=False)
        opening = asyncio.create_task(monitor._open_link())
        await asyncio.wait_for(syncing.wait(), 120)
        assert list(sockets.glob("*.sock")), "the tunnel is up while the link reads its domains"
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        assert list(sockets.glob("*.sock")) == []
        assert links[0].conn is None and links[0].closed.is_set()
