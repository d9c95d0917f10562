"""Regenerate the image captures on this machine: `python tests/captures/images/capture.py` (qemu-img and
pycdlib needed). Writes qemu-img-info-*.json (the real `qemu-img info --output=json` of each kind of
file) and receiver-*.out (the real stdout of kerub_tui.hosts.images.receive_command run by sh here,
before its commit line)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parents[2]))

from kerub_tui.hosts.images import EXTENSIONS, receive_command  # noqa: E402

MIB = 1 << 20


def make(work: Path) -> dict[str, Path]:
    import pycdlib

    files: dict[str, Path] = {}

    def qemu_img(*args: str) -> None:
        subprocess.run(["qemu-img", "create", "-q", *args], check=True, cwd=work)

    qemu_img("-f", "qcow2", "base.qcow2", "16M")
    files["qcow2"] = work / "base.qcow2"
    qemu_img("-f", "qcow2", "-b", str(work / "base.qcow2"), "-F", "qcow2", "overlay.qcow2")
    files["qcow2-backing"] = work / "overlay.qcow2"
    qemu_img("-f", "qcow2", "-o", f"data_file={work / 'data.raw'}", "datafile.qcow2", "16M")
    files["qcow2-data-file"] = work / "datafile.qcow2"
    qemu_img("-f", "vmdk", "disk.vmdk", "16M")
    files["vmdk"] = work / "disk.vmdk"
    qemu_img("-f", "raw", "plain.raw", "4M")
    files["raw"] = work / "plain.raw"
    with open(work / "mbr.raw", "wb") as f:
        f.truncate(4 * MIB)
        f.seek(446)
        f.write(bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little") + (6144).to_bytes(4, "little"))
        f.seek(510)
        f.write(b"\x55\xaa")
    files["raw-mbr"] = work / "mbr.raw"
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="KERUBTEST")
    data = b"hello from kerub-tui\n"
    iso.add_fp(io.BytesIO(data), len(data), "/HELLO.TXT;1", rr_name="hello.txt", joliet_path="/hello.txt")
    iso.write(str(work / "test.iso"))
    iso.close()
    files["iso"] = work / "test.iso"
    return files


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="kerub-cap.") as tmp:
        work = Path(tmp)
        for kind, path in make(work).items():
            info = subprocess.run(["qemu-img", "info", "--output=json", path.name], check=True, cwd=work,
                                  capture_output=True, text=True).stdout
            (HERE / f"qemu-img-info-{kind}.json").write_text(info)
            target = work / "images"
            target.mkdir(exist_ok=True)
            size = path.stat().st_size
            command = receive_command(str(target), size, {e: f"kerub-image-cap-{kind}.{e}" for e in EXTENSIONS})
            proc = subprocess.run(["sh", "-c", command], input=path.read_bytes(), capture_output=True, check=False)
            # no commit line: the receiver keeps nothing and exits 1
            (HERE / f"receiver-{kind}.out").write_bytes(proc.stdout)
            assert not os.listdir(target), os.listdir(target)


if __name__ == "__main__":
    main()
