"""iSCSI sharing with tgtd (userspace target): tgtadm builders, the parser of its ``show`` output, and
the description of an iSCSI disk for the domain XML (qemu's own initiator, libiscsi: no kernel iSCSI).

CHAP: the secret is written to a 0600 file through stdin (:func:`write_secret_file`), never put into a
command line by the controller. tgtadm itself only takes it as an argument, so the share command reads
it with ``$(cat FILE)``: it is visible in the target host's process list for the instant tgtadm runs,
and it never appears in the command text kerub-tui shows, logs or stores.
"""

from __future__ import annotations

import re
import secrets
import shlex
from dataclasses import dataclass, field

from kerub_tui.core.names import check_address

from .fileimage import check_path

ISCSI_PORT = 3260
IQN_PREFIX = "iqn.2024-01.org.kerub"
_IQN_RE = re.compile(r"iqn\.\d{4}-\d{2}\.[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::[a-z0-9][a-z0-9.:-]*)?\Z")
_CHAP_USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_TGTADM = ["tgtadm", "--lld", "iscsi"]


def check_iqn(iqn: object) -> str:
    if not isinstance(iqn, str) or len(iqn) > 223 or not _IQN_RE.match(iqn):
        raise ValueError(f"{iqn!r} is not an iSCSI qualified name (iqn.YYYY-MM.reversed.domain:name, lowercase)")
    return iqn


def check_tid(tid: object) -> int:
    if isinstance(tid, bool) or not isinstance(tid, int) or not 1 <= tid <= 65535:
        raise ValueError(f"target id {tid!r} must be a whole number from 1 to 65535 (0 is tgtd's own)")
    return tid


def check_lun(lun: object) -> int:
    if isinstance(lun, bool) or not isinstance(lun, int) or not 1 <= lun <= 255:
        raise ValueError(f"LUN {lun!r} must be from 1 to 255 (LUN 0 is the target's controller)")
    return lun


def check_chap_user(user: object) -> str:
    if not isinstance(user, str) or not _CHAP_USER_RE.match(user):
        raise ValueError(f"CHAP user {user!r} must be letters, digits, '.', '_' or '-' (at most 64)")
    return user


def disk_iqn(disk_id: str) -> str:
    """The target name kerub-tui gives the share of a disk: one target per disk."""
    return check_iqn(f"{IQN_PREFIX}:" + re.sub(r"[^a-z0-9.-]", "-", disk_id.lower()))


def new_chap_secret() -> str:
    """16 characters: within what every initiator accepts (12 to 16 for some)."""
    return secrets.token_hex(8)


def _initiator(address: str) -> str:
    return "ALL" if address == "ALL" else check_address(address)


def _tgtadm(*args: str | int) -> str:
    return shlex.join([*_TGTADM, *map(str, args)])


def write_secret_file(path: str) -> str:
    """Store the secret arriving on stdin in a 0600 file (so it is on no command line)."""
    q = shlex.quote(check_path(path, "secret file"))
    return f"umask 077 && cat > {q} && chmod 600 {q}"


def iscsi_target_new(tid: int, iqn: str) -> str:
    return _tgtadm("--mode", "target", "--op", "new", "--tid", check_tid(tid), "--targetname", check_iqn(iqn))


def _backing(path: str) -> str:
    check_path(path, "backing store")
    if "," in path:
        raise ValueError(f"tgtd cannot share {path!r}: it splits its parameters at ','")
    return path


def iscsi_lun_new(tid: int, lun: int, backing_path: str, read_only: bool = False) -> str:
    command = _tgtadm(
        "--mode", "logicalunit", "--op", "new", "--tid", check_tid(tid), "--lun", check_lun(lun),
        "--backing-store", _backing(backing_path),
    )
    if read_only:
        # tgtadm takes readonly only as an update of an existing LUN
        command += " && " + _tgtadm(
            "--mode", "logicalunit", "--op", "update", "--tid", tid, "--lun", lun, "--params", "readonly=1"
        )
    return command


def iscsi_account_new(user: str, password_file: str) -> str:
    """Create the CHAP account unless it exists (accounts are global in tgtd)."""
    check_chap_user(user)
    listed = shlex.quote("    " + user)
    secret = f'"$(cat -- {shlex.quote(check_path(password_file, "CHAP password file"))})"'
    create = _tgtadm("--mode", "account", "--op", "new", "--user", user) + " --password " + secret
    return f"{{ {_tgtadm('--mode', 'account', '--op', 'show')} | grep -qxF -- {listed} || {create}; }}"


