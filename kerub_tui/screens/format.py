"""Cells and short texts for the console's tables: sizes, percentages, ages, sparklines, badges.

A table cell is a ``Cell``: rich Text that also carries the value it sorts by, so a column of "4.0G"
sorts by bytes and a column of "3m ago" by time.

Text from hosts and documents is data, never markup: a CPU model "[/]" must not crash the console
and "[link=...]" must not become a hyperlink, an escape sequence must not reach the terminal. So
every such text is shown through ``data`` (rich Text of ``core.text.printable``: control characters
become visible escapes, nothing is parsed as markup), a ``Cell`` (which does the same), or a
``DataGrid`` (a rich Table whose plain-string cells are ``data``). Where Textual wants markup (a
border title), ``markup_safe`` escapes it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

from rich.table import Table
from rich.text import Text
from textual.markup import escape as escape_markup

from ..core.models import HostStatus, PlanStatus, VmStatus
from ..core.sizes import format_size
from ..core.text import printable

SPARK_BARS = "▁▂▃▄▅▆▇█"
MARK_GLYPH = "●"


# The most of one text the console shows in one place (a command's output tail, an event message):
# the rest is cut with a marker. Documents hold more only when a host said more.
SHOW_LIMIT = 4000
CELL_LIMIT = 400  # characters of one table cell: wider than any terminal


def data(text: object, style: str = "", *, limit: int = SHOW_LIMIT, newlines: bool = True) -> Text:
    """Text from a host or a document, to show as it is: no markup, control characters visible."""
    return Text(printable(text, newlines=newlines, limit=limit), style=style, end="")


def safe(text: object, *, limit: int = SHOW_LIMIT) -> str:
    """A plain string with control characters visible, for places that take plain text (notify with
    markup off, a Static with markup=False)."""
    return printable(text, newlines=True, limit=limit)


def markup_safe(text: object, *, limit: int = CELL_LIMIT) -> str:
    """Text for a place that parses Textual markup (a border title): escaped, one line."""
    return escape_markup(printable(text, limit=limit))


class DataGrid(Table):
    """A rich Table whose plain-string cells are data (see ``data``), never markup."""

    @classmethod
    def grid(cls, *headers: Any, **kwargs: Any) -> DataGrid:
        return cast("DataGrid", super().grid(*headers, **kwargs))

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        super().add_row(*(data(r) if isinstance(r, str) else r for r in renderables), **kwargs)


class Cell(Text):
    """A table cell: rich Text plus the value the column sorts by. Its text is data (see ``data``)."""

    def __init__(self, text: str = "", style: str = "", sort: Any = None) -> None:
        super().__init__(printable(text, limit=CELL_LIMIT), style=style, end="", no_wrap=True, overflow="ellipsis")
        self.sort = text if sort is None else sort

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Text):
            return NotImplemented
        return self.plain == other.plain and self.style == other.style and self.spans == other.spans
    # Defining __eq__ without __hash__ leaves a Cell unhashable, as its value may change.


def sort_key(value: Any) -> tuple[int, Any]:
    """Sort any cell: missing values last, numbers by value, text case-insensitively."""
    if isinstance(value, Cell):
        value = value.sort
    elif isinstance(value, Text):
        value = value.plain
    if value is None:
        return (2, "")
    if isinstance(value, (int, float)):
        return (0, value)
    if isinstance(value, tuple):
        return (0, value)
    return (1, str(value).lower())


STATUS_STYLES = {
    HostStatus.up.value: "bold green",
    HostStatus.connecting.value: "yellow",
    HostStatus.down.value: "bold red",
    HostStatus.unreachable.value: "bold red",
    HostStatus.key_mismatch.value: "bold magenta",
    VmStatus.paused.value: "yellow",
    VmStatus.migrating.value: "cyan",
    "lost": "bold red",
    "storage-lost": "bold red",
    "waiting": "bold yellow",
    "starting": "cyan",
    "stopping": "cyan",
    "unplaced": "bold red",
    PlanStatus.proposed.value: "bold yellow",
    PlanStatus.approved.value: "cyan",
    PlanStatus.running.value: "bold cyan",
    PlanStatus.done.value: "green",
    PlanStatus.failed.value: "bold red",
    PlanStatus.interrupted.value: "red",
    PlanStatus.rejected.value: "dim",
    PlanStatus.withdrawn.value: "dim",
    "info": "",
    "warning": "yellow",
    "error": "bold red",
}


def status_cell(status: str) -> Cell:
    return Cell(status, STATUS_STYLES.get(status, ""), sort=status)


def size_cell(value: int | None) -> Cell:
    return Cell(format_size(value), sort=value)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def sparkline(values: Sequence[float | None], width: int, top: float = 100.0) -> str:
    """The last ``width`` values as bar characters scaled to ``top``; None is a gap."""
    values = list(values)[-width:]
    out = []
    for value in values:
        if value is None:
            out.append(" ")
            continue
        ratio = 0.0 if top <= 0 else max(0.0, min(1.0, value / top))
        out.append(SPARK_BARS[min(len(SPARK_BARS) - 1, int(ratio * len(SPARK_BARS)))])
    return "".join(out).rjust(width)


def figure_with_spark(value: float | None, history: Sequence[float | None], width: int = 10) -> Cell:
    cell = Cell(f"{percent(value):>4} ", sort=value)
    cell.append(sparkline(history, width), style="cyan")
    return cell


def ago(when: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """'12s', '5m', '3h', '2d' since ``when``; '-' when unknown."""
    if when is None:
        return "-"
    now = now or dt.datetime.now(dt.UTC)
    seconds = int((now - when).total_seconds())
    if seconds < 0:
        seconds = 0
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def timestamp(when: dt.datetime | None) -> str:
    """Local-independent, sortable, short: 2024-05-01 12:34:56 (UTC)."""
    if when is None:
        return "-"
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def time_cell(when: dt.datetime | None) -> Cell:
    return Cell(timestamp(when), sort=when.timestamp() if when else None)


def short_id(doc_id: str) -> str:
    return doc_id[:8]


def one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
