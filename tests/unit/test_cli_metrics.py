"""`kerub-tui metrics HOST|VM` (issue 15 item 4): a simulated host's monitoring recorded by the controller's
writer, read back by the command line (through the typed API), gaps as null, bad input one line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

import pytest

from kerub_tui.cli_args import METRIC_RANGES
from kerub_tui.controller import Controller
from kerub_tui.core.metrics import RANGES
from kerub_tui.core.models import HostDynamic
from kerub_tui.sim import Timing
from tests import cliproc
from tests.sim._support import CEILING, until


def kerub(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return cliproc.kerub(argv, env=env, timeout=120)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    data = tmp_path_factory.mktemp("metrics") / "data"

    async def monitored() -> None:
        controller = Controller(data, sim_timing=Timing(scale=0))
        await controller.start()
        try:
            host = await controller.add_simulated_host("kvm01", "mini")
            await controller.hosts.wait_up(host.id, timeout=CEILING)

            def busy() -> bool:
                dyn = controller.db.get(HostDynamic, host.id)
                return dyn is not None and dyn.cpu_idle is not None and dyn.memory_used is not None

            await until(busy, "the host's CPU and memory monitored")
        finally:
            await controller.stop()  # the writer's close writes the minute in progress

    asyncio.run(monitored())
    return dict(os.environ, KERUB_TUI_DATA=str(data), PYTHONUNBUFFERED="1")


def test_the_ranges_the_parser_offers_are_the_history_s() -> None:
    assert tuple(RANGES) == METRIC_RANGES


def test_a_monitored_host_s_last_minutes(env: dict[str, str]) -> None:
    shown = kerub("metrics", "kvm01", "--range", "1h", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    series = json.loads(shown.stdout)
    assert series["name"] == "kvm01" and series["step_seconds"] == 60 and len(series["points"]) == 60
    known = [p for p in series["points"] if p["cpu"] is not None]
    assert known, series["points"][-3:]
    assert all(0 <= p["cpu"] <= p["cpu_max"] <= 100 and p["memory"] > 0 for p in known)
    assert series["points"][0]["cpu"] is None  # an hour ago nothing was monitored: a gap, not a zero
    table = kerub("metrics", "kvm01", "--host", env=env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["TIME", "(UTC)", "CPU", "%", "CPU", "MAX", "%", "MEMORY", "MEMORY", "MAX"]
    assert len(lines) == 1 + 1440 and lines[1].split()[2:] == ["-", "-", "-", "-"]


@pytest.mark.parametrize(("argv", "said"), [
    (("metrics", "nobody"), "no host or VM named 'nobody'"),
    (("metrics", "kvm01", "--vm"), "no VM named 'kvm01'"),
    (("metrics", "kvm01;rm -rf /"), "no host or VM named 'kvm01;rm -rf /'"),
])
def test_bad_names_are_one_line(env: dict[str, str], argv: tuple[str, ...], said: str) -> None:
    shown = kerub(*argv, env=env)
    assert shown.returncode != 0 and shown.stdout == ""
    assert shown.stderr.strip() == f"kerub-tui: {said}", shown.stderr
    assert len(shown.stderr.strip().splitlines()) == 1


def test_an_unknown_range_is_a_usage_error(env: dict[str, str]) -> None:
    shown = kerub("metrics", "kvm01", "--range", "2w", env=env)
    assert shown.returncode != 0 and len(shown.stderr.splitlines()) == 1 and "invalid choice: '2w'" in shown.stderr
