"""Power: the wake-on-LAN command is run for real and its packet caught on loopback; power-off is run
against a stand-in ``shutdown`` (powering this machine off is not an option); IPMI hardware cannot
exist here, so the ipmitool builders are tested as text."""

from __future__ import annotations

import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from kerub_tui.core.models import PowerManagement
from kerub_tui.hosts.power import (
    ipmi_power,
    ipmi_power_args,
    magic_packet,
    parse_ipmi_power_status,
    power_off,
    send_magic_packet,
    wake_from_controller,
    wake_on_lan,
)


def test_magic_packet_layout() -> None:
    packet = magic_packet("52:54:00:AB:cd:0f")
    assert len(packet) == 102
    assert packet[:6] == b"\xff" * 6
    assert packet[6:] == bytes([0x52, 0x54, 0x00, 0xAB, 0xCD, 0x0F]) * 16


@pytest.mark.parametrize("mac", ["", "52:54:00:ab:cd", "52-54-00-ab-cd-ef", "zz:54:00:ab:cd:ef", "52:54:00:ab:cd:ef\n", None])
def test_bad_mac_is_refused(mac: object) -> None:
    with pytest.raises(ValueError, match="MAC"):
        magic_packet(mac)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="MAC"):
        wake_on_lan(mac)  # type: ignore[arg-type]


@pytest.mark.parametrize("broadcast", ["", "10.0.0.255; reboot", "::1", "host.example", "300.1.1.1"])
def test_bad_broadcast_is_refused(broadcast: str) -> None:
    with pytest.raises(ValueError, match="broadcast"):
        wake_on_lan("52:54:00:ab:cd:ef", broadcast)


