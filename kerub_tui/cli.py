"""The command line (ARCHITECTURE.md §8): the console by default, and the console's actions for scripts.

Every command is an ``async def cmd_*(args, controller, out)``: run in this process on the data dir
when no controller runs there, or inside the running controller through its control socket
(``kerub_tui.control``), so both paths share one implementation.
Exit status 0 on success; otherwise one clear line on stderr and a non-zero status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO, TypeVar

from . import __version__
from .api import ActionError, ConsoleAPI, ReadOnlyMode, cloud_init_summary, refusal
from .cli_args import (  # the parser and its types live there (imported without the controller)
    _CLIENT_CWD,
    _NO_CWD,
    EXIT_ERROR,
    EXIT_OK,
    CliError,
    _Exit,
    _one_line,
    build_parser,
)
from .cli_args import _address as _address
from .cli_args import _memory as _memory
from .cli_args import _path as _path
from .cli_args import _port as _port
from .cli_args import _size as _size
from .control import ControlServer, controller_running, run_cli_remote
from .core import logs, paths
from .core.expectations import Expectation, display_spec
from .core.models import (
    DOCUMENT_TYPES,
    AuditEntry,
    Document,
    Event,
    Host,
    HostDynamic,
    HostStatus,
    Plan,
    PlanStatus,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
    VmStatus,
    utcnow,
)
from .core.names import InvalidName
from .core.sizes import format_size
from .core.store import Store, StoreError
from .core.text import printable

if TYPE_CHECKING:
    from .controller import Controller
    from .sim import Timing

log = logging.getLogger(__name__)


class Output(Protocol):
    """Where a command prints: the terminal (through TerminalOut) or the control socket's answer."""

    def write(self, text: str, /) -> int: ...
    def flush(self) -> None: ...

# --- output -------------------------------------------------------------------------------------


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])


_D = TypeVar("_D", bound=Document)


def _print_list(out: Output, docs: Sequence[_D], as_json: bool, header: list[str],
                row: Callable[[_D], list[str]]) -> None:
    """A `list` command's output: the documents as JSON, or one table row each."""
    print(_json(list(docs)) if as_json else _table([row(d) for d in docs], header), file=out)


def _json(value: Any) -> str:
    if isinstance(value, Document):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, Document) else v for v in value]
    return json.dumps(value, indent=2, sort_keys=True)


def _dump_pair(first: tuple[str, Document], second: tuple[str, Document | None]) -> str:
    return json.dumps({first[0]: first[1].model_dump(mode="json"),
                       second[0]: second[1].model_dump(mode="json") if second[1] else None}, indent=2, sort_keys=True)


# --- commands -----------------------------------------------------------------------------------


async def cmd_export(args: argparse.Namespace, c: ConsoleAPI, out: Output) -> int:
    count = await c.export_documents(args.file)
    print(f"exported {count} documents to {args.file}", file=out)
    return EXIT_OK


async def cmd_import(args: argparse.Namespace, c: ConsoleAPI, out: Output) -> int:
    count = await c.import_documents(args.file, replace=args.replace)
    print(f"imported {count} documents from {args.file}", file=out)
    return EXIT_OK


async def cmd_host(args: argparse.Namespace, c: ConsoleAPI, out: Output) -> int:
    if args.action == "add":
        address, port = args.address
        _key, fingerprint = await c.fetch_host_key(address, port or 22)
        if args.accept_fingerprint is None:
            print(f"host key of {address}:{port or 22} is {fingerprint}", file=out)
            raise CliError(f"not added: check the fingerprint, then run again with --accept-fingerprint {fingerprint}")
        password = getattr(args, "secret", None) if args.install_key else None
        if args.install_key and not password:
            raise CliError("--install-key needs the password of the login user, asked for on a terminal")
        host = await c.add_host(name=args.name or address, address=address, port=port or 22, user=args.user,
                                identity=args.identity, fingerprint=args.accept_fingerprint, dedicated=args.dedicated,
                                password=password)
        print(f"added host {host.name} ({host.id}), key {host.fingerprint}", file=out)
    elif args.action == "list":
        def host_row(h: Host) -> list[str]:
            dyn = c.get(HostDynamic, h.id)
            fenced = " (fenced)" if dyn is not None and dyn.fence is not None and dyn.status is not HostStatus.up \
                else ""
            return [h.name, f"{h.address}:{h.port}", _host_status(c, dyn) + fenced,
                    _vm_count(c, h.id), "yes" if h.recycling else "-", "yes" if h.simulated else "-"]

        _print_list(out, sorted(c.documents(Host), key=lambda h: h.name), args.json,
                    ["NAME", "ADDRESS", "STATUS", "VMS", "EVACUATING", "SIMULATED"], host_row)
    elif args.action == "show":
        host = c.resolve(Host, args.name)
        dyn = c.get(HostDynamic, host.id)
        if args.json:
            print(_dump_pair(("host", host), ("dynamic", dyn)), file=out)
            return EXIT_OK
        print(_show_host(c, host, dyn), file=out)
    elif args.action == "remove":
        await c.remove_host(args.name)
        print(f"removed host {args.name}", file=out)
    elif args.action == "rediscover":
        host = await c.rediscover_host(args.name)
        caps = host.capabilities
        stale = sorted(s.section for s in caps.stale) if caps is not None else []
        if stale:
            raise CliError(f"host {host.name}: discovery still cannot read {', '.join(stale)}; the last good "
                           "readings are kept, marked stale (host show says why)")
        print(f"host {host.name} discovered again: every fact read", file=out)
    elif args.action == "rekey":
        host = c.resolve(Host, args.name)
        if args.accept_fingerprint is None:
            _key, offered = await c.fetch_host_key(host.address, host.port)
            print(f"host {host.name} ({host.address}:{host.port}) presents host key {offered}; "
                  f"accepted is {host.fingerprint or '-'}", file=out)
            raise CliError(f"not changed: check the fingerprint out of band, then run again with "
                           f"--accept-fingerprint {offered}")
        old = host.fingerprint or "-"
        host = await c.rekey_host(host.id, args.accept_fingerprint)
        print(f"host {host.name}: new key {host.fingerprint} accepted (was {old}); connected and discovered",
              file=out)
    elif args.action == "set":
        power = {k: v for k, v in (("wol_mac", args.wol), ("wol_broadcast", args.wol_broadcast),
                                   ("wol_port", args.wol_port), ("ipmi_address", args.ipmi),
                                   ("ipmi_user", args.ipmi_user)) if v is not None}
        if args.accel is None and not power and not args.no_wake:
            raise CliError("host set: nothing to change (--accel, --wol, --ipmi, ... or --no-wake)")
        if args.no_wake and power:
            raise CliError("host set: --no-wake forgets how to wake the host: give it alone")
        if args.accel is not None:
            host = await c.set_host_accel(args.name, args.accel)
            print(f"host {host.name}: accelerator {_accel_text(c, host)}", file=out)
        if power or args.no_wake:
            current = c.resolve(Host, args.name)
            merged = {} if args.no_wake else {**current.power.model_dump(), **power}
            host = await c.update_host(current.id, power=merged)
            print(f"host {host.name}: wake {_wake_text(host)}", file=out)
    elif args.action == "fence":
        dyn = await c.fence_host(args.name, confirm_off=args.confirm_off)
        fence = dyn.fence
        print(f"host {c.resolve(Host, args.name).name} fenced: {fence.describe() if fence else '-'}; "
              "its VMs with ha restart elsewhere (kerub-tui plan list)", file=out)
    elif args.action == "evacuate":
        host = await c.evacuate_host(args.name)
        print(f"host {host.name} is in maintenance: the planner will propose moving its VMs and disks away",
              file=out)
    return EXIT_OK


