"""Host steps: KSM, powering down and waking, fencing a host that went away, SSH trust between hosts."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import ClassVar

from ...core.models import (
    Cost,
    Fence,
    Host,
    HostStatus,
)
from ..state import OperationalState, Reservation
from .base import (
    PEER_KEY,
    PEER_KNOWN_HOSTS,
    ControllerOp,
    DeferredShellOp,
    Operation,
    ShellOp,
    Step,
    Touched,
    _config_list,
    _host_config,
    _host_down,
    _host_dyn,
    _taken,
    step_type,
)


@step_type
@dataclass(frozen=True)
class SetKsm(Step):
    """KSM on, off, or tuned (``None`` leaves a setting as it is)."""

    type: ClassVar[str] = "ksm"
    host: str
    run: bool | None = None
    pages_to_scan: int | None = None
    sleep_millisecs: int | None = None

    def inverse(self) -> Step | None:
        if self.run is None:
            return None
        return SetKsm(self.host, not self.run, self.pages_to_scan, self.sleep_millisecs)

    def blocked(self, state: OperationalState) -> str | None:
        if down := _host_down(state, self.host):
            return down
        dyn = state.host_dyn.get(self.host)
        if dyn is not None and not dyn.ksm.available:
            return f"{state.host_name(self.host)} has no KSM"
        if state.locked("host", self.host):
            return f"{state.host_name(self.host)} is held by another plan"
        return None

    def take(self, state: OperationalState) -> OperationalState:
        dyn = state.host_dyn.get(self.host)
        ksm = dyn.ksm if dyn is not None else None
        changes = {k: v for k, v in (("run", self.run), ("pages_to_scan", self.pages_to_scan),
                                     ("sleep_millisecs", self.sleep_millisecs)) if v is not None}
        new_ksm = ksm.evolve(**changes) if ksm is not None else None
        return state.apply([_host_dyn(state, self.host, ksm=new_ksm)]) if new_ksm is not None else state

    def reservations(self) -> list[Reservation]:
        return [Reservation("ksm", self.host)]

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=1.0)

    def describe(self, state: OperationalState) -> str:
        name = state.host_name(self.host)
        if self.run is True:
            what = "enable KSM"
        elif self.run is False:
            what = "disable KSM"
        else:
            what = "tune KSM"
        tune = [f"{k}={v}" for k, v in (("pages_to_scan", self.pages_to_scan),
                                        ("sleep_millisecs", self.sleep_millisecs)) if v is not None]
        return f"{what} on {name}" + (f" ({', '.join(tune)})" if tune else "")

    def effect(self, state: OperationalState) -> str:
        if self.run is None:
            return f"KSM scan rate changed on {state.host_name(self.host)}"
        return f"KSM {'runs' if self.run else 'stopped'} on {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import ksm

        return [ShellOp(self.host, ksm.ksm_set(run=self.run, pages_to_scan=self.pages_to_scan,
                                               sleep_millisecs=self.sleep_millisecs))]


def wake_means(host: Host) -> str | None:
    """How a powered-down host can be woken again ("wake-on-LAN", "IPMI"), or None when it cannot:
    such a host is never powered down by the planner, since nothing could bring it back."""
    if host.power.wol_mac is not None:
        return "wake-on-LAN"
    if host.power.ipmi_address is not None:
        return "IPMI"
    return None


@step_type
@dataclass(frozen=True)
class PowerDownHost(Step):
    type: ClassVar[str] = "power-down"
    host: str

    def inverse(self) -> Step:
        return WakeHost(self.host, "")

    def blocked(self, state: OperationalState) -> str | None:
        host = state.hosts.get(self.host)
        if host is None:
            return f"no host {self.host}"
        if not host.dedicated:
            return f"{host.name} is not dedicated to kerub: it may run other workloads"
        if wake_means(host) is None:
            return f"{host.name} has no wake-on-LAN address and no IPMI: once off, it could not be woken again"
        if not state.host_up(self.host):
            return f"{host.name} is {state.host_status(self.host).value}"
        if state.vms_on(self.host):
            return f"{host.name} still runs {', '.join(state.vm_name(v) for v in state.vms_on(self.host))}"
        exports = _config_list(state, self.host, "exports") + _config_list(state, self.host, "iscsi_targets")
        if exports:
            return f"{host.name} still shares storage"
        if state.locked("host", self.host):
            return f"{host.name} is held by another plan"
        return None

    def take(self, state: OperationalState) -> OperationalState:
        return state.apply([_host_dyn(state, self.host, status=HostStatus.down, status_reason="powered down by kerub")])

    def reservations(self) -> list[Reservation]:
        return [Reservation("host", self.host)]

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=60.0, risk=0.05)

    def describe(self, state: OperationalState) -> str:
        return f"power down {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} is off"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import power

        caps = state.hosts[self.host].capabilities
        system = "freebsd" if caps is not None and caps.os.id.casefold() == "freebsd" else "linux"
        return [ShellOp(self.host, power.power_off(system=system))]


FROM_CONTROLLER = ""  # WakeHost.via: the controller's own process sends the wake-up


@step_type
@dataclass(frozen=True)
class WakeHost(Step):
    """Wake-on-LAN sent by a running neighbour (``via``), or IPMI from it when the host has a BMC;
    ``via`` FROM_CONTROLLER: the controller sends either itself (a fleet entirely down: it sits on the
    admin's network), so no neighbour is needed."""

    type: ClassVar[str] = "wake-host"
    host: str
    via: str = FROM_CONTROLLER

    def inverse(self) -> Step:
        return PowerDownHost(self.host)

    def blocked(self, state: OperationalState) -> str | None:
        host = state.hosts.get(self.host)
        if host is None:
            return f"no host {self.host}"
        if state.host_up(self.host):
            return f"{host.name} is already up"
        if wake_means(host) is None:
            return f"{host.name} has no wake-on-LAN address and no IPMI"
        if host.recycling:
            return f"{host.name} is being recycled"
        if self.via != FROM_CONTROLLER and (self.via not in state.hosts or not state.host_up(self.via)):
            return f"the neighbour {state.host_name(self.via)} is not up to send the wake-up"
        if state.locked("host", self.host):
            return f"{host.name} is held by another plan"
        return None

    def take(self, state: OperationalState) -> OperationalState:
        return state.apply([_host_dyn(state, self.host, status=HostStatus.up, status_reason=None)])

    def touched(self) -> Touched:
        return Touched(hosts=frozenset(h for h in (self.host, self.via) if h))

    def reservations(self) -> list[Reservation]:
        return [Reservation("host", self.host)]

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=180.0)

    def describe(self, state: OperationalState) -> str:
        sender = "the controller" if self.via == FROM_CONTROLLER else state.host_name(self.via)
        host = state.hosts.get(self.host)
        means = wake_means(host) if host is not None else None
        return f"wake {state.host_name(self.host)} (from {sender}" + (f": {means})" if means else ")")

    def effect(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} is up"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import power

        host = state.hosts[self.host]
        if self.via == FROM_CONTROLLER:
            p = host.power
            if p.wol_mac is not None:
                shown = (f"wake-on-LAN magic packet for {power.check_mac(p.wol_mac)} to "
                         f"{p.wol_broadcast or '255.255.255.255'} port {p.wol_port} (UDP, from this process)")
            else:
                address = _taken(p.ipmi_address, "the host's IPMI address")
                shown = power.ipmi_power(address=address, user=p.ipmi_user or "root", action="on")
            return [ControllerOp(self.host, "wake", shown)]
        if host.power.wol_mac is not None:
            return [ShellOp(self.via, power.wake_on_lan(mac=host.power.wol_mac), privileged=False)]
        address = _taken(host.power.ipmi_address, "the host's IPMI address")
        return [ShellOp(self.via, power.ipmi_power(address=address, user=host.power.ipmi_user or "root",
                                                   action="on"), privileged=False)]


