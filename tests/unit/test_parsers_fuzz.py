"""Fuzzing every host-output parser: whatever the text, only ParseError comes out, and what does come
out is a complete, valid result.

Inputs: random text, real captures cut at random points, real captures with one number or word
replaced by a hostile value (huge, negative, NaN, unicode, shell metacharacters), and real JSON
captures with a value replaced by random JSON.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from kerub_tui.hosts.facts import Output, read_storage
from kerub_tui.hosts.ksm import parse_ksm
from kerub_tui.hosts.lvm import parse_lvs, parse_pvs, parse_vgs
from kerub_tui.hosts.parse import (
    ParseError,
    VmstatParser,
    parse_dmidecode,
    parse_findmnt,
    parse_hypervisor,
    parse_libvirt_version,
    parse_lsblk,
    parse_lscpu,
    parse_meminfo,
    parse_os_info,
    parse_os_release,
    parse_smart_health,
    parse_thermal,
    parse_tools,
)

CAPTURES = Path(__file__).resolve().parents[1] / "captures"
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def captures(*patterns: str) -> list[str]:
    found = sorted({p for pattern in patterns for p in CAPTURES.glob(pattern)})
    assert found, patterns
    return [p.read_text() for p in found]


HOSTILE = [
    "-1", "-9223372036854775809", "99999999999999999999999999999", "1e309", "NaN", "nan", "inf", "-inf", "0x10",
    "1_000", "١٢٣", "²", "", " ", "\x00", "\n", "\t", "'", '"', "\\", "$(reboot)", "; rm -rf /", "`id`", "é", "🖥",
    "\u202e", "\ufeff", "null", "true", "{}", "[]", "<a/>", "&lol;", "]]>", "%s", "a" * 300,
]  # fmt: skip
_TOKEN_RE = re.compile(r"-?\d+(?:\.\d+)?|[A-Za-z_]+")


def one_of_texts(texts: list[str]) -> st.SearchStrategy[str]:
    """One of the captures, drawn by index so failure reports stay short."""
    return st.integers(0, len(texts) - 1).map(texts.__getitem__)


def mutated(texts: list[str]) -> st.SearchStrategy[str]:
    """A real capture with one number or word replaced by a hostile value."""

    @st.composite
    def build(draw: st.DrawFn) -> str:
        text = draw(one_of_texts(texts))
        tokens = list(_TOKEN_RE.finditer(text))
        if not tokens:
            return text
        token = draw(st.sampled_from(tokens))
        value = draw(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=12)))
        return text[: token.start()] + value + text[token.end() :]

    return build()


def truncated(texts: list[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda t, f: t[: int(len(t) * f)], one_of_texts(texts), st.floats(0, 1))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def json_mutated(texts: list[str]) -> st.SearchStrategy[str]:
    """A real JSON capture with one value (anywhere in the tree) replaced by random JSON."""

    def replace(data: Any, path: list[int], value: Any) -> Any:
        if not path or not isinstance(data, (dict, list)) or not data:
            return value
        keys = list(data.keys()) if isinstance(data, dict) else list(range(len(data)))
        key = keys[path[0] % len(keys)]
        copy = dict(data) if isinstance(data, dict) else list(data)
        copy[key] = replace(data[key], path[1:], value)
        return copy

    documents = [json.loads(t) for t in texts if t.lstrip().startswith("{")]
    return st.builds(
        lambda document, path, value: json.dumps(replace(document, path, value)),
        one_of_texts(documents),
        st.lists(st.integers(0, 50), max_size=6),
        JSON_VALUES,
    )


def inputs(texts: list[str], *, is_json: bool = False) -> st.SearchStrategy[str]:
    strategies = [st.text(max_size=200), truncated(texts), mutated(texts)]
    if is_json:
        strategies.append(json_mutated(texts))
    return st.one_of(*strategies)


def check_result(value: Any) -> None:
    """A result is complete: pydantic models re-validate, dataclasses hold sane values."""
    if value is None or isinstance(value, (str, int, float, bool)):
        assert not isinstance(value, float) or value == value  # no NaN
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            check_result(item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            check_result(item)
        return
    if isinstance(value, BaseModel):
        assert type(value).model_validate(value.model_dump()) == value
        return
    assert dataclasses.is_dataclass(value), type(value)
    for field in dataclasses.fields(value):
        item = getattr(value, field.name)
        if isinstance(item, int) and not isinstance(item, bool):
            assert item >= 0, (field.name, item)
        check_result(item)


def only_parse_errors(parser: Callable[[str], Any], text: str) -> None:
    try:
        result = parser(text)
    except ParseError as exc:
        assert str(exc) and exc.command
        return
    check_result(result)


def _pvs_per_vg(text: str) -> Any:
    """The storage reading's PVs per VG from a (fuzzed) pvs report beside the real vgs: problems, never a raise."""
    vgs = captures("discovery/vm-lab/vgs.out")[0]
    reading = read_storage({"vgs": Output(0, vgs), "pvs": Output(0, text)})
    if reading.pvs is not None:
        for pvs in reading.pvs.values():
            assert all(0 <= p.free_bytes <= p.size_bytes for p in pvs)
    return reading.pvs


