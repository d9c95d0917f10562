"""Temperatures from sysfs, read as ``grep -H . FILES`` prints them (``/sys/.../temp:45000``).

Both /sys/class/thermal/thermal_zone*/temp and hwmon temp*_input are millidegrees Celsius. A reading
outside -50..150 °C is a disconnected or broken sensor (some report -273 or 127), not a hot CPU:
it is left out rather than raise a false overheat.
"""

from __future__ import annotations

import re

from .errors import ParseError, guarded, require_text

COMMAND = "grep -H . /sys/class/thermal/thermal_zone*/temp"
_LINE_RE = re.compile(r"(/sys/[\x21-\x7e]{1,250}):(.*)\Z")
_TEMP_FILE_RE = re.compile(r"/(temp|temp[0-9]{1,3}_input)\Z")
_VALUE_RE = re.compile(r"-?[0-9]{1,9}\Z")
PLAUSIBLE_CELSIUS = (-50.0, 150.0)


@guarded(COMMAND)
def parse_thermal(text: str) -> float | None:
    """The hottest plausible temperature in degrees Celsius, or None when there is no sensor."""
    text = require_text(text, COMMAND)
    hottest: float | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _LINE_RE.match(line.strip())
        if not match:
            raise ParseError(COMMAND, f"line {line[:80]!r} is not 'PATH:VALUE'")
        path, value = match[1], match[2].strip()
        if not _TEMP_FILE_RE.search(path):
            continue  # thermal_zone*/type, hwmon name: context, not readings
        if not _VALUE_RE.match(value):
            raise ParseError(COMMAND, f"{path} reads {value[:40]!r}, not millidegrees")
        celsius = int(value) / 1000
        if PLAUSIBLE_CELSIUS[0] <= celsius <= PLAUSIBLE_CELSIUS[1] and (hottest is None or celsius > hottest):
            hottest = celsius
    return hottest
