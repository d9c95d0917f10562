"""The monitor of one host: its streams and libvirt link kept running, their lines and events into documents."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
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
from kerub_tui.core.validation import describe
from kerub_tui.ssh import HostConnection, NotConnected, SshError
from kerub_tui.ssh.connection import cancel_and_wait

from .. import facts, ksm
from ..libvirt_link import DomainEvent, DomainState, LibvirtLink, LibvirtUnavailable
from ..parse import ParseError, VmstatParser, parse_smart_health
from .domains import DomainStats, apply_domain_state, domain_stats_command, parse_domain_stats
from .watch import SectionOutput, WatchParser, watch_command
from .writer import DocumentWriter

log = logging.getLogger(__name__)


MIB = 1 << 20


LAST_SEEN_REFRESH = 30.0  # seconds: last_seen alone is rewritten at most this often


_D = TypeVar("_D", bound=Document)


def _differs(doc: Document, changes: Mapping[str, Any]) -> bool:
    """Whether applying ``changes`` would change ``doc`` (compared before validating a copy)."""
    return any(getattr(doc, name) != value for name, value in changes.items())


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

    On every new connection: open the libvirt link and, meanwhile, run ``discover`` (the fleet's
    discovery, which waits for the link through ``opened_link``), then run the streams until the
    connection drops; then wait for the next one.
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
        self._opening: asyncio.Task[None] | None = None  # the link being opened on a new connection
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
                # the link opens while discovery's commands run; discovery waits for it (opened_link)
                self._opening = asyncio.create_task(self._open_link(), name=f"libvirt link:{self.name}")
                try:
                    if self.discover is not None:
                        await self.discover(self)
                    await self._opening
                finally:
                    await cancel_and_wait(self._opening)
                    self._opening = None
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
        storage = facts.read_storage({k: v for k, v in batch.items() if k in ("vgs", "lvs", "pvs", "images_fs")})
        for problem in storage.problems:
            self.problem("parse-error", f"{self.name}: {problem}", EventSeverity.warning)
        if not storage.problems or storage.free:
            changes["storage_free"] = storage.free
        if storage.pvs is not None:
            changes["storage_pvs"] = storage.pvs
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
        except BaseException:
            # Cancelled once the tunnel was up (a stop; a stream's failure cancelling its task group):
            # the link is nobody's yet, so its connection and tunnel socket go here or never.
            await asyncio.shield(link.close())
            raise
        self.link = link
        self.link_ready.set()

    async def opened_link(self) -> LibvirtLink | None:
        """The libvirt link once the attempt to open it on this connection is over (None: it failed)."""
        opening = self._opening
        if opening is not None:
            await asyncio.wait({opening})
        return self.link

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
