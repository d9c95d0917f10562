"""iSCSI with tgtd, end to end: a real tgtd in a private namespace shares a file with CHAP and qemu's
own initiator (libiscsi, qemu-block-extra) reads it; the parser runs on output captured from tgtadm
1.0.85 on this machine (tests/captures/ops/tgtadm-*.txt)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerub_tui.hosts.iscsi import (
    IscsiDiskSource,
    chap_user,
    check_iqn,
    disk_iqn,
    iscsi_account_delete,
    iscsi_accounts_command,
    iscsi_rekey,
    iscsi_share,
    iscsi_share_chap,
    iscsi_show_command,
    iscsi_unshare,
    new_chap_secret,
    parse_tgtadm_accounts,
    parse_tgtadm_show,
    secret_usage,
    write_secret_file,
)
from tests.unit.test_ops_netns import PrivateNamespace, private_ns, start_tgtd, stop_tgtd  # noqa: F401 (fixture)

CAPTURES = Path(__file__).parent.parent / "captures" / "ops"
MIB = 1 << 20
IQN = "iqn.2024-01.org.kerub:disk-1"


def qemu_img_info(ns: PrivateNamespace, url: str) -> tuple[int, str]:
    result = ns.run(f"qemu-img info --output=json '{url}'", check=False, timeout=60)
    return result.returncode, result.stdout if result.returncode == 0 else result.stderr


@pytest.fixture
def tgtd(private_ns: PrivateNamespace) -> PrivateNamespace:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed")
    start_tgtd(private_ns)
    yield private_ns
    stop_tgtd(private_ns)


def test_share_with_chap_read_by_qemus_initiator(tgtd: PrivateNamespace, tmp_path: Path) -> None:
    folder = tmp_path / "disks $(touch pwned) 'x'"
    folder.mkdir()
    lun = folder / "disk 1.img"
    lun.write_bytes(b"")
    with lun.open("r+b") as f:
        f.truncate(16 * MIB)
    secret = new_chap_secret()
    secret_file = str(tmp_path / "chap-secret")
    tgtd.run(write_secret_file(secret_file), input=secret.encode())
    assert (tmp_path / "chap-secret").stat().st_mode & 0o777 == 0o600

    command = iscsi_share(1, IQN, str(lun), "kerub-disk-1", secret_file, initiator_address="127.0.0.1")
    assert secret not in command  # the secret is read on the host, never part of the command text
    tgtd.run(command)

    [target] = parse_tgtadm_show(tgtd.run(iscsi_show_command()).stdout)
    assert (target.tid, target.iqn, target.accounts, target.acl) == (1, IQN, ("kerub-disk-1",), ("127.0.0.1",))
    disk = target.lun(1)
    assert disk is not None and disk.backing_path == str(lun) and disk.size_mb == 17 and not disk.read_only
    assert "kerub-disk-1" in parse_tgtadm_accounts(tgtd.run(iscsi_accounts_command()).stdout)

    rc, out = qemu_img_info(tgtd, f"iscsi://kerub-disk-1%{secret}@127.0.0.1/{IQN}/1")
    assert rc == 0, out
    assert json.loads(out)["virtual-size"] == 16 * MIB
    rc, out = qemu_img_info(tgtd, f"iscsi://kerub-disk-1%wrong-secret@127.0.0.1/{IQN}/1")
    assert rc != 0 and "Authentication failure" in out
    rc, out = qemu_img_info(tgtd, f"iscsi://127.0.0.1/{IQN}/1")
    assert rc != 0  # no CHAP, no access

    # a second share under the same account: the account is created once and bound again
    tgtd.run(iscsi_share(2, IQN + "-ro", str(lun), "kerub-disk-1", secret_file, read_only=True))
    shown = {t.tid: t for t in parse_tgtadm_show(tgtd.run(iscsi_show_command()).stdout)}
    assert shown[2].lun(1).read_only and shown[2].acl == ("ALL",)  # type: ignore[union-attr]

    tgtd.run(iscsi_unshare(1))
    tgtd.run(iscsi_unshare(1))  # gone already: still succeeds
    tgtd.run(iscsi_unshare(2))
    assert parse_tgtadm_show(tgtd.run(iscsi_show_command()).stdout) == []
    tgtd.run(iscsi_account_delete("kerub-disk-1"))
    tgtd.run(iscsi_account_delete("kerub-disk-1"))
    assert parse_tgtadm_accounts(tgtd.run(iscsi_accounts_command()).stdout) == []
    assert not (folder / "pwned").exists() and not Path("pwned").exists()


def test_the_planners_share_reads_its_chap_secret_on_stdin(tgtd: PrivateNamespace, tmp_path: Path) -> None:
    """What the planner's share and re-key steps run: the secret on standard input only, in a 0600 file on /run
    for the command's time (gone after it, whatever its outcome); qemu's initiator logs in with it alone."""
    lun = tmp_path / "lun.img"
    with lun.open("wb") as f:
        f.truncate(8 * MIB)
    user, secret = chap_user(IQN), new_chap_secret()
    command = iscsi_share_chap(5, IQN, str(lun), user, initiator_address="127.0.0.1")
    assert secret not in command and user == "kerub-disk-1"
    tgtd.run(command, input=secret.encode())
    assert "kerub-chap" not in tgtd.run("ls -A /run").stdout  # the file went with the command
    [target] = parse_tgtadm_show(tgtd.run(iscsi_show_command()).stdout)
    assert (target.tid, target.incoming_users, target.acl) == (5, (user,), ("127.0.0.1",))
    url = f"127.0.0.1/{IQN}/1"
    assert qemu_img_info(tgtd, f"iscsi://{user}%{secret}@{url}")[0] == 0
    rc, out = qemu_img_info(tgtd, f"iscsi://{url}")
    assert rc != 0, out  # a reader without the secret is refused
    assert qemu_img_info(tgtd, f"iscsi://{user}%{new_chap_secret()}@{url}")[0] != 0
    # a failed share (the tid is taken) leaves no secret file behind either, nor a second account
    again = tgtd.run(command, input=new_chap_secret().encode(), check=False)
    assert again.returncode != 0 and "kerub-chap" not in tgtd.run("ls -A /run").stdout
    assert qemu_img_info(tgtd, f"iscsi://{user}%{secret}@{url}")[0] == 0
    # a re-key: the old secret no longer logs in, the new one does; an account of that name is replaced
    fresh = new_chap_secret()
    tgtd.run(iscsi_rekey(5, user), input=fresh.encode())
    assert qemu_img_info(tgtd, f"iscsi://{user}%{secret}@{url}")[0] != 0
    assert qemu_img_info(tgtd, f"iscsi://{user}%{fresh}@{url}")[0] == 0
    assert parse_tgtadm_accounts(tgtd.run(iscsi_accounts_command()).stdout) == [user]
    # no secret on stdin: refused, the account as it was
    assert tgtd.run(iscsi_rekey(5, user), input=b"", check=False).returncode != 0
    # the target goes with its account
    tgtd.run(iscsi_unshare(5, user))
    tgtd.run(iscsi_unshare(5, user))  # gone already: still succeeds
    assert parse_tgtadm_show(tgtd.run(iscsi_show_command()).stdout) == []
    assert parse_tgtadm_accounts(tgtd.run(iscsi_accounts_command()).stdout) == []


def test_chap_names_derive_from_validated_names() -> None:
    """The account and the libvirt secret's usage name of a target, whatever the disk id was: one safe word."""
    for disk_id in ("0b9c3c1e-Disk_A", "x" * 128, "a.b:c_d-e", "9"):
        iqn = disk_iqn(disk_id)
        user, usage = chap_user(iqn), secret_usage("host-" + disk_id, iqn)
        for name in (user, usage):
            assert re.fullmatch(r"kerub-[a-z0-9][A-Za-z0-9._-]{0,57}", name), name
        assert usage != secret_usage("another-host", iqn)  # one per target: per sharing host and IQN
    assert chap_user(disk_iqn("x" * 128)) != chap_user(disk_iqn("x" * 127))
    for bad in ("iqn.2024-01.org.kerub:a'b", "iqn.2024-01.org.kerub:a b", "", "$(reboot)"):
        with pytest.raises(ValueError):
            chap_user(bad)
        # what a document holds (an import) never crashes the planner: the usage name is a digest of it
        assert re.fullmatch(r"kerub-iscsi-[0-9a-f]{24}", secret_usage("h\n;x", bad))


