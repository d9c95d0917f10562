"""Allocation copy, run for real: the two halves joined by a local pipe (as the executor joins two SSH
channels), onto a file and onto a loop block device; and the one-command pipeline through a
throwaway sshd on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerub_tui.hosts.copy import (
    copy_allocation_pipeline,
    copy_destination_command,
    copy_source_command,
    parse_copy_sum,
    parse_dd_progress,
    verify_copy,
)

MIB = 1 << 20
HOSTILE = "a b $(touch pwned) 'q\" ;&"


def make_source(path: Path, size: int) -> bytes:
    """A sparse-ish source: data at the start, a hole, data near the end."""
    with path.open("wb") as f:
        f.truncate(size)
        f.write(os.urandom(300_000))
        f.seek(size - 70_000)
        f.write(os.urandom(50_000))
    return path.read_bytes()


def relay(src_cmd: str, dst_cmd: str) -> tuple[subprocess.CompletedProcess[bytes], subprocess.CompletedProcess[bytes], int]:
    """Join the halves through this process, counting relayed bytes as the executor will."""
    src = subprocess.Popen(["sh", "-c", src_cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dst = subprocess.Popen(["sh", "-c", dst_cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert src.stdout is not None and dst.stdin is not None
    relayed = 0
    while chunk := src.stdout.read(1 << 16):
        relayed += len(chunk)
        dst.stdin.write(chunk)
    dst.stdin.close()
    src_err = src.stderr.read() if src.stderr else b""
    src.wait(timeout=60)
    dst_out = dst.stdout.read() if dst.stdout else b""
    dst_err = dst.stderr.read() if dst.stderr else b""
    dst.wait(timeout=60)
    return (
        subprocess.CompletedProcess(src.args, src.returncode, b"", src_err),
        subprocess.CompletedProcess(dst.args, dst.returncode, dst_out, dst_err),
        relayed,
    )


def test_copy_halves_onto_a_file(tmp_path: Path) -> None:
    folder = tmp_path / HOSTILE
    folder.mkdir()
    size = 8 * MIB
    data = make_source(folder / "src.img", size)
    dst = folder / "dst.img"
    dst.write_bytes(b"old content that must go" * 1000)
    src_res, dst_res, relayed = relay(
        copy_source_command(str(folder / "src.img"), size), copy_destination_command(str(dst), size)
    )
    assert src_res.returncode == 0 and dst_res.returncode == 0, (src_res.stderr, dst_res.stderr)
    assert relayed == size
    digest = verify_copy(src_res.stderr.decode(), dst_res.stdout.decode())
    assert digest == hashlib.sha256(data).hexdigest()
    assert dst.read_bytes() == data
    assert dst.stat().st_blocks * 512 < size // 2  # the hole stayed a hole
    assert not (Path.cwd() / "pwned").exists() and not (folder / "pwned").exists()


def test_copy_of_a_prefix_of_a_bigger_block_device(tmp_path: Path, loop_device: str) -> None:
    """An LV is rounded up to whole extents: only the disk's size is copied from it."""
    with open(loop_device, "rb") as f:
        data = f.read(4 * MIB)
    src_res, dst_res, relayed = relay(
        copy_source_command(loop_device, MIB), copy_destination_command(str(tmp_path / "dst"), MIB)
    )
    assert relayed == MIB
    assert verify_copy(src_res.stderr.decode(), dst_res.stdout.decode()) == hashlib.sha256(data[:MIB]).hexdigest()


def test_unreadable_source_fails_clearly(tmp_path: Path) -> None:
    src_res, dst_res, relayed = relay(
        copy_source_command(str(tmp_path / "missing $(touch pwned)"), MIB), copy_destination_command(str(tmp_path / "dst"), MIB)
    )
    assert src_res.returncode == 1 and relayed == 0  # nothing is sent from a source it cannot read
    assert b"kerub-copy-failed: cannot read " in src_res.stderr and b"kerub-copy-sha256" not in src_res.stderr
    with pytest.raises(ValueError, match="cannot read"):
        verify_copy(src_res.stderr.decode(), dst_res.stdout.decode())
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_short_file_is_padded_with_zeros(tmp_path: Path) -> None:
    """A file shorter than the size (a qcow2 image, whose file is smaller than its disk): the tail
    arrives as zeros, which a qcow2 image tolerates and a raw image means anyway."""
    (tmp_path / "src").write_bytes(b"x" * 1000)
    src_res, dst_res, relayed = relay(
        copy_source_command(str(tmp_path / "src"), MIB), copy_destination_command(str(tmp_path / "dst"), MIB)
    )
    assert relayed == MIB
    expected = b"x" * 1000 + b"\0" * (MIB - 1000)
    assert verify_copy(src_res.stderr.decode(), dst_res.stdout.decode()) == hashlib.sha256(expected).hexdigest()
    assert (tmp_path / "dst").read_bytes() == expected