FENCE_BY = "kerub-tui planner (restart plan)"


@step_type
@dataclass(frozen=True)
class FenceHost(Step):
    """High availability (issue 16): a host that went away is powered off through its BMC, from the
    controller (``ipmitool ... chassis power off``, then its power status read back until it says off),
    so that no guest it may still run writes a disk its VMs restarted elsewhere will write. Only for a
    host with IPMI; the others are fenced by the admin (``host fence NAME --confirm-off``) or by answering
    again with none of their guests running."""

    type: ClassVar[str] = "fence-host"
    host: str

    def blocked(self, state: OperationalState) -> str | None:
        host = state.hosts.get(self.host)
        if host is None:
            return f"no host {self.host}"
        if state.host_status(self.host) not in (HostStatus.down, HostStatus.unreachable):
            return f"{host.name} is {state.host_status(self.host).value}: only a host that went away is fenced"
        if state.host_fenced(self.host):
            return f"{host.name} is already fenced"
        if host.power.ipmi_address is None:
            return (f"{host.name} has no IPMI to power it off: confirm it is off "
                    f"(kerub-tui host fence {host.name} --confirm-off)")
        if state.locked("host", self.host):
            return f"{host.name} is held by another plan"
        away = sum(1 for h in state.host_ids() if state.host_status(h) in (HostStatus.down, HostStatus.unreachable))
        up = sum(1 for h in state.host_ids() if state.host_up(h))
        if away > up:  # no quorum: the controller may be the one cut off, and would power off a healthy fleet
            return (f"{away} hosts are away and {up} up: the controller itself may be cut off, so no plan powers "
                    f"{host.name} off (kerub-tui host fence {host.name} does, if you are sure)")
        return None

    def take(self, state: OperationalState) -> OperationalState:
        host = state.hosts[self.host]
        fence = Fence(method="ipmi", by=FENCE_BY, at=state.now,
                      note=f"BMC {host.power.ipmi_user or 'root'}@{host.power.ipmi_address} says power off")
        return state.apply([_host_dyn(state, self.host, fence=fence)])

    def reservations(self) -> list[Reservation]:
        return [Reservation("host", self.host)]

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=15.0)

    def describe(self, state: OperationalState) -> str:
        return (f"fence {state.host_name(self.host)} ({state.host_status(self.host).value}): power it off "
                "through IPMI, so none of its guests still runs")

    def effect(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} is powered off (fenced)"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import power

        p = state.hosts[self.host].power
        address = _taken(p.ipmi_address, "the host's IPMI address")
        off = power.ipmi_power(address=address, user=p.ipmi_user or "root", action="off")
        status = power.ipmi_power(address=address, user=p.ipmi_user or "root", action="status")
        return [ControllerOp(self.host, "fence", f"{off}; then {status} until it says off (from this process)")]


