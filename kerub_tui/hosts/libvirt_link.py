"""libvirt on a host, through its SSH connection (ARCHITECTURE.md §6): no libvirt port open, no agent.

``LibvirtLink`` forwards a local unix socket (in a 0700 directory under the data dir) to the host's
``/run/libvirt/libvirt-sock`` over the host's one SSH connection, and opens
``qemu+unix:///system?socket=LOCAL`` on it. The asyncio loop serves that tunnel, so every libvirt
call runs off the loop, in a thread of this module's executor (``call``): a blocking libvirt call on
the loop would wait for bytes only the loop can forward. libvirt's own events are dispatched by
libvirtaio on the loop; the callbacks here only read what the event carries and schedule work.

Domains map to VirtualMachine documents by UUID (the domain UUID is the VM id). What to do with
domains kerub-tui did not create is the caller's decision (see monitor.py); this module reports all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import enum
import functools
import itertools
import logging
import os
import tempfile
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import libvirt

from kerub_tui.core.logs import bind_host
from kerub_tui.core.models import VmStatus
from kerub_tui.core.paths import RUN_DIR, run_dir
from kerub_tui.ssh import HostConnection, SshError
from kerub_tui.ssh.keys import describe_error

log = logging.getLogger(__name__)

T = TypeVar("T")

REMOTE_SOCKET = "/run/libvirt/libvirt-sock"
OPEN_GIVE_UP = 10.0  # seconds close() waits for a libvirt.open it gave up on (its tunnel answers or closes)
SOCKET_DIR = RUN_DIR  # under the data dir, 0700
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes; keep a margin
_CALL_TIMEOUT = 120.0


class LibvirtUnavailable(SshError):
    """libvirt could not be reached on the host (no libvirtd, no socket, tunnel down)."""


# --- one event loop implementation and one executor per process ---------------------------------

_impl_lock = threading.Lock()
_socket_numbers = itertools.count(1)
_impl: Any = None
_executor: concurrent.futures.ThreadPoolExecutor | None = None


def ensure_event_loop_impl() -> None:
    """Register libvirtaio on the running loop, once per process (libvirt allows one registration).

    libvirt keeps the first implementation for the life of the process. When that loop has been
    closed (a later asyncio.run, a test harness), the same implementation is pointed at the running
    loop; its handles died with the old loop together with every connection that used them.
    """
    global _impl
    import libvirtaio

    loop = asyncio.get_running_loop()
    with _impl_lock:
        if _impl is None:
            # Errors come back as exceptions; libvirt's default handler would also print them.
            libvirt.registerErrorHandler(lambda _ctx, _error: None, None)
            _impl = libvirtaio.virEventRegisterAsyncIOImpl(loop=loop)
        elif _impl.loop is not loop:
            if not _impl.loop.is_closed():
                raise RuntimeError("libvirt events already run on another live event loop in this process")
            _impl.loop = loop
            _impl.callbacks.clear()


def _libvirt_executor() -> concurrent.futures.ThreadPoolExecutor:
    # Its own pool: a call waiting on a dead host must not starve asyncio's default executor.
    global _executor
    with _impl_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="libvirt")
        return _executor


async def off_loop(fn: Callable[..., T], *args: Any, timeout: float | None = _CALL_TIMEOUT, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a libvirt thread; the loop keeps serving tunnels meanwhile."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(_libvirt_executor(), functools.partial(fn, *args, **kwargs))
    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that races with
    # the result, and a monitor being stopped would then carry on.
    async with asyncio.timeout(timeout):
        return await future


# --- domain state -------------------------------------------------------------------------------


class DomainEvent(str, enum.Enum):
    sync = "sync"  # read on (re)connect, not pushed
    defined = "defined"
    undefined = "undefined"
    started = "started"
    suspended = "suspended"
    resumed = "resumed"
    stopped = "stopped"
    shutdown = "shutdown"
    pmsuspended = "pmsuspended"
    crashed = "crashed"


_EVENTS = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: DomainEvent.defined,
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: DomainEvent.undefined,
    libvirt.VIR_DOMAIN_EVENT_STARTED: DomainEvent.started,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: DomainEvent.suspended,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: DomainEvent.resumed,
    libvirt.VIR_DOMAIN_EVENT_STOPPED: DomainEvent.stopped,
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: DomainEvent.shutdown,
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: DomainEvent.pmsuspended,
    libvirt.VIR_DOMAIN_EVENT_CRASHED: DomainEvent.crashed,
}

_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: VmStatus.up,
    libvirt.VIR_DOMAIN_BLOCKED: VmStatus.up,
    libvirt.VIR_DOMAIN_SHUTDOWN: VmStatus.up,  # shutting down: still running until it is off
    libvirt.VIR_DOMAIN_PAUSED: VmStatus.paused,
    libvirt.VIR_DOMAIN_PMSUSPENDED: VmStatus.paused,
    libvirt.VIR_DOMAIN_SHUTOFF: VmStatus.down,
    libvirt.VIR_DOMAIN_CRASHED: VmStatus.down,
    libvirt.VIR_DOMAIN_NOSTATE: VmStatus.down,
}


@dataclass(frozen=True)
class DomainState:
    """What the host's libvirt says about one domain."""

    uuid: str
    name: str
    event: DomainEvent
    status: VmStatus | None  # None: the domain no longer exists on this host
    migrating: bool = False  # the event is part of a live migration (in or out)
    spice_address: str | None = None
    spice_port: int | None = None
    memory_max: int | None = None  # bytes, from the domain's configuration
    vnc_address: str | None = None  # a VNC domain's server, as SPICE's
    vnc_port: int | None = None


