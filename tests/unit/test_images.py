"""Images: the receiver script run for real by sh on this machine, the parser of its report on captured
output (tests/captures/images, made by capture.py there) and fuzzed, the classification of each kind of
file, and the controller's image use cases that need no host."""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerub_tui.controller import ActionError, Controller
from kerub_tui.core.models import (
    DiskLink,
    FileAllocation,
    ImageInfo,
    VirtualMachine,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
)
from kerub_tui.hosts.images import (
    EXTENSIONS,
    ImageRefused,
    Progress,
    ReceiverReport,
    check_report,
    classify,
    external_references,
    image_file_name,
    parse_magic,
    parse_report,
    receive_command,
    verify_command,
)

CAPTURES = Path(__file__).parent.parent / "captures" / "images"
needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")
HOSTILE = ["a;b", "$(touch /tmp/kerub-pwned)", "`id`", "a b", "../x", "x\ny", "-rf", "'", '"', "a|b"]


def report(kind: str) -> ReceiverReport:
    return parse_report((CAPTURES / f"receiver-{kind}.out").read_text())


# --- captured reports ----------------------------------------------------------------------------


def test_a_captured_iso_report_is_an_iso():
    r = report("iso")
    assert r.ready and r.temp and r.temp.split("/")[-1].startswith(".kerub-import.")
    assert r.info is not None and r.info.format == "raw"  # qemu-img calls an ISO raw
    assert r.magic["iso"] == "4344303031"
    assert classify(r).format == "iso" and classify(r).allocation_format == "raw"


def test_a_captured_qcow2_report_is_a_qcow2():
    c = classify(report("qcow2"))
    assert (c.format, c.virtual_size, c.allocation_format) == ("qcow2", 16 << 20, "qcow2")


def test_a_raw_disk_with_a_partition_table_is_kept_and_plain_raw_data_is_not():
    assert classify(report("raw-mbr")).format == "raw"
    with pytest.raises(ImageRefused, match="neither a disk image nor an ISO"):
        classify(report("raw"))


@pytest.mark.parametrize("kind, why", [("qcow2-backing", "a backing file"),
                                       ("qcow2-data-file", "an external data file")])
def test_images_that_refer_to_another_file_are_refused(kind, why):
    with pytest.raises(ImageRefused, match=why):
        classify(report(kind))


def test_a_vmdk_is_refused_with_what_to_do():
    with pytest.raises(ImageRefused, match=r"vmdk image.*qemu-img convert"):
        classify(report("vmdk"))


@pytest.mark.parametrize("kind", ["qcow2", "qcow2-backing", "qcow2-data-file", "vmdk", "raw", "raw-mbr", "iso"])
def test_the_captured_qemu_img_info_parses(kind):
    raw = json.loads((CAPTURES / f"qemu-img-info-{kind}.json").read_text())
    refs = external_references(raw)
    assert bool(refs) == (kind in ("qcow2-backing", "qcow2-data-file"))


def test_check_report_compares_the_sums_and_the_size():
    r = report("iso")
    assert r.sha256 is not None
    assert check_report(r, 65536, r.sha256).format == "iso"
    with pytest.raises(ImageRefused, match="sha256 mismatch"):
        check_report(r, 65536, "0" * 64)
    failed = parse_report("kerub-image-temp /x/.kerub-import.a\nkerub-image-failed: not enough space in /x\n")
    with pytest.raises(ImageRefused, match="not enough space"):
        check_report(failed, 10, "0" * 64)
    with pytest.raises(ImageRefused, match="did not finish"):
        check_report(parse_report("kerub-image-temp /x/.kerub-import.a\n"), 10, "0" * 64)


def test_magic_keeps_only_hex_of_known_keys():
    assert parse_magic("iso=4344303031 mbr= gpt=zz evil=00") == {"iso": "4344303031", "mbr": ""}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_the_report_parser_never_crashes_on_garbage(text):
    try:
        r = parse_report(text)
    except ValueError:
        return
    try:
        classify(r)
    except ImageRefused:
        pass


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children,
                                                                                       max_size=5), max_leaves=20))
def test_classify_takes_any_json_as_qemu_img_info(value):
    line = "kerub-image-info " + json.dumps(value)
    try:
        r = parse_report(line + "\nkerub-image-ready\n")
    except ValueError:
        return
    try:
        classify(r)
    except ImageRefused:
        pass
    external_references(value if isinstance(value, dict) else None)


