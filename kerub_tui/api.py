"""The console API: what the console (screens/, app.py) and the command line (cli.py) may ask of a controller.

Two classes implement it: the :class:`~kerub_tui.controller.Controller` that owns the store, and the
:class:`~kerub_tui.control.RemoteController` that serves a console attached to a running controller
through its control socket. Both are checked against :class:`ConsoleAPI` by mypy.

Every action is declared once, in :data:`ACTIONS`, saying whether it changes anything (the k9s
"dangerous" flag). :data:`ACTIONS` is that registry; :func:`refusal` is the one place that says no in
read-only mode: the actions' own guard (installed by :func:`guarded`) and the console's check before
it opens an editor both ask it. Queries change nothing and are not registered.

This module imports only core/: the console can type against it without reaching further down.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from .core.bus import Subscription
from .core.metrics import MetricSeries
from .core.models import (
    Accelerator,
    AuditEntry,
    CloudInit,
    DiskLink,
    Document,
    Event,
    Host,
    HostDynamic,
    Nic,
    Plan,
    Settings,
    VirtualMachine,
    VirtualStorageDevice,
)

if TYPE_CHECKING:
    from .core.expectations import Expectation
    from .core.terminal import ByteStream

D = TypeVar("D", bound=Document)
C = TypeVar("C", bound=type)

READ_ONLY_MESSAGE = "read-only mode: nothing can be changed (started with --readonly)"


class ActionError(Exception):
    """An action the controller refuses, with one line the admin can act on."""


class ReadOnlyMode(ActionError):
    def __init__(self) -> None:
        super().__init__(READ_ONLY_MESSAGE)


@dataclass(frozen=True)
class ActionSpec:
    """One action of the API. ``changes``: it changes documents or hosts, so read-only mode refuses it
    (the k9s "dangerous" flag). ``remote``: an attached console may call it through the control socket."""

    name: str
    changes: bool
    remote: bool = True


ACTIONS: dict[str, ActionSpec] = {}


def refusal(readonly: bool, name: str) -> str | None:
    """Why ``name`` may not run now, or None: the only read-only check there is."""
    spec = ACTIONS.get(name)
    if readonly and (spec is None or spec.changes):
        return READ_ONLY_MESSAGE
    return None


LIFECYCLE = frozenset({"start", "stop"})


def guarded(cls: C) -> C:
    """Class decorator: every registered action the class defines refuses itself in read-only mode
    (``self.readonly``) before it runs, with :class:`ReadOnlyMode`. A public async method that is
    neither registered nor part of the lifecycle is a mistake (an action that forgot to say whether
    it changes anything): TypeError when the class is defined."""
    for name, member in cls.__dict__.items():
        if (inspect.iscoroutinefunction(member) and not name.startswith("_") and name not in ACTIONS
                and name not in LIFECYCLE):
            raise TypeError(f"{cls.__name__}.{name} is not declared in kerub_tui.api.ACTIONS: "
                            "say there whether it changes anything")
    for name, spec in ACTIONS.items():
        if not spec.changes:
            continue
        method = cls.__dict__.get(name)
        if method is None or getattr(method, "__kerub_guarded__", False):
            continue

        def make(method: Callable[..., Awaitable[Any]], name: str) -> Callable[..., Awaitable[Any]]:
            @functools.wraps(method)
            async def guard(self: Any, *args: Any, **kwargs: Any) -> Any:
                if refusal(self.readonly, name) is not None:
                    raise ReadOnlyMode()
                return await method(self, *args, **kwargs)

            guard.__kerub_guarded__ = True  # type: ignore[attr-defined]
            return guard

        setattr(cls, name, make(method, name))
    return cls


class NewDisk(BaseModel):
    """A blank disk made together with the VM that links it, in the same transaction
    (``create_vm``/``update_vm``): a refused VM leaves no disk behind."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    size: int
    bus: Literal["virtio", "scsi", "sata", "ide"] = "virtio"
    expectations: list[Any] = []


def cloud_init_summary(cloud_init: CloudInit | None) -> str:
    """What the audit log says of cloud-init settings: counts and sizes, never the content."""
    if cloud_init is None:
        return "no cloud-init"
    parts = [f"{len(cloud_init.ssh_keys)} ssh key(s)"]
    if cloud_init.user_data is not None:
        parts.append(f"user data ({len(cloud_init.user_data.encode())} bytes)")
    if cloud_init.network_config is not None:
        parts.append(f"network config ({len(cloud_init.network_config.encode())} bytes)")
    return ", ".join(parts)


