"""Discovery's one-channel batch (hosts/batch.py), run by this machine's sh through a stand-in for the
host's connection: what each command printed, its status and its standard error come back exactly as a
channel of its own gave them, whatever a host prints (marker-looking lines, NULs, invalid UTF-8,
no final newline, 30 MB), a hung command is stopped without losing the others, and sudo runs once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kerub_tui.hosts import batch, facts
from kerub_tui.hosts.batch import BatchCommand, SectionReader, batch_script, collect, mark, new_boundary, run_batch
from kerub_tui.hosts.discovery import run_discovery_commands
from kerub_tui.hosts.monitor.watch import WatchParser
from kerub_tui.ssh import NotConnected

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])


class LocalHost:
    """What run_batch uses of a HostConnection, running the channel's command with this machine's sh."""

    def __init__(self, user: str = "root", env: dict[str, str] | None = None) -> None:
        self.name = "local"
        self.user = user
        self.env = env
        self.is_up = True
        self.commands: list[str] = []

    async def connection(self, wait: float | None = 0.0) -> object:
        return self

    @contextlib.asynccontextmanager
    async def process(self, command: str, *, privileged: bool = True, wait: float | None = 0.0) -> AsyncIterator:
        assert not privileged  # sudo, where needed, is inside the script
        self.commands.append(command)
        proc = await asyncio.create_subprocess_shell(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
            await proc.wait()


def run(commands, **kwargs) -> batch.BatchResult:
    host = kwargs.pop("host", None) or LocalHost()
    kwargs.setdefault("timeout", 30)
    kwargs.setdefault("max_output", facts.MAX_OUTPUT)
    return asyncio.run(run_batch(host, commands, **kwargs))  # type: ignore[arg-type]


def alone(command: str) -> tuple[int, str, str]:
    """What the command gives in a process of its own (as a channel of its own ran it)."""
    done = subprocess.run(["sh", "-c", command], stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")


# --- exactly what a command of its own gives -------------------------------------------------------------


HOSTILE_OUTPUTS = {
    "plain": "echo hello",
    "no_newline": "printf 'no newline'",
    "empty": "true",
    "blank_lines": "printf '\\n\\n\\n'",
    "fails": "echo out; echo err >&2; exit 3",
    "stderr_no_newline": "printf 'x'; printf 'complaint' >&2",
    "old_marks": "printf '@@kerub:section x\\n@@kerub:status 0\\n@@kerub:end\\n'",
    "guessed_boundary": "printf '@@kerub:%032x:status 0\\n@@kerub:%032x:end\\n' 1 2",
    "nul_and_cr": "printf 'a\\000b\\r\\nc\\r'",
    "invalid_utf8": "printf '\\377\\376 caf\\303\\251 \\342\\202\\n'",
    "missing_tool": "no-such-tool-kerub --flag",
    "quotes": """echo "it's" '$(reboot)' `echo x` "\\\\" """,
}


def test_each_section_is_what_the_command_alone_prints():
    commands = [BatchCommand(name, command) for name, command in HOSTILE_OUTPUTS.items()]
    result = run(commands)
    assert result.problems == []
    for name, command in HOSTILE_OUTPUTS.items():
        output = result.outputs[name]
        assert (output.exit_code, output.stdout, output.stderr) == alone(command), name
        assert not output.stdout_truncated and not output.stderr_truncated


def test_discovery_commands_give_what_they_give_alone():
    """The real command set on this machine: every status, and the output of each that does not
    change from one second to the next, as a channel of its own gave them."""
    outputs, problems = asyncio.run(run_discovery_commands(LocalHost(), skip=()))  # type: ignore[arg-type]
    assert problems == []
    assert set(outputs) == {c.name for c in facts.DISCOVERY_COMMANDS}
    stable = {"lscpu_caches", "os_release", "kernel", "hostname", "dmidecode", "images_fs", "tools"}
    for command in facts.DISCOVERY_COMMANDS:
        status, stdout, stderr = alone(command.command)
        assert outputs[command.name].exit_code == status, command.name
        if command.name in stable:
            assert (outputs[command.name].stdout, outputs[command.name].stderr) == (stdout, stderr), command.name
    assembled = facts.assemble_discovery(outputs)
    assert assembled.capabilities.cpu.cpus > 0 and assembled.capabilities.memory_bytes > 0


def test_the_boundary_is_in_no_command_line():
    host = LocalHost()
    result = run([BatchCommand("a", "echo a")], host=host)
    assert result.outputs["a"].stdout == "a\n"
    (command,) = host.commands
    assert "@@kerub:" in command and "read -r b" in command
    # the boundary came on stdin; a second run uses another one
    assert mark(new_boundary()) != mark(new_boundary())


def test_a_boundary_that_is_not_hex_runs_nothing():
    script = batch_script([BatchCommand("a", "echo ran")], timeout=5, root=True)
    for boundary in ("", "xyz", "abc def", "abc$(id)"):
        done = subprocess.run(["sh", "-c", script], input=f"{boundary}\n".encode(), capture_output=True, timeout=30)
        assert done.returncode == 97 and b"ran" not in done.stdout


@pytest.mark.parametrize("name", ["", "a b", "a;b", "_sudo", "é", "a-b"])
def test_section_names_are_checked(name):
    with pytest.raises(ValueError):
        batch_script([BatchCommand(name, "true")], timeout=5, root=True)


def test_names_are_unique_and_commands_not_empty():
    with pytest.raises(ValueError):
        batch_script([BatchCommand("a", "true"), BatchCommand("a", "true")], timeout=5, root=True)
    with pytest.raises(ValueError):
        batch_script([BatchCommand("a", "  ")], timeout=5, root=True)
    with pytest.raises(ValueError):
        batch_script([BatchCommand("a", "true")], timeout=0, root=True)


def test_the_script_is_one_line():
    commands = [BatchCommand(c.name, c.command, c.privileged) for c in facts.DISCOVERY_COMMANDS]
    for root in (True, False):
        assert "\n" not in batch_script(commands, timeout=60, root=root)


# --- hung, huge ----------------------------------------------------------------------------------------


def test_a_hung_command_is_stopped_and_the_others_still_run():
    commands = [BatchCommand("before", "echo 1"), BatchCommand("hung", "echo partial; sleep 600"),
                BatchCommand("after", "echo 2")]
    result = run(commands, timeout=1)
    assert result.outputs["before"].stdout == "1\n" and result.outputs["after"].stdout == "2\n"
    hung = result.outputs["hung"]
    assert hung.exit_code is None and hung.stdout == "partial\n"
    assert result.problems == ["hung: did not finish within 1 s; stopped"]


def test_the_whole_batch_is_bounded_too():
    # a host without timeout(1): the batch as a whole is stopped, what was read is kept
    result = run([BatchCommand("quick", "echo 1"), BatchCommand("hung", "exec sleep 600"),
                  BatchCommand("never", "echo 3")], timeout=60, overall=1.5,
                 host=LocalHost(env={**os.environ, "PATH": _path_without("timeout")}))
    assert result.outputs["quick"].stdout == "1\n"
    assert result.outputs["hung"].exit_code is None
    assert "never" not in result.outputs
    assert result.problems == ["the discovery commands did not finish within 1.5 s; stopped"]


def _path_without(tool: str) -> str:
    """A PATH with sh, sleep and friends but not ``tool``."""
    import shutil
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="kerub-path-"))
    for name in ("sh", "sleep", "echo", "cat", "printf", "true"):
        found = shutil.which(name)
        if found:
            (directory / name).symlink_to(found)
    assert shutil.which(tool, path=str(directory)) is None
    return str(directory)


def test_30_mb_costs_at_most_the_limit_and_the_other_sections_are_read():
    commands = [BatchCommand("huge", "head -c 31457280 /dev/zero | tr '\\0' 'x'; echo; echo tail"),
                BatchCommand("huge_lines", "yes 0123456789abcdef | head -c 31457280"),
                BatchCommand("huge_err", "head -c 31457280 /dev/zero >&2; echo fine"),
                BatchCommand("after", "echo ok")]
    result = run(commands, max_output=facts.MAX_OUTPUT)
    huge, lines, err = result.outputs["huge"], result.outputs["huge_lines"], result.outputs["huge_err"]
    assert huge.stdout_truncated and len(huge.stdout) <= facts.MAX_OUTPUT + 1 and huge.exit_code == 0
    assert lines.stdout_truncated and len(lines.stdout) <= facts.MAX_OUTPUT + 1
    assert err.stderr_truncated and not err.stdout_truncated and err.stdout == "fine\n"
    assert len(err.stderr) <= facts.MAX_OUTPUT + 1
    assert result.outputs["after"].stdout == "ok\n"
    # and discovery does not read a cut output
    problems = facts.assemble_discovery({"lscpu": huge}).problems
    assert any("printed more than" in p for p in problems)


@pytest.mark.parametrize("size", [99, 100, 101])
def test_the_limit_is_exact(size):
    result = run([BatchCommand("a", f"head -c {size} /dev/zero | tr '\\0' 'y'")], max_output=100)
    assert result.outputs["a"].stdout_truncated is (size > 100)
    if size <= 100:
        assert result.outputs["a"].stdout == "y" * size


# --- sudo, once --------------------------------------------------------------------------------------


def _fake_sudo(directory: Path, refuse: bool) -> dict[str, str]:
    sudo = directory / "sudo"
    log = directory / "sudo.log"
    if refuse:
        sudo.write_text(f"#!/bin/sh\necho run >> '{log}'\necho 'sudo: a password is required' >&2\nexit 1\n")
    else:
        sudo.write_text(f"#!/bin/sh\necho run >> '{log}'\n[ \"$1\" = -n ] && [ \"$2\" = -- ] || exit 99\n"
                        "shift 2\nexec \"$@\"\n")
    sudo.chmod(0o755)
    return {**os.environ, "PATH": f"{directory}:{os.environ['PATH']}"}


def test_a_login_other_than_root_runs_sudo_once_for_every_privileged_command(tmp_path):
    env = _fake_sudo(tmp_path, refuse=False)
    commands = [BatchCommand("plain", "echo p"), BatchCommand("one", "echo 1; echo e1 >&2", privileged=True),
                BatchCommand("two", "exit 4", privileged=True), BatchCommand("three", "printf x", privileged=True)]
    result = run(commands, host=LocalHost(user="admin", env=env))
    assert (result.outputs["plain"].exit_code, result.outputs["plain"].stdout) == (0, "p\n")
    assert (result.outputs["one"].stdout, result.outputs["one"].stderr) == ("1\n", "e1\n")
    assert result.outputs["two"].exit_code == 4
    assert result.outputs["three"].stdout == "x"
    assert (tmp_path / "sudo.log").read_text() == "run\n"


def test_a_refused_sudo_fails_each_privileged_command_with_its_message(tmp_path):
    env = _fake_sudo(tmp_path, refuse=True)
    commands = [BatchCommand("plain", "echo p"), BatchCommand("one", "echo 1", privileged=True),
                BatchCommand("two", "echo 2", privileged=True)]
    result = run(commands, host=LocalHost(user="admin", env=env))
    assert result.outputs["plain"].stdout == "p\n"
    for name in ("one", "two"):
        output = result.outputs[name]
        assert (output.exit_code, output.stdout, output.stderr) == (1, "", "sudo: a password is required\n")
    assert facts.assemble_discovery({"dmidecode": result.outputs["one"]}).failed  # a problem, as before


def test_root_needs_no_sudo(tmp_path):
    env = _fake_sudo(tmp_path, refuse=True)
    result = run([BatchCommand("one", "echo 1", privileged=True)], host=LocalHost(user="root", env=env))
    assert result.outputs["one"].stdout == "1\n"
    assert not (tmp_path / "sudo.log").exists()


# --- the connection ------------------------------------------------------------------------------------


class DroppingHost(LocalHost):
    """The connection drops while the batch runs: the channel ends early and the host is down."""

    @contextlib.asynccontextmanager
    async def process(self, command: str, *, privileged: bool = True, wait: float | None = 0.0) -> AsyncIterator:
        async with super().process(command, privileged=privileged, wait=wait) as proc:
            os.killpg(proc.pid, 9)
            self.is_up = False
            yield proc

    async def connection(self, wait: float | None = 0.0) -> object:
        if not self.is_up:
            raise NotConnected("local is not connected (down)")
        return self


def test_a_dropped_connection_is_no_answer():
    with pytest.raises(NotConnected):
        run([BatchCommand("a", "sleep 1; echo a")], host=DroppingHost())


# --- the reader, fuzzed -------------------------------------------------------------------------------


def _read(chunks: list[bytes], boundary: str, names: list[str], max_output: int) -> dict:
    parser = WatchParser(mark(boundary), names=names, max_size=max_output + 1)
    reader = SectionReader(parser, max_output)
    for chunk in chunks:
        reader.feed(chunk)
    reader.close()
    return reader.sections()


def _split(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(8)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@FUZZ
@given(st.binary(max_size=3000), st.integers(0, 2**32))
def test_any_output_comes_back_exactly_in_any_chunks(tmp_path_factory, payload, seed):
    """Whatever bytes a command prints reach discovery as they would alone (decoded, invalid bytes
    replaced), however the channel cuts the stream."""
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / "payload").write_bytes(payload)
    commands = [BatchCommand("a", f"cat {directory}/payload"), BatchCommand("b", f"cat {directory}/payload >&2")]
    boundary = new_boundary()
    script = batch_script(commands, timeout=30, root=True)
    done = subprocess.run(["sh", "-c", script], input=f"{boundary}\n".encode(), capture_output=True, timeout=30)
    rng = random.Random(seed)
    out = _read(_split(done.stdout, rng), boundary, ["a", "b"], 10_000)
    err = _read(_split(done.stderr, rng), boundary, ["a", "b"], 10_000)
    result = collect(commands, out, err, timeout=30)
    text = payload.decode("utf-8", errors="replace")
    assert (result.outputs["a"].exit_code, result.outputs["a"].stdout, result.outputs["a"].stderr) == (0, text, "")
    assert (result.outputs["b"].stdout, result.outputs["b"].stderr) == ("", text)


_LINES = st.lists(st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"@@kerub:section a", b"@@kerub:status 0", b"@@kerub:end"]),
    st.builds(lambda w, n: b"@@kerub:B:" + w + b" " + n, st.sampled_from([b"section", b"status", b"end", b"x"]),
              st.sampled_from([b"a", b"b", b"zz", b"0", b"-1", b"\xff", b""])),
), max_size=80)


@FUZZ
@given(_LINES, st.integers(0, 2**32), st.integers(1, 300))
def test_the_reader_takes_any_stream(lines, seed, max_output):
    """A stream of anything, even forged markers of a known boundary: no exception, only the named
    sections, none holding more than its limit."""
    data = b"\n".join(line.replace(b"@@kerub:B:", b"@@kerub:" + b"0" * 32 + b":") for line in lines)
    sections = _read(_split(data, random.Random(seed)), "0" * 32, ["a", "b"], max_output)
    assert set(sections) <= {"a", "b"}
    for section in sections.values():
        assert len(section.stdout) <= max_output + 1  # characters: never more than the bytes they came from
    collect([BatchCommand("a", "true"), BatchCommand("b", "true", privileged=True)], sections, sections, timeout=1)
