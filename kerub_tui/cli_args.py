"""The command line's words (ARCHITECTURE.md §8): the parser, its value types and the one-line error.

Imports nothing of the controller: a command line that fails to parse, --help and --version end in
``main`` here, before ``kerub_tui.cli`` and the controller's modules (most of a command's start) are
imported. Everything else goes on in ``kerub_tui.cli.main``.
"""

from __future__ import annotations

import argparse
import contextvars
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .core.sizes import parse_size
from .core.text import printable

EXIT_OK = 0
EXIT_ERROR = 1


class CliError(Exception):
    """One line for stderr."""


class _Parser(argparse.ArgumentParser):
    """Usage errors raise instead of exiting, so a command run inside the controller cannot kill it."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CliError(f"{message} (see: {self.prog} --help)")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            raise CliError(message.strip())
        raise _Exit(status)


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


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


def _boot(text: str) -> list[str]:
    devices = [d.strip() for d in text.split(",")]
    bad = [d for d in devices if d not in ("hd", "cdrom", "network")]
    if bad or not devices:
        raise argparse.ArgumentTypeError(f"boot order {text!r}: use hd, cdrom and network, comma-separated")
    return devices


def _shown(text: str, limit: int = 40) -> str:
    """``text`` quoted for a message, cut short: a 400-digit argument needs no echo in full."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _port(text: str) -> int:
    """A TCP port, 1 to 65535 (0 would mean "any" to the kernel, never what the admin meant)."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"port {_shown(text)} is not a number")
    if len(text) > 5 or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"port {_shown(text)} is out of range: 1 to 65535")
    return int(text)


def _address(text: str) -> tuple[str, int | None]:
    """ADDRESS[:PORT] (an IPv6 address with a port in brackets: [::1]:2222)."""
    host, sep, port = text.rpartition(":")
    if sep and host and not host.endswith(":") and (host.count(":") == 0 or host.startswith("[")):
        if port.isascii() and port.isdigit():
            return host.strip("[]"), _port(port)
        if port == "" or host.count(":") == 0:
            raise argparse.ArgumentTypeError(f"{_shown(text)}: the port after ':' must be a number, 1 to 65535")
    return text.strip("[]"), None


# Through the control socket, the directory of the client that typed the command (a relative file
# name means a file there, never in the controller's directory); None when the command runs here.
_CLIENT_CWD: contextvars.ContextVar[str | None] = contextvars.ContextVar("client_cwd", default=None)
_NO_CWD = ""  # a client that did not say where it runs: relative names are refused


def _path(text: str) -> str:
    """A file the user named, made absolute against the directory the user typed it in."""
    if text == "":
        raise argparse.ArgumentTypeError("a file name must not be empty")
    if "\0" in text:
        raise argparse.ArgumentTypeError("a file name must not contain a NUL character")
    path = os.path.expanduser(text)
    if os.path.isabs(path):
        return path
    cwd = _CLIENT_CWD.get()
    if cwd == _NO_CWD:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is relative: give an absolute path")
    return os.path.join(cwd if cwd is not None else os.getcwd(), path)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kerub-tui",
        description="Agentless, SLA-driven controller for KVM hosts: the console, or one of its actions.",
    )
    parser.add_argument("--data-dir", help="data dir (default: $KERUB_TUI_DATA or the user data dir)")
    parser.add_argument("--readonly", action="store_true", help="change nothing, on hosts or documents")
    parser.add_argument("--demo", action="store_true",
                        help="a guided tour on a simulated fleet, in a data dir of its own (no host is contacted)")
    parser.add_argument("--version", action="version", version=f"kerub-tui {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    serve = sub.add_parser("serve", help="run the controller without a console (until SIGINT/SIGTERM)")
    serve.add_argument("--json-events", action="store_true", help="print every document change as a JSON line")

    export = sub.add_parser("export", help="write every document to a JSON file (backup)")
    export.add_argument("file", type=_path)
    imp = sub.add_parser("import", help="load documents from an export (the controller must be stopped)")
    imp.add_argument("file", type=_path)
    imp.add_argument("--replace", action="store_true", help="replace every document in a non-empty store")

    host = sub.add_parser("host", help="hosts").add_subparsers(dest="action", metavar="ACTION", required=True,
                                                               parser_class=_Parser)
    add = host.add_parser("add", help="add a host: shows its key fingerprint; accept it to join")
    add.add_argument("address", metavar="ADDRESS[:PORT]", type=_address)
    add.add_argument("--user", default="root")
    add.add_argument(
        "--identity", metavar="KEYFILE", type=_path, help="private key (default: the controller's own key, agent)"
    )
    add.add_argument("--name", help="name in kerub-tui (default: the address)")
    add.add_argument("--accept-fingerprint", metavar="SHA256:...", help="the host key fingerprint you accept")
    add.add_argument("--dedicated", action="store_true", help="only runs kerub-tui's VMs: may be powered down")
    add.add_argument("--install-key", action="store_true",
                     help="log in once with a password (asked for, never stored) to install kerub-tui's key")
    _list_show(host)
    host.add_parser("remove", help="remove a host with no VMs or disks on it").add_argument("name")
    host.add_parser("evacuate", help="maintenance: move everything off, then it may be removed").add_argument("name")
    host.add_parser("rediscover", help="read a host's facts again now (after fixing what made them stale)"
                    ).add_argument("name")
    rekey = host.add_parser("rekey", help="accept a host's new SSH host key (reinstalled, key regenerated)")
    rekey.add_argument("name")
    rekey.add_argument("--accept-fingerprint", metavar="SHA256:...",
                       help="the new host key fingerprint you checked out of band")
    hset = host.add_parser("set", help="change a host's settings")
    hset.add_argument("name")
    hset.add_argument("--accel", choices=("auto", "kvm", "tcg"), required=True,
                      help="accelerator of its guests: kvm, tcg, or auto (kvm where usable)")

    vm = sub.add_parser("vm", help="virtual machines").add_subparsers(dest="action", metavar="ACTION", required=True,
                                                                      parser_class=_Parser)
    create = vm.add_parser("create", help="create a VM (it runs once an availability expectation says so)")
    create.add_argument("name")
    create.add_argument("--cpus", type=int, default=1)
    create.add_argument("--memory", type=_memory, required=True, metavar="SIZE[:MAX]")
    create.add_argument("--disk", type=_size, action="append", default=[], metavar="SIZE",
                        help="a new disk of this size (repeatable)")
    create.add_argument("--expect", action="append", default=[], metavar="SPEC",
                        help="TYPE[:ARG[,ARG...]][@LEVEL], e.g. not-same-host:web1@dealbreaker")
    create.add_argument("--cdrom", metavar="IMAGE", help="attach this ISO image as a CD-ROM (and boot from it)")
    create.add_argument("--boot", type=_boot, metavar="DEV[,DEV...]",
                        help="boot order of hd, cdrom, network (default: cdrom,hd with --cdrom, else hd)")
    create.add_argument("--from", dest="from_image", metavar="IMAGE",
                        help="the first disk starts as this disk image (grown to the first --disk SIZE)")
    create.add_argument("--ssh-key", action="append", default=[], metavar="FILE",
                        help="cloud-init: an ssh public key file for the guest's default user (repeatable)")
    create.add_argument("--user-data", metavar="FILE", help="cloud-init: user data, as given (never logged)")
    create.add_argument("--network-config", metavar="FILE", help="cloud-init: network config, as given")
    _list_show(vm)
    vm.add_parser("eject", help="take the ISO out of the VM's CD-ROM (live too when it runs)").add_argument("name")
    clone = vm.add_parser("clone", help="copy a stopped VM with its disks (their content copied by a plan)")
    clone.add_argument("source", metavar="SRC")
    clone.add_argument("name")
    for action, helptext in (("start", "expect the VM up"), ("stop", "expect the VM down")):
        vm.add_parser(action, help=helptext).add_argument("name")
    delete = vm.add_parser("delete", help="delete a stopped VM; a VM with disks of its own needs "
                                          "--with-disks or --keep-disks")
    delete.add_argument("name")
    fate = delete.add_mutually_exclusive_group()
    fate.add_argument("--with-disks", dest="disks", action="store_const", const="delete",
                      help="delete its own disks too (their storage on hosts is removed by a plan); "
                           "CD-ROMs, images and disks another VM uses stay")
    fate.add_argument("--keep-disks", dest="disks", action="store_const", const="keep",
                      help="keep its disks, with their data (disk delete NAME removes one later)")

    disk = sub.add_parser("disk", help="virtual disks").add_subparsers(dest="action", metavar="ACTION",
                                                                       required=True, parser_class=_Parser)
    dcreate = disk.add_parser("create", help="create a disk")
    dcreate.add_argument("name")
    dcreate.add_argument("--size", type=_size, required=True)
    dcreate.add_argument("--read-only", action="store_true")
    dcreate.add_argument("--expect", action="append", default=[], metavar="SPEC")
    _list_show(disk)
    disk.add_parser("delete", help="delete a disk (its storage is removed by a plan)").add_argument("name")

    console = sub.add_parser("console", help="open a running VM's SPICE console in a viewer (over SSH)")
    console.add_argument("name", metavar="VM")
    console.add_argument("--viewer", metavar="COMMAND",
                         help="viewer command, given the .vv file (default: $KERUB_TUI_VIEWER or remote-viewer)")
    console.add_argument("--print-vv", action="store_true",
                         help="print the .vv connection file (it holds the SPICE password) for a viewer elsewhere")
    console.add_argument("--local-port", type=_port, metavar="PORT",
                         help="with --print-vv: the port your own `ssh -L` listens on")

    check = sub.add_parser("check", help="verify the store; --repair salvages and restores a damaged one")
    check.add_argument("--repair", action="store_true",
                       help="salvage what reads, restore the rest from the newest backup, keep the damaged file aside")

    image = sub.add_parser("image", help="images: ISOs and disk images that many VMs use").add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=_Parser)
    iimport = image.add_parser("import", help="bring a file from this machine (or --from HOST:PATH) into "
                                              "kerub-tui's image storage on a host")
    iimport.add_argument("file", nargs="?", metavar="FILE", type=_path)
    iimport.add_argument("--name", help="name of the image (default: the file name without its extension)")
    iimport.add_argument("--host", help="the host to keep it on (default: the connected host with the most room)")
    iimport.add_argument("--from", dest="from_", metavar="HOST:PATH", help="a file already on a host")
    # set by the command line for the controller it talks to: the file it checked, by absolute path and identity
    iimport.add_argument("--client-file", help=argparse.SUPPRESS)
    iimport.add_argument("--client-file-id", help=argparse.SUPPRESS)
    _list_show(image)
    image.add_parser("delete", help="delete an image no VM uses, and its copies on hosts").add_argument("name")

    plan = sub.add_parser("plan", help="the planner's proposals").add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=_Parser)
    _list_show(plan, what="id")
    plan.add_parser("approve", help="approve a proposal").add_argument("name", metavar="ID")
    plan.add_parser("reject", help="reject a proposal").add_argument("name", metavar="ID")
    return parser


def _list_show(sub: Any, what: str = "name") -> None:
    lst = sub.add_parser("list", help="list them")
    lst.add_argument("--json", action="store_true")
    show = sub.add_parser("show", help="show one")
    show.add_argument("name", metavar=what.upper())
    show.add_argument("--json", action="store_true")


def _one_line(error: BaseException) -> str:
    """An error as the one line the admin reads: an OSError says what failed on which file; a
    message never spans lines (a name with a newline in it cannot make it look like two)."""
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror + (f": {error.filename}" if error.filename else "")
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """The ``kerub-tui`` command: what does not parse is one line here; the rest runs in cli.main."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        build_parser().parse_args(argv)
    except _Exit as done:
        return done.status
    except CliError as error:
        print(printable(f"kerub-tui: {_one_line(error)}"), file=sys.stderr)
        return EXIT_ERROR
    from .cli import main as run

    return run(argv)