MAX_LISTED = 8


def listed(items: Sequence[str]) -> str:
    """Names for one line: the first few, then how many more."""
    if len(items) <= MAX_LISTED:
        return ", ".join(items)
    return ", ".join(items[:MAX_LISTED]) + f" and {len(items) - MAX_LISTED} more"


class Script(Protocol):
    """Something the console runs while it is open (the demo's tour); what it tells, through its ``say``
    (a callable attribute the console sets), shows as a notification."""

    say: Callable[[str], None]

    async def run(self) -> None: ...


# What a VM's status can say (VmState.status): the word the tables show, and its meaning.
VM_STATUSES = {
    "up": "running on its host",
    "down": "not running",
    "paused": "paused on its host",
    "migrating": "moving to another host",
    "lost": "its host is down or unreachable: not known to run",
    "storage-lost": "it runs, but a disk's storage is on a host that is down: its guest cannot read it",
    "waiting": "a plan for it waits for approval",
    "starting": "an approved plan starts it",
    "stopping": "an approved plan stops it",
    "unplaced": "it should run, but no host can take it (can't place)",
    # its host is connecting (not seen since this controller started): what was last seen, not confirmed yet
    "up?": "up when its host was last seen; its host is connecting",
    "paused?": "paused when its host was last seen; its host is connecting",
    "migrating?": "migrating when its host was last seen; its host is connecting",
}
_LABELS = {"waiting": "awaits approval", "unplaced": "can't place", "storage-lost": "storage lost"}


@dataclass(frozen=True)
class VmPlans:
    """The plans about one VM that its status and detail mention."""

    proposed: tuple[Plan, ...] = ()
    active: tuple[Plan, ...] = ()  # approved or running
    rejected: Plan | None = None  # the latest rejected one the admin has not asked for again


@dataclass(frozen=True)
class VmState:
    """What is known about a VM now, in one place (the VM table, VM detail, host rows, ``vm list``)."""

    status: str  # a key of VM_STATUSES
    host_id: str | None = None  # where it runs; a lost VM's last host
    reason: str = ""  # why, in words: the down host, the plan waited for, why no host fits
    live: bool = False  # whether the monitor's figures (memory, CPU) are current
    plans: VmPlans = field(default_factory=VmPlans)
    stale: bool = False  # its figures are the last seen ones, from before its host was connecting (shown dimmed)

    @property
    def label(self) -> str:
        return _LABELS.get(self.status, self.status)


class ConsoleQueries(Protocol):
    """The queries of the API: they read the controller's documents and change nothing."""

    @property
    def live(self) -> bool:
        """True when a controller monitors the hosts, so the documents' figures (status, CPU, memory) are
        current; False when nothing does (read-only: the store as last written, figures as last seen)."""
        ...

    def get(self, kind: type[D], doc_id: str) -> D | None: ...
    def documents(self, kind: type[D]) -> list[D]: ...
    def find_by_name(self, kind: type[D], name: str) -> D | None: ...
    def resolve(self, kind: type[D], ref: str) -> D: ...
    def plan(self, ref: str) -> Plan: ...
    def image(self, ref: str) -> VirtualStorageDevice: ...
    def images(self) -> list[VirtualStorageDevice]: ...
    def audit_log(self, since: dt.datetime | None = None, *, host_id: str | None = None,
                  subject: str | None = None, limit: int | None = None) -> list[AuditEntry]: ...
    def event_log(self, since: dt.datetime | None = None, *, host_id: str | None = None,
                  subject: str | None = None, limit: int | None = None) -> list[Event]: ...
    def open_violations(self) -> dict[str, dict[str, str]]: ...
    def history_counts(self) -> dict[str, int]: ...
    def metrics(self, kind: Literal["host", "vm"], doc_id: str, range_name: str = "1d",
                now: dt.datetime | None = None) -> MetricSeries: ...
    def vms_on_host(self, host_id: str) -> set[str]: ...
    def disks_on_host(self, host_id: str) -> set[str]: ...
    def host_of_vm(self, vm_id: str) -> str | None: ...
    def settings(self) -> Settings: ...
    def store_damage(self) -> list[str]: ...
    def disk_users(self, disk_id: str) -> list[str]: ...
    def vm_own_disks(self, vm_id: str) -> list[str]: ...
    def image_users(self, image_id: str) -> list[str]: ...
    def verdicts(self, kind: Literal["vm", "disk"], doc_id: str) -> dict[int, str] | str: ...
    def accelerator(self, host_id: str) -> Accelerator | None: ...
    def unusable_storage(self, host_id: str) -> dict[str, str]: ...
    def failing_pvs(self, host_id: str, capability_id: str) -> set[str]: ...
    def impact(self, what: str, ids: Sequence[str]) -> list[str]: ...
    def vm_state(self, vm_id: str) -> VmState: ...
    def vm_plans(self, vm_id: str) -> VmPlans: ...
    def host_vm_counts(self, host_id: str) -> tuple[int, int]: ...


