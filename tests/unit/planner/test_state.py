"""The operational state: indexes built from documents, derivation by layers, store snapshots."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerub_tui.core.models import (
    HostConfiguration,
    LvmAllocation,
    ThinPool,
    VirtualMachineDynamic,
    VirtualStorageDeviceDynamic,
    VmStatus,
)
from kerub_tui.core.store import Store
from kerub_tui.planner.state import _DELETED, Layer, OperationalState, thin_pool_key

from .fleet import GIB, Fleet


def test_layer_set_remove_len_and_isolation() -> None:
    base = Layer({"a": 1, "b": 2})
    derived = base.set("c", 3).remove("a").set("b", 20)
    assert dict(base) == {"a": 1, "b": 2} and len(base) == 2
    assert dict(derived) == {"b": 20, "c": 3} and len(derived) == 2
    assert "a" not in derived and derived.get("a", "gone") == "gone"
    assert sorted(derived.changed_keys()) == ["a", "b", "c"]
    assert derived.remove("zzz") is derived


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.one_of(st.none(), st.integers(0, 9))), max_size=700))
def test_layer_behaves_like_a_dict(ops: list[tuple[str, int | None]]) -> None:
    """Random sets and removes (None = remove), past the flatten threshold, agree with a plain dict."""
    layer: Layer[str, int] = Layer({"a": 0, "b": 1})
    model = {"a": 0, "b": 1}
    for key, value in ops:
        if value is None:
            layer = layer.remove(key)
            model.pop(key, None)
        else:
            layer = layer.set(key, value)
            model[key] = value
        assert len(layer) == len(model)
    assert dict(layer) == model
    assert all(v is not _DELETED for v in layer.values())


def _fleet() -> Fleet:
    f = Fleet()
    f.host("h1", memory=16 * GIB, cpus=8)
    f.host("h2", memory=8 * GIB, cpus=4)
    f.vm("web1", on="h1", memory=2 * GIB, cpus=2)
    f.vm("web2", on="h1", memory=1 * GIB, status=VmStatus.paused)
    f.vm("idle", memory=1 * GIB)
    f.disk("d1", size=10 * GIB, on=["h1"])
    return f


def test_indexes_from_documents() -> None:
    s = _fleet().state()
    assert s.host_ids() == ("host-h1", "host-h2")
    assert s.vms_on("host-h1") == ["vm-web1", "vm-web2"]
    assert s.vms_on("host-h2") == []
    assert s.mem_used["host-h1"] == 3 * GIB and s.vcpus_used["host-h1"] == 3
    # 16 GiB less the 1 GiB host reserve, less the two VMs
    assert s.free_memory("host-h1") == 12 * GIB
    assert s.free_memory("host-h2") == 8 * GIB - (8 * GIB) // 10
    assert s.free_cores("host-h1") == 5
    assert s.disks_on("host-h1") == ["disk-d1"]
    assert s.free_storage("host-h1", "lvm:vg0") == 100 * GIB
    assert s.vm_running("vm-web1") and not s.vm_running("vm-web2") and not s.vm_running("vm-idle")
    assert s.static.initial_vm_host == {"vm-web1": "host-h1", "vm-web2": "host-h1"}


def test_apply_moves_a_vm_and_keeps_the_parent_unchanged() -> None:
    s = _fleet().state()
    moved = s.apply([VirtualMachineDynamic(id="vm-web1", host_id="host-h2", status=VmStatus.up)])
    assert moved.vms_on("host-h2") == ["vm-web1"] and moved.vms_on("host-h1") == ["vm-web2"]
    assert moved.mem_used["host-h2"] == 2 * GIB and moved.mem_used["host-h1"] == 1 * GIB
    assert s.vms_on("host-h1") == ["vm-web1", "vm-web2"]  # the parent is untouched
    stopped = moved.apply([VirtualMachineDynamic(id="vm-web1", status=VmStatus.down)])
    assert stopped.vms_on("host-h2") == [] and stopped.mem_used["host-h2"] == 0 and stopped.vcpus_used["host-h2"] == 0
    assert [d.id for d in stopped.changed_documents(s)] == ["vm-web1"]


def test_apply_allocations_track_storage_and_thin_pools() -> None:
    f = _fleet()
    f.put(HostConfiguration(id="host-h2", thin_pools=[ThinPool(vg="vg0", name="pool", size_bytes=50 * GIB)]))
    s = f.state()
    new = VirtualStorageDeviceDynamic(id="disk-d1", allocations=[
        LvmAllocation(host_id="host-h1", capability_id="lvm:vg0", vg="vg0", lv="kerub-d1"),
        LvmAllocation(host_id="host-h2", capability_id="lvm:vg0", vg="vg0", lv="kerub-d1", thin_pool="pool"),
    ])
    s2 = s.apply([new])
    assert s2.disks_on("host-h2") == ["disk-d1"]
    assert s2.thin_allotted("host-h2", "vg0", "pool") == 10 * GIB
    assert s2.thin_pool_used("host-h2", "vg0", "pool") == 0  # a new thin LV holds no data yet
    assert s2.free_storage("host-h2", "lvm:vg0") == 100 * GIB  # thin LVs come out of the pool, not the VG
    removed = s2.apply([VirtualStorageDeviceDynamic(id="disk-d1", allocations=[])])
    assert removed.disks_on("host-h1") == [] and removed.free_storage("host-h1", "lvm:vg0") == 110 * GIB


def test_thin_pool_used_prefers_monitoring() -> None:
    f = Fleet()
    f.host("h1", config=HostConfiguration(thin_pools=[ThinPool(vg="vg0", name="pool", size_bytes=10 * GIB)]),
           storage_free={thin_pool_key("vg0", "pool"): 1 * GIB})
    s = f.state()
    assert s.thin_pool_used("host-h1", "vg0", "pool") == 9 * GIB


def test_apply_refuses_static_documents() -> None:
    s = _fleet().state()
    with pytest.raises(TypeError, match="cannot change a vm document"):
        s.apply([s.vms["vm-web1"]])


def test_from_store_matches_from_documents(tmp_path) -> None:
    f = _fleet()
    with Store.open(tmp_path) as store:
        store.put_many(f.documents())
        from_store = OperationalState.from_store(store, now=f.state().now)
    direct = f.state()
    assert from_store.static == direct.static
    assert dict(from_store.host_vms) == dict(direct.host_vms)
    assert dict(from_store.mem_used) == dict(direct.mem_used)


def test_vm_on_down_host_is_not_running() -> None:
    from kerub_tui.core.models import HostStatus

    f = Fleet()
    f.host("h1", status=HostStatus.down)
    f.vm("web1", on="h1")
    s = f.state()
    assert s.vm_host("vm-web1") == "host-h1" and not s.vm_running("vm-web1")