@pytest.mark.skipif(shutil.which("python3") is None, reason="python3 is not on PATH")
def test_wake_on_lan_command_sends_the_magic_packet() -> None:
    """Sent to a UDP socket on loopback (never to a real broadcast address from a test)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(20)
        port = receiver.getsockname()[1]
        command = wake_on_lan("52:54:00:AB:CD:EF", "127.0.0.1", port)
        result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        data, _ = receiver.recvfrom(2048)
    assert data == magic_packet("52:54:00:ab:cd:ef")


def test_wake_on_lan_without_any_tool_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        ["/bin/sh", "-c", wake_on_lan("52:54:00:ab:cd:ef")],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": str(tmp_path)},  # an empty directory: no python3, no wakeonlan
    )
    assert result.returncode == 127
    assert "neither python3 nor wakeonlan" in result.stderr


def test_power_off_returns_first_then_shuts_down(tmp_path: Path) -> None:
    """A stand-in ``shutdown`` records its arguments: the command must return before it runs.

    PATH holds only the stand-in and the few tools the command needs, so the real shutdown is
    out of reach even if something went wrong."""
    record = tmp_path / "shutdown-args"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "shutdown"
    stand_in.write_text(f"#!/bin/sh\necho \"$@\" > {record}\n")
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)
    for tool in ("sh", "sleep", "nohup", "echo"):
        found = shutil.which(tool)
        assert found is not None, f"{tool} is needed"
        (bin_dir / tool).symlink_to(found)
    env = {"PATH": str(bin_dir)}
    result = subprocess.run([str(bin_dir / "sh"), "-c", power_off(delay_seconds=2)], env=env, capture_output=True, timeout=30)
    assert result.returncode == 0
    assert not record.exists()  # still sleeping: the caller got its answer first
    for _ in range(200):
        if record.exists() and record.read_text():
            break
        time.sleep(0.05)
    assert record.read_text().strip() == "-P now"


def test_power_off_variants() -> None:
    assert power_off() == "nohup sh -c 'sleep 2; shutdown -P now' >/dev/null 2>&1 &"
    assert "shutdown -p now" in power_off("freebsd")
    with pytest.raises(ValueError):
        power_off("windows")
    with pytest.raises(ValueError):
        power_off(delay_seconds=-1)


def test_ipmi_builders() -> None:
    assert ipmi_power("10.0.0.9", "admin", "on") == "ipmitool -I lanplus -H 10.0.0.9 -U admin -E chassis power on"
    assert ipmi_power("bmc.example", "admin", "status", password_file="/etc/kerub/bmc pass") == (
        "ipmitool -I lanplus -H bmc.example -U admin -f '/etc/kerub/bmc pass' chassis power status"
    )
    for bad in (
        lambda: ipmi_power("10.0.0.9; reboot", "admin", "on"),
        lambda: ipmi_power("10.0.0.9", "ad min", "on"),
        lambda: ipmi_power("10.0.0.9", "admin", "explode"),
        lambda: ipmi_power("10.0.0.9", "admin", "on", password_file="pass.txt"),
    ):
        with pytest.raises(ValueError):
            bad()


def test_parse_ipmi_status() -> None:
    # ipmitool's documented reply lines (no BMC here to capture from)
    assert parse_ipmi_power_status("Chassis Power is on\n") is True
    assert parse_ipmi_power_status("Chassis Power is off") is False
    for garbage in ("", "Error: Unable to establish IPMI v2 / RMCP+ session", "Chassis Power is maybe"):
        with pytest.raises(ValueError):
            parse_ipmi_power_status(garbage)


# --- the controller's own wake-up (issue 18 item 3): a fleet entirely down has no neighbour to send it ---


def _receiver() -> socket.socket:
    """A UDP socket on every local address: it catches a broadcast to 127.255.255.255 (loopback's own
    broadcast; a test never sends to a real network's broadcast address)."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("", 0))
    receiver.settimeout(20)
    return receiver


def test_the_controller_sends_the_magic_packet_itself() -> None:
    with _receiver() as receiver:
        port = receiver.getsockname()[1]
        assert send_magic_packet("52:54:00:AB:CD:EF", "127.255.255.255", port) == 102
        data, (sender, _) = receiver.recvfrom(2048)
    assert sender.startswith("127.")
    assert data == b"\xff" * 6 + bytes.fromhex("525400abcdef") * 16  # byte by byte: 6 x ff, the MAC 16 times


@pytest.mark.parametrize(("mac", "broadcast", "port", "match"), [
    ("52:54:00:ab:cd:ef; reboot", "127.255.255.255", 9, "MAC"),
    ("52:54:00:ab:cd:ef", "127.255.255.255 -x", 9, "broadcast"),
    ("52:54:00:ab:cd:ef", "$(reboot)", 9, "broadcast"),
    ("52:54:00:ab:cd:ef", "127.255.255.255", 0, "port"),
    ("52:54:00:ab:cd:ef", "127.255.255.255", 70000, "port"),
    ("52:54:00:ab:cd:ef", "127.255.255.255", True, "port"),
])
def test_the_controllers_packet_refuses_bad_values(mac: str, broadcast: str, port: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        send_magic_packet(mac, broadcast, port)


async def test_wake_from_controller_by_wake_on_lan() -> None:
    with _receiver() as receiver:
        port = receiver.getsockname()[1]
        power = PowerManagement(wol_mac="52:54:00:00:00:2a", wol_broadcast="127.255.255.255", wol_port=port)
        result = await wake_from_controller(power, "h1")
        data, _ = receiver.recvfrom(2048)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"magic packet for 52:54:00:00:00:2a sent to 127.255.255.255:{port} (102 bytes)"
    assert data == magic_packet("52:54:00:00:00:2a")


async def test_wake_from_controller_by_ipmi_needs_ipmitool_here(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no ipmitool on the controller
    result = await wake_from_controller(PowerManagement(ipmi_address="10.0.0.9", ipmi_user="admin"), "h1")
    assert (result.exit_code, result.stderr) == (127, "ipmitool is not installed on the controller: it cannot "
                                                       "power h1 on")
    assert ipmi_power_args("10.0.0.9", "admin", "on") == [
        "ipmitool", "-I", "lanplus", "-H", "10.0.0.9", "-U", "admin", "-E", "chassis", "power", "on"]
    none = await wake_from_controller(PowerManagement(), "h1")
    assert (none.exit_code, none.stderr) == (1, "h1 has no wake-on-LAN address and no IPMI")


@pytest.mark.parametrize("field", [{"wol_mac": "52:54:00:ab:cd:ef;reboot"}, {"wol_broadcast": "10.0.0.255 && reboot"},
                                   {"wol_port": 0}, {"ipmi_address": "10.0.0.9; reboot"}, {"ipmi_user": "root -P x"}])
def test_hostile_power_settings_are_refused_by_the_document(field: dict) -> None:
    with pytest.raises(ValueError):
        PowerManagement(**field)