def status_of_event(event: DomainEvent, detail: int) -> tuple[VmStatus | None, bool]:
    """The status an event leaves the domain in, and whether it belongs to a migration."""
    migrated = {
        DomainEvent.started: libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED,
        DomainEvent.suspended: libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED,
        DomainEvent.resumed: libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED,
        DomainEvent.stopped: libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED,
    }.get(event)
    migrating = migrated is not None and detail == migrated
    status: VmStatus | None
    if event in (DomainEvent.started, DomainEvent.resumed):
        status = VmStatus.up
    elif event in (DomainEvent.suspended, DomainEvent.pmsuspended):
        status = VmStatus.migrating if migrating else VmStatus.paused
    elif event in (DomainEvent.stopped, DomainEvent.crashed, DomainEvent.defined):
        status = VmStatus.down
    elif event is DomainEvent.undefined:
        status = None
    else:  # shutdown: the guest is shutting down, still there until "stopped"
        status = VmStatus.up
    return status, migrating


def spice_of(domain_xml: str) -> tuple[str | None, int | None]:
    """SPICE listen address and port of a running domain's XML (None, None when it has none)."""
    return graphics_of(domain_xml, "spice")


def graphics_of(domain_xml: str, protocol: str) -> tuple[str | None, int | None]:
    """The listen address and port of a running domain's ``protocol`` ("spice", "vnc") server, from its
    XML (None, None when it has none)."""
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return None, None
    for graphics in root.findall("devices/graphics"):
        if graphics.get("type") != protocol:
            continue
        port_text = graphics.get("port") or ""
        port = int(port_text) if port_text.isdigit() and 0 < int(port_text) < 65536 else None
        listen = graphics.get("listen")
        for item in graphics.findall("listen"):
            listen = item.get("address") or listen
        return listen, port
    return None, None


def _read_domain(dom: Any, event: DomainEvent, migrating: bool = False) -> DomainState:
    """The full state of one domain (RPCs: run off the loop)."""
    uuid, name = dom.UUIDString(), dom.name()
    try:
        state, _reason = dom.state()
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return DomainState(uuid, name, DomainEvent.undefined, None)
        raise
    status = _STATES.get(state, VmStatus.down)
    if migrating and status is VmStatus.paused:
        status = VmStatus.migrating
    spice_address = spice_port = vnc_address = vnc_port = None
    memory_max = None
    if status is not VmStatus.down:
        with contextlib.suppress(libvirt.libvirtError):
            xml = dom.XMLDesc(0)
            spice_address, spice_port = spice_of(xml)
            vnc_address, vnc_port = graphics_of(xml, "vnc")
    with contextlib.suppress(libvirt.libvirtError):
        memory_max = int(dom.maxMemory()) * 1024
    return DomainState(uuid, name, event, status, migrating, spice_address, spice_port, memory_max,
                       vnc_address, vnc_port)


# --- the link -------------------------------------------------------------------------------------


def socket_dir(data_dir: Path) -> Path:
    """The 0700 directory for local tunnel sockets (names start with this process's pid, see
    core.paths.run_dir); a private temporary one if the data dir's path is too long for a unix
    socket address."""
    wanted = Path(data_dir) / SOCKET_DIR
    if len(str(wanted)) + 24 <= _MAX_SOCKET_PATH:
        return run_dir(wanted.parent)
    return Path(tempfile.mkdtemp(prefix="kerub-tui-"))  # mkdtemp makes it 0700


