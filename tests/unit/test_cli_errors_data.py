"""Export and import as users get them wrong (issue 13 item 2, issue 17 item 8): a failed export
leaves nothing behind, a relative path means the caller's directory even through a controller, and
every rejected import is one line naming the field and the reason, in the admin's words."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kerub_tui.cli import main
from kerub_tui.core import models as m
from kerub_tui.core.expectations import InvalidExpectation, parse_spec
from kerub_tui.core.store import Store, StoreError
from tests import cliproc

FP = "SHA256:" + "A" * 43


def run(argv, capsys):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("KERUB_TUI_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("KERUB_TUI_CONFIG", str(tmp_path / "config"))
    return dict(os.environ, PYTHONUNBUFFERED="1")


# --- export -------------------------------------------------------------------------------------


@pytest.mark.parametrize("target,reason", [
    ("missing-dir/x.json", "there is no directory"),
    (".", "it is a directory"),
])
def test_a_failed_export_is_one_line_and_leaves_no_temporary_file(tmp_path, env, capsys, target, reason):
    assert run(["disk", "create", "d1", "--size", "1G"], capsys)[0] == 0
    work = tmp_path / "work"
    work.mkdir()
    code, _, err = run(["export", str(work / target)], capsys)
    assert code == 1 and reason in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")] == []


def test_an_export_that_fails_while_writing_leaves_the_old_file_and_no_copy(tmp_path):
    store = Store.open(tmp_path / "data")
    store.put(m.VirtualStorageDevice(name="d1", size=1 << 30))
    target = tmp_path / "out"
    target.mkdir()
    (target / "x.json").write_text("old")
    os.chmod(target, 0o500)  # the temporary file cannot be made
    try:
        if os.access(target, os.W_OK):  # root ignores the mode: make the rename fail instead
            os.chmod(target, 0o700)
            (target / "x.json").unlink()
            (target / "x.json").mkdir()
            (target / "x.json" / "keep").write_text("a file in the way")
            with pytest.raises(StoreError, match="it is a directory"):
                store.export_file(target / "x.json")
        else:
            with pytest.raises(StoreError, match="cannot export"):
                store.export_file(target / "x.json")
            assert (target / "x.json").read_text() == "old"
    finally:
        os.chmod(target, 0o700)
        store.close()
    assert [p.name for p in tmp_path.rglob("*.tmp")] == []


def test_an_export_on_a_full_disk_is_one_line_and_leaves_no_copy(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        store = Store.open(tmp_path / "data")
        store.put_many([m.Event(type="x", message="y" * 1000) for _ in range(200)])  # ~250 KiB of JSON
        with pytest.raises(StoreError, match=r"cannot export to .*No space left on device"):
            store.export_file(small / "x.json")
        store.close()
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_export_through_a_controller_writes_in_the_callers_directory(tmp_path, env):
    served_from, caller = tmp_path / "served-from", tmp_path / "caller"
    served_from.mkdir()
    caller.mkdir()
    serve = subprocess.Popen([sys.executable, "-m", "kerub_tui", "serve"], env=env, cwd=served_from,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving" in serve.stderr.readline()
        done = cliproc.kerub(["export", "backup.json"], env=env, cwd=caller, timeout=300)
        assert done.returncode == 0, done.stderr
        assert str(caller / "backup.json") in done.stdout
        assert json.loads((caller / "backup.json").read_text())["format"] == "kerub-tui-export"
        assert not (served_from / "backup.json").exists()
        failed = cliproc.kerub(["export", "no-dir/backup.json"], env=env, cwd=caller, timeout=300)
        assert failed.returncode == 1 and len(failed.stderr.splitlines()) == 1
        assert f"there is no directory {caller / 'no-dir'}" in failed.stderr
        assert "closed the control socket" not in failed.stderr
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)


# --- import -------------------------------------------------------------------------------------


def _valid_export(tmp_path: Path) -> dict:
    store = Store.open(tmp_path / "source")
    disk = m.VirtualStorageDevice(name="data1", size=1 << 30)
    host = m.Host(name="kvm1", address="127.0.0.2", fingerprint=FP)
    vm = m.VirtualMachine(name="web1", disks=[m.DiskLink(disk_id=disk.id)],
                          expectations=[parse_spec("availability:up", "vm")])
    store.put_many([
        host,
        m.HostDynamic(id=host.id),
        disk,
        vm,
        m.VirtualMachineDynamic(id=vm.id),
        m.Event(type="host-up", message="kvm1 is up"),
        m.AuditEntry(action="vm create", target="web1"),
        m.Settings(),
    ])
    data = store.export_data()
    store.close()
    return data


def _doc(data: dict, kind: str) -> dict:
    return next(d for d in data["documents"] if d["kind"] == kind)


def _set(kind: str, **fields):
    def change(data):
        _doc(data, kind).update(fields)
    return change


def _drop(kind: str, field: str):
    def change(data):
        del _doc(data, kind)[field]
    return change


def _add(make):
    def change(data):
        data["documents"].append(make(data))
    return change


def _top(**fields):
    def change(data):
        data.update(fields)
    return change


def _twin(kind: str):
    def make(data):
        twin = copy.deepcopy(_doc(data, kind))
        twin["id"] = m.new_id()
        return twin
    return _add(make)


# Forty broken exports, each with what its one line must say.
BROKEN = [
    (_set("vm", memory_min=5), "memory_min must be at least 16777216 (16 MiB), not 5"),
    (_set("vm", memory_min="lots"), "memory_min must be a whole number, not 'lots'"),
    (_set("vm", memory_min=1 << 61, memory_max=1 << 61), "memory_min must be at most"),
    (_set("vm", memory_min=1 << 31, memory_max=1 << 30), "minimum memory (2048 MiB) is more than maximum"),
    (_set("vm", cpus=0), "cpus must be at least 1"),
    (_set("vm", cpus=100000), "cpus must be at most 512"),
    (_set("vm", cpus=1.5), "cpus must be a whole number"),
    (_set("vm", name="a b"), "VM name 'a b' contains a space"),
    (_set("vm", name=""), "VM name must not be empty"),
    (_drop("vm", "name"), "name is missing"),
    (_set("vm", colour="blue"), "colour is not a known field"),
    (_set("vm", expectations=[{"type": "zz"}]), "expectations[0] type 'zz' is not one of"),
    (_set("vm", expectations=[{"type": "not-same-host", "vms": []}]), "vms needs at least one name"),
    (_set("vm", expectations=[{"type": "availability", "level": "urgent"}]), "level must be one of"),
    (_set("vm", expectations=[{"type": "chassis-manufacturer", "manufacturer": "Dell\nInc"}]),
     "a newline is not allowed"),
    (_set("vm", disks=[{"disk_id": m.new_id()}]), "uses disk"),
    (_set("vm", disks=[{}]), "disks[0].disk_id is missing"),
    (_set("vm", disks="data1"), "disks must be a list"),
    (_set("disk", size=0), "size must be more than 0"),
    (_set("disk", size=10 ** 35), "size must be at most 1152921504606846976"),
    (_set("disk", size="1G"), "size must be a whole number, not '1G'"),
    (_set("disk", read_only="maybe"), "read_only must be true or false"),
    (_twin("vm"), "two VMs are named 'web1'"),
    (_twin("disk"), "two disks are named 'data1'"),
    (_twin("host"), "two hosts are named 'kvm1'"),
    (_add(lambda data: copy.deepcopy(_doc(data, "event"))), "appears twice"),
    (_add(lambda data: {"kind": "vmx", "id": m.new_id()}), "kind 'vmx' is not one of"),
    (_add(lambda data: {"name": "x"}), "has no kind"),
    (_add(lambda data: ["vm", "x"]), "is not a mapping of fields"),
    (_set("event", id="../../etc"), "id"),
    (_set("event", severity="panic"), "severity must be one of"),
    (_set("event", time="yesterday"), "time must be a date and time"),
    (_set("audit", action=None), "action must be text"),
    (_set("settings", optimisation={"load_balancing_min_gain": 7}), "load_balancing_min_gain must be at most 1"),
    (_set("host", port=0), "port must be at least 1"),
    (_set("host", port=70000), "port must be at most 65535"),
    (_set("host", address="a b"), "address 'a b' is neither an IP address nor a valid host name"),
    (_set("host", fingerprint="MD5:aa"), "is not a SHA256 fingerprint"),
    (_set("vm-dynamic", status="flying"), "status must be one of"),
    (_top(documents={"a": 1}), "has no document list"),
    (_top(format="something-else"), "is not a kerub-tui export"),
    (_top(schema_version=99), "newer kerub-tui"),
]


def test_forty_broken_imports_are_each_refused_with_one_clear_line(tmp_path, env, capsys):
    assert len(BROKEN) >= 40
    valid = _valid_export(tmp_path)
    (tmp_path / "valid.json").write_text(json.dumps(valid))
    assert run(["import", str(tmp_path / "valid.json")], capsys)[0] == 0  # the unbroken one is fine
    problems = []
    for index, (breaks, expected) in enumerate(BROKEN):
        data = copy.deepcopy(valid)
        breaks(data)
        path = tmp_path / f"broken{index}.json"
        path.write_text(json.dumps(data))
        code, _, err = run(["import", "--replace", str(path)], capsys)
        lines = err.splitlines()
        pydantic_words = ("validation error", "For further information", "[type=", "tagged-union", "Input should")
        if code != 1 or len(lines) != 1 or expected not in err or any(w in err for w in pydantic_words):
            problems.append(f"{index}: expected {expected!r}, got exit {code}: {err!r}")
    assert problems == []
    # Nothing was changed by any of them.
    code, out, _ = run(["vm", "list", "--json"], capsys)
    assert [v["name"] for v in json.loads(out)] == ["web1"]


# --- expectation specs --------------------------------------------------------------------------


@pytest.mark.parametrize("spec,reason", [
    ("system-manufacturer:Dell\nInc", "contains a newline"),
    ("availability:up\n", "contains a newline"),
    ("host-os:debian\x1b[31m", "control character"),
    ("not-same-host:web01@", "no level after '@'"),
])
def test_expectation_specs_with_control_characters_or_no_level_are_refused(spec, reason):
    with pytest.raises(InvalidExpectation, match=reason):
        parse_spec(spec, "vm", resolve=lambda name: name)


@pytest.mark.parametrize("text", ["[" * 100000 + "]" * 100000, '{"format": ' + "[" * 5000 + "]" * 5000 + "}"],
                         ids=["a list nested 100000 deep", "a value nested 5000 deep"])
def test_an_import_nested_past_reason_is_one_line(tmp_path, env, capsys, text):
    path = tmp_path / "deep.json"
    path.write_text(text)
    code, _, err = run(["import", str(path)], capsys)
    assert code == 1 and len(err.splitlines()) == 1 and "internal error" not in err, err
    assert "nested too deep" in err
