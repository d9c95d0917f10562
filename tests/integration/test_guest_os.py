"""Real operating systems in lab guests, from media built out of Debian packages (tests/lab/media.py).

All through kerub-tui's command line, as README's "Your first VM" goes. The one Linux boot of the
suite: the Debian 12 cloud image imported from this machine, two VMs made --from it with an ssh key and
user data on two lab hosts (the planner copies the image to the second, checksum verified), each
reaching its login prompt on the serial console with its own name as hostname and the key in place.
Linux guests run under TCG (design section 9: a Linux guest crawls under this machine's nested KVM);
the two boot side by side, once for the module (fixture `guests`): a TCG boot costs minutes of a busy
2-core machine, so every test of a running Debian guest is here and shares them. (GRUB's ISO booted from
an imported image is tests/integration/test_screenshot_lab.py's guest.)

The serial console of a real guest (issue 12), in a terminal, through kerub-tui's own libvirt tunnel,
on one of the two (SERIAL_VM): `kerub-tui console VM --serial` runs under a real pty (stdlib
os.openpty): it shows what the guest prints, what is typed reaches the guest (its login prompt answers
`root` with `Password:`), ctrl+] leaves and the pty's modes (termios.tcgetattr) are what they were
before; through a running `serve` the controller relays the console; read-only mode attaches view-only
and nothing typed reaches the guest; the console's `t` key hands the terminal to the guest; a dropped
SSH connection ends the session and the terminal's modes are back too. That console session is opened
as the VM starts (libvirt lets one session hold a serial console): it is what the two-VM test reads
SERIAL_VM's boot from, and the first serial test goes on with it.

The seed is a CD-ROM on virtio-scsi: Debian's cloud kernel has no AHCI driver, so on SATA (as kerub-tui
first attached it) the guest never saw its seed and cloud-init fell back to DataSourceNone."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import shlex
import shutil
import struct
import subprocess
import sys
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kerub_tui.hosts.facts import IMAGES_DIR
from tests import cliproc
from tests.lab import media

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(2400)]

BOOT_TIMEOUT = 900.0  # a hang guard (not a timing): two TCG boots side by side on a busy 2-core machine
MARK = "KERUB-GUEST-MARK"
VMS = ("deb-alpha", "deb-beta")
SERIAL_VM = VMS[0]  # the guest whose serial console the console tests attach to and type into
PASSWORD = "kerub-serial-1"  # root's, set by cloud-init's chpasswd: the serial console logs in with it
CHPASSWD = f"""chpasswd:
  expire: false
  list: |
    root:{PASSWORD}
"""
SHELL = rf"root@{re.escape(SERIAL_VM)}:~# *$"


@pytest.fixture(scope="session")
def debian_image() -> Path:
    reason = media.missing_prerequisites(image=True)
    if reason:
        pytest.skip(f"media: {reason}")
    return media.debian_cloud_image()


def marker_user_data(extra: str = "") -> str:
    """user-data whose last command prints the hostname and the fingerprints of root's and debian's
    authorized keys on the serial console: no login is needed to see what cloud-init did."""
    script = (
        f'echo "{MARK} host=$(hostname)"; '
        "for f in /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys; do "
        f'[ -f "$f" ] && ssh-keygen -lf "$f" | sed "s|^|{MARK} key $f |"; done; true'
    )
    return "#cloud-config\n" + extra + "runcmd:\n  - [sh, -c, " + _yaml_str(f"({script}) > /dev/ttyS0 2>&1") + "]\n"


def _yaml_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


@contextlib.contextmanager
def kerub_storage(hosts):
    """Each host's /var/lib/kerub-tui (images and seeds) a directory of its own under the lab host's
    directory, bind-mounted in that host's mount namespace only (the lab hosts share the machine's root
    file system: a directory made there would be every host's file storage)."""
    mounted = []
    try:
        for host in hosts:
            private = host.dir / "kerub-tui-storage"
            private.mkdir(exist_ok=True)
            host.run(f"mkdir -p /var/lib/kerub-tui && mount --bind {shlex.quote(str(private))} /var/lib/kerub-tui"
                     f" && mkdir -p -m 0755 {IMAGES_DIR}", check=True)
            mounted.append((host, private))
        yield
    finally:
        for host, private in mounted:
            host.run("umount /var/lib/kerub-tui")
            shutil.rmtree(private, ignore_errors=True)


