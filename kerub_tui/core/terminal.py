"""The terminal attached to a byte stream: a VM's serial console in the admin's own terminal.

:func:`attach` puts the terminal in raw mode (every key goes to the guest, ctrl+c included), copies
the stream's bytes to the terminal and the terminal's keys to the stream until ``ctrl+]`` (the
escape byte 0x1d, as telnet and ``virsh console``), the end of the stream (the guest stopped, the
connection dropped), SIGTERM or SIGHUP. The terminal's modes are restored on every way out,
exceptions included (try/finally around termios); a signal is raised again once they are, so the
process ends as it would have without the session (a console that was suspended for it too). View-only:
keys are read and dropped, only the escape key acts.

The stream is anything with ``read``/``write``/``close`` (:class:`ByteStream`): the libvirt console
stream of a host (hosts/serial.py) or its relay through the control socket (control.py). This
module knows neither: it is the console's and the command line's side only (stdlib, no project imports).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import termios
import tty
from typing import Any, Protocol

ESCAPE = b"\x1d"  # ctrl+]
ESCAPE_NAME = "ctrl+]"


class ByteStream(Protocol):
    """Both ways of one console: ``read`` returns b"" at its end; ``write`` sends keys."""

    description: str

    async def read(self) -> bytes: ...
    async def write(self, data: bytes) -> None: ...
    async def close(self) -> None: ...


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            continue
        view = view[written:]


async def attach(stream: ByteStream, *, stdin_fd: int = 0, stdout_fd: int = 1, view_only: bool = False,
                 banner: str | None = None) -> str:
    """Attach the terminal to ``stream`` until the admin leaves or the stream ends; why it ended.

    The stream is closed on the way out; the terminal's modes are as they were before, whatever
    happened (an exception is raised only after they are restored)."""
    loop = asyncio.get_running_loop()
    saved: list[Any] | None = None
    if os.isatty(stdin_fd):
        saved = termios.tcgetattr(stdin_fd)
    done: asyncio.Future[str] = loop.create_future()

    ended_by: list[signal.Signals] = []

    def finish(reason: str) -> None:
        if not done.done():
            done.set_result(reason)

    def on_signal(sig: signal.Signals) -> None:
        ended_by.append(sig)
        finish(f"ended by signal {sig.name}")

    keys: asyncio.Queue[bytes] = asyncio.Queue()

    def on_input() -> None:
        try:
            data = os.read(stdin_fd, 4096)
        except BlockingIOError:
            return
        except OSError as error:
            finish(f"the terminal went away ({error.strerror or error})")
            return
        if not data:
            finish("the terminal's input ended")
            return
        before, escape, _after = data.partition(ESCAPE)
        if before and not view_only:
            keys.put_nowait(before)
        if escape:
            finish(f"left with {ESCAPE_NAME}")

    async def pump_out() -> None:
        while True:
            data = await stream.read()
            if not data:
                finish("the console stream ended (the VM stopped or the connection dropped)")
                return
            _write_all(stdout_fd, data)

    async def pump_in() -> None:
        while True:
            data = await keys.get()
            await stream.write(data)

    def say(text: str) -> None:
        with contextlib.suppress(OSError):
            _write_all(stdout_fd, (text + "\r\n").encode(errors="replace"))

    tasks: list[asyncio.Task[None]] = []
    signals: list[int] = []
    try:
        # the signals first: from raw mode on, a signal ends the session (the terminal restored) first
        for sig in (signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # not the main thread
                loop.add_signal_handler(sig, on_signal, sig)
                signals.append(sig)
        if saved is not None:
            tty.setraw(stdin_fd, termios.TCSANOW)
        if banner:
            say(banner)
        loop.add_reader(stdin_fd, on_input)
        tasks = [loop.create_task(pump_out()), loop.create_task(pump_in())]

        def failed(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                finish(f"the console failed: {task.exception()}")

        for task in tasks:
            task.add_done_callback(failed)
        reason = await done
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(stdin_fd)
        for signum in signals:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if saved is not None:
            # TCSAFLUSH would drop keys typed meanwhile; TCSADRAIN lets the guest's last bytes out first.
            with contextlib.suppress(termios.error):
                termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
        with contextlib.suppress(Exception):
            await stream.close()
    if ended_by:  # the terminal is as it was: now the signal does what it would have done
        signal.raise_signal(ended_by[0])
    return reason


__all__ = ["ESCAPE", "ESCAPE_NAME", "ByteStream", "attach"]
