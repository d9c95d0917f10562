"""NFS: kernel exports (exportfs), nfs-ganesha exports (a dropped config file + SIGHUP reload), mounts,
and the disk description for the domain XML when the hypervisor reads the file through qemu's own NFS
client (libnfs, in qemu-block-extra) instead of a kernel mount.

What runs where: a host without the kernel NFS server (nfsd) can still export with nfs-ganesha, and a
hypervisor without the kernel NFS client can still run a VM from an NFS file through qemu's client.
nfs-ganesha reloads its exports on SIGHUP; its D-Bus interface is not used because D-Bus is often
absent on servers (and is here). qemu's client speaks NFSv3, so the server needs rpcbind and mountd
(ganesha registers both).
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from kerub_tui.core.names import check_address

from .fileimage import check_path

_OPTION_RE = re.compile(r"[a-z_]+(?:=[A-Za-z0-9_.:/@-]+)?\Z")
_CLIENT_RE = re.compile(r"[A-Za-z0-9*?][A-Za-z0-9.*?/:-]*\Z")
GANESHA_CONFIG = "/etc/ganesha/ganesha.conf"
GANESHA_EXPORT_DIR = "/etc/ganesha/kerub"
GANESHA_PID_FILE = "/run/ganesha/ganesha.pid"


def check_clients(clients: object) -> str:
    """An exports(5) client: '*', a host name (wildcards allowed), an address or an address/prefix."""
    if not isinstance(clients, str) or not clients or len(clients) > 253 or not _CLIENT_RE.match(clients):
        raise ValueError(f"NFS client {clients!r} must be '*', a host name, an address or a network (a.b.c.d/n)")
    if "/" in clients:
        try:
            ipaddress.ip_network(clients, strict=False)
        except ValueError:
            raise ValueError(f"NFS client {clients!r} is not a valid network") from None
    return clients


def check_options(options: object) -> str:
    if not isinstance(options, str) or not options:
        raise ValueError("NFS options must be a non-empty comma-separated list")
    for option in options.split(","):
        if not _OPTION_RE.match(option):
            raise ValueError(f"NFS option {option!r} is not understood (name or name=value)")
    return options


def url_host(server: str) -> str:
    """The host part of SERVER:PATH or of a URL: an IPv6 address needs brackets."""
    check_address(server)
    try:
        if ipaddress.ip_address(server).version == 6:
            return f"[{server}]"
    except ValueError:
        pass
    return server


# --- kernel nfsd ---------------------------------------------------------------------------------


def nfs_export(path: str, clients: str, options: str) -> str:
    """Export with the kernel server; exportfs replaces an existing export of the same pair."""
    check_path(path, "export path")
    return shlex.join(["exportfs", "-o", check_options(options), f"{check_clients(clients)}:{path}"])


def nfs_unexport(path: str, clients: str) -> str:
    check_path(path, "export path")
    return shlex.join(["exportfs", "-u", f"{check_clients(clients)}:{path}"])


# --- nfs-ganesha --------------------------------------------------------------------------------


def _ganesha_string(value: str, what: str) -> str:
    # a quoted ganesha config string: no quote, backslash, braces, ';' or '#' can end or bend it
    bad = next((c for c in value if c in '"\\{};#%' or not c.isprintable()), None)
    if bad is not None:
        raise ValueError(f"{what} {value!r} cannot go into a ganesha config: it contains {bad!r}")
    return f'"{value}"'


def _check_export_id(export_id: object) -> int:
    # 0 is the pseudo root; ganesha export ids are 16 bits
    if isinstance(export_id, bool) or not isinstance(export_id, int) or not 1 <= export_id <= 65535:
        raise ValueError(f"export id {export_id!r} must be from 1 to 65535")
    return export_id


def ganesha_export_block(
    export_id: int,
    path: str,
    *,
    pseudo: str | None = None,
    access: str = "RW",
    squash: str = "No_Root_Squash",
    clients: str | Sequence[str] | None = None,
) -> str:
    """An EXPORT block for nfs-ganesha's VFS FSAL, NFSv3 and v4 over TCP.

    With ``clients`` (one, or several: a VM's disk read by its host and by the host it migrates to) the
    access type applies only to them (the export's default is then None)."""
    _check_export_id(export_id)
    check_path(path, "export path")
    pseudo = check_path(pseudo, "pseudo path") if pseudo is not None else path
    if access not in ("RW", "RO"):
        raise ValueError("access must be RW or RO")
    if squash not in ("No_Root_Squash", "Root_Squash", "All_Squash"):
        raise ValueError("squash must be No_Root_Squash, Root_Squash or All_Squash")
    lines = [
        "EXPORT {",
        f"    Export_Id = {export_id};",
        f"    Path = {_ganesha_string(path, 'export path')};",
        f"    Pseudo = {_ganesha_string(pseudo, 'pseudo path')};",
        f"    Access_Type = {'None' if clients is not None else access};",
        f"    Squash = {squash};",
        "    Protocols = 3, 4;",
        "    Transports = TCP;",
        "    SecType = sys;",
        "    FSAL { Name = VFS; }",
    ]
    if clients is not None:
        listed = [clients] if isinstance(clients, str) else list(clients)
        if not listed:
            raise ValueError("an export to a list of clients needs at least one")
        for client in listed:
            check_clients(client)
        lines.append(f"    CLIENT {{ Clients = {', '.join(listed)}; Access_Type = {access}; }}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _export_file(export_dir: str, export_id: int) -> str:
    check_path(export_dir, "ganesha export directory")
    # ganesha's %include takes a plain path: its lexer refuses a quoted one with a space (seen in 4.3)
    if not re.fullmatch(r"[A-Za-z0-9._/-]+", export_dir):
        raise ValueError(f"ganesha export directory {export_dir!r} may hold only letters, digits and '._-/'")
    return posixpath.join(export_dir, f"export-{export_id}.conf")


def _reload(pid_file: str) -> str:
    q = shlex.quote(check_path(pid_file, "ganesha pid file"))
    return f'kill -HUP "$(cat {q})"'


def ganesha_add_export(
    export_id: int,
    path: str,
    *,
    pseudo: str | None = None,
    access: str = "RW",
    squash: str = "No_Root_Squash",
    clients: str | Sequence[str] | None = None,
    config: str = GANESHA_CONFIG,
    export_dir: str = GANESHA_EXPORT_DIR,
    pid_file: str = GANESHA_PID_FILE,
) -> str:
    """Write the EXPORT block to its own file, %include it from the main config once, reload ganesha."""
    block = ganesha_export_block(export_id, path, pseudo=pseudo, access=access, squash=squash, clients=clients)
    check_path(config, "ganesha config")
    target = _export_file(export_dir, export_id)
    include = f'%include "{target}"'
    qconf = shlex.quote(config)
    return (
        f"mkdir -p {shlex.quote(export_dir)} && printf '%s' {shlex.quote(block)} > {shlex.quote(target)} && "
        f"{{ grep -qxF -- {shlex.quote(include)} {qconf} || printf '%s\\n' {shlex.quote(include)} >> {qconf}; }} && "
        + _reload(pid_file)
    )


def ganesha_remove_export(
    export_id: int,
    *,
    config: str = GANESHA_CONFIG,
    export_dir: str = GANESHA_EXPORT_DIR,
    pid_file: str = GANESHA_PID_FILE,
) -> str:
    """Drop the %include line and the file, reload ganesha (which then unexports); idempotent."""
    _check_export_id(export_id)
    check_path(config, "ganesha config")
    target = _export_file(export_dir, export_id)
    include = f'%include "{target}"'
    qconf = shlex.quote(config)
    tmp = shlex.quote(config + ".kerub-tmp")
    return (
        f"{{ grep -vxF -- {shlex.quote(include)} {qconf} > {tmp} || [ $? -eq 1 ]; }} && "
        f"cat {tmp} > {qconf} && rm -f {tmp} {shlex.quote(target)} && " + _reload(pid_file)
    )


# --- what ganesha exports for kerub-tui (reconcile after a crash) ----------------------------------


@dataclass(frozen=True)
class GaneshaExport:
    """One export file kerub-tui wrote for nfs-ganesha (``export-ID.conf`` in its export directory)."""

    export_id: int
    path: str
    clients: str | None  # the CLIENT block's clients (", "-separated); None: the export's Access_Type applies to all


def ganesha_exports_command(export_dir: str = GANESHA_EXPORT_DIR) -> str:
    """Each export file kerub-tui wrote, after a ``== NAME`` line (nothing when there is no such directory)."""
    target = _export_file(export_dir, 1)
    q = shlex.quote(posixpath.dirname(target))
    return (f"if [ -d {q} ]; then for f in {q}/export-*.conf; do [ -f \"$f\" ] || continue; "
            f"printf '== %s\\n' \"${{f##*/}}\"; cat -- \"$f\"; echo; done; fi")


_EXPORT_FILE_RE = re.compile(r"^== export-(\d{1,5})\.conf$")
_GANESHA_PATH_RE = re.compile(r'^\s*Path\s*=\s*"([^"]*)"\s*;\s*$')
_GANESHA_ID_RE = re.compile(r"^\s*Export_Id\s*=\s*(\d{1,5})\s*;\s*$")
_GANESHA_CLIENTS_RE = re.compile(r"^\s*CLIENT\s*\{\s*Clients\s*=\s*([^;{}]+?)\s*;")


def parse_ganesha_exports(text: str) -> list[GaneshaExport]:
    """Parse ``ganesha_exports_command``'s output. A file whose id (its name and its Export_Id must agree), path
    or clients is not what kerub-tui writes is skipped, never trusted: nothing is removed on a guess."""
    out: list[GaneshaExport] = []
    sections: list[tuple[int, list[str]]] = []
    for line in text.splitlines():
        match = _EXPORT_FILE_RE.match(line)
        if match is not None:
            sections.append((int(match.group(1)), []))
        elif sections:
            sections[-1][1].append(line)
    for file_id, lines in sections:
        ids = [int(m.group(1)) for m in map(_GANESHA_ID_RE.match, lines) if m is not None]
        paths = [m.group(1) for m in map(_GANESHA_PATH_RE.match, lines) if m is not None]
        clients = [m.group(1) for m in map(_GANESHA_CLIENTS_RE.match, lines) if m is not None]
        if ids != [file_id] or len(paths) != 1 or len(clients) > 1:
            continue
        try:
            _check_export_id(file_id)
            check_path(paths[0], "export path")
            _ganesha_string(paths[0], "export path")
            client = ", ".join(check_clients(c.strip()) for c in clients[0].split(",")) if clients else None
        except ValueError:
            continue
        out.append(GaneshaExport(file_id, paths[0], client))
    return sorted(out, key=lambda e: e.export_id)


# --- verification: the exports a server offers (mountd protocol: kernel nfsd and ganesha alike) --


def nfs_exports_command(server: str = "127.0.0.1") -> str:
    return shlex.join(["showmount", "--no-headers", "-e", check_address(server)])


def parse_showmount_exports(text: str) -> dict[str, list[str]]:
    """``showmount -e`` (with or without its header line) -> {export path: [clients]}."""
    exports: dict[str, list[str]] = {}
    for line in (text or "").splitlines():
        if not line.strip() or line.startswith("Export list for "):
            continue
        if not line.startswith("/"):
            raise ValueError(f"showmount: line not understood: {line[:80]!r}")
        path, _, clients = line.rpartition(" ")
        if not path.strip():
            path, clients = line, ""
        exports[path.strip()] = [c for c in clients.split(",") if c]
    return exports


# --- mounts (kernel NFS client) -------------------------------------------------------------------


def nfs_mount(server: str, remote_path: str, target: str, options: str = "hard,vers=4.2") -> str:
    """Mount SERVER:PATH on ``target`` unless something is mounted there already (idempotent)."""
    check_path(remote_path, "remote path")
    check_path(target, "mount point")
    source = f"{url_host(server)}:{remote_path}"
    q = shlex.quote(target)
    mount = shlex.join(["mount", "-t", "nfs", "-o", check_options(options), source, target])
    return f"mkdir -p {q} && {{ mountpoint -q {q} || {mount}; }}"


def nfs_unmount(target: str) -> str:
    q = shlex.quote(check_path(target, "mount point"))
    return f"if mountpoint -q {q}; then umount {q}; fi"


# --- the disk as the hypervisor reaches it ---------------------------------------------------------


def nfs_qemu_url(server: str, export_path: str, file_name: str) -> str:
    """nfs://server/export/file, as qemu's NFS client takes it (for qemu-img; libvirt takes the parts)."""
    return f"nfs://{url_host(server)}{_file_path(export_path, file_name)}"


def _file_path(export_path: str, file_name: str) -> str:
    check_path(export_path, "export path")
    if not file_name or "/" in file_name or file_name in (".", "..") or not file_name.isprintable():
        raise ValueError(f"file name {file_name!r} must be one path component")
    full = posixpath.join(export_path, file_name)
    # qemu parses a URL: keep to characters that need no percent-encoding
    if not re.fullmatch(r"[A-Za-z0-9._/-]+", full):
        raise ValueError(f"{full!r} cannot be reached through an nfs:// URL (letters, digits, '._-/' only)")
    return full


@dataclass(frozen=True)
class NfsDiskSource:
    """A disk image in a file exported over NFS by another host, for kvm.domain_xml.

    With ``mount_point`` the hypervisor has the export mounted there (kernel client) and the domain
    uses the file path; without it the domain uses qemu's own NFS client (a libvirt network disk)."""

    server: str
    export_path: str
    file_name: str
    format: str = "raw"
    mount_point: str | None = None

    def __post_init__(self) -> None:
        check_address(self.server)
        _file_path(self.export_path, self.file_name)
        if self.format not in ("raw", "qcow2"):
            raise ValueError(f"image format {self.format!r} is not supported (raw or qcow2)")
        if self.mount_point is not None:
            check_path(self.mount_point, "mount point")

    @property
    def remote_path(self) -> str:
        return _file_path(self.export_path, self.file_name)

    @property
    def local_path(self) -> str | None:
        return None if self.mount_point is None else posixpath.join(self.mount_point, self.file_name)

    @property
    def url(self) -> str:
        return nfs_qemu_url(self.server, self.export_path, self.file_name)
