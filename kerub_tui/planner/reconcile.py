"""After a crash: the documents and the hosts made to agree again.

A controller can be killed between a step's command and the record of what it made. Three things
close that gap:

- **Intents.** Before a step that creates a disk's storage runs its commands, the executor records
  (and commits) what it is about to make: the disk and the allocation, with its host and exact name
  (``StepIntent`` in the step's record). ``intent_of`` builds it.
- **Dead writers.** Every process that opens the store for writing marks the plans a dead process
  left ``running`` (and their running step) ``interrupted``, with the reason and an event
  (``interrupt_dead_writers``). A plan names the process carrying it out (``Plan.runner``: pid,
  start time and boot id), so "dead" is checked, not guessed.
- **Reconcile.** When a host (re)connects, what it reports (LVs, image files) is compared with the
  documents (``reconcile``, pure): an object an unsettled intent names and whose shape matches is
  adopted (its allocation recorded as the step would have); an intent whose object is not there is
  settled as never made; anything kerub-named (``steps.allocation_name``: ``kerub-``) that no
  document or intent knows becomes an event and a ``cleanup`` proposal, which the admin approves
  (or an auto-approve policy for ``cleanup`` plans, which the admin sets knowingly: it deletes data).

Half-made copies (``CopyAllocation``) are never adopted: their data may be partial; they are
offered for cleanup instead. Simulated hosts are not reconciled (the simulator loses nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..core.models import (
    Cost,
    Event,
    EventSeverity,
    FileAllocation,
    Host,
    HostConfiguration,
    HostDynamic,
    HostStatus,
    LvmAllocation,
    Plan,
    PlanStatus,
    StepIntent,
    StepOutcome,
    StepRecord,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
    utcnow,
)
from ..core.sizes import format_size
from .state import OperationalState, Reservation
from .steps import (
    CopyAllocation,
    ExtendFileImage,
    ExtendLv,
    Operation,
    ShellOp,
    Step,
    _CreateAllocation,
    _find_allocation,
    _host_down,
    _RemoveAllocation,
    step_type,
)

log = logging.getLogger(__name__)

KERUB_PREFIX = "kerub-"  # steps.allocation_name: what kerub-tui names the storage it makes
CLEANUP = "cleanup"  # the kind of the plans that remove what no document knows
RECONCILER = "kerub-tui reconcile"
MiB = 1 << 20


# --- who is carrying out a plan ---------------------------------------------------------------------


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def process_identity(pid: int | None = None) -> str:
    """``pid:start:boot`` of a process (this one by default): a pid reused later does not match."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_start_ticks(pid) or '?'}:{_boot_id()}"


def identity_alive(identity: str | None) -> bool:
    """Whether the process ``identity`` names still runs (same pid, same start time, same boot)."""
    if not identity:
        return False
    pid_text, _, rest = identity.partition(":")
    start, _, boot = rest.partition(":")
    if not pid_text.isdigit() or start == "?" or boot != _boot_id():
        return False
    return _start_ticks(int(pid_text)) == start


def _describe_runner(identity: str | None) -> str:
    if not identity:
        return "the process that ran it (not recorded)"
    return f"the process that ran it (pid {identity.partition(':')[0]})"


def interrupt_dead_writers(store: Any, *, now: dt.datetime | None = None) -> list[Plan]:
    """Mark the plans left ``running`` by a process that is gone (and their running steps)
    ``interrupted``, each with the reason, an audit entry and an event. Called by every process that
    opens the store for writing; a plan this very process runs is left alone."""
    from ..core.models import AuditEntry

    now = now or utcnow()
    mine = process_identity()
    out = []
    for plan in sorted(store.list(Plan), key=lambda p: p.id):
        if plan.status is not PlanStatus.running or plan.runner == mine:
            continue
        if identity_alive(plan.runner):
            # Only one process writes a data dir, and it is this one: a live runner elsewhere cannot be
            # writing here. Say so rather than guess.
            log.warning("plan %s is marked running by live process %s", plan.id[:8], plan.runner)
            continue
        who = _describe_runner(plan.runner)
        reason = f"{who} is gone: stopped while the plan ran; re-planning from what the hosts report"
        records = [r.evolve(outcome=StepOutcome.interrupted, ended_at=now, error=f"{who} stopped while this step ran")
                   if r.outcome is StepOutcome.running else r for r in plan.records]
        updated = plan.evolve(status=PlanStatus.interrupted, records=records, status_reason=reason)
        with store.transaction():
            store.put(updated)
            store.put(AuditEntry(os_user=RECONCILER, action="plan interrupted", target=plan.id,
                                 outcome="interrupted: " + reason, plan_id=plan.id))
            store.put(Event(type="plan-interrupted", severity=EventSeverity.warning, target=plan.id,
                            message=f"plan {plan.id[:8]} ({plan.plan_kind}): {reason}"))
        out.append(updated)
    return out


# --- intents -----------------------------------------------------------------------------------------


def intent_of(step: Step, state: OperationalState) -> StepIntent | None:
    """What ``step`` is about to create, remove or resize on a host, for its record before its
    commands run."""
    if isinstance(step, _CreateAllocation):
        # a step that fills what it creates (an image's clone into an LV) is not adopted half-filled
        return StepIntent(disk_id=step.disk, allocation=step.allocation(), adopt=getattr(step, "adoptable", True))
    if isinstance(step, CopyAllocation):
        creator = step._creator(state)
        if creator is not None:
            return StepIntent(disk_id=step.disk, allocation=creator.allocation(), adopt=False)
        return None
    if isinstance(step, (_RemoveAllocation, ExtendLv, ExtendFileImage)):
        current = _find_allocation(state, step.disk, step.host, step.capability)
        if current is None:
            return None
        if isinstance(step, _RemoveAllocation):
            return StepIntent(disk_id=step.disk, allocation=current, change="remove")
        return StepIntent(disk_id=step.disk, allocation=current.evolve(actual_size=step.size),
                          change="resize")
    return None


def object_key(alloc: Any) -> tuple[str, ...]:
    """What an allocation is on its host, whatever its size: equal keys = the same object."""
    if isinstance(alloc, LvmAllocation):
        return (alloc.host_id, "lv", alloc.vg, alloc.lv)
    if isinstance(alloc, FileAllocation):
        return (alloc.host_id, "file", alloc.path)
    return (alloc.host_id, alloc.type, getattr(alloc, "pool", ""), getattr(alloc, "volume", ""))


def object_label(alloc: Any) -> str:
    if isinstance(alloc, LvmAllocation):
        return f"LV {alloc.vg}/{alloc.lv}"
    if isinstance(alloc, FileAllocation):
        return f"image {alloc.path}"
    return f"{alloc.type} volume {getattr(alloc, 'volume', '?')}"


