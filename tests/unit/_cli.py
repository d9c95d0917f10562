"""Running the command line in the test's process."""

from __future__ import annotations

from kerub_tui.cli import main


def run(*argv, capsys):
    """(exit code, stdout, stderr) of ``kerub-tui ARGV``."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err
