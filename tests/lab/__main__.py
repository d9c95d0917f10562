"""Command line of the lab: `python -m tests.lab up|down|status` (see tests/lab/__init__.py)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import DEFAULT_PV_SIZE, DEFAULT_SLOT, Lab, LabError, down, down_all, status

SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    number, unit = text.strip().upper().rstrip("IB"), ""
    if number and number[-1] in SIZE_UNITS:
        number, unit = number[:-1], number[-1]
    try:
        value = int(number) * SIZE_UNITS[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1G, 512M)") from None
    if value < 16 << 20:
        raise argparse.ArgumentTypeError(f"PV size {text!r} is below 16M")
    return value


def cmd_up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    lab = Lab.up(args.hosts, light=args.light, slot=args.slot, pv_size=args.pv_size)
    took = time.monotonic() - started
    kind = "light " if args.light else ""
    print(f"lab slot {lab.slot}: {len(lab.hosts)} {kind}hosts up in {took:.1f} s")
    print(f"known_hosts: {lab.known_hosts}")
    print(f"{'NAME':<9} {'ADDRESS':<14} {'PORT':>4}  {'CLIENT KEY':<35} {'VG':<14} HOST KEY FINGERPRINT")
    for h in lab.hosts:
        print(f"{h.name:<9} {h.address:<14} {h.port:>4}  {h.client_key!s:<35} {h.vg or '-':<14} "
              f"{h.host_key_fingerprint}")
    first = lab.hosts[0]
    print(f"try: ssh -i {lab.client_key} -o UserKnownHostsFile={lab.known_hosts} root@{first.address}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    if args.all:
        failed = 0
        for slot, result in down_all().items():
            if isinstance(result, str):
                failed += 1
                print(f"slot {slot}: skipped: {result}", file=sys.stderr)
            else:
                print(f"slot {slot}: " + ("; ".join(result) or "nothing left"))
        return 1 if failed else 0
    result = down(args.slot)
    print(f"slot {args.slot}: " + ("; ".join(result) or "nothing left"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    slots = status()
    if args.json:
        print(json.dumps(slots, indent=1))
        return 0
    if not slots:
        print("no lab")
    for s in slots:
        held = ", held by a live process" if s["held_by_live_process"] else ""
        links = f", links {' '.join(s['links'])}" if s["links"] else ""
        print(f"slot {s['slot']} ({s['dir']}): {s['phase'] or 'no state'}{held}{links}")
        for h in s["hosts"]:
            state = "up" if h["alive"] else "down"
            sshd = "sshd answers" if h["sshd"] else "sshd silent"
            loops = " ".join(h["loops"]) or "-"
            print(f"  {h['name']:<10} {h['address']}:{h['port']} {state}, {sshd}, "
                  f"{h['processes']} processes, vg {h['vg'] or '-'}, loops {loops}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring up lab hosts (cleans the slot first)")
    up.add_argument("--hosts", type=int, default=3, help="how many hosts (default 3)")
    up.add_argument("--light", action="store_true", help="sshd only: no libvirtd, no LVM")
    up.add_argument("--slot", type=int, default=DEFAULT_SLOT,
                    help="addresses 198.18.SLOT.2... on the bridge klabSLOT (light hosts: 127.0.SLOT.2...) "
                         "and files in LAB_ROOT/slotSLOT (default 0)")
    up.add_argument("--pv-size", type=parse_size, default=DEFAULT_PV_SIZE,
                    help="size of each host's (sparse) LVM PV, default 1G")
    up.set_defaults(func=cmd_up)
    dn = sub.add_parser("down", help="remove everything a lab slot made")
    dn.add_argument("--slot", type=int, default=DEFAULT_SLOT)
    dn.add_argument("--all", action="store_true", help="every slot no live process holds")
    dn.set_defaults(func=cmd_down)
    st = sub.add_parser("status", help="what is on disk and alive")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `... | head`: the lab is up (or down) all the same
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
