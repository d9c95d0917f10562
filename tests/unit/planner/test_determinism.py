"""Same input, same plan: across runs in one process and across processes with other hash seeds."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from kerub_tui.planner.planning import plan_all

from .fleet import GIB, Fleet

ROOT = Path(__file__).resolve().parents[3]


def busy_fleet() -> Fleet:
    """Enough choice that an order-dependent planner would show it: equal hosts, ties everywhere."""
    f = Fleet()
    for i in range(12):
        f.host(f"h{i:02d}", memory=32 * GIB, cpus=16, dedicated=True, recycling=(i == 3),
               flags=("vmx",) if i % 3 else ("svm",))
    n = 0
    for i in range(12):
        for _ in range(i % 4):
            n += 1
            f.vm(f"run{n}", memory=2 * GIB, on=f"h{i:02d}", expect=["availability:up@dealbreaker"])
    for k in range(10):
        f.disk(f"d{k}", size=GIB)
        expect = ["availability:up@dealbreaker", "cpu-flags:vmx@want"]
        if k % 2:
            expect.append(f"not-same-host:new{k - 1}@dealbreaker")
        f.vm(f"new{k}", memory=(1 + k % 3) * GIB, disks=[f"d{k}"], expect=expect)
    return f


def fingerprint() -> str:
    drafts = plan_all(busy_fleet().state(power_saving=True))
    plans = []
    for draft in drafts:
        plan = draft.to_plan().model_dump(mode="json", exclude={"id", "created_at"})
        plans.append(plan)
    return hashlib.sha256(json.dumps(plans, sort_keys=True).encode()).hexdigest()


def test_same_plan_twice_in_one_process() -> None:
    first = plan_all(busy_fleet().state())
    second = plan_all(busy_fleet().state())
    assert [d.signature() for d in first] == [d.signature() for d in second]
    assert first and sum(len(d.steps) for d in first) > 10  # proposed apart by purpose (issue 13 item 6)


def test_same_plan_with_other_hash_seeds() -> None:
    here = fingerprint()
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", "from tests.unit.planner.test_determinism import fingerprint; print(fingerprint())"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=120,
        )
        assert out.stdout.strip() == here
