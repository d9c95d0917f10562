"""Real boot media for the lab, built from Debian packages only, cached outside the repository.

    from tests.lab import media
    iso = media.grub_rescue_iso()        # grub-rescue-pc's grub-rescue-cdrom.iso (boots to GRUB)
    disk = media.debian_cloud_image()    # Debian 12 with cloud-init, a compressed qcow2 that boots
    media.nocloud_seed(path, instance_id=..., hostname=..., user_data=...)   # a `cidata` ISO

    python -m tests.lab.media build      # build (or find) both, print their paths
    python -m tests.lab.media status

Nothing is fetched from anywhere but the machine's own apt sources: `apt-get download grub-rescue-pc`
for the ISO; `mmdebstrap` with /etc/apt/sources.list.d/debian.sources for the Debian image, then an MBR
disk with one ext4 partition (mke2fs -d fills it from the directory, at the partition's offset in the
file: no loop device, no mount, no udev needed), GRUB's boot.img in the MBR and a `grub-mkimage` core
right after it (grub-install cannot find the disk here; the boot code comes from the machine's
grub-pc-bin), a kernel line with console=ttyS0 and cloud-init limited to the NoCloud datasource.

The image is made for quick boots under TCG (the lab's guests: every instruction emulated, each process
start costs): no docs in it, an initramfs of the virtio drivers alone and without udev, no GRUB menu
timeout, systemd's unneeded generators and units masked, the cloud-init modules the tests use and no
more. With all that, a boot to the login prompt costs qemu about 60-70 CPU seconds (see RECIPE_VERSION's
commit for the figures before and after).

The cache (CACHE_DIR, /var/cache/kerub-tui-test-media or $KERUB_TEST_MEDIA) keys each file by a hash
of its recipe (the steps' version, the packages, the apt sources, the boot code's version), so a
changed recipe builds anew and an unchanged one is built once per machine. A lock file per medium
makes concurrent test sessions build it once (the others wait); a build works in a `.build-*`
directory next to the cache and renames its result into place, so a killed build leaves nothing that
looks usable, and the next build removes its leftovers.

Guest screens and serial consoles on a lab host: `SerialConsole` (virsh console on a pty inside the
host, read and typed into from the test) and `screenshot()` / `screen_text()` (virsh screenshot,
read by tesseract).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

CACHE_DIR = Path(os.environ.get("KERUB_TEST_MEDIA", "/var/cache/kerub-tui-test-media"))
APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
GRUB_PC_DIR = Path("/usr/lib/grub/i386-pc")
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUILD_ENV = {"PATH": SBIN_PATH, "LANG": "C.UTF-8", "HOME": "/root", "DEBIAN_FRONTEND": "noninteractive"}

# Bump when a build step changes in a way that changes the result: the cache key includes it.
RECIPE_VERSION = "5"
DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = (
    "linux-image-cloud-amd64", "cloud-init", "openssh-server", "systemd-sysv", "udev", "ifupdown",
    "isc-dhcp-client", "netbase", "lz4",
)
DEBIAN_DISK_SIZE = 2 << 30          # the virtual size of the image; the qcow2 holds only what is used
PARTITION_OFFSET = 1 << 20          # the first partition starts at 1 MiB; boot.img + core.img before it
# systemd waits 90 s for a device by default: on a busy machine a TCG guest's udev took longer to
# announce ttyS0, and the serial console's getty was given up (seen on the lab). 10 minutes instead.
# no_timer_check: on a loaded machine a TCG guest's kernel found its timer interrupt too late in its
# early check and panicked ("IO-APIC + timer doesn't work", seen once in 15 boots at load 17), the guest
# then hanging until the test's timeout; virtual machines' kernels skip that check (as cloud images do).
KERNEL_OPTIONS = "ro console=tty0 console=ttyS0,115200n8 systemd.default_device_timeout_sec=600 no_timer_check"
# Nothing of these is read in a test guest: dpkg leaves them out (a third of the tree's files, less for
# mke2fs and qemu-img to write and for the image's copies to carry).
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")
# The initramfs has only what finds the root file system on the product's buses (virtio-blk, or a disk
# or CD-ROM on virtio-scsi; ext4 is built into the cloud kernel) instead of `most` of the kernel's
# drivers, lz4-compressed: GRUB reads half of it (7 MB, not 15) and the kernel unpacks it faster. Written
# before the kernel's package installs (an essential hook of mmdebstrap), so its initramfs is made once,
# like this.
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "sr_mod")
INITRAMFS_CONF = "MODULES=list\nCOMPRESS=lz4\nRESUME=none\n"
# ... and no udev in it: starting udevd and its coldplug there cost 3 of the initramfs's 6 s under TCG,
# for devices that the modules above make appear on devtmpfs anyway (blkid finds the root by UUID); the
# root's udevd goes through every device once more in any case. A hook of /etc/initramfs-tools/hooks runs
# after the packages' hooks (udev's among them) and takes udev out again.
INITRAMFS_HOOK = """#!/bin/sh
case "$1" in prereqs) exit 0 ;; esac
rm -rf "$DESTDIR/scripts/init-top/udev" "$DESTDIR/scripts/init-bottom/udev" "$DESTDIR/usr/lib/udev" \\
    "$DESTDIR/etc/udev" "$DESTDIR/usr/bin/udevadm" "$DESTDIR/usr/lib/systemd/systemd-udevd"
