"""Real operating systems in lab guests, from media built out of Debian packages (tests/lab/media.py).

All through kerub-tui's command line, as README's "Your first VM" goes: grub-rescue-pc's ISO imported
from this machine boots a VM to GRUB (its CD-ROM, under KVM). Then the one Linux boot of the suite:
the Debian 12 cloud image imported from this machine, two VMs made --from it with an ssh key and user
data on two lab hosts (the planner copies the image to the second, checksum verified), each reaching
its login prompt on the serial console with its own name as hostname and the key in place. Linux guests run under TCG (design section 9: a Linux guest
crawls under this machine's nested KVM); the two boot side by side.

The seed is a CD-ROM on virtio-scsi: Debian's cloud kernel has no AHCI driver, so on SATA (as kerub-tui
first attached it) the guest never saw its seed and cloud-init fell back to DataSourceNone."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kerub_tui.hosts.facts import IMAGES_DIR
from tests.lab import media

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(1800)]

BOOT_TIMEOUT = 900.0  # a hang guard (not a timing): two TCG boots side by side on a busy 2-core machine
MARK = "KERUB-GUEST-MARK"


@pytest.fixture(scope="session")
def grub_iso() -> Path:
    reason = media.missing_prerequisites(image=False)
    if reason:
        pytest.skip(f"media: {reason}")
    return media.grub_rescue_iso()


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
    return subprocess.run([sys.executable, "-m", "kerub_tui", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout)


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
    import time

    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = media.screen_text(host, domain, work)
        if pattern.search(text):
            return text
        time.sleep(2)
    raise AssertionError(f"{domain}: the screen never showed {pattern.pattern!r}; last read: {text!r}")


def test_an_imported_iso_boots_a_vm_to_grub(clean_lab, grub_iso, tmp_path):
    """README's "Your first VM" from an ISO: grub-rescue-pc's ISO imported from this machine, a VM made
    with it as its CD-ROM (and a blank disk) boots from it under the host's own accelerator (KVM where
    there is one: GRUB runs at full speed under this machine's nested KVM) and its screen shows GRUB."""
    if media.which("tesseract") is None:
        pytest.skip("tesseract-ocr is not installed: the screen cannot be read")
    host = clean_lab.hosts[2]
    env = dict(os.environ, KERUB_TUI_DATA=str(tmp_path / "data"), KERUB_TUI_CONFIG=str(tmp_path / "config"),
               PYTHONUNBUFFERED="1")
    with kerub_storage([host]):
        try:
            ok("host", "add", host.address, "--name", host.name, "--identity", str(host.client_key),
               "--accept-fingerprint", host.host_key_fingerprint, env=env)
            imported = ok("image", "import", str(grub_iso), "--name", "grub-rescue", env=env)
            assert "imported image grub-rescue (iso" in imported
            created = ok("vm", "create", "grubcd", "--memory", "256M", "--disk", "64M", "--cdrom", "grub-rescue",
                         "--expect", "availability:up", env=env)
            assert "proposal" in created
            approve_proposals(env)
            shown = ok("vm", "show", "grubcd", env=env)
            assert "boot cdrom,hd" in shown and "grub-rescue" in shown, shown
            seen = wait_screen(host, "grubcd", tmp_path, re.compile(r"GRUB", re.I))
            assert "GRUB" in seen.upper()
        finally:
            clean_lab.reset()  # the guest goes before its storage is unmounted


