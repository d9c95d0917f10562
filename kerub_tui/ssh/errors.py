"""Errors of the SSH layer. Each message is one line an admin can act on."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .commands import CommandResult


class SshError(Exception):
    """Base of every error the SSH layer raises on purpose."""


class HostKeyMismatch(SshError):
    """The host did not prove the accepted host key: nothing was sent to it, nothing ran."""

    def __init__(self, address: str, accepted: str | None, offered: str | None, detail: str = "") -> None:
        self.address = address
        self.accepted = accepted
        self.offered = offered
        if offered and accepted and offered != accepted:
            what = f"offers host key {offered}, but {accepted} was accepted"
        elif offered and offered == accepted:
            # The target's key is the accepted one: what failed is on the way (a ProxyJump host).
            what = f"host key {accepted} is right, but a host on the way could not be verified"
        else:
            what = f"did not prove the accepted host key {accepted or '(none)'}"
        super().__init__(
            f"{address} {what}{': ' + detail if detail else ''}; refusing to connect "
            "(if the host was reinstalled or its key regenerated, check the new fingerprint out of band "
            "and accept it: host rekey)"
        )


class HostUnreachable(SshError):
    """No SSH connection could be made (network, refused, timeout)."""


class AuthenticationFailed(SshError):
    """The host refused every key (or the password): install the controller's key or give an identity."""


class NotConnected(SshError):
    """The host has no live connection right now (down, unreachable, key mismatch or closed)."""


class CommandTimeout(SshError):
    """A command ran longer than its timeout; it was stopped. ``result`` holds what it printed."""

    def __init__(self, message: str, result: CommandResult) -> None:
        super().__init__(message)
        self.result = result


class CommandFailed(SshError):
    """A command that had to succeed exited non-zero (raised by CommandResult.check())."""

    def __init__(self, result: CommandResult) -> None:
        self.result = result
        tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or [""]
        super().__init__(f"{result.command!r} exited with {result.exit_code}: {tail[0][:300]}")
