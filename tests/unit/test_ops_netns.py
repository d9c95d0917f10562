"""A private mount + network namespace for the host-operation tests, and the daemons they run in it.

tgtd, nfs-ganesha (+ rpcbind) and a throwaway libvirtd run inside one namespace with its own loopback
and its own tmpfs /run, so their well-known ports (3260, 2049, 111) and sockets never collide with
another test, another engineer's lab or the machine's own services; everything started there is
killed at the end (every process whose network namespace is this one, and nothing else).
The tests in this file check the namespace itself; test_ops_iscsi, test_ops_nfs and test_kvm_xml
import the helpers.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def namespace_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a private mount and network namespace"
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def wait_until(predicate, what: str, attempts: int = 300, interval: float = 0.05) -> None:
    """Poll for readiness (not a timed assertion: the bound only keeps a broken daemon from hanging)."""
    for _ in range(attempts):
        if predicate():
            return
        time.sleep(interval)
    raise RuntimeError(f"{what} did not become ready")


def _is_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie holds nothing
    except OSError:
        return True


# getaddrinfo(AI_ADDRCONFIG) (used by SPICE and ganesha) finds no IPv4 address when only a loopback
# has one, and fails even for "127.0.0.1". An unconnected bridge with a documentation-range address
# (TEST-NET-1) satisfies it; nothing is attached to it, so no packet can leave the namespace.
_ADDRCONFIG_BRIDGE = "ip link add kerub-ns0 type bridge && ip addr add 192.0.2.1/32 dev kerub-ns0 && ip link set kerub-ns0 up"


class PrivateNamespace:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.daemons: list[subprocess.Popen[bytes]] = []
        self.holder = subprocess.Popen(
            [
                "unshare", "-m", "-n", "--propagation", "private", "sh", "-c",
                "ip link set lo up && " + _ADDRCONFIG_BRIDGE + " && "
                "mount -t tmpfs -o mode=755 tmpfs /run && echo ready && exec sleep infinity",
            ],
            stdout=subprocess.PIPE,
        )
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != b"ready":
            self.holder.kill()
            raise RuntimeError("the private namespace could not be set up")
        self.pid = self.holder.pid
        self.net_ns = os.readlink(f"/proc/{self.pid}/ns/net")

    def _enter(self) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-m", "-n", "--"]

    def run(self, command: str, *, check: bool = True, timeout: float = 60, input: bytes | None = None
            ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self._enter(), "sh", "-c", command],
            input=input.decode() if input is not None else None,
            capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{command!r} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def python(self, code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run Python code of this project inside the namespace (to reach its loopback)."""
        return subprocess.run(
            [*self._enter(), sys.executable, "-c", code],
            capture_output=True, text=True, timeout=timeout, cwd=REPO,
        )

    def spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen([*self._enter(), *argv], stdout=out, stderr=subprocess.STDOUT)
        self.daemons.append(proc)
        return proc

    def members(self) -> list[int]:
        """Every process in this network namespace, found by its namespace identity (never by name)."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == self.pid:
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/net") == self.net_ns:
                    pids.append(int(entry))
            except OSError:
                continue
        return pids

    def close(self) -> None:
        for proc in self.daemons:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.daemons:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for pid in self.members():  # what the daemons started: qemu, rpcbind, ...
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until(lambda: all(_is_gone(pid) for pid in self.members()), "the namespace's processes to end")
        self.holder.kill()
        self.holder.wait(timeout=5)


# --- daemons ------------------------------------------------------------------------------------


def start_tgtd(ns: PrivateNamespace) -> None:
    if shutil.which("tgtd") is None or shutil.which("tgtadm") is None:
        pytest.skip("tgt (tgtd, tgtadm) is not installed")
    ns.run("mkdir -p /run/tgtd")
    proc = ns.spawn(["tgtd", "-f", "--iscsi", "portal=127.0.0.1:3260"], ns.workdir / "tgtd.log")

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"tgtd exited: {(ns.workdir / 'tgtd.log').read_text()[-500:]}")
        return ns.run("tgtadm --lld iscsi --mode target --op show", check=False).returncode == 0

    wait_until(ready, "tgtd")


def stop_tgtd(ns: PrivateNamespace) -> None:
    """tgtd ignores SIGTERM while it has targets: delete them, then shut it down as its unit does."""
    show = ns.run("tgtadm --lld iscsi --mode target --op show", check=False).stdout
    for line in show.splitlines():
        if line.startswith("Target "):
            tid = line.split()[1].rstrip(":")
            ns.run(f"tgtadm --lld iscsi --mode target --op delete --force --tid {tid}", check=False)
    ns.run("tgtadm --op delete --mode system", check=False)


GANESHA_CORE = """NFS_CORE_PARAM { Protocols = 3, 4; Enable_NLM = false; Enable_RQUOTA = false; }
NFSV4 { Graceless = true; }
"""


def start_ganesha(ns: PrivateNamespace, config: Path) -> Path:
    """rpcbind + ganesha.nfsd with ``config``; returns the pid file (for SIGHUP reloads)."""
    for tool in ("ganesha.nfsd", "rpcbind", "rpcinfo"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (nfs-ganesha, rpcbind)")
    ns.run("mkdir -p /run/ganesha /run/rpcbind && rpcbind -w")
    pid_file = Path("/run/ganesha/ganesha.pid")
    log = ns.workdir / "ganesha.log"
    proc = ns.spawn(["ganesha.nfsd", "-F", "-L", str(log), "-f", str(config), "-p", str(pid_file)], ns.workdir / "ganesha.out")

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"ganesha.nfsd exited: {log.read_text()[-800:] if log.exists() else ''}")
        rpc = ns.run("rpcinfo -p 127.0.0.1", check=False).stdout
        return " 100005 " in f" {rpc} " and "mountd" in rpc and ns.run(f"test -s {pid_file}", check=False).returncode == 0

    wait_until(ready, "ganesha.nfsd", attempts=400)
    return pid_file


def start_libvirtd(ns: PrivateNamespace) -> str:
    """A libvirtd with private config and state; returns the URI to reach it from this process.

    Its unix socket is in the work dir: path sockets are reachable across network namespaces."""
    if shutil.which("libvirtd") is None or shutil.which("qemu-system-x86_64") is None:
        pytest.skip("libvirtd or qemu-system-x86_64 is not installed")
    base = ns.workdir / "libvirt"
    etc, lib, log, sock = (base / d for d in ("etc", "lib", "log", "sock"))
    for d in (lib, log, sock):
        d.mkdir(parents=True)
    shutil.copytree("/etc/libvirt", etc, symlinks=True)
    autostart = etc / "qemu" / "networks" / "autostart"
    if autostart.exists():
        shutil.rmtree(autostart)
    (etc / "libvirtd.conf").write_text(
        f'unix_sock_dir = "{sock}"\nunix_sock_group = "root"\nunix_sock_rw_perms = "0700"\n'
        'auth_unix_rw = "none"\nauth_unix_ro = "none"\nhost_uuid = "5f3e2a10-0000-4000-8000-00000000cafe"\n'
    )
    # qemu as root (not loosening /dev/kvm), no security driver, qemu's stdio in files (no virtlogd)
    (etc / "qemu.conf").write_text(
        'user = "root"\ngroup = "root"\ndynamic_ownership = 0\nremember_owner = 0\n'
        'security_driver = "none"\nstdio_handler = "file"\n'
    )
    ns.run(f"mount --bind {etc} /etc/libvirt && mount --bind {lib} /var/lib/libvirt && mount --bind {log} /var/log/libvirt")
    proc = ns.spawn(["libvirtd"], ns.workdir / "libvirtd.log")
    socket_path = sock / "libvirt-sock"

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"libvirtd exited: {(ns.workdir / 'libvirtd.log').read_text()[-800:]}")
        if not socket_path.exists():
            return False
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(socket_path))
                return True
            except OSError:
                return False

    wait_until(ready, "libvirtd", attempts=400)
    return f"qemu+unix:///system?socket={socket_path}"


@pytest.fixture
def private_ns(tmp_path: Path) -> Iterator[PrivateNamespace]:
    reason = namespace_skip_reason()
    if reason:
        pytest.skip(reason)
    ns = PrivateNamespace(tmp_path)
    try:
        yield ns
    finally:
        ns.close()


# --- the namespace itself -----------------------------------------------------------------------


def test_namespace_has_its_own_loopback_and_run(private_ns: PrivateNamespace, tmp_path: Path) -> None:
    links = private_ns.run("ip -o link show").stdout
    assert "lo:" in links and "UP" in links.split("lo:", 1)[1].splitlines()[0]
    # loopback and the unconnected bridge only: nothing can leave this namespace
    assert sorted(line.split(": ")[1].split("@")[0] for line in links.strip().splitlines()) == ["kerub-ns0", "lo"]
    assert private_ns.run("ip -o link show master kerub-ns0").stdout == ""  # no port on the bridge
    private_ns.run("touch /run/kerub-ns-marker")
    assert not os.path.exists("/run/kerub-ns-marker")
    # a listener inside is invisible outside
    listener = private_ns.spawn([sys.executable, "-c", (
        "import socket,time;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
        "s.bind(('127.0.0.1',3260));s.listen();print('up',flush=True);time.sleep(600)")], tmp_path / "listener.log")
    wait_until(lambda: (tmp_path / "listener.log").read_text().startswith("up"), "listener")
    assert private_ns.python("import socket;socket.create_connection(('127.0.0.1',3260),timeout=5)").returncode == 0
    assert listener.pid in private_ns.members()


def test_close_ends_every_process_inside(tmp_path: Path) -> None:
    reason = namespace_skip_reason()
    if reason:
        pytest.skip(reason)
    ns = PrivateNamespace(tmp_path)
    child = ns.run("setsid sleep 600 > /dev/null 2>&1 & echo $!").stdout.strip()  # detached, not tracked
    assert int(child) in ns.members()
    ns.close()
    assert _is_gone(int(child))
