"""dmidecode: system and chassis maker, memory modules (speed, ECC), power supplies.

Reads ``dmidecode -t 1,3,16,17,39`` text (there is no JSON mode). In a VM, a container, or without
root there is often no SMBIOS table at all: that is a fact ("not available", None), not an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kerub_tui.core.models import DmiInfo, MemoryDevice

from .errors import ParseError, guarded, missing_tool, require_text

COMMAND = "dmidecode"

_HANDLE_RE = re.compile(r"Handle 0x[0-9A-Fa-f]{1,8}, DMI type (\d{1,3}), \d{1,5} bytes\Z")
# what dmidecode says when there is no table to read: the host simply has no DMI facts to offer
_UNAVAILABLE = (
    "No SMBIOS nor DMI entry point found",
    "/dev/mem:",
    "Permission denied",
    "Can't read memory from",
    "# No SMBIOS nor DMI entry point found",
)
_PLACEHOLDERS = {
    "",
    "not specified",
    "not present",
    "not provided",
    "unknown",
    "other",
    "to be filled by o.e.m.",
    "to be filled by o.e.m",
    "default string",
    "system manufacturer",
    "chassis manufacturer",
    "none",
}
_SIZE_RE = re.compile(r"([0-9]{1,9}) (bytes|kB|KB|MB|GB|TB)\Z")
_SIZE_UNITS = {"bytes": 1, "kB": 1 << 10, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
_SPEED_RE = re.compile(r"([0-9]{1,6}) (MT/s|MHz)\Z")
_WIDTH_RE = re.compile(r"([0-9]{1,4}) bits\Z")


@dataclass
class _Record:
    type: int
    title: str = ""
    values: dict[str, str] = field(default_factory=dict)


def _records(text: str) -> list[_Record]:
    records: list[_Record] = []
    current: _Record | None = None
    expect_title = False
    for line in text.splitlines():
        if not line.strip():
            current = None
            continue
        match = _HANDLE_RE.match(line.strip()) if not line.startswith("\t") else None
        if match:
            current = _Record(type=int(match[1]))
            records.append(current)
            expect_title = True
            continue
        if current is None:
            if line.startswith("\t"):
                raise ParseError(COMMAND, f"indented line {line[:80]!r} outside a Handle record")
            continue  # preamble: "# dmidecode 3.4", "Getting SMBIOS data from sysfs.", "SMBIOS 3.2.0 present."
        if expect_title and not line.startswith("\t"):
            current.title = line.strip()
            expect_title = False
            continue
        expect_title = False
        if line.startswith("\t\t"):
            continue  # an item of a list value (Characteristics, Contained Elements): not needed
        if not line.startswith("\t"):
            raise ParseError(COMMAND, f"line {line[:80]!r} inside a record is not indented")
        key, sep, value = line.strip().partition(":")
        if not sep:
            raise ParseError(COMMAND, f"line {line[:80]!r} is not 'Key: value'")
        current.values.setdefault(key.strip(), value.strip())
    return records


def _meaningful(value: str | None) -> str | None:
    if value is None or value.strip().lower() in _PLACEHOLDERS:
        return None
    if any(not c.isprintable() for c in value):
        raise ParseError(COMMAND, f"value {value[:80]!r} contains a control character")
    return value.strip()


def _size(value: str) -> int | None:
    """Module size in bytes; None for an empty slot."""
    match = _SIZE_RE.match(value)
    if match:
        return int(match[1]) * _SIZE_UNITS[match[2]]
    if value.lower() in ("no module installed", "not installed", "unknown", "not specified", ""):
        return None
    raise ParseError(COMMAND, f"memory size {value!r} is not understood")


def _speed(value: str | None) -> int | None:
    if value is None:
        return None
    match = _SPEED_RE.match(value)
    if match:
        return int(match[1]) or None  # MHz and MT/s: dmidecode 3.2+ renamed the unit, the number is the same
    if value.lower() in ("unknown", "not specified", ""):
        return None
    raise ParseError(COMMAND, f"memory speed {value!r} is not understood")


def _width(value: str | None) -> int | None:
    if value is None:
        return None
    match = _WIDTH_RE.match(value)
    if match:
        return int(match[1])
    if value.lower() in ("unknown", "not specified", ""):
        return None
    raise ParseError(COMMAND, f"bus width {value!r} is not understood")


def _array_ecc(value: str | None) -> bool | None:
    if value is None:
        return None
    lowered = value.lower()
    if "ecc" in lowered or lowered == "crc":
        return True
    if lowered in ("none", "parity"):  # parity detects, it does not correct
        return False
    return None


def _memory_device(record: _Record) -> MemoryDevice | None:
    size = _size(record.values.get("Size", ""))
    if size is None:
        return None
    total, data = _width(record.values.get("Total Width")), _width(record.values.get("Data Width"))
    ecc = total > data if total is not None and data is not None and data > 0 else None
    speed = _speed(record.values.get("Configured Memory Speed") or record.values.get("Configured Clock Speed"))
    if speed is None:
        speed = _speed(record.values.get("Speed"))
    return MemoryDevice(
        locator=_meaningful(record.values.get("Locator")) or "",
        size_bytes=size,
        speed_mts=speed,
        type=_meaningful(record.values.get("Type")) or "",
        ecc=ecc,
    )


def _all_or_none(flags: list[bool | None]) -> bool | None:
    known = [f for f in flags if f is not None]
    if not known:
        return None
    return all(known)


@guarded(COMMAND)
def parse_dmidecode(text: str) -> DmiInfo | None:
    """``dmidecode -t 1,3,16,17,39`` (stderr merged) -> DmiInfo, or None when there is no DMI table."""
    text = require_text(text, COMMAND)
    if missing_tool(text):
        return None
    records = _records(text)
    if not records:
        if text.lstrip().startswith("# dmidecode") or any(marker in text for marker in _UNAVAILABLE):
            return None
        raise ParseError(COMMAND, "no DMI records and no dmidecode header")
    by_type: dict[int, list[_Record]] = {}
    for record in records:
        by_type.setdefault(record.type, []).append(record)
    system = by_type.get(1, [None])[0]
    chassis = by_type.get(3, [None])[0]
    devices = [d for d in (_memory_device(r) for r in by_type.get(17, [])) if d is not None]
    arrays = [r for r in by_type.get(16, []) if r.values.get("Use", "System Memory") == "System Memory"]
    ecc = _all_or_none([_array_ecc(r.values.get("Error Correction Type")) for r in arrays])
    if ecc is None:
        ecc = _all_or_none([d.ecc for d in devices])
    supplies = by_type.get(39)
    power_supplies = (
        sum(1 for r in supplies if r.values.get("Status", "").lower().startswith("present")) if supplies else None
    )
    return DmiInfo(
        system_manufacturer=_meaningful(system.values.get("Manufacturer")) if system else None,
        system_product=_meaningful(system.values.get("Product Name")) if system else None,
        chassis_manufacturer=_meaningful(chassis.values.get("Manufacturer")) if chassis else None,
        chassis_type=_meaningful(chassis.values.get("Type")) if chassis else None,
        power_supplies=power_supplies,
        memory_devices=devices,
        ecc=ecc,
    )