def _host_status(c: ConsoleAPI, dyn: HostDynamic | None) -> str:
    """A host's status; when no controller monitors the hosts, as last seen, and when."""
    if dyn is None:
        return "-"
    if c.live:
        return dyn.status.value
    if dyn.last_seen is None:
        return f"{dyn.status.value} (never seen)"
    seconds = max(0, int((utcnow() - dyn.last_seen).total_seconds()))
    age = next((f"{seconds // size}{unit}" for unit, size in (("d", 86400), ("h", 3600), ("m", 60))
                if seconds >= size), f"{seconds}s")
    return f"{dyn.status.value} (seen {age} ago)"


def allocation_note(alloc: Any, now: dt.datetime) -> str:
    """What keeps an allocation current: a mirror's copies are kept in sync by LVM; a copy taken for
    redundancy is a point in time, so its age is said (issue 18 item 6)."""
    mirrors = getattr(alloc, "mirrors", 0)
    if mirrors:
        return f" ({mirrors + 1} copies in its VG, kept in sync by LVM)"
    if alloc.copied_at is not None:
        seconds = max(0, int((now - alloc.copied_at).total_seconds()))
        age = next((f"{seconds // size}{unit}" for unit, size in (("d", 86400), ("h", 3600), ("m", 60))
                    if seconds >= size), f"{seconds}s")
        return f" (a copy taken {age} ago, {alloc.copied_at:%Y-%m-%d %H:%M} UTC: not kept in sync)"
    return ""


def _wake_text(host: Host) -> str:
    """How a powered-down host is woken (by a running neighbour, or by the controller itself when none
    is up), or that it cannot be: power saving never powers such a host down."""
    p = host.power
    ways = []
    if p.wol_mac:
        ways.append(f"wake-on-LAN {p.wol_mac} (to {p.wol_broadcast or '255.255.255.255'} port {p.wol_port})")
    if p.ipmi_address:
        ways.append(f"IPMI {p.ipmi_user or 'root'}@{p.ipmi_address}")
    return ", ".join(ways) if ways else "none: it cannot be woken, so power saving never powers it down"


def _accel_text(c: ConsoleAPI, host: Host) -> str:
    accel = c.accelerator(host.id)
    return f"{accel.name} ({accel.why})" if accel is not None else "-"