def kerub(*argv, env, timeout=600) -> subprocess.CompletedProcess:
    return cliproc.kerub(argv, env=env, timeout=timeout)


def ok(*argv, env, timeout=600) -> str:
    result = kerub(*argv, env=env, timeout=timeout)
    assert result.returncode == 0, f"kerub-tui {shlex.join(argv)}: {result.stdout}{result.stderr}"
    return result.stdout


def approve_proposals(env) -> list[str]:
    """Approve (and so carry out: no controller runs) every proposed plan; their outputs."""
    outputs = []
    for plan in json.loads(ok("plan", "list", "--json", env=env)):
        if plan["status"] == "proposed":
            outputs.append(ok("plan", "approve", plan["id"], env=env, timeout=900))
    return outputs


def wait_screen(host, domain: str, work: Path, pattern: re.Pattern, timeout: float = 300.0) -> str:
    """The guest screen's text once it matches pattern (OCR of a screenshot, taken again until then;
    the timeout is a hang guard)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = media.screen_text(host, domain, work)
        if pattern.search(text):
            return text
        time.sleep(2)
    raise AssertionError(f"{domain}: the screen never showed {pattern.pattern!r}; last read: {text!r}")


class PtyRun:
    """A command on the slave side of a new pty, as in a terminal; what it prints is collected."""

    def __init__(self, argv: list[str], env: dict[str, str], size: tuple[int, int] = (24, 80)):
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
        self.before = termios.tcgetattr(self.slave)
        # its own session, the pty its controlling terminal: as a login shell's
        self.proc = subprocess.Popen(argv, stdin=self.slave, stdout=self.slave, stderr=self.slave, env=env,
                                     start_new_session=True, preexec_fn=_controlling_tty)
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._stop = False
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    return
                with self._lock:
                    self._buf += chunk

    @property
    def text(self) -> str:
        with self._lock:
            return bytes(self._buf).decode(errors="replace")

    def mark(self) -> int:
        with self._lock:
            return len(self._buf)

    def send(self, data: bytes) -> None:
        assert not self._closed, "typed into a closed pty"
        os.write(self.master, data)

    def modes(self) -> list:
        return termios.tcgetattr(self.slave)

    def wait_for(self, pattern: str, timeout: float, *, since: int = 0, poke: float | None = None) -> re.Match:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        next_poke = time.monotonic() + poke if poke else None
        while True:
            m = regex.search(self.text[since:]) if since == 0 else regex.search(self._since(since))
            if m:
                return m
            if time.monotonic() > deadline or (self.proc.poll() is not None and not m):
                if self.proc.poll() is not None:
                    time.sleep(0.5)  # the last bytes the process wrote before it ended
                    m = regex.search(self._since(since))
                    if m:
                        return m
                tail = "\n".join(media._strip_terminal(self._since(since)).splitlines()[-25:])
                raise AssertionError(f"no {pattern!r} (exit {self.proc.poll()}); last lines:\n{tail}")
            if next_poke is not None and time.monotonic() >= next_poke:
                self.send(b"\r")
                next_poke = time.monotonic() + (poke or 0)
            time.sleep(0.1)

    def _since(self, mark: int) -> str:
        with self._lock:
            return bytes(self._buf[mark:]).decode(errors="replace")

    def wait_exit(self, timeout: float = 120) -> int:
        code = self.proc.wait(timeout=timeout)
        time.sleep(0.3)  # the reader takes what was written last
        return code

    def close(self) -> None:
        """End the command and close the pty; once (the descriptors' numbers may be reused after)."""
        if self._closed:
            return
        self._closed = True
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=30)
        self._stop = True
        self._reader.join(timeout=5)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def _controlling_tty() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def serial(env: dict[str, str], *extra: str) -> PtyRun:
    return PtyRun([sys.executable, "-m", "kerub_tui", *extra, "console", SERIAL_VM, "--serial"], env)


@dataclass
class Guests:
    """The module's two Debian VMs, made and started through kerub-tui's command line."""

    env: dict[str, str]
    hosts: list[Any]  # the two lab hosts
    fingerprint: str  # of the ssh key both VMs were given
    imported: subprocess.CompletedProcess  # `image import` of the Debian image
    done: str  # what `plan approve` said
    placed: dict[str, Any]  # VM name -> the lab host it runs on
    image_shown: dict[str, Any]  # `image show debian12 --json` once the plans were carried out
    host_ids: dict[str, str]  # host id -> name, from `host list --json`
    # VM name -> its serial console, read since the VM started: SERIAL_VM's is `boot_session`, the
    # other's virsh console on its host (media.SerialConsole); both have .text and .wait_for
    consoles: dict[str, Any]
    boot_session: PtyRun  # `kerub-tui console SERIAL_VM --serial` in a pty, attached as the VM started


