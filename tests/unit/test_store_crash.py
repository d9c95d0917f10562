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

# Each writer is a process of its own, forked from a parent that imported the store's modules once
# and opened nothing (importing them is most of a Python process's start): the child opens the store,
# commits transactions and prints each batch number once committed, until it is SIGKILLed. The parent
# forks one writer per line on its stdin, says "writer PID", and "gone" once that writer is reaped, so
# every line the writer printed comes before "gone".
FORKING_PARENT = r"""
import os, sys
from kerub_tui.core import models as m
from kerub_tui.core.store import Store

for _ in sys.stdin:
    pid = os.fork()
    if pid == 0:
        sys.stdin.close()
        try:
            writer(sys.argv[1])
        finally:
            os._exit(1)
    print("writer", pid, flush=True)
    os.waitpid(pid, 0)
    print("gone", flush=True)
"""

WRITER = r"""
def writer(data_dir):
  store = Store.open(data_dir)
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
    # One write: print() writes the number and its newline apart, and a SIGKILL between them left "10"
    # for the parent's "gone" to finish as "10gone" (seen in a full run).
    sys.stdout.write(f"{batch}\n")
    sys.stdout.flush()
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


def kill_writers_at_random(tmp_path, writer_script: str, rounds: int, seed: int, check) -> None:
    """Fork ``rounds`` writers one after the other, SIGKILL each at a random moment once it acknowledged a
    first commit, and ``check(tmp_path, the last number it acknowledged)`` after each."""
    rng = random.Random(seed)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    parent = subprocess.Popen([sys.executable, "-c", writer_script + FORKING_PARENT, str(tmp_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        for _round in range(rounds):
            parent.stdin.write("go\n")
            parent.stdin.flush()
            started = parent.stdout.readline().split()
            assert started[:1] == ["writer"], f"no writer forked: {started!r}"
            # Let it commit, then kill it at a random moment inside the stream.
            first = parent.stdout.readline()
            assert first.strip().isdigit(), f"writer did not start: {first!r}"
            time.sleep(rng.uniform(0.0, 0.05))
            os.kill(int(started[1]), signal.SIGKILL)
            acknowledged = [int(first)]
            while (line := parent.stdout.readline()).strip() != "gone":
                assert line, "the forking parent died"
                acknowledged.append(int(line))
            check(tmp_path, max(acknowledged))
    finally:
        parent.stdin.close()
        assert parent.wait(timeout=60) == 0


def test_sigkill_mid_transaction_many_times(tmp_path):
    kill_writers_at_random(tmp_path, WRITER, rounds=40, seed=1234, check=_check)


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


# A monitoring writer flushing off the event loop (DocumentWriter: commit in its worker thread, applied on the
# loop), SIGKILLed at random moments: every flush it saw applied is in the file, whole, and at most the one in
# flight more. Each flush writes every host's document with the flush's number.
HOSTS = 40

FLUSH_WRITER = r"""
def writer(data_dir):
  import asyncio
  from kerub_tui.hosts.monitor import DocumentWriter

  async def main():
    store = Store.open(data_dir)
    start = max((int(d.cpu_user) + 1 for d in store.list(m.HostDynamic)), default=0)
    writer = DocumentWriter(store, interval=0.0)
    for flush in range(start, start + 100000):
      for host in range(%(hosts)d):
        # Big enough documents that a flush spans several pages of the file.
        writer.put(m.HostDynamic(id=f"h{host}", cpu_user=float(flush), memory_free=flush * 1024 + host,
                                 storage_free={f"pool{i}": flush for i in range(30)}))
      await writer.drained()
      assert store.get(m.HostDynamic, "h0").cpu_user == flush
      sys.stdout.write(f"{flush}\n")  # one write: see WRITER
      sys.stdout.flush()

  asyncio.run(main())
""" % {"hosts": HOSTS}  # noqa: UP031 - the script's own f-strings keep their braces


def _check_flushes(data_dir, last_applied):
    store = Store.open(data_dir)
    try:
        assert store.unreadable == {}
        hosts = store.list(m.HostDynamic)
        assert len(hosts) == HOSTS
        flushes = {int(h.cpu_user) for h in hosts}
        assert len(flushes) == 1, f"a flush committed in part: {sorted(flushes)}"
        newest = flushes.pop()
        assert last_applied <= newest <= last_applied + 1
        assert all(h.memory_free == newest * 1024 + int(h.id[1:]) for h in hosts)
        return newest
    finally:
        store.close()


def test_sigkill_mid_flush_off_the_loop_many_times(tmp_path):
    kill_writers_at_random(tmp_path, FLUSH_WRITER, rounds=12, seed=4321, check=_check_flushes)
