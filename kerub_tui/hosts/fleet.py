"""The fleet: every accepted host connected, discovered and monitored. What the controller uses.

    fleet = Fleet(store, data_dir)
    await fleet.start()                                   # connect every accepted Host in the store
    key_line, fp = await fleet.fetch_host_key("10.0.0.5") # show fp to the admin; nothing runs there
    host = await fleet.add_host("kvm1", "10.0.0.5", accepted_fingerprint=fp)
    result = await fleet.run(host.id, "lvs --reportformat json")
    xml = await fleet.libvirt(host.id, lambda conn: conn.getCapabilities())
    await fleet.stop()

Trust: a Host is stored only with an accepted host key, and every connection pins that key. A
mismatch refuses the connection before authentication (nothing is sent, nothing runs), marks the
host key-mismatch in HostDynamic and raises an Event; ``accept_host_key`` re-accepts after the
admin checked the new fingerprint out of band.

All store writes happen on the loop thread (the store is not thread-safe): state callbacks and
libvirt events arrive there, monitors write through one coalescing DocumentWriter.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
from asyncssh.config import SSHClientConfig

from kerub_tui.core.logs import host_context
from kerub_tui.core.models import (
    Event,
    EventSeverity,
    Host,
    HostCapabilities,
    HostDynamic,
    HostStatus,
    utcnow,
)
from kerub_tui.core.names import InvalidName, check_address, check_name, check_user
from kerub_tui.core.store import Store, StoreWriteError
from kerub_tui.core.text import printable
from kerub_tui.ssh import (
    CommandResult,
    ConnectGate,
    Endpoint,
    HostConnection,
    HostKeyMismatch,
    HostUnreachable,
    NotConnected,
    SshError,
    SshSettings,
    fetch_host_key,
    load_or_create_client_key,
    open_connection,
    password_connection,
    public_key_line,
)
from kerub_tui.ssh import fingerprint as fingerprint_of_key

from . import facts, trust
from .discovery import Discovery, LinkSource, discover
from .libvirt_link import LibvirtLink, LibvirtUnavailable, ensure_event_loop_impl, socket_dir
from .monitor import DocumentWriter, HostMonitor, MonitorSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_USER = "root"
DEFAULT_PORT = 22


class FleetError(Exception):
    """A fleet action refused, with one line the admin can act on."""


class FingerprintMismatch(FleetError):
    def __init__(self, address: str, accepted: str, offered: str) -> None:
        self.accepted = accepted
        self.offered = offered
        super().__init__(
            f"{address} offers host key {offered}, not the accepted {accepted}: refused, nothing was run there"
        )


class FingerprintRequired(FleetError):
    """Raised by add_host without an accepted fingerprint: show it, ask, call again with it."""

    def __init__(self, address: str, key_line: str, fingerprint: str) -> None:
        self.key_line = key_line
        self.fingerprint = fingerprint
        super().__init__(
            f"{address} offers host key {fingerprint}; check it out of band and accept it to add the host"
        )


_FINGERPRINT_RE = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


def check_fingerprint(text: str) -> str:
    """A SHA256 fingerprint as ``ssh-keygen -lf`` prints it (``SHA256:`` + 43 base64 characters)."""
    if not isinstance(text, str) or not _FINGERPRINT_RE.fullmatch(text.strip()):
        shown = printable(str(text), limit=80)
        raise FleetError(f"{shown!r} is not a SHA256 fingerprint (SHA256: and 43 characters, "
                         "as ssh-keygen -lf prints it)")
    return text.strip()


StatusCallback = Callable[[str, HostStatus, "str | None"], None]


def status_event(host_id: str, name: str, status: HostStatus, reason: str | None, *,
                 offered_key: str | None = None) -> Event | None:
    """The Event for a host's connection changing to ``status`` (None for connecting)."""
    if status is HostStatus.up:
        return Event(type="host-up", host_id=host_id, message=f"{name} is up")
    if status is HostStatus.down:
        return Event(type="host-down", severity=EventSeverity.warning, host_id=host_id,
                     message=f"{name} is down: {reason}")
    if status is HostStatus.unreachable:
        return Event(type="host-unreachable", severity=EventSeverity.warning, host_id=host_id,
                     message=f"{name} is unreachable: {reason}")
    if status is HostStatus.key_mismatch:
        how = (f"; once checked: kerub-tui host rekey {name} --accept-fingerprint {offered_key} "
               "(or K on the host in the console)") if offered_key else ""
        return Event(type="key-mismatch", severity=EventSeverity.error, host_id=host_id, target=offered_key,
                     message=f"{name}: {reason}{how}")
    return None