class TerminalOut:
    """A text stream that shows control characters (from a host's output, a name, a message) as
    visible escapes: what the command line prints is data, never an escape sequence for the terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(printable(text, newlines=True))

    def flush(self) -> None:
        self.stream.flush()


def _show_host(c: ConsoleAPI, host: Host, dyn: HostDynamic | None) -> str:
    lines = [f"host {host.name}  ({host.id})", f"  address {host.user}@{host.address}:{host.port}",
             f"  key {host.fingerprint or '-'}"]
    if dyn is not None:
        lines.append(f"  status {_host_status(c, dyn)}" + (f" ({dyn.status_reason})" if dyn.status_reason else ""))
        if dyn.fence is not None and dyn.status is not HostStatus.up:
            lines.append(f"  fenced: {dyn.fence.describe()}")
        if dyn.cpu_idle is not None:
            lines.append(f"  cpu {100 - dyn.cpu_idle:.0f}% busy, memory free {format_size(dyn.memory_free)}"
                         + ("" if c.live else " (as last seen: no controller monitors the hosts now)"))
    caps = host.capabilities
    if caps is not None:
        lines.append(f"  {caps.os.pretty_name or caps.os.id} {caps.os.kernel}, hostname {caps.os.hostname}")
        lines.append(f"  cpu {caps.cpu.model} ({caps.cpu.architecture}), {caps.cpu.cpus} threads, "
                     f"memory {format_size(caps.memory_bytes)}")
        lines.append(f"  kvm {'yes' if caps.hypervisor.kvm else 'no'}, ksm {'yes' if caps.ksm else 'no'}")
        unusable = c.unusable_storage(host.id)
        for storage in caps.storage:
            lines.append(f"  storage {storage.id}: {format_size(storage.free_bytes)} free of "
                         f"{format_size(storage.size_bytes)}")
            if storage.id in unusable:
                lines.append(f"    unusable, takes no new disks: {unusable[storage.id]}")
            pvs = _pvs_text(c, host.id, storage, dyn)
            if pvs:
                lines.append(f"    PVs {pvs}")
        tools = sorted(t for t, present in caps.tools.items() if present)
        lines.append(f"  tools {' '.join(tools) or '-'}")
        for entry in caps.stale:  # not read by the latest discovery: the last good reading is shown
            kept = f"last good reading {entry.read_at:%Y-%m-%d %H:%M:%S}" if entry.read_at else "never read"
            lines.append(f"  stale {entry.section}: {kept}; not read since {entry.since:%Y-%m-%d %H:%M:%S}: "
                         f"{entry.reason}")
    lines.append(f"  accelerator {_accel_text(c, host)}")
    lines.append(f"  wake {_wake_text(host)}")
    for vm_id in sorted(c.vms_on_host(host.id)):
        vm = c.get(VirtualMachine, vm_id)
        lost = c.vm_state(vm_id).status == "lost"
        lines.append(f"  {'lost' if lost else 'runs'} {vm.name if vm else vm_id}")
    if host.recycling:
        lines.append("  in maintenance (evacuating)")
    return "\n".join(lines)


def _pvs_text(c: ConsoleAPI, host_id: str, storage: Any, dyn: HostDynamic | None) -> str:
    """An LVM capability's PVs (as monitoring last saw them, else as discovered), each with its free
    space; a PV on a disk whose SMART health failed says so."""
    seen = dyn.storage_pvs.get(storage.id) if dyn is not None else None
    failing = c.failing_pvs(host_id, storage.id)
    return ", ".join(f"{pv.name} {format_size(pv.free_bytes)} free of {format_size(pv.size_bytes)}"
                     + (" FAILING" if pv.name in failing else "") for pv in (seen if seen is not None else storage.pvs))


def _vm_count(c: ConsoleAPI, host_id: str) -> str:
    """VMs running on a host; a host that went down runs none: its VMs are counted as lost."""
    running, lost = c.host_vm_counts(host_id)
    return f"{running} ({lost} lost)" if lost else str(running)


async def cmd_vm(args: argparse.Namespace, c: ConsoleAPI, out: Output) -> int:
    if args.action == "create":
        minimum, maximum = args.memory
        if c.find_by_name(VirtualMachine, args.name) is not None:
            raise CliError(f"a VM named {args.name!r} already exists")
        vm = await c.create_vm(args.name, cpus=args.cpus, memory_min=minimum, memory_max=maximum,
                               disk_sizes=args.disk, expectations=args.expect, cdrom=args.cdrom, boot=args.boot,
                               from_image=args.from_image, cloud_init=_cloud_init(args), graphics=args.graphics)
        print(f"created VM {vm.name} ({vm.id})", file=out)
    elif args.action == "clone":
        vm = await c.clone_vm(args.source, args.name)
        print(f"created VM {vm.name} ({vm.id}) as a copy of {args.source}; "
              "a plan copies its disks when it is started", file=out)
    elif args.action == "eject":
        vm = await c.eject_vm(args.name)
        print(f"VM {vm.name}: CD-ROM ejected", file=out)
    elif args.action == "set":
        if args.graphics is None and args.ha is None:
            raise CliError("vm set: nothing to change (--graphics, --ha)")
        if args.ha is not None:
            vm = await c.set_vm_ha(args.name, args.ha == "on")
            print(f"VM {vm.name}: ha {args.ha}" + (" (restarted on another host after its host fails, once that "
                                                     "host is fenced)" if args.ha == "on" else ""), file=out)
        if args.graphics is not None:
            vm = await c.update_vm(args.name, graphics=args.graphics)
            dyn = c.get(VirtualMachineDynamic, vm.id)
            running = dyn is not None and dyn.status is not VmStatus.down
            print(f"VM {vm.name}: graphics {vm.graphics}" + (" from its next start" if running else ""), file=out)
    elif args.action == "screenshot":
        png = await c.screenshot(args.name)
        width, height = picture_size(png)
        _write_file(args.file, png)
        print(f"saved the screen of {args.name} ({width}x{height}) to {args.file}", file=out)
    elif args.action == "list":
        def vm_row(v: VirtualMachine) -> list[str]:
            state = c.vm_state(v.id)  # what is known: up, lost, awaits approval, can't place, ...
            host = c.get(Host, state.host_id) if state.host_id else None
            return [v.name, state.label, host.name if host else "-", str(v.cpus),
                    f"{format_size(v.memory_min)}:{format_size(v.memory_max)}",
                    " ".join(_spec(c, e) for e in v.expectations) or "-"]

        vms = sorted(c.documents(VirtualMachine), key=lambda v: v.name)
        if args.json:  # each VM with what the table shows of it: its status (and why) and its host's name
            print(json.dumps([dict(v.model_dump(mode="json"), status=state.status, status_reason=state.reason,
                                   host=None if row[2] == "-" else row[2])
                              for v in vms for row, state in [(vm_row(v), c.vm_state(v.id))]],
                             indent=2, sort_keys=True), file=out)
            return EXIT_OK
        _print_list(out, vms, False, ["NAME", "STATUS", "HOST", "CPUS", "MEMORY", "EXPECTATIONS"], vm_row)
    elif args.action == "show":
        vm = c.resolve(VirtualMachine, args.name)
        dyn = c.get(VirtualMachineDynamic, vm.id)
        if args.json:
            print(_dump_pair(("vm", vm), ("dynamic", dyn)), file=out)
            return EXIT_OK
        print(await _show_vm(c, vm, dyn), file=out)
    elif args.action in ("start", "stop"):
        rejected = c.vm_plans(c.resolve(VirtualMachine, args.name).id).rejected
        vm = await c.set_vm_availability(args.name, up=args.action == "start")
        state = "up" if args.action == "start" else "down"
        print(f"VM {vm.name}: expected {state}; the planner proposes the steps (kerub-tui plan list)", file=out)
        if rejected is not None:  # asking again is how a rejected plan comes back
            print(f"VM {vm.name}: asked again for plan {rejected.id[:8]}, rejected by "
                  f"{rejected.decided_by or 'the admin'}: the planner proposes it again", file=out)
    elif args.action in VM_ACTIONS:
        await _vm_actions(c, args, out)
    elif args.action == "send-keys":
        print(await c.send_keys(args.name, args.keys), file=out)
    elif args.action == "delete":
        said = await c.delete_vm(args.name, disks=args.disks)
        print(f"deleted VM {args.name}", file=out)
        for line in said:
            print(f"  {line}", file=out)
    return EXIT_OK


VM_ACTIONS = ("reboot", "reset", "poweroff", "pause", "resume")


async def _vm_actions(c: ConsoleAPI, args: argparse.Namespace, out: Output) -> None:
    """`vm reboot|reset|poweroff|pause|resume VM...`: each VM in turn, what was done printed; then, if any
    was refused, the command fails with one line naming each refusal (exit status non-zero)."""
    calls: dict[str, Callable[[str], Awaitable[str]]] = {
        "reboot": c.reboot_vm, "reset": c.reset_vm, "pause": c.pause_vm, "resume": c.resume_vm,
        "poweroff": lambda name: c.poweroff_vm(name, force=args.force),
    }
    refused: list[str] = []
    for name in args.names:
        try:
            print(await calls[args.action](name), file=out)
        except ActionError as error:
            if len(args.names) == 1 or isinstance(error, ReadOnlyMode):
                raise
            refused.append(str(error))
    if refused:
        raise CliError(f"{len(refused)} of {len(args.names)} refused: " + "; ".join(refused))


def picture_size(png: bytes) -> tuple[int, int]:
    from .core.picture import PictureError, from_png

    try:
        picture = from_png(png)
    except PictureError as error:
        raise CliError(f"the screenshot is not a PNG kerub-tui reads: {error}") from None
    return picture.width, picture.height


def _write_file(path: str, data: bytes) -> None:
    """``data`` at ``path``, whole or not at all (a temporary file beside it, then renamed)."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "xb") as stream:
            stream.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_text(path: str, what: str) -> str:
    from .core.localfile import read_local_text

    try:
        return read_local_text(path, what)
    except ValueError as error:
        raise CliError(str(error)) from None


def _cloud_init(args: argparse.Namespace) -> dict[str, Any] | None:
    if not (args.ssh_key or args.user_data or args.network_config):
        return None
    keys = []
    for path in args.ssh_key:
        lines = [line.strip() for line in _read_text(path, "ssh key file").splitlines()]
        found = [line for line in lines if line and not line.startswith("#")]
        if not found:
            raise CliError(f"ssh key file {path} holds no key")
        keys += found
    return {"ssh_keys": keys,
            "user_data": _read_text(args.user_data, "user data file") if args.user_data else None,
            "network_config": _read_text(args.network_config, "network config file") if args.network_config else None}


_FILE_OPTIONS = ("--ssh-key", "--user-data", "--network-config")


def _absolute_files(argv: list[str]) -> list[str]:
    """The command line with the file arguments of ``vm create`` made absolute: a controller that serves
    it through the socket reads them, and its working directory is not the caller's."""
    out: list[str] = []
    expect_file = False
    for word in argv:
        if expect_file:
            out.append(os.path.abspath(word))
            expect_file = False
            continue
        option, eq, value = word.partition("=")
        if option in _FILE_OPTIONS and eq:
            out.append(f"{option}={os.path.abspath(value)}")
            continue
        expect_file = word in _FILE_OPTIONS
        out.append(word)
    return out


