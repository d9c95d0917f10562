"""What the lab tests of the SSH transport and the fleet share: quick transport settings, waiting
for a condition, and the processes the controller left on a lab host."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from kerub_tui.ssh import SshSettings
from kerub_tui.ssh.commands import PROCESS_TAG
from tests import cliproc

SETTINGS = SshSettings(config=(), keepalive_interval=1.0, keepalive_count_max=2, backoff_initial=0.1,
                       backoff_max=1.0, connect_timeout=10.0)
DEADLINE = 60.0  # generous: waits assert what happens and in which order, not how fast


async def until(predicate, what: str, timeout: float = DEADLINE):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def started_by_us(host, *needles: str) -> list[str]:
    """Command lines of the host's processes that the controller started (or that match needles)."""
    marks = (PROCESS_TAG, "vmstat", "@@kerub", *needles)
    return [c for c in map(cmdline, host.pids()) if any(m in c for m in marks)]


def kerub(*argv: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """kerub-tui's command line as a user runs it, in its own process, on the data dir of ``env``."""
    return cliproc.kerub(argv, env=env, timeout=timeout)
