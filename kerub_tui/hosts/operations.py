"""What the execution engine does on real hosts: shell commands over SSH, libvirt calls through the
host's tunnel. Implements the executor's ``HostOperations`` protocol over a :class:`Fleet`.

Nothing here raises into the executor for a host-side failure: a command that cannot run (host not
connected, timeout, lost connection) and a libvirt call that fails both come back as a non-zero exit
code with one line saying why in ``stderr``, so the plan fails with a clear reason and the audit log
keeps it.

libvirt operations (keyword arguments as the planner's steps emit them):

- ``start`` (vm_id, vm_name, xml): define the domain and start it. A domain that was not defined
  before and fails to start is undefined again, so no half-made definition stays on the host.
- ``shutdown`` (vm_id, timeout): ask the guest to power off (ACPI), return when the domain is off or
  when ``timeout`` seconds passed (the step's next operation destroys what is still running). The
  wait follows libvirt's lifecycle events, with a state re-read every few seconds in case an event
  was lost with a reconnect.
- ``destroy-if-running``, ``undefine``, ``pause``, ``resume``: idempotent (done already = success).
- ``migrate`` (vm_id, target_host_id, target_address, copy_storage): a live, managed direct migration
  between the two hosts' tunnelled libvirt connections: the libvirt calls go through the SSH tunnels,
  the memory (and with ``copy_storage`` the disks, over NBD) flows directly between the two qemu
  processes to ``tcp://TARGET_ADDRESS``. The target gets the domain's definition with its disks
  pointed at the target's own allocations (from the disks' dynamic documents). With ``on_progress``
  (a ``ProgressReport``, which the executor gives), the source's job statistics are read while it
  runs, every ``progress_seconds`` as ``virsh migrate --verbose`` does (libvirt pushes no progress
  event), and each answer reported as bytes done of the total (:func:`migration_progress`).
- ``domain-state`` (vm_id): stdout ``running``, ``paused``, ``shut off``, or empty without a domain.
- ``reboot`` (vm_id): ask the guest to reboot (ACPI power button semantics of libvirt's reboot; the
  guest must answer ACPI); ``reset`` (vm_id): reset the virtual machine at once, like its reset
  button; ``request-shutdown`` (vm_id): ask the guest to power off (ACPI) and return at once (the
  admin's ``vm poweroff``; its lifecycle events say when it is off); ``send-keys`` (vm_id, keys: a
  list of keycode lists, each pressed together, Linux keycodes as ``core.keys`` makes them). Each
  needs a running domain (``reboot``, ``reset`` and ``send-keys`` refuse a paused one) and says so.
- ``define-iscsi-secret`` (usage, value): the libvirt secret (usage type iscsi) holding an iSCSI target's CHAP
  password, defined unless it is there, and its value set (secretSetValue: through the tunnel, on no command
  line); ``undefine-iscsi-secret`` (usage): removed, done already = success. The value is in no result, log
  line or error message (scrubbed if libvirt echoes it). ``iscsi-secrets``: stdout the usage names of those
  secrets kerub-tui names (``kerub-iscsi-...``), one a line (a reconcile's reading).
- ``eject`` (vm_id, disk_id): take the medium out of a running domain's CD-ROM drive (forced, even
  if the guest locked the tray), live and in its definition; the empty drive stays until the next
  start, which defines the domain from the documents again. Idempotent.

The SPICE password is part of the domain XML given to ``start`` (and of the definition a migration
carries): it never appears in a result, a log line or an error message (scrubbed if libvirt echoes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from typing import Any

import libvirt

from kerub_tui.core.keys import KEYCODES, MAX_COMBO_KEYS, MAX_SEQUENCE
from kerub_tui.core.models import VirtualStorageDeviceDynamic
from kerub_tui.core.names import InvalidName, check_address, check_name
from kerub_tui.ssh import CommandTimeout, SshError
from kerub_tui.ssh.keys import describe_error

from . import kvm
from .fileimage import check_path
from .libvirt_link import off_loop
from .results import OperationResult, ProgressReport

log = logging.getLogger(__name__)

EXIT_UNREACHABLE = 255  # like ssh: the command could not be run, or the connection failed under it
EXIT_TIMEOUT = 124  # like timeout(1)
EXIT_LIBVIRT = 1

COMMAND_TIMEOUT = 4 * 3600.0  # a copy of a large disk streams for a long time
LIBVIRT_TIMEOUT = 300.0  # one libvirt call (define, start, destroy...)
MIGRATE_TIMEOUT = 6 * 3600.0
CONNECT_WAIT = 30.0  # a host that is reconnecting gets this long before an operation fails
RECHECK_SECONDS = 5.0  # the shutdown wait re-reads the state this often, should an event be lost
PROGRESS_SECONDS = 1.0  # a running migration's job statistics are read this often

OPS = ("start", "shutdown", "destroy-if-running", "undefine", "pause", "resume", "migrate", "domain-state", "eject",
       "reboot", "reset", "request-shutdown", "send-keys", "define-iscsi-secret", "undefine-iscsi-secret",
       "iscsi-secrets")

# libvirt's domain states as the executor's verifiers name them
_STATE_TEXT = {
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_SHUTDOWN: "running",  # shutting down: still running until it is off
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "paused",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "shut off",
    libvirt.VIR_DOMAIN_NOSTATE: "shut off",
}

_UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM  # never delete a firmware store kerub-tui did not make
)

_MIGRATE_FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
)


class OperationError(Exception):
    """An operation refused or failed on the host; the message is the one line for stderr."""


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def libvirt_message(error: BaseException) -> str:
    """One line from a libvirt error (its own message, without libvirt's code prefix noise)."""
    if isinstance(error, libvirt.libvirtError):
        return _one_line(error.get_error_message() or str(error))
    return _one_line(describe_error(error) if not isinstance(error, OperationError) else str(error))


def connection_lost(error: libvirt.libvirtError) -> bool:
    """The call failed because the connection to libvirtd broke (tunnel or host gone), not on the host."""
    # Errors the host reports keep their own domain (qemu, storage...); the client's socket and RPC
    # layers report a broken link.
    return (error.get_error_code() in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC)
            or error.get_error_domain() in (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE))


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "(secret)")
    return text


