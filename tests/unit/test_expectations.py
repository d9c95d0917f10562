import pytest
from hypothesis import given
from hypothesis import strategies as st

from kerub_tui.core.expectations import (
    DISK_EXPECTATION_TYPES,
    VM_EXPECTATION_TYPES,
    InvalidExpectation,
    Level,
    parse_spec,
    validate_expectation,
)


def test_levels_are_ordered():
    assert Level.wish.rank < Level.want.rank < Level.dealbreaker.rank


@pytest.mark.parametrize(
    "spec,target,expected",
    [
        ("not-same-host:web1@dealbreaker", "vm", {"type": "not-same-host", "vms": ["web1"], "level": "dealbreaker"}),
        ("not-same-host:a,b", "vm", {"type": "not-same-host", "vms": ["a", "b"], "level": "want"}),
        ("cpu-architecture:x86_64", "vm", {"type": "cpu-architecture", "architecture": "x86_64"}),
        ("availability:down@wish", "vm", {"type": "availability", "up": False, "level": "wish"}),
        ("availability", "vm", {"type": "availability", "up": True}),
        ("cache-size:L2,512", "vm", {"type": "cache-size", "cache": "L2", "min_kib": 512}),
        ("host-os:debian,12", "vm", {"type": "host-os", "os": "debian", "version": "12"}),
        ("cpu-flags:vmx,avx2", "vm", {"type": "cpu-flags", "flags": ["vmx", "avx2"]}),
        ("storage-redundancy:2,out-of-box@want", "disk", {"type": "storage-redundancy", "copies": 2, "out_of_box": True}),
        ("storage-redundancy:3,in-box", "disk", {"type": "storage-redundancy", "copies": 3, "out_of_box": False}),
        ("read-performance:200", "disk", {"type": "read-performance", "min_mbps": 200}),
    ],
)
def test_specs_parse(spec, target, expected):
    exp = parse_spec(spec, target)
    data = exp.model_dump(mode="json")
    for key, value in expected.items():
        assert data[key] == value


@pytest.mark.parametrize(
    "spec,target,message",
    [
        ("frobnicate", "vm", "unknown expectation type 'frobnicate'"),
        ("storage-redundancy:2", "vm", "is a disk expectation, not one for a VM"),
        ("availability", "disk", "is a VM expectation, not one for a disk"),
        ("cpu-clock-frequency:fast", "vm", "min_mhz"),
        ("cpu-clock-frequency:-5", "vm", "greater than 0"),
        ("availability:sideways", "vm", "must be one of up, down"),
        ("availability:up@always", "vm", "level 'always' is not one of"),
        ("cpu-architecture:x86_64,arm", "vm", "too many arguments"),
        ("not-same-host:a;rm", "vm", "not allowed"),
        ("cpu-architecture:$(id)", "vm", "not a CPU architecture"),
        ("", "vm", "empty"),
        ("storage-redundancy:20", "disk", "less than or equal to 8"),
    ],
)
def test_bad_specs_refused_clearly(spec, target, message):
    with pytest.raises(InvalidExpectation) as error:
        parse_spec(spec, target)
    assert message in str(error.value)


def test_every_type_round_trips_through_its_spec():
    samples = {
        "availability": {}, "not-same-host": {"vms": ["a"]}, "cpu-architecture": {"architecture": "x86_64"},
        "cpu-flags": {"flags": ["vmx"]}, "cpu-clock-frequency": {"min_mhz": 2000},
        "memory-clock-frequency": {"min_mhz": 2400}, "cache-size": {"min_kib": 8192},
        "chassis-manufacturer": {"manufacturer": "Dell"}, "system-manufacturer": {"manufacturer": "HPE"},
        "ecc-memory": {}, "core-dedication": {}, "no-migration": {}, "host-os": {"os": "debian"},
        "power-redundancy": {}, "vm-dependency": {"vms": ["db"]}, "ha": {},
        "storage-availability": {}, "storage-redundancy": {}, "not-same-storage": {"disks": ["d2"]},
        "read-performance": {"min_mbps": 100}, "write-performance": {"min_mbps": 50}, "clone-of": {"disk": "gold"},
    }
    assert set(samples) == set(VM_EXPECTATION_TYPES) | set(DISK_EXPECTATION_TYPES)
    for kind, fields in samples.items():
        target = "vm" if kind in VM_EXPECTATION_TYPES else "disk"
        for level in Level:
            exp = validate_expectation({"type": kind, "level": level.value, **fields}, target)
            assert parse_spec(exp.spec(), target) == exp


def test_resolver_maps_names_to_ids():
    exp = parse_spec("not-same-host:web1,web2", "vm", resolve=lambda name: f"id-{name}")
    assert exp.vms == ["id-web1", "id-web2"]


@given(st.text(max_size=60), st.sampled_from(["vm", "disk"]))
def test_any_spec_text_parses_or_is_refused_clearly(text, target):
    try:
        exp = parse_spec(text, target)
    except InvalidExpectation as error:
        assert str(error)
    else:
        assert parse_spec(exp.spec(), target) == exp
