"""Against light lab hosts: what joining a host costs in round trips. add_host with an accepted
fingerprint logs in once (no key fetch first), and discovery's commands run while the libvirt link
is still being opened, its facts stored only once the link's attempt is over."""

from __future__ import annotations

import asyncio
import time

import pytest

from kerub_tui.hosts import discovery, libvirt_link
from kerub_tui.hosts import fleet as fleet_module

from .test_fleet import fleet_on

pytestmark = pytest.mark.lab


async def test_adding_a_host_with_its_fingerprint_fetches_no_key_first(light_lab, tmp_path, monkeypatch):
    host = light_lab.hosts[0]
    real_fetch = fleet_module.fetch_host_key
    async with fleet_on(tmp_path) as (fleet, _store):
        _, fp = await fleet.fetch_host_key(host.address, host.port)  # what the admin was shown and accepted
        fetched = []

        async def counted(*args, **kwargs):
            fetched.append(args)
            return await real_fetch(*args, **kwargs)

        monkeypatch.setattr(fleet_module, "fetch_host_key", counted)
        added = await fleet.add_host(host.name, host.address, host.port, identity=str(host.client_key),
                                     accepted_fingerprint=fp)
        assert fetched == []
        assert added.fingerprint == fp and added.host_key.split()[0] in ("ssh-ed25519", "ecdsa-sha2-nistp256")
        assert added.capabilities.cpu.cpus > 0


async def test_discovery_runs_while_the_libvirt_link_opens(light_lab, tmp_path, monkeypatch):
    host = light_lab.hosts[1]
    times: dict[str, float] = {}
    real_open, real_batch = libvirt_link.LibvirtLink.open, discovery.run_batch

    async def slow_open(self):
        times.setdefault("link open", time.monotonic())
        try:
            await asyncio.sleep(1.5)  # a libvirtd slow to answer
            await real_open(self)
        finally:
            times.setdefault("link over", time.monotonic())

    async def timed_batch(*args, **kwargs):
        times.setdefault("commands", time.monotonic())
        return await real_batch(*args, **kwargs)

    monkeypatch.setattr(libvirt_link.LibvirtLink, "open", slow_open)
    monkeypatch.setattr(discovery, "run_batch", timed_batch)
    async with fleet_on(tmp_path) as (fleet, _store):
        _, fp = await fleet.fetch_host_key(host.address, host.port)
        added = await fleet.add_host(host.name, host.address, host.port, identity=str(host.client_key),
                                     accepted_fingerprint=fp)
        stored = time.monotonic()
    assert times["commands"] < times["link over"] - 1.0  # not after the link's attempt
    assert times["link over"] <= stored  # the facts waited for it (the hypervisor section is read through it)
    assert added.capabilities.hypervisor.reason  # light hosts have no libvirtd: said, not guessed
