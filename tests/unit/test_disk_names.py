"""Disk names LVM reserves (lvm(8) VALID NAMES: a disk's LV is kerub-NAME, and LVM refuses the suffixes of
its hidden volumes anywhere in an LV name) are refused at input with one clear line: disk create, a rename,
a VM's new disks; core/names.check_disk_name is the one rule. A document that has such a name already (from
before, or imported) still loads, and the planner never crashes on it (planner/test_hostile_names.py)."""

from __future__ import annotations

import pytest

from kerub_tui.api import ActionError
from kerub_tui.controller import Controller
from kerub_tui.core.models import VirtualMachine, VirtualStorageDevice
from kerub_tui.core.names import LVM_RESERVED_PARTS, InvalidName, check_disk_name
from kerub_tui.core.store import Store
from kerub_tui.hosts import lvm
from tests import cliproc

from ._cli import run

RESERVED = ["x_tmeta", "a_mlog", "db_rimage", "c_cdata2", "web_pmspare", "x_vorigin"]


@pytest.mark.parametrize("name", RESERVED)
def test_a_name_lvm_reserves_is_refused_in_one_line(name: str) -> None:
    with pytest.raises(InvalidName) as refused:
        check_disk_name(name)
    message = str(refused.value)
    assert "which LVM reserves" in message and "\n" not in message and name in message


@pytest.mark.parametrize("name", ["data", "web-1.img", "tmeta", "x-tmeta", "snapshot1", "pvmove-a", "a_b"])
def test_other_names_are_taken_and_their_lv_is_one_lvm_makes(name: str) -> None:
    assert check_disk_name(name) == name
    assert lvm.check_lv(f"kerub-{name}") == f"kerub-{name}"


def test_the_rule_is_the_one_the_lvm_builder_uses() -> None:
    assert tuple(LVM_RESERVED_PARTS) == lvm._RESERVED_LV_PARTS
    for part in LVM_RESERVED_PARTS:
        with pytest.raises(InvalidName):
            check_disk_name(f"a{part}")


def test_a_document_with_such_a_name_still_loads(tmp_path) -> None:
    """Made before the rule (or imported): kept, never lost at open."""
    with Store.open(tmp_path / "data") as store:
        store.put(VirtualStorageDevice(name="x_tmeta", size=1 << 30))
    with Store.open(tmp_path / "data") as store:
        assert [d.name for d in store.list(VirtualStorageDevice)] == ["x_tmeta"]


def test_the_command_line_refuses_it_and_keeps_nothing_half_made(data_dir, capsys) -> None:
    code, _, err = run("disk", "create", "x_tmeta", "--size", "1G", capsys=capsys)
    assert code == 1 and err == ("kerub-tui: disk name 'x_tmeta' contains '_tmeta', which LVM reserves for its "
                                 "hidden volumes (lvm(8)): choose another name\n")
    code, _, err = run("vm", "create", "db_rimage", "--memory", "1G", "--disk", "1G", capsys=capsys)
    assert code == 1 and len(err.splitlines()) == 1 and "'db_rimage-disk0' contains '_rimage'" in err
    with Store.open(data_dir) as store:
        assert store.list(VirtualStorageDevice) == [] and store.list(VirtualMachine) == []


async def test_a_rename_to_such_a_name_is_refused_and_a_disk_named_so_before_can_still_change(data_dir) -> None:
    with Store.open(data_dir) as store:
        store.put(VirtualStorageDevice(id="disk-old", name="old_mlog", size=1 << 30))
    controller = Controller(data_dir)
    await controller.start(connect_hosts=False)
    try:
        await controller.create_disk("data", size=1 << 30)
        with pytest.raises(ActionError, match="'data_tdata' contains '_tdata', which LVM reserves"):
            await controller.update_disk("data", name="data_tdata")
        grown = await controller.update_disk("old_mlog", size=2 << 30)  # its name is not what changes
        assert (grown.name, grown.size) == ("old_mlog", 2 << 30)
        assert sorted(d.name for d in controller.documents(VirtualStorageDevice)) == ["data", "old_mlog"]
    finally:
        await controller.stop()


def test_a_real_process_says_it_in_one_line(tmp_path) -> None:
    env = {"KERUB_TUI_DATA": str(tmp_path / "data"), "KERUB_TUI_CONFIG": str(tmp_path / "config"),
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = cliproc.kerub(["disk", "create", "a_rimage_0", "--size", "1G"], env=env, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "kerub-tui: disk name 'a_rimage_0' contains '_rimage', which LVM reserves for its hidden volumes (lvm(8)): "
        "choose another name"]
