"""The metrics history (core/metrics.py): consolidation against a plain recomputation, the rings' bounds,
gaps, hostile values, and a writer killed mid-stream losing no committed minute."""

from __future__ import annotations

import datetime as dt
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kerub_tui.core.metrics import (
    HOURS,
    METRICS_FILE,
    MINUTES,
    Metrics,
    MetricsError,
    Recorder,
    consolidate,
    sample_of,
)
from kerub_tui.core.models import HostDynamic, HostStatus, VirtualMachineDynamic, VmStatus

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 86_400  # a day's start, in 2027
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return EPOCH + dt.timedelta(seconds=seconds)


def f32(value: float) -> float:
    import struct
    return struct.unpack("<f", struct.pack("<f", value))[0]


def plain_minutes(samples: list[tuple[float, tuple[float, float] | None]], end: float) -> dict[int, tuple[float, ...]]:
    """The obvious recomputation: per minute, per metric, the time-weighted mean of the step function the
    samples draw (a value holds until the next sample; None holds nothing) and the largest value seen
    holding in it; a minute where nothing held is absent."""
    out: dict[int, tuple[float, ...]] = {}
    acc: dict[int, list[list[float]]] = {}
    for index, (when, values) in enumerate(samples):
        until = samples[index + 1][0] if index + 1 < len(samples) else end
        if values is None:
            continue
        minute = int(when // 60)
        while True:
            lo, hi = max(when, minute * 60.0), min(until, minute * 60.0 + 60)
            if lo > hi or (lo == hi and minute * 60.0 + 60 <= when):
                break
            cell = acc.setdefault(minute, [[0.0, 0.0, math.nan] for _ in range(2)])
            for m, value in enumerate(values):
                if math.isnan(value):
                    continue
                cell[m][0] += value * (hi - lo)
                cell[m][1] += hi - lo
                cell[m][2] = value if math.isnan(cell[m][2]) else max(cell[m][2], value)
            if hi >= until:
                break
            minute += 1
    for minute, cell in acc.items():
        if not any(c[1] > 0 for c in cell):
            continue
        point: list[float] = []
        for weighted, covered, peak in cell:
            point += [weighted / covered, peak] if covered > 0 else [math.nan, math.nan]
        out[minute] = tuple(point)
    return out


def close(a: float | None, b: float) -> bool:
    if a is None:
        return math.isnan(b)
    return not math.isnan(b) and math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-3)


