"""The lab: real test hosts on this machine, one set of Linux namespaces each.

See the package docstring (tests/lab/__init__.py) for the layout and the guarantees.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

LAB_ROOT = Path(os.environ.get("KERUB_LAB_ROOT", "/var/lib/kerub-lab"))
HERE = Path(__file__).resolve().parent
DEFAULT_SLOT = 0
AUTO_SLOTS = range(100, 200)
DEFAULT_PV_SIZE = 1 << 30
SSH_PORT = 22
UP_TIMEOUT = 90.0
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Daemons and commands in a lab host get this environment, not the caller's (pytest, a venv).
HOST_ENV = {"PATH": SBIN_PATH, "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb"}
SYSTEM_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
FULL_BINARIES = (
    "unshare", "nsenter", "sshd", "ssh", "ssh-keygen", "ssh-keyscan", "losetup",
    "libvirtd", "virtlogd", "virsh", "qemu-system-x86_64", "lvm", "ip",
)
LIGHT_BINARIES = ("unshare", "nsenter", "sshd", "ssh", "ssh-keygen", "ssh-keyscan")
# The lab network of full hosts: slot N is 198.18.N.0/24, the bridge klabN (198.18.N.1, in the machine's
# own network namespace: the test process reaches every host's sshd through it) and host i at
# 198.18.N.(i+1) on its veth klabNhI. 198.18.0.0/15 is reserved for benchmarking (RFC 2544): never routed
# anywhere, and the hosts have no route beyond the bridge, so nothing of the lab leaves this machine.
NET_PREFIX = "198.18"
# Each full host's storage servers, started when the machine has them (tools/packages-test.txt): tgtd
# (iSCSI, 0.0.0.0:3260 in the host's network namespace), rpcbind and nfs-ganesha (NFS v3/v4) with the
# config and pid file the product's builders use (kerub_tui/hosts/nfs.py).
GANESHA_CONF = (
    "# kerub lab host: NFS v3 (qemu's client) and v4, no lock manager, no quota, no grace period.\n"
    "NFS_CORE_PARAM { Protocols = 3, 4; Enable_NLM = false; Enable_RQUOTA = false; }\n"
    "NFSV4 { Graceless = true; }\n"
)
GANESHA_PID = "/run/ganesha/ganesha.pid"
KERUB_DIR = "/var/lib/kerub-tui"  # the product's image and seed directories are in it (hosts/facts.py)
TGTD_SOCKET = "/run/tgtd/socket.0"
# A test-controlled delay of the lvm wrapper (inside a host's namespace): see _lvm_wrapper and
# LabHost.delay_lvm.
LVM_DELAY_FILE = "/run/kerub-lab/lvm-delay"
LVM_PHASE_FILE = "/run/kerub-lab/lvm-phase"

# Commands of the lvm multi-call binary that never change LVs: the wrapper runs them untouched.
LVM_READ_ONLY = (
    "pvs vgs lvs pvdisplay vgdisplay lvdisplay pvscan vgscan lvscan lvmconfig config dumpconfig "
    "lvmdiskscan version formats segtypes types help fullreport devtypes systemid tags lvmdevices"
)


class LabError(RuntimeError):
    """The lab could not be brought up, or a lab operation failed."""


def which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":" + SBIN_PATH)


def _binary(name: str) -> str:
    path = which(name)
    if path is None:
        raise LabError(f"{name} not found")
    return path


_prerequisite_cache: dict[bool, str | None] = {}


def missing_prerequisites(light: bool = False) -> str | None:
    """Why the lab cannot run here (one line), or None when it can."""
    if light in _prerequisite_cache:
        return _prerequisite_cache[light]
    reason = _check_prerequisites(light)
    _prerequisite_cache[light] = reason
    return reason


def _check_prerequisites(light: bool) -> str | None:
    if not sys.platform.startswith("linux"):
        return "the lab needs Linux namespaces"
    if os.geteuid() != 0:
        return "the lab needs root (namespaces, loop devices, daemons)"
    missing = [b for b in (LIGHT_BINARIES if light else FULL_BINARIES) if which(b) is None]
    if missing:
        return "the lab needs these commands: " + ", ".join(missing) + " (see tests/lab/packages.txt)"
    if not light:
        if not Path("/dev/loop-control").exists():
            return "the lab needs loop devices (/dev/loop-control)"
        for d in ("/etc/libvirt", "/var/lib/libvirt", "/var/log/libvirt", "/var/cache/libvirt", "/etc/lvm"):
            if not Path(d).is_dir():
                return f"the lab needs {d} (installed by libvirt-daemon-system / lvm2)"
    kinds = ["--mount", "--uts", "--pid"] + ([] if light else ["--net"])
    probe = subprocess.run(
        [_binary("unshare"), *kinds, "--fork", "--mount-proc", "true"],
        capture_output=True, text=True, timeout=30,
    )
    if probe.returncode != 0:
        names = "+".join(k.removeprefix("--") for k in kinds)
        return f"unshare of {names} namespaces fails here: {probe.stderr.strip()}"
    return None


# ---------------------------------------------------------------- small helpers


def fingerprint(public_key_line: str) -> str:
    """SHA256 fingerprint of an OpenSSH public key line, as `ssh-keygen -lf` prints it."""
    blob = base64.b64decode(public_key_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def process_start(pid: int) -> int | None:
    """Start time of a process (clock ticks since boot): with the pid it names one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _process_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _pidns(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


def _all_pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def pids_in_pidns(inode: int) -> list[int]:
    """Live (non-zombie) processes whose pid namespace has this inode."""
    return [p for p in _all_pids() if _pidns(p) == inode and _process_state(p) not in (None, "Z")]


def _run(argv: Sequence[str], **kw) -> subprocess.CompletedProcess[str]:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 60)
    return subprocess.run(list(argv), **kw)


