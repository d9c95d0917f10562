"""The control socket's `serial` method without hosts: its refusals are one line each, a connection
already subscribed is not a console's, and the relay carries bytes both ways and drops the keys of a
view-only client. The controller's open_serial is a stand-in here (a socketpair plays the libvirt
console stream: there is no host); tests/integration/test_guest_os.py relays a real guest's."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from kerub_tui.api import ActionError
from kerub_tui.cli import run_in_controller
from kerub_tui.control import ControlServer, RemoteController, connect, open_serial_remote
from kerub_tui.controller import Controller
from kerub_tui.core.models import VirtualMachine


@pytest.fixture
async def served(tmp_path):
    controller = Controller(tmp_path / "data")
    await controller.start(connect_hosts=False)
    server = ControlServer(controller, run_in_controller)
    await server.start()
    yield controller, server
    await server.stop()
    await controller.stop()


async def test_refusals_are_one_line(served):
    controller, _server = served
    await controller.create_vm("idle", memory_min=256 << 20)
    with pytest.raises(ActionError, match=r"^no vm named"):
        await open_serial_remote(controller.data_dir, "no-such\nvm")
    with pytest.raises(ActionError, match="VM idle is down: it has a console only while it runs"):
        await open_serial_remote(controller.data_dir, "idle")
    # wrong types never reach the controller
    sock = connect(controller.data_dir)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    writer.write(json.dumps({"id": 1, "method": "serial", "params": {"vm": ["x"], "view_only": "yes"}}).encode()
                 + b"\n")
    answer = json.loads(await reader.readline())
    assert answer == {"id": 1, "error": "serial: vm must be text, view_only and force true or false"}
    writer.close()


class PairStream:
    """The guest's side is the test's end of a socketpair (a stand-in for the libvirt stream)."""

    description = "serial console of idle on h1 (stand-in)"

    def __init__(self, sock: socket.socket, view_only: bool) -> None:
        self.sock = sock
        self.view_only = view_only
        self.closed = asyncio.Event()
        self.written: list[bytes] = []  # every write the relay made, even one the stream would drop

    async def start(self) -> PairStream:
        self.reader, self.writer = await asyncio.open_connection(sock=self.sock)
        return self

    async def read(self) -> bytes:
        return await self.reader.read(4096)

    async def write(self, data: bytes) -> None:
        self.written.append(data)
        if not self.view_only:
            self.writer.write(data)

    async def close(self) -> None:
        self.writer.close()
        self.closed.set()


async def test_the_relay_carries_both_ways_and_a_view_only_client_sends_nothing(served):
    controller, _server = served
    await controller.create_vm("idle", memory_min=256 << 20)
    streams: list[tuple[PairStream, socket.socket]] = []

    async def open_serial(vm_ref: str, *, view_only: bool = False, force: bool = False) -> PairStream:
        assert controller.get(VirtualMachine, vm_ref) or controller.find_by_name(VirtualMachine, vm_ref)
        ours, guest = socket.socketpair()
        stream = await PairStream(ours, view_only).start()
        streams.append((stream, guest))
        return stream

    controller.open_serial = open_serial  # type: ignore[method-assign]
    remote = RemoteController(controller.data_dir)
    await remote.start()
    try:
        console = await remote.open_serial("idle")
        stream, guest = streams[-1]
        guest_reader, guest_writer = await asyncio.open_connection(sock=guest)
        assert console.description == stream.description and not console.view_only
        guest_writer.write(b"idle login: ")
        assert await console.read() == b"idle login: "
        await console.write(b"root\r")
        assert await guest_reader.readexactly(5) == b"root\r"
        await console.close()
        await asyncio.wait_for(stream.closed.wait(), 10)  # the client left: the controller closes the stream

        viewer = await open_serial_remote(controller.data_dir, "idle", view_only=True)
        stream, guest = streams[-1]
        guest_reader, guest_writer = await asyncio.open_connection(sock=guest)
        assert viewer.view_only and stream.view_only
        guest_writer.write(b"still here")
        assert await viewer.read() == b"still here"
        # even a client that sends anyway: the relay reads its bytes in order, up to its end, and
        # passes none of them on
        viewer._writer.write(b"reboot\r")
        viewer._writer.write_eof()
        await asyncio.wait_for(stream.closed.wait(), 10)
        assert stream.written == [], "not one byte of the view-only client reached the stream"
        assert await viewer.read() == b""
        await viewer.close()
    finally:
        await remote.stop()
