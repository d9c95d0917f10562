"""Keys: the controller's own key pair, host keys, fingerprints as OpenSSH prints them, pinning.

Trust model: a host key is fetched without running anything (``fetch_host_key``), the admin
accepts its fingerprint, and from then on every connection to that host trusts exactly that key
(``pinned_known_hosts``) - never ~/.ssh/known_hosts for a managed host, never no checking at all.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from pathlib import Path
from typing import Any

import asyncssh

from ..core.paths import KEY_FILE, ensure_private_dir
from .errors import HostUnreachable, SshError

# The host key types a controller accepts, most preferred first (what OpenSSH 9 prefers too).
HOST_KEY_ALGORITHMS = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
)


def fingerprint(key: asyncssh.SSHKey) -> str:
    """The SHA256 fingerprint exactly as ``ssh-keygen -lf`` prints it (``SHA256:`` + unpadded base64)."""
    return key.get_fingerprint("sha256")


def public_key_line(key: asyncssh.SSHKey, comment: str | None = None) -> str:
    """The OpenSSH one-line form ``TYPE BASE64 [COMMENT]``."""
    exported = key.convert_to_public() if hasattr(key, "convert_to_public") else key
    fields = exported.export_public_key("openssh").decode().split()
    line = " ".join(fields[:2])
    return f"{line} {comment}" if comment else line


def parse_public_key(line: str) -> asyncssh.SSHKey:
    """An OpenSSH public key line as a key; SshError when it is not one."""
    try:
        return asyncssh.import_public_key(line.strip())
    except (asyncssh.KeyImportError, ValueError, UnicodeError) as error:
        raise SshError(f"not an OpenSSH public key: {error}") from None


def fingerprint_of(line: str) -> str:
    return fingerprint(parse_public_key(line))


def pinned_known_hosts(host_key_line: str | None) -> tuple[list[asyncssh.SSHKey], list[Any], list[Any]]:
    """known_hosts for asyncssh that trusts only the accepted key (no CA keys, nothing revoked).

    A host without an accepted key is refused here rather than connected unchecked.
    """
    if not host_key_line:
        raise SshError("no accepted host key: fetch the host key and accept its fingerprint first")
    return ([parse_public_key(host_key_line)], [], [])


def client_key_path(data_dir: Path) -> Path:
    return Path(data_dir) / KEY_FILE


def load_or_create_client_key(data_dir: Path | str) -> asyncssh.SSHKey:
    """The controller's ed25519 key pair, made on first use in the data dir (private key 0600).

    Written to a temporary file and hard-linked into place, so two processes starting at once
    end up with one key and nobody ever reads a half-written file.
    """
    data_dir = ensure_private_dir(Path(data_dir))
    path = client_key_path(data_dir)
    if not path.exists():
        comment = f"kerub-tui@{socket.gethostname()}"
        key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(key.export_private_key("openssh"))
                out.flush()
                os.fsync(out.fileno())
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it a moment ago: use that one
        else:
            pub = path.with_name(path.name + ".pub")
            pub.write_text(public_key_line(key, comment) + "\n")
            os.chmod(pub, 0o644)
            return key
        finally:
            tmp.unlink(missing_ok=True)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)  # a key others can read is not private: tighten it as ssh would demand
    try:
        return asyncssh.read_private_key(path)
    except (asyncssh.KeyImportError, OSError) as error:
        raise SshError(f"cannot read the controller key {path}: {error}") from None


async def fetch_host_key(
    address: str,
    port: int | None = None,
    *,
    config: list[str] | tuple[str, ...] | None = None,
    timeout: float = 15.0,
) -> tuple[str, str]:
    """The host's public key line and its SHA256 fingerprint, from a key exchange only.

    No authentication is attempted and nothing runs on the host. ``config`` is the list of ssh
    config files (None: ~/.ssh/config as OpenSSH would), so aliases and ProxyJump work here too.
    """
    kwargs: dict[str, Any] = {"server_host_key_algs": list(HOST_KEY_ALGORITHMS)}
    if config is not None:
        kwargs["config"] = list(config)
    try:
        async with asyncio.timeout(timeout):
            key = await asyncssh.get_server_host_key(address, port if port else (), **kwargs)
    except TimeoutError:
        raise HostUnreachable(f"{address}: no SSH key exchange within {timeout:g} s") from None
    except (OSError, asyncssh.Error) as error:
        raise HostUnreachable(f"{address}: cannot fetch the host key: {describe_error(error)}") from None
    if key is None:
        raise SshError(f"{address} presented no host key (GSS key exchange?): cannot pin it")
    return public_key_line(key), fingerprint(key)


def describe_error(error: BaseException) -> str:
    """One line for an OSError/asyncssh error: the reason, not the class hierarchy."""
    if isinstance(error, asyncssh.DisconnectError):
        return error.reason or type(error).__name__
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
