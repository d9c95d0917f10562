"""authorized_keys add/remove, run for real with sh on a temp file, with keys made by ssh-keygen."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerub_tui.hosts.trust import parse_public_key, ssh_trust, ssh_untrust

needs_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")


def run_ok(command: str) -> None:
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"{command!r} failed: {result.stderr}"


def keygen(tmp_path: Path, key_type: str, comment: str) -> str:
    out = tmp_path / f"id_{key_type}_{comment}"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", comment, "-f", str(out)], check=True, timeout=30
    )
    return Path(f"{out}.pub").read_text().strip()


@needs_keygen
def test_trust_is_idempotent_and_untrust_keeps_other_lines(tmp_path: Path) -> None:
    ed = keygen(tmp_path, "ed25519", "root@host-a")
    rsa = keygen(tmp_path, "rsa", "root@host-b")
    ecdsa = keygen(tmp_path, "ecdsa", "c")
    home = tmp_path / "root home" / ".ssh"  # the directory does not exist yet
    keys = home / "authorized_keys"

    run_ok(ssh_trust(ed, str(keys)))
    assert stat.S_IMODE(home.stat().st_mode) == 0o700 and stat.S_IMODE(keys.stat().st_mode) == 0o600
    run_ok(ssh_trust(ed, str(keys)))
    # the same key under another comment is the same key: still one line
    run_ok(ssh_trust(ed.rsplit(" ", 1)[0] + " renamed", str(keys)))
    run_ok(ssh_trust(rsa, str(keys)))
    assert keys.read_text().splitlines() == [ed, rsa]

    with keys.open("a") as f:  # a line the admin wrote, with options: kept by removal
        f.write(f'from="10.0.0.1" {ecdsa}\n')
    run_ok(ssh_untrust(ed, str(keys)))
    assert keys.read_text().splitlines() == [rsa, f'from="10.0.0.1" {ecdsa}']
    run_ok(ssh_trust(ecdsa, str(keys)))  # already there, behind options
    run_ok(ssh_untrust(rsa, str(keys)))
    run_ok(ssh_untrust(ecdsa, str(keys)))
    assert keys.read_text() == "" and stat.S_IMODE(keys.stat().st_mode) == 0o600
    run_ok(ssh_untrust(ecdsa, str(keys)))  # removing from an empty file
    run_ok(ssh_untrust(ecdsa, str(tmp_path / "missing")))  # and from no file at all
    assert sorted(p.name for p in home.iterdir()) == ["authorized_keys"]


@needs_keygen
def test_real_keys_parse(tmp_path: Path) -> None:
    for key_type in ("ed25519", "rsa", "ecdsa"):
        line = keygen(tmp_path, key_type, "kerub@jump.example")
        key = parse_public_key(line + "\n")
        assert key.line == line and key.comment == "kerub@jump.example"


ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.mark.parametrize(
    "line",
    [
        "",
        "ssh-ed25519",
        f'command="rm -rf /" {ED}',
        f"{ED} comment\nssh-rsa AAAA evil",
        f"{ED} two words",
        f"{ED} it's",
        f"{ED} $(reboot)",
        f"{ED}  double-space",
        "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
        "ssh-ed25519 not*base64",
        "ssh-rsa " + ED.split()[1],  # an ed25519 blob claiming to be RSA
        "ssh-ed25519 AAAA",
    ],
)
def test_hostile_or_broken_keys_are_refused(line: str) -> None:
    with pytest.raises(ValueError):
        parse_public_key(line)
    with pytest.raises(ValueError):
        ssh_trust(line, "/tmp/x")


def test_bad_file_path_is_refused() -> None:
    with pytest.raises(ValueError):
        ssh_trust(ED, "relative/authorized_keys")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_never_crashes(text: str) -> None:
    try:
        key = parse_public_key(text)
    except ValueError:
        return
    assert "\n" not in key.line and key.line.split()[0] == key.type
