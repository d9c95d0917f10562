"""The log file: ``kerub-tui.log`` in the data dir, rotated, with the host name on every line of host work
(ARCHITECTURE.md §10).

Configured once at process start (``configure``) by every entry point: the console, ``serve``, the demo
and the command line. Under the console the terminal belongs to Textual, so this file is where
warnings and ``log.exception`` tracebacks go; ``serve`` also has them on stderr for its journal.

Host work binds the host's name to the running task (``bind_host`` at the top of a host's task,
``host_context`` around one piece of work): tasks started from there inherit it (asyncio copies the
context), and every line logged meanwhile says ``[NAME]``; lines about no host say ``[-]``. A record
may also name its host with ``extra={"host": NAME}``.

The file is opened as every file in the data dir is (``paths.open_private``: no symbolic link
followed, 0600, ours), only when the first line is written, so a command that never logs leaves no
file behind; when it cannot be written (a read-only or missing data dir) lines are dropped quietly:
logging never fails a command nor prints to a terminal that is not its own.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import os
import sys
from collections.abc import Iterator
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TextIO

from .paths import UnsafeDataDir, open_private

LOG_FILE = "kerub-tui.log"
MAX_BYTES = 5 * 1024 * 1024
BACKUP_COUNT = 3  # kerub-tui.log.1 .. .3: 20 MiB at most
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(host)s] %(message)s"
NO_HOST = "-"

_host: contextvars.ContextVar[str | None] = contextvars.ContextVar("kerub_tui_host", default=None)
_handler: logging.Handler | None = None


def bind_host(name: str) -> None:
    """Name ``name`` on every line the current task (and the tasks it starts) logs from now on."""
    _host.set(name)


@contextlib.contextmanager
def host_context(name: str) -> Iterator[None]:
    """Name ``name`` on every line logged inside the block (and by tasks started inside it)."""
    token = _host.set(name)
    try:
        yield
    finally:
        _host.reset(token)


def current_host() -> str | None:
    return _host.get()


class HostFilter(logging.Filter):
    """Gives every record a ``host``: its own ``extra``, else the task's bound host, else ``-``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "host", None):
            record.host = _host.get() or NO_HOST
        return True


class PrivateRotatingFileHandler(RotatingFileHandler):
    """RotatingFileHandler that opens its file like every data dir file, late, and never complains.

    A record that cannot be written (the data dir is read-only, gone, or holds a planted link) is
    dropped: logging must not fail what it describes, nor print "--- Logging error ---" over a console.
    """

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, backup_count: int = BACKUP_COUNT) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8", delay=True)

    def _open(self) -> io.TextIOWrapper:
        fd = open_private(Path(self.baseFilename), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        return os.fdopen(fd, "a", encoding=self.encoding, errors="backslashreplace")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            super().emit(record)
        except (OSError, UnsafeDataDir):
            self._drop()

    def handleError(self, record: logging.LogRecord) -> None:
        self._drop()

    def _drop(self) -> None:
        # the next record tries to open the file again (the data dir may appear, or be fixed)
        stream, self.stream = self.stream, None
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Warnings on stderr as Python prints them when nothing is configured (its "last resort": the
    message alone, to whatever sys.stderr is now): the command line and ``serve`` keep showing them
    there once the file handler exists."""

    def __init__(self) -> None:
        logging.Handler.__init__(self, logging.WARNING)

    @property
    def stream(self) -> TextIO:
        return sys.stderr


def configure(data_dir: Path, *, stderr: bool = False, level: int = logging.INFO) -> Path:
    """Log to ``data_dir/kerub-tui.log`` and, with ``stderr``, warnings to stderr too (the command
    line and serve; never the console, whose terminal is Textual's); returns the file's path. Called
    once at process start; a second call moves the file to the new data dir."""
    global _handler
    path = Path(data_dir) / LOG_FILE
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
        _handler.close()
    handler = PrivateRotatingFileHandler(path)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(HostFilter())
    root.addHandler(handler)
    _handler = handler
    if stderr and not any(isinstance(h, _Stderr) for h in root.handlers):
        root.addHandler(_Stderr())
    # Our own lines from INFO up; other libraries' (asyncssh logs every channel at INFO) from WARNING.
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    logging.getLogger("kerub_tui").setLevel(level)
    return path


def unconfigure() -> None:
    """Remove the file handler (tests)."""
    global _handler
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(handler)
    if _handler is not None:
        root.removeHandler(_handler)
        _handler.close()
        _handler = None


__all__ = ["LOG_FILE", "HostFilter", "PrivateRotatingFileHandler", "bind_host", "configure", "current_host",
           "host_context", "unconfigure"]