def spice_password_of(xml: str) -> str | None:
    """The SPICE password in a domain XML (to keep it out of messages), None without one."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        match = re.search(r"passwd=['\"]([^'\"]*)['\"]", xml)
        return match[1] if match else None
    graphics = root.find("./devices/graphics[@type='spice']")
    return graphics.get("passwd") if graphics is not None else None


def without_spice_password(xml: str) -> tuple[str, str | None]:
    """(the domain XML without its SPICE password, the password): the persistent definition never holds
    it (libvirt would keep it in /etc/libvirt/qemu and show it to every `virsh dumpxml --security-info
    --inactive`); it is set on the running domain only."""
    password = spice_password_of(xml)
    if not password:
        return xml, None
    stripped = re.sub(r"\s+passwd\s*=\s*(['\"])" + re.escape(password) + r"\1", "", xml)
    if spice_password_of(stripped) is not None:
        raise OperationError("the domain XML has more than one SPICE password")
    return stripped, password


# --- libvirt calls (each runs in a libvirt thread, off the loop) -----------------------------------


def _lookup(conn: Any, vm_id: str) -> Any:
    """The domain of ``vm_id`` on this host, or None."""
    try:
        return conn.lookupByUUIDString(kvm.domain_uuid(vm_id))
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def _state_text(dom: Any) -> str:
    try:
        state, _reason = dom.state()
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return ""
        raise
    return _STATE_TEXT.get(state, "shut off")


def domain_state(conn: Any, vm_id: str) -> str:
    dom = _lookup(conn, vm_id)
    return "" if dom is None else _state_text(dom)


def check_start(vm_id: str, vm_name: str, xml: str) -> None:
    """The XML handed to ``start`` is a domain of this VM: its name and its UUID (from the VM id)."""
    check_name(vm_name, "VM name")
    if not isinstance(xml, str):
        raise OperationError("the domain XML must be text")
    wanted = kvm.domain_uuid(vm_id)
    facts = kvm.parse_domain_xml(xml)
    if facts.name != vm_name or (facts.uuid or "").lower() != wanted:
        raise OperationError(f"the domain XML is for {facts.name!r} ({facts.uuid}), not {vm_name!r} ({wanted})")


def _start(conn: Any, vm_id: str, vm_name: str, xml: str) -> str:
    check_start(vm_id, vm_name, xml)
    wanted = kvm.domain_uuid(vm_id)
    existing = _lookup(conn, vm_id)
    if existing is not None:
        state = _state_text(existing)
        if state == "running":
            return f"{vm_name} is already running"
        if state == "paused":
            raise OperationError(f"{vm_name} is already here and paused: resume it rather than start it")
    try:
        other = conn.lookupByName(vm_name)
    except libvirt.libvirtError as error:
        if error.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
        other = None
    if other is not None and other.UUIDString().lower() != wanted:
        raise OperationError(f"this host already has another domain named {vm_name} "
                             f"(uuid {other.UUIDString()}), not made by kerub-tui for this VM")
    # The persistent definition has no SPICE password; the domain starts from the full XML, so the
    # password is on the live domain only, from its first instant (qemu cannot add one to a SPICE
    # server started without: "Could not set password").
    persistent, password = without_spice_password(xml)
    dom = conn.defineXML(persistent)
    try:
        if password is None:
            dom.create()
        else:
            conn.createXML(xml, 0)
    except BaseException:
        if existing is None:  # leave no definition behind that nobody recorded
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefineFlags(_UNDEFINE_FLAGS)
        raise
    return f"{vm_name} defined and started"


def _iscsi_secret(conn: Any, usage: str) -> Any:
    """The libvirt secret of usage type iscsi named ``usage`` on this host, or None."""
    try:
        return conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_ISCSI, usage)
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_SECRET:
            return None
        raise


def _define_iscsi_secret(conn: Any, usage: str, value: str) -> str:
    secret = _iscsi_secret(conn, usage)
    made = secret is None
    if secret is None:
        secret = conn.secretDefineXML(kvm.iscsi_secret_xml(usage))
    try:
        secret.setValue(value.encode())
    except BaseException:
        if made:  # leave no secret without its value behind
            with contextlib.suppress(libvirt.libvirtError):
                secret.undefine()
        raise
    return f"iscsi secret {usage} {'defined' if made else 'set again'}"


def _undefine_iscsi_secret(conn: Any, usage: str) -> str:
    secret = _iscsi_secret(conn, usage)
    if secret is None:
        return f"no iscsi secret {usage} here"
    secret.undefine()
    return f"iscsi secret {usage} undefined"


def list_iscsi_secrets(conn: Any) -> str:
    """The usage names of the libvirt secrets of usage type iscsi kerub-tui names (``kerub-iscsi-``), one a line."""
    names = [s.usageID() for s in conn.listAllSecrets(0) if s.usageType() == libvirt.VIR_SECRET_USAGE_TYPE_ISCSI]
    return "".join(f"{name}\n" for name in sorted(names) if name.startswith("kerub-iscsi-"))


def check_secret_value(value: object) -> str:
    """A CHAP password as kerub-tui makes them (hosts/iscsi.new_chap_secret): text, no control character."""
    if not isinstance(value, str) or not 12 <= len(value) <= 256 or not value.isprintable():
        raise OperationError("the secret's value is not a CHAP password kerub-tui made")
    return value


def _request_shutdown(conn: Any, vm_id: str, on_event: Callable[[], None]) -> tuple[str, int | None]:
    """Register for the domain's lifecycle events, then ask for a shutdown. (state, callback id)."""
    dom = _lookup(conn, vm_id)
    if dom is None:
        return "", None
    callback_id = conn.domainEventRegisterAny(
        dom, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lambda *_args: on_event(), None)
    try:
        state = _state_text(dom)
        if state == "running":
            dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        return state, callback_id
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            conn.domainEventDeregisterAny(callback_id)
        raise


