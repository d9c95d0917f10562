"""/proc/meminfo: how much memory a host has and has free, in bytes."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ParseError, guarded, require_text, to_int

COMMAND = "cat /proc/meminfo"
_UNITS = {"": 1, "kB": 1024}  # the kernel's "kB" is KiB
_MAX = 1 << 62


@dataclass(frozen=True)
class MemInfo:
    total: int
    free: int
    available: int | None  # MemAvailable: kernels before 3.14 lack it
    swap_total: int
    swap_free: int

    @property
    def swap_used(self) -> int:
        return self.swap_total - self.swap_free


@guarded(COMMAND)
def parse_meminfo(text: str) -> MemInfo:
    text = require_text(text, COMMAND)
    values: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, sep, rest = line.partition(":")
        words = rest.split()
        if not sep or not name.strip() or len(words) not in (1, 2) or (len(words) == 2 and words[1] not in _UNITS):
            raise ParseError(COMMAND, f"line {line[:80]!r} is not 'Name: number [kB]'")
        unit = _UNITS[words[1]] if len(words) == 2 else 1
        values[name.strip()] = to_int(words[0], name.strip(), COMMAND, maximum=_MAX // unit) * unit
    for required in ("MemTotal", "MemFree"):
        if required not in values:
            raise ParseError(COMMAND, f"no {required} line")
    total = values["MemTotal"]
    if total == 0:
        raise ParseError(COMMAND, "MemTotal is 0")
    swap_total = values.get("SwapTotal", 0)
    swap_free = values.get("SwapFree", 0)
    if values["MemFree"] > total or swap_free > swap_total:
        raise ParseError(COMMAND, "free memory is more than the total")
    available = values.get("MemAvailable")
    return MemInfo(total=total, free=values["MemFree"], available=available, swap_total=swap_total, swap_free=swap_free)
