"""Whole-controller benchmark: simulated fleets of 100 and 1,000 hosts, 10 VMs per host.

Everything real except the hosts: the controller's store, document writer, change feed, re-planner
and console run as in production; the hosts are kerub_tui.sim machines at real timing (scale 1: one
vmstat line per host per second, domain statistics every 2 s, state every 5 s).

For each size, in a fresh data dir:
- the fleet is built through the controller (``add_simulated_host``, a mix of profiles) and each
  host gets 10 running VMs (VirtualMachine with ``availability:up`` plus a VirtualMachineDynamic
  placing it, within the host's memory), written before the controller starts: the simulator
  restores running domains from those documents, as after a controller restart;
- a fresh process then starts the controller on it, waits for every host to be up and the first
  monitoring to settle (and checks the planner has nothing to propose), and measures a steady
  window: store changes per second as a change-feed subscriber sees them, controller CPU % (process
  CPU time / wall time, all threads), RSS, store write latency p50/p99 (each outermost store
  transaction that wrote something, timed around ``Store.transaction``: serialise, write, commit,
  publish; and the UnQLite commit alone), the monitoring flush (its part on the loop per second, its
  commit off the loop), event-loop lag, re-plan passes and their duration;
- a host with VMs loses power (``simulator.fail_host``): the time until a proposed Plan restarts all
  its VMs elsewhere, split into the detection (the simulated keepalive delay, DETECT_SECONDS x scale,
  and when the store said "down") and the planner's share;
- the console (KerubApp, in the same process: the console is the controller) opens on it while the
  fleet streams: time to its first full paint, keypress-to-repaint p50/p95 (as bench/console.py).
Then ratios 1000 vs 100 hosts and per-host costs.

    .venv/bin/python bench/fleet.py [--sizes 100,1000] [--window S] [--presses 100]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.console import Painter, key_latencies, percentile, rss_kib

GIB = 1 << 30
MIB = 1 << 20
VMS_PER_HOST = 10
# One host in ten of each kind but r640 and epyc, which a fleet has more of.
PROFILE_MIX = ("r640", "epyc", "r640", "mini", "storage", "r640", "legacy", "epyc", "arm", "r640")
CONNECT_SECONDS = 1.0  # simulated ssh handshake + discovery (x0.5..1.5 per host)
BOOT_SECONDS = 45.0


def default_window(hosts: int) -> float:
    return 20.0 if hosts <= 100 else 30.0


# --- building the fleet (before the measured controller starts) --------------------------------


async def build(data_dir: Path, hosts: int, seed: int = 1) -> dict[str, Any]:
    """Hosts through the controller; their VMs as documents (running, placed within memory)."""
    from kerub_tui.controller import Controller
    from kerub_tui.core.expectations import parse_spec
    from kerub_tui.core.models import VirtualMachine, VirtualMachineDynamic, VmStatus, utcnow
    from kerub_tui.planner.state import host_memory_reserve

    rng = random.Random(seed)
    controller = Controller(data_dir)
    await controller.start(connect_hosts=False)  # the store and the simulator, nothing connected
    try:
        started = time.perf_counter()
        placed: list[Any] = []
        for n in range(hosts):
            host = await controller.add_simulated_host(f"kvm{n:04d}", PROFILE_MIX[n % len(PROFILE_MIX)])
            # its BMC (the simulator's fake IPMI): a failed host's VMs with ha restart once it is fenced
            host = await controller.update_host(host.id, power={**host.power.model_dump(),
                                                                "ipmi_address": f"bmc.{host.address}"})
            placed.append(host)
        hosts_s = time.perf_counter() - started
        started = time.perf_counter()
        up = parse_spec("availability:up", "vm")
        ha = parse_spec("ha", "vm")  # back after its host fails: the failover measured below
        now = utcnow()
        docs: list[Any] = []
        loads = []
        for host in placed:
            caps = host.capabilities
            capacity = caps.memory_bytes - host_memory_reserve(caps.memory_bytes)
            # 35..60 % of the host's VM memory: busy, yet room everywhere for a failed host's guests.
            budget = capacity * rng.uniform(0.35, 0.6)
            weights = [rng.uniform(0.5, 2.0) for _ in range(VMS_PER_HOST)]
            used = 0
            for k, weight in enumerate(weights):
                memory = max(512 * MIB, int(budget * weight / sum(weights)) // (256 * MIB) * (256 * MIB))
                used += memory
                vm = VirtualMachine(name=f"{host.name}-vm{k}", architecture=caps.cpu.architecture,
                                    cpus=min(caps.cpu.cpus, rng.choice((1, 2, 2, 4, 8))),
                                    memory_min=memory // 2, memory_max=memory, expectations=[up, ha])
                docs.append(vm)
                docs.append(VirtualMachineDynamic(id=vm.id, host_id=host.id, status=VmStatus.up,
                                                  memory_used=int(memory * rng.uniform(0.4, 0.9)),
                                                  cpu_percent=round(rng.uniform(1, 30)), updated_at=now))
            loads.append(used / capacity)
        for start in range(0, len(docs), 5000):
            controller.db.put_many(docs[start:start + 5000])
        vms_s = time.perf_counter() - started
    finally:
        await controller.stop()
    return {"hosts_s": hosts_s, "vms_s": vms_s, "vms": len(docs) // 2,
            "load_min": min(loads), "load_max": max(loads)}


# --- measuring a running controller -----------------------------------------------------------


class StoreTimer:
    """Times the store's writes: each outermost transaction that changed something (what a writer
    waits for: serialise, write, commit, publish to the feed), and UnQLite's commit alone in it.
    Transactions that changed nothing (a put equal to the stored document) are only counted."""

    def __init__(self, store: Any) -> None:
        self.transactions: list[float] = []
        self.commits: list[float] = []
        self.documents = 0
        self.empty = 0
        self.last_commit = 0.0
        original = store.transaction
        timer = self

        @contextlib.contextmanager
        def transaction():
            outer = store._tx_depth == 0
            started = time.perf_counter()
            with original():
                yield store
                written = len(store._tx_changes) if outer else 0
            if outer:
                if written:
                    timer.transactions.append(time.perf_counter() - started)
                    timer.commits.append(timer.last_commit)
                    timer.documents += written
                else:
                    timer.empty += 1

        class TimedDb:
            def __init__(self, db: Any) -> None:
                self._db = db

            def commit(self) -> None:
                started = time.perf_counter()
                self._db.commit()
                timer.last_commit = time.perf_counter() - started

            def __getattr__(self, name: str) -> Any:
                return getattr(self._db, name)

        store.transaction = transaction
        store._db = TimedDb(store._db)
        # The monitoring flush: staged in memory on the loop, committed off it (Store.stage/commit_staged), its
        # change feed published on the loop (apply_committed).
        self.flush_on_loop = 0.0
        self.flush_commits: list[float] = []
        for name in ("stage", "apply_committed"):
            setattr(store, name, self._on_loop(getattr(store, name)))
        commit_staged = store.commit_staged

        def timed_commit(staged: Any) -> int:
            started = time.perf_counter()
            try:
                return commit_staged(staged)
            finally:
                self.flush_commits.append(time.perf_counter() - started)

        store.commit_staged = timed_commit

    def _on_loop(self, fn: Any) -> Any:
        def timed(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self.flush_on_loop += time.perf_counter() - started
        return timed

    def reset(self) -> None:
        self.transactions, self.commits, self.documents, self.empty = [], [], 0, 0
        self.flush_on_loop, self.flush_commits = 0.0, []


class PassTimer:
    """Each re-planning pass: its whole duration (snapshot on the loop, search in a worker thread,
    writing the outcome on the loop) and the part that holds the event loop (snapshot + write)."""

    def __init__(self, replanner: Any) -> None:
        self.durations: list[float] = []
        self.on_loop: list[float] = []
        original = replanner.replan_async

        async def timed():
            started = time.perf_counter()
            try:
                return await original()
            finally:
                self.durations.append(time.perf_counter() - started)

        replanner.replan_async = timed
        self._loop_part(replanner, "_snapshot")
        self._loop_part(replanner, "_write")

    def _loop_part(self, replanner: Any, name: str) -> None:
        original = getattr(replanner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                if name == "_snapshot":
                    self.on_loop.append(elapsed)
                elif self.on_loop:
                    self.on_loop[-1] += elapsed

        setattr(replanner, name, timed)

    def reset(self) -> None:
        self.durations, self.on_loop = [], []


class LoopLag:
    """How late the event loop wakes a 50 ms sleeper: every task waits at least this long."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(0.05)
            self.samples.append(loop.time() - started - 0.05)

    def stop(self) -> None:
        self.task.cancel()


