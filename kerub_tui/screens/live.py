"""LiveTable: a virtualised table of documents, keyed by document id, updated in place from the change feed.

Only the rows on screen cost anything. The table keeps every row's id and, for the rows on show, the
key it sorts by (a RowSource can give a column's sort value cheaply: ``sort_value``, e.g. a VM's
name); a row's cells are computed when it is drawn, or when a sort, a filter or a bulk action needs
them, and kept until the row changes. Drawing is Textual's Line API (a ScrollView): each frame asks
for the lines on screen only, and a row's line is kept until its cells, the cursor, a mark, the
column widths or the styles change. Changes are coalesced: ``apply_changes`` only notes which rows a
change touches; the table takes them in once, before its next frame (or when asked a question
before that), so changes arriving between two refreshes are applied once and a pane nobody sees
does no work. Column widths are the widest cell of the rows computed so far (never narrower), as the
DataTable this replaces kept them.

The cursor stays on its document through updates, sorting and filtering. ``/`` filters (a regex, or
plain text when it is not one; a leading ``!`` inverts), ``space`` marks, ``ctrl+a`` marks every row the
filter shows, and bulk actions take ``selected_ids()``: the marks the filter shows, else the row under
the cursor. Marks the filter hides are kept but never acted on: the title counts them and the action's
confirmation says how many were left alone (``hidden_marks()``).
"""

from __future__ import annotations

import datetime as dt
import re
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Protocol

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size, Spacing
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ..core.bus import Change
from .format import MARK_GLYPH, Cell, sort_key

MARK_COLUMN = "_mark"
_LINE = Text("\n")
CELL_PADDING = 1  # blank cells on each side of a column's text


class _Answer:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# What a RowSource's ``sort_value`` answers when it has no cheap answer (only the cells can tell) and
# when the row is gone (``cells`` would answer None).
UNKNOWN: Final = _Answer("UNKNOWN")
MISSING: Final = _Answer("MISSING")


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int | None = None  # None: as wide as the widest cell


class RowSource(Protocol):
    """What a LiveTable shows: the documents' ids, each one's cells, and which rows a change touches."""

    @property
    def title(self) -> str: ...
    @property
    def columns(self) -> Sequence[Column]: ...
    @property
    def kinds(self) -> frozenset[str]: ...
    @property
    def default_sort(self) -> str: ...
    @property
    def default_reverse(self) -> bool: ...

    def ids(self) -> Iterable[str]: ...

    def cells(self, doc_id: str) -> Sequence[Cell] | None: ...

    def affected(self, change: Change) -> Iterable[str]: ...

    # Optional: ``sort_value(doc_id, column) -> object``, the value ``cells(doc_id)[column].sort`` would
    # hold, where it is cheap to know without the cells (a name); UNKNOWN where only the cells can
    # tell, MISSING where the row is gone. With it, a table of 10,000 rows sorts and takes changes to
    # rows nobody sees without computing their cells. And ``sort_values(column) -> dict[str, object] |
    # None``: every row's such value at once (a row it leaves out is gone), None where not cheap.


@dataclass(frozen=True)
class RowFilter:
    text: str = ""
    inverted: bool = False
    pattern: re.Pattern[str] | None = None
    error: str | None = None

    @classmethod
    def parse(cls, text: str) -> RowFilter:
        text = text.strip()
        if not text or text == "!":
            return cls()
        inverted = text.startswith("!")
        body = text[1:] if inverted else text
        error = None
        try:
            pattern = re.compile(body, re.IGNORECASE)
        except re.error as problem:
            pattern = re.compile(re.escape(body), re.IGNORECASE)
            error = f"not a regular expression ({problem}): matched as plain text"
        return cls(text, inverted, pattern, error)

    def __call__(self, fields: Sequence[str]) -> bool:
        """Does a row with these cell texts pass? The pattern is tried on each cell (so ^ and $ anchor
        to a cell, as the admin sees it) and on the document id."""
        if self.pattern is None:
            return True
        search = self.pattern.search
        return any(search(field) is not None for field in fields) != self.inverted


