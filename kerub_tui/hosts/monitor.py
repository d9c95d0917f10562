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
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import shlex
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from kerub_tui.core.logs import bind_host
from kerub_tui.core.models import (
    Document,
    Event,
    EventSeverity,
    HostCapabilities,
    HostDynamic,
    VirtualMachine,
    VirtualMachineDynamic,
    VmStatus,
    utcnow,
)
from kerub_tui.core.store import Store, StoreWriteError
from kerub_tui.core.validation import describe
from kerub_tui.ssh import HostConnection, NotConnected, SshError
from kerub_tui.ssh.connection import cancel_and_wait

from . import facts, ksm
from .libvirt_link import DomainEvent, DomainState, LibvirtLink, LibvirtUnavailable
from .parse import ParseError, VmstatParser, parse_smart_health

log = logging.getLogger(__name__)

MIB = 1 << 20
_MARK = "@@kerub:"
LAST_SEEN_REFRESH = 30.0  # seconds: last_seen alone is rewritten at most this often


# --- the state watch: sections printed only when they change ------------------------------------


def watch_command(sections: Mapping[str, str], interval: int, every: Mapping[str, int] | None = None) -> str:
    """A remote loop running each section's command every ``interval`` seconds and printing the
    whole batch (framed by markers, with exit statuses) only when it differs from the last one.

    ``every[name] = k`` runs that section only every k-th round (SMART: every few minutes); its
    last output stands in between.
    """
    if isinstance(interval, bool) or not isinstance(interval, int) or not 1 <= interval <= 86400:
        raise ValueError(f"watch interval must be 1..86400 seconds, not {interval!r}")
    if not sections:
        raise ValueError("a watch needs at least one section")
    every = every or {}
    slow, parts = [], []
    for name, command in sections.items():
        if not name.replace("_", "").isalnum() or not name.isascii():
            raise ValueError(f"section name {name!r} must be letters, digits and '_'")
        section = f"echo {shlex.quote(_MARK + 'section ' + name)}; ( {command} ) 2>/dev/null; echo \"{_MARK}status $?\""
        rounds = every.get(name, 1)
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"section {name}: every must be a positive whole number of rounds")
        if rounds == 1:
            parts.append(section)
        else:
            slow.append(f"if [ $((n % {rounds})) -eq 0 ]; then s_{name}=$({section}); fi; ")
            parts.append(f"printf '%s\\n' \"$s_{name}\"")
    batch = "; ".join(parts)
    return (
        f"n=0; prev=; while :; do {''.join(slow)}cur=$({batch}); "
        f"if [ \"$cur\" != \"$prev\" ]; then printf '%s\\n{_MARK}end\\n' \"$cur\"; prev=$cur; fi; "
        f"n=$((n + 1)); sleep {interval}; done"
    )


@dataclass(frozen=True)
class SectionOutput:
    exit_code: int | None
    stdout: str
    stderr: str = ""


class WatchParser:
    """Feed it the watch's lines; it returns {section: SectionOutput} at the end of each batch."""

    def __init__(self) -> None:
        self._sections: dict[str, list[str]] = {}
        self._status: dict[str, int | None] = {}
        self._current: str | None = None

    def feed(self, line: str) -> dict[str, SectionOutput] | None:
        if line.startswith(_MARK):
            word, _, rest = line[len(_MARK):].partition(" ")
            if word == "section":
                self._current = rest.strip()
                self._sections[self._current] = []
                self._status[self._current] = None
            elif word == "status" and self._current is not None:
                self._status[self._current] = int(rest) if rest.strip().isdigit() else None
                self._current = None
            elif word == "end":
                batch = {
                    name: SectionOutput(self._status.get(name), "".join(line + "\n" for line in lines))
                    for name, lines in self._sections.items()
                }
                self._sections, self._status, self._current = {}, {}, None
                return batch
            return None
        if self._current is not None:
            lines = self._sections[self._current]
            if len(lines) < 100_000:
                lines.append(line)
        return None


# --- the domain stats watch -------------------------------------------------------------------------

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


# --- coalesced writes ------------------------------------------------------------------------------


