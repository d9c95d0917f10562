"""KSM (kernel same-page merging): read its state from /sys/kernel/mm/ksm and set it.

The planner turns KSM on where many similar VMs share a host and memory is tight, and off where it
costs CPU for nothing. Off is ``run=0`` (stop scanning, keep what is merged), never ``run=2``
(unmerge everything), which would need all the memory KSM saved at once.
"""

from __future__ import annotations

import re
import shlex

from kerub_tui.core.models import KsmState

from .parse.errors import MISSING_MARKER, ParseError, guarded, missing_tool, require_text, to_int

KSM_DIR = "/sys/kernel/mm/ksm"
COMMAND = "ksm read"
_LINE_RE = re.compile(re.escape(KSM_DIR) + r"/([a-z_]{1,64}):(.*)\Z")
_INT_FIELDS = (
    "run",
    "pages_to_scan",
    "sleep_millisecs",
    "pages_shared",
    "pages_sharing",
    "pages_unshared",
    "full_scans",
)
_MAX_UINT = (1 << 32) - 1


def ksm_read_command() -> str:
    """Every KSM file as ``PATH:VALUE`` lines; the missing-tool marker on a kernel without KSM."""
    return (
        f"if [ -r {KSM_DIR}/run ]; then grep -H . {KSM_DIR}/* 2>/dev/null; true; "
        f"else echo {shlex.quote(MISSING_MARKER + ' ksm')}; fi"
    )


def _value(name: str, value: int | None, lowest: int) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= _MAX_UINT:
        raise ValueError(f"KSM {name} must be a whole number from {lowest} to {_MAX_UINT}, not {value!r}")
    return f"echo {value} > {KSM_DIR}/{name}"


def ksm_set(run: bool | None = None, pages_to_scan: int | None = None, sleep_millisecs: int | None = None) -> str:
    """Shell text writing the given KSM settings; the scan rate is set before scanning starts."""
    if run is not None and not isinstance(run, bool):
        raise ValueError(f"KSM run must be True or False, not {run!r}")
    writes = [
        _value("pages_to_scan", pages_to_scan, 1),
        _value("sleep_millisecs", sleep_millisecs, 1),
        None if run is None else f"echo {int(run)} > {KSM_DIR}/run",
    ]
    commands = [w for w in writes if w is not None]
    if not commands:
        raise ValueError("ksm_set needs at least one of run, pages_to_scan, sleep_millisecs")
    return " && ".join(commands)


@guarded(COMMAND)
def parse_ksm(text: str) -> KsmState:
    """The output of ksm_read_command() -> KsmState (available=False when the kernel has no KSM)."""
    text = require_text(text, COMMAND)
    if missing_tool(text):
        return KsmState(available=False)
    values: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _LINE_RE.match(line.strip())
        if not match:
            raise ParseError(COMMAND, f"line {line[:80]!r} is not '{KSM_DIR}/NAME:VALUE'")
        name, value = match[1], match[2].strip()
        if name in _INT_FIELDS:
            values[name] = to_int(value, name, COMMAND, maximum=1 << 64)
        # other files (advisor_mode "[none] scan-time", merge_across_nodes, ...) are not needed
    if "run" not in values:
        raise ParseError(COMMAND, "no run value: not KSM output")
    if values["run"] not in (0, 1, 2):
        raise ParseError(COMMAND, f"run is {values['run']}, not 0, 1 or 2")
    return KsmState(
        available=True,
        run=values["run"] == 1,
        pages_to_scan=values.get("pages_to_scan"),
        sleep_millisecs=values.get("sleep_millisecs"),
        pages_shared=values.get("pages_shared", 0),
        pages_sharing=values.get("pages_sharing", 0),
        pages_unshared=values.get("pages_unshared", 0),
        full_scans=values.get("full_scans", 0),
    )
