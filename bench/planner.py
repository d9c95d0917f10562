"""Planner benchmark: time to plan one VM start and 100 pending VMs at 10, 100, 1,000 and 5,000 hosts
(10 VMs per host on average: 50k VMs at 5,000), and on the same placement instances plan quality and
time against an exact solver, OR-Tools CP-SAT (hosts used, violations left; for one VM start, its time).

Prints ``name: value unit`` lines, ``ratio vs cp-sat: x`` lines, and ``growth`` lines: how each figure,
the planner's and the peer's, grows from 100 to 1,000 to 5,000 hosts. Times are the best of several runs,
as timeit takes them on a shared machine: of 5 for one VM start (CP-SAT's of 3), of 3 for 100 pending VMs
(CP-SAT's there once: it runs to its time limit); the planner's CPU seconds too (``cpu``: it runs on one
thread, so that is its time where a core is free, whatever else the machine runs). Run:
.venv/bin/python bench/planner.py
The instances are generated from a fixed seed; the planner runs with power saving on (pack hosts),
which is the objective CP-SAT minimises (hosts in use), with every constraint the planner has:
memory, vCPUs per host, cpu-flags dealbreakers and not-same-host pairs.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kerub_tui.core.expectations import parse_spec
from kerub_tui.core.models import (
    CpuInfo,
    Document,
    Host,
    HostCapabilities,
    HostConfiguration,
    HostDynamic,
    HostStatus,
    HypervisorInfo,
    Settings,
    StorageCapability,
    StorageTechnology,
    VirtualMachine,
    VirtualMachineDynamic,
    VmStatus,
)
from kerub_tui.planner.checkers import capacity_rejection, placement_rejections
from kerub_tui.planner.search import Evaluation, search
from kerub_tui.planner.state import OperationalState, host_memory_reserve

GIB = 1 << 30
SEED = 20250601


@dataclass
class Instance:
    hosts: int
    pending: int
    docs: list[Document]
    pending_ids: list[str]


def make_instance(hosts: int, pending: int, *, seed: int = SEED, per_host: int = 10) -> Instance:
    """``hosts`` hosts of 64 GiB and 32 CPUs, 10 running VMs per host on average but unevenly spread
    (a fifth of the hosts empty), and ``pending`` VMs to start with a few constraints."""
    rng = random.Random(seed * 7919 + hosts * 31 + pending)
    docs: list[Document] = []
    host_ids = []
    for i in range(hosts):
        hid = f"host-{i:04d}"
        host_ids.append(hid)
        flags = ["sse4_2", "vmx"] + (["avx512f"] if i % 4 == 0 else [])
        caps = HostCapabilities(
            cpu=CpuInfo(architecture="x86_64", cpus=32, flags=flags, max_mhz=3000.0),
            memory_bytes=64 * GIB,
            storage=[StorageCapability(id="lvm:vg0", technology=StorageTechnology.lvm, name="vg0",
                                       size_bytes=2000 * GIB, free_bytes=2000 * GIB)],
            hypervisor=HypervisorInfo(kvm=True, domain_types=["kvm"], guest_arches=["x86_64"]),
        )
        docs += [
            Host(id=hid, name=f"h{i:04d}", address=f"10.{i // 250}.{i % 250}.1", dedicated=True, capabilities=caps),
            HostDynamic(id=hid, status=HostStatus.up),
            HostConfiguration(id=hid),
        ]
    # 10 VMs per host on average: a fifth of the hosts empty, the others share the load unevenly
    busy = [h for h in host_ids if rng.random() > 0.2] or host_ids[:1]
    running = per_host * hosts
    loads = {h: 0 for h in host_ids}
    for n in range(running):
        hid = rng.choice(busy)
        memory = rng.choice([1, 1, 2, 2, 2, 4]) * GIB
        capacity = 64 * GIB - host_memory_reserve(64 * GIB)
        if loads[hid] + memory > capacity * 0.85:
            continue
        loads[hid] += memory
        vid = f"vm-run{n:05d}"
        docs += [VirtualMachine(id=vid, name=f"run{n:05d}", cpus=rng.choice([1, 2]), memory_min=memory,
                                memory_max=memory,
                                expectations=[parse_spec("availability:up@dealbreaker", "vm")]),
                 VirtualMachineDynamic(id=vid, host_id=hid, status=VmStatus.up)]
    pending_ids = []
    for k in range(pending):
        vid = f"vm-new{k:04d}"
        specs = ["availability:up@dealbreaker"]
        if k % 10 == 3:
            specs.append("cpu-flags:avx512f@dealbreaker")
        if k % 10 == 7 and k > 0:
            specs.append(f"not-same-host:vm-new{k - 1:04d}@dealbreaker")
        memory = rng.choice([2, 4, 8, 16]) * GIB
        docs.append(VirtualMachine(id=vid, name=f"new{k:04d}", cpus=rng.choice([1, 2, 4]), memory_min=memory,
                                   memory_max=memory, expectations=[parse_spec(s, "vm") for s in specs]))
        pending_ids.append(vid)
    return Instance(hosts, pending, docs, pending_ids)


def state_of(instance: Instance, *, power_saving: bool) -> OperationalState:
    settings = Settings().evolve(optimisation={"power_saving": power_saving})
    return OperationalState.from_documents(instance.docs, settings=settings)


@dataclass
class Outcome:
    seconds: float
    hosts_used: int
    violations: int
    placed: dict[str, str]
    cpu: float = 0.0  # the planner's CPU seconds (one thread): its time on a machine with a core to spare


def run_planner(instance: Instance, *, power_saving: bool, runs: int = 1) -> Outcome:
    """The planner's plan for the instance, timed: the best of ``runs`` searches, each on a snapshot of its
    own (the least disturbed by other work on a shared machine, as timeit takes)."""
    seconds = cpu = float("inf")
    for _ in range(runs):
        state = state_of(instance, power_saving=power_saving)
        t0, c0 = time.perf_counter(), time.process_time()
        result = search(state, max_nodes=20000, max_seconds=600)
        seconds = min(seconds, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    final = result.final
    placed = {v: final.vm_host(v) for v in instance.pending_ids if final.vm_host(v)}
    hosts_used = sum(1 for h in final.host_ids() if final.vms_on(h))
    violations = Evaluation.full(final).hard
    return Outcome(seconds, hosts_used, violations, placed, cpu)


def run_cpsat(instance: Instance, *, time_limit: float) -> Outcome | None:
    try:
        from ortools.sat.python import cp_model
    except ImportError:
        return None
    state = state_of(instance, power_saving=True)
    t0 = time.perf_counter()
    model = cp_model.CpModel()
    hosts = list(state.host_ids())
    x: dict[tuple[str, str], object] = {}
    unplaced = {}
    for v in instance.pending_ids:
        vm = state.vms[v]
        for h in hosts:
            # the same hard facts the planner uses: capacity today, and the VM's own dealbreakers
            if capacity_rejection(state, vm, h) is None and not any(
                    r.hard for r in placement_rejections(state, vm, h, capacity=False)):
                x[v, h] = model.NewBoolVar(f"x_{v}_{h}")
        unplaced[v] = model.NewBoolVar(f"u_{v}")
        model.AddExactlyOne([x[v, h] for h in hosts if (v, h) in x] + [unplaced[v]])
    used = {}
    for h in hosts:
        here = [x[v, h] for v in instance.pending_ids if (v, h) in x]
        mem = [state.vms[v].memory_max * x[v, h] for v in instance.pending_ids if (v, h) in x]
        cpu = [state.vms[v].cpus * x[v, h] for v in instance.pending_ids if (v, h) in x]
        if here:
            model.Add(sum(mem) <= state.free_memory(h))
            model.Add(sum(cpu) <= max(state.free_cores(h), 0) + 10_000)  # vCPUs may be overcommitted
        if state.vms_on(h):
            used[h] = 1
        else:
            used[h] = model.NewBoolVar(f"used_{h}")
            for var in here:
                model.AddImplication(var, used[h])
    for v in instance.pending_ids:
        for exp in state.vms[v].expectations:
            if exp.type == "not-same-host":
                for other in exp.vms:
                    for h in hosts:
                        if (v, h) in x and (other, h) in x:
                            model.AddBoolOr([x[v, h].Not(), x[other, h].Not()])
    big = len(hosts) + 1
    model.Minimize(sum(u for u in used.values() if not isinstance(u, int)) + big * sum(unplaced.values()))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit
    solver.parameters.num_workers = 2
    solver.parameters.random_seed = 1
    status = solver.Solve(model)
    seconds = time.perf_counter() - t0
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return Outcome(seconds, -1, -1, {})
    placed = {v: h for (v, h), var in x.items() if solver.Value(var)}
    hosts_used = sum(1 for h, u in used.items() if (u if isinstance(u, int) else solver.Value(u)))
    violations = sum(solver.Value(u) for u in unplaced.values())
    return Outcome(seconds, hosts_used, violations, placed)


def _peer_line(label: str, exact: Outcome | None, time_limit: float) -> None:
    if exact is None:
        print("cp-sat: not installed (pip install ortools) 0 runs")
        return
    print(f"cp-sat time, {label}: {exact.seconds:.3f} s")
    if exact.hosts_used < 0:
        print(f"cp-sat hosts used, {label}: no solution within {time_limit:.0f} s")
        print(f"cp-sat violations left, {label}: no solution within {time_limit:.0f} s")
        return
    print(f"cp-sat hosts used, {label}: {exact.hosts_used} hosts")
    print(f"cp-sat violations left, {label}: {exact.violations} violations")


def _growth(figures: dict[str, dict[int, float]]) -> None:
    """How each figure grows with the fleet, planner and peer side by side (100 -> 1,000 -> 5,000 hosts)."""
    for name, by_hosts in figures.items():
        sizes = sorted(h for h in by_hosts if h >= 100)
        for small, big in itertools.pairwise(sizes):
            ratio = by_hosts[big] / max(by_hosts[small], 1e-9)
            print(f"growth, {name}, {small:,} to {big:,} hosts ({big // small}x the fleet): {ratio:.2f} x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="*", default=[10, 100, 1000, 5000])
    parser.add_argument("--cp-sat-seconds", type=float, default=30.0)
    args = parser.parse_args()
    limit = args.cp_sat_seconds
    figures: dict[str, dict[int, float]] = {}

    def record(name: str, hosts: int, seconds: float) -> None:
        figures.setdefault(name, {})[hosts] = seconds

    for hosts in args.hosts:
        single = make_instance(hosts, 1)
        t0 = time.perf_counter()
        state = state_of(single, power_saving=False)
        build = time.perf_counter() - t0
        print(f"snapshot {hosts} hosts ({len(state.vms)} VMs): {build:.3f} s", flush=True)
        record("snapshot", hosts, build)
        one = run_planner(single, power_saving=False, runs=5)
        print(f"plan one VM start, {hosts} hosts: {one.seconds:.3f} s", flush=True)
        print(f"plan one VM start, {hosts} hosts (cpu): {one.cpu:.3f} s")
        record("plan one VM start", hosts, one.seconds)
        exact_one = min((run_cpsat(single, time_limit=limit) for _ in range(3)),
                        key=lambda o: o.seconds if o is not None else 0.0)
        if exact_one is not None:
            print(f"cp-sat time, one VM start, {hosts} hosts: {exact_one.seconds:.3f} s")
            print(f"ratio vs cp-sat: {one.seconds / max(exact_one.seconds, 1e-9):.3f} x (time, one VM start, "
                  f"{hosts} hosts)", flush=True)
            record("cp-sat one VM start", hosts, exact_one.seconds)
        for pending in (100,):
            instance = make_instance(hosts, pending)
            spread = run_planner(instance, power_saving=False, runs=3)
            print(f"plan {pending} pending VMs, {hosts} hosts (spread): {spread.seconds:.3f} s", flush=True)
            print(f"plan {pending} pending VMs, {hosts} hosts (spread, cpu): {spread.cpu:.3f} s")
            record(f"plan {pending} pending VMs (spread)", hosts, spread.seconds)
            packed = run_planner(instance, power_saving=True, runs=3)
            label = f"{pending} pending VMs, {hosts} hosts"
            print(f"plan {label} (pack): {packed.seconds:.3f} s", flush=True)
            print(f"plan {label} (pack, cpu): {packed.cpu:.3f} s")
            record(f"plan {pending} pending VMs (pack)", hosts, packed.seconds)
            print(f"planner hosts used, {label}: {packed.hosts_used} hosts")
            print(f"planner violations left, {label}: {packed.violations} violations")
            exact = run_cpsat(instance, time_limit=limit)
            _peer_line(label, exact, limit)
            if exact is None:
                continue
            record(f"cp-sat {pending} pending VMs", hosts, exact.seconds)
            if exact.hosts_used > 0:
                print(f"ratio vs cp-sat: {packed.hosts_used / exact.hosts_used:.3f} x (hosts used, {label})")
                print(f"planner violations left minus cp-sat's, {label}: {packed.violations - exact.violations} "
                      "violations")
            print(f"ratio vs cp-sat: {packed.seconds / max(exact.seconds, 1e-9):.3f} x (time, {label})", flush=True)
    # Where packing matters: 100 VMs onto 100 empty hosts (the 10-per-host instances keep every busy
    # host busy, so "hosts used" there only shows that neither opens an empty host needlessly).
    if 100 in args.hosts:
        instance = make_instance(100, 100, per_host=0)
        label = "100 VMs onto 100 empty hosts"
        packed = run_planner(instance, power_saving=True)
        print(f"plan {label} (pack): {packed.seconds:.3f} s")
        print(f"planner hosts used, {label}: {packed.hosts_used} hosts")
        print(f"planner violations left, {label}: {packed.violations} violations")
        exact = run_cpsat(instance, time_limit=limit)
        if exact is not None and exact.hosts_used > 0:
            _peer_line(label, exact, limit)
            print(f"ratio vs cp-sat: {packed.hosts_used / exact.hosts_used:.3f} x (hosts used, {label})")
            print(f"ratio vs cp-sat: {packed.seconds / max(exact.seconds, 1e-9):.3f} x (time, {label})", flush=True)
    _growth(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
