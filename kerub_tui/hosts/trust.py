"""SSH trust between hosts: add (idempotently) and remove a public key in authorized_keys.

Used for peer-to-peer live migration, where the source host's libvirtd (root) connects to the target
over SSH. A key line is validated strictly: a known type, base64 whose embedded type matches, and an
optional comment of safe characters. No options (``command=``, ``from=``...) and no second line can
reach the file through a key.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
import re
import shlex
import struct
from dataclasses import dataclass

from .fileimage import check_path

KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}\Z")
_COMMENT_RE = re.compile(r"[A-Za-z0-9@._:+-]{1,128}\Z")
DEFAULT_AUTHORIZED_KEYS = "/root/.ssh/authorized_keys"


@dataclass(frozen=True)
class PublicKey:
    type: str
    blob: str  # the base64 key material
    comment: str | None = None

    @property
    def identity(self) -> str:
        """'type base64': what identifies the key in a file, whatever its comment or options."""
        return f"{self.type} {self.blob}"

    @property
    def line(self) -> str:
        return self.identity if self.comment is None else f"{self.identity} {self.comment}"


def parse_public_key(text: str) -> PublicKey:
    """Validate one OpenSSH public key line; raise ValueError saying what is wrong."""
    if not isinstance(text, str):
        raise ValueError("a public key must be text")
    stripped = text.strip()
    if "\n" in stripped or "\r" in stripped or "\0" in stripped:
        raise ValueError("a public key must be a single line")
    fields = stripped.split()
    if len(fields) not in (2, 3) or " ".join(fields) != stripped:
        raise ValueError("a public key is 'TYPE BASE64 [COMMENT]', separated by single spaces (no options)")
    key_type, blob = fields[0], fields[1]
    if key_type not in KEY_TYPES:
        raise ValueError(f"key type {key_type[:40]!r} is not one of: {', '.join(KEY_TYPES)}")
    if not _BASE64_RE.match(blob):
        raise ValueError("the key material is not base64")
    try:
        raw = base64.b64decode(blob, validate=True)
    except binascii.Error:
        raise ValueError("the key material is not valid base64") from None
    if len(raw) < 4:
        raise ValueError("the key material is too short")
    (length,) = struct.unpack(">I", raw[:4])
    if raw[4 : 4 + length] != key_type.encode():
        raise ValueError(f"the key material does not hold a {key_type} key")
    comment = fields[2] if len(fields) == 3 else None
    if comment is not None and not _COMMENT_RE.match(comment):
        raise ValueError("the key comment may hold only letters, digits and '@._:+-' (at most 128)")
    return PublicKey(key_type, blob, comment)


def _file(authorized_keys: str) -> str:
    check_path(authorized_keys, "authorized_keys path")
    return authorized_keys


def ssh_trust(from_public_key: str, authorized_keys: str = DEFAULT_AUTHORIZED_KEYS) -> str:
    """Append the key to ``authorized_keys`` unless a line already holds it (with any comment)."""
    key = parse_public_key(from_public_key)
    path = _file(authorized_keys)
    qpath = shlex.quote(path)
    return (
        f"umask 077 && mkdir -p {shlex.quote(posixpath.dirname(path))} && touch {qpath} && "
        f"{{ grep -qF -e {shlex.quote(key.identity)} {qpath} || printf '%s\\n' {shlex.quote(key.line)} >> {qpath}; }}"
    )


def ssh_untrust(public_key: str, authorized_keys: str = DEFAULT_AUTHORIZED_KEYS) -> str:
    """Remove every line holding the key; other lines, the file's owner and its mode are kept."""
    key = parse_public_key(public_key)
    path = _file(authorized_keys)
    qpath = shlex.quote(path)
    qtmp = shlex.quote(path + ".kerub-tmp")
    # grep -v exits 1 when nothing is left: that is an empty file, not an error
    return (
        f"if [ -f {qpath} ]; then umask 077 && "
        f"{{ grep -vF -e {shlex.quote(key.identity)} {qpath} > {qtmp} || [ $? -eq 1 ]; }} && "
        f"cat {qtmp} > {qpath} && rm -f {qtmp}; fi"
    )
