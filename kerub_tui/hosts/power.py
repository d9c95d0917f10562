"""Host power: wake-on-LAN, power-off over SSH, and IPMI through ipmitool.

Wake-on-LAN is sent from a *neighbour* host on the sleeping host's network, or, when no host is up
(a fleet entirely down), from the controller itself, which sits on the admin's network:
:func:`send_magic_packet` sends the UDP packet from this process, and :func:`wake_from_controller`
runs ipmitool here for a host with a BMC. The neighbour's command prefers python3, which almost every
host has and which can set SO_BROADCAST, and falls back to the ``wakeonlan`` tool. IPMI hardware
cannot exist in the lab: the ipmitool builders are tested as text only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import shlex
import socket
from typing import Any

from kerub_tui.core.names import check_address, check_user

from .fileimage import check_path
from .results import OperationResult

WOL_PORT = 9


def check_mac(mac: object) -> str:
    if not isinstance(mac, str) or not re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", mac):
        raise ValueError(f"{mac!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    return mac.lower()


def magic_packet(mac: str) -> bytes:
    """The wake-on-LAN payload: six 0xff bytes, then the MAC sixteen times (102 bytes)."""
    raw = bytes.fromhex(check_mac(mac).replace(":", ""))
    return b"\xff" * 6 + raw * 16


def _check_broadcast(broadcast: object) -> str:
    try:
        address = ipaddress.IPv4Address(broadcast)
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise ValueError(f"{broadcast!r} is not an IPv4 broadcast address") from None
    return str(address)


def _check_port(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port {port!r} is not a UDP port")
    return port


def send_magic_packet(mac: str, broadcast: str = "255.255.255.255", port: int = WOL_PORT) -> int:
    """Send the wake-on-LAN packet for ``mac`` from this process (the controller) to ``broadcast``:
    UDP, with SO_BROADCAST. Returns the bytes sent (102); OSError when the network refuses it."""
    payload = magic_packet(mac)
    target = (_check_broadcast(broadcast), _check_port(port))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        return sock.sendto(payload, target)


IPMI_TIMEOUT = 30.0


async def wake_from_controller(power: Any, name: str, *, ipmi_timeout: float = IPMI_TIMEOUT) -> OperationResult:
    """Wake a host from the controller's own process: the magic packet to its wake-on-LAN MAC, or
    ``ipmitool ... chassis power on`` run here (argv, no shell; the password from IPMI_PASSWORD in
    the controller's environment, never on a command line). ``power`` is the host's PowerManagement."""
    if power.wol_mac is not None:
        broadcast = power.wol_broadcast or "255.255.255.255"
        try:
            sent = await asyncio.to_thread(send_magic_packet, power.wol_mac, broadcast, power.wol_port)
        except OSError as error:
            return OperationResult(1, "", f"the controller could not send the magic packet for {power.wol_mac} "
                                          f"to {broadcast}:{power.wol_port}: {error.strerror or error}")
        return OperationResult(0, f"magic packet for {power.wol_mac} sent to {broadcast}:{power.wol_port} "
                                  f"({sent} bytes)", "")
    if power.ipmi_address is None:
        return OperationResult(1, "", f"{name} has no wake-on-LAN address and no IPMI")
    argv = ipmi_power_args(power.ipmi_address, power.ipmi_user or "root", "on")
    return await _ipmitool(argv, f"power {name} on", ipmi_timeout)


async def _ipmitool(argv: list[str], what: str, timeout: float) -> OperationResult:
    """Run ipmitool here (argv, no shell; IPMI_PASSWORD from the controller's environment)."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=dict(os.environ))
    except FileNotFoundError:
        return OperationResult(127, "", f"ipmitool is not installed on the controller: it cannot {what}")
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        return OperationResult(124, "", f"ipmitool did not answer in {timeout:.0f} s")
    return OperationResult(process.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))


async def fence_from_controller(power: Any, name: str, *, ipmi_timeout: float = IPMI_TIMEOUT) -> OperationResult:
    """Fence a host that went away (high availability): ``chassis power off`` through its BMC, run from
    the controller, then ``chassis power status`` read back: success only when the BMC says off (an
    ``off`` that exits 0 and leaves it on fences nothing)."""
    if power.ipmi_address is None:
        return OperationResult(1, "", f"{name} has no IPMI: it cannot be powered off from the controller")
    user = power.ipmi_user or "root"
    off = await _ipmitool(ipmi_power_args(power.ipmi_address, user, "off"), f"power {name} off", ipmi_timeout)
    if off.exit_code != 0:
        return off
    status = await _ipmitool(ipmi_power_args(power.ipmi_address, user, "status"), f"read {name}'s power",
                             ipmi_timeout)
    if status.exit_code != 0:
        return status
    try:
        on = parse_ipmi_power_status(status.stdout)
    except ValueError as error:
        return OperationResult(1, status.stdout, str(error))
    if on:
        return OperationResult(1, status.stdout, f"the BMC of {name} still says its power is on")
    return OperationResult(0, (off.stdout + status.stdout).strip() + "\n", "")


# argv: broadcast, port, mac. SO_BROADCAST is needed to send to a broadcast address at all.
_WOL_PY = (
    "import socket,sys;"
    "b,p,m=sys.argv[1],int(sys.argv[2]),bytes.fromhex(sys.argv[3].replace(':',''));"
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
    "s.setsockopt(socket.SOL_SOCKET,socket.SO_BROADCAST,1);"
    "s.sendto(b'\\xff'*6+m*16,(b,p))"
)


def wake_on_lan(mac: str, broadcast: str = "255.255.255.255", port: int = WOL_PORT) -> str:
    """The command a neighbour host runs to wake ``mac`` by a UDP broadcast magic packet."""
    mac = check_mac(mac)
    broadcast = _check_broadcast(broadcast)
    port = _check_port(port)
    python = shlex.join(["python3", "-c", _WOL_PY, broadcast, str(port), mac])
    tool = shlex.join(["wakeonlan", "-i", broadcast, "-p", str(port), mac])
    return (
        f"if command -v python3 >/dev/null 2>&1; then {python}; "
        f"elif command -v wakeonlan >/dev/null 2>&1; then {tool}; "
        "else echo 'neither python3 nor wakeonlan is installed on this host' >&2; exit 127; fi"
    )


def power_off(system: str = "linux", delay_seconds: int = 2) -> str:
    """Power the host down a moment after the command returns, so SSH reports success first."""
    if system == "linux":
        command = "shutdown -P now"
    elif system == "freebsd":
        command = "shutdown -p now"
    else:
        raise ValueError(f"power-off on {system!r} is not supported (linux or freebsd)")
    if isinstance(delay_seconds, bool) or not isinstance(delay_seconds, int) or not 0 <= delay_seconds <= 600:
        raise ValueError("delay_seconds must be a whole number of seconds from 0 to 600")
    inner = f"sleep {delay_seconds}; {command}"
    return f"nohup sh -c {shlex.quote(inner)} >/dev/null 2>&1 &"


IPMI_ACTIONS = ("status", "on", "off", "soft", "cycle", "reset")


def ipmi_power_args(address: str, user: str, action: str, password_file: str | None = None) -> list[str]:
    """ipmitool over LAN (lanplus) as argv. The password comes from a file (-f) or from the
    IPMI_PASSWORD environment variable (-E): never from the command line, where ``ps`` would show it."""
    check_address(address)
    check_user(user)
    if action not in IPMI_ACTIONS:
        raise ValueError(f"IPMI power action {action!r} is not one of: {', '.join(IPMI_ACTIONS)}")
    secret = ["-E"] if password_file is None else ["-f", check_path(password_file, "IPMI password file")]
    return ["ipmitool", "-I", "lanplus", "-H", address, "-U", user, *secret, "chassis", "power", action]


def ipmi_power(address: str, user: str, action: str, password_file: str | None = None) -> str:
    """The same as shell text, for a neighbour host."""
    return shlex.join(ipmi_power_args(address, user, action, password_file))


def parse_ipmi_power_status(text: str) -> bool:
    """``Chassis Power is on`` -> True, ``... off`` -> False; anything else raises ValueError."""
    match = re.search(r"^Chassis Power is (on|off)\s*$", text or "", re.MULTILINE)
    if not match:
        raise ValueError(f"ipmitool power status not understood: {(text or '').strip()[:80]!r}")
    return match.group(1) == "on"
