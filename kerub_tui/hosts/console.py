"""Graphical consoles: a VM's SPICE or VNC server, reached through the host's SSH connection, shown by
a viewer. (The serial console, in the terminal itself, is hosts/serial.py.)

The SPICE or VNC server of a kerub-tui domain (``VirtualMachine.graphics``) listens only on its host's
loopback, behind a password made fresh at each start of the VM. To show it:

1. the VM's host comes from its VirtualMachineDynamic; the port and password from the domain's
   live XML, read through the host's libvirt tunnel with VIR_DOMAIN_XML_SECURE (the password is
   never stored, logged or put in an error message);
2. an SSH local forward of the host's connection listens on an ephemeral port of this machine's
   127.0.0.1 and leads to the SPICE port on the host's loopback;
3. the viewer (``remote-viewer`` unless configured) gets a .vv connection file naming the protocol
   (``type=spice`` or ``type=vnc``: remote-viewer's vnc:// without the password on a command line)
   and the local end.
   remote-viewer reads that file by path (g_file_get_contents; there is no "read from stdin"
   argument, and /dev/stdin would be unlinked by delete-this-file), so it is a 0600 file in a 0700
   directory of the data dir, which the viewer deletes once read (delete-this-file=1) and which is
   removed here anyway when the viewer ends;
4. the forward lives as long as the viewer: it is closed when the viewer exits (or on close()).

Without a viewer binary or a display, :class:`NoViewer` says so and gives the ``ssh -L`` line that
does the same forward from the admin's own workstation; the password changes at each start of the
VM, so the .vv file with it (:func:`console_file`) is printed only on explicit request.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shlex
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from kerub_tui.core.models import Host, VirtualMachine, VirtualMachineDynamic, VmStatus
from kerub_tui.core.names import check_address, check_user

from . import kvm, spice
from .libvirt_link import socket_dir

log = logging.getLogger(__name__)

DEFAULT_VIEWER = "remote-viewer"


class ConsoleError(Exception):
    """The console cannot be opened; one line the admin can act on."""


class NoViewer(ConsoleError):
    """No viewer can be shown here (no binary, no display). ``ssh_command`` does the same forward from
    the admin's workstation; ``local_port`` is the port it listens on there."""

    def __init__(self, reason: str, target: ConsoleTarget) -> None:
        self.reason = reason
        self.target = target
        self.local_port = target.port
        self.ssh_command = ssh_forward_command(target.host, target.port, local_port=target.port,
                                               spice_address=target.address)
        super().__init__(
            f"{reason}. From a workstation with a viewer, forward the console with: {self.ssh_command} "
            f"and connect remote-viewer to {target.protocol}://127.0.0.1:{self.local_port}; the "
            f"{target.protocol.upper()} password changes at each start of {target.vm_name}: ask for the "
            "console file (.vv) explicitly to see it; without a display, kerub-tui console "
            f"{target.vm_name} --serial shows its serial console in this terminal"
        )


@dataclass(frozen=True)
class ConsoleTarget:
    """Where a running VM's SPICE or VNC server is: on ``host``, at ``address``:``port`` of the host's side."""

    vm_id: str
    vm_name: str
    host: Host
    address: str
    port: int
    protocol: str = "spice"  # or "vnc"


def _display_available(env: Mapping[str, str]) -> bool:
    if sys.platform in ("darwin", "win32"):
        return True  # the viewer draws without an X11/Wayland display there
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def viewer_argv(viewer: str | None) -> list[str]:
    """The viewer command (shell-like words, no shell involved), the .vv path is appended to it."""
    text = DEFAULT_VIEWER if viewer is None or not viewer.strip() else viewer
    if any(not c.isprintable() for c in text):
        raise ConsoleError("the viewer command must be one line without control characters")
    try:
        argv = shlex.split(text)
    except ValueError as error:
        raise ConsoleError(f"the viewer command {text!r} cannot be split into words: {error}") from None
    if not argv:
        raise ConsoleError("the viewer command is empty")
    return argv


def ssh_forward_command(host: Host, port: int, *, local_port: int | None = None,
                        spice_address: str = "127.0.0.1") -> str:
    """The OpenSSH command that forwards ``local_port`` of the workstation to the SPICE port on the host."""
    address = check_address(host.address)
    user = check_user(host.user)
    for value in (port, local_port or port):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise ValueError(f"{value!r} is not a TCP port")
    target = _forward_target(spice_address)
    if ":" in target:
        target = f"[{target}]"
    words = ["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{local_port or port}:{target}:{port}"]
    if host.port != 22:
        words += ["-p", str(int(host.port))]
    words.append(f"{user}@{address}")
    return shlex.join(words)