"""
# zstd instead of qcow2's default zlib: written in a fraction of the CPU time at a similar size, and each
# guest's reads of the image's clusters decompress faster too.
QCOW2_OPTIONS = "compression_type=zstd"
# systemd runs every generator at each boot before any unit starts, each a process linking the large
# libsystemd-shared (a quarter of a second under TCG): those a test guest has nothing for are disabled (a
# /dev/null of the same name in /etc/systemd/system-generators). Kept: fstab, getty (ttyS0's getty, from
# console=ttyS0), cloud-init's.
DISABLED_GENERATORS = (
    "systemd-cryptsetup-generator", "systemd-integritysetup-generator", "systemd-veritysetup-generator",
    "systemd-hibernate-resume-generator", "systemd-gpt-auto-generator", "systemd-debug-generator",
    "systemd-system-update-generator", "systemd-rc-local-generator", "systemd-run-generator",
    "systemd-sysv-generator",
)
# Units that do nothing a test guest needs, each a process (or a mount) of its boot: masked. The gettys on
# tty2-6 (getty-static: tty1's and ttyS0's stay), the daily apt/dpkg/fstrim timers (apt-daily would run at
# the first boot: Persistent=), modules and file systems nothing in the guest uses.
MASKED_UNITS = (
    "getty-static.service", "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "fstrim.timer",
    "modprobe@configfs.service", "modprobe@dm_mod.service", "modprobe@efi_pstore.service", "modprobe@fuse.service",
    "modprobe@loop.service", "dev-hugepages.mount", "dev-mqueue.mount", "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount", "sys-kernel-config.mount", "sys-fs-fuse-connections.mount",
    "proc-sys-fs-binfmt_misc.automount", "systemd-binfmt.service", "systemd-pstore.service",
)
# Drivers udev would load for devices of the machine that no test uses: kvm (loading it under TCG took 8 s
# of each boot) and the PIIX IDE controller's (its probe; the product's disks and seed are virtio).
BLACKLISTED_MODULES = ("kvm", "kvm_amd", "kvm_intel", "ata_piix", "ata_generic", "pata_acpi")
# The modules built into GRUB's core: enough to find the root filesystem by UUID and read its
# /boot/grub (the rest of GRUB's modules are copied there, so `normal` finds what it needs).
GRUB_CORE_MODULES = ("biosdisk", "part_msdos", "ext2", "search", "search_fs_uuid", "normal")

# What each medium needs on the machine (command -> Debian package).
ISO_COMMANDS = {"apt-get": "apt", "dpkg": "dpkg"}
IMAGE_COMMANDS = {
    "mmdebstrap": "mmdebstrap", "mke2fs": "e2fsprogs", "sfdisk": "fdisk", "grub-mkimage": "grub-common",
    "qemu-img": "qemu-utils",
}


class MediaError(RuntimeError):
    """A medium could not be built."""


def which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":" + SBIN_PATH)


def missing_prerequisites(image: bool = True) -> str | None:
    """Why the media cannot be built here (one line), or None when they can."""
    if not sys.platform.startswith("linux"):
        return "the test media are built on Debian/Ubuntu Linux"
    if os.geteuid() != 0:
        return "building the test media needs root (mmdebstrap, device nodes in the image)"
    wanted = {**ISO_COMMANDS, **(IMAGE_COMMANDS if image else {})}
    missing = sorted({pkg for cmd, pkg in wanted.items() if which(cmd) is None})
    if image and not (GRUB_PC_DIR / "boot.img").is_file():
        missing.append("grub-pc-bin")
    if image and not APT_SOURCES.is_file():
        return f"the Debian image is built from the machine's apt sources, and {APT_SOURCES} is missing"
    if missing:
        return "the test media need these Debian packages: " + ", ".join(missing) + " (see tests/lab/packages.txt)"
    return None


# ---------------------------------------------------------------- the cache


@dataclass(frozen=True)
class Recipe:
    """One medium: its name, file suffix, everything its content depends on (hashed into the cache
    key) and the function that builds it into a given path inside a scratch directory."""

    name: str
    suffix: str
    text: str
    build: Callable[[Path, Path], None]

    @property
    def key(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    @property
    def path(self) -> Path:
        return CACHE_DIR / f"{self.name}-{self.key}{self.suffix}"


UNUSED_SECONDS = 86400  # another recipe's cached result goes when it was not used for this long


def _used(path: Path) -> None:
    """Mark a cached result as used now (its mtime): see the clean-up in ``cached``."""
    with contextlib.suppress(OSError):
        os.utime(path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # the lock goes with the descriptor, also when the process is killed


def cached(recipe: Recipe, *, log: Callable[[str], None] | None = None) -> Path:
    """The cached file of this recipe, built first when it is not there yet."""
    final = recipe.path
    if final.is_file():
        _used(final)
        return final
    CACHE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    with _locked(CACHE_DIR / f".{recipe.name}.lock"):
        if final.is_file():  # another session built it while this one waited
            return final
        # We hold the lock: a scratch directory of this medium is what a killed build left behind.
        for stale in CACHE_DIR.glob(f".build-{recipe.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".build-{recipe.name}-", dir=CACHE_DIR))
        started = time.monotonic()
        try:
            out = work / f"result{recipe.suffix}"
            recipe.build(work, out)
            os.chmod(out, 0o644)
            os.replace(out, final)  # same filesystem: the file appears whole or not at all
        finally:
            shutil.rmtree(work, ignore_errors=True)
        for old in CACHE_DIR.glob(f"{recipe.name}-*{recipe.suffix}"):
            # Another recipe's result, unused for a day: a checkout of another version (a branch, a
            # worktree) still using it would otherwise rebuild it, and this one after it, in turns.
            if old != final and time.time() - old.stat().st_mtime > UNUSED_SECONDS:
                old.unlink(missing_ok=True)
        if log:
            log(f"built {final} in {time.monotonic() - started:.0f} s")
    return final


def _run(argv: list[str], *, log_file: Path | None = None, timeout: float = 1200, **kw) -> str:
    """Run a build command; on failure raise MediaError with the command and the end of its output."""
    if "input" not in kw:
        kw["stdin"] = subprocess.DEVNULL
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=BUILD_ENV, **kw)
    if log_file is not None:
        with open(log_file, "a") as f:
            f.write(f"$ {shlex.join(argv)}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-5:]
        raise MediaError(f"{shlex.join(argv[:3])} ... failed ({proc.returncode}): " + " | ".join(tail))
    return proc.stdout


def _package_version(package: str) -> str:
    """The version apt would fetch (the candidate), or the installed one."""
    out = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True, env=BUILD_ENV).stdout
    m = re.search(r"Candidate:\s*(\S+)", out)
    if m and m.group(1) != "(none)":
        return m.group(1)
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True).stdout
    return out.strip() or "unknown"


# ---------------------------------------------------------------- grub-rescue-pc's ISO


def grub_rescue_recipe() -> Recipe:
    text = f"grub-rescue-cdrom {RECIPE_VERSION}\ngrub-rescue-pc {_package_version('grub-rescue-pc')}\n"
    return Recipe("grub-rescue-cdrom", ".iso", text, _build_grub_rescue)


def _build_grub_rescue(work: Path, out: Path) -> None:
    log = work / "build.log"
    _run(["apt-get", "download", "grub-rescue-pc"], cwd=work, log_file=log, timeout=600)
    debs = sorted(work.glob("grub-rescue-pc_*.deb"))
    if not debs:
        raise MediaError("apt-get download grub-rescue-pc left no .deb")
    _run(["dpkg", "-x", str(debs[0]), str(work / "x")], log_file=log)
    found = list((work / "x").rglob("grub-rescue-cdrom.iso"))
    if not found:
        raise MediaError("grub-rescue-pc ships no grub-rescue-cdrom.iso")
    shutil.copyfile(found[0], out)


def grub_rescue_iso(*, log: Callable[[str], None] | None = None) -> Path:
    """grub-rescue-pc's grub-rescue-cdrom.iso (about 5 MB): boots to GRUB's prompt on the screen."""
    reason = missing_prerequisites(image=False)
    if reason:
        raise MediaError(reason)
    return cached(grub_rescue_recipe(), log=log)


# ---------------------------------------------------------------- a Debian 12 cloud image


def debian_recipe() -> Recipe:
    text = "\n".join([
        f"debian-cloud {RECIPE_VERSION}",
        f"suite {DEBIAN_SUITE}",
        "packages " + ",".join(DEBIAN_PACKAGES),
        f"size {DEBIAN_DISK_SIZE}",
        f"kernel {KERNEL_OPTIONS}",
        "grub modules " + ",".join(GRUB_CORE_MODULES),
        "dpkg excludes " + ",".join(DPKG_EXCLUDES),
        "initramfs " + ",".join(INITRAMFS_MODULES) + " " + INITRAMFS_CONF.replace("\n", " "),
        "initramfs hook " + INITRAMFS_HOOK,
        f"qcow2 {QCOW2_OPTIONS}",
        f"grub-pc-bin {_package_version('grub-pc-bin')}",
        f"mmdebstrap {_package_version('mmdebstrap')}",
        "sources " + (APT_SOURCES.read_text() if APT_SOURCES.is_file() else ""),
    ])
    return Recipe(f"debian12-cloud-{DEBIAN_SUITE}", ".qcow2", text, _build_debian)


def debian_cloud_image(*, log: Callable[[str], None] | None = None) -> Path:
    """A Debian 12 disk image with cloud-init (NoCloud), a compressed qcow2 of 2 GiB virtual size
    whose kernel and login prompt are on the serial console (ttyS0) and the screen (tty0)."""
    reason = missing_prerequisites(image=True)
    if reason:
        raise MediaError(reason)
    return cached(debian_recipe(), log=log)


def _build_debian(work: Path, out: Path) -> None:
    log = work / "build.log"
    root = work / "root"
    (work / "initramfs.conf").write_text(INITRAMFS_CONF)
    (work / "initramfs.modules").write_text("".join(m + "\n" for m in INITRAMFS_MODULES))
    (work / "initramfs.hook").write_text(INITRAMFS_HOOK)
    hook = ('mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/etc/initramfs-tools/hooks"'
            ' "$1/usr/share/initramfs-tools/modules.d"'
            f' && cp {shlex.quote(str(work / "initramfs.conf"))} "$1/etc/initramfs-tools/conf.d/kerub-tui-test.conf"'
            f' && cp {shlex.quote(str(work / "initramfs.modules"))} "$1/usr/share/initramfs-tools/modules.d/kerub-tui-test"'
            f' && install -m 0755 {shlex.quote(str(work / "initramfs.hook"))} "$1/etc/initramfs-tools/hooks/kerub-tui-test"')
    _run(["mmdebstrap", "--variant=apt", "--include=" + ",".join(DEBIAN_PACKAGES),
          *[f"--dpkgopt=path-exclude={pattern}" for pattern in DPKG_EXCLUDES],
          "--essential-hook=" + hook, DEBIAN_SUITE, str(root), str(APT_SOURCES)], log_file=log, timeout=1800)
    _make_disk(work, root, out)


def _make_disk(work: Path, root: Path, out: Path) -> None:
    """The bootstrapped tree `root` made a bootable compressed qcow2 at `out`."""
    log = work / "build.log"
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise MediaError("the Debian tree has no kernel in /boot")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    if not (root / "boot" / f"initrd.img-{version}").is_file():
        raise MediaError(f"the Debian tree has no initrd for {version}")
    fs_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, "kerub-tui-test-media:" + debian_recipe().key))
    _customize(root, fs_uuid, version)
    raw = work / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(DEBIAN_DISK_SIZE)
    _run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(raw)], log_file=log,
         input=f"label: dos\nstart={PARTITION_OFFSET // 512}, type=83, bootable\n")
    fs_size_k = (DEBIAN_DISK_SIZE - PARTITION_OFFSET) // 1024
    _run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "debian-root", "-U", fs_uuid, "-d", str(root),
          "-E", f"offset={PARTITION_OFFSET}", str(raw), f"{fs_size_k}k"], log_file=log, timeout=900)
    _install_grub(work, raw, fs_uuid)
    _run(["qemu-img", "convert", "-c", "-O", "qcow2", "-o", QCOW2_OPTIONS, str(raw), str(out)], log_file=log,
         timeout=900)
    _run(["qemu-img", "check", str(out)], log_file=log)


def _customize(root: Path, fs_uuid: str, kernel_version: str) -> None:
    """What makes the bootstrapped tree a cloud image: its own fstab and boot menu, cloud-init on
    NoCloud only, no host keys or machine id of its own (each clone makes its own at first boot),
    nothing of the build machine's (hostname, resolv.conf), no apt lists or caches."""
    (root / "etc/hostname").write_text("debian\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n")
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    resolv.write_text("")
    (root / "etc/machine-id").write_text("")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/fstab").write_text(f"UUID={fs_uuid}\t/\text4\terrors=remount-ro\t0\t1\n")
    (root / "etc/cloud/cloud.cfg.d/90-kerub-tui-test.cfg").write_text(
        "# kerub-tui's test image: the seed is a NoCloud `cidata` disk; no network datasource to wait for.\n"
        "datasource_list: [ NoCloud, None ]\n"
        "# Under TCG an RSA 3072 host key took 80 s of a guest's boot (seen on the lab): ed25519 only.\n"
        "ssh_genkeytypes: [ ed25519 ]\n"
        "# The disk is as large as the image: nothing to grow (resize2fs only failed, after 10 s).\n"
        "resize_rootfs: false\n"
        "growpart: { mode: 'off' }\n"
        "# Each module costs seconds of a TCG guest's first boot (the locale one 8 s, generating a locale\n"
        "# nothing asked for): the modules a seed commonly uses, no package, locale or ntp management.\n"
        "cloud_init_modules: [ seed_random, bootcmd, write-files, set_hostname, update_hostname,\n"
        "                      update_etc_hosts, users-groups, ssh ]\n"
        "cloud_config_modules: [ set-passwords, runcmd ]\n"
        "cloud_final_modules: [ write-files-deferred, scripts-per-once, scripts-per-boot, scripts-per-instance,\n"
        "                       scripts-user, ssh-authkey-fingerprints, keys-to-console, final-message ]\n"
    )
    (root / "etc/modprobe.d/kerub-tui-test.conf").write_text("".join(f"blacklist {m}\n" for m in BLACKLISTED_MODULES))
    generators = root / "etc/systemd/system-generators"
    generators.mkdir(parents=True, exist_ok=True)
    for name in DISABLED_GENERATORS:
        (generators / name).symlink_to("/dev/null")
    for unit in MASKED_UNITS:
        for wanted in (root / "etc/systemd/system").glob(f"*.wants/{unit}"):
            wanted.unlink()
        (root / "etc/systemd/system" / unit).symlink_to("/dev/null")
    for pattern in ("var/cache/apt/*.bin", "var/lib/apt/lists/*_Packages", "var/lib/apt/lists/*_Release",
                    "var/lib/apt/lists/*_InRelease", "var/log/*.log", "var/log/apt/*"):
        for p in root.glob(pattern):
            if p.is_file():
                p.unlink()
    grub_dir = root / "boot/grub"
    shutil.copytree(GRUB_PC_DIR, grub_dir / "i386-pc",
                    ignore=shutil.ignore_patterns("*.img", "*.image", "*.exec", "*.S", "*.h", "efiemu*"))
    (grub_dir / "grub.cfg").write_text(
        "serial --unit=0 --speed=115200\n"
        "terminal_input console serial\n"
        "terminal_output console serial\n"
        "set timeout=0\n"
        f"menuentry 'Debian GNU/Linux 12 ({kernel_version})' {{\n"
        f"\tsearch --no-floppy --fs-uuid --set=root {fs_uuid}\n"
        f"\tlinux /boot/vmlinuz-{kernel_version} root=UUID={fs_uuid} {KERNEL_OPTIONS}\n"
        f"\tinitrd /boot/initrd.img-{kernel_version}\n"
        "}\n"
    )


