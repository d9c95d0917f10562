"""The layer contracts of ARCHITECTURE.md §3 (pyproject.toml, [tool.importlinter]), checked by import-linter
on every test run: the layers, bottom to top; the console (screens, app) using only the console API
(kerub_tui.api), never the controller, the planner, the simulator or hosts/ (a host's facts are queries);
screens never importing the app but for typing (the layers: app sits above screens); only the console
importing textual."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_linter_contracts_hold():
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is not installed in this environment"
    result = subprocess.run([lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken" in result.stdout, result.stdout
