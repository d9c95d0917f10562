"""What one operation on a host did: the one result type of the executor's ``HostOperations``
(planner/executor.py), whoever answers it: SSH and libvirt (hosts/operations.py) or the simulator (sim/).

Imports nothing: the planner reads it without loading what runs on hosts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# How far a long operation got, as the host reports it: ``report(done, total)`` in bytes, called on the
# event loop while the operation runs (a live migration's job statistics; a copy's GNU dd reports are
# read into the same call by the executor). Totals may grow while it runs (memory dirtied again).
ProgressReport = Callable[[int, int], None]


@dataclass(frozen=True)
class OperationResult:
    """What one operation did: the executor reads exit_code, stdout and stderr."""

    exit_code: int
    stdout: str = ""
    stderr: str = ""