def size_matches(intended: int | None, seen: int | None) -> bool:
    """A made object is at least what was asked and at most what rounding up gives (LVM rounds to
    its extents, qemu-img to sectors)."""
    if intended is None or seen is None:
        return False
    return intended <= seen <= intended + max(256 * MiB, intended // 100)


@dataclass(frozen=True)
class Pending:
    """An intent not settled yet: the step was cut off (or failed) before it recorded its outcome."""

    plan_id: str
    step_index: int
    intent: StepIntent

    @property
    def host_id(self) -> str:
        return self.intent.allocation.host_id

    @property
    def key(self) -> tuple[str, ...]:
        return object_key(self.intent.allocation)


def pending_intents(plans: Iterable[Plan]) -> list[Pending]:
    """The intents of steps that neither finished nor run now, not yet settled by a reconcile."""
    out = []
    for plan in plans:
        for record in plan.records:
            intent = record.intent
            if intent is None or intent.resolution is not None:
                continue
            if record.outcome is StepOutcome.done:
                continue  # recorded by the step itself
            if record.outcome is StepOutcome.running and plan.status is PlanStatus.running:
                continue  # in flight in this very process
            out.append(Pending(plan.id, record.step_index, intent))
    return sorted(out, key=lambda p: (p.plan_id, p.step_index))


def running_intents(plans: Iterable[Plan]) -> set[tuple[str, ...]]:
    """Objects steps of this process are making right now: theirs, not orphans."""
    return {object_key(r.intent.allocation) for p in plans if p.status is PlanStatus.running
            for r in p.records if r.intent is not None and r.outcome is StepOutcome.running}


# --- what a host reports ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeenObject:
    """A kerub-made object a host reports: an LV (vg, name), an image file (path), an iSCSI target of
    kerub-tui's IQN (``iscsi``: its iqn, tid in ``share_id``) or a ganesha export file kerub-tui wrote
    (``export``: its path, export id in ``share_id``)."""

    # "lv", "file", "iscsi", "iscsi-acl" (name: the address a target's ACL lets in), "export", or "iscsi-secret" (a
    # libvirt secret of usage type iscsi kerub-tui names: name, its usage)
    kind: str
    name: str  # LV name, the file's path, the target's IQN, the exported directory
    size: int | None = None  # LV size; a file's virtual size when it was read
    vg: str = ""
    pool: str | None = None  # a thin LV's pool
    share_id: int = 0  # the target's tid, the export's ganesha id
    users: tuple[str, ...] = ()  # a target's incoming CHAP accounts (tgtadm's "Account information")

    def key(self, host_id: str) -> tuple[str, ...]:
        if self.kind == "lv":
            return (host_id, "lv", self.vg, self.name)
        if self.kind == "iscsi":
            return share_key(host_id, "iscsi", str(self.share_id))
        if self.kind == "iscsi-acl":
            return share_key(host_id, "iscsi-acl", f"{self.share_id} {self.name}")
        if self.kind == "export":
            return share_key(host_id, "export", self.name)
        if self.kind == "iscsi-secret":
            return share_key(host_id, "iscsi-secret", self.name)
        return (host_id, "file", self.name)

    def label(self) -> str:
        if self.kind == "lv":
            return f"LV {self.vg}/{self.name}"
        if self.kind == "iscsi":
            return f"iSCSI target {self.share_id} ({self.name})"
        if self.kind == "iscsi-acl":
            return f"{self.name} in the ACL of iSCSI target {self.share_id}"
        if self.kind == "export":
            return f"NFS export {self.name}"
        if self.kind == "iscsi-secret":
            return f"iSCSI CHAP secret {self.name} in libvirt"
        return f"image {self.name}"


def share_key(host_id: str, kind: str, ident: str) -> tuple[str, ...]:
    """A share's key: an iSCSI target by its tid, a ganesha export by its directory."""
    return (host_id, kind, ident)


def config_share_keys(config: HostConfiguration) -> set[tuple[str, ...]]:
    """The shares a host's configuration document records."""
    return ({share_key(config.id, "iscsi", str(t.tid)) for t in config.iscsi_targets}
            | {share_key(config.id, "iscsi-acl", f"{t.tid} {a}") for t in config.iscsi_targets
               for a in (t.initiators or ["ALL"])}
            | {share_key(config.id, "export", e.path) for e in config.exports if e.server == "ganesha"}
            | {share_key(config.id, "iscsi-secret", s.usage) for s in config.iscsi_secrets})


def _share_step_key(step: Any) -> tuple[str, ...] | None:
    """The share a planned step makes, or None (not a share step)."""
    from .steps.sharing import AllowIscsiInitiator, ExportNfs, ShareIscsi

    if isinstance(step, ShareIscsi):
        return share_key(step.host, "iscsi", str(step.tid))
    if isinstance(step, AllowIscsiInitiator):
        return share_key(step.host, "iscsi-acl", f"{step.tid} {step.initiator}")
    if isinstance(step, ExportNfs) and step.server == "ganesha":
        return share_key(step.host, "export", step.path)
    return None


def _share_steps(plans: Iterable[Plan]) -> list[tuple[Plan, int, Step, tuple[str, ...]]]:
    """Every share step of these plans (the plan, its index, the step, the share's key)."""
    from .steps import UnknownStep, step_from_planned

    out = []
    for plan in plans:
        for index, planned in enumerate(plan.steps):
            if planned.type not in ("iscsi-share", "iscsi-allow", "nfs-export"):
                continue
            with contextlib.suppress(UnknownStep, ValueError, TypeError):
                step = step_from_planned(planned)
                key = _share_step_key(step)
                if key is not None:
                    out.append((plan, index, step, key))
    return out


def _started(plan: Plan, index: int) -> bool:
    """Whether the plan's step began (a record) and did not record its end as done."""
    record = next((r for r in plan.records if r.step_index == index), None)
    return record is not None and record.outcome is not StepOutcome.done


@dataclass(frozen=True)
class HostReport:
    """What one host reports. ``None`` for a kind that could not be read: nothing is concluded about
    it (an unreadable host is not an empty one)."""

    host_id: str
    lvs: tuple[SeenObject, ...] | None = None
    files: tuple[SeenObject, ...] | None = None
    targets: tuple[SeenObject, ...] | None = None  # iSCSI targets of kerub-tui's IQN
    exports: tuple[SeenObject, ...] | None = None  # ganesha export files kerub-tui wrote
    secrets: tuple[SeenObject, ...] | None = None  # libvirt secrets (iSCSI CHAP) kerub-tui names

    def find(self, key: tuple[str, ...]) -> tuple[bool | None, SeenObject | None]:
        """(whether the kind was read, the object) for an object key."""
        kind = key[1]
        seen = self.lvs if kind == "lv" else self.files if kind == "file" else None
        if seen is None:
            return None, None
        return True, next((s for s in seen if s.key(self.host_id) == key), None)


# --- the pure part -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Orphan:
    host_id: str
    seen: SeenObject
    why: str  # no document knows it / its shape does not match what was intended

    @property
    def key(self) -> tuple[str, ...]:
        return self.seen.key(self.host_id)


@dataclass
class Outcome:
    adopted: list[tuple[Pending, int]] = field(default_factory=list)  # with the size seen
    absent: list[Pending] = field(default_factory=list)
    mismatched: list[tuple[Pending, str]] = field(default_factory=list)
    orphans: list[Orphan] = field(default_factory=list)
    # a share an interrupted plan's step made before it could record it: (plan id, step index, seen)
    adopted_shares: list[tuple[str, int, SeenObject]] = field(default_factory=list)
    # a recorded target whose CHAP account on the host is not the one recorded: (host id, tid, what the host
    # shows); its secret is forgotten, so the planner re-keys it before a new reader logs in
    unkeyed: list[tuple[str, int, str]] = field(default_factory=list)
    # a libvirt secret (iSCSI CHAP) kerub-tui names that no document records (a controller cut off between its
    # definition and the step's record): recorded where a VM there reads with it, else offered for cleanup
    unrecorded_secrets: list[Orphan] = field(default_factory=list)


def known_objects(disk_dyns: Iterable[VirtualStorageDeviceDynamic], configs: Iterable[HostConfiguration],
                  plans: Iterable[Plan]) -> set[tuple[str, ...]]:
    """Every object a document names: allocations, thin pools, and what steps running now make."""
    plans = list(plans)
    known = {object_key(a) for d in disk_dyns for a in d.allocations}
    # a thin pool a thin LV lives in is known even where no configuration records it (removing the pool
    # would take the thin LVs with it)
    known |= {(a.host_id, "lv", a.vg, a.thin_pool) for d in disk_dyns for a in d.allocations
              if isinstance(a, LvmAllocation) and a.thin_pool}
    for config in configs:
        known |= {(config.id, "lv", p.vg, p.name) for p in config.thin_pools}
        known |= config_share_keys(config)
    # the shares plans of this process are making now
    for _plan, _i, step, key in _share_steps(p for p in plans if p.status is PlanStatus.running):
        known.add(key)
        if key[1] == "iscsi":  # the ACL entry it binds
            known.add(share_key(key[0], "iscsi-acl", f"{key[2]} {getattr(step, 'initiator', 'ALL')}"))
    return known | running_intents(plans)


def reconcile(report: HostReport, *, disks: Iterable[str], disk_dyns: Iterable[VirtualStorageDeviceDynamic],
              configs: Iterable[HostConfiguration], plans: Iterable[Plan]) -> Outcome:
    """Compare one host's report with the documents: what to adopt, settle, and offer for cleanup."""
    plans = list(plans)
    disk_dyns = list(disk_dyns)
    disk_ids = set(disks)
    known = known_objects(disk_dyns, configs, plans)
    outcome = Outcome()
    claimed: set[tuple[str, ...]] = set()
    for pending in pending_intents(plans):
        if pending.host_id != report.host_id:
            continue
        read, seen = report.find(pending.key)
        if read is None:
            continue  # not readable now: settled at a later connect
        change = pending.intent.change
        if change != "create":
            listed, size = _recorded(disk_dyns, pending)
            if change == "remove":  # gone from the host, still in the documents: record the removal
                record = seen is None and listed
            else:  # grown as intended, the documents say otherwise: record the new size
                record = (listed and seen is not None and seen.size != size
                          and size_matches(pending.intent.allocation.actual_size, seen.size))
            if record:
                outcome.adopted.append((pending, seen.size or 0 if seen is not None else 0))
            else:
                outcome.absent.append(pending)  # not done, or the documents already say so
            continue
        if seen is None or pending.key in known or pending.key in claimed:
            # Not there: never made. Or a document (or another intent) already records it: this step
            # made nothing that is not known.
            outcome.absent.append(pending)
            continue
        alloc = pending.intent.allocation
        why = None
        if not pending.intent.adopt:
            why = "it was being copied when the controller stopped: its data may be partial"
        elif pending.intent.disk_id not in disk_ids:
            why = "its disk was deleted since"
        elif not size_matches(alloc.actual_size, seen.size):
            why = (f"it is {format_size(seen.size) if seen.size is not None else 'of unknown size'}, "
                   f"{format_size(alloc.actual_size or 0)} was intended")
        elif isinstance(alloc, LvmAllocation) and (alloc.thin_pool or None) != (seen.pool or None):
            why = f"it is in pool {seen.pool or '(none)'}, {alloc.thin_pool or 'no pool'} was intended"
        claimed.add(pending.key)
        if why is None:
            outcome.adopted.append((pending, seen.size or 0))
        else:
            outcome.mismatched.append((pending, why))
            if _removable(report.host_id, seen):
                outcome.orphans.append(Orphan(report.host_id, seen, why))
    adopted = {p.key for p, _ in outcome.adopted}
    _reconcile_shares(report, plans, known, outcome)
    _reconcile_chap(report, configs, outcome)
    adopted |= {seen.key(report.host_id) for _p, _i, seen in outcome.adopted_shares}
    if report.secrets is not None and not _placing_vms(plans, report.host_id):
        outcome.unrecorded_secrets = [Orphan(report.host_id, seen, "no document records it")
                                      for seen in report.secrets if seen.key(report.host_id) not in known]
    for seen in [*(report.lvs or ()), *(report.files or ()), *(report.targets or ()), *(report.exports or ())]:
        key = seen.key(report.host_id)
        if seen.kind == "iscsi-acl" and share_key(report.host_id, "iscsi", str(seen.share_id)) not in known:
            continue  # the target itself is an orphan (or being made): its removal takes its ACL
        if key in known or key in claimed or key in adopted or not _removable(report.host_id, seen):
            continue
        outcome.orphans.append(Orphan(report.host_id, seen, "no document or record of kerub-tui knows it"))
    return outcome


def _reconcile_shares(report: HostReport, plans: list[Plan], known: set[tuple[str, ...]], outcome: Outcome) -> None:
    """A share no document records that a plan cut off (interrupted or failed) made before recording it is
    adopted when it is what the step made (the same IQN, the same directory); the rest are orphans."""
    seen_shares = {s.key(report.host_id): s for s in [*(report.targets or ()), *(report.exports or ())]}
    for plan, index, step, key in _share_steps(p for p in plans if p.status in (
            PlanStatus.interrupted, PlanStatus.failed)):
        seen = seen_shares.get(key)
        if seen is None or key in known or not _started(plan, index):
            continue
        if seen.kind == "iscsi" and seen.name != getattr(step, "iqn", None):
            continue  # another target took its tid: not this step's
        if seen.kind == "iscsi" and not _chap_as_made(plan, index, step, seen):
            continue  # cut off before its CHAP account was bound (nor its ACL, bound after it): an orphan
        if seen.kind == "iscsi-acl" and share_key(report.host_id, "iscsi", str(seen.share_id)) not in known:
            continue  # an ACL entry of a target no document records: it goes with the target
        if any(k == key for _p, _i, s in outcome.adopted_shares for k in [s.key(report.host_id)]):
            continue
        outcome.adopted_shares.append((plan.id, index, seen))


def _placing_vms(plans: Iterable[Plan], host_id: str) -> bool:
    """Whether a plan of this process is starting or migrating a VM onto the host now (its libvirt secrets are
    being defined there, recorded when the step ends)."""
    return any(plan.status is PlanStatus.running and (
        (step.type == "start-vm" and step.params.get("host") == host_id)
        or (step.type == "migrate-vm" and step.params.get("target") == host_id)) for plan in plans
        for step in plan.steps)


def _chap_as_made(plan: Plan, index: int, step: Any, seen: SeenObject) -> bool:
    """Whether a target a cut-off share step made asks for the CHAP account the step binds, alone. A step whose
    record holds no secret ran before kerub-tui shared with CHAP: its target has no account."""
    record = next((r for r in plan.records if r.step_index == index), None)
    if record is None or record.secret is None:
        return seen.users == ()
    return seen.users == (step.chap_user(),)


def _reconcile_chap(report: HostReport, configs: Iterable[HostConfiguration], outcome: Outcome) -> None:
    """A recorded target with CHAP whose incoming account the host does not show as the one recorded (alone):
    the secret kerub-tui holds is not the one the target asks for, or asks for no more."""
    config = next((c for c in configs if c.id == report.host_id), None)
    if config is None or report.targets is None:
        return
    seen = {s.share_id: s for s in report.targets if s.kind == "iscsi"}
    for target in config.iscsi_targets:
        shown = seen.get(target.tid)
        if (shown is None or shown.name != target.iqn or target.chap_user is None or target.chap_secret is None
                or shown.users == (target.chap_user,)):
            continue
        outcome.unkeyed.append((report.host_id, target.tid, ", ".join(shown.users) or "none"))


def _removable(host_id: str, seen: SeenObject) -> bool:
    """Whether a removal of what the host listed can be written: an LV on a VG (or named) so that no builder
    takes it (lvs prints any printable word: vg0;x) is left alone, never a cleanup whose command is refused."""
    if seen.kind != "lv":
        return True
    from ..hosts.storage_names import refusal

    why = refusal("vg", seen.vg or "") or refusal("lv", seen.name)
    if why is not None:
        log.info("reconcile %s: LV %s/%s left alone: %s", host_id, seen.vg, seen.name, why)
    return why is None


def _recorded(disk_dyns: Iterable[VirtualStorageDeviceDynamic], pending: Pending) -> tuple[bool, int | None]:
    """Whether the intent's disk lists the intent's object as an allocation, and its recorded size."""
    for dyn in disk_dyns:
        if dyn.id != pending.intent.disk_id:
            continue
        for alloc in dyn.allocations:
            if object_key(alloc) == pending.key:
                return True, alloc.actual_size
    return False, None


# --- cleanup steps ----------------------------------------------------------------------------------


def _unknown_reason(state: OperationalState, host: str, key: tuple[str, ...], label: str) -> str | None:
    for disk_id in state.disks_on(host):
        for alloc in state.allocations(disk_id):
            if object_key(alloc) == key:
                return f"{label} is disk {state.disk_name(disk_id)}'s storage now: not removed"
    for pool in state.thin_pools(host):
        if key == (host, "lv", pool.vg, pool.name):
            return f"{label} is a thin pool kerub-tui uses: not removed"
    for disk_id in state.disks_on(host):
        for alloc in state.allocations(disk_id):
            if isinstance(alloc, LvmAllocation) and alloc.thin_pool and key == (host, "lv", alloc.vg, alloc.thin_pool):
                return f"{label} holds disk {state.disk_name(disk_id)}'s thin LV: not removed"
    return None


@step_type
@dataclass(frozen=True)
class RemoveOrphanLv(Step):
    """Remove a kerub-named LV that no document knows (a cleanup after a crash); approved by the admin."""

    type: ClassVar[str] = "remove-orphan-lv"
    host: str
    vg: str
    lv: str
    size: int = 0

    def deletes_data(self) -> bool:
        return True

    def blocked(self, state: OperationalState) -> str | None:
        return _host_down(state, self.host) or _unknown_reason(
            state, self.host, (self.host, "lv", self.vg, self.lv), f"LV {self.vg}/{self.lv}")

    def take(self, state: OperationalState) -> OperationalState:
        return state.consume_storage(self.host, f"lvm:{self.vg}", -self.size)

    def reservations(self) -> list[Reservation]:
        return [Reservation("orphan", f"{self.host}/lv/{self.vg}/{self.lv}")]

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=2.0, risk=0.05)

    def describe(self, state: OperationalState) -> str:
        size = f" ({format_size(self.size)})" if self.size else ""
        return f"remove LV {self.vg}/{self.lv}{size} on {state.host_name(self.host)}, which no document knows"

    def effect(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} has no LV {self.vg}/{self.lv}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import lvm

        return [ShellOp(self.host, lvm.lvremove(vg=self.vg, lv=self.lv))]


