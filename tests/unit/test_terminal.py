"""core.terminal.attach on a real pty: raw mode while attached, ctrl+] leaves, view-only sends nothing,
and the terminal's modes (termios.tcgetattr) are back after every way out: ctrl+], the stream's end
(a dropped connection), a failing stream, a cancelled session.

The console stream here is a local socketpair (the guest's end is the test's): a stand-in for the
libvirt console stream, which tests/integration/test_guest_os.py uses for real."""

from __future__ import annotations

import asyncio
import os
import socket
import termios

import pytest

from kerub_tui.core.terminal import ESCAPE, attach


class PairStream:
    """A ByteStream over one end of a socketpair: a stand-in for the libvirt console stream."""

    description = "socketpair stand-in"

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.closed = False
        self.fail: Exception | None = None

    async def open(self) -> PairStream:
        self.reader, self.writer = await asyncio.open_connection(sock=self.sock)
        return self

    async def read(self) -> bytes:
        if self.fail is not None:
            raise self.fail
        return await self.reader.read(4096)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        self.closed = True
        self.writer.close()


@pytest.fixture
def pty():
    master, slave = os.openpty()
    yield master, slave
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


async def _guest_side(sock: socket.socket):
    return await asyncio.open_connection(sock=sock)


async def _read_master(master: int, wanted: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    seen = b""
    while wanted not in seen:
        seen += await loop.run_in_executor(None, os.read, master, 4096)
    return seen


async def test_keys_reach_the_guest_its_bytes_reach_the_terminal_and_ctrl_bracket_leaves(pty):
    master, slave = pty
    before = termios.tcgetattr(slave)
    ours, theirs = socket.socketpair()
    stream = await PairStream(ours).open()
    guest_reader, guest_writer = await _guest_side(theirs)
    session = asyncio.create_task(attach(stream, stdin_fd=slave, stdout_fd=slave, banner="attached"))
    await _read_master(master, b"attached\r\n")
    modes = termios.tcgetattr(slave)
    assert not modes[3] & (termios.ICANON | termios.ECHO | termios.ISIG), "raw: ctrl+c goes to the guest too"
    guest_writer.write(b"debian login: ")
    await guest_writer.drain()
    await _read_master(master, b"debian login: ")
    os.write(master, b"root\r\x03")
    assert await guest_reader.readexactly(6) == b"root\r\x03"
    os.write(master, b"ls" + ESCAPE + b"never sent")
    assert await session == "left with ctrl+]"
    assert await guest_reader.read() == b"ls", "what came before ctrl+] is sent, nothing after"
    assert termios.tcgetattr(slave) == before
    assert stream.closed


async def test_view_only_sends_nothing(pty):
    master, slave = pty
    before = termios.tcgetattr(slave)
    ours, theirs = socket.socketpair()
    stream = await PairStream(ours).open()
    guest_reader, _guest_writer = await _guest_side(theirs)
    session = asyncio.create_task(attach(stream, stdin_fd=slave, stdout_fd=slave, view_only=True, banner="ro"))
    await _read_master(master, b"ro\r\n")
    os.write(master, b"reboot\r")
    os.write(master, ESCAPE)
    assert await session == "left with ctrl+]"
    assert await guest_reader.read() == b"", "not one byte reached the guest"
    assert termios.tcgetattr(slave) == before


async def test_a_dropped_stream_ends_the_session_and_restores_the_terminal(pty):
    master, slave = pty
    before = termios.tcgetattr(slave)
    ours, theirs = socket.socketpair()
    stream = await PairStream(ours).open()
    session = asyncio.create_task(attach(stream, stdin_fd=slave, stdout_fd=slave, banner="on"))
    await _read_master(master, b"on\r\n")
    theirs.close()  # the connection drops
    reason = await session
    assert "ended" in reason
    assert termios.tcgetattr(slave) == before


async def test_a_failing_stream_and_a_cancelled_session_restore_the_terminal(pty):
    master, slave = pty
    before = termios.tcgetattr(slave)
    ours, theirs = socket.socketpair()
    stream = await PairStream(ours).open()
    stream.fail = OSError("tunnel broke")
    reason = await attach(stream, stdin_fd=slave, stdout_fd=slave)
    assert reason == "the console failed: tunnel broke"
    assert termios.tcgetattr(slave) == before

    ours, theirs2 = socket.socketpair()
    stream = await PairStream(ours).open()
    session = asyncio.create_task(attach(stream, stdin_fd=slave, stdout_fd=slave, banner="x"))
    await _read_master(master, b"x\r\n")
    assert termios.tcgetattr(slave) != before
    session.cancel()
    with pytest.raises(asyncio.CancelledError):
        await session
    assert termios.tcgetattr(slave) == before
    assert stream.closed
    theirs.close()
    theirs2.close()


SIGNALLED = r"""
import asyncio, socket, sys
sys.path.insert(0, {root!r})
from kerub_tui.core.terminal import attach

class Pair:
    description = "stand-in"
    def __init__(self, sock):
        self.sock = sock
    async def read(self):
        reader, self.writer = await asyncio.open_connection(sock=self.sock)
        while True:
            data = await reader.read(4096)
            if not data:
                return b""
    async def write(self, data):
        pass
    async def close(self):
        pass

async def main():
    ours, theirs = socket.socketpair()
    print(await attach(Pair(ours), banner="attached"))
    print("after the session")  # never: the signal ends the process once the terminal is back

asyncio.run(main())
"""


@pytest.mark.parametrize("signum", [15, 1])  # SIGTERM, SIGHUP
def test_a_signal_ends_the_session_restores_the_terminal_and_then_ends_the_process(pty, tmp_path, signum):
    import select
    import subprocess
    import sys
    from pathlib import Path

    master, slave = pty
    before = termios.tcgetattr(slave)
    script = tmp_path / "session.py"
    script.write_text(SIGNALLED.replace("{root!r}", repr(str(Path(__file__).resolve().parents[2]))))
    proc = subprocess.Popen([sys.executable, str(script)], stdin=slave, stdout=slave, stderr=slave)
    seen = b""
    while b"attached\r\n" not in seen:
        assert select.select([master], [], [], 60)[0], seen
        seen += os.read(master, 4096)
    assert termios.tcgetattr(slave) != before  # raw meanwhile
    proc.send_signal(signum)
    assert proc.wait(timeout=60) == -signum
    assert termios.tcgetattr(slave) == before
    while select.select([master], [], [], 0.5)[0]:
        seen += os.read(master, 4096)
    assert b"after the session" not in seen