def _deregister(conn: Any, callback_id: int) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        conn.domainEventDeregisterAny(callback_id)


def _destroy_if_running(conn: Any, vm_id: str) -> str:
    dom = _lookup(conn, vm_id)
    if dom is None:
        return "no such domain here"
    if _state_text(dom) in ("", "shut off"):
        return "not running"
    try:
        dom.destroy()
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID and _state_text(dom) in ("", "shut off"):
            return "stopped meanwhile"
        raise
    return "destroyed"


def _undefine(conn: Any, vm_id: str) -> str:
    dom = _lookup(conn, vm_id)
    if dom is None:
        return "no such domain here"
    if not dom.isPersistent():
        return "not defined (transient)"
    dom.undefineFlags(_UNDEFINE_FLAGS)
    return "undefined"


def _pause(conn: Any, vm_id: str) -> str:
    return _switch(conn, vm_id, "running", "paused", "suspend", "paused")


def _resume(conn: Any, vm_id: str) -> str:
    return _switch(conn, vm_id, "paused", "running", "resume", "resumed")


def _switch(conn: Any, vm_id: str, source: str, target: str, method: str, done: str) -> str:
    """Call ``dom.<method>()`` to take a domain from ``source`` to ``target`` state; idempotent."""
    dom = _require(conn, vm_id)
    state = _state_text(dom)
    if state == target:
        return f"already {target}"
    if state != source:
        raise OperationError(f"the domain is {state or 'not defined'}, not {source}")
    getattr(dom, method)()
    return done


