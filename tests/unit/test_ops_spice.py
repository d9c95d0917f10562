"""The .vv file and the SPICE link probe's failure paths (the probe against a real qemu SPICE server
is in test_kvm_xml.py, where a throwaway libvirtd starts a domain)."""

from __future__ import annotations

import asyncio
import configparser
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerub_tui.hosts.spice import (
    SpiceProbeError,
    check_spice_password,
    new_spice_password,
    parse_spice_link_reply,
    spice_link_message,
    spice_link_probe,
    vv_file,
)


def read_vv(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.read_string(text)
    return parser


def test_vv_file_fields() -> None:
    password = new_spice_password()
    text = vv_file("127.0.0.1", 45123, password, "web-1 (kerub)")
    vv = read_vv(text)
    assert vv.sections() == ["virt-viewer"]
    section = dict(vv["virt-viewer"])
    assert section == {
        "type": "spice",
        "host": "127.0.0.1",
        "port": "45123",
        "password": password,
        "title": "web-1 (kerub)",
        "delete-this-file": "1",
        "release-cursor": "shift+f12",
    }


def test_vv_file_for_vnc() -> None:
    password = new_spice_password()[:8]
    section = dict(read_vv(vv_file("127.0.0.1", 45124, password, "desk", protocol="vnc"))["virt-viewer"])
    assert section["type"] == "vnc" and section["password"] == password and section["port"] == "45124"
    with pytest.raises(ValueError, match="neither spice nor vnc"):
        vv_file("127.0.0.1", 45124, password, "desk", protocol="rdp\nproxy=x")


def test_passwords_are_fresh_and_valid() -> None:
    passwords = {new_spice_password() for _ in range(50)}
    assert len(passwords) == 50
    for password in passwords:
        assert check_spice_password(password) == password


@pytest.mark.parametrize(
    "title",
    ["vm\n[virt-viewer]\nhost=evil.example", "vm\rproxy=http://evil", "a[b", "x]", "back\\slash", "", "   ", "t" * 201],
)
def test_hostile_titles_are_refused(title: str) -> None:
    with pytest.raises(ValueError, match="title"):
        vv_file("127.0.0.1", 5900, new_spice_password(), title)


@pytest.mark.parametrize("password", ["short", "has space in it", "new\nline-here", "x" * 61, "semi;colon12", None])
def test_bad_passwords_are_refused_without_echo(password: object) -> None:
    with pytest.raises(ValueError) as info:
        vv_file("127.0.0.1", 5900, password, "vm")  # type: ignore[arg-type]
    if isinstance(password, str) and password:
        assert password not in str(info.value)


@pytest.mark.parametrize("host, port", [("127.0.0.1\nproxy=x", 5900), ("127.0.0.1", 0), ("127.0.0.1", 70000), ("127.0.0.1", True)])
def test_bad_endpoint_is_refused(host: str, port: int) -> None:
    with pytest.raises(ValueError):
        vv_file(host, port, new_spice_password(), "vm")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_accepted_title_stays_one_line(title: str) -> None:
    try:
        text = vv_file("127.0.0.1", 5900, "abcdefgh12", title)
    except ValueError:
        return
    vv = read_vv(text)
    assert vv.sections() == ["virt-viewer"] and len(vv["virt-viewer"]) == 7
    assert vv["virt-viewer"]["host"] == "127.0.0.1"


def test_link_message_layout() -> None:
    message = spice_link_message()
    assert message[:4] == b"REDQ" and len(message) == 16 + 18
    assert message[4:16] == (2).to_bytes(4, "little") + (2).to_bytes(4, "little") + (18).to_bytes(4, "little")


def test_reply_parser_refuses_garbage() -> None:
    with pytest.raises(SpiceProbeError, match="not a SPICE server"):
        parse_spice_link_reply(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    with pytest.raises(SpiceProbeError, match="not supported"):
        parse_spice_link_reply(b"REDQ" + (1).to_bytes(4, "little") * 2 + (4).to_bytes(4, "little") + b"\0" * 4)
    with pytest.raises(SpiceProbeError, match="truncated"):
        parse_spice_link_reply(b"REDQ" + (2).to_bytes(4, "little") * 2 + (0).to_bytes(4, "little"))


async def _serve_once(reply: bytes) -> tuple[asyncio.AbstractServer, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(64)
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_probe_of_a_server_that_is_not_spice() -> None:
    server, port = await _serve_once(b"SSH-2.0-OpenSSH_9.2\r\n")
    async with server:
        with pytest.raises(SpiceProbeError, match="not a SPICE server"):
            await spice_link_probe("127.0.0.1", port)


async def test_probe_of_a_server_that_hangs_up() -> None:
    server, port = await _serve_once(b"RED")
    async with server:
        with pytest.raises(SpiceProbeError, match="closed the connection"):
            await spice_link_probe("127.0.0.1", port)


async def test_probe_of_a_closed_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: the connection is refused
        with pytest.raises(OSError):
            await spice_link_probe("127.0.0.1", port)


async def test_probe_times_out_on_a_silent_server() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        with pytest.raises(SpiceProbeError, match="no SPICE link reply"):
            await spice_link_probe("127.0.0.1", server.sockets[0].getsockname()[1], timeout=0.3)
