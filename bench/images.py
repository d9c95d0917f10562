"""Images benchmark, on one full lab host, through kerub-tui's command line as an admin runs it:

- `kerub-tui image import` of a 1 GiB raw disk image (an MBR, then random bytes: nothing to gain
  from compression) from this machine, against `scp` of the same file to the same host in the same
  run (the lab's key, strict host key checking, the file written beside kerub-tui's image
  directory). Both timed from the command's start to its end, connection set-up included; kerub-tui's
  also includes its checks (sha256 on both ends, qemu-img info on the host). Prints the throughput of
  each and `ratio vs scp` (kerub-tui time / scp time: below 1 means kerub-tui is faster).
- the time from `vm create --from IMAGE` (the Debian 12 cloud image of tests/lab/media.py, imported
  first, untimed) to the guest's login prompt on its serial console, under TCG as the lab runs Linux
  guests: create, the plan approved and carried out (overlay, cloud-init seed, start), the boot.

Needs root (the lab) and the Debian packages of tests/lab/packages.txt; brings its lab up and down.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.test_guest_os import approve_proposals, kerub_storage, ok
from tests.lab import Lab, media, missing_prerequisites

GIB = 1 << 30
MIB = 1 << 20
LOGIN_TIMEOUT = 1200.0  # a hang guard


def raw_disk(path: Path, size: int) -> Path:
    """A raw disk with an MBR partition table (one partition) and random content after it."""
    with open(path, "wb") as f:
        f.write(b"\0" * 446 + bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little")
                + ((size // 512) - 2048).to_bytes(4, "little") + b"\0" * 48 + b"\x55\xaa")
        left = size - 512
        while left > 0:
            chunk = os.urandom(min(left, 8 * MIB))
            f.write(chunk)
            left -= len(chunk)
    return path


def timed(argv: list[str], **kw) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, **kw)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed: {result.stderr.strip()[-500:]}")
    return seconds


def import_vs_scp(host, env: dict[str, str], work: Path) -> None:
    image = raw_disk(work / "bench-1g.raw", GIB)
    kerub = timed([sys.executable, "-m", "kerub_tui", "image", "import", str(image), "--name", "bench1g",
                   "--host", host.name], env=env, timeout=3600)
    scp_argv = [shutil.which("scp") or "scp", "-q", "-F", "/dev/null", "-i", str(host.client_key),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={host.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", "-P", str(host.port),
                str(image), f"root@{host.address}:/var/lib/kerub-tui/scp-copy.raw"]
    scp = timed(scp_argv, timeout=3600)
    host.run("rm -f /var/lib/kerub-tui/scp-copy.raw", check=True)
    ok("image", "delete", "bench1g", env=env)
    image.unlink()
    print(f"image import 1 GiB: {kerub:.2f} s ({GIB / MIB / kerub:.1f} MiB/s)")
    print(f"scp 1 GiB: {scp:.2f} s ({GIB / MIB / scp:.1f} MiB/s)")
    print(f"image import 1 GiB ratio vs scp: {kerub / scp:.2f}x")


def create_to_login(host, env: dict[str, str], work: Path) -> None:
    ok("image", "import", str(media.debian_cloud_image()), "--name", "debian12", "--host", host.name, env=env,
       timeout=1800)
    ok("host", "set", host.name, "--accel", "tcg", env=env)
    key = work / "admin"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    started = time.perf_counter()
    ok("vm", "create", "bench-vm", "--memory", "512M", "--from", "debian12", "--ssh-key", f"{key}.pub",
       "--expect", "availability:up", env=env)
    approve_proposals(env)
    running = time.perf_counter()
    with media.SerialConsole(host, "bench-vm") as console:
        console.wait_for(r"(?m)^bench-vm login:", LOGIN_TIMEOUT, poke=15)
    login = time.perf_counter()
    print(f"vm create --from to running (plan carried out): {running - started:.1f} s")
    print(f"vm create --from to login prompt (TCG): {login - started:.1f} s")


def main() -> int:
    reason = missing_prerequisites(light=False) or media.missing_prerequisites(image=True)
    if reason:
        print(f"images bench skipped: {reason}")
        return 0
    lab = Lab.up(1)
    work = Path(tempfile.mkdtemp(prefix="kerub-bench-images-"))
    env = dict(os.environ, KERUB_TUI_DATA=str(work / "data"), KERUB_TUI_CONFIG=str(work / "config"),
               PYTHONUNBUFFERED="1")
    host = lab.hosts[0]
    try:
        with kerub_storage([host]):
            try:
                ok("host", "add", host.address, "--name", host.name, "--identity", str(host.client_key),
                   "--accept-fingerprint", host.host_key_fingerprint, env=env)
                print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
                import_vs_scp(host, env, work)
                create_to_login(host, env, work)
            finally:
                host.reset()  # the guest goes before its storage is unmounted
    finally:
        lab.down()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