def _eject(conn: Any, vm_id: str, disk_id: str) -> str:
    dom = _lookup(conn, vm_id)
    if dom is None:
        return "no such domain here"
    if _state_text(dom) not in ("running", "paused"):
        return "not running"
    root = kvm._parse(dom.XMLDesc(0))
    alias = disk_alias(disk_id)
    for disk in root.findall("./devices/disk"):
        found = disk.find("alias")
        if found is None or found.get("name") != alias:
            continue
        if disk.get("device") != "cdrom":
            raise OperationError("that disk is not a CD-ROM: only a CD-ROM's medium can be ejected")
        source = disk.find("source")
        # an empty drive: no <source>, or (live) one with only libvirt's index left
        if source is None or not any(source.get(a) for a in ("file", "dev", "name")):
            return "already empty"
        disk.remove(source)
        flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE
        if dom.isPersistent():
            flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
        dom.updateDeviceFlags(ET.tostring(disk, encoding="unicode"), flags)
        return "ejected"
    return "no such CD-ROM in the domain"


def _running(conn: Any, vm_id: str, what: str, *, paused_ok: bool = False) -> Any:
    """The domain, which must be running (or paused, with ``paused_ok``) for ``what``."""
    dom = _require(conn, vm_id)
    state = _state_text(dom)
    if state != "running" and not (paused_ok and state == "paused"):
        raise OperationError(f"the domain is {state or 'not defined'}: {what} needs it running")
    return dom


def _reboot(conn: Any, vm_id: str) -> str:
    _running(conn, vm_id, "a reboot").reboot(libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)
    return "reboot requested (ACPI)"


def _reset(conn: Any, vm_id: str) -> str:
    _running(conn, vm_id, "a reset").reset(0)
    return "reset"


def _request_shutdown_now(conn: Any, vm_id: str) -> str:
    dom = _lookup(conn, vm_id)
    if dom is None:
        return "no such domain here"
    state = _state_text(dom)
    if state in ("", "shut off"):
        return "not running"
    if state == "paused":
        raise OperationError("the domain is paused: a paused guest cannot answer the power button "
                             "(resume it, or force it off)")
    dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
    return "power off requested (ACPI)"


def check_keys(keys: Any) -> list[list[int]]:
    """``send-keys``' keys: a non-empty list of combinations, each 1..16 distinct Linux keycodes."""
    known = set(KEYCODES.values())
    if not isinstance(keys, list) or not keys or len(keys) > MAX_SEQUENCE:
        raise OperationError(f"keys must be a list of 1 to {MAX_SEQUENCE} key combinations")
    for combo in keys:
        if (not isinstance(combo, list) or not combo or len(combo) > MAX_COMBO_KEYS or len(set(combo)) != len(combo)
                or any(isinstance(c, bool) or not isinstance(c, int) or c not in known for c in combo)):
            raise OperationError(f"{combo!r} is not a combination of known keycodes")
    return keys


def _send_keys(conn: Any, vm_id: str, keys: list[list[int]]) -> str:
    dom = _running(conn, vm_id, "sending keys")
    for combo in keys:
        dom.sendKey(libvirt.VIR_KEYCODE_SET_LINUX, 0, combo, len(combo), 0)
    return f"{len(keys)} key combination(s) sent"


def _require(conn: Any, vm_id: str) -> Any:
    dom = _lookup(conn, vm_id)
    if dom is None:
        raise OperationError("no such domain on this host")
    return dom


# --- migration -------------------------------------------------------------------------------------