class _OrphanRemoval(Step):
    """What removing a thing no document knows has in common: it deletes, it changes no document
    (the thing was never in one), and it is one quick command."""

    def deletes_data(self) -> bool:
        return True

    def take(self, state: OperationalState) -> OperationalState:
        return state

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=1.0, risk=0.05)


@step_type
@dataclass(frozen=True)
class RemoveOrphanFile(_OrphanRemoval):
    """Remove a kerub-named image file that no document knows; approved by the admin."""

    type: ClassVar[str] = "remove-orphan-file"
    host: str
    path: str

    def blocked(self, state: OperationalState) -> str | None:
        return _host_down(state, self.host) or _unknown_reason(
            state, self.host, (self.host, "file", self.path), f"image {self.path}")

    def reservations(self) -> list[Reservation]:
        return [Reservation("orphan", f"{self.host}/file/{self.path}")]

    def describe(self, state: OperationalState) -> str:
        return f"remove image {self.path} on {state.host_name(self.host)}, which no document knows"

    def effect(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} has no {self.path}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import fileimage

        return [ShellOp(self.host, fileimage.file_remove(path=self.path))]


def _share_unknown(state: OperationalState, host: str, key: tuple[str, ...], label: str) -> str | None:
    config = state.host_config.get(host)
    if config is not None and key in config_share_keys(config):
        return f"{label} is recorded now: not removed"
    return None


