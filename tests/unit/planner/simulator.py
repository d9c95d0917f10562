"""A fleet simulator for executor tests: it implements the executor's HostOperations protocol, records
every command, and predicts each step's effect with the planner's own ``take``.

It is a simulator, not a host: nothing runs. It answers the executor's read-backs (lvs JSON,
qemu-img info JSON, the KSM files, libvirt domain states) from its simulated state, in the formats
the real tools print, so the verification code paths and parsers are exercised. Real host I/O is
tested by the controller and lab suites.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from typing import Any

from kerub_tui.core.models import FileAllocation, LvmAllocation
from kerub_tui.planner.executor import CommandResult
from kerub_tui.planner.state import OperationalState
from kerub_tui.planner.steps import Step

# A syntactically valid ed25519 public key (type string inside the blob), as ssh-keygen prints one.
PEER_PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG7bSxlyJgVDPXbmeTCSVcI3wT3X6ipEKf3cQYvW6Yv7 kerub-peer"


class FleetSimulator:
    def __init__(self, state: OperationalState,
                 fail: Callable[[str, str], str | None] = lambda host, command: None) -> None:
        self.state = state
        self.fail = fail
        self.log: list[tuple[str, str]] = []
        self._step: Step | None = None
        self._applied = True

    def on_step(self, index: int, step: Step) -> None:
        self._step = step
        self._applied = False

    def _apply(self) -> None:
        if not self._applied and self._step is not None:
            self.state = self._step.take(self.state)
            self._applied = True

    async def run(self, host_id: str, command: str, *, privileged: bool = True) -> CommandResult:
        self.log.append((host_id, command))
        failure = self.fail(host_id, command)
        if failure is not None:
            return CommandResult(1, "", failure)
        words = command.split()
        if words[:1] == ["lvs"]:
            return CommandResult(0, self._lvs(host_id, words[-1]))
        if words[:2] == ["qemu-img", "info"]:
            return self._qemu_img_info(host_id, shlex.split(command)[-1])
        if command.startswith("test ! -e"):
            path = shlex.split(command)[-1]
            exists = any(isinstance(a, FileAllocation) and a.path == path and a.host_id == host_id
                         for d in self.state.disks for a in self.state.allocations(d))
            return CommandResult(1 if exists else 0)
        if "/sys/kernel/mm/ksm" in command and command.startswith("if [ -r"):
            ksm = self.state.host_dyn[host_id].ksm
            lines = [f"/sys/kernel/mm/ksm/{k}:{int(getattr(ksm, k) or 0)}"
                     for k in ("run", "pages_to_scan", "sleep_millisecs", "pages_shared", "pages_sharing",
                               "pages_unshared", "full_scans")]
            return CommandResult(0, "\n".join(lines) + "\n")
        if "ssh-keygen" in command:
            return CommandResult(0, PEER_PUBLIC_KEY + "\n")
        self._apply()
        return CommandResult(0)

    async def libvirt(self, host_id: str, op: str, **kwargs: Any) -> CommandResult:
        self.log.append((host_id, f"libvirt {op} {kwargs.get('vm_id', '')}"))
        failure = self.fail(host_id, f"libvirt {op}")
        if failure is not None:
            return CommandResult(1, "", failure)
        if op == "domain-state":
            where, status = self.state.vm_placement(kwargs["vm_id"])
            if where != host_id:
                return CommandResult(0, "")
            return CommandResult(0, {"up": "running", "paused": "paused"}.get(status.value, "shut off"))
        if op == "start":
            assert kwargs["xml"].startswith("<domain"), "the executor hands libvirt the domain XML"
        self._apply()
        return CommandResult(0)

    def _lvs(self, host_id: str, vg: str) -> str:
        rows = []
        for disk_id in sorted(self.state.disks):
            for alloc in self.state.allocations(disk_id):
                if isinstance(alloc, LvmAllocation) and alloc.host_id == host_id and alloc.vg == vg:
                    rows.append({"vg_name": vg, "lv_name": alloc.lv, "lv_uuid": f"uuid-{alloc.lv}",
                                 "lv_attr": "-wi-a-----", "lv_size": str(alloc.actual_size or 0),
                                 "lv_layout": "linear", "segtype": "linear", "pool_lv": "", "origin": "",
                                 "data_percent": "", "metadata_percent": "", "devices": "/dev/sda(0)"})
        return json.dumps({"report": [{"lv": rows}]})

    def _qemu_img_info(self, host_id: str, path: str) -> CommandResult:
        for disk_id in sorted(self.state.disks):
            for alloc in self.state.allocations(disk_id):
                if isinstance(alloc, FileAllocation) and alloc.host_id == host_id and alloc.path == path:
                    return CommandResult(0, json.dumps({"filename": path, "format": alloc.format,
                                                        "virtual-size": alloc.actual_size or 0}))
        return CommandResult(1, "", f"qemu-img: Could not open '{path}': No such file or directory")
