"""Why a VM runs where it runs, and why every other host was rejected (which checker, which value).

``explain`` returns structured data (the console's VM detail and proposal screens render it);
``explain_text`` renders it for ``kerub-tui vm show``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.expectations import Level
from ..core.sizes import format_size
from .checkers import VM_CHECKERS, placement_rejections
from .state import OperationalState

TEXT_HOST_LIMIT = 12  # hosts listed one by one in the text; the rest are counted


@dataclass(frozen=True)
class Reason:
    checker: str  # the expectation type, or "capacity" for hard facts
    level: str  # dealbreaker / want / wish, or "hard"
    text: str


@dataclass(frozen=True)
class HostVerdict:
    host_id: str
    host_name: str
    current: bool
    fits: bool  # no hard reason against it
    reasons: list[Reason] = field(default_factory=list)  # every reason against it (soft ones too)
    free_memory: int = 0
    free_cores: int = 0


@dataclass(frozen=True)
class ExpectationVerdict:
    spec: str
    met: bool
    reason: str | None


@dataclass(frozen=True)
class Explanation:
    vm_id: str
    vm_name: str
    status: str
    host_id: str | None
    host_name: str | None
    expectations: list[ExpectationVerdict]
    hosts: list[HostVerdict]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def explain(state: OperationalState, vm_id: str) -> Explanation:
    vm = state.vms.get(vm_id)
    if vm is None:
        raise KeyError(f"no VM {vm_id}")
    host_id, status = state.vm_placement(vm_id)
    verdicts = []
    for exp in vm.expectations:
        reason = VM_CHECKERS[exp.type].check(state, vm, exp)
        verdicts.append(ExpectationVerdict(spec_with_names(state, exp), reason is None, reason))
    hosts = []
    for other in state.host_ids():
        rejections = placement_rejections(state, vm, other)
        reasons = [Reason(r.checker, r.level.value if r.level is not None else "hard", r.reason)
                   for r in rejections]
        hosts.append(HostVerdict(
            host_id=other, host_name=state.host_name(other), current=other == host_id,
            fits=not any(r.hard for r in rejections), reasons=reasons,
            free_memory=max(state.free_memory(other), 0), free_cores=state.free_cores(other)))
    return Explanation(vm_id=vm.id, vm_name=vm.name,
                       status=status.value if host_id is not None else "down",
                       host_id=host_id, host_name=state.host_name(host_id) if host_id else None,
                       expectations=verdicts, hosts=hosts)


def spec_with_names(state: OperationalState, exp: Any) -> str:
    """The expectation's SPEC with referenced VMs and disks by name (stored by id)."""
    if getattr(exp, "vms", None):
        exp = exp.evolve(vms=[state.vm_name(v) if v in state.vms else v for v in exp.vms])
    if getattr(exp, "disks", None):
        exp = exp.evolve(disks=[state.disk_name(d) if d in state.disks else d for d in exp.disks])
    if getattr(exp, "disk", None) and exp.disk in state.disks:
        exp = exp.evolve(disk=state.disk_name(exp.disk))
    spec: str = exp.spec()
    return spec


def render(explanation: Explanation, *, limit: int = TEXT_HOST_LIMIT) -> str:
    e = explanation
    lines = []
    if e.host_id is not None:
        lines.append(f"  placement: {e.status} on {e.host_name}")
    else:
        lines.append("  placement: not on any host")
    met = [v.spec for v in e.expectations if v.met]
    if met:
        lines.append(f"    meets {', '.join(met)}")
    for v in e.expectations:
        if not v.met:
            lines.append(f"    does not meet {v.spec}: {v.reason}")
    others = [h for h in e.hosts if not h.current]
    # Fitting hosts first, then by how hard the reasons are, so the interesting ones fit in the limit.
    others.sort(key=lambda h: (not h.fits, len(h.reasons), h.host_name))
    if others:
        lines.append("  other hosts:")
    for h in others[:limit]:
        if h.fits and not h.reasons:
            lines.append(f"    {h.host_name}: fits ({format_size(h.free_memory)} memory, "
                         f"{max(h.free_cores, 0)} cores free)")
            continue
        verdict = "fits, but" if h.fits else "rejected"
        why = "; ".join(f"{r.checker}{'' if r.level == 'hard' else '@' + r.level}: {_strip(r.text, h.host_name)}"
                        for r in h.reasons)
        lines.append(f"    {h.host_name}: {verdict}: {why}")
    rest = others[limit:]
    if rest:
        fitting = sum(1 for h in rest if h.fits)
        lines.append(f"    ... {len(rest)} more hosts ({fitting} fit)")
    return "\n".join(lines)


def _strip(text: str, host_name: str) -> str:
    prefix = f"{host_name}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def explain_text(source: Any, vm_id: str) -> str:
    """For the command line: ``source`` is a core Store or an OperationalState."""
    state = source if isinstance(source, OperationalState) else OperationalState.from_store(source)
    return render(explain(state, vm_id))


def worst_level(verdict: HostVerdict) -> str | None:
    levels = [r.level for r in verdict.reasons]
    for name in ("hard", Level.dealbreaker.value, Level.want.value, Level.wish.value):
        if name in levels:
            return name
    return None
