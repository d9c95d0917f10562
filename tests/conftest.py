import pytest

from kerub_tui.core import logs

# The lab's fixtures (lab, clean_lab, light_lab) for every test directory.
pytest_plugins = ["tests.lab.fixtures"]


@pytest.fixture(autouse=True)
def _no_log_file_left_configured():
    """kerub-tui's main() configures its log file (core.logs) in the data dir of the test that ran it:
    the next test starts without it."""
    yield
    logs.unconfigure()
