"""Pytest fixtures of the lab, registered as a plugin by tests/conftest.py.

- `lab`: 3 full hosts (sshd, libvirtd, LVM), one per test session, brought up on first use.
- `clean_lab`: the same lab, reset after the test (no domains, no LVs, sshd running, only the
  lab's client key authorized).
- `light_lab`: 20 light hosts (sshd only), one per session, brought up on first use.

Each skips with the reason when the machine cannot run the lab (not root, a command missing,
namespaces refused); a lab that should run but fails to come up is an error. The hosts go
down at the end of the session whatever the tests did; a session killed outright leaves its
slot to the next session, which cleans it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .lab import Lab, missing_prerequisites

FULL_HOSTS = 3
LIGHT_HOSTS = 20


def _session_lab(count: int, light: bool) -> Iterator[Lab]:
    reason = missing_prerequisites(light)
    if reason:
        pytest.skip(f"lab: {reason}")
    lab = Lab.up(count, light=light)
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    yield from _session_lab(FULL_HOSTS, light=False)


@pytest.fixture
def clean_lab(lab: Lab) -> Iterator[Lab]:
    yield lab
    lab.reset()


@pytest.fixture(scope="session")
def light_lab() -> Iterator[Lab]:
    yield from _session_lab(LIGHT_HOSTS, light=True)
