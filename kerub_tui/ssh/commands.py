"""How a command is put on the wire: privilege (``sudo -n``), tying it to its channel, its result.

A remote process can outlive its SSH channel: sshd only closes the pipes. ``tie_to_channel`` wraps a
command in a small POSIX sh script (no job control, no setsid, no tty needed; works on Linux and
the BSDs) that runs it with stdin from /dev/null and watches the channel's stdin: when the channel
closes - the command was cancelled, timed out, or the connection dropped - it kills the command and
every process it started (found through ``ps -A -o pid= -o ppid=``), descendants first so their
parents are still there to reap them.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from .errors import CommandFailed

# $0 of the wrapper: names the controller's processes in `ps` on the host.
PROCESS_TAG = "kerub-tui"

# One line on purpose: a login shell of the csh family would not take a newline inside quotes.
_WATCHDOG = (
    "exec 3<&0; "
    'sh -c "$1" </dev/null 3<&- & p=$!; '
    "( cat <&3 >/dev/null 2>&1; "
    "kill -TERM $(ps -A -o pid= -o ppid= | awk -v root=\"$p\" '"
    '{ kids[$2] = kids[$2] " " $1 } '
    'END { n = split(root, todo, " "); k = 0; while (n > 0) { cur = todo[n--]; found[++k] = cur; '
    'm = split(kids[cur], c, " "); for (i = 1; i <= m; i++) todo[++n] = c[i] } '
    'while (k > 0) printf "%s ", found[k--] }'
    "') 2>/dev/null ) & w=$!; "
    "exec 3<&-; wait \"$p\"; s=$?; kill \"$w\" 2>/dev/null; exit \"$s\""
)


def tie_to_channel(command: str) -> list[str]:
    """argv (before quoting) of ``sh -c WATCHDOG kerub-tui COMMAND``."""
    return ["sh", "-c", _WATCHDOG, PROCESS_TAG, command]


def remote_command(command: str, *, user: str, privileged: bool, tied: bool) -> str:
    """The exact text sent to sshd for ``command``.

    ``privileged`` for a login other than root goes through ``sudo -n`` (never prompts: a missing
    NOPASSWD rule fails at once with sudo's own message). ``tied`` adds the channel watchdog.
    """
    if not isinstance(command, str) or command.strip() == "":
        raise ValueError("empty command")
    if "\0" in command:
        raise ValueError("a command cannot contain a NUL byte")
    argv = tie_to_channel(command) if tied else None
    if privileged and user != "root":
        if argv is None:
            argv = ["sh", "-c", command]
        return "sudo -n -- " + shlex.join(argv)
    if argv is None:
        return command
    return shlex.join(argv)


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What one command did on one host. Output is decoded UTF-8 (invalid bytes replaced)."""

    command: str
    exit_code: int | None  # None: killed by a signal, or no status came back
    stdout: str
    stderr: str
    duration: float  # seconds, from channel open to exit
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    signal: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self) -> CommandResult:
        """Self when the command succeeded, else CommandFailed."""
        if not self.ok:
            raise CommandFailed(self)
        return self

    def __iter__(self):  # (exit code, stdout, stderr, duration), for unpacking
        return iter((self.exit_code, self.stdout, self.stderr, self.duration))
