"""Re-capture the discovery outputs the parser tests read: run every DISCOVERY_COMMANDS line here.

    .venv/bin/python tests/captures/discovery/capture.py DIR

writes DIR/<name>.out (stdout) for every discovery command and DIR/manifest.json with the exact
command text, exit status and stderr of each. Run it as root, in the situation the directory
describes (see README.md next to this file): the commands are the product's own, unchanged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from kerub_tui.hosts.facts import DISCOVERY_COMMANDS


def capture(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for command in DISCOVERY_COMMANDS:
        done = subprocess.run(["sh", "-c", command.command], capture_output=True, text=True, timeout=60)
        (target / f"{command.name}.out").write_text(done.stdout)
        manifest[command.name] = {"command": command.command, "exit_code": done.returncode, "stderr": done.stderr}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    capture(Path(sys.argv[1]))