def _install_grub(work: Path, raw: Path, fs_uuid: str) -> None:
    """GRUB's boot.img in the MBR (its first 440 bytes: the partition table stays) and a core image
    in the sectors after it; the core finds the root filesystem by UUID and reads its grub.cfg."""
    early = work / "early.cfg"
    early.write_text(f"search --no-floppy --fs-uuid --set=root {fs_uuid}\nset prefix=($root)/boot/grub\n")
    core = work / "core.img"
    _run(["grub-mkimage", "-O", "i386-pc", "-d", str(GRUB_PC_DIR), "-o", str(core), "-c", str(early),
          "-p", "/boot/grub", *GRUB_CORE_MODULES], log_file=work / "build.log")
    core_bytes = core.read_bytes()
    if len(core_bytes) > PARTITION_OFFSET - 512:
        raise MediaError(f"GRUB's core image ({len(core_bytes)} bytes) does not fit before the partition")
    boot = (GRUB_PC_DIR / "boot.img").read_bytes()
    if len(boot) != 512:
        raise MediaError(f"{GRUB_PC_DIR}/boot.img is {len(boot)} bytes, not one sector")
    with open(raw, "r+b") as f:
        mbr = f.read(512)
        if mbr[510:512] != b"\x55\xaa":
            raise MediaError("sfdisk wrote no MBR")
        f.seek(0)
        f.write(boot[:440])
        f.seek(512)
        f.write(core_bytes)


