"""The execution engine: an approved plan's steps in order, each prepare -> perform -> verify -> update
documents, every command into the audit log and the plan's step records.

Stops at the first failure: the step and the plan are marked failed with the reason, and the plan's
reservations are released with it (only approved and running plans hold any); the next re-plan
repairs from what the hosts report. Host I/O goes through ``HostOperations``, a protocol the
controller implements over SSH and the libvirt tunnel; tests use a simulator.

- prepare: the step must still apply to the current state (other plans' locks included);
- perform: its operations (shell text from the hosts builders, libvirt calls); a non-zero exit fails;
- verify: for steps whose effect can be read back (LVs, images, KSM, domain state), read it back;
  the other builders verify themselves (the copy pipeline compares checksums, the sharing and power
  commands are idempotent and fail loudly);
- update documents: the step's own prediction, written field by field over the current documents,
  so the store says what the planner will see next even before monitoring reports it.

Crashes: the plan names the process carrying it out (``Plan.runner``), and a step that creates storage
records what it is about to make (``StepRecord.intent``) in its own committed transaction before its
commands run, so a controller killed in between leaves a record a restart can reconcile with what the
host reports (``reconcile``). A create step whose command fails because its target already exists,
with the intended shape and an earlier cut-off step's intent naming it, adopts it instead of failing
on it forever.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from pydantic import SecretStr

from ..core.logs import host_context
from ..core.models import (
    AuditEntry,
    CommandRecord,
    Document,
    FileAllocation,
    LvmAllocation,
    Plan,
    PlanStatus,
    StepOutcome,
    StepRecord,
    VmStatus,
    utcnow,
)
from ..hosts.iscsi import new_chap_secret
from ..hosts.results import OperationResult, ProgressReport
from .commitments import build_state
from .image_steps import CloneImageOverlay, CloneImageToLv
from .reconcile import intent_of, object_key, object_label, process_identity, size_matches
from .state import Layer, OperationalState
from .steps import (
    DEFERRED_BUILDERS,
    AllowIscsiInitiator,
    ControllerOp,
    ConvertLvToMirror,
    CreateFileImage,
    CreateLv,
    CreateMirrorLv,
    CreateThinLv,
    CreateThinPool,
    DeferredShellOp,
    DisallowIscsiInitiator,
    ExtendFileImage,
    ExtendLv,
    ExtendThinPool,
    LibvirtOp,
    MigrateVm,
    MovePvExtents,
    PauseVm,
    RekeyIscsi,
    RemoveFileImage,
    RemoveLv,
    RemovePvFromVg,
    ResumeVm,
    SetKsm,
    ShareIscsi,
    ShellOp,
    StartVm,
    Step,
    StopVm,
    UnshareIscsi,
    _CreateAllocation,
    step_from_planned,
)

EXIT_CONTROLLER = 127  # a controller operation these host operations cannot do
TAIL = 2000  # characters of output kept per command in the audit log and the step record


class HostOperations(Protocol):
    """What the executor needs from the hosts. The controller implements it over SSH.

    ``libvirt`` ops: ``start`` (vm_id, vm_name, xml: define and start), ``shutdown`` (vm_id, timeout:
    graceful, returns when off or when the timeout passed), ``destroy-if-running``, ``undefine``,
    ``pause``, ``resume``, ``migrate`` (vm_id, target_host_id, target_address, copy_storage), and
    ``domain-state`` (vm_id) whose stdout is one of ``running``, ``paused``, ``shut off`` or empty
    when the host has no such domain. A failed call returns a non-zero exit code and says why in stderr.
    """

    async def run(self, host_id: str, command: str, *, privileged: bool = True,
                  input: bytes | None = None, on_stderr: Callable[[bytes], None] | None = None) -> OperationResult: ...
    # ``input``: the command's standard input (a ShellOp with ``input``); ``on_stderr``: sees its standard
    # error as it comes (a ShellOp with ``progress_total``)

    async def libvirt(self, host_id: str, op: str, **kwargs: Any) -> OperationResult: ...
    # a LibvirtOp with ``progress`` (a migration) also gets ``on_progress``, a ProgressReport to call as
    # the host tells how far it got: the same step-record progress a copy's dd reports give


@runtime_checkable
class WakesHosts(Protocol):
    """HostOperations that can also wake a host from the controller's own process (the magic packet
    or ipmitool sent from here: a fleet entirely down has no neighbour to send it). The controller's
    HostPool does; host operations without it fail such a step with a clear line."""

    async def wake(self, host_id: str) -> OperationResult: ...


@runtime_checkable
class FencesHosts(Protocol):
    """HostOperations that can power a host that went away off through its BMC, from the controller's own
    process (high availability's FenceHost: ipmitool here, read back). The controller's HostPool does."""

    async def fence(self, host_id: str) -> OperationResult: ...


class StepFailed(Exception):
    pass


def _tail(text: str) -> str:
    return text[-TAIL:] if text else ""


# --- verification ------------------------------------------------------------------------------------

Verifier = Callable[[HostOperations, Any, OperationalState], Awaitable[str | None]]


async def _lv_state(ops: HostOperations, host: str, vg: str) -> dict[str, Any]:
    from ..hosts import lvm

    result = await ops.run(host, lvm.lvs_json_command(vg))
    if result.exit_code != 0:
        raise StepFailed(f"verify: lvs exited {result.exit_code}: {_tail(result.stderr)}")
    return {lv.name: lv for lv in lvm.parse_lvs(result.stdout)}


async def _verify_lv_present(ops: HostOperations, step: Any, state: OperationalState) -> str | None:
    lvs = await _lv_state(ops, step.host, step.vg)
    lv = lvs.get(step.lv)
    if lv is None:
        return f"LV {step.vg}/{step.lv} is not there"
    if lv.size_bytes < step.size:
        return f"LV {step.vg}/{step.lv} is {lv.size_bytes} bytes, not {step.size}"
    return None


async def _verify_thin_pool(ops: HostOperations, step: Any, state: OperationalState) -> str | None:
    lvs = await _lv_state(ops, step.host, step.vg)
    pool = lvs.get(step.pool)
    if pool is None or not pool.is_thin_pool:
        return f"thin pool {step.vg}/{step.pool} is not there" if pool is None else \
            f"LV {step.vg}/{step.pool} is not a thin pool"
    if pool.size_bytes < step.size:
        return f"thin pool {step.vg}/{step.pool} is {pool.size_bytes} bytes, not {step.size}"
    return None


async def _verify_lv_absent(ops: HostOperations, step: Any, state: OperationalState) -> str | None:
    lvs = await _lv_state(ops, step.host, step.vg)
    return f"LV {step.vg}/{step.lv} is still there" if step.lv in lvs else None


async def _verify_mirror(ops: HostOperations, step: Any, state: OperationalState) -> str | None:
    lv = (await _lv_state(ops, step.host, step.vg)).get(step.lv)
    if lv is None:
        return f"LV {step.vg}/{step.lv} is not there"
    images = sum(1 for d in lv.devices if "_rimage_" in d)
    if "raid1" not in lv.segtypes or images < step.mirrors + 1:
        return f"LV {step.vg}/{step.lv} is {','.join(lv.segtypes) or 'of no type'} with {images} images, " \
               f"not raid1 with {step.mirrors + 1}"
    return None


async def _pv_state(ops: HostOperations, host: str) -> dict[str, Any]:
    from ..hosts import lvm

    result = await ops.run(host, lvm.pvs_json_command())
    if result.exit_code != 0:
        raise StepFailed(f"verify: pvs exited {result.exit_code}: {_tail(result.stderr)}")
    return {pv.name: pv for pv in lvm.parse_pvs(result.stdout)}


async def _verify_pv_empty(ops: HostOperations, step: Any, state: OperationalState) -> str | None:
    # pvmove can end with status 0 having moved nothing (interrupted, or run where device-mapper is
    # missing): what the PV holds afterwards is the answer
    pv = (await _pv_state(ops, step.host)).get(step.pv)
    if pv is None or pv.vg != step.vg:
        return f"PV {step.pv} is no longer in {step.vg}"
    if pv.free_bytes < pv.size_bytes:
        return f"PV {step.pv} still holds {pv.size_bytes - pv.free_bytes} bytes"
    lvs = await _lv_state(ops, step.host, step.vg)
    if any(name.startswith("pvmove") for name in lvs):
        return f"a pvmove is still recorded in {step.vg}: finish it (pvmove) or abort it (pvmove --abort)"
    return None


async def _verify_pv_out(ops: HostOperations, step: Any, state: OperationalState) -> str | None:
    pv = (await _pv_state(ops, step.host)).get(step.pv)
    return f"PV {step.pv} is still in {step.vg}" if pv is not None and pv.vg == step.vg else None


async def _verify_image(ops: HostOperations, step: Any, state: OperationalState) -> str | None:
    from ..hosts import fileimage

    result = await ops.run(step.host, fileimage.qemu_img_info(step.path))
    if result.exit_code != 0:
        return f"qemu-img info {step.path} exited {result.exit_code}: {_tail(result.stderr)}"
    info = fileimage.parse_qemu_img_info(result.stdout)
    if info.virtual_size < step.size:
        return f"image {step.path} is {info.virtual_size} bytes, not {step.size}"
    return None


async def _verify_image_absent(ops: HostOperations, step: Any, state: OperationalState) -> str | None:
    import shlex

    result = await ops.run(step.host, f"test ! -e {shlex.quote(step.path)}")
    return None if result.exit_code == 0 else f"{step.path} is still there"


async def _verify_ksm(ops: HostOperations, step: Any, state: OperationalState) -> str | None:
    from ..hosts import ksm

    result = await ops.run(step.host, ksm.ksm_read_command())
    if result.exit_code != 0:
        return f"reading KSM exited {result.exit_code}"
    seen = ksm.parse_ksm(result.stdout)
    if step.run is not None and seen.run != step.run:
        return f"KSM run is {int(seen.run)}, not {int(step.run)}"
    if step.pages_to_scan is not None and seen.pages_to_scan != step.pages_to_scan:
        return f"KSM pages_to_scan is {seen.pages_to_scan}, not {step.pages_to_scan}"
    return None


async def _iscsi_targets(ops: HostOperations, host: str) -> dict[int, Any]:
    from ..hosts import iscsi

    result = await ops.run(host, iscsi.iscsi_show_command())
    if result.exit_code != 0:
        raise StepFailed(f"verify: tgtadm show exited {result.exit_code}: {_tail(result.stderr)}")
    try:
        return {t.tid: t for t in iscsi.parse_tgtadm_show(result.stdout)}
    except ValueError as error:
        raise StepFailed(f"verify: {error}") from None


async def _verify_iscsi_target(ops: HostOperations, step: Any, state: OperationalState) -> str | None:
    target = (await _iscsi_targets(ops, step.host)).get(step.tid)
    if target is None or target.iqn != step.iqn:
        return f"iSCSI target {step.tid} ({step.iqn}) is not there"
    lun = target.lun(1)
    if lun is None or lun.backing_path != step.lun_path:
        return f"iSCSI target {step.tid} has no LUN 1 on {step.lun_path}"
    return _verify_chap(target, step.tid, step.chap_user()) or _verify_acl(target, step)


def _verify_chap(target: Any, tid: int, user: str) -> str | None:
    if target.incoming_users != (user,):
        shown = ", ".join(target.incoming_users) or "none"
        return f"iSCSI target {tid} asks for CHAP user {user} alone (its incoming users: {shown})"
    return None


async def _verify_iscsi_rekeyed(ops: HostOperations, step: Any, state: OperationalState) -> str | None:
    target = (await _iscsi_targets(ops, step.host)).get(step.tid)
    recorded = next((t for t in state.host_config[step.host].iscsi_targets if t.tid == step.tid), None)
    if target is None or recorded is None or recorded.chap_user is None:
        return f"iSCSI target {step.tid} is not there"
    return _verify_chap(target, step.tid, recorded.chap_user)


def _verify_acl(target: Any, step: Any) -> str | None:
    if step.initiator not in target.acl:
        return f"iSCSI target {step.tid} does not let {step.initiator} log in (its ACL: {', '.join(target.acl)})"
    return None


async def _verify_iscsi_disallowed(ops: HostOperations, step: Any, state: OperationalState) -> str | None:
    target = (await _iscsi_targets(ops, step.host)).get(step.tid)
    if target is not None and step.initiator in target.acl:
        return f"iSCSI target {step.tid} still lets {step.initiator} log in"
    return None


async def _verify_iscsi_allowed(ops: HostOperations, step: Any, state: OperationalState) -> str | None:
    target = (await _iscsi_targets(ops, step.host)).get(step.tid)
    return f"iSCSI target {step.tid} is not there" if target is None else _verify_acl(target, step)


async def _verify_iscsi_target_absent(ops: HostOperations, step: Any, state: OperationalState) -> str | None:
    return f"iSCSI target {step.tid} is still there" if step.tid in await _iscsi_targets(ops, step.host) else None


def _domain_verifier(host_attr: str, wanted: tuple[str, ...]) -> Verifier:
    async def verify(ops: HostOperations, step: Any, state: OperationalState) -> str | None:
        host = getattr(step, host_attr)
        result = await ops.libvirt(host, "domain-state", vm_id=step.vm)
        seen = result.stdout.strip()
        if result.exit_code != 0:
            return f"reading the domain state on {state.host_name(host)} failed: {_tail(result.stderr)}"
        if seen not in wanted:
            return (f"{state.vm_name(step.vm)} is {seen or 'not defined'} on {state.host_name(host)}, "
                    f"expected {' or '.join(w or 'not defined' for w in wanted)}")
        return None

    return verify


VERIFIERS: dict[type[Step], Verifier] = {
    CreateLv: _verify_lv_present,
    CreateThinLv: _verify_lv_present,
    CreateMirrorLv: _verify_lv_present,
    ConvertLvToMirror: _verify_mirror,
    MovePvExtents: _verify_pv_empty,
    RemovePvFromVg: _verify_pv_out,
    CreateThinPool: _verify_thin_pool,
    ExtendThinPool: _verify_thin_pool,
    ExtendLv: _verify_lv_present,
    RemoveLv: _verify_lv_absent,
    CreateFileImage: _verify_image,
    ExtendFileImage: _verify_image,
    RemoveFileImage: _verify_image_absent,
    SetKsm: _verify_ksm,
    StartVm: _domain_verifier("host", ("running",)),
    ResumeVm: _domain_verifier("host", ("running",)),
    PauseVm: _domain_verifier("host", ("paused",)),
    StopVm: _domain_verifier("host", ("shut off", "")),
    MigrateVm: _domain_verifier("target", ("running", "paused")),
    CloneImageOverlay: _verify_image,
    CloneImageToLv: _verify_lv_present,
    ShareIscsi: _verify_iscsi_target,  # tgtd's own account: the target, its LUN on the disk's storage, its CHAP
    RekeyIscsi: _verify_iscsi_rekeyed,
    UnshareIscsi: _verify_iscsi_target_absent,
    AllowIscsiInitiator: _verify_iscsi_allowed,
    DisallowIscsiInitiator: _verify_iscsi_disallowed,
}


# Steps whose command fails when their effect is already there (lvremove of a gone LV, lvextend to the
# size it has): read back, such a failure is success. Creating is not among them: an existing target may
# be someone else's data, adopted only with an intent (Executor._adopt_existing).
ALREADY_DONE_IS_DONE = (RemoveLv, ExtendLv, ExtendFileImage, MovePvExtents, RemovePvFromVg, ExtendThinPool)


# --- libvirt details the plan does not store ------------------------------------------------------


def disk_backings(state: OperationalState, vm_id: str, host_id: str) -> dict[str, tuple[Any, Any]]:
    """How ``host_id`` reaches each disk of the VM: a local allocation, the file of an NFS mount, or a share
    of another host that qemu reads with its own client (an iSCSI target, an NFS export: issue 16)."""
    import posixpath

    from ..hosts.iscsi import IscsiDiskSource, secret_usage
    from ..hosts.nfs import NfsDiskSource
    from .steps.base import remote_share

    vm = state.vms[vm_id]
    out: dict[str, tuple[Any, Any]] = {}
    config = state.host_config.get(host_id)
    for link in vm.disks:
        disk = state.disks[link.disk_id]
        local = next((a for a in state.allocations(link.disk_id) if a.host_id == host_id), None)
        if local is not None:
            out[link.disk_id] = (disk, local)
            continue
        mount = next((m for m in (config.mounts if config else []) if m.disk_id == link.disk_id), None)
        shared = remote_share(state, link.disk_id, host_id) if mount is None else None
        if shared is not None:
            protocol, served = shared
            server = state.hosts[served.host_id].address
            if protocol == "iSCSI":
                target = next(t for t in state.host_config[served.host_id].iscsi_targets
                              if t.disk_id == link.disk_id and t.lun_path == served.path)
                # a target with CHAP: the domain names its user and the libvirt secret holding its password
                # (defined there first: StartVm's and MigrateVm's define-iscsi-secret), never the password
                user = target.chap_user
                usage = secret_usage(served.host_id, target.iqn) if user is not None else None
                out[link.disk_id] = (disk, IscsiDiskSource(portal=server, iqn=target.iqn, chap_user=user,
                                                           secret_usage=usage))
            else:
                out[link.disk_id] = (disk, NfsDiskSource(server=server, export_path=posixpath.dirname(served.path),
                                                         file_name=posixpath.basename(served.path),
                                                         format=served.format))
            continue
        remote = next((a for a in state.allocations(link.disk_id) if isinstance(a, FileAllocation)), None)
        if mount is None or remote is None:
            raise StepFailed(f"{state.host_name(host_id)} has no way to reach disk {disk.name}")
        server, _, export_path = mount.source.partition(":")
        directory, _, file_name = remote.path.rpartition("/")
        out[link.disk_id] = (disk, NfsDiskSource(server=server, export_path=directory or export_path,
                                                 file_name=file_name, format=remote.format,
                                                 mount_point=mount.target))
    return out


def _vm_of(step: Step) -> str | None:
    """The id of the VM a step acts on, if it acts on one (its audit entries are found by it)."""
    vm = getattr(step, "vm", None)
    return vm if isinstance(vm, str) else None


def _libvirt_kwargs(op: LibvirtOp, step: Step, state: OperationalState) -> dict[str, Any]:
    kwargs = op.kwargs()
    if op.op == "define-iscsi-secret":
        # the CHAP password from the target's document, now: it is in no plan, display or audit entry
        from ..core.models import secret_value

        server, tid = kwargs.pop("server"), kwargs.pop("tid")
        config = state.host_config.get(server)
        target = next((t for t in (config.iscsi_targets if config is not None else []) if t.tid == tid), None)
        value = secret_value(target.chap_secret) if target is not None else None
        if value is None:
            raise StepFailed(f"kerub-tui does not know the CHAP secret of iSCSI target {tid} on "
                             f"{state.host_name(server)}: it is re-keyed before a new reader logs in")
        kwargs["value"] = value
    if op.op == "start":
        from ..hosts import kvm, spice

        host = state.hosts[step.host]  # type: ignore[attr-defined]
        vm = state.vms[step.vm]  # type: ignore[attr-defined]
        hyper = host.capabilities.hypervisor if host.capabilities else None
        domain_type = kvm.host_accelerator(host).domain_type  # the admin's override, else what was discovered
        seed = None
        if vm.cloud_init is not None:
            from .image_steps import seed_missing, seed_on

            missing = seed_missing(state, vm.id, host.id)
            if missing:
                raise StepFailed(missing)
            seed = seed_on(state, vm.id, host.id).path  # type: ignore[union-attr]
        # The SPICE password lives only in the domain definition on the host, never in a document.
        kwargs.update(vm_name=vm.name, xml=kvm.domain_xml(
            vm, disk_backings(state, vm.id, host.id), spice.new_spice_password(),
            domain_type=domain_type, emulator=hyper.emulator if hyper else None, seed=seed,
            current_memory=getattr(step, "memory", 0) or None))  # a ballooned start: what it starts with
    return kwargs


# --- the engine ---------------------------------------------------------------------------------------


class Executor:
    def __init__(self, store: Any, ops: HostOperations, *, clock: Callable[[], dt.datetime] = utcnow,
                 user: str = "kerub-tui executor", on_step: Callable[[int, Step], None] | None = None,
                 verify: bool = True) -> None:
        self.store = store
        self.ops = ops
        self.clock = clock
        self.user = user
        self.on_step = on_step  # progress for the console (and the simulator in tests)
        self.verify = verify

    # plan document helpers -------------------------------------------------------------------------

    def _plan(self, plan_id: str) -> Plan:
        plan: Plan = self.store.require(Plan, plan_id)
        return plan

    def _save_record(self, plan_id: str, record: StepRecord) -> None:
        plan = self._plan(plan_id)
        records = [r for r in plan.records if r.step_index != record.step_index] + [record]
        records.sort(key=lambda r: r.step_index)
        self.store.put(plan.evolve(records=records))

    def _set_status(self, plan_id: str, status: PlanStatus, reason: str | None = None) -> Plan:
        plan = self._plan(plan_id)
        updated = plan.evolve(status=status, status_reason=reason)
        self.store.put(updated)
        return updated

    def _audit(self, action: str, target: str, plan_id: str, outcome: str = "ok", **fields: Any) -> None:
        self.store.put(AuditEntry(os_user=self.user, action=action, target=target, outcome=outcome,
                                  plan_id=plan_id, **fields))

    # running -----------------------------------------------------------------------------------------

    async def execute(self, plan_id: str) -> Plan:
        plan = self._plan(plan_id)
        if plan.status is not PlanStatus.approved:
            raise ValueError(f"plan {plan_id[:8]} is {plan.status.value}, not approved")
        with self.store.transaction():
            self.store.put(
                self._plan(plan_id).evolve(status=PlanStatus.running, status_reason=None, runner=process_identity())
            )
            self._audit("plan start", plan_id, plan_id)
        index = -1
        try:
            for index, planned in enumerate(plan.steps):
                await self._execute_step(plan_id, index, step_from_planned(planned))
        except StepFailed as error:
            reason = f"step {index + 1} ({plan.steps[index].description}): {error}"
            with self.store.transaction():
                updated = self._set_status(plan_id, PlanStatus.failed, reason)
                self._audit("plan failed", plan_id, plan_id, outcome=f"failed: {reason}")
            return updated
        except asyncio.CancelledError:
            with self.store.transaction():
                self._set_status(plan_id, PlanStatus.interrupted, "the controller stopped while the plan ran")
                if index >= 0:
                    self._finish_record(plan_id, index, StepOutcome.interrupted, "the controller stopped")
                self._audit("plan interrupted", plan_id, plan_id, outcome="interrupted")
            raise
        with self.store.transaction():
            updated = self._set_status(plan_id, PlanStatus.done)
            self._audit("plan done", plan_id, plan_id)
        return updated

    def _finish_record(self, plan_id: str, index: int, outcome: StepOutcome, error: str | None) -> None:
        plan = self._plan(plan_id)
        record = next((r for r in plan.records if r.step_index == index), None)
        if record is None:
            record = StepRecord(step_index=index, started_at=self.clock())
        # a secret the step made is in its documents once it is done: the record keeps it only for a reconcile
        # of what a failed or cut-off step made
        secret = None if outcome is StepOutcome.done else record.secret
        self._save_record(plan_id, record.evolve(outcome=outcome, error=error, ended_at=self.clock(), secret=secret))

    async def _execute_step(self, plan_id: str, index: int, step: Step) -> None:
        record = StepRecord(step_index=index, host_id=step.host_id, started_at=self.clock())
        self._save_record(plan_id, record)
        if self.on_step is not None:
            self.on_step(index, step)
        try:
            state = build_state(self.store, now=self.clock(), exclude=plan_id)
            # prepare
            reason = step.blocked(state)
            if reason is not None:
                raise StepFailed(f"prepare: {reason}")
            # intent: what the step is about to make, committed before any command runs; a secret it makes
            # (made now, never when planned) with it, so a reconcile adopting what it made knows it
            intent = intent_of(step, state)
            secret = SecretStr(new_chap_secret()) if step.makes_secret else None
            if intent is not None or secret is not None:
                with self.store.transaction():
                    current = next(r for r in self._plan(plan_id).records if r.step_index == index)
                    self._save_record(plan_id, current.evolve(intent=intent, secret=secret))
            # perform
            previous_output = ""
            adopted = False
            for op in step.operations(state):
                result, shown = await self._perform(plan_id, index, step, state, op, previous_output, secret)
                previous_output = result.stdout
                if result.exit_code != 0:
                    failure = (f"{shown} exited {result.exit_code}: "
                               f"{_tail(result.stderr.strip()) or _tail(result.stdout.strip())}")
                    if isinstance(step, _CreateAllocation):
                        adopted = await self._adopt_existing(plan_id, index, step, state, failure)
                    elif isinstance(step, ALREADY_DONE_IS_DONE) and self.verify:
                        adopted = await self._already_done(plan_id, index, step, state, failure)
                    if adopted:
                        break
                    raise StepFailed(failure)
            # verify
            verifier = VERIFIERS.get(type(step)) if self.verify and not adopted else None
            if verifier is not None:
                problem = await verifier(_Recorded(self, plan_id, index, step, state), step, state)
                if problem is not None:
                    raise StepFailed(f"verify: {problem}")
            # update documents
            after = step.take(state)
            self._update_documents(state, step.keyed(after, secret) if secret is not None else after)
        except StepFailed as error:
            self._finish_record(plan_id, index, StepOutcome.failed, str(error))
            raise
        except (OSError, ValueError, KeyError) as error:  # a host that went away, a parser that refused
            message = f"{type(error).__name__}: {error}"
            self._finish_record(plan_id, index, StepOutcome.failed, message)
            raise StepFailed(message) from error
        self._finish_record(plan_id, index, StepOutcome.done, None)

    async def _already_done(self, plan_id: str, index: int, step: Step, state: OperationalState,
                            failure: str) -> bool:
        """A removal or a resize whose command failed because its effect is already there (a step cut
        off after its command, re-planned): the effect is what was wanted, so the step is done."""
        recorded = _Recorded(self, plan_id, index, step, state)
        if await VERIFIERS[type(step)](recorded, step, state) is not None:
            return False
        self._audit("step already done", step.describe(state), plan_id, host_id=step.host_id, vm_id=_vm_of(step),
                    outcome=f"{failure}; but its effect is already there (read back): done")
        return True

    async def _adopt_existing(self, plan_id: str, index: int, step: _CreateAllocation, state: OperationalState,
                              failure: str) -> bool:
        """The create command failed: if its target is there with the intended shape and an earlier
        step cut off before it recorded its outcome intended exactly it, the target is that step's
        work: settle that intent as adopted and go on. Otherwise raise StepFailed saying what is there."""
        alloc = step.allocation()
        key = object_key(alloc)
        recorded = _Recorded(self, plan_id, index, step, state)
        size = await _existing_size(recorded, alloc)
        if size is None:
            return False
        label = object_label(alloc)
        if not size_matches(alloc.actual_size, size):
            raise StepFailed(f"{failure} ({label} is already there, {size} bytes, not the {alloc.actual_size} "
                             "intended: no document knows it; a cleanup proposal can remove it)")
        earlier = None
        for plan in self.store.list(Plan):
            for record in plan.records:
                intent = record.intent
                if (intent is None or (plan.id, record.step_index) == (plan_id, index) or not intent.adopt
                        or record.outcome is StepOutcome.done or intent.resolution not in (None, "absent")
                        or intent.disk_id != step.disk or object_key(intent.allocation) != key):
                    continue
                if record.outcome is StepOutcome.running and plan.status is PlanStatus.running:
                    continue
                earlier = (plan, record)
        if earlier is None:
            raise StepFailed(f"{failure} ({label} is already there but no record says kerub-tui made it for "
                             f"disk {state.disk_name(step.disk)}: a cleanup proposal can remove it)")
        plan, record = earlier
        settled = record.evolve(intent=record.intent.evolve(resolution="adopted"))
        with self.store.transaction():
            self.store.put(plan.evolve(records=[settled if r.step_index == record.step_index else r
                                                for r in plan.records]))
            self._audit("step adopt", step.describe(state), plan_id, outcome=(
                f"{label} already there, made by plan {plan.id[:8]} step {record.step_index + 1} before it was "
                "cut off: adopted"), host_id=step.host, vm_id=_vm_of(step))
        return True

    async def _perform(self, plan_id: str, index: int, step: Step, state: OperationalState, op: Any,
                       previous_output: str, secret: SecretStr | None = None) -> tuple[OperationResult, str]:
        recorded = _Recorded(self, plan_id, index, step, state)
        if isinstance(op, LibvirtOp):
            shown = f"libvirt: {op.display}"
            kwargs = _libvirt_kwargs(op, step, state)
            if op.progress:  # only then: host operations that report nothing may leave the parameter out
                kwargs["on_progress"] = self._progress_writer(plan_id, index)
            result = await recorded.libvirt(op.host_id, op.op, shown=shown, **kwargs)
        elif isinstance(op, DeferredShellOp):
            shown = DEFERRED_BUILDERS[op.build](previous_output)
            result = await recorded.run(op.host_id, shown, privileged=op.privileged)
        elif isinstance(op, ControllerOp):
            shown = f"controller: {op.display}"
            result = await recorded.controller(op.host_id, op.action, shown)
        else:
            assert isinstance(op, ShellOp)
            shown = op.command
            if op.secret:  # the secret the step made as it runs: on the command's standard input, nowhere else
                if secret is None:
                    raise StepFailed(f"{shown[:80]}: no secret was made for it")
                result = await recorded.run(op.host_id, op.command, privileged=op.privileged,
                                            input=secret.get_secret_value().encode())
            elif op.input is not None:  # what it reads is made now and goes nowhere but the host
                result = await recorded.run(op.host_id, op.command, privileged=op.privileged, input=op.input())
            elif op.progress_total is not None:
                result = await recorded.run(op.host_id, op.command, privileged=op.privileged,
                                            on_stderr=self._progress_watcher(plan_id, index, op.progress_total))
            else:
                result = await recorded.run(op.host_id, op.command, privileged=op.privileged)
        return result, shown

    def _progress_writer(self, plan_id: str, index: int) -> ProgressReport:
        """The one way a running step's progress reaches its record (and so the plans screen): bytes done
        of the total as the host reports them, a copy's (read off GNU dd's reports) and a migration's
        (its job statistics, through the host operations' ``on_progress``) alike. Written when the whole
        percent changes, never after the step ended."""
        shown = -1

        def report(done: int, total: int) -> None:
            nonlocal shown
            total = max(total, 0)
            done = min(max(done, 0), total)
            percent = done * 100 // total if total else 100
            if percent == shown:
                return
            shown = percent
            record = next((r for r in self._plan(plan_id).records if r.step_index == index), None)
            if record is not None and record.outcome is StepOutcome.running:
                self._save_record(plan_id, record.evolve(progress_done=done, progress_total=total))

        return report

    def _progress_watcher(self, plan_id: str, index: int, total: int) -> Callable[[bytes], None]:
        """Reads GNU dd's progress reports off a running command's standard error into the step record
        (a report comes about once a second)."""
        from ..hosts.copy import parse_dd_progress

        tail = ""
        report = self._progress_writer(plan_id, index)

        def watch(chunk: bytes) -> None:
            nonlocal tail
            tail = (tail + chunk.decode("utf-8", errors="replace"))[-400:]
            done = parse_dd_progress(tail)
            if done is not None:
                report(done, total)

        return watch

    def _record(self, plan_id: str, index: int, step: Step, state: OperationalState, host_id: str, shown: str,
                result: OperationResult, started: dt.datetime, seconds: float) -> None:
        output = _tail((result.stdout or "") + (("\n" + result.stderr) if result.stderr else ""))
        plan = self._plan(plan_id)
        record = next(r for r in plan.records if r.step_index == index)
        command = CommandRecord(host_id=host_id, command=shown, exit_code=result.exit_code,
                                stdout_tail=_tail(result.stdout), stderr_tail=_tail(result.stderr),
                                started_at=started, ended_at=self.clock())
        with self.store.transaction():
            self._save_record(plan_id, record.evolve(commands=[*record.commands, command]))
            self._audit("step command", step.describe(state), plan_id,
                        outcome="ok" if result.exit_code == 0 else f"exit {result.exit_code}",
                        host_id=host_id, command=shown, exit_code=result.exit_code,
                        duration_seconds=round(seconds, 3), output_tail=output, vm_id=_vm_of(step))

    def _update_documents(self, before: OperationalState, after: OperationalState) -> None:
        """Write what the step changed, field by field over the current documents (monitoring may have
        written other fields of the same document meanwhile)."""
        docs: list[Document] = []
        for predicted in after.changed_documents(before):
            old = _lookup(before, predicted)
            current = self.store.get(predicted.kind, predicted.id)
            if current is None:
                docs.append(predicted)
                continue
            if old is None:
                # The document appeared while the step ran (monitoring saw the new domain): write only
                # what the prediction sets apart from a fresh document, not its blanks over the report.
                try:
                    old = type(predicted).model_validate({"id": predicted.id})
                except ValueError:
                    docs.append(predicted)
                    continue
            new_data = predicted.model_dump()
            old_data = old.model_dump()
            changed = {k: v for k, v in new_data.items() if old_data.get(k) != v}
            merged = current.model_dump()
            for key, value in changed.items():
                was, now = old_data.get(key), merged.get(key)
                if isinstance(value, dict) and isinstance(was, dict) and isinstance(now, dict):
                    # a mapping (storage_free) key by key: monitoring's fresher values of the others stay
                    now = dict(now)
                    for item in set(value) | set(was):
                        if value.get(item) != was.get(item):
                            if item in value:
                                now[item] = value[item]
                            else:
                                now.pop(item, None)
                    merged[key] = now
                else:
                    merged[key] = value
            docs.append(type(predicted).model_validate(merged))
        if docs:
            self.store.put_many(docs)


async def _existing_size(ops: HostOperations, alloc: Any) -> int | None:
    """The size of an allocation's object on its host (an LV's size, an image's virtual size), None
    when it is not there or cannot be read."""
    from ..hosts import fileimage, lvm

    if isinstance(alloc, LvmAllocation):
        result = await ops.run(alloc.host_id, lvm.lvs_json_command(alloc.vg))
        if result.exit_code != 0:
            return None
        try:
            found = next((lv for lv in lvm.parse_lvs(result.stdout) if lv.name == alloc.lv), None)
        except ValueError:
            return None
        if found is None or (found.pool or None) != (alloc.thin_pool or None):
            return None
        return found.size_bytes
    if isinstance(alloc, FileAllocation):
        result = await ops.run(alloc.host_id, fileimage.qemu_img_info(alloc.path))
        if result.exit_code != 0:
            return None
        try:
            return fileimage.parse_qemu_img_info(result.stdout).virtual_size
        except ValueError:
            return None
    return None


class _Recorded:
    """HostOperations that writes every call into the step record and the audit log."""

    def __init__(self, executor: Executor, plan_id: str, index: int, step: Step, state: OperationalState) -> None:
        self.executor = executor
        self.plan_id = plan_id
        self.index = index
        self.step = step
        self.state = state

    async def run(self, host_id: str, command: str, *, privileged: bool = True,
                  input: bytes | None = None, on_stderr: Callable[[bytes], None] | None = None) -> OperationResult:
        started, t0 = self.executor.clock(), time.monotonic()
        with host_context(self.state.host_name(host_id)):
            if input is not None:
                result = await self.executor.ops.run(host_id, command, privileged=privileged, input=input)
            elif on_stderr is not None:
                result = await self.executor.ops.run(host_id, command, privileged=privileged, on_stderr=on_stderr)
            else:  # a HostOperations that runs no command with input may leave the parameters out
                result = await self.executor.ops.run(host_id, command, privileged=privileged)
        self.executor._record(self.plan_id, self.index, self.step, self.state, host_id, command, result, started,
                              time.monotonic() - t0)
        return result

    async def controller(self, host_id: str, action: str, shown: str) -> OperationResult:
        """Work the controller's own process does for a host (ControllerOp), recorded like a command."""
        started, t0 = self.executor.clock(), time.monotonic()
        ops = self.executor.ops
        if action not in ("wake", "fence"):
            result = OperationResult(EXIT_CONTROLLER, "", f"unknown controller operation {action!r}")
        elif action == "wake":
            if isinstance(ops, WakesHosts):
                with host_context(self.state.host_name(host_id)):
                    result = await ops.wake(host_id)
            else:
                result = OperationResult(EXIT_CONTROLLER, "", "these host operations cannot wake a host from the "
                                                              "controller")
        elif isinstance(ops, FencesHosts):
            with host_context(self.state.host_name(host_id)):
                result = await ops.fence(host_id)
        else:
            result = OperationResult(EXIT_CONTROLLER, "", "these host operations cannot power a host off from "
                                                          "the controller")
        self.executor._record(self.plan_id, self.index, self.step, self.state, host_id, shown, result, started,
                              time.monotonic() - t0)
        return result

    async def libvirt(self, host_id: str, op: str, *, shown: str | None = None, **kwargs: Any) -> OperationResult:
        started, t0 = self.executor.clock(), time.monotonic()
        with host_context(self.state.host_name(host_id)):
            result = await self.executor.ops.libvirt(host_id, op, **kwargs)
        text = shown or f"libvirt: {op} {self.state.vm_name(kwargs['vm_id']) if 'vm_id' in kwargs else ''}".rstrip()
        self.executor._record(self.plan_id, self.index, self.step, self.state, host_id, text, result, started,
                              time.monotonic() - t0)
        return result


def _lookup(state: OperationalState, doc: Document) -> Document | None:
    mapping: dict[str, Layer[str, Any]] = {"host-dynamic": state.host_dyn, "host-config": state.host_config,
                                           "vm-dynamic": state.vm_dyn, "disk-dynamic": state.disk_dyn}
    found: Document | None = mapping[doc.kind].get(doc.id)
    return found


__all__ = ["Executor", "HostOperations", "StepFailed", "VERIFIERS", "VmStatus", "disk_backings"]