@step_type
@dataclass(frozen=True)
class RemoveOrphanIscsiTarget(_OrphanRemoval):
    """Remove an iSCSI target of kerub-tui's IQN that no document records (a controller cut off between
    the share step and its record); approved by the admin: whoever still logs in loses the disk."""

    type: ClassVar[str] = "remove-orphan-iscsi"
    host: str
    tid: int
    iqn: str

    def blocked(self, state: OperationalState) -> str | None:
        return _host_down(state, self.host) or _share_unknown(
            state, self.host, share_key(self.host, "iscsi", str(self.tid)), f"iSCSI target {self.tid}")

    def reservations(self) -> list[Reservation]:
        return [Reservation("share", f"{self.host}:iscsi:{self.tid}")]

    def describe(self, state: OperationalState) -> str:
        return f"remove iSCSI target {self.tid} ({self.iqn}) on {state.host_name(self.host)}, which no document records"

    def effect(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} has no iSCSI target {self.tid}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import iscsi

        return [ShellOp(self.host, iscsi.iscsi_unshare(tid=self.tid))]


@step_type
@dataclass(frozen=True)
class RemoveOrphanExport(_OrphanRemoval):
    """Remove a ganesha export file kerub-tui wrote that no document records; approved by the admin."""

    type: ClassVar[str] = "remove-orphan-export"
    host: str
    export_id: int
    path: str

    def deletes_data(self) -> bool:
        return True  # no data goes, but a reader loses the directory

    def blocked(self, state: OperationalState) -> str | None:
        return _host_down(state, self.host) or _share_unknown(
            state, self.host, share_key(self.host, "export", self.path), f"NFS export {self.path}")

    def reservations(self) -> list[Reservation]:
        return [Reservation("share", f"{self.host}:{self.path}")]

    def describe(self, state: OperationalState) -> str:
        return f"stop exporting {self.path} from {state.host_name(self.host)} (no document records the export)"

    def effect(self, state: OperationalState) -> str:
        return f"{self.path} is no longer exported by {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import nfs

        return [ShellOp(self.host, nfs.ganesha_remove_export(self.export_id))]