# --- the builders --------------------------------------------------------------------------------


def test_image_file_names_are_plain_and_unique_per_id():
    assert image_file_name("debian", "0123abcd-ef", "iso") == "kerub-image-debian-0123abcd.iso"
    for bad in HOSTILE:
        with pytest.raises(ValueError):
            image_file_name(bad, "0123abcd", "iso")
    with pytest.raises(ValueError):
        image_file_name("x", "0123abcd", "sh")


def test_receive_command_refuses_hostile_paths_and_names():
    names = {"iso": "kerub-image-x-1.iso"}
    for bad in ("relative/dir", "/a/../b", "/a\nb"):
        with pytest.raises(ValueError):
            receive_command(bad, 10, names)
    for bad in HOSTILE:
        with pytest.raises(ValueError):
            receive_command("/images", 10, {"iso": f"{bad}.iso"})
    with pytest.raises(ValueError):
        receive_command("/images", 0, names)
    with pytest.raises(ValueError):
        receive_command("/images", 10, {"exe": "x.exe"})


def test_a_hostile_directory_is_quoted(tmp_path):
    odd = tmp_path / "$(touch pwned) 'x'"
    odd.mkdir()
    data = (CAPTURES / "receiver-iso.out").read_bytes()  # any bytes will do: raw, no signature
    run = subprocess.run(["sh", "-c", receive_command(str(odd), len(data), {"raw": "kerub-image-a-1.raw"})],
                         input=data + b"commit raw\n", capture_output=True, cwd=tmp_path, timeout=60)
    assert b"kerub-image-committed" in run.stdout, run.stderr
    assert (odd / "kerub-image-a-1.raw").read_bytes() == data
    assert not (tmp_path / "pwned").exists()


def receive(tmp_path: Path, data: bytes, tail: bytes, size: int | None = None) -> subprocess.CompletedProcess:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    command = receive_command(str(images), size or len(data), {e: f"kerub-image-t-1.{e}" for e in EXTENSIONS})
    return subprocess.run(["sh", "-c", command], input=data + tail, capture_output=True, timeout=60)


@needs_qemu_img
def test_the_receiver_commits_only_on_the_commit_line(tmp_path):
    data = b"\0" * 510 + b"\x55\xaa" + b"\1" * 4096
    kept = receive(tmp_path, data, b"commit raw\n")
    r = parse_report(kept.stdout.decode())
    assert kept.returncode == 0 and r.committed == str(tmp_path / "images" / "kerub-image-t-1.raw")
    assert r.sha256 == hashlib.sha256(data).hexdigest() and classify(r).format == "raw"
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["kerub-image-t-1.raw"]
    assert (tmp_path / "images" / "kerub-image-t-1.raw").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("tail", [b"", b"commit\n", b"commit exe\n", b"no\n", b"commit raw; rm -rf /\n"])
def test_anything_but_a_commit_line_keeps_nothing(tmp_path, tail):
    gone = receive(tmp_path, b"x" * 1000, tail)
    assert gone.returncode != 0
    assert list((tmp_path / "images").iterdir()) == []


def test_a_short_transfer_keeps_nothing(tmp_path):
    short = receive(tmp_path, b"x" * 1000, b"", size=5000)
    assert short.returncode != 0
    assert "cut short: 1000 of 5000 bytes" in parse_report(short.stdout.decode()).failure
    assert list((tmp_path / "images").iterdir()) == []


def test_no_room_is_refused_before_reading(tmp_path):
    huge = receive(tmp_path, b"x" * 10, b"", size=1 << 60)
    assert "not enough space" in parse_report(huge.stdout.decode()).failure
    assert list((tmp_path / "images").iterdir()) == []


@needs_qemu_img
def test_from_a_file_on_the_host_reports_both_sums(tmp_path):
    source = tmp_path / "src dir" / "$(x).qcow2"
    source.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(source), "8M"], check=True)
    images = tmp_path / "images"
    images.mkdir()
    command = receive_command(str(images), None, {"qcow2": "kerub-image-f-1.qcow2"}, source=str(source))
    run = subprocess.run(["sh", "-c", command], input=b"commit qcow2\n", capture_output=True, timeout=60)
    r = parse_report(run.stdout.decode())
    assert r.source_sha256 == r.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert r.size == source.stat().st_size and check_report(r, r.size, None).format == "qcow2"
    missing = receive_command(str(images), None, {"qcow2": "kerub-image-g-1.qcow2"}, source=str(tmp_path / "no"))
    run = subprocess.run(["sh", "-c", missing], input=b"", capture_output=True, timeout=60)
    assert "not a readable regular file" in parse_report(run.stdout.decode()).failure


