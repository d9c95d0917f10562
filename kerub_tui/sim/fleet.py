"""Simulated hosts behind the interface the controller uses for real ones.

A ``SimulatedFleet`` keeps every Host whose document says ``simulated``: it "connects" to each
(a short handshake, then discovery from the host's profile), then monitors it as the SSH fleet does,
through the same ``HostMonitor`` document code: ``vmstat 1`` lines into the same parser once a second,
the state watch's KSM and LVM JSON every few seconds when they changed, domain statistics and
libvirt lifecycle events for the guests. Commands and libvirt operations from the executor are
carried out by each host's ``Machine`` after realistic durations. Connection changes raise the same
Events and write the same HostDynamic fields as real ones; only ``Host.simulated`` tells them apart.

On demand (the demo, the fault tests, the benchmark): ``fail_host`` (power loss: the guests die with
it), ``recover_host`` (it boots and reconnects), ``disconnect``/``reconnect`` (a network flap: the
guests keep running) and ``reconnect_all``. ``power_off`` is each simulated host's BMC, a named fake of
IPMI (fencing: the guests die, the host stays off until it is recovered or woken).

    sim = SimulatedFleet(store, timing=Timing(scale=1.0))
    host = await sim.add_host("kvm01", "r640")
    await sim.start()
    await sim.wait_up(host.id)
    sim.fail_host(host.id)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kerub_tui.core.models import (
    Event,
    Host,
    HostConfiguration,
    HostDynamic,
    HostStatus,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDeviceDynamic,
    utcnow,
)
from kerub_tui.core.names import InvalidName, check_name
from kerub_tui.core.store import Store, StoreWriteError
from kerub_tui.hosts.fleet import FleetError, status_event
from kerub_tui.hosts.libvirt_link import DomainEvent
from kerub_tui.hosts.monitor import DocumentWriter, DomainStats, HostMonitor, MonitorSettings, SectionOutput
from kerub_tui.hosts.operations import EXIT_UNREACHABLE, OperationResult
from kerub_tui.hosts.results import ProgressReport
from kerub_tui.ssh import NotConnected

from .machine import Machine, Timing, migrate
from .profiles import profile as find_profile

log = logging.getLogger(__name__)

ADDRESS_DOMAIN = "sim.invalid"  # RFC 2606: a name that can never resolve, so nothing real is reached
DETECT_SECONDS = 3.0  # how long a lost host takes to notice (ssh keepalives), at timing scale 1
_VMSTAT_HEADER = (
    "--procs-- -----------------------memory---------------------- ---swap-- -----io---- -system-- "
    "----------cpu----------",
    "   r    b         swpd         free         buff        cache   si   so    bi    bo   in   cs  us  sy  id  wa  st  gu",  # noqa: E501
)


@dataclass
class _Member:
    host_id: str
    name: str
    machine: Machine
    monitor: HostMonitor
    status: HostStatus = HostStatus.connecting
    reason: str | None = None
    vmstat: Callable[[str], None] | None = None
    task: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    last_state: tuple[Any, ...] | None = None


class SimulatedFleet:
    """Every simulated Host in ``store``, connected, discovered and monitored."""

    def __init__(self, store: Store, *, timing: Timing | None = None, seed: int = 0,
                 writer: DocumentWriter | None = None, write_interval: float = 1.0,
                 monitor_settings: MonitorSettings | None = None) -> None:
        self.store = store
        self.timing = timing or Timing()
        self.seed = seed
        self.settings = monitor_settings or MonitorSettings()
        self.writer = writer or DocumentWriter(store, write_interval)
        self._own_writer = writer is None
        self._members: dict[str, _Member] = {}
        self.started = False

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self.started:
            return
        self.started = True
        for host in self.store.list(Host):
            if host.simulated and host.id not in self._members:
                self._attach(host)

    async def stop(self) -> None:
        members, self._members = list(self._members.values()), {}
        for member in members:
            self._cancel(member)
        await asyncio.gather(*(m.task for m in members if m.task is not None), return_exceptions=True)
        if self._own_writer:
            self.writer.close()
        self.started = False

    def has(self, host_id: str) -> bool:
        return host_id in self._members

    @property
    def host_ids(self) -> list[str]:
        return list(self._members)

    # --- joining and leaving ------------------------------------------------------------------

    async def add_host(self, name: str, profile: str, *, dedicated: bool = False) -> Host:
        """A new simulated host of ``profile`` (see sim.profiles); connected at once when started."""
        try:
            check_name(name, "host name")
        except InvalidName as error:
            raise FleetError(str(error)) from None
        find_profile(profile)
        if self.store.find_by_name(Host, name) is not None:
            raise FleetError(f"a host named {name!r} already exists")
        label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63] or "host"  # a DNS label
        host = Host(name=name, address=f"{label}.{ADDRESS_DOMAIN}", simulated=True, dedicated=dedicated,
                    capabilities=None)
        # The profile travels in the document (as discovery would find it), so a restarted
        # controller simulates the same machine.
        host = host.evolve(capabilities=find_profile(profile).capabilities(name))
        self.store.put(host)
        if self.started:
            self._attach(host)
        return host

    async def remove_host(self, host_id: str) -> None:
        member = self._members.pop(host_id, None)
        if member is not None:
            self._cancel(member)
            if member.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await member.task
        with self.store.transaction():
            self.store.delete(Host, host_id)
            self.store.delete(HostDynamic, host_id)
        with contextlib.suppress(Exception):
            self.writer.delete(HostDynamic, host_id)

    def _attach(self, host: Host) -> _Member:
        if host.capabilities is None:
            raise FleetError(f"simulated host {host.name} has no profile facts")
        rng = random.Random(f"{self.seed}:{host.id}")
        machine = Machine(host.name, host.capabilities, timing=self.timing, rng=rng)
        # on the simulated network: a portal qemu's initiator logs in to is the machine at that address
        machine.address, machine.peer = host.address, self._machine_at
        self._restore(machine, host.id)
        host_id = host.id
        # The monitor's document side only: its streams never start, the simulator feeds it.
        monitor = HostMonitor(host_id, host.name, None, self.writer, lambda: None,  # type: ignore[arg-type,return-value]
                              capabilities=lambda: self._capabilities(host_id), event=self._put_event,
                              settings=self.settings, streams=False)
        member = _Member(host_id, host.name, machine, monitor)
        machine.on_domain = lambda state: self._on_domain(member, state)
        machine.on_storage = lambda: self._report_state(member)
        self._members[host_id] = member
        self._set_status(member, HostStatus.connecting, None)
        self._connect(member, self.timing.connect)
        return member

    def _restore(self, machine: Machine, host_id: str) -> None:
        """What the documents say this host had (a controller restart is not a host reboot). A host
        last seen down comes back as one that was rebooted meanwhile: without its guests."""
        host_dyn = self.store.get(HostDynamic, host_id)
        rebooted = host_dyn is not None and host_dyn.status in (HostStatus.down, HostStatus.unreachable)
        guests = []
        for dyn in [] if rebooted else self.store.list(VirtualMachineDynamic):
            vm = self.store.get(VirtualMachine, dyn.id) if dyn.host_id == host_id else None
            if vm is not None:
                guests.append((vm, dyn))
        config = self.store.get(HostConfiguration, host_id)
        machine.restore(host_id, guests=guests, disks=self.store.list(VirtualStorageDeviceDynamic),
                        thin_pools=config.thin_pools if config is not None else [],
                        ksm=host_dyn.ksm if host_dyn is not None else None)

    def _machine_at(self, address: str) -> Machine | None:
        """The machine of the simulated host at ``address`` while it is reachable (a host down serves nothing)."""
        member = next((m for m in self._members.values() if m.machine.address == address), None)
        return member.machine if member is not None and member.status is HostStatus.up else None

    def _capabilities(self, host_id: str) -> Any:
        host = self.store.get(Host, host_id)
        return host.capabilities if host is not None else None

    def _cancel(self, member: _Member) -> None:
        if member.task is not None and not member.task.done():
            member.task.cancel()

    def member(self, host_id: str) -> _Member:
        member = self._members.get(host_id)
        if member is None:
            host = self.store.get(Host, host_id)
            raise FleetError(f"no simulated host with id {host_id}" if host is None
                             else f"host {host.name} is not simulated by this controller")
        return member

    def machine(self, host_id: str) -> Machine:
        return self.member(host_id).machine

    def status(self, host_id: str) -> HostStatus:
        return self.member(host_id).status

    # --- connection states ----------------------------------------------------------------------

    def _set_status(self, member: _Member, status: HostStatus, reason: str | None) -> None:
        """As the SSH fleet does: HostDynamic at once, an Event when the status changed."""
        member.status, member.reason = status, reason
        member.changed.set()
        current = self.writer.current(HostDynamic, member.host_id) or HostDynamic(id=member.host_id)
        self.writer.put(current.with_status(status, reason, utcnow()), urgent=True)
        if status is not current.status:
            event = status_event(member.host_id, member.name, status, reason)
            if event is not None:
                self._put_event(event)

    def _put_event(self, event: Event) -> None:
        try:
            self.store.put(event)
        except StoreWriteError:  # the store said once that writes fail: no traceback for each event
            log.info("event %s not stored: %s", event.type, self.store.write_failure)
        except Exception:
            log.exception("cannot store event %s", event.type)

    def _connect(self, member: _Member, delay: float) -> None:
        self._cancel(member)
        member.task = asyncio.create_task(self._session(member, delay), name=f"sim:{member.name}")

    async def _session(self, member: _Member, delay: float) -> None:
        """Connect (after ``delay``), discover, then monitor until the connection is lost."""
        machine = member.machine
        await asyncio.sleep(self.timing.seconds(delay * machine.rng.uniform(0.5, 1.5)))
        if not (machine.up and machine.reachable):
            self._set_status(member, HostStatus.down if member.status is HostStatus.down else HostStatus.unreachable,
                             f"connect to {member.name} port 22: No route to host")
            return
        self._set_status(member, HostStatus.up, None)
        member.monitor.apply_sync([d.state(DomainEvent.sync) for d in machine.running()])
        member.vmstat = member.monitor.vmstat_handler()
        for line in _VMSTAT_HEADER:
            member.vmstat(line)
        member.last_state = None
        self._report_state(member)
        ticks = 0
        # Spread the hosts' seconds apart, as real hosts' clocks are.
        await asyncio.sleep(self.timing.seconds(machine.rng.random()))
        while True:
            self._vmstat_tick(member)
            ticks += 1
            if ticks % max(1, self.settings.domain_stats_interval) == 0:
                self._domain_stats_tick(member)
            if ticks % max(1, self.settings.state_interval) == 0:
                machine.ksm_tick()
                self._report_state(member)
            # Monitoring runs at real rates; at scale 0 (tests) a tick still yields, once a second.
            await asyncio.sleep(self.timing.seconds(self.settings.vmstat_interval) or 1.0)

    def _vmstat_tick(self, member: _Member) -> None:
        machine = member.machine
        user, system, _idle = machine.load()
        total_kib = machine.memory // 1024
        used_kib = machine.used_memory() // 1024
        buff = 64 * 1024
        cache = max(0, min(8 * 1024 * 1024, (total_kib - used_kib) // 3))
        free = max(0, total_kib - used_kib - buff - cache)
        running = len(machine.running())
        line = (
            f"{min(running, machine.cpus) // 4:4d} {0:4d} {0:12d} {free:12d} {buff:12d} {cache:12d} {0:4d} {0:4d} "
            f"{machine.rng.randint(0, 400):5d} {machine.rng.randint(20, 2000):5d} "
            f"{machine.rng.randint(300, 5000):4d} {machine.rng.randint(500, 9000):4d} "
            f"{round(user):3d} {round(system):3d} {max(0, 100 - round(user) - round(system)):3d} {0:3d} {0:3d} {0:3d}"
        )
        assert member.vmstat is not None
        member.vmstat(line)

    def _domain_stats_tick(self, member: _Member) -> None:
        for domain in member.machine.wander():
            member.monitor.apply_stats(DomainStats(domain.vm_id, round(domain.cpu_percent),
                                                   int(domain.memory * domain.rss_share) // (1 << 20) * (1 << 20)))

    def _report_state(self, member: _Member) -> None:
        """The state watch's batch (KSM, LVM, the image filesystem), only when it changed."""
        if member.status is not HostStatus.up:
            return
        machine = member.machine
        batch = {
            "ksm": SectionOutput(0, machine.ksm_text()),
            "vgs": SectionOutput(0, machine.vgs_json()),
            "lvs": SectionOutput(0, machine.lvs_json()),
            "images_fs": SectionOutput(0, machine.findmnt_json()),
        }
        key = tuple(output.stdout for _, output in sorted(batch.items()))
        if key == member.last_state:
            return
        member.last_state = key
        member.monitor.apply_state(batch)

    def _on_domain(self, member: _Member, state: Any) -> None:
        if member.status is HostStatus.up:  # libvirt events come only over a live connection
            member.monitor.apply_domain(state)

    # --- faults on demand ---------------------------------------------------------------------

    def fail_host(self, host_id: str, reason: str = "power loss") -> None:
        """The machine loses power: guests die; the controller notices after its keepalives miss."""
        member = self.member(host_id)
        member.machine.crash()
        self._lose(member, f"connection lost: {reason} (simulated)")

    def recover_host(self, host_id: str, *, boot: float | None = None) -> None:
        """Power back: the machine boots (``boot`` seconds, scaled) and the controller reconnects."""
        member = self.member(host_id)
        member.machine.boot()
        member.machine.reachable = True
        self._connect(member, self.timing.boot if boot is None else boot)

    async def wake(self, host_id: str) -> OperationResult:
        """A wake-up from the controller: a machine that is off boots (as after a power loss)."""
        member = self._members.get(host_id)
        if member is None:
            return OperationResult(EXIT_UNREACHABLE, "", f"host {host_id} is not a simulated host of this controller")
        if member.machine.up:
            return OperationResult(0, f"{member.name} is already on", "")
        self.recover_host(host_id)
        return OperationResult(0, f"{member.name} boots", "")

    async def power_off(self, host_id: str) -> OperationResult:
        """The simulated host's BMC (a named fake: no IPMI hardware exists here) powers it off, as
        ``ipmitool ... chassis power off`` would: its guests die; the controller loses it, if it had it."""
        member = self._members.get(host_id)
        if member is None:
            return OperationResult(EXIT_UNREACHABLE, "", f"host {host_id} is not a simulated host of this controller")
        member.machine.crash()
        member.machine.reachable = False
        if member.status is HostStatus.up:
            self._lose(member, "connection lost: powered off through IPMI (simulated)")
        return OperationResult(0, "Chassis Power Control: Down/Off\nChassis Power is off (simulated BMC)\n", "")

    def disconnect(self, host_id: str, reason: str = "network unreachable") -> None:
        """The network to the host goes: its guests keep running, the controller loses sight of it."""
        member = self.member(host_id)
        member.machine.reachable = False
        self._lose(member, f"connection lost: {reason} (simulated)")

    def reconnect(self, host_id: str) -> None:
        member = self.member(host_id)
        member.machine.reachable = True
        if member.machine.up:
            self._connect(member, self.timing.connect)

    def reconnect_all(self) -> None:
        """Every host's connection drops and comes back at once (the controller's network blinked)."""
        for member in list(self._members.values()):
            if member.status is HostStatus.up:
                self._cancel(member)
                self._set_status(member, HostStatus.down, "connection lost: Connection reset by peer (simulated)")
            if member.machine.up:
                self._connect(member, self.timing.connect)

    def _lose(self, member: _Member, reason: str) -> None:
        self._cancel(member)
        member.task = asyncio.create_task(self._noticed(member, reason), name=f"sim-lost:{member.name}")

    async def _noticed(self, member: _Member, reason: str) -> None:
        await asyncio.sleep(self.timing.seconds(DETECT_SECONDS))
        if member.status is not HostStatus.down:
            self._set_status(member, HostStatus.down, reason)

    async def wait_up(self, host_id: str, timeout: float | None = None) -> None:
        """Until the host is up, and the store says so (a step's checks read the store)."""
        member = self.member(host_id)
        try:
            async with asyncio.timeout(timeout):
                while member.status is not HostStatus.up:
                    member.changed.clear()
                    await member.changed.wait()
                await self.writer.drained()
        except TimeoutError:
            raise NotConnected(f"host {member.name} is {member.status.value}: {member.reason}") from None

    # --- the executor's HostOperations ----------------------------------------------------------

    def _reachable(self, host_id: str) -> _Member | OperationResult:
        member = self._members.get(host_id)
        if member is None:
            return OperationResult(EXIT_UNREACHABLE, "", f"host {host_id} is not a simulated host of this controller")
        if member.status is not HostStatus.up:
            return OperationResult(
                EXIT_UNREACHABLE, "", f"host {member.name} is {member.status.value}: {member.reason}"
            )
        return member

    async def run(self, host_id: str, command: str, *, privileged: bool = True,
                  on_stderr: Callable[[bytes], None] | None = None, input: bytes | None = None) -> OperationResult:
        member = self._reachable(host_id)
        if isinstance(member, OperationResult):
            return member
        return await member.machine.shell(command, on_stderr, input)

    async def libvirt(self, host_id: str, op: str, *, on_progress: ProgressReport | None = None,
                      **kwargs: Any) -> OperationResult:
        """``on_progress`` hears how far a migration got (the other operations do not report)."""
        member = self._reachable(host_id)
        if isinstance(member, OperationResult):
            return member
        if op == "migrate":
            target = self._reachable(kwargs["target_host_id"])
            if isinstance(target, OperationResult):
                return OperationResult(1, "", "operation failed: Failed to connect to remote libvirt URI: "
                                       f"{target.stderr}")
            return await migrate(member.machine, target.machine, kwargs.get("vm_id", ""),
                                 bool(kwargs.get("copy_storage")), on_progress)
        return await member.machine.libvirt(op, **kwargs)


__all__ = ["ADDRESS_DOMAIN", "SimulatedFleet"]
