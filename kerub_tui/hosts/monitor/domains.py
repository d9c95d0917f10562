"""Domain stats and states: per-domain CPU and memory from the host, and the VM document a domain state gives."""

from __future__ import annotations

import datetime as dt
import shlex
import uuid
from dataclasses import dataclass
from typing import Any

from kerub_tui.core.models import (
    VirtualMachineDynamic,
    VmStatus,
)

from ..libvirt_link import DomainEvent, DomainState
from ..parse import ParseError

_DOMSTATS_AWK = " ".join(
    """
$1 == "@" { now = $2; next }
$1 == "." {
  for (u in seen) {
    cpu = "-";
    if ((u in ticks) && prev_now != "" && now > prev_now) {
      cpu = int((cur_ticks[u] - ticks[u]) / hz / (now - prev_now) * 100 + 0.5); if (cpu < 0) cpu = 0
    }
    mib = int(cur_rss[u] / 1048576);
    if (cpu != shown_cpu[u] || mib != shown_mib[u]) {
      print "vm", u, cpu, cur_rss[u]; shown_cpu[u] = cpu; shown_mib[u] = mib
    }
    ticks[u] = cur_ticks[u]
  }
  for (u in ticks) if (!(u in seen)) { print "gone", u; delete ticks[u]; delete shown_cpu[u]; delete shown_mib[u] }
  for (u in seen) delete seen[u];
  prev_now = now; fflush(); next
}
NF >= 24 { u = $1; seen[u] = 1; cur_ticks[u] = $14 + $15; cur_rss[u] = $24 * page }
""".split()
)  # one line: a login shell of the csh family would not take a newline inside quotes


def domain_stats_command(interval: int = 2) -> str:
    """Every ``interval`` s: each qemu process with ``-uuid`` -> its CPU % of one host CPU (since the
    last sample) and its RSS; printed as ``vm UUID CPU RSS_BYTES`` only when the CPU % or the RSS
    in MiB changed, ``gone UUID`` when the process went away."""
    if isinstance(interval, bool) or not isinstance(interval, int) or not 1 <= interval <= 3600:
        raise ValueError(f"domain stats interval must be 1..3600 seconds, not {interval!r}")
    sampler = (
        "while :; do "
        "echo \"@ $(cut -d' ' -f1 /proc/uptime)\"; "
        "ps -ww -eo pid=,args= | "
        "awk '$2 ~ /qemu/ { for (i = 3; i < NF; i++) if ($i == \"-uuid\") { print $1, $(i + 1); break } }' | "
        "while read -r pid uuid; do stat=$(cat /proc/$pid/stat 2>/dev/null) || continue; "
        "echo \"$uuid $pid ${stat##*) }\"; done; "
        "echo .; "
        f"sleep {interval}; done"
    )
    return (
        "hz=$(getconf CLK_TCK 2>/dev/null || echo 100); page=$(getconf PAGESIZE 2>/dev/null || echo 4096); "
        # mawk reads a pipe in blocks unless told otherwise: samples would arrive minutes late
        "interactive=; awk -W version 2>&1 | grep -q mawk && interactive='-W interactive'; "
        f"{sampler} | awk $interactive -v hz=\"$hz\" -v page=\"$page\" {shlex.quote(_DOMSTATS_AWK)}"
    )


@dataclass(frozen=True)
class DomainStats:
    uuid: str
    cpu_percent: float | None  # None: gone, or not known yet (first sample)
    memory_used: int | None
    gone: bool = False


def parse_domain_stats(line: str) -> DomainStats:
    words = line.split()
    if len(words) == 2 and words[0] == "gone" and _is_uuid(words[1]):
        return DomainStats(words[1].lower(), None, None, gone=True)
    if len(words) == 4 and words[0] == "vm" and _is_uuid(words[1]):
        cpu = None if words[2] == "-" else words[2]
        if (cpu is None or (cpu.isdigit() and len(cpu) <= 6)) and words[3].isdigit() and len(words[3]) <= 20:
            return DomainStats(words[1].lower(), float(cpu) if cpu is not None else None, int(words[3]))
    raise ParseError("domain stats", f"line {line[:80]!r} is not 'vm UUID CPU RSS' or 'gone UUID'")


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def apply_domain_state(
    current: VirtualMachineDynamic | None, host_id: str, state: DomainState, *, managed: bool, now: dt.datetime
) -> VirtualMachineDynamic | None:
    """The VirtualMachineDynamic after ``state`` was seen on ``host_id``; None = no document (an
    unmanaged domain that stopped). Returns ``current`` when the event is about a copy on another
    host (the VM moved there), so a late "stopped" from a migration source never downs the VM."""
    owner = current.host_id if current is not None else None
    mine = owner in (None, host_id)
    status = state.status
    base = current or VirtualMachineDynamic(id=state.uuid)
    graphics: dict[str, Any] = {}  # where its graphical console listens (SPICE or VNC), once known
    if state.spice_port is not None:
        graphics.update(spice_address=state.spice_address, spice_port=state.spice_port)
    if state.vnc_port is not None:
        graphics.update(vnc_address=state.vnc_address, vnc_port=state.vnc_port)
    if status is VmStatus.up:
        if state.event is DomainEvent.started and state.migrating and not mine:
            return base.evolve(status=VmStatus.migrating, updated_at=now)
        return base.evolve(host_id=host_id, status=VmStatus.up, updated_at=now, **graphics)
    if status in (VmStatus.paused, VmStatus.migrating):
        if not mine:
            return current
        return base.evolve(host_id=host_id, status=status, updated_at=now, **graphics)
    # down, or no such domain any more
    if not mine:
        return current
    if state.migrating and state.event is DomainEvent.stopped:
        # left for another host: that host's "resumed" moves it; until then it is migrating
        return base.evolve(status=VmStatus.migrating, updated_at=now)
    if not managed:
        return None
    return base.evolve(host_id=None, status=VmStatus.down, updated_at=now, memory_given=None,
                       cpu_percent=None, memory_used=None, spice_address=None, spice_port=None,
                       vnc_address=None, vnc_port=None)