def _forward_target(listen: str | None) -> str:
    """The address to connect to on the host for a SPICE server listening on ``listen``."""
    if not listen:
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(listen)
    except ValueError:
        raise ConsoleError(f"the SPICE server listens on {listen!r}, not an IP address") from None
    if ip.is_unspecified:
        return "::1" if ip.version == 6 else "127.0.0.1"
    return str(ip)


# --- what and where -------------------------------------------------------------------------------


def console_vm(store: Any, vm_ref: str) -> tuple[VirtualMachine, VirtualMachineDynamic, Host]:
    """The VM (by id or name), its dynamic document and its host; ConsoleError if it is not running."""
    vm = store.get(VirtualMachine, vm_ref) or store.find_by_name(VirtualMachine, vm_ref)
    if vm is None:
        raise ConsoleError(f"no VM named {vm_ref!r}")
    dyn = store.get(VirtualMachineDynamic, vm.id)
    if dyn is None or dyn.host_id is None or dyn.status not in (VmStatus.up, VmStatus.paused, VmStatus.migrating):
        state = dyn.status.value if dyn is not None else "down"
        raise ConsoleError(f"VM {vm.name} is {state}: it has a console only while it runs")
    host = store.get(Host, dyn.host_id)
    if host is None:
        raise ConsoleError(f"VM {vm.name} runs on host {dyn.host_id}, which is not in the store any more")
    return vm, dyn, host


def _read_graphics(conn: Any, vm_id: str) -> tuple[str, str | None, int | None, str | None]:
    """(protocol, listen address, port, password) of the running domain's SPICE or VNC server, from its
    live XML (runs off the loop)."""
    try:
        dom = conn.lookupByUUIDString(kvm.domain_uuid(vm_id))
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return "spice", None, None, None
        raise
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return "spice", None, None, None
    graphics = next((g for g in root.findall("./devices/graphics") if g.get("type") in ("spice", "vnc")), None)
    if graphics is None:
        return "spice", None, None, None
    protocol = str(graphics.get("type"))
    port_text = graphics.get("port", "")
    port = int(port_text) if port_text.isdigit() and 0 < int(port_text) < 65536 else None
    listen = graphics.get("listen")
    element = graphics.find("./listen[@type='address']")
    if element is not None and element.get("address"):
        listen = element.get("address")
    return protocol, listen, port, graphics.get("passwd")


async def _spice_of(fleet: Any, vm: VirtualMachine, host: Host) -> tuple[ConsoleTarget, str]:
    try:
        protocol, listen, port, password = await fleet.libvirt(host.id, _read_graphics, vm.id, timeout=60, wait=10)
    except libvirt.libvirtError as error:
        raise ConsoleError(f"reading the console of {vm.name} on {host.name} failed: "
                           f"{(error.get_error_message() or str(error)).strip()}") from None
    except Exception as error:  # not connected, tunnel down, host not in the fleet
        raise ConsoleError(f"cannot reach libvirt on {host.name} for the console of {vm.name}: {error}") from None
    shown = protocol.upper()
    if port is None:
        raise ConsoleError(f"VM {vm.name} has no SPICE or VNC port on {host.name} (not running there)")
    if not password:
        raise ConsoleError(f"VM {vm.name} has a {shown} server without a password on {host.name}: refused")
    try:
        spice.check_spice_password(password)
    except ValueError:
        raise ConsoleError(f"VM {vm.name}: its {shown} password is not one kerub-tui set") from None
    return ConsoleTarget(vm.id, vm.name, host, _forward_target(listen), port, protocol), password


async def console_target(fleet: Any, store: Any, vm_ref: str) -> ConsoleTarget:
    """Where the VM's console is (no password): for the ``ssh -L`` line without opening anything."""
    vm, _dyn, host = console_vm(store, vm_ref)
    target, _password = await _spice_of(fleet, vm, host)
    return target


async def console_file(fleet: Any, store: Any, vm_ref: str, *, local_port: int | None = None) -> str:
    """The .vv text for a viewer on the admin's workstation, after ``ssh_forward_command`` there.
    It holds the SPICE password: print it only when the admin asked for it."""
    vm, _dyn, host = console_vm(store, vm_ref)
    target, password = await _spice_of(fleet, vm, host)
    return spice.vv_file("127.0.0.1", local_port or target.port, password, f"{vm.name} on {host.name}",
                         delete_this_file=False, protocol=target.protocol)


