"""The SSH transport against real lab hosts: commands, caps, timeouts, streams that die with their
channel, keepalive, pinned host keys, ~/.ssh/config aliases with ProxyJump, sudo -n logins, and
installing the controller's key with a one-time password login."""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kerub_tui.core.models import HostStatus
from kerub_tui.ssh import (
    AuthenticationFailed,
    CommandTimeout,
    Endpoint,
    HostConnection,
    HostKeyMismatch,
    SshSettings,
    fetch_host_key,
    load_or_create_client_key,
    open_connection,
)

from ._support import DEADLINE, SETTINGS, cmdline, started_by_us, until

pytestmark = pytest.mark.lab


def is_sshd(pid: int) -> bool:
    argv0 = cmdline(pid).split(" ", 1)[0]
    return argv0.startswith("sshd:") or Path(argv0).name == "sshd"


def endpoint(host, **changes) -> Endpoint:
    values = dict(address=host.address, host_key=host.host_public_key, port=host.port, user="root",
                  identity=str(host.client_key))
    values.update(changes)
    return Endpoint(**values)


@contextlib.asynccontextmanager
async def connected(host, settings: SshSettings = SETTINGS, **changes):
    connection = HostConnection(host.name, endpoint(host, **changes), settings)
    connection.start()
    try:
        await connection.connection(wait=DEADLINE)
        yield connection
    finally:
        await connection.close()


def accepted_logins(host) -> int:
    log = host.dir / "sshd.log"
    return log.read_text(errors="replace").count("Accepted ") if log.exists() else 0


# --- commands -----------------------------------------------------------------------------------


async def test_fetched_key_is_the_hosts_own(lab):
    host = lab.hosts[0]
    line, fp = await fetch_host_key(host.address, host.port, config=())
    assert fp == host.host_key_fingerprint
    assert line.split()[:2] == host.host_public_key.split()[:2]


async def test_commands_return_status_output_and_respect_caps(lab):
    host = lab.hosts[0]
    hostile = "'; touch /tmp/kerub-pwned; \"$(id)\" `id` \n\t*"
    async with connected(host) as conn:
        result = await conn.run("echo out; echo err >&2; exit 3")
        assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
        assert result.duration > 0
        echoed = await conn.run(f"printf %s {shlex.quote(hostile)}")
        assert echoed.stdout == hostile
        assert host.run("test -e /tmp/kerub-pwned").returncode != 0
        big = await conn.run("head -c 3000000 /dev/zero | tr '\\0' x", max_output=1000)
        assert (len(big.stdout), big.stdout_truncated, big.exit_code) == (1000, True, 0)
        fed = await conn.run("wc -c", input="12345")
        assert fed.stdout.strip() == "5"
        name = await conn.run("uname -n")
        assert name.stdout.strip() == host.name


async def test_standard_error_is_seen_as_it_comes_and_carries_a_copys_progress(lab):
    """A copy's destination half (GNU dd status=progress) on a lab host: the watcher of its standard error
    reads the bytes written, as the executor does for a copy step's progress."""
    from kerub_tui.hosts.copy import copy_destination_command, parse_dd_progress

    host = lab.hosts[0]
    size = 48 << 20
    chunks: list[bytes] = []
    target = "/tmp/kerub-progress 'test"
    async with connected(host) as conn:
        result = await conn.run(f"head -c {size} /dev/zero | {copy_destination_command(target, size, progress=True)}",
                                on_stderr=chunks.append)
        await conn.run(f"rm -f {shlex.quote(target)}")
    assert result.exit_code == 0, result.stderr
    assert chunks and b"".join(chunks).decode() == result.stderr  # every piece seen, in order, nothing lost
    assert parse_dd_progress(result.stderr) == size


async def test_a_timed_out_command_is_stopped_on_the_host(lab):
    host = lab.hosts[0]
    async with connected(host) as conn:
        with pytest.raises(CommandTimeout) as caught:
            await conn.run("echo started; sleep 4321", timeout=1.0)
        assert caught.value.result.stdout == "started\n"
        await until(lambda: not started_by_us(host, "sleep 4321"), "the timed-out command to be gone")


async def test_a_stream_dies_with_its_channel(lab):
    host = lab.hosts[0]
    async with connected(host) as conn:
        async with conn.stream("vmstat 1") as stream:
            lines = []
            async for line in stream:
                lines.append(line)
                if len(lines) == 4:
                    break
        assert "free" in lines[1]
        await until(lambda: not started_by_us(host), "the vmstat stream to be gone from the host")
        # the connection is still fine for the next channel
        assert (await conn.run("true")).exit_code == 0