@step_type
@dataclass(frozen=True)
class RemoveOrphanIscsiSecret(_OrphanRemoval):
    """Remove a libvirt secret (an iSCSI CHAP password) kerub-tui names that no document records and no VM on the
    host reads with (a controller cut off between defining it and recording it); approved by the admin."""

    type: ClassVar[str] = "remove-orphan-iscsi-secret"
    host: str
    usage: str

    def deletes_data(self) -> bool:
        return False  # a credential nothing there uses: a VM that needs it gets it defined again

    def blocked(self, state: OperationalState) -> str | None:
        return _host_down(state, self.host) or _share_unknown(
            state, self.host, share_key(self.host, "iscsi-secret", self.usage), f"iSCSI CHAP secret {self.usage}")

    def reservations(self) -> list[Reservation]:
        return [Reservation("share", f"{self.host}:secret:{self.usage}")]

    def describe(self, state: OperationalState) -> str:
        return (f"remove the iSCSI CHAP secret {self.usage} from libvirt on {state.host_name(self.host)} "
                "(no document records it)")

    def effect(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} no longer holds the iSCSI secret {self.usage}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import kvm
        from .steps import _libvirt

        return [_libvirt(self.host, "undefine-iscsi-secret", kvm.describe_undefine_secret(self.usage),
                         usage=self.usage)]


@step_type
@dataclass(frozen=True)
class RemoveOrphanIscsiAcl(_OrphanRemoval):
    """Take an address out of a recorded target's ACL that no document lets in (a controller cut off between
    tgtadm's bind and its record); approved by the admin."""

    type: ClassVar[str] = "remove-orphan-iscsi-acl"
    host: str
    tid: int
    initiator: str

    def deletes_data(self) -> bool:
        return True  # whoever logs in from there loses the disk

    def blocked(self, state: OperationalState) -> str | None:
        return _host_down(state, self.host) or _share_unknown(
            state, self.host, share_key(self.host, "iscsi-acl", f"{self.tid} {self.initiator}"),
            f"{self.initiator} in the ACL of iSCSI target {self.tid}")

    def reservations(self) -> list[Reservation]:
        return [Reservation("share", f"{self.host}:iscsi:{self.tid}")]

    def describe(self, state: OperationalState) -> str:
        return (f"stop letting {self.initiator} log in to iSCSI target {self.tid} on {state.host_name(self.host)} "
                "(no document lets it in)")

    def effect(self, state: OperationalState) -> str:
        return f"{self.initiator} may no longer log in to iSCSI target {self.tid} of {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import iscsi

        return [ShellOp(self.host, iscsi.iscsi_acl_unbind(self.tid, self.initiator))]


def removal_step(orphan: Orphan) -> Step:
    if orphan.seen.kind == "lv":
        return RemoveOrphanLv(orphan.host_id, orphan.seen.vg, orphan.seen.name, orphan.seen.size or 0)
    if orphan.seen.kind == "iscsi":
        return RemoveOrphanIscsiTarget(orphan.host_id, orphan.seen.share_id, orphan.seen.name)
    if orphan.seen.kind == "iscsi-acl":
        return RemoveOrphanIscsiAcl(orphan.host_id, orphan.seen.share_id, orphan.seen.name)
    if orphan.seen.kind == "export":
        return RemoveOrphanExport(orphan.host_id, orphan.seen.share_id, orphan.seen.name)
    if orphan.seen.kind == "iscsi-secret":
        return RemoveOrphanIscsiSecret(orphan.host_id, orphan.seen.name)
    return RemoveOrphanFile(orphan.host_id, orphan.seen.name)


def _removal_key(step: Any) -> tuple[str, ...] | None:
    if isinstance(step, RemoveOrphanLv):
        return (step.host, "lv", step.vg, step.lv)
    if isinstance(step, RemoveOrphanFile):
        return (step.host, "file", step.path)
    if isinstance(step, RemoveOrphanIscsiTarget):
        return share_key(step.host, "iscsi", str(step.tid))
    if isinstance(step, RemoveOrphanIscsiAcl):
        return share_key(step.host, "iscsi-acl", f"{step.tid} {step.initiator}")
    if isinstance(step, RemoveOrphanExport):
        return share_key(step.host, "export", step.path)
    if isinstance(step, RemoveOrphanIscsiSecret):
        return share_key(step.host, "iscsi-secret", step.usage)
    return None


