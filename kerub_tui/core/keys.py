"""Keys a guest can be sent (``vm send-keys``): names to Linux input keycodes (libvirt's
``VIR_KEYCODE_SET_LINUX``), and the parser of a combination such as ``ctrl+alt+del``.

A combination is key names joined by ``+``, pressed together (in order) and released together; a
sequence is several combinations, sent one after the other. Only the names here are accepted: a
name that is not one is refused with one line naming it, so nothing unchecked reaches libvirt.
"""

from __future__ import annotations

import string

MAX_COMBO_KEYS = 16  # libvirt's VIR_DOMAIN_SEND_KEY_MAX_KEYS
MAX_SEQUENCE = 64  # combinations in one send-keys


class InvalidKeys(ValueError):
    """A key combination that cannot be sent, with one line saying why."""


# <linux/input-event-codes.h>; tests/unit/test_vm_actions.py checks them against the header.
_LETTERS = dict(zip("qwertyuiop", range(16, 26), strict=True)) | dict(zip("asdfghjkl", range(30, 39), strict=True)) \
    | dict(zip("zxcvbnm", range(44, 51), strict=True))
KEYCODES: dict[str, int] = {
    **_LETTERS,
    **{str(n): 1 + n for n in range(1, 10)}, "0": 11,
    **{f"f{n}": 58 + n for n in range(1, 11)}, "f11": 87, "f12": 88,
    "esc": 1, "minus": 12, "equal": 13, "backspace": 14, "tab": 15, "leftbrace": 26, "rightbrace": 27,
    "enter": 28, "ctrl": 29, "semicolon": 39, "apostrophe": 40, "grave": 41, "shift": 42, "backslash": 43,
    "comma": 51, "dot": 52, "slash": 53, "rightshift": 54, "kpasterisk": 55, "alt": 56, "space": 57,
    "capslock": 58, "numlock": 69, "scrolllock": 70, "rightctrl": 97, "sysrq": 99, "altgr": 100,
    "home": 102, "up": 103, "pageup": 104, "left": 105, "right": 106, "end": 107, "down": 108,
    "pagedown": 109, "insert": 110, "delete": 111, "pause": 119, "meta": 125, "rightmeta": 126,
    "menu": 127,
}
# Other names people write for the same keys.
ALIASES: dict[str, str] = {
    "control": "ctrl", "leftctrl": "ctrl", "leftalt": "alt", "rightalt": "altgr", "leftshift": "shift",
    "del": "delete", "escape": "esc", "return": "enter", "ret": "enter", "bksp": "backspace", "ins": "insert",
    "pgup": "pageup", "pgdn": "pagedown", "super": "meta", "win": "meta", "leftmeta": "meta", "print": "sysrq",
    "prtsc": "sysrq", "compose": "menu", "period": "dot", "-": "minus", "=": "equal", ".": "dot", ",": "comma",
    "/": "slash", ";": "semicolon", "'": "apostrophe", "`": "grave", "[": "leftbrace", "]": "rightbrace",
    "\\": "backslash",
}


def keycode(name: str) -> int:
    """The Linux keycode of one key name (case-insensitive); InvalidKeys for any other text."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    code = KEYCODES.get(key)
    if code is None:
        shown = "".join(c if c in string.printable and c not in "\t\n\r\x0b\x0c" else "?" for c in name)[:40]
        raise InvalidKeys(f"unknown key {shown!r} (keys are names such as ctrl, alt, shift, del, f1..f12, a..z, "
                          "0..9, enter, esc, tab, sysrq; joined with + into a combination: ctrl+alt+del)")
    return code


def parse_combo(text: str) -> list[int]:
    """``ctrl+alt+del`` -> the keycodes pressed together; InvalidKeys saying what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidKeys("an empty key combination: write one such as ctrl+alt+del")
    if len(text) > 200:
        raise InvalidKeys("a key combination of more than 200 characters")
    names = text.split("+")
    if any(not n.strip() for n in names):
        raise InvalidKeys(f"{text[:40]!r}: an empty key name between the '+' signs")
    codes = [keycode(n) for n in names]
    if len(codes) > MAX_COMBO_KEYS:
        raise InvalidKeys(f"{len(codes)} keys in one combination: at most {MAX_COMBO_KEYS} are pressed together")
    if len(set(codes)) != len(codes):
        raise InvalidKeys(f"{text[:40]!r} names a key twice")
    return codes


def parse_sequence(combos: list[str] | tuple[str, ...]) -> list[list[int]]:
    """Each combination's keycodes, in order; InvalidKeys for the first one that is wrong."""
    if isinstance(combos, str) or not combos:
        raise InvalidKeys("no keys to send: give a combination such as ctrl+alt+del")
    if len(combos) > MAX_SEQUENCE:
        raise InvalidKeys(f"{len(combos)} key combinations: at most {MAX_SEQUENCE} in one go")
    return [parse_combo(c) for c in combos]


def canonical(combos: list[str] | tuple[str, ...]) -> str:
    """The combinations as kerub-tui names them (after parsing: valid names only), for the audit."""
    parse_sequence(combos)
    out = []
    for combo in combos:
        out.append("+".join(ALIASES.get(n.strip().lower(), n.strip().lower()) for n in combo.split("+")))
    return " ".join(out)