async def test_keepalive_notices_a_silent_host_and_reconnects(clean_lab):
    """Freeze the host's session sshd (no reset, no FIN: silence) and watch keepalive catch it."""
    host = clean_lab.hosts[1]
    states = []
    connection = HostConnection(host.name, endpoint(host), SETTINGS, on_state=lambda s, r: states.append(s))
    connection.start()
    frozen: list[int] = []
    try:
        await connection.connection(wait=DEADLINE)
        async with connection.stream("vmstat 1") as stream:
            async for _ in stream:
                break
            listener = host.sshd_pid()
            frozen = [p for p in host.pids() if is_sshd(p) and p != listener]
            assert frozen
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            await connection.wait_state(lambda s: s is not HostStatus.up, timeout=SETTINGS.keepalive_window * 4)
            assert connection.state is HostStatus.down
            assert "keepalive" in (connection.reason or "")
            async for _ in stream:  # the stream ended with the connection
                pass
        await connection.wait_state(lambda s: s is HostStatus.up, timeout=DEADLINE)  # a new connection
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        frozen = []
        # the thawed session sshd finds its client gone and closes the channel: vmstat goes with it
        await until(lambda: not [c for c in started_by_us(host) if "vmstat 1" in c], "the old stream to be gone")
        assert states[:3] == [HostStatus.up, HostStatus.down, HostStatus.up]
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        await connection.close()


async def test_a_replaced_host_key_is_refused_before_login(clean_lab):
    host = clean_lab.hosts[2]
    old_key = host.host_public_key
    old_fingerprint = host.host_key_fingerprint
    new_fingerprint = host.replace_host_key()
    logins = accepted_logins(host)
    with pytest.raises(HostKeyMismatch) as caught:
        await open_connection(endpoint(host, host_key=old_key), SETTINGS)
    assert caught.value.offered == new_fingerprint
    assert caught.value.accepted == old_fingerprint
    assert new_fingerprint in str(caught.value)
    assert accepted_logins(host) == logins  # no authentication happened, nothing ran
    conn = await open_connection(endpoint(host), SETTINGS)  # the new key, once accepted, works
    conn.close()


# --- ssh config, ProxyJump ------------------------------------------------------------------------


async def test_ssh_config_alias_through_a_proxyjump(clean_lab, tmp_path):
    jump, target = clean_lab.hosts[0], clean_lab.hosts[1]
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host kerub-jump\n  HostName {jump.address}\n  Port {jump.port}\n  User root\n"
        f"  IdentityFile {jump.client_key}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {jump.known_hosts}\n  StrictHostKeyChecking yes\n"
        f"Host kerub-target\n  HostName {target.address}\n  User root\n"
        f"  IdentityFile {target.client_key}\n  ProxyJump kerub-jump\n"
    )
    settings = SshSettings(**{**SETTINGS.__dict__, "config": (str(config),)})
    line, fp = await fetch_host_key("kerub-target", None, config=(str(config),))
    assert fp == target.host_key_fingerprint
    # No port, no identity: both come from the config, as with OpenSSH.
    async with connected(target, settings, address="kerub-target", port=None, identity=None, host_key=line) as conn:
        result = await conn.run("uname -n")
        assert result.stdout.strip() == target.name
    jump.stop_sshd()
    try:
        with pytest.raises(Exception):  # noqa: B017 - the only way to the target is through the jump host
            await open_connection(endpoint(target, address="kerub-target", port=None, identity=None), settings)
    finally:
        jump.start_sshd()


async def test_keys_held_by_ssh_agent_are_used(lab, tmp_path, monkeypatch):
    if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
        pytest.skip("ssh-agent is not installed (Debian package openssh-client)")
    host = lab.hosts[0]
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket_path)], stdout=subprocess.DEVNULL)
    try:
        await until(socket_path.exists, "the agent's socket")
        env = {**os.environ, "SSH_AUTH_SOCK": str(socket_path)}
        subprocess.run(["ssh-add", "-q", str(host.client_key)], env=env, check=True, capture_output=True)
        # No identity file, and a controller key the host does not know: only the agent can log in.
        stranger = load_or_create_client_key(tmp_path / "data")
        monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
        with pytest.raises(AuthenticationFailed):
            await open_connection(endpoint(host, identity=None, client_key=stranger), SETTINGS)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket_path))
        async with connected(host, identity=None, client_key=stranger) as conn:
            assert (await conn.run("uname -n")).stdout.strip() == host.name
    finally:
        agent.terminate()
        agent.wait(timeout=30)


# --- another login: sudo -n, and a one-time password to install the key -------------------------


