"""The controller: the one object that owns the store and wires hosts, monitors, planner and executor.

The console, ``serve`` and the control socket all go through it, so every action is validated,
audited and refused in read-only mode in one place. Actions are async; reads are plain properties of
the in-memory store (cheap, no I/O).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from .api import ActionError, NewDisk, ReadOnlyMode, cloud_init_summary, guarded
from .core import paths
from .core.bus import Subscription
from .core.expectations import (
    Expectation,
    InvalidExpectation,
    display_spec,
    parse_spec,
    validate_expectation,
)
from .core.integrity import store_existed
from .core.keys import InvalidKeys
from .core.keys import canonical as canonical_keys
from .core.keys import parse_sequence as parse_key_sequence
from .core.models import (
    DOCUMENT_TYPES,
    AuditEntry,
    AutoApprovePolicy,
    CloudInit,
    DiskLink,
    Document,
    Event,
    EventSeverity,
    Fence,
    FileAllocation,
    HaPolicy,
    HistoryRetention,
    Host,
    HostConfiguration,
    HostDynamic,
    HostStatus,
    ImageInfo,
    Nic,
    Plan,
    PlanStatus,
    Settings,
    StorageCapability,
    StorageTechnology,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
    VmStatus,
    new_id,
    utcnow,
)
from .core.names import InvalidName, check_disk_name, check_name
from .core.picture import PictureError, decode
from .core.sizes import format_size
from .core.store import NotFound, Store, StoreError
from .core.terminal import ByteStream
from .core.text import printable
from .hosts.console import ConsoleError, console_file, console_vm, open_console
from .hosts.facts import IMAGES_DIR
from .hosts.fileimage import check_path
from .hosts.fleet import Fleet, FleetError
from .hosts.operations import FleetOperations
from .hosts.serial import SerialConsole, SerialError
from .hosts.serial import screenshot as take_screenshot
from .planner import reconcile, replanner
from .planner.checkers import ensure_checkable
from .planner.executor import Executor
from .planner.explain import explain_text
from .planner.ha import HaNarrator
from .planner.replanner import ApprovalRefused, Replanner
from .queries import StoreQueries
from .sim import HostPool, SimulatedFleet, Timing
from .ssh import SshError

log = logging.getLogger(__name__)

# The status a VM's document reaches after each of the VM actions' libvirt operations, by the host's
# lifecycle event, and how long an action waits for that event to be recorded.
SETTLES_TO = {"destroy-if-running": VmStatus.down, "pause": VmStatus.paused, "resume": VmStatus.up}
SETTLE_TIMEOUT = 15.0


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in a container: the uid is still the truth
        return str(os.getuid())


@guarded
class Controller(StoreQueries):
    """Owns the store of one data dir. ``await start()`` before use, ``await stop()`` at the end.

    It implements :class:`kerub_tui.api.ConsoleAPI`; every action it offers is declared in
    :data:`kerub_tui.api.ACTIONS`, which also refuses the changing ones in read-only mode."""

    attached = False  # this process owns the store

    def __init__(self, data_dir: Path | str | None = None, *, readonly: bool = False,
                 serve: Callable[[Controller], Any] | None = None, sim_timing: Timing | None = None,
                 sim_seed: int = 0, one_shot: bool = False) -> None:
        """``serve`` makes the control socket server (cli passes it: the socket runs the command line).
        ``sim_timing`` and ``sim_seed`` tune the simulated hosts, if the store has any. ``one_shot``: a
        command line's controller, which monitors no host (what it reads of them is as last seen)."""
        self.data_dir = paths.data_dir(data_dir)
        self.readonly = readonly
        self.one_shot = one_shot
        self.store: Store | None = None
        self.fleet: Fleet | None = None
        self.simulator: SimulatedFleet | None = None
        self.hosts: HostPool | None = None  # every host, real (self.fleet) or simulated (self.simulator)
        self.sim_timing = sim_timing or Timing()
        self.sim_seed = sim_seed
        self.replanner: Replanner | None = None
        self.executor: Executor | None = None
        self.reconciler: reconcile.Reconciler | None = None
        self.ha_narrator: HaNarrator | None = None  # the story of a lost host's VMs (events), while started
        self.server: Any = None
        self.started = False
        # Who the audit log, approvals and policies name for what this controller is asked to do: the
        # OS user running it, or a name a script sets for its own acts (the demo's set-up: acting_as).
        self.actor = os_user()
        self._serve = serve
        self._tasks: list[asyncio.Task[Any]] = []
        self._consoles: list[Any] = []

    # --- lifecycle --------------------------------------------------------------------------

    def open_store(self) -> Store:
        """Open the store (the data dir's writer lock; a read-only snapshot with --readonly)."""
        if self.store is None:
            if (self.readonly and not (self.data_dir / paths.STORE_FILE).exists()
                    and not store_existed(self.data_dir)):
                # Read-only on a new data dir: an empty snapshot, nothing created on disk.
                self.store = Store(self.data_dir, readonly=True)
            else:
                self.store = Store.open(self.data_dir, readonly=self.readonly)
                if not self.readonly:  # plans a killed process left running are interrupted, said so
                    reconcile.interrupt_dead_writers(self.store)
                    self._clean_run_dir()
        return self.store

    def _clean_run_dir(self) -> None:
        """As the writer (the lock is ours), remove what killed processes left in run/: tunnel sockets and
        console files holding a SPICE password."""
        try:
            removed = paths.clean_run_dir(self.data_dir)
        except (paths.UnsafeDataDir, OSError) as error:
            assert self.store is not None
            self.store.close()
            self.store = None
            raise StoreError(str(error)) from None
        if removed:
            log.info("removed %d leftovers of stopped kerub-tui processes from %s", len(removed),
                     self.data_dir / paths.RUN_DIR)

    async def start(self, *, connect_hosts: bool = True) -> None:
        """Open the store; with ``connect_hosts`` (the console, ``serve``) also connect and monitor
        every host and run the planner. One-shot commands start without them."""
        store = self.open_store()
        self.fleet = Fleet(store, self.data_dir)
        self.simulator = SimulatedFleet(store, timing=self.sim_timing, seed=self.sim_seed, writer=self.fleet.writer)
        self.hosts = HostPool(store, self.fleet, self.simulator, FleetOperations(self.fleet))
        if self._serve is not None:
            self.server = self._serve(self)
            await self.server.start()
        if connect_hosts and not self.readonly:
            store.backup_if_changed()  # a console or `serve` starting: a backup of what it starts from
            self.executor = Executor(store, self.hosts)
            self.replanner = Replanner(store, executor=self.executor)
            self.reconciler = reconcile.Reconciler(store, self.hosts)  # each host as it comes up
            self._tasks.append(asyncio.create_task(self.reconciler.run(), name="reconciler"))
            await self.hosts.start()
            self._tasks.append(asyncio.create_task(self.replanner.run(), name="replanner"))
            self.ha_narrator = HaNarrator(store)
            self._tasks.append(asyncio.create_task(self.ha_narrator.run(), name="ha-events"))
        self.started = True

    async def stop(self) -> None:
        for session in self._consoles:
            await session.close()
        self._consoles.clear()
        if self.server is not None:
            await self.server.stop()
            self.server = None
        if self.replanner is not None:
            await self.replanner.stop()
            self.replanner = None
        self.ha_narrator = None
        if self.hosts is not None:
            await self.hosts.stop()
            self.hosts = None
            self.simulator = None
            self.fleet = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        if self.store is not None:
            self.store.close()
            self.store = None
        self.started = False

    @property
    def db(self) -> Store:
        if self.store is None:
            raise ActionError("the controller is not started")
        return self.store

    def subscribe(self, kinds: Iterable[str] | None = None) -> Subscription:
        return self.db.feed.subscribe(kinds)

    @contextlib.contextmanager
    def acting_as(self, actor: str) -> Iterator[None]:
        """What is done meanwhile is recorded as done by ``actor`` (a script's own acts, never the admin's)."""
        previous, self.actor = self.actor, actor
        try:
            yield
        finally:
            self.actor = previous

    @property
    def runs_plans(self) -> bool:
        return self.replanner is not None

    @property
    def live(self) -> bool:
        # A writer monitors its hosts once started with them (the console, serve); a read-only controller
        # never connects them, nor does a one-shot command: what they show is what was last seen.
        return not (self.readonly or self.one_shot)

    def replan_once(self) -> list[Plan]:
        """One pass of the re-planner, for a one-shot command that changed something while no controller
        runs on the data dir (none is there to re-plan on the change): the new proposals, oldest first."""
        from .planner.replanner import Replanner

        before = {p.id for p in self.db.list(Plan) if p.status is PlanStatus.proposed}
        Replanner(self.db).replan()
        return [plan for plan in sorted(self.db.list(Plan), key=lambda p: p.created_at)
                if plan.status is PlanStatus.proposed and plan.id not in before]

    # --- helpers ----------------------------------------------------------------------------

    def audit(self, action: str, target: str, outcome: str = "ok", **fields: Any) -> AuditEntry:
        entry = AuditEntry(os_user=self.actor, action=action, target=target, outcome=outcome, **fields)
        if not self.readonly:
            self.db.put(entry)
        return entry

    def event(self, type_: str, message: str, *, severity: EventSeverity = EventSeverity.info,
              host_id: str | None = None, target: str | None = None) -> Event:
        event = Event(type=type_, message=message, severity=severity, host_id=host_id, target=target)
        if not self.readonly:
            self.db.put(event)
        return event

    def _changed(self, old: Document, new: Document) -> str:
        """What an update changed, for its audit entry: ``field: old → new`` each, in the document's field
        order; sizes as sizes, expectations as SPECs, disks by name, cloud-init by its summary (never its
        content)."""
        parts = []
        for field in type(new).model_fields:
            before, after = getattr(old, field, None), getattr(new, field, None)
            if field in ("id", "kind", "schema_version") or before == after:
                continue
            parts.append(f"{field}: {self._shown(field, before)} → {self._shown(field, after)}")
        return "; ".join(parts) or "nothing changed"

    def _shown(self, field: str, value: Any) -> str:
        if value is None:
            return "-"
        if field == "cloud_init":
            return cloud_init_summary(value)
        if field in ("memory_min", "memory_max", "size") and isinstance(value, int):
            return format_size(value)
        if field == "expectations":
            def name_of(kind: str, doc_id: str) -> str:
                doc = self.db.get(DOCUMENT_TYPES[kind], doc_id)
                return str(getattr(doc, "name", None) or doc_id)

            return ", ".join(display_spec(e, name_of) for e in value) or "none"
        if field == "disks":
            return ", ".join(self._disk_name(link.disk_id) + (" (cdrom)" if link.device == "cdrom" else "")
                             for link in value) or "none"
        if isinstance(value, list):
            value = ", ".join(str(v.model_dump(mode="json")) if hasattr(v, "model_dump") else str(v)
                              for v in value) or "none"
        elif hasattr(value, "model_dump"):
            value = str(value.model_dump(mode="json", exclude_defaults=True))
        text = printable(str(value))
        return text if len(text) <= 80 else text[:77] + "..."

    def _expectations(self, specs: Iterable[str | dict[str, Any] | Expectation],
                      target: Literal["vm", "disk"]) -> list[Any]:
        """The expectations of ``specs``, each validated as one of the ``target``'s kinds and checkable."""
        kind = VirtualMachine if target == "vm" else VirtualStorageDevice

        def to_id(name: str) -> str:
            ref = self.db.get(kind, name) or self.db.find_by_name(kind, name)
            if ref is None:
                raise InvalidExpectation(f"no {target} named {name!r} to refer to")
            return ref.id

        out = []
        for spec in specs:
            try:
                if isinstance(spec, Expectation):
                    exp = spec
                elif isinstance(spec, dict):
                    exp = validate_expectation(spec, target)
                else:
                    exp = parse_spec(spec, target, resolve=to_id)
            except InvalidExpectation as error:
                raise ActionError(str(error)) from None
            self._ensure_checkable(exp)
            out.append(exp)
        return out

    def _ensure_checkable(self, exp: Expectation) -> None:
        try:
            ensure_checkable(exp)
        except ValueError as error:
            raise ActionError(str(error)) from None

    # --- VMs ---------------------------------------------------------------------------------

    async def create_vm(self, name: str, *, cpus: int = 1, memory_min: int, memory_max: int | None = None,
                        architecture: str = "x86_64", disks: Iterable[DiskLink | dict[str, Any]] = (),
                        nics: Iterable[Nic | dict[str, Any]] = (),
                        expectations: Iterable[str | dict[str, Any] | Expectation] = (),
                        disk_sizes: Iterable[int] = (), cdrom: str | None = None,
                        boot: Iterable[str] | None = None, from_image: str | None = None,
                        cloud_init: CloudInit | dict[str, Any] | None = None,
                        new_disks: Iterable[NewDisk | dict[str, Any]] = (),
                        graphics: Literal["spice", "vnc"] = "spice") -> VirtualMachine:
        """A new VM. ``disk_sizes`` makes a new blank disk of each size (NAME-disk0, ...);
        ``cdrom`` attaches an ISO image as a read-only SATA CD-ROM (and boots from it first unless
        ``boot`` says otherwise); ``boot`` is the boot order (hd, cdrom, network). With
        ``from_image`` the first disk (NAME-disk0) starts as that disk image's content, grown to the
        first of ``disk_sizes`` when given (never smaller than the image). ``cloud_init`` (ssh keys,
        user data, network config) gives the VM a NoCloud seed. ``new_disks`` are blank disks of their
        own names made with the VM and linked after ``disks`` (the editor's "new disk" rows, the demo's
        disks). ``graphics``: SPICE or VNC for its screen. Everything is checked before anything is
        stored: a refused VM leaves no disk behind."""
        store = self.db
        if store.find_by_name(VirtualMachine, name) is not None:
            raise ActionError(f"a VM named {name!r} already exists")
        sizes = list(disk_sizes)
        made_disks: list[VirtualStorageDevice] = []
        if from_image is not None:
            image = self._image(from_image, ("raw", "qcow2"), "a clone")
            assert image.image is not None
            size = sizes.pop(0) if sizes else image.image.virtual_size
            if size < image.image.virtual_size:
                raise ActionError(f"disk size {format_size(size)} is smaller than image {image.name} "
                                  f"({format_size(image.image.virtual_size)}): give --disk of at least that")
            made_disks.append(self._new_disk(f"{name}-disk0", size, expectations=self._expectations(
                [{"type": "clone-of", "disk": image.id}], "disk")))
        made_disks += [self._new_disk(f"{name}-disk{index}", size)
                       for index, size in enumerate(sizes, start=len(made_disks))]
        links = [DiskLink(disk_id=d.id) for d in made_disks] + [
            link if isinstance(link, DiskLink) else DiskLink.model_validate(link) for link in disks]
        named, named_links = self._named_new_disks(new_disks, [d.name for d in made_disks])
        made_disks += named
        links += named_links
        if cdrom is not None:
            links.append(self._cdrom_link(cdrom))
        boot_order = list(boot) if boot is not None else (["cdrom", "hd"] if cdrom is not None else ["hd"])
        try:
            vm = VirtualMachine.model_validate(dict(
                name=name, cpus=cpus, memory_min=memory_min, memory_max=memory_max or memory_min,
                architecture=architecture, disks=links, nics=list(nics),
                expectations=self._expectations(expectations, "vm"), boot=boot_order,
                cloud_init=cloud_init, graphics=graphics,
            ))
        except (ValueError, InvalidName) as error:
            raise ActionError(_first_error(error)) from None
        made = {d.id for d in made_disks}
        for link in vm.disks:
            if link.disk_id not in made and store.get(VirtualStorageDevice, link.disk_id) is None:
                raise ActionError(f"VM {name}: no disk with id {link.disk_id}")
        with store.transaction():
            for disk in made_disks:
                store.put(disk)
            store.put(vm)
        for disk in made_disks:
            self.audit("disk create", disk.name)
        self.audit("vm create", vm.name, cloud_init_summary(vm.cloud_init) if vm.cloud_init else "ok", vm_id=vm.id)
        return vm

    def _named_new_disks(self, specs: Iterable[NewDisk | dict[str, Any]],
                         taken: Iterable[str] = ()) -> tuple[list[VirtualStorageDevice], list[DiskLink]]:
        """The documents (not stored yet) and links of the new disks a VM is created or edited with."""
        disks: list[VirtualStorageDevice] = []
        links: list[DiskLink] = []
        names = set(taken)
        for spec in specs:
            try:
                new = spec if isinstance(spec, NewDisk) else NewDisk.model_validate(spec)
            except ValueError as error:
                raise ActionError(_first_error(error)) from None
            if new.name in names:
                raise ActionError(f"a disk named {new.name!r} is made twice")
            names.add(new.name)
            disk = self._new_disk(new.name, new.size, expectations=self._expectations(new.expectations, "disk"))
            disks.append(disk)
            links.append(DiskLink(disk_id=disk.id, bus=new.bus))
        return disks, links

    def _new_disk(self, name: str, size: int, **fields: Any) -> VirtualStorageDevice:
        """A new disk document (not stored yet), its name free."""
        if self.db.find_by_name(VirtualStorageDevice, name) is not None:
            raise ActionError(f"a disk named {name!r} already exists")
        try:
            check_disk_name(name)
            return VirtualStorageDevice(name=name, size=size, **fields)
        except (ValueError, InvalidName) as error:
            raise ActionError(_first_error(error)) from None

    def _image(self, ref: str, formats: tuple[str, ...], use: str) -> VirtualStorageDevice:
        disk: VirtualStorageDevice = self.resolve(VirtualStorageDevice, ref)
        if disk.image is None:
            raise ActionError(f"disk {disk.name} is not an image (kerub-tui image list shows them)")
        if disk.image.format not in formats:
            raise ActionError(f"image {disk.name} is {disk.image.format}: {use} needs {' or '.join(formats)}")
        return disk

    def _cdrom_link(self, ref: str) -> DiskLink:
        image = self._image(ref, ("iso",), "a CD-ROM")
        return DiskLink(disk_id=image.id, bus="sata", device="cdrom", read_only=True)

    async def eject_vm(self, ref: str) -> VirtualMachine:
        """Take the VM's ISO images out of its CD-ROM drives (its cloud-init seed stays).

        The documents change at once, so the next start has no CD-ROM. A running VM also has the
        medium taken out of its live drive through libvirt (forced, even if the guest locked the
        tray): the empty drive stays until the VM is next started."""
        store = self.db
        vm: VirtualMachine = self.resolve(VirtualMachine, ref)
        ejected = [link for link in vm.disks if link.device == "cdrom"]
        if not ejected:
            raise ActionError(f"VM {vm.name} has no CD-ROM to eject")
        dyn = store.get(VirtualMachineDynamic, vm.id)
        host = store.get(Host, dyn.host_id) if dyn is not None and dyn.host_id else None
        if host is not None and dyn is not None and dyn.status.value in ("up", "paused") and not host.simulated:
            await self._connected_to_vm_host(vm.id)
            for link in ejected:
                result = await self._hosts().libvirt(host.id, "eject", vm_id=vm.id, disk_id=link.disk_id)
                if result.exit_code != 0:
                    raise ActionError(f"VM {vm.name}: the CD-ROM was not ejected on {host.name}: "
                                      f"{result.stderr.strip() or result.exit_code}")
        names = [self._disk_name(link.disk_id) for link in ejected]
        updated = vm.evolve(disks=[link for link in vm.disks if link.device != "cdrom"])
        store.put(updated)
        self.audit("vm eject", vm.name, ", ".join(names), vm_id=vm.id)
        return updated

    async def set_vm_cloud_init(self, ref: str, cloud_init: CloudInit | dict[str, Any] | None) -> VirtualMachine:
        """New cloud-init settings (None: no seed). A changed seed is written on the VM's host at its
        next start (a running VM keeps the seed it started with). Audited without the user data."""
        store = self.db
        vm: VirtualMachine = self.resolve(VirtualMachine, ref)
        try:
            updated = vm.evolve(cloud_init=cloud_init)
        except (ValueError, InvalidName) as error:
            raise ActionError(_first_error(error)) from None
        store.put(updated)
        self.audit("vm cloud-init", vm.name, cloud_init_summary(updated.cloud_init), vm_id=vm.id)
        return updated

    async def clone_vm(self, source_ref: str, name: str) -> VirtualMachine:
        """A copy of a stopped VM: the same settings, new disks whose content the planner copies from
        the source's disks (clone-of), the same images in its CD-ROMs; its own cloud-init seed."""
        store = self.db
        source: VirtualMachine = self.resolve(VirtualMachine, source_ref)
        dyn = store.get(VirtualMachineDynamic, source.id)
        if dyn is not None and dyn.status.value != "down":
            raise ActionError(f"VM {source.name} is {dyn.status.value}: stop it first to clone it "
                              f"(kerub-tui vm stop {source.name})")
        if store.find_by_name(VirtualMachine, name) is not None:
            raise ActionError(f"a VM named {name!r} already exists")
        links: list[DiskLink] = []
        new_disks: list[VirtualStorageDevice] = []
        for link in source.disks:
            disk = store.get(VirtualStorageDevice, link.disk_id)
            if disk is None:
                raise ActionError(f"VM {source.name}: its disk {link.disk_id} is gone")
            if disk.read_only or link.device == "cdrom":
                links.append(link)  # an image or another read-only disk: shared, not copied
                continue
            copy = self._new_disk(f"{name}-disk{len(new_disks)}", disk.size, expectations=self._expectations(
                [{"type": "clone-of", "disk": disk.id}], "disk"))
            new_disks.append(copy)
            links.append(link.evolve(disk_id=copy.id))
        keep: list[Any] = [e for e in source.expectations if e.type != "availability"]
        try:
            vm = VirtualMachine(name=name, architecture=source.architecture, cpus=source.cpus,
                                memory_min=source.memory_min, memory_max=source.memory_max, disks=links,
                                nics=[nic.evolve(mac=None) for nic in source.nics],
                                expectations=keep, boot=source.boot, cloud_init=source.cloud_init)
        except (ValueError, InvalidName) as error:
            raise ActionError(_first_error(error)) from None
        with store.transaction():
            for disk in new_disks:
                store.put(disk)
            store.put(vm)
        self.audit("vm clone", vm.name, f"from {source.name}, {len(new_disks)} disk(s) copied", vm_id=vm.id)
        return vm

    def _disk_name(self, disk_id: str) -> str:
        disk = self.db.get(VirtualStorageDevice, disk_id)
        return disk.name if disk is not None else disk_id

    async def update_vm(self, ref: str, *, new_disks: Iterable[NewDisk | dict[str, Any]] = (),
                        **changes: Any) -> VirtualMachine:
        """Change a VM; ``new_disks`` are blank disks made with the change and linked after its disks
        (all stored together, or nothing)."""
        store = self.db
        vm: VirtualMachine = self.resolve(VirtualMachine, ref)
        if "expectations" in changes:
            changes["expectations"] = self._expectations(changes["expectations"], "vm")
        if "name" in changes and changes["name"] != vm.name and store.find_by_name(VirtualMachine, changes["name"]):
            raise ActionError(f"a VM named {changes['name']!r} already exists")
        made, links = self._named_new_disks(new_disks)
        if made:
            changes["disks"] = [*changes.get("disks", vm.disks), *links]
        try:
            updated = vm.evolve(**changes)
        except (ValueError, InvalidName) as error:
            raise ActionError(_first_error(error)) from None
        with store.transaction():
            for disk in made:
                store.put(disk)
            store.put(updated)
        for disk in made:
            self.audit("disk create", disk.name)
        self.audit("vm update", updated.name, self._changed(vm, updated), vm_id=updated.id)
        return updated

    async def set_vm_availability(self, ref: str, up: bool, level: str = "dealbreaker") -> VirtualMachine:
        """`vm start` / `vm stop`: set the availability expectation; the planner does the rest. Asked
        again after the admin rejected a plan for the VM, the planner proposes it again."""
        vm: VirtualMachine = self.resolve(VirtualMachine, ref)
        kept: list[Any] = [e for e in vm.expectations if e.type != "availability"]
        kept.append(validate_expectation({"type": "availability", "up": up, "level": level}, "vm"))
        updated = await self.update_vm(vm.id, expectations=kept)
        replanner.ask_again(self.db, vm.id, self.actor)
        return updated

    async def delete_vm(self, ref: str, *, disks: Literal["keep", "delete"] | None = None) -> list[str]:
        """Delete a stopped VM. Its own disks (vm_own_disks) are kept or deleted as ``disks`` says; a VM
        that has some is refused without it. Returns one line per own disk saying what became of it."""
        store = self.db
        vm: VirtualMachine = self.resolve(VirtualMachine, ref)
        if disks not in (None, "keep", "delete"):
            raise ActionError(f"disks: {disks!r} is neither 'keep' nor 'delete'")
        dyn = store.get(VirtualMachineDynamic, vm.id)
        if dyn is not None and dyn.status.value != "down":
            raise ActionError(f"VM {vm.name} is {dyn.status.value} on a host: stop it first (vm stop {vm.name})")
        own = [d for d in (store.get(VirtualStorageDevice, i) for i in self.vm_own_disks(vm.id)) if d is not None]
        names = ", ".join(d.name for d in own)
        if own and disks is None:
            raise ActionError(f"VM {vm.name} has {len(own)} disk(s) of its own ({names}): say whether they go "
                              f"too (vm delete {vm.name} --with-disks) or stay (--keep-disks)")
        with store.transaction():
            store.delete(VirtualMachine, vm.id)
            store.delete(VirtualMachineDynamic, vm.id)
        self.audit("vm delete", vm.name + (f" (disks {'deleted' if disks == 'delete' else 'kept'}: {names})"
                                          if own else ""), vm_id=vm.id)
        if disks != "delete":
            return [f"disk {d.name} kept (disk delete {d.name} removes it)" for d in own]
        said = []
        for disk in own:
            try:
                await self.delete_disk(disk.id)
                said.append(f"disk {disk.name} deleted")
            except ActionError as error:  # its storage is on hosts: a plan removes it first
                said.append(str(error))
        return said

    # --- VM actions: what an incident needs, on the running domain at once (issue 12) ------------
    #
    # Each goes straight to libvirt on the VM's host (no plan), is audited with its outcome, and says
    # what it does to the VM's availability expectation, then does it, so the planner neither undoes
    # the action a second later nor starts what the admin turned off: poweroff (graceful or forced)
    # expects the VM down; pause marks "up" as paused by the admin (availability:up,paused, met while
    # paused); resume clears that. Reboot, reset and keys leave the expectation as it is. The status
    # the console shows follows the host's lifecycle events (the monitor), not these calls.

    async def reboot_vm(self, ref: str) -> str:
        """Ask the guest to reboot (ACPI: the guest's OS must answer it)."""
        return await self._domain_action(ref, "reboot", "reboot", "reboot requested (ACPI)")

    async def reset_vm(self, ref: str) -> str:
        """Reset the VM at once, like its reset button: the guest loses what it had not written."""
        return await self._domain_action(ref, "reset", "reset", "reset")

    async def send_keys(self, ref: str, keys: Sequence[str]) -> str:
        """Press key combinations on the VM's keyboard (``ctrl+alt+del``, ``ctrl+alt+f2``, ...), in order.
        One text is read as combinations separated by spaces."""
        keys = keys.split() if isinstance(keys, str) else keys
        try:
            codes = parse_key_sequence(list(keys))
            shown = canonical_keys(list(keys))
        except InvalidKeys as error:
            raise ActionError(str(error)) from None
        return await self._domain_action(ref, "send-keys", "send-keys", f"sent {shown}", keys=codes)

    async def poweroff_vm(self, ref: str, *, force: bool = False) -> str:
        """Power the VM off and expect it down (so the planner does not start it again): graceful asks
        the guest (ACPI power button; the planner's stop forces it later if the guest ignores it),
        ``force`` pulls the plug (libvirt destroy: the guest loses unsaved data)."""
        vm: VirtualMachine = self.resolve(VirtualMachine, ref)
        label = "vm poweroff --force" if force else "vm poweroff"
        before = self._availability_text(vm)
        dyn = self.db.get(VirtualMachineDynamic, vm.id)
        if dyn is None or dyn.host_id is None or dyn.status is VmStatus.down:
            changed = self._expect_availability(vm, up=False)
            said = f"{vm.name} is not running" + (f"; expectation {before} -> down" if changed else "")
            self.audit(label, vm.name, said, vm_id=vm.id)
            return said
        if dyn.status is VmStatus.migrating:
            raise ActionError(f"VM {vm.name} is migrating: power it off once it has landed")
        host = self._vm_host(vm, dyn.host_id)
        changed = self._expect_availability(vm, up=False)  # first: no planner restarts it meanwhile
        op = "destroy-if-running" if force else "request-shutdown"
        try:
            done = await self._libvirt_on(vm, host, op)
        except ActionError as error:
            if changed:
                self.db.put(self.db.require(VirtualMachine, vm.id).evolve(expectations=vm.expectations))
            self.audit(label, vm.name, f"failed: {error}; expectation unchanged ({before})", host_id=host.id,
                       vm_id=vm.id)
            raise
        what = "forced off" if force else "power off requested (ACPI)"
        said = f"{vm.name}: {what} on {host.name}" + (f"; expectation {before} -> down" if changed else "")
        self.audit(label, vm.name, said + ("" if force else f" ({done})"), host_id=host.id,
                   command=f"libvirt {op}", exit_code=0, vm_id=vm.id)
        return said

    async def pause_vm(self, ref: str) -> str:
        """Pause the VM (its vCPUs stop; memory stays). An "up" expectation becomes up,paused: met while
        paused, so the planner leaves it paused until ``resume_vm``."""
        return await self._domain_action(ref, "pause", "pause", "paused", paused=True)

    async def resume_vm(self, ref: str) -> str:
        """Resume a paused VM; an up,paused expectation is "up" again."""
        return await self._domain_action(ref, "resume", "resume", "resumed", paused=False)

    async def _domain_action(self, ref: str, action: str, op: str, what: str, *, paused: bool | None = None,
                             **kwargs: Any) -> str:
        """``op`` on the running VM ``ref``, audited as ``vm ACTION``; ``paused`` sets the paused mark
        of an "up" expectation first (taken back if the call fails)."""
        vm: VirtualMachine = self.resolve(VirtualMachine, ref)
        label = f"vm {action}"
        dyn = self.db.get(VirtualMachineDynamic, vm.id)
        if dyn is None or dyn.host_id is None or dyn.status is VmStatus.down:
            raise ActionError(f"VM {vm.name} is not running: nothing to {action}")
        if dyn.status is VmStatus.migrating:
            raise ActionError(f"VM {vm.name} is migrating: {action} it once it has landed")
        host = self._vm_host(vm, dyn.host_id)
        before = self._availability_text(vm)
        # Marked paused before the pause, unmarked after the resume: the planner never sees a VM
        # paused without the mark (it would propose resuming it).
        changed = paused is True and self._mark_paused(vm, True)
        try:
            await self._libvirt_on(vm, host, op, **kwargs)
        except ActionError as error:
            if changed:
                self.db.put(self.db.require(VirtualMachine, vm.id).evolve(expectations=vm.expectations))
            self.audit(label, vm.name, f"failed: {error}", host_id=host.id, vm_id=vm.id)
            raise
        if paused is False:
            changed = self._mark_paused(self.db.require(VirtualMachine, vm.id), False)
        said = f"{vm.name}: {what} on {host.name}"
        if changed:
            said += f"; expectation {before} -> {self._availability_text(self.db.require(VirtualMachine, vm.id))}"
        self.audit(label, vm.name, said, host_id=host.id, command=f"libvirt {op}", exit_code=0, vm_id=vm.id)
        return said

    def _vm_host(self, vm: VirtualMachine, host_id: str) -> Host:
        host = self.db.get(Host, host_id)
        if host is None:
            raise ActionError(f"VM {vm.name} runs on a host kerub-tui no longer knows ({host_id})")
        return host

    async def _libvirt_on(self, vm: VirtualMachine, host: Host, op: str, **kwargs: Any) -> str:
        """One libvirt operation on the VM's domain through its host's tunnel; ActionError saying why not.

        An operation that ends in a known state returns once the monitor has recorded the host's
        lifecycle event for it (the document says so, or SETTLE_TIMEOUT passed: the event may come
        late): what the caller reads next, and a one-shot command's re-planning pass, see the VM as
        libvirt does."""
        if not host.simulated:
            await self._connected_to_vm_host(vm.id)
        settles_to = SETTLES_TO.get(op)
        changes = self.db.feed.subscribe(["vm-dynamic"]) if settles_to is not None else None
        try:
            result = await self._hosts().libvirt(host.id, op, vm_id=vm.id, **kwargs)
            if result.exit_code != 0:
                why = (result.stderr.strip() or f"exit status {result.exit_code}").removeprefix(f"libvirt {op}: ")
                raise ActionError(f"VM {vm.name} on {host.name}: {why}")
            if changes is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(SETTLE_TIMEOUT):
                        while not ((dyn := self.db.get(VirtualMachineDynamic, vm.id)) is None
                                   or dyn.status is settles_to):
                            await changes.get()
        finally:
            if changes is not None:
                changes.close()
        return str(result.stdout).strip()

    @staticmethod
    def _availability_text(vm: VirtualMachine) -> str:
        exp = next((e for e in vm.expectations if e.type == "availability"), None)
        if exp is None:
            return "none"
        return ("up" if exp.up else "down") + (",paused" if exp.paused else "")

    def _expect_availability(self, vm: VirtualMachine, *, up: bool) -> bool:
        """Expect the VM up or down (its level kept; dealbreaker when it had none), stored now. Changed?"""
        old = next((e for e in vm.expectations if e.type == "availability"), None)
        if old is not None and old.up == up and not old.paused:
            return False
        level = old.level.value if old is not None else "dealbreaker"
        new = validate_expectation({"type": "availability", "up": up, "level": level}, "vm")
        self._put_availability(vm, new)
        return True

    def _mark_paused(self, vm: VirtualMachine, paused: bool) -> bool:
        """Set the paused mark of an "up" expectation (no other expectation has one). Changed?"""
        old = next((e for e in vm.expectations if e.type == "availability"), None)
        if old is None or not old.up or old.paused == paused:
            return False
        self._put_availability(vm, old.evolve(paused=paused))
        return True

    def _put_availability(self, vm: VirtualMachine, exp: Expectation) -> None:
        current: VirtualMachine = self.db.require(VirtualMachine, vm.id)
        kept: list[Any] = [e for e in current.expectations if e.type != "availability"]
        self.db.put(current.evolve(expectations=[*kept, exp]))

    # --- disks -------------------------------------------------------------------------------

    async def create_disk(self, name: str, *, size: int, read_only: bool = False,
                          expectations: Iterable[str | dict[str, Any] | Expectation] = ()) -> VirtualStorageDevice:
        store = self.db
        if store.find_by_name(VirtualStorageDevice, name) is not None:
            raise ActionError(f"a disk named {name!r} already exists")
        try:
            check_disk_name(name)
            disk = VirtualStorageDevice(name=name, size=size, read_only=read_only,
                                        expectations=self._expectations(expectations, "disk"))
        except (ValueError, InvalidName) as error:
            raise ActionError(_first_error(error)) from None
        store.put(disk)
        self.audit("disk create", disk.name)
        return disk

    async def update_disk(self, ref: str, **changes: Any) -> VirtualStorageDevice:
        store = self.db
        disk: VirtualStorageDevice = self.resolve(VirtualStorageDevice, ref)
        if "expectations" in changes:
            changes["expectations"] = self._expectations(changes["expectations"], "disk")
        if "size" in changes and changes["size"] < disk.size:
            raise ActionError(f"disk {disk.name}: shrinking ({disk.size} -> {changes['size']} bytes) loses data; "
                              "refused")
        try:
            if changes.get("name", disk.name) != disk.name:
                check_disk_name(changes["name"])
            updated = disk.evolve(**changes)
        except (ValueError, InvalidName) as error:
            raise ActionError(_first_error(error)) from None
        store.put(updated)
        self.audit("disk update", updated.name, self._changed(disk, updated))
        return updated

    async def delete_disk(self, ref: str) -> None:
        store = self.db
        disk: VirtualStorageDevice = self.resolve(VirtualStorageDevice, ref)
        users = self.disk_users(disk.id)
        if users:
            raise ActionError(f"disk {disk.name} is attached to {', '.join(sorted(users))}: detach it first")
        dyn = store.get(VirtualStorageDeviceDynamic, disk.id)
        if dyn is not None and dyn.allocations:
            # The planner removes the allocations (LV, file...) once the disk wants to be down.
            await self.update_disk(disk.id, expectations=[
                *[e for e in disk.expectations if e.type != "storage-availability"],
                {"type": "storage-availability", "up": False, "level": "dealbreaker"},
            ])
            raise ActionError(
                f"disk {disk.name} still has {len(dyn.allocations)} allocation(s) on hosts: "
                "its storage will be removed by a plan; delete it again once that plan is done"
            )
        store.delete(VirtualStorageDevice, disk.id)
        store.delete(VirtualStorageDeviceDynamic, disk.id)
        self.audit("disk delete", disk.name)

    # --- images ------------------------------------------------------------------------------

    def _image_place(self, size: int, host_ref: str | None) -> tuple[Host, StorageCapability]:
        """The host and image directory an import of ``size`` bytes goes to: the one given, else the
        connected real host whose image directory has the most room. ActionError saying why none."""
        from .hosts.images import SPACE_MARGIN

        candidates = []
        hosts = [self.host(host_ref)] if host_ref else sorted(self.db.list(Host), key=lambda h: h.name)
        for host in hosts:
            if host.simulated:
                if host_ref:
                    raise ActionError(f"{host.name} is a simulated host: no file can be stored there")
                continue
            caps = [c for c in (host.capabilities.storage if host.capabilities else [])
                    if c.technology is StorageTechnology.file and c.name == IMAGES_DIR]
            if not caps:
                if host_ref:
                    raise ActionError(f"{host.name} has no image directory ({IMAGES_DIR}): create it there "
                                      "(mkdir -p) and kerub-tui uses it after its next discovery")
                continue
            dyn = self.db.get(HostDynamic, host.id)
            if not host_ref and (host.recycling or dyn is None or dyn.status is not HostStatus.up):
                continue
            cap = caps[0]
            free = dyn.storage_free.get(cap.id, cap.free_bytes) if dyn is not None else cap.free_bytes
            candidates.append((free, host, cap))
        if not candidates:
            raise ActionError(f"no connected host has an image directory ({IMAGES_DIR}): create it on a host "
                              "(mkdir -p) or name one with --host")
        free, host, cap = max(candidates, key=lambda c: (c[0], c[1].name))
        if free < size + SPACE_MARGIN:
            raise ActionError(f"not enough space for the image ({format_size(size)}): {host.name} has "
                              f"{format_size(free)} free in {cap.name}"
                              + ("" if host_ref else ", the most of any host"))
        return host, cap

    async def import_image(self, path: str | None = None, *, name: str | None = None, host: str | None = None,
                           from_host: str | None = None, from_path: str | None = None,
                           expected_file: tuple[int, int] | None = None,
                           progress: Callable[[Any], None] | None = None) -> VirtualStorageDevice:
        """Import an image: ``path`` (a file on this machine) streamed over the chosen host's SSH
        connection, or ``from_path``, a file already on ``from_host``, copied into kerub-tui's image
        directory there. Checked on the host (sha256 on both ends, format by qemu-img, no backing or
        data file, an ISO or a partitioned raw disk or a qcow2); only then recorded. Any refusal or
        failure leaves no document and no file. ``expected_file`` is (st_dev, st_ino) of the file a
        control-socket client opened: the file read here must be that one. ``progress`` gets
        :class:`kerub_tui.hosts.images.Progress` reports."""
        from .hosts import images as img

        store = self.db
        if (path is None) == (from_path is None):
            raise ActionError("give either a file to import or --from HOST:PATH")
        source_label = path if path is not None else f"{from_host}:{from_path}"
        if name is None:
            base = os.path.basename(path if path is not None else from_path or "")
            name = base.rsplit(".", 1)[0] if "." in base[1:] else base
            try:
                check_name(name, "image name")
            except InvalidName as error:
                raise ActionError(f"{error}: give the image a name with --name") from None
        try:
            check_name(name, "image name")
        except InvalidName as error:
            raise ActionError(str(error)) from None
        if store.find_by_name(VirtualStorageDevice, name) is not None:
            raise ActionError(f"a disk or image named {name!r} already exists")
        label = "".join(c if c.isprintable() else "?" for c in source_label)[:500]
        stream = None
        try:
            if path is not None:
                stream, size = _open_image_file(path, expected_file)
                target, cap = self._image_place(size, host)
            else:
                if host is not None and host != from_host:
                    raise ActionError("--from copies within its own host: --host must be that host or left out")
                try:
                    check_path(from_path, "path on the host")
                except ValueError as error:
                    raise ActionError(str(error)) from None
                target, cap = self._image_place(1, from_host)
                size = 0
            image_id = new_id()
            names = {ext: img.image_file_name(name, image_id, ext) for ext in img.EXTENSIONS}
            digest = img.sha256_hasher()
            chunks = img.file_chunks(stream, size, digest) if stream is not None else None
            command = img.receive_command(cap.name, size if stream is not None else None, names,
                                          source=from_path if stream is None else None)
            connection = await self._image_connection(target)
            verdict: list[Any] = []

            def decide(report: Any) -> str:
                expected = digest.hexdigest() if stream is not None else None
                total = size if stream is not None else (report.size or 0)
                classified = img.check_report(report, total, expected)
                verdict.append(classified)
                return img.image_extension(classified.format)

            try:
                report = await img.run_receiver(connection, command, total=size, chunks=chunks, decide=decide,
                                                progress=progress)
            except img.ImageRefused as error:
                raise ActionError(f"image {name} refused: {error}; nothing was kept") from None
        except ActionError as error:
            self.audit("image import", f"{name} ({label})", f"refused: {error}")
            raise
        except BaseException as error:  # cancelled (the asking client went away), or worse
            self.audit("image import", f"{name} ({label})",
                       f"interrupted: {type(error).__name__}; the host removed what it had received")
            raise
        finally:
            if stream is not None:
                stream.close()
        classified = verdict[0]
        file_size = report.size if report.size is not None else size
        assert report.sha256 is not None and report.committed is not None
        disk = VirtualStorageDevice(
            id=image_id, name=name, size=file_size, read_only=True,
            image=ImageInfo(format=classified.format, virtual_size=classified.virtual_size, file_size=file_size,
                            sha256=report.sha256, source=label))
        dyn = VirtualStorageDeviceDynamic(id=image_id, updated_at=utcnow(), allocations=[FileAllocation(
            host_id=target.id, capability_id=cap.id, path=report.committed, format=classified.allocation_format,
            actual_size=file_size)])
        with store.transaction():
            store.put(disk)
            store.put(dyn)
        self.audit("image import", name, f"{classified.format}, {file_size} bytes, sha256 {report.sha256}, "
                   f"from {label} to {target.name}:{report.committed}", host_id=target.id)
        self.event("image-imported", f"image {name} ({classified.format}, {format_size(file_size)}) is on "
                   f"{target.name}", host_id=target.id, target=name)
        return disk

    async def _image_connection(self, host: Host) -> Any:
        """The host's SSH connection, connecting the fleet first when this process has not (a one-shot
        command)."""
        hosts = self._hosts()
        if not hosts.started:
            await hosts.start()
        try:
            await hosts.wait_up(host.id, timeout=60)
        except Exception as error:
            raise ActionError(f"{host.name} is not reachable: {error}") from None
        return self._fleet().connection(host.id)

    async def delete_image(self, ref: str) -> None:
        """Remove an image and every copy of it. Refused while a VM links it or a clone's overlay
        depends on a copy; a copy on a host that cannot be reached stays recorded (run it again)."""
        from .hosts import images as img

        store = self.db
        disk = self.image(ref)
        users = self.image_users(disk.id)
        if users:
            raise ActionError(f"image {disk.name} is used by {', '.join(users)}: detach it first")
        dependants = self.image_dependants(disk.id)
        if dependants:
            raise ActionError(f"image {disk.name} is the backing of {', '.join(dependants)}: "
                              "delete those disks first")
        dyn = store.get(VirtualStorageDeviceDynamic, disk.id)
        left = list(dyn.allocations) if dyn is not None else []
        failures = []
        for alloc in list(left):
            host = store.get(Host, alloc.host_id)
            host_name = host.name if host is not None else alloc.host_id
            if host is None:
                left.remove(alloc)  # the host is gone from kerub-tui: nothing to remove through it
                continue
            try:
                connection = await self._image_connection(host)
                result = await connection.run(img.remove_command(alloc.path), timeout=120)
            except (ActionError, SshError, OSError) as error:
                failures.append(f"{host_name}: {error}")
                continue
            self.audit("image delete", disk.name, "copy removed" if result.ok else
                       f"removing the copy failed: {result.stderr.strip()[:200]}", host_id=host.id,
                       command=result.command, exit_code=result.exit_code)
            if result.ok:
                left.remove(alloc)
            else:
                failures.append(f"{host_name}: {result.stderr.strip()[:200] or 'rm failed'}")
        if left:
            store.put(VirtualStorageDeviceDynamic(id=disk.id, allocations=left, updated_at=utcnow()))
            raise ActionError(f"image {disk.name}: {len(left)} copy(ies) could not be removed "
                              f"({'; '.join(failures)}); run the delete again")
        with store.transaction():
            store.delete(VirtualStorageDevice, disk.id)
            store.delete(VirtualStorageDeviceDynamic, disk.id)
        self.audit("image delete", disk.name)

    # --- every document at once (backup and restore) ------------------------------------------

    async def export_documents(self, path: str) -> int:
        """Every document into a JSON file; how many."""
        return self.db.export_file(path)

    async def import_documents(self, path: str, *, replace: bool = False) -> int:
        """The documents of an export file into the store (``replace``: instead of what is there)."""
        count = self.db.import_file(path, replace=replace)
        self.audit("import", path, f"{count} documents")
        return count

    # --- plans and settings -----------------------------------------------------------------

    async def decide_plan(self, ref: str, approve: bool) -> Plan:
        store = self.db
        plan = self.plan(ref)
        if plan.status is not PlanStatus.proposed:
            raise ActionError(f"plan {plan.id[:8]} is {plan.status.value}, not proposed")
        try:  # the planner owns approval: reservations and re-validation
            decided = (replanner.approve if approve else replanner.reject)(store, plan.id, self.actor)
        except ApprovalRefused as error:
            raise ActionError(f"plan {plan.id[:8]} withdrawn: {error}") from None
        return decided

    async def ask_again_plan(self, ref: str) -> Plan:
        """The admin asks again for a plan they rejected: the planner proposes it again (even on the
        same facts) if it is still the answer. Any rejected plan; `vm start` does it for a VM's."""
        plan = self.plan(ref)
        if plan.status is not PlanStatus.rejected:
            raise ActionError(f"plan {plan.id[:8]} is {plan.status.value}, not rejected: nothing to ask again for")
        if plan.asked_again_by:
            raise ActionError(f"plan {plan.id[:8]} was asked for again already, by {plan.asked_again_by}")
        return replanner.ask_again_plan(self.db, plan.id, self.actor)

    async def execute_now(self, plan_id: str, *, connect_timeout: float = 120.0) -> Plan:
        """Carry out an approved plan in this process (a one-shot command with no controller running):
        connect the hosts its steps touch, run it, and return the finished plan."""
        store = self.db
        if self.replanner is not None:
            raise ActionError("this controller runs approved plans by itself")
        plan: Plan = store.require(Plan, plan_id)
        hosts = self._hosts()
        # a host a step acts on from here (woken, fenced through its BMC) need not answer over SSH
        host_ids = sorted({c.host_id for step in plan.steps for c in step.commands
                           if not c.command.startswith("controller: ")}
                          | {step.host_id for step in plan.steps if step.host_id
                             and not all(c.command.startswith("controller: ") for c in step.commands)})
        await hosts.start()
        for host_id in host_ids:
            try:
                await hosts.wait_up(host_id, timeout=connect_timeout)
            except Exception as error:  # the plan stays approved: a controller can run it later
                raise ActionError(f"plan {plan.id[:8]} approved but not run: {error}") from None
        executor = Executor(store, hosts)
        return await executor.execute(plan.id)

    async def set_auto_approve(self, plan_kind: str, enabled: bool, *, deletes: bool = False) -> Settings:
        """Approve plans of a kind without asking (or stop). ``deletes``: plans of it with a step that
        deletes data too; never without it."""
        store = self.db
        settings = self.settings()
        policies = [p for p in settings.auto_approve if p.plan_kind != plan_kind]
        if enabled:
            policies.append(AutoApprovePolicy(plan_kind=plan_kind, created_by=self.actor, created_at=utcnow(),
                                              deletes=deletes))
        updated = settings.evolve(auto_approve=policies)
        store.put(updated)
        self.audit("auto-approve " + ("on" if enabled else "off"),
                   plan_kind + (" (deletions too)" if enabled and deletes else ""))
        return updated

    async def set_optimisation(self, **changes: Any) -> Settings:
        store = self.db
        settings = self.settings()
        try:
            optimisation = settings.optimisation.model_validate({**settings.optimisation.model_dump(), **changes})
        except ValueError as error:
            raise ActionError(_first_error(error)) from None
        updated = settings.evolve(optimisation=optimisation.model_dump())
        store.put(updated)
        self.audit("optimisation", ", ".join(f"{k}={v}" for k, v in sorted(changes.items())))
        return updated

    async def set_retention(self, *, audit_days: int | None = None, event_days: int | None = None) -> Settings:
        """How many days the history keeps audit entries and events; what is older goes at once."""
        settings = self.settings()
        changes = {k: v for k, v in (("audit_days", audit_days), ("event_days", event_days)) if v is not None}
        if not changes:
            raise ActionError("say what to keep: --audit-days DAYS, --event-days DAYS, or both")
        try:
            retention = HistoryRetention.model_validate({**settings.history.model_dump(), **changes})
        except ValueError as error:
            raise ActionError(_first_error(error)) from None
        updated = settings.evolve(history=retention.model_dump())
        self.db.put(updated)
        self.audit("history retention", ", ".join(f"{k}={v}" for k, v in sorted(changes.items())))
        # A shorter retention may remove most of a year: off the loop, in chunks (appends go on meanwhile).
        await asyncio.to_thread(self.db.prune_history)
        return updated

    # --- hosts (store side; the fleet does the SSH side) --------------------------------------

    def host(self, ref: str) -> Host:
        return self.resolve(Host, ref)

    async def evacuate_host(self, ref: str) -> Host:
        """Maintenance: mark the host recycling; the planner drains it (migrations, copies)."""
        store = self.db
        host = self.host(ref)
        if host.recycling:
            return host
        updated = host.evolve(recycling=True)
        store.put(updated)
        self.audit("host evacuate", host.name)
        self.event("host-maintenance", f"{host.name} is in maintenance: its VMs and disks will be moved away",
                   host_id=host.id)
        return updated

    async def update_host(self, ref: str, **changes: Any) -> Host:
        store = self.db
        host = self.host(ref)
        allowed = {"name", "dedicated", "recycling", "end_of_life", "power"}
        if set(changes) - allowed:
            raise ActionError(f"cannot change {', '.join(sorted(set(changes) - allowed))} of a host")
        try:
            updated = host.evolve(**changes)
        except (ValueError, InvalidName) as error:
            raise ActionError(_first_error(error)) from None
        store.put(updated)
        self.audit("host update", updated.name, self._changed(host, updated))
        return updated

    async def set_host_accel(self, ref: str, accel: str) -> Host:
        """The accelerator of a host's guests: kvm, tcg, or auto (kvm where discovery found it usable).
        Guests started from now on use it; running ones keep theirs until they are next started."""
        store = self.db
        host = self.host(ref)
        if accel not in ("auto", "kvm", "tcg"):
            raise ActionError(f"accelerator {accel!r} must be auto, kvm or tcg")
        hyper = host.capabilities.hypervisor if host.capabilities is not None else None
        if accel == "kvm" and hyper is not None and not hyper.kvm:
            raise ActionError(f"host {host.name} cannot run kvm guests ({hyper.reason or 'no usable kvm'}): "
                              "use tcg or auto")
        updated = host.evolve(accel=accel)
        store.put(updated)
        self.audit("host set", host.name, f"accel {accel}")
        if accel == "tcg" and hyper is not None and hyper.kvm:
            self.event("accel-forced", f"{host.name} runs its guests under TCG although kvm is available "
                       "(set by the admin)", host_id=host.id)
        return updated

    async def fence_host(self, ref: str, *, confirm_off: bool = False) -> HostDynamic:
        """High availability (issue 16): say that a host that went away runs no guest any more, so the VMs it
        ran may restart elsewhere. ``confirm_off``: the admin has made sure it is off (audited: who, when);
        without it, the host is powered off through its BMC now (ipmitool from here, read back: a simulated
        host's BMC is the simulator's named fake). A host that is up is never fenced."""
        host = self.host(ref)
        # monitoring's pending version when it has one (the fleet's writer coalesces): the fence goes over it
        writer = self.fleet.writer if self.fleet is not None else None
        current = (writer.current(HostDynamic, host.id) if writer is not None else self.db.get(HostDynamic, host.id)) \
            or HostDynamic(id=host.id)
        if current.status is HostStatus.up:
            raise ActionError(f"host {host.name} is up: only a host that is down or unreachable is fenced")
        if current.status is HostStatus.key_mismatch:  # it answers, with another key: it may run anything
            raise ActionError(f"host {host.name} answers with another host key: it is not fenced (check it, then "
                              f"kerub-tui host rekey {host.name})")
        if current.fence is not None:
            return current
        now = utcnow()
        if confirm_off:
            fence = Fence(method="admin", by=self.actor, at=now, note="the admin confirmed it is off")
        else:
            if host.power.ipmi_address is None:
                raise ActionError(f"host {host.name} has no IPMI to power it off: make sure it is off, then "
                                  f"kerub-tui host fence {host.name} --confirm-off")
            result = await self._hosts().fence(host.id)
            if result.exit_code != 0:
                self.audit("host fence", host.name, f"failed: IPMI power off exited {result.exit_code}",
                           host_id=host.id, exit_code=result.exit_code,
                           output_tail=(result.stderr or result.stdout)[-500:])
                why = (result.stderr or result.stdout).strip().splitlines()
                raise ActionError(f"host {host.name} not fenced: IPMI power off failed"
                                  + (f": {why[-1]}" if why else f" (exit {result.exit_code})"))
            fence = Fence(method="ipmi", by=self.actor, at=now,
                          note=f"BMC {host.power.ipmi_user or 'root'}@{host.power.ipmi_address} says power off")
        if writer is not None:  # what monitoring wrote while ipmitool ran
            current = writer.current(HostDynamic, host.id) or current
        if current.status is HostStatus.up:
            raise ActionError(f"host {host.name} is up again: not fenced")
        updated = current.evolve(fence=fence)
        vms = sorted(self._name_of_vm(v) for v in self.db.vms_on_host(host.id))
        if self.ha_narrator is not None:  # what each VM waited for is told before the fence that ends it
            self.ha_narrator.catch_up()
        with self.db.transaction():
            self.db.put(updated)
            self.audit("host fence", host.name, fence.describe(), host_id=host.id)
            self.event("host-fenced", f"{host.name} fenced: {fence.describe()}; the VMs it ran "
                       f"({', '.join(vms) or 'none'}) may restart elsewhere", host_id=host.id)
        if writer is not None:  # a version still pending in the writer would write over the fence: it is this one
            writer.put(updated)
        return updated

    def _name_of_vm(self, vm_id: str) -> str:
        vm = self.db.get(VirtualMachine, vm_id)
        return vm.name if vm is not None else vm_id[:8]

    async def set_vm_ha(self, ref: str, enabled: bool, level: str = "dealbreaker") -> VirtualMachine:
        """`vm set --ha on|off`: the VM's ``ha`` expectation (it comes back after its host fails)."""
        vm: VirtualMachine = self.resolve(VirtualMachine, ref)
        kept: list[Any] = [e for e in vm.expectations if e.type != "ha"]
        if enabled:
            kept.append(validate_expectation({"type": "ha", "level": level}, "vm"))
        return await self.update_vm(vm.id, expectations=kept)

    async def set_ha_policy(self, *, copy_max_age_minutes: int | None = None,
                            restart_from_stale_copies: bool | None = None) -> Settings:
        """How a VM with ``ha`` restarts from a copy taken for redundancy: without asking when the copy is
        younger than ``copy_max_age_minutes`` (0: every copy asks), or whatever its age."""
        settings = self.settings()
        changes = {k: v for k, v in (("copy_max_age_minutes", copy_max_age_minutes),
                                     ("restart_from_stale_copies", restart_from_stale_copies)) if v is not None}
        if not changes:
            raise ActionError("say what to change: --copy-max-age MINUTES, --stale-copies allow|ask")
        try:
            policy = HaPolicy.model_validate({**settings.ha.model_dump(), **changes})
        except ValueError as error:
            raise ActionError(_first_error(error)) from None
        updated = settings.evolve(ha=policy.model_dump())
        self.db.put(updated)
        self.audit("ha policy", ", ".join(f"{k}={v}" for k, v in sorted(changes.items())))
        return updated

    async def remove_host(self, ref: str) -> None:
        store = self.db
        host = self.host(ref)
        vms = store.vms_on_host(host.id)
        disks = store.disks_on_host(host.id)
        if vms or disks:
            raise ActionError(
                f"host {host.name} still has {len(vms)} VM(s) and {len(disks)} disk allocation(s): "
                f"evacuate it first (kerub-tui host evacuate {host.name})"
            )
        store.delete(HostConfiguration, host.id)
        await self._hosts().remove_host(host.id)  # disconnects, then forgets Host and HostDynamic
        self.audit("host remove", host.name)

    def _fleet(self) -> Fleet:
        if self.fleet is None:
            raise ActionError("the controller is not started")
        return self.fleet

    def _hosts(self) -> HostPool:
        if self.hosts is None:
            raise ActionError("the controller is not started")
        return self.hosts

    async def add_simulated_host(self, name: str, profile: str, *, dedicated: bool = False) -> Host:
        """A simulated host of ``profile`` (kerub_tui.sim.profiles): the demo, benchmarks, rehearsals."""
        try:
            host = await self._simulator().add_host(name, profile, dedicated=dedicated)
        except (FleetError, ValueError) as error:
            raise ActionError(str(error)) from None
        self.audit("host add", host.name, f"simulated {profile}")
        return host

    def _simulator(self) -> SimulatedFleet:
        if self.simulator is None:
            raise ActionError("the controller is not started")
        return self.simulator

    async def fetch_host_key(self, address: str, port: int | None = None) -> tuple[str, str]:
        """The host's key and SHA256 fingerprint, for the admin to accept. Nothing runs on the host."""
        try:
            return await self._fleet().fetch_host_key(address, port)
        except (FleetError, SshError, InvalidName, OSError) as error:
            text = str(error)
            raise ActionError(text if text.startswith(address) else f"{address}: {text}") from None

    async def add_host(self, *, name: str, address: str, port: int | None = None, user: str | None = None,
                       identity: str | None = None, fingerprint: str, dedicated: bool = False,
                       password: str | None = None) -> Host:
        """Join a host whose key has the accepted ``fingerprint``: connect, discover, monitor.

        With ``password`` (a one-time login, used once and kept nowhere) the controller's own public
        key is installed for ``user`` first, so the host needs no key the admin installed by hand."""
        try:
            if password is not None:
                if identity is not None:
                    raise ActionError("give either an identity file or a password to install kerub-tui's key, not both")
                await self._fleet().install_key(address, port, user, password, fingerprint)
                self.audit("host install-key", f"{user or 'root'}@{address}", "kerub-tui's public key installed")
            host = await self._fleet().add_host(name, address, port, user, identity, accepted_fingerprint=fingerprint)
        except (FleetError, SshError, InvalidName, OSError) as error:
            self.audit("host add", f"{name} ({address})", f"refused: {error}")
            raise ActionError(str(error)) from None
        if dedicated:
            host = self.db.put(host.evolve(dedicated=True))
        self.audit("host add", host.name, f"key {host.fingerprint}")
        return host

    async def rediscover_host(self, ref: str, *, timeout: float = 120.0) -> Host:
        """Read a host's facts again now (after fixing what made them stale): what can be read
        replaces the stored facts, what still cannot stays stale with its last good reading."""
        host = self.resolve(Host, ref)
        if host.simulated:
            raise ActionError(f"{host.name} is a simulated host: its facts are the simulator's")
        try:
            updated = await self._fleet().rediscover(host.id, timeout=timeout)
        except (FleetError, SshError, OSError) as error:
            self.audit("host rediscover", host.name, f"refused: {error}")
            raise ActionError(str(error)) from None
        caps = updated.capabilities
        stale = sorted(s.section for s in caps.stale) if caps is not None else []
        self.audit("host rediscover", host.name, f"still stale: {', '.join(stale)}" if stale else "every fact read")
        return updated

    async def rekey_host(self, ref: str, fingerprint: str, *, timeout: float = 120.0) -> Host:
        """Accept a host's new SSH host key (reinstalled, key regenerated) once the admin checked its
        fingerprint out of band: the key the host presents now must have ``fingerprint`` and a login
        with it must work, else nothing changes. Then the host reconnects with it and is discovered
        again. Audited either way, with the old and the new fingerprint."""
        host = self.resolve(Host, ref)
        old = host.fingerprint or "-"
        try:
            updated = await self._fleet().accept_host_key(host.id, fingerprint)
        except (FleetError, SshError, InvalidName, OSError) as error:
            self.audit("host rekey", host.name, f"refused: {error}")
            raise ActionError(str(error)) from None
        self.audit("host rekey", host.name, f"key {old} -> {updated.fingerprint}")
        self.event("key-accepted", f"{host.name}: its new host key {updated.fingerprint} was accepted "
                   f"(it was {old})", host_id=host.id, target=updated.fingerprint)
        try:
            return await self._fleet().wait_discovered(host.id, timeout)
        except FleetError:
            state = self._fleet().status(host.id).value
            raise ActionError(f"{host.name}: the new key is accepted, but the host was not discovered within "
                              f"{timeout:g} s (connection {state}); it keeps trying by itself") from None

    # --- consoles ---------------------------------------------------------------------------

    async def open_console(self, vm_ref: str, *, viewer: str | None = None, env: dict[str, str] | None = None,
                           wait: bool = False) -> str:
        """Show a running VM's SPICE console in a viewer, through its host's SSH connection.

        ``viewer`` defaults to $KERUB_TUI_VIEWER, else remote-viewer; ``env`` is the environment the
        viewer runs in (the display of whoever asked). With ``wait``, returns when the viewer ends;
        otherwise the session lives until the viewer ends or the controller stops.
        Opening a console changes nothing, so read-only mode allows it."""
        environment = dict(os.environ)
        environment.update(env or {})
        viewer = viewer or environment.get("KERUB_TUI_VIEWER") or None
        vm = self.resolve(VirtualMachine, vm_ref)
        self._not_simulated(vm, "there is no screen for a viewer to show (no SPICE or VNC server)")
        await self._connected_to_vm_host(vm.id)
        try:
            session = await open_console(self._fleet(), self.db, vm.id, viewer=viewer, env=environment)
        except (ConsoleError, ValueError) as error:
            raise ActionError(str(error)) from None
        if not self.readonly:
            self.audit("console", vm.name, session.description, vm_id=vm.id)
        if wait:
            code = await session.wait()
            if code != 0:  # its output is never shown: it can hold the SPICE password
                how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
                raise ActionError(f"{session.description}: the viewer {how}")
            return session.description
        self._consoles.append(session)
        return session.description

    def _not_simulated(self, vm: VirtualMachine, missing: str) -> None:
        """Refuse a console of a VM on a simulated host, naming what it has not (``missing``)."""
        dyn = self.db.get(VirtualMachineDynamic, vm.id)
        host = self.db.get(Host, dyn.host_id) if dyn is not None and dyn.host_id else None
        if host is not None and host.simulated:
            raise ActionError(f"{vm.name} runs on {host.name}, a simulated host: {missing}")

    async def _connected_to_vm_host(self, vm_id: str, timeout: float = 60.0) -> None:
        """A one-shot command has no connections yet: connect the fleet and wait for the VM's host."""
        hosts = self._hosts()
        if not hosts.started:
            await hosts.start()
        dyn = self.db.get(VirtualMachineDynamic, vm_id)
        if dyn is None or dyn.host_id is None:
            return  # console_vm says the VM is not running, in its words
        try:
            await hosts.wait_up(dyn.host_id, timeout=timeout)
        except Exception as error:
            raise ActionError(f"the VM's host is not reachable: {error}") from None

    async def console_file(self, vm_ref: str, *, local_port: int | None = None) -> str:
        """The .vv connection file (with the SPICE password) for a viewer elsewhere: on request only."""
        vm = self.resolve(VirtualMachine, vm_ref)
        self._not_simulated(vm, "there is no SPICE or VNC server, so no console file")
        await self._connected_to_vm_host(vm.id)
        try:
            text = await console_file(self._fleet(), self.db, vm.id, local_port=local_port)
        except (ConsoleError, ValueError) as error:
            raise ActionError(str(error)) from None
        if not self.readonly:
            self.audit("console file", vm.name, "the .vv file was printed on request", vm_id=vm.id)
        return text

    async def open_serial(self, vm_ref: str, *, view_only: bool = False, force: bool = False) -> ByteStream:
        """The serial console of a running VM, both ways, through its host's libvirt tunnel (no port,
        nothing on the host). ``view_only`` (always so in read-only mode): nothing typed is sent.
        ``force`` takes the console over from another session. The caller closes it."""
        vm = self.resolve(VirtualMachine, vm_ref)
        self._not_simulated(vm, "there is no serial console to attach")
        await self._connected_to_vm_host(vm.id)
        try:
            vm, _dyn, host = console_vm(self.db, vm.id)
            stream = await SerialConsole.open(self._fleet(), vm, host, force=force)
        except (ConsoleError, SerialError) as error:
            raise ActionError(str(error)) from None
        stream.view_only = view_only or self.readonly
        if not self.readonly:
            self.audit("serial console", vm.name, stream.description + (", view-only" if stream.view_only else "")
                       + (", taken over from another session" if force else ""), vm_id=vm.id)
        return stream

    async def screenshot(self, vm_ref: str, *, connect: bool = True) -> bytes:
        """The screen of a running VM now, as a PNG, through its host's libvirt tunnel. Without
        ``connect``, hosts this controller has not connected are not connected for it (a preview
        shown on opening a screen must not start connections): ActionError says so."""
        vm = self.resolve(VirtualMachine, vm_ref)
        self._not_simulated(vm, "there is no screen to take")
        if not connect and not self._hosts().started:
            raise ActionError("the hosts are not connected here (read-only, or no monitoring): v takes the "
                              "screen, connecting the VM's host")
        await self._connected_to_vm_host(vm.id)
        try:
            vm, _dyn, host = console_vm(self.db, vm.id)
            mime, data = await take_screenshot(self._fleet(), vm, host)
            picture = await asyncio.to_thread(decode, data)
        except (ConsoleError, SerialError) as error:
            raise ActionError(str(error)) from None
        except PictureError as error:
            raise ActionError(f"the screen of {vm.name} came as {mime}, which kerub-tui does not read: "
                              f"{error}") from None
        return await asyncio.to_thread(picture.png)

    # --- explanation ------------------------------------------------------------------------

    async def explain(self, vm_ref: str) -> str:
        """Why the VM runs where it runs, and why each other host was rejected."""
        vm = self.resolve(VirtualMachine, vm_ref)
        return explain_text(self.db, vm.id)





