"""What the ssh layer puts on the wire, run for real by this machine's sh: quoting, sudo, and the
watchdog that ties a command to its channel (stdin EOF = channel closed)."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerub_tui.ssh.commands import PROCESS_TAG, CommandResult, remote_command, tie_to_channel
from kerub_tui.ssh.errors import CommandFailed

HOSTILE = [
    "'; touch /tmp/pwned; '",
    '"; touch /tmp/pwned; "',
    "$(touch /tmp/pwned)",
    "`touch /tmp/pwned`",
    "a\nb",
    "tab\there",
    "semi;colon && amp || bar | pipe > redirect < in",
    "glob * ? [a-z] ~ $HOME ${PATH}",
    "unicode ünïcødé ✓",
    "-n",
    "\\",
    "!event",
]


def sh(text: str, **kwargs) -> subprocess.CompletedProcess[str]:
    """Run ``text`` the way sshd does: through the login shell's -c."""
    return subprocess.run(["sh", "-c", text], capture_output=True, text=True, timeout=30, **kwargs)


def on_open_channel(argv: list[str]) -> tuple[int, bytes, bytes]:
    """Run a tied command (``argv``) the way sshd does while the channel stays open: its stdin is
    kept open until the command has ended, then closed. (A stdin at end-of-file from the start is a
    channel closed at once: the watchdog then kills the command, maybe before it wrote anything.)
    The wrapper exits by itself when the command ends; stdout and stderr reach end-of-file then."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out = proc.stdout.read()  # small outputs: stderr's pipe cannot fill meanwhile
        err = proc.stderr.read()
        status = proc.wait(timeout=30)
    finally:
        proc.stdin.close()
        proc.stdout.close()
        proc.stderr.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return status, out, err


def test_plain_command_for_root_is_sent_as_is():
    assert remote_command("uname -n", user="root", privileged=True, tied=False) == "uname -n"


def test_privileged_command_for_another_user_goes_through_sudo_n():
    text = remote_command("lvs; vgs", user="admin", privileged=True, tied=False)
    assert text.startswith("sudo -n -- sh -c ")
    assert shlex.split(text) == ["sudo", "-n", "--", "sh", "-c", "lvs; vgs"]


def test_unprivileged_command_for_another_user_has_no_sudo():
    assert remote_command("id -u", user="admin", privileged=False, tied=False) == "id -u"


def test_tied_privileged_command_puts_the_watchdog_under_sudo():
    argv = shlex.split(remote_command("vmstat 1", user="admin", privileged=True, tied=True))
    assert argv[:5] == ["sudo", "-n", "--", "sh", "-c"]
    assert argv[6:] == [PROCESS_TAG, "vmstat 1"]


@pytest.mark.parametrize("bad", ["", "   ", "a\0b"])
def test_empty_or_nul_commands_are_refused(bad):
    with pytest.raises(ValueError):
        remote_command(bad, user="root", privileged=True, tied=False)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_arrive_intact_through_the_watchdog(value):
    command = f"printf %s {shlex.quote(value)}"
    status, out, _ = on_open_channel(["sh", "-c", remote_command(command, user="root", privileged=True, tied=True)])
    assert (status, out.decode()) == (0, value)
    assert not Path("/tmp/pwned").exists()


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40))
def test_any_text_survives_the_wrapping(value):
    command = f"printf %s {shlex.quote(value)}"
    status, out, _ = on_open_channel(["sh", "-c", remote_command(command, user="root", privileged=False, tied=True)])
    assert (status, out.decode()) == (0, value)


def test_watchdog_passes_exit_status_and_both_streams():
    assert on_open_channel(tie_to_channel("echo out; echo err >&2; exit 7")) == (7, b"out\n", b"err\n")


def test_watchdog_gives_the_command_an_empty_stdin():
    proc = subprocess.Popen(tie_to_channel("cat; echo done"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    # The channel stays open (stdin not closed): cat must still see end-of-file at once.
    line = proc.stdout.readline()
    assert line == "done\n"
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_closing_the_channel_kills_the_command_and_all_it_started(tmp_path):
    marker = tmp_path / "ticks"
    command = f"while :; do sleep 0.1; echo tick >> {shlex.quote(str(marker))}; done & sleep 1000"
    proc = subprocess.Popen(tie_to_channel(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = _descendants(proc.pid)
    assert len(tree) >= 3  # the command's shell, its loop, sleep 1000 (and the watcher)
    proc.stdin.close()  # what sshd does when the channel (or the whole connection) goes
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in tree if _alive(p)] == []
    size = marker.stat().st_size
    time.sleep(0.4)
    assert marker.stat().st_size == size  # the loop is gone, not just its parent


def test_command_result_unpacks_and_checks():
    ok = CommandResult("true", 0, "out", "", 0.5)
    code, out, err, duration = ok
    assert (code, out, err, duration) == (0, "out", "", 0.5)
    assert ok.check() is ok
    failed = CommandResult("lvs", 5, "", "  Volume group not found\n", 0.1)
    with pytest.raises(CommandFailed, match="Volume group not found"):
        failed.check()
