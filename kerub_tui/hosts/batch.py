"""Many short commands in ONE SSH channel: one shell script, each command a section of its output.

Discovery runs about twenty short commands on a host. A channel each makes sshd start a session, a
login shell and the channel watchdog for every one of them; on a busy host (or a controller with
many hosts) that work is most of the cost. ``run_batch`` sends one POSIX sh script instead:

- each command runs in its own ``sh -c`` with stdin from /dev/null, under ``timeout`` (when the host
  has it) so a hung command is stopped and the sections after it still run;
- before and after each command the script prints a marker line on both stdout and stderr:
  ``@@kerub:BOUNDARY:section NAME`` and ``@@kerub:BOUNDARY:status N``, each preceded by a newline (so
  an output without a final newline cannot hide a marker; the parser takes that newline back off);
- BOUNDARY is 32 random hex digits per run. It reaches the host on the channel's stdin, read by the
  shell's own ``read``, and is printed only by the shell's own ``printf``: it is in no command line
  (``ps`` shows the script, not the boundary), so nothing a host prints can forge a marker;
- privileged commands need ``sudo -n`` only for a login other than root: they then run in one nested
  ``sudo -n -- sh -c ...`` (sudo once), and when sudo refuses, each of them fails with sudo's
  message, as a command of its own would have.

The controller reads both streams with the monitor's WatchParser (the same sectioned protocol as the
state watch), keeping at most ``max_output`` bytes per section (the rest is read and dropped, and
the section flagged truncated), whatever the host prints: long lines, NULs, invalid UTF-8.
"""

from __future__ import annotations

import asyncio
import secrets
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncssh

from kerub_tui.ssh import HostConnection, NotConnected

from .monitor.watch import SectionOutput, WatchParser

_SUDO = "_sudo"  # the pseudo-section around the nested sudo: its status and its stderr
TIMED_OUT = 124  # timeout(1)'s exit status for a command it stopped
KILL_AFTER = 5  # seconds between timeout(1)'s TERM and its KILL


@dataclass(frozen=True)
class BatchCommand:
    name: str  # letters, digits and '_'
    command: str  # one shell line
    privileged: bool = False


@dataclass(frozen=True)
class BatchOutput:
    """One command's result, as facts.CommandOutput reads it."""

    exit_code: int | None  # None: stopped (timed out) or no status came back
    stdout: str
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False


@dataclass(frozen=True)
class BatchResult:
    outputs: dict[str, BatchOutput]  # by name; a command that never ran has none
    problems: list[str]


def new_boundary() -> str:
    return secrets.token_hex(16)


def mark(boundary: str) -> str:
    return f"@@kerub:{boundary}:"


def _prelude(timeout: int) -> str:
    # the boundary from stdin, refused unless it is hex; `m WORDS` prints one marker on both streams
    return (
        "IFS= read -r b || exit 97; case $b in ''|*[!0-9a-f]*) exit 97;; esac; p=\"@@kerub:$b:\"; "
        f"if command -v timeout >/dev/null 2>&1; then t='timeout -k {KILL_AFTER} {timeout}'; else t=; fi; "
        "m() { printf '\\n%s%s\\n' \"$p\" \"$1\"; printf '\\n%s%s\\n' \"$p\" \"$1\" >&2; }; "
    )


def _section(command: BatchCommand) -> str:
    section = shlex.quote(f"section {command.name}")
    return f"m {section}; $t sh -c {shlex.quote(command.command)} </dev/null; m \"status $?\"; "


def batch_script(commands: Sequence[BatchCommand], *, timeout: int, root: bool) -> str:
    """The shell text (one line: a login shell of the csh family takes no newline in quotes) that runs
    ``commands`` and frames their outputs; it reads the boundary from its stdin's first line.

    ``root``: the login is root, so privileged commands need no sudo."""
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 86400:
        raise ValueError(f"batch timeout must be 1..86400 seconds, not {timeout!r}")
    seen: set[str] = set()
    for command in commands:
        name = command.name
        if not name or not name.isascii() or not name.replace("_", "").isalnum() or name == _SUDO or name in seen:
            raise ValueError(f"command name {name!r} must be unique letters, digits and '_'")
        seen.add(name)
        if not command.command.strip() or "\0" in command.command:
            raise ValueError(f"command {name}: empty or with a NUL byte")
    plain = [c for c in commands if root or not c.privileged]
    sudo = [c for c in commands if not root and c.privileged]
    script = _prelude(timeout) + "".join(_section(c) for c in plain)
    if sudo:
        inner = _prelude(timeout) + "".join(_section(c) for c in sudo)
        script += (
            f"printf '\\n%ssection {_SUDO}\\n' \"$p\" >&2; "  # sudo's own complaint lands in this section
            f"printf '%s\\n' \"$b\" | sudo -n -- sh -c {shlex.quote(inner)}; s=$?; "
            f"printf '\\n%ssection {_SUDO}\\n\\n%sstatus %s\\n' \"$p\" \"$p\" \"$s\"; "
            "printf '\\n%sstatus %s\\n' \"$p\" \"$s\" >&2; "
        )
    return script + "m end"


