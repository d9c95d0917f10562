"""Secrets on the lab (issue 17, items 3 and 7): the SPICE password lives on the running domain only,
never in its persistent definition; a failing viewer's output is never shown and `console` fails;
`host add --install-key` through a running controller never sends the password through the socket."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kerub_tui.cli import main, run_in_controller
from kerub_tui.core.models import VirtualMachineDynamic, VmStatus
from kerub_tui.core.paths import SOCKET_FILE
from kerub_tui.core.store import Store
from kerub_tui.hosts.console import open_console
from kerub_tui.ssh import load_or_create_client_key, public_key_line

from .test_console_lab import stand_in  # noqa: F401  (a fixture)
from .test_host_ops import MIB, carry_out, controller_on, lab_host, proposal, step_types, until
from .test_ssh_transport import login_user  # noqa: F401  (a fixture)

pytestmark = pytest.mark.lab


def _passwd(xml: str) -> str | None:
    return xml.split("passwd='")[1].split("'")[0] if "passwd='" in xml else None


async def _running(c, name: str) -> VirtualMachineDynamic:
    vm = await c.create_vm(name, memory_min=64 * MIB, expectations=["availability:up"])
    plan = await proposal(c, lambda p: "start-vm" in step_types(p), f"the start of {name}")
    done = await carry_out(c, plan)
    assert done.status.value == "done", [(r.outcome.value, r.error) for r in done.records]
    return await until(lambda: (d := c.db.get(VirtualMachineDynamic, vm.id)) and d.status is VmStatus.up
                       and d.spice_port and d, f"{name}'s SPICE port")


async def test_the_spice_password_is_on_the_live_domain_only(clean_lab, tmp_path, stand_in):
    script, env = stand_in
    async with controller_on(clean_lab, tmp_path, hosts=1) as c:
        dyn = await _running(c, "secret")
        labhost = lab_host(clean_lab, c, dyn.host_id)
        live = labhost.virsh(["dumpxml", "--security-info", "secret"], check=True).stdout
        inactive = labhost.virsh(["dumpxml", "--security-info", "--inactive", "secret"], check=True).stdout
        password = _passwd(live)
        assert password and len(password) >= 16
        assert "passwd=" not in inactive and password not in inactive
        # libvirt's saved definition on the host has no password either
        saved = labhost.run("cat /etc/libvirt/qemu/secret.xml", check=True).stdout
        assert "<graphics" in saved and "passwd" not in saved and password not in saved
        # The live SPICE server requires it: the stand-in viewer logs in with it, a wrong one is refused.
        session = await open_console(c.fleet, c.db, "secret", viewer=str(script), env=env)
        record_path = Path(env["STAND_IN_RECORD"])
        await until(record_path.exists, "the stand-in viewer to log in")
        record = json.loads(record_path.read_text())
        assert (record["magic"], record["link_error"], record["login"]) == ("REDQ", 0, 0)
        assert record["wrong_login"] != 0
        assert record["password_sha256"] == hashlib.sha256(password.encode()).hexdigest()
        Path(env["STAND_IN_RELEASE"]).touch()
        assert await session.wait() == 0


FAILING_VIEWER = r'''#!/bin/sh
echo "spice://127.0.0.1:5900?password=$(grep ^password= "$1" | cut -d= -f2)"
echo "(remote-viewer:1): GLib-WARNING: cannot open display; password $(grep ^password= "$1")" >&2
exit 1
'''


async def test_a_failing_viewer_is_not_echoed_and_the_console_command_fails(clean_lab, tmp_path, capfd):
    viewer = tmp_path / "failing-viewer"
    viewer.write_text(FAILING_VIEWER)
    viewer.chmod(0o755)
    async with controller_on(clean_lab, tmp_path, hosts=1) as c:
        dyn = await _running(c, "broken")
        password = _passwd(lab_host(clean_lab, c, dyn.host_id).virsh(
            ["dumpxml", "--security-info", "broken"], check=True).stdout)
        assert password
        code, out, err = await run_in_controller(["console", "broken", "--viewer", str(viewer)], c,
                                                 {"DISPLAY": ":kerub-test"})
        assert code == 1
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("kerub-tui: SPICE console of broken") \
            and lines[0].endswith("the viewer exited with status 1"), err
        captured = capfd.readouterr()
        everything = out + err + captured.out + captured.err
        assert password not in everything and "spice://" not in everything and "GLib" not in everything
        # and nothing of it was kept in run/
        assert not list((tmp_path / "data" / "run").glob("*.vv"))


class _Recorder:
    """Stands where a controller's socket is: records every byte a client sends, answers `cli` with success."""

    def __init__(self, path: Path) -> None:
        self.received = b""
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        os.chmod(path, 0o600)
        self.server.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as stream:
                line = stream.readline()
                self.received += line
                if line:
                    answer = {"id": 1, "result": {"exit": 0, "stdout": "added host pw\n", "stderr": ""}}
                    conn.sendall(json.dumps(answer).encode() + b"\n")

    def close(self) -> None:
        self.server.close()