@pytest.fixture
def login_user(lab) -> Iterator[tuple[object, str, str]]:
    """A user on lab host 3 with NOPASSWD sudo, the lab's key authorized and a password; password
    logins allowed for that user only. Users live in the machine's /etc: removed afterwards."""
    if shutil.which("sudo") is None or shutil.which("useradd") is None:
        pytest.skip("sudo or useradd is not installed (Debian packages sudo, passwd)")
    host = lab.hosts[2]
    user = f"kerub{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(12)
    home = f"/tmp/{user}"
    sudoers = Path(f"/etc/sudoers.d/{user}")
    config = host.sshd_config.read_text()
    try:
        host.run(f"useradd -m -d {home} -s /bin/sh {user}", check=True)
        host.run("chpasswd", input=f"{user}:{password}\n", check=True)
        host.run(f"umask 077; mkdir -p {home}/.ssh && cp {host.client_key}.pub {home}/.ssh/authorized_keys"
                 f" && chown -R {user}: {home}/.ssh", check=True)
        sudoers.write_text(f"{user} ALL=(ALL) NOPASSWD: ALL\n")
        os.chmod(sudoers, 0o440)
        host.sshd_config.write_text(config + f"Match User {user}\n  PasswordAuthentication yes\n")
        os.kill(host.sshd_pid(), signal.SIGHUP)
        host._wait_sshd_key()
        yield host, user, password
    finally:
        sudoers.unlink(missing_ok=True)
        host.sshd_config.write_text(config)
        pid = host.sshd_pid()
        if pid:
            os.kill(pid, signal.SIGHUP)
            host._wait_sshd_key()
        host.run(f"pkill -KILL -u {user}; userdel -r {user}")


async def test_privileged_commands_of_another_login_run_through_sudo(login_user):
    host, user, _ = login_user
    async with connected(host, user=user) as conn:
        assert (await conn.run("id -u", privileged=True)).stdout.strip() == "0"
        assert (await conn.run("id -un", privileged=False)).stdout.strip() == user
        assert (await conn.run("id -u; id -un", privileged=True)).stdout.split() == ["0", "root"]
        async with conn.stream("vmstat 1", privileged=True) as stream:
            async for _ in stream:
                break
        await until(lambda: not started_by_us(host), "the sudo'ed stream to be gone")
        Path(f"/etc/sudoers.d/{user}").unlink()
        refused = await conn.run("id -u", privileged=True, timeout=30)  # no rule: fails, never prompts
        assert refused.exit_code != 0 and "password" in refused.stderr


async def test_install_key_with_a_one_time_password(login_user, tmp_path, monkeypatch):
    from kerub_tui.core.store import Store
    from kerub_tui.hosts.fleet import Fleet, FleetError

    host, user, password = login_user
    store = Store.open(tmp_path / "data")
    fleet = Fleet(store, tmp_path / "data", ssh_settings=SETTINGS, monitoring=False)
    try:
        with pytest.raises(FleetError, match="password was refused"):
            await fleet.install_key(host.address, host.port, user, "wrong" + password, host.host_key_fingerprint)
        with pytest.raises(FleetError, match="not the accepted"):
            await fleet.install_key(host.address, host.port, user, password, "SHA256:" + "A" * 43)
        await fleet.install_key(host.address, host.port, user, password, host.host_key_fingerprint)
        await fleet.install_key(host.address, host.port, user, password, host.host_key_fingerprint)  # idempotent
        keys = host.run(f"cat /tmp/{user}/.ssh/authorized_keys").stdout
        assert keys.count(fleet.client_public_key.split()[1]) == 1
        # The controller's own key now logs in, with no identity and no agent.
        monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
        key = load_or_create_client_key(tmp_path / "data")
        async with connected(host, user=user, identity=None, client_key=key) as conn:
            assert (await conn.run("id -un", privileged=False)).stdout.strip() == user
    finally:
        await fleet.stop()
        store.close()


async def test_controller_joins_a_host_with_a_one_time_password(login_user, tmp_path, monkeypatch):
    """`host add --install-key`: the password installs kerub-tui's own key, then the key is all it uses."""
    from kerub_tui.controller import ActionError, Controller
    from kerub_tui.core.models import AuditEntry

    host, user, password = login_user
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    controller = Controller(tmp_path / "data")
    await controller.start(connect_hosts=False)
    try:
        with pytest.raises(ActionError, match="either an identity file or a password"):
            await controller.add_host(name="pw", address=host.address, port=host.port, user=user,
                                      identity=str(host.client_key), fingerprint=host.host_key_fingerprint,
                                      password=password)
        joined = await controller.add_host(name="pw", address=host.address, port=host.port, user=user,
                                           fingerprint=host.host_key_fingerprint, password=password)
        assert joined.capabilities is not None and joined.capabilities.os.hostname == host.name
        actions = [a.action for a in controller.db.list(AuditEntry)]
        assert "host install-key" in actions and "host add" in actions
        # The password is kept nowhere: not in any document, not in the data dir.
        for doc in controller.db.all_documents():
            assert password not in doc.model_dump_json()
        for path in (tmp_path / "data").rglob("*"):
            if path.is_file():
                assert password.encode() not in path.read_bytes()
    finally:
        await controller.stop()


def test_install_key_without_a_terminal_says_so(tmp_path):
    result = subprocess.run(
        [os.sys.executable, "-m", "kerub_tui", "--data-dir", str(tmp_path / "d"), "host", "add", "127.0.0.1",
         "--install-key", "--accept-fingerprint", "SHA256:" + "A" * 43],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "asks for the password on a terminal" in result.stderr
