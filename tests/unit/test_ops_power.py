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

from kerub_tui.hosts.power import (
    ipmi_power,
    magic_packet,
    parse_ipmi_power_status,
    power_off,
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
