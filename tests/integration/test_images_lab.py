"""Images against the lab: `kerub-tui image import` for real (an ISO made by pycdlib, a qcow2 made by
qemu-img), every refusal, and a transfer cut short every way (the command line or the controller
SIGKILLed mid-import, the SSH connection dropped), each time checking on the host that nothing is left.

Each lab host gets its own image directory for these tests: a small tmpfs mounted on
/var/lib/kerub-tui in that host's mount namespace only (the lab hosts share the machine's root file
system), removed at the end so the other tests' hosts keep no file storage.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kerub_tui.controller import ActionError, Controller
from kerub_tui.hosts.facts import IMAGES_DIR
from tests import cliproc

pytestmark = pytest.mark.lab

MIB = 1 << 20
TMPFS_MIB = 320
DEADLINE = 60.0


def kerub(*argv, env, timeout=240):
    return cliproc.kerub(argv, env=env, timeout=timeout)


def wait_for(predicate, what: str, timeout: float = DEADLINE, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(interval)


def listing(host) -> list[str]:
    """Every file in the host's image directory, temp files (.kerub-import.*) included."""
    result = host.run(f"ls -A {IMAGES_DIR}", check=True)
    return sorted(result.stdout.split())


def temp_files(host) -> list[str]:
    return [n for n in listing(host) if n.startswith(".kerub-import.")]


def make_iso(path: Path, payload: int = 2 * MIB) -> Path:
    pycdlib = pytest.importorskip("pycdlib")
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="KERUBLAB")
    data = os.urandom(payload)
    iso.add_fp(io.BytesIO(data), len(data), "/DATA.BIN;1", rr_name="data.bin", joliet_path="/data.bin")
    iso.write(str(path))
    iso.close()
    return path


def make_qcow2(path: Path, size: str = "8M", *options: str) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *options, str(path), size], check=True)
    return path