def write_console_file(directory: Path, text: str) -> Path:
    """Write a .vv file in ``directory`` (run/ of the data dir): 0600, a name no one else can have
    taken (mkstemp), starting with this process's pid, so the next controller removes it if this
    process is killed before it does (core.paths.clean_run_dir)."""
    fd, name = tempfile.mkstemp(prefix=f"{os.getpid()}.console-", suffix=".vv", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


# --- the session ----------------------------------------------------------------------------------


class ConsoleSession:
    """A viewer showing one VM's console through an SSH forward. ``await wait()`` until the viewer ends
    (the forward is then closed), or ``await close()`` to end both now."""

    def __init__(self, target: ConsoleTarget, argv: list[str], process: asyncio.subprocess.Process,
                 listener: Any, local_port: int, vv_path: Path) -> None:
        self.target = target
        self.argv = argv  # the viewer and the .vv path: no secret in it
        self.process = process
        self.local_port = local_port
        self._listener = listener
        self._vv_path = vv_path
        self._waiter = asyncio.get_running_loop().create_task(self._wait_and_release())

    @property
    def vm_name(self) -> str:
        return self.target.vm_name

    @property
    def host_name(self) -> str:
        return self.target.host.name

    @property
    def description(self) -> str:
        return (f"{self.target.protocol.upper()} console of {self.vm_name} on {self.host_name}: "
                f"{Path(self.argv[0]).name} through "
                f"127.0.0.1:{self.local_port} -> {self.host_name} {self.target.address}:{self.target.port}")

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @property
    def forwarding(self) -> bool:
        return self._listener is not None

    async def _wait_and_release(self) -> int:
        try:
            return await self.process.wait()
        finally:
            await self._release()

    async def _release(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.wait_closed(), 5)
        with contextlib.suppress(FileNotFoundError):
            self._vv_path.unlink()

    async def wait(self) -> int:
        """The viewer's exit status, once it has ended and the forward is closed."""
        return await asyncio.shield(self._waiter)

    async def close(self) -> None:
        """Stop the viewer (TERM, then KILL) and close the forward."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(self._waiter), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
        with contextlib.suppress(Exception):
            await asyncio.shield(self._waiter)
        await self._release()


async def open_console(fleet: Any, store: Any, vm_ref: str, *, viewer: str | None = None,
                       env: Mapping[str, str] | None = None) -> ConsoleSession:
    """Open the console of a running VM (by id or name) in a viewer; see the module's description.

    Raises NoViewer (with the ``ssh -L`` line) when no viewer can be shown here, ConsoleError when the
    console cannot be reached."""
    environment = dict(os.environ if env is None else env)
    argv = viewer_argv(viewer)
    vm, _dyn, host = console_vm(store, vm_ref)
    target, password = await _spice_of(fleet, vm, host)
    executable = shutil.which(argv[0], path=environment.get("PATH"))
    if executable is None:
        raise NoViewer(f"no viewer here: {argv[0]!r} is not installed or not on PATH", target)
    if not _display_available(environment):
        raise NoViewer("no display here (neither DISPLAY nor WAYLAND_DISPLAY is set)", target)

    try:
        conn = await fleet.connection(host.id).connection(wait=10)
        listener = await conn.forward_local_port("127.0.0.1", 0, target.address, target.port)
    except Exception as error:  # not connected, forwarding refused by sshd
        raise ConsoleError(f"cannot forward the console of {vm.name} through {host.name}'s SSH connection: "
                           f"{error}") from None
    local_port = listener.get_port()
    try:
        vv_path = write_console_file(socket_dir(fleet.data_dir),
                                     spice.vv_file("127.0.0.1", local_port, password, f"{vm.name} on {host.name}",
                                                   protocol=target.protocol))
    except BaseException:
        listener.close()
        raise
    try:
        full_argv = [executable, *argv[1:], str(vv_path)]
        # Nothing the viewer prints is shown, kept or logged: its lines can carry the SPICE URI and password.
        process = await asyncio.create_subprocess_exec(
            *full_argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, env=environment, start_new_session=True)
    except BaseException as error:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            vv_path.unlink()
        if isinstance(error, OSError):
            raise ConsoleError(f"cannot start the viewer {argv[0]!r}: {error.strerror or error}") from None
        raise
    session = ConsoleSession(target, full_argv, process, listener, local_port, vv_path)
    log.info("%s", session.description)
    return session


__all__ = ["ConsoleError", "ConsoleSession", "ConsoleTarget", "DEFAULT_VIEWER", "NoViewer", "console_file",
           "console_target", "console_vm", "open_console", "ssh_forward_command", "viewer_argv", "write_console_file"]
