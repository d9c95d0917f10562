"""Real operating systems in lab guests, from media built out of Debian packages (tests/lab/media.py).

First the media themselves, with plain libvirt on lab hosts (no kerub-tui): grub-rescue-pc's ISO boots
to GRUB under KVM, and the Debian 12 cloud image boots under TCG to its login prompt on the serial
console with the hostname and the commands of its NoCloud seed. Then the same through the product.
Guests that boot Linux run under TCG (design §9: a Linux guest crawls under this machine's nested
KVM); their boots run in parallel."""

from __future__ import annotations

import re
import shlex
import threading
from pathlib import Path

import pytest

from tests.lab import media

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(1800)]

BOOT_TIMEOUT = 420.0  # a hang guard for two TCG boots side by side on a shared 2-core machine
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


def plain_domain_xml(name: str, *, domain_type: str, disk: str | None, cdrom: str | None, boot: str,
                     listen: str) -> str:
    devices = []
    if disk:
        devices.append(f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                       f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk>")
    if cdrom:
        devices.append(f"<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
                       f"<source file='{cdrom}'/><target dev='hdc' bus='ide'/><readonly/></disk>")
    return (
        f"<domain type='{domain_type}'><name>{name}</name><memory unit='MiB'>512</memory><vcpu>1</vcpu>"
        f"<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='{boot}'/></os><features><acpi/></features>"
        f"<devices>{''.join(devices)}<serial type='pty'><target port='0'/></serial>"
        f"<console type='pty'><target type='serial' port='0'/></console>"
        f"<graphics type='vnc' autoport='yes' listen='{listen}'/><video><model type='vga'/></video>"
        f"</devices></domain>"
    )


def start_plain(host, xml: str, name: str) -> None:
    path = f"/tmp/{name}.xml"
    host.run(f"cat > {shlex.quote(path)}", input=xml, check=True)
    host.virsh(["create", path], check=True)


def images_dir(host) -> Path:
    """The host's /var/lib/libvirt/images, seen from the test."""
    return host.dir / "var-lib-libvirt" / "images"


def test_grub_rescue_iso_boots_to_grub_with_plain_libvirt(clean_lab, grub_iso, tmp_path):
    host = clean_lab.hosts[0]
    domain_type = "kvm" if Path("/dev/kvm").exists() else "qemu"
    start_plain(host, plain_domain_xml("grubcd", domain_type=domain_type, disk=None, cdrom=str(grub_iso),
                                       boot="cdrom", listen=host.address), "grubcd")
    if media.which("tesseract") is None:
        pytest.skip("tesseract-ocr is not installed: the screen cannot be read")
    seen = wait_screen(host, "grubcd", tmp_path, re.compile(r"GRUB", re.I))
    assert "GRUB" in seen.upper()


def wait_screen(host, domain: str, work: Path, pattern: re.Pattern, timeout: float = 120.0) -> str:
    """The guest screen's text once it matches pattern (OCR of a screenshot, taken again until then)."""
    import time

    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = media.screen_text(host, domain, work)
        if pattern.search(text):
            return text
        time.sleep(2)
    raise AssertionError(f"{domain}: the screen never showed {pattern.pattern!r}; last read: {text!r}")


@pytest.mark.xfail(reason="under libvirt the guest reaches its login prompt but cloud-init falls back to "
                   "DataSourceNone (the cidata seed not found), with the seed on SATA and on IDE; the same image "
                   "and seed under plain qemu (-drive media=cdrom) found it: not yet explained", strict=False)
def test_debian_image_boots_to_its_login_prompt_with_its_seed_under_tcg(clean_lab, debian_image, tmp_path):
    """Two lab hosts each boot an overlay of the cached image with their own seed, side by side."""
    hosts = clean_lab.hosts[:2]
    names = ["deb-alpha", "deb-beta"]
    consoles = []
    try:
        for host, name in zip(hosts, names):
            overlay = f"/var/lib/libvirt/images/{name}.qcow2"
            host.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(debian_image), "-F", "qcow2",
                      overlay], check=True)
            media.nocloud_seed(images_dir(host) / f"{name}-seed.iso", instance_id=f"id-{name}", hostname=name,
                               user_data=marker_user_data())
            start_plain(host, plain_domain_xml(name, domain_type="qemu", disk=overlay,
                                               cdrom=f"/var/lib/libvirt/images/{name}-seed.iso", boot="hd",
                                               listen=host.address), name)
            consoles.append(media.SerialConsole(host, name))
        errors: list[BaseException] = []

        def watch(console, name):
            try:
                console.wait_for(rf"{MARK} host={re.escape(name)}\b", BOOT_TIMEOUT)
                console.wait_for(rf"(?m)^{re.escape(name)} login:", 120, poke=10)
            except BaseException as e:  # noqa: BLE001 - handed to the test's thread
                errors.append(e)

        threads = [threading.Thread(target=watch, args=(c, n)) for c, n in zip(consoles, names)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        for console, name in zip(consoles, names):
            assert "Debian GNU/Linux 12" in console.text
    finally:
        for c in consoles:
            c.close()
