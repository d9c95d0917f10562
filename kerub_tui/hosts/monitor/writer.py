"""The document writer: monitored documents coalesced into at most one store write per document per interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from kerub_tui.core.models import Document
from kerub_tui.core.store import Store, StoreWriteError

log = logging.getLogger(__name__)


class DocumentWriter:
    """Pending document versions, written to the store at most once per ``interval`` seconds.

    Everything runs on the loop thread (the store is not thread-safe). A flush is scheduled only
    when something is pending: no timer runs while nothing changes.
    """

    def __init__(self, store: Store, interval: float = 1.0) -> None:
        self.store = store
        self.interval = interval
        self._pending: dict[tuple[str, str], Document | None] = {}
        self._handle: asyncio.Handle | None = None
        self._last_flush = 0.0
        self.writes = 0

    def current(self, cls: type[Any], doc_id: str) -> Any:
        key = (cls.model_fields["kind"].default, doc_id)
        if key in self._pending:
            return self._pending[key]
        return self.store.get(cls, doc_id)

    def put(self, doc: Document, *, urgent: bool = False) -> None:
        self._pending[(doc.kind, doc.id)] = doc
        self._schedule(urgent)

    def delete(self, cls: type[Any], doc_id: str, *, urgent: bool = True) -> None:
        self._pending[(cls.model_fields["kind"].default, doc_id)] = None
        self._schedule(urgent)

    def _schedule(self, urgent: bool) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.0 if urgent else max(0.0, self._last_flush + self.interval - loop.time())
        if self._handle is not None:
            if not urgent:
                return
            self._handle.cancel()
        self._handle = loop.call_later(delay, self.flush)

    def flush(self) -> None:
        self._handle = None
        pending, self._pending = self._pending, {}
        if not pending:
            return
        self._last_flush = asyncio.get_running_loop().time()
        try:
            with self.store.transaction():
                for (kind, doc_id), doc in pending.items():
                    if doc is None:
                        self.store.delete(kind, doc_id)
                    elif self.store.get(kind, doc_id) != doc:
                        self.store.put(doc)
                        self.writes += 1
        except StoreWriteError:  # the store says once that writes fail; these are tried again next time
            for key, doc in pending.items():
                self._pending.setdefault(key, doc)
        except Exception:
            log.exception("writing %d monitored documents failed", len(pending))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        with contextlib.suppress(RuntimeError):
            self.flush()
