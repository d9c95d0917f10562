"""iSCSI sharing with tgtd (userspace target): tgtadm builders, the parser of its ``show`` output, and
the description of an iSCSI disk for the domain XML (qemu's own initiator, libiscsi: no kernel iSCSI).

CHAP: the planner's share (:func:`iscsi_share_chap`) and re-key (:func:`iscsi_rekey`) read the secret on
their standard input into a 0600 file on the host's /run (a tmpfs: it never reaches a disk), removed when
the command ends whatever its outcome; the controller never puts it into a command line, so it is in no
command text kerub-tui shows, logs, audits or stores. tgtadm itself only takes a password as an argument
(``--password``; it has no stdin or file option), so the command gives it ``"$(cat -- FILE)"``: the
password is in that one tgtadm process's argv on the sharing host for the instant it runs.

Names: each target kerub-tui shares has its own incoming CHAP account (:func:`chap_user`, from the target's
IQN, which :func:`disk_iqn` made of the disk id), and the hosts that read it keep its password in a libvirt
secret of usage type iscsi whose usage name (:func:`secret_usage`) is the same on every reader, as a
migrating domain's XML names it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shlex
from dataclasses import dataclass, field

from kerub_tui.core.names import check_address, check_chap_user

from .fileimage import check_path

ISCSI_PORT = 3260
IQN_PREFIX = "iqn.2024-01.org.kerub"
_IQN_RE = re.compile(r"iqn\.\d{4}-\d{2}\.[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::[a-z0-9][a-z0-9.:-]*)?\Z")
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


def disk_iqn(disk_id: str) -> str:
    """The target name kerub-tui gives the share of a disk: one target per disk."""
    return check_iqn(f"{IQN_PREFIX}:" + re.sub(r"[^a-z0-9.-]", "-", disk_id.lower()))


def chap_user(iqn: str) -> str:
    """The incoming CHAP account of kerub-tui's target of ``iqn``: ``kerub-`` and the IQN's name (at most 64
    characters, what tgtd and the initiators take: a long name is cut and a digest of the IQN added)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", check_iqn(iqn).partition(":")[2] or iqn)
    user = f"kerub-{name}"
    if len(user) > 64:
        user = f"kerub-{name[:40]}-{hashlib.sha256(iqn.encode()).hexdigest()[:16]}"
    return check_chap_user(user)


def secret_usage(server_id: str, iqn: str) -> str:
    """The usage name of the libvirt secret (usage type iscsi) that holds the CHAP password of the target of
    ``iqn`` on host ``server_id`` (its document id): one per target, the same on every host reading it. A
    digest: whatever a document holds, the name is one safe word."""
    digest = hashlib.sha256(f"{server_id}\0{iqn}".encode()).hexdigest()[:24]
    return f"kerub-iscsi-{digest}"


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


# The secret on standard input, into a 0600 file on /run removed when the command ends (the EXIT trap runs on
# success and failure alike), and how a command of tgtadm then names it.
SECRET_STDIN = ("f=$(umask 077 && mktemp /run/kerub-chap.XXXXXXXX) && trap 'rm -f -- \"$f\"' EXIT && cat > \"$f\" "
                "&& test -s \"$f\"")  # tgtadm would take an empty password: none is refused before anything changes
SECRET_ARG = '"$(cat -- "$f")"'


def _secret_on_stdin(command: str) -> str:
    return f"{SECRET_STDIN} && {command}"


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


def iscsi_account_set(tid: int, user: str, password: str = SECRET_ARG) -> str:
    """Make the CHAP account ``user`` with ``password`` (shell text: the secret file's contents) and bind it to
    the target as its incoming user. An account of that name left from before (a share cut off, the secret
    being changed) is deleted first: tgtd unbinds it from every target then, so a login with its old password
    fails from now on (a session logged in goes on; CHAP is asked at login)."""
    check_chap_user(user)
    listed = shlex.quote("    " + user)
    show = _tgtadm("--mode", "account", "--op", "show")
    delete = _tgtadm("--mode", "account", "--op", "delete", "--user", user)
    create = _tgtadm("--mode", "account", "--op", "new", "--user", user) + " --password " + password
    return f"{{ if {show} | grep -qxF -- {listed}; then {delete}; fi; }} && {create} && {iscsi_account_bind(tid, user)}"


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


def iscsi_share_chap(tid: int, iqn: str, lun_path: str, user: str, *, initiator_address: str = "ALL",
                     read_only: bool = False) -> str:
    """Share ``lun_path`` as LUN 1 of a new target guarded by CHAP: the account ``user`` with the secret the
    command reads on its standard input (the module's docstring), bound before the ACL lets anyone in."""
    return _secret_on_stdin(" && ".join([
        iscsi_target_new(tid, iqn), iscsi_lun_new(tid, 1, lun_path, read_only), iscsi_account_set(tid, user),
        iscsi_acl_bind(tid, initiator_address)]))


def iscsi_rekey(tid: int, user: str) -> str:
    """Give the target's CHAP account a new secret, read on standard input (the module's docstring)."""
    return _secret_on_stdin(iscsi_account_set(tid, user))


def iscsi_unshare(tid: int, chap_user: str | None = None) -> str:
    """Delete the target (and its LUNs) even with initiators logged in, and its CHAP account when it has one;
    succeeds when they are gone."""
    check_tid(tid)
    show = _tgtadm("--mode", "target", "--op", "show")
    delete = _tgtadm("--mode", "target", "--op", "delete", "--force", "--tid", tid)
    command = f"if {show} | grep -q {shlex.quote(f'^Target {tid}: ')}; then {delete}; fi"
    return command if chap_user is None else f"{command} && {iscsi_account_delete(chap_user)}"


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

    @property
    def incoming_users(self) -> tuple[str, ...]:
        """The CHAP accounts an initiator logs in with (tgtadm lists an outgoing one as ``NAME (outgoing)``)."""
        return tuple(a for a in self.accounts if not a.endswith(" (outgoing)"))


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
