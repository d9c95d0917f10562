"""Command line benchmark: how long a one-shot command takes, against libvirt's own CLI in the same run.

kerub-tui: `kerub-tui vm list` on an empty data dir, alone (it opens the store itself) and through a
running `kerub-tui serve` (it sends the command over control.sock), each run as a fresh process, as an
admin or a script runs it. Peer: `virsh -c test:///default list` (libvirt's test driver: no daemon, no
host). Prints `name: value unit` lines (the median of RUNS) and `ratio vs virsh: x`.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = 7


def median_seconds(argv: list[str], env: dict[str, str]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="kerub-bench-cli-"))
    env = dict(os.environ, KERUB_TUI_DATA=str(work / "data"), KERUB_TUI_CONFIG=str(work / "config"))
    kerub = [sys.executable, "-m", "kerub_tui"]
    serve = None
    try:
        subprocess.run([*kerub, "vm", "list"], env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        alone = median_seconds([*kerub, "vm", "list"], env)
        serve = subprocess.Popen([*kerub, "serve"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        assert serve.stderr is not None and "serving" in serve.stderr.readline()
        through = median_seconds([*kerub, "vm", "list"], env)
        virsh_path = shutil.which("virsh")
        peer = median_seconds([virsh_path, "-c", "test:///default", "list"], env) if virsh_path else None
    finally:
        if serve is not None:
            serve.terminate()
            serve.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    print(f"vm list, no controller running: {alone * 1000:.0f} ms")
    print(f"vm list, through a running serve: {through * 1000:.0f} ms")
    if peer is None:
        print("virsh: not installed (no peer figure)")
    else:
        print(f"virsh -c test:///default list: {peer * 1000:.0f} ms")
        print(f"ratio vs virsh (no controller): {alone / peer:.1f}")
        print(f"ratio vs virsh (through serve): {through / peer:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
