"""A VM booted from an imported ISO, and its screen through kerub-tui's libvirt tunnel (issue 12).

One guest for the module (fixture `grub_guest`), made through kerub-tui's command line as README's
"Your first VM" goes: grub-rescue-pc's ISO (tests/lab/media.py) imported from this machine, a VM with
it as its CD-ROM boots to GRUB (under KVM where there is one: GRUB comes in seconds). Then
`kerub-tui vm screenshot VM FILE.png` saves a valid PNG of the guest's resolution (the one the lab
host's own `virsh screenshot` gives), alone and through a running `serve`; an attached console's API
(RemoteController) gets the same picture through the control socket. Hostile VM names are one line
and nothing else."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kerub_tui.control import RemoteController
from kerub_tui.core.picture import decode, from_png
from tests import cliproc
from tests.integration.test_guest_os import approve_proposals, kerub, kerub_storage, ok, wait_screen
from tests.lab import media

pytestmark = [pytest.mark.lab, pytest.mark.timeout(1200)]

VM = "grubshot"


@dataclass
class GrubGuest:
    host: Any  # the lab host it runs on
    env: dict[str, str]
    work: Path
    imported: str  # what `image import` said
    created: str  # what `vm create` said
    screen: str  # its screen's text at GRUB (OCR; "" without tesseract)


@pytest.fixture(scope="module")
def grub_guest(lab, tmp_path_factory):
    reason = media.missing_prerequisites(image=False)
    if reason:
        pytest.skip(f"media: {reason}")
    iso = media.grub_rescue_iso()
    host = lab.hosts[1]
    work = tmp_path_factory.mktemp("shot")
    env = dict(os.environ, KERUB_TUI_DATA=str(work / "data"), KERUB_TUI_CONFIG=str(work / "config"),
               PYTHONUNBUFFERED="1")
    with kerub_storage([host]):
        try:
            ok("host", "add", host.address, "--name", host.name, "--identity", str(host.client_key),
               "--accept-fingerprint", host.host_key_fingerprint, env=env)
            imported = ok("image", "import", str(iso), "--name", "grub-rescue", "--host", host.name, env=env)
            created = ok("vm", "create", VM, "--memory", "256M", "--disk", "64M", "--cdrom", "grub-rescue",
                         "--expect", "availability:up", env=env)
            approve_proposals(env)
            screen = ""
            if media.which("tesseract") is not None:  # at GRUB, its screen settled (not SeaBIOS's any more)
                screen = wait_screen(host, VM, work, re.compile(r"GRUB", re.I))
            yield GrubGuest(host, env, work, imported, created, screen)
        finally:
            lab.reset()


def test_an_imported_iso_boots_a_vm_to_grub(grub_guest):
    """README's "Your first VM" from an ISO: grub-rescue-pc's ISO imported from this machine, a VM made
    with it as its CD-ROM (and a blank disk) boots from it under the host's own accelerator (KVM where
    there is one: GRUB runs at full speed under this machine's nested KVM) and its screen shows GRUB."""
    if media.which("tesseract") is None:
        pytest.skip("tesseract-ocr is not installed: the screen cannot be read")
    assert "imported image grub-rescue (iso" in grub_guest.imported
    assert "proposal" in grub_guest.created
    shown = ok("vm", "show", VM, env=grub_guest.env)
    assert "boot cdrom,hd" in shown and "grub-rescue" in shown, shown
    assert "GRUB" in grub_guest.screen.upper()


def lab_resolution(host, work: Path) -> tuple[int, int]:
    shot = decode(media.screenshot(host, VM, work / "lab.img").read_bytes())  # PPM or PNG, as libvirt gives
    return shot.width, shot.height


def test_vm_screenshot_saves_a_png_of_the_guests_resolution(grub_guest):
    host, env, work = grub_guest.host, grub_guest.env, grub_guest.work
    out = work / "grub.png"
    said = ok("vm", "screenshot", VM, str(out), env=env)
    picture = from_png(out.read_bytes())
    assert (picture.width, picture.height) == lab_resolution(host, work)
    assert f"saved the screen of {VM} ({picture.width}x{picture.height})" in said
    assert len(set(picture.rgb[i:i + 3] for i in range(0, len(picture.rgb), 3))) > 1, "not a blank screen"
    # a relative FILE is the caller's, as every file of the command line
    repo = str(Path(__file__).resolve().parents[2])  # this tree's kerub_tui, from another directory too
    again = cliproc.kerub(["vm", "screenshot", VM, "again.png"], env=dict(env, PYTHONPATH=repo), cwd=work, timeout=300)
    assert again.returncode == 0, again.stderr
    assert from_png((work / "again.png").read_bytes()).width == picture.width


@pytest.mark.parametrize("name", ["$(touch /tmp/kerub-pwned)", "a;reboot", "-rf", "x\ny", "../../etc/passwd"])
def test_hostile_vm_names_are_one_line(grub_guest, name):
    env, work = grub_guest.env, grub_guest.work
    for argv in (["vm", "screenshot", "--", name, str(work / "h.png")], ["console", "--serial", "--", name]):
        result = kerub(*argv, env=env)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "no vm named" in lines[0].lower(), result.stderr
    assert not Path("/tmp/kerub-pwned").exists()
    assert not (work / "h.png").exists()


def test_through_serve_and_an_attached_console(grub_guest):
    host, env, work = grub_guest.host, grub_guest.env, grub_guest.work
    serve = subprocess.Popen([sys.executable, "-m", "kerub_tui", "serve"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        data_dir = Path(env["KERUB_TUI_DATA"])
        while not (data_dir / "control.sock").exists() or kerub("vm", "list", env=env).returncode != 0:
            assert serve.poll() is None and time.monotonic() < deadline, "serve never answered"
            time.sleep(0.5)
        out = work / "served.png"
        said = ok("vm", "screenshot", VM, str(out), env=env)
        assert "saved the screen" in said
        served = from_png(out.read_bytes())
        assert (served.width, served.height) == lab_resolution(host, work)

        async def attached() -> bytes:
            remote = RemoteController(data_dir)
            await remote.start()
            try:
                return await remote.screenshot(VM)
            finally:
                await remote.stop()

        png = asyncio.run(attached())
        assert from_png(png).width == served.width
    finally:
        serve.terminate()
        serve.wait(timeout=60)
