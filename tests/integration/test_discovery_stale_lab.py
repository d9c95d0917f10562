"""Against the lab: after a good discovery, a broken lscpu keeps the host's last good facts (marked
stale, with an event) instead of an empty host, and the planner takes no new guests there until a
discovery reads them again; a login shell that prints a banner does not touch the facts."""

from __future__ import annotations

import contextlib
import shlex
import shutil
from collections.abc import Iterator

import pytest

from kerub_tui.core.models import Event, Host
from kerub_tui.planner.checkers import host_usable
from kerub_tui.planner.state import OperationalState

from .test_fleet import add, fleet_on

pytestmark = pytest.mark.lab


@contextlib.contextmanager
def fake_tools(host, tools: dict[str, str]) -> Iterator[None]:
    """Scripts named after tools, first in the PATH of the host's SSH sessions: a directory bound
    over /usr/local/bin and /usr/local/sbin inside the host's own mount namespace only."""
    directory = host.dir / "fake-tools"
    directory.mkdir(exist_ok=True)
    for name, script in tools.items():
        path = directory / name
        path.write_text(script)
        path.chmod(0o755)
    q = shlex.quote(str(directory))
    host.run(f"mount --bind {q} /usr/local/bin && mount --bind {q} /usr/local/sbin", check=True)
    try:
        for name in tools:
            found = host.ssh(f"command -v {shlex.quote(name)}").stdout.strip()
            assert found.startswith("/usr/local/"), f"the fake {name} is not the one found ({found!r})"
        yield
    finally:
        host.run("umount /usr/local/sbin; umount /usr/local/bin")
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def login_banner(host, text: str) -> Iterator[None]:
    """root's ~/.bashrc on the host echoes ``text`` first: every SSH command prints it."""
    bashrc = host.dir / "root" / ".bashrc"
    before = bashrc.read_text() if bashrc.exists() else None
    bashrc.write_text(f"echo {shlex.quote(text)}\n" + (before or ""))
    try:
        assert host.ssh("true").stdout.startswith(text.splitlines()[0]), "the banner is not printed"
        yield
    finally:
        if before is None:
            bashrc.unlink()
        else:
            bashrc.write_text(before)


BROKEN_LSCPU = """#!/bin/sh
echo '{"lscpu": [ {"field": "Architecture:", "data": '
echo 'lscpu: cannot read /sys/devices/system/cpu: Input/output error' >&2
exit 0
"""


def stale_events(store, host: Host) -> list[Event]:
    return sorted((e for e in store.list(Event) if e.host_id == host.id and e.type.startswith("facts-")),
                  key=lambda e: e.time)


async def test_a_broken_lscpu_keeps_the_cpu_facts_stale_until_it_is_read_again(clean_lab, tmp_path):
    host = clean_lab.hosts[0]
    async with fleet_on(tmp_path) as (fleet, store):
        added = await add(fleet, host)
        good = added.capabilities
        assert good.cpu.cpus > 0 and good.memory_bytes > 0 and good.storage and good.stale == []
        with fake_tools(host, {"lscpu": BROKEN_LSCPU}):
            again = await fleet.rediscover(added.id)
        caps = again.capabilities
        assert store.get(Host, added.id).capabilities == caps
        # the last good CPU facts, not "0 threads"; everything else read afresh
        assert caps.cpu == good.cpu
        assert [(s.section, s.read_at) for s in caps.stale] == [("cpu", good.discovered_at)]
        assert caps.stale[0].since == caps.discovered_at > good.discovered_at
        assert "lscpu" in caps.stale[0].reason
        assert caps.memory_bytes == good.memory_bytes and caps.storage_by_id(f"lvm:{host.vg}") is not None
        [event] = stale_events(store, added)
        assert event.type == "facts-stale" and "could not read cpu" in event.message
        reason = host_usable(OperationalState.from_store(store), added.id)
        assert reason is not None and "facts not current (cpu not read since" in reason
        # lscpu works again: the facts are current, and it is said so
        healed = await fleet.rediscover(added.id)
        assert healed.capabilities.stale == [] and healed.capabilities.cpu == good.cpu
        assert [e.type for e in stale_events(store, added)] == ["facts-stale", "facts-current"]
        assert host_usable(OperationalState.from_store(store), added.id) is None


async def test_a_login_banner_does_not_touch_the_facts(clean_lab, tmp_path):
    """Discovery's commands run as one batch whose sections are framed by markers (hosts/batch.py):
    what a login shell prints before them is outside every section. (With a channel per command the
    banner was in every output, and every section was kept stale.)"""
    host = clean_lab.hosts[1]
    async with fleet_on(tmp_path) as (fleet, store):
        added = await add(fleet, host)
        good = added.capabilities
        assert good.stale == []
        with login_banner(host, "Welcome to the lab!\nAll activity is logged."):
            again = await fleet.rediscover(added.id)
        caps = again.capabilities
        assert caps.stale == [] and caps.discovered_at > good.discovered_at
        assert caps.cpu == good.cpu and caps.cpu.cpus > 0
        assert caps.memory_bytes == good.memory_bytes > 0
        assert caps.storage == good.storage and caps.tools == good.tools and caps.os == good.os
        assert stale_events(store, added) == []
        problems = [e for e in store.list(Event) if e.host_id == added.id and e.type == "discovery-problem"
                    and "Welcome" in e.message]
        assert problems == []
