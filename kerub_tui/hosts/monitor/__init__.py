"""Live monitoring of one host: long-lived remote streams and libvirt events, into documents
(ARCHITECTURE.md §4, §6).

No polling loop runs in the controller. Each host has three streams on its SSH connection:

- ``vmstat 1``: CPU split and memory, every second -> HostDynamic;
- a state watch: a remote shell loop reads KSM, LVM (vgs/lvs), the image filesystem and the
  temperatures every few seconds (SMART health every few minutes) and prints them only when they
  changed -> HostDynamic (ksm, storage_free, cpu_temperature, failing_devices);
- a domain stats watch: a remote loop reads each qemu process's CPU ticks and RSS, and an awk on
  the host prints a domain's CPU % (of one host CPU) and memory only when they changed ->
  VirtualMachineDynamic (cpu_percent, memory_used);

plus libvirt lifecycle events through the tunnel (libvirt_link.py) -> VirtualMachineDynamic
(status, host). Streams die with their channel (the ssh layer ties them to it); when the
connection drops they end, and they start again by themselves once the supervisor reconnects.

Writes are coalesced (``DocumentWriter``): at most one store write per document per second, none
when nothing changed; lifecycle and status changes are written at once.

Domains kerub-tui did not create (no VirtualMachine with the domain's UUID) are still reported,
as VirtualMachineDynamic documents without a VirtualMachine - "unmanaged": their memory and CPU
are real load on the host, so the planner must see them. Such a document exists only while the
domain runs on a host (it is deleted when the domain stops), and the first sighting on a host
raises an "unmanaged-domain" Event.

This package holds it by concern: ``watch``, ``domains``, ``writer``, ``host``. It re-exports every name:
``from kerub_tui.hosts.monitor import X`` keeps working.
"""

from __future__ import annotations

from .domains import (
    _DOMSTATS_AWK,
    DomainStats,
    _is_uuid,
    apply_domain_state,
    domain_stats_command,
    parse_domain_stats,
)
from .host import (
    _D,
    LAST_SEEN_REFRESH,
    MIB,
    Discoverer,
    HostMonitor,
    MonitorSettings,
    ProblemSink,
    _differs,
    _to_mib,
)
from .watch import (
    _MARK,
    SectionOutput,
    WatchParser,
    watch_command,
)
from .writer import DocumentWriter

__all__ = [
    '_D', '_differs', '_DOMSTATS_AWK', '_is_uuid', '_MARK', '_to_mib', 'apply_domain_state', 'Discoverer',
    'DocumentWriter', 'domain_stats_command', 'DomainStats', 'HostMonitor', 'LAST_SEEN_REFRESH', 'MIB',
    'MonitorSettings', 'parse_domain_stats', 'ProblemSink', 'SectionOutput', 'watch_command', 'WatchParser',
]
