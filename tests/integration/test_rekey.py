"""A lab host whose sshd host key is regenerated: refused with a clear event, then `host rekey`
refuses a fingerprint the host does not present and accepts the one it does, after which the host
reconnects and is discovered again - through a running controller and with none running
(issue 17, item 6)."""

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

pytestmark = pytest.mark.lab

WAIT = 120.0  # generous: the waits check what happens, not how fast



@pytest.fixture
def env(tmp_path):
    return dict(os.environ, KERUB_TUI_DATA=str(tmp_path / "data"), KERUB_TUI_CONFIG=str(tmp_path / "config"),
                PYTHONUNBUFFERED="1")


def shown(env, name) -> dict:
    result = kerub("host", "show", name, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(what: str, predicate):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"gave up waiting for {what}")


def snapshot(env):
    """What the store holds now, read beside whoever writes it."""
    store = Store.open(Path(env["KERUB_TUI_DATA"]), readonly=True)
    try:
        return list(store.list(Event)), list(store.list(AuditEntry))
    finally:
        store.close()


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("kerub-tui: ") and "Traceback" not in stderr
    return lines[0]


def add(env, host, name):
    added = kerub("host", "add", host.address, "--name", name, "--identity", str(host.client_key),
                  "--accept-fingerprint", host.host_key_fingerprint, env=env)
    assert added.returncode == 0, added.stderr


def new_host_key(host) -> tuple[str, str]:
    """Regenerate the host's sshd key and drop its sessions, so every client must connect again."""
    old = host.host_key_fingerprint
    new = host.replace_host_key()
    host.stop_sshd(sessions=True)
    host.start_sshd()
    assert new != old
    return old, new


def test_a_regenerated_host_key_is_refused_then_rekeyed_through_a_running_controller(clean_lab, env):
    host = clean_lab.hosts[0]
    add(env, host, "kvm1")
    serve = subprocess.Popen([sys.executable, "-m", "kerub_tui", "serve"], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving" in serve.stderr.readline()
        wait_for("the host to be up", lambda: shown(env, "kvm1")["dynamic"]["status"] == "up")
        discovered = shown(env, "kvm1")["host"]["capabilities"]["discovered_at"]

        old, new = new_host_key(host)
        wait_for("the host to be refused", lambda: shown(env, "kvm1")["dynamic"]["status"] == "key-mismatch")
        events, _ = snapshot(env)
        refused = [e for e in events if e.type == "key-mismatch"]
        assert refused and refused[-1].target == new
        assert f"kerub-tui host rekey kvm1 --accept-fingerprint {new}" in refused[-1].message
        assert old in refused[-1].message

        # Without a fingerprint: what the host presents is shown, nothing changes.
        asked = kerub("host", "rekey", "kvm1", env=env)
        assert asked.returncode == 1 and new in asked.stdout and old in asked.stdout
        assert f"--accept-fingerprint {new}" in one_line(asked.stderr)
        # A fingerprint the host does not present: refused, one line naming what it presents.
        wrong = kerub("host", "rekey", "kvm1", "--accept-fingerprint", "SHA256:" + "A" * 43, env=env)
        assert wrong.returncode == 1 and new in one_line(wrong.stderr)
        # The old one, which it does not present any more: refused too.
        stale = kerub("host", "rekey", "kvm1", "--accept-fingerprint", old, env=env)
        assert stale.returncode == 1 and new in one_line(stale.stderr)
        # Not a fingerprint at all: one line, nothing sent anywhere.
        garbage = kerub("host", "rekey", "kvm1", "--accept-fingerprint", "SHA256:x\nforged line", env=env)
        assert garbage.returncode == 1 and "not a SHA256 fingerprint" in one_line(garbage.stderr)
        assert shown(env, "kvm1")["host"]["fingerprint"] == old
        assert shown(env, "kvm1")["dynamic"]["status"] == "key-mismatch"

        accepted = kerub("host", "rekey", "kvm1", "--accept-fingerprint", new, env=env)
        assert accepted.returncode == 0, accepted.stderr
        assert f"new key {new} accepted (was {old})" in accepted.stdout
        after = shown(env, "kvm1")
        assert after["host"]["fingerprint"] == new and after["dynamic"]["status"] == "up"
        assert after["host"]["capabilities"]["discovered_at"] > discovered
        assert after["host"]["capabilities"]["os"]["hostname"] == host.name

        again = kerub("host", "rekey", "kvm1", "--accept-fingerprint", new, env=env)
        assert again.returncode == 1 and "already its accepted key" in one_line(again.stderr)

        events, audit = snapshot(env)
        rekeys = sorted((a for a in audit if a.action == "host rekey"), key=lambda a: a.time)
        assert [a.outcome.startswith("refused") for a in rekeys] == [True, True, True, False, True]
        assert rekeys[3].outcome == f"key {old} -> {new}" and rekeys[3].target == "kvm1"
        assert any(e.type == "key-accepted" and e.target == new for e in events)
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            assert serve.wait(timeout=60) == 0
        finally:
            if serve.poll() is None:
                serve.kill()


def test_rekey_with_no_controller_running_connects_and_discovers(clean_lab, env):
    host = clean_lab.hosts[1]
    add(env, host, "kvm2")
    before = shown(env, "kvm2")["host"]["capabilities"]["discovered_at"]
    old, new = new_host_key(host)

    wrong = kerub("host", "rekey", "kvm2", "--accept-fingerprint", old, env=env)
    assert wrong.returncode == 1 and new in one_line(wrong.stderr)
    assert shown(env, "kvm2")["host"]["fingerprint"] == old

    accepted = kerub("host", "rekey", "kvm2", "--accept-fingerprint", new, env=env)
    assert accepted.returncode == 0, accepted.stderr
    after = shown(env, "kvm2")["host"]
    assert after["fingerprint"] == new and after["capabilities"]["discovered_at"] > before
    _, audit = snapshot(env)
    assert [a.outcome for a in audit if a.action == "host rekey" and not a.outcome.startswith("refused")] == [
        f"key {old} -> {new}"]