class DocumentWriter:
    """Pending document versions, written to the store at most once per ``interval`` seconds.

    Everything runs on the loop thread (the store is not thread-safe). A flush is scheduled only
    when something is pending: no timer runs while nothing changes.
    """

    def __init__(self, store: Store, interval: float = 1.0) -> None:
        self.store = store
        self.interval = interval
        self._pending: dict[tuple[str, str], Document | None] = {}
        self._handle: asyncio.Handle | None = None
        self._last_flush = 0.0
        self.writes = 0

    def current(self, cls: type[Any], doc_id: str) -> Any:
        key = (cls.model_fields["kind"].default, doc_id)
        if key in self._pending:
            return self._pending[key]
        return self.store.get(cls, doc_id)

    def put(self, doc: Document, *, urgent: bool = False) -> None:
        self._pending[(doc.kind, doc.id)] = doc
        self._schedule(urgent)

    def delete(self, cls: type[Any], doc_id: str, *, urgent: bool = True) -> None:
        self._pending[(cls.model_fields["kind"].default, doc_id)] = None
        self._schedule(urgent)

    def _schedule(self, urgent: bool) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.0 if urgent else max(0.0, self._last_flush + self.interval - loop.time())
        if self._handle is not None:
            if not urgent:
                return
            self._handle.cancel()
        self._handle = loop.call_later(delay, self.flush)

    def flush(self) -> None:
        self._handle = None
        pending, self._pending = self._pending, {}
        if not pending:
            return
        self._last_flush = asyncio.get_running_loop().time()
        try:
            with self.store.transaction():
                for (kind, doc_id), doc in pending.items():
                    if doc is None:
                        self.store.delete(kind, doc_id)
                    elif self.store.get(kind, doc_id) != doc:
                        self.store.put(doc)
                        self.writes += 1
        except StoreWriteError:  # the store says once that writes fail; these are tried again next time
            for key, doc in pending.items():
                self._pending.setdefault(key, doc)
        except Exception:
            log.exception("writing %d monitored documents failed", len(pending))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        with contextlib.suppress(RuntimeError):
            self.flush()


_D = TypeVar("_D", bound=Document)


def _differs(doc: Document, changes: Mapping[str, Any]) -> bool:
    """Whether applying ``changes`` would change ``doc`` (compared before validating a copy)."""
    return any(getattr(doc, name) != value for name, value in changes.items())


# --- VM documents from domain states -----------------------------------------------------------


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
    spice = {}
    if state.spice_port is not None:
        spice = {"spice_address": state.spice_address, "spice_port": state.spice_port}
    if status is VmStatus.up:
        if state.event is DomainEvent.started and state.migrating and not mine:
            return base.evolve(status=VmStatus.migrating, updated_at=now)
        return base.evolve(host_id=host_id, status=VmStatus.up, updated_at=now, **spice)
    if status in (VmStatus.paused, VmStatus.migrating):
        if not mine:
            return current
        return base.evolve(host_id=host_id, status=status, updated_at=now, **spice)
    # down, or no such domain any more
    if not mine:
        return current
    if state.migrating and state.event is DomainEvent.stopped:
        # left for another host: that host's "resumed" moves it; until then it is migrating
        return base.evolve(status=VmStatus.migrating, updated_at=now)
    if not managed:
        return None
    return base.evolve(host_id=None, status=VmStatus.down, updated_at=now,
                       cpu_percent=None, memory_used=None, spice_address=None, spice_port=None)


# --- the monitor of one host ---------------------------------------------------------------------


@dataclass(frozen=True)
class MonitorSettings:
    vmstat_interval: int = 1
    state_interval: int = 5  # KSM, LVM, image filesystem, temperature
    smart_interval: int = 600  # SMART health of each disk (a multiple of state_interval)
    domain_stats_interval: int = 2
    restart_initial: float = 2.0  # a stream that ended by itself is restarted after this (backoff)
    restart_max: float = 300.0


Discoverer = Callable[["HostMonitor"], Awaitable[object]]  # what it returns is not used
ProblemSink = Callable[[str, str, EventSeverity, "str | None"], None]