def stale_event(before: Host, after: HostCapabilities) -> Event | None:
    """The Event for a discovery that changed which facts of a host are stale (None if nothing did)."""
    was = {s.section for s in before.capabilities.stale} if before.capabilities is not None else set()
    now = {s.section for s in after.stale}
    if now == was:
        return None
    if not now:
        return Event(type="facts-current", host_id=before.id,
                     message=f"{before.name}: every fact was read again ({', '.join(sorted(was))} had been stale)")
    message = (f"{before.name}: discovery could not read {', '.join(sorted(now))}: the last good facts are kept "
               f"and the host takes no new guests until they are read again (once fixed: kerub-tui host rediscover "
               f"{before.name}, or R on the host in the console). {facts.stale_summary(after)}")
    return Event(type="facts-stale", severity=EventSeverity.warning, host_id=before.id,
                 target=",".join(sorted(now)), message=message[:2000])


def unusable_storage_events(before: Host, after: HostCapabilities) -> list[Event]:
    """An Event for each storage discovery found whose name kerub-tui puts in no command (a VG named
    ``vg0;x``): it takes no new disks, and the admin is told once, when it appears (hosts/storage_names.py)."""
    from .storage_names import capability_refusal

    known = {(s.id, s.name) for s in before.capabilities.storage} if before.capabilities is not None else set()
    events = []
    for storage in after.storage:
        if (storage.id, storage.name) in known:
            continue
        unusable = capability_refusal(storage.technology, storage.name)
        if unusable is not None:
            events.append(Event(type="storage-unusable", severity=EventSeverity.warning, host_id=before.id,
                                target=storage.id[:200], message=printable(
                                    f"{before.name}: storage {storage.id} takes no new disks: {unusable}",
                                    limit=2000)))
    return events


@dataclass
class _Member:
    host_id: str
    connection: HostConnection
    monitor: HostMonitor | None
    discovered: asyncio.Event = field(default_factory=asyncio.Event)
    last_discovery: Discovery | None = None
    discovery_error: str | None = None
    discovery_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def ssh_config_value(address: str, option: str, config: tuple[str, ...] | None) -> Any:
    """What the ssh config files say for ``address`` (an alias or a name), as OpenSSH reads them."""
    if config is None:
        default = Path("~", ".ssh", "config").expanduser()
        paths: list[Path | str] = [default] if os.access(default, os.R_OK) else []
    else:
        paths = list(config)
    try:
        local_user = getpass.getuser()
    except Exception:
        local_user = str(os.getuid())
    loaded = SSHClientConfig.load(None, paths, False, False, False, local_user, (), address, ())
    return loaded.get(option)


