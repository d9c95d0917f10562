"""The control socket in-process: an attached client sees the same live state and acts through it."""

import asyncio

import pytest

from kerub_tui.cli import run_in_controller
from kerub_tui.control import ControlServer, RemoteController, controller_running
from kerub_tui.controller import ActionError, Controller
from kerub_tui.core.models import VirtualStorageDevice


@pytest.fixture
async def served(tmp_path):
    controller = Controller(tmp_path / "data")
    await controller.start(connect_hosts=False)
    server = ControlServer(controller, run_in_controller)
    await server.start()
    yield controller, server
    await server.stop()
    await controller.stop()


async def _until(predicate, timeout=10.0):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_attached_client_mirrors_and_acts(served):
    controller, _server = served
    await controller.create_disk("before", size=1 << 20)
    remote = RemoteController(controller.data_dir)
    await remote.start()
    try:
        assert [d.name for d in remote.db.list(VirtualStorageDevice)] == ["before"]
        sub = remote.subscribe(["disk"])
        await controller.create_disk("after", size=2 << 20)
        change = await asyncio.wait_for(sub.get(), 10)
        assert change.new.name == "after"
        made = await remote.create_disk("remote", size=3 << 20)
        assert isinstance(made, VirtualStorageDevice)
        assert controller.db.find_by_name(VirtualStorageDevice, "remote") is not None
        await _until(lambda: remote.db.find_by_name(VirtualStorageDevice, "remote") is not None)
        with pytest.raises(ActionError, match="contains ';'"):
            await remote.create_disk("a;b", size=1)
        with pytest.raises(ActionError, match="already exists"):
            await remote.create_disk("remote", size=1 << 20)
    finally:
        await remote.stop()
    # Quitting an attached client leaves the controller serving.
    assert controller_running(controller.data_dir)


async def test_readonly_client_refuses_changes(served):
    controller, _ = served
    remote = RemoteController(controller.data_dir, readonly=True)
    await remote.start()
    try:
        with pytest.raises(ActionError, match="read-only"):
            await remote.create_disk("x", size=1 << 20)
        assert controller.db.list(VirtualStorageDevice) == []
    finally:
        await remote.stop()


async def test_client_learns_when_the_controller_goes_away(served):
    controller, server = served
    remote = RemoteController(controller.data_dir)
    await remote.start()
    await server.stop()
    await asyncio.wait_for(remote.disconnected.wait(), 10)
    with pytest.raises(ActionError, match="went away"):
        await remote.create_disk("late", size=1 << 20)
    await remote.stop()


async def test_malformed_requests_get_an_error_not_a_crash(served):
    controller, server = served
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    for garbage in (b"not json\n", b'{"no": "method"}\n', b'{"id": 1, "method": "call", "params": {"name": "stop"}}\n',
                    b'{"id": 2, "method": "cli", "params": {"argv": "rm -rf /"}}\n'):
        writer.write(garbage)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
        assert b'"error"' in line
    writer.close()
    assert controller_running(controller.data_dir)
