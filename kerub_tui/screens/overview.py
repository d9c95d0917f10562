"""What the screens derive from the documents and keep up to date from the change feed.

The console API's queries answer most questions directly (the store is in memory); this adds the few
views it has no index for: recent figures per host (sparklines), which disks are shared from which host, and which
expectations are violated right now.

Violations come from the planner's Events: ``type="violation"`` with ``target`` the VM or disk id and
a message ``"<expectation spec>: <reason>"``; ``type="violation-cleared"`` with the same target and
spec clears it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from ..api import ConsoleQueries
from ..core.bus import Change
from ..core.models import DOCUMENT_TYPES, Event, Host, HostConfiguration, HostDynamic
from .history import FigureHistory

VIOLATION = "violation"
VIOLATION_CLEARED = "violation-cleared"


def violation_key(message: str) -> str:
    """The expectation a violation message is about: the text before the first ': '."""
    return message.split(": ", 1)[0].strip()


class Overview:
    """The console's overview of the controller's documents (read through the API's queries), fed by
    the same changes the screens get: each host's recent figures, which disks are shared where, the
    open expectation violations. (Not the hosts' Fleet of hosts/fleet.py: the console has no hosts.)"""

    def __init__(self, api: ConsoleQueries) -> None:
        self.api = api
        self.history = FigureHistory()
        # disk id -> {(host id, "nfs"|"iscsi"|"mount")}
        self.sharing: dict[str, set[tuple[str, str]]] = defaultdict(set)
        # target id -> {expectation spec: reason}
        self.violations: dict[str, dict[str, str]] = defaultdict(dict)
        self._config_disks: dict[str, set[tuple[str, str]]] = {}
        self.reload()

    def reload(self) -> None:
        self.sharing.clear()
        self.violations.clear()
        self._config_disks.clear()
        for config in self.api.documents(HostConfiguration):
            self._index_config(config.id, config)
        for target, specs in self.api.open_violations().items():  # kept by the history: no event is read
            self.violations[target].update(specs)
        for dyn in self.api.documents(HostDynamic):
            self.history.record(dyn, self._memory_total(dyn.id))

    def _memory_total(self, host_id: str) -> int | None:
        host = self.api.get(Host, host_id)
        if host is not None and host.capabilities is not None and host.capabilities.memory_bytes:
            return host.capabilities.memory_bytes
        return None

    def _index_config(self, host_id: str, config: HostConfiguration | None) -> set[str]:
        """Re-index one host's configuration; returns the disk ids whose sharing changed."""
        before = self._config_disks.pop(host_id, set())
        after: set[tuple[str, str]] = set()
        if config is not None:
            after |= {(e.disk_id, "nfs") for e in config.exports if e.disk_id}
            after |= {(t.disk_id, "iscsi") for t in config.iscsi_targets if t.disk_id}
            after |= {(m.disk_id, "mount") for m in config.mounts if m.disk_id}
            self._config_disks[host_id] = after
        for disk_id, how in before - after:
            self.sharing[disk_id].discard((host_id, how))
            if not self.sharing[disk_id]:
                del self.sharing[disk_id]
        for disk_id, how in after - before:
            self.sharing[disk_id].add((host_id, how))
        return {d for d, _ in before ^ after}

    def _index_event(self, event: Event) -> str | None:
        if event.target is None or event.type not in (VIOLATION, VIOLATION_CLEARED):
            return None
        key = violation_key(event.message)
        if event.type == VIOLATION:
            self.violations[event.target][key] = event.message
        else:
            open_ = self.violations.get(event.target)
            if open_ is not None:
                open_.pop(key, None)
                if not open_:
                    del self.violations[event.target]
        return event.target

    def apply(self, changes: Iterable[Change]) -> None:
        for change in changes:
            if isinstance(change.new, HostDynamic):
                self.history.record(change.new, self._memory_total(change.id))
            elif change.kind == "host" and change.new is None:
                self.history.forget(change.id)
            elif change.kind == "host-config":
                self._index_config(change.id, change.new if isinstance(change.new, HostConfiguration) else None)
            elif isinstance(change.new, Event) and change.old is None:
                self._index_event(change.new)

    def open_violations(self, target_id: str) -> dict[str, str]:
        return dict(self.violations.get(target_id, {}))

    def host_name(self, host_id: str | None) -> str:
        if not host_id:
            return "-"
        host = self.api.get(Host, host_id)
        return host.name if host is not None else host_id[:8]

    def name_of(self, kind: str, doc_id: str) -> str:
        doc = self.api.get(DOCUMENT_TYPES[kind], doc_id)
        return getattr(doc, "name", None) or doc_id[:8]
