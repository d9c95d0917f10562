"""Graphs of the metrics history (core/metrics.py) in the host and VM detail screens.

Drawn with block characters (no plotting package: the bars fit 80 columns and 256 colours, and a gap
is drawn as one, never as a zero): per metric a title with the range's average and maximum, then rows
of bars, a column per time bucket (the points of the range shared out over the width: the mean of their
averages, the largest of their maxima). A bucket with nothing known is a dim dot; a value no graph can
draw never reaches here (the history stores it as a gap).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from rich.text import Text
from textual.widgets import Static

from ..api import ActionError
from ..core.metrics import RANGES, MetricPoint, MetricSeries
from ..core.sizes import format_size
from .actions import actions_of

BARS = " ▁▂▃▄▅▆▇█"
GRAPH_ROWS = 3
RANGE_NAMES = tuple(RANGES)
_STEP_WORDS = {60: "a point per minute", 3600: "a point per hour"}


def buckets(points: Sequence[MetricPoint], width: int, field: str) -> list[tuple[float, float] | None]:
    """``points``' ``field`` (cpu or memory) over ``width`` columns: (mean of averages, largest maximum) or
    None for a column with nothing known."""
    width = max(1, min(width, len(points)))
    out: list[tuple[float, float] | None] = []
    for column in range(width):
        chunk = points[column * len(points) // width:(column + 1) * len(points) // width]
        avgs = [v for p in chunk if (v := getattr(p, field)) is not None and math.isfinite(v)]
        maxes = [v for p in chunk if (v := getattr(p, field + "_max")) is not None and math.isfinite(v)]
        out.append((math.fsum(avgs) / len(avgs), max(maxes) if maxes else max(avgs)) if avgs else None)
    return out


def bar_rows(columns: Sequence[tuple[float, float] | None], top: float, rows: int = GRAPH_ROWS) -> list[Text]:
    """Rows of bars, top row first: each column's average against ``top`` (a gap: a dim dot on the base)."""
    levels = rows * 8
    out = [Text() for _ in range(rows)]
    for column in columns:
        if column is None:
            for row in range(rows):
                out[row].append("·" if row == rows - 1 else " ", style="dim")
            continue
        share = min(1.0, max(0.0, column[0] / top)) if top > 0 else 0.0
        level = max(1, math.ceil(share * levels))  # a zero still shows as the lowest bar: it is not a gap
        for row in range(rows):
            base = (rows - 1 - row) * 8
            out[row].append(BARS[min(8, max(0, level - base))], style="green" if share < 0.8 else "yellow")
    return out


def graph_text(series: MetricSeries, width: int, memory_top: float | None = None) -> Text:
    """The graph of a host's or VM's metrics over its range, ``width`` columns wide."""
    text = Text()
    text.append(f"range {series.range} ({_STEP_WORDS.get(series.step, f'a point per {series.step} s')}; "
                f"m: {next_range(series.range)})\n", style="dim")
    for field, label, top in (("cpu", "CPU %", 100.0), ("memory", "Memory used", memory_top)):
        columns = buckets(series.points, width, field)
        known = [c for c in columns if c is not None]
        if not known:
            text.append(f"{label}: nothing recorded in this range\n", style="dim")
            continue
        avg = math.fsum(c[0] for c in known) / len(known)
        peak = max(c[1] for c in known)
        scale = top if top else peak
        shown: Any = (lambda v: f"{v:.1f}") if field == "cpu" else (lambda v: format_size(int(v)))
        text.append(f"{label}", style="bold")
        text.append(f"  average {shown(avg)}, maximum {shown(peak)}"
                    + ("" if field == "cpu" else f" of {shown(scale)}") + "\n")
        for row in bar_rows(columns, scale):
            text.append_text(row)
            text.append("\n")
    text.rstrip()
    return text


def next_range(name: str) -> str:
    return RANGE_NAMES[(RANGE_NAMES.index(name) + 1) % len(RANGE_NAMES)] if name in RANGE_NAMES else RANGE_NAMES[0]


class MetricsPanel(Static):
    """A host's or VM's graphs, read through the console API's ``metrics`` query; ``m`` on the screen
    moves to the next range. Read when shown, when the range changes and once a minute (a new point)."""

    DEFAULT_CSS = """
    MetricsPanel { height: auto; border: round $panel-lighten-2; padding: 0 1; }
    """

    def __init__(self, kind: Literal["host", "vm"], doc_id: str, *, range_name: str = "1h",
                 memory_top: float | None = None, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.kind = kind
        self.doc_id = doc_id
        self.range_name = range_name
        self.memory_top = memory_top
        self.border_title = "History"

    def on_mount(self) -> None:
        self.reload()
        self.set_interval(60, self.reload)

    def on_resize(self) -> None:
        self.reload()

    def next_range(self) -> None:
        self.range_name = next_range(self.range_name)
        self.reload()

    def reload(self) -> None:
        api = actions_of(self).controller
        width = max(10, self.content_region.width or (self.app.size.width - 8))
        try:
            series = api.metrics(self.kind, self.doc_id, self.range_name)
        except ActionError as error:
            self.update(Text(str(error), style="red"))
            return
        self.border_title = f"History, {self.range_name}"
        self.update(graph_text(series, width, self.memory_top))
