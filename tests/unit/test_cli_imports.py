"""A command sent to a running controller needs only the command line and the control socket's client:
importing the controller (and with it asyncssh, libvirt, the planner) doubled every such command's time
(bench/cli.py: `vm list` through serve 2.6 s before, 1.3 s after, on the same loaded machine)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ["kerub_tui.controller", "kerub_tui.planner", "kerub_tui.hosts", "kerub_tui.ssh", "asyncssh", "libvirt",
         "textual"]


def test_the_command_line_imports_no_controller_until_it_needs_one():
    probe = ("import sys, kerub_tui.cli, kerub_tui.control; "
             f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == ""
