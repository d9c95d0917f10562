"""Text that came from somewhere else (a host, a command's output, a document), made safe to show.

A host reports CPU models, paths, OS names, device models and command output: all of it is data. It
may hold terminal escape sequences, control characters or anything else a broken or hostile host
prints. ``printable`` turns every such character into a visible escape (``\\x1b``, ``\\u202e``), so
what reaches a terminal is exactly what the host said, and never a command to the terminal;
``clip`` bounds its length with a marker saying how much was cut. The console adds its own layer on
top (Rich markup is escaped, see screens/format.py); the command line writes through ``printable``.
"""

from __future__ import annotations

import unicodedata

# Unicode categories never shown raw: controls (C0, DEL, C1), format characters (bidi overrides,
# zero-width joiners and spaces), surrogates (not encodable), line and paragraph separators.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
CLIP_MARK = "…[{} more characters]"

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_cache: dict[str, str] = dict(_NAMED)


def _visible(char: str) -> str:
    shown = _cache.get(char)
    if shown is None:
        code = ord(char)
        if unicodedata.category(char) in _HIDDEN_CATEGORIES:
            shown = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
        else:
            shown = char
        if len(_cache) < 4096:
            _cache[char] = shown
    return shown


def printable(text: object, *, newlines: bool = False, limit: int | None = None) -> str:
    """``text`` with every control and format character shown as a visible escape.

    With ``newlines`` a newline (and a tab) stays as it is; otherwise they are escaped too, which
    keeps a one-line field on one line. ``limit`` clips the result (see ``clip``).
    """
    if not isinstance(text, str):
        text = str(text)
    if limit is not None:
        text = clip(text, limit)
    if text.isprintable():  # no control, format or separator character at all: the common case
        return text
    keep = "\n\t" if newlines else ""
    return "".join(c if c in keep else _visible(c) for c in text)


def clip(text: str, limit: int) -> str:
    """At most about ``limit`` characters of ``text``, with a marker saying how many were cut."""
    if limit < 1:
        raise ValueError("limit must be positive")
    if len(text) <= limit:
        return text
    return text[:limit] + CLIP_MARK.format(len(text) - limit)


def is_printable(text: str, *, newlines: bool = False) -> bool:
    """True when ``printable`` would leave ``text`` as it is."""
    return printable(text, newlines=newlines) == text
