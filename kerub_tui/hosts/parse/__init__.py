"""Parsers of what discovery and monitoring read on a host: text in, core models out.

Every parser raises only ParseError (a ValueError naming the command) on output it cannot read,
and never returns a half-filled result. LVM and KSM parsers live with their builders (lvm.py, ksm.py).
"""

from .block import parse_findmnt, parse_lsblk
from .cpu import parse_lscpu
from .dmi import parse_dmidecode
from .errors import MISSING_MARKER, ParseError, missing_tool
from .libvirt import parse_hypervisor, parse_libvirt_version
from .memory import MemInfo, parse_meminfo
from .osinfo import parse_os_info, parse_os_release
from .sensors import parse_thermal
from .smart import SmartHealth, parse_smart_health
from .tools import parse_tools
from .vmstat import VmstatParser, VmstatSample

__all__ = [
    "MISSING_MARKER",
    "MemInfo",
    "ParseError",
    "SmartHealth",
    "VmstatParser",
    "VmstatSample",
    "missing_tool",
    "parse_dmidecode",
    "parse_findmnt",
    "parse_hypervisor",
    "parse_libvirt_version",
    "parse_lsblk",
    "parse_lscpu",
    "parse_meminfo",
    "parse_os_info",
    "parse_os_release",
    "parse_smart_health",
    "parse_thermal",
    "parse_tools",
]