def retarget_disks(xml: str, paths: dict[str, tuple[str, str, str]]) -> str:
    """The domain XML with each kerub disk (alias ``ua-DISKID``) pointed at the target's allocation.

    ``paths`` maps the disk alias to (disk type ``block``/``file``, path, format). Disks not in
    ``paths`` (network disks, CD-ROMs kerub-tui did not attach) keep their source.
    """
    root = kvm._parse(xml)
    for disk in root.findall("./devices/disk"):
        alias = disk.find("alias")
        key = alias.get("name") if alias is not None else None
        if key not in paths:
            continue
        kind, path, fmt = paths[key]
        disk.set("type", kind)
        source = disk.find("source")
        if source is None:
            source = ET.SubElement(disk, "source")
        for attr in list(source.attrib):
            del source.attrib[attr]
        for child in list(source):
            source.remove(child)
        source.set("dev" if kind == "block" else "file", path)
        driver = disk.find("driver")
        if driver is not None:
            driver.set("type", fmt)
            if kind == "file" and driver.get("io") == "native":
                del driver.attrib["io"]
    return ET.tostring(root, encoding="unicode")


def disk_alias(disk_id: str) -> str:
    """The alias kvm.domain_xml gives a disk: how a domain's disk is matched to its document."""
    return "ua-" + re.sub(r"[^A-Za-z0-9_-]", "-", disk_id)


def target_disk_source(alloc: Any) -> tuple[str, str, str]:
    """(disk type, path, format) of an allocation for a domain's <disk>, its names validated as
    kvm.domain_xml validates them (a document written without validation must not reach libvirt)."""
    if alloc.type == "lvm":
        check_name(alloc.vg, "volume group")
        check_name(alloc.lv, "logical volume")
    elif alloc.type == "zfs":
        check_name(alloc.pool, "ZFS pool")
        check_name(alloc.volume, "ZFS volume")
    elif alloc.type == "gvinum":
        check_name(alloc.volume, "gvinum volume")
    if alloc.format not in ("raw", "qcow2"):
        raise OperationError(f"disk format {alloc.format!r} is not supported")
    path = check_path(alloc.path, "disk path")
    return ("file" if alloc.type == "file" else "block"), path, alloc.format


_RUNNING_JOBS = (libvirt.VIR_DOMAIN_JOB_BOUNDED, libvirt.VIR_DOMAIN_JOB_UNBOUNDED)


def migration_progress(stats: Any) -> tuple[int, int] | None:
    """(bytes done, bytes in all) of a running migration from its job statistics
    (``virDomainGetJobStats``), or None when no job runs or it does not know its size yet. As virsh
    reckons it: done is the total less what remains, of ``data`` (memory, and the disks when they are
    copied), else of ``memory``. The total grows while the guest dirties memory again."""
    if not isinstance(stats, dict) or stats.get("type") not in _RUNNING_JOBS:
        return None
    for prefix in ("data", "memory"):
        total, remaining = stats.get(f"{prefix}_total"), stats.get(f"{prefix}_remaining")
        if type(total) is int and type(remaining) is int and total > 0:
            return min(max(total - remaining, 0), total), total
    return None


def _job_progress(conn: Any, vm_id: str) -> tuple[int, int] | None:
    """How far the domain's running job got (:func:`migration_progress`), None when it cannot be read
    (no job yet, or the domain has just left)."""
    try:
        dom = _lookup(conn, vm_id)
        return None if dom is None else migration_progress(dom.jobStats())
    except libvirt.libvirtError:
        return None


def _migrate(dom: Any, dconn: Any, uri: str, dest_xml: str | None, persist_xml: str | None,
             copy_storage: bool) -> str:
    params: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_URI: uri}
    flags = _MIGRATE_FLAGS
    if dest_xml is not None:
        params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = dest_xml
    if persist_xml is not None:
        params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = persist_xml
    if copy_storage:
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
        # NBD to the address kerub-tui reaches the target at, not whatever its hostname resolves to
        params[libvirt.VIR_MIGRATE_PARAM_DISKS_URI] = uri
    dom.migrate3(dconn, params, flags)
    return "migrated"


# --- the operations --------------------------------------------------------------------------------


