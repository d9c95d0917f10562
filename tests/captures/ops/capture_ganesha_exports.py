"""Captures ganesha-exports.txt: the export files kerub-tui's own builder (nfs.ganesha_export_block, as
ganesha_add_export writes them) listed by the real ``ganesha_exports_command`` under /bin/sh, plus a file
an admin hand-edited (kept out of reconcile: its Export_Id disagrees with its name).
Run: .venv/bin/python tests/captures/ops/capture_ganesha_exports.py"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from kerub_tui.hosts import nfs


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = Path(tmp) / "kerub"
        export_dir.mkdir()
        (export_dir / "export-4711.conf").write_text(nfs.ganesha_export_block(
            4711, "/var/lib/kerub-tui/images/kerub-disk-1", clients="10.77.0.11"))
        (export_dir / "export-222.conf").write_text(nfs.ganesha_export_block(222, "/srv/nfs/it's $(x) a dir"))
        (export_dir / "export-9.conf").write_text(nfs.ganesha_export_block(10, "/srv/hand-edited"))
        out = subprocess.run(["/bin/sh", "-c", nfs.ganesha_exports_command(str(export_dir))],
                             capture_output=True, text=True, check=True).stdout
    (Path(__file__).parent / "ganesha-exports.txt").write_text(out)


if __name__ == "__main__":
    main()