def _spec(c: ConsoleAPI, expectation: Expectation) -> str:
    """An expectation's SPEC with the VMs and disks it names by their names, as the console shows it."""
    def name_of(kind: str, doc_id: str) -> str:
        doc = c.get(DOCUMENT_TYPES[kind], doc_id)
        return str(getattr(doc, "name", None) or doc_id)

    return display_spec(expectation, name_of)


async def _show_vm(c: ConsoleAPI, vm: VirtualMachine, dyn: VirtualMachineDynamic | None) -> str:
    lines = [f"VM {vm.name}  ({vm.id})",
             f"  cpus {vm.cpus}, memory {format_size(vm.memory_min)}..{format_size(vm.memory_max)}, {vm.architecture}"]
    state = c.vm_state(vm.id)
    host = c.get(Host, state.host_id) if state.host_id else None
    lines.append(f"  status {state.label}" + (f" on {host.name}" if host else "")
                 + (f": {state.reason}" if state.reason else ""))
    lines.append(f"  boot {','.join(vm.boot)}, graphics {vm.graphics}")
    if vm.cloud_init is not None:
        lines.append(f"  cloud-init: {cloud_init_summary(vm.cloud_init)}")
    for link in vm.disks:
        disk = c.get(VirtualStorageDevice, link.disk_id)
        kind = "cdrom" if link.device == "cdrom" else "disk"
        lines.append(f"  {kind} {disk.name if disk else link.disk_id} ({link.bus}"
                     f"{', read-only' if link.read_only else ''})")
    for exp in vm.expectations:
        lines.append(f"  expects {_spec(c, exp)}")
    explanation = await c.explain(vm.id)
    if explanation:
        lines.append(explanation)
    return "\n".join(lines)


async def cmd_disk(args: argparse.Namespace, c: ConsoleAPI, out: Output) -> int:
    if args.action == "create":
        disk = await c.create_disk(args.name, size=args.size, read_only=args.read_only, expectations=args.expect)
        print(f"created disk {disk.name} ({disk.id})", file=out)
    elif args.action == "list":
        def disk_row(d: VirtualStorageDevice) -> list[str]:
            dyn = c.get(VirtualStorageDeviceDynamic, d.id)
            allocations = []
            for a in dyn.allocations if dyn else []:
                host = c.get(Host, a.host_id)
                allocations.append(f"{a.type}@{host.name if host else a.host_id[:8]}")
            return [d.name, format_size(d.size), ", ".join(allocations) or "-",
                    " ".join(_spec(c, e) for e in d.expectations) or "-"]

        _print_list(out, sorted(c.documents(VirtualStorageDevice), key=lambda d: d.name), args.json,
                    ["NAME", "SIZE", "ALLOCATIONS", "EXPECTATIONS"], disk_row)
    elif args.action == "show":
        disk = c.resolve(VirtualStorageDevice, args.name)
        dyn = c.get(VirtualStorageDeviceDynamic, disk.id)
        if args.json:
            print(_dump_pair(("disk", disk), ("dynamic", dyn)), file=out)
            return EXIT_OK
        lines = [f"disk {disk.name}  ({disk.id})", f"  size {format_size(disk.size)}"
                 + (", read-only" if disk.read_only else "")]
        for a in dyn.allocations if dyn else []:
            host = c.get(Host, a.host_id)
            lines.append(f"  allocation {a.type} on {host.name if host else a.host_id}: {a.path}"
                         + allocation_note(a, utcnow()))
        lines += [f"  expects {_spec(c, exp)}" for exp in disk.expectations]
        print("\n".join(lines), file=out)
    elif args.action == "delete":
        await c.delete_disk(args.name)
        print(f"deleted disk {args.name}", file=out)
    return EXIT_OK


async def cmd_plan(args: argparse.Namespace, c: ConsoleAPI, out: Output) -> int:
    if args.action == "list":
        _print_list(out, sorted(c.documents(Plan), key=lambda p: p.created_at), args.json,
                    ["ID", "STATUS", "KIND", "STEPS", "TRIGGER"],
                    lambda p: [p.id[:8], p.status.value, p.plan_kind, str(len(p.steps)), "; ".join(p.trigger)[:60]])
    elif args.action == "show":
        plan = c.plan(args.name)
        print(_json(plan) if args.json else _show_plan(c, plan), file=out)
    elif args.action == "ask-again":
        plan = await c.ask_again_plan(args.name)
        print(f"plan {plan.id[:8]}: asked again; the planner proposes it again if it is still the answer "
              "(kerub-tui plan list)", file=out)
    elif args.action in ("approve", "reject"):
        plan = await c.decide_plan(args.name, approve=args.action == "approve")
        print(f"plan {plan.id[:8]}: {plan.status.value}", file=out)
        if plan.status is PlanStatus.approved and not c.runs_plans:
            # No controller runs on this data dir: carry the plan out here, now.
            plan = await c.execute_now(plan.id)
            for record in plan.records:
                step = plan.steps[record.step_index]
                print(f"  {record.step_index + 1}. {step.description}: {record.outcome.value}"
                      + (f" ({record.error})" if record.error else ""), file=out)
            print(f"plan {plan.id[:8]}: {plan.status.value}"
                  + (f": {plan.status_reason}" if plan.status_reason else ""), file=out)
            if plan.status is not PlanStatus.done:
                return EXIT_ERROR
    return EXIT_OK


def _show_plan(c: ConsoleAPI, plan: Plan) -> str:
    lines = [f"plan {plan.id}  [{plan.status.value}]  kind {plan.plan_kind}"]
    lines += [f"  because: {t}" for t in plan.trigger]
    lines += [f"  needs your consent: {line}" for line in plan.consent]
    for index, step in enumerate(plan.steps, 1):
        host = c.get(Host, step.host_id) if step.host_id else None
        lines.append(f"  {index}. {step.description}" + (f"  on {host.name}" if host else ""))
        if step.effect:
            lines.append(f"     effect: {step.effect}")
        for command in step.commands:
            lines.append(f"     $ {command.command}")
    lines += [f"  not satisfied: {u}" for u in plan.unsatisfied]
    return "\n".join(lines)


def _image_row(c: ConsoleAPI, d: VirtualStorageDevice) -> list[str]:
    assert d.image is not None
    dyn = c.get(VirtualStorageDeviceDynamic, d.id)
    copies = []
    for a in dyn.allocations if dyn else []:
        host = c.get(Host, a.host_id)
        copies.append(host.name if host else a.host_id[:8])
    return [d.name, d.image.format, format_size(d.image.virtual_size), format_size(d.image.file_size),
            ", ".join(sorted(copies)) or "-", d.image.sha256[:12], str(len(c.image_users(d.id)))]


