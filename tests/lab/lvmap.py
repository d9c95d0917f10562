"""Lab only: give every linear LV of one lab host a real block device at /dev/VG/LV.

This kernel has no device-mapper, so the lab's LVM runs with activation off: lvcreate and
friends only write metadata. The lab's `lvm` wrapper (bind-mounted over the real binary inside
the host's mount namespace) runs this after every command that may change LVs. It maps each
single-segment linear LV to a loop device over the PV's backing file at the LV's byte offset
(pe_start + first_pe * extent_size, from `pvs` and `lvs --segments`), links it at /dev/VG/LV,
and detaches loop devices whose LV is gone. An LV seen for the first time gets its first 4 KiB
zeroed, as lvcreate does by default when it can activate. LVs with several segments or another
segment type get no device (reported on stderr).

Usage (inside the host's namespace): lvmap.py REAL_LVM PV_FILE
Standard library only: it runs under the system python with -I -S.
"""

import fcntl
import json
import os
import subprocess
import sys

STATE_FILE = "/run/kerub-lab/lvmap.json"
LOCK_FILE = "/run/kerub-lab/lvmap.lock"
ZEROED_BYTES = 4096


def lvm_report(real_lvm: str, *args: str) -> list[dict]:
    out = subprocess.run(
        [real_lvm, *args, "--reportformat", "json", "--units", "b", "--nosuffix"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    report = json.loads(out)["report"]
    return next(iter(report[0].values())) if report else []


def wanted_mappings(real_lvm: str) -> tuple[dict, list[str]]:
    """(offset, size) -> (vg, lv, uuid) for every mappable LV, plus notes about the others."""
    pe_start = {
        pv["pv_name"]: int(pv["pe_start"])
        for pv in lvm_report(real_lvm, "pvs", "-o", "pv_name,pe_start")
    }
    segments: dict[str, list[dict]] = {}
    for seg in lvm_report(
        real_lvm,
        "lvs",
        "--segments",
        "-o",
        "vg_name,lv_name,lv_uuid,segtype,seg_pe_ranges,vg_extent_size",
    ):
        segments.setdefault(seg["lv_uuid"], []).append(seg)
    wanted, notes = {}, []
    for uuid, segs in segments.items():
        vg, lv = segs[0]["vg_name"], segs[0]["lv_name"]
        ranges = segs[0]["seg_pe_ranges"].split()
        if len(segs) != 1 or segs[0]["segtype"] != "linear" or len(ranges) != 1:
            notes.append(f"{vg}/{lv}: {len(segs)} segment(s) of type {segs[0]['segtype']}, no device")
            continue
        pv, _, span = ranges[0].rpartition(":")
        first, last = (int(n) for n in span.split("-"))
        extent = int(segs[0]["vg_extent_size"])
        offset = pe_start[pv] + first * extent
        wanted[(offset, (last - first + 1) * extent)] = (vg, lv, uuid)
    return wanted, notes


def lv_loops(pv_file: str) -> dict:
    """(offset, size) -> loop device, for the loop devices over pv_file other than the PV's own."""
    out = subprocess.run(
        ["losetup", "--list", "--json", "-O", "NAME,BACK-FILE,OFFSET,SIZELIMIT"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    loops = {}
    for dev in json.loads(out or '{"loopdevices": []}')["loopdevices"]:
        back = (dev.get("back-file") or "").removesuffix(" (deleted)")
        offset, size = int(dev["offset"]), int(dev["sizelimit"])
        if back == pv_file and (offset, size) != (0, 0):
            loops[(offset, size)] = dev["name"]
    return loops


def sync(real_lvm: str, pv_file: str) -> list[str]:
    wanted, notes = wanted_mappings(real_lvm)
    try:
        with open(STATE_FILE) as f:
            known_uuids = set(json.load(f))
    except (OSError, ValueError):
        known_uuids = set()
    loops = lv_loops(pv_file)
    for extent, dev in loops.items():
        if extent not in wanted:
            subprocess.run(["losetup", "-d", dev], check=False)
    links: dict[str, dict[str, str]] = {}
    for (offset, size), (vg, lv, uuid) in wanted.items():
        dev = loops.get((offset, size))
        if dev is None:
            dev = subprocess.run(
                ["losetup", "--find", "--show", "--offset", str(offset), "--sizelimit", str(size), pv_file],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        if uuid not in known_uuids:
            fd = os.open(dev, os.O_WRONLY)
            try:
                os.write(fd, bytes(min(ZEROED_BYTES, size)))
                os.fsync(fd)
            finally:
                os.close(fd)
        links.setdefault(vg, {})[lv] = dev
    for vg_dir in {f"/dev/{vg}" for vg in links} | {f"/dev/{vg}" for vg in known_vgs()}:
        vg = os.path.basename(vg_dir)
        if not os.path.isdir(vg_dir):
            if vg in links:
                notes.append(f"{vg_dir} is not a lab device directory, no links for VG {vg}")
            continue
        wanted_links = links.get(vg, {})
        for name in os.listdir(vg_dir):
            path = os.path.join(vg_dir, name)
            if name not in wanted_links or os.readlink(path) != wanted_links[name]:
                os.unlink(path)
        for name, dev in wanted_links.items():
            path = os.path.join(vg_dir, name)
            if not os.path.lexists(path):
                os.symlink(dev, path)
    with open(STATE_FILE + ".tmp", "w") as f:
        json.dump(sorted({uuid for _, _, uuid in wanted.values()} | known_uuids), f)
    os.replace(STATE_FILE + ".tmp", STATE_FILE)
    return notes


def known_vgs() -> list[str]:
    """VG device directories the lab made for this host (tmpfs mounts under /dev)."""
    with open("/proc/self/mounts") as f:
        return [
            line.split()[1][len("/dev/"):]
            for line in f
            if line.startswith("kerub-lab-vg ") and line.split()[1].startswith("/dev/")
        ]


def main() -> int:
    real_lvm, pv_file = sys.argv[1], sys.argv[2]
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            notes = sync(real_lvm, pv_file)
        except (subprocess.CalledProcessError, OSError, ValueError, KeyError) as exc:
            detail = getattr(exc, "stderr", "") or ""
            print(f"kerub-lab lvmap: {exc} {detail}".strip(), file=sys.stderr)
            return 1
    for note in notes:
        print(f"kerub-lab lvmap: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
