"""The controller's hosts, real and simulated, behind one interface.

Each Host document says what it is (``Host.simulated``): real hosts go to the SSH ``Fleet`` (through
``FleetOperations`` for the executor), simulated ones to the ``SimulatedFleet``. The executor, the
controller and the console call the pool and never ask which one answered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kerub_tui.core.models import Host, HostStatus
from kerub_tui.core.store import Store
from kerub_tui.hosts.fleet import Fleet
from kerub_tui.hosts.operations import EXIT_UNREACHABLE, FleetOperations, OperationResult
from kerub_tui.hosts.power import fence_from_controller, wake_from_controller

from .fleet import SimulatedFleet


class HostPool:
    """Lifecycle and the executor's ``HostOperations`` over both fleets."""

    def __init__(self, store: Store, fleet: Fleet, simulated: SimulatedFleet,
                 operations: FleetOperations | None = None) -> None:
        self.store = store
        self.fleet = fleet
        self.simulated = simulated
        self.operations = operations or FleetOperations(fleet)

    def is_simulated(self, host_id: str) -> bool:
        host = self.store.get(Host, host_id)
        return host is not None and host.simulated

    @property
    def started(self) -> bool:
        return self.fleet.started and self.simulated.started

    async def start(self) -> None:
        await self.fleet.start()
        await self.simulated.start()

    async def stop(self) -> None:
        await self.simulated.stop()
        await self.fleet.stop()

    def status(self, host_id: str) -> HostStatus:
        return self.simulated.status(host_id) if self.is_simulated(host_id) else self.fleet.status(host_id)

    async def wait_up(self, host_id: str, timeout: float | None = None) -> None:
        if self.is_simulated(host_id):
            await self.simulated.wait_up(host_id, timeout)
        else:
            await self.fleet.wait_up(host_id, timeout)

    async def remove_host(self, host_id: str) -> None:
        if self.is_simulated(host_id):
            await self.simulated.remove_host(host_id)
        else:
            await self.fleet.remove_host(host_id)

    # the executor's HostOperations

    async def run(self, host_id: str, command: str, *, privileged: bool = True,
                  input: bytes | None = None, on_stderr: Callable[[bytes], None] | None = None) -> OperationResult:
        if self.is_simulated(host_id):
            return await self.simulated.run(host_id, command, privileged=privileged, on_stderr=on_stderr, input=input)
        if input is not None:  # only what is given: an operations object may take neither
            return await self.operations.run(host_id, command, privileged=privileged, input=input)
        if on_stderr is not None:
            return await self.operations.run(host_id, command, privileged=privileged, on_stderr=on_stderr)
        return await self.operations.run(host_id, command, privileged=privileged)

    async def wake(self, host_id: str) -> OperationResult:
        """Wake a powered-down host from the controller (planner.executor.WakesHosts): a simulated one
        boots; a real one gets the magic packet or ipmitool from this process (hosts/power.py)."""
        host = self.store.get(Host, host_id)
        if host is None:
            return OperationResult(EXIT_UNREACHABLE, "", f"no host {host_id}")
        if host.simulated:
            return await self.simulated.wake(host_id)
        return await wake_from_controller(host.power, host.name)

    async def fence(self, host_id: str) -> OperationResult:
        """Power a host that went away off through its BMC, from the controller (planner.executor.FencesHosts):
        a simulated one's BMC is the simulator's named fake; a real one's is ipmitool run here, read back."""
        host = self.store.get(Host, host_id)
        if host is None:
            return OperationResult(EXIT_UNREACHABLE, "", f"no host {host_id}")
        if host.power.ipmi_address is None:
            return OperationResult(1, "", f"{host.name} has no IPMI: it cannot be powered off from the controller")
        if host.simulated:
            return await self.simulated.power_off(host_id)
        return await fence_from_controller(host.power, host.name)

    async def libvirt(self, host_id: str, op: str, **kwargs: Any) -> OperationResult:
        simulated = self.is_simulated(host_id)
        target = kwargs.get("target_host_id")
        if op == "migrate" and target is not None and self.is_simulated(target) != simulated:
            return OperationResult(EXIT_UNREACHABLE, "", "cannot migrate between a simulated and a real host")
        if simulated:
            return await self.simulated.libvirt(host_id, op, **kwargs)
        return await self.operations.libvirt(host_id, op, **kwargs)


__all__ = ["HostPool"]