def _progress_printer(stream: TextIO) -> Callable[[str], None]:
    """Progress lines on ``stream``: rewritten in place on a terminal, one per line otherwise."""
    tty = stream.isatty()

    def show(line: str) -> None:
        """``line`` ending in a newline is the last one."""
        if tty:
            stream.write("\r" + line.rstrip("\n") + "\x1b[K" + ("\n" if line.endswith("\n") else ""))
        else:
            stream.write(line.rstrip("\n") + "\n")
        stream.flush()

    return show


async def cmd_image(args: argparse.Namespace, c: ConsoleAPI, out: Output) -> int:
    if args.action == "import":
        if (args.file is None) == (args.from_ is None):
            raise CliError("give a FILE to import, or --from HOST:PATH")
        expected = None
        if args.client_file_id:
            dev, _, ino = args.client_file_id.partition(":")
            if not (dev.isdigit() and ino.isdigit()):
                raise CliError("--client-file-id is DEV:INODE")
            expected = (int(dev), int(ino))
        peer = getattr(args, "peer_uid", None)
        if args.file is not None and peer is not None and peer != os.getuid():
            raise CliError(f"only the controller's own user (uid {os.getuid()}) can import a file from this "
                           "machine through its control socket")
        show = getattr(args, "progress", None) or _progress_printer(sys.stderr)
        last = [0.0]
        label = args.name or "image"

        def progress(p: Any) -> None:
            now = time.monotonic()
            if p.phase == "sending" and 0 < p.done < p.total and now - last[0] < 1.0:
                return
            last[0] = now
            show(f"{label}: {p.describe()}" + ("\n" if p.phase == "done" else ""))

        from_host = from_path = None
        if args.from_ is not None:
            from_host, sep, from_path = args.from_.partition(":")
            if not sep or not from_host or not from_path:
                raise CliError(f"--from {args.from_!r}: give HOST:PATH, e.g. kvm1:/srv/iso/debian.iso")
        image = await c.import_image(args.client_file or args.file, name=args.name, host=args.host,
                                     from_host=from_host, from_path=from_path, expected_file=expected,
                                     progress=progress)
        assert image.image is not None
        print(f"imported image {image.name} ({image.image.format}, {format_size(image.image.file_size)}, "
              f"sha256 {image.image.sha256})", file=out)
    elif args.action == "list":
        _print_list(out, c.images(), args.json, ["NAME", "FORMAT", "VIRTUAL", "FILE", "COPIES", "SHA256", "VMS"],
                    lambda d: _image_row(c, d))
    elif args.action == "show":
        image = c.image(args.name)
        dyn = c.get(VirtualStorageDeviceDynamic, image.id)
        if args.json:
            print(_dump_pair(("image", image), ("dynamic", dyn)), file=out)
            return EXIT_OK
        info = image.image
        assert info is not None
        lines = [f"image {image.name}  ({image.id})",
                 f"  {info.format}, virtual size {format_size(info.virtual_size)}, file {format_size(info.file_size)}",
                 f"  sha256 {info.sha256}", f"  imported {info.imported_at:%Y-%m-%d %H:%M} from {info.source}"]
        for a in dyn.allocations if dyn else []:
            host = c.get(Host, a.host_id)
            lines.append(f"  copy on {host.name if host else a.host_id}: {a.path}")
        users = c.image_users(image.id)
        lines.append(f"  used by {', '.join(users)}" if users else "  used by no VM")
        print("\n".join(lines), file=out)
    elif args.action == "delete":
        await c.delete_image(args.name)
        print(f"deleted image {args.name}", file=out)
    return EXIT_OK


def _image_client_argv(args: argparse.Namespace, argv: list[str]) -> list[str]:
    """`image import FILE` served by a running controller: the controller (same machine, same user)
    reads the file, so it is given the file's absolute path and identity (device, inode), checked
    here by opening it; the controller refuses a different file at that path."""
    if args.command != "image" or args.action != "import" or args.file is None:
        return argv
    path = os.path.abspath(args.file)
    try:
        with open(path, "rb") as stream:
            info = os.fstat(stream.fileno())
    except OSError as error:
        shown = "".join(ch if ch.isprintable() else "?" for ch in args.file)
        raise CliError(f"cannot read {shown}: {error.strerror or error}") from None
    extra = ["--client-file", path, "--client-file-id", f"{info.st_dev}:{info.st_ino}"]
    for index in range(len(argv) - 1):
        if argv[index] == "image" and argv[index + 1] == "import":
            return argv[: index + 2] + extra + argv[index + 2:]
    return argv + extra


async def cmd_console(args: argparse.Namespace, c: ConsoleAPI, out: Output) -> int:
    if args.serial:  # main() attaches the caller's terminal; the controller has none to attach
        raise CliError("console --serial attaches the terminal of the command line: it cannot run inside "
                       "the controller")
    if args.force:
        raise CliError("--force goes with --serial (it takes a serial console over)")
    if args.print_vv:
        print(await c.console_file(args.name, local_port=args.local_port), file=out, end="")
        return EXIT_OK
    print(f"opening the console of {args.name}; close the viewer to end it", file=out)
    print(await c.open_console(args.name, viewer=args.viewer, env=getattr(args, "client_env", None), wait=True),
          file=out)
    return EXIT_OK


def _since(args: argparse.Namespace) -> dt.datetime | None:
    return utcnow() - dt.timedelta(seconds=args.since) if args.since else None


def _when(time: dt.datetime) -> str:
    return f"{time:%Y-%m-%d %H:%M:%S}"


def _host_name(c: ConsoleAPI, host_id: str | None) -> str:
    host = c.get(Host, host_id) if host_id else None
    return host.name if host is not None else (host_id or "-")


async def cmd_audit(args: argparse.Namespace, c: ConsoleAPI, out: Output) -> int:
    """`kerub-tui audit [--since AGE] [--json]`: what was done, oldest first (times in UTC)."""
    def row(a: AuditEntry) -> list[str]:
        detail = a.command or a.outcome or "-"
        if a.exit_code not in (None, 0):
            detail = f"{detail} (exit {a.exit_code}{': ' + a.output_tail.strip() if a.output_tail else ''})"
        return [_when(a.time), a.os_user or "-", a.action, a.target or "-", _host_name(c, a.host_id),
                " ".join(detail.split())[:200]]

    _print_list(out, c.audit_log(_since(args), **_log_filters(args, c)), args.json,
                ["TIME (UTC)", "USER", "ACTION", "TARGET", "HOST", "OUTCOME"], row)
    return EXIT_OK


async def cmd_events(args: argparse.Namespace, c: ConsoleAPI, out: Output) -> int:
    """`kerub-tui events [--since AGE] [--json]`: what happened, oldest first (times in UTC)."""
    def row(e: Event) -> list[str]:
        about = "-"
        if e.target:
            doc = c.get(VirtualMachine, e.target) or c.get(VirtualStorageDevice, e.target) or c.get(Host, e.target)
            about = doc.name if doc is not None else e.target
        return [_when(e.time), e.severity.value, e.type, _host_name(c, e.host_id), about,
                " ".join(e.message.split())[:200]]

    _print_list(out, c.event_log(_since(args), **_log_filters(args, c)), args.json,
                ["TIME (UTC)", "SEVERITY", "TYPE", "HOST", "ABOUT", "MESSAGE"], row)
    return EXIT_OK


