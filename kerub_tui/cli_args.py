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

METRIC_RANGES = ("1h", "1d", "7d", "30d", "1y")  # core/metrics.RANGES' names (its models are not imported here)

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


HOST_NAME = "the host's name or id"
VM_NAME = "the VM's name or id"
PLAN_ID = "the plan's id, or its first characters as plan list shows them"
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _age(text: str) -> float:
    """An age as ``--since`` takes it: a number and a unit (s, m, h, d, w), e.g. 30m, 1h, 2d; in seconds."""
    number, unit = text[:-1], text[-1:]
    if unit not in _AGE_UNITS or not (number.isascii() and number.isdigit()) or len(number) > 6 or int(number) == 0:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not an age: a number and s, m, h, d or w, e.g. 1h")
    return float(int(number) * _AGE_UNITS[unit])


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
    export.add_argument("file", type=_path, help="the JSON file to write")
    imp = sub.add_parser("import", help="load documents from an export (the controller must be stopped)")
    imp.add_argument("file", type=_path, help="a file `kerub-tui export` wrote")
    imp.add_argument("--replace", action="store_true", help="replace every document in a non-empty store")

    host = sub.add_parser("host", help="hosts").add_subparsers(dest="action", metavar="ACTION", required=True,
                                                               parser_class=_Parser)
    add = host.add_parser("add", help="add a host: shows its key fingerprint; accept it to join")
    add.add_argument("address", metavar="ADDRESS[:PORT]", type=_address,
                     help="the host's SSH address (an IPv6 address with a port in brackets: [::1]:2222)")
    add.add_argument("--user", default="root", help="the login user on the host (default: root)")
    add.add_argument(
        "--identity", metavar="KEYFILE", type=_path, help="private key (default: the controller's own key, agent)"
    )
    add.add_argument("--name", help="name in kerub-tui (default: the address)")
    add.add_argument("--accept-fingerprint", metavar="SHA256:...", help="the host key fingerprint you accept")
    add.add_argument("--dedicated", action="store_true", help="only runs kerub-tui's VMs: may be powered down")
    add.add_argument("--install-key", action="store_true",
                     help="log in once with a password (asked for, never stored) to install kerub-tui's key")
    _list_show(host)
    host.add_parser("remove", help="remove a host with no VMs or disks on it").add_argument("name", help=HOST_NAME)
    host.add_parser("evacuate", help="maintenance: move everything off, then it may be removed").add_argument(
        "name", help=HOST_NAME)
    host.add_parser("rediscover", help="read a host's facts again now (after fixing what made them stale)"
                    ).add_argument("name", help=HOST_NAME)
    rekey = host.add_parser("rekey", help="accept a host's new SSH host key (reinstalled, key regenerated)")
    rekey.add_argument("name", help=HOST_NAME)
    rekey.add_argument("--accept-fingerprint", metavar="SHA256:...",
                       help="the new host key fingerprint you checked out of band")
    fence = host.add_parser("fence", help="high availability: a host that went away runs no guest any more, so "
                                           "its VMs may restart elsewhere (powered off through IPMI now, or "
                                           "--confirm-off)")
    fence.add_argument("name", help=HOST_NAME)
    fence.add_argument("--confirm-off", action="store_true",
                       help="you made sure it is off (pulled the power, or it is gone): recorded with your name")
    hset = host.add_parser("set", help="change a host's settings")
    hset.add_argument("name", help=HOST_NAME)
    hset.add_argument("--accel", choices=("auto", "kvm", "tcg"),
                      help="accelerator of its guests: kvm, tcg, or auto (kvm where usable)")
    hset.add_argument("--wol", metavar="MAC", help="wake-on-LAN: the MAC of its NIC that wakes it (aa:bb:cc:dd:ee:ff)")
    hset.add_argument("--wol-broadcast", metavar="ADDRESS",
                      help="where the magic packet goes (its network's broadcast; default 255.255.255.255)")
    hset.add_argument("--wol-port", metavar="PORT", type=_port, help="UDP port of the magic packet (default 9)")
    hset.add_argument("--ipmi", metavar="ADDRESS", help="its BMC's address: IPMI powers it on (ipmitool, lanplus; "
                                                        "the password from IPMI_PASSWORD where ipmitool runs)")
    hset.add_argument("--ipmi-user", metavar="USER", help="the BMC's user (default root)")
    hset.add_argument("--no-wake", action="store_true",
                      help="forget how to wake it: power saving then never powers it down")

    vm = sub.add_parser("vm", help="virtual machines").add_subparsers(dest="action", metavar="ACTION", required=True,
                                                                      parser_class=_Parser)
    create = vm.add_parser("create", help="create a VM (it runs once an availability expectation says so)")
    create.add_argument("name", help="the new VM's name")
    create.add_argument("--cpus", type=int, default=1, help="virtual CPUs (default: 1)")
    create.add_argument("--memory", type=_memory, required=True, metavar="SIZE[:MAX]",
                        help="memory, e.g. 2G; with :MAX, what it may grow to (balloon), e.g. 2G:4G")
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
    create.add_argument("--graphics", choices=("spice", "vnc"), default="spice",
                        help="the protocol of its screen for a viewer (default spice; both through SSH)")
    vset = vm.add_parser("set", help="change a VM's settings (from its next start)")
    vset.add_argument("name", help=VM_NAME)
    vset.add_argument("--graphics", choices=("spice", "vnc"),
                      help="the protocol of its screen for a viewer: spice or vnc")
    vset.add_argument("--ha", choices=("on", "off"),
                      help="high availability: on, it restarts on another host after its host fails (the ha "
                           "expectation, a dealbreaker); off, it waits for its host")
    _list_show(vm)
    vm.add_parser("eject", help="take the ISO out of the VM's CD-ROM (live too when it runs)").add_argument(
        "name", help=VM_NAME)
    shot = vm.add_parser("screenshot", help="save the screen of a running VM now as a PNG (through the host's "
                                            "libvirt tunnel; no viewer needed)")
    shot.add_argument("name", metavar="VM", help="the running VM whose screen is saved")
    shot.add_argument("file", metavar="FILE.png", type=_path, help="where to write the PNG (replaced if it exists)")
    clone = vm.add_parser("clone", help="copy a stopped VM with its disks (their content copied by a plan)")
    clone.add_argument("source", metavar="SRC", help="the VM to copy (stopped)")
    clone.add_argument("name", help="the new VM's name")
    for action, helptext in (("start", "expect the VM up"), ("stop", "expect the VM down")):
        vm.add_parser(action, help=helptext).add_argument("name", help=VM_NAME)
    # An incident's actions, on the running domain at once (no plan); each audited.
    for action, helptext in (
        ("reboot", "ask the guests to reboot (ACPI: the guest OS must answer it); their expectations stay"),
        ("reset", "reset the VMs at once, like their reset button: the guests lose unsaved data"),
        ("pause", "pause the VMs (vCPUs stop, memory stays); the planner leaves them paused (availability "
                  "up,paused) until resumed"),
        ("resume", "resume paused VMs"),
    ):
        vm.add_parser(action, help=helptext).add_argument("names", nargs="+", metavar="VM",
                                                          help="the VM (several: each in turn)")
    poweroff = vm.add_parser("poweroff", help="power the VMs off and expect them down, so the planner does not "
                                              "start them again: the guest is asked (ACPI power button)")
    poweroff.add_argument("names", nargs="+", metavar="VM", help="the VM (several: each in turn)")
    poweroff.add_argument("--force", action="store_true",
                          help="pull the plug at once (libvirt destroy): for a guest that hangs or runs away; "
                               "it loses unsaved data")
    send_keys = vm.add_parser("send-keys", help="press key combinations on the VM's keyboard, in order, e.g. "
                                                "ctrl+alt+del, or ctrl+alt+f2 to reach a text console")
    send_keys.add_argument("name", metavar="VM", help="the VM whose keyboard the keys are pressed on")
    send_keys.add_argument("keys", nargs="+", metavar="KEYS",
                           help="key names joined with +, pressed together: ctrl alt shift meta del f1..f12 a..z "
                                "0..9 enter esc tab backspace space sysrq up down left right home end pageup "
                                "pagedown insert")
    delete = vm.add_parser("delete", help="delete a stopped VM; a VM with disks of its own needs "
                                          "--with-disks or --keep-disks")
    delete.add_argument("name", help=VM_NAME)
    fate = delete.add_mutually_exclusive_group()
    fate.add_argument("--with-disks", dest="disks", action="store_const", const="delete",
                      help="delete its own disks too (their storage on hosts is removed by a plan); "
                           "CD-ROMs, images and disks another VM uses stay")
    fate.add_argument("--keep-disks", dest="disks", action="store_const", const="keep",
                      help="keep its disks, with their data (disk delete NAME removes one later)")

    disk = sub.add_parser("disk", help="virtual disks").add_subparsers(dest="action", metavar="ACTION",
                                                                       required=True, parser_class=_Parser)
    dcreate = disk.add_parser("create", help="create a disk")
    dcreate.add_argument("name", help="the new disk's name")
    dcreate.add_argument("--size", type=_size, required=True, help="its size, e.g. 20G")
    dcreate.add_argument("--read-only", action="store_true", help="VMs get it read-only")
    dcreate.add_argument("--expect", action="append", default=[], metavar="SPEC",
                         help="TYPE[:ARG[,ARG...]][@LEVEL], e.g. storage-redundancy:2@want (repeatable)")
    _list_show(disk)
    disk.add_parser("delete", help="delete a disk (its storage is removed by a plan)").add_argument(
        "name", help="the disk's name or id")

    console = sub.add_parser("console", help="open a running VM's console: its screen in a viewer (SPICE or VNC, "
                                             "over SSH), or --serial in this terminal (no X needed)")
    console.add_argument("name", metavar="VM", help="the running VM whose console opens")
    console.add_argument("--serial", action="store_true",
                         help="attach this terminal to the VM's serial console (ctrl+] leaves; view-only "
                              "with --readonly)")
    console.add_argument("--force", action="store_true",
                         help="with --serial: take the serial console over from another session holding it")
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
    iimport.add_argument("file", nargs="?", metavar="FILE", type=_path,
                         help="an ISO or disk image (raw, qcow2) on this machine")
    iimport.add_argument("--name", help="name of the image (default: the file name without its extension)")
    iimport.add_argument("--host", help="the host to keep it on (default: the connected host with the most room)")
    iimport.add_argument("--from", dest="from_", metavar="HOST:PATH", help="a file already on a host")
    # set by the command line for the controller it talks to: the file it checked, by absolute path and identity
    iimport.add_argument("--client-file", help=argparse.SUPPRESS)
    iimport.add_argument("--client-file-id", help=argparse.SUPPRESS)
    _list_show(image)
    image.add_parser("delete", help="delete an image no VM uses, and its copies on hosts").add_argument(
        "name", help="the image's name or id")

    plan = sub.add_parser("plan", help="the planner's proposals").add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=_Parser)
    _list_show(plan, what="id")
    plan.add_parser("approve", help="approve a proposal").add_argument("name", metavar="ID", help=PLAN_ID)
    plan.add_parser("reject", help="reject a proposal").add_argument("name", metavar="ID", help=PLAN_ID)
    plan.add_parser("ask-again", help="ask again for a plan you rejected: the planner proposes it again if it is "
                    "still the answer (vm start does it for a VM's plans)").add_argument(
        "name", metavar="ID", help=PLAN_ID)

    for name, helptext in (("audit", "what was done: every admin action and every command a plan ran, oldest "
                                     "first"),
                           ("events", "what happened: hosts up and down, violations, key mismatches, parse "
                                      "errors, oldest first")):
        log = sub.add_parser(name, help=helptext)
        log.add_argument("--since", type=_age, metavar="AGE", help="only the last AGE: 30m, 1h, 2d (default: all)")
        log.add_argument("--json", action="store_true", help="as JSON, one object per entry")
        log.add_argument("--host", metavar="HOST", help="only those of this host (its name or id)")
        log.add_argument("--vm", metavar="VM", help="only those about this VM (its name or id)")
        log.add_argument("--last", type=_count, metavar="N", help="only the newest N")
    metrics = sub.add_parser("metrics", help="a host's or a VM's CPU and memory over time (a point per minute up "
                             "to a day, per hour beyond; - where nothing was monitored)")
    metrics.add_argument("name", metavar="HOST|VM", help="the host's or the VM's name or id")
    metrics.add_argument("--range", default="1d", choices=METRIC_RANGES, help="how far back (default 1d)")
    metrics.add_argument("--json", action="store_true", help="as JSON, for scripts")
    which = metrics.add_mutually_exclusive_group()
    which.add_argument("--host", action="store_true", help="NAME is a host (where a VM has the same name)")
    which.add_argument("--vm", action="store_true", help="NAME is a VM (where a host has the same name)")
    history = sub.add_parser("history", help="how long the audit and the events are kept").add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=_Parser)
    hshow = history.add_parser("show", help="the retention and how many entries the history holds")
    hshow.add_argument("--json", action="store_true", help="as JSON, for scripts")
    hset_ = history.add_parser("set", help="change the retention (what is older goes at once)")
    hset_.add_argument("--audit-days", type=_count, metavar="DAYS", help="days of audit entries kept (default 365)")
    hset_.add_argument("--event-days", type=_count, metavar="DAYS", help="days of events kept (default 90)")
    ha = sub.add_parser("ha", help="high availability: how VMs with ha restart after their host fails"
                        ).add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=_Parser)
    hashow = ha.add_parser("show", help="the policy, the hosts that went away and what each VM with ha waits for")
    hashow.add_argument("--json", action="store_true", help="as JSON, for scripts")
    haset = ha.add_parser("set", help="change the policy")
    haset.add_argument("--copy-max-age", type=_minutes, metavar="MINUTES",
                       help="restart from a copy taken for redundancy without asking when it is younger than this "
                            "(0, the default: every copy asks first)")
    haset.add_argument("--stale-copies", choices=("allow", "ask"),
                       help="allow: restart from a copy of any age without asking; ask (the default): as above")
    return parser


def _minutes(text: str) -> int:
    """A whole number of minutes, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of minutes") from None
    if not 0 <= value <= 525_600:
        raise argparse.ArgumentTypeError(f"{text!r}: from 0 to 525600 minutes (a year)")
    return value


def _count(text: str) -> int:
    """A whole number of at least 1 (days, entries)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 1")
    return value


def _list_show(sub: Any, what: str = "name") -> None:
    lst = sub.add_parser("list", help="list them")
    lst.add_argument("--json", action="store_true", help="as JSON, for scripts")
    show = sub.add_parser("show", help="show one")
    show.add_argument("name", metavar=what.upper(), help=PLAN_ID if what == "id" else "its name or id")
    show.add_argument("--json", action="store_true", help="as JSON, for scripts")


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