class ConsoleAPI(ConsoleQueries, Protocol):
    """What the console and the command line use of a controller, local or attached."""

    data_dir: Path
    readonly: bool
    attached: bool  # True: another process owns the store (a console attached through the socket)
    started: bool

    @property
    def runs_plans(self) -> bool:
        """True when approved plans are carried out by a controller that keeps running (this one, or the
        one an attached console talks to); False for a one-shot command, which runs them itself
        (``execute_now``)."""
        ...

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def subscribe(self, kinds: Iterable[str] | None = None) -> Subscription: ...

    # --- actions ----------------------------------------------------------------------------------

    async def create_vm(self, name: str, *, cpus: int = 1, memory_min: int, memory_max: int | None = None,
                        architecture: str = "x86_64", disks: Iterable[DiskLink | dict[str, Any]] = (),
                        nics: Iterable[Nic | dict[str, Any]] = (),
                        expectations: Iterable[str | dict[str, Any] | Expectation] = (),
                        disk_sizes: Iterable[int] = (), cdrom: str | None = None,
                        boot: Iterable[str] | None = None, from_image: str | None = None,
                        cloud_init: CloudInit | dict[str, Any] | None = None,
                        new_disks: Iterable[NewDisk | dict[str, Any]] = (),
                        graphics: Literal["spice", "vnc"] = "spice") -> VirtualMachine: ...
    async def update_vm(self, ref: str, *, new_disks: Iterable[NewDisk | dict[str, Any]] = (),
                        **changes: Any) -> VirtualMachine: ...
    async def set_vm_availability(self, ref: str, up: bool, level: str = "dealbreaker") -> VirtualMachine: ...
    async def delete_vm(self, ref: str, *, disks: Literal["keep", "delete"] | None = None) -> list[str]: ...
    async def eject_vm(self, ref: str) -> VirtualMachine: ...
    async def reboot_vm(self, ref: str) -> str: ...
    async def reset_vm(self, ref: str) -> str: ...
    async def poweroff_vm(self, ref: str, *, force: bool = False) -> str: ...
    async def pause_vm(self, ref: str) -> str: ...
    async def resume_vm(self, ref: str) -> str: ...
    async def send_keys(self, ref: str, keys: Sequence[str]) -> str: ...
    async def clone_vm(self, source_ref: str, name: str) -> VirtualMachine: ...
    async def set_vm_cloud_init(self, ref: str, cloud_init: CloudInit | dict[str, Any] | None) -> VirtualMachine: ...
    async def create_disk(self, name: str, *, size: int, read_only: bool = False,
                          expectations: Iterable[str | dict[str, Any] | Expectation] = ()) -> VirtualStorageDevice: ...
    async def update_disk(self, ref: str, **changes: Any) -> VirtualStorageDevice: ...
    async def delete_disk(self, ref: str) -> None: ...
    async def import_image(self, path: str | None = None, *, name: str | None = None, host: str | None = None,
                           from_host: str | None = None, from_path: str | None = None,
                           expected_file: tuple[int, int] | None = None,
                           progress: Callable[[Any], None] | None = None) -> VirtualStorageDevice: ...
    async def delete_image(self, ref: str) -> None: ...
    async def decide_plan(self, ref: str, approve: bool) -> Plan: ...
    async def ask_again_plan(self, ref: str) -> Plan: ...
    async def set_auto_approve(self, plan_kind: str, enabled: bool, *, deletes: bool = False) -> Settings: ...
    async def set_optimisation(self, **changes: Any) -> Settings: ...
    async def set_retention(self, *, audit_days: int | None = None, event_days: int | None = None) -> Settings: ...
    async def fetch_host_key(self, address: str, port: int | None = None) -> tuple[str, str]: ...
    async def add_host(self, *, name: str, address: str, port: int | None = None, user: str | None = None,
                       identity: str | None = None, fingerprint: str, dedicated: bool = False,
                       password: str | None = None) -> Host: ...
    async def remove_host(self, ref: str) -> None: ...
    async def fence_host(self, ref: str, *, confirm_off: bool = False) -> HostDynamic: ...
    async def set_vm_ha(self, ref: str, enabled: bool, level: str = "dealbreaker") -> VirtualMachine: ...
    async def set_ha_policy(self, *, copy_max_age_minutes: int | None = None,
                            restart_from_stale_copies: bool | None = None) -> Settings: ...
    async def evacuate_host(self, ref: str) -> Host: ...
    async def update_host(self, ref: str, **changes: Any) -> Host: ...
    async def set_host_accel(self, ref: str, accel: str) -> Host: ...
    async def rekey_host(self, ref: str, fingerprint: str, *, timeout: float = 120.0) -> Host: ...
    async def rediscover_host(self, ref: str, *, timeout: float = 120.0) -> Host: ...
    async def open_console(self, vm_ref: str, *, viewer: str | None = None, env: dict[str, str] | None = None,
                           wait: bool = False) -> str: ...
    async def console_file(self, vm_ref: str, *, local_port: int | None = None) -> str: ...
    async def open_serial(self, vm_ref: str, *, view_only: bool = False, force: bool = False) -> ByteStream: ...
    async def screenshot(self, vm_ref: str, *, connect: bool = True) -> bytes: ...
    async def explain(self, vm_ref: str) -> str: ...
    async def execute_now(self, plan_id: str, *, connect_timeout: float = 120.0) -> Plan: ...
    async def export_documents(self, path: str) -> int: ...
    async def import_documents(self, path: str, *, replace: bool = False) -> int: ...


