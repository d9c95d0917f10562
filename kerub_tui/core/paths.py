"""Where kerub-tui keeps things: the data dir (store, keys, socket) and the config dir."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
from pathlib import Path

import platformdirs

APP_NAME = "kerub-tui"
DATA_ENV = "KERUB_TUI_DATA"
CONFIG_ENV = "KERUB_TUI_CONFIG"

STORE_FILE = "kerub.unqlite"
LOCK_FILE = "kerub.lock"
SOCKET_FILE = "control.sock"
KEY_FILE = "id_ed25519"
DEMO_DIR = "demo"


def _absolute(path: str | os.PathLike[str]) -> Path:
    """An absolute path that does not follow a symbolic link at its end (check_private_dir refuses one)."""
    return Path(os.path.abspath(Path(path).expanduser()))


def data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The data dir: --data-dir, else $KERUB_TUI_DATA, else the platform's user data dir."""
    if override:
        return _absolute(override)
    env = os.environ.get(DATA_ENV)
    if env:
        return _absolute(env)
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def demo_data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The demo's data dir: --data-dir, else a "demo" dir inside the data dir, so a demo never
    mixes its simulated fleet into the admin's documents."""
    if override:
        return _absolute(override)
    return data_dir() / DEMO_DIR


def config_dir() -> Path:
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


class UnsafeDataDir(Exception):
    """The data dir (or a file in it) could be another user's: one line saying what to fix."""


def _owner(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _check_parents(path: Path) -> None:
    """Every directory above the data dir must be root's or ours and writable by nobody else, unless it
    is sticky (as /tmp): otherwise another user could rename the data dir away and put theirs there.
    Directories not made yet are skipped (they will be ours)."""
    uid = os.geteuid()
    parent = Path(os.path.realpath(path.parent))
    for directory in (parent, *parent.parents):
        try:
            st = os.lstat(directory)
        except FileNotFoundError:
            continue
        if st.st_uid not in (0, uid):
            raise UnsafeDataDir(
                f"{path} is inside {directory}, which belongs to {_owner(st.st_uid)}: that user could "
                "replace it; use a data dir whose parents are yours or root's")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise UnsafeDataDir(
                f"{path} is inside {directory}, which others can write to (mode {stat.S_IMODE(st.st_mode):04o}) "
                f"and is not sticky: run chmod go-w {directory}, or use another data dir")


def _check_entry(path: Path, st: os.stat_result, what: str) -> None:
    """A file or directory kerub-tui keeps in the data dir: ours, no symlink, writable by nobody else."""
    uid = os.geteuid()
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeDataDir(f"{what} {path} is a symbolic link: kerub-tui never follows one there; "
                            "remove it (and check who made it)")
    if st.st_uid != uid:
        raise UnsafeDataDir(f"{what} {path} belongs to {_owner(st.st_uid)}, not to you ({_owner(uid)}): "
                            "another user may have planted it; remove it, or use a data dir of your own")
    if st.st_mode & 0o022:
        raise UnsafeDataDir(f"{what} {path} can be written by others (mode {stat.S_IMODE(st.st_mode):04o}): "
                            f"run chmod go-w {path}")


def check_private_dir(path: Path, *, create: bool = False) -> bool:
    """Check a private dir (the data dir, run/ in it) as OpenSSH's StrictModes checks ~/.ssh: the dir
    is ours and no symbolic link, neither it nor its parents are writable by others (a sticky parent
    such as /tmp is fine), and nothing in it is a symbolic link, another user's or writable by others.
    Raises UnsafeDataDir with what to fix. With ``create`` a missing dir is made 0700 (and its
    missing parents), and one that is ours but readable by others is tightened to 0700 (it holds keys
    and host secrets); without it, returns False when the dir does not exist."""
    path = Path(os.path.abspath(path))
    _check_parents(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        st = os.lstat(path)
    what = "the data dir" if path.name != RUN_DIR else "the run dir"
    _check_entry(path, st, what)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDataDir(f"{what} {path} is not a directory")
    if create and stat.S_IMODE(st.st_mode) != 0o700:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)
    with os.scandir(path) as entries:
        for entry in entries:
            try:
                entry_stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while we looked (a journal, a socket going away)
            _check_entry(Path(entry.path), entry_stat, "the file")
    return True


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) 0700, or check the existing one (see check_private_dir)."""
    check_private_dir(path, create=True)
    return path


def open_private(path: Path, flags: int, mode: int = 0o600) -> int:
    """os.open of a file in the data dir that never follows a symbolic link (O_NOFOLLOW) and refuses
    a file that is not a regular file of ours writable only by us. Returns the fd."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafeDataDir(f"{path} is a symbolic link: kerub-tui never follows one there; "
                                "remove it (and check who made it)") from None
        raise
    try:
        st = os.fstat(fd)
        _check_entry(Path(path), st, "the file")
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeDataDir(f"{path} is not a regular file: remove it")
    except BaseException:
        os.close(fd)
        raise
    return fd


# --- run/: the local ends of tunnels and the console's .vv files ----------------------------------

RUN_DIR = "run"
_run_locks: dict[str, int] = {}


def run_dir(data_dir: Path) -> Path:
    """``run/`` in the data dir (0700), and this process's claim on the files it makes there: every
    name starts with ``<pid>.``, and ``<pid>.lock`` stays locked while this process lives, so a later
    controller can tell a dead process's leftovers (tunnel sockets, a .vv with a password) from live ones."""
    path = ensure_private_dir(Path(data_dir) / RUN_DIR)
    key = str(path)
    while key not in _run_locks:
        lock = path / f"{os.getpid()}.lock"
        fd = open_private(lock, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A cleaner may have removed the file between our open and our lock: lock a linked one.
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(fd).st_ino == os.lstat(lock).st_ino:
                _run_locks[key] = fd
                break
        os.close(fd)
    return path


def clean_run_dir(data_dir: Path) -> list[str]:
    """Remove what dead processes left in run/ (tunnel sockets, .vv files with a SPICE password, their
    locks); what live processes use stays. Call it only as the controller holding the data dir's lock.
    Returns the names removed."""
    directory = Path(os.path.abspath(Path(data_dir) / RUN_DIR))
    if not check_private_dir(directory):
        return []
    groups: dict[str, list[str]] = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            pid, dot, _rest = entry.name.partition(".")
            groups.setdefault(pid if dot and pid.isdigit() else "", []).append(entry.name)
    removed: list[str] = []
    for pid, names in sorted(groups.items()):
        held = _claim_if_dead(directory, pid) if pid else None
        if held is False:
            continue  # a live process's files
        try:
            lock = f"{pid}.lock"
            for name in sorted(names, key=lambda n: n == lock):  # the lock last, while we hold it
                target = directory / name
                with contextlib.suppress(FileNotFoundError):
                    if stat.S_ISDIR(os.lstat(target).st_mode):
                        shutil.rmtree(target)
                    else:
                        target.unlink()
                    removed.append(name)
        finally:
            if isinstance(held, int):
                os.close(held)
    return removed


def _claim_if_dead(directory: Path, pid: str) -> int | bool | None:
    """False while process ``pid`` holds its ``<pid>.lock`` (its files are in use); otherwise the fd of
    that lock, now held by us (so the process cannot take it back while its files go), or None when
    there is no lock file at all."""
    if pid == str(os.getpid()) and str(directory) in _run_locks:
        return False
    try:
        fd = os.open(directory / f"{pid}.lock", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    return fd