def offered(plans: Iterable[Plan]) -> set[tuple[str, ...]]:
    """Objects already in a cleanup plan that is open, being carried out, or that the admin rejected
    (asked once; a rejected cleanup is not asked again)."""
    from .steps import UnknownStep, step_from_planned

    out = set()
    for plan in plans:
        if plan.plan_kind != CLEANUP or plan.status not in (
                PlanStatus.proposed, PlanStatus.approved, PlanStatus.running, PlanStatus.rejected):
            continue
        for planned in plan.steps:
            with contextlib.suppress(UnknownStep):
                key = _removal_key(step_from_planned(planned))
                if key is not None:
                    out.add(key)
    return out


def cleanup_plan(state: OperationalState, orphans: Sequence[Orphan]) -> Plan | None:
    """One proposal removing ``orphans`` (of one host), or None without any."""
    if not orphans:
        return None
    steps = [removal_step(o) for o in orphans]
    planned = [s.to_planned(state) for s in steps]
    cost = Cost()
    for step in steps:
        cost = cost + step.cost(state)
    return Plan(plan_kind=CLEANUP, trigger=[f"{o.seen.label()} on {state.host_name(o.host_id)}: {o.why}"
                                            for o in orphans],
                steps=planned, effects=[p.effect for p in planned if p.effect], cost=cost,
                method="reconciled with what the host reports after a restart")


# --- writing the outcome -------------------------------------------------------------------------------


def _settle(store: Any, pending: Pending, resolution: str) -> None:
    plan = store.get(Plan, pending.plan_id)
    if plan is None:
        return
    records: list[StepRecord] = []
    for record in plan.records:
        if record.step_index == pending.step_index and record.intent is not None:
            record = record.evolve(intent=record.intent.evolve(resolution=resolution))
        records.append(record)
    store.put(plan.evolve(records=records))


def _adopt(store: Any, pending: Pending, size: int) -> bool:
    """Record the intent's change as its step would have: the allocation added, resized or dropped."""
    disk_id = pending.intent.disk_id
    dyn = store.get(VirtualStorageDeviceDynamic, disk_id) or VirtualStorageDeviceDynamic(id=disk_id)
    if pending.intent.change == "remove":
        kept = [a for a in dyn.allocations if object_key(a) != pending.key]
        if len(kept) != len(dyn.allocations):
            store.put(dyn.evolve(allocations=kept))
        return True
    if store.get(VirtualStorageDevice, disk_id) is None:
        return False
    alloc = pending.intent.allocation.evolve(actual_size=size or pending.intent.allocation.actual_size)
    kept = [a for a in dyn.allocations if not (a.host_id == alloc.host_id and a.capability_id == alloc.capability_id)]
    store.put(dyn.evolve(allocations=[*kept, alloc]))
    return True


def _adopt_share(store: Any, state: OperationalState, plan_id: str, index: int, seen: SeenObject) -> bool:
    """Record a share the plan's step made before it was cut off, as the step would have."""
    from ..core.models import AuditEntry
    from .steps import step_from_planned
    from .steps.sharing import AllowIscsiInitiator, _AddShare

    plan = store.get(Plan, plan_id)
    if plan is None or index >= len(plan.steps):
        return False
    step = step_from_planned(plan.steps[index])
    if not isinstance(step, (_AddShare, AllowIscsiInitiator)):
        return False
    host_id = step.host
    config = store.get(HostConfiguration, host_id) or HostConfiguration(id=host_id)
    if seen.key(host_id) in config_share_keys(config):
        return False
    if isinstance(step, AllowIscsiInitiator):
        if not any(t.tid == step.tid for t in config.iscsi_targets):
            return False
        store.put(config.evolve(iscsi_targets=[t.evolve(initiators=[*t.initiators, step.initiator])
                                               if t.tid == step.tid else t for t in config.iscsi_targets]))
    else:
        entry = step.entry(state)
        if seen.kind == "iscsi":  # with the secret the step made (its record), or none: one made before CHAP
            record = next((r for r in plan.records if r.step_index == index), None)
            secret = record.secret if record is not None else None
            entry = entry.evolve(chap_secret=secret, chap_user=entry.chap_user if secret is not None else None)
        entries = [*getattr(config, step.config_field), entry]
        store.put(config.evolve(**{step.config_field: entries}))
    host = state.host_name(host_id)
    store.put(Event(type="storage-adopted", host_id=host_id, target=getattr(step, "disk", None) or plan_id,
                    message=(f"{seen.label()} on {host} was made by plan {plan_id[:8]} (step {index + 1}) before it "
                             f"was cut off: recorded so")))
    store.put(AuditEntry(os_user=RECONCILER, action="share adopt", target=seen.label(), host_id=host_id,
                         plan_id=plan_id, outcome="adopted"))
    return True


def _adopt_secret(store: Any, state: OperationalState, orphan: Orphan) -> bool:
    """Record a libvirt secret a VM on the host reads with (its start or arrival was cut off before its record)."""
    from ..core.models import AuditEntry, IscsiSecret
    from ..hosts.iscsi import secret_usage
    from .steps.base import iscsi_readings

    host_id, usage = orphan.host_id, orphan.seen.name
    found = next(((server, t) for v in state.vms_on(host_id) for server, t in iscsi_readings(state, v, host_id)
                  if secret_usage(server, t.iqn) == usage), None)
    if found is None:
        return False
    config = store.get(HostConfiguration, host_id) or HostConfiguration(id=host_id)
    store.put(config.evolve(iscsi_secrets=[*config.iscsi_secrets,
                                           IscsiSecret(usage=usage, server=found[0], tid=found[1].tid)]))
    store.put(Event(type="storage-adopted", host_id=host_id, target=found[1].disk_id or host_id,
                    message=(f"{orphan.seen.label()} on {state.host_name(host_id)} is the CHAP secret of iSCSI target "
                             f"{found[1].tid} on {state.host_name(found[0])}, which a VM there reads with: recorded")))
    store.put(AuditEntry(os_user=RECONCILER, action="share adopt", target=orphan.seen.label(), host_id=host_id,
                         outcome="adopted"))
    return True


def _forget_made_secret(store: Any, plan_id: str, index: int) -> None:
    """The secret a cut-off step made is in its share's document now: its record keeps it no more."""
    plan = store.get(Plan, plan_id)
    if plan is None:
        return
    records = [r.evolve(secret=None) if r.step_index == index else r for r in plan.records]
    if records != plan.records:
        store.put(plan.evolve(records=records))


