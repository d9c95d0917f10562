"""The test media (tests/lab/media.py): the cache (one build per recipe, results of other recipes kept while
used) and the Debian image's recipe, checked without building it.

Two checkouts at different recipe versions (a branch, a worktree) share the machine's cache; each must
find its own image instead of deleting the other's and having it rebuilt, in turns.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab import media


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(media, "CACHE_DIR", tmp_path)
    return tmp_path


def recipe(version: str, builds: list[str]) -> media.Recipe:
    def build(work: Path, out: Path) -> None:
        builds.append(version)
        out.write_text(version)
    return media.Recipe("img", ".raw", f"img {version}", build)


def test_each_recipe_is_built_once_and_another_versions_result_in_use_stays(cache):
    builds: list[str] = []
    old, new = recipe("1", builds), recipe("2", builds)
    assert media.cached(old).read_text() == "1"
    assert media.cached(new).read_text() == "2"
    assert media.cached(old).read_text() == "1"  # the other checkout's image is still there
    assert media.cached(new).read_text() == "2"
    assert builds == ["1", "2"]


def test_a_result_unused_for_a_day_goes_at_the_next_build(cache):
    builds: list[str] = []
    old = media.cached(recipe("1", builds))
    day_ago = time.time() - media.UNUSED_SECONDS - 60
    os.utime(old, (day_ago, day_ago))
    media.cached(recipe("2", builds))
    assert not old.exists()
    assert builds == ["1", "2"]


def test_the_cache_directory_comes_from_kerub_test_media(tmp_path):
    """A build elsewhere (a measurement, a scratch cache) without touching the machine's cache."""
    env = dict(os.environ, KERUB_TEST_MEDIA=str(tmp_path / "media"))
    out = subprocess.run([sys.executable, "-c", "from tests.lab import media; print(media.CACHE_DIR)"],
                         capture_output=True, text=True, env=env, check=True, cwd=Path(__file__).parents[2])
    assert out.stdout.strip() == str(tmp_path / "media")


# ---------------------------------------------------------------- the Debian image's recipe (no build)


def test_mmdebstrap_leaves_out_docs_and_sets_up_the_initramfs_before_the_kernel_installs(tmp_path, monkeypatch):
    """The essential hook (run here on an empty directory, as mmdebstrap runs it on the tree before the
    remaining packages) leaves the initramfs settings where initramfs-tools reads them."""
    calls: list[list[str]] = []
    monkeypatch.setattr(media, "_run", lambda argv, **kw: calls.append(argv) or "")
    monkeypatch.setattr(media, "_make_disk", lambda work, root, out: None)
    media._build_debian(tmp_path, tmp_path / "out.qcow2")
    (argv,) = calls
    assert argv[0] == "mmdebstrap" and "--variant=apt" in argv
    for pattern in ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*"):
        assert f"--dpkgopt=path-exclude={pattern}" in argv
    (hook,) = [a.removeprefix("--essential-hook=") for a in argv if a.startswith("--essential-hook=")]
    tree = tmp_path / "tree"
    tree.mkdir()
    subprocess.run(["sh", "-c", hook, "hook", str(tree)], check=True)
    conf = (tree / "etc/initramfs-tools/conf.d/kerub-tui-test.conf").read_text()
    assert "MODULES=list" in conf and "COMPRESS=lz4" in conf
    modules = (tree / "usr/share/initramfs-tools/modules.d/kerub-tui-test").read_text().split()
    assert {"virtio_pci", "virtio_blk", "virtio_scsi", "sr_mod"} <= set(modules)
    assert os.access(tree / "etc/initramfs-tools/hooks/kerub-tui-test", os.X_OK)
    assert "lz4" in media.DEBIAN_PACKAGES  # COMPRESS=lz4 falls back to gzip without it


