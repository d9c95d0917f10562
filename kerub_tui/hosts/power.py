"""Host power: wake-on-LAN, power-off over SSH, and IPMI through ipmitool.

Wake-on-LAN is sent from a *neighbour* host on the sleeping host's network (or from the controller,
by sending :func:`magic_packet` itself). The command prefers python3, which almost every host has and
which can set SO_BROADCAST, and falls back to the ``wakeonlan`` tool. IPMI hardware cannot exist in the
lab: the ipmitool builders are tested as text only.
"""

from __future__ import annotations

import ipaddress
import re
import shlex

from kerub_tui.core.names import check_address, check_user

from .fileimage import check_path

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
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port {port!r} is not a UDP port")
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


def ipmi_power(address: str, user: str, action: str, password_file: str | None = None) -> str:
    """ipmitool over LAN (lanplus). The password comes from a file (-f) or from the IPMI_PASSWORD
    environment variable (-E): never from the command line, where ``ps`` would show it."""
    check_address(address)
    check_user(user)
    if action not in IPMI_ACTIONS:
        raise ValueError(f"IPMI power action {action!r} is not one of: {', '.join(IPMI_ACTIONS)}")
    secret = ["-E"] if password_file is None else ["-f", check_path(password_file, "IPMI password file")]
    return shlex.join(["ipmitool", "-I", "lanplus", "-H", address, "-U", user, *secret, "chassis", "power", action])


def parse_ipmi_power_status(text: str) -> bool:
    """``Chassis Power is on`` -> True, ``... off`` -> False; anything else raises ValueError."""
    match = re.search(r"^Chassis Power is (on|off)\s*$", text or "", re.MULTILINE)
    if not match:
        raise ValueError(f"ipmitool power status not understood: {(text or '').strip()[:80]!r}")
    return match.group(1) == "on"
