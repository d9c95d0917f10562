"""Console benchmark: 1,000 hosts and 10,000 VMs in the store.

Prints, for the kerub-tui console and for a plain-DataTable baseline app fed by the same store:
- time to first full paint (app start until the first screen update showing every row loaded),
- RSS after that paint,
- keypress-to-repaint latency p50/p95 (a cursor move, until the screen update that shows it) while
  1,000 document changes per second arrive from the store's change feed,
and the ratios kerub-tui / baseline. Each app runs in its own process (so RSS is its own), headless.

    .venv/bin/python bench/console.py [--hosts 1000] [--vms 10000] [--rate 1000] [--presses 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GIB = 1 << 30
MIB = 1 << 20


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


# --- the fleet --------------------------------------------------------------------------------


def build_store(data_dir: Path, hosts: int, vms: int) -> None:
    import datetime as dt

    from kerub_tui.core.models import (
        CpuInfo,
        Host,
        HostCapabilities,
        HostDynamic,
        HostStatus,
        VirtualMachine,
        VirtualMachineDynamic,
        VmStatus,
    )
    from kerub_tui.core.store import Store

    rng = random.Random(42)
    now = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    docs: list = []
    host_ids = [f"host-{n:05d}" for n in range(hosts)]
    for n, host_id in enumerate(host_ids):
        docs.append(Host(id=host_id, name=f"kvm{n:04d}", address=f"10.{n // 250}.{n % 250}.1",
                         capabilities=HostCapabilities(cpu=CpuInfo(cpus=32), memory_bytes=256 * GIB)))
        docs.append(HostDynamic(id=host_id, status=HostStatus.up, cpu_idle=rng.uniform(10, 90),
                                memory_used=rng.randint(10, 200) * GIB, memory_free=50 * GIB, last_seen=now))
    for n in range(vms):
        vm_id = f"vm-{n:06d}"
        docs.append(VirtualMachine(id=vm_id, name=f"vm{n:05d}", cpus=rng.choice((1, 2, 4)),
                                   memory_min=1 * GIB, memory_max=2 * GIB))
        docs.append(VirtualMachineDynamic(id=vm_id, host_id=host_ids[n % hosts], status=VmStatus.up,
                                          memory_used=rng.randint(256, 2048) * MIB, updated_at=now))
    with Store.open(data_dir) as store:
        for start in range(0, len(docs), 5000):
            store.put_many(docs[start:start + 5000])


def store_put_ms(data_dir: Path, count: int = 300) -> float:
    from kerub_tui.core.models import HostDynamic
    from kerub_tui.core.store import Store

    with Store.open(data_dir) as store:
        doc = store.put(HostDynamic(id="h", cpu_idle=1.0))
        started = time.perf_counter()
        for n in range(count):
            store.put(doc.model_copy(update={"cpu_idle": float(n)}))
        return (time.perf_counter() - started) / count * 1000


class Load:
    """Document changes at a steady rate through the change feed.

    They go through an in-memory mirror of the store (what an attached console holds), so what is
    measured is the console's work, not the store's commits (measured apart: store_put below).
    """

    def __init__(self, store, rate: int) -> None:
        from kerub_tui.core.models import HostDynamic, VirtualMachineDynamic

        self.store = store
        self.rate = rate
        self.hosts = store.list(HostDynamic)
        self.vms = store.list(VirtualMachineDynamic)
        self.count = 0
        self.rng = random.Random(7)
        self.task: asyncio.Task | None = None

    def _one(self) -> None:
        import datetime as dt

        self.count += 1
        if self.count % 2:
            dyn = self.rng.choice(self.hosts)
            when = (dyn.last_seen or dt.datetime.now(dt.UTC)) + dt.timedelta(seconds=self.count / 1000)
            new = dyn.model_copy(update={"cpu_idle": self.rng.uniform(5, 95), "last_seen": when})
        else:
            dyn = self.rng.choice(self.vms)
            new = dyn.model_copy(update={"memory_used": self.rng.randint(256, 2048) * MIB})
        self.store.apply(new.kind, new.id, new)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            due = int((loop.time() - start) * self.rate)
            while self.count < due:
                self._one()
            await asyncio.sleep(0.005)

    def start(self) -> float:
        self.task = asyncio.get_running_loop().create_task(self.run())
        return asyncio.get_running_loop().time()

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


# --- measuring an app -------------------------------------------------------------------------


class Painter:
    """Wraps App._display: the time of every screen update (headless apps compose them anyway)."""

    def __init__(self, app) -> None:
        self.waiters: list[tuple[callable, asyncio.Future]] = []
        original = app._display

        def display(screen, renderable) -> None:
            if renderable is not None:
                now = time.perf_counter()
                for check, future in list(self.waiters):
                    if not future.done() and check():
                        future.set_result(now)
                        self.waiters.remove((check, future))
            original(screen, renderable)

        app._display = display

    def when(self, check) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.waiters.append((check, future))
        return future


async def key_latencies(app, table, painter: Painter, presses: int) -> list[float]:
    """Seconds from each cursor key (down, up, down...) to the screen update that shows it moved."""
    from textual import events

    latencies = []
    rng = random.Random(3)
    for n in range(presses):
        key = "down" if n % 2 == 0 else "up"
        expected = table.cursor_row + (1 if key == "down" else -1)
        repaint = painter.when(lambda e=expected: table.cursor_row == e)
        pressed = time.perf_counter()
        app._driver.send_message(events.Key(key, None))
        latencies.append(await asyncio.wait_for(repaint, timeout=60) - pressed)
        await asyncio.sleep(rng.uniform(0.01, 0.03))
    return latencies


async def measure(app, table_of, loaded, store, args) -> dict:
    result: dict = {}
    painter = Painter(app)
    started = time.perf_counter()
    async with app.run_test(size=(200, 60)) as pilot:
        first = painter.when(lambda: loaded())
        painted = await asyncio.wait_for(first, timeout=600)
        result["first_paint_s"] = painted - started
        await pilot.pause()
        result["rss_mib"] = rss_kib() / 1024
        table = table_of()
        table.focus()
        await pilot.pause()
        load = Load(store, args.rate)
        t0 = load.start()
        await asyncio.sleep(0.5)  # under load before measuring
        latencies = await key_latencies(app, table, painter, args.presses)
        elapsed = asyncio.get_running_loop().time() - t0
        await load.stop()
        result["changes_per_s"] = load.count / elapsed
        result["latency_p50_ms"] = percentile(latencies, 50) * 1000
        result["latency_p95_ms"] = percentile(latencies, 95) * 1000
    return result


def mirrored(data_dir: Path):
    """A started controller whose store is an in-memory mirror of the file store (see Load)."""
    from kerub_tui.controller import Controller
    from kerub_tui.core.store import Store

    controller = Controller(data_dir)
    store = controller.open_store()
    controller.store = Store.mirror(data_dir, list(store.all_documents()))
    store.close()
    return controller


async def run_kerub(data_dir: Path, args) -> dict:
    from kerub_tui.app import KerubApp

    controller = mirrored(data_dir)
    controller.started = True  # nothing else to start: the benchmark's hosts are not real
    app = KerubApp(controller)

    def loaded() -> bool:
        main = app.main
        return bool(main is not None and main.is_mounted and all(
            main.table(p).loaded and main.table(p).row_count == main.table(p).total for p in ("hosts", "vms")))

    async def go() -> dict:
        result = await measure(app, lambda: app.main.table("vms"), loaded, controller.db, args)
        return result

    return await go()


async def run_baseline(data_dir: Path, args) -> dict:
    """The same two tables as a plain DataTable app: rows of strings, one update_cell per change."""
    from textual.app import App
    from textual.widgets import DataTable

    from kerub_tui.core.models import Host, HostDynamic, VirtualMachine, VirtualMachineDynamic

    db = mirrored(data_dir).db

    class Baseline(App):
        def compose(self):
            yield DataTable(id="hosts", cursor_type="row")
            yield DataTable(id="vms", cursor_type="row")

        async def on_mount(self) -> None:
            hosts = self.query_one("#hosts", DataTable)
            hosts.add_columns(("Name", "name"), ("Address", "address"), ("CPU", "cpu"), ("VMs", "vms"))
            for h in db.list(Host):
                d = db.get(HostDynamic, h.id)
                hosts.add_row(h.name, h.address, f"{100 - d.cpu_idle:.0f}%", str(len(db.vms_on_host(h.id))),
                              key=h.id)
            vms = self.query_one("#vms", DataTable)
            vms.add_columns(("Name", "name"), ("Host", "host"), ("vCPU", "cpus"), ("Memory", "mem"))
            for v in db.list(VirtualMachine):
                d = db.get(VirtualMachineDynamic, v.id)
                vms.add_row(v.name, d.host_id, str(v.cpus), str(d.memory_used), key=v.id)
            self.loaded = True
            self.run_worker(self.follow(), group="feed")

        async def follow(self) -> None:
            hosts = self.query_one("#hosts", DataTable)
            vms = self.query_one("#vms", DataTable)
            async for change in db.feed.subscribe():
                if change.kind == "host-dynamic" and change.new is not None:
                    hosts.update_cell(change.id, "cpu", f"{100 - change.new.cpu_idle:.0f}%")
                elif change.kind == "vm-dynamic" and change.new is not None:
                    vms.update_cell(change.id, "mem", str(change.new.memory_used))

    app = Baseline()
    app.loaded = False
    return await measure(app, lambda: app.query_one("#vms", DataTable), lambda: app.loaded, db, args)


def child(args) -> None:
    runner = run_kerub if args.child == "kerub" else run_baseline
    result = asyncio.run(runner(Path(args.data_dir), args))
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--vms", type=int, default=10000)
    parser.add_argument("--rate", type=int, default=1000, help="document changes per second")
    parser.add_argument("--presses", type=int, default=200)
    parser.add_argument("--child", choices=("kerub", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="kerub-bench-console-") as tmp:
        data = Path(tmp) / "data"
        env = dict(os.environ, KERUB_TUI_CONFIG=str(Path(tmp) / "config"), KERUB_TUI_DATA=str(data))
        started = time.perf_counter()
        build_store(data, args.hosts, args.vms)
        print(f"store_build: {time.perf_counter() - started:.1f} s  ({args.hosts} hosts, {args.vms} VMs)", flush=True)
        print(f"store_put: {store_put_ms(Path(tmp) / 'put'):.2f} ms (one committed put to the UnQLite file, "
              "for scale: not part of the figures below)")
        figures = (("first_paint", "first_paint_s", "s", "{:.2f}"), ("rss", "rss_mib", "MiB", "{:.0f}"),
                   ("key_latency_p50", "latency_p50_ms", "ms", "{:.1f}"),
                   ("key_latency_p95", "latency_p95_ms", "ms", "{:.1f}"),
                   ("changes_applied", "changes_per_s", "changes/s", "{:.0f}"))
        results = {}
        for which, prefix in (("kerub", "console"), ("baseline", "baseline")):
            out = subprocess.run([sys.executable, __file__, "--child", which, "--data-dir", str(data),
                                  "--rate", str(args.rate), "--presses", str(args.presses)],
                                 env=env, capture_output=True, text=True, timeout=1800)
            if out.returncode != 0:
                sys.stderr.write(out.stderr)
                raise SystemExit(f"bench/console.py: the {which} run failed")
            results[which] = json.loads(out.stdout.strip().splitlines()[-1])
            for name, key, unit, fmt in figures:  # each app's figures as soon as it is measured
                print(f"{prefix}_{name}: {fmt.format(results[which][key])} {unit}", flush=True)
        kerub, base = results["kerub"], results["baseline"]
        for name, key, _, _ in figures[:4]:
            ratio = kerub[key] / base[key] if base[key] else float("inf")
            print(f"ratio_{name}: {ratio:.2f} x (kerub-tui / plain DataTable)")

if __name__ == "__main__":
    main()
