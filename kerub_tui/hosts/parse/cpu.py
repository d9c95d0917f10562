"""lscpu: the CPU a host offers (architecture, topology, clock, flags, caches).

Handles ``lscpu -J`` as util-linux 2.30..2.38 prints it (a flat list of ``{field, data}``), the
hierarchical form of 2.39+ (entries carry ``children``), and plain ``lscpu`` text for hosts whose
lscpu predates -J. Field names are English only with ``LC_ALL=C``: the discovery command sets it,
and a translated output is refused with a message saying so rather than misread.
Cache sizes come from ``lscpu -J -C -B`` (per instance, in bytes) when given, else from the summary
("48 KiB (1 instance)", "2 MiB (2 instances)", old "32K"), divided by its instance count.
"""

from __future__ import annotations

import re
from typing import Any

from kerub_tui.core.models import CpuCache, CpuInfo

from .errors import ParseError, guarded, load_json, require_text, to_float, to_int

COMMAND = "lscpu"
CACHES_COMMAND = "lscpu -C"

# flat output says "L1d cache:", the hierarchical one "L1d:" under "Caches (sum of all):"
_CACHE_NAMES = ("L1d", "L1i", "L2", "L3", "L4")
_SIZE_RE = re.compile(
    r"\s*(?P<number>[0-9]{1,15}(?:\.[0-9]{1,6})?)\s*(?P<unit>[KMGT]?)(?:i?B)?\s*"
    r"(?:\((?P<instances>[0-9]{1,6}) instances?\))?\s*\Z"
)
_UNIT = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_MAX_CPUS = 1 << 20


def _flatten_json(entries: Any, fields: dict[str, str], depth: int = 0) -> None:
    if not isinstance(entries, list):
        raise ParseError(COMMAND, "'lscpu' is not a list of fields")
    if depth > 8:
        raise ParseError(COMMAND, "fields nested implausibly deep")
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("field"), str):
            raise ParseError(COMMAND, f"entry {entry!r:.80} has no 'field'")
        data = entry.get("data")
        if data is not None and not isinstance(data, str):
            raise ParseError(COMMAND, f"field {entry['field']!r} has non-text data {data!r:.40}")
        # the first occurrence wins: on mixed-core CPUs later subsections describe the minority cores
        fields.setdefault(entry["field"].strip().rstrip(":").strip(), (data or "").strip())
        if "children" in entry:
            _flatten_json(entry["children"], fields, depth + 1)


def _fields_from_text(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ParseError(COMMAND, f"line {line[:80]!r} is not 'Field: value'")
        fields.setdefault(name.strip(), value.strip())
    return fields


def _cache_kib(value: str, command: str = COMMAND) -> int:
    match = _SIZE_RE.match(value)
    if not match:
        raise ParseError(command, f"cache size {value!r} is not understood")
    total = float(match["number"]) * _UNIT[match["unit"]]
    instances = int(match["instances"] or 1)
    if instances == 0:
        raise ParseError(command, f"cache size {value!r} has zero instances")
    return round(total / instances / 1024)


def _caches_from_detail(text: str) -> list[CpuCache]:
    data = load_json(text, CACHES_COMMAND)
    rows = data.get("caches")
    if not isinstance(rows, list):
        raise ParseError(CACHES_COMMAND, "no 'caches' list")
    caches: list[CpuCache] = []
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("name"), str) or not row["name"].strip():
            raise ParseError(CACHES_COMMAND, f"cache entry {row!r:.80} has no name")
        size = row.get("one-size")
        if isinstance(size, str) and not size.strip().isdigit():
            kib = _cache_kib(size, CACHES_COMMAND)  # lscpu without -B prints "48K"
        else:
            kib = round(to_int(size, f"{row['name']} one-size", CACHES_COMMAND) / 1024)
        caches.append(CpuCache(name=row["name"].strip(), size_kib=kib))
    return caches


def _count(fields: dict[str, str], *names: str) -> int:
    for name in names:
        value = fields.get(name)
        if value is None or value in ("", "-"):  # "-": lscpu could not tell (some ARM boards)
            continue
        return to_int(value, name, COMMAND, maximum=_MAX_CPUS)
    return 0


@guarded(COMMAND)
def parse_lscpu(text: str, caches_text: str | None = None) -> CpuInfo:
    """``lscpu -J`` (or plain ``lscpu``) and optionally ``lscpu -J -C -B`` -> CpuInfo."""
    text = require_text(text, COMMAND)
    if text.lstrip().startswith("{"):
        data = load_json(text, COMMAND)
        fields: dict[str, str] = {}
        _flatten_json(data.get("lscpu"), fields)
    else:
        fields = _fields_from_text(text)
    if "Architecture" not in fields or "CPU(s)" not in fields:
        raise ParseError(
            COMMAND, "no 'Architecture' or 'CPU(s)' field (translated output? the command must run with LC_ALL=C)"
        )
    architecture = fields["Architecture"]
    if not architecture or len(architecture.split()) != 1:
        raise ParseError(COMMAND, f"architecture {architecture!r} is not one word")
    cpus = to_int(fields["CPU(s)"], "CPU(s)", COMMAND, minimum=1, maximum=_MAX_CPUS)

    max_mhz = None
    for name in ("CPU max MHz", "CPU MHz"):
        if fields.get(name):
            max_mhz = to_float(fields[name], name, COMMAND, maximum=1e6) or None
            break

    if caches_text is not None and caches_text.strip():
        caches = _caches_from_detail(caches_text)
    else:
        caches = []
        for name in _CACHE_NAMES:
            value = fields.get(f"{name} cache") or fields.get(name)
            if value:
                caches.append(CpuCache(name=name, size_kib=_cache_kib(value)))

    return CpuInfo(
        architecture=architecture,
        model=fields.get("Model name", ""),
        vendor=fields.get("Vendor ID", ""),
        cpus=cpus,
        sockets=_count(fields, "Socket(s)"),
        cores_per_socket=_count(fields, "Core(s) per socket", "Core(s) per cluster"),
        threads_per_core=_count(fields, "Thread(s) per core"),
        max_mhz=max_mhz,
        flags=fields.get("Flags", "").split(),
        caches=caches,
    )
