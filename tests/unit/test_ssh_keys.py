"""The controller's key pair and fingerprints, checked against OpenSSH's own ssh-keygen."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from kerub_tui.core.paths import KEY_FILE
from kerub_tui.ssh.errors import SshError
from kerub_tui.ssh.keys import (
    client_key_path,
    fingerprint,
    fingerprint_of,
    load_or_create_client_key,
    parse_public_key,
    pinned_known_hosts,
    public_key_line,
)

needs_ssh_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")


def test_key_is_made_on_first_use_private_and_reused(tmp_path):
    data = tmp_path / "data"
    key = load_or_create_client_key(data)
    path = data / KEY_FILE
    assert client_key_path(data) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert key.algorithm == b"ssh-ed25519"
    again = load_or_create_client_key(data)
    assert fingerprint(again) == fingerprint(key)
    pub = path.with_name(KEY_FILE + ".pub").read_text()
    assert pub.split()[:2] == public_key_line(key).split()[:2]


def test_a_loosened_key_file_is_tightened(tmp_path):
    load_or_create_client_key(tmp_path)
    os.chmod(tmp_path / KEY_FILE, 0o644)
    load_or_create_client_key(tmp_path)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600


def test_concurrent_first_use_yields_one_key(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: load_or_create_client_key(tmp_path), range(8)))
    assert len({fingerprint(k) for k in keys}) == 1


def test_unreadable_key_is_a_clear_error(tmp_path):
    (tmp_path / KEY_FILE).write_text("not a key\n")
    with pytest.raises(SshError, match="cannot read the controller key"):
        load_or_create_client_key(tmp_path)


@needs_ssh_keygen
@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa", "rsa"])
def test_fingerprint_is_what_ssh_keygen_prints(tmp_path, key_type):
    path = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-f", str(path)], check=True)
    line = (tmp_path / "k.pub").read_text()
    printed = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], capture_output=True, text=True,
                             check=True).stdout.split()[1]
    assert fingerprint_of(line) == printed
    assert public_key_line(parse_public_key(line)) == " ".join(line.split()[:2])


@pytest.mark.parametrize("bad", ["", "ssh-ed25519", "ssh-ed25519 !!!notbase64", "hello world", "ssh-ed25519 AAAA\nx"])
def test_garbage_is_not_a_public_key(bad):
    with pytest.raises(SshError):
        parse_public_key(bad)


def test_no_accepted_key_means_no_connection():
    with pytest.raises(SshError, match="no accepted host key"):
        pinned_known_hosts(None)
    with pytest.raises(SshError, match="no accepted host key"):
        pinned_known_hosts("")


def test_pinned_known_hosts_trusts_exactly_one_key(tmp_path):
    key = load_or_create_client_key(tmp_path)
    trusted, ca_keys, revoked = pinned_known_hosts(public_key_line(key))
    assert [fingerprint(k) for k in trusted] == [fingerprint(key)]
    assert ca_keys == [] and revoked == []
