"""One number per cost, so plans compare: everything is converted to seconds of work.

A plan's value is the sum of its steps' scalar costs plus a penalty for every want or wish it leaves
violated. Penalties are much larger than typical step costs, so the planner will spend an expensive
migration to meet a want, but a dealbreaker is never traded: it is a goal, not a penalty.
"""

from __future__ import annotations

from ..core.expectations import Level
from ..core.models import Cost

IO_BYTES_PER_SECOND = 200e6  # local disk throughput assumed when a step copies or writes data
NETWORK_BYTES_PER_SECOND = 100e6  # one gigabit link, a little under line rate
CPU_SECOND_WEIGHT = 0.2  # host CPU seconds are cheaper than wall-clock seconds of the operation
RISK_SECONDS = 600.0  # risk 1 (may lose a running workload) weighs like ten minutes of work
# A disk read over the network (an iSCSI target or an NFS export of another host, issue 16): setting the
# share up is a step of a few seconds, and every read and write the VM then makes crosses the network
# for as long as it runs there. That per-IO penalty is priced once per remote disk, where a VM starts or
# lands on a host that reaches the disk so (StartVm, MigrateVm): five minutes of work. A copy costs its
# size over the network (size / NETWORK_BYTES_PER_SECOND) and its IO; so a small disk is copied and a big
# one shared (about 15 GiB is where they meet), and a copy is never needed where the disk cannot go.
SHARE_SETUP_SECONDS = 5.0
REMOTE_IO_SECONDS = 300.0

PENALTY: dict[Level, float] = {
    Level.wish: 600.0,
    Level.want: 3600.0,
}


def scalar(cost: Cost) -> float:
    return (
        cost.time_seconds
        + cost.cpu_seconds * CPU_SECOND_WEIGHT
        + cost.io_bytes / IO_BYTES_PER_SECOND
        + cost.network_bytes / NETWORK_BYTES_PER_SECOND
        + cost.risk * RISK_SECONDS
    )


def penalty(level: Level) -> float:
    """The price of leaving an expectation of this level violated (dealbreakers are not priced)."""
    if level is Level.dealbreaker:
        raise ValueError("a dealbreaker is a goal, not a penalty")
    return PENALTY[level]
