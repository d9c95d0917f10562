"""A VM's serial console and its screen, read through the host's libvirt tunnel (ARCHITECTURE.md §6).

Both are libvirt streams on the host's one libvirt connection, itself tunnelled through the host's
one SSH connection: no port is opened, nothing runs on the host but libvirtd.

- :class:`SerialConsole`: ``virDomainOpenConsole`` on the domain's first console (its ``<serial
  type='pty'>``, which every kerub-tui domain has), as a non-blocking stream. libvirt tells when
  bytes arrive through a stream event callback, dispatched by libvirtaio on the loop; each read and
  write of the stream runs off the loop (a libvirt call on the loop would wait for bytes only the loop
  forwards). libvirt lets one console session hold a domain's console: another one is refused with
  one line, unless ``force`` takes it over (as ``virsh console --force``).
- :func:`screenshot`: ``virDomainScreenshot`` of the first screen: qemu answers with a PPM image.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import libvirt

from kerub_tui.core.models import Host, VirtualMachine

from . import kvm
from .libvirt_link import off_loop

log = logging.getLogger(__name__)

SCREENSHOT_LIMIT = 64 * 1024 * 1024  # a 4K screen in PPM is 25 MiB
_CHUNK = 64 * 1024
_EAGAIN = -2  # what a non-blocking virStream's recv/send return when they would block


class SerialError(Exception):
    """The serial console or the screen cannot be had; one line the admin can act on."""


def _message(error: BaseException) -> str:
    if isinstance(error, libvirt.libvirtError):
        return " ".join((error.get_error_message() or str(error)).split())
    return " ".join(str(error).split()) or type(error).__name__


def _domain(conn: Any, vm: VirtualMachine, host: Host) -> Any:
    try:
        return conn.lookupByUUIDString(kvm.domain_uuid(vm.id))
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise SerialError(f"VM {vm.name} does not run on {host.name} (libvirt there has no such domain)") from None
        raise


class SerialConsole:
    """The serial console of one running domain, both ways (a core.terminal.ByteStream).

    ``read()`` returns the guest's next bytes, b"" once the console has ended (the VM stopped, another
    session took the console over, the tunnel dropped); ``write()`` types into it, unless
    ``view_only``: then nothing is ever sent (read-only mode is enforced here, at the stream)."""

    def __init__(self, stream: Any, description: str, link_closed: asyncio.Event | None = None) -> None:
        self._stream = stream
        self._link_closed = link_closed  # the libvirt connection ended: no event comes any more
        self.description = description
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._ended = False
        self.end_reason: str | None = None
        self._closed = False
        self._watching = 0
        self.view_only = False

    @classmethod
    async def open(cls, fleet: Any, vm: VirtualMachine, host: Host, *, force: bool = False) -> SerialConsole:
        """Open the console of ``vm`` running on ``host`` (SerialError with the reason otherwise)."""

        def start(conn: Any) -> Any:
            dom = _domain(conn, vm, host)
            stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            flags = libvirt.VIR_DOMAIN_CONSOLE_SAFE | (libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0)
            try:
                dom.openConsole(None, stream, flags)
            except libvirt.libvirtError:
                with contextlib.suppress(libvirt.libvirtError):
                    stream.abort()
                raise
            return stream

        try:
            stream = await fleet.libvirt(host.id, start, timeout=60, wait=10)
        except SerialError:
            raise
        except libvirt.libvirtError as error:
            text = _message(error)
            if "active console session" in text.lower():
                raise SerialError(f"another session holds the serial console of {vm.name} "
                                  "(--force takes it over)") from None
            raise SerialError(f"the serial console of {vm.name} on {host.name}: {text}") from None
        except Exception as error:  # not connected, tunnel down, host not in the fleet
            raise SerialError(f"cannot reach libvirt on {host.name} for the serial console of {vm.name}: "
                              f"{_message(error)}") from None
        try:
            link = fleet.member(host.id).monitor.link
        except Exception:  # the stream is open: the link was there a moment ago; without it, no end watch
            link = None
        console = cls(stream, f"serial console of {vm.name} on {host.name} (libvirt stream through SSH)",
                      getattr(link, "closed", None))
        try:
            await console._watch(libvirt.VIR_STREAM_EVENT_READABLE)
        except BaseException:
            await console.close()
            raise
        return console

    # libvirt's stream callback, on the loop (libvirtaio): no RPC here, only wake the waiters.
    def _on_event(self, _stream: Any, events: int, _opaque: Any) -> None:
        if events & (libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
                     | libvirt.VIR_STREAM_EVENT_HANGUP):
            self._readable.set()
        if events & (libvirt.VIR_STREAM_EVENT_WRITABLE | libvirt.VIR_STREAM_EVENT_ERROR
                     | libvirt.VIR_STREAM_EVENT_HANGUP):
            self._writable.set()

    async def _watch(self, events: int) -> None:
        events |= libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP
        if self._watching:
            await off_loop(self._stream.eventUpdateCallback, events, timeout=30)
        else:
            await off_loop(self._stream.eventAddCallback, events, self._on_event, None, timeout=30)
        self._watching = events

    def _end(self, reason: str) -> bytes:
        self._ended = True
        if self.end_reason is None:
            self.end_reason = reason
        return b""

    async def read(self) -> bytes:
        while not self._ended and not self._closed:
            self._readable.clear()
            try:
                data = await off_loop(self._stream.recv, _CHUNK, timeout=60)
            except (libvirt.libvirtError, TimeoutError) as error:
                return self._end(_message(error) if isinstance(error, libvirt.libvirtError) else "timed out")
            if isinstance(data, bytes):
                return data if data else self._end("the console was closed by the host")
            if data != _EAGAIN:
                return self._end(f"the stream failed (code {data})")
            await self._wait(self._readable)
        return b""

    async def write(self, data: bytes) -> None:
        if self.view_only:
            return
        view = memoryview(bytes(data))
        while view and not self._ended and not self._closed:
            self._writable.clear()
            try:
                sent = await off_loop(self._stream.send, bytes(view), timeout=60)
            except (libvirt.libvirtError, TimeoutError) as error:
                self._end(_message(error) if isinstance(error, libvirt.libvirtError) else "timed out")
                return
            if sent == _EAGAIN:  # the stream is full: wait until libvirt says it takes more
                await self._watch(libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_WRITABLE)
                try:
                    await self._wait(self._writable)
                finally:
                    await self._watch(libvirt.VIR_STREAM_EVENT_READABLE)
                continue
            if sent < 0:
                self._end(f"the stream failed (code {sent})")
                return
            view = view[sent:]

    async def _wait(self, event: asyncio.Event) -> None:
        """Until ``event`` or the end of the libvirt connection (then read/write find the stream dead)."""
        if self._link_closed is None:
            await event.wait()
            return
        if self._link_closed.is_set():
            self._end("the connection to the host dropped")
            return
        waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._link_closed.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self._link_closed.is_set():
            self._end("the connection to the host dropped")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._readable.set()
        stream = self._stream
        with contextlib.suppress(Exception):
            if self._watching:
                await off_loop(stream.eventRemoveCallback, timeout=10)
        with contextlib.suppress(Exception):
            await off_loop(stream.abort if self._ended else stream.finish, timeout=10)


async def screenshot(fleet: Any, vm: VirtualMachine, host: Host) -> tuple[str, bytes]:
    """The first screen of ``vm`` on ``host``: (MIME type libvirt named, the image's bytes)."""

    def take(conn: Any) -> tuple[str, bytes]:
        dom = _domain(conn, vm, host)
        stream = conn.newStream(0)
        try:
            mime = dom.screenshot(stream, 0)
            chunks: list[bytes] = []
            size = 0
            while True:
                data = stream.recv(_CHUNK)
                if not isinstance(data, bytes) or not data:
                    break
                size += len(data)
                if size > SCREENSHOT_LIMIT:
                    raise SerialError(f"the screen of {vm.name} is larger than {SCREENSHOT_LIMIT >> 20} MiB: refused")
                chunks.append(data)
            stream.finish()
            return str(mime or "application/octet-stream"), b"".join(chunks)
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise

    try:
        return await fleet.libvirt(host.id, take, timeout=120, wait=10)
    except SerialError:
        raise
    except libvirt.libvirtError as error:
        raise SerialError(f"the screen of {vm.name} on {host.name}: {_message(error)}") from None
    except Exception as error:
        raise SerialError(f"cannot reach libvirt on {host.name} for the screen of {vm.name}: "
                          f"{_message(error)}") from None


__all__ = ["SCREENSHOT_LIMIT", "SerialConsole", "SerialError", "screenshot"]
