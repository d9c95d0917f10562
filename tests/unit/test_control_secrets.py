"""A password never travels through the control socket (issue 17, item 3): the server refuses a
request that carries one - a `cli` request's `secret`, an action's `password` - with one line,
before anything runs."""

from __future__ import annotations

import asyncio
import json

import pytest

from kerub_tui.cli import run_in_controller
from kerub_tui.control import ControlServer, socket_path
from kerub_tui.controller import Controller
from kerub_tui.core.models import AuditEntry, Host


@pytest.fixture
async def served(tmp_path):
    controller = Controller(tmp_path / "data")
    await controller.start(connect_hosts=False)
    server = ControlServer(controller, run_in_controller)
    await server.start()
    yield controller
    await server.stop()
    await controller.stop()


async def ask(controller: Controller, request: dict) -> dict:
    reader, writer = await asyncio.open_unix_connection(str(socket_path(controller.data_dir)))
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        async with asyncio.timeout(60):
            return json.loads(await reader.readline())
    finally:
        writer.close()


FINGERPRINT = "SHA256:" + "A" * 43


@pytest.mark.parametrize("request_", [
    {"id": 1, "method": "cli", "params": {"argv": ["host", "add", "127.0.0.1", "--install-key",
                                                   "--accept-fingerprint", FINGERPRINT], "secret": "hunter2"}},
    {"id": 1, "method": "cli", "params": {"argv": ["vm", "list"], "secret": "hunter2"}},
    {"id": 1, "method": "cli", "params": {"argv": ["vm", "list"], "secret": None}},
    {"id": 1, "method": "call", "params": {"name": "add_host", "kwargs": {
        "name": "h", "address": "127.0.0.1", "fingerprint": FINGERPRINT, "password": "hunter2"}}},
    {"id": 1, "method": "call", "params": {"name": "add_host", "kwargs": {
        "name": "h", "address": "127.0.0.1", "fingerprint": FINGERPRINT, "password": None}}},
], ids=["cli host add with a secret", "cli vm list with a secret", "cli with a null secret",
        "add_host with a password", "add_host with a null password"])
async def test_a_request_carrying_a_password_is_refused_before_anything_runs(served, request_):
    answer = await ask(served, request_)
    assert "result" not in answer, answer
    error = answer["error"]
    assert "never" in error and "control socket" in error and "\n" not in error
    assert "hunter2" not in error
    assert served.db.count(Host) == 0
    assert not [a for a in served.db.list(AuditEntry) if a.action.startswith("host")]
    assert (await ask(served, {"id": 2, "method": "ping"}))["result"]["pid"]  # still serving


async def test_install_key_beside_a_running_controller_is_refused_read_only_as_add_host_is(tmp_path):
    """`host add --install-key` with a controller running logs in from the command line's own process (the
    password stays there): it is the first half of add_host, refused in read-only mode by the API's one
    check (kerub_tui.api.refusal), before any connection."""
    import argparse
    import re

    from kerub_tui.api import READ_ONLY_MESSAGE
    from kerub_tui.cli import CliError, _install_key_here

    args = argparse.Namespace(readonly=True, address=("127.0.0.1", 1), user="root",
                              accept_fingerprint="SHA256:" + "A" * 43)
    with pytest.raises(CliError, match=re.escape(f"{READ_ONLY_MESSAGE}; --install-key changes the host")):
        await _install_key_here(tmp_path / "none", args, "secret")