def test_share_without_chap_and_a_failed_share(tgtd: PrivateNamespace, tmp_path: Path) -> None:
    lun = tmp_path / "open.img"
    with lun.open("wb") as f:
        f.truncate(8 * MIB)
    tgtd.run(iscsi_share(3, disk_iqn("0b9c3c1e-Disk_A"), str(lun), None, None, initiator_address="127.0.0.1"))
    rc, out = qemu_img_info(tgtd, f"iscsi://127.0.0.1/{disk_iqn('0b9c3c1e-Disk_A')}/1")
    assert rc == 0 and json.loads(out)["virtual-size"] == 8 * MIB
    # the same tid again fails (tgtd refuses), leaving the first share intact
    again = tgtd.run(iscsi_share(3, IQN, str(lun), None, None), check=False)
    assert again.returncode != 0 and "already exists" in again.stderr
    [target] = parse_tgtadm_show(tgtd.run(iscsi_show_command()).stdout)
    assert target.iqn == "iqn.2024-01.org.kerub:0b9c3c1e-disk-a"


def test_parse_captured_show() -> None:
    """Captured while qemu-io held a session to target 1 (tgtadm 1.0.85)."""
    targets = parse_tgtadm_show((CAPTURES / "tgtadm-target-show.txt").read_text())
    assert [t.tid for t in targets] == [1, 2]
    first, second = targets
    assert first.iqn == "iqn.2024-01.org.kerub:disk1" and first.state == "ready"
    assert first.initiators == ("iqn.2008-11.org.linux-kvm",) and first.connections == ("127.0.0.1",)
    assert first.accounts == ("kuser",) and first.acl == ("127.0.0.1",)
    assert [lun.lun for lun in first.luns] == [0, 1]
    controller, disk = first.luns
    assert controller.type == "controller" and controller.backing_path is None
    assert (disk.type, disk.size_mb, disk.backing_path, disk.backing_type, disk.read_only, disk.online) == (
        "disk", 17, "/tmp/tgtx/lun.img", "rdwr", False, True
    )
    assert second.accounts == () and second.acl == ("ALL",) and second.lun(1).read_only  # type: ignore[union-attr]
    assert parse_tgtadm_accounts((CAPTURES / "tgtadm-account-show.txt").read_text()) == ["kuser"]
    assert parse_tgtadm_show("") == [] and parse_tgtadm_accounts("") == []