def _check(argv: Sequence[str], **kw) -> str:
    proc = _run(argv, **kw)
    if proc.returncode != 0:
        raise LabError(f"{shlex.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def loop_devices() -> list[dict]:
    """Every loop device of the machine: name, back-file, offset, sizelimit (losetup --json)."""
    out = _check([_binary("losetup"), "--list", "--json", "-O", "NAME,BACK-FILE,OFFSET,SIZELIMIT"])
    devices = json.loads(out or '{"loopdevices": []}')["loopdevices"]
    for dev in devices:
        dev["back-file"] = (dev.get("back-file") or "").removesuffix(" (deleted)")
    return devices


def _tcp_banner(address: str, port: int, timeout: float = 2.0) -> bytes | None:
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            return s.recv(64)
    except OSError:
        return None


def _wait_for(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _sshd_version() -> tuple[int, int]:
    out = _run([_binary("sshd"), "-V"]).stderr
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _root_password_locked() -> bool:
    """sshd without PAM refuses a root whose password field is locked ("!..."), even for keys."""
    with contextlib.suppress(OSError):
        for line in Path("/etc/shadow").read_text().splitlines():
            if line.startswith("root:"):
                return line.split(":")[1].startswith("!")
    return False


# ---------------------------------------------------------------- slots and paths


def slot_dir(slot: int) -> Path:
    return LAB_ROOT / f"slot{slot}"


def _lock_path(slot: int) -> Path:
    return LAB_ROOT / f"slot{slot}.lock"


def bridge_name(slot: int) -> str:
    """The slot's lab bridge in the machine's network namespace (full hosts only)."""
    return f"klab{slot}"


def veth_name(slot: int, index: int) -> str:
    """The machine's end of host ``index``'s (1, 2, ...) veth pair; the host's end is its eth0."""
    return f"klab{slot}h{index}"


def bridge_address(slot: int) -> str:
    return f"{NET_PREFIX}.{slot}.1"


def host_address(slot: int, index: int, light: bool) -> str:
    """Host ``index`` (1, 2, ...): a full host on the slot's bridge, a light host on the loopback."""
    return f"127.0.{slot}.{index + 1}" if light else f"{NET_PREFIX}.{slot}.{index + 1}"


def lab_links(slot: int) -> list[str]:
    """The slot's bridge and veths that exist in the machine's network namespace."""
    ip = which("ip")
    if ip is None:
        return []
    out = _run([ip, "-o", "link", "show"]).stdout
    names = [line.split(":", 2)[1].strip().split("@")[0] for line in out.splitlines() if line.count(":") >= 2]
    return [n for n in names if re.fullmatch(rf"klab{slot}(h\d+)?", n)]


def vg_name(slot: int, hostname: str) -> str:
    return f"kerub_{hostname}" if slot == DEFAULT_SLOT else f"kerub{slot}_{hostname}"


def _try_lock(slot: int) -> int | None:
    """The slot's lock held by a new fd, or None when a live process holds it."""
    LAB_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
    while True:
        fd = os.open(_lock_path(slot), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        # The holder before us may have unlinked the file after we opened it: lock the live one.
        try:
            if os.stat(_lock_path(slot)).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _unlock(fd: int, slot: int, remove: bool) -> None:
    if remove:
        with contextlib.suppress(FileNotFoundError):
            _lock_path(slot).unlink()
    os.close(fd)


def _read_state(slot: int) -> dict | None:
    try:
        return json.loads((slot_dir(slot) / "state.json").read_text())
    except (OSError, ValueError):
        return None


def _slots_on_disk() -> list[int]:
    if not LAB_ROOT.is_dir():
        return []
    found = set()
    for entry in LAB_ROOT.iterdir():
        m = re.fullmatch(r"slot(\d+)(\.lock)?", entry.name)
        if m:
            found.add(int(m.group(1)))
    return sorted(found)


# ---------------------------------------------------------------- one host


@dataclass
class LabHost:
    """One lab host: its own mount, UTS and pid namespaces, sshd (and for a full host libvirtd,
    virtlogd and an LVM volume group)."""

    name: str
    address: str
    port: int
    dir: Path
    client_key: Path
    known_hosts: Path
    light: bool
    vg: str | None = None
    pv_file: Path | None = None
    pv_loop: str | None = None
    host_uuid: str | None = None
    host_key_fingerprint: str = ""
    host_public_key: str = ""
    init_pid: int = 0
    init_start: int = 0
    unshare_pid: int = 0
    pidns: int = 0
    _holder: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    # ----- paths

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh" / "ssh_host_ed25519_key"

    @property
    def sshd_config(self) -> Path:
        return self.dir / "sshd_config"

    # ----- commands inside the host

    def run(
        self,
        cmd: str | Sequence[str],
        *,
        check: bool = False,
        timeout: float = 120,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command as root inside this host's namespaces (its network too: a full host's own,
        a light host's is the machine's), not over ssh: a shell command line for a str, an argv for a
        sequence. Tests use it to see the truth on the host."""
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        proc = subprocess.run(
            [_binary("nsenter"), "-t", str(self.init_pid), "-m", "-u", "-p", "-n", "--", *argv],
            capture_output=True, text=True, timeout=timeout, input=input,
            env=HOST_ENV, cwd="/", stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise LabError(
                f"{self.name}: {cmd!r} failed ({proc.returncode}): {proc.stderr.strip()}"
            )
        return proc

    def virsh(self, args: str | Sequence[str], *, check: bool = False, timeout: float = 120):
        """virsh -c qemu:///system ARGS inside this host (its own libvirtd)."""
        argv = shlex.split(args) if isinstance(args, str) else list(args)
        return self.run(["virsh", "-c", "qemu:///system", *argv], check=check, timeout=timeout)

    def ssh_argv(self, *options: str) -> list[str]:
        """An ssh command line that logs in to this host as root with the lab's client key and
        checks the host key against the lab's known_hosts."""
        return [
            _binary("ssh"), "-F", "/dev/null", "-i", str(self.client_key),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10",
            *options, "-p", str(self.port), f"root@{self.address}",
        ]

    def ssh(self, cmd: str, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command on this host over ssh, as a client of the product would."""
        return subprocess.run(
            [*self.ssh_argv(), cmd], capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def pids(self) -> list[int]:
        """Global pids of every live process of this host (its pid namespace)."""
        return pids_in_pidns(self.pidns) if self.pidns else []

    # ----- sshd

    def sshd_pid(self) -> int | None:
        """Global pid of the listening sshd, or None when it is not running."""
        try:
            local = int((Path(f"/proc/{self.init_pid}/root/run/sshd.pid")).read_text())
        except (OSError, ValueError):
            return None
        for pid in self.pids():
            if _nspid(pid) == local and _is_sshd(pid):
                return pid
        return None

    def power_off(self) -> None:
        """Pull the plug: SIGKILL the host's init, so the kernel kills everything in its pid namespace
        at once (qemu, sshd, libvirtd, the storage servers) and a full host's network namespace goes with
        its veth. Nothing is told first: to the rest of the lab and to the product the host just stops
        answering. The host stays in the lab's list (down() cleans it as after a crash)."""
        victims = {p: process_start(p) for p in self.pids()}
        if self.init_pid and process_start(self.init_pid) == self.init_start:
            os.kill(self.init_pid, signal.SIGKILL)
        _wait_for(lambda: not [p for p, start in victims.items()
                               if process_start(p) == start and _process_state(p) not in (None, "Z")],
                  20, f"the processes of {self.name} to die", 0.02)

    def stop_sshd(self, sessions: bool = False) -> None:
        """Stop the listening sshd (the address then refuses connections). With sessions=True
        also kill every open ssh session, as if the host went away."""
        victims = [p for p in (self.sshd_pid(),) if p]
        if sessions:
            victims += [p for p in self.pids() if _is_sshd(p)]
        for pid in set(victims):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            Path(f"/proc/{self.init_pid}/root/run/sshd.pid").unlink()
        _wait_for(lambda: _tcp_banner(self.address, self.port, 0.5) is None, 10,
                  f"sshd of {self.name} to stop")

    def start_sshd(self) -> None:
        """Start sshd again (after stop_sshd) and wait until it serves its current host key."""
        if self.sshd_pid():
            raise LabError(f"sshd of {self.name} is already running")
        self.run([_binary("sshd"), "-f", str(self.sshd_config), "-E", str(self.dir / "sshd.log")],
                 check=True)
        self._wait_sshd_key()

    def replace_host_key(self) -> str:
        """Give this host a new ed25519 host key (sshd re-reads it on SIGHUP), update the lab's
        known_hosts and the host's attributes; returns the new fingerprint."""
        tmp = self.host_key.with_name("new_host_key")
        for p in (tmp, tmp.with_suffix(".pub")):
            p.unlink(missing_ok=True)
        _check([_binary("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", f"root@{self.name}",
                "-f", str(tmp)])
        os.replace(tmp.with_suffix(".pub"), self.host_key.with_suffix(".pub"))
        os.replace(tmp, self.host_key)
        self._load_host_key()
        pid = self.sshd_pid()
        if pid:
            os.kill(pid, signal.SIGHUP)
        _rewrite_known_hosts(self.known_hosts, self)
        if pid:
            self._wait_sshd_key()
        return self.host_key_fingerprint

    def reset(self) -> None:
        """Undo what a test did to this host: sshd running, the lab's client key the only
        authorized key; on a full host no domains, no LVs, no iSCSI target and no NFS export."""
        if not self.sshd_pid():
            self.start_sshd()
        script = [
            "umask 077; mkdir -p /root/.ssh",
            f"cat {q(self.client_key.with_suffix('.pub'))} > /root/.ssh/authorized_keys",
        ]
        if not self.light:
            script += [
                f"rm -f {LVM_DELAY_FILE} {LVM_PHASE_FILE}",
                'for d in $(virsh -q list --all --name); do virsh -q destroy "$d" >/dev/null 2>&1;'
                ' virsh -q undefine --nvram "$d" >/dev/null 2>&1 ||'
                ' virsh -q undefine "$d" >/dev/null; done',
                f'if [ -n "$(lvs --noheadings -o lv_name {q(self.vg)} 2>/dev/null)" ]; then'
                f" lvremove -qq -y {q(self.vg)} 2>/dev/null; fi",
                f"if [ -S {TGTD_SOCKET} ]; then tgtadm --lld iscsi --mode target --op show |"
                " sed -n 's/^Target \\([0-9]*\\):.*/\\1/p' | while read -r t; do"
                ' tgtadm --lld iscsi --mode target --op delete --force --tid "$t"; done; fi',
                # what the product's ganesha builders added: their %include lines and files
                f"if [ -s {GANESHA_PID} ] && [ -d /etc/ganesha/kerub ]; then rm -rf /etc/ganesha/kerub &&"
                f" printf %s {q(GANESHA_CONF)} > /etc/ganesha/ganesha.conf &&"
                f' kill -HUP "$(cat {GANESHA_PID})"; fi',
            ]
        self.run("\n".join(script), check=True)

    def delay_lvm(self, subcommand: str | None, before: float = 0, after: float = 0, skip: int = 0) -> None:
        """Make the host's lvm wrapper sleep ``before`` seconds before the real ``subcommand``
        (lvcreate, lvremove...) and ``after`` seconds after it, once ``skip`` calls of it went
        through undelayed; None removes the delay."""
        if subcommand is None:
            self.run(f"rm -f {LVM_DELAY_FILE} {LVM_PHASE_FILE}", check=True)
            return
        if not re.fullmatch(r"[a-z]+", subcommand):
            raise LabError(f"not an lvm subcommand: {subcommand!r}")
        self.run(f"rm -f {LVM_PHASE_FILE}; echo {q(f'{subcommand} {before:g} {after:g} {int(skip)}')} > {LVM_DELAY_FILE}",
                 check=True)

    def lvm_phase(self) -> tuple[str, int, str] | None:
        """(phase, wrapper pid in the host's pid namespace, subcommand) of the delayed lvm command:
        "before" it runs, "after" it ran, "done"; None before any."""
        out = self.run(f"cat {LVM_PHASE_FILE} 2>/dev/null || true").stdout.split()
        return (out[0], int(out[1]), out[2]) if len(out) >= 3 else None

    def _load_host_key(self) -> None:
        line = self.host_key.with_suffix(".pub").read_text().strip()
        self.host_public_key = line
        self.host_key_fingerprint = fingerprint(line)

    def _wait_sshd_key(self, timeout: float = 20) -> None:
        _wait_serving_keys([self], timeout)

    def to_state(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}

    @classmethod
    def from_state(cls, d: dict) -> LabHost:
        kw = dict(d)
        for k in ("dir", "client_key", "known_hosts", "pv_file"):
            if kw.get(k) is not None:
                kw[k] = Path(kw[k])
        return cls(**kw)


def _is_sshd(pid: int) -> bool:
    argv0 = (_cmdline(pid) or [""])[0]
    return argv0.startswith("sshd:") or Path(argv0).name == "sshd"


def _wait_serving_keys(hosts: Sequence[LabHost], timeout: float) -> None:
    """Wait until each host's sshd answers with the host's current key (one ssh-keyscan per
    port for all hosts at once: starting 20 hosts must not cost 20 scans)."""
    pending = {(h.address, h.port): h for h in hosts}

    def all_serve() -> bool:
        for port in {p for _, p in pending}:
            addresses = [a for a, p in pending if p == port]
            scan = _run([_binary("ssh-keyscan"), "-T", "2", "-t", "ed25519", "-p", str(port),
                         *addresses], timeout=30)
            for line in scan.stdout.splitlines():
                fields_ = line.split()
                if line.startswith("#") or len(fields_) < 3:
                    continue
                address = fields_[0].removeprefix("[").split("]")[0]
                h = pending.get((address, port))
                if h is not None and fields_[2] == h.host_public_key.split()[1]:
                    del pending[(address, port)]
        return not pending

    _wait_for(all_serve, timeout, "sshd of " + ", ".join(h.name for h in pending.values())
              + " to serve its host key", 0.05)


def _nspid(pid: int) -> int | None:
    """The pid of a process as seen inside its own (innermost) pid namespace."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return None


def _rewrite_known_hosts(path: Path, *changed: LabHost, hosts: Sequence[LabHost] = ()) -> None:
    """known_hosts lines for the given hosts replace the lines of those addresses."""
    entries: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                entries[line.split()[0]] = line
    for h in (*hosts, *changed):
        key = h.address if h.port == 22 else f"[{h.address}]:{h.port}"
        entries[key] = f"{key} {' '.join(h.host_public_key.split()[:2])}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in entries.values()))
    os.replace(tmp, path)


# ---------------------------------------------------------------- the lab


class Lab:
    """A set of lab hosts in one slot. Slot N puts host i at 198.18.N.(i+1):22 on the bridge klabN
    (light hosts: 127.0.N.(i+1):22) and its files under LAB_ROOT/slotN; up() cleans whatever a
    previous run left in the slot first."""

    def __init__(self, slot: int, hosts: list[LabHost], light: bool, lock_fd: int | None = None):
        self.slot = slot
        self.hosts = hosts
        self.light = light
        self._lock_fd = lock_fd

    @property
    def dir(self) -> Path:
        return slot_dir(self.slot)

    @property
    def client_key(self) -> Path:
        return self.dir / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    def __repr__(self) -> str:
        kind = "light " if self.light else ""
        return f"<Lab slot {self.slot}: {len(self.hosts)} {kind}hosts {[h.name for h in self.hosts]}>"

    # ----- up

    @classmethod
    def up(
        cls,
        count: int,
        light: bool = False,
        *,
        slot: int | None = None,
        prefix: str | None = None,
        pv_size: int | Sequence[int] = DEFAULT_PV_SIZE,
        timeout: float = UP_TIMEOUT,
    ) -> Lab:
        """Bring up `count` hosts. slot=None takes a free slot from AUTO_SLOTS and keeps it locked
        by this process until down() (for test sessions; a slot whose holder died is cleaned by
        the next user). An explicit slot (the command line) outlives this process. ``pv_size`` is
        each full host's PV size, or one size per host."""
        if not 1 <= count <= 250:
            raise LabError(f"host count must be 1..250, not {count}")
        sizes = [pv_size] * count if isinstance(pv_size, int) else list(pv_size)
        if len(sizes) != count:
            raise LabError(f"{len(sizes)} PV sizes for {count} hosts")
        if prefix is not None and not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", prefix):
            raise LabError(f"host name prefix must match [a-z][a-z0-9-]{{0,30}}: {prefix!r}")
        reason = missing_prerequisites(light)
        if reason:
            raise LabError(reason)
        if slot is None:
            _clean_stale_auto_slots()
            for candidate in AUTO_SLOTS:
                fd = _try_lock(candidate)
                if fd is not None:
                    slot, keep_lock = candidate, True
                    break
            else:
                raise LabError(f"no free lab slot in {AUTO_SLOTS}")
        else:
            if not 0 <= slot <= 255:
                raise LabError(f"slot must be 0..255, not {slot}")
            fd = _try_lock(slot)
            if fd is None:
                raise LabError(f"lab slot {slot} is in use by a running process")
            keep_lock = False
        try:
            _clean_slot(slot)
            lab = cls(slot, [], light, fd if keep_lock else None)
            try:
                lab._bring_up(count, prefix or ("light" if light else "lab"), sizes, timeout)
            except BaseException:
                _clean_slot(slot, lab.hosts)
                raise
        except BaseException:
            _unlock(fd, slot, remove=True)
            raise
        if not keep_lock:
            _unlock(fd, slot, remove=True)
        return lab

    def _save_state(self, phase: str) -> None:
        state = {
            "slot": self.slot,
            "light": self.light,
            "boot_id": boot_id(),
            "phase": phase,
            "owner_pid": os.getpid(),
            "hosts": [h.to_state() for h in self.hosts],
        }
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.dir / "state.json")

    def _bring_up(self, count: int, prefix: str, pv_sizes: Sequence[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self.dir.mkdir(mode=0o755, parents=True)
        bin_dir = self.dir / "bin"
        bin_dir.mkdir()
        for script in ("nsinit.py", "lvmap.py"):
            shutil.copy2(HERE / script, bin_dir / script)
        for i in range(1, count + 1):
            name = f"{prefix}{i}"
            self.hosts.append(LabHost(
                name=name, address=host_address(self.slot, i, self.light), port=SSH_PORT,
                dir=self.dir / name, client_key=self.client_key, known_hosts=self.known_hosts,
                light=self.light,
                vg=None if self.light else vg_name(self.slot, name),
                pv_file=None if self.light else self.dir / name / "pv.img",
                host_uuid=None if self.light else str(uuid.uuid4()),
            ))
        # Recorded before anything outside the slot dir (loop devices, /dev/VG) exists.
        self._save_state("preparing")
        _check([_binary("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", "kerub-lab-client",
                "-f", str(self.client_key)])
        hosts_file = self.dir / "hosts"
        hosts_file.write_text(
            Path("/etc/hosts").read_text().rstrip("\n") + "\n# kerub lab hosts\n"
            + "".join(f"{h.address} {h.name}\n" for h in self.hosts)
        )
        sshd_extra = _sshd_extra_options()
        _generate_host_keys(self.hosts)
        for h, pv_size in zip(self.hosts, pv_sizes, strict=True):
            self._prepare_host(h, pv_size, sshd_extra)
        self._save_state("starting")
        for h in self.hosts:
            h._holder = subprocess.Popen(
                [_binary("unshare"), "--mount", "--uts", "--pid", *([] if self.light else ["--net"]),
                 "--fork", "--mount-proc",
                 "--propagation", "private", SYSTEM_PYTHON, "-I", "-S",
                 str(bin_dir / "nsinit.py"), str(h.dir / "setup.sh"), str(h.dir / "init.log")],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True, env=HOST_ENV, cwd="/",
            )
            h.unshare_pid = h._holder.pid
        self._save_state("starting")
        if not self.light:
            self._connect_network()
        self._wait_ready(deadline)
        self._save_state("starting")
        _rewrite_known_hosts(self.known_hosts, hosts=self.hosts)
        # setup.sh waited for sshd's pid file, which sshd writes once it listens.
        self._save_state("up")

    def _connect_network(self) -> None:
        """The slot's bridge, and each host's veth pair: eth0 in the host's network namespace, the
        other end on the bridge (one `ip -batch` for all). The host's setup.sh waits for net.ready,
        then gives eth0 its address."""
        for h in self.hosts:
            h.init_pid = _wait_for(lambda h=h: _child_of(h.unshare_pid), 5, f"init of {h.name}")
        self._save_state("starting")
        bridge = bridge_name(self.slot)
        batch = [f"link add name {bridge} type bridge", f"addr add {bridge_address(self.slot)}/24 dev {bridge}",
                 f"link set {bridge} up"]
        for i, h in enumerate(self.hosts, 1):
            veth = veth_name(self.slot, i)
            batch += [f"link add name {veth} type veth peer name eth0 netns {h.init_pid}",
                      f"link set {veth} master {bridge} up"]
        _check([_binary("ip"), "-batch", "-"], input="\n".join(batch) + "\n")
        for h in self.hosts:
            (h.dir / "net.ready").touch()

    def _wait_ready(self, deadline: float) -> None:
        pending = {h._holder.stdout.fileno(): h for h in self.hosts}
        buffers: dict[int, bytes] = {fd: b"" for fd in pending}
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LabError("timed out starting " + ", ".join(h.name for h in pending.values()))
            readable, _, _ = select.select(list(pending), [], [], left)
            for fd in readable:
                chunk = os.read(fd, 256)
                buffers[fd] += chunk
                if b"\n" not in buffers[fd] and chunk:
                    continue
                h = pending.pop(fd)
                h._holder.stdout.close()
                line = buffers[fd].decode(errors="replace").strip()
                if line != "ready":
                    log = (h.dir / "init.log").read_text(errors="replace")[-3000:]
                    raise LabError(f"{h.name} failed to start ({line or 'no answer'}):\n{log}")
                h.init_pid = _wait_for(lambda: _child_of(h.unshare_pid), 5, f"init of {h.name}")
                h.init_start = process_start(h.init_pid) or 0
                h.pidns = _pidns(h.init_pid) or 0

    def _prepare_host(self, h: LabHost, pv_size: int, sshd_extra: str) -> None:
        h._load_host_key()
        root_home = h.dir / "root"
        root_home.mkdir(mode=0o700)
        for dotfile in (".bashrc", ".profile"):
            if Path("/etc/skel", dotfile).is_file():
                shutil.copy2(Path("/etc/skel", dotfile), root_home / dotfile)
        (root_home / ".ssh").mkdir(mode=0o700)
        (root_home / ".ssh" / "authorized_keys").write_text(
            self.client_key.with_suffix(".pub").read_text())
        os.chmod(root_home / ".ssh" / "authorized_keys", 0o600)
        tmp_dir = h.dir / "tmp"
        tmp_dir.mkdir()
        os.chmod(tmp_dir, 0o1777)
        h.sshd_config.write_text(_sshd_config(h, sshd_extra))
        mounts = [
            "mount -t tmpfs -o mode=0755,size=64m kerub-lab-run /run",
            "mkdir -p /run/sshd /run/lock /run/lvm /run/libvirt /run/kerub-lab /run/tgtd /run/ganesha /run/rpcbind",
            "chmod 1777 /run/lock",
            f"mount --bind {q(self.dir / 'hosts')} /etc/hosts",
            f"mount --bind {q(root_home)} /root",
            f"mount --bind {q(tmp_dir)} /tmp",
        ]
        daemons: list[str] = []
        waits = ["/run/sshd.pid"]
        ready: list[str] = []
        if not h.light:
            mounts += self._prepare_full_host(h, pv_size)
            mounts += _network_setup(h)
            daemons += ["virtlogd -d", "libvirtd -d"]
            waits += ["/run/libvirt/libvirt-sock", "/run/libvirt/virtlogd-sock"]
            if which("tgtd") and which("tgtadm"):
                daemons.append("tgtd")
                waits.append(TGTD_SOCKET)
            if _has_ganesha():
                daemons += ["rpcbind -w", f"ganesha.nfsd -L {q(h.dir / 'ganesha.log')} "
                            f"-f /etc/ganesha/ganesha.conf -p {GANESHA_PID}"]
                waits.append(GANESHA_PID)
                # registered with rpcbind (mountd last): exports and SIGHUPs are taken from then on
                ready.append("rpcinfo -p 127.0.0.1 2>/dev/null | grep -q mountd")
        daemons.append(f"{q(_binary('sshd'))} -f {q(h.sshd_config)} -E {q(h.dir / 'sshd.log')}")
        if not h.light and h is self.hosts[0]:
            # libvirtd probes qemu on first use; start that now, in the background, for everyone.
            daemons.append("(virsh -c qemu:///system capabilities >/dev/null 2>&1 &)")
        wait_loop = [
            f"i=0; while [ ! -e {q(path)} ]; do i=$((i+1)); "
            f"if [ $i -gt 3000 ]; then echo 'no {path}' >&2; exit 1; fi; sleep 0.01; done"
            for path in waits
        ] + [
            f"i=0; until {check}; do i=$((i+1)); "
            f"if [ $i -gt 3000 ]; then echo {q('not ready: ' + check)} >&2; exit 1; fi; sleep 0.01; done"
            for check in ready
        ]
        (h.dir / "setup.sh").write_text(
            "# Runs inside the host's fresh namespaces (see tests/lab/nsinit.py).\n"
            f"hostname {q(h.name)}\n" + "\n".join(mounts + daemons + wait_loop) + "\n"
        )

    def _prepare_full_host(self, h: LabHost, pv_size: int) -> list[str]:
        assert h.vg and h.pv_file
        etc = h.dir / "etc-libvirt"
        etc.mkdir()
        (etc / "qemu").mkdir()
        if Path("/etc/libvirt/nwfilter").is_dir():
            shutil.copytree("/etc/libvirt/nwfilter", etc / "nwfilter")
        (etc / "libvirtd.conf").write_text(
            f'host_uuid = "{h.host_uuid}"\n'
            'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n'
        )
        (etc / "virtlogd.conf").write_text("")
        (etc / "libvirt.conf").write_text('uri_default = "qemu:///system"\n')
        (etc / "qemu.conf").write_text(
            "# Lab host: qemu runs as root rather than loosening /dev/kvm; no security driver\n"
            "# (AppArmor profiles would be written to the machine's /etc).\n"
            'user = "root"\ngroup = "root"\nsecurity_driver = "none"\n'
            "# Every lab libvirtd shares the machine's one cgroup tree: two hosts running a domain\n"
            "# with the same name and id would share (and tear down) one machine cgroup.\n"
            "cgroup_controllers = [ ]\n"
            f'spice_listen = "{h.address}"\nvnc_listen = "{h.address}"\n'
            f'migration_address = "{h.address}"\nmigration_host = "{h.address}"\n'
        )
        # The directories the Debian packages create, so the product finds a usual host.
        for d, mode in (("var-lib-libvirt", 0o755), ("var-lib-libvirt/images", 0o711),
                        ("var-lib-libvirt/boot", 0o711), ("var-lib-libvirt/qemu", 0o751),
                        ("var-log-libvirt", 0o755), ("var-log-libvirt/qemu", 0o755)):
            (h.dir / d).mkdir()
            os.chmod(h.dir / d, mode)
        # One cache for the slot's hosts: qemu's capabilities are probed (1-2 s) once, not per host.
        cache = self.dir / "var-cache-libvirt"
        cache.mkdir(mode=0o755, exist_ok=True)
        etc_lvm = h.dir / "etc-lvm"
        etc_lvm.mkdir()
        for d in ("backup", "archive", "cache"):
            (etc_lvm / d).mkdir(mode=0o700)
        if Path("/etc/lvm/profile").is_dir():
            shutil.copytree("/etc/lvm/profile", etc_lvm / "profile")
        with open(h.pv_file, "wb") as f:
            f.truncate(pv_size)
        h.pv_loop = _check([_binary("losetup"), "--find", "--show", str(h.pv_file)]).strip()
        self._save_state("preparing")
        (etc_lvm / "lvm.conf").write_text(_lvm_conf(h.pv_loop))
        dev_dir = Path("/dev") / h.vg
        real_lvm = os.path.realpath(_binary("lvm"))
        wrapper = h.dir / "lvm-wrapper"
        wrapper.write_text(_lvm_wrapper(self.dir / "bin" / "lvmap.py", h.pv_file))
        wrapper.chmod(0o755)
        real = "/run/kerub-lab/real/lvm"
        # kerub-tui's own directory (images, seeds), each host its own, empty. On the root file system all
        # hosts share, a test's rmdir of it in one host (or a file storage made there) reached every other
        # host: an rmdir of a mount point elsewhere detaches the mounts on it in every namespace. The empty
        # directory on the root is left there for good: removing it would do just that to another slot.
        (h.dir / "var-lib-kerub-tui").mkdir(mode=0o755)
        storage_mounts = [f"mkdir -p {KERUB_DIR}", f"mount --bind {q(h.dir / 'var-lib-kerub-tui')} {KERUB_DIR}"]
        if _has_ganesha():
            etc_ganesha = h.dir / "etc-ganesha"
            etc_ganesha.mkdir()
            (etc_ganesha / "ganesha.conf").write_text(GANESHA_CONF)
            storage_mounts.append(f"mount --bind {q(etc_ganesha)} /etc/ganesha")
            if Path("/var/lib/nfs").is_dir():  # ganesha's NFSv4 recovery files: each host its own
                (h.dir / "var-lib-nfs").mkdir()
                storage_mounts.append(f"mount --bind {q(h.dir / 'var-lib-nfs')} /var/lib/nfs")
        return [
            *storage_mounts,
            f"mount --bind {q(etc)} /etc/libvirt",
            f"mount --bind {q(h.dir / 'var-lib-libvirt')} /var/lib/libvirt",
            f"mount --bind {q(h.dir / 'var-log-libvirt')} /var/log/libvirt",
            f"mount --bind {q(cache)} /var/cache/libvirt",
            f"mount --bind {q(etc_lvm)} /etc/lvm",
            "mkdir -p /run/kerub-lab/real", f"touch {real}",
            f"mount --bind {q(real_lvm)} {real}",
            f"mount --bind {q(wrapper)} {q(real_lvm)}",
            f"{real} pvcreate -qq {q(h.pv_loop)}",
            f"{real} vgcreate -qq {q(h.vg)} {q(h.pv_loop)}",
            # vgcreate refuses an existing /dev/VG, so the mount point comes after it. /dev is
            # shared: the empty directory shows everywhere, the tmpfs on it only in this host.
            f"mkdir {q(str(dev_dir))}",
            f"mount -t tmpfs -o mode=0755,size=1m kerub-lab-vg {q(str(dev_dir))}",
        ]

    # ----- down

    def down(self) -> None:
        """Kill every process of the lab (qemu included), detach its loop devices, remove its
        files. Safe to call more than once."""
        try:
            _clean_slot(self.slot, self.hosts)
        finally:
            if self._lock_fd is not None:
                _unlock(self._lock_fd, self.slot, remove=True)
                self._lock_fd = None

    def reset(self) -> None:
        """LabHost.reset() on every host: what one test did does not leak into the next."""
        for h in self.hosts:
            h.reset()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    @classmethod
    def attach(cls, slot: int = DEFAULT_SLOT) -> Lab:
        """The lab another process brought up in this slot (from its state file)."""
        state = _read_state(slot)
        if state is None or state.get("phase") != "up":
            raise LabError(f"no lab is up in slot {slot}")
        if state.get("boot_id") != boot_id():
            raise LabError(f"the lab in slot {slot} is from before a reboot; run down")
        hosts = [LabHost.from_state(h) for h in state["hosts"]]
        for h in hosts:
            if process_start(h.init_pid) != h.init_start:
                raise LabError(f"host {h.name} of slot {slot} is gone; run down, then up")
        return cls(slot, hosts, state["light"])


def q(value: str | Path) -> str:
    return shlex.quote(str(value))


def _child_of(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def _generate_host_keys(hosts: Sequence[LabHost]) -> None:
    """Each host's directory and ed25519 host key (the ssh-keygen runs in parallel)."""
    procs = []
    for h in hosts:
        h.dir.mkdir(mode=0o755)
        (h.dir / "ssh").mkdir(mode=0o700)
        argv = [_binary("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", f"root@{h.name}",
                "-f", str(h.host_key)]
        procs.append((argv, subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    failed = []
    for argv, proc in procs:
        _, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            failed.append(f"{shlex.join(argv)}: {err.decode(errors='replace').strip()}")
    if failed:
        raise LabError("ssh-keygen failed: " + "; ".join(failed))


def _has_ganesha() -> bool:
    return all(which(b) for b in ("ganesha.nfsd", "rpcbind", "rpcinfo")) and Path("/etc/ganesha").is_dir()


def _network_setup(h: LabHost) -> list[str]:
    """setup.sh's lines that wait for the host's eth0 (Lab._connect_network) and give it its address."""
    flag = q(h.dir / "net.ready")
    return [
        f"i=0; while [ ! -e {flag} ]; do i=$((i+1)); "
        "if [ $i -gt 3000 ]; then echo 'no network' >&2; exit 1; fi; sleep 0.01; done",
        f"ip -batch - <<'EOF'\nlink set lo up\naddr add {h.address}/24 dev eth0\nlink set eth0 up\nEOF",
    ]


def _sshd_extra_options() -> str:
    extra = ""
    if _sshd_version() >= (9, 8):
        # Newer sshd throttles addresses after failed logins; tests fail logins on purpose.
        extra += "PerSourcePenalties no\n"
    return extra


def _sshd_config(h: LabHost, extra: str) -> str:
    return (
        f"# kerub lab host {h.name}\n"
        f"ListenAddress {h.address}:{h.port}\n"
        f"HostKey {h.host_key}\n"
        "PidFile /run/sshd.pid\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        f"UsePAM {'yes' if _root_password_locked() else 'no'}\n"
        "AuthorizedKeysFile .ssh/authorized_keys\n"
        "MaxStartups 200:30:400\n"
        "MaxSessions 200\n"
        "AllowTcpForwarding yes\n"
        "AllowStreamLocalForwarding yes\n"
        "X11Forwarding no\n"
        "PrintMotd no\n"
        "UseDNS no\n"
        "Subsystem sftp internal-sftp\n"
        + extra
    )


def _lvm_conf(pv_loop: str) -> str:
    accept = f'[ "a|^{pv_loop}$|", "r|.*|" ]'
    return (
        "# kerub lab: this host sees only its own PV; no device-mapper here, so no activation.\n"
        "devices {\n"
        f"    filter = {accept}\n"
        f"    global_filter = {accept}\n"
        "    use_devicesfile = 0\n"
        "    obtain_device_list_from_udev = 0\n"
        "}\n"
        "global {\n"
        "    activation = 0\n"
        "}\n"
        "activation {\n"
        "    udev_sync = 0\n"
        "    udev_rules = 0\n"
        "    monitoring = 0\n"
        "}\n"
    )


def _lvm_wrapper(lvmap: Path, pv_file: Path) -> str:
    return f"""#!/bin/sh
# kerub lab only: bind-mounted over lvm inside one lab host. Runs the real lvm, then (for
# commands that may change LVs) maps the LVs to loop devices at /dev/VG/LV (tests/lab/lvmap.py).
real=/run/kerub-lab/real/lvm
cmd=${{0##*/}}
if [ "$cmd" = lvm ]; then sub=${{1:-}}; else sub=$cmd; set -- "$cmd" "$@"; fi
case " {LVM_READ_ONLY} " in
    *" $sub "*) exec "$real" "$@" ;;
esac
if [ -z "$sub" ]; then exec "$real"; fi
# A test's delay around one subcommand: "SUBCOMMAND BEFORE AFTER SKIP" (seconds; SKIP calls pass
# undelayed first) in {LVM_DELAY_FILE}; the phase ("before", "after", "done"), this wrapper's pid and
# the subcommand go to {LVM_PHASE_FILE}.
delay=
if [ -r {LVM_DELAY_FILE} ]; then
    read -r delayed before after skip < {LVM_DELAY_FILE}
    if [ "$delayed" = "$sub" ]; then
        if [ "${{skip:-0}}" -gt 0 ]; then
            echo "$delayed $before $after $((skip - 1))" > {LVM_DELAY_FILE}
        else
            delay=1
        fi
    fi
fi
if [ -n "$delay" ]; then echo "before $$ $sub" > {LVM_PHASE_FILE}; sleep "$before"; fi
"$real" "$@"
rc=$?
{q(SYSTEM_PYTHON)} -I -S {q(lvmap)} "$real" {q(pv_file)}
if [ -n "$delay" ]; then
    echo "after $$ $sub $rc" > {LVM_PHASE_FILE}; sleep "$after"; echo "done $$ $sub $rc" > {LVM_PHASE_FILE}
fi
exit $rc
"""


# ---------------------------------------------------------------- cleaning


def _clean_slot(slot: int, hosts: Sequence[LabHost] = ()) -> list[str]:
    """Remove everything the lab made in this slot: processes (by pid, by pid namespace and by
    the slot's path in their command line), loop devices over the slot's files, /dev/VG mount
    points, the slot's files. Works from the state file, from `hosts`, or from nothing."""
    inst = slot_dir(slot)
    done: list[str] = []
    state = _read_state(slot) or {}
    known = [LabHost.from_state(h) for h in state.get("hosts", [])] if state else []
    same_boot = state.get("boot_id") == boot_id()
    by_name = {h.name: h for h in known}
    by_name.update({h.name: h for h in hosts})
    everyone = list(by_name.values())

    victims: set[int] = set()
    namespaces: set[int] = set()
    own_ns = _pidns(os.getpid())
    marker = f"{inst}/bin/nsinit.py"
    for h in everyone:
        if h.init_pid and (h._holder is not None or same_boot) and \
                process_start(h.init_pid) == h.init_start:
            victims.add(h.init_pid)
    for pid in _all_pids():
        argv = _cmdline(pid)
        # Only the slot's unshare and init processes: not, say, an editor open on nsinit.py.
        if marker in argv and (Path(argv[0]).name == "unshare" or argv[0] == SYSTEM_PYTHON):
            victims.add(pid)
    # `unshare` itself (in our pid namespace) is left alone: it reaps the init and exits, so
    # no zombie is left to whoever inherits it. It is killed only if it lingers.
    outer = set()
    for pid in victims:
        ns = _pidns(pid)
        if ns and ns != own_ns:
            namespaces.add(ns)
        else:
            outer.add(pid)
    for ns in namespaces:
        victims.update(pids_in_pidns(ns))
    victims.discard(os.getpid())
    started = {pid: process_start(pid) for pid in victims}
    for pid in victims - outer:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    holders = [h._holder for h in everyone if h._holder is not None]
    for proc in holders:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
        if proc.stdout and not proc.stdout.closed:
            proc.stdout.close()

    def all_dead() -> bool:
        # When a pid namespace's init dies the kernel kills the rest; no one enters it after.
        # (Checked by pid and start time: freed pids and namespace inodes are reused.)
        return not [p for p in victims
                    if process_start(p) == started[p] and _process_state(p) not in (None, "Z")]

    if victims:
        try:
            _wait_for(all_dead, 5, f"the processes of lab slot {slot} to die", 0.02)
        except LabError:
            for pid in victims:
                if process_start(pid) == started[pid]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            _wait_for(all_dead, 20, f"the processes of lab slot {slot} to die", 0.05)
        done.append(f"killed {len(victims)} processes")

    # The veths go with their hosts' network namespaces, but the kernel tears those down in the
    # background: delete them (and the bridge) by name, so the next up can make them again at once.
    for _ in range(100):
        links = lab_links(slot)
        if not links:
            break
        # one ip for all, going on past a veth the kernel took away meanwhile (-force)
        _run([_binary("ip"), "-force", "-batch", "-"], input="".join(f"link del {name}\n" for name in links))
        done.append("deleted links " + " ".join(links))
        time.sleep(0.05)
    else:
        raise LabError(f"network links of slot {slot} stay: {links}")

    prefix = f"{inst}/"
    for _ in range(100):
        ours = [d for d in loop_devices() if d["back-file"].startswith(prefix)]
        if not ours:
            break
        for d in ours:
            _run([_binary("losetup"), "-d", d["name"]])
        done.append("detached " + " ".join(d["name"] for d in ours))
        time.sleep(0.05)
    else:
        raise LabError(f"loop devices of slot {slot} stay attached: {ours}")

    vgs = {h.vg for h in everyone if h.vg}
    if inst.is_dir():
        vgs |= {vg_name(slot, e.name) for e in inst.iterdir()
                if e.is_dir() and (e / "pv.img").exists()}
    mounted = _root_mount_points()
    for vg in vgs:
        dev_dir = Path("/dev") / vg
        if dev_dir.is_dir() and not dev_dir.is_symlink() and str(dev_dir) not in mounted:
            with contextlib.suppress(OSError):
                dev_dir.rmdir()
                done.append(f"removed {dev_dir}")

    leftovers = [m for m in mounted if m.startswith(prefix)]
    if leftovers:
        raise LabError(f"mounts under {inst} in the root namespace: {leftovers}")
    if inst.exists():
        shutil.rmtree(inst)
        done.append(f"removed {inst}")
    return done


def _root_mount_points() -> set[str]:
    with open("/proc/self/mounts") as f:
        return {line.split()[1] for line in f}


def _clean_stale_auto_slots() -> None:
    """Slots of test sessions that died without down(): nobody holds their lock any more."""
    for slot in _slots_on_disk():
        if slot in AUTO_SLOTS:
            with contextlib.suppress(LabError):
                down(slot)


def down(slot: int = DEFAULT_SLOT) -> list[str]:
    """Take down the lab in a slot (after a crash too). Refuses a slot a live process holds."""
    fd = _try_lock(slot)
    if fd is None:
        raise LabError(f"lab slot {slot} is held by a running process (a test session?)")
    try:
        return _clean_slot(slot)
    finally:
        _unlock(fd, slot, remove=True)
        with contextlib.suppress(OSError):
            LAB_ROOT.rmdir()


def down_all() -> dict[int, list[str] | str]:
    """Take down every slot no live process holds; then remove LAB_ROOT if it is empty."""
    report: dict[int, list[str] | str] = {}
    for slot in _slots_on_disk():
        try:
            report[slot] = down(slot)
        except LabError as exc:
            report[slot] = str(exc)
    with contextlib.suppress(OSError):
        LAB_ROOT.rmdir()
    return report


def status() -> list[dict]:
    """What is on disk and alive, per slot."""
    result = []
    loops = loop_devices()
    for slot in _slots_on_disk():
        state = _read_state(slot) or {}
        fd = _try_lock(slot)
        held = fd is None
        if fd is not None:
            _unlock(fd, slot, remove=not slot_dir(slot).exists())
        hosts = []
        for d in state.get("hosts", []):
            h = LabHost.from_state(d)
            alive = bool(h.init_pid) and process_start(h.init_pid) == h.init_start and \
                state.get("boot_id") == boot_id()
            hosts.append({
                "name": h.name, "address": h.address, "port": h.port, "alive": alive,
                "sshd": alive and _tcp_banner(h.address, h.port, 1.0) is not None,
                "processes": len(h.pids()) if alive else 0,
                "vg": h.vg,
                "loops": [lo["name"] for lo in loops if h.pv_file and lo["back-file"] == str(h.pv_file)],
                "fingerprint": h.host_key_fingerprint,
            })
        result.append({
            "slot": slot, "dir": str(slot_dir(slot)), "held_by_live_process": held, "links": lab_links(slot),
            "phase": state.get("phase"), "light": state.get("light"), "hosts": hosts,
        })
    return result
