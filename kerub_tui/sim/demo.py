"""The demo (issue 7): a guided tour of kerub-tui for someone who has no hosts yet.

``seed(controller)`` fills an empty data dir with a simulated fleet through the controller's own
actions: twelve hosts of mixed kinds (rack servers, AMD and Arm servers, a storage server, two mini
PCs and an old server), about forty VMs with the expectations an admin would give them, and lets
the planner place and start them (it approves the planner's own start-up plans, as an admin would on
day one). Then the admin learns that the old server's end of life has passed: the planner proposes
to evacuate it, and that proposal is what the tour opens with.

``tour(controller)`` is the scripted part that runs while the console is open: about 25 seconds in,
one busy host loses power; its VMs must run and have ``ha``, so the planner proposes fencing it (its
BMC powers it off: each demo host has one, the simulator's named fake of IPMI) and restarting them
elsewhere (respecting the web tier's anti-affinity). Once that host is empty, or after a few minutes, its power
comes back and it rejoins the fleet. The tour replays on every run: it picks the host at run time.

Seeding is idempotent: each host, disk and VM is created only when missing, and a finished seed is
recorded in the audit log ("demo seed"), so running the demo again continues the same fleet (the
simulator restores each machine from the documents) without approving anything the admin has not.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kerub_tui.core.models import (
    DiskLink,
    Host,
    HostStatus,
    Plan,
    PlanStatus,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDevice,
    VmStatus,
)

log = logging.getLogger(__name__)

GIB = 1 << 30
SEED_ACTION = "demo seed"  # the audit entry that marked a finished seed (before Settings.demo_seeded_at)
_SEED_LOOKBACK = 100_000  # audit entries read for that old marker (a demo data dir holds far fewer)
SEED_ACTOR = "demo set-up"  # who the set-up's own acts (approvals, hosts, VMs) are recorded as done by
SIM_SEED = 7  # the simulator's random seed for the demo: the same loads and failures every run
POWER_LOSS_AFTER = 25.0  # seconds after the console opens
POWER_BACK_AFTER = 300.0  # at the latest; sooner once the planner has moved the lost VMs away
SEED_CEILING = 300.0  # seconds a seed may take at most (it takes a few at timing scale 0)


class DemoError(Exception):
    """The demo cannot use this data dir (it holds real hosts or other documents)."""


@dataclass(frozen=True)
class DemoHost:
    name: str
    profile: str


@dataclass(frozen=True)
class DemoDisk:
    name: str
    size_gib: int
    expect: tuple[str, ...] = ()


@dataclass(frozen=True)
class DemoVm:
    name: str
    cpus: int
    memory_gib: int
    expect: tuple[str, ...]
    architecture: str = "x86_64"
    disks: tuple[DemoDisk, ...] = ()
    max_memory_gib: int | None = None


UP = "availability:up@dealbreaker"
DOWN = "availability:down@dealbreaker"
UP_WANT = "availability:up@want"
HA = "ha@dealbreaker"


def _spread(prefix: str, count: int, **kwargs: Any) -> list[DemoVm]:
    """``count`` VMs of one tier, each never on a host with the ones before it (anti-affinity)."""
    names = [f"{prefix}{n:02d}" for n in range(1, count + 1)]
    extra = tuple(kwargs.pop("expect", ()))
    return [DemoVm(name, expect=(UP, *extra, *((f"not-same-host:{','.join(names[:i])}@dealbreaker",) if i else ())),
                   **kwargs) for i, name in enumerate(names)]


# The old server runs the old workloads: it joined first, and they started there.
LEGACY_HOSTS = (DemoHost("old01", "legacy"),)
LEGACY_VMS = (
    DemoVm("erp-legacy", 4, 16, (UP,)),
    DemoVm("intranet-old", 2, 4, (UP_WANT,)),
    DemoVm("fax-gateway", 1, 2, (UP_WANT,)),
)

HOSTS = (
    DemoHost("kvm01", "r640"), DemoHost("kvm02", "r640"), DemoHost("kvm03", "r640"), DemoHost("kvm04", "r640"),
    DemoHost("epyc01", "epyc"), DemoHost("epyc02", "epyc"),
    DemoHost("stor01", "storage"),
    DemoHost("arm01", "arm"), DemoHost("arm02", "arm"),
    DemoHost("nuc01", "mini"), DemoHost("nuc02", "mini"),
)

VMS = (
    *_spread("web", 6, cpus=2, memory_gib=4, max_memory_gib=6),
    *_spread("lb", 2, cpus=1, memory_gib=1, expect=("power-redundancy@want",)),
    *_spread("dns", 2, cpus=1, memory_gib=1),
    *_spread("ldap", 2, cpus=1, memory_gib=2),
    DemoVm("db-orders", 8, 64, (UP, "ecc-memory@dealbreaker", "power-redundancy@dealbreaker"),
           disks=(DemoDisk("db-orders-data", 500, ("write-performance:1500@want",)),)),
    DemoVm("db-orders-replica", 8, 64, (UP, "ecc-memory@dealbreaker", "not-same-host:db-orders@dealbreaker"),
           disks=(DemoDisk("db-orders-replica-data", 500, ("not-same-storage:db-orders-data@dealbreaker",)),)),
    DemoVm("db-users", 4, 32, (UP, "ecc-memory@dealbreaker"),
           disks=(DemoDisk("db-users-data", 200, ("write-performance:1000@want",)),)),
    DemoVm("analytics", 16, 128, (UP_WANT, "cpu-flags:avx512f@want", "cache-size:L3,65536@wish"),
           disks=(DemoDisk("analytics-scratch", 1500),)),
    DemoVm("backup", 4, 16, (UP, "ecc-memory@want"),
           disks=(DemoDisk("backup-pool", 12 * 1024, ("read-performance:400@want",)),)),
    DemoVm("git", 4, 8, (UP,), disks=(DemoDisk("git-repos", 300),)),
    DemoVm("prometheus", 4, 16, (UP_WANT,), disks=(DemoDisk("prometheus-tsdb", 400),)),
    DemoVm("grafana", 2, 4, (UP_WANT, "vm-dependency:prometheus@want")),
    *(DemoVm(f"app{n:02d}", 4, 8, (UP,)) for n in range(1, 7)),
    *(DemoVm(f"ci-x86-{n}", 8, 16, (UP_WANT, "cpu-flags:avx512f@want")) for n in range(1, 4)),
    *(DemoVm(f"ci-arm-{n}", 8, 16, (UP_WANT, "cpu-architecture:aarch64@dealbreaker"), architecture="aarch64")
      for n in range(1, 4)),
    DemoVm("mail", 2, 4, (UP,)),
    DemoVm("vpn", 1, 1, (UP, "power-redundancy@want")),
    DemoVm("homelab-media", 2, 4, (UP_WANT, "system-manufacturer:Intel@want")),
    DemoVm("dev-alice", 2, 8, (DOWN,)),
    DemoVm("dev-bob", 2, 8, (DOWN,)),
    DemoVm("test-upgrade", 4, 16, (DOWN,)),
)


# --- seeding ----------------------------------------------------------------------------------


def seeded(controller: Any) -> bool:
    """True when this data dir holds a finished demo seed: the settings say so (the audit entry that said it
    before them may be gone with the history's retention)."""
    if controller.settings().demo_seeded_at is not None:
        return True
    history = controller.db.history
    return history is not None and any(e.action == SEED_ACTION for e in history.query("audit", limit=_SEED_LOOKBACK))


def check_data_dir(controller: Any) -> None:
    """DemoError unless the data dir is empty or holds only the demo's simulated fleet."""
    db = controller.db
    hosts = db.list(Host)
    real = sorted(h.name for h in hosts if not h.simulated)
    if real:
        raise DemoError(f"{controller.data_dir} holds real hosts ({', '.join(real[:3])}"
                        f"{', ...' if len(real) > 3 else ''}): the demo needs a data dir of its own")
    if not hosts and (db.count(VirtualMachine) or db.count(VirtualStorageDevice)):
        raise DemoError(f"{controller.data_dir} already holds VMs or disks: the demo needs a data dir of its own")


async def seed(controller: Any, *, ceiling: float = SEED_CEILING,
               today: Callable[[], dt.date] = lambda: dt.datetime.now(dt.UTC).date()) -> bool:
    """Fill the controller's (started) data dir with the demo fleet; False when it was seeded already.

    Creates only what is missing, so an interrupted seed finishes on the next run and a finished one
    is left as it is. Raises DemoError on a data dir that is not the demo's."""
    check_data_dir(controller)
    if seeded(controller):
        return False
    if controller.replanner is None:
        raise DemoError("seeding the demo needs a controller that runs its hosts and planner (start() without "
                        "connect_hosts=False, and not read-only)")
    with controller.acting_as(SEED_ACTOR):  # the set-up's approvals and changes are not the admin's
        await _seed(controller, ceiling, today)
    return True


async def _seed(controller: Any, ceiling: float, today: Callable[[], dt.date]) -> None:
    async with asyncio.timeout(ceiling):
        # The old server and its workloads were there first.
        await _hosts(controller, LEGACY_HOSTS)
        await _vms(controller, LEGACY_VMS)
        await bring_up(controller)
        await _hosts(controller, HOSTS)
        await _vms(controller, VMS)
        await bring_up(controller)
        # Then the admin records that the old server is past its end of life: the tour's first
        # proposal, which stays open for whoever opens the console.
        passes = controller.replanner.passes
        for host in LEGACY_HOSTS:
            doc = controller.db.find_by_name(Host, host.name)
            if doc is not None and doc.end_of_life is None:
                await controller.update_host(doc.id, end_of_life=today() - dt.timedelta(days=1))
        while controller.replanner.passes == passes or not _open(controller, PlanStatus.proposed):
            await asyncio.sleep(0.05)
    controller.db.put(controller.settings().evolve(demo_seeded_at=dt.datetime.now(dt.UTC)))
    controller.audit(SEED_ACTION, str(controller.data_dir),
                     f"{len(LEGACY_HOSTS) + len(HOSTS)} simulated hosts, {len(LEGACY_VMS) + len(VMS)} VMs")


async def _hosts(controller: Any, hosts: Iterable[DemoHost]) -> None:
    ids = []
    for host in hosts:
        doc = controller.db.find_by_name(Host, host.name)
        if doc is None:
            doc = await controller.add_simulated_host(host.name, host.profile)
        if doc.power.ipmi_address is None:  # its BMC (the simulator's): fencing for the VMs with ha
            doc = await controller.update_host(doc.id, power={**doc.power.model_dump(),
                                                              "ipmi_address": f"bmc.{doc.address}"})
        ids.append(doc.id)
    for host_id in ids:
        await controller.hosts.wait_up(host_id)


async def _vms(controller: Any, vms: Iterable[DemoVm]) -> None:
    for vm in vms:
        if controller.db.find_by_name(VirtualMachine, vm.name) is not None:
            continue
        # The controller's use case: the VM and its disks made together (a disk that exists is linked).
        links, new_disks = [], []
        for disk in vm.disks:
            doc = controller.find_by_name(VirtualStorageDevice, disk.name)
            if doc is None:
                new_disks.append({"name": disk.name, "size": disk.size_gib * GIB, "expectations": list(disk.expect)})
            else:
                links.append(DiskLink(disk_id=doc.id))
        # what must run comes back after its host fails (high availability)
        ha = [HA] if UP in vm.expect else []
        await controller.create_vm(vm.name, cpus=vm.cpus, memory_min=vm.memory_gib * GIB,
                                   memory_max=(vm.max_memory_gib or vm.memory_gib) * GIB,
                                   architecture=vm.architecture, disks=links, new_disks=new_disks,
                                   expectations=[*vm.expect, *ha])


def _open(controller: Any, *statuses: PlanStatus) -> list[Plan]:
    return sorted((p for p in controller.db.list(Plan) if p.status in statuses), key=lambda p: (p.created_at, p.id))


def _wanted_up_missing(controller: Any) -> list[str]:
    """VMs whose availability expectation says up and which do not run yet."""
    db = controller.db
    missing = []
    for vm in db.list(VirtualMachine):
        if not _must_run(vm):
            continue
        dyn = db.get(VirtualMachineDynamic, vm.id)
        if dyn is None or dyn.status is not VmStatus.up:
            missing.append(vm.name)
    return sorted(missing)


async def bring_up(controller: Any, *, poll: float = 0.05) -> None:
    """Approve the planner's proposals, as the admin does on day one, until every VM that should
    run runs and nothing is left to propose or carry out."""
    while True:
        if not _open(controller, PlanStatus.proposed, PlanStatus.approved, PlanStatus.running) \
                and not _wanted_up_missing(controller):
            await controller.replanner.wait_idle()
            if not _open(controller, PlanStatus.proposed, PlanStatus.approved, PlanStatus.running):
                return
        for plan in _open(controller, PlanStatus.proposed):
            try:
                await controller.decide_plan(plan.id, True)
            except Exception as error:  # the controller's ActionError: withdrawn meanwhile, re-proposed next pass
                log.info("demo seed: %s", error)
        await asyncio.sleep(poll)


# --- the tour ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TourStep:
    """What the tour did (and told the admin), and to which host."""

    what: str
    host: str = ""


class Teller(Protocol):
    """What tells the admin a line of the tour (the console sets a notification). A callback Protocol,
    not a Callable: mypy takes a dataclass field typed Callable for a read-only member, so a Tour would
    not be the console's kerub_tui.api.Script, whose ``say`` the console sets."""

    def __call__(self, line: str, /) -> None: ...


def _untold(line: str) -> None:
    """The tour's ``say`` until the console sets its own: nothing told."""


@dataclass
class Tour:
    """The scripted part of the demo, run while the console is open."""

    controller: Any
    power_loss_after: float = POWER_LOSS_AFTER
    power_back_after: float = POWER_BACK_AFTER
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    say: Teller = _untold
    steps: list[TourStep] = field(default_factory=list)

    def _log(self, what: str, host: str = "") -> None:
        self.steps.append(TourStep(what, host))
        self.say(what)

    def victim(self) -> Host | None:
        """The host that loses power: up, x86, holding no disk (so its VMs can restart anywhere),
        running the most VMs that must run; ties by name."""
        db = self.controller.db
        simulator = self.controller.simulator
        best: tuple[Any, ...] | None = None
        chosen = None
        for host_id in simulator.host_ids:
            host = db.get(Host, host_id)
            caps = host.capabilities if host is not None else None
            if host is None or simulator.status(host_id) is not HostStatus.up or host.end_of_life is not None \
                    or host.recycling or caps is None:
                continue
            if caps.cpu.architecture != "x86_64" or db.disks_on_host(host.id):
                continue
            must_run = [v for v in db.vms_on_host(host.id) if _must_run(db.get(VirtualMachine, v))]
            if not must_run:
                continue
            rank = (-len(must_run), host.name)
            if best is None or rank < best:
                best, chosen = rank, host
        return chosen

    async def run(self) -> None:
        await self._connected()
        await self.sleep(self.power_loss_after)
        host = self.victim()
        if host is None:
            self._log("the tour found no host to fail: every host is down, empty or holds disks")
            return
        simulator = self.controller.simulator
        simulator.fail_host(host.id, reason="power loss")
        self._log(f"{host.name} lost power: its VMs are gone; watch the planner propose restarting them "
                  f"elsewhere (:plans)", host.name)
        await self._until_empty(host.id)
        simulator.recover_host(host.id)
        self._log(f"{host.name}: power is back; it boots and rejoins the fleet", host.name)

    async def _connected(self, poll: float = 0.2, ceiling: float = 60.0) -> None:
        """Until every simulated host has connected (or failed to): the countdown starts from a
        fleet the admin can see."""
        simulator = self.controller.simulator
        waited = 0.0
        while waited < ceiling and any(simulator.status(h) is HostStatus.connecting for h in simulator.host_ids):
            await self.sleep(poll)
            waited += poll

    async def _until_empty(self, host_id: str, poll: float = 1.0) -> None:
        """Until no VM that must run is placed on the host any more, or ``power_back_after``."""
        waited = 0.0
        db = self.controller.db
        while waited < self.power_back_after:
            if not any(_must_run(db.get(VirtualMachine, v)) for v in db.vms_on_host(host_id)):
                return
            await self.sleep(poll)
            waited += poll


def _must_run(vm: VirtualMachine | None) -> bool:
    return vm is not None and any(e.type == "availability" and e.up for e in vm.expectations)


__all__ = ["DemoError", "HOSTS", "LEGACY_HOSTS", "LEGACY_VMS", "SEED_ACTION", "SIM_SEED", "Tour", "TourStep", "VMS",
           "bring_up", "check_data_dir", "seed", "seeded"]