class FeedCounter:
    """A change-feed subscriber counting the changes it receives by kind, and those the re-planner
    treats as reasons to plan again (its own ``relevant`` filter)."""

    def __init__(self, store: Any, replanner: Any) -> None:
        self.relevant = replanner.wants
        self.counts: collections.Counter[str] = collections.Counter()
        self.subscription = store.feed.subscribe()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async for change in self.subscription:
            self.counts[change.kind] += 1
            if self.relevant(change):
                self.counts["relevant:" + change.kind] += 1

    def snapshot(self) -> collections.Counter[str]:
        return collections.Counter(self.counts)


def vmstat_samples(controller: Any) -> int:
    """vmstat lines the simulated hosts' monitors have parsed so far (one per host per second)."""
    simulator = controller.simulator
    return sum(simulator.member(h).monitor.samples for h in simulator.host_ids)


def cpu_seconds() -> float:
    return time.process_time()  # user + system, every thread of this process


async def wait_all_up(controller: Any, timeout: float) -> None:
    simulator = controller.simulator
    await asyncio.gather(*(simulator.wait_up(h, timeout=timeout) for h in simulator.host_ids))


async def failover(controller: Any) -> dict[str, Any]:
    """Power loss on a host with VMs: detection, then the proposal restarting its VMs elsewhere."""
    from kerub_tui.core.models import Host, HostStatus, PlanStatus
    from kerub_tui.sim.fleet import DETECT_SECONDS

    db = controller.db
    hosts = sorted(db.list(Host), key=lambda h: h.name)
    victim = next(h for h in hosts if h.capabilities.cpu.architecture == "x86_64" and db.vms_on_host(h.id))
    vms = db.vms_on_host(victim.id)
    subscription = db.feed.subscribe(["host-dynamic", "plan"])
    result: dict[str, Any] = {"victim": victim.name, "victim_vms": len(vms),
                              "detect_nominal_s": DETECT_SECONDS * controller.sim_timing.scale}
    failed = time.perf_counter()
    controller.simulator.fail_host(victim.id)
    try:
        async with asyncio.timeout(120):
            async for change in subscription:
                now = time.perf_counter() - failed
                if change.kind == "host-dynamic" and change.id == victim.id and change.new is not None:
                    if change.new.status is HostStatus.down and "detected_s" not in result:
                        result["detected_s"] = now
                    continue
                plan = change.new
                if change.kind != "plan" or plan is None or plan.status is not PlanStatus.proposed:
                    continue
                restarted = {s.params.get("vm") for s in plan.steps
                             if s.type == "start-vm" and s.params.get("host") != victim.id}
                result.setdefault("first_proposal_s", now)
                if vms <= restarted:
                    result["proposal_s"] = now
                    result["proposal_steps"] = len(plan.steps)
                    result["proposal_kind"] = plan.plan_kind
                    break
    except TimeoutError:
        result["timed_out"] = True
    finally:
        subscription.close()
    return result


