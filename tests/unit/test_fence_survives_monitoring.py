"""A fence survives the monitoring writer (issue 16): the executor writes its predicted host document
(HostDynamic.fence) straight to the store while a monitoring version of the same document, built before the
fence, still waits in the DocumentWriter. Written as it was, that version put the fence back to none, so the
next plan powered the host off again. Each test puts the writes in a fixed order: no timing."""

from __future__ import annotations

import datetime as dt

from kerub_tui.core import models as m
from kerub_tui.core.store import Store
from kerub_tui.hosts.monitor import DocumentWriter
from kerub_tui.planner.executor import Executor
from kerub_tui.planner.state import OperationalState
from kerub_tui.planner.steps.host import FenceHost

NOW = dt.datetime(2026, 12, 3, 17, 0, tzinfo=dt.UTC)


def _fleet(store: Store) -> m.Host:
    host = m.Host(name="a", address="10.0.0.1", power=m.PowerManagement(ipmi_address="bmc-a.example"))
    others = [m.Host(name=n, address=f"10.0.0.{i}") for i, n in ((2, "b"), (3, "c"))]
    store.put_many([host, *others, m.HostDynamic(id=host.id, status=m.HostStatus.down),
                    *(m.HostDynamic(id=h.id, status=m.HostStatus.up) for h in others)])
    return host


def _fence_as_the_executor_does(store: Store, host: m.Host) -> None:
    before = OperationalState.from_store(store, now=NOW)
    after = FenceHost(host=host.id).take(before)
    Executor(store, ops=None)._update_documents(before, after)  # type: ignore[arg-type]


async def test_a_pending_monitoring_version_does_not_write_over_the_plans_fence(tmp_path) -> None:
    store = Store.open(tmp_path)
    try:
        host = _fleet(store)
        writer = DocumentWriter(store, interval=3600.0)
        # monitoring: the host is still away (a reason, a drop); this version waits for the next flush
        seen = store.get(m.HostDynamic, host.id)
        writer.put(seen.evolve(status_reason="connection refused", drops=[NOW]))
        _fence_as_the_executor_does(store, host)
        assert store.get(m.HostDynamic, host.id).fence is not None
        assert writer.current(m.HostDynamic, host.id).fence is not None  # what monitoring builds on next
        writer.flush()
        await writer.drained()
        written = store.get(m.HostDynamic, host.id)
        assert written.fence is not None and written.fence.method == "ipmi"  # the fence stays
        assert written.status_reason == "connection refused" and written.drops == [NOW]  # monitoring's too
        state = OperationalState.from_store(store, now=NOW)
        assert FenceHost(host=host.id).blocked(state) == "a is already fenced"  # no second power-off
        writer.close()
    finally:
        store.close()
    reopened = Store.open(tmp_path)
    try:
        assert reopened.get(m.HostDynamic, host.id).fence is not None
    finally:
        reopened.close()


async def test_a_staged_flush_then_the_fence_then_the_next_flush(tmp_path) -> None:
    store = Store.open(tmp_path)
    try:
        host = _fleet(store)
        writer = DocumentWriter(store, interval=0.0)
        seen = store.get(m.HostDynamic, host.id)
        writer.put(seen.evolve(status_reason="no route to host"))
        writer.flush()  # staged: in memory now, its commit off the loop
        writer.put(seen.evolve(status_reason="still no route"))  # the next one, built before the fence
        _fence_as_the_executor_does(store, host)
        await writer.drained()
        written = store.get(m.HostDynamic, host.id)
        assert written.status_reason == "still no route" and written.fence is not None
        writer.close()
    finally:
        store.close()


async def test_a_host_up_again_is_fenced_no_more(tmp_path) -> None:
    """Monitoring ends a fence (the host answers): that it still writes."""
    store = Store.open(tmp_path)
    try:
        host = _fleet(store)
        writer = DocumentWriter(store, interval=3600.0)
        _fence_as_the_executor_does(store, host)
        fenced = store.get(m.HostDynamic, host.id)
        writer.put(fenced.with_status(m.HostStatus.up, None, NOW))
        writer.flush()
        await writer.drained()
        assert store.get(m.HostDynamic, host.id).fence is None
        writer.close()
    finally:
        store.close()