def test_verify_command_checks_a_copy(tmp_path):
    copy = tmp_path / "copy.iso"
    copy.write_bytes(b"abc")
    good = hashlib.sha256(b"abc").hexdigest()
    assert subprocess.run(["sh", "-c", verify_command(str(copy), good)]).returncode == 0
    assert subprocess.run(["sh", "-c", verify_command(str(copy), "0" * 64)], capture_output=True).returncode != 0
    with pytest.raises(ValueError):
        verify_command(str(copy), "$(id)")
    assert shlex.quote(str(copy)) in verify_command(str(copy), good)


def test_progress_says_bytes_rate_and_eta():
    line = Progress(50 << 20, 100 << 20, 2.0).describe()
    assert "50" in line and "of 100" in line and "(50%)" in line and "/s" in line and "ETA 2 s" in line
    assert "done in" in Progress(100, 100, 1.0, "done").describe()


# --- use cases without a host --------------------------------------------------------------------


@pytest.fixture
async def controller(tmp_path):
    c = Controller(tmp_path / "data")
    await c.start(connect_hosts=False)
    yield c
    await c.stop()


def put_image(c: Controller, name: str = "debian") -> VirtualStorageDevice:
    disk = VirtualStorageDevice(name=name, size=4096, read_only=True,
                                image=ImageInfo(format="iso", virtual_size=4096, file_size=4096, sha256="a" * 64))
    c.db.put(disk)
    c.db.put(VirtualStorageDeviceDynamic(id=disk.id, allocations=[
        FileAllocation(host_id="h1", capability_id="file:/var/lib/kerub-tui/images",
                       path="/var/lib/kerub-tui/images/kerub-image-debian-1.iso")]))
    return disk


async def test_delete_is_refused_while_a_vm_uses_the_image(controller):
    image = put_image(controller)
    controller.db.put(VirtualMachine(name="web", disks=[DiskLink(disk_id=image.id, device="cdrom", read_only=True)]))
    with pytest.raises(ActionError, match="used by web"):
        await controller.delete_image("debian")
    assert controller.db.get(VirtualStorageDevice, image.id) is not None


async def test_delete_is_refused_while_a_clone_depends_on_a_copy(controller):
    image = put_image(controller)
    clone = VirtualStorageDevice(name="web-root", size=8192)
    controller.db.put(clone)
    controller.db.put(VirtualStorageDeviceDynamic(id=clone.id, cloned_from=image.id, allocations=[
        FileAllocation(host_id="h1", capability_id="file:/var/lib/kerub-tui/images", format="qcow2",
                       path="/var/lib/kerub-tui/images/kerub-web-root.qcow2", backing=image.id)]))
    with pytest.raises(ActionError, match="backing of web-root"):
        await controller.delete_image("debian")


async def test_an_import_is_refused_without_a_host_with_an_image_directory(controller, tmp_path):
    iso = tmp_path / "x.iso"
    iso.write_bytes(b"x" * 100)
    with pytest.raises(ActionError, match="no connected host has an image directory"):
        await controller.import_image(str(iso))
    with pytest.raises(ActionError, match="already exists"):
        put_image(controller, "x")
        await controller.import_image(str(iso))
    with pytest.raises(ActionError, match="give the image a name with --name"):
        await controller.import_image(str(tmp_path / ";rm -rf x.iso"))
    with pytest.raises(ActionError, match="cannot read"):
        await controller.import_image(str(tmp_path / "absent.iso"), name="absent")
    audit = [a for a in controller.db.list("audit") if a.action == "image import"]
    assert audit and all(a.outcome.startswith("refused") for a in audit)


async def test_only_images_are_listed_as_images(controller):
    put_image(controller, "b-image")
    await controller.create_disk("a-disk", size=4096)
    assert [d.name for d in controller.images()] == ["b-image"]
    with pytest.raises(ActionError, match="a disk, not an image"):
        controller.image("a-disk")
