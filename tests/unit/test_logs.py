"""The log file in the data dir (kerub_tui.core.logs): rotated, private, the host on every line of host
work, and configured by every entry point of the command line."""

from __future__ import annotations

import asyncio
import logging
import os
import stat

import pytest

from kerub_tui import __version__, cli
from kerub_tui.core import logs
from kerub_tui.core.paths import ensure_private_dir

log = logging.getLogger("kerub_tui.test")


def lines(path):
    return path.read_text().splitlines()


def test_lines_name_the_host_of_the_task_that_logged_them(tmp_path):
    path = logs.configure(ensure_private_dir(tmp_path / "data"))

    async def host_work(name: str) -> None:
        logs.bind_host(name)
        await asyncio.sleep(0)
        log.info("vmstat stream started")
        await asyncio.create_task(child())  # a task started from host work inherits its host

    async def child() -> None:
        log.warning("stream ended")

    async def main() -> None:
        await asyncio.gather(host_work("web1"), host_work("db1"))
        log.info("replanned")  # no host here
        with logs.host_context("st1"):
            log.info("step command")
        log.info("after", extra={"host": "h9"})

    asyncio.run(main())
    text = lines(path)
    assert sum("[web1] vmstat stream started" in line for line in text) == 1
    assert sum("[db1] stream ended" in line for line in text) == 1
    assert any(line.endswith("INFO kerub_tui.test [-] replanned") for line in text), text
    assert any("[st1] step command" in line for line in text) and any("[h9] after" in line for line in text)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_the_file_is_rotated(tmp_path):
    data = ensure_private_dir(tmp_path / "data")
    logs.configure(data)
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, logs.PrivateRotatingFileHandler))
    handler.maxBytes = 2000
    for i in range(100):
        log.info("line %d %s", i, "x" * 50)
    names = sorted(p.name for p in data.iterdir())
    assert names == ["kerub-tui.log", "kerub-tui.log.1", "kerub-tui.log.2", "kerub-tui.log.3"], names
    assert "line 99 " in (data / "kerub-tui.log").read_text()


def test_an_unwritable_data_dir_drops_lines_quietly(tmp_path, capsys):
    logs.configure(tmp_path / "missing" / "data")  # no such dir: nothing to write into
    log.error("nowhere to go")
    (tmp_path / "planted").mkdir(mode=0o700)
    (tmp_path / "planted" / logs.LOG_FILE).symlink_to(tmp_path / "elsewhere")
    logs.configure(tmp_path / "planted")  # a planted link is never followed
    log.error("not through the link")
    assert not (tmp_path / "elsewhere").exists()
    assert "Logging error" not in capsys.readouterr().err


def test_the_command_line_logs_to_its_data_dir_and_warns_on_stderr(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    monkeypatch.setenv("KERUB_TUI_DATA", str(data))
    monkeypatch.setenv("KERUB_TUI_CONFIG", str(tmp_path / "config"))
    assert cli.main(["disk", "create", "d1", "--size", "1G"]) == 0
    logging.getLogger("kerub_tui.cli").warning("a warning of the command line")
    assert "a warning of the command line" in capsys.readouterr().err
    assert any("WARNING kerub_tui.cli [-] a warning of the command line" in line
               for line in lines(data / logs.LOG_FILE))


@pytest.mark.parametrize("argv", [[], ["--demo"]])
def test_the_console_logs_to_the_file_only(tmp_path, monkeypatch, argv):
    monkeypatch.setenv("KERUB_TUI_DATA", str(tmp_path / "data"))
    ensure_private_dir(tmp_path / "data" / "demo")  # a data dir used before (a new one has no file yet)
    cli._log_to_file(cli.build_parser().parse_args(argv))  # what main() does first
    handlers = logging.getLogger().handlers
    assert not any(isinstance(h, logs._Stderr) for h in handlers)  # the terminal is Textual's
    file_handler = next(h for h in handlers if isinstance(h, logs.PrivateRotatingFileHandler))
    where = tmp_path / "data" / "demo" if argv else tmp_path / "data"
    assert file_handler.baseFilename == str(where / logs.LOG_FILE)
    logs.unconfigure()
    started = (where / logs.LOG_FILE).read_text()  # a long-running process says when it started
    assert f"INFO kerub_tui.cli [-] kerub-tui {__version__}: {'the demo' if argv else 'the console'} starts on {where}" \
        in started, started