def test_install_key_through_a_running_controller_keeps_the_password_here(
        login_user, tmp_path, monkeypatch, capsys):
    host, user, password = login_user
    data = tmp_path / "data"
    with Store.open(data):
        pass
    key = public_key_line(load_or_create_client_key(data), "kerub-tui").split()[1]
    recorder = _Recorder(data / SOCKET_FILE)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("getpass.getpass", lambda prompt="": password)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    try:
        code = main(["--data-dir", str(data), "host", "add", f"{host.address}:{host.port}", "--user", user,
                     "--name", "pw", "--install-key", "--accept-fingerprint", host.host_key_fingerprint])
    finally:
        recorder.close()
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "added host pw" in captured.out and f"installed kerub-tui's key for {user}@{host.address}" in captured.err
    # The key was installed by this process, over its own login ...
    assert key in host.run(f"cat /tmp/{user}/.ssh/authorized_keys", check=True).stdout
    # ... and the controller got the command without the password, and without --install-key.
    request = json.loads(recorder.received)
    assert password.encode() not in recorder.received
    assert request["params"]["argv"][-4:] == ["--name", "pw", "--accept-fingerprint", host.host_key_fingerprint]
    assert "--install-key" not in request["params"]["argv"] and "secret" not in request["params"]


def _serve(data: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-m", "kerub_tui", "--data-dir", str(data), "serve"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    said: list[str] = []
    try:
        while "serving" not in (line := process.stderr.readline()):
            said.append(line)
            # after a SIGKILLed serve that was mid-write, the next one rolls the store back and says so first
            assert "was not closed cleanly: rolled back" in line, said
    except BaseException:
        process.kill()  # never a serve left running past its test
        process.wait()
        raise
    return process


async def test_a_sigkilled_serve_s_tunnel_sockets_go_at_the_next_start(clean_lab, tmp_path):
    data = tmp_path / "data"
    host = clean_lab.hosts[0]
    added = subprocess.run(
        [sys.executable, "-m", "kerub_tui", "--data-dir", str(data), "host", "add", f"{host.address}:{host.port}",
         "--name", host.name, "--identity", str(host.client_key), "--accept-fingerprint", host.host_key_fingerprint],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert added.returncode == 0, added.stderr
    run = data / "run"
    pids = []
    for _crash in range(2):
        killed = _serve(data)
        pids.append(killed.pid)
        # its libvirt tunnel: the local end is a socket named after it
        await until(lambda: list(run.glob(f"{killed.pid}.*.sock")), "serve's libvirt tunnel socket")
        killed.kill()
        killed.wait()
        assert list(run.glob(f"{killed.pid}.*.sock"))  # left behind by the kill
    survivor = _serve(data)
    try:
        assert {name.split(".", 1)[0] for name in os.listdir(run)} <= {str(survivor.pid)}
    finally:
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(120) == 0


async def test_a_migrated_vm_keeps_its_password_live_and_out_of_the_target_s_definition(clean_lab, tmp_path):
    async with controller_on(clean_lab, tmp_path, hosts=2) as c:
        dyn = await _running(c, "roamer")
        source = lab_host(clean_lab, c, dyn.host_id)
        password = _passwd(source.virsh(["dumpxml", "--security-info", "roamer"], check=True).stdout)
        assert password
        await c.evacuate_host(source.name)
        move = await proposal(c, lambda p: "migrate-vm" in step_types(p), "the migration of roamer")
        done = await carry_out(c, move)
        assert done.status.value == "done", done.status_reason
        target = lab_host(clean_lab, c, move.steps[step_types(move).index("migrate-vm")].params["target"])
        live = target.virsh(["dumpxml", "--security-info", "roamer"], check=True).stdout
        inactive = target.virsh(["dumpxml", "--security-info", "--inactive", "roamer"], check=True).stdout
        assert _passwd(live) == password
        assert "passwd=" not in inactive
        assert password not in target.run("cat /etc/libvirt/qemu/roamer.xml", check=True).stdout