CASES: list[tuple[str, Callable[[str], Any], list[str], bool]] = [
    ("lscpu", parse_lscpu, captures("discovery/*/lscpu*", "discovery/samples/lscpu*"), True),
    ("lscpu caches", lambda t: parse_lscpu(captures("discovery/vm-lab/lscpu.out")[0], t),
     captures("discovery/*/lscpu_caches.out", "discovery/variants/lscpu-C-human.json"), True),
    ("meminfo", parse_meminfo, captures("discovery/*/meminfo.out"), False),
    ("os-release", parse_os_release, captures("discovery/*/os_release.out"), False),
    ("os info", lambda t: parse_os_info(t, "6.1.0-18-amd64", "host1"), captures("discovery/*/os_release.out"), False),
    ("dmidecode", parse_dmidecode, captures("discovery/*/dmidecode.out", "discovery/samples/dmidecode*"), False),
    ("lsblk", parse_lsblk, captures("discovery/*/lsblk.out", "discovery/samples/lsblk*"), True),
    ("findmnt", parse_findmnt, captures("discovery/*/findmnt.out", "discovery/vm-lab/images_fs.out"), True),
    ("pvs", parse_pvs, captures("discovery/vm-lab/pvs.out"), True),
    ("PVs per VG", lambda t: _pvs_per_vg(t), captures("discovery/vm-lab/pvs.out"), True),
    ("vgs", parse_vgs, captures("discovery/vm-lab/vgs.out"), True),
    ("lvs", parse_lvs, captures("discovery/vm-lab/lvs.out", "discovery/samples/lvs*"), True),
    ("virsh capabilities", parse_hypervisor, captures("discovery/vm-lab/virsh_capabilities.out"), False),
    ("virsh domcapabilities", lambda t: parse_hypervisor(captures("discovery/vm-lab/virsh_capabilities.out")[0], t),
     captures("discovery/vm-lab/virsh_domcapabilities.out"), False),
    ("virsh version", parse_libvirt_version, captures("discovery/vm-lab/virsh_version.out"), False),
    ("ksm", parse_ksm, captures("monitor/ksm-*.out"), False),
    ("tools", parse_tools, captures("discovery/*/tools.out"), False),
    ("thermal", parse_thermal, captures("monitor/thermal/*"), False),
    ("smartctl", parse_smart_health, captures("monitor/smart/*"), True),
]  # fmt: skip


@pytest.mark.parametrize("name,parser,texts,is_json", CASES, ids=[c[0] for c in CASES])
def test_parser_raises_only_parse_error(name, parser, texts, is_json):
    @FUZZ
    @given(inputs(texts, is_json=is_json))
    def fuzz(text: str) -> None:
        only_parse_errors(parser, text)

    fuzz()


@FUZZ
@given(st.lists(st.one_of(st.text(max_size=80), mutated(captures("monitor/vmstat-*.out"))), max_size=12))
def test_vmstat_stream_survives_any_lines(garbage):
    """Garbage lines in a stream each raise ParseError or are read; a real header and rows after them
    still give exactly the samples a fresh parser gives."""
    real = captures("monitor/vmstat-n-w.out")[0].splitlines()
    parser = VmstatParser(memory_total=1 << 30)
    for line in garbage:
        try:
            sample = parser.feed(line)
        except ParseError:
            continue
        if sample is not None:
            check_result(sample)
            assert sample.cpu_user <= 100 and sample.cpu_system <= 100 and sample.cpu_idle <= 100
    fresh = VmstatParser(memory_total=1 << 30)
    after_garbage = [parser.feed(line) for line in real]
    expected = [fresh.feed(line) for line in real]
    assert [s and dataclasses.replace(s, since_boot=False) for s in after_garbage] == [
        s and dataclasses.replace(s, since_boot=False) for s in expected
    ]


@FUZZ
@given(st.text(max_size=400))
def test_vmstat_any_text_line(line):
    parser = VmstatParser()
    parser.feed("r b swpd free buff cache si so bi bo in cs us sy id wa st")
    try:
        parser.feed(line)
    except ParseError:
        pass


@pytest.mark.parametrize(
    "parser",
    [parse_lscpu, parse_meminfo, parse_os_release, parse_dmidecode, parse_lsblk, parse_findmnt, parse_pvs, parse_vgs,
     parse_lvs, parse_hypervisor, parse_libvirt_version, parse_ksm, parse_tools, parse_thermal, parse_smart_health],
)  # fmt: skip
@pytest.mark.parametrize("value", [None, b"bytes", 42, ["list"], "x" * 100_000, "[" * 100_000, "{" * 100_000])
def test_parsers_refuse_non_text_and_pathological_text(parser, value):
    with pytest.raises(ParseError):
        parser(value)