def iscsi_account_bind(tid: int, user: str) -> str:
    return _tgtadm("--mode", "account", "--op", "bind", "--tid", check_tid(tid), "--user", check_chap_user(user))


def iscsi_acl_bind(tid: int, initiator_address: str = "ALL") -> str:
    return _tgtadm(
        "--mode",
        "target",
        "--op",
        "bind",
        "--tid",
        check_tid(tid),
        "--initiator-address",
        _initiator(initiator_address),
    )


def iscsi_acl_unbind(tid: int, initiator_address: str) -> str:
    """Take one address out of a target's ACL (never ALL: an empty ACL lets nobody in)."""
    if initiator_address == "ALL":
        raise ValueError("ALL is not taken out of an ACL: remove the target instead")
    return _tgtadm("--mode", "target", "--op", "unbind", "--tid", check_tid(tid), "--initiator-address",
                   check_address(initiator_address))


def iscsi_share(
    tid: int,
    iqn: str,
    lun_path: str,
    chap_user: str | None,
    chap_password_file: str | None,
    *,
    initiator_address: str = "ALL",
    read_only: bool = False,
) -> str:
    """Share ``lun_path`` as LUN 1 of a new target; with CHAP when a user and its secret file are given.

    ``initiator_address`` restricts which hypervisor may log in (ALL = any, when CHAP guards it)."""
    if (chap_user is None) != (chap_password_file is None):
        raise ValueError("CHAP needs both a user and a password file, or neither")
    steps = [iscsi_target_new(tid, iqn), iscsi_lun_new(tid, 1, lun_path, read_only)]
    if chap_user is not None and chap_password_file is not None:
        steps += [iscsi_account_new(chap_user, chap_password_file), iscsi_account_bind(tid, chap_user)]
    steps.append(iscsi_acl_bind(tid, initiator_address))
    return " && ".join(steps)


def iscsi_unshare(tid: int) -> str:
    """Delete the target (and its LUNs) even with initiators logged in; succeeds when it is gone."""
    check_tid(tid)
    show = _tgtadm("--mode", "target", "--op", "show")
    delete = _tgtadm("--mode", "target", "--op", "delete", "--force", "--tid", tid)
    return f"if {show} | grep -q {shlex.quote(f'^Target {tid}: ')}; then {delete}; fi"


def iscsi_account_delete(user: str) -> str:
    """Delete a CHAP account (unbound from every target by tgtd); succeeds when it is gone."""
    check_chap_user(user)
    show = _tgtadm("--mode", "account", "--op", "show")
    delete = _tgtadm("--mode", "account", "--op", "delete", "--user", user)
    return f"if {show} | grep -qxF -- {shlex.quote('    ' + user)}; then {delete}; fi"


def iscsi_show_command() -> str:
    return _tgtadm("--mode", "target", "--op", "show")


def iscsi_accounts_command() -> str:
    return _tgtadm("--mode", "account", "--op", "show")


# --- parsing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TgtLun:
    lun: int
    type: str  # "controller" for LUN 0, "disk" for shared storage
    size_mb: int | None  # tgtadm rounds to decimal megabytes
    backing_path: str | None
    backing_type: str | None
    read_only: bool
    online: bool


@dataclass(frozen=True)
class TgtTarget:
    tid: int
    iqn: str
    state: str | None = None
    luns: tuple[TgtLun, ...] = ()
    accounts: tuple[str, ...] = ()
    acl: tuple[str, ...] = ()
    initiators: tuple[str, ...] = ()  # logged-in initiator names (I_T nexus)
    connections: tuple[str, ...] = field(default=())  # their IP addresses

    def lun(self, number: int) -> TgtLun | None:
        return next((lun for lun in self.luns if lun.lun == number), None)


_TARGET_RE = re.compile(r"^Target (\d+): (\S+)\s*$")


