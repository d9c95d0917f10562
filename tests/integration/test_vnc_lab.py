"""VNC as a VM's second graphics protocol (issue 12 item 4), on the lab: a VM with ``graphics="vnc"``
gets a VNC server on its host's loopback with a password made at its start (no SPICE channel), and the
console reaches it through the SSH forward: a stand-in viewer (what remote-viewer does with a .vv of
``type=vnc``: it connects to the host/port the file names and authenticates with its password, RFB
3.8 VNC authentication) logs in to qemu's real VNC server, and is refused with another password. The
monitor reads the VNC server's address and port into the VM's dynamic document (the VM detail's
console row); KERUB_UPDATE_CAPTURES=1 saves the domain's live XML to tests/captures/ops."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from kerub_tui.core.models import VirtualMachineDynamic, VmStatus
from kerub_tui.hosts.console import console_file, open_console
from kerub_tui.hosts.kvm import parse_vnc_port

from .test_host_ops import MIB, carry_out, controller_on, lab_host, proposal, step_types, until

pytestmark = pytest.mark.lab

CAPTURES = Path(__file__).resolve().parents[1] / "captures" / "ops"

STAND_IN_VIEWER = r'''#!{python}
import configparser, json, os, socket, struct, sys, time
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

path = sys.argv[-1]
parser = configparser.ConfigParser(interpolation=None)
parser.read(path)
vv = dict(parser["virt-viewer"])
os.unlink(path)
record = {"vv": {k: v for k, v in vv.items() if k != "password"}}

def exactly(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError(data)
        data += chunk
    return data

def vnc_login(password):
    s = socket.create_connection((vv["host"], int(vv["port"])), timeout=10)
    version = exactly(s, 12)
    s.sendall(b"RFB 003.008\n")
    count = exactly(s, 1)[0]
    types = list(exactly(s, count))
    s.sendall(bytes([2]))  # VNC authentication
    challenge = exactly(s, 16)
    # the DES key is the password's 8 bytes, each with its bits reversed (RFB's historical quirk)
    key = bytes(int(f"{b:08b}"[::-1], 2) for b in password.encode()[:8].ljust(8, b"\0"))
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    s.sendall(encryptor.update(challenge) + encryptor.finalize())
    result = struct.unpack(">I", exactly(s, 4))[0]
    s.close()
    return version.decode().strip(), types, result

record["version"], record["types"], record["login"] = vnc_login(vv["password"])
record["wrong_login"] = vnc_login("wrongpw1")[2]
with open(os.environ["STAND_IN_RECORD"], "w") as out:
    json.dump(record, out)
'''


async def test_a_vnc_vm_is_reached_through_the_forward_with_its_password(clean_lab, tmp_path):
    script = tmp_path / "bin" / "stand-in-viewer"
    script.parent.mkdir()
    script.write_text(STAND_IN_VIEWER.replace("{python}", sys.executable))
    script.chmod(0o755)
    env = dict(os.environ, DISPLAY=":kerub-test", STAND_IN_RECORD=str(tmp_path / "record.json"))
    env.pop("WAYLAND_DISPLAY", None)
    async with controller_on(clean_lab, tmp_path, hosts=1) as c:
        vm = await c.create_vm("vncdesk", memory_min=64 * MIB, expectations=["availability:up"], graphics="vnc")
        plan = await proposal(c, lambda p: "start-vm" in step_types(p), "the start of vncdesk")
        assert (await carry_out(c, plan)).status.value == "done"
        dyn = await until(lambda: (d := c.db.get(VirtualMachineDynamic, vm.id)) and d.status is VmStatus.up and d,
                          "vncdesk up")
        labhost = lab_host(clean_lab, c, dyn.host_id)
        live = labhost.virsh(["dumpxml", "--security-info", "vncdesk"], check=True).stdout
        assert "<graphics type='vnc'" in live and "spicevmc" not in live and "type='spice'" not in live
        password = live.split("passwd='")[1].split("'")[0]
        assert len(password) == 8
        # the monitor reads where the VNC server listens, as it does SPICE's: the VM detail shows it
        plain = labhost.virsh(["dumpxml", "vncdesk"], check=True).stdout  # as XMLDesc(0): no password
        assert "passwd" not in plain
        listens = parse_vnc_port(plain)
        assert listens is not None and listens[0] == "127.0.0.1"
        await until(lambda: (d := c.db.get(VirtualMachineDynamic, vm.id)) and (d.vnc_address, d.vnc_port) == listens,
                    "the VNC port in vncdesk's dynamic document",
                    detail=lambda: c.db.get(VirtualMachineDynamic, vm.id))
        if os.environ.get("KERUB_UPDATE_CAPTURES") == "1":  # refresh the capture on demand only
            (CAPTURES / "libvirt-live-domain-vnc.xml").write_text(plain)

        session = await open_console(c.fleet, c.db, "vncdesk", viewer=str(script), env=env)
        assert await session.wait() == 0
        record = json.loads(Path(env["STAND_IN_RECORD"]).read_text())
        assert record["vv"]["type"] == "vnc" and int(record["vv"]["port"]) == session.local_port
        assert record["version"].startswith("RFB 003.00") and 2 in record["types"]
        assert record["login"] == 0, "qemu's VNC server took the password of this start"
        assert record["wrong_login"] != 0
        assert session.description.startswith("VNC console of vncdesk")

        text = await console_file(c.fleet, c.db, "vncdesk")
        assert "type=vnc\n" in text and f"password={password}\n" in text
