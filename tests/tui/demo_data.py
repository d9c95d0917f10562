"""The demo's seeded data dir for tests: seeded once per test session at timing scale 0 (a few
seconds), then copied for each test, which may change its copy as it likes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
from pathlib import Path

from kerub_tui.controller import Controller
from kerub_tui.sim import Timing
from kerub_tui.sim.demo import SIM_SEED, seed

INSTANT = {"scale": 0.0, "connect": 0.0, "boot": 0.0}

_seeded: Path | None = None


def demo_controller(data_dir: Path) -> Controller:
    """A controller on a demo dir whose simulated hosts work at once (monitoring still ticks each second)."""
    return Controller(data_dir, sim_timing=Timing(**INSTANT), sim_seed=SIM_SEED)


async def seed_dir(data_dir: Path) -> None:
    controller = demo_controller(data_dir)
    await controller.start()
    try:
        assert await seed(controller)
    finally:
        await controller.stop()


def seeded_copy(tmp_path_factory, into: Path) -> Path:
    """A copy of the session's seeded demo dir at ``into`` (seeded on first use)."""
    global _seeded
    if _seeded is None:
        template = tmp_path_factory.mktemp("demo-template") / "data"
        # In a thread of its own: the caller may be a coroutine, with its loop running.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, seed_dir(template)).result()
        _seeded = template
    shutil.copytree(_seeded, into)
    return into
