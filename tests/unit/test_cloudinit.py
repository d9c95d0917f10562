"""The NoCloud seed builder (kerub_tui/hosts/cloudinit.py): the ISO read back with pycdlib, as a
guest's cloud-init would find it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerub_tui.core.models import CloudInit, VirtualMachine
from kerub_tui.hosts.cloudinit import (
    DEFAULT_USER_DATA,
    SEED_DIR,
    read_seed,
    seed_digest,
    seed_path,
    seed_pattern,
    vm_seed,
)

KEY1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGr7Qq0n0eQm2E4Oq2m3ZbW8u2Kq0x8mRk8o1m8p2hXw admin@jump"
KEY2 = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= ops"
USER_DATA = "#cloud-config\npassword: Sup3r-s3cret\nchpasswd: {expire: false}\n"


def vm(**cloud_init) -> VirtualMachine:
    return VirtualMachine(name="web1", cloud_init=CloudInit(**cloud_init))


def test_seed_is_a_cidata_volume_with_the_vm_identity_keys_and_user_data():
    machine = vm(ssh_keys=[KEY1, KEY2], user_data=USER_DATA, network_config="version: 2\nethernets: {}\n")
    volume, files = read_seed(vm_seed(machine))
    assert volume == "cidata"
    assert set(files) == {"meta-data", "user-data", "network-config"}
    meta = json.loads(files["meta-data"])  # JSON is YAML: cloud-init reads it
    assert meta == {"instance-id": machine.id, "local-hostname": "web1", "public-keys": [KEY1, KEY2]}
    assert files["user-data"] == USER_DATA  # exactly as given
    assert files["network-config"] == "version: 2\nethernets: {}\n"


def test_seed_without_user_data_or_network_config():
    _, files = read_seed(vm_seed(vm(ssh_keys=[KEY1])))
    assert set(files) == {"meta-data", "user-data"} and files["user-data"] == DEFAULT_USER_DATA
    _, files = read_seed(vm_seed(vm()))
    assert "public-keys" not in json.loads(files["meta-data"])


def test_joliet_and_iso9660_names_are_there_too():
    import io

    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(vm_seed(vm(user_data=USER_DATA))))
    try:
        assert iso.has_joliet() and iso.has_rock_ridge()
        joliet = sorted(c.file_identifier().decode("utf-16-be") for c in iso.list_children(joliet_path="/")
                        if not (c.is_dot() or c.is_dotdot()))
        assert joliet == ["meta-data", "user-data"]
        names = sorted(c.file_identifier().decode() for c in iso.list_children(iso_path="/")
                       if not (c.is_dot() or c.is_dotdot()))
        assert names == ["METADATA.;1", "USERDATA.;1"]
    finally:
        iso.close()


def test_digest_changes_with_what_the_seed_says():
    a = vm(ssh_keys=[KEY1], user_data=USER_DATA)
    assert seed_digest(a) == seed_digest(a.model_copy())
    for change in ({"cloud_init": CloudInit(ssh_keys=[KEY2], user_data=USER_DATA)},
                   {"cloud_init": CloudInit(ssh_keys=[KEY1], user_data=USER_DATA + "# more\n")},
                   {"cloud_init": CloudInit(ssh_keys=[KEY1], user_data=USER_DATA, network_config="version: 2\n")},
                   {"name": "web2"}):
        assert seed_digest(a.model_copy(update=change)) != seed_digest(a)
    assert seed_digest(VirtualMachine(name="plain")) == ""
    with pytest.raises(ValueError, match="no cloud-init"):
        vm_seed(VirtualMachine(name="plain"))


def test_seed_paths_are_per_vm_and_digest_and_refuse_hostile_values():
    digest = seed_digest(vm(ssh_keys=[KEY1]))
    path = seed_path("vm-1", digest)
    assert path == f"{SEED_DIR}/kerub-seed-vm-1-{digest[:16]}.iso"
    assert seed_pattern("vm-1") == f"{SEED_DIR}/kerub-seed-vm-1-*.iso"
    for bad_id in ("../etc", "a b", "x;reboot", "$(id)", "*", ""):
        with pytest.raises(ValueError):
            seed_pattern(bad_id)
    for bad_digest in ("short", "Z" * 64, "../" * 20):
        with pytest.raises(ValueError):
            seed_path("vm-1", bad_digest)


@pytest.mark.parametrize("key", ["not a key", "ssh-ed25519", "ssh-ed25519 AAAA\nssh-rsa AAAA", "ssh-ed25519 $(reboot)"])
def test_bad_ssh_keys_are_refused(key):
    with pytest.raises(ValueError, match="OpenSSH public key"):
        CloudInit(ssh_keys=[key])


def test_oversized_or_binary_user_data_is_refused():
    with pytest.raises(ValueError, match="at most 64 KiB"):
        CloudInit(user_data="x" * (65 * 1024))
    with pytest.raises(ValueError):
        CloudInit(user_data="a\x00b")


@settings(max_examples=25, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=300))
def test_any_user_data_round_trips(text):
    _, files = read_seed(vm_seed(vm(user_data=text)))
    assert files["user-data"] == text
