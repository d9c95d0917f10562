"""A full or read-only disk under the data dir (issue 17 item 8): every refused write is one clear
line, the controller keeps running and says once that writes fail (and once that they work again),
and clients get an answer instead of "closed the control socket without answering"."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kerub_tui.controller import Controller
from kerub_tui.core.models import Event, VirtualStorageDevice
from kerub_tui.core.store import Store, StoreWriteError
from kerub_tui.sim import Timing
from tests import cliproc

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


@pytest.fixture
def small_fs(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(mount: Path) -> Path:
    filler = mount / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
    return filler


def kerub(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return cliproc.kerub(argv, env=env, timeout=300)


def test_a_full_disk_refuses_each_write_with_one_line_and_nothing_half_done(small_fs):
    store = Store.open(small_fs / "data")
    store.put(VirtualStorageDevice(name="before", size=1 << 30))
    filler = fill(small_fs)
    with pytest.raises(StoreWriteError, match=r"cannot write to .*: the disk is full; nothing was changed"):
        store.put_many([Event(type="x", message="y" * 4000) for _ in range(100)])
    assert store.write_failure == "the disk is full"
    assert store.count(Event) == 0  # nothing of the refused transaction is kept, in memory either
    filler.unlink()
    store.put(Event(type="x", message="after"))
    assert store.write_failure is None
    store.close()
    again = Store.open(small_fs / "data")
    assert [d.name for d in again.list(VirtualStorageDevice)] == ["before"] and again.count(Event) == 1
    again.close()


def test_a_write_that_fits_in_a_still_full_disk_does_not_say_works_again(small_fs, caplog):
    """CI saw "fails", "works again", "fails", "works again" from one full disk: a small write fitted in
    what the file system had left. Kept, but the disk is still full until it has room again."""
    store = Store.open(small_fs / "data")
    filler = fill(small_fs)
    with pytest.raises(StoreWriteError):
        store.put_many([Event(type="x", message="y" * 4000) for _ in range(100)])
    os.truncate(filler, max(0, filler.stat().st_size - (256 << 10)))  # 256 KiB free: far from "room again"
    with caplog.at_level("WARNING", logger="kerub_tui.core.store"):
        store.put(Event(type="x", message="fits"))
        assert store.count(Event) == 1
        assert store.write_failure == "the disk is full"
        filler.unlink()
        store.put(Event(type="x", message="after"))
    assert store.write_failure is None
    assert [r.getMessage().endswith("works again") for r in caplog.records].count(True) == 1, caplog.text
    store.close()


def _seed(data_dir: Path) -> None:
    async def seed() -> None:
        controller = Controller(data_dir, sim_timing=Timing(scale=0.0, connect=0.0, boot=0.0))
        await controller.start()
        await controller.add_simulated_host("sim1", "r640")
        await controller.add_simulated_host("sim2", "mini")
        await controller.stop()

    asyncio.run(seed())


def test_serve_keeps_running_on_a_full_disk_and_says_so_once(small_fs, tmp_path):
    data = small_fs / "data"
    _seed(data)  # simulated hosts: their monitoring writes all the time, as real ones do
    env = dict(os.environ, KERUB_TUI_DATA=str(data), KERUB_TUI_CONFIG=str(tmp_path / "config"),
               PYTHONUNBUFFERED="1")
    serve = subprocess.Popen([sys.executable, "-m", "kerub_tui", "serve"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(serve.stderr), daemon=True)
    try:
        assert "serving" in serve.stderr.readline()
        reader.start()
        filler = fill(small_fs)
        for argv in (["disk", "create", "d1", "--size", "1G"], ["vm", "create", "v1", "--memory", "1G"]):
            refused = kerub(*argv, env=env)
            assert refused.returncode == 1
            assert refused.stderr.splitlines() == [f"kerub-tui: cannot write to {data / 'kerub.unqlite'}: "
                                                   "the disk is full; nothing was changed"], refused.stderr
        # Monitoring keeps trying to write meanwhile: wait until the store has refused it a while.
        deadline = time.monotonic() + 120
        while not any("fails (the disk is full)" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.2)
        listed = kerub("host", "list", env=env)  # reading still works
        assert listed.returncode == 0 and "sim1" in listed.stdout
        filler.unlink()
        created = kerub("disk", "create", "d1", "--size", "1G", env=env)
        assert created.returncode == 0, created.stderr
        assert serve.poll() is None, "the controller died"
    finally:
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(timeout=60)
        reader.join(timeout=10)
    output = "".join(lines)
    assert code == 0
    assert "Traceback" not in output, output
    assert sum("fails (the disk is full)" in line for line in lines) == 1, output
    assert sum("works again" in line for line in lines) == 1, output


def test_a_read_only_data_dir_is_one_line(tmp_path):
    data = tmp_path / "data"
    env = dict(os.environ, KERUB_TUI_DATA=str(data), KERUB_TUI_CONFIG=str(tmp_path / "config"))
    assert kerub("disk", "create", "d1", "--size", "1G", env=env).returncode == 0
    if subprocess.run(["mount", "--bind", "-o", "ro", str(data), str(data)]).returncode != 0:
        pytest.skip("cannot bind-mount read-only here")
    try:
        for argv in (["vm", "list"], ["disk", "create", "d2", "--size", "1G"], ["serve"]):
            refused = kerub(*argv, env=env)
            assert refused.returncode == 1, (argv, refused.stdout)
            lines = refused.stderr.splitlines()
            assert len(lines) == 1 and "Read-only file system" in lines[0], (argv, refused.stderr)
        assert "d1" in kerub("--readonly", "disk", "list", env=env).stdout  # reading it is still possible
    finally:
        subprocess.run(["umount", str(data)], check=True)