def test_the_initramfs_hook_takes_udev_out_and_leaves_the_rest(tmp_path):
    dest = tmp_path / "initramfs"
    udev = ["scripts/init-top/udev", "scripts/init-bottom/udev", "usr/lib/udev/rules.d/50-udev-default.rules",
            "etc/udev/udev.conf", "usr/bin/udevadm", "usr/lib/systemd/systemd-udevd"]
    kept = ["scripts/init-top/keymap", "scripts/local", "usr/sbin/blkid", "usr/bin/kmod",
            "usr/lib/modules/6.1.0-57-cloud-amd64/kernel/drivers/block/virtio_blk.ko"]
    for name in udev + kept:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_text("x")
    hook = tmp_path / "hook"
    hook.write_text(media.INITRAMFS_HOOK)
    hook.chmod(0o755)
    prereqs = subprocess.run([str(hook), "prereqs"], capture_output=True, text=True, env={"DESTDIR": str(dest)})
    assert prereqs.returncode == 0 and prereqs.stdout.strip() == ""  # asked for its prerequisites: none
    assert all((dest / name).exists() for name in udev)
    subprocess.run([str(hook)], check=True, env={"DESTDIR": str(dest), "PATH": media.SBIN_PATH})
    assert [name for name in udev if (dest / name).exists()] == []
    assert [name for name in kept if not (dest / name).exists()] == []


def test_customize_masks_what_a_test_guest_does_not_use_and_keeps_its_consoles(tmp_path, monkeypatch):
    root = tmp_path / "root"
    for d in ("etc/ssh", "etc/cloud/cloud.cfg.d", "etc/modprobe.d", "etc/systemd/system/timers.target.wants",
              "etc/systemd/system/getty.target.wants", "boot"):
        (root / d).mkdir(parents=True)
    (root / "etc/systemd/system/timers.target.wants/apt-daily.timer").symlink_to("/lib/systemd/system/apt-daily.timer")
    (root / "etc/systemd/system/getty.target.wants/getty@tty1.service").symlink_to(
        "/lib/systemd/system/getty@.service")
    grub = tmp_path / "grub-pc"
    grub.mkdir()
    (grub / "normal.mod").write_text("")
    monkeypatch.setattr(media, "GRUB_PC_DIR", grub)
    media._customize(root, "0b1c2d3e-0000-5000-8000-000000000000", "6.1.0-57-cloud-amd64")

    system = root / "etc/systemd/system"
    for unit in ("getty-static.service", "apt-daily.timer", "modprobe@dm_mod.service", "dev-mqueue.mount"):
        assert os.readlink(system / unit) == "/dev/null", unit
    assert not (system / "timers.target.wants/apt-daily.timer").is_symlink()
    # tty1's getty (the screen) and ttyS0's (the getty generator, from console=ttyS0) stay
    assert (system / "getty.target.wants/getty@tty1.service").is_symlink()
    assert not any("getty@" in u or "serial-getty" in u for u in media.MASKED_UNITS)
    generators = root / "etc/systemd/system-generators"
    assert os.readlink(generators / "systemd-sysv-generator") == "/dev/null"
    assert {"systemd-getty-generator", "systemd-fstab-generator", "cloud-init-generator"}.isdisjoint(
        media.DISABLED_GENERATORS)
    blacklist = (root / "etc/modprobe.d/kerub-tui-test.conf").read_text().split("\n")
    assert {"blacklist kvm", "blacklist ata_piix"} <= set(blacklist)
    cfg = (root / "boot/grub/grub.cfg").read_text()
    assert "set timeout=0" in cfg
    linux = next(line for line in cfg.splitlines() if line.strip().startswith("linux "))
    assert "console=tty0 console=ttyS0,115200n8" in linux and "no_timer_check" in linux
    assert "quiet" not in linux.split()  # the tests read the kernel's and cloud-init's lines on ttyS0
    cloud = (root / "etc/cloud/cloud.cfg.d/90-kerub-tui-test.cfg").read_text()
    assert "datasource_list: [ NoCloud, None ]" in cloud and "ssh_genkeytypes: [ ed25519 ]" in cloud
