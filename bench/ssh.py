"""SSH benchmark: connect + discover 1, 10 and 30 light lab hosts, against `ansible -m setup` on the
same hosts in the same run.

kerub-tui: a fresh Fleet adds every host at once (host keys already fetched and accepted, as after
the admin's confirmation): connect with the accepted fingerprint pinned, log in, run the discovery
command set (one channel per host) and store HostCapabilities. The fetch of the host keys (one key
exchange each, what the admin is shown) is timed apart. The figure compared with ansible is the
Fleet without monitoring (``monitoring=False``: what `ansible -m setup` does too, connect and gather
facts); the same with monitoring (the console's Fleet: each host's streams start once it is
discovered) is printed too, with its ratio: on the lab, whose hosts share this machine's cores,
the streams of the hosts discovered first slow the discovery of the others, which separate hosts
would not.
ansible: `ansible all -m setup` with one fork per host, the lab's key, strict host key checking
against the lab's known_hosts and a fresh ControlPath dir (no reused master connections).
Prints `name: value unit` lines and `ratio vs ansible: x` (kerub-tui time / ansible time: below 1
means kerub-tui is faster). Brings a light lab up (root needed) and down itself.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kerub_tui.core.store import Store
from kerub_tui.hosts.fleet import Fleet
from kerub_tui.ssh import SshSettings
from tests.lab import Lab, missing_prerequisites

COUNTS = (1, 10, 30)
SETTINGS = SshSettings(config=())


def ansible_binary() -> str | None:
    beside = Path(sys.executable).with_name("ansible")
    return str(beside) if beside.exists() else shutil.which("ansible")


async def kerub_connect_discover(hosts, work: Path, *, monitoring: bool) -> tuple[float, float, int]:
    """(seconds to fetch the host keys, seconds to connect + discover every host, hosts discovered)."""
    data = work / "data"
    store = Store.open(data)
    fleet = Fleet(store, data, ssh_settings=SETTINGS, monitoring=monitoring)
    await fleet.start()
    try:
        started = time.perf_counter()
        keys = await asyncio.gather(*(fleet.fetch_host_key(h.address, h.port) for h in hosts))
        fetched = time.perf_counter()
        added = await asyncio.gather(*(
            fleet.add_host(h.name, h.address, h.port, identity=str(h.client_key), accepted_fingerprint=fp)
            for h, (_, fp) in zip(hosts, keys)
        ))
        done = time.perf_counter()
        discovered = sum(1 for h in added if h.capabilities and h.capabilities.cpu.cpus > 0)
        return fetched - started, done - fetched, discovered
    finally:
        await fleet.stop()
        store.close()
        shutil.rmtree(data, ignore_errors=True)


def ansible_setup(ansible: str, hosts, work: Path) -> tuple[float, int]:
    """(seconds for `ansible all -m setup`, hosts whose facts came back)."""
    inventory = work / "inventory.ini"
    inventory.write_text("[lab]\n" + "".join(
        f"{h.name} ansible_host={h.address} ansible_port={h.port} ansible_user=root "
        f"ansible_ssh_private_key_file={h.client_key}\n" for h in hosts
    ))
    control = work / "cp"
    control.mkdir()
    known_hosts = hosts[0].known_hosts
    env = {
        **os.environ,
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_SSH_ARGS": f"-o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile={known_hosts} "
                            "-o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control),
        "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
        "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
        "ANSIBLE_CONFIG": str(work / "none.cfg"),
        "LC_ALL": "C.UTF-8",
    }
    started = time.perf_counter()
    result = subprocess.run(
        [ansible, "all", "-i", str(inventory), "-m", "setup", "-f", str(len(hosts))],
        capture_output=True, text=True, env=env, timeout=600,
    )
    elapsed = time.perf_counter() - started
    # The persistent master connections would outlive the run: close them.
    for h in hosts:
        subprocess.run(["ssh", "-o", f"ControlPath={control}/%C", "-O", "exit", "-p", str(h.port),
                        f"root@{h.address}"], capture_output=True, timeout=30)
    # the ad-hoc output: "NAME | SUCCESS => {facts}" per host that answered
    names = {h.name for h in hosts}
    ok = len({line.split(" | ", 1)[0] for line in result.stdout.splitlines()
              if " | SUCCESS" in line and line.split(" | ", 1)[0] in names})
    if ok != len(hosts):
        sys.stderr.write(f"ansible: {ok}/{len(hosts)} hosts answered\n{result.stderr[-2000:]}\n")
    return elapsed, ok


def main() -> int:
    reason = missing_prerequisites(light=True)
    if reason:
        print(f"ssh bench skipped: {reason}")
        return 0
    ansible = ansible_binary()
    lab = Lab.up(max(COUNTS), light=True)
    work = Path(tempfile.mkdtemp(prefix="kerub-bench-ssh-"))
    try:
        for count in COUNTS:
            hosts = lab.hosts[:count]
            figures = {}
            for monitoring in (False, True):
                run_dir = work / f"kerub{count}{'m' if monitoring else ''}"
                run_dir.mkdir()
                fetch, seconds, discovered = asyncio.run(kerub_connect_discover(hosts, run_dir, monitoring=monitoring))
                if discovered != count:
                    sys.stderr.write(f"kerub-tui: {discovered}/{count} hosts discovered\n")
                figures[monitoring] = seconds
                if not monitoring:
                    print(f"ssh host key fetch {count} hosts: {fetch:.3f} s")
                    print(f"ssh connect+discover {count} hosts: {seconds:.3f} s")
                    print(f"ssh connect+discover per host at {count}: {seconds / count * 1000:.1f} ms")
                else:
                    print(f"ssh connect+discover {count} hosts, monitoring started: {seconds:.3f} s")
            if ansible is None:
                print("ansible: not installed (pip install ansible-core): no ratio")
                continue
            ansible_dir = work / f"ansible{count}"
            ansible_dir.mkdir()
            ansible_seconds, ok = ansible_setup(ansible, hosts, ansible_dir)
            print(f"ansible setup {count} hosts: {ansible_seconds:.3f} s")
            if ok == count:
                print(f"ssh connect+discover {count} hosts ratio vs ansible: {figures[False] / ansible_seconds:.2f}x")
                print(f"ssh connect+discover {count} hosts, monitoring started, ratio vs ansible: "
                      f"{figures[True] / ansible_seconds:.2f}x")
    finally:
        lab.down()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