def _log_filters(args: argparse.Namespace, c: ConsoleAPI) -> dict[str, Any]:
    """`--host`, `--vm`, `--last` of `audit` and `events`: the history's own indexes."""
    return {"host_id": c.resolve(Host, args.host).id if args.host else None,
            "subject": c.resolve(VirtualMachine, args.vm).id if args.vm else None,
            "limit": args.last}


async def cmd_metrics(args: argparse.Namespace, c: ConsoleAPI, out: Output) -> int:
    """`kerub-tui metrics HOST|VM [--range 1d] [--json]`: CPU and memory over time, oldest first (UTC)."""
    host = None if args.vm else c.get(Host, args.name) or c.find_by_name(Host, args.name)
    vm = None if args.host else c.get(VirtualMachine, args.name) or c.find_by_name(VirtualMachine, args.name)
    if host is not None and vm is not None:
        raise ActionError(f"both a host and a VM are named {args.name!r}: say --host or --vm")
    if host is None and vm is None:
        what = "host" if args.host else "VM" if args.vm else "host or VM"
        raise ActionError(f"no {what} named {args.name!r}")
    if host is not None:
        name, series = host.name, c.metrics("host", host.id, args.range)
    else:
        assert vm is not None
        name, series = vm.name, c.metrics("vm", vm.id, args.range)
    if args.json:
        print(json.dumps({**series.to_json(), "name": name}, indent=2), file=out)
        return EXIT_OK

    def figure(value: float | None, memory: bool) -> str:
        if value is None:
            return "-"
        return format_size(int(value)) if memory else f"{value:.1f}"

    rows = [[_when(p.time)[:16], figure(p.cpu, False), figure(p.cpu_max, False), figure(p.memory, True),
             figure(p.memory_max, True)] for p in series.points]
    print(_table(rows, ["TIME (UTC)", "CPU %", "CPU MAX %", "MEMORY", "MEMORY MAX"]), file=out)
    return EXIT_OK


async def cmd_history(args: argparse.Namespace, c: ConsoleAPI, out: Output) -> int:
    """`kerub-tui history show|set`: how long the audit and the events are kept."""
    if args.action == "set":
        retention = (await c.set_retention(audit_days=args.audit_days, event_days=args.event_days)).history
        print(f"history kept: audit {retention.audit_days} days, events {retention.event_days} days", file=out)
        return EXIT_OK
    retention = c.settings().history
    counts = c.history_counts()
    if args.json:
        print(json.dumps({**retention.model_dump(mode="json"), "audit_entries": counts["audit"],
                          "events": counts["event"]}, indent=2, sort_keys=True), file=out)
    else:
        print(f"audit   kept {retention.audit_days} days, {counts['audit']} entries\n"
              f"events  kept {retention.event_days} days, {counts['event']} entries", file=out)
    return EXIT_OK


async def cmd_ha(args: argparse.Namespace, c: ConsoleAPI, out: Output) -> int:
    if args.action == "set":
        stale = None if args.stale_copies is None else args.stale_copies == "allow"
        policy = (await c.set_ha_policy(copy_max_age_minutes=args.copy_max_age,
                                        restart_from_stale_copies=stale)).ha
        print(f"ha policy: {_ha_policy_text(policy)}", file=out)
        return EXIT_OK
    policy = c.settings().ha
    lost = []
    for host in sorted(c.documents(Host), key=lambda h: h.name):
        dyn = c.get(HostDynamic, host.id)
        if dyn is None or dyn.status not in (HostStatus.down, HostStatus.unreachable):
            continue
        vms = sorted((c.get(VirtualMachine, v) for v in c.vms_on_host(host.id)), key=lambda v: v.name if v else "")
        lost.append({"host": host.name, "status": dyn.status.value,
                     "fenced": dyn.fence.describe() if dyn.fence is not None else None,
                     "vms": [{"name": v.name, "ha": any(e.type == "ha" for e in v.expectations),
                              "state": state.label, "why": state.reason}
                             for v in vms if v is not None for state in [c.vm_state(v.id)]]})
    if args.json:
        print(json.dumps({"policy": policy.model_dump(mode="json"), "hosts_away": lost}, indent=2, sort_keys=True),
              file=out)
        return EXIT_OK
    print(f"policy: {_ha_policy_text(policy)}", file=out)
    ha_vms = sorted(v.name for v in c.documents(VirtualMachine) if any(e.type == "ha" for e in v.expectations))
    print(f"VMs with ha: {', '.join(ha_vms) or 'none'}", file=out)
    for entry in lost:
        print(f"host {entry['host']} is {entry['status']}: "
              + (f"fenced, {entry['fenced']}" if entry["fenced"] else
                 f"not fenced (kerub-tui host fence {entry['host']} [--confirm-off])"), file=out)
        for vm in entry["vms"]:
            print(f"  {vm['name']}{' (ha)' if vm['ha'] else ''}: {vm['state']}"
                  + (f" ({vm['why']})" if vm["why"] else ""), file=out)
    return EXIT_OK


def _ha_policy_text(policy: Any) -> str:
    if policy.restart_from_stale_copies:
        return "a restart from a copy taken for redundancy never asks, whatever the copy's age"
    if policy.copy_max_age_minutes:
        return (f"a restart from a copy taken for redundancy asks first when the copy is "
                f"{policy.copy_max_age_minutes} min old or older")
    return "a restart from a copy taken for redundancy always asks first"


Command = Callable[[argparse.Namespace, ConsoleAPI, Output], Awaitable[int]]
COMMANDS: dict[str, Command] = {
    "export": cmd_export,
    "import": cmd_import,
    "host": cmd_host,
    "vm": cmd_vm,
    "disk": cmd_disk,
    "plan": cmd_plan,
    "console": cmd_console,
    "image": cmd_image,
    "audit": cmd_audit,
    "events": cmd_events,
    "history": cmd_history,
    "metrics": cmd_metrics,
    "ha": cmd_ha,
}



