"""LiveTable: a DataTable of documents, keyed by document id, updated in place from the change feed.

Rows are never rebuilt for an update: only the cells that changed are replaced, so nothing flickers
and the cursor stays on the same document through updates, sorting and filtering. ``/`` filters
(a regex, or plain text when it is not one; a leading ``!`` inverts), ``space`` marks, ``ctrl+a``
marks every row the filter shows, and bulk actions take ``selected_ids()``: the marks the filter shows,
else the row under the cursor. Marks the filter hides are kept but never acted on: the title counts them
and the action's confirmation says how many were left alone (``hidden_marks()``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowKey

from ..core.bus import Change
from .format import MARK_GLYPH, Cell, sort_key

MARK_COLUMN = "_mark"
# Removing a row from a DataTable costs O(rows): past this many removals, rebuild instead.
_REBUILD_AFTER_REMOVALS = 64


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


class LiveTable(DataTable, inherit_bindings=False):
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

    DEFAULT_CSS = """
    LiveTable { border: round $panel-lighten-2; height: 1fr; }
    LiveTable:focus { border: round $accent; }
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

    def __init__(self, source: RowSource, *, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, id=id, classes=classes)
        self.source = source
        self.row_filter = RowFilter()
        self.marked: set[str] = set()
        self.sort_column = source.default_sort
        self.sort_reverse = source.default_reverse
        self._cells: dict[str, Sequence[Cell]] = {}
        self._search: dict[str, tuple[str, ...]] = {}
        self._column_index = {c.key: i for i, c in enumerate(source.columns)}
        # Rows on show whose table cells lag behind ``_cells``: they were off screen when they
        # changed. Any update_cell makes the DataTable repaint every visible cell, so changes to
        # rows nobody can see wait until the rows scroll into view (or a sort needs them).
        self._stale: set[str] = set()
        self.loaded = False
        self.prompt_filter: Callable[[LiveTable], None] | None = None

    # --- loading ----------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.add_column(Text(" "), key=MARK_COLUMN, width=1)
        for column in self.source.columns:
            self.add_column(Text(column.label, style="bold"), key=column.key, width=column.width)
        self.load()

    def load(self) -> None:
        """Read every row from the source and show those the filter lets through."""
        self._cells.clear()
        self._search.clear()
        for doc_id in self.source.ids():
            cells = self.source.cells(doc_id)
            if cells is not None:
                self._remember(doc_id, cells)
        self.marked &= self._cells.keys()
        self._rebuild()
        self.loaded = True

    def _remember(self, doc_id: str, cells: Sequence[Cell]) -> None:
        self._cells[doc_id] = cells
        self._search[doc_id] = (*(c.plain for c in cells), doc_id)

    def _row(self, doc_id: str) -> list[Text]:
        mark = Cell(MARK_GLYPH, "bold yellow") if doc_id in self.marked else Cell(" ")
        return [mark, *self._cells[doc_id]]

    def _ordered(self, ids: Iterable[str]) -> list[str]:
        index = self._column_index.get(self.sort_column, 0)
        name_index = 0

        def key(doc_id: str) -> tuple:
            cells = self._cells[doc_id]
            return (sort_key(cells[index]), sort_key(cells[name_index]), doc_id)

        return sorted(ids, key=key, reverse=self.sort_reverse)

    def _rebuild(self) -> None:
        keep = self.cursor_id
        self._stale.clear()
        self.clear()
        for doc_id in self._ordered(i for i in self._cells if self.row_filter(self._search[i])):
            self.add_row(*self._row(doc_id), key=doc_id)
        self._restore_cursor(keep)
        self._update_title()

    # --- queries ----------------------------------------------------------------------------

    @property
    def cursor_id(self) -> str | None:
        if self.row_count == 0:
            return None
        try:
            row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except CellDoesNotExist:
            return None
        return row_key.value

    def shown_ids(self) -> list[str]:
        """The ids of the rows on show, in table order."""
        return [row.key.value for row in self.ordered_rows]  # type: ignore[misc]

    def is_shown(self, doc_id: str) -> bool:
        return doc_id in self.rows

    @property
    def total(self) -> int:
        return len(self._cells)

    def selected_ids(self) -> list[str]:
        """What a bulk action acts on: the marked rows the filter shows (in table order), else the cursor's
        row. Marks the filter hides are left alone (hidden_marks counts them)."""
        shown = [i for i in self.shown_ids() if i in self.marked]
        if shown:
            return shown
        cursor = self.cursor_id
        return [cursor] if cursor is not None else []

    def hidden_marks(self) -> int:
        """How many marked rows the filter hides (a bulk action leaves them alone)."""
        return len(self.marked - set(self.shown_ids())) if self.marked else 0

    def cells_of(self, doc_id: str) -> Sequence[Cell] | None:
        return self._cells.get(doc_id)

    # --- live updates -----------------------------------------------------------------------

    def apply_changes(self, changes: Iterable[Change]) -> None:
        """Bring the rows touched by ``changes`` up to date, in place."""
        if not self.loaded:
            return
        dirty: set[str] = set()
        kinds = self.source.kinds
        for change in changes:
            if change.kind in kinds:
                dirty.update(self.source.affected(change))
        if dirty:
            self.refresh_rows(dirty)

    def refresh_rows(self, doc_ids: Iterable[str]) -> None:
        keep = self.cursor_id
        need_sort = False
        removals: list[str] = []
        marks_changed = False
        sort_index = self._column_index.get(self.sort_column, 0)
        for doc_id in doc_ids:
            cells = self.source.cells(doc_id)
            shown = doc_id in self.rows
            if cells is None:
                if doc_id in self._cells:
                    del self._cells[doc_id]
                    del self._search[doc_id]
                if doc_id in self.marked:
                    self.marked.discard(doc_id)
                    marks_changed = True
                if shown:
                    removals.append(doc_id)
                self._stale.discard(doc_id)
                continue
            old = self._cells.get(doc_id)
            self._remember(doc_id, cells)
            matches = self.row_filter(self._search[doc_id])
            if shown and not matches:
                removals.append(doc_id)
                self._stale.discard(doc_id)
            elif not shown and matches:
                self.add_row(*self._row(doc_id), key=doc_id)
                need_sort = True
            elif shown and old is not None:
                if sort_index < len(old) and sort_key(old[sort_index]) != sort_key(cells[sort_index]):
                    need_sort = True
                if self._in_view(doc_id):
                    self._update_cells(doc_id, self.get_row(doc_id)[1:] if doc_id in self._stale else old, cells)
                    self._stale.discard(doc_id)
                else:
                    self._stale.add(doc_id)
        if len(removals) > _REBUILD_AFTER_REMOVALS:
            self._rebuild()
        else:
            for doc_id in removals:
                self.remove_row(doc_id)
            if need_sort:
                self._sort()
            self._restore_cursor(keep)
            self._update_title()
        if marks_changed:
            self.post_message(self.MarksChanged(self, frozenset(self.marked)))

    def _update_cells(self, doc_id: str, old: Sequence[Cell], new: Sequence[Cell]) -> None:
        for column, before, after in zip(self.source.columns, old, new):
            if before != after:
                grow = after.cell_len > self.columns[ColumnKey(column.key)].content_width
                self.update_cell(doc_id, column.key, after, update_width=grow and column.width is None)

    def _in_view(self, doc_id: str) -> bool:
        index = self._row_locations.get(RowKey(doc_id))
        if index is None:
            return False
        top = int(self.scroll_y)
        return top <= index < top + max(1, self.scrollable_content_region.height)

    def _catch_up(self, doc_ids: Iterable[str]) -> None:
        """Bring lagging rows' table cells up to date."""
        for doc_id in list(doc_ids):
            if doc_id in self.rows and doc_id in self._cells:
                self._update_cells(doc_id, self.get_row(doc_id)[1:], self._cells[doc_id])
            self._stale.discard(doc_id)

    def _catch_up_in_view(self) -> None:
        if self._stale:
            self._catch_up([i for i in self._stale if self._in_view(i)])

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        self._catch_up_in_view()
        super().watch_scroll_y(old_value, new_value)

    def on_resize(self) -> None:
        self._catch_up_in_view()

    def _sort(self) -> None:
        self._catch_up(self._stale)  # DataTable.sort reads its own cells
        index = self._column_index.get(self.sort_column, 0) + 1  # + the mark column
        self.sort(key=lambda values: (sort_key(values[index]), sort_key(values[1])), reverse=self.sort_reverse)

    def _restore_cursor(self, doc_id: str | None) -> None:
        if doc_id is None or doc_id not in self.rows:
            return
        index = self.get_row_index(doc_id)
        if index != self.cursor_row:
            self.move_cursor(row=index, scroll=False)

    def _update_title(self) -> None:
        parts = [f"{self.source.title} [{self.row_count}/{self.total}]"]
        if self.row_filter.text:
            parts.append(f"/{self.row_filter.text}")
        if self.marked:
            hidden = self.hidden_marks()
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
        self._rebuild()
        self.post_message(self.FilterChanged(self, self.row_filter, self.row_count))
        return self.row_filter

    def set_marks(self, doc_ids: Iterable[str]) -> None:
        new = {i for i in doc_ids if i in self._cells}
        changed = new ^ self.marked
        self.marked = new
        for doc_id in changed:
            if doc_id in self.rows:
                self.update_cell(doc_id, MARK_COLUMN, self._row(doc_id)[0])
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
        self._sort()
        self._restore_cursor(keep)
        self._update_title()

    def action_sort(self) -> None:
        keys = [c.key for c in self.source.columns]
        index = keys.index(self.sort_column) if self.sort_column in keys else -1
        self.set_sort(keys[(index + 1) % len(keys)], self.sort_reverse)

    def action_sort_reverse(self) -> None:
        self.set_sort(self.sort_column, not self.sort_reverse)
