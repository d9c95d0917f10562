"""The SSH transport: per-host connection supervisor, host key trust, commands, streams, tunnels."""

from .commands import CommandResult, remote_command
from .connection import (
    ConnectGate,
    Endpoint,
    HostConnection,
    RemoteStream,
    SshSettings,
    open_connection,
    password_connection,
)
from .errors import (
    AuthenticationFailed,
    CommandFailed,
    CommandTimeout,
    HostKeyMismatch,
    HostUnreachable,
    NotConnected,
    SshError,
)
from .keys import fetch_host_key, fingerprint, load_or_create_client_key, public_key_line

__all__ = [
    "AuthenticationFailed",
    "CommandFailed",
    "CommandResult",
    "CommandTimeout",
    "ConnectGate",
    "Endpoint",
    "HostConnection",
    "HostKeyMismatch",
    "HostUnreachable",
    "NotConnected",
    "RemoteStream",
    "SshError",
    "SshSettings",
    "fetch_host_key",
    "fingerprint",
    "load_or_create_client_key",
    "open_connection",
    "password_connection",
    "public_key_line",
    "remote_command",
]