def make_mbr_raw(path: Path, size: int) -> Path:
    """A raw disk with an MBR partition table (one partition), random content after it."""
    with open(path, "wb") as f:
        f.write(b"\0" * 446 + bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little")
                + ((size // 512) - 2048).to_bytes(4, "little") + b"\0" * 48 + b"\x55\xaa")
        left = size - 512
        while left > 0:
            chunk = os.urandom(min(left, 4 * MIB))
            f.write(chunk)
            left -= len(chunk)
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def images(env) -> list[dict]:
    result = kerub("image", "list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return [doc for doc in json.loads(result.stdout)]


@pytest.fixture(scope="module")
def imaging(lab, tmp_path_factory):
    """Two lab hosts with an image directory, joined to a fresh data dir."""
    hosts = lab.hosts[:2]
    for host in hosts:
        host.run(f"mkdir -p /var/lib/kerub-tui && mount -t tmpfs -o size={TMPFS_MIB}m,mode=0755 kerub-images "
                 f"/var/lib/kerub-tui && mkdir -m 0755 {IMAGES_DIR}", check=True)
    base = tmp_path_factory.mktemp("images")
    env = dict(os.environ, KERUB_TUI_DATA=str(base / "data"), KERUB_TUI_CONFIG=str(base / "config"),
               PYTHONUNBUFFERED="1")
    try:
        for host in hosts:
            added = kerub("host", "add", host.address, "--name", host.name, "--identity", str(host.client_key),
                          "--accept-fingerprint", host.host_key_fingerprint, env=env)
            assert added.returncode == 0, added.stderr
        yield hosts, env, base
    finally:
        for host in hosts:
            host.run("umount /var/lib/kerub-tui")
        lab.reset()


@pytest.fixture
def clean_images(imaging):
    """The imaging hosts with an empty image directory after the test, and no image recorded."""
    hosts, env, _base = imaging
    yield imaging
    for doc in images(env):
        kerub("image", "delete", doc["name"], env=env)
    for host in hosts:
        host.run(f"rm -rf /var/lib/kerub-tui/* && mkdir -m 0755 {IMAGES_DIR}", check=True)


# --- imports ---------------------------------------------------------------------------------------


def test_an_iso_and_a_qcow2_are_imported_checked_and_listed(clean_images, tmp_path):
    (h0, h1), env, _ = clean_images
    iso = make_iso(tmp_path / "install.iso")
    imported = kerub("image", "import", str(iso), "--host", h0.name, env=env)
    assert imported.returncode == 0, imported.stderr
    assert "imported image install (iso" in imported.stdout
    assert "MiB/s" in imported.stderr or "done in" in imported.stderr  # progress: bytes, rate, ETA
    assert " of " in imported.stderr and "done in" in imported.stderr

    qcow2 = make_qcow2(tmp_path / "base.qcow2", "64M")
    imported = kerub("image", "import", str(qcow2), "--name", "debian-base", "--host", h1.name, env=env)
    assert imported.returncode == 0, imported.stderr

    docs = {d["name"]: d for d in images(env)}
    assert set(docs) == {"install", "debian-base"}
    assert docs["install"]["image"]["format"] == "iso"
    assert docs["install"]["read_only"] is True
    assert docs["install"]["image"]["sha256"] == sha256(iso)
    assert docs["debian-base"]["image"]["format"] == "qcow2"
    assert docs["debian-base"]["image"]["virtual_size"] == 64 * MIB
    assert docs["debian-base"]["image"]["file_size"] == qcow2.stat().st_size

    shown = json.loads(kerub("image", "show", "install", "--json", env=env).stdout)
    (copy,) = shown["dynamic"]["allocations"]
    assert copy["type"] == "file" and copy["format"] == "raw" and copy["path"].startswith(IMAGES_DIR + "/")
    on_host = h0.run(f"sha256sum {copy['path']}", check=True).stdout.split()[0]
    assert on_host == sha256(iso)
    assert temp_files(h0) == [] and temp_files(h1) == []
    info = h1.run(f"qemu-img info --output=json {IMAGES_DIR}/*.qcow2", check=True).stdout
    assert json.loads(info)["format"] == "qcow2"

    table = kerub("image", "list", env=env).stdout
    assert "install" in table and "debian-base" in table and "iso" in table

    deleted = kerub("image", "delete", "install", env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert listing(h0) == []
    assert [d["name"] for d in images(env)] == ["debian-base"]


def test_import_from_a_file_already_on_the_host(clean_images, tmp_path):
    (h0, _), env, _ = clean_images
    source = Path("/var/lib/kerub-tui/on-host.qcow2")  # the host's own tmpfs, beside the image directory
    h0.run(f"qemu-img create -q -f qcow2 {source} 16M", check=True)
    imported = kerub("image", "import", "--from", f"{h0.name}:{source}", "--name", "from-host", env=env)
    assert imported.returncode == 0, imported.stderr
    (doc,) = images(env)
    assert doc["image"]["format"] == "qcow2"
    assert doc["image"]["sha256"] == h0.run(f"sha256sum {source}", check=True).stdout.split()[0]
    assert doc["image"]["source"] == f"{h0.name}:{source}"
    assert len([n for n in listing(h0) if n.endswith(".qcow2")]) == 1 and temp_files(h0) == []

    backed = "/var/lib/kerub-tui/backed.qcow2"
    h0.run(f"qemu-img create -q -f qcow2 -b {source} -F qcow2 {backed} 16M", check=True)
    refused = kerub("image", "import", "--from", f"{h0.name}:{backed}", "--name", "backed", env=env)
    assert refused.returncode != 0 and "backing file" in refused.stderr
    hostile = kerub("image", "import", "--from", f"{h0.name}:/tmp/$(touch /tmp/kerub-pwned)x", "--name", "x",
                    env=env)
    assert hostile.returncode != 0 and "not a readable regular file" in hostile.stderr
    assert not Path("/tmp/kerub-pwned").exists()
    assert [d["name"] for d in images(env)] == ["from-host"]
    assert temp_files(h0) == []


# --- refusals --------------------------------------------------------------------------------------


def refused(env, host, *argv) -> str:
    result = kerub("image", "import", *argv, env=env)
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("kerub-tui: "), result.stderr
    assert "Traceback" not in result.stderr
    assert images(env) == []
    assert listing(host) == []  # nothing registered, no file left behind
    return lines[-1]


def test_each_refusal_leaves_nothing(clean_images, tmp_path):
    (h0, _), env, _ = clean_images
    base = make_qcow2(tmp_path / "base.qcow2", "8M")
    overlay = make_qcow2(tmp_path / "overlay.qcow2", "8M", "-b", str(base), "-F", "qcow2")
    assert "backing file" in refused(env, h0, str(overlay), "--host", h0.name)

    data_file = make_qcow2(tmp_path / "datafile.qcow2", "8M", "-o", f"data_file={tmp_path / 'data.raw'}")
    assert "external data file" in refused(env, h0, str(data_file), "--host", h0.name)

    vmdk = tmp_path / "disk.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(vmdk), "8M"], check=True)
    assert "vmdk" in refused(env, h0, str(vmdk), "--host", h0.name)

    plain = tmp_path / "notes.img"
    plain.write_bytes(os.urandom(MIB))
    assert "neither a disk image nor an ISO" in refused(env, h0, str(plain), "--host", h0.name)

    too_big = make_mbr_raw(tmp_path / "big.raw", (TMPFS_MIB + 8) * MIB)
    assert "not enough space" in refused(env, h0, str(too_big), "--host", h0.name)
    too_big.unlink()

    hostile = tmp_path / "$(touch kerub-pwned); rm -rf x.iso"
    make_iso(hostile, payload=64 * 1024)
    assert "give the image a name with --name" in refused(env, h0, str(hostile), "--host", h0.name)
    assert "contains" in refused(env, h0, str(hostile), "--name", "a;reboot", "--host", h0.name)
    assert "must start with a letter" in refused(env, h0, str(hostile), "--name", "../../etc/x", "--host", h0.name)
    # a hostile name of the file is only a label: with a good --name it imports, and nothing ran
    ok = kerub("image", "import", str(hostile), "--name", "safe", "--host", h0.name, env=env)
    assert ok.returncode == 0, ok.stderr
    assert not (Path.cwd() / "kerub-pwned").exists() and not Path("/kerub-pwned").exists()

    assert "cannot read" in kerub("image", "import", str(tmp_path / "missing.iso"), env=env).stderr
    assert "Is a directory" in kerub("image", "import", str(tmp_path), "--name", "dir", env=env).stderr


# --- cut short -------------------------------------------------------------------------------------


def serving(env) -> bool:
    """A controller answers on the data dir's control socket (the socket file alone is not enough: it
    exists from bind() on, and a command line that finds no answer opens the store itself)."""
    from kerub_tui.control import controller_running

    return controller_running(env["KERUB_TUI_DATA"])


def start_import(env, path: Path, host) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kerub_tui", "image", "import", str(path), "--name", "big",
                             "--host", host.name], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def receiving(host) -> bool:
    """A temp file on the host has data in it: the transfer is under way."""
    result = host.run(f"find {IMAGES_DIR} -maxdepth 1 -name '.kerub-import.*' -size +1k", check=True)
    return bool(result.stdout.strip())


def test_the_command_line_killed_mid_import_leaves_nothing(clean_images, tmp_path):
    (h0, _), env, _ = clean_images
    big = make_mbr_raw(tmp_path / "big.raw", 256 * MIB)
    proc = start_import(env, big, h0)
    try:
        wait_for(lambda: receiving(h0) or proc.poll() is not None, "the transfer to start")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_for(lambda: listing(h0) == [], "the host to remove the partial file")
    assert images(env) == []


def test_a_controller_killed_mid_import_leaves_nothing(clean_images, tmp_path):
    (h0, _), env, _ = clean_images
    big = make_mbr_raw(tmp_path / "big.raw", 256 * MIB)
    serve = subprocess.Popen([sys.executable, "-m", "kerub_tui", "serve"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    proc = None
    try:
        wait_for(lambda: serving(env), "the controller to answer on its control socket")
        proc = start_import(env, big, h0)
        wait_for(lambda: receiving(h0) or proc.poll() is not None, "the transfer to start")
        assert proc.poll() is None, proc.communicate()
        serve.send_signal(signal.SIGKILL)
        serve.wait(timeout=30)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode != 0
        assert "Traceback" not in err
    finally:
        for p in (serve, proc):
            if p is not None and p.poll() is None:
                p.kill()
    wait_for(lambda: listing(h0) == [], "the host to remove the partial file")
    assert images(env) == []


def test_the_command_line_killed_while_a_controller_imports_for_it(clean_images, tmp_path):
    (h0, _), env, _ = clean_images
    big = make_mbr_raw(tmp_path / "big.raw", 256 * MIB)
    serve = subprocess.Popen([sys.executable, "-m", "kerub_tui", "serve"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: serving(env), "the controller to answer on its control socket")
        proc = start_import(env, big, h0)
        wait_for(lambda: receiving(h0) or proc.poll() is not None, "the transfer to start")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        wait_for(lambda: listing(h0) == [], "the controller to stop the import and the host to remove the file")
        assert images(env) == []  # asked through the running controller
        def import_audited() -> list[dict]:
            """The import's audit entries once the last says the client went away (the host removes its
            temp file as soon as the stream ends, before the controller records why it ended)."""
            audit = kerub("export", str(tmp_path / "export.json"), env=env)
            assert audit.returncode == 0, audit.stderr
            entries = sorted((d for d in json.loads((tmp_path / "export.json").read_text())["documents"]
                              if d["kind"] == "audit" and d["action"] == "image import"), key=lambda d: d["time"])
            return entries if entries and "went away" in entries[-1]["outcome"] else []

        wait_for(import_audited, "the import's audit entry saying the client went away", interval=0.5)
        assert serve.poll() is None  # the controller carries on
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=60)


async def test_a_dropped_connection_leaves_nothing(clean_images, tmp_path):
    (h0, _), env, _ = clean_images
    big = make_mbr_raw(tmp_path / "big.raw", 256 * MIB)
    c = Controller(env["KERUB_TUI_DATA"])
    await c.start(connect_hosts=False)
    try:
        task = asyncio.create_task(c.import_image(str(big), name="big", host=h0.name))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while not await asyncio.to_thread(receiving, h0):
            assert not task.done(), task.result()
            assert loop.time() < deadline, "the transfer did not start"
            await asyncio.sleep(0.02)
        await asyncio.to_thread(h0.stop_sshd, True)
        with pytest.raises(ActionError, match="nothing was kept"):
            await task
    finally:
        await c.stop()
        h0.start_sshd()
    wait_for(lambda: listing(h0) == [], "the host to remove the partial file")
    assert images(env) == []


# --- through a running controller ------------------------------------------------------------------


async def test_import_through_a_running_controller_works_like_the_local_one(clean_images, tmp_path, monkeypatch):
    """While `serve` runs, `image import` with a file name relative to the caller's directory (not the
    controller's) imports that file, with progress; and so does a console attached to the controller
    (RemoteController.import_image, the :images view's `i`), on a connection of its own."""
    from kerub_tui.control import RemoteController

    (h0, h1), env, _ = clean_images
    client = tmp_path / "client"
    client.mkdir()
    iso = make_iso(client / "install.iso")
    qcow2 = make_qcow2(client / "base.qcow2", "32M")
    serve = subprocess.Popen([sys.executable, "-m", "kerub_tui", "serve"], env=env, cwd="/",
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        await asyncio.to_thread(wait_for, lambda: serving(env), "the controller to answer on its control socket")
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "kerub_tui", "image", "import", "install.iso", "--host", h0.name],
            env=env, cwd=client, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stderr
        assert "imported image install (iso" in result.stdout
        assert " of " in result.stderr and "done in" in result.stderr  # progress lines from the controller

        monkeypatch.chdir(client)
        console = RemoteController(env["KERUB_TUI_DATA"])
        await console.start()
        try:
            lines: list[str] = []
            image = await console.import_image("base.qcow2", name="base", host=h1.name, progress=lines.append)
            assert image.name == "base" and image.image.format == "qcow2"
            assert image.image.sha256 == sha256(qcow2)
            assert lines and "done in" in lines[-1], lines
            with pytest.raises(ActionError, match="already exists"):
                await console.import_image("base.qcow2", name="base", host=h1.name)
            with pytest.raises(ActionError, match="cannot read"):
                await console.import_image("missing.qcow2", host=h1.name)
        finally:
            await console.stop()

        docs = {d["name"]: d for d in await asyncio.to_thread(images, env)}  # asked through the controller
        assert sorted(docs) == ["base", "install"]
        assert docs["install"]["image"]["sha256"] == sha256(iso)
        on_host = h1.run(f"sha256sum {IMAGES_DIR}/*.qcow2", check=True).stdout.split()[0]
        assert on_host == sha256(qcow2)
        assert temp_files(h0) == [] and temp_files(h1) == []
        assert serve.poll() is None
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=60)
