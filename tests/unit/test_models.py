import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from kerub_tui.core import models as m


def test_every_kind_round_trips_through_json():
    docs = [
        m.Host(name="h1", address="127.0.0.2", fingerprint="SHA256:" + "A" * 43, end_of_life=dt.date(2030, 1, 1),
               power={"wol_mac": "AA:BB:CC:DD:EE:FF"}),
        m.HostDynamic(id="h1id", status="key-mismatch", ksm={"run": True, "pages_sharing": 10}, storage_free={"lvm:vg": 5}),
        m.HostConfiguration(id="h1id", exports=[{"path": "/srv/x"}], thin_pools=[{"vg": "vg", "name": "tp"}]),
        m.VirtualMachine(name="web1", cpus=2, memory_min=512 << 20, memory_max=1 << 30,
                         disks=[{"disk_id": "d1", "bus": "sata"}], nics=[{"network": "default"}],
                         expectations=[{"type": "not-same-host", "vms": ["x"], "level": "dealbreaker"}]),
        m.VirtualMachineDynamic(id="v", host_id="h", status="up", spice_address="127.0.0.1", spice_port=5900),
        m.VirtualStorageDevice(name="d1", size=1 << 26, expectations=[{"type": "storage-redundancy", "copies": 2}]),
        m.VirtualStorageDeviceDynamic(id="d1", allocations=[
            {"type": "lvm", "host_id": "h", "capability_id": "lvm:vg", "vg": "vg", "lv": "d1"},
            {"type": "file", "host_id": "h", "capability_id": "file:/img", "path": "/img/d1.qcow2", "format": "qcow2"},
            {"type": "zfs", "host_id": "h", "capability_id": "zfs:tank", "pool": "tank", "volume": "d1"},
            {"type": "gvinum", "host_id": "h", "capability_id": "gvinum:g", "volume": "d1"},
        ]),
        m.Plan(trigger=["web1 must run"], steps=[m.PlannedStep(type="start-vm", description="start web1",
               commands=[m.HostCommand(host_id="h", command="libvirt: start web1")])]),
        m.AuditEntry(action="vm create", target="web1"),
        m.Event(type="host-down", message="h1 is down"),
        m.Settings(auto_approve=[{"plan_kind": "ksm"}]),
    ]
    assert {d.kind for d in docs} == set(m.DOCUMENT_TYPES)
    for doc in docs:
        assert m.parse_document(doc.model_dump_json()) == doc
        assert doc.schema_version == m.SCHEMA_VERSION


def test_documents_are_frozen_and_evolve_validates():
    vm = m.VirtualMachine(name="web1")
    with pytest.raises(ValidationError):
        vm.name = "x"  # type: ignore[misc]
    assert vm.evolve(cpus=4).cpus == 4
    with pytest.raises(ValidationError, match="not allowed"):
        vm.evolve(name="a b")


def test_evolve_validates_what_model_copy_lets_through():
    dyn = m.HostDynamic(id="h1", memory_free=1024)
    assert dyn.model_copy(update={"memory_free": "lots"}).memory_free == "lots"  # pydantic's copy: unchecked
    with pytest.raises(ValidationError, match="memory_free"):
        dyn.evolve(memory_free="lots")
    with pytest.raises(ValidationError, match="memory_fre"):
        dyn.evolve(memory_fre=5)  # a misspelt field is refused, not kept on the side
    assert dyn.evolve(memory_free=2048).memory_free == 2048 and dyn.memory_free == 1024
    assert dyn.evolve() is dyn
    # nested values and every document kind go through the same helper
    assert m.KsmState().evolve(run=True).run is True
    with pytest.raises(ValidationError):
        m.KsmState().evolve(pages_shared="many")


@pytest.mark.parametrize("field,value,message", [
    ("name", "", "must not be empty"),
    ("name", "x;reboot", "not allowed"),
    ("name", "a" * 100, "too long"),
    ("cpus", 0, "greater than or equal to 1"),
    ("memory_min", 1, "greater than or equal to"),
])
def test_vm_refuses_bad_values(field, value, message):
    with pytest.raises(ValidationError, match=message):
        m.VirtualMachine(**{"name": "ok", field: value})


def test_memory_min_above_max_is_refused():
    with pytest.raises(ValidationError, match="more than maximum"):
        m.VirtualMachine(name="x", memory_min=1 << 30, memory_max=512 << 20)


def test_unknown_fields_and_kinds_are_refused():
    with pytest.raises(ValidationError):
        m.VirtualMachine(name="x", colour="red")
    with pytest.raises(ValidationError):
        m.parse_document({"kind": "spaceship", "id": "x"})
    with pytest.raises(ValidationError, match=r"unknown expectation|does not match any of the expected tags"):
        m.VirtualMachine(name="x", expectations=[{"type": "teleport"}])


@pytest.mark.parametrize("kwargs,message", [
    ({"address": "a b"}, "neither an IP address"),
    ({"address": "127.0.0.2", "user": "Root;"}, "not a valid login name"),
    ({"address": "127.0.0.2", "port": 0}, "greater than or equal to 1"),
    ({"address": "127.0.0.2", "fingerprint": "MD5:aa"}, "not a SHA256 fingerprint"),
])
def test_host_refuses_bad_values(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        m.Host(name="h", **kwargs)


def test_file_allocation_paths_must_be_absolute_and_normal():
    for path in ["relative/x", "/a/../etc/shadow", "/x\n/y"]:
        with pytest.raises(ValidationError):
            m.FileAllocation(host_id="h", capability_id="c", path=path)


def test_nic_needs_exactly_one_source():
    with pytest.raises(ValidationError, match="exactly one"):
        m.Nic()
    with pytest.raises(ValidationError, match="exactly one"):
        m.Nic(network="a", bridge="b")
    with pytest.raises(ValidationError, match="not allowed"):
        m.Nic(network="default'/><x")


def test_vm_dynamic_never_has_a_spice_password_field():
    assert not any("pass" in name for name in m.VirtualMachineDynamic.model_fields)


@given(st.dictionaries(st.text(max_size=12), st.one_of(st.text(max_size=20), st.integers(), st.none()), max_size=6))
def test_garbage_dicts_are_refused_not_crashing(data):
    data = {"kind": "vm", **data}
    try:
        m.parse_document(data)
    except ValidationError:
        pass
