"""The document writer: monitored documents coalesced into at most one store write per document per interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kerub_tui.core.metrics import MetricsError, Recorder, sample_of
from kerub_tui.core.models import Document
from kerub_tui.core.store import Staged, Store, StoreWriteError

log = logging.getLogger(__name__)

Pending = dict[tuple[str, str], Document | None]
_OVER: dict[type, Any] = {}  # a document class's monitored_over, or None


class DocumentWriter:
    """Pending document versions, written to the store at most once per ``interval`` seconds.

    A flush is scheduled only when something is pending: no timer runs while nothing changes. A flush
    puts the documents that changed into the store's memory on the loop, as one step, and tells the
    change feed (``Store.stage``, ``publish_staged``: every reader and listener sees them at once, as with
    an on-loop flush); they are serialised and committed off the loop, in this writer's worker thread
    (``Store.commit_staged``: one writer at a time, the library's calls release the GIL). If the file
    refuses them, memory is put back and the feed told (``Store.apply_committed``), and they are pending
    again. A transaction meanwhile waits for that commit, so the file is written in the order memory
    changed. One flush runs at a time; what is put meanwhile waits for the next.
    ``off_loop=False`` writes on the loop in one transaction (the bench's baseline).

    The worker thread also hands each committed flush's host and VM figures to the metrics history
    (``core/metrics.Recorder``, ``metrics.sqlite`` in the data dir; ``metrics=False``: none), so no
    sample is written on the loop. A metrics file that fails is logged, never a failed flush.
    """

    def __init__(self, store: Store, interval: float = 1.0, *, off_loop: bool = True,
                 metrics: bool = True) -> None:
        self.store = store
        self.metrics = metrics and not store.readonly
        self._recorder: Recorder | None = None
        self.interval = interval
        self.off_loop = off_loop
        self._pending: Pending = {}
        self._inflight: Pending = {}  # staged, being committed by the worker thread
        self._running: asyncio.Future[int] | None = None
        self._handle: asyncio.Handle | None = None
        self._last_flush = 0.0
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self.writes = 0

    def current(self, cls: type[Any], doc_id: str) -> Any:
        key = (cls.model_fields["kind"].default, doc_id)
        if key in self._pending:
            doc = self._pending[key]
            over = getattr(doc, "monitored_over", None)
            return doc if over is None else over(self.store.get(cls, doc_id))
        return self.store.get(cls, doc_id)  # what a flush staged is there already

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
        if self._running is not None or self._closed:  # one at a time: the next starts when this one is applied
            return
        pending, self._pending = self._pending, {}
        if not pending:
            return
        loop = asyncio.get_running_loop()
        self._last_flush = loop.time()
        if not self.off_loop:
            self._flush_on_loop(pending)
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kerub-store-writer")
        try:
            staged = self.store.stage(self._over_stored(pending))
        except Exception:
            log.exception("writing %d monitored documents failed", len(pending))
            return
        if not staged.items:
            return
        self._inflight = pending
        self._running = loop.run_in_executor(self._executor, self._commit, staged)
        self._running.add_done_callback(self._committed)
        self.store.publish_staged(staged)

    def _commit(self, staged: Staged) -> int:
        """In the worker thread: the commit, then its figures into the metrics history."""
        written = self.store.commit_staged(staged)
        self._record(staged)
        return written

    def _record(self, staged: Staged) -> None:
        if not self.metrics:
            return
        now = time.time()
        try:
            if self._recorder is None:
                self._recorder = Recorder(self.store.data_dir)
            samples = [s for kind, doc_id, _old, doc in staged.items if (s := sample_of(kind, doc_id, doc, now))]
            self._recorder.observe(samples, now)
        except MetricsError as error:
            log.warning("metrics history: %s", error)
            self.metrics = False  # said once; the documents are written on
        except Exception:
            log.exception("metrics history failed")
            self.metrics = False

    def _committed(self, running: asyncio.Future[int]) -> None:
        """On the loop: publish what the worker committed, or keep the documents for the next flush."""
        if running is not self._running:  # close() took care of it
            return
        pending, self._inflight, self._running = self._inflight, {}, None
        try:
            self.writes += running.result()
        except StoreWriteError:  # the store says once that writes fail; these are tried again next time
            self._requeue(pending)
        except asyncio.CancelledError:
            self._requeue(pending)
        except Exception:
            log.exception("writing %d monitored documents failed", len(pending))
        try:
            self.store.apply_committed()
        except Exception:
            log.exception("applying %d monitored documents failed", len(pending))
        if self._pending and not self._closed:
            self._schedule(False)

    def _over_stored(self, pending: Pending) -> list[tuple[str, str, Document | None]]:
        """The pending versions as they are written: each over what the store holds now, keeping the fields
        monitoring does not own (``monitored_over``: a host's fence that a plan or the admin wrote directly
        while this version waited). On the loop, in the same step as the write, so nothing comes between."""
        out: list[tuple[str, str, Document | None]] = []
        for (kind, doc_id), doc in pending.items():
            # Looked up once per class: pydantic answers a missing name slowly (its __getattr__ raises), and most
            # documents here (a VM's dynamic) have none.
            cls = type(doc)
            if cls not in _OVER:
                _OVER[cls] = getattr(cls, "monitored_over", None)
            over = _OVER[cls]
            if over is not None:
                doc = over(doc, self.store.get(kind, doc_id))
            out.append((kind, doc_id, doc))
        return out

    def _requeue(self, pending: Pending) -> None:
        for key, doc in pending.items():
            self._pending.setdefault(key, doc)

    def _flush_on_loop(self, pending: Pending) -> None:
        try:
            with self.store.transaction():
                for kind, doc_id, doc in self._over_stored(pending):
                    if doc is None:
                        self.store.delete(kind, doc_id)
                    elif self.store.get(kind, doc_id) != doc:
                        self.store.put(doc)
                        self.writes += 1
        except StoreWriteError:
            self._requeue(pending)
        except Exception:
            log.exception("writing %d monitored documents failed", len(pending))

    async def drained(self) -> None:
        """Wait until nothing is pending or being written (tests, and a controller stopping)."""
        while (self._pending or self._running is not None) and not self._closed:
            running = self._running
            if running is None:
                self.flush()
                continue
            with contextlib.suppress(Exception):
                await asyncio.shield(running)
            while self._running is running:  # its done callback applies it
                await asyncio.sleep(0)

    def close(self) -> None:
        """Write what is pending now (waiting for a flush still running), then stop the worker thread."""
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)  # the flush running ends; its done callback may never run
            self._executor = None
        if self._running is not None:
            # The worker is done; its result reaches the loop later (or never, the loop gone): whatever
            # it committed is applied now (put back if it failed), and its documents written again below.
            self._requeue(self._inflight)
            self._inflight, self._running = {}, None
            with contextlib.suppress(Exception):
                self.store.apply_committed()
        pending, self._pending = self._pending, {}
        if pending:
            try:
                staged = self.store.stage(self._over_stored(pending))
                self.writes += self._commit(staged)
                self.store.publish_staged(staged)
            except Exception:
                log.exception("writing %d monitored documents at close failed", len(pending))
            with contextlib.suppress(Exception):
                self.store.apply_committed()
        if self._recorder is not None:
            with contextlib.suppress(Exception):
                self._recorder.close(time.time())  # the minute in progress, as far as it went
            self._recorder = None
