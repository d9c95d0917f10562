"""The control socket's server against what a client may send (issue 17 item 8): every malformed
request gets one error answer and no traceback in the controller, a huge request is refused without
the controller holding it, and the controller keeps serving."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kerub_tui.control import REQUEST_LIMIT, socket_path


@pytest.fixture
def serve(tmp_path):
    env = dict(os.environ, KERUB_TUI_DATA=str(tmp_path / "data"), KERUB_TUI_CONFIG=str(tmp_path / "config"),
               PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "kerub_tui", "serve"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    assert "serving" in line, line
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)
    reader.start()
    yield proc, tmp_path / "data", stderr
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    reader.join(timeout=10)


def connect(data_dir: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(120)
    sock.connect(str(socket_path(data_dir)))
    return sock


def ask(sock: socket.socket, stream, raw: bytes) -> dict:
    sock.sendall(raw if raw.endswith(b"\n") else raw + b"\n")
    line = stream.readline()
    assert line, f"no answer to {raw[:80]!r}"
    return json.loads(line)


def ping(data_dir: Path) -> dict:
    with connect(data_dir) as sock, sock.makefile("rb") as stream:
        return ask(sock, stream, b'{"id": 1, "method": "ping"}')


MALFORMED = [
    b"not json",
    b"\xff\xfe\x00garbage",
    b"[]",
    b"42",
    b'{"id": 1}',
    b'{"id": 1, "method": 5}',
    b'{"id": [1], "method": "ping"}',
    b'{"id": 1, "method": "ping", "params": [1, 2]}',
    b'{"id": 1, "method": "no-such-method"}',
    b"[" * 200_000,
    b'{"id": 1, "method": "ping", "x": ' + b"9" * 10_000 + b"}",
    b'{"id": 1, "method": "cli", "params": {"argv": "vm list"}}',
    b'{"id": 1, "method": "cli", "params": {"argv": ["vm", "list"], "env": {"PATH": "/tmp"}}}',
    b'{"id": 1, "method": "cli", "params": {"argv": ["export", "x.json"], "cwd": "relative/dir"}}',
    b'{"id": 1, "method": "call", "params": {"name": "__init__"}}',
    b'{"id": 1, "method": "call", "params": {"name": ["create_disk"]}}',
    b'{"id": 1, "method": "call", "params": {"name": "create_disk", "args": "x"}}',
    b'{"id": 1, "method": "call", "params": {"name": "create_disk", "args": [1, 2, 3, 4]}}',
    b'{"id": 1, "method": "call", "params": {"name": "create_disk", "args": ["d"], "kwargs": {"bogus": 1}}}',
    b'{"id": 1, "method": "call", "params": {"name": "create_disk", "args": ["d"], "kwargs": {"size": NaN}}}',
    b'{"id": 1, "method": "call", "params": {"name": "create_disk", "args": ["d"], "kwargs": {"size": 1e400}}}',
    b'{"id": 1, "method": "call", "params": {"name": "create_disk", "args": ["d"], "kwargs": {"size": 1e35}}}',
    b'{"id": 1, "method": "call", "params": {"name": "create_disk", "args": ["d"], "kwargs": {"size": "big"}}}',
    b'{"id": 1, "method": "call", "params": {"name": "create_disk", "args": [{"__document__": 5}],'
    b' "kwargs": {"size": 1}}}',
    b'{"id": 1, "method": "call", "params": {"name": "create_vm", "args": ["v"], "kwargs": {"memory_min": 1,'
    b' "expectations": ["availability:up\\n"]}}}',
    b'{"id": 1, "method": "call", "params": {"name": "update_vm", "args": [null]}}',
    b'{"id": 1, "method": "call", "params": {"name": "decide_plan", "args": [{}, "yes"]}}',
    b'{"id": 1, "method": "call", "params": {"name": "set_optimisation", "kwargs": {"load_balancing_min_gain": 7}}}',
]


def test_every_malformed_request_gets_one_error_answer_and_no_traceback(serve):
    proc, data_dir, stderr = serve
    with connect(data_dir) as sock, sock.makefile("rb") as stream:
        for raw in MALFORMED:
            answer = ask(sock, stream, raw)
            assert set(answer) == {"id", "error"}, (raw[:80], answer)
            assert answer["error"] and "\n" not in answer["error"], (raw[:80], answer)
            assert "internal error" not in answer["error"], (raw[:80], answer)
        # Subscribing twice on one connection is refused too (the first subscription stays).
        assert "result" in ask(sock, stream, b'{"id": 2, "method": "subscribe"}')
        assert "already subscribed" in ask(sock, stream, b'{"id": 3, "method": "subscribe"}')["error"]
    assert ping(data_dir)["result"]["pid"] == proc.pid
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert not [line for line in stderr if "Traceback" in line or "Error" in line], "".join(stderr)


def _high_water_mark(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_200_mib_request_is_refused_without_the_controller_holding_it(serve):
    proc, data_dir, _stderr = serve
    assert "result" in ping(data_dir)
    before = _high_water_mark(proc.pid)
    chunk = b"x" * (1 << 20)
    sent = 0
    with connect(data_dir) as sock, sock.makefile("rb") as stream:
        try:
            for _ in range(200):
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading and closed: what it was sent it never held
        answer = json.loads(stream.readline())
    assert "longer than 4 MiB" in answer["error"]
    assert sent < 200 * len(chunk), "the server read a 200 MiB request to its end"
    grown = _high_water_mark(proc.pid) - before
    assert grown < 4 * REQUEST_LIMIT, f"the controller grew by {grown >> 20} MiB"
    assert ping(data_dir)["result"]["pid"] == proc.pid  # and it keeps serving
    # A request just under the limit is still read and answered.
    with connect(data_dir) as sock, sock.makefile("rb") as stream:
        padding = b" " * (REQUEST_LIMIT - 100)
        assert "result" in ask(sock, stream, b'{"id": 1, "method": "ping"' + padding + b"}")