async def run_in_controller(argv: list[str], controller: ConsoleAPI, env: dict[str, str] | None = None,
                            cwd: str | None = None, *,
                            progress: Callable[[str], None] | None = None,
                            peer_uid: int | None = None) -> tuple[int, str, str]:
    """Run one command line against a live controller (the control socket's ``cli`` method);
    ``env`` is the caller's display environment, for a console viewer; ``cwd`` the caller's
    directory, where its relative file names are. ``progress`` sends the caller a progress line
    while the command runs; ``peer_uid`` is the caller's user (-1: unknown)."""
    out, err = io.StringIO(), io.StringIO()
    cwd_token = _CLIENT_CWD.set(cwd or _NO_CWD)
    try:
        args = build_parser().parse_args(argv)
        args.client_env = env or {}
        args.secret = None  # a password never travels through the socket (control.NO_SECRETS)
        args.progress = progress
        args.peer_uid = peer_uid
        if args.command not in COMMANDS:
            raise CliError(f"{args.command or 'the console'} cannot run through the control socket")
        if args.command == "import":
            raise CliError("import needs the controller stopped: stop the kerub-tui running on this data dir first")
        code = await COMMANDS[args.command](args, controller, out)
    except (CliError, ActionError, StoreError, InvalidName, OSError) as error:
        print(f"kerub-tui: {_one_line(error)}", file=err)
        code = EXIT_ERROR
    except _Exit as done:
        code = done.status
    except Exception as error:  # a bug: one line for the client; the controller keeps serving
        log.error("%s failed in the controller: %s: %s", " ".join(argv[:2]), type(error).__name__, _one_line(error))
        log.debug("details", exc_info=True)
        print(f"kerub-tui: internal error in the controller: {type(error).__name__}: {_one_line(error)}", file=err)
        code = EXIT_ERROR
    finally:
        _CLIENT_CWD.reset(cwd_token)
    return code, out.getvalue(), err.getvalue()


def run_check(args: argparse.Namespace) -> int:
    """`kerub-tui check [--repair]`: on the store file itself, never through a controller."""
    from .core import backup

    data_dir = paths.data_dir(args.data_dir)
    if args.repair and args.readonly:  # not an API action: see kerub_tui.api.ACTIONS
        raise CliError("check --repair changes the store: run it without --readonly")
    result = backup.repair(data_dir) if args.repair else backup.check(data_dir)
    print("\n".join(result.lines), file=sys.stdout if result.sound else sys.stderr)
    return EXIT_OK if result.sound else EXIT_ERROR


def new_controller(data_dir: Path | str | None, *, readonly: bool = False, serve: bool = False,
                   sim_timing: Timing | None = None, sim_seed: int = 0, one_shot: bool = False) -> Controller:
    """The one place the command line makes the controller that owns a data dir's store (a one-shot
    command, serve, the console, the demo); ``serve``: with the control socket, which runs the command
    line (run_in_controller) for other processes. Everything else in this module asks the console API."""
    from .controller import Controller

    return Controller(data_dir, readonly=readonly, serve=serve_socket if serve else None, sim_timing=sim_timing,
                      sim_seed=sim_seed, one_shot=one_shot)


def _warn_damaged(controller: Controller) -> None:
    """--readonly on a damaged store shows what reads; one line says so."""
    damage = controller.store_damage() if controller.store is not None else []
    if damage:
        print(f"kerub-tui: warning: the store in {controller.data_dir} is damaged ({'; '.join(damage)}); "
              f"showing what can be read; run `kerub-tui --data-dir {controller.data_dir} check --repair`",
              file=sys.stderr)


async def _run_local(args: argparse.Namespace, command: Command) -> int:
    controller = new_controller(args.data_dir, readonly=args.readonly, one_shot=True)
    await controller.start(connect_hosts=False)
    _warn_damaged(controller)
    try:
        changes = controller.subscribe()  # what the command changed, through the API as any consumer
        out = TerminalOut(sys.stdout)
        try:
            code = await command(args, controller, out)
            await asyncio.sleep(0)  # a change committed off the loop is queued by then
            changed = changes.drain_nowait()
        finally:
            changes.close()
        # A rejected plan asked for again calls for a pass too.
        kinds = {"asked-again" if isinstance(c.new, Plan) and c.new.asked_again_by
                 and not getattr(c.old, "asked_again_by", None) else c.kind for c in changed}
        if code == EXIT_OK and not controller.readonly and kinds - {"audit", "event", "plan"}:
            # No controller runs here to re-plan on this change: do its one pass now.
            for plan in controller.replan_once():
                print(f"proposal {plan.id[:8]} ({plan.plan_kind}, {len(plan.steps)} steps): "
                      f"{'; '.join(plan.trigger)[:100]} -- kerub-tui plan show {plan.id[:8]}", file=out)
        return code
    finally:
        await controller.stop()


async def serial_console(args: argparse.Namespace, data_dir: Path) -> int:
    """`console VM --serial`: this terminal on the VM's serial console until ctrl+]. Through the running
    controller's relay when there is one (it owns the host's connection), else over a connection of
    this process's own. The terminal is restored however it ends (core.terminal.attach)."""
    from .control import open_serial_remote
    from .core.terminal import ESCAPE_NAME, ByteStream, attach

    if args.print_vv or args.viewer or args.local_port:
        raise CliError("--serial shows the console in this terminal: --viewer, --print-vv and --local-port "
                       "are for the graphical console")
    controller: Controller | None = None
    stream: ByteStream
    try:
        if controller_running(data_dir):
            stream = await open_serial_remote(data_dir, args.name, view_only=args.readonly, force=args.force)
        else:
            controller = new_controller(data_dir, readonly=args.readonly)
            await controller.start(connect_hosts=False)
            stream = await controller.open_serial(args.name, view_only=args.readonly, force=args.force)
        view_only = bool(getattr(stream, "view_only", args.readonly))
        banner = (f"kerub-tui: {printable(stream.description)}; {ESCAPE_NAME} leaves"
                  + ("; view-only (read-only mode): what you type is not sent" if view_only else ""))
        reason = await attach(stream, view_only=view_only, banner=banner)
    finally:
        if controller is not None:
            await controller.stop()
    print(f"kerub-tui: {printable(reason)}", file=sys.stderr)
    left = reason.startswith("left with") or reason == "the terminal's input ended"
    return EXIT_OK if left else EXIT_ERROR


def serve_socket(controller: Controller) -> ControlServer:
    return ControlServer(controller, run_in_controller)


async def serve(args: argparse.Namespace) -> int:
    """The controller without a console: hosts, monitors, planner, the control socket; until a signal."""
    controller = new_controller(args.data_dir, readonly=args.readonly, serve=True)
    controller.open_store()
    # Subscribed before anything starts: the first connection states are printed too.
    subscription = controller.subscribe() if args.json_events else None
    await controller.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    printer: asyncio.Task[None] | None = None
    try:
        if subscription is not None:
            printer = asyncio.create_task(_print_changes(subscription), name="json-events")
        print(f"kerub-tui: serving {controller.data_dir} (pid {os.getpid()})", file=sys.stderr)
        await stop.wait()
    finally:
        if printer is not None:
            printer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await printer
        await controller.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return EXIT_OK


async def _print_changes(subscription: Any) -> None:
    async for change in subscription:
        line = {"kind": change.kind, "id": change.id,
                "op": "delete" if change.new is None else ("create" if change.old is None else "update"),
                "new": change.new.model_dump(mode="json") if change.new is not None else None}
        sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
        sys.stdout.flush()


def run_console(args: argparse.Namespace) -> int:
    from .app import KerubApp

    data_dir = paths.data_dir(args.data_dir)
    if controller_running(data_dir):
        from .control import RemoteController

        KerubApp(RemoteController(data_dir, readonly=args.readonly)).run()
        return EXIT_OK
    controller = new_controller(data_dir, readonly=args.readonly, serve=not args.readonly)
    controller.open_store()
    KerubApp(controller).run()
    return EXIT_OK


