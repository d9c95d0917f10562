"""The command line against the lab: joining a host with its fingerprint, and a second shell served
through the control socket while `serve` runs (issue 3's "done when")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ._support import kerub

pytestmark = pytest.mark.lab



@pytest.fixture
def env(tmp_path):
    return dict(os.environ, KERUB_TUI_DATA=str(tmp_path / "data"), KERUB_TUI_CONFIG=str(tmp_path / "config"),
                PYTHONUNBUFFERED="1")


def test_host_add_shows_the_fingerprint_and_needs_it_accepted(clean_lab, env):
    host = clean_lab.hosts[0]
    shown = kerub("host", "add", host.address, "--identity", str(host.client_key), env=env)
    assert shown.returncode != 0
    assert host.host_key_fingerprint in shown.stdout
    assert f"--accept-fingerprint {host.host_key_fingerprint}" in shown.stderr
    assert json.loads(kerub("host", "list", "--json", env=env).stdout) == []

    wrong = "SHA256:" + "A" * 43
    refused = kerub("host", "add", host.address, "--identity", str(host.client_key),
                    "--accept-fingerprint", wrong, env=env)
    assert refused.returncode != 0 and host.host_key_fingerprint in refused.stderr
    assert json.loads(kerub("host", "list", "--json", env=env).stdout) == []

    added = kerub("host", "add", host.address, "--name", "first", "--identity", str(host.client_key),
                  "--accept-fingerprint", host.host_key_fingerprint, env=env)
    assert added.returncode == 0, added.stderr
    shown = json.loads(kerub("host", "show", "first", "--json", env=env).stdout)
    caps = shown["host"]["capabilities"]
    assert caps["os"]["hostname"] == host.name
    assert caps["cpu"]["cpus"] == int(host.run("nproc").stdout)
    assert shown["host"]["fingerprint"] == host.host_key_fingerprint
    audit = kerub("export", str(env["KERUB_TUI_DATA"]) + "/../export.json", env=env)
    assert audit.returncode == 0


def test_second_shell_is_served_through_the_socket_while_serve_runs(clean_lab, env):
    host = clean_lab.hosts[1]
    added = kerub("host", "add", host.address, "--name", "served", "--identity", str(host.client_key),
                  "--accept-fingerprint", host.host_key_fingerprint, env=env)
    assert added.returncode == 0, added.stderr
    serve = subprocess.Popen([sys.executable, "-m", "kerub_tui", "serve", "--json-events"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving" in serve.stderr.readline()
        # serve connects the host and monitoring makes its HostDynamic go up.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = serve.stdout.readline()
            event = json.loads(line)
            if event["kind"] == "host-dynamic" and event["new"] and event["new"]["status"] == "up":
                break
        else:
            pytest.fail("the served host never came up")
        listed = kerub("host", "list", "--json", env=env, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert [h["name"] for h in json.loads(listed.stdout)] == ["served"]
        table = kerub("host", "list", env=env, timeout=60)
        assert "up" in table.stdout.splitlines()[1]
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            assert serve.wait(timeout=60) == 0
        finally:
            if serve.poll() is None:
                serve.kill()
