"""A planted data dir (issue 17, item 3): a dir another local user made first, symlinks where kerub-tui
keeps its files, a control socket served by another user's process. Each is refused with one line
saying what to fix, before anything is truncated, created or sent. Then the leftovers of killed
processes in run/ (item 7): the next controller removes them, and only them."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from kerub_tui.control import controller_running, run_cli_remote
from kerub_tui.controller import Controller
from kerub_tui.core import paths
from kerub_tui.core.store import Store, StoreError
from tests import cliproc

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="planting files of another user needs root")


def nobody() -> tuple[int, int]:
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def kerub(data_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return cliproc.kerub(["--data-dir", str(data_dir), *argv], timeout=120)


def refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 1, one line on stderr naming the problem, no traceback, nothing on stdout."""
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kerub-tui: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of ours that a planted symlink points at: it must come out untouched."""
    path = tmp_path / "precious"
    path.write_text("do not truncate me\n")
    return path


def private(path: Path) -> Path:
    path.mkdir(mode=0o700)
    os.chmod(path, 0o700)
    return path


# --- the data dir itself ----------------------------------------------------------------------------


@needs_root
def test_a_data_dir_another_user_made_is_refused_and_left_alone(tmp_path, victim):
    planted = private(tmp_path / "planted")
    (planted / paths.LOCK_FILE).symlink_to(victim)
    os.lchown(planted / paths.LOCK_FILE, *nobody())
    os.chown(planted, *nobody())
    result = kerub(planted, "vm", "list")
    refused(result, str(planted), "belongs to nobody", "use a data dir of your own")
    assert victim.read_text() == "do not truncate me\n"
    assert sorted(p.name for p in planted.iterdir()) == [paths.LOCK_FILE]  # nothing created in it


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_a_data_dir_others_can_write_to_is_refused(tmp_path, mode):
    data = private(tmp_path / "data")
    os.chmod(data, mode)
    refused(kerub(data, "vm", "list"), str(data), f"can be written by others (mode {mode:04o})", "chmod go-w")
    assert list(data.iterdir()) == []
    assert stat.S_IMODE(os.stat(data).st_mode) == mode  # refused, not silently "fixed"


def test_a_data_dir_in_a_dir_others_can_write_to_is_refused_unless_it_is_sticky(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    refused(kerub(shared / "data", "vm", "list"), f"inside {shared}", "not sticky", f"chmod go-w {shared}")
    assert not (shared / "data").exists()
    os.chmod(shared, 0o1777)  # as /tmp: others cannot rename or remove what is ours in it
    result = kerub(shared / "data", "vm", "list")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(shared / "data").st_mode) == 0o700


@needs_root
def test_a_data_dir_inside_another_user_s_dir_is_refused(tmp_path):
    theirs = private(tmp_path / "theirs")
    os.chown(theirs, *nobody())
    refused(kerub(theirs / "data", "vm", "list"), f"inside {theirs}", "belongs to nobody")
    assert not (theirs / "data").exists()


def test_a_data_dir_that_is_a_symlink_is_refused(tmp_path):
    real = private(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real)
    refused(kerub(link, "vm", "list"), f"{link} is a symbolic link")
    assert list(real.iterdir()) == []


def test_a_data_dir_readable_by_others_is_tightened_and_a_new_one_is_private(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    assert kerub(data, "vm", "list").returncode == 0
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    assert kerub(tmp_path / "new" / "data", "vm", "list").returncode == 0
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "data").st_mode) == 0o700


# --- files in it --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [paths.LOCK_FILE, paths.STORE_FILE, paths.KEY_FILE, paths.SOCKET_FILE,
                                  paths.RUN_DIR])
def test_a_symlink_in_the_data_dir_is_refused_and_never_followed(tmp_path, victim, name):
    data = private(tmp_path / "data")
    (data / name).symlink_to(victim)
    refused(kerub(data, "vm", "list"), f"{data / name} is a symbolic link", "remove it")
    assert victim.read_text() == "do not truncate me\n"
    assert sorted(p.name for p in data.iterdir()) == [name]
    with pytest.raises(StoreError, match="symbolic link"):
        Store.open(data, readonly=True)


def test_the_lock_and_the_store_are_opened_without_following_a_symlink(tmp_path, victim):
    """Below the dir check: the opening itself (O_NOFOLLOW), for a symlink made after the check."""
    data = private(tmp_path / "data")
    for name in (paths.LOCK_FILE, paths.STORE_FILE):
        (data / name).symlink_to(victim)
        with pytest.raises(paths.UnsafeDataDir, match="symbolic link"):
            paths.open_private(data / name, os.O_RDWR | os.O_CREAT)
        (data / name).unlink()
    assert victim.read_text() == "do not truncate me\n"
    # holder_pid reads no file through a symlink either
    (data / paths.LOCK_FILE).symlink_to(victim)
    assert Store.holder_pid(data) is None


@needs_root
@pytest.mark.parametrize("name", [paths.LOCK_FILE, paths.STORE_FILE, paths.KEY_FILE, paths.RUN_DIR])
def test_a_file_of_another_user_in_the_data_dir_is_refused(tmp_path, name):
    data = private(tmp_path / "data")
    target = data / name
    if name == paths.RUN_DIR:
        private(target)
    else:
        target.write_text("")
        os.chmod(target, 0o600)
    os.chown(target, *nobody())
    refused(kerub(data, "vm", "list"), str(target), "belongs to nobody")
    assert sorted(p.name for p in data.iterdir()) == [name]


@pytest.mark.parametrize("mode", [0o666, 0o620])
def test_a_file_others_can_write_to_in_the_data_dir_is_refused(tmp_path, mode):
    data = private(tmp_path / "data")
    with Store.open(data):
        pass
    os.chmod(data / paths.STORE_FILE, mode)
    refused(kerub(data, "vm", "list"), str(data / paths.STORE_FILE), "can be written by others",
            f"chmod go-w {data / paths.STORE_FILE}")


# --- the control socket -------------------------------------------------------------------------------

PLANTED_SERVER = textwrap.dedent("""
    import os, socket, sys
    path, uid, gid, record = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    os.setgid(gid)
    os.setuid(uid)  # another user, listening on a socket of its own
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        os.write(record, data)
        conn.close()
