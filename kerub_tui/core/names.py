"""Validation of every user-chosen name and address that may reach a shell, a path or XML.

Names are deliberately narrow (letters, digits, '.', '_', '-'): a name that is safe here is safe
unquoted in a shell word, a file name, an LVM name, a libvirt domain name and XML text.
Commands still quote everything (defence in depth), but nothing hostile gets this far.
"""

from __future__ import annotations

import ipaddress
import re

MAX_NAME_LENGTH = 63
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_HOSTNAME_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
_USER_RE = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\Z")

# lvm(8) VALID NAMES: LVM names its hidden sub-volumes with these and refuses them anywhere in an LV name.
# A disk's LV is "kerub-" + its name, so a disk name holding one would get no LV (hosts/lvm.check_lv).
LVM_RESERVED_PARTS = (
    "_cdata", "_cmeta", "_corig", "_iorig", "_mimage", "_mlog", "_pmspare", "_rimage", "_rmeta",
    "_tdata", "_tmeta", "_vdata", "_vorigin", "_wcorig",
)  # fmt: skip


class InvalidName(ValueError):
    """A name or address that kerub-tui refuses, with a message meant for the admin."""


def _describe(char: str) -> str:
    if char == " ":
        return "a space"
    if not char.isprintable():
        return f"the control character {char!r}"
    return f"'{char}'"


def check_name(value: object, what: str = "name") -> str:
    """Return ``value`` if it is a safe resource name, else raise InvalidName saying why."""
    if not isinstance(value, str):
        raise InvalidName(f"{what} must be text, not {type(value).__name__}")
    if value == "":
        raise InvalidName(f"{what} must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidName(f"{what} is too long ({len(value)} characters, at most {MAX_NAME_LENGTH})")
    if not _NAME_RE.match(value):
        if value[0] in "._-":
            raise InvalidName(f"{what} {value!r} must start with a letter or digit")
        bad = next(c for c in value if not (c.isascii() and (c.isalnum() or c in "._-")))
        raise InvalidName(
            f"{what} {value!r} contains {_describe(bad)}, which is not allowed: "
            "use letters, digits, '.', '_' and '-'"
        )
    if ".." in value:
        raise InvalidName(f"{what} {value!r} must not contain '..'")
    return value


_CHAP_USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def check_chap_user(user: object) -> str:
    """An iSCSI CHAP account name (tgtd's, an initiator's): letters, digits, '.', '_', '-', at most 64."""
    if not isinstance(user, str) or not _CHAP_USER_RE.match(user):
        raise InvalidName(f"CHAP user {user!r} must be letters, digits, '.', '_' or '-' (at most 64)")
    return user


def check_disk_name(value: object, what: str = "disk name") -> str:
    """A new disk name (created, renamed, a VM's new disk): a safe name holding nothing LVM reserves. The
    one rule of input; documents keep any safe name (one made before this rule still loads)."""
    name = check_name(value, what)
    for part in LVM_RESERVED_PARTS:
        if part in name:
            raise InvalidName(f"{what} {name!r} contains {part!r}, which LVM reserves for its hidden volumes "
                              "(lvm(8)): choose another name")
    return name


def check_address(value: object) -> str:
    """A host address: an IP address or a DNS name (or an ~/.ssh/config alias, same syntax)."""
    if not isinstance(value, str) or value == "":
        raise InvalidName("address must not be empty")
    if len(value) > 253:
        raise InvalidName(f"address is too long ({len(value)} characters, at most 253)")
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    for label in labels:
        if not _HOSTNAME_LABEL_RE.match(label):
            raise InvalidName(
                f"address {value!r} is neither an IP address nor a valid host name "
                "(labels of letters, digits and '-', separated by '.')"
            )
    return value


def check_user(value: object) -> str:
    """A remote login name, as useradd accepts it."""
    if not isinstance(value, str) or not _USER_RE.match(value):
        raise InvalidName(
            f"user {value!r} is not a valid login name "
            "(lowercase letters, digits, '_', '-' and '.', starting with a letter or '_')"
        )
    return value