# Each action, declared once. What the console may call of an attached controller (remote=True) is
# what the control socket serves; the rest runs only where the store is.
# Not actions, so not declared: `check [--repair]` works on the store file itself, before any controller
# opens it (a store too damaged for a controller to open is what it repairs); cli.run_check refuses
# --repair with --readonly itself. `host add --install-key` with a controller running logs in from the
# command line's own process (the password never goes through the socket): it is the first half of
# add_host, refused as add_host is (refusal(readonly, "add_host")).
for _name, _changes, _remote in (
    # (name, changes anything, an attached console may call it through the socket)
    ("create_vm", True, True),
    ("update_vm", True, True),
    ("set_vm_availability", True, True),
    ("delete_vm", True, True),
    ("eject_vm", True, True),
    ("reboot_vm", True, True),
    ("reset_vm", True, True),
    ("poweroff_vm", True, True),
    ("pause_vm", True, True),
    ("resume_vm", True, True),
    ("send_keys", True, True),
    ("clone_vm", True, True),
    ("set_vm_cloud_init", True, True),
    ("create_disk", True, True),
    ("update_disk", True, True),
    ("delete_disk", True, True),
    ("import_image", True, False),
    ("delete_image", True, True),
    ("decide_plan", True, True),
    ("ask_again_plan", True, True),
    ("execute_now", True, False),
    ("set_auto_approve", True, True),
    ("set_optimisation", True, True),
    ("set_retention", True, True),
    ("fetch_host_key", False, True),
    ("add_host", True, True),
    ("add_simulated_host", True, False),
    ("remove_host", True, True),
    ("fence_host", True, True),
    ("set_vm_ha", True, True),
    ("set_ha_policy", True, True),
    ("evacuate_host", True, True),
    ("update_host", True, True),
    ("set_host_accel", True, True),
    ("rekey_host", True, True),
    ("rediscover_host", True, True),
    ("open_console", False, True),
    ("console_file", False, True),
    # a stream both ways: an attached console asks for it on a connection of its own (control.py's
    # "serial" method), not through "call"
    ("open_serial", False, False),
    ("screenshot", False, True),
    ("explain", False, True),
    ("export_documents", False, False),
    ("import_documents", True, False),
):
    ACTIONS[_name] = ActionSpec(_name, _changes, _remote)
del _name, _changes, _remote

REMOTE_ACTIONS = frozenset(name for name, spec in ACTIONS.items() if spec.remote)