async def console(controller: Any, presses: int) -> dict[str, Any]:
    """The console on the running controller while the fleet streams: first paint, key latency."""
    from kerub_tui.app import KerubApp

    app = KerubApp(controller)
    painter = Painter(app)
    result: dict[str, Any] = {}

    def loaded() -> bool:
        main = app.main
        return bool(main is not None and main.is_mounted and all(
            main.table(p).loaded and main.table(p).row_count == main.table(p).total for p in ("hosts", "vms")))

    started = time.perf_counter()
    # Leaving run_test unmounts the app, which stops the controller: this is the last phase.
    async with app.run_test(size=(200, 60)) as pilot:
        painted = await asyncio.wait_for(painter.when(loaded), timeout=300)
        result["first_paint_s"] = painted - started
        await pilot.pause()
        table = app.main.table("vms")
        table.focus()
        await pilot.pause()
        await asyncio.sleep(0.5)
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        latencies = await key_latencies(app, table, painter, presses)
        result["cpu_percent"] = 100 * (cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
        result["rss_mib"] = rss_kib() / 1024
        result["latency_p50_ms"] = percentile(latencies, 50) * 1000
        result["latency_p95_ms"] = percentile(latencies, 95) * 1000
        result["presses"] = len(latencies)
    return result


async def run(data_dir: Path, hosts: int, window: float, presses: int) -> dict[str, Any]:
    from kerub_tui.controller import Controller
    from kerub_tui.core.models import Plan, PlanStatus
    from kerub_tui.sim import Timing

    out: dict[str, Any] = {"hosts": hosts}
    began = time.perf_counter()
    controller = Controller(data_dir, sim_timing=Timing(scale=1.0, connect=CONNECT_SECONDS, boot=BOOT_SECONDS))
    store = controller.open_store()
    out["store_open_s"] = time.perf_counter() - began
    out["documents"] = sum(1 for _ in store.all_documents())
    writes = StoreTimer(store)
    await controller.start()
    passes = PassTimer(controller.replanner)  # before its task's first step: no await since start
    feed = FeedCounter(store, controller.replanner)
    await wait_all_up(controller, timeout=300)
    out["all_up_s"] = time.perf_counter() - began
    # Settle: the first domain statistics (2 s) and state reports (5 s), then the re-planner idle.
    await asyncio.sleep(6.0)
    await asyncio.wait_for(controller.replanner.wait_idle(), timeout=120)
    out["settled_s"] = time.perf_counter() - began
    proposed = [p for p in controller.db.list(Plan) if p.status is PlanStatus.proposed]
    out["proposed_after_settle"] = len(proposed)
    out["proposed_kinds"] = sorted({p.plan_kind for p in proposed})
    out["startup_passes"] = controller.replanner.passes

    # The steady window.
    lag = LoopLag()
    writes.reset()
    passes.reset()
    counts0, passes0, samples0 = feed.snapshot(), controller.replanner.passes, vmstat_samples(controller)
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    await asyncio.sleep(window)
    elapsed = time.perf_counter() - wall0
    out["cpu_percent"] = 100 * (cpu_seconds() - cpu0) / elapsed
    out["rss_mib"] = rss_kib() / 1024
    counted = feed.snapshot() - counts0
    changes = collections.Counter({k: v for k, v in counted.items() if not k.startswith("relevant:")})
    relevant = collections.Counter({k.removeprefix("relevant:"): v for k, v in counted.items()
                                    if k.startswith("relevant:")})
    out["window_s"] = elapsed
    out["vmstat_per_s"] = (vmstat_samples(controller) - samples0) / elapsed
    out["changes_per_s"] = sum(changes.values()) / elapsed
    out["changes_by_kind"] = {k: v / elapsed for k, v in sorted(changes.items())}
    out["relevant_per_s"] = sum(relevant.values()) / elapsed
    out["relevant_by_kind"] = {k: v / elapsed for k, v in sorted(relevant.items())}
    out["host_dynamic_per_s"] = changes["host-dynamic"] / elapsed
    out["vm_dynamic_per_s"] = changes["vm-dynamic"] / elapsed
    out["tx_per_s"] = len(writes.transactions) / elapsed
    out["docs_per_tx"] = writes.documents / max(1, len(writes.transactions))
    out["empty_tx"] = writes.empty
    # Transactions on the loop (the monitoring flush commits off it, below): there may be none in the window.
    out["tx_p50_ms"] = percentile(writes.transactions, 50) * 1000 if writes.transactions else 0.0
    out["tx_p99_ms"] = percentile(writes.transactions, 99) * 1000 if writes.transactions else 0.0
    out["commit_p50_ms"] = percentile(writes.commits, 50) * 1000 if writes.commits else 0.0
    out["commit_p99_ms"] = percentile(writes.commits, 99) * 1000 if writes.commits else 0.0
    out["flush_on_loop_ms_per_s"] = writes.flush_on_loop / elapsed * 1000
    out["flush_commit_p50_ms"] = percentile(writes.flush_commits, 50) * 1000 if writes.flush_commits else 0.0
    out["flush_commit_p99_ms"] = percentile(writes.flush_commits, 99) * 1000 if writes.flush_commits else 0.0
    out["lag_p50_ms"] = percentile(lag.samples, 50) * 1000
    out["lag_p99_ms"] = percentile(lag.samples, 99) * 1000
    lag.stop()
    out["replan_passes"] = controller.replanner.passes - passes0
    out["replan_pass_p50_s"] = percentile(passes.durations, 50) if passes.durations else 0.0
    out["replan_pass_max_s"] = max(passes.durations, default=0.0)
    out["replan_busy_percent"] = 100 * sum(passes.durations) / elapsed
    out["replan_loop_p50_ms"] = percentile(passes.on_loop, 50) * 1000 if passes.on_loop else 0.0
    out["replan_loop_max_ms"] = max(passes.on_loop, default=0.0) * 1000
    out["replan_loop_percent"] = 100 * sum(passes.on_loop) / elapsed

    out["failover"] = await failover(controller)
    out["console"] = await console(controller, presses)
    out["total_s"] = time.perf_counter() - began
    return out


# --- the report -------------------------------------------------------------------------------


def print_size(n: int, built: dict[str, Any], r: dict[str, Any]) -> None:
    p = f"fleet_{n}"
    kinds = ", ".join(f"{k} {v:.0f}" for k, v in r["changes_by_kind"].items())
    relevant = ", ".join(f"{k} {v:.0f}" for k, v in r["relevant_by_kind"].items())
    f, c = r["failover"], r["console"]
    lines = [
        f"{p}_build: {built['hosts_s']:.1f} s hosts + {built['vms_s']:.1f} s VMs ({n} hosts through the controller, "
        f"{built['vms']} VMs as documents, memory load {100 * built['load_min']:.0f}..{100 * built['load_max']:.0f} %)",
        f"{p}_store_open: {r['store_open_s']:.2f} s ({r['documents']} documents)",
        f"{p}_all_hosts_up: {r['all_up_s']:.1f} s (controller start until every host up)",
        f"{p}_settled: {r['settled_s']:.1f} s ({r['startup_passes']} re-plan passes so far)",
        f"{p}_proposed_after_settle: {r['proposed_after_settle']} plans"
        + (f" ({', '.join(r['proposed_kinds'])})" if r["proposed_kinds"] else " (the planner has nothing to do)"),
        f"{p}_events: {r['changes_per_s']:.0f} changes/s sustained over {r['window_s']:.0f} s ({kinds})",
        f"{p}_host_dynamic_events: {r['host_dynamic_per_s']:.0f} changes/s "
        f"({r['host_dynamic_per_s'] / n:.2f} per host per s from {r['vmstat_per_s'] / n:.2f} vmstat lines "
        "per host per s: an unchanged HostDynamic is not written)",
        f"{p}_replan_relevant_events: {r['relevant_per_s']:.0f} changes/s ({relevant or 'none'}; "
        "the changes the re-planner's filter lets through)",
        f"{p}_cpu: {r['cpu_percent']:.0f} % (controller process CPU time / wall time, all threads)",
        f"{p}_rss: {r['rss_mib']:.0f} MiB",
        f"{p}_store_write_p50: {r['tx_p50_ms']:.2f} ms (outermost Store.transaction that wrote: serialise, write, "
        f"commit, publish; {r['tx_per_s']:.1f} tx/s, {r['docs_per_tx']:.0f} docs/tx, {r['empty_tx']} no-op tx)",
        f"{p}_store_write_p99: {r['tx_p99_ms']:.2f} ms",
        f"{p}_store_commit_p50: {r['commit_p50_ms']:.2f} ms (UnQLite commit alone, of the same transactions)",
        f"{p}_store_commit_p99: {r['commit_p99_ms']:.2f} ms",
        f"{p}_monitoring_flush_on_loop: {r['flush_on_loop_ms_per_s']:.1f} ms per second (staging in memory and "
        f"publishing; serialised and committed off the loop: p50 {r['flush_commit_p50_ms']:.1f} ms, "
        f"p99 {r['flush_commit_p99_ms']:.1f} ms)",
        f"{p}_loop_lag_p50: {r['lag_p50_ms']:.1f} ms (how late a 50 ms sleeper wakes)",
        f"{p}_loop_lag_p99: {r['lag_p99_ms']:.1f} ms",
        f"{p}_replan_passes: {r['replan_passes']} in the window (pass p50 {r['replan_pass_p50_s']:.2f} s, "
        f"max {r['replan_pass_max_s']:.2f} s; passes running {r['replan_busy_percent']:.0f} % of the window)",
        f"{p}_replan_on_loop_p50: {r['replan_loop_p50_ms']:.0f} ms per pass (snapshot + writing the outcome, "
        f"on the event loop; max {r['replan_loop_max_ms']:.0f} ms, {r['replan_loop_percent']:.0f} % of the window)",
    ]
    if f.get("timed_out") and "proposal_s" not in f:
        lines.append(f"{p}_failover_to_proposal: none within 120 s ({f['victim']}, {f['victim_vms']} VMs)")
    else:
        lines += [
            f"{p}_failover_to_proposal: {f['proposal_s']:.2f} s ({f['victim']} loses power with {f['victim_vms']} VMs "
            f"until a proposed {f['proposal_kind']} plan restarts them all elsewhere, {f['proposal_steps']} steps)",
            f"{p}_failover_detection: {f['detect_nominal_s']:.2f} s simulated keepalive delay "
            f"(DETECT_SECONDS x scale); host down in the store after {f.get('detected_s', float('nan')):.2f} s",
            f"{p}_failover_planner: {f['proposal_s'] - f.get('detected_s', f['detect_nominal_s']):.2f} s "
            "(from host down in the store to the proposal: debounce, search, write)",
        ]
    lines += [
        f"{p}_console_first_paint: {c['first_paint_s']:.2f} s (every host and VM row loaded, fleet streaming)",
        f"{p}_console_key_latency_p50: {c['latency_p50_ms']:.1f} ms ({c['presses']} presses, fleet streaming)",
        f"{p}_console_key_latency_p95: {c['latency_p95_ms']:.1f} ms",
        f"{p}_console_cpu: {c['cpu_percent']:.0f} % (while keys are pressed)",
        f"{p}_console_rss: {c['rss_mib']:.0f} MiB",
    ]
    for line in lines:
        print(line, flush=True)


def print_ratios(small: int, large: int, a: dict[str, Any], b: dict[str, Any]) -> None:
    def ratio(x: float, y: float) -> str:
        if not y:
            return "n/a (both zero)" if not x else f"n/a (from zero to {x:g})"
        return f"{x / y:.2f} x"

    scale = large / small
    figures = [
        ("events", b["changes_per_s"], a["changes_per_s"]),
        ("cpu", b["cpu_percent"], a["cpu_percent"]),
        ("rss", b["rss_mib"], a["rss_mib"]),
        ("store_write_p50", b["tx_p50_ms"], a["tx_p50_ms"]),
        ("store_write_p99", b["tx_p99_ms"], a["tx_p99_ms"]),
        ("loop_lag_p99", b["lag_p99_ms"], a["lag_p99_ms"]),
        ("replan_passes", b["replan_passes"] / b["window_s"], a["replan_passes"] / a["window_s"]),
        ("replan_pass_p50", b["replan_pass_p50_s"], a["replan_pass_p50_s"]),
        ("replan_on_loop_p50", b["replan_loop_p50_ms"], a["replan_loop_p50_ms"]),
        ("console_first_paint", b["console"]["first_paint_s"], a["console"]["first_paint_s"]),
        ("console_key_latency_p50", b["console"]["latency_p50_ms"], a["console"]["latency_p50_ms"]),
        ("console_key_latency_p95", b["console"]["latency_p95_ms"], a["console"]["latency_p95_ms"]),
    ]
    if "proposal_s" in a["failover"] and "proposal_s" in b["failover"]:
        figures.append(("failover_to_proposal", b["failover"]["proposal_s"], a["failover"]["proposal_s"]))
    for name, big, little in figures:
        print(f"ratio_{name}: {ratio(big, little)} ({large} vs {small} hosts; hosts x{scale:.0f})")
    for n, r in ((small, a), (large, b)):
        print(f"fleet_{n}_cpu_per_100_hosts: {r['cpu_percent'] / n * 100:.1f} %")
        print(f"fleet_{n}_rss_per_host: {r['rss_mib'] * 1024 / n:.0f} KiB (whole RSS / hosts)")
    marginal = (b["rss_mib"] - a["rss_mib"]) * 1024 / (large - small)
    print(f"fleet_rss_marginal_per_host: {marginal:.0f} KiB (RSS growth from {small} to {large} hosts, "
          f"per added host with its {VMS_PER_HOST} VMs)")


# --- processes --------------------------------------------------------------------------------


def child(args: argparse.Namespace) -> None:
    result = asyncio.run(run(Path(args.data_dir), args.child, args.window, args.presses))
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000", help="host counts, comma separated")
    parser.add_argument("--window", type=float, default=None,
                        help="steady window in seconds (default 20 at 100 hosts, 30 above)")
    parser.add_argument("--presses", type=int, default=100)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    results: dict[int, dict[str, Any]] = {}
    for n in sizes:
        window = args.window if args.window is not None else default_window(n)
        with tempfile.TemporaryDirectory(prefix=f"kerub-bench-fleet-{n}-") as tmp:
            data = Path(tmp) / "data"
            env = dict(os.environ, KERUB_TUI_CONFIG=str(Path(tmp) / "config"), KERUB_TUI_DATA=str(data))
            built = asyncio.run(build(data, n))
            out = subprocess.run([sys.executable, __file__, "--child", str(n), "--data-dir", str(data),
                                  "--window", str(window), "--presses", str(args.presses)],
                                 env=env, capture_output=True, text=True, timeout=900)
            if out.returncode != 0:
                sys.stderr.write(out.stderr)
                raise SystemExit(f"bench/fleet.py: the {n}-host run failed")
            results[n] = json.loads(out.stdout.strip().splitlines()[-1])
            print_size(n, built, results[n])
    if len(sizes) >= 2:
        small, large = min(sizes), max(sizes)
        print_ratios(small, large, results[small], results[large])


if __name__ == "__main__":
    main()
