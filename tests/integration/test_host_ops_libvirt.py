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
        unknown = await ops.libvirt(h, "reboot", vm_id=vm.id)
        assert (unknown.exit_code, unknown.stderr) == (1, "libvirt reboot: unknown libvirt operation 'reboot'")
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

        moved = await ops.libvirt(h1, "migrate", vm_id=vm.id, target_host_id=h2, target_address=lab2.address)
        assert moved == OperationResult(0, "migrated")
        assert domstate(lab2, "traveller") == "running"
        assert "traveller" not in lab1.virsh(["list", "--all", "--name"]).stdout  # source undefined
        # the SPICE password travels with the live domain only, never into the target's persistent definition
        assert f"passwd='{password}'" in lab2.virsh(["dumpxml", "--security-info", "traveller"]).stdout
        assert password not in lab2.virsh(["dumpxml", "--security-info", "--inactive", "traveller"]).stdout
        assert (await ops.libvirt(h2, "domain-state", vm_id=vm.id)).stdout == "running"
        again = await ops.libvirt(h1, "migrate", vm_id=vm.id, target_host_id=h2, target_address=lab2.address)
        assert (again.exit_code, again.stderr) == (1, "libvirt migrate: no such domain on this host")
