"""A streaming parser for ``vmstat [-n] [-w] DELAY``: CPU split and memory, one sample per line.

Columns are found by their names in the header line, so the narrow, wide (-w) and newer layouts
(procps-ng 4 adds a ``gu`` column) all work. vmstat prints memory in KiB by default; the monitor
keeps that default (``-S b`` works on procps-ng 4.0 here, but the default needs no option at all)
and the parser is told the unit.
The first sample after start is the average since boot, not the last second: it is marked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ParseError, require_text

COMMAND = "vmstat"
_GROUP_RE = re.compile(r"-*[a-z]+-*(\s+-*[a-z]+-*)*\Z")  # "procs -----------memory---------- ---swap-- ..."
_REQUIRED = ("free", "buff", "cache", "swpd", "us", "sy", "id")
_MAX_KIB = 1 << 52


@dataclass(frozen=True)
class VmstatSample:
    cpu_user: float  # percent of all CPUs
    cpu_system: float
    cpu_idle: float
    cpu_wait: float | None
    cpu_steal: float | None
    memory_free: int  # bytes
    buffers: int
    cache: int
    swap_used: int
    memory_used: int | None  # bytes, when the parser knows the total (total - free - buffers - cache)
    since_boot: bool  # the first line vmstat prints averages since boot


class VmstatParser:
    """Feed it lines; it returns a VmstatSample for a data line, None for a header line.

    A line it cannot read raises ParseError; the parser stays usable, so the stream goes on.
    """

    def __init__(self, memory_total: int | None = None, unit: int = 1024) -> None:
        if unit <= 0:
            raise ValueError("unit must be a positive number of bytes")
        self.memory_total = memory_total
        self.unit = unit
        self.columns: list[str] | None = None
        self.samples = 0

    def feed(self, line: str) -> VmstatSample | None:
        line = require_text(line, COMMAND).strip()
        if not line:
            return None
        words = line.split()
        if _GROUP_RE.match(line) and "memory" in line:
            return None  # the group header ("procs ---memory--- ...") above the column names
        if not words[0].isdigit():
            if not all(w.isascii() and w.isalpha() for w in words):
                raise ParseError(COMMAND, f"line {line[:80]!r} is neither a header nor numbers")
            missing = [c for c in _REQUIRED if c not in words]
            if missing:
                raise ParseError(COMMAND, f"header {line[:80]!r} lacks the columns {', '.join(missing)}")
            if len(set(words)) != len(words):
                raise ParseError(COMMAND, f"header {line[:80]!r} repeats a column")
            self.columns = words
            return None
        if self.columns is None:
            raise ParseError(COMMAND, f"data line {line[:80]!r} before any header")
        if len(words) != len(self.columns):
            raise ParseError(
                COMMAND, f"line {line[:80]!r} has {len(words)} values for {len(self.columns)} columns"
            )
        if not all(w.isascii() and w.isdigit() and len(w) <= 20 for w in words):
            raise ParseError(COMMAND, f"line {line[:80]!r} has a value that is not a whole number")
        row = dict(zip(self.columns, (int(w) for w in words)))
        for name in ("us", "sy", "id", "wa", "st"):
            if row.get(name, 0) > 100:
                raise ParseError(COMMAND, f"cpu {name} {row[name]} is more than 100%")
        for name in ("free", "buff", "cache", "swpd"):
            if row[name] > _MAX_KIB:
                raise ParseError(COMMAND, f"memory {name} {row[name]} is implausibly large")
        free, buffers, cache = row["free"] * self.unit, row["buff"] * self.unit, row["cache"] * self.unit
        used = None
        if self.memory_total is not None:
            used = max(0, self.memory_total - free - buffers - cache)
        self.samples += 1
        return VmstatSample(
            cpu_user=float(row["us"]),
            cpu_system=float(row["sy"]),
            cpu_idle=float(row["id"]),
            cpu_wait=float(row["wa"]) if "wa" in row else None,
            cpu_steal=float(row["st"]) if "st" in row else None,
            memory_free=free,
            buffers=buffers,
            cache=cache,
            swap_used=row["swpd"] * self.unit,
            memory_used=used,
            since_boot=self.samples == 1,
        )
