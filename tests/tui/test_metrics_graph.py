"""The metrics history's graphs in the host and VM detail screens (issue 15 item 4): read through the
console API, the range on a key (m), gaps drawn as gaps, a damaged file one line and never a crash."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from rich.text import Text

from kerub_tui.core.metrics import METRICS_FILE, Metrics, Recorder
from kerub_tui.screens.graph import MetricsPanel, bar_rows, buckets
from kerub_tui.screens.hosts import HostDetailScreen
from kerub_tui.screens.vms import VmDetailScreen

from .fleet_data import H1, WEB1
from .helpers import running, settle


def record(data_dir, kind: str, key: str, minutes: int = 30) -> None:
    """``minutes`` of samples up to now (CPU 10..40 %), then ten minutes down: a gap at the end."""
    now = time.time()
    start = now - (minutes + 10) * 60
    recorder = Recorder(data_dir)
    for minute in range(minutes):
        at = start + minute * 60
        recorder.observe([(kind, key, at, (10.0 + minute, 2.0**30))], at)
    recorder.observe([(kind, key, start + minutes * 60, None)], now)
    recorder.close(now)


def panel_text(screen) -> str:
    panel = screen.query_one(MetricsPanel)
    rendered = panel.render()
    return rendered.plain if isinstance(rendered, Text) else str(rendered)


async def test_the_host_detail_graphs_its_history_and_m_changes_the_range(tmp_path):
    async with running(tmp_path, (120, 50)) as (controller, app, pilot):
        record(controller.db.data_dir, "host", H1)
        app.push_screen(HostDetailScreen(H1))
        await settle(app, pilot)
        screen = app.screen
        panel = screen.query_one(MetricsPanel)
        assert panel.range_name == "1h" and panel.border_title == "History, 1h"
        shown = panel_text(screen)
        assert "CPU %  average" in shown and "maximum 39.0" in shown and "Memory used" in shown
        assert "·" in shown  # the minutes it was down (and before it was monitored) are gaps
        for expected in ("1d", "7d", "30d", "1y", "1h"):
            await pilot.press("m")
            await pilot.pause()
            assert panel.range_name == expected and panel.border_title == f"History, {expected}"
        await pilot.press("m")
        await pilot.pause()
        assert "CPU %  average" in panel_text(screen)  # a day of minutes shared out over the width


async def test_the_vm_detail_graphs_its_history(tmp_path):
    async with running(tmp_path, (120, 50)) as (controller, app, pilot):
        record(controller.db.data_dir, "vm", WEB1)
        app.push_screen(VmDetailScreen(WEB1))
        await settle(app, pilot)
        assert "CPU %  average" in panel_text(app.screen)
        await pilot.press("m")
        await pilot.pause()
        assert app.screen.query_one(MetricsPanel).range_name == "1d"


async def test_nothing_recorded_and_hostile_rows_are_gaps_and_a_damaged_file_is_one_line(tmp_path):
    async with running(tmp_path, (120, 50)) as (controller, app, pilot):
        data_dir = controller.db.data_dir
        app.push_screen(HostDetailScreen(H1))
        await settle(app, pilot)
        assert "CPU %: nothing recorded in this range" in panel_text(app.screen)
        record(data_dir, "host", H1)
        db = sqlite3.connect(data_dir / METRICS_FILE)  # rows no version wrote: the wrong length
        db.execute("UPDATE minute SET data = x'00ff'")
        db.commit()
        db.close()
        await pilot.press("m", "m", "m", "m", "m")  # round to 1h again: read afresh
        await pilot.pause()
        assert "CPU %: nothing recorded in this range" in panel_text(app.screen)
        (data_dir / METRICS_FILE).write_bytes(b"not a database, " * 512)
        for suffix in ("-wal", "-shm"):
            (data_dir / (METRICS_FILE + suffix)).unlink(missing_ok=True)
        await pilot.press("m")
        await pilot.pause()
        shown = panel_text(app.screen)
        assert shown.startswith("cannot read") and len(shown.splitlines()) == 1
        assert app.screen.is_current  # still there


def test_columns_share_the_points_and_gaps_stay_gaps() -> None:
    with Metrics(Path("/nonexistent-kerub")) as metrics:
        series = metrics.read("host", "x", "1h")
    assert buckets(series.points, 30, "cpu") == [None] * 30
    # a gap, a zero (the lowest bar: not a gap), half of the top (12 of 24 eighths), the top
    rows = bar_rows([None, (0.0, 0.0), (50.0, 60.0), (100.0, 100.0)], 100.0)
    assert [r.plain for r in rows] == ["   █", "  ▄█", "·▁██"]