class Fleet:
    """Connections, discovery and monitors of every accepted host in ``store``."""

    def __init__(
        self,
        store: Store,
        data_dir: Path | str,
        *,
        ssh_settings: SshSettings | None = None,
        monitor_settings: MonitorSettings | None = None,
        monitoring: bool = True,  # False: connect, discover, keep libvirt open; no streams
        write_interval: float = 1.0,
        on_status: StatusCallback | None = None,
    ) -> None:
        self.store = store
        self.data_dir = Path(data_dir)
        self.ssh_settings = ssh_settings or SshSettings()
        self.monitor_settings = monitor_settings or MonitorSettings()
        self.monitoring = monitoring
        self.write_interval = write_interval
        self.gate = ConnectGate(self.ssh_settings.max_handshakes)
        self._listeners: list[StatusCallback] = [on_status] if on_status else []
        self._members: dict[str, _Member] = {}
        self._client_key: asyncssh.SSHKey | None = None
        self._writer: DocumentWriter | None = None
        self._sockets: Path | None = None
        self.started = False

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def client_key(self) -> asyncssh.SSHKey:
        if self._client_key is None:
            self._client_key = load_or_create_client_key(self.data_dir)
        return self._client_key

    @property
    def client_public_key(self) -> str:
        """The controller's public key line, for the admin to install on hosts."""
        return public_key_line(self.client_key, "kerub-tui")

    @property
    def writer(self) -> DocumentWriter:
        if self._writer is None:
            self._writer = DocumentWriter(self.store, self.write_interval)
        return self._writer

    async def start(self) -> None:
        """Connect (and then keep connected and monitored) every Host with an accepted key."""
        if self.started:
            return
        self.started = True
        self._socket_dir()
        _ = self.client_key
        for host in self.store.list(Host):
            if host.host_key and not host.simulated:  # simulated hosts are kerub_tui.sim's
                self._attach(host)

    async def stop(self) -> None:
        members, self._members = list(self._members.values()), {}
        await asyncio.gather(*(self._detach(m) for m in members), return_exceptions=True)
        if self._writer is not None:
            self._writer.close()
        self.started = False

    def add_listener(self, callback: StatusCallback) -> Callable[[], None]:
        """``callback(host_id, status, reason)`` on every connection state change. Returns a remover."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    # --- members ----------------------------------------------------------------------------

    def _endpoint(self, host: Host) -> Endpoint:
        if not host.host_key:
            raise FleetError(f"host {host.name} has no accepted host key")
        return Endpoint(
            address=host.address,
            host_key=host.host_key,
            port=host.port,
            user=host.user,
            identity=host.identity,
            client_key=None if host.identity else self.client_key,
        )

    def _attach(self, host: Host, connection_open: asyncssh.SSHClientConnection | None = None) -> _Member:
        host_id = host.id
        connection = HostConnection(
            host.name,
            self._endpoint(host),
            self.ssh_settings,
            gate=self.gate,
            on_state=lambda status, reason: self._on_state(host_id, status, reason),
        )
        member = _Member(host_id, connection, None)
        sockets = self._socket_dir()  # a one-shot command (host add) joins one host without start()
        member.monitor = HostMonitor(
            host_id,
            host.name,
            connection,
            self.writer,
            lambda: LibvirtLink(host.name, connection, sockets),
            discover=lambda monitor: self._discover(member, monitor.opened_link),
            capabilities=lambda: self._capabilities(host_id),
            event=self._put_event,
            settings=self.monitor_settings,
            streams=self.monitoring,
        )
        self._members[host_id] = member
        self._write_status(host_id, HostStatus.connecting, None)
        connection.start(connection_open)
        member.monitor.start()
        return member

    def _socket_dir(self) -> Path:
        """Where the local ends of the libvirt tunnels live; made (with libvirt's event loop) once."""
        if self._sockets is None:
            ensure_event_loop_impl()
            self._sockets = socket_dir(self.data_dir)
        return self._sockets

    async def _detach(self, member: _Member) -> None:
        if member.monitor is not None:
            await member.monitor.stop()
        await member.connection.close()

    def member(self, host_id: str) -> _Member:
        member = self._members.get(host_id)
        if member is None:
            host = self.store.get(Host, host_id)
            if host is None:
                raise FleetError(f"no host with id {host_id}")
            raise FleetError(f"host {host.name} is not connected by this controller (no accepted key, or not started)")
        return member

    def connection(self, host_id: str) -> HostConnection:
        return self.member(host_id).connection

    def status(self, host_id: str) -> HostStatus:
        return self.member(host_id).connection.state

    def _capabilities(self, host_id: str) -> HostCapabilities | None:
        host = self.store.get(Host, host_id)
        return host.capabilities if host is not None else None

    # --- state and events ---------------------------------------------------------------------

    def _on_state(self, host_id: str, status: HostStatus, reason: str | None) -> None:
        member = self._members.get(host_id)
        host = self.store.get(Host, host_id)
        name = host.name if host else host_id
        previous = self._current_status(host_id)
        self._write_status(host_id, status, reason)
        if status is not previous:
            offered = None
            if member is not None and isinstance(member.connection.last_error, HostKeyMismatch):
                offered = member.connection.last_error.offered
            event = status_event(host_id, name, status, reason, offered_key=offered)
            if event is not None:
                self._put_event(event)
        for listener in list(self._listeners):
            try:
                listener(host_id, status, reason)
            except Exception:
                log.exception("status listener failed")

    def _current_status(self, host_id: str) -> HostStatus | None:
        current = self.writer.current(HostDynamic, host_id)
        return current.status if current is not None else None

    def _write_status(self, host_id: str, status: HostStatus, reason: str | None) -> None:
        if self.store.get(Host, host_id) is None:
            return  # removed meanwhile
        current = self.writer.current(HostDynamic, host_id) or HostDynamic(id=host_id)
        self.writer.put(current.with_status(status, reason, utcnow()), urgent=True)

    def _put_event(self, event: Event) -> None:
        try:
            self.store.put(event)
        except StoreWriteError:  # the store said once that writes fail: no traceback for each event
            log.info("event %s not stored: %s", event.type, self.store.write_failure)
        except Exception:
            log.exception("cannot store event %s", event.type)

    # --- discovery ------------------------------------------------------------------------------

    async def _discover(self, member: _Member, link: LinkSource) -> Host | None:
        async with member.discovery_lock:
            result = await discover(member.connection, link)
            known = set(member.last_discovery.problems) if member.last_discovery else set()
            member.last_discovery = result
            host = self.store.get(Host, member.host_id)
            if host is None:
                return None
            # What could not be read keeps its last good reading, marked stale: never an empty host.
            merged = facts.merge_facts(host.capabilities, result.capabilities, result.failed)
            updated = host.evolve(capabilities=merged)
            self.store.put(updated)
            for problem in result.problems:
                if problem in known:
                    continue  # reported at the last discovery already (a reconnection is not news)
                self._put_event(Event(type="discovery-problem", severity=EventSeverity.warning,
                                      host_id=host.id, message=f"{host.name}: {printable(problem, limit=500)}"))
            event = stale_event(host, merged)
            if event is not None:
                self._put_event(event)
            for event in unusable_storage_events(host, merged):
                self._put_event(event)
            member.discovered.set()
            return updated

    async def rediscover(self, host_id: str, *, timeout: float = 120.0) -> Host:
        """Discover the host again now: its facts are read afresh (what still cannot be read stays
        stale, with its last good reading). A host this fleet does not hold a connection to yet (a
        one-shot command) is connected first, and its first connection discovers it."""
        member = self._members.get(host_id)
        if member is None:
            host = self.store.get(Host, host_id)
            if host is None:
                raise FleetError(f"no host with id {host_id}")
            if not host.host_key or host.simulated:
                raise FleetError(f"host {host.name} has no accepted host key to connect with")
            member = self._attach(host)
            await self._discovered_or_refused(member, host.name, timeout)
            return self.store.require(Host, host_id)
        if not member.connection.is_up:
            name = member.connection.name
            raise FleetError(f"{name} is not connected ({member.connection.reason or member.connection.state.value}); "
                             "its facts are read again when it reconnects")
        link = member.monitor.link if member.monitor is not None else None
        try:
            async with asyncio.timeout(timeout):
                host = await self._discover(member, link)
        except TimeoutError:
            raise FleetError(f"{member.connection.name}: discovery took longer than {timeout:g} s") from None
        except NotConnected as error:
            raise FleetError(str(error)) from None
        if host is None:
            raise FleetError(f"host {host_id} was removed during discovery")
        return host

    async def _discovered_or_refused(self, member: _Member, name: str, timeout: float) -> None:
        """Wait for the member's first discovery; FleetError as soon as its connection is refused."""
        refused = (HostStatus.key_mismatch, HostStatus.unreachable, HostStatus.down)
        discovered = asyncio.ensure_future(member.discovered.wait())
        failed = asyncio.ensure_future(member.connection.wait_state(lambda state: state in refused))
        try:
            done, _ = await asyncio.wait({discovered, failed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (discovered, failed):
                task.cancel()
        if discovered in done:
            return
        if failed in done:
            raise FleetError(f"{name}: {member.connection.reason or member.connection.state.value}")
        raise FleetError(f"{name}: not discovered within {timeout:g} s (connection {member.connection.state.value})")

    # --- joining --------------------------------------------------------------------------------

    async def fetch_host_key(self, address: str, port: int | None = None) -> tuple[str, str]:
        """The host's public key line and its SHA256 fingerprint; nothing runs on the host."""
        check_address(address)
        async with self.gate.slot():  # a key exchange is a connection sshd has to start too
            return await fetch_host_key(address, port, config=self.ssh_settings.config,
                                        timeout=self.ssh_settings.connect_timeout)

    def resolve_login(self, address: str, port: int | None, user: str | None) -> tuple[int, str]:
        """Port and user as OpenSSH would use them: given, else the ssh config's, else 22 / root."""
        if port is None:
            configured = ssh_config_value(address, "Port", self.ssh_settings.config)
            port = int(configured) if configured else DEFAULT_PORT
        if user is None:
            user = ssh_config_value(address, "User", self.ssh_settings.config) or DEFAULT_USER
        return port, check_user(user)

    async def _accepted_key(self, address: str, port: int, accepted_fingerprint: str | None) -> str:
        if accepted_fingerprint is not None:
            check_fingerprint(accepted_fingerprint)
        key_line, offered = await self.fetch_host_key(address, port)
        if accepted_fingerprint is None:
            raise FingerprintRequired(address, key_line, offered)
        if offered != accepted_fingerprint.strip():
            raise FingerprintMismatch(address, accepted_fingerprint.strip(), offered)
        return key_line

    async def add_host(
        self,
        name: str,
        address: str,
        port: int | None = None,
        user: str | None = None,
        identity: str | None = None,
        accepted_fingerprint: str | None = None,
        *,
        timeout: float = 120.0,
    ) -> Host:
        """Add a host: its key must have the accepted fingerprint; then connect, discover, monitor.

        Nothing is stored unless a connection with the accepted key pinned logs in. Returns the
        Host with its capabilities (discovery problems become Events).
        """
        try:
            check_name(name, "host name")
            check_address(address)
        except InvalidName as error:
            raise FleetError(str(error)) from None
        if self.store.find_by_name(Host, name) is not None:
            raise FleetError(f"a host named {name!r} already exists")
        port, user = self.resolve_login(address, port, user)
        for other in self.store.list(Host):
            if other.address == address and other.port == port:
                raise FleetError(f"{address}:{port} is already host {other.name}")
        if identity is not None:
            identity = str(Path(identity).expanduser().resolve())
            if not os.access(identity, os.R_OK):
                raise FleetError(f"cannot read the identity file {identity}")
        if accepted_fingerprint is None:
            key_line, offered = await self.fetch_host_key(address, port)
            raise FingerprintRequired(address, key_line, offered)
        accepted = check_fingerprint(accepted_fingerprint)
        # Prove the login works before anything is stored: one connection that trusts only the key
        # with the accepted fingerprint (checked in its key exchange, before anything is sent), which
        # also gives the key line to pin from now on; no separate key exchange to fetch it first.
        endpoint = Endpoint(address=address, host_key="", port=port, user=user, identity=identity,
                            client_key=None if identity else self.client_key, pinned_fingerprint=accepted)
        try:
            async with self.gate.slot():
                probe = await open_connection(endpoint, self.ssh_settings)
        except HostKeyMismatch as error:
            raise FingerprintMismatch(address, accepted, error.offered or "(none it could show)") from None
        except HostUnreachable:
            raise  # as the key fetch raised it
        except SshError as error:
            raise FleetError(str(error)) from None
        key = probe.get_server_host_key()
        if key is None or fingerprint_of_key(key) != accepted:  # validated in the key exchange; never else
            probe.close()
            raise FleetError(f"{address}: the key exchange did not prove {accepted}; refused")
        host = Host(name=name, address=address, port=port, user=user, identity=identity,
                    host_key=public_key_line(key), fingerprint=accepted)
        self.store.put(host)
        member = self._attach(host, probe)  # the login just proved becomes the host's connection
        await self._wait_discovered(member, timeout)
        return self.store.require(Host, host.id)

    async def _wait_discovered(self, member: _Member, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await member.discovered.wait()
        except TimeoutError:
            state = member.connection.state.value
            raise FleetError(
                f"host stored, but not discovered within {timeout:g} s (connection {state}); "
                "it keeps trying by itself"
            ) from None

    async def accept_host_key(self, host_id: str, accepted_fingerprint: str) -> Host:
        """Accept a host's new key (a reinstalled host, a regenerated key) after the admin checked its
        fingerprint out of band. The key the host presents now must have that fingerprint and a login
        with it pinned must work; only then is it stored, and the host's connection starts over with
        it (a new discovery follows: ``wait_discovered``). Nothing changes otherwise."""
        host = self.store.get(Host, host_id)
        if host is None:
            raise FleetError(f"no host with id {host_id}")
        if host.simulated:
            raise FleetError(f"{host.name} is a simulated host: it has no host key to accept")
        key_line = await self._accepted_key(host.address, host.port, accepted_fingerprint)
        fingerprint = accepted_fingerprint.strip()
        if host.host_key and fingerprint == host.fingerprint:
            raise FleetError(f"{host.name}: {fingerprint} is already its accepted key; nothing changed")
        updated = host.evolve(host_key=key_line, fingerprint=fingerprint)
        try:
            async with self.gate.slot():
                probe = await open_connection(self._endpoint(updated), self.ssh_settings)
        except SshError as error:
            raise FleetError(f"{host.name} presents {fingerprint}, but logging in with it failed: {error}; "
                             "nothing changed") from None
        self.store.put(updated)
        member = self._members.pop(host_id, None)
        if member is not None:
            await self._detach(member)
        self._attach(updated, probe)  # the login just proved is the host's connection: discovered again
        return updated

    async def wait_discovered(self, host_id: str, timeout: float = 120.0) -> Host:
        """Wait for the host's next discovery after it was (re)attached; FleetError after ``timeout``."""
        await self._wait_discovered(self.member(host_id), timeout)
        return self.store.require(Host, host_id)

    async def install_key(
        self,
        address: str,
        port: int | None,
        user: str | None,
        password: str,
        accepted_fingerprint: str,
    ) -> None:
        """Install the controller's public key for ``user`` with a one-time password login.

        The host must first prove the accepted key; the password is not stored anywhere.
        """
        check_address(address)
        port, user = self.resolve_login(address, port, user)
        key_line = await self._accepted_key(address, port, accepted_fingerprint)
        endpoint = Endpoint(address=address, host_key=key_line, port=port, user=user)
        try:
            conn = await password_connection(endpoint, password, self.ssh_settings)
        except SshError as error:
            raise FleetError(str(error)) from None
        async with conn:
            home = await conn.run('printf %s "$HOME"', check=False, timeout=30)
            home_dir = str(home.stdout or "").strip()
            if home.exit_status != 0 or not home_dir.startswith("/"):
                raise FleetError(f"{user}@{address}: cannot tell the home directory ({home.stderr!r})")
            command = trust.ssh_trust(self.client_public_key, f"{home_dir.rstrip('/')}/.ssh/authorized_keys")
            result = await conn.run(command, check=False, timeout=30)
            if result.exit_status != 0:
                raise FleetError(f"{user}@{address}: installing the key failed: {str(result.stderr).strip()[:300]}")

    async def remove_host(self, host_id: str) -> None:
        """Disconnect the host and forget it (Host and HostDynamic documents)."""
        member = self._members.pop(host_id, None)
        if member is not None:
            await self._detach(member)
        with self.store.transaction():
            self.store.delete(Host, host_id)
            self.store.delete(HostDynamic, host_id)
        with contextlib.suppress(Exception):
            self.writer.delete(HostDynamic, host_id)

    # --- using hosts ----------------------------------------------------------------------------

    async def run(
        self,
        host_id: str,
        command: str,
        *,
        privileged: bool = True,
        timeout: float | None = 60.0,
        input: str | bytes | None = None,
        wait: float | None = 0.0,
        on_stderr: Callable[[bytes], None] | None = None,
    ) -> CommandResult:
        """Run a shell command on a host (through ``sudo -n`` for a non-root login when privileged);
        ``on_stderr`` sees its standard error as it comes."""
        connection = self.member(host_id).connection
        with host_context(connection.name):
            return await connection.run(command, privileged=privileged, timeout=timeout, input=input, wait=wait,
                                        on_stderr=on_stderr)

    async def libvirt(self, host_id: str, fn: Callable[..., T], *args: Any, timeout: float | None = 120.0,
                      wait: float = 0.0, **kwargs: Any) -> T:
        """``fn(virConnect, *args, **kwargs)`` with the host's libvirt connection, off the loop."""
        member = self.member(host_id)
        assert member.monitor is not None
        if wait:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await member.monitor.link_ready.wait()
        link = member.monitor.link
        if link is None:
            raise LibvirtUnavailable(f"no libvirt connection to host {host_id} ({member.connection.state.value})")
        with host_context(member.connection.name):
            return await link.call(fn, *args, timeout=timeout, **kwargs)

    async def wait_up(self, host_id: str, timeout: float | None = None) -> None:
        """Until the host is connected, its discovery done and the store says so: a step's checks read
        the store, and a commit of monitoring's still running holds the host's new status back
        (NotConnected on timeout)."""
        member = self.member(host_id)
        try:
            async with asyncio.timeout(timeout):
                await member.connection.wait_state(lambda s: s is HostStatus.up)
                await member.discovered.wait()
                await self.writer.drained()
        except TimeoutError:
            raise NotConnected(
                f"host {host_id} is {member.connection.state.value}: {member.connection.reason}"
            ) from None


__all__ = ["Fleet", "FingerprintMismatch", "FingerprintRequired", "FleetError", "LibvirtUnavailable", "status_event"]