def test_two_vms_from_an_imported_debian_image_boot_with_their_seeds_on_two_hosts(
        clean_lab, debian_image, tmp_path):
    """The whole story through kerub-tui's command line: the Debian image imported from this machine
    (the jump box) onto one host, both hosts set to TCG, two VMs made --from it with an ssh key and user
    data, kept apart by an expectation. The planner copies the image to the second host (checksum
    verified there), clones it into an overlay on each, writes each seed and starts them; each guest
    reaches its login prompt on the serial console with its own name as hostname, and prints (user data's
    runcmd) the fingerprint of the key it was given. The only Linux boot of the suite: both run at once."""
    hosts = clean_lab.hosts[:2]
    env = dict(os.environ, KERUB_TUI_DATA=str(tmp_path / "data"), KERUB_TUI_CONFIG=str(tmp_path / "config"),
               PYTHONUNBUFFERED="1")
    key = tmp_path / "admin"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "admin@jump", "-f", str(key)], check=True)
    fingerprint = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True,
                                 check=True).stdout.split()[1]
    user_data = tmp_path / "user-data.yaml"
    user_data.write_text(marker_user_data())
    names = ["deb-alpha", "deb-beta"]
    consoles: dict[str, media.SerialConsole] = {}
    with kerub_storage(hosts):
        try:
            for host in hosts:
                ok("host", "add", host.address, "--name", host.name, "--identity", str(host.client_key),
                   "--accept-fingerprint", host.host_key_fingerprint, env=env)
                ok("host", "set", host.name, "--accel", "tcg", env=env)
            imported = kerub("image", "import", str(debian_image), "--name", "debian12", "--host", hosts[0].name,
                             env=env)
            assert imported.returncode == 0, imported.stderr
            assert "imported image debian12 (qcow2" in imported.stdout
            apart: list[str] = []
            for name in names:
                ok("vm", "create", name, "--memory", "512M", "--from", "debian12", "--ssh-key", f"{key}.pub",
                   "--user-data", str(user_data), "--expect", "availability:up", *apart, env=env)
                apart = ["--expect", f"not-same-host:{name}@dealbreaker"]
            done = "\n".join(approve_proposals(env))
            placed = {}
            for name in names:
                vm = json.loads(ok("vm", "show", name, "--json", env=env))
                placed[name] = next(h for h in hosts if vm["dynamic"] and h.name == _host_name(env, vm))
            assert {h.name for h in placed.values()} == {h.name for h in hosts}, (placed, done)
            for name, host in placed.items():
                consoles[name] = media.SerialConsole(host, name)
            # the image went to the second host through the planner's copy step, checked there
            shown = json.loads(ok("image", "show", "debian12", "--json", env=env))
            ids = {h["id"]: h["name"] for h in json.loads(ok("host", "list", "--json", env=env))}
            copies = {ids[a["host_id"]]: a["path"] for a in shown["dynamic"]["allocations"]}
            assert sorted(copies) == sorted(h.name for h in hosts), shown
            for host in hosts:
                on_host = host.run(["sha256sum", copies[host.name]], check=True).stdout.split()[0]
                assert on_host == shown["image"]["image"]["sha256"] == media.sha256_of(debian_image)
            errors: list[BaseException] = []

            def watch(console: media.SerialConsole, name: str) -> None:
                try:
                    console.wait_for(rf"{MARK} host={re.escape(name)}\b", BOOT_TIMEOUT)
                    console.wait_for(rf"{MARK} key /home/debian/\.ssh/authorized_keys 256 {re.escape(fingerprint)} ",
                                     120)
                    # the seed, not a fallback: cloud-init's last words name the datasource
                    console.wait_for(r"Datasource DataSourceNoCloud \[seed=/dev/sr0\]", 300)
                    console.wait_for(rf"(?m)^{re.escape(name)} login:", 120, poke=10)
                except BaseException as e:
                    errors.append(e)

            threads = [threading.Thread(target=watch, args=(consoles[n], n)) for n in names]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for name in names:
                (tmp_path / f"{name}.console.txt").write_text(consoles[name].text)
            if errors:
                raise errors[0]
            for name in names:
                text = consoles[name].text
                assert "Debian GNU/Linux 12" in text
        finally:
            for c in consoles.values():
                c.close()
            clean_lab.reset()  # the guests go before their storage is unmounted


def _host_name(env, vm: dict) -> str:
    host_id = vm["dynamic"]["host_id"]
    return next(h["name"] for h in json.loads(ok("host", "list", "--json", env=env)) if h["id"] == host_id)