def test_parse_refuses_a_changed_format() -> None:
    with pytest.raises(ValueError):
        parse_tgtadm_show("Target one: iqn.x\n")
    with pytest.raises(ValueError):
        parse_tgtadm_accounts("tgtadm: can't send the request to the tgt daemon, Transport endpoint is not connected\n")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([
    "Target 1: iqn.2024-01.org.kerub:a", "Target x", "    LUN information:", "        LUN: 1", "        LUN: x",
    "            Size: 17 MB, Block size: 512", "            Size: ?", "            Backing store path: None",
    "    ACL information:", "        ALL", "    Account information:", "    I_T nexus information:",
    "            Initiator:", "            Initiator: iqn.x alias: none", "                IP Address: 127.0.0.1",
    "garbage", "", "    System information:", "        State: ready",
]) | st.text(max_size=30), max_size=25))
def test_parse_never_crashes(lines: list[str]) -> None:
    try:
        targets = parse_tgtadm_show("\n".join(lines))
    except ValueError:
        return
    assert all(t.tid >= 0 for t in targets)


@pytest.mark.parametrize(
    "call",
    [
        lambda: iscsi_share(0, IQN, "/x", None, None),
        lambda: iscsi_share(1, "iqn.2024-01.org.kerub:a'b", "/x", None, None),
        lambda: iscsi_share(1, "IQN.2024-01.ORG.KERUB:A", "/x", None, None),
        lambda: iscsi_share(1, IQN, "x.img", None, None),
        lambda: iscsi_share(1, IQN, "/a,b.img", None, None),  # tgtd splits its parameters at ','
        lambda: iscsi_share(1, IQN, "/x", "user name", "/secret"),
        lambda: iscsi_share(1, IQN, "/x", "user", None),
        lambda: iscsi_share(1, IQN, "/x", None, None, initiator_address="10.0.0.1; reboot"),
        lambda: iscsi_unshare(-1),
        lambda: iscsi_account_delete("a'b"),
        lambda: write_secret_file("secret"),
        lambda: IscsiDiskSource("127.0.0.1", IQN, chap_user="u"),
        lambda: IscsiDiskSource("127.0.0.1\n", IQN),
        lambda: IscsiDiskSource("127.0.0.1", IQN, lun=0),
    ],
)
def test_hostile_or_invalid_values_are_refused(call) -> None:
    with pytest.raises(ValueError):
        call()


def test_builder_text() -> None:
    assert iscsi_unshare(4) == (
        "if tgtadm --lld iscsi --mode target --op show | grep -q '^Target 4: '; "
        "then tgtadm --lld iscsi --mode target --op delete --force --tid 4; fi"
    )
    assert check_iqn("iqn.1994-05.com.redhat:1a2b.c") == "iqn.1994-05.com.redhat:1a2b.c"
    assert IscsiDiskSource("10.0.0.2", IQN, 1, chap_user="u", secret_usage="kerub-disk-1").libvirt_name == f"{IQN}/1"
