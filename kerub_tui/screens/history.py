"""Recent figures per host for sparklines, from HostDynamic changes in the feed (never polled).

Each host keeps a bounded ring of time buckets (mean CPU busy % and memory used % per bucket), so the
memory use is fixed per host however often the monitors report. The right edge of a sparkline is the
newest sample, not the wall clock: nothing needs a timer to redraw, and a host that went quiet shows
its last minutes as they were.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from dataclasses import dataclass, field

from ..core.models import HostDynamic

BUCKET_SECONDS = 10
BUCKETS = 60  # ten minutes


@dataclass(slots=True)
class _Bucket:
    index: int
    cpu_sum: float = 0.0
    cpu_n: int = 0
    mem_sum: float = 0.0
    mem_n: int = 0


@dataclass(slots=True)
class HostFigures:
    buckets: deque[_Bucket] = field(default_factory=lambda: deque(maxlen=BUCKETS))

    def record(self, when: dt.datetime, cpu: float | None, mem: float | None) -> None:
        index = int(when.timestamp() // BUCKET_SECONDS)
        if self.buckets and index < self.buckets[-1].index:
            return  # an out-of-order sample older than the newest bucket: the ring only moves forward
        if not self.buckets or self.buckets[-1].index != index:
            self.buckets.append(_Bucket(index))
        bucket = self.buckets[-1]
        if cpu is not None:
            bucket.cpu_sum += cpu
            bucket.cpu_n += 1
        if mem is not None:
            bucket.mem_sum += mem
            bucket.mem_n += 1

    def series(self, what: str, count: int = BUCKETS) -> list[float | None]:
        """The last ``count`` buckets, oldest first, ending at the newest sample; None where no sample."""
        if not self.buckets:
            return []
        last = self.buckets[-1].index
        by_index = {b.index: b for b in self.buckets}
        out: list[float | None] = []
        for index in range(last - count + 1, last + 1):
            bucket = by_index.get(index)
            if bucket is None:
                out.append(None)
            elif what == "cpu":
                out.append(bucket.cpu_sum / bucket.cpu_n if bucket.cpu_n else None)
            else:
                out.append(bucket.mem_sum / bucket.mem_n if bucket.mem_n else None)
        # Drop the gaps from before the first sample, so a new host's line starts at its first figure.
        first = next((i for i, v in enumerate(out) if v is not None), len(out))
        out = out[first:]
        return out


def cpu_busy(dyn: HostDynamic) -> float | None:
    if dyn.cpu_idle is not None:
        return max(0.0, 100.0 - dyn.cpu_idle)
    if dyn.cpu_user is not None or dyn.cpu_system is not None:
        return (dyn.cpu_user or 0.0) + (dyn.cpu_system or 0.0)
    return None


def memory_used_percent(dyn: HostDynamic, total: int | None = None) -> float | None:
    used, free = dyn.memory_used, dyn.memory_free
    if total is None or total <= 0:
        if used is None or free is None or used + free <= 0:
            return None
        total = used + free
    if used is None:
        if free is None:
            return None
        used = total - free
    return max(0.0, min(100.0, 100.0 * used / total))


class FigureHistory:
    """Bounded recent CPU and memory figures per host id."""

    def __init__(self) -> None:
        self.hosts: dict[str, HostFigures] = {}

    def record(self, dyn: HostDynamic, total_memory: int | None = None,
               when: dt.datetime | None = None) -> None:
        when = dyn.last_seen or when
        if when is None:
            return  # a document without a sample time is a status change, not a figure
        figures = self.hosts.get(dyn.id)
        if figures is None:
            figures = self.hosts[dyn.id] = HostFigures()
        figures.record(when, cpu_busy(dyn), memory_used_percent(dyn, total_memory))

    def forget(self, host_id: str) -> None:
        self.hosts.pop(host_id, None)

    def series(self, host_id: str, what: str, count: int = BUCKETS) -> list[float | None]:
        figures = self.hosts.get(host_id)
        return figures.series(what, count) if figures else []
