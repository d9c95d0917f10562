"""The SPICE console on the lab: a stand-in viewer (records its arguments, reads the .vv, connects to
the host/port it names and logs in with its password) reaches the VM's real SPICE server through the
SSH forward; the forward lives as long as the viewer; no viewer or no display gives the ssh -L line;
the SPICE password is in no document, audit entry, log line or file of the data dir."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import sys
from pathlib import Path

import pytest

from kerub_tui.core.models import DOCUMENT_TYPES, VirtualMachine, VirtualMachineDynamic, VmStatus
from kerub_tui.hosts.console import ConsoleError, NoViewer, console_file, open_console

from .test_host_ops import MIB, carry_out, controller_on, lab_host, proposal, step_types, until

pytestmark = pytest.mark.lab

# The stand-in viewer: what remote-viewer does with a .vv file, down to the SPICE ticket login
# (RSA-OAEP of the password, as spice-gtk sends it), recorded as JSON for the test to read.
STAND_IN_VIEWER = r'''#!{python}
import configparser, hashlib, json, os, socket, stat, struct, sys, time
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

record = {"argv": sys.argv}
path = sys.argv[-1]
record["mode"] = stat.S_IMODE(os.stat(path).st_mode)
parser = configparser.ConfigParser(interpolation=None)
parser.read(path)
vv = dict(parser["virt-viewer"])
os.unlink(path)  # delete-this-file=1, as remote-viewer does
record["vv"] = {k: v for k, v in vv.items() if k != "password"}
password = vv["password"]
record["password_sha256"] = hashlib.sha256(password.encode()).hexdigest()

def main_channel_login(secret):
    s = socket.create_connection((vv["host"], int(vv["port"])), timeout=10)
    body = struct.pack("<IBBIII", 0, 1, 0, 0, 0, 18)
    s.sendall(b"REDQ" + struct.pack("<III", 2, 2, len(body)) + body)
    header = b""
    while len(header) < 16:
        header += s.recv(16 - len(header))
    size = struct.unpack("<I", header[12:16])[0]
    reply = b""
    while len(reply) < size:
        reply += s.recv(size - len(reply))
    link_error = struct.unpack("<I", reply[:4])[0]
    key = serialization.load_der_public_key(reply[4:166])
    ticket = key.encrypt(secret.encode() + b"\0", padding.OAEP(mgf=padding.MGF1(hashes.SHA1()),
                                                               algorithm=hashes.SHA1(), label=None))
    s.sendall(ticket)
    result = b""
    while len(result) < 4:
        result += s.recv(4 - len(result))
    s.close()
    return header[:4].decode(), link_error, struct.unpack("<I", result)[0]

record["magic"], record["link_error"], record["login"] = main_channel_login(password)
record["wrong_login"] = main_channel_login("not-the-password-0")[2]
with open(os.environ["STAND_IN_RECORD"], "w") as out:
    json.dump(record, out)
while not os.path.exists(os.environ["STAND_IN_RELEASE"]):
    time.sleep(0.05)
'''


@pytest.fixture
def stand_in(tmp_path):
    script = tmp_path / "bin" / "stand-in-viewer"
    script.parent.mkdir()
    script.write_text(STAND_IN_VIEWER.replace("{python}", sys.executable))
    script.chmod(0o755)
    env = dict(os.environ, DISPLAY=":kerub-test", STAND_IN_RECORD=str(tmp_path / "record.json"),
               STAND_IN_RELEASE=str(tmp_path / "release"))
    env.pop("WAYLAND_DISPLAY", None)
    return script, env


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


async def test_console_reaches_the_spice_server_through_the_forward(clean_lab, tmp_path, stand_in, caplog):
    caplog.set_level(logging.DEBUG)
    script, env = stand_in
    async with controller_on(clean_lab, tmp_path) as c:
        vm = await c.create_vm("desk", memory_min=64 * MIB, expectations=["availability:up"])
        plan = await proposal(c, lambda p: "start-vm" in step_types(p), "the start of desk")
        assert (await carry_out(c, plan)).status.value == "done"
        dyn = await until(lambda: (d := c.db.get(VirtualMachineDynamic, vm.id)) and d.status is VmStatus.up
                          and d.spice_port and d, "desk's SPICE port")
        labhost = lab_host(clean_lab, c, dyn.host_id)
        live = labhost.virsh(["dumpxml", "--security-info", "desk"], check=True).stdout
        password = live.split("passwd='")[1].split("'")[0]

        session = await open_console(c.fleet, c.db, "desk", viewer=str(script), env=env)
        record_path = Path(env["STAND_IN_RECORD"])
        await until(record_path.exists, "the stand-in viewer to log in")
        record = json.loads(record_path.read_text())
        # The viewer got a private .vv naming the local end of the forward, and nothing else.
        assert record["argv"][0] == str(script) and record["argv"][-1].endswith(".vv")
        assert record["mode"] == 0o600
        assert record["vv"]["host"] == "127.0.0.1" and int(record["vv"]["port"]) == session.local_port
        assert record["vv"]["title"] == f"desk on {labhost.name}"
        assert record["password_sha256"] == hashlib.sha256(password.encode()).hexdigest()
        # The real SPICE server answered through the forward, took the password and refused another.
        assert (record["magic"], record["link_error"], record["login"]) == ("REDQ", 0, 0)
        assert record["wrong_login"] != 0
        assert session.forwarding and not refused(session.local_port)
        assert f"127.0.0.1:{session.local_port} -> {labhost.name} 127.0.0.1:{dyn.spice_port}" in session.description

        # The forward lives as long as the viewer.
        Path(env["STAND_IN_RELEASE"]).touch()
        assert await session.wait() == 0
        assert not session.forwarding and refused(session.local_port)
        assert not Path(record["argv"][-1]).exists()

        # The .vv for a workstation is given only when asked for; it names the port of the ssh -L line.
        text = await console_file(c.fleet, c.db, "desk")
        assert f"port={dyn.spice_port}\n" in text and f"password={password}\n" in text

        # The password is nowhere kerub-tui keeps things: documents, audit, logs, the data dir's files.
        dumped = json.dumps([d.model_dump(mode="json") for kind in DOCUMENT_TYPES.values() for d in c.db.list(kind)])
        assert "desk" in dumped and password not in dumped
        assert password not in caplog.text
        data_dir = tmp_path / "data"
        for path in data_dir.rglob("*"):
            if path.is_file():
                assert password.encode() not in path.read_bytes(), path


async def test_no_viewer_or_no_display_says_so_with_the_ssh_line(clean_lab, tmp_path, stand_in):
    script, env = stand_in
    async with controller_on(clean_lab, tmp_path, hosts=1) as c:
        await c.create_vm("dark", memory_min=64 * MIB, expectations=["availability:up"])
        plan = await proposal(c, lambda p: "start-vm" in step_types(p), "the start of dark")
        assert (await carry_out(c, plan)).status.value == "done"
        vm = c.db.find_by_name(VirtualMachine, "dark")
        dyn = await until(lambda: (d := c.db.get(VirtualMachineDynamic, vm.id)) and d.spice_port and d,
                          "dark's SPICE port")
        host = clean_lab.hosts[0]
        line = f"ssh -N -o ExitOnForwardFailure=yes -L {dyn.spice_port}:127.0.0.1:{dyn.spice_port} root@{host.address}"

        no_display = {k: v for k, v in env.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        with pytest.raises(NoViewer) as no_screen:
            await open_console(c.fleet, c.db, "dark", viewer=str(script), env=no_display)
        assert "no display" in str(no_screen.value) and line in str(no_screen.value)
        assert no_screen.value.ssh_command == line

        with pytest.raises(NoViewer) as missing:
            await open_console(c.fleet, c.db, "dark", viewer="kerub-no-such-viewer --full-screen", env=env)
        assert "'kerub-no-such-viewer' is not installed" in str(missing.value) and line in str(missing.value)
        live = host.virsh(["dumpxml", "--security-info", "dark"], check=True).stdout
        password = live.split("passwd='")[1].split("'")[0]
        assert password not in str(missing.value) and password not in str(no_screen.value)
        assert not Path(env["STAND_IN_RECORD"]).exists()  # nothing was launched

        await c.create_vm("idle", memory_min=64 * MIB)
        with pytest.raises(ConsoleError, match="VM idle is down: it has a console only while it runs"):
            await open_console(c.fleet, c.db, "idle", viewer=str(script), env=env)
        with pytest.raises(ConsoleError, match="no VM named 'ghost'"):
            await open_console(c.fleet, c.db, "ghost", viewer=str(script), env=env)