def _open_image_file(path: str, expected: tuple[int, int] | None) -> tuple[Any, int]:
    """Open a local file to import: a regular, readable, non-empty file (and the very file a control
    socket client named, when ``expected`` is its (st_dev, st_ino)). ActionError otherwise."""
    import stat

    shown = "".join(c if c.isprintable() else "?" for c in path)
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as error:
        raise ActionError(f"cannot read {shown}: {error.strerror or error}") from None
    try:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ActionError(f"{shown} is not a regular file")
        if info.st_size <= 0:
            raise ActionError(f"{shown} is empty")
        if expected is not None and (info.st_dev, info.st_ino) != tuple(expected):
            raise ActionError(f"{shown} is not the file the command line opened (it was replaced meanwhile)")
    except BaseException:
        stream.close()
        raise
    return stream, info.st_size


def _first_error(error: Exception) -> str:
    """One line from a pydantic ValidationError (or any error) for the admin."""
    errors = getattr(error, "errors", None)
    if callable(errors):
        items = errors()
        if items:
            item = items[0]
            msg = str(item.get("msg", "")).removeprefix("Value error, ")
            loc = ".".join(str(p) for p in item.get("loc", ()))
            field = loc.rsplit(".", 1)[-1].replace("_", " ")
            # Our validators already name the field ("VM name 'x;y' contains ';'"): no need to repeat it.
            return f"{loc}: {msg}" if loc and field not in msg else msg
    return str(error)


__all__ = ["ActionError", "Controller", "NotFound", "ReadOnlyMode", "StoreError"]
