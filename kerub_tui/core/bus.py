"""The change feed: every committed document change, as (kind, id, old, new), to whoever listens
(ARCHITECTURE.md §4).

The planner and the screens consume it; ``serve --json-events`` prints it. Publishing is synchronous
and cheap (the store publishes after a commit); asynchronous subscribers get their own queue and may
live on an event loop other than the publisher's thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Document

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Change:
    kind: str
    id: str
    old: Document | None
    new: Document | None

    @property
    def deleted(self) -> bool:
        return self.new is None

    @property
    def created(self) -> bool:
        return self.old is None and self.new is not None


class Subscription:
    """An async iterator of changes, optionally limited to some kinds. Close it when done."""

    def __init__(self, feed: ChangeFeed, kinds: frozenset[str] | None) -> None:
        self._feed = feed
        self.kinds = kinds
        self._queue: asyncio.Queue[Change | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.closed = False

    def _deliver(self, change: Change | None) -> None:
        if self.closed and change is not None:
            return
        if threading.get_ident() == self._loop_thread:
            self._queue.put_nowait(change)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, change)

    def wants(self, change: Change) -> bool:
        return self.kinds is None or change.kind in self.kinds

    def close(self) -> None:
        if not self.closed:
            self._feed._remove(self)
            self._deliver(None)
            self.closed = True

    def pending(self) -> int:
        return self._queue.qsize()

    def drain_nowait(self) -> list[Change]:
        """Every change already queued, without waiting (for coalescing consumers)."""
        out = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                self.closed = True
                break
            out.append(item)
        return out

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Change:
        if self.closed and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            raise StopAsyncIteration
        return item

    async def get(self) -> Change:
        return await self.__anext__()


class ChangeFeed:
    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self._listeners: list[Callable[[Change], None]] = []
        self._lock = threading.Lock()

    def subscribe(self, kinds: Iterable[str] | None = None) -> Subscription:
        """Subscribe from inside a running event loop; changes arrive on that loop."""
        sub = Subscription(self, frozenset(kinds) if kinds is not None else None)
        with self._lock:
            self._subscriptions.append(sub)
        return sub

    def add_listener(self, listener: Callable[[Change], None]) -> Callable[[], None]:
        """A synchronous callback for every change, on the publisher's thread. Returns a remover."""
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscriptions:
                self._subscriptions.remove(sub)

    def publish(self, changes: Iterable[Change]) -> None:
        with self._lock:
            subs = list(self._subscriptions)
            listeners = list(self._listeners)
        for change in changes:
            for sub in subs:
                if sub.wants(change):
                    sub._deliver(change)
            for listener in listeners:
                try:
                    listener(change)
                except Exception:  # a broken listener must not stop the others or the writer
                    log.exception("change listener failed on %s/%s", change.kind, change.id)

    def close(self) -> None:
        with self._lock:
            subs = list(self._subscriptions)
        for sub in subs:
            sub.close()
