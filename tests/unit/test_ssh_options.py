"""The options of the controller's SSH connections (ssh/connection.py client_options)."""

from __future__ import annotations

import asyncssh

from kerub_tui.ssh.connection import Endpoint, SshSettings, client_options


async def test_aes_gcm_is_offered_before_chacha20_and_every_default_cipher_stays(tmp_path) -> None:
    """asyncssh does chacha20-poly1305 in Python per packet and AES-GCM in OpenSSL: an image import (one
    long stream) went at half the speed with chacha, asyncssh's first choice. A host without AES-GCM
    still finds every cipher asyncssh offers by default."""
    host_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    identity = tmp_path / "id"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(identity))
    options = await client_options(Endpoint("127.0.0.1", host_key, identity=str(identity)), SshSettings(config=()))
    assert options.encryption_algs[0] == b"aes128-gcm@openssh.com"
    assert set(asyncssh.encryption.get_default_encryption_algs()) <= set(options.encryption_algs)
