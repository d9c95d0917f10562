"""qemu-img builders run for real on temp files; the parser on captured and fuzzed output."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerub_tui.hosts.fileimage import (
    QemuImgInfo,
    check_path,
    file_remove,
    parse_qemu_img_info,
    qemu_img_convert,
    qemu_img_create,
    qemu_img_info,
    qemu_img_resize,
)

CAPTURES = Path(__file__).parent.parent / "captures" / "ops"
MIB = 1 << 20

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")


def sh(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)


def run_ok(command: str) -> str:
    result = sh(command)
    assert result.returncode == 0, f"{command!r} failed: {result.stderr}"
    return result.stdout


# a directory name a shell would misread in every way if it were not quoted
HOSTILE_DIR = "we ird $(touch pwned) ;`id` 'q\" & <x>"


@pytest.fixture
def hostile_dir(tmp_path: Path) -> Path:
    d = tmp_path / HOSTILE_DIR
    d.mkdir()
    return d


@needs_qemu_img
@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_create_info_resize_convert_for_real(hostile_dir: Path, fmt: str) -> None:
    image = hostile_dir / f"disk.{fmt}"
    run_ok(qemu_img_create(str(image), 64 * MIB, fmt))
    info = parse_qemu_img_info(run_ok(qemu_img_info(str(image))))
    assert info.format == fmt
    assert info.virtual_size == 64 * MIB
    # sparse: the host allocated far less than the virtual size, as both qemu-img and stat say
    assert info.actual_size is not None and info.actual_size < 4 * MIB
    assert image.stat().st_blocks * 512 < 4 * MIB

    run_ok(qemu_img_resize(str(image), 96 * MIB, fmt))
    assert parse_qemu_img_info(run_ok(qemu_img_info(str(image)))).virtual_size == 96 * MIB
    # never shrinks: qemu-img refuses without --shrink, which the builder never passes
    assert sh(qemu_img_resize(str(image), 32 * MIB, fmt)).returncode != 0
    assert parse_qemu_img_info(run_ok(qemu_img_info(str(image)))).virtual_size == 96 * MIB

    other = "qcow2" if fmt == "raw" else "raw"
    converted = hostile_dir / f"copy.{other}"
    run_ok(qemu_img_convert(str(image), str(converted), other, src_fmt=fmt))
    converted_info = parse_qemu_img_info(run_ok(qemu_img_info(str(converted))))
    assert converted_info.format == other and converted_info.virtual_size == 96 * MIB
    assert converted.stat().st_blocks * 512 < 4 * MIB  # zeros stayed holes

    run_ok(file_remove(str(image)))
    run_ok(file_remove(str(image)))  # idempotent: removing a missing file succeeds
    assert not image.exists()
    # nothing in the hostile name was executed
    assert not (Path.cwd() / "pwned").exists() and not (hostile_dir / "pwned").exists()
    assert sorted(p.name for p in hostile_dir.iterdir()) == [f"copy.{other}"]


@needs_qemu_img
def test_convert_keeps_the_data(tmp_path: Path) -> None:
    raw = tmp_path / "src.raw"
    run_ok(qemu_img_create(str(raw), 4 * MIB, "raw"))
    with raw.open("r+b") as f:
        f.seek(MIB)
        f.write(b"kerub" * 1000)
    qcow = tmp_path / "dst.qcow2"
    back = tmp_path / "back.raw"
    run_ok(qemu_img_convert(str(raw), str(qcow), "qcow2", src_fmt="raw"))
    run_ok(qemu_img_convert(str(qcow), str(back), "raw", src_fmt="qcow2"))
    assert back.read_bytes() == raw.read_bytes()


def test_builders_quote_every_value() -> None:
    assert qemu_img_create("/srv/k/a b.qcow2", 67108864) == "qemu-img create -q -f qcow2 '/srv/k/a b.qcow2' 67108864"
    assert qemu_img_info("/x/y.raw") == "qemu-img info --output=json --force-share /x/y.raw"
    assert qemu_img_resize("/x/y", 1024, "raw") == "qemu-img resize -q -f raw /x/y 1024"
    assert qemu_img_convert("/a", "/b", "raw") == "qemu-img convert -q -O raw /a /b"
    assert file_remove("/x/$(reboot)") == "rm -f -- '/x/$(reboot)'"


@pytest.mark.parametrize(
    "path",
    ["", "relative/disk.img", "-rf", "/a/../etc/shadow", "/a/./b", "/a//b", "/a\nb", "/a\0b", "/a\tb", None, 5],
)
def test_bad_paths_are_refused(path: object) -> None:
    with pytest.raises(ValueError):
        check_path(path)
    with pytest.raises(ValueError):
        qemu_img_create(path, MIB)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, -1, True, 1.5, "64M", None])
def test_bad_sizes_are_refused(size: object) -> None:
    with pytest.raises(ValueError):
        qemu_img_create("/x.img", size)  # type: ignore[arg-type]


def test_bad_format_and_same_file_are_refused() -> None:
    with pytest.raises(ValueError, match="not supported"):
        qemu_img_create("/x.img", MIB, "vmdk; rm -rf /")
    with pytest.raises(ValueError, match="same file"):
        qemu_img_convert("/x.img", "/x.img", "raw")


def test_parse_captured_output() -> None:
    """Captured from qemu-img 7.2 on this machine (see tests/captures/ops/qemu-img-info-*.json)."""
    qcow = parse_qemu_img_info((CAPTURES / "qemu-img-info-qcow2.json").read_text())
    assert qcow == QemuImgInfo(
        filename="/tmp/cap.qcow2",
        format="qcow2",
        virtual_size=64 * MIB,
        actual_size=200704,
        cluster_size=65536,
        backing_filename=None,
        dirty=False,
        corrupt=False,
    )
    raw = parse_qemu_img_info((CAPTURES / "qemu-img-info-raw.json").read_text())
    assert (raw.format, raw.virtual_size, raw.actual_size, raw.cluster_size, raw.corrupt) == (
        "raw",
        64 * MIB,
        4096,
        None,
        None,
    )
    overlay = parse_qemu_img_info((CAPTURES / "qemu-img-info-qcow2-backing.json").read_text())
    assert overlay.backing_filename == "/tmp/cap.qcow2"


@pytest.mark.parametrize(
    "text",
    ["", "qemu-img: Could not open 'x': No such file", "[]", "{}", '{"format": "raw", "filename": "x"}',
     '{"format": "raw", "filename": "x", "virtual-size": -5}', '{"format": "raw", "filename": "x", "virtual-size": true}'],
)
def test_parse_garbage_is_a_clear_error(text: str) -> None:
    with pytest.raises(ValueError, match="qemu-img info"):
        parse_qemu_img_info(text)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
                ["format", "filename", "virtual-size", "actual-size", "cluster-size", "format-specific",
                 "data", "corrupt", "dirty-flag", "backing-filename"]), inner, max_size=6),
            max_leaves=12,
        ).map(json.dumps),
    )
)
def test_parse_never_crashes(text: str) -> None:
    try:
        info = parse_qemu_img_info(text)
    except ValueError:
        return
    assert isinstance(info.virtual_size, int) and info.virtual_size >= 0