@pytest.fixture(scope="module")
def guests(lab, debian_image, tmp_path_factory):
    """The Debian image imported from this machine (the jump box) onto the lab's first host, both hosts
    set to TCG, two VMs made --from it with an ssh key and user data (the markers of marker_user_data and
    root's password for the serial console), kept apart by an expectation, the proposals approved. Their
    serial consoles are read from the moment they run (their boots go on: the tests read them). The
    console session holds the data dir (no `serve` runs): what the tests read with the command line
    while it runs is read here, before it starts."""
    hosts = lab.hosts[:2]
    work = tmp_path_factory.mktemp("guests")
    env = dict(os.environ, KERUB_TUI_DATA=str(work / "data"), KERUB_TUI_CONFIG=str(work / "config"),
               PYTHONUNBUFFERED="1")
    key = work / "admin"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "admin@jump", "-f", str(key)], check=True)
    fingerprint = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True,
                                 check=True).stdout.split()[1]
    user_data = work / "user-data.yaml"
    user_data.write_text(marker_user_data(CHPASSWD))
    consoles: dict[str, Any] = {}
    with kerub_storage(hosts):
        try:
            for host in hosts:
                ok("host", "add", host.address, "--name", host.name, "--identity", str(host.client_key),
                   "--accept-fingerprint", host.host_key_fingerprint, env=env)
                ok("host", "set", host.name, "--accel", "tcg", env=env)
            imported = kerub("image", "import", str(debian_image), "--name", "debian12", "--host", hosts[0].name,
                             env=env)
            apart: list[str] = []
            for name in VMS:
                ok("vm", "create", name, "--memory", "512M", "--from", "debian12", "--ssh-key", f"{key}.pub",
                   "--user-data", str(user_data), "--expect", "availability:up", *apart, env=env)
                apart = ["--expect", f"not-same-host:{name}@dealbreaker"]
            done = "\n".join(approve_proposals(env))
            placed = {}
            for name in VMS:
                vm = json.loads(ok("vm", "show", name, "--json", env=env))
                assert vm["dynamic"] and vm["dynamic"]["status"] == "up", (vm, imported.stderr, done)
                placed[name] = next(h for h in hosts if h.name == _host_name(env, vm))
            image_shown = json.loads(ok("image", "show", "debian12", "--json", env=env))
            host_ids = {h["id"]: h["name"] for h in json.loads(ok("host", "list", "--json", env=env))}
            boot_session = consoles[SERIAL_VM] = serial(env)
            for name in VMS:
                if name != SERIAL_VM:
                    consoles[name] = media.SerialConsole(placed[name], name)
            yield Guests(env, hosts, fingerprint, imported, done, placed, image_shown, host_ids, consoles,
                         boot_session)
        finally:
            for c in consoles.values():
                c.close()
            lab.reset()  # the guests go before their storage is unmounted


def _host_name(env, vm: dict) -> str:
    host_id = vm["dynamic"]["host_id"]
    return next(h["name"] for h in json.loads(ok("host", "list", "--json", env=env)) if h["id"] == host_id)