def test_file_longer_than_the_size_is_refused_not_cut(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(b"y" * (MIB + 1))
    src_res, dst_res, relayed = relay(
        copy_source_command(str(tmp_path / "src"), MIB), copy_destination_command(str(tmp_path / "dst"), MIB)
    )
    assert src_res.returncode == 1 and relayed == 0
    with pytest.raises(ValueError, match="is a file longer than the 1048576 bytes to copy"):
        verify_copy(src_res.stderr.decode(), dst_res.stdout.decode())


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("needs root and losetup for a loop block device")
    backing = tmp_path / "loop-backing"
    backing.write_bytes(b"\xaa" * (4 * MIB))  # stale data that must not show through
    result = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"no loop device available: {result.stderr.strip()}")
    device = result.stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def test_copy_halves_onto_a_block_device(tmp_path: Path, loop_device: str) -> None:
    size = 2 * MIB  # smaller than the device, as an LV rounded up to extents is
    data = make_source(tmp_path / "src", size)
    src_res, dst_res, _ = relay(copy_source_command(str(tmp_path / "src"), size), copy_destination_command(loop_device, size))
    assert dst_res.returncode == 0, dst_res.stderr
    assert verify_copy(src_res.stderr.decode(), dst_res.stdout.decode()) == hashlib.sha256(data).hexdigest()
    with open(loop_device, "rb") as f:
        written = f.read(4 * MIB)
    assert written[:size] == data  # zeros in the hole were written over the stale bytes
    assert written[size:] == b"\xaa" * (2 * MIB)  # and nothing past the allocation was touched


# --- the one-command pipeline through a real sshd -------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def loopback_sshd(tmp_path: Path) -> Iterator[dict[str, object]]:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if os.geteuid() != 0 or not os.path.exists(sshd) or shutil.which("ssh-keygen") is None:
        pytest.skip("needs root, sshd and ssh-keygen for a throwaway sshd on 127.0.0.1")
    d = tmp_path / "sshd"
    d.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "client_key")], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    (d / "authorized_keys").chmod(0o600)
    port = free_port()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {(d / 'host_key.pub').read_text()}")
    config = d / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1:{port}\nHostKey {d / 'host_key'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"UsePAM no\nPidFile {d / 'sshd.pid'}\nStrictModes no\n"
    )
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.skip(f"sshd did not start: {proc.stderr.read().decode()[-300:] if proc.stderr else ''}")
                time.sleep(0.05)
        yield {"port": port, "identity": str(d / "client_key"), "known_hosts": str(d / "known_hosts")}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_pipeline_over_real_ssh(tmp_path: Path, loopback_sshd: dict[str, object]) -> None:
    size = 6 * MIB
    data = make_source(tmp_path / "src", size)
    dst = tmp_path / HOSTILE / "dst.img"
    dst.parent.mkdir()

    def pipeline(src: Path) -> str:
        return copy_allocation_pipeline(
            str(src),
            "127.0.0.1",
            str(dst),
            size,
            dst_port=int(loopback_sshd["port"]),  # type: ignore[call-overload]
            identity_file=str(loopback_sshd["identity"]),
            known_hosts_file=str(loopback_sshd["known_hosts"]),
        )

    command = pipeline(tmp_path / "src")
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert parse_copy_sum(result.stdout) == hashlib.sha256(data).hexdigest()
    assert dst.read_bytes() == data
    assert parse_dd_progress(result.stderr) == size  # dd's final report, relayed by ssh
    assert not (tmp_path / "pwned").exists()

    # a source that cannot be read: non-zero exit and a clear line, never a silent success
    bad = pipeline(tmp_path / "missing")
    result = subprocess.run(["sh", "-c", bad], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "checksum mismatch" in result.stderr and "cannot read" in result.stderr


def test_pipeline_refuses_bad_values() -> None:
    for call in (
        lambda: copy_allocation_pipeline("/a", "host;reboot", "/b", MIB),
        lambda: copy_allocation_pipeline("/a", "10.0.0.2", "b", MIB),
        lambda: copy_allocation_pipeline("/a", "10.0.0.2", "/b", 0),
        lambda: copy_allocation_pipeline("/a", "10.0.0.2", "/b", MIB, dst_port=0),
        lambda: copy_allocation_pipeline("/a", "10.0.0.2", "/b", MIB, dst_user="Root Admin"),
        lambda: copy_allocation_pipeline("/a", "-oProxyCommand=x", "/b", MIB),
    ):
        with pytest.raises(ValueError):
            call()


def test_report_parsers() -> None:
    digest = "a" * 64
    assert parse_copy_sum(f"noise\nkerub-copy-sha256 {digest}\n") == digest
    with pytest.raises(ValueError, match="kerub-copy-failed: cannot read"):
        parse_copy_sum("kerub-copy-failed: cannot read /x\n")
    with pytest.raises(ValueError):
        parse_copy_sum(f"kerub-copy-sha256 {digest}\nkerub-copy-sha256 {digest}\n")
    assert parse_dd_progress("1048576 bytes (1.0 MB, 1.0 MiB) copied, 1 s\r2097152 bytes (2.1 MB) copied") == 2097152
    assert parse_dd_progress("512 bytes copied, 0.001 s, 512 kB/s") == 512
    assert parse_dd_progress("") is None


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text())
def test_verify_never_crashes(a: str, b: str) -> None:
    try:
        digest = verify_copy(a, b)
    except ValueError:
        return
    assert len(digest) == 64
