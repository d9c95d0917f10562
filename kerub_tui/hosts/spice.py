"""SPICE consoles: the remote-viewer connection file (.vv), a fresh password per start, and a probe
that checks a port really answers the SPICE link protocol.

The .vv file is a GLib key file read by remote-viewer. Values are single lines, GLib gives '\\' a
meaning and '[' starts a group: fields are validated so that nothing can add a line or a group
(e.g. a ``proxy=`` or a second ``[virt-viewer]`` section) to the file.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import secrets
import struct
from dataclasses import dataclass

from kerub_tui.core.names import check_address

SPICE_MAGIC = b"REDQ"
SPICE_VERSION_MAJOR = 2
SPICE_VERSION_MINOR = 2
SPICE_CHANNEL_MAIN = 1
SPICE_MAX_PASSWORD = 60  # the SPICE ticket limit
_PASSWORD_RE = re.compile(r"[A-Za-z0-9_-]{8,60}\Z")


def new_spice_password() -> str:
    """A fresh random password for one start of one VM (never stored, never logged)."""
    return secrets.token_urlsafe(24)  # 32 characters of [A-Za-z0-9_-]


def check_spice_password(password: object) -> str:
    if not isinstance(password, str) or not _PASSWORD_RE.match(password):
        # never echo the value: it is a secret
        raise ValueError("a SPICE password is 8 to 60 characters of letters, digits, '_' and '-'")
    return password


def _check_title(title: object) -> str:
    if not isinstance(title, str) or not title.strip():
        raise ValueError("the viewer title must be non-empty text")
    if len(title) > 200:
        raise ValueError("the viewer title is too long (at most 200 characters)")
    bad = next((c for c in title if not c.isprintable() or c in "\\[]"), None)
    if bad is not None:
        raise ValueError(f"the viewer title must not contain {bad!r}")
    return title.strip()


def _check_port(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"{port!r} is not a TCP port")
    return port


def vv_file(host: str, port: int, password: str, title: str, *, delete_this_file: bool = True,
            protocol: str = "spice") -> str:
    """The text of a .vv file for remote-viewer; ``host``/``port`` are the local end of the SSH forward;
    ``protocol`` spice or vnc (remote-viewer speaks both)."""
    if protocol not in ("spice", "vnc"):
        raise ValueError(f"the console protocol {protocol!r} is neither spice nor vnc")
    check_address(host)
    _check_port(port)
    check_spice_password(password)
    lines = [
        "[virt-viewer]",
        f"type={protocol}",
        f"host={host}",
        f"port={port}",
        f"password={password}",
        f"title={_check_title(title)}",
        f"delete-this-file={1 if delete_this_file else 0}",
        "release-cursor=shift+f12",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SpiceLinkReply:
    major: int
    minor: int
    error: int  # 0 = SPICE_LINK_ERR_OK; the server accepted the link message
    size: int


class SpiceProbeError(Exception):
    """The port did not answer as a SPICE server."""


def spice_link_message(channel_type: int = SPICE_CHANNEL_MAIN) -> bytes:
    """SpiceLinkHeader + SpiceLinkMess for a new main channel with no capabilities."""
    # SpiceLinkMess: connection_id u32, channel_type u8, channel_id u8, 2 x caps count u32, caps_offset u32
    body = struct.pack("<IBBIII", 0, channel_type, 0, 0, 0, 18)
    header = SPICE_MAGIC + struct.pack("<III", SPICE_VERSION_MAJOR, SPICE_VERSION_MINOR, len(body))
    return header + body


def parse_spice_link_reply(data: bytes) -> SpiceLinkReply:
    """Parse the server's SpiceLinkHeader and the error field of its SpiceLinkReply."""
    if len(data) < 16 or data[:4] != SPICE_MAGIC:
        raise SpiceProbeError(f"not a SPICE server: the reply starts with {data[:8]!r}, not {SPICE_MAGIC!r}")
    major, minor, size = struct.unpack("<III", data[4:16])
    if major != SPICE_VERSION_MAJOR:
        raise SpiceProbeError(f"SPICE protocol {major}.{minor} is not supported (need {SPICE_VERSION_MAJOR}.x)")
    if size < 4 or len(data) < 20:
        raise SpiceProbeError("the SPICE link reply is truncated")
    (error,) = struct.unpack("<I", data[16:20])
    return SpiceLinkReply(major, minor, error, size)


async def spice_link_probe(host: str, port: int, timeout: float = 5.0) -> SpiceLinkReply:
    """Connect, send a link message, read the reply. Raises SpiceProbeError or OSError on failure.

    Only a loopback/forwarded address is expected here (the SPICE port listens on the host's 127.0.0.1
    and is reached through an SSH forward)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        check_address(host)
    _check_port(port)

    async def exchange() -> SpiceLinkReply:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(spice_link_message())
            await writer.drain()
            header = await reader.readexactly(16)
            if header[:4] != SPICE_MAGIC:
                raise SpiceProbeError(f"not a SPICE server: the reply starts with {header[:8]!r}")
            (size,) = struct.unpack("<I", header[12:16])
            body = await reader.readexactly(min(size, 4096)) if size else b""
            return parse_spice_link_reply(header + body)
        except asyncio.IncompleteReadError as exc:
            raise SpiceProbeError(f"the server closed the connection after {len(exc.partial)} bytes") from None
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    try:
        return await asyncio.wait_for(exchange(), timeout)
    except TimeoutError:
        raise SpiceProbeError(f"no SPICE link reply from {host}:{port} within {timeout:g} s") from None
