"""The per-host connection supervisor: one SSH connection per host, every channel rides on it.

``HostConnection`` keeps one asyncssh connection to one host alive: keepalive on, connect and login
timeouts, reconnect with exponential backoff and full jitter, a cap on simultaneous sessions (sshd's
MaxSessions counts per connection) and, through a ``ConnectGate`` shared by the fleet, a cap on
handshakes in flight (sshd's MaxStartups, or a jump host carrying the whole fleet). Every state
change is reported through ``on_state``; the fleet turns those into HostDynamic documents.

The host key is pinned: the connection trusts exactly the accepted key. A mismatch stops the key
exchange before authentication, so nothing is sent to the host and nothing runs there.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from ..core.logs import bind_host
from ..core.models import HostStatus
from .commands import CommandResult, remote_command
from .errors import (
    AuthenticationFailed,
    CommandTimeout,
    HostKeyMismatch,
    HostUnreachable,
    NotConnected,
    SshError,
)
from .keys import (
    HOST_KEY_ALGORITHMS,
    describe_error,
    fetch_host_key,
    fingerprint,
    fingerprint_of,
    pinned_known_hosts,
)

log = logging.getLogger(__name__)

MIB = 1 << 20


@dataclass(frozen=True)
class SshSettings:
    """Transport tuning, one set for the whole fleet."""

    keepalive_interval: float = 5.0  # seconds between keepalive requests
    keepalive_count_max: int = 3  # unanswered requests before the connection is declared dead
    connect_timeout: float = 15.0  # TCP connect + key exchange + authentication
    login_timeout: float = 20.0  # authentication alone (sshd LoginGraceTime is 120 s)
    backoff_initial: float = 1.0  # first reconnect delay (full jitter: uniform in [0, delay])
    backoff_max: float = 60.0
    max_sessions: int = 8  # channels per host; sshd's MaxSessions defaults to 10
    max_handshakes: int = 8  # connections being opened at once, fleet-wide (MaxStartups 10:30:100)
    max_output: int = 8 * MIB  # per stream (stdout, stderr) of one command; the rest is dropped
    max_line: int = 256 * 1024  # longest line a remote stream may send; longer ones are dropped
    # ssh config files; None = ~/.ssh/config when it exists, as OpenSSH does; () = none at all
    config: tuple[str, ...] | None = None

    @property
    def keepalive_window(self) -> float:
        """How long a silent dead connection can go unnoticed at most."""
        return self.keepalive_interval * (self.keepalive_count_max + 1)


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach one host."""

    address: str  # IP, DNS name or ~/.ssh/config alias (HostName, Port, ProxyJump apply)
    host_key: str  # the accepted OpenSSH public key line ("" with ``pinned_fingerprint``)
    port: int | None = None  # None: the config's Port, else 22
    user: str = "root"
    identity: str | None = None  # private key file the admin installed; None = the controller's key
    client_key: asyncssh.SSHKey | None = field(default=None, compare=False, repr=False)
    # A first login before the key line is known: only the key with this accepted SHA256 fingerprint
    # is trusted (checked in the key exchange, before anything is sent); the connection's
    # get_server_host_key() then gives the line. Saves the separate key exchange of fetch_host_key.
    pinned_fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if not self.host_key and self.pinned_fingerprint:
            return self.pinned_fingerprint
        return fingerprint_of(self.host_key)


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it is really done.

    Cancels again while it is not: on Python 3.11 asyncio.wait_for (used inside asyncssh) can
    swallow a cancellation that races with its result, and a supervisor must not outlive close().
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled() and task.exception() is not None:
        log.debug("%s ended with %r", task.get_name(), task.exception())


