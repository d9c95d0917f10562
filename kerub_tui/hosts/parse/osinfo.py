"""/etc/os-release, ``uname -r`` and ``uname -n``: which operating system a host runs."""

from __future__ import annotations

import re
import shlex

from kerub_tui.core.models import OsInfo

from .errors import ParseError, guarded, require_text

COMMAND = "cat /etc/os-release"
_KEY_RE = re.compile(r"[A-Z][A-Z0-9_]*\Z")
_WORD_RE = re.compile(r"[\x21-\x7e]{1,255}\Z")  # one printable ASCII word: a kernel release, a host name


@guarded(COMMAND)
def parse_os_release(text: str) -> dict[str, str]:
    """os-release(5): KEY=value lines, values optionally shell-quoted; comments and blanks allowed."""
    text = require_text(text, COMMAND)
    values: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, raw = stripped.partition("=")
        if not sep or not _KEY_RE.match(key):
            raise ParseError(COMMAND, f"line {line[:80]!r} is not KEY=value")
        try:
            words = shlex.split(raw, comments=False, posix=True)
        except ValueError as exc:
            raise ParseError(COMMAND, f"value of {key} is badly quoted: {exc}") from exc
        if len(words) > 1:
            raise ParseError(COMMAND, f"value of {key} has unquoted spaces: {raw[:80]!r}")
        value = words[0] if words else ""
        if any(not c.isprintable() for c in value):
            raise ParseError(COMMAND, f"value of {key} contains a control character")
        values[key] = value
    if not values.get("ID") and not values.get("NAME"):
        raise ParseError(COMMAND, "neither ID nor NAME is set")
    return values


def _word(text: str, command: str) -> str:
    text = require_text(text, command)
    word = text.strip()
    if not _WORD_RE.match(word):
        raise ParseError(command, f"{word[:80]!r} is not one printable word")
    return word


@guarded(COMMAND)
def parse_os_info(os_release: str, kernel: str, hostname: str) -> OsInfo:
    values = parse_os_release(os_release)
    return OsInfo(
        id=values.get("ID") or values.get("NAME", "").lower(),
        version_id=values.get("VERSION_ID", ""),
        pretty_name=values.get("PRETTY_NAME") or values.get("NAME", ""),
        kernel=_word(kernel, "uname -r"),
        hostname=_word(hostname, "uname -n"),
    )