""")


@needs_root
def test_a_control_socket_served_by_another_user_gets_nothing(tmp_path):
    """Another user's process listens on a socket that got into our 0700 dir as our own file (moved
    and chowned there): the client checks the peer (SO_PEERCRED) and sends nothing: no command, no
    display, no secret."""
    data = private(tmp_path / "data")
    with Store.open(data):
        pass
    theirs = Path(tempfile.mkdtemp(dir="/tmp"))  # a dir nobody can reach (tmp_path's parents are 0700)
    os.chown(theirs, *nobody())
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
        [sys.executable, "-c", PLANTED_SERVER, str(theirs / "s"), *map(str, nobody()), str(write_end)],
        stdout=subprocess.PIPE, text=True, pass_fds=(write_end,))
    os.close(write_end)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        os.rename(theirs / "s", data / paths.SOCKET_FILE)
        os.lchown(data / paths.SOCKET_FILE, os.geteuid(), os.getegid())
        os.chmod(data / paths.SOCKET_FILE, 0o600)
        with pytest.raises(StoreError, match=r"served by a process of another user \(uid \d+\): nothing was sent"):
            controller_running(data)
        with pytest.raises(StoreError, match="another user"):
            run_cli_remote(data, ["vm", "list"])
        result = kerub(data, "vm", "list")
        refused(result, "served by a process of another user", "nothing was sent")
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(theirs)
    with os.fdopen(read_end, "rb") as received:
        assert received.read() == b""  # it saw connections, never a byte


def test_a_control_socket_of_our_own_controller_is_used(tmp_path):
    """The peer check lets our own controller through (same uid)."""
    data = tmp_path / "data"
    serve = subprocess.Popen([sys.executable, "-m", "kerub_tui", "--data-dir", str(data), "serve"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert serve.stderr is not None and "serving" in serve.stderr.readline()
        assert controller_running(data)
        code, out, _err = run_cli_remote(data, ["vm", "list"])
        assert code == 0 and out.startswith("NAME")
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)


def test_the_install_key_flag_is_taken_out_of_what_goes_through_the_socket():
    from kerub_tui.cli import _without_install_key

    argv = ["host", "add", "10.0.0.1", "--install-key", "--user", "admin", "--accept-fingerprint", "SHA256:x"]
    assert _without_install_key(argv) == ["host", "add", "10.0.0.1", "--user", "admin",
                                          "--accept-fingerprint", "SHA256:x"]
    assert _without_install_key(["host", "add", "h", "--install"]) == ["host", "add", "h"]
    assert _without_install_key(["host", "add", "h", "--in"]) == ["host", "add", "h", "--in"]  # ambiguous: kept


# --- run/ after a crash -------------------------------------------------------------------------------

RUN_FILES = textwrap.dedent("""
    import socket, sys
    from pathlib import Path
    from kerub_tui.controller import Controller
    from kerub_tui.hosts.console import write_console_file
    from kerub_tui.hosts.libvirt_link import LibvirtLink, socket_dir

    data, writer = Path(sys.argv[1]), sys.argv[2] == "writer"
    controller = Controller(data, readonly=not writer)
    if writer:
        controller.open_store()  # the data dir's lock, as a console or serve holds it
    directory = socket_dir(data)
    write_console_file(directory, "[virt-viewer]\\npassword=planted-secret-0\\n")
    sockets = []
    for number in (1, 2):  # the local ends of two libvirt tunnels, named as LibvirtLink names them
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(directory / f"{__import__('os').getpid()}.{number}.sock"))
        sock.listen(1)
        sockets.append(sock)
    print("ready", flush=True)
    sys.stdin.read()