DEMO_TIMING = {"scale": 1.0, "failure_rate": 0.02}  # real durations; now and then a command fails, as on hosts


async def prepare_demo(data_dir: Path, out: TextIO) -> None:
    """Seed the demo's data dir when it is new (at once: the simulator runs at timing scale 0 here)."""
    from .sim import Timing
    from .sim.demo import HOSTS, LEGACY_HOSTS, LEGACY_VMS, SIM_SEED, VMS, DemoError, check_data_dir, seed, seeded

    controller = new_controller(data_dir, sim_timing=Timing(scale=0.0, connect=0.0, boot=0.0), sim_seed=SIM_SEED)
    controller.open_store()
    try:
        check_data_dir(controller)
        if seeded(controller):
            return
        print(f"kerub-tui: setting up the demo in {data_dir}: {len(LEGACY_HOSTS) + len(HOSTS)} simulated hosts, "
              f"{len(LEGACY_VMS) + len(VMS)} VMs (a few seconds)", file=out)
        await controller.start()
        await seed(controller)
    except DemoError as error:
        raise CliError(str(error)) from None
    except TimeoutError:
        raise CliError(f"the demo could not be set up in {data_dir}: the simulated fleet did not settle; "
                       "run kerub-tui --demo again to continue it") from None
    finally:
        await controller.stop()


def run_demo(args: argparse.Namespace) -> int:
    """The console on the demo's simulated fleet, with the tour (see kerub_tui.sim.demo)."""
    from .app import KerubApp
    from .sim import Timing
    from .sim.demo import SIM_SEED, Tour

    if args.readonly:
        raise CliError("--demo runs a simulated fleet that changes while you watch, so it cannot be read-only; "
                       "to look at the demo's documents without running it: kerub-tui --readonly --data-dir "
                       f"{paths.demo_data_dir(args.data_dir)}")
    if args.command is not None:
        raise CliError(f"--demo opens the console; run {args.command} without it "
                       f"(with --data-dir {paths.demo_data_dir(args.data_dir)} to act on the demo)")
    data_dir = paths.demo_data_dir(args.data_dir)
    if controller_running(data_dir):  # the demo already runs there: another console on the same fleet
        from .control import RemoteController

        KerubApp(RemoteController(data_dir), demo=True).run()
        return EXIT_OK
    asyncio.run(prepare_demo(data_dir, sys.stderr))
    controller = new_controller(data_dir, serve=True, sim_timing=Timing(**DEMO_TIMING), sim_seed=SIM_SEED)
    controller.open_store()
    KerubApp(controller, demo=True, tour=Tour(controller)).run()
    return EXIT_OK


def _ask_password(args: argparse.Namespace) -> str | None:
    """`host add --install-key --accept-fingerprint ...`: the login password, from the terminal only."""
    if args.command != "host" or args.action != "add" or not args.install_key or not args.accept_fingerprint:
        return None
    if not sys.stdin.isatty():
        raise CliError("--install-key asks for the password on a terminal; there is none here")
    import getpass

    return getpass.getpass(f"password of {args.user}@{args.address[0]} (used once, never stored): ")


async def _install_key_here(data_dir: Path, args: argparse.Namespace, password: str) -> None:
    """`host add --install-key` while a controller runs on the data dir: the password stays in this
    process, which logs in with it over its own SSH connection (the host key checked against the
    accepted fingerprint first) and installs the controller's public key, as the controller would."""
    from .hosts.fleet import Fleet, FleetError
    from .ssh import SshError

    if (why := refusal(args.readonly, "add_host")) is not None:  # the first half of add_host, done here
        raise CliError(f"{why}; --install-key changes the host")
    address, port = args.address  # parsed by _address
    snapshot = Store.open(data_dir, readonly=True)  # the controller holds the lock; Fleet wants a store
    try:
        await Fleet(snapshot, data_dir).install_key(address, port or 22, args.user, password, args.accept_fingerprint)
    except (FleetError, SshError, InvalidName, OSError) as error:
        raise CliError(str(error)) from None
    finally:
        snapshot.close()
    print(f"installed kerub-tui's key for {args.user}@{address}", file=sys.stderr)


def _without_install_key(argv: list[str]) -> list[str]:
    """argv without --install-key (or an abbreviation argparse takes for it), once the key is installed."""
    return [word for word in argv if not (len(word) > 4 and "--install-key".startswith(word))]


def _log_to_file(args: argparse.Namespace) -> None:
    """The process's log file, in the data dir it works on (core.logs). The console and the demo own
    the terminal through Textual: their warnings go to the file only; the command line and serve
    also keep showing them on stderr."""
    console = args.demo or args.command is None
    data_dir = paths.demo_data_dir(args.data_dir) if args.demo else paths.data_dir(args.data_dir)
    logs.configure(data_dir, stderr=not console)
    if console or args.command == "serve":  # the long-running processes say when they started
        what = "the demo" if args.demo else "the console" if console else "serve"
        log.info("kerub-tui %s: %s starts on %s (pid %d)%s", __version__, what, data_dir, os.getpid(),
                 ", read-only" if args.readonly else "")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        _log_to_file(args)
        if args.demo:
            return run_demo(args)
        if args.command is None:
            return run_console(args)
        if args.command == "serve":
            return asyncio.run(serve(args))
        if args.command == "check":
            return run_check(args)
        data_dir = paths.data_dir(args.data_dir)
        if args.command == "console" and args.serial:
            return asyncio.run(serial_console(args, data_dir))
        secret = _ask_password(args)
        if controller_running(data_dir):
            if args.command == "import":
                pid = Store.holder_pid(data_dir)
                raise CliError(f"import needs the controller stopped: stop the kerub-tui running on {data_dir}"
                               + (f" (pid {pid})" if pid else "") + " first")
            if secret is not None:
                # The password never goes through the socket: this process logs in with it and installs
                # the controller's key, then the controller adds the host with that key.
                asyncio.run(_install_key_here(data_dir, args, secret))
                argv = _without_install_key(argv)
            argv = _image_client_argv(args, _absolute_files(argv))
            code, out, err = run_cli_remote(data_dir, argv, readonly=args.readonly,
                                            progress=lambda line: _progress_printer(sys.stderr)(
                                                printable(line, newlines=True)))
            sys.stdout.write(printable(out, newlines=True))
            sys.stderr.write(printable(err, newlines=True))
            return code
        args.secret = secret
        return asyncio.run(_run_local(args, COMMANDS[args.command]))
    except _Exit as done:
        return done.status
    except (CliError, ActionError, StoreError, InvalidName, OSError) as error:
        print(printable(f"kerub-tui: {_one_line(error)}"), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("kerub-tui: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug; KERUB_TUI_DEBUG=1 shows where
        if os.environ.get("KERUB_TUI_DEBUG"):
            raise
        print(f"kerub-tui: internal error: {type(error).__name__}: {_one_line(error)} "
              "(a bug: KERUB_TUI_DEBUG=1 shows where)", file=sys.stderr)
        return EXIT_ERROR
