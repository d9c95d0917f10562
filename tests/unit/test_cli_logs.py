"""`kerub-tui audit` and `kerub-tui events` (issue 13 item 11): oldest first, --since, --json, through a
running controller's socket too; an update's audit entry says what changed, field by field."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kerub_tui.controller import Controller
from kerub_tui.core.models import AuditEntry, Event, EventSeverity, utcnow
from kerub_tui.core.store import Store
from tests import cliproc


def kerub(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return cliproc.kerub(argv, env=env, timeout=120)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, KERUB_TUI_DATA=str(tmp_path / "data"), PYTHONUNBUFFERED="1")


def _updated_disk(data: Path) -> None:
    """A disk made and grown through the API (the console's editor does the same), and an old audit entry
    and two events, one of them old."""
    async def act() -> None:
        controller = Controller(data)
        await controller.start(connect_hosts=False)
        try:
            await controller.create_disk("d1", size=64 << 20)
            await controller.update_disk("d1", size=128 << 20, read_only=True)
        finally:
            await controller.stop()

    asyncio.run(act())
    old = utcnow() - dt.timedelta(hours=3)
    with Store.open(data) as store:
        store.put(AuditEntry(time=old, os_user="someone", action="host add", target="old1", outcome="ok"))
        store.put(Event(time=old, type="host-down", severity=EventSeverity.warning, message="old1 went away"))
        store.put(Event(type="parse-error", severity=EventSeverity.error, message="vmstat: a line\x1b[2J not read"))


def test_audit_lists_what_was_done_with_what_an_update_changed(env: dict[str, str]) -> None:
    _updated_disk(Path(env["KERUB_TUI_DATA"]))
    listed = kerub("audit", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["TIME", "(UTC)", "USER", "ACTION", "TARGET", "HOST", "OUTCOME"]
    assert [line.split()[3:5] for line in lines[1:]] == [["host", "add"], ["disk", "create"], ["disk", "update"]]
    assert lines[-1].endswith("d1      -     size: 64.0M → 128.0M; read_only: False → True")
    recent = kerub("audit", "--since", "1h", "--json", env=env)
    assert recent.returncode == 0, recent.stderr
    entries = json.loads(recent.stdout)
    assert [(e["action"], e["target"]) for e in entries] == [("disk create", "d1"), ("disk update", "d1")]
    assert entries[1]["outcome"] == "size: 64.0M → 128.0M; read_only: False → True"


def test_events_lists_what_happened_its_messages_as_data(env: dict[str, str]) -> None:
    _updated_disk(Path(env["KERUB_TUI_DATA"]))
    listed = kerub("events", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["TIME", "(UTC)", "SEVERITY", "TYPE", "HOST", "ABOUT", "MESSAGE"]
    assert [line.split()[2:4] for line in lines[1:]] == [["warning", "host-down"], ["error", "parse-error"]]
    assert "\x1b" not in listed.stdout and "a line\\x1b[2J not read" in lines[-1]
    recent = kerub("events", "--since", "90m", "--json", env=env)
    assert [e["type"] for e in json.loads(recent.stdout)] == ["parse-error"]


def test_audit_and_events_answer_through_a_running_controller(env: dict[str, str]) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "kerub_tui", "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "serving" in line, line
        created = kerub("disk", "create", "viasocket", "--size", "32M", env=env)
        assert created.returncode == 0, created.stderr
        audit = kerub("audit", "--json", env=env)
        assert audit.returncode == 0, audit.stderr
        assert [(e["action"], e["target"]) for e in json.loads(audit.stdout)] == [("disk create", "viasocket")]
        events = kerub("--readonly", "events", "--since", "1d", env=env)
        assert events.returncode == 0 and events.stdout.splitlines()[0].split()[-1] == "MESSAGE", events.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.mark.parametrize("since", ["1x", "h", "0m", "-1h", "99999999d"])
def test_a_bad_since_is_one_clear_line(env: dict[str, str], since: str) -> None:
    done = kerub("audit", f"--since={since}", env=env)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and "is not an age" in done.stderr, done.stderr
    assert not Path(env["KERUB_TUI_DATA"]).exists()  # refused before anything was opened


def test_host_list_and_show_say_when_no_controller_monitors_the_figures(env: dict[str, str]) -> None:
    """Issue 13 item 10, the command line's side: with no controller running, a host's status and
    figures are what was last seen, and the command line says when."""
    from kerub_tui.core.models import Host, HostDynamic, HostStatus

    with Store.open(Path(env["KERUB_TUI_DATA"])) as store:
        store.put(Host(id="h-1", name="h1", address="10.0.0.1"))
        store.put(HostDynamic(id="h-1", status=HostStatus.up, cpu_idle=70.0, memory_free=1 << 30,
                              last_seen=utcnow() - dt.timedelta(hours=3, minutes=5)))
    for readonly in ([], ["--readonly"]):
        listed = kerub(*readonly, "host", "list", env=env)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.splitlines()[1].split()[:5] == ["h1", "10.0.0.1:22", "up", "(seen", "3h"]
        shown = kerub(*readonly, "host", "show", "h1", env=env)
        assert "  status up (seen 3h ago)\n" in shown.stdout
        assert "cpu 30% busy, memory free 1.0G (as last seen: no controller monitors the hosts now)" in shown.stdout
