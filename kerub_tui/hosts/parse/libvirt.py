"""``virsh capabilities``, ``virsh domcapabilities`` and ``virsh version --daemon``: can this host run KVM?

libvirt lists a ``<domain type='kvm'/>`` for a guest architecture only when /dev/kvm is there and
usable, so that is the test; domcapabilities, when given, confirms which emulator libvirt picks.
XML is parsed without DTDs: a document declaring one (the only way to define entities) is refused.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from kerub_tui.core.models import HypervisorInfo

from .errors import ParseError, guarded, require_text

CAPABILITIES = "virsh capabilities"
DOMCAPABILITIES = "virsh domcapabilities"
VERSION = "virsh version"
_VERSION_RE = re.compile(
    r"(?:Running against daemon|Using library):\s*(?:libvirt\s+)?([0-9]{1,4}(?:\.[0-9]{1,6}){1,3})\s*\Z"
)
_NAME_RE = re.compile(r"[A-Za-z0-9_.+-]{1,64}\Z")
_PATH_RE = re.compile(r"/[\x21-\x7e]{1,4095}\Z")


def _xml(text: str, command: str, root: str) -> ET.Element:
    text = require_text(text, command)
    if re.search(r"<!(DOCTYPE|ENTITY)", text, re.IGNORECASE):
        raise ParseError(command, "XML with a DTD or entity declarations is refused")
    try:
        element = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ParseError(command, f"not XML: {exc}") from exc
    if element.tag != root:
        raise ParseError(command, f"root element is <{element.tag:.40}>, expected <{root}>")
    return element


def _name(value: str | None, what: str, command: str) -> str:
    if value is None or not _NAME_RE.match(value):
        raise ParseError(command, f"{what} {value!r:.80} is not a name")
    return value


def _path(value: str | None, command: str) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not _PATH_RE.match(value):
        raise ParseError(command, f"emulator {value!r:.80} is not an absolute path")
    return value


@guarded(VERSION)
def parse_libvirt_version(text: str) -> str:
    """The daemon's version from ``virsh version --daemon``, else the library's."""
    text = require_text(text, VERSION)
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = _VERSION_RE.match(line.strip())
        if match:
            found.setdefault(line.split(":")[0].strip(), match[1])
    version = found.get("Running against daemon") or found.get("Using library")
    if version is None:
        raise ParseError(VERSION, "neither 'Running against daemon' nor 'Using library' is shown")
    return version


@guarded(CAPABILITIES)
def parse_hypervisor(
    capabilities: str, domcapabilities: str | None = None, version: str | None = None
) -> HypervisorInfo:
    caps = _xml(capabilities, CAPABILITIES, "capabilities")
    host_arch_text = caps.findtext("host/cpu/arch")
    host_arch = _name(host_arch_text.strip() if host_arch_text else None, "host architecture", CAPABILITIES)

    guest_arches: list[str] = []
    host_domains: list[str] = []
    emulator: str | None = None
    for guest in caps.findall("guest"):
        if (guest.findtext("os_type") or "").strip() != "hvm":
            continue  # xen pv, exe (containers): not what we run
        arch = guest.find("arch")
        if arch is None:
            raise ParseError(CAPABILITIES, "a <guest> without <arch>")
        name = _name(arch.get("name"), "guest architecture", CAPABILITIES)
        if name not in guest_arches:
            guest_arches.append(name)
        if name != host_arch:
            continue
        for domain in arch.findall("domain"):
            dtype = _name(domain.get("type"), "domain type", CAPABILITIES)
            if dtype not in host_domains:
                host_domains.append(dtype)
            if dtype == "kvm":
                emulator = _path(domain.findtext("emulator"), CAPABILITIES) or emulator
        emulator = emulator or _path(arch.findtext("emulator"), CAPABILITIES)

    kvm = "kvm" in host_domains
    if domcapabilities is not None and domcapabilities.strip():
        domcaps = _xml(domcapabilities, DOMCAPABILITIES, "domainCapabilities")
        path = _path(domcaps.findtext("path"), DOMCAPABILITIES)
        dom_type = (domcaps.findtext("domain") or "").strip()
        if dom_type == "kvm" and path:
            emulator = path
        elif kvm and dom_type and dom_type != "kvm":
            kvm = False  # asked for the default virt type, libvirt would not pick kvm
    reason = None
    if not kvm:
        reason = (
            f"libvirt offers no kvm domain for {host_arch} (is /dev/kvm present and usable by libvirt?)"
            if host_arch in guest_arches
            else f"libvirt offers no hvm guest for the host architecture {host_arch}"
        )
    return HypervisorInfo(
        libvirt_version=parse_libvirt_version(version) if version is not None else None,
        kvm=kvm,
        domain_types=host_domains,
        guest_arches=guest_arches,
        emulator=emulator,
        reason=reason,
    )