def _forget_secret(store: Any, state: OperationalState, host_id: str, tid: int, shown: str) -> None:
    """A recorded target asks for another CHAP account than the one recorded (or none): the secret kerub-tui
    holds is no longer the target's. Forgotten (the planner re-keys the target before a new reader logs in),
    and told."""
    from ..core.models import AuditEntry

    config = store.get(HostConfiguration, host_id)
    target = next((t for t in (config.iscsi_targets if config is not None else []) if t.tid == tid), None)
    if config is None or target is None or target.chap_secret is None:
        return
    store.put(config.evolve(iscsi_targets=[t.evolve(chap_secret=None) if t.tid == tid else t
                                           for t in config.iscsi_targets]))
    host = state.host_name(host_id)
    store.put(Event(type="iscsi-secret-lost", severity=EventSeverity.warning, host_id=host_id,
                    target=target.disk_id or host_id,
                    message=(f"iSCSI target {tid} ({target.iqn}) on {host} asks for CHAP account(s) {shown}, not "
                             f"{target.chap_user} as recorded: its secret is taken as unknown, and the target is "
                             "re-keyed before a new host reads it")))
    store.put(AuditEntry(os_user=RECONCILER, action="iscsi secret forget", target=f"iSCSI target {tid}",
                         host_id=host_id, outcome=f"CHAP accounts on the host: {shown}"))


@dataclass
class Applied:
    adopted: list[str] = field(default_factory=list)  # labels
    absent: list[str] = field(default_factory=list)
    cleanup: Plan | None = None


def apply(store: Any, outcome: Outcome, *, now: dt.datetime | None = None) -> Applied:
    """Write what ``reconcile`` found: adoptions, settled intents, events, one cleanup proposal."""
    from ..core.models import AuditEntry

    now = now or utcnow()
    applied = Applied()
    auto = False
    state = OperationalState.from_store(store, now=now)
    with store.transaction():
        for pending, size in outcome.adopted:
            label = object_label(pending.intent.allocation)
            host = state.host_name(pending.host_id)
            if not _adopt(store, pending, size):
                continue
            _settle(store, pending, "adopted")
            applied.adopted.append(label)
            done = {"create": "made", "remove": "removed", "resize": "resized"}[pending.intent.change]
            message = (f"{label} on {host} was {done} for disk {state.disk_name(pending.intent.disk_id)} by plan "
                       f"{pending.plan_id[:8]} (step {pending.step_index + 1}) before it was cut off: recorded so")
            store.put(Event(type="storage-adopted", host_id=pending.host_id, target=pending.intent.disk_id,
                            message=message))
            store.put(AuditEntry(os_user=RECONCILER, action="storage adopt", target=label, host_id=pending.host_id,
                                 plan_id=pending.plan_id, outcome="adopted"))
        for plan_id, index, seen in outcome.adopted_shares:
            if _adopt_share(store, state, plan_id, index, seen):
                applied.adopted.append(seen.label())
                _forget_made_secret(store, plan_id, index)
        for host_id, tid, shown in outcome.unkeyed:
            _forget_secret(store, state, host_id, tid, shown)
        orphans = list(outcome.orphans)
        for orphan in outcome.unrecorded_secrets:
            if _adopt_secret(store, state, orphan):
                applied.adopted.append(orphan.seen.label())
            else:
                orphans.append(orphan)
        for pending in outcome.absent:
            _settle(store, pending, "absent")
            applied.absent.append(object_label(pending.intent.allocation))
        for pending, _why in outcome.mismatched:
            _settle(store, pending, "mismatch")
        already = offered(store.list(Plan))
        fresh = [o for o in orphans if o.key not in already]
        plan = cleanup_plan(state, fresh)
        if plan is not None:
            policy = store.get("settings", "settings")
            from .replanner import not_covered

            auto = not_covered(policy, plan) is None  # a cleanup deletes: only a policy saying so covers it
            store.put(plan)
            applied.cleanup = plan
            for orphan in fresh:
                store.put(Event(
                    type="orphan-storage", severity=EventSeverity.warning, host_id=orphan.host_id, target=plan.id,
                    message=(f"{orphan.seen.label()} on {state.host_name(orphan.host_id)} is named like kerub-tui's "
                             f"storage but {orphan.why}: cleanup plan {plan.id[:8]} removes it once approved "
                             f"(kerub-tui plan show {plan.id[:8]})")))
    if applied.cleanup is not None and auto:
        from .replanner import ApprovalRefused, approve

        with contextlib.suppress(ApprovalRefused):
            applied.cleanup = approve(store, applied.cleanup.id, "kerub-tui (auto-approve): cleanup", now=now)
    return applied


# --- reading a host ------------------------------------------------------------------------------------

_NAME = re.compile(r"^kerub-[A-Za-z0-9._+-]*$")


def list_images_command(directory: str) -> str:
    """The kerub-named image files directly in ``directory`` (one name per line; nothing when the
    directory does not exist)."""
    from ..hosts.fileimage import check_path

    quoted = shlex.quote(check_path(directory, "images dir"))
    return (f"if [ -d {quoted} ]; then find {quoted} -mindepth 1 -maxdepth 1 -type f "
            f"-name 'kerub-*' -printf '%f\\n'; fi")


def parse_image_names(text: str) -> list[str]:
    """Names from ``list_images_command``; a line that is no kerub name is skipped, never trusted."""
    return sorted({line for line in text.splitlines() if _NAME.match(line) and line not in ("kerub-",)})


async def read_host(ops: Any, host_id: str, *, images_dir: str | None = None,
                    intended_files: Iterable[str] = ()) -> HostReport:
    """Ask the host for its kerub-named LVs and image files (the virtual size of the files an intent
    names). A command that fails leaves that kind unread (None)."""
    from ..hosts import fileimage, lvm
    from ..hosts.facts import IMAGES_DIR

    images_dir = images_dir or IMAGES_DIR
    lvs: tuple[SeenObject, ...] | None = None
    result = await ops.run(host_id, lvm.lvs_json_command())
    if result.exit_code == 0:
        try:
            lvs = tuple(SeenObject("lv", lv.name, lv.size_bytes, lv.vg, lv.pool)
                        for lv in lvm.parse_lvs(result.stdout) if lv.name.startswith(KERUB_PREFIX))
        except ValueError as error:
            log.info("reconcile %s: lvs: %s", host_id, error)
    files: tuple[SeenObject, ...] | None = None
    result = await ops.run(host_id, list_images_command(images_dir))
    if result.exit_code == 0:
        names = parse_image_names(result.stdout)
        wanted = set(intended_files)
        seen = []
        for name in names:
            path = f"{images_dir.rstrip('/')}/{name}"
            size = None
            if path in wanted:
                info = await ops.run(host_id, fileimage.qemu_img_info(path))
                if info.exit_code == 0:
                    with contextlib.suppress(ValueError):
                        size = fileimage.parse_qemu_img_info(info.stdout).virtual_size
            seen.append(SeenObject("file", path, size))
        files = tuple(seen)
    targets, exports = await read_shares(ops, host_id)
    return HostReport(host_id, lvs, files, targets, exports, await read_secrets(ops, host_id))