class HostMonitor:
    """Keeps the streams and the libvirt link of one host running for as long as it is monitored.

    On every new connection: open the libvirt link, run ``discover`` (the fleet's discovery, which
    may use the link), then run the streams until the connection drops; then wait for the next one.
    """

    def __init__(
        self,
        host_id: str,
        name: str,
        connection: HostConnection,
        writer: DocumentWriter,
        link_factory: Callable[[], LibvirtLink],
        *,
        discover: Discoverer | None = None,
        capabilities: Callable[[], HostCapabilities | None] = lambda: None,
        event: Callable[[Event], None] | None = None,
        settings: MonitorSettings | None = None,
        streams: bool = True,
    ) -> None:
        self.host_id = host_id
        self.streams = streams  # False: discovery and the libvirt link only (a one-shot controller)
        self.name = name
        self.host = connection
        self.writer = writer
        self.link_factory = link_factory
        self.discover = discover
        self.capabilities = capabilities  # the host's discovered facts, read when streams start
        self._smart: dict[str, str] = {}  # state watch section -> block device
        self.settings = settings or MonitorSettings()
        self._event = event
        self.link: LibvirtLink | None = None
        self.link_ready = asyncio.Event()
        self.samples = 0  # vmstat samples seen, for tests and the console's liveness display
        self._task: asyncio.Task[None] | None = None
        self._reported: set[str] = set()
        self._pending_stats: dict[str, DomainStats] = {}
        self._generation = 0
        self._stopping = False

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=f"monitor:{self.name}")

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self._close_link()

    async def _close_link(self) -> None:
        link, self.link = self.link, None
        self.link_ready.clear()
        if link is not None:
            await link.close()

    async def _run(self) -> None:
        bind_host(self.name)  # every line of this host's monitoring (its streams, discovery) names it
        while not self._stopping:
            try:
                await self.host.connection(wait=None)
            except NotConnected:
                return  # the connection was closed for good
            generation = self.host.generation
            self._generation = generation
            self._reported.clear()
            try:
                await self._open_link()
                if self.discover is not None:
                    await self.discover(self)
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._keep_link(generation))
                    if self.streams:
                        vmstat, state = self._vmstat_command(), self._state_command()
                        domstats = domain_stats_command(self.settings.domain_stats_interval)
                        group.create_task(self._keep_stream("vmstat", vmstat, self.vmstat_handler, False))
                        group.create_task(self._keep_stream("state", state, self._state_handler, True))
                        group.create_task(self._keep_stream("domain stats", domstats, self._domstats_handler, False))
            except* (NotConnected, SshError):
                pass
            except* Exception as errors:  # a bug must not end monitoring of the host for good
                log.error("%s: monitor failed", self.name, exc_info=errors.exceptions[0])
            await self._close_link()
            await self._wait_for_new_connection(generation)

    async def _wait_for_new_connection(self, generation: int) -> None:
        with contextlib.suppress(TimeoutError):
            await self.host.wait_state(lambda _state: self.host.generation != generation or not self.host.is_up, 60)
        if self.host.generation == generation and self.host.is_up:
            await asyncio.sleep(self.settings.restart_initial)  # something odd: do not spin

    # --- streams ------------------------------------------------------------------------------

    async def _keep_stream(
        self, name: str, command: str, make_handler: Callable[[], Callable[[str], None]], privileged: bool
    ) -> None:
        """Run one stream for the life of this connection; restart it (with backoff) if it ends."""
        delay = self.settings.restart_initial
        generation = self.host.generation
        while self._live(generation):
            async with self.host.stream(command, privileged=privileged) as stream:
                handle = make_handler()  # a fresh parser per run
                async for line in stream:
                    handle(line)
                with contextlib.suppress(TimeoutError, NotConnected):
                    # Ended because the connection is going? Give the supervisor a moment to see it.
                    conn = await self.host.connection()
                    async with asyncio.timeout(2):
                        await conn.wait_closed()
            if self.host.generation != generation or not self.host.is_up:
                return  # the connection went: the monitor restarts everything on the next one
            detail = "; ".join(stream.stderr_tail[-3:]) or f"exit status {stream.exit_code}"
            self.problem("stream-ended", f"{name} stream on {self.name} ended: {detail[:300]}; restarting",
                         EventSeverity.warning)
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, self.settings.restart_max)

    def _vmstat_command(self) -> str:
        interval = self.settings.vmstat_interval
        return f"LC_ALL=C vmstat -n -w {interval} 2>/dev/null || LC_ALL=C vmstat -n {interval}"

    def _state_command(self) -> str:
        sections = {"ksm": ksm.ksm_read_command(), "thermal": facts.thermal_command()}
        sections.update(facts.storage_monitor_commands())
        every: dict[str, int] = {}
        self._smart = {}
        capabilities = self.capabilities()
        if capabilities is not None and capabilities.tools.get("smartctl"):
            rounds = max(1, self.settings.smart_interval // self.settings.state_interval)
            for index, device in enumerate(facts.smart_devices(capabilities)[:64]):
                try:
                    command = facts.smart_health_command(device)
                except ValueError:
                    continue  # lsblk said something odd: not worth a watch
                name = f"smart_{index}"
                sections[name] = command
                every[name] = rounds
                self._smart[name] = device
        return watch_command(sections, self.settings.state_interval, every)

    def vmstat_handler(self) -> Callable[[str], None]:
        capabilities = self.capabilities()
        memory_total = capabilities.memory_bytes if capabilities and capabilities.memory_bytes else None
        parser = VmstatParser(memory_total=memory_total, unit=facts.VMSTAT_UNIT)

        def handle(line: str) -> None:
            try:
                sample = parser.feed(line)
            except ParseError as error:
                self.problem("parse-error", f"{self.name}: {error}", EventSeverity.warning)
                return
            if sample is None or sample.since_boot:
                return
            self.samples += 1
            self.update_host(
                cpu_user=sample.cpu_user,
                cpu_system=sample.cpu_system,
                cpu_idle=sample.cpu_idle,
                memory_free=_to_mib(sample.memory_free),
                memory_used=_to_mib(sample.memory_used) if sample.memory_used is not None else None,
                swap_used=_to_mib(sample.swap_used),
            )

        return handle

    def _state_handler(self) -> Callable[[str], None]:
        parser = WatchParser()

        def handle(line: str) -> None:
            batch = parser.feed(line)
            if batch is not None:
                self.apply_state(batch)

        return handle

    def apply_state(self, batch: Mapping[str, SectionOutput]) -> None:
        """One batch of the state watch (KSM, storage, temperature) into HostDynamic."""
        changes: dict[str, Any] = {}
        if "ksm" in batch:
            try:
                if batch["ksm"].exit_code != 0:
                    raise ParseError(ksm.COMMAND, f"exit status {batch['ksm'].exit_code}")
                changes["ksm"] = ksm.parse_ksm(batch["ksm"].stdout)
            except ParseError as error:
                self.problem("parse-error", f"{self.name}: {error}", EventSeverity.warning)
        storage = facts.read_storage({k: v for k, v in batch.items() if k in ("vgs", "lvs", "images_fs")})
        for problem in storage.problems:
            self.problem("parse-error", f"{self.name}: {problem}", EventSeverity.warning)
        if not storage.problems or storage.free:
            changes["storage_free"] = storage.free
        if "thermal" in batch:
            temperature, problems = facts.read_temperature(batch["thermal"])
            for problem in problems:
                self.problem("parse-error", f"{self.name}: {problem}", EventSeverity.warning)
            if not problems:
                changes["cpu_temperature"] = temperature
        failing, smart_read = [], False
        for name, device in self._smart.items():
            output = batch.get(name)
            if output is None or not output.stdout.strip():
                continue
            try:
                # smartctl's exit status is a bit mask that is non-zero for a failing disk itself
                health = parse_smart_health(output.stdout)
            except ParseError as error:
                self.problem("parse-error", f"{self.name}: {device}: {error}", EventSeverity.warning)
                continue
            smart_read = True
            if health.failing:
                failing.append(device)
        if smart_read:
            changes["failing_devices"] = sorted(failing)
        if changes:
            self.update_host(**changes)

    def _domstats_handler(self) -> Callable[[str], None]:
        def handle(line: str) -> None:
            try:
                stats = parse_domain_stats(line)
            except ParseError as error:
                self.problem("parse-error", f"{self.name}: {error}", EventSeverity.warning)
                return
            self.apply_stats(stats)

        return handle

    # --- documents ----------------------------------------------------------------------------

    def update_host(self, *, urgent: bool = False, **changes: Any) -> None:
        current: HostDynamic = self.writer.current(HostDynamic, self.host_id) or HostDynamic(id=self.host_id)
        now = utcnow()
        stale = current.last_seen is None or (now - current.last_seen).total_seconds() >= LAST_SEEN_REFRESH
        if not stale and not _differs(current, changes):
            return
        # one validated copy per sample (Frozen.evolve; bench/documents.py measures its cost)
        updated = self._validated(current, changes, last_seen=now)
        if updated is not None:
            self.writer.put(updated, urgent=urgent)

    def _validated(self, current: _D, changes: Mapping[str, Any], **stamp: Any) -> _D | None:
        """``current`` with ``changes``, or None (and one event) when a value read from the host does
        not fit the document: nothing of it is written, the document keeps its last good values."""
        try:
            return current.evolve(**changes, **stamp)
        except ValidationError as error:
            self.problem("parse-error", f"{self.name}: {current.kind} {current.id}: {describe(error)}",
                         EventSeverity.warning)
            return None

    def apply_stats(self, stats: DomainStats) -> None:
        current: VirtualMachineDynamic | None = self.writer.current(VirtualMachineDynamic, stats.uuid)
        if stats.gone:
            self._pending_stats.pop(stats.uuid, None)
            return  # the lifecycle event says what happened to it
        if current is None or current.host_id != self.host_id:
            self._pending_stats[stats.uuid] = stats  # its lifecycle document comes a moment later
            return
        changes: dict[str, Any] = {"memory_used": stats.memory_used}
        if stats.cpu_percent is not None:
            changes["cpu_percent"] = stats.cpu_percent
        if _differs(current, changes):
            updated = self._validated(current, changes, updated_at=utcnow())
            if updated is not None:
                self.writer.put(updated)

    def apply_domain(self, state: DomainState) -> None:
        managed = self.writer.store.get(VirtualMachine, state.uuid) is not None
        current: VirtualMachineDynamic | None = self.writer.current(VirtualMachineDynamic, state.uuid)
        updated = apply_domain_state(current, self.host_id, state, managed=managed, now=utcnow())
        if updated is None:
            if current is not None:
                self.writer.delete(VirtualMachineDynamic, state.uuid)
            return
        if updated is current:
            return
        if not managed and state.status is not VmStatus.down and current is None:
            self.problem(
                "unmanaged-domain",
                f"domain {state.name} ({state.uuid}) on {self.name} was not created by kerub-tui; "
                "it is shown and its load is counted, but no expectation applies to it",
                EventSeverity.info,
                target=state.uuid,
            )
        stats = self._pending_stats.pop(state.uuid, None)
        if stats is not None and updated.host_id == self.host_id:
            updated = updated.evolve(memory_used=stats.memory_used, cpu_percent=stats.cpu_percent)
        self.writer.put(updated, urgent=True)

    def apply_sync(self, states: list[DomainState]) -> None:
        """Everything libvirt has now: update the running ones, and down the documents that still
        place a VM here although no such domain runs here any more (it changed while we were away)."""
        running = set()
        for state in states:
            if state.status is not None and state.status is not VmStatus.down:
                running.add(state.uuid)
                self.apply_domain(state)
        for vm_id in self.writer.store.vms_on_host(self.host_id):
            if vm_id not in running:
                current = self.writer.current(VirtualMachineDynamic, vm_id)
                if current is not None and current.host_id == self.host_id:
                    self.apply_domain(DomainState(vm_id, vm_id, DomainEvent.sync, None))

    def problem(self, type_: str, message: str, severity: EventSeverity, target: str | None = None) -> None:
        """An Event, once per message per connection (a stream repeating itself is not news)."""
        key = f"{type_}\0{target}\0{message}"
        if key in self._reported:
            return
        self._reported.add(key)
        if len(self._reported) > 1000:
            self._reported.clear()
        log.info("%s: %s", self.name, message)
        if self._event is not None:
            self._event(Event(type=type_, severity=severity, host_id=self.host_id, target=target, message=message))

    # --- libvirt --------------------------------------------------------------------------------

    async def _open_link(self) -> None:
        await self._close_link()
        link = self.link_factory()
        link.on_domain = self.apply_domain
        try:
            await link.open()
            self.apply_sync(await link.sync())
        except (LibvirtUnavailable, TimeoutError) as error:
            await link.close()
            self.problem("libvirt-unavailable", str(error), EventSeverity.warning)
            return
        self.link = link
        self.link_ready.set()

    async def _keep_link(self, generation: int) -> None:
        """Keep the libvirt link open while the connection lives (libvirtd may restart)."""
        delay = self.settings.restart_initial
        while self._live(generation):
            link = self.link
            if link is not None:
                await link.closed.wait()
                await self._close_link()
                if self.host.generation != generation or not self.host.is_up:
                    return
                delay = self.settings.restart_initial
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, self.settings.restart_max)
            if not self._live(generation):
                return
            await self._open_link()

    def _live(self, generation: int) -> bool:
        """Still monitoring, on the same connection."""
        return not self._stopping and self.host.generation == generation and self.host.is_up


def _to_mib(value: int) -> int:
    """Memory rounded to whole MiB: the kernel's page-level churn is not a change worth a write."""
    return (value + MIB // 2) // MIB * MIB