def peer_key_command() -> str:
    """On the source host: make its peer key once, then print the public half."""
    key = shlex.quote(PEER_KEY)
    return (f"umask 077 && mkdir -p /root/.ssh && {{ test -f {key} || ssh-keygen -q -t ed25519 -N '' "
            f"-C kerub-peer -f {key}; }} && cat {shlex.quote(PEER_KEY + '.pub')}")


def known_host_command(address: str, port: int, host_key: str) -> str:
    """On the source host: remember the target's accepted host key for the peer connections."""
    from ...hosts.trust import parse_public_key

    key = parse_public_key(host_key)
    name = address if port == 22 else f"[{address}]:{port}"
    line = f"{name} {key.identity}"
    path = shlex.quote(PEER_KNOWN_HOSTS)
    return (f"umask 077 && touch {path} && {{ grep -qxF -e {shlex.quote(line)} {path} || "
            f"printf '%s\\n' {shlex.quote(line)} >> {path}; }}")


def trust_command_from_key(output: str) -> str:
    """The target's command, built from the public key the source printed."""
    from ...hosts.trust import ssh_trust

    return ssh_trust(output.strip().splitlines()[-1] if output.strip() else "")


@step_type
@dataclass(frozen=True)
class TrustHost(Step):
    """Let ``host`` reach ``target`` over SSH (storage copies, peer-to-peer migration)."""

    type: ClassVar[str] = "ssh-trust"
    host: str  # the source, whose key is trusted
    target: str

    def blocked(self, state: OperationalState) -> str | None:
        config = state.host_config.get(self.target)
        if config is not None and self.host in config.ssh_trust:
            return f"{state.host_name(self.target)} already trusts {state.host_name(self.host)}"
        return _host_down(state, self.host) or _host_down(state, self.target)

    def take(self, state: OperationalState) -> OperationalState:
        trust = sorted(set(_config_list(state, self.target, "ssh_trust")) | {self.host})
        return state.apply([_host_config(state, self.target, ssh_trust=trust)])

    def touched(self) -> Touched:
        return Touched(hosts=frozenset({self.host, self.target}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("trust", f"{self.host}>{self.target}")]

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=2.0)

    def describe(self, state: OperationalState) -> str:
        return f"let {state.host_name(self.host)} reach {state.host_name(self.target)} over SSH"

    def effect(self, state: OperationalState) -> str:
        return f"{state.host_name(self.target)} trusts {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        target = state.hosts[self.target]
        ops: list[Operation] = [ShellOp(self.host, peer_key_command())]
        if target.host_key:
            ops.insert(0, ShellOp(self.host, known_host_command(target.address, target.port, target.host_key)))
        ops.append(DeferredShellOp(
            self.target, "trust_command_from_key",
            f"append {state.host_name(self.host)}'s key {PEER_KEY}.pub (printed above) to /root/.ssh/authorized_keys"))
        return ops


DEFERRED_BUILDERS = {"trust_command_from_key": trust_command_from_key}