async def read_secrets(ops: Any, host_id: str) -> Seen:
    """The libvirt secrets of usage type iscsi kerub-tui names on the host (through its libvirt tunnel); None
    where they could not be read (host operations without libvirt, a call that failed)."""
    from ..core.names import InvalidName, check_name

    if not hasattr(ops, "libvirt"):
        return None
    result = await ops.libvirt(host_id, "iscsi-secrets")
    if result.exit_code != 0:
        log.info("reconcile %s: libvirt secrets: %s", host_id, result.stderr.strip()[:200])
        return None
    seen = []
    for line in result.stdout.splitlines():
        with contextlib.suppress(InvalidName):
            seen.append(SeenObject("iscsi-secret", check_name(line.strip(), "secret usage name")))
    return tuple(seen)


Seen = tuple[SeenObject, ...] | None


def _acl_removable(address: str) -> bool:
    """An ACL entry tgtadm listed that an unbind can be written for (never ALL: the target's removal is)."""
    from ..core.names import check_address

    if address == "ALL":
        return False  # an unbind of ALL would leave a target nobody may log in to: not a cleanup's to guess
    try:
        check_address(address)
    except ValueError:
        return False
    return True


async def read_shares(ops: Any, host_id: str, *, export_dir: str | None = None) -> tuple[Seen, Seen]:
    """The iSCSI targets of kerub-tui's IQN (tgtadm's show) and the ganesha export files kerub-tui wrote. A
    host without tgtd (or ganesha's directory unreadable) leaves that kind unread (None), never empty."""
    from ..hosts import iscsi, nfs

    targets: tuple[SeenObject, ...] | None = None
    result = await ops.run(host_id, iscsi.iscsi_show_command())
    if result.exit_code == 0:
        try:
            seen: list[SeenObject] = []
            for t in iscsi.parse_tgtadm_show(result.stdout):
                if not t.iqn.startswith(iscsi.IQN_PREFIX + ":"):
                    continue  # the admin's own targets are none of kerub-tui's business
                seen.append(SeenObject("iscsi", t.iqn, share_id=t.tid, users=t.incoming_users))
                seen.extend(SeenObject("iscsi-acl", a, share_id=t.tid) for a in t.acl if _acl_removable(a))
            targets = tuple(seen)
        except ValueError as error:
            log.info("reconcile %s: tgtadm: %s", host_id, error)
    exports: tuple[SeenObject, ...] | None = None
    result = await ops.run(host_id, nfs.ganesha_exports_command(export_dir or nfs.GANESHA_EXPORT_DIR))
    if result.exit_code == 0:
        exports = tuple(SeenObject("export", e.path, share_id=e.export_id)
                        for e in nfs.parse_ganesha_exports(result.stdout))
    return targets, exports


async def reconcile_host(store: Any, ops: Any, host_id: str, *, now: dt.datetime | None = None) -> Applied | None:
    """Read one host and write what reconciling it with the documents finds. None: not reconciled
    (a simulated host, or one not up)."""
    host = store.get(Host, host_id)
    dyn = store.get(HostDynamic, host_id)
    if host is None or host.simulated or dyn is None or dyn.status is not HostStatus.up:
        return None
    intended = [p.intent.allocation.path for p in pending_intents(store.list(Plan))
                if p.host_id == host_id and isinstance(p.intent.allocation, FileAllocation)]
    report = await read_host(ops, host_id, intended_files=intended)
    # The documents as they are now, after the awaits (a step may have finished meanwhile).
    outcome = reconcile(report, disks=[d.id for d in store.list(VirtualStorageDevice)],
                        disk_dyns=store.list(VirtualStorageDeviceDynamic), configs=store.list(HostConfiguration),
                        plans=store.list(Plan))
    if not (outcome.adopted or outcome.absent or outcome.mismatched or outcome.orphans or outcome.adopted_shares
            or outcome.unkeyed or outcome.unrecorded_secrets):
        return Applied()
    return apply(store, outcome, now=now)


class Reconciler:
    """Reconciles each host when it comes up (at the controller's start, and after a reconnect)."""

    def __init__(self, store: Any, ops: Any) -> None:
        self.store = store
        self.ops = ops
        self.passes = 0
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._again: set[str] = set()

    def _up(self, doc: Any) -> bool:
        return doc is not None and doc.status is HostStatus.up

    async def run(self) -> None:
        subscription = self.store.feed.subscribe(["host-dynamic"])
        try:
            for dyn in self.store.list(HostDynamic):
                if self._up(dyn):
                    self.request(dyn.id)
            async for change in subscription:
                if self._up(change.new) and not self._up(change.old):
                    self.request(change.id)
        finally:
            subscription.close()
            await self.stop()

    def request(self, host_id: str) -> None:
        if host_id in self._tasks:
            self._again.add(host_id)
            return
        task = asyncio.get_running_loop().create_task(self._reconcile(host_id), name=f"reconcile {host_id[:8]}")
        self._tasks[host_id] = task

    async def _reconcile(self, host_id: str) -> None:
        try:
            while True:
                self._again.discard(host_id)
                try:
                    await reconcile_host(self.store, self.ops, host_id)
                except Exception:  # a host that went away mid-way: the next connect tries again
                    log.exception("reconciling host %s failed", host_id)
                self.passes += 1
                if host_id not in self._again:
                    return
        finally:
            self._tasks.pop(host_id, None)

    async def wait_idle(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


__all__ = ["CLEANUP", "Applied", "HostReport", "Orphan", "Outcome", "Pending", "Reconciler", "RemoveOrphanExport",
           "RemoveOrphanFile", "RemoveOrphanIscsiAcl", "RemoveOrphanIscsiSecret", "RemoveOrphanIscsiTarget",
           "RemoveOrphanLv", "SeenObject",
           "apply", "cleanup_plan", "identity_alive", "intent_of", "interrupt_dead_writers", "list_images_command",
           "object_key", "pending_intents", "process_identity", "read_host", "read_shares", "reconcile",
           "reconcile_host", "size_matches"]