value_st = st.one_of(st.floats(0, 100), st.just(math.nan))
sample_st = st.tuples(st.floats(0.0, 400.0), st.one_of(st.none(), st.tuples(value_st, st.floats(0, 1e10))))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(sample_st, min_size=1, max_size=40), st.integers(1, 5))
def test_consolidation_matches_a_plain_recomputation(tmp_path_factory: pytest.TempPathFactory,
                                                     steps: list[tuple[float, tuple[float, float] | None]],
                                                     batch: int) -> None:
    data_dir = tmp_path_factory.mktemp("m")
    samples: list[tuple[float, tuple[float, float] | None]] = []
    when = T0 + 3000  # starts 10 minutes before an hour's end: the hours are crossed
    for gap, values in steps:
        when += gap
        samples.append((when, values))
    end = when + 30
    recorder = Recorder(data_dir)
    for start in range(0, len(samples), batch):
        chunk = samples[start:start + batch]
        recorder.observe([("host", "h1", t, v) for t, v in chunk], chunk[-1][0])
    recorder.close(end)
    expected = plain_minutes(samples, end)
    with Metrics(data_dir) as metrics:
        got = metrics.read("host", "h1", "1d", now=at(end))
        for point in got.points:
            minute = int(point.time.timestamp() // 60)
            want = expected.get(minute, (math.nan,) * 4)
            for value, wanted in zip((point.cpu, point.cpu_max, point.memory, point.memory_max), want, strict=True):
                assert close(value, f32(wanted) if not math.isnan(wanted) else wanted), (point, want)
        hours = metrics.read("host", "h1", "7d", now=at(end))
    for point in hours.points:
        start = int(point.time.timestamp())
        minutes = [tuple(f32(v) for v in expected[m]) for m in range(start // 60, start // 60 + 60) if m in expected]
        want = consolidate(minutes) if minutes else (math.nan,) * 4
        for value, wanted in zip((point.cpu, point.cpu_max, point.memory, point.memory_max), want, strict=True):
            assert close(value, wanted), (point, want)


def test_a_value_holds_across_quiet_minutes_and_a_down_host_is_a_gap(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path)
    recorder.observe([("vm", "v", T0, (50.0, 1000.0))], T0)
    recorder.observe([], T0 + 600)  # nothing changed for ten minutes: the value held
    recorder.observe([("vm", "v", T0 + 600, None)], T0 + 600)  # stopped
    recorder.observe([("vm", "v", T0 + 1200, (10.0, 500.0))], T0 + 1200)
    recorder.close(T0 + 1260)
    with Metrics(tmp_path) as metrics:
        series = metrics.read("vm", "v", "1h", now=at(T0 + 1260))
    by_minute = {int(p.time.timestamp() - T0) // 60: p for p in series.points}
    assert all(by_minute[m].cpu == 50.0 and by_minute[m].memory == 1000.0 for m in range(10))
    assert all(by_minute[m].cpu is None and by_minute[m].memory is None for m in range(10, 20))
    assert by_minute[20].cpu == 10.0


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), -5.0, float("nan")])
def test_hostile_values_are_gaps(tmp_path: Path, bad: float) -> None:
    recorder = Recorder(tmp_path)
    recorder.observe([("host", "h", T0, (bad, 2048.0))], T0)
    recorder.close(T0 + 60)
    with Metrics(tmp_path) as metrics:
        point = next(p for p in metrics.read("host", "h", "1h", now=at(T0 + 60)).points if p.time == at(T0))
    assert point.cpu is None and point.cpu_max is None and point.memory == 2048.0


def test_reading_nothing_recorded_or_unknown_ranges(tmp_path: Path) -> None:
    with Metrics(tmp_path) as metrics:
        series = metrics.read("host", "nobody", "30d")
        assert len(series.points) == 30 * 24 and all(p.cpu is None for p in series.points)
        with pytest.raises(ValueError, match="unknown range"):
            metrics.read("host", "nobody", "2w")


def test_rings_are_bounded_by_construction(tmp_path: Path) -> None:
    """Four hundred days, a minute of data each day: no series ever holds more rows than its rings keep,
    and what is older than a ring holds is not read back."""
    recorder = Recorder(tmp_path)
    for day in range(400):
        start = T0 + day * 86_400 + 3600
        recorder.observe([("host", "h", start, (float(day % 100), 1.0))], start)
        recorder.observe([("host", "h", start + 60, None)], start + 60)
    end = T0 + 400 * 86_400
    recorder.close(end)
    db = sqlite3.connect(tmp_path / METRICS_FILE)
    assert db.execute("SELECT count(*) FROM minute").fetchone()[0] <= MINUTES.keep
    assert db.execute("SELECT count(*) FROM hour").fetchone()[0] <= HOURS.keep
    db.close()
    with Metrics(tmp_path) as metrics:
        year = metrics.read("host", "h", "1y", now=at(end))
    known = [p for p in year.points if p.cpu is not None]
    assert len(known) == 365 and known[-1].cpu == float(399 % 100)
    assert known[0].time >= at(end - 365 * 86_400)


def test_series_of_removed_vms_are_forgotten_after_a_year(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path)
    recorder.observe([("vm", "gone", T0, (1.0, 1.0)), ("host", "h", T0, (1.0, 1.0))], T0)
    recorder.observe([("vm", "gone", T0 + 60, None)], T0 + 60)
    recorder.close(T0 + 120)
    recorder = Recorder(tmp_path)  # the VM was deleted: the next process never sees it
    later = T0 + 400 * 86_400
    recorder.observe([("host", "h", later, (2.0, 2.0))], later)
    recorder.close(later + 120)
    db = sqlite3.connect(tmp_path / METRICS_FILE)
    assert [row[0] for row in db.execute("SELECT key FROM series")] == ["h"]
    db.close()


def test_samples_of_documents() -> None:
    up = HostDynamic(id="h", status=HostStatus.up, cpu_idle=70.0, memory_used=4096)
    assert sample_of("host-dynamic", "h", up, 5.0) == ("host", "h", 5.0, (30.0, 4096.0))
    down = up.evolve(status=HostStatus.down)
    assert sample_of("host-dynamic", "h", down, 5.0) == ("host", "h", 5.0, None)
    assert sample_of("host-dynamic", "h", None, 5.0) == ("host", "h", 5.0, None)
    vm = VirtualMachineDynamic(id="v", status=VmStatus.up, cpu_percent=12.5, memory_used=None)
    sample = sample_of("vm-dynamic", "v", vm, 5.0)
    assert sample is not None
    values = sample[3]
    assert values is not None and values[0] == 12.5 and math.isnan(values[1])
    assert sample_of("vm-dynamic", "v", vm.evolve(status=VmStatus.down), 5.0) == ("vm", "v", 5.0, None)
    assert sample_of("host", "h", None, 5.0) is None


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from kerub_tui.core.metrics import Recorder
    recorder = Recorder(Path(sys.argv[1]))
    t = float(sys.argv[2])
    minute = 0
    while True:
        written = recorder.observe([("host", "h", t + minute * 60 + 1, (float(minute % 97), 1.0 + minute))],
                                   t + minute * 60 + 1)
        if written:
            print(minute - 1, flush=True)  # the minute before this sample is committed
        minute += 1
""")


def test_a_killed_writer_loses_no_committed_minute(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(T0)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.stdout is not None
    committed = []
    for line in proc.stdout:
        committed.append(int(line))
        if len(committed) >= 300:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Metrics(tmp_path) as metrics:
        end = T0 + (committed[-1] + 1) * 60
        points = {int(p.time.timestamp() - T0) // 60: p for p in metrics.read("host", "h", "1d", now=at(end)).points}
    for minute in committed:
        if minute < 0:
            continue
        point = points[minute]
        # the previous minute's value held for its first second: the maximum is this minute's (it grows)
        assert point.memory_max == 1.0 + minute, minute
        assert point.cpu_max == max(float(minute % 97), float((minute - 1) % 97) if minute else 0.0), minute


def test_the_monitoring_writer_records_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The samples of a flush are recorded by the writer's worker thread after its commit, never on the loop."""
    import asyncio
    import threading

    from kerub_tui.core.store import Store
    from kerub_tui.hosts.monitor.writer import DocumentWriter

    threads: list[str] = []
    observe = Recorder.observe

    def spy(self: Recorder, samples: Any, now: float) -> int:
        threads.append(threading.current_thread().name)
        return observe(self, samples, now)

    monkeypatch.setattr(Recorder, "observe", spy)

    async def flush() -> str:
        store = Store.open(tmp_path)
        writer = DocumentWriter(store)
        writer.put(HostDynamic(id="h", status=HostStatus.up, cpu_idle=60.0, memory_used=1 << 30), urgent=True)
        await writer.drained()
        loop_thread = threading.current_thread().name
        writer.close()
        assert store.get(HostDynamic, "h") is not None
        store.close()
        return loop_thread

    loop_thread = asyncio.run(flush())
    assert threads and all(name.startswith("kerub-store-writer") for name in threads), threads
    assert loop_thread not in threads
    with Metrics(tmp_path) as metrics:  # the close wrote the minute in progress
        assert any(p.cpu == 40.0 for p in metrics.read("host", "h", "1h").points)


def test_a_planted_metrics_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (tmp_path / METRICS_FILE).symlink_to(target)
    with pytest.raises(MetricsError, match="cannot open"):
        Recorder(tmp_path)
    assert target.read_text() == "keep"


def test_check_finds_a_damaged_metrics_file(tmp_path: Path) -> None:
    from kerub_tui.core.backup import check
    from kerub_tui.core.store import Store

    Store.open(tmp_path).close()
    recorder = Recorder(tmp_path)
    recorder.observe([("host", "h", T0, (1.0, 1.0))], T0)
    recorder.close(T0 + 3600)
    assert check(tmp_path).sound
    path = tmp_path / METRICS_FILE
    path.write_bytes(b"\xff" * 8192)  # a failing disk
    result = check(tmp_path)
    assert not result.sound
    assert f"{path} is damaged" in result.lines[0] and "begins new graphs" in result.lines[1]
