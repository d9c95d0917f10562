from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

from kerub_tui.core import logs

# No per-example deadline: a test asserts behaviour, never speed (that is `make bench`'s); on a loaded CI
# machine hypothesis's default 200 ms failed a property test that had nothing slow about it.
settings.register_profile("kerub-tui", deadline=None)
settings.load_profile("kerub-tui")

# The lab's fixtures (lab, clean_lab, light_lab) for every test directory.
pytest_plugins = ["tests.lab.fixtures"]

# The commands the tests start (kerub-tui serve, export, the console under a pty) run this tree's code,
# whichever tree the virtualenv's editable install points at (a second checkout sharing .venv moves it).
_TREE = str(Path(__file__).resolve().parents[1])
if os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] != _TREE:
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_TREE, os.environ.get("PYTHONPATH", "")) if p)

_SHORT_BASETEMP = pytest.StashKey[Path]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`make test`), tmp_path is the base temp dir + popen-gwN/ + the test's name.
    A data dir's run/ there must stay as short as in a run without xdist: its tunnel sockets need a
    unix socket address (kerub_tui.hosts.libvirt_link.socket_dir takes a temporary directory past 100
    bytes, and the tests of run/ would then find nothing there, or test nothing). So the base is a new
    /tmp/kt-XXXXXXXX (shorter than pytest's /tmp/pytest-of-USER/pytest-N), removed when the run passes;
    kept for a look at what a failing test left."""
    if hasattr(config, "workerinput") or config.option.basetemp is not None:
        return  # a worker gets its base from the controller; a --basetemp given is kept
    if not getattr(config.option, "numprocesses", None):
        return
    path = Path(tempfile.mkdtemp(prefix="kt-"))
    config.option.basetemp = str(path)
    config.stash[_SHORT_BASETEMP] = path


# The longest files, first: under `--dist loadfile` a worker takes whole files in collection order, so
# a file that takes minutes (guest boots under TCG, SIGKILLs in the middle of lab steps) started last
# would keep one worker busy after the other has finished everything else.
_LONGEST_FIRST = ("tests/integration/test_guest_os.py", "tests/integration/test_shared_storage_lab.py",
                  "tests/integration/test_crash_step_lab.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return _LONGEST_FIRST.index(path) if path in _LONGEST_FIRST else len(_LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within each file and among the others is kept


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = session.config.stash.get(_SHORT_BASETEMP, None)
    if path is not None and exitstatus == 0:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_log_file_left_configured():
    """kerub-tui's main() configures its log file (core.logs) in the data dir of the test that ran it,
    and warnings on stderr: the next test starts without them."""
    yield
    logs.unconfigure()