class FleetOperations:
    """The executor's HostOperations over a Fleet: ``await ops.run(host_id, command)``,
    ``await ops.libvirt(host_id, "start", vm_id=..., vm_name=..., xml=...)``."""

    def __init__(
        self,
        fleet: Any,
        *,
        command_timeout: float | None = COMMAND_TIMEOUT,
        libvirt_timeout: float = LIBVIRT_TIMEOUT,
        migrate_timeout: float = MIGRATE_TIMEOUT,
        connect_wait: float = CONNECT_WAIT,
        progress_seconds: float = PROGRESS_SECONDS,
    ) -> None:
        self.fleet = fleet
        self.command_timeout = command_timeout
        self.libvirt_timeout = libvirt_timeout
        self.migrate_timeout = migrate_timeout
        self.connect_wait = connect_wait
        self.progress_seconds = progress_seconds

    # shell -------------------------------------------------------------------------------------------

    async def run(self, host_id: str, command: str, *, privileged: bool = True,
                  input: bytes | None = None, on_stderr: Callable[[bytes], None] | None = None) -> OperationResult:
        try:
            result = await self.fleet.run(host_id, command, privileged=privileged, timeout=self.command_timeout,
                                          wait=self.connect_wait, input=input, on_stderr=on_stderr)
        except CommandTimeout as error:
            return OperationResult(EXIT_TIMEOUT, error.result.stdout, _join(error.result.stderr, str(error)))
        except (SshError, OSError) as error:
            return OperationResult(EXIT_UNREACHABLE, "", _one_line(describe_error(error)))
        except Exception as error:  # FleetError (host not in the fleet) and the like: one line, no traceback
            if type(error).__name__ not in ("FleetError",):
                log.exception("running a command on %s failed", host_id)
            return OperationResult(EXIT_UNREACHABLE, "", _one_line(str(error) or type(error).__name__))
        if result.exit_code is None:
            why = f"killed by signal {result.signal}" if result.signal else "no exit status came back"
            return OperationResult(EXIT_UNREACHABLE, result.stdout, _join(result.stderr, why))
        return OperationResult(result.exit_code, result.stdout, result.stderr)

    # libvirt -----------------------------------------------------------------------------------------

    async def libvirt(self, host_id: str, op: str, *, on_progress: ProgressReport | None = None,
                      **kwargs: Any) -> OperationResult:
        """``on_progress`` hears how far a migration got while it runs; the other operations do not report."""
        if on_progress is not None and op == "migrate":
            kwargs["on_progress"] = on_progress
        secrets: tuple[str, ...] = ()
        if op == "start" and isinstance(kwargs.get("xml"), str):
            secrets = tuple(s for s in [spice_password_of(kwargs["xml"])] if s)
        if op == "define-iscsi-secret" and isinstance(kwargs.get("value"), str):
            secrets = (kwargs["value"],)
        try:
            handler = self._handlers().get(op)
            if handler is None:
                raise OperationError(f"unknown libvirt operation {op!r}")
            text = await handler(host_id, **kwargs)
        except TimeoutError:
            return OperationResult(EXIT_TIMEOUT, "", f"libvirt {op}: no answer from the host in time")
        except libvirt.libvirtError as error:
            code = EXIT_UNREACHABLE if connection_lost(error) else EXIT_LIBVIRT
            return OperationResult(code, "", _scrub(f"libvirt {op}: {libvirt_message(error)}", secrets))
        except (OperationError, InvalidName, ValueError, TypeError) as error:
            return OperationResult(EXIT_LIBVIRT, "", _scrub(f"libvirt {op}: {libvirt_message(error)}", secrets))
        except (SshError, OSError) as error:
            return OperationResult(EXIT_UNREACHABLE, "", _scrub(f"libvirt {op}: {libvirt_message(error)}", secrets))
        except Exception as error:  # FleetError and friends
            if type(error).__name__ != "FleetError":
                log.exception("libvirt %s on %s failed", op, host_id)
            return OperationResult(EXIT_UNREACHABLE, "", _scrub(f"libvirt {op}: {_one_line(str(error))}", secrets))
        return OperationResult(0, text)

    def _handlers(self) -> dict[str, Callable[..., Any]]:
        return {
            "start": self._op_start,
            "shutdown": self._op_shutdown,
            "destroy-if-running": self._simple(_destroy_if_running),
            "undefine": self._simple(_undefine),
            "pause": self._simple(_pause),
            "resume": self._simple(_resume),
            "domain-state": self._simple(domain_state),
            "migrate": self._op_migrate,
            "eject": self._op_eject,
            "reboot": self._simple(_reboot),
            "reset": self._simple(_reset),
            "request-shutdown": self._simple(_request_shutdown_now),
            "send-keys": self._op_send_keys,
            "define-iscsi-secret": self._op_define_iscsi_secret,
            "iscsi-secrets": self._op_iscsi_secrets,
            "undefine-iscsi-secret": self._op_undefine_iscsi_secret,
        }

    async def _call(self, host_id: str, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        return await self.fleet.libvirt(host_id, fn, *args, timeout=timeout or self.libvirt_timeout,
                                        wait=self.connect_wait)

    def _simple(self, fn: Callable[[Any, str], str]) -> Callable[..., Any]:
        async def handler(host_id: str, *, vm_id: str) -> str:
            return await self._call(host_id, fn, _vm_id(vm_id))

        return handler

    async def _op_start(self, host_id: str, *, vm_id: str, vm_name: str, xml: str) -> str:
        vm_id = _vm_id(vm_id)
        check_start(vm_id, vm_name, xml)  # refused here, before anything reaches the host
        return await self._call(host_id, _start, vm_id, vm_name, xml)

    async def _op_define_iscsi_secret(self, host_id: str, *, usage: str, value: str) -> str:
        return await self._call(host_id, _define_iscsi_secret, check_name(usage, "secret usage name"),
                                check_secret_value(value))

    async def _op_iscsi_secrets(self, host_id: str) -> str:
        return await self._call(host_id, list_iscsi_secrets)

    async def _op_undefine_iscsi_secret(self, host_id: str, *, usage: str) -> str:
        return await self._call(host_id, _undefine_iscsi_secret, check_name(usage, "secret usage name"))

    async def _op_eject(self, host_id: str, *, vm_id: str, disk_id: str) -> str:
        if not isinstance(disk_id, str) or not disk_id or len(disk_id) > 200:
            raise OperationError(f"{disk_id!r} is not a disk id")
        return await self._call(host_id, _eject, _vm_id(vm_id), disk_id)

    async def _op_send_keys(self, host_id: str, *, vm_id: str, keys: list[list[int]]) -> str:
        return await self._call(host_id, _send_keys, _vm_id(vm_id), check_keys(keys))

    async def _op_shutdown(self, host_id: str, *, vm_id: str, timeout: int | float) -> str:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise OperationError(f"the shutdown timeout must be a positive number of seconds, not {timeout!r}")
        vm_id = _vm_id(vm_id)
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def on_event() -> None:  # libvirtaio calls it on the loop; be safe if it ever is not
            loop.call_soon_threadsafe(changed.set)

        conn_holder: list[Any] = []

        def request(conn: Any) -> tuple[str, int | None]:
            conn_holder.append(conn)
            return _request_shutdown(conn, vm_id, on_event)

        state, callback_id = await self._call(host_id, request)
        if state in ("", "shut off"):
            if callback_id is not None:
                await off_loop(_deregister, conn_holder[0], callback_id, timeout=30)
            return "not running" if state else "no such domain here"
        try:
            deadline = loop.time() + float(timeout)
            while state not in ("", "shut off"):
                left = deadline - loop.time()
                if left <= 0:
                    return f"still {state} after {timeout:g} s"
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(left, RECHECK_SECONDS)):
                        await changed.wait()
                changed.clear()
                state = await self._call(host_id, domain_state, vm_id)
            return "shut off"
        finally:
            if callback_id is not None:
                with contextlib.suppress(Exception):
                    await off_loop(_deregister, conn_holder[0], callback_id, timeout=30)

    async def _op_migrate(self, host_id: str, *, vm_id: str, target_host_id: str, target_address: str,
                          copy_storage: bool = False, on_progress: ProgressReport | None = None) -> str:
        vm_id = _vm_id(vm_id)
        if target_host_id == host_id:
            raise OperationError("the target is the source host")
        uri = kvm.migrate_uri(check_address(target_address))
        dconn = await self._call(target_host_id, lambda conn: conn)
        dest_xml = persist_xml = None
        if copy_storage:
            paths = self._target_disks(vm_id, target_host_id)
            secure = libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE

            def definitions(conn: Any) -> tuple[str, str]:
                dom = _require(conn, vm_id)
                return dom.XMLDesc(secure), dom.XMLDesc(secure | libvirt.VIR_DOMAIN_XML_INACTIVE)

            live, inactive = await self._call(host_id, definitions)
            dest_xml, persist_xml = retarget_disks(live, paths), retarget_disks(inactive, paths)

        def migrate(conn: Any) -> str:
            dom = _require(conn, vm_id)
            state = _state_text(dom)
            if state not in ("running", "paused"):
                raise OperationError(f"the domain is {state or 'not defined'} here, not running")
            return _migrate(dom, dconn, uri, dest_xml, persist_xml, copy_storage)

        def abort(conn: Any) -> None:
            dom = _lookup(conn, vm_id)
            if dom is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    dom.abortJob()

        try:
            call = self._call(host_id, migrate, timeout=self.migrate_timeout)
            if on_progress is None:
                return await call
            return await self._following(host_id, vm_id, call, on_progress)
        except TimeoutError:
            # The libvirt thread still waits for the migration: abort the job so the VM stays here.
            with contextlib.suppress(Exception):
                await self._call(host_id, abort, timeout=60)
            raise OperationError(f"the migration did not finish within {self.migrate_timeout:g} s: "
                                 "aborted, the VM stays on the source") from None
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._call(host_id, abort, timeout=60))
            raise

    async def _following(self, host_id: str, vm_id: str, call: Awaitable[str], on_progress: ProgressReport) -> str:
        """``call``'s answer (a migration running on ``host_id``), reporting its job's progress meanwhile:
        the job statistics are read every ``progress_seconds``, and each reading that knows its size goes
        to ``on_progress`` (on the loop). A reading that fails or is slow is skipped, never waited for
        past the migration's end; progress is only ever told, a failure to tell it stops nothing."""
        task = asyncio.ensure_future(call)
        reading: asyncio.Future[tuple[int, int] | None] | None = None
        try:
            while True:
                await asyncio.wait({task}, timeout=self.progress_seconds)
                if task.done():
                    return task.result()
                reading = asyncio.ensure_future(self._call(host_id, _job_progress, vm_id))
                await asyncio.wait({task, reading}, return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():
                    reading.cancel()
                    continue
                if reading.cancelled() or reading.exception() is not None:
                    continue
                progress = reading.result()
                if progress is not None:
                    try:
                        on_progress(*progress)
                    except Exception:
                        log.exception("reporting the progress of a migration on %s failed", host_id)
        finally:  # cancelled (the step stopped) or done: nothing is left waiting on the host
            for pending in (task, reading):
                if pending is not None and not pending.done():
                    pending.cancel()

    def _target_disks(self, vm_id: str, target_host_id: str) -> dict[str, tuple[str, str, str]]:
        """For each disk of the VM: how the target reaches its own allocation of it."""
        from kerub_tui.core.models import VirtualMachine

        store = self.fleet.store
        vm = store.get(VirtualMachine, vm_id)
        if vm is None:
            raise OperationError(f"no VM {vm_id} in the store")
        out: dict[str, tuple[str, str, str]] = {}
        for link in vm.disks:
            dyn = store.get(VirtualStorageDeviceDynamic, link.disk_id)
            alloc = next((a for a in (dyn.allocations if dyn else []) if a.host_id == target_host_id), None)
            if alloc is None:
                raise OperationError(f"the target has no allocation of disk {link.disk_id} to copy into")
            out[disk_alias(link.disk_id)] = target_disk_source(alloc)
        return out


def _vm_id(vm_id: Any) -> str:
    if not isinstance(vm_id, str) or not vm_id or len(vm_id) > 200:
        raise OperationError(f"{vm_id!r} is not a VM id")
    kvm.domain_uuid(vm_id)
    return vm_id


def _join(*parts: str) -> str:
    return "\n".join(p.rstrip("\n") for p in parts if p)


__all__ = ["FleetOperations", "OperationError", "OperationResult", "check_keys", "check_secret_value", "check_start",
           "connection_lost", "disk_alias", "domain_state", "libvirt_message", "list_iscsi_secrets",
           "migration_progress", "retarget_disks", "spice_password_of", "target_disk_source", "without_spice_password"]
