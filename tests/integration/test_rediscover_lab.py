"""Facts marked stale are read again on request, not only when the host reconnects: `host rediscover
NAME` (through a running controller and with none running) says what is still stale in one line,
and once the host is fixed every fact is current again (issue 17's noted gap after item 2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kerub_tui.core.models import AuditEntry, Event
from kerub_tui.core.store import Store

from ._support import kerub
from .test_discovery_stale_lab import BROKEN_LSCPU, fake_tools

pytestmark = pytest.mark.lab



@pytest.fixture
def env(tmp_path):
    return dict(os.environ, KERUB_TUI_DATA=str(tmp_path / "data"), KERUB_TUI_CONFIG=str(tmp_path / "config"),
                PYTHONUNBUFFERED="1")


def caps(env, name) -> dict:
    shown = kerub("host", "show", name, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("kerub-tui: "), result.stderr
    return lines[0]


def stored(env) -> tuple[list[Event], list[AuditEntry]]:
    store = Store.open(Path(env["KERUB_TUI_DATA"]), readonly=True)
    try:
        return store.list(Event), store.list(AuditEntry)
    finally:
        store.close()


def rediscovered(env, host, name) -> None:
    """With lscpu broken: still stale, one line, the last good CPU facts kept; fixed: every fact read."""
    good = caps(env, name)["host"]["capabilities"]
    with fake_tools(host, {"lscpu": BROKEN_LSCPU}):
        broken = kerub("host", "rediscover", name, env=env)
        assert "still cannot read cpu" in one_line(broken)
    now = caps(env, name)["host"]["capabilities"]
    assert [s["section"] for s in now["stale"]] == ["cpu"]
    assert now["cpu"] == good["cpu"] and now["discovered_at"] > good["discovered_at"]
    healed = kerub("host", "rediscover", name, env=env)
    assert healed.returncode == 0, healed.stderr
    assert healed.stdout.strip() == f"host {name} discovered again: every fact read"
    assert caps(env, name)["host"]["capabilities"]["stale"] == []


def test_host_rediscover_through_serve_and_alone(clean_lab, env):
    host = clean_lab.hosts[0]
    added = kerub("host", "add", host.address, "--name", "kvm1", "--identity", str(host.client_key),
                  "--accept-fingerprint", host.host_key_fingerprint, env=env)
    assert added.returncode == 0, added.stderr
    rediscovered(env, host, "kvm1")  # no controller running: the command connects and discovers itself
    assert "no host named 'ghost'" in one_line(kerub("host", "rediscover", "ghost", env=env))

    serve = subprocess.Popen([sys.executable, "-m", "kerub_tui", "serve"], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving" in serve.stderr.readline()
        deadline = time.monotonic() + 120
        while caps(env, "kvm1")["dynamic"]["status"] != "up":
            assert time.monotonic() < deadline, "the host never came up under serve"
            time.sleep(0.2)
        rediscovered(env, host, "kvm1")
        host.stop_sshd(sessions=True)
        deadline = time.monotonic() + 120
        while caps(env, "kvm1")["dynamic"]["status"] == "up":
            assert time.monotonic() < deadline, "the host never went down"
            time.sleep(0.2)
        assert "not connected" in one_line(kerub("host", "rediscover", "kvm1", env=env))
        host.start_sshd()
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            assert serve.wait(timeout=60) == 0
        finally:
            if serve.poll() is None:
                serve.kill()
    events, audit = stored(env)
    stale = [e for e in events if e.type == "facts-stale"]
    assert len(stale) == 2 and all("kerub-tui host rediscover kvm1" in e.message for e in stale)
    assert len([e for e in events if e.type == "facts-current"]) == 2
    outcomes = [a.outcome for a in sorted(audit, key=lambda a: a.time) if a.action == "host rediscover"]
    assert outcomes[:4] == ["still stale: cpu", "every fact read", "still stale: cpu", "every fact read"]
    assert outcomes[4].startswith("refused: ") and "not connected" in outcomes[4]
