"""Discovery of one host: the discovery command set over its SSH connection, plus the hypervisor
facts through the libvirt tunnel, assembled into HostCapabilities.

The commands (facts.DISCOVERY_COMMANDS) run as one script in one channel of the host's connection
(hosts/batch.py): one session, one shell, sudo at most once, instead of a channel each. The hypervisor facts come from
libvirt itself (getCapabilities, getDomainCapabilities, getLibVersion) rather than from a virsh on
the host, so a host without virsh but with libvirtd is fully usable. Nothing here raises on odd
output: what could not be read is returned as problems, which the fleet turns into Events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import libvirt

from kerub_tui.core.models import HostCapabilities
from kerub_tui.ssh import HostConnection

from . import facts
from .batch import BatchCommand, run_batch
from .libvirt_link import LibvirtLink, LibvirtUnavailable

# Read through the tunnel instead (see the module docstring).
_LIBVIRT_COMMANDS = ("virsh_version", "virsh_capabilities", "virsh_domcapabilities")
COMMAND_TIMEOUT = 60.0


@dataclass(frozen=True)
class Discovery:
    capabilities: HostCapabilities
    problems: list[str]
    duration: float  # seconds
    failed: dict[str, str] = field(default_factory=dict)  # sections not read -> why (see facts.merge_facts)


def _version_text(version: int) -> str:
    """virsh's wording, which the version parser reads: libvirt encodes 9.0.0 as 9000000."""
    return f"Running against daemon: {version // 1_000_000}.{version // 1000 % 1000}.{version % 1000}\n"


async def hypervisor_outputs(link: LibvirtLink | None) -> dict[str, facts.Output]:
    """The outputs virsh would have given, read through the tunnel; a failure is an output too."""
    if link is None or not link.is_open:
        reason = link.close_reason if link is not None and link.close_reason else "no libvirt connection"
        failed = facts.Output(1, "", f"libvirt: {reason}")
        return {name: failed for name in _LIBVIRT_COMMANDS}

    def read(conn: libvirt.virConnect) -> tuple[str, str | None, int]:
        capabilities = conn.getCapabilities()
        try:
            domain_capabilities = conn.getDomainCapabilities(None, None, None, None, 0)
        except libvirt.libvirtError:
            domain_capabilities = None  # no default emulator for this host: capabilities still tell
        return capabilities, domain_capabilities, conn.getLibVersion()

    try:
        capabilities, domain_capabilities, version = await link.call(read, timeout=COMMAND_TIMEOUT)
    except (libvirt.libvirtError, LibvirtUnavailable, TimeoutError) as error:
        message = error.get_error_message() if isinstance(error, libvirt.libvirtError) else str(error)
        failed = facts.Output(1, "", f"libvirt: {message or 'timed out'}")
        return {name: failed for name in _LIBVIRT_COMMANDS}
    outputs = {
        "virsh_capabilities": facts.Output(0, capabilities),
        "virsh_version": facts.Output(0, _version_text(version)),
    }
    if domain_capabilities is not None:
        outputs["virsh_domcapabilities"] = facts.Output(0, domain_capabilities)
    return outputs


async def run_discovery_commands(
    host: HostConnection, *, timeout: float = COMMAND_TIMEOUT, skip: tuple[str, ...] = _LIBVIRT_COMMANDS
) -> tuple[dict[str, facts.CommandOutput], list[str]]:
    """Every discovery command (but ``skip``) in one channel (hosts/batch.py); outputs by name, and
    what failed.

    Each command is stopped after ``timeout`` seconds on the host, and the other commands still run.
    At most facts.MAX_OUTPUT bytes of each output are kept (the rest is read and dropped, and the
    command's section is then not read): a host printing 30 MB costs the controller 4 MiB, once.
    """
    commands = [BatchCommand(c.name, c.command, c.privileged) for c in facts.DISCOVERY_COMMANDS if c.name not in skip]
    result = await run_batch(host, commands, timeout=timeout, max_output=facts.MAX_OUTPUT)
    return dict(result.outputs), result.problems


# The libvirt link, or how to wait for it: the monitor opens it while the commands already run.
LinkSource = LibvirtLink | Callable[[], Awaitable[LibvirtLink | None]] | None


async def discover(host: HostConnection, link: LinkSource, *, timeout: float = COMMAND_TIMEOUT) -> Discovery:
    """Discover ``host`` now. Raises NotConnected if the connection is down or drops meanwhile."""
    await host.connection()
    started = time.monotonic()

    async def hypervisor() -> dict[str, facts.Output]:
        return await hypervisor_outputs(await link() if callable(link) else link)

    (outputs, problems), read = await asyncio.gather(run_discovery_commands(host, timeout=timeout), hypervisor())
    merged: Mapping[str, facts.CommandOutput] = {**outputs, **read}
    assembled = facts.assemble_discovery(merged)
    return Discovery(assembled.capabilities, problems + assembled.problems, time.monotonic() - started,
                     assembled.failed)