def test_two_vms_from_an_imported_debian_image_boot_with_their_seeds_on_two_hosts(guests, debian_image, tmp_path):
    """The whole story through kerub-tui's command line (fixture `guests`): the Debian image imported
    from this machine (the jump box) onto one host, both hosts set to TCG, two VMs made --from it with an
    ssh key and user data, kept apart by an expectation. The planner copies the image to the second host
    (checksum verified there), clones it into an overlay on each, writes each seed and starts them; each
    guest reaches its login prompt on the serial console with its own name as hostname, and prints (user
    data's runcmd) the fingerprint of the key it was given. The only Linux boot of the suite: both run at
    once."""
    hosts = guests.hosts
    assert guests.imported.returncode == 0, guests.imported.stderr
    assert "imported image debian12 (qcow2" in guests.imported.stdout
    assert {h.name for h in guests.placed.values()} == {h.name for h in hosts}, (guests.placed, guests.done)
    # the image went to the second host through the planner's copy step, checked there
    shown, ids = guests.image_shown, guests.host_ids
    copies = {ids[a["host_id"]]: a["path"] for a in shown["dynamic"]["allocations"]}
    assert sorted(copies) == sorted(h.name for h in hosts), shown
    for host in hosts:
        on_host = host.run(["sha256sum", copies[host.name]], check=True).stdout.split()[0]
        assert on_host == shown["image"]["image"]["sha256"] == media.sha256_of(debian_image)
    errors: list[BaseException] = []

    def watch(console, name: str) -> None:
        try:
            console.wait_for(rf"{MARK} host={re.escape(name)}\b", BOOT_TIMEOUT)
            console.wait_for(rf"{MARK} key /home/debian/\.ssh/authorized_keys 256 {re.escape(guests.fingerprint)} ",
                             120)
            # the seed, not a fallback: cloud-init's last words name the datasource
            console.wait_for(r"Datasource DataSourceNoCloud \[seed=/dev/sr0\]", 300)
            console.wait_for(rf"(?m)^{re.escape(name)} login:", 120, poke=10)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=watch, args=(guests.consoles[n], n)) for n in VMS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in VMS:
        (tmp_path / f"{name}.console.txt").write_text(guests.consoles[name].text)
    if errors:
        raise errors[0]
    for name in VMS:
        text = guests.consoles[name].text
        assert "Debian GNU/Linux 12" in text


# The serial console tests below run in this order on SERIAL_VM (pytest keeps a module's order; under
# `--dist loadfile` the whole module runs on one worker): the first goes on with the boot session and
# logs in as root, the next ones type into the root shell it left.


def test_the_serial_console_in_a_terminal_reads_the_guest_and_types_into_it(guests):
    """The console session opened as the VM started (fixture `guests`): it reads the guest's boot."""
    run = guests.boot_session
    try:
        run.wait_for(r"ctrl\+\] leaves", 120)
        raw = run.modes()
        assert not raw[3] & termios.ICANON and not raw[3] & termios.ECHO, "the terminal is in raw mode meanwhile"
        # the guest's own words: its kernel and systemd on ttyS0, cloud-init's last line (root's password
        # is set by then), then the serial getty's login prompt
        run.wait_for(r"Cloud-init v\. \S+ finished", BOOT_TIMEOUT)
        assert "Debian GNU/Linux 12" in media._strip_terminal(run.text)
        mark = run.mark()
        run.wait_for(r"(?m)login: *$", 300, since=mark, poke=10)
        mark = run.mark()
        run.send(b"root\r")
        run.wait_for(r"Password:", 120, since=mark)
        run.send(PASSWORD.encode() + b"\r")
        run.wait_for(SHELL, 300, since=mark)
        mark = run.mark()
        run.send(b"echo typed-$((6*7))\r")  # the guest's shell computes it: 42 comes from the guest
        run.wait_for(r"typed-42", 120, since=mark)
        run.send(b"\x1d")  # ctrl+]
        assert run.wait_exit() == 0, run.text[-500:]
        assert "left with ctrl+]" in run.text
        assert run.modes() == run.before, "the terminal's modes are restored"
    finally:
        run.close()