def sha256_of(path: Path) -> str:
    """The sha256 of a file (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- NoCloud seeds


def nocloud_seed(path: Path, *, instance_id: str, hostname: str, user_data: str = "#cloud-config\n",
                 network_config: str | None = None) -> Path:
    """Write a cloud-init NoCloud seed: an ISO 9660 (Joliet, Rock Ridge) with volume id `cidata`
    holding meta-data, user-data and optionally network-config."""
    import pycdlib

    files = {
        "meta-data": f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n",
        "user-data": user_data,
    }
    if network_config is not None:
        files["network-config"] = network_config
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata", sys_ident="LINUX")
    for name, text in files.items():
        data = text.encode()
        iso_name = "/" + re.sub(r"[^A-Z0-9_]", "_", name.upper())[:8] + ".;1"
        iso.add_fp(io.BytesIO(data), len(data), iso_name, rr_name=name, joliet_path="/" + name)
    tmp = path.with_name(path.name + ".tmp")
    iso.write(str(tmp))
    iso.close()
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- consoles and screens of lab guests


class SerialConsole:
    """A guest's serial console on a lab host: `virsh console --force` under a pty (script) inside
    the host's namespaces. Everything the guest prints from now on is collected in `text`; `send`
    types into it. Use as a context manager (or call close)."""

    def __init__(self, host, domain: str):
        self.host = host
        self.domain = domain
        self._buf = bytearray()
        self._lock = threading.Lock()
        cmd = f"exec virsh -c qemu:///system console --force {shlex.quote(domain)}"
        self._proc = subprocess.Popen(
            [which("nsenter") or "nsenter", "-t", str(host.init_pid), "-m", "-u", "-p", "--",
             "script", "-qfec", cmd, "/dev/null"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**BUILD_ENV, "TERM": "dumb"}, start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"console-{domain}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        while True:
            chunk = os.read(self._proc.stdout.fileno(), 4096)
            if not chunk:
                return
            with self._lock:
                self._buf += chunk

    @property
    def text(self) -> str:
        with self._lock:
            raw = bytes(self._buf)
        return _strip_terminal(raw.decode(errors="replace"))

    def send(self, text: str) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(text.encode())
        self._proc.stdin.flush()

    def wait_for(self, pattern: str | re.Pattern, timeout: float, *, poke: float | None = None) -> re.Match:
        """Wait until the console's text matches `pattern` (a regex); with `poke`, press Enter every
        `poke` seconds meanwhile (a getty prints its prompt again). Raises AssertionError with the
        console's last lines when it does not come."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        next_poke = time.monotonic() + poke if poke else None
        while True:
            m = regex.search(self.text)
            if m:
                return m
            now = time.monotonic()
            if now > deadline:
                tail = "\n".join(self.text.splitlines()[-25:])
                raise AssertionError(
                    f"{self.domain} on {self.host.name}: no {regex.pattern!r} on the serial console after "
                    f"{timeout:.0f} s; its last lines:\n{tail}")
            if self._proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"virsh console of {self.domain} ended: {self.text[-500:]!r}")
            if next_poke is not None and now >= next_poke:
                self.send("\r")
                next_poke = now + (poke or 0)
            time.sleep(0.2)

    def close(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait(timeout=10)
        self._reader.join(timeout=10)
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def __enter__(self) -> SerialConsole:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>78c]")


