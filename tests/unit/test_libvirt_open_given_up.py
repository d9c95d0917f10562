"""A libvirt.open given up on (its await cancelled by a stop) keeps running in its thread until its
tunnel answers or closes: the link's close() waits for it while this loop still serves the tunnel.
Otherwise the thread waits for good once the loop has stopped, and the process cannot exit (seen:
bench/ssh.py hung at exit after a fleet stopped while a light lab host's link was being opened)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from pathlib import Path

import libvirt
import pytest

from kerub_tui.hosts import libvirt_link
from kerub_tui.hosts.libvirt_link import LibvirtLink


class _Tunnel:
    """Stands in for the SSH connection's forward: accepts libvirt's connection and closes it a
    while later without an answer, as a tunnel whose channel cannot open does."""

    def __init__(self) -> None:
        self.accepted = asyncio.Event()

    async def forward_local_path(self, local_path: str, remote_path: str) -> asyncio.Server:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted.set()
            await asyncio.sleep(0.5)
            writer.close()

        return await asyncio.start_unix_server(serve, local_path)


@pytest.fixture
def sockets():
    path = Path(tempfile.mkdtemp(prefix="kerub-t-", dir="/tmp"))  # a short path: a unix socket address
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_close_waits_for_a_libvirt_open_given_up_on(sockets, monkeypatch):
    ended = threading.Event()
    real_open = libvirt.open

    def watched_open(uri: str):
        try:
            return real_open(uri)
        finally:
            ended.set()

    monkeypatch.setattr(libvirt_link.libvirt, "open", watched_open)
    tunnel = _Tunnel()
    link = LibvirtLink("h", tunnel, sockets)  # type: ignore[arg-type]
    opening = asyncio.create_task(link.open())
    await asyncio.wait_for(tunnel.accepted.wait(), 10)
    opening.cancel()  # a stop while libvirt is connecting
    with pytest.raises(asyncio.CancelledError):
        await opening
    try:
        assert not ended.is_set()  # the thread is still in libvirt.open, waiting on the tunnel
        await asyncio.shield(link.close())  # what the monitor does with a link whose open was cancelled
        assert ended.is_set()
        assert not list(sockets.iterdir())  # and the tunnel's socket file is gone
    finally:
        await asyncio.to_thread(ended.wait, 10)  # without the fix: serve its tunnel until it ends, or pytest hangs
