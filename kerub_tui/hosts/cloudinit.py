"""cloud-init's NoCloud seed: a small ISO 9660 volume labelled ``cidata`` that a guest with cloud-init
reads at its first boot (``meta-data``, ``user-data`` and, when given, ``network-config``).

The seed is built here, in memory, with pycdlib (ISO 9660 with Joliet and Rock Ridge, so the file
names read the same whatever the guest's ISO driver prefers). Pure: no host, no store. The VM's id is
the ``instance-id`` (cloud-init runs its once-per-instance modules again when it changes, so a VM
keeps its identity across restarts and migrations) and its name the ``local-hostname``; the admin's
ssh public keys go in the meta-data's ``public-keys`` (cloud-init gives them to the image's default
user), which leaves the admin's user data exactly as given.

The user data may hold secrets (passwords, tokens): nothing here logs it, and the executor sends the
seed to the host on the command's standard input, never in a command line.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
from dataclasses import dataclass

import pycdlib

from kerub_tui.core.models import CloudInit, VirtualMachine
from kerub_tui.core.names import check_name

VOLUME_ID = "cidata"
SEED_DIR = "/var/lib/kerub-tui/seeds"  # where a host keeps the seeds of the VMs it runs
DEFAULT_USER_DATA = "#cloud-config\n{}\n"

# ISO 9660 level-1 names (8.3, upper case) with their Rock Ridge and Joliet names
_FILES = (("meta-data", "/METADATA.;1"), ("user-data", "/USERDATA.;1"), ("network-config", "/NETWORKC.;1"))


@dataclass(frozen=True)
class SeedContent:
    """The files of one seed, as text."""

    meta_data: str
    user_data: str
    network_config: str | None

    def files(self) -> dict[str, str]:
        out = {"meta-data": self.meta_data, "user-data": self.user_data}
        if self.network_config is not None:
            out["network-config"] = self.network_config
        return out


def seed_content(vm_id: str, hostname: str, cloud_init: CloudInit) -> SeedContent:
    """What the seed of a VM says. The meta-data is JSON, which YAML (and so cloud-init) reads."""
    check_name(hostname, "VM name")
    meta: dict[str, object] = {"instance-id": vm_id, "local-hostname": hostname}
    if cloud_init.ssh_keys:
        meta["public-keys"] = list(cloud_init.ssh_keys)
    user_data = cloud_init.user_data if cloud_init.user_data is not None else DEFAULT_USER_DATA
    return SeedContent(meta_data=json.dumps(meta, indent=2, sort_keys=True) + "\n", user_data=user_data,
                       network_config=cloud_init.network_config)


def seed_digest(vm: VirtualMachine) -> str:
    """A digest of what the VM's seed says (not of the ISO bytes, which carry the time they were made):
    a new digest is a new seed. Empty when the VM has no cloud-init."""
    if vm.cloud_init is None:
        return ""
    content = seed_content(vm.id, vm.name, vm.cloud_init)
    return hashlib.sha256(json.dumps(content.files(), sort_keys=True).encode()).hexdigest()


def build_seed(content: SeedContent) -> bytes:
    """The ISO image of a seed: volume id ``cidata``, Joliet and Rock Ridge names."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_ID, sys_ident="LINUX",
            app_ident_str="kerub-tui")
    texts = content.files()
    for name, iso_path in _FILES:
        if name not in texts:
            continue
        data = texts[name].encode()
        iso.add_fp(io.BytesIO(data), len(data), iso_path, rr_name=name, joliet_path=f"/{name}")
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def vm_seed(vm: VirtualMachine) -> bytes:
    """The seed ISO of a VM with cloud-init."""
    if vm.cloud_init is None:
        raise ValueError(f"VM {vm.name} has no cloud-init settings")
    return build_seed(seed_content(vm.id, vm.name, vm.cloud_init))


def read_seed(data: bytes) -> tuple[str, dict[str, str]]:
    """(volume id, files by their Rock Ridge name) of a seed ISO: what a guest would read."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        volume = iso.pvd.volume_identifier.decode().strip()
        files: dict[str, str] = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_dot() or child.is_dotdot():
                continue
            name = child.rock_ridge.name().decode()
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            files[name] = out.getvalue().decode()
        return volume, files
    finally:
        iso.close()


_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
_SEED_NAME_RE = re.compile(r"kerub-seed-[A-Za-z0-9][A-Za-z0-9._:-]{0,127}-[0-9a-f]{16}\.iso")


def seed_pattern(vm_id: str, directory: str = SEED_DIR) -> str:
    """The shell glob of every seed file of a VM on a host (ids hold no glob characters)."""
    if not isinstance(vm_id, str) or not _ID_RE.match(vm_id):
        raise ValueError(f"{vm_id!r} is not a VM id")
    return f"{directory.rstrip('/')}/kerub-seed-{vm_id}-*.iso"


def seed_path(vm_id: str, digest: str, directory: str = SEED_DIR) -> str:
    """Where a host keeps a VM's seed: named after the VM's id and the seed's digest, so a changed seed
    is a new file and a stale one is told by its name. The same path on every host (a migration
    carries the domain's definition as it is)."""
    if len(digest) < 16 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"{digest!r} is not a seed digest")
    return seed_pattern(vm_id, directory).replace("*", digest[:16])


def remove_seed_command(path: str) -> str:
    """On the host: a seed file removed (nothing else: only a file named as a seed is accepted)."""
    from .fileimage import check_path

    check_path(path, "seed path")
    directory, _, name = path.rpartition("/")
    if directory != SEED_DIR or not _SEED_NAME_RE.fullmatch(name):
        raise ValueError(f"{path!r} is not a kerub-tui seed file")
    return f"rm -f -- {shlex.quote(path)}"


def write_seed_command(path: str, pattern: str) -> str:
    """On the host: the seed ISO from standard input into ``path`` (a temporary file renamed into
    place, so a cut transfer leaves no half seed), then the VM's older seeds there removed. The
    directory is traversable (qemu runs as another user; libvirt gives it the file at start), the file
    readable by root only until then."""
    from .fileimage import check_path

    check_path(path, "seed path")
    check_path(pattern.replace("*", "x"), "seed pattern")
    directory, _, name = path.rpartition("/")
    tmp = f"{directory}/.{name}.tmp"
    keep = shlex.quote(path)
    d, t = shlex.quote(directory), shlex.quote(tmp)
    return (f"mkdir -p -- {d} && chmod 0711 {d} && umask 077 && "
            f"{{ cat > {t} && test -s {t} && mv -f -- {t} {keep} || {{ rm -f -- {t}; exit 1; }}; }} && "
            f"for old in {_glob(pattern)}; do if [ \"$old\" != {keep} ]; then rm -f -- \"$old\"; fi; done")


def remove_seeds_command(pattern: str) -> str:
    """On the host: every seed file of a VM removed (idempotent)."""
    return f"rm -f -- {_glob(pattern)}"


def _glob(pattern: str) -> str:
    """A seed pattern for the shell: its directory and name quoted, the one '*' left to expand."""
    head, star, tail = pattern.partition("*")
    if not star or "*" in tail:
        raise ValueError(f"{pattern!r} is not a seed pattern")
    return f"{shlex.quote(head)}*{shlex.quote(tail)}"


__all__ = ["SEED_DIR", "VOLUME_ID", "SeedContent", "build_seed", "read_seed", "seed_content", "seed_digest",
           "seed_path", "seed_pattern", "vm_seed", "remove_seeds_command", "write_seed_command"]