_NAV = [
    Binding("up,k", "cursor_up", "Up", show=False, id="table.up"),
    Binding("down,j", "cursor_down", "Down", show=False, id="table.down"),
    Binding("left,h", "cursor_left", "Left", show=False, id="table.left"),
    Binding("right,l", "cursor_right", "Right", show=False, id="table.right"),
    Binding("pageup,ctrl+b", "page_up", "Page up", show=False, id="table.page_up"),
    Binding("pagedown,ctrl+f", "page_down", "Page down", show=False, id="table.page_down"),
    Binding("home,g", "scroll_top", "First row", show=False, id="table.first"),
    Binding("end,G", "scroll_bottom", "Last row", show=False, id="table.last"),
]


class _ShownRows:
    """``doc_id in table.rows``: is the row on show (the filter lets it through)?"""

    def __init__(self, table: LiveTable) -> None:
        self.table = table

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, str) and self.table.is_shown(doc_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self.table.shown_ids())

    def __len__(self) -> int:
        return self.table.row_count


class RowNotShown(KeyError):
    """No row of this id is on show."""


class LiveTable(ScrollView, can_focus=True, inherit_bindings=False):
    """A live, filterable, markable table of documents from a RowSource."""

    help_section = "Tables"

    BINDINGS: ClassVar[list[BindingType]] = [
        *_NAV,
        Binding("enter", "open", "Details", id="table.open"),
        Binding("space", "mark", "Mark", id="table.mark"),
        Binding("ctrl+a", "mark_all", "Mark all shown", show=False, id="table.mark_all"),
        Binding("slash", "filter", "Filter", id="table.filter"),
        Binding("o", "sort", "Sort by next column", show=False, id="table.sort"),
        Binding("O", "sort_reverse", "Reverse sort", show=False, id="table.sort_reverse"),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {"live-table--header", "live-table--cursor"}

    # The look of Textual's DataTable (which this table replaced), with a border that shows focus.
    DEFAULT_CSS = """
    LiveTable {
        background: $surface;
        color: $foreground;
        border: round $panel-lighten-2;
        height: 1fr;
        max-height: 100%;
        &:focus {
            border: round $accent;
            background-tint: $foreground 5%;
            & > .live-table--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
            & > .live-table--header {
                background-tint: $foreground 5%;
            }
        }
        & > .live-table--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        &:ansi > .live-table--header {
            background: ansi_bright_blue;
            color: ansi_default;
        }
        & > .live-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
    }
    """

    class MarksChanged(Message):
        def __init__(self, table: LiveTable, marked: frozenset[str]) -> None:
            super().__init__()
            self.table = table
            self.marked = marked

        @property
        def control(self) -> LiveTable:
            return self.table

    class FilterChanged(Message):
        def __init__(self, table: LiveTable, row_filter: RowFilter, shown: int) -> None:
            super().__init__()
            self.table = table
            self.filter = row_filter
            self.shown = shown

        @property
        def control(self) -> LiveTable:
            return self.table

    class Opened(Message):
        """Enter on a row: open the document's details."""

        def __init__(self, table: LiveTable, doc_id: str) -> None:
            super().__init__()
            self.table = table
            self.doc_id = doc_id

        @property
        def control(self) -> LiveTable:
            return self.table

    class RowHighlighted(Message):
        """The cursor is on another row (or its row moved): a detail beside the table follows it."""

        def __init__(self, table: LiveTable, cursor_row: int, doc_id: str) -> None:
            super().__init__()
            self.table = table
            self.cursor_row = cursor_row
            self.doc_id = doc_id

        @property
        def control(self) -> LiveTable:
            return self.table

    def __init__(self, source: RowSource, *, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.source = source
        self.row_filter = RowFilter()
        self.marked: set[str] = set()
        self.sort_column = source.default_sort
        self.sort_reverse = source.default_reverse
        self._column_index = {c.key: i for i, c in enumerate(source.columns)}
        self._labels: list[Text] = [Text(" "), *(Text(c.label, style="bold") for c in source.columns)]
        # Content widths, the mark column first; None in _auto: a fixed width.
        self._auto = [False, *(c.width is None for c in source.columns)]
        self._widths = [1, *(c.width if c.width is not None else Text(c.label).cell_len for c in source.columns)]
        self._all: set[str] = set()  # every row the source has
        # The cells computed so far (rows drawn, sorted or filtered by them), kept until the row changes.
        self._cells: dict[str, Sequence[Cell]] = {}
        self._keys: dict[str, tuple[Any, ...]] = {}  # the sort key of each row on show
        self._order: list[str] = []  # the rows on show, ascending by key (read backwards for a reverse sort)
        self._pending: set[str] = set()  # rows changes touched since they were last taken in
        self._cursor = 0
        self._highlighted: str | None = None
        self._marks_lost = False
        self._scroll_wanted = False
        # Each drawn row's line: (what it was drawn from, its cells, the strip, each cell's segments).
        self._strips: dict[str, tuple[tuple[Any, ...], Sequence[Cell], Strip, list[tuple[Text, list[Segment]]]]] = {}
        self._header: tuple[tuple[Any, ...], Strip] | None = None
        self._look: tuple[Any, ...] = ()
        self.loaded = False
        self.prompt_filter: Callable[[LiveTable], None] | None = None
        # Only the rows whose time column is at or after this (a log's "last hour"), with its words.
        self.since: dt.datetime | None = None
        self.since_label = ""
        # What the table did, for tests (which count work, never time it): how many times changes
        # were taken in, how many row lines were drawn.
        self.updates_applied = 0
        self.rows_drawn = 0

    # --- loading ----------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.load()

    def load(self) -> None:
        """Read every row id from the source and show those the filter lets through."""
        self._pending.clear()
        self._all = set(self.source.ids())
        self._cells.clear()
        self._strips.clear()
        self.marked &= self._all
        self._rebuild(reset_scroll=True)
        self.loaded = True

    def _cells_of(self, doc_id: str) -> Sequence[Cell] | None:
        cells = self._cells.get(doc_id)
        if cells is None:
            cells = self.source.cells(doc_id)
            if cells is not None:
                self._cells[doc_id] = cells
        return cells

    def _sort_value(self, doc_id: str, index: int) -> object:
        ask = getattr(self.source, "sort_value", None)
        return UNKNOWN if ask is None else ask(doc_id, self.source.columns[index].key)

    def _key_of(self, doc_id: str) -> tuple[Any, ...] | None:
        """The row's sort key: its sort column, then its name, then its id. None: the row is gone."""
        index = self._column_index.get(self.sort_column, 0)
        value = self._sort_value(doc_id, index)
        name = self._sort_value(doc_id, 0) if index and value is not UNKNOWN and value is not MISSING else value
        if value is MISSING or name is MISSING:
            return None
        if value is UNKNOWN or name is UNKNOWN:
            cells = self._cells_of(doc_id)
            if cells is None:
                return None
            return (sort_key(cells[index]), sort_key(cells[0]), doc_id)
        return (sort_key(value), sort_key(name), doc_id)

    def _bulk_keys(self) -> dict[str, tuple[Any, ...]] | None:
        """Every row's sort key at once, where the source knows its sort values in bulk (``sort_values``):
        a load of 10,000 rows asks no document one by one. None: ask row by row."""
        ask = getattr(self.source, "sort_values", None)
        if ask is None:
            return None
        index = self._column_index.get(self.sort_column, 0)
        values = ask(self.source.columns[index].key)
        names = values if not index or values is None else ask(self.source.columns[0].key)
        if values is None or names is None:
            return None
        return {doc_id: (sort_key(value), sort_key(names[doc_id]), doc_id)
                for doc_id, value in values.items() if doc_id in names}

    def _passes(self, doc_id: str) -> bool | None:
        """Does the row pass the filter and the time window? None: the row is gone."""
        if self.row_filter.pattern is None and self.since is None:
            return True
        cells = self._cells_of(doc_id)
        if cells is None:
            return None
        if not self.row_filter((*(c.plain for c in cells), doc_id)):
            return False
        if self.since is None:
            return True
        when = cells[self._column_index.get("time", 0)].sort
        return not isinstance(when, (int, float)) or when >= self.since.timestamp()

    def _rebuild(self, reset_scroll: bool = False, keep: str | None = None) -> None:
        """Filter and sort every row again (a load, a filter, a sort); the cursor stays on its row
        (``keep``: the row it was on before the sort changed)."""
        self._apply_pending()
        keep = keep or self._cursor_doc()
        keys: dict[str, tuple[Any, ...]] = {}
        known = self._bulk_keys()
        for doc_id in list(self._all):
            passes = self._passes(doc_id)
            key = (known.get(doc_id) if known is not None else self._key_of(doc_id)) if passes else None
            if passes is None or (passes and key is None):
                self._forget(doc_id)
            elif key is not None:
                keys[doc_id] = key
        self._keys = keys
        self._order = sorted(keys, key=keys.__getitem__)
        for doc_id in self._order:
            cells = self._cells.get(doc_id)
            if cells is not None:
                self._grow(cells)
        self._strips.clear()
        self._resize()
        if reset_scroll:
            self.scroll_to(0, 0, animate=False, force=True)
        self._restore_cursor(keep, fallback=0 if reset_scroll else None)
        self._update_title()
        self._tell_lost_marks()
        self.refresh()

    def set_since(self, since: dt.datetime | None, label: str = "") -> None:
        """Show only the rows of ``since`` or later (``label`` says it in the title: "last hour")."""
        self.since, self.since_label = since, label if since is not None else ""
        self._rebuild(reset_scroll=True)

    # --- rows on show -------------------------------------------------------------------------

    def _at(self, position: int) -> str:
        return self._order[-1 - position] if self.sort_reverse else self._order[position]

    def _index(self, doc_id: str) -> int:
        """Where a row on show is in ``_order`` (ascending)."""
        index = bisect_left(self._order, self._keys[doc_id], key=self._keys.__getitem__)
        if index >= len(self._order) or self._order[index] != doc_id:  # never: keys are unique
            raise RowNotShown(doc_id)
        return index

    def _position(self, doc_id: str) -> int:
        """Where a row on show is on screen (0: the first row)."""
        index = self._index(doc_id)
        return len(self._order) - 1 - index if self.sort_reverse else index

    def _insert(self, doc_id: str, key: tuple[Any, ...]) -> None:
        self._keys[doc_id] = key
        insort(self._order, doc_id, key=self._keys.__getitem__)

    def _remove(self, doc_id: str) -> None:
        del self._order[self._index(doc_id)]
        del self._keys[doc_id]

    def _forget(self, doc_id: str) -> None:
        """The row is gone from the source."""
        if doc_id in self._keys:
            self._remove(doc_id)
        self._all.discard(doc_id)
        self._cells.pop(doc_id, None)
        self._strips.pop(doc_id, None)
        if doc_id in self.marked:
            self.marked.discard(doc_id)
            self._marks_lost = True

    def _tell_lost_marks(self) -> None:
        if self._marks_lost:
            self._marks_lost = False
            self.post_message(self.MarksChanged(self, frozenset(self.marked)))

    def _grow(self, cells: Sequence[Cell]) -> bool:
        """Widen the columns a row's cells do not fit in; True if one was."""
        grew = False
        widths, auto = self._widths, self._auto
        for index, cell in enumerate(cells, 1):
            if index < len(widths) and auto[index] and cell.cell_len > widths[index]:
                widths[index] = cell.cell_len
                grew = True
        return grew

    def _resize(self) -> None:
        width = sum(w + 2 * CELL_PADDING for w in self._widths)
        self.virtual_size = Size(width, len(self._order) + 1)

    # --- queries ----------------------------------------------------------------------------

    def _cursor_doc(self) -> str | None:
        return self._at(self._cursor) if 0 <= self._cursor < len(self._order) else None

    @property
    def cursor_id(self) -> str | None:
        self._apply_pending()
        return self._cursor_doc()

    @property
    def cursor_row(self) -> int:
        self._apply_pending()
        return self._cursor

    @property
    def row_count(self) -> int:
        self._apply_pending()
        return len(self._order)

    @property
    def rows(self) -> _ShownRows:
        return _ShownRows(self)

    def shown_ids(self) -> list[str]:
        """The ids of the rows on show, in table order."""
        self._apply_pending()
        return list(reversed(self._order)) if self.sort_reverse else list(self._order)

    def is_shown(self, doc_id: str) -> bool:
        self._apply_pending()
        return doc_id in self._keys

    def get_row_index(self, doc_id: str) -> int:
        """Where the row is on screen (0: the first row); RowNotShown when the filter hides it or it is gone."""
        self._apply_pending()
        if doc_id not in self._keys:
            raise RowNotShown(doc_id)
        return self._position(doc_id)

    def get_row(self, doc_id: str) -> list[Cell]:
        """The row's cells as shown: its mark, then the source's cells."""
        cells = self.cells_of(doc_id)
        if cells is None:
            raise RowNotShown(doc_id)
        return [self._mark_cell(doc_id), *cells]

    def get_row_at(self, position: int) -> list[Cell]:
        self._apply_pending()
        return self.get_row(self._at(position))

    def _mark_cell(self, doc_id: str) -> Cell:
        return Cell(MARK_GLYPH, "bold yellow") if doc_id in self.marked else Cell(" ")

    @property
    def computed(self) -> int:
        """How many rows' cells the table holds (those drawn, or sorted or filtered by their cells)."""
        return len(self._cells)

    @property
    def total(self) -> int:
        self._apply_pending()
        return len(self._all)

    def selected_ids(self) -> list[str]:
        """What a bulk action acts on: the marked rows the filter shows (in table order), else the cursor's
        row. Marks the filter hides are left alone (hidden_marks counts them)."""
        shown = [i for i in self.shown_ids() if i in self.marked] if self.marked else []
        if shown:
            return shown
        cursor = self.cursor_id
        return [cursor] if cursor is not None else []

    def hidden_marks(self) -> int:
        """How many marked rows the filter hides (a bulk action leaves them alone)."""
        self._apply_pending()
        return sum(1 for doc_id in self.marked if doc_id not in self._keys)

    def cells_of(self, doc_id: str) -> Sequence[Cell] | None:
        """The row's cells now (computed if they were not), None when the source has no such row."""
        self._apply_pending()
        if doc_id not in self._all:
            return None
        cells = self._cells_of(doc_id)
        if cells is None:
            self._forget(doc_id)
            self._after_change()
        return cells

    def _in_view(self, doc_id: str) -> bool:
        """Is the row on screen now?"""
        self._apply_pending()
        if doc_id not in self._keys:
            return False
        top = int(self.scroll_y)
        return top <= self._position(doc_id) < top + max(1, self.scrollable_content_region.height - 1)

    # --- live updates -----------------------------------------------------------------------

    def apply_changes(self, changes: Iterable[Change]) -> None:
        """Note the rows ``changes`` touch; they are taken in once, before the next frame."""
        if not self.loaded:
            return
        kinds = self.source.kinds
        pending = self._pending
        before = len(pending)
        for change in changes:
            if change.kind in kinds:
                pending.update(self.source.affected(change))
        if len(pending) != before:
            # Ask for a frame (the header line: the rows that changed on screen are repainted then).
            self.refresh(Region(0, 0, max(1, self.size.width), 1))

    def refresh_rows(self, doc_ids: Iterable[str]) -> None:
        """Bring these rows up to date now."""
        self._pending.update(doc_ids)
        self._apply_pending()

    def _apply_pending(self) -> None:
        """Take in the rows changes touched since the last time: each once, however often it changed.
        A row nobody sees costs its sort key (and its cells only when a filter or the sort column needs
        them); a row on screen is drawn again with its new cells, and only the lines that changed (or
        moved) are repainted."""
        if not self._pending or not self.loaded:
            return
        dirty, self._pending = self._pending, set()
        self.updates_applied += 1
        keep = self._cursor_doc()
        changed: set[str] = set()  # rows on show whose cells changed in place
        moved_from: int | None = None  # the first position rows were inserted, removed or moved at
        grew = False
        for doc_id in dirty:
            self._cells.pop(doc_id, None)  # (its drawn line stays: new cells redraw only what changed)
            passes = self._passes(doc_id)
            key = self._key_of(doc_id) if passes is not None else None
            old = self._keys.get(doc_id)
            if old is not None and passes and key == old:  # the common case: in place
                changed.add(doc_id)
            else:
                positions = [self._position(doc_id)] if old is not None else []
                if key is None:
                    self._forget(doc_id)
                else:
                    self._all.add(doc_id)
                    if old is not None:
                        self._remove(doc_id)
                    if passes:
                        self._insert(doc_id, key)
                        positions.append(self._position(doc_id))
                if moved_from is not None:
                    positions.append(moved_from)
                moved_from = min(positions, default=None)
            if passes and key is not None and (cells := self._cells.get(doc_id)) is not None:
                grew |= self._grow(cells)
        self._restore_cursor(keep)
        self._resize()
        self._update_title()
        self._tell_lost_marks()
        if grew:
            self.refresh()
            return
        top, height = int(self.scroll_y), self.size.height
        if moved_from is not None and moved_from < top + height:
            first = max(moved_from, top)
            self.refresh(Region(0, first + 1 - top, self.size.width, top + height - first))
        if changed:
            for position in range(top, min(len(self._order), top + height)):
                if self._at(position) in changed:
                    self.refresh(Region(0, position + 1 - top, self.size.width, 1))

    def _after_change(self) -> None:
        self._resize()
        self._update_title()
        self._tell_lost_marks()
        self.refresh()

    # --- drawing ----------------------------------------------------------------------------

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()
        self._header = None
        self._look = ()

    def render_lines(self, crop: Region) -> list[Strip]:
        self._apply_pending()  # the changes noted since the last frame
        self._prepare_visible()
        self._update_look()
        return super().render_lines(crop)

    def _update_look(self) -> None:
        """What every drawn line depends on besides its row: styles (focus changes them), widths, scroll."""
        self._look = (
            self.rich_style,
            self.get_component_rich_style("live-table--cursor"),
            self.get_component_rich_style("live-table--header"),
            tuple(self._widths),
            int(self.scroll_x),
            self.size.width,
        )

    def _prepare_visible(self) -> None:
        """Compute the cells of the rows on screen; drop those the source no longer has."""
        if len(self._strips) > 4 * max(1, self.size.height):  # lines of rows long scrolled away
            top = int(self.scroll_y)
            on_screen = {self._at(p) for p in range(top, min(len(self._order), top + self.size.height))}
            self._strips = {i: line for i, line in self._strips.items() if i in on_screen}
        while True:
            top = int(self.scroll_y)
            gone: list[str] = []
            grew = False
            for position in range(top, min(len(self._order), top + max(0, self.size.height - 1))):
                doc_id = self._at(position)
                if doc_id in self._cells:
                    continue
                cells = self.source.cells(doc_id)
                if cells is None:
                    gone.append(doc_id)
                    continue
                self._cells[doc_id] = cells
                grew |= self._grow(cells)
            if not gone and not grew:
                return
            keep = self._cursor_doc()
            for doc_id in gone:
                self._forget(doc_id)
            self._restore_cursor(keep)
            self._after_change()
            if not gone:
                return

    def render_line(self, y: int) -> Strip:
        if not self._look:
            self._update_look()
        width = self.size.width
        if y == 0:
            return self._header_strip(width)
        position = y - 1 + int(self.scroll_y)
        if position >= len(self._order):
            return Strip.blank(width, self.rich_style)
        doc_id = self._at(position)
        cells = self._cells.get(doc_id)
        if cells is None:  # not prepared (a line drawn outside render_lines): compute it now
            cells = self._cells_of(doc_id)
            if cells is None:
                return Strip.blank(width, self.rich_style)
        cursor = position == self._cursor
        key = (position, cursor, doc_id in self.marked, self._look)
        drawn = self._strips.get(doc_id)
        if drawn is not None and drawn[0] == key and drawn[1] is cells:
            return drawn[2]
        # Drawn before at this place with other cells: the cells that did not change keep their segments.
        before = drawn[3] if drawn is not None and drawn[0] == key else None
        parts: list[tuple[Text, list[Segment]]] = []
        strip = self._draw(position, [self._mark_cell(doc_id), *cells], cursor, width, before, parts)
        self._strips[doc_id] = (key, cells, strip, parts)
        self.rows_drawn += 1
        return strip

    def _header_strip(self, width: int) -> Strip:
        if self._header is not None and self._header[0] == self._look:
            return self._header[1]
        strip = self._draw(-1, self._labels, False, width, None, [])
        self._header = (self._look, strip)
        return strip

    def _draw(self, position: int, cells: Sequence[Text], cursor: bool, width: int,
              before: list[tuple[Text, list[Segment]]] | None, parts: list[tuple[Text, list[Segment]]]) -> Strip:
        """One line: each cell padded to its column's width, then blank to the widget's width: the
        segments Textual's DataTable draws (its Styled(Padding(cell)) with the row's, the cursor's and the
        meta's styles: row and column, for the mouse), made here without a console render per cell.
        ``before``: each cell and its segments as last drawn at this place (a cell equal to its old self
        is not made again); ``parts`` receives this line's."""
        console = self.app.console
        base, cursor_style, header_style = self._look[:3]
        row_style = header_style if position < 0 else base
        component = Style()
        if cursor:
            component += cursor_style
        post = Style.from_color(color=component.color) + Style.from_color(bgcolor=component.bgcolor)
        null = Style.null()
        pad = Segment(" " * CELL_PADDING, null)
        segments: list[Segment] = []
        used = 0
        for column, (cell, content_width) in enumerate(zip(cells, self._widths)):
            used += content_width + 2 * CELL_PADDING
            if before is not None and column < len(before) and before[column][0] == cell:
                parts.append(before[column])
                segments.extend(before[column][1])
                continue
            text = cell
            if text.cell_len > content_width:
                text = cell.copy()
                text.truncate(content_width, overflow=cell.overflow or "ellipsis")
            raw = [pad, *_LINE.join((text,)).render(console, end="")]  # as Text renders a line: its style a span
            if text.cell_len < content_width:
                raw.append(Segment(" " * (content_width - text.cell_len), null))
            raw.append(pad)
            pre = row_style + Style.from_meta({"row": position, "column": column}) + component
            made = list(Segment.apply_style(raw, pre, post))
            parts.append((cell, made))
            segments.extend(made)
        extend = row_style + component + Style.from_meta({"row": position, "column": 0, "out_of_bounds": True})
        segments.append(Segment(" " * max(0, width - used), extend))
        x = int(self.scroll_x)
        return Strip(segments).crop(x, x + width).adjust_cell_length(width, base).simplify()

    # --- the cursor ---------------------------------------------------------------------------

    def _set_cursor(self, row: int, scroll: bool = True) -> None:
        old = self._cursor
        self._cursor = max(0, min(row, len(self._order) - 1))
        if self._cursor != old:
            self._refresh_position(old)
            self._refresh_position(self._cursor)
        if scroll:
            self._scroll_cursor_into_view()
        doc_id = self._cursor_doc()
        if doc_id is not None and (doc_id != self._highlighted or self._cursor != old):
            self._highlighted = doc_id
            self.post_message(self.RowHighlighted(self, self._cursor, doc_id))

    def on_resize(self, event: events.Resize) -> None:
        if self._scroll_wanted:
            self._scroll_cursor_into_view()

    def _refresh_position(self, position: int) -> None:
        top = int(self.scroll_y)
        if top <= position < top + self.size.height:
            self.refresh(Region(0, position + 1 - top, self.size.width, 1))

    def _scroll_cursor_into_view(self, animate: bool = False) -> None:
        if not self.size.height:  # not laid out yet, or hidden (a pane not shown): once it has a size
            self._scroll_wanted = True
            return
        self._scroll_wanted = False
        region = Region(int(self.scroll_x), self._cursor + 1, self.size.width, 1)
        self.scroll_to_region(region, animate=animate, spacing=Spacing(1, 0, 0, 0), force=True)

    def _restore_cursor(self, doc_id: str | None, fallback: int | None = None) -> None:
        if doc_id is not None and doc_id in self._keys:
            self._set_cursor(self._position(doc_id))
        elif fallback is not None:
            self._set_cursor(fallback)
        else:
            self._set_cursor(self._cursor, scroll=False)

    def move_cursor(self, *, row: int | None = None, column: int | None = None, animate: bool = False,
                    scroll: bool = True) -> None:
        """Put the cursor on a row (``column`` is for the DataTable's signature: the cursor is a row)."""
        self._apply_pending()
        self._set_cursor(self._cursor if row is None else row, scroll=False)
        if scroll:
            self._scroll_cursor_into_view(animate=animate)

    def action_cursor_up(self) -> None:
        self._apply_pending()
        self._set_cursor(self._cursor - 1)

    def action_cursor_down(self) -> None:
        self._apply_pending()
        self._set_cursor(self._cursor + 1)

    def action_cursor_left(self) -> None:
        self.scroll_left(animate=False)

    def action_cursor_right(self) -> None:
        self.scroll_right(animate=False)

    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def action_page_down(self) -> None:
        self._apply_pending()
        self.scroll_relative(y=self._page(), animate=False, force=True)
        self._set_cursor(self._cursor + self._page())

    def action_page_up(self) -> None:
        self._apply_pending()
        self.scroll_relative(y=-self._page(), animate=False, force=True)
        self._set_cursor(self._cursor - self._page())

    def action_scroll_top(self) -> None:
        self._apply_pending()
        self._set_cursor(0)

    def action_scroll_bottom(self) -> None:
        self._apply_pending()
        self._set_cursor(len(self._order) - 1)

    async def _on_click(self, event: events.Click) -> None:
        row = event.style.meta.get("row")
        if isinstance(row, int) and row >= 0:
            event.stop()
            self.move_cursor(row=row)

    def _update_title(self) -> None:
        parts = [f"{self.source.title} [{len(self._order)}/{len(self._all)}]"]
        if self.row_filter.text:
            parts.append(f"/{self.row_filter.text}")
        if self.since_label:
            parts.append(self.since_label)
        if self.marked:
            hidden = sum(1 for doc_id in self.marked if doc_id not in self._keys)
            parts.append(f"{MARK_GLYPH}{len(self.marked)}" + (f" ({hidden} hidden)" if hidden else ""))
        title = "  ".join(parts)
        if title != self.border_title:  # each assignment repaints the border
            self.border_title = title
        sort_label = next((c.label for c in self.source.columns if c.key == self.sort_column), "")
        subtitle = f"sort {sort_label.lower()}{' desc' if self.sort_reverse else ''}"
        if subtitle != self.border_subtitle:
            self.border_subtitle = subtitle

    # --- filter, marks, sort ----------------------------------------------------------------

    def set_filter(self, text: str) -> RowFilter:
        self.row_filter = RowFilter.parse(text)
        self._rebuild(reset_scroll=True)
        self.post_message(self.FilterChanged(self, self.row_filter, len(self._order)))
        return self.row_filter

    def set_marks(self, doc_ids: Iterable[str]) -> None:
        self._apply_pending()
        self.marked = {i for i in doc_ids if i in self._all}
        self.refresh()  # only the lines whose mark changed are drawn again
        self._update_title()
        self.post_message(self.MarksChanged(self, frozenset(self.marked)))

    def clear_marks(self) -> None:
        if self.marked:
            self.set_marks(())

    def action_mark(self) -> None:
        doc_id = self.cursor_id
        if doc_id is None:
            return
        self.set_marks(self.marked ^ {doc_id})
        self.action_cursor_down()

    def action_mark_all(self) -> None:
        shown = set(self.shown_ids())
        if shown and shown <= self.marked:
            self.set_marks(self.marked - shown)
        else:
            self.set_marks(self.marked | shown)

    def action_filter(self) -> None:
        if self.prompt_filter is not None:
            self.prompt_filter(self)

    def action_open(self) -> None:
        doc_id = self.cursor_id
        if doc_id is not None:
            self.post_message(self.Opened(self, doc_id))

    def set_sort(self, column: str, reverse: bool = False) -> None:
        keep = self.cursor_id
        self.sort_column = column
        self.sort_reverse = reverse
        self._rebuild(keep=keep)

    def on_key(self, event: events.Key) -> None:
        """k9s: shift and a letter sorts by the column whose name starts with it (again: the other way),
        unless that key is an action here (E evacuates, S stops: those win)."""
        letter = event.character
        if not letter or not (letter.isascii() and letter.isupper()) or event.key in self.screen.active_bindings:
            return
        column = next((c.key for c in self.source.columns if c.label.upper().startswith(letter)), None)
        if column is None:
            return
        event.stop()
        event.prevent_default()
        self.set_sort(column, not self.sort_reverse if column == self.sort_column else False)

    def action_sort(self) -> None:
        keys = [c.key for c in self.source.columns]
        index = keys.index(self.sort_column) if self.sort_column in keys else -1
        self.set_sort(keys[(index + 1) % len(keys)], self.sort_reverse)

    def action_sort_reverse(self) -> None:
        self.set_sort(self.sort_column, not self.sort_reverse)
