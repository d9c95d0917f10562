"""Expectations: the SLA a user attaches to a VM or a disk.

Each expectation is ``{type, level}`` plus the fields of its type. The set here is exactly the set the
planner checks: adding a type here without a checker makes the planner's registry test fail, so an
expectation is never accepted and then silently ignored (the original Kerub's mistake).

A command-line SPEC is ``TYPE[:ARG[,ARG...]][@LEVEL]``; see ``parse_spec``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator

from .base import Frozen
from .names import check_name


class Level(str, enum.Enum):
    """How much an expectation matters. Ordered: wish < want < dealbreaker."""

    wish = "wish"
    want = "want"
    dealbreaker = "dealbreaker"

    @property
    def rank(self) -> int:
        return {"wish": 0, "want": 1, "dealbreaker": 2}[self.value]


class InvalidExpectation(ValueError):
    """An expectation the user wrote that kerub-tui cannot accept, with a readable reason."""


class _Expectation(Frozen):
    level: Level = Level.want
    # Positional SPEC arguments map onto these fields, in order.
    spec_args: ClassVar[tuple[str, ...]] = ()
    # What the expectation means, for help texts and the console's editor.
    summary: ClassVar[str] = ""

    @field_validator("*")
    @classmethod
    def _printable(cls, value: Any) -> Any:
        """No field of any expectation holds a newline or another control character (they would
        forge lines in lists, logs and the audit)."""
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and not text.isprintable():
                raise ValueError(f"{_control_char(text)} is not allowed")
        return value

    def spec(self) -> str:
        """The SPEC text that parses back to this expectation."""
        args = []
        for name in self.spec_args:
            value = getattr(self, name)
            if isinstance(value, bool):
                args.append(_bool_spec(name, value))
            elif isinstance(value, (list, tuple)):
                args.extend(str(v) for v in value)
            elif value is not None:
                args.append(str(value.value if isinstance(value, enum.Enum) else value))
        head = self.type + (":" + ",".join(args) if args else "")  # type: ignore[attr-defined]
        return f"{head}@{self.level.value}"


def _control_char(text: str) -> str:
    bad = next(c for c in text if not c.isprintable())
    return "a newline" if bad == "\n" else f"the control character {bad!r}"


def _bool_spec(name: str, value: bool) -> str:
    if name == "up":
        return "up" if value else "down"
    if name == "paused":
        return "paused" if value else "running"
    if name == "out_of_box":
        return "out-of-box" if value else "in-box"
    return "yes" if value else "no"


def _ref_list(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    return value


def _check_refs(values: list[str]) -> list[str]:
    if not values:
        raise ValueError("needs at least one name")
    return [check_name(v, "referenced name") for v in values]


# --- VM expectations -------------------------------------------------------------------------


class VmAvailability(_Expectation):
    type: Literal["availability"] = "availability"
    up: bool = True
    # Paused by the admin (vm pause): while up, a paused VM meets the expectation, so the planner does
    # not resume it behind the admin's back; vm resume clears it. Shown as availability:up,paused.
    paused: bool = False
    spec_args: ClassVar = ("up", "paused")
    summary: ClassVar = "the VM runs (up) or is shut off (down); up,paused: paused by the admin, left paused"

    @model_validator(mode="after")
    def _paused_is_up(self) -> VmAvailability:
        if self.paused and not self.up:
            raise ValueError("a VM expected down cannot also be expected paused (availability:up,paused)")
        return self

    def spec(self) -> str:
        return f"availability:{'up' if self.up else 'down'}{',paused' if self.paused else ''}@{self.level.value}"


class NotSameHost(_Expectation):
    type: Literal["not-same-host"] = "not-same-host"
    vms: list[str]
    spec_args: ClassVar = ("vms",)
    summary: ClassVar = "never on the same host as these VMs"
    _v = field_validator("vms", mode="before")(_ref_list)
    _c = field_validator("vms")(_check_refs)


class CpuArchitecture(_Expectation):
    type: Literal["cpu-architecture"] = "cpu-architecture"
    architecture: str
    spec_args: ClassVar = ("architecture",)
    summary: ClassVar = "the host's CPU architecture (x86_64, aarch64, ...)"

    @field_validator("architecture")
    @classmethod
    def _arch(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9_]{2,16}", v):
            raise ValueError(f"{v!r} is not a CPU architecture name (e.g. x86_64, aarch64)")
        return v


class CpuFlags(_Expectation):
    type: Literal["cpu-flags"] = "cpu-flags"
    flags: list[str]
    spec_args: ClassVar = ("flags",)
    summary: ClassVar = "the host CPU has these flags (vmx, svm, avx2, ...)"
    _v = field_validator("flags", mode="before")(_ref_list)

    @field_validator("flags")
    @classmethod
    def _flags(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one CPU flag")
        for flag in v:
            if not re.fullmatch(r"[a-z0-9_.]{1,32}", flag):
                raise ValueError(f"{flag!r} is not a CPU flag name")
        return v


class CpuClockFrequency(_Expectation):
    type: Literal["cpu-clock-frequency"] = "cpu-clock-frequency"
    min_mhz: int = Field(gt=0, le=20_000)
    spec_args: ClassVar = ("min_mhz",)
    summary: ClassVar = "the host CPU's maximum clock is at least this many MHz"


class MemoryClockFrequency(_Expectation):
    type: Literal["memory-clock-frequency"] = "memory-clock-frequency"
    min_mhz: int = Field(gt=0, le=20_000)
    spec_args: ClassVar = ("min_mhz",)
    summary: ClassVar = "every host memory module runs at least this many MT/s"


class CacheSize(_Expectation):
    type: Literal["cache-size"] = "cache-size"
    cache: Literal["L1d", "L1i", "L2", "L3"] = "L3"
    min_kib: int = Field(gt=0)
    spec_args: ClassVar = ("cache", "min_kib")
    summary: ClassVar = "the host CPU cache (L1d/L1i/L2/L3) is at least this many KiB"


class ChassisManufacturer(_Expectation):
    type: Literal["chassis-manufacturer"] = "chassis-manufacturer"
    manufacturer: str = Field(min_length=1, max_length=64)
    spec_args: ClassVar = ("manufacturer",)
    summary: ClassVar = "the host's chassis is made by this manufacturer (DMI)"


class SystemManufacturer(_Expectation):
    type: Literal["system-manufacturer"] = "system-manufacturer"
    manufacturer: str = Field(min_length=1, max_length=64)
    spec_args: ClassVar = ("manufacturer",)
    summary: ClassVar = "the host system is made by this manufacturer (DMI)"


class EccMemory(_Expectation):
    type: Literal["ecc-memory"] = "ecc-memory"
    summary: ClassVar = "the host has ECC memory"


class CoreDedication(_Expectation):
    type: Literal["core-dedication"] = "core-dedication"
    summary: ClassVar = "each vCPU gets a host core of its own (no CPU overcommit on the host)"


class NoMigration(_Expectation):
    type: Literal["no-migration"] = "no-migration"
    summary: ClassVar = "once running, the VM is never live-migrated by the planner"


class HostOperatingSystem(_Expectation):
    type: Literal["host-os"] = "host-os"
    os: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._-]+$")
    version: str | None = Field(default=None, max_length=32, pattern=r"^[A-Za-z0-9._-]+$")
    spec_args: ClassVar = ("os", "version")
    summary: ClassVar = "the host runs this distribution (os id, optional version), e.g. debian,12"


class PowerRedundancy(_Expectation):
    type: Literal["power-redundancy"] = "power-redundancy"
    min_power_supplies: int = Field(default=2, ge=2, le=16)
    spec_args: ClassVar = ("min_power_supplies",)
    summary: ClassVar = "the host has at least this many power supplies (DMI)"


class VmDependency(_Expectation):
    type: Literal["vm-dependency"] = "vm-dependency"
    vms: list[str]
    spec_args: ClassVar = ("vms",)
    summary: ClassVar = "runs only while these VMs run"
    _v = field_validator("vms", mode="before")(_ref_list)
    _c = field_validator("vms")(_check_refs)


class HighAvailability(_Expectation):
    type: Literal["ha"] = "ha"
    summary: ClassVar = ("comes back after its host fails: restarted on another host once that host is fenced "
                         "(powered off through IPMI, seen to run no guest, or confirmed off by the admin)")


# --- disk expectations -----------------------------------------------------------------------


class StorageAvailability(_Expectation):
    type: Literal["storage-availability"] = "storage-availability"
    up: bool = True
    spec_args: ClassVar = ("up",)
    summary: ClassVar = "the disk is allocated on some host (up) or nowhere (down)"


class StorageRedundancy(_Expectation):
    type: Literal["storage-redundancy"] = "storage-redundancy"
    copies: int = Field(default=2, ge=1, le=8)
    out_of_box: bool = True
    spec_args: ClassVar = ("copies", "out_of_box")
    summary: ClassVar = "keep this many copies, on different hosts (out-of-box) or devices (in-box)"


class NotSameStorage(_Expectation):
    type: Literal["not-same-storage"] = "not-same-storage"
    disks: list[str]
    spec_args: ClassVar = ("disks",)
    summary: ClassVar = "never on the same storage as these disks"
    _v = field_validator("disks", mode="before")(_ref_list)
    _c = field_validator("disks")(_check_refs)


class StorageReadPerformance(_Expectation):
    type: Literal["read-performance"] = "read-performance"
    min_mbps: int = Field(gt=0, le=1_000_000)
    spec_args: ClassVar = ("min_mbps",)
    summary: ClassVar = "the storage under the disk reads at least this many MB/s"


class StorageWritePerformance(_Expectation):
    type: Literal["write-performance"] = "write-performance"
    min_mbps: int = Field(gt=0, le=1_000_000)
    spec_args: ClassVar = ("min_mbps",)
    summary: ClassVar = "the storage under the disk writes at least this many MB/s"


class CloneOf(_Expectation):
    type: Literal["clone-of"] = "clone-of"
    disk: str
    spec_args: ClassVar = ("disk",)
    summary: ClassVar = "the disk starts as a copy of this disk"

    @field_validator("disk")
    @classmethod
    def _disk(cls, v: str) -> str:
        return check_name(v, "referenced disk")


VmExpectation = Annotated[
    VmAvailability
    | NotSameHost
    | CpuArchitecture
    | CpuFlags
    | CpuClockFrequency
    | MemoryClockFrequency
    | CacheSize
    | ChassisManufacturer
    | SystemManufacturer
    | EccMemory
    | CoreDedication
    | NoMigration
    | HostOperatingSystem
    | PowerRedundancy
    | VmDependency
    | HighAvailability,
    Field(discriminator="type"),
]

DiskExpectation = Annotated[
    StorageAvailability
    | StorageRedundancy
    | NotSameStorage
    | StorageReadPerformance
    | StorageWritePerformance
    | CloneOf,
    Field(discriminator="type"),
]

_VM_TYPES: dict[str, type[_Expectation]] = {
    cls.model_fields["type"].default: cls for cls in VmExpectation.__origin__.__args__  # type: ignore[attr-defined]
}
_DISK_TYPES: dict[str, type[_Expectation]] = {
    cls.model_fields["type"].default: cls for cls in DiskExpectation.__origin__.__args__  # type: ignore[attr-defined]
}

VM_EXPECTATION_TYPES: dict[str, type[_Expectation]] = dict(_VM_TYPES)
DISK_EXPECTATION_TYPES: dict[str, type[_Expectation]] = dict(_DISK_TYPES)

_vm_adapter: TypeAdapter[Any] = TypeAdapter(VmExpectation)
_disk_adapter: TypeAdapter[Any] = TypeAdapter(DiskExpectation)

# Words a SPEC may use for booleans, per field.
_BOOL_WORDS = {
    "up": {"up": True, "down": False},
    "paused": {"paused": True, "running": False},
    "out_of_box": {"out-of-box": True, "in-box": False},
}
_YES_NO = {"yes": True, "true": True, "no": False, "false": False}


def _explain(error: ValidationError, kind: str = "") -> str:
    parts = []
    for item in error.errors():
        # The first location element is the discriminator tag (the type itself): drop it.
        loc = ".".join(str(p) for p in item["loc"] if p not in (kind, "function-after"))
        msg = item["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def validate_expectation(data: dict[str, Any], target: Literal["vm", "disk"]) -> _Expectation:
    """Validate a dict as a VM or disk expectation; raise InvalidExpectation with a plain message."""
    types = _VM_TYPES if target == "vm" else _DISK_TYPES
    kind = data.get("type")
    if kind not in types:
        other = _DISK_TYPES if target == "vm" else _VM_TYPES
        if kind in other:
            raise InvalidExpectation(
                f"{kind!r} is a {'disk' if target == 'vm' else 'VM'} expectation, "
                f"not one for a {'VM' if target == 'vm' else 'disk'}"
            )
        raise InvalidExpectation(
            f"unknown expectation type {kind!r}; {target} expectations are: " + ", ".join(sorted(types))
        )
    adapter = _vm_adapter if target == "vm" else _disk_adapter
    try:
        expectation: _Expectation = adapter.validate_python(data)
    except ValidationError as error:
        raise InvalidExpectation(f"{kind}: {_explain(error, str(kind))}") from None
    return expectation


def parse_spec(
    spec: str,
    target: Literal["vm", "disk"],
    resolve: Callable[[str], str] | None = None,
) -> _Expectation:
    """Parse ``TYPE[:ARG[,ARG...]][@LEVEL]`` into an expectation.

    ``resolve`` maps a referenced VM or disk name to its id (the CLI passes the store's lookup);
    without it references stay as written.
    """
    if not isinstance(spec, str):
        raise InvalidExpectation(f"an expectation is text such as availability:up, not {type(spec).__name__}")
    if not spec.isprintable():
        raise InvalidExpectation(f"expectation {spec[:40]!r} contains {_control_char(spec)}, which is not allowed")
    text = spec.strip()
    if not text:
        raise InvalidExpectation("empty expectation")
    head, at, level = text.partition("@")
    kind, _, arg_text = head.partition(":")
    types = _VM_TYPES if target == "vm" else _DISK_TYPES
    data: dict[str, Any] = {"type": kind}
    if at and not level:
        raise InvalidExpectation(f"{text!r}: no level after '@' (one of wish, want, dealbreaker)")
    if level:
        if level not in Level.__members__:
            raise InvalidExpectation(f"level {level!r} is not one of wish, want, dealbreaker")
        data["level"] = level
    cls = types.get(kind)
    if cls is None:
        return validate_expectation(data, target)  # raises with the list of known types
    args = [a.strip() for a in arg_text.split(",")] if arg_text else []
    fields = cls.spec_args
    for i, name in enumerate(fields):
        annotation = cls.model_fields[name].annotation
        is_list = getattr(annotation, "__origin__", None) is list
        if is_list:
            values = args[i:]
            if resolve is not None and name in ("vms", "disks"):
                values = [resolve(v) for v in values]
            if values:
                data[name] = values
            args = args[:i]
            break
        if i >= len(args):
            break
        value: Any = args[i]
        if name in _BOOL_WORDS:
            words = _BOOL_WORDS[name]
            if value not in words:
                raise InvalidExpectation(f"{kind}: {value!r} must be one of {', '.join(words)}")
            value = words[value]
        elif annotation is bool:
            if value.lower() not in _YES_NO:
                raise InvalidExpectation(f"{kind}: {value!r} must be yes or no")
            value = _YES_NO[value.lower()]
        elif name == "disk" and resolve is not None:
            value = resolve(value)
        data[name] = value
    else:
        if len(args) > len(fields):
            raise InvalidExpectation(
                f"{kind}: too many arguments ({len(args)}, takes {len(fields)}: "
                f"{', '.join(fields) or 'none'})"
            )
    return validate_expectation(data, target)


Expectation = _Expectation


# The fields of an expectation that hold ids of other documents, and the kind of each.
REFERENCE_FIELDS = {"vms": "vm", "disks": "disk", "disk": "disk"}


def display_spec(expectation: _Expectation, name_of: Callable[[str, str], str]) -> str:
    """The SPEC text with referenced ids shown as names (``name_of(kind, id)``): what the console and
    the command line print."""
    update: dict[str, Any] = {}
    for field_name, kind in REFERENCE_FIELDS.items():
        value = getattr(expectation, field_name, None)
        if isinstance(value, list):
            update[field_name] = [name_of(kind, v) for v in value]
        elif isinstance(value, str):
            update[field_name] = name_of(kind, value)
    return expectation.evolve(**update).spec() if update else expectation.spec()