async def _end_tasks(tasks: set[asyncio.Task[None]]) -> None:
    """Cancel the tasks and wait until each has ended."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class LibvirtLink:
    """One libvirt connection to one host, over its SSH connection. ``await open()``, ``await close()``.

    ``on_domain`` receives a DomainState for every lifecycle event (and for every domain on
    ``sync()``), on the loop. ``closed`` is set when the libvirt connection ends (tunnel dropped,
    libvirtd stopped, or close()).
    """

    def __init__(
        self,
        name: str,
        host: HostConnection,
        sockets: Path,
        on_domain: Callable[[DomainState], None] | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.sockets = sockets
        self.on_domain = on_domain
        self.conn: libvirt.virConnect | None = None
        self.closed = asyncio.Event()
        self.close_reason: str | None = None
        self._listener: Any = None
        self._path: Path | None = None
        self._callback_id: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._events_seen: dict[str, int] = {}  # per domain UUID: events received so far
        self._opening: asyncio.Future[Any] | None = None  # libvirt.open, until its thread ends

    @property
    def is_open(self) -> bool:
        return self.conn is not None and not self.closed.is_set()

    async def open(self) -> None:
        ensure_event_loop_impl()
        self._loop = asyncio.get_running_loop()
        self.closed.clear()
        self.close_reason = None
        path = self.sockets / f"{os.getpid()}.{next(_socket_numbers)}.sock"
        path.unlink(missing_ok=True)
        # Known before the forward exists: a stop that cancels us mid-way still removes the socket file.
        self._path = path
        try:
            self._listener = await self.host.forward_local_path(str(path), REMOTE_SOCKET)
        except asyncio.CancelledError:
            self._drop_tunnel_now()
            raise
        except Exception as error:  # OSError, SshError, asyncssh.Error and friends
            self._drop_tunnel_now()
            raise LibvirtUnavailable(
                f"{self.name}: cannot forward the libvirt socket: {describe_error(error)}"
            ) from None
        os.chmod(path, 0o600)
        uri = f"qemu+unix:///system?socket={path}"
        # Kept until the thread has ended: a cancelled or timed-out await leaves libvirt.open running,
        # waiting for an answer only the tunnel (served by this loop) brings; close() waits for it.
        self._opening = asyncio.wrap_future(_libvirt_executor().submit(libvirt.open, uri))
        self._opening.add_done_callback(_retrieve)  # also when nobody awaits it any more
        try:
            async with asyncio.timeout(60):
                conn = await asyncio.shield(self._opening)
            self._opening = None
        except (libvirt.libvirtError, TimeoutError) as error:
            await self._release_tunnel()
            raise LibvirtUnavailable(
                f"{self.name}: libvirt did not answer through the tunnel: {_libvirt_message(error)}"
            ) from None
        except BaseException:  # cancelled by a stop while libvirt was connecting
            self._drop_tunnel_now()
            raise
        self.conn = conn
        try:
            await off_loop(conn.registerCloseCallback, self._on_close, None)
            self._callback_id = await off_loop(
                conn.domainEventRegisterAny, None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
            )
        except (libvirt.libvirtError, TimeoutError) as error:
            await self.close()
            raise LibvirtUnavailable(f"{self.name}: libvirt events unavailable: {_libvirt_message(error)}") from None
        except BaseException:  # cancelled while registering: the connection and the tunnel go with it
            await asyncio.shield(self.close())
            raise

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        # Domain reads still pending hold domain objects, and each holds the connection: its last
        # reference, dropped on the loop after conn.close, would dispose the connection there, a remote
        # call whose answer this blocked loop must carry through the tunnel (a hang for good). So they
        # end, and drop theirs, while the connection is still open (in a function of its own: no local
        # of this frame keeps a task, its exception's traceback and that frame's domain object alive).
        await _end_tasks(self._tasks)
        await self._end_opening()
        if conn is not None:
            with contextlib.suppress(Exception):
                if self._callback_id is not None:
                    await off_loop(conn.domainEventDeregisterAny, self._callback_id, timeout=10)
            with contextlib.suppress(Exception):
                await off_loop(conn.unregisterCloseCallback, timeout=10)
            with contextlib.suppress(Exception):
                await off_loop(conn.close, timeout=10)
        self._callback_id = None
        await self._release_tunnel()
        if self.close_reason is None:
            self.close_reason = "closed"
        self.closed.set()

    async def _end_opening(self) -> None:
        """Wait (a while) for a libvirt.open given up on, and close what it opened: a thread left
        waiting in it once this loop stops would wait for good, and hold the process's exit."""
        opening, self._opening = self._opening, None
        if opening is None:
            return
        if not opening.done():
            await asyncio.wait({opening}, timeout=OPEN_GIVE_UP)
        if opening.done() and not opening.cancelled() and opening.exception() is None:
            with contextlib.suppress(Exception):
                await off_loop(opening.result().close, timeout=10)

    def _drop_tunnel_now(self) -> None:
        """Close the forward and remove its socket file without awaiting (we may be cancelled)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        path, self._path = self._path, None
        if path is not None:
            path.unlink(missing_ok=True)

    async def _release_tunnel(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await listener.wait_closed()
        path, self._path = self._path, None
        if path is not None:
            path.unlink(missing_ok=True)

    async def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = _CALL_TIMEOUT, **kwargs: Any) -> T:
        """``fn(virConnect, *args, **kwargs)`` off the loop."""
        conn = self.conn
        if conn is None or self.closed.is_set():
            raise LibvirtUnavailable(f"{self.name}: libvirt is not connected ({self.close_reason or 'not open'})")
        return await off_loop(fn, conn, *args, timeout=timeout, **kwargs)

    async def sync(self) -> list[DomainState]:
        """Every domain on the host now (active or defined), as DomainState(event=sync)."""

        def read_all(conn: libvirt.virConnect) -> list[DomainState]:
            states = []
            for dom in conn.listAllDomains(0):
                with contextlib.suppress(libvirt.libvirtError):
                    states.append(_read_domain(dom, DomainEvent.sync))
            return states

        return await self.call(read_all)

    # --- callbacks: on the loop (libvirtaio); no RPC here ------------------------------------

    def _on_close(self, conn: Any, reason: int, opaque: Any) -> None:
        reasons = {
            libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error",
            libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "end of file (tunnel or libvirtd gone)",
            libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
            libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by the client",
        }
        self.close_reason = reasons.get(reason, f"reason {reason}")
        self._call_soon(self.closed.set)

    def _on_lifecycle(self, conn: Any, dom: Any, event: int, detail: int, opaque: Any) -> None:
        kind = _EVENTS.get(event)
        if kind is None:
            return
        try:
            uuid, name = dom.UUIDString(), dom.name()  # held by the domain object: no RPC
        except libvirt.libvirtError:
            return
        status, migrating = status_of_event(kind, detail)
        seq = self._events_seen[uuid] = self._events_seen.get(uuid, 0) + 1
        immediate = DomainState(uuid, name, kind, status, migrating)
        self._call_soon(self._emit, immediate)
        if kind in (DomainEvent.started, DomainEvent.resumed, DomainEvent.suspended, DomainEvent.pmsuspended):
            # The details (SPICE port, memory) need RPCs: read them off the loop, then report again.
            self._call_soon(self._spawn, self._refresh(dom, kind, migrating, seq))

    def _call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn(*args)
        else:
            loop.call_soon_threadsafe(fn, *args)

    def _spawn(self, coro: Any) -> None:
        if self.conn is None:  # closing: its domain object goes now, while the connection is open
            coro.close()
            return
        context = contextvars.copy_context()
        context.run(bind_host, self.name)  # libvirt's callbacks come from no task of this host's
        task = asyncio.get_running_loop().create_task(coro, context=context)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(self, dom: Any, event: DomainEvent, migrating: bool, seq: int) -> None:
        try:
            state = await off_loop(_read_domain, dom, event, migrating, timeout=30)
        except (libvirt.libvirtError, TimeoutError):
            return
        if self._events_seen.get(state.uuid) == seq:  # no newer event overtook this read
            self._emit(state)

    def _emit(self, state: DomainState) -> None:
        if self.on_domain is not None:
            try:
                self.on_domain(state)
            except Exception:
                log.exception("%s: domain callback failed", self.name)


def _libvirt_message(error: BaseException) -> str:
    if isinstance(error, libvirt.libvirtError):
        return (error.get_error_message() or str(error)).strip()
    if isinstance(error, TimeoutError):
        return "timed out"
    return describe_error(error)