class ConnectGate:
    """Limits the connections being opened at once across the fleet."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._semaphore = asyncio.Semaphore(limit)
        self.in_flight = 0
        self.peak = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._semaphore:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                yield
            finally:
                self.in_flight -= 1


StateCallback = Callable[[HostStatus, "str | None"], None]


class _Client(asyncssh.SSHClient):
    """Remembers why the connection ended; with ``pinned``, trusts only the host key with that
    fingerprint (and remembers the one offered)."""

    def __init__(self, pinned: str | None = None) -> None:
        self.lost: Exception | None = None
        self.pinned = pinned
        self.offered: str | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self.offered = fingerprint(key)
        return self.pinned is not None and self.offered == self.pinned

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc


# AES-GCM before chacha20-poly1305 (asyncssh's and OpenSSH's first choice): asyncssh computes chacha's
# Poly1305 per packet in Python, AES-GCM in one call to OpenSSL (AES-NI). Measured on the lab (one
# stream of 256 MiB): 61 MiB/s with aes128-gcm, 34 MiB/s with chacha20-poly1305. An image import is
# that stream. The others stay, in asyncssh's order, for hosts without AES-GCM.
ENCRYPTION_ALGS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
                   "aes256-ctr", "aes192-ctr", "aes128-ctr")


def config_arg(settings: SshSettings) -> Any:
    return () if settings.config is None else list(settings.config)


async def client_options(endpoint: Endpoint, settings: SshSettings) -> asyncssh.SSHClientConnectionOptions:
    """Options for one connection attempt: pinned key, keepalive, timeouts, keys, config."""
    by_line = bool(endpoint.host_key) or not endpoint.pinned_fingerprint
    common: dict[str, Any] = {
        "config": config_arg(settings),
        "host": endpoint.address,
        "port": endpoint.port if endpoint.port else (),
        "username": endpoint.user,
        "known_hosts": pinned_known_hosts(endpoint.host_key) if by_line else ([], [], []),
        "keepalive_interval": settings.keepalive_interval,
        "keepalive_count_max": settings.keepalive_count_max,
        "connect_timeout": settings.connect_timeout,
        "login_timeout": settings.login_timeout,
        "client_factory": _Client if by_line else functools.partial(_Client, endpoint.pinned_fingerprint),
        "encryption_algs": list(ENCRYPTION_ALGS),
        # A controller never prompts: keys (and the agent) only.
        "password_auth": False,
        "kbdint_auth": False,
        "gss_auth": False,
        "gss_kex": False,
    }
    if not by_line:
        # the key types in fetch_host_key's order: the key negotiated is the one whose fingerprint was shown
        common["server_host_key_algs"] = list(HOST_KEY_ALGORITHMS)
    if endpoint.identity:
        return await asyncssh.SSHClientConnectionOptions.construct(**common, client_keys=[endpoint.identity])
    # The controller's key first, then what ~/.ssh/config (IdentityFile) or ~/.ssh/id_* offer: a
    # first pass loads those, a second puts the controller's key in front.
    base = await asyncssh.SSHClientConnectionOptions.construct(**common)
    keys = ([endpoint.client_key] if endpoint.client_key is not None else []) + list(base.client_keys or [])
    return await asyncssh.SSHClientConnectionOptions.construct(base, client_keys=keys or None)


def classify_connect_error(endpoint: Endpoint, error: BaseException) -> SshError:
    """The SshError an admin should see for a failed connection attempt."""
    if isinstance(error, asyncssh.HostKeyNotVerifiable):
        return HostKeyMismatch(endpoint.address, endpoint.fingerprint, None, describe_error(error))
    if isinstance(error, asyncssh.KeyExchangeFailed) and "host key" in (error.reason or "").lower():
        # The host offers no key of the accepted type any more: a replaced key by another name.
        return HostKeyMismatch(endpoint.address, endpoint.fingerprint, None, describe_error(error))
    if isinstance(error, asyncssh.PermissionDenied):
        return AuthenticationFailed(
            f"{endpoint.user}@{endpoint.address}: authentication refused ({describe_error(error)}); "
            "install the controller's public key there, or give an identity file"
        )
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        return HostUnreachable(f"{endpoint.address}: no answer within the connect timeout")
    return HostUnreachable(f"{endpoint.address}: {describe_error(error)}")


async def open_connection(
    endpoint: Endpoint, settings: SshSettings, *, describe_mismatch: bool = True
) -> asyncssh.SSHClientConnection:
    """One connection attempt; SshError subclasses on failure (HostKeyMismatch names the offered key)."""
    options = await client_options(endpoint, settings)
    try:
        return await asyncssh.connect(endpoint.address, config=config_arg(settings), options=options)
    except (OSError, asyncssh.Error, TimeoutError) as caught:
        error = caught
        classified = classify_connect_error(endpoint, error)
    # A host that offers no key of the accepted type drops the key exchange (ConnectionLost) rather
    # than failing verification: a second key exchange (no authentication) tells them apart and
    # names the key the host offers now.
    suspect = isinstance(classified, HostKeyMismatch) or isinstance(
        error, (asyncssh.ConnectionLost, asyncssh.KeyExchangeFailed, ConnectionResetError)
    )
    if suspect and describe_mismatch:
        with contextlib.suppress(SshError):
            _, offered = await fetch_host_key(
                endpoint.address, endpoint.port, config=settings.config, timeout=settings.connect_timeout
            )
            if isinstance(classified, HostKeyMismatch) or offered != endpoint.fingerprint:
                classified = HostKeyMismatch(endpoint.address, endpoint.fingerprint, offered)
    raise classified


async def password_connection(
    endpoint: Endpoint, password: str, settings: SshSettings
) -> asyncssh.SSHClientConnection:
    """A one-time connection with a password (to install the controller's key), host key pinned.

    No key, no agent: the password is the only credential offered, and only after the host
    proved the accepted key.
    """
    options = await asyncssh.SSHClientConnectionOptions.construct(
        config=config_arg(settings),
        host=endpoint.address,
        port=endpoint.port if endpoint.port else (),
        username=endpoint.user,
        known_hosts=pinned_known_hosts(endpoint.host_key),
        connect_timeout=settings.connect_timeout,
        login_timeout=settings.login_timeout,
        password=password,
        client_keys=[],
        agent_path=None,
        public_key_auth=False,
        gss_auth=False,
        gss_kex=False,
        preferred_auth="password,keyboard-interactive",
    )
    try:
        return await asyncssh.connect(endpoint.address, config=config_arg(settings), options=options)
    except (OSError, asyncssh.Error, TimeoutError) as error:
        classified = classify_connect_error(endpoint, error)
    if isinstance(classified, AuthenticationFailed):
        raise AuthenticationFailed(f"{endpoint.user}@{endpoint.address}: the password was refused") from None
    raise classified


class HostConnection:
    """Supervises the connection to one host. ``start()``, use, ``await close()``."""

    def __init__(
        self,
        name: str,
        endpoint: Endpoint,
        settings: SshSettings | None = None,
        *,
        gate: ConnectGate | None = None,
        on_state: StateCallback | None = None,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.settings = settings or SshSettings()
        self.gate = gate or ConnectGate(self.settings.max_handshakes)
        self._on_state = on_state
        self.state = HostStatus.connecting
        self.reason: str | None = None
        self.last_error: SshError | None = None
        self.generation = 0  # increments on every new live connection
        self._conn: asyncssh.SSHClientConnection | None = None
        self._up = asyncio.Event()
        self._state_changed = asyncio.Event()
        self._kick = asyncio.Event()
        self._sessions = asyncio.Semaphore(self.settings.max_sessions)
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def __repr__(self) -> str:
        return f"<HostConnection {self.name} {self.state.value}>"

    @property
    def user(self) -> str:
        return self.endpoint.user

    @property
    def is_up(self) -> bool:
        return self.state is HostStatus.up and self._conn is not None

    # --- lifecycle --------------------------------------------------------------------------

    def start(self, connection: asyncssh.SSHClientConnection | None = None) -> None:
        """Start supervising; ``connection``, one just opened with this endpoint, is used first."""
        if self._task is None:
            self._closing = False
            self._up.clear()
            self._task = asyncio.create_task(self._supervise(connection), name=f"ssh:{self.name}")
        elif connection is not None:
            connection.close()

    async def close(self) -> None:
        self._closing = True
        self._kick.set()
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self._drop_connection()
        self._up.set()  # wake whoever waits for a connection: they see the close and give up

    def reconnect_now(self) -> None:
        """Skip the current backoff delay (the admin asked, or the endpoint changed)."""
        self._kick.set()

    def update_endpoint(self, endpoint: Endpoint) -> None:
        """New endpoint (e.g. a re-accepted host key): used from the next connection attempt."""
        self.endpoint = endpoint
        self._kick.set()

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._up.clear()
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await conn.wait_closed()

    # --- state ------------------------------------------------------------------------------

    def _set_state(self, state: HostStatus, reason: str | None) -> None:
        if state == self.state and reason == self.reason:
            return
        self.state, self.reason = state, reason
        log.info("%s: %s%s", self.name, state.value, f" ({reason})" if reason else "")
        if self._on_state is not None:
            try:
                self._on_state(state, reason)
            except Exception:  # a broken observer must not stop the supervisor
                log.exception("%s: state callback failed", self.name)
        changed, self._state_changed = self._state_changed, asyncio.Event()
        changed.set()

    async def wait_state(self, predicate: Callable[[HostStatus], bool], timeout: float | None = None) -> HostStatus:
        """Wait until ``predicate(state)`` holds; TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while not predicate(self.state):
                await self._state_changed.wait()
        return self.state

    # --- the supervisor ---------------------------------------------------------------------

    async def _supervise(self, adopted: asyncssh.SSHClientConnection | None = None) -> None:
        bind_host(self.name)  # the log lines of this connection's life name its host
        attempt = 0
        ever_up = False
        while not self._closing:
            self._kick.clear()
            try:
                if adopted is not None and not adopted.is_closed():
                    conn, adopted = adopted, None
                else:
                    async with self.gate.slot():
                        conn = await open_connection(self.endpoint, self.settings)
            except SshError as error:
                self.last_error = error
                if isinstance(error, HostKeyMismatch):
                    state = HostStatus.key_mismatch
                else:
                    state = HostStatus.down if ever_up else HostStatus.unreachable
                self._set_state(state, str(error))
            except Exception as error:  # never let the supervisor die: report and retry
                log.exception("%s: unexpected error while connecting", self.name)
                self.last_error = SshError(describe_error(error))
                self._set_state(HostStatus.down if ever_up else HostStatus.unreachable, describe_error(error))
            else:
                ever_up = True
                self.last_error = None
                self._conn = conn
                self.generation += 1
                self._up.set()
                client = conn.get_owner()  # asyncssh forgets it once the connection is closed
                connected_at = time.monotonic()
                self._set_state(HostStatus.up, None)
                await conn.wait_closed()
                lost = getattr(client, "lost", None)
                self._conn = None
                self._up.clear()
                if self._closing:
                    break
                why = describe_error(lost) if lost else "connection closed"
                self._set_state(HostStatus.down, f"connection lost: {why}")
                if time.monotonic() - connected_at >= self.settings.backoff_max:
                    attempt = 0
                    continue  # it was a long-lived connection: try again at once
                # A connection that drops soon after login (flapping) backs off like a failed one.
            delay = random.uniform(0, min(self.settings.backoff_max, self.settings.backoff_initial * 2**attempt))
            attempt = min(attempt + 1, 30)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._kick.wait()

    # --- using the connection ---------------------------------------------------------------

    async def connection(self, wait: float | None = 0.0) -> asyncssh.SSHClientConnection:
        """The live connection; waits up to ``wait`` seconds (None: until up) for one."""
        if self._conn is None and wait != 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._up.wait()
        conn = self._conn
        if conn is None or self._closing:
            why = self.reason or self.state.value
            raise NotConnected(f"{self.name} is not connected ({why})")
        return conn

    async def run(
        self,
        command: str,
        *,
        privileged: bool = True,
        timeout: float | None = 60.0,
        input: str | bytes | None = None,
        max_output: int | None = None,
        wait: float | None = 0.0,
        on_stderr: Callable[[bytes], None] | None = None,
    ) -> CommandResult:
        """Run ``command`` (shell text, every value already quoted) and collect its result.

        ``on_stderr`` sees each piece of standard error as it arrives (a copy's progress), on this loop.

        Output beyond ``max_output`` bytes per stream is read and dropped (flagged truncated). On
        timeout the channel is closed, which kills the command and its children on the host, and
        CommandTimeout carries what it printed. Without ``input`` the command is tied to its channel;
        with ``input`` it reads that and then end-of-file, as a pipe would give it.
        """
        cap = max_output or self.settings.max_output
        text = remote_command(command, user=self.user, privileged=privileged, tied=input is None)
        out = _Capture(cap)
        err = _Capture(cap, tap=on_stderr)
        async with self._sessions:
            conn = await self.connection(wait)
            started = time.monotonic()
            try:
                proc = await conn.create_process(text, encoding=None)
            except (asyncssh.Error, OSError) as error:
                raise NotConnected(f"{self.name}: cannot open a channel: {describe_error(error)}") from None
            try:
                async with asyncio.timeout(timeout):
                    if input is not None:
                        proc.stdin.write(input.encode() if isinstance(input, str) else input)
                        proc.stdin.write_eof()
                    await asyncio.gather(out.drain(proc.stdout), err.drain(proc.stderr))
                    await proc.wait_closed()
            except TimeoutError:
                proc.close()
                result = self._result(command, proc, out, err, started)
                raise CommandTimeout(
                    f"{self.name}: {command[:200]!r} did not finish within {timeout:g} s; stopped", result
                ) from None
            except (asyncssh.Error, OSError, BrokenPipeError) as error:
                proc.close()
                raise NotConnected(
                    f"{self.name}: connection lost while running {command[:200]!r} "
                    f"({describe_error(error)}); the command was stopped and may have partly run"
                ) from None
            except BaseException:
                proc.close()  # cancelled: the watchdog on the host stops the command
                raise
            if proc.exit_status is None and proc.exit_signal is None and conn is not self._conn:
                raise NotConnected(
                    f"{self.name}: connection lost while running {command[:200]!r}; "
                    "the command was stopped and may have partly run"
                )
            return self._result(command, proc, out, err, started)

    @staticmethod
    def _result(command: str, proc: Any, out: _Capture, err: _Capture, started: float) -> CommandResult:
        signal = proc.exit_signal[0] if proc.exit_signal else None
        status = proc.exit_status
        return CommandResult(
            command=command,
            exit_code=status if status is not None and status >= 0 else None,
            stdout=out.text(),
            stderr=err.text(),
            duration=time.monotonic() - started,
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
            signal=signal,
        )

    @contextlib.asynccontextmanager
    async def process(self, command: str, *, privileged: bool = True,
                      wait: float | None = 0.0) -> AsyncIterator[Any]:
        """A remote command with its stdin, stdout and stderr as byte streams, for a transfer.

        Not under the channel watchdog (its stdin is the data): the command must end by itself on
        stdin's end-of-file, which the channel closing gives it. Leaving the block closes the channel.
        """
        text = remote_command(command, user=self.user, privileged=privileged, tied=False)
        async with self._sessions:
            conn = await self.connection(wait)
            try:
                proc = await conn.create_process(text, encoding=None)
            except (asyncssh.Error, OSError) as error:
                raise NotConnected(f"{self.name}: cannot open a channel: {describe_error(error)}") from None
            try:
                yield proc
            finally:
                proc.close()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await proc.wait_closed()

    def stream(self, command: str, *, privileged: bool = True, wait: float | None = 0.0) -> RemoteStream:
        """A long-lived remote command read line by line; see RemoteStream."""
        return RemoteStream(self, command, privileged=privileged, wait=wait)

    async def forward_local_path(self, local_path: str, remote_path: str) -> asyncssh.SSHListener:
        """Forward a local unix socket to a remote one over the live connection (dies with it)."""
        conn = await self.connection()
        return await conn.forward_local_path(local_path, remote_path)


class _Capture:
    """Reads a stream to its end, keeping at most ``cap`` bytes."""

    def __init__(self, cap: int, tap: Callable[[bytes], None] | None = None) -> None:
        self.cap = cap
        self.buffer = bytearray()
        self.truncated = False
        self.tap = tap

    async def drain(self, reader: asyncssh.SSHReader[bytes]) -> None:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            if self.tap is not None:
                try:
                    self.tap(chunk)
                except Exception:  # a watcher's bug must not lose the command's output
                    log.exception("the watcher of a command's standard error failed")
            room = self.cap - len(self.buffer)
            if room > 0:
                self.buffer += chunk[:room]
            if len(chunk) > room:
                self.truncated = True

    def text(self) -> str:
        return self.buffer.decode("utf-8", errors="replace")


class RemoteStream:
    """``async with host.stream("vmstat 1") as s: async for line in s: ...``

    Lines come decoded, without their newline; lines longer than ``max_line`` are dropped and
    counted in ``dropped_lines``. Iteration ends when the command exits or the connection drops.
    Leaving the ``async with`` closes the channel, and the watchdog kills the command on the host.
    """

    def __init__(self, host: HostConnection, command: str, *, privileged: bool, wait: float | None) -> None:
        self.host = host
        self.command = command
        self.privileged = privileged
        self.wait = wait
        self.dropped_lines = 0
        self.stderr_tail: list[str] = []
        self.generation = 0
        self._proc: Any = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._slot_held = False

    async def __aenter__(self) -> RemoteStream:
        text = remote_command(self.command, user=self.host.user, privileged=self.privileged, tied=True)
        await self.host._sessions.acquire()
        self._slot_held = True
        try:
            conn = await self.host.connection(self.wait)
            self.generation = self.host.generation
            try:
                self._proc = await conn.create_process(text, encoding=None)
            except (asyncssh.Error, OSError) as error:
                raise NotConnected(f"{self.host.name}: cannot open a channel: {describe_error(error)}") from None
        except BaseException:
            self._release()
            raise
        self._stderr_task = asyncio.create_task(self._read_stderr())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _release(self) -> None:
        if self._slot_held:
            self._slot_held = False
            self.host._sessions.release()

    async def aclose(self) -> None:
        try:
            if self._proc is not None:
                self._proc.close()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await self._proc.wait_closed()
            if self._stderr_task is not None:
                self._stderr_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._stderr_task
        finally:
            self._release()

    @property
    def exit_code(self) -> int | None:
        if self._proc is None:
            return None
        status = self._proc.exit_status
        return status if status is not None and status >= 0 else None

    async def _read_stderr(self) -> None:
        # Drained so a chatty stderr never fills the window and stalls stdout; the tail is kept.
        with contextlib.suppress(asyncssh.Error, OSError):
            async for line in self._lines(self._proc.stderr):
                self.stderr_tail = ([*self.stderr_tail, line])[-20:]

    async def _lines(self, reader: asyncssh.SSHReader[bytes]) -> AsyncIterator[str]:
        pending = bytearray()
        skipping = False
        max_line = self.host.settings.max_line
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                if pending and not skipping:
                    yield pending.decode("utf-8", errors="replace")
                return
            start = 0
            while True:
                end = chunk.find(b"\n", start)
                if end < 0:
                    if not skipping:
                        pending += chunk[start:]
                        if len(pending) > max_line:
                            pending.clear()
                            skipping = True
                            self.dropped_lines += 1
                    break
                if skipping:
                    skipping = False
                else:
                    pending += chunk[start:end]
                    if len(pending) > max_line:
                        self.dropped_lines += 1
                    else:
                        yield pending.rstrip(b"\r").decode("utf-8", errors="replace")
                pending.clear()
                start = end + 1

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        if self._proc is None:
            raise RuntimeError("use the stream inside 'async with'")
        try:
            async for line in self._lines(self._proc.stdout):
                yield line
        except (asyncssh.Error, OSError):
            return  # the connection dropped: the stream simply ends
