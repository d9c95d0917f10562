"""The command line (design §8): the console by default, and the console's actions for scripts.

Exit status 0 on success; otherwise one clear line on stderr and a non-zero status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from . import __version__
from .controller import ActionError, Controller
from .core.models import Document, Plan, VirtualMachine, VirtualMachineDynamic, VirtualStorageDevice, VirtualStorageDeviceDynamic
from .core.names import InvalidName
from .core.sizes import format_size, parse_size
from .core.store import StoreError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """One line for stderr."""


def _memory(text: str) -> tuple[int, int]:
    low, _, high = text.partition(":")
    try:
        minimum = parse_size(low)
        maximum = parse_size(high) if high else minimum
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return minimum, maximum


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kerub-tui",
        description="Agentless, SLA-driven controller for KVM hosts: the console, or one of its actions.",
    )
    parser.add_argument("--data-dir", help="data dir (default: $KERUB_TUI_DATA or the user data dir)")
    parser.add_argument("--readonly", action="store_true", help="change nothing, on hosts or documents")
    parser.add_argument("--version", action="version", version=f"kerub-tui {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    export = sub.add_parser("export", help="write every document to a JSON file (backup)")
    export.add_argument("file")
    imp = sub.add_parser("import", help="load documents from an export (the controller must be stopped)")
    imp.add_argument("file")
    imp.add_argument("--replace", action="store_true", help="replace every document in a non-empty store")

    vm = sub.add_parser("vm", help="virtual machines").add_subparsers(dest="action", metavar="ACTION", required=True)
    create = vm.add_parser("create", help="create a VM (it runs once an availability expectation says so)")
    create.add_argument("name")
    create.add_argument("--cpus", type=int, default=1)
    create.add_argument("--memory", type=_memory, required=True, metavar="SIZE[:MAX]")
    create.add_argument("--disk", type=_size, action="append", default=[], metavar="SIZE",
                        help="a new disk of this size (repeatable)")
    create.add_argument("--expect", action="append", default=[], metavar="SPEC",
                        help="TYPE[:ARG[,ARG...]][@LEVEL], e.g. not-same-host:web1@dealbreaker")
    _list_show(vm)
    for action, helptext in (("start", "expect the VM up"), ("stop", "expect the VM down"),
                             ("delete", "delete a stopped VM")):
        vm.add_parser(action, help=helptext).add_argument("name")

    disk = sub.add_parser("disk", help="virtual disks").add_subparsers(dest="action", metavar="ACTION", required=True)
    dcreate = disk.add_parser("create", help="create a disk")
    dcreate.add_argument("name")
    dcreate.add_argument("--size", type=_size, required=True)
    dcreate.add_argument("--read-only", action="store_true")
    dcreate.add_argument("--expect", action="append", default=[], metavar="SPEC")
    _list_show(disk)
    disk.add_parser("delete", help="delete a disk (its storage is removed by a plan)").add_argument("name")

    plan = sub.add_parser("plan", help="the planner's proposals").add_subparsers(dest="action", metavar="ACTION",
                                                                               required=True)
    _list_show(plan, what="plan id")
    plan.add_parser("approve", help="approve a proposal").add_argument("id")
    plan.add_parser("reject", help="reject a proposal").add_argument("id")
    return parser


def _list_show(sub: Any, what: str = "name") -> None:
    lst = sub.add_parser("list", help="list them")
    lst.add_argument("--json", action="store_true")
    show = sub.add_parser("show", help="show one")
    show.add_argument("name", metavar=what.upper().replace(" ", "_"))
    show.add_argument("--json", action="store_true")


# --- output -------------------------------------------------------------------------------------


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def _dump(docs: Sequence[Document] | Document) -> str:
    if isinstance(docs, Document):
        return json.dumps(docs.model_dump(mode="json"), indent=2, sort_keys=True)
    return json.dumps([d.model_dump(mode="json") for d in docs], indent=2, sort_keys=True)


# --- commands -----------------------------------------------------------------------------------


async def _with_controller(args: argparse.Namespace, action: Callable[[Controller], Awaitable[int]]) -> int:
    controller = Controller(args.data_dir, readonly=args.readonly)
    await controller.start()
    try:
        return await action(controller)
    finally:
        await controller.stop()


def cmd_export(args: argparse.Namespace) -> int:
    async def run(c: Controller) -> int:
        count = c.db.export_file(args.file)
        print(f"exported {count} documents to {args.file}")
        return EXIT_OK

    return asyncio.run(_with_controller(args, run))


def cmd_import(args: argparse.Namespace) -> int:
    if args.readonly:
        raise CliError("read-only mode: import changes documents")

    async def run(c: Controller) -> int:
        count = c.db.import_file(args.file, replace=args.replace)
        c.audit("import", args.file, f"{count} documents")
        print(f"imported {count} documents from {args.file}")
        return EXIT_OK

    return asyncio.run(_with_controller(args, run))


def cmd_vm(args: argparse.Namespace) -> int:
    async def run(c: Controller) -> int:
        store = c.db
        if args.action == "create":
            minimum, maximum = args.memory
            disk_links = []
            for index, size in enumerate(args.disk):
                disk = await c.create_disk(f"{args.name}-disk{index}", size=size)
                disk_links.append({"disk_id": disk.id})
            vm = await c.create_vm(args.name, cpus=args.cpus, memory_min=minimum, memory_max=maximum,
                                   disks=disk_links, expectations=args.expect)
            print(f"created VM {vm.name} ({vm.id})")
        elif args.action == "list":
            vms = sorted(store.list(VirtualMachine), key=lambda v: v.name)
            if args.json:
                print(_dump(vms))
            else:
                rows = []
                for v in vms:
                    dyn = store.get(VirtualMachineDynamic, v.id)
                    host = store.get("host", dyn.host_id) if dyn and dyn.host_id else None
                    rows.append([v.name, dyn.status.value if dyn else "down", host.name if host else "-",
                                 str(v.cpus), f"{format_size(v.memory_min)}:{format_size(v.memory_max)}",
                                 " ".join(e.spec() for e in v.expectations) or "-"])
                print(_table(rows, ["NAME", "STATUS", "HOST", "CPUS", "MEMORY", "EXPECTATIONS"]))
        elif args.action == "show":
            vm = c.resolve(VirtualMachine, args.name)
            dyn = store.get(VirtualMachineDynamic, vm.id)
            if args.json:
                print(json.dumps({"vm": vm.model_dump(mode="json"),
                                  "dynamic": dyn.model_dump(mode="json") if dyn else None}, indent=2, sort_keys=True))
            else:
                print(_show_vm(c, vm, dyn))
        elif args.action in ("start", "stop"):
            vm = await c.set_vm_availability(args.name, up=args.action == "start")
            print(f"VM {vm.name}: expected {'up' if args.action == 'start' else 'down'}; the planner will propose the steps")
        elif args.action == "delete":
            await c.delete_vm(args.name)
            print(f"deleted VM {args.name}")
        return EXIT_OK

    return asyncio.run(_with_controller(args, run))


def _show_vm(c: Controller, vm: VirtualMachine, dyn: VirtualMachineDynamic | None) -> str:
    lines = [f"VM {vm.name}  ({vm.id})",
             f"  cpus {vm.cpus}, memory {format_size(vm.memory_min)}..{format_size(vm.memory_max)}, {vm.architecture}"]
    if dyn is not None:
        host = c.db.get("host", dyn.host_id) if dyn.host_id else None
        lines.append(f"  status {dyn.status.value}" + (f" on {host.name}" if host else ""))
    else:
        lines.append("  status down")
    for link in vm.disks:
        disk = c.db.get(VirtualStorageDevice, link.disk_id)
        lines.append(f"  disk {disk.name if disk else link.disk_id} ({link.bus}{', read-only' if link.read_only else ''})")
    for exp in vm.expectations:
        lines.append(f"  expects {exp.spec()}")
    try:
        from .planner.explain import explain_text
    except ImportError:
        pass
    else:
        lines.append(explain_text(c.db, vm.id))
    return "\n".join(lines)


def cmd_disk(args: argparse.Namespace) -> int:
    async def run(c: Controller) -> int:
        store = c.db
        if args.action == "create":
            disk = await c.create_disk(args.name, size=args.size, read_only=args.read_only, expectations=args.expect)
            print(f"created disk {disk.name} ({disk.id})")
        elif args.action == "list":
            disks = sorted(store.list(VirtualStorageDevice), key=lambda d: d.name)
            if args.json:
                print(_dump(disks))
            else:
                rows = []
                for d in disks:
                    dyn = store.get(VirtualStorageDeviceDynamic, d.id)
                    allocs = ", ".join(f"{a.type}@{a.host_id[:8]}" for a in dyn.allocations) if dyn else ""
                    rows.append([d.name, format_size(d.size), allocs or "-",
                                 " ".join(e.spec() for e in d.expectations) or "-"])
                print(_table(rows, ["NAME", "SIZE", "ALLOCATIONS", "EXPECTATIONS"]))
        elif args.action == "show":
            disk = c.resolve(VirtualStorageDevice, args.name)
            dyn = store.get(VirtualStorageDeviceDynamic, disk.id)
            if args.json:
                print(json.dumps({"disk": disk.model_dump(mode="json"),
                                  "dynamic": dyn.model_dump(mode="json") if dyn else None}, indent=2, sort_keys=True))
            else:
                print(f"disk {disk.name}  ({disk.id})\n  size {format_size(disk.size)}"
                      + (", read-only" if disk.read_only else ""))
                for a in dyn.allocations if dyn else []:
                    print(f"  allocation {a.type} on {a.host_id} {getattr(a, 'path', '')}")
                for exp in disk.expectations:
                    print(f"  expects {exp.spec()}")
        elif args.action == "delete":
            await c.delete_disk(args.name)
            print(f"deleted disk {args.name}")
        return EXIT_OK

    return asyncio.run(_with_controller(args, run))


def cmd_plan(args: argparse.Namespace) -> int:
    async def run(c: Controller) -> int:
        store = c.db
        if args.action == "list":
            plans = sorted(store.list(Plan), key=lambda p: p.created_at)
            if args.json:
                print(_dump(plans))
            else:
                rows = [[p.id[:8], p.status.value, p.plan_kind, str(len(p.steps)), "; ".join(p.trigger)[:60]]
                        for p in plans]
                print(_table(rows, ["ID", "STATUS", "KIND", "STEPS", "TRIGGER"]))
        elif args.action == "show":
            matches = [p for p in store.list(Plan) if p.id.startswith(args.name)]
            if len(matches) != 1:
                raise CliError(f"no plan {args.name!r}" if not matches else f"plan id {args.name!r} is ambiguous")
            plan = matches[0]
            if args.json:
                print(_dump(plan))
            else:
                print(_show_plan(c, plan))
        elif args.action in ("approve", "reject"):
            plan = await c.decide_plan(args.id, approve=args.action == "approve")
            print(f"plan {plan.id[:8]}: {plan.status.value}")
        return EXIT_OK

    return asyncio.run(_with_controller(args, run))


def _show_plan(c: Controller, plan: Plan) -> str:
    lines = [f"plan {plan.id}  [{plan.status.value}]  kind {plan.plan_kind}"]
    lines += [f"  because: {t}" for t in plan.trigger]
    for index, step in enumerate(plan.steps, 1):
        host = c.db.get("host", step.host_id) if step.host_id else None
        lines.append(f"  {index}. {step.description}" + (f"  on {host.name}" if host else ""))
        if step.effect:
            lines.append(f"     effect: {step.effect}")
        for command in step.commands:
            lines.append(f"     $ {command.command}")
    lines += [f"  not satisfied: {u}" for u in plan.unsatisfied]
    return "\n".join(lines)


def cmd_console(args: argparse.Namespace) -> int:
    from .app import KerubApp

    controller = Controller(args.data_dir, readonly=args.readonly)
    controller.open_store()
    KerubApp(controller).run()
    return EXIT_OK


COMMANDS: dict[str | None, Callable[[argparse.Namespace], int]] = {
    None: cmd_console,
    "export": cmd_export,
    "import": cmd_import,
    "vm": cmd_vm,
    "disk": cmd_disk,
    "plan": cmd_plan,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (CliError, ActionError, StoreError, InvalidName) as error:
        print(f"kerub-tui: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("kerub-tui: interrupted", file=sys.stderr)
        return 130