def _strip_terminal(text: str) -> str:
    return _ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "\n")


def screenshot(host, domain: str, dest: Path) -> Path:
    """The guest's screen as a PPM file at dest (virsh screenshot inside the host)."""
    name = f"kerub-screenshot-{os.getpid()}-{threading.get_ident()}.ppm"
    inside = f"/tmp/{name}"
    proc = host.virsh(["screenshot", domain, inside])
    outside = Path(f"/proc/{host.init_pid}/root/tmp/{name}")
    try:
        if proc.returncode != 0:
            raise AssertionError(f"virsh screenshot {domain} on {host.name}: {proc.stderr.strip()}")
        shutil.copyfile(outside, dest)
    finally:
        outside.unlink(missing_ok=True)
    return dest


def _scale_ppm(data: bytes, factor: int) -> bytes:
    """A binary PPM (P6) scaled up by an integer factor: tesseract reads small VGA fonts better."""
    m = re.match(rb"P6\s+(?:#[^\n]*\n\s*)*(\d+)\s+(\d+)\s+(\d+)\s", data)
    if not m:
        return data
    width, height = int(m.group(1)), int(m.group(2))
    pixels = data[m.end():m.end() + width * height * 3]
    rows = []
    for y in range(height):
        row = pixels[y * width * 3:(y + 1) * width * 3]
        wide = b"".join(row[x:x + 3] * factor for x in range(0, len(row), 3))
        rows.extend([wide] * factor)
    return b"P6\n%d %d\n255\n" % (width * factor, height * factor) + b"".join(rows)