""")


def _run_files(data: Path, role: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", RUN_FILES, str(data), role], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def _owners(run: Path) -> set[str]:
    return {name.split(".", 1)[0] for name in os.listdir(run)}


@pytest.fixture
def short_dir():
    """A directory with a short path for the data dir of the run/ tests: its tunnel sockets must fit a
    unix socket address there (socket_dir takes a temporary directory past 100 bytes), whatever the
    length of pytest's tmp_path (longer under pytest-xdist's popen-gwN, or for a long user name)."""
    path = Path(tempfile.mkdtemp(prefix="kt-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_killed_controller_s_console_file_and_tunnel_sockets_go_at_the_next_start(short_dir):
    data = short_dir / "data"
    run = data / paths.RUN_DIR
    for _crash in range(3):  # each start removes the previous crash's leftovers: they never pile up
        killed = _run_files(data, "writer")
        killed.kill()
        killed.wait()
        assert _owners(run) == {str(killed.pid)}
        assert len(list(run.glob("*.sock"))) == 2 and len(list(run.glob("*.vv"))) == 1
    # A read-only console still running on the dir (it holds no store lock) keeps what it uses.
    alive = _run_files(data, "reader")
    try:
        controller = Controller(data)
        controller.open_store()
        try:
            assert _owners(run) == {str(alive.pid)}
            assert sorted(p.name.split(".", 1)[1].split("-")[0] for p in run.iterdir()) == \
                ["1.sock", "2.sock", "console", "lock"]
        finally:
            controller.db.close()
    finally:
        alive.kill()
        alive.wait()
    # Once it is gone too, the next writer removes its files as well.
    Controller(data).open_store().close()
    assert list(run.iterdir()) == []


def test_a_read_only_process_does_not_clean_run(short_dir):
    data = short_dir / "data"
    killed = _run_files(data, "writer")
    killed.kill()
    killed.wait()
    before = sorted(os.listdir(data / paths.RUN_DIR))
    controller = Controller(data, readonly=True)
    controller.open_store()
    assert sorted(os.listdir(data / paths.RUN_DIR)) == before and len(before) == 4


def test_a_socket_the_cleaner_finds_is_not_followed_out_of_run(short_dir, victim):
    data = short_dir / "data"
    killed = _run_files(data, "writer")
    killed.kill()
    killed.wait()
    (data / paths.RUN_DIR / f"{killed.pid}.9.sock").symlink_to(victim)
    with pytest.raises(StoreError, match="symbolic link"):
        Controller(data).open_store()
    assert victim.read_text() == "do not truncate me\n"


def test_our_own_run_lock_survives_a_cleaner_in_this_process(short_dir):
    from kerub_tui.hosts.libvirt_link import socket_dir

    data = short_dir / "data"
    directory = socket_dir(data)
    (directory / f"{os.getpid()}.1.sock").write_text("")
    assert paths.clean_run_dir(data) == []
    assert sorted(os.listdir(directory)) == [f"{os.getpid()}.1.sock", f"{os.getpid()}.lock"]