def test_through_serve_the_controller_relays_the_console_and_read_only_sends_nothing(guests):
    env = guests.env
    serve = subprocess.Popen([sys.executable, "-m", "kerub_tui", "serve"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True)
    try:
        sock = Path(env["KERUB_TUI_DATA"]) / "control.sock"
        deadline = time.monotonic() + 120
        while not (sock.exists() and kerub_ping(env)):
            assert serve.poll() is None, serve.stderr.read().decode() if serve.stderr else ""
            assert time.monotonic() < deadline, "serve never answered"
            time.sleep(0.5)
        # root's shell waits where the first test left it
        run = serial(env)
        try:
            run.wait_for(r"ctrl\+\] leaves", 180)
            mark = run.mark()
            run.send(b"\r")
            run.wait_for(SHELL, 300, since=mark)
            run.send(b"\x1d")
            assert run.wait_exit() == 0, run.text[-500:]
            assert run.modes() == run.before
        finally:
            run.close()
        # read-only: attached view-only, says so, and what is typed never reaches the guest
        viewer = serial(env, "--readonly")
        try:
            viewer.wait_for(r"view-only \(read-only mode\): what you type is not sent", 180)
            viewer.send(b"echo LEAKED-$((6*7))")
            viewer.send(b"\x1d")
            assert viewer.wait_exit() == 0, viewer.text[-500:]
            assert viewer.modes() == viewer.before
        finally:
            viewer.close()
        # Had the viewer's keys reached the guest, Enter would run its echo before the next one:
        # the shell reads its terminal in order, so DONE-42 comes after LEAKED-42 or alone.
        run = serial(env)
        try:
            run.wait_for(r"ctrl\+\] leaves", 180)
            mark = run.mark()
            run.send(b"\recho DONE-$((6*7))\r")
            run.wait_for(r"DONE-42", 300, since=mark)
            assert "LEAKED-42" not in run._since(mark), run._since(mark)
            run.send(b"\x1d")
            assert run.wait_exit() == 0
        finally:
            run.close()
    finally:
        serve.terminate()
        serve.wait(timeout=60)


def kerub_ping(env) -> bool:
    result = cliproc.kerub(["vm", "list"], env=env, timeout=120)
    return result.returncode == 0


def test_in_the_console_t_hands_the_terminal_to_the_guest_and_ctrl_bracket_comes_back(guests):
    """The console itself in an 80x24 pty: from launch, 2 (VMs), / and the VM's name, enter, t: the
    terminal is the guest's (the console is suspended), ctrl+] brings the console back, and quitting
    leaves the pty's modes as they were."""
    env = guests.env
    console = PtyRun([sys.executable, "-m", "kerub_tui"], dict(env, TERM="xterm-256color"), size=(24, 80))
    try:
        console.wait_for(r"Hosts", 180)
        mark = console.mark()
        console.send(b"2")
        console.wait_for(re.escape(SERIAL_VM), 180, since=mark)  # its row, once the monitor has seen it
        # keys as typed, each once the console shows it took the one before: typed before the filter
        # prompt is up, the VM's name went to the table (seen under load)
        mark = console.mark()
        console.send(b"/")
        console.wait_for(r"esc restores", 180, since=mark)  # the filter prompt's hint, on the bottom line
        mark = console.mark()
        console.send(SERIAL_VM.encode())
        console.wait_for(r"1 of 2 shown", 180, since=mark)  # the filter applies as it is typed
        time.sleep(0.3)
        mark = console.mark()
        console.send(b"\r")
        console.wait_for(r"Details", 180, since=mark)  # the prompt gone: the footer's bindings again
        console.send(b"t")
        console.wait_for(r"ctrl\+\] comes back to the console", 180, since=mark)
        mark = console.mark()
        console.send(b"\recho tui-$((6*7))\r")
        console.wait_for(r"tui-42", 300, since=mark)
        mark = console.mark()
        console.send(b"\x1d")
        console.wait_for(r"left with ctrl\+\]", 120, since=mark)  # the console's notification: it is back
        # ...and the same screen with it, redrawn once the terminal is the console's again: the VMs pane
        # (its tab), its filter still applied (1 of 2 rows shown), the VM's row under it
        same = re.compile(rf"VMs \[1/2\]\s+/{re.escape(SERIAL_VM)}\b.*{re.escape(SERIAL_VM)}", re.S)
        deadline = time.monotonic() + 60
        while not same.search(media._strip_terminal(console._since(mark))) and time.monotonic() < deadline:
            time.sleep(0.2)
        back = media._strip_terminal(console._since(mark))
        assert same.search(back), "after ctrl+]: not the VMs pane with its filter\n" + back[-1500:]
        console.send(b"q")
        time.sleep(1)
        if "Quit kerub-tui?" in console._since(mark):
            console.send(b"y")
        assert console.wait_exit(timeout=120) == 0, media._strip_terminal(console.text)[-800:]
        assert console.modes() == console.before, "the console and the serial session leave the modes as found"
    finally:
        console.close()


# Last in the module by design: it kills the SSH sessions of SERIAL_VM's host (sshd comes back, the
# guest keeps running, but a test after it would start from a dropped connection).
def test_a_dropped_connection_ends_the_session_and_restores_the_terminal(guests):
    host, env = guests.placed[SERIAL_VM], guests.env
    run = serial(env)
    try:
        run.wait_for(r"ctrl\+\] leaves", 180)
        raw = run.modes()
        assert not raw[3] & termios.ICANON
        host.stop_sshd(sessions=True)  # the SSH connection and its libvirt tunnel drop
        try:
            code = run.wait_exit(timeout=300)
        finally:
            host.start_sshd()
        assert code != 0
        assert re.search(r"connection.*dropped|console stream ended", run.text), run.text[-500:]
        assert run.modes() == run.before, "the terminal's modes are restored after a dropped connection"
    finally:
        run.close()