def screen_text(host, domain: str, work: Path) -> str:
    """What the guest's screen says, read by tesseract from a screenshot ('' without tesseract)."""
    if which("tesseract") is None:
        return ""
    shot = screenshot(host, domain, work / f"{domain}.ppm")
    big = work / f"{domain}-x2.ppm"
    big.write_bytes(_scale_ppm(shot.read_bytes(), 2))
    proc = subprocess.run(["tesseract", str(big), "stdout"], capture_output=True, text=True, timeout=120,
                          env=BUILD_ENV)
    return proc.stdout


# ---------------------------------------------------------------- command line


def status() -> list[dict]:
    rows = []
    for recipe in (grub_rescue_recipe(), debian_recipe()):
        p = recipe.path
        rows.append({"name": recipe.name, "path": str(p), "built": p.is_file(),
                     "size": p.stat().st_size if p.is_file() else 0})
    return rows


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.lab.media", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build (or find in the cache) every medium and print its path")
    sub.add_parser("status", help="which media are in the cache")
    args = parser.parse_args(argv)
    if args.cmd == "status":
        for row in status():
            print(f"{row['name']}: {row['path']} " + (f"{row['size']} bytes" if row["built"] else "not built"))
        return 0
    try:
        for build in (grub_rescue_iso, debian_cloud_image):
            started = time.monotonic()
            path = build(log=lambda line: print(line, file=sys.stderr))
            print(f"{path} ({path.stat().st_size} bytes, {time.monotonic() - started:.0f} s)")
    except MediaError as e:
        print(f"media: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
