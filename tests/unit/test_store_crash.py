"""A writer SIGKILLed in the middle of a stream of transactions never leaves half a change behind."""

import os
import random
import signal
import subprocess
import sys
import time

from kerub_tui.core import models as m
from kerub_tui.core.store import Store

BATCH = 6

WRITER = r"""
import sys
from kerub_tui.core import models as m
from kerub_tui.core.store import Store

store = Store.open(sys.argv[1])
start = len(store.list(m.VirtualStorageDevice)) // %(batch)d
for batch in range(start, start + 100000):
    with store.transaction():
        for part in range(%(batch)d):
            # Big enough documents that a transaction spans several pages of the file.
            store.put(m.VirtualStorageDevice(id=f"b{batch}-p{part}", name=f"b{batch}-p{part}",
                                             size=(batch + 1) * 1024 + part,
                                             expectations=[{"type": "not-same-storage", "disks": [f"x{i}" for i in range(40)]}]))
        store.put(m.Settings(optimisation={"load_balancing_hold_seconds": batch}))
        if batch %% 3 == 0 and batch:
            store.delete(m.VirtualStorageDevice, f"b{batch - 1}-p0")
            store.put(m.VirtualStorageDevice(id=f"b{batch - 1}-p0", name=f"b{batch - 1}-p0",
                                             size=batch * 1024, expectations=[]))
    print(batch, flush=True)
""" % {"batch": BATCH}  # noqa: UP031 - the script's own f-strings keep their braces


def _check(data_dir, last_committed):
    store = Store.open(data_dir)
    try:
        assert store.unreadable == {}
        disks = {d.id: d for d in store.list(m.VirtualStorageDevice)}
        batches = {}
        for doc_id in disks:
            batch, _, part = doc_id[1:].partition("-p")
            batches.setdefault(int(batch), set()).add(int(part))
        # Every batch is whole: a crash never commits part of a transaction.
        assert all(parts == set(range(BATCH)) for parts in batches.values()), batches
        newest = max(batches, default=-1)
        # Everything acknowledged as committed is there; at most the in-flight one more.
        assert last_committed <= newest <= last_committed + 1
        assert sorted(batches) == list(range(newest + 1))
        settings = store.get(m.Settings, "settings")
        assert settings is not None and settings.optimisation.load_balancing_hold_seconds == newest
        return newest
    finally:
        store.close()


def test_sigkill_mid_transaction_many_times(tmp_path):
    rng = random.Random(1234)
    last_committed = -1
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for _round in range(40):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                                env=env)
        # Let it commit a few transactions, then kill it at a random moment inside the stream.
        first = proc.stdout.readline()
        assert first.strip().isdigit(), f"writer did not start: {first!r}"
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate()
        acknowledged = [int(x) for x in [first, *rest.split()] if x.strip()]
        last_committed = max(acknowledged)
        last_committed = _check(tmp_path, last_committed)


HOLD_OPEN_TRANSACTION = r"""
import sys, time
from kerub_tui.core import models as m
from kerub_tui.core.store import Store
store = Store.open(sys.argv[1])
store.put(m.VirtualMachine(id="committed", name="committed"))
with store.transaction():
    for i in range(500):
        store.put(m.VirtualMachine(id=f"pending{i}", name=f"pending{i}"))
    print("inside", flush=True)
    time.sleep(120)
"""


def test_killed_writer_is_rolled_back_and_the_file_rebuilt(tmp_path):
    import pytest

    from kerub_tui.core.store import StoreError

    proc = subprocess.Popen([sys.executable, "-c", HOLD_OPEN_TRANSACTION, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "inside"
    proc.kill()
    proc.wait()
    journal = tmp_path / "kerub.unqlite_unqlite_journal"
    assert journal.exists(), "the killed transaction left no journal: this test no longer tests recovery"
    # A read-only reader must not read half a transaction: it says what to do instead.
    with pytest.raises(StoreError, match="not closed cleanly"):
        Store.open(tmp_path, readonly=True)
    store = Store.open(tmp_path)
    assert [v.id for v in store.list(m.VirtualMachine)] == ["committed"]
    assert not journal.exists()
    # The rebuilt file takes many more transactions without the IO errors a damaged one gives.
    for i in range(300):
        store.put(m.VirtualMachine(id=f"after{i}", name=f"after{i}"))
    store.close()
    readonly = Store.open(tmp_path, readonly=True)
    assert readonly.count(m.VirtualMachine) == 301
    readonly.close()