class SectionReader:
    """Splits one stream of a batch into lines for a WatchParser, holding at most ``max_output``
    bytes of any line (a longer line's rest is dropped and its section flagged truncated)."""

    def __init__(self, parser: WatchParser, max_output: int) -> None:
        self.parser = parser
        self.cap = max_output + 1
        self.pending = bytearray()
        self.skipping = False
        self.batch: dict[str, SectionOutput] | None = None  # once the end marker came

    @property
    def ended(self) -> bool:
        return self.batch is not None

    def sections(self) -> dict[str, SectionOutput]:
        """Every section read: the whole batch, or as far as the stream went."""
        return self.batch if self.batch is not None else self.parser.sections()

    def _line(self, raw: bytes | bytearray) -> None:
        if self.batch is not None:
            return  # nothing after the end marker is read
        batch = self.parser.feed(raw.decode("utf-8", errors="replace"), len(raw) + 1)
        if batch is not None:
            self.batch = batch

    def feed(self, chunk: bytes) -> None:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if not self.skipping:
                    self.pending += chunk[start:]
                    if len(self.pending) > self.cap:
                        self._line(self.pending[: self.cap])
                        self.parser.cut()
                        self.pending.clear()
                        self.skipping = True
                return
            if self.skipping:
                self.skipping = False
            else:
                self.pending += chunk[start:end]
                if len(self.pending) > self.cap:
                    self._line(self.pending[: self.cap])
                    self.parser.cut()
                else:
                    self._line(self.pending)
            self.pending.clear()
            start = end + 1

    def close(self) -> None:
        if self.pending and not self.skipping:
            self._line(self.pending)
        self.pending.clear()


def _text(text: str) -> str:
    """A section's text without the newline the script printed before the next marker."""
    return text[:-1] if text.endswith("\n") else text


def collect(commands: Sequence[BatchCommand], out: Mapping[str, SectionOutput], err: Mapping[str, SectionOutput], *,
            timeout: float) -> BatchResult:
    """The outputs by command name from the sections of the two streams (complete or cut short)."""
    outputs: dict[str, BatchOutput] = {}
    problems: list[str] = []
    sudo = out.get(_SUDO)
    refused = err.get(_SUDO)
    for command in commands:
        section = out.get(command.name)
        errors = err.get(command.name)
        if section is None:
            if command.privileged and sudo is not None and sudo.exit_code not in (None, 0):
                # sudo refused (or failed) before the command could run: its failure is the command's
                outputs[command.name] = BatchOutput(
                    sudo.exit_code, "", _text(refused.stdout) if refused else "",
                    stderr_truncated=bool(refused and refused.truncated),
                )
            continue
        stdout_text, stderr_text = _text(section.stdout), _text(errors.stdout) if errors else ""
        status = section.exit_code
        if status == TIMED_OUT:
            problems.append(f"{command.name}: did not finish within {timeout:g} s; stopped")
            status = None
        outputs[command.name] = BatchOutput(
            status, stdout_text, stderr_text,
            stdout_truncated=section.truncated,
            stderr_truncated=bool(errors and errors.truncated),
        )
    return BatchResult(outputs, problems)


async def run_batch(
    host: HostConnection,
    commands: Sequence[BatchCommand],
    *,
    timeout: float,
    max_output: int,
    overall: float | None = None,
) -> BatchResult:
    """Run ``commands`` in one channel on ``host``; each is stopped after ``timeout`` seconds on the
    host, the whole batch after ``overall`` (default: three times ``timeout``) on this side.

    What a command printed past ``max_output`` bytes is dropped (that output flagged truncated). A
    command that never ran (the batch was stopped) has no output. Raises NotConnected if the
    connection is down or drops meanwhile: half a batch is no answer.
    """
    overall = 3 * timeout if overall is None else overall
    boundary = new_boundary()
    script = batch_script(commands, timeout=max(1, round(timeout)), root=host.user == "root")
    names = [c.name for c in commands] + [_SUDO]
    # each section's text ends with the newline printed before the next marker: room for it too
    stdout = WatchParser(mark(boundary), names=names, max_size=max_output + 1)
    stderr = WatchParser(mark(boundary), names=names, max_size=max_output + 1)
    readers = SectionReader(stdout, max_output), SectionReader(stderr, max_output)
    problems: list[str] = []
    conn = await host.connection()
    async with host.process(shlex.join(["sh", "-c", script]), privileged=False) as proc:

        async def drain(stream: asyncssh.SSHReader[bytes], reader: SectionReader) -> None:
            while chunk := await stream.read(65536):
                reader.feed(chunk)
            reader.close()

        try:
            async with asyncio.timeout(overall):
                proc.stdin.write(f"{boundary}\n".encode())
                proc.stdin.write_eof()
                await asyncio.gather(drain(proc.stdout, readers[0]), drain(proc.stderr, readers[1]))
        except TimeoutError:
            problems.append(f"the discovery commands did not finish within {overall:g} s; stopped")
        except (asyncssh.Error, OSError) as error:
            raise NotConnected(f"{host.name}: connection lost during discovery ({error})") from None
    if not readers[0].ended and not problems and await _changed(host, conn):
        raise NotConnected(f"{host.name}: connection lost during discovery")
    result = collect(commands, readers[0].sections(), readers[1].sections(), timeout=timeout)
    return BatchResult(result.outputs, problems + result.problems)


async def _changed(host: HostConnection, conn: asyncssh.SSHClientConnection) -> bool:
    try:
        return await host.connection() is not conn
    except NotConnected:
        return True
