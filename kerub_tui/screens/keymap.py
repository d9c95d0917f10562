"""Key remapping from ``keymap.toml`` in the user's config dir.

The file maps binding ids to keys, Textual's key names, several keys separated by commas::

    # kerub-tui keymap: binding id = key(s); `?` in the console lists every id and key
    "vms.start" = "ctrl+s"
    "table.filter" = "slash,f"
    "app.jump" = ["colon", "ctrl+g"]

A bad file never stops the console: what can be used is used, every problem is reported (the app
shows them as a notification and on the settings screen) and the defaults stay for the rest.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..core import paths

KEYMAP_FILE = "keymap.toml"

# One key: modifiers joined by '+', then a key name or a single printable character.
_KEY_RE = re.compile(r"((ctrl|shift|alt|meta|super|hyper)\+)*([A-Za-z0-9_]+|[^\s,+])\Z")


@dataclass
class Keymap:
    path: Path
    bindings: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    found: bool = False


def keymap_path() -> Path:
    return paths.config_dir() / KEYMAP_FILE


def load_keymap(path: Path | None = None, known_ids: Iterable[str] | None = None) -> Keymap:
    """Read the keymap; unknown ids and malformed keys are reported and skipped, never fatal."""
    path = path or keymap_path()
    keymap = Keymap(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return keymap
    except OSError as error:
        keymap.problems.append(f"{path}: cannot read ({error.strerror}); default keys in use")
        return keymap
    keymap.found = True
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        keymap.problems.append(f"{path}: not valid TOML ({error}); default keys in use")
        return keymap
    known = set(known_ids) if known_ids is not None else None
    for binding_id, value in data.items():
        keys = value if isinstance(value, list) else [value]
        if not keys or not all(isinstance(k, str) for k in keys):
            keymap.problems.append(f"{path}: {binding_id}: expected a key or a list of keys, got {value!r}")
            continue
        split = [part.strip() for k in keys for part in k.split(",")]
        bad = [k for k in split if not _KEY_RE.match(k)]
        if bad:
            keymap.problems.append(f"{path}: {binding_id}: {bad[0]!r} is not a key (e.g. ctrl+s, f5, slash, x)")
            continue
        if known is not None and binding_id not in known:
            keymap.problems.append(f"{path}: no binding with id {binding_id!r} (see ? for the ids)")
            continue
        keymap.bindings[binding_id] = ",".join(split)
    return keymap
