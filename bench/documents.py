"""Validated document updates: what ``evolve`` costs against pydantic's ``model_copy(update=...)``.

``model_copy(update=...)`` validates nothing (a HostDynamic with ``memory_free='lots'`` goes through);
``Frozen.evolve`` validates the copy like a new instance. The hottest caller is the host monitor: every
``vmstat 1`` line of every host updates its HostDynamic. Measured here, in one run:

- one update of a HostDynamic (the vmstat fields) and of a VirtualMachineDynamic (domain stats), each
  way, in microseconds per call;
- the monitor's whole vmstat path per line (``HostMonitor.vmstat_handler``: parse the line, read the
  current document, update it, hand it to the coalescing DocumentWriter; the store write itself is
  coalesced to once a second per document and not in this figure), with ``evolve`` and with
  ``evolve`` swapped back to ``model_copy``: the validation's share of the monitor's CPU per host.

    .venv/bin/python bench/documents.py
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kerub_tui.core.base import Frozen
from kerub_tui.core.models import (
    CpuInfo,
    HostCapabilities,
    HostDynamic,
    HostStatus,
    KsmState,
    VirtualMachineDynamic,
    VmStatus,
)
from kerub_tui.core.store import Store
from kerub_tui.hosts.monitor import DocumentWriter, HostMonitor, MonitorSettings

CALLS = 20_000
LINES = 20_000
HEADER = (
    "--procs-- -----------------------memory---------------------- ---swap-- -----io---- -system-- "
    "----------cpu----------",
    "   r    b         swpd         free         buff        cache   si   so    bi    bo   in   cs"
    "  us  sy  id  wa  st  gu",
)


def best_of(runs: int, fn: Callable[[], None]) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def host_dynamic() -> HostDynamic:
    """A HostDynamic as a monitored host has it: KSM, four capabilities' free space, a few drops."""
    now = dt.datetime.now(dt.UTC)
    return HostDynamic(id="h1", status=HostStatus.up, cpu_user=12, cpu_system=3, cpu_idle=85,
                       memory_free=20_000, memory_used=40_000, swap_used=0,
                       ksm=KsmState(run=True, pages_to_scan=100, pages_shared=1000, pages_sharing=5000),
                       storage_free={"lvm:vg0": 500 << 30, "fs:/var/lib/kerub-tui/images": 200 << 30,
                                     "thin:vg0/pool": 100 << 30, "zfs:tank": 1 << 40},
                       cpu_temperature=54.0, last_seen=now, drops=[now - dt.timedelta(hours=h) for h in (1, 2, 3)])


def per_call(doc: Any, changes: list[dict[str, Any]], how: str) -> float:
    def run() -> None:
        for i in range(CALLS):
            c = changes[i % len(changes)]
            if how == "evolve":
                doc.evolve(**c)
            else:
                doc.model_copy(update=c)

    return best_of(5, run) / CALLS * 1e6


def vmstat_line(i: int) -> str:
    free, used = 20_000_000 + (i * 4096) % 1_000_000, 5 + i % 40
    return (f"   1    0            0 {free:12d}        65536      8388608    0    0     3    40  900 1500 "
            f"{used:3d}   3 {97 - used:3d}   0   0   0")


async def monitor_per_line(data_dir: Path) -> float:
    store = Store.open(data_dir)
    try:
        caps = HostCapabilities(memory_bytes=64 << 30, cpu=CpuInfo(cpus=16))
        writer = DocumentWriter(store, 1.0)
        monitor = HostMonitor("h1", "h1", None, writer, lambda: None,  # type: ignore[arg-type]
                              capabilities=lambda: caps, settings=MonitorSettings(), streams=False)
        store.put(host_dynamic())
        handle = monitor.vmstat_handler()
        for line in HEADER:
            handle(line)
        lines = [vmstat_line(i) for i in range(LINES)]

        def run() -> None:
            for line in lines:
                handle(line)

        seconds = best_of(3, run)
        assert monitor.samples >= LINES, monitor.samples
        writer.close()
        return seconds / LINES * 1e6
    finally:
        store.close()


def main() -> None:
    host = host_dynamic()
    vm = VirtualMachineDynamic(id="v1", host_id="h1", status=VmStatus.up, memory_used=2 << 30, cpu_percent=12.0)
    host_changes = [{"cpu_user": 10 + i % 7, "cpu_system": 2, "cpu_idle": 88 - i % 7, "memory_free": 20_000 + i,
                     "memory_used": 40_000 - i, "swap_used": 0} for i in range(16)]
    vm_changes = [{"memory_used": (2 << 30) + i * 4096, "cpu_percent": 10.0 + i} for i in range(16)]
    print(f"host-dynamic update, model_copy: {per_call(host, host_changes, 'copy'):.2f} us")
    print(f"host-dynamic update, evolve: {per_call(host, host_changes, 'evolve'):.2f} us")
    print(f"vm-dynamic update, model_copy: {per_call(vm, vm_changes, 'copy'):.2f} us")
    print(f"vm-dynamic update, evolve: {per_call(vm, vm_changes, 'evolve'):.2f} us")

    validated = Frozen.evolve
    with tempfile.TemporaryDirectory() as tmp:
        after = asyncio.run(monitor_per_line(Path(tmp) / "a"))

        def unvalidated(self: Any, **changes: Any) -> Any:
            return self.model_copy(update=changes) if changes else self

        Frozen.evolve = unvalidated  # type: ignore[method-assign]
        try:
            before = asyncio.run(monitor_per_line(Path(tmp) / "b"))
        finally:
            Frozen.evolve = validated  # type: ignore[method-assign]
    print(f"monitor vmstat line, model_copy (before): {before:.2f} us")
    print(f"monitor vmstat line, evolve (after): {after:.2f} us")
    print(f"ratio evolve vs model_copy (monitor line): {after / before:.2f}")
    print(f"monitor CPU per host at one vmstat line a second, evolve: {after / 1e4:.4f} %")


if __name__ == "__main__":
    main()
