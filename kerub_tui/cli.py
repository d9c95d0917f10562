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
import io
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

from . import __version__
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
from .controller import ActionError, Controller
from .core import logs, paths
from .core.expectations import Expectation, display_spec
from .core.models import (
    DOCUMENT_TYPES,
    Document,
    Host,
    HostDynamic,
    Plan,
    PlanStatus,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
)
from .core.names import InvalidName
from .core.sizes import format_size
from .core.store import Store, StoreError
from .core.text import printable

log = logging.getLogger(__name__)

# --- output -------------------------------------------------------------------------------------


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])


_D = TypeVar("_D", bound=Document)


def _print_list(out: TextIO, docs: Sequence[_D], as_json: bool, header: list[str],
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


async def cmd_export(args: argparse.Namespace, c: Controller, out: TextIO) -> int:
    count = await c.export_documents(args.file)
    print(f"exported {count} documents to {args.file}", file=out)
    return EXIT_OK


async def cmd_import(args: argparse.Namespace, c: Controller, out: TextIO) -> int:
    count = await c.import_documents(args.file, replace=args.replace)
    print(f"imported {count} documents from {args.file}", file=out)
    return EXIT_OK


async def cmd_host(args: argparse.Namespace, c: Controller, out: TextIO) -> int:
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
            return [h.name, f"{h.address}:{h.port}", dyn.status.value if dyn else "-",
                    str(len(c.vms_on_host(h.id))), "yes" if h.recycling else "-", "yes" if h.simulated else "-"]

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
        host = await c.set_host_accel(args.name, args.accel)
        print(f"host {host.name}: accelerator {_accel_text(host)}", file=out)
    elif args.action == "evacuate":
        host = await c.evacuate_host(args.name)
        print(f"host {host.name} is in maintenance: the planner will propose moving its VMs and disks away",
              file=out)
    return EXIT_OK


def _accel_text(host: Host) -> str:
    from .hosts.kvm import host_accelerator

    accel = host_accelerator(host)
    return f"{accel.name} ({accel.why})"


class TerminalOut:
    """A text stream that shows control characters (from a host's output, a name, a message) as
    visible escapes: what the command line prints is data, never an escape sequence for the terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(printable(text, newlines=True))

    def flush(self) -> None:
        self.stream.flush()


def _show_host(c: Controller, host: Host, dyn: HostDynamic | None) -> str:
    lines = [f"host {host.name}  ({host.id})", f"  address {host.user}@{host.address}:{host.port}",
             f"  key {host.fingerprint or '-'}"]
    if dyn is not None:
        lines.append(f"  status {dyn.status.value}" + (f" ({dyn.status_reason})" if dyn.status_reason else ""))
        if dyn.cpu_idle is not None:
            lines.append(f"  cpu {100 - dyn.cpu_idle:.0f}% busy, memory free {format_size(dyn.memory_free)}")
    caps = host.capabilities
    if caps is not None:
        lines.append(f"  {caps.os.pretty_name or caps.os.id} {caps.os.kernel}, hostname {caps.os.hostname}")
        lines.append(f"  cpu {caps.cpu.model} ({caps.cpu.architecture}), {caps.cpu.cpus} threads, "
                     f"memory {format_size(caps.memory_bytes)}")
        lines.append(f"  kvm {'yes' if caps.hypervisor.kvm else 'no'}, ksm {'yes' if caps.ksm else 'no'}")
        for storage in caps.storage:
            lines.append(f"  storage {storage.id}: {format_size(storage.free_bytes)} free of "
                         f"{format_size(storage.size_bytes)}")
        tools = sorted(t for t, present in caps.tools.items() if present)
        lines.append(f"  tools {' '.join(tools) or '-'}")
        for entry in caps.stale:  # not read by the latest discovery: the last good reading is shown
            kept = f"last good reading {entry.read_at:%Y-%m-%d %H:%M:%S}" if entry.read_at else "never read"
            lines.append(f"  stale {entry.section}: {kept}; not read since {entry.since:%Y-%m-%d %H:%M:%S}: "
                         f"{entry.reason}")
    lines.append(f"  accelerator {_accel_text(host)}")
    for vm_id in sorted(c.vms_on_host(host.id)):
        vm = c.get(VirtualMachine, vm_id)
        lines.append(f"  runs {vm.name if vm else vm_id}")
    if host.recycling:
        lines.append("  in maintenance (evacuating)")
    return "\n".join(lines)


async def cmd_vm(args: argparse.Namespace, c: Controller, out: TextIO) -> int:
    if args.action == "create":
        minimum, maximum = args.memory
        if c.find_by_name(VirtualMachine, args.name) is not None:
            raise CliError(f"a VM named {args.name!r} already exists")
        vm = await c.create_vm(args.name, cpus=args.cpus, memory_min=minimum, memory_max=maximum,
                               disk_sizes=args.disk, expectations=args.expect, cdrom=args.cdrom, boot=args.boot,
                               from_image=args.from_image, cloud_init=_cloud_init(args))
        print(f"created VM {vm.name} ({vm.id})", file=out)
    elif args.action == "clone":
        vm = await c.clone_vm(args.source, args.name)
        print(f"created VM {vm.name} ({vm.id}) as a copy of {args.source}; "
              "a plan copies its disks when it is started", file=out)
    elif args.action == "eject":
        vm = await c.eject_vm(args.name)
        print(f"VM {vm.name}: CD-ROM ejected", file=out)
    elif args.action == "list":
        def vm_row(v: VirtualMachine) -> list[str]:
            dyn = c.get(VirtualMachineDynamic, v.id)
            host = c.get(Host, dyn.host_id) if dyn and dyn.host_id else None
            return [v.name, dyn.status.value if dyn else "down", host.name if host else "-", str(v.cpus),
                    f"{format_size(v.memory_min)}:{format_size(v.memory_max)}",
                    " ".join(_spec(c, e) for e in v.expectations) or "-"]

        vms = sorted(c.documents(VirtualMachine), key=lambda v: v.name)
        if args.json:  # each VM with what the table shows of it: its status and its host's name
            print(json.dumps([dict(v.model_dump(mode="json"), status=row[1], host=None if row[2] == "-" else row[2])
                              for v in vms for row in [vm_row(v)]], indent=2, sort_keys=True), file=out)
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
        vm = await c.set_vm_availability(args.name, up=args.action == "start")
        state = "up" if args.action == "start" else "down"
        print(f"VM {vm.name}: expected {state}; the planner proposes the steps (kerub-tui plan list)", file=out)
    elif args.action == "delete":
        said = await c.delete_vm(args.name, disks=args.disks)
        print(f"deleted VM {args.name}", file=out)
        for line in said:
            print(f"  {line}", file=out)
    return EXIT_OK


def _read_text(path: str, what: str) -> str:
    from .hosts.cloudinit import read_local_text

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


def _spec(c: Controller, expectation: Expectation) -> str:
    """An expectation's SPEC with the VMs and disks it names by their names, as the console shows it."""
    def name_of(kind: str, doc_id: str) -> str:
        doc = c.get(DOCUMENT_TYPES[kind], doc_id)
        return str(getattr(doc, "name", None) or doc_id)

    return display_spec(expectation, name_of)


async def _show_vm(c: Controller, vm: VirtualMachine, dyn: VirtualMachineDynamic | None) -> str:
    lines = [f"VM {vm.name}  ({vm.id})",
             f"  cpus {vm.cpus}, memory {format_size(vm.memory_min)}..{format_size(vm.memory_max)}, {vm.architecture}"]
    host = c.get(Host, dyn.host_id) if dyn is not None and dyn.host_id else None
    lines.append(f"  status {dyn.status.value if dyn else 'down'}" + (f" on {host.name}" if host else ""))
    lines.append(f"  boot {','.join(vm.boot)}")
    if vm.cloud_init is not None:
        from .controller import _cloud_init_summary

        lines.append(f"  cloud-init: {_cloud_init_summary(vm.cloud_init)}")
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


async def cmd_disk(args: argparse.Namespace, c: Controller, out: TextIO) -> int:
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
            lines.append(f"  allocation {a.type} on {host.name if host else a.host_id}: {a.path}")
        lines += [f"  expects {_spec(c, exp)}" for exp in disk.expectations]
        print("\n".join(lines), file=out)
    elif args.action == "delete":
        await c.delete_disk(args.name)
        print(f"deleted disk {args.name}", file=out)
    return EXIT_OK


async def cmd_plan(args: argparse.Namespace, c: Controller, out: TextIO) -> int:
    if args.action == "list":
        _print_list(out, sorted(c.documents(Plan), key=lambda p: p.created_at), args.json,
                    ["ID", "STATUS", "KIND", "STEPS", "TRIGGER"],
                    lambda p: [p.id[:8], p.status.value, p.plan_kind, str(len(p.steps)), "; ".join(p.trigger)[:60]])
    elif args.action == "show":
        plan = c.plan(args.name)
        print(_json(plan) if args.json else _show_plan(c, plan), file=out)
    elif args.action in ("approve", "reject"):
        plan = await c.decide_plan(args.name, approve=args.action == "approve")
        print(f"plan {plan.id[:8]}: {plan.status.value}", file=out)
        if plan.status is PlanStatus.approved and c.replanner is None:
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


def _show_plan(c: Controller, plan: Plan) -> str:
    lines = [f"plan {plan.id}  [{plan.status.value}]  kind {plan.plan_kind}"]
    lines += [f"  because: {t}" for t in plan.trigger]
    for index, step in enumerate(plan.steps, 1):
        host = c.get(Host, step.host_id) if step.host_id else None
        lines.append(f"  {index}. {step.description}" + (f"  on {host.name}" if host else ""))
        if step.effect:
            lines.append(f"     effect: {step.effect}")
        for command in step.commands:
            lines.append(f"     $ {command.command}")
    lines += [f"  not satisfied: {u}" for u in plan.unsatisfied]
    return "\n".join(lines)


def _image_row(c: Controller, d: VirtualStorageDevice) -> list[str]:
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


async def cmd_image(args: argparse.Namespace, c: Controller, out: TextIO) -> int:
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


async def cmd_console(args: argparse.Namespace, c: Controller, out: TextIO) -> int:
    if args.print_vv:
        print(await c.console_file(args.name, local_port=args.local_port), file=out, end="")
        return EXIT_OK
    print(f"opening the console of {args.name}; close the viewer to end it", file=out)
    print(await c.open_console(args.name, viewer=args.viewer, env=getattr(args, "client_env", None), wait=True),
          file=out)
    return EXIT_OK


Command = Callable[[argparse.Namespace, Controller, TextIO], Awaitable[int]]
COMMANDS: dict[str, Command] = {
    "export": cmd_export,
    "import": cmd_import,
    "host": cmd_host,
    "vm": cmd_vm,
    "disk": cmd_disk,
    "plan": cmd_plan,
    "console": cmd_console,
    "image": cmd_image,
}



async def run_in_controller(argv: list[str], controller: Controller, env: dict[str, str] | None = None,
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
    if args.repair and args.readonly:
        raise CliError("check --repair changes the store: run it without --readonly")
    result = backup.repair(data_dir) if args.repair else backup.check(data_dir)
    print("\n".join(result.lines), file=sys.stdout if result.sound else sys.stderr)
    return EXIT_OK if result.sound else EXIT_ERROR


def _warn_damaged(controller: Controller) -> None:
    """--readonly on a damaged store shows what reads; one line says so."""
    damage = controller.store_damage() if controller.store is not None else []
    if damage:
        print(f"kerub-tui: warning: the store in {controller.data_dir} is damaged ({'; '.join(damage)}); "
              f"showing what can be read; run `kerub-tui --data-dir {controller.data_dir} check --repair`",
              file=sys.stderr)


async def _run_local(args: argparse.Namespace, command: Command) -> int:
    controller = Controller(args.data_dir, readonly=args.readonly)
    await controller.start(connect_hosts=False)
    _warn_damaged(controller)
    try:
        changed: list[str] = []
        remove = controller.db.feed.add_listener(lambda change: changed.append(change.kind))
        code = await command(args, controller, TerminalOut(sys.stdout))  # type: ignore[arg-type]
        remove()
        if code == EXIT_OK and not controller.readonly and set(changed) - {"audit", "event", "plan"}:
            # No controller runs here to re-plan on this change: do its one pass now.
            _replan_once(controller, TerminalOut(sys.stdout))  # type: ignore[arg-type]
        return code
    finally:
        await controller.stop()


def _replan_once(controller: Controller, out: TextIO) -> None:
    from .planner.replanner import Replanner

    before = {p.id for p in controller.db.list(Plan) if p.status is PlanStatus.proposed}
    Replanner(controller.db).replan()
    for plan in sorted(controller.db.list(Plan), key=lambda p: p.created_at):
        if plan.status is PlanStatus.proposed and plan.id not in before:
            print(f"proposal {plan.id[:8]} ({plan.plan_kind}, {len(plan.steps)} steps): "
                  f"{'; '.join(plan.trigger)[:100]} -- kerub-tui plan show {plan.id[:8]}", file=out)


def serve_socket(controller: Controller) -> ControlServer:
    return ControlServer(controller, run_in_controller)


async def serve(args: argparse.Namespace) -> int:
    """The controller without a console: hosts, monitors, planner, the control socket; until a signal."""
    controller = Controller(args.data_dir, readonly=args.readonly, serve=serve_socket)
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
    controller = Controller(data_dir, readonly=args.readonly, serve=None if args.readonly else serve_socket)
    controller.open_store()
    KerubApp(controller).run()
    return EXIT_OK


DEMO_TIMING = {"scale": 1.0, "failure_rate": 0.02}  # real durations; now and then a command fails, as on hosts


async def prepare_demo(data_dir: Path, out: TextIO) -> None:
    """Seed the demo's data dir when it is new (at once: the simulator runs at timing scale 0 here)."""
    from .sim import Timing
    from .sim.demo import HOSTS, LEGACY_HOSTS, LEGACY_VMS, SIM_SEED, VMS, DemoError, check_data_dir, seed, seeded

    controller = Controller(data_dir, sim_timing=Timing(scale=0.0, connect=0.0, boot=0.0), sim_seed=SIM_SEED)
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
    controller = Controller(data_dir, serve=serve_socket, sim_timing=Timing(**DEMO_TIMING), sim_seed=SIM_SEED)
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

    if args.readonly:
        raise CliError("read-only mode: installing a key changes the host")
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