def parse_tgtadm_show(text: str) -> list[TgtTarget]:
    """Parse ``tgtadm --lld iscsi --mode target --op show``. Unknown lines are skipped; a target line
    that does not parse raises ValueError (it would mean the format changed)."""
    targets: list[TgtTarget] = []
    current: dict | None = None
    section = ""
    lun: dict | None = None

    def close_lun() -> None:
        nonlocal lun
        if lun is not None and current is not None:
            current["luns"].append(
                TgtLun(
                    lun=lun["lun"],
                    type=lun.get("Type", ""),
                    size_mb=lun.get("size_mb"),
                    backing_path=None if lun.get("Backing store path") in (None, "None") else lun["Backing store path"],
                    backing_type=lun.get("Backing store type"),
                    read_only=lun.get("Readonly") == "Yes",
                    online=lun.get("Online") == "Yes",
                )
            )
        lun = None

    def close_target() -> None:
        close_lun()
        if current is not None:
            targets.append(
                TgtTarget(
                    tid=current["tid"],
                    iqn=current["iqn"],
                    state=current.get("state"),
                    luns=tuple(current["luns"]),
                    accounts=tuple(current["accounts"]),
                    acl=tuple(current["acl"]),
                    initiators=tuple(current["initiators"]),
                    connections=tuple(current["connections"]),
                )
            )

    for raw in (text or "").splitlines():
        line = raw.rstrip()
        if not line.strip():
            continue
        if line.startswith("Target "):
            match = _TARGET_RE.match(line)
            if not match:
                raise ValueError(f"tgtadm show: target line not understood: {line[:80]!r}")
            close_target()
            current = {"tid": int(match.group(1)), "iqn": match.group(2), "luns": [], "accounts": [],
                       "acl": [], "initiators": [], "connections": []}
            section = ""
            continue
        if current is None:
            continue
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if indent == 4 and stripped.endswith(":"):
            close_lun()
            section = stripped[:-1]
            continue
        if section == "System information" and stripped.startswith("State:"):
            current["state"] = stripped.split(":", 1)[1].strip()
        elif section == "LUN information":
            if stripped.startswith("LUN:"):
                close_lun()
                try:
                    lun = {"lun": int(stripped.split(":", 1)[1])}
                except ValueError:
                    lun = None
            elif lun is not None and ":" in stripped:
                key, value = (part.strip() for part in stripped.split(":", 1))
                if key == "Size":
                    size = re.match(r"(\d+) MB", value)
                    lun["size_mb"] = int(size.group(1)) if size else None
                else:
                    lun[key] = value
        elif section == "Account information" and indent >= 8:
            current["accounts"].append(stripped)
        elif section == "ACL information" and indent >= 8:
            current["acl"].append(stripped)
        elif section == "I_T nexus information":
            if stripped.startswith("Initiator:"):
                words = stripped.split(":", 1)[1].split()  # "Initiator: NAME alias: ALIAS"
                if words:
                    current["initiators"].append(words[0])
            elif stripped.startswith("IP Address:"):
                current["connections"].append(stripped.split(":", 1)[1].strip())
    close_target()
    return targets


def parse_tgtadm_accounts(text: str) -> list[str]:
    """Parse ``tgtadm --lld iscsi --mode account --op show`` (an 'Account list:' then one per line)."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    if lines and lines[0].strip() != "Account list:":
        raise ValueError(f"tgtadm account show: not understood: {lines[0][:80]!r}")
    return [line.strip() for line in lines[1:]]


# --- the disk as the hypervisor reaches it ----------------------------------------------------------


@dataclass(frozen=True)
class IscsiDiskSource:
    """A disk shared over iSCSI by another host, for :func:`kerub_tui.hosts.kvm.domain_xml`.

    ``secret_usage`` names the libvirt secret (type iscsi) that holds the CHAP password on the
    hypervisor; the domain XML refers to it and never contains the password."""

    portal: str  # the sharing host's address
    iqn: str
    lun: int = 1
    port: int = ISCSI_PORT
    chap_user: str | None = None
    secret_usage: str | None = None

    def __post_init__(self) -> None:
        check_address(self.portal)
        check_iqn(self.iqn)
        check_lun(self.lun)
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ValueError(f"iSCSI port {self.port!r} is not a TCP port")
        if (self.chap_user is None) != (self.secret_usage is None):
            raise ValueError("CHAP needs both the user and the libvirt secret usage name, or neither")
        if self.chap_user is not None:
            check_chap_user(self.chap_user)
            check_chap_user(self.secret_usage)

    @property
    def libvirt_name(self) -> str:
        """The <source name='IQN/LUN'> of a libvirt network disk."""
        return f"{self.iqn}/{self.lun}"
