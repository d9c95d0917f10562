"""Human sizes: '64M', '2G', '1.5GiB', '512' (bytes). Binary units, as LVM and qemu-img use them."""

from __future__ import annotations

import re
from decimal import Decimal

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:I?B)?\s*\Z", re.IGNORECASE)
# The largest size kerub-tui accepts anywhere (a disk, memory): 1 EiB, far beyond any host, well
# within what LVM (8 EiB) and qemu-img (2^63 bytes) can describe.
MAX_SIZE = 1 << 60


def parse_size(text: str) -> int:
    """Parse a size into bytes; raise ValueError with a readable message."""
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"size {_short(text)!r} is not understood: write e.g. 512M, 2G or 1.5T")
    number, unit = match.groups()
    exact = Decimal(number) * _UNITS[unit.upper()]  # Decimal: no float overflow on 400 digits
    if exact > MAX_SIZE:
        raise ValueError(f"size {_short(text)!r} is too large: at most 1024P (1 EiB)")
    value = int(exact)
    if value <= 0:
        raise ValueError(f"size {_short(text)!r} must be more than zero")
    return value


def _short(text: str) -> str:
    text = text.strip()
    return text if len(text) <= 40 else text[:37] + "..."


def format_size(value: int | float | None) -> str:
    """Bytes as a short human string: 64.0M, 1.5G."""
    if value is None:
        return "-"
    value = float(value)
    for unit in ("B", "K", "M", "G", "T"):
        if abs(value) < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}P"  # pragma: no cover - loop always returns
