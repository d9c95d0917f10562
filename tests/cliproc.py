"""kerub-tui's command line in a process of its own, forked from a warm interpreter.

A test that runs ``kerub-tui ARGS`` wants what a user gets: a separate process, its exit code, its
stdout and stderr, its environment and working directory. Starting ``python -m kerub_tui`` for each
costs an interpreter and the import of the whole controller (about 1 CPU second on the 2-core CI
machine, a few hundred times in the suite). So one *fork server* per test process imports kerub_tui
once, and forks a child for each command: the child sets the command's environment, working
directory and standard streams and runs the same entry point as ``python -m kerub_tui``
(``kerub_tui.cli_args.main``), exiting through the interpreter's normal shutdown with its exit code.

What the fork skips is only the interpreter's start and kerub_tui's import; both are still run by
the tests that start ``python -m kerub_tui`` themselves (``serve``, the signal and crash tests, the
no-traceback walk's process cases).

Run as ``python -m tests.cliproc``, the module is the server: it reads one JSON request per line
and writes one JSON answer per finished child; the server itself never starts a thread, so its
forks are safe.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENTRY = REPO / "kerub_tui" / "__main__.py"  # sys.argv[0] of `python -m kerub_tui`


# --------------------------------------------------------------------------------------- the server


def _child(request: dict, out_fd: int, err_fd: int) -> None:
    """In the forked child: become the command's process and run it; never returns."""
    os.setsid()  # its own session and process group, as a command started from a shell would be
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    stdin_fd = os.open(os.devnull, os.O_RDONLY)  # no command reads its standard input
    for fd, target in ((stdin_fd, 0), (out_fd, 1), (err_fd, 2)):
        os.dup2(fd, target)
    os.closerange(3, 1 << 16)  # nothing of the server's (its request pipe above all) stays open
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own streams, closed at its exit
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    if os.environ.get("PYTHONUNBUFFERED"):
        sys.stdout.reconfigure(line_buffering=True)
        sys.stderr.reconfigure(line_buffering=True)
    sys.argv = [str(ENTRY), *request["argv"]]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from kerub_tui.cli_args import main

    # SystemExit leaves through the server's frames to the interpreter's normal exit: atexit
    # handlers, thread joins and flushes run as they would after `python -m kerub_tui`.
    raise SystemExit(main())


def serve() -> None:
    import kerub_tui.cli  # the warm part every child shares
    import kerub_tui.controller  # noqa: F401 - imported for the children

    running: dict[int, tuple[str, str, str]] = {}  # pid -> (id, out path, err path)
    by_id: dict[str, int] = {}
    requests = sys.stdin.buffer
    answers = sys.stdout
    buffer = b""
    eof = False
    while not eof or running:
        readable, _, _ = select.select([requests] if not eof else [], [], [], 0.02)
        if readable:
            chunk = os.read(requests.fileno(), 1 << 16)
            eof = not chunk
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                if "kill" in request:
                    pid = by_id.get(request["kill"])
                    if pid is not None:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(pid, signal.SIGKILL)
                    continue
                out_fd, out_path = tempfile.mkstemp(prefix="kerub-cli-out-")
                err_fd, err_path = tempfile.mkstemp(prefix="kerub-cli-err-")
                pid = os.fork()
                if pid == 0:
                    _child(request, out_fd, err_fd)
                os.close(out_fd)
                os.close(err_fd)
                running[pid] = (request["id"], out_path, err_path)
                by_id[request["id"]] = pid
        while running:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            ident, out_path, err_path = running.pop(pid)
            by_id.pop(ident, None)
            code = os.waitstatus_to_exitcode(status)
            out, err = Path(out_path).read_bytes(), Path(err_path).read_bytes()
            os.unlink(out_path)
            os.unlink(err_path)
            answers.write(json.dumps({"id": ident, "code": code, "out": base64.b64encode(out).decode(),
                                      "err": base64.b64encode(err).decode()}) + "\n")
            answers.flush()


# --------------------------------------------------------------------------------------- the client


class ForkServer:
    """One server per test process, started at the first command; commands may run concurrently."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen([sys.executable, "-m", "tests.cliproc"], cwd=REPO, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(REPO)))
        self._lock = threading.Lock()
        self._waiting: dict[str, Future[dict]] = {}
        self._ids = itertools.count()
        threading.Thread(target=self._read, name="cliproc-answers", daemon=True).start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            answer = json.loads(line)
            with self._lock:
                future = self._waiting.pop(answer["id"], None)
            if future is not None:
                future.set_result(answer)
        with self._lock:  # the server is gone: nobody waits for ever
            waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            future.set_exception(RuntimeError("the kerub-tui fork server died"))

    def alive(self) -> bool:
        return self._proc.poll() is None

    def _send(self, request: dict) -> None:
        assert self._proc.stdin is not None
        with self._lock:
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            self._proc.stdin.flush()

    def run(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str, timeout: float) -> tuple[int, bytes, bytes]:
        ident = str(next(self._ids))
        future: Future[dict] = Future()
        with self._lock:
            self._waiting[ident] = future
        self._send({"id": ident, "argv": list(argv), "env": dict(env), "cwd": cwd})
        try:
            answer = future.result(timeout=timeout)
        except TimeoutError:
            self._send({"kill": ident})
            raise
        return answer["code"], base64.b64decode(answer["out"]), base64.b64decode(answer["err"])


_server: ForkServer | None = None
_server_lock = threading.Lock()


def _the_server() -> ForkServer:
    global _server
    with _server_lock:
        if _server is None or not _server.alive():
            _server = ForkServer()
        return _server


def kerub(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
          timeout: float = 300, text: bool = True) -> subprocess.CompletedProcess:
    """``kerub-tui ARGV`` in a process of its own, like ``subprocess.run(..., capture_output=True,
    stdin=subprocess.DEVNULL)``: its exit code, stdout and stderr; ``subprocess.TimeoutExpired`` when
    it outlives ``timeout`` (it is killed, with its process group)."""
    try:
        code, out, err = _the_server().run(argv, env=os.environ if env is None else env,
                                           cwd=os.fspath(cwd) if cwd is not None else os.getcwd(), timeout=timeout)
    except TimeoutError:
        raise subprocess.TimeoutExpired(["kerub-tui", *argv], timeout) from None
    if text:
        return subprocess.CompletedProcess(["kerub-tui", *argv], code, out.decode(errors="replace"),
                                           err.decode(errors="replace"))
    return subprocess.CompletedProcess(["kerub-tui", *argv], code, out, err)


if __name__ == "__main__":
    serve()
