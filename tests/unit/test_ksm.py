"""KSM builders and reader, run for real against /sys/kernel/mm/ksm (restored afterwards)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kerub_tui.core.models import KsmState
from kerub_tui.hosts.ksm import KSM_DIR, ksm_read_command, ksm_set, parse_ksm


def sh(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)


def test_ksm_set_text():
    assert ksm_set(run=True) == f"echo 1 > {KSM_DIR}/run"
    assert ksm_set(run=False) == f"echo 0 > {KSM_DIR}/run"  # stop scanning, keep what is merged: never 2
    assert ksm_set(run=True, pages_to_scan=500, sleep_millisecs=50) == (
        f"echo 500 > {KSM_DIR}/pages_to_scan && echo 50 > {KSM_DIR}/sleep_millisecs && echo 1 > {KSM_DIR}/run"
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"run": 1},
        {"run": "yes"},
        {"pages_to_scan": 0},
        {"pages_to_scan": -5},
        {"pages_to_scan": 1 << 32},
        {"pages_to_scan": True},
        {"pages_to_scan": "100; reboot"},
        {"sleep_millisecs": 2.5},
        {"sleep_millisecs": "$(reboot)"},
    ],
)
def test_ksm_set_refuses_bad_values(kwargs):
    with pytest.raises(ValueError):
        ksm_set(**kwargs)


@pytest.fixture
def ksm_sysfs():
    if os.geteuid() != 0:
        pytest.skip("needs root to write /sys/kernel/mm/ksm")
    if not os.access(f"{KSM_DIR}/run", os.W_OK):
        pytest.skip(f"{KSM_DIR} is not writable here")
    saved = parse_ksm(sh(ksm_read_command()).stdout)
    yield saved
    restore = ksm_set(run=saved.run, pages_to_scan=saved.pages_to_scan, sleep_millisecs=saved.sleep_millisecs)
    assert sh(restore).returncode == 0
    assert parse_ksm(sh(ksm_read_command()).stdout).run == saved.run


def test_read_this_host():
    done = sh(ksm_read_command())
    assert done.returncode == 0
    state = parse_ksm(done.stdout)
    assert state.available == Path(KSM_DIR, "run").exists()


def test_ksm_set_for_real(ksm_sysfs):
    saved: KsmState = ksm_sysfs
    pages, sleep = (saved.pages_to_scan or 100) + 7, (saved.sleep_millisecs or 20) + 3
    done = sh(ksm_set(run=True, pages_to_scan=pages, sleep_millisecs=sleep))
    assert done.returncode == 0, done.stderr
    now = parse_ksm(sh(ksm_read_command()).stdout)
    assert (now.run, now.pages_to_scan, now.sleep_millisecs) == (True, pages, sleep)
    assert sh(ksm_set(run=False)).returncode == 0
    assert parse_ksm(sh(ksm_read_command()).stdout).run is False


def test_kernel_without_ksm_is_a_fact_not_an_error():
    """In a mount namespace where /sys/kernel/mm is an empty tmpfs, as on a kernel built without KSM."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private mount namespace")
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs none /sys/kernel/mm && {ksm_read_command()}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert parse_ksm(done.stdout) == KsmState(available=False)
